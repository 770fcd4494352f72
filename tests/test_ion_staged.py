"""The CPU ion kernel's step cut into stages (``cpu.ion.staged_loops``) computes the same step."""

import numpy as np
import pytest

import fusekit
from fusekit.neuro import HH_CHANNELS, POSPISCHIL_RS_CHANNELS, ChannelSet

pytestmark = pytest.mark.skipif("cpu" not in fusekit.available_backends(),
                                reason="the CPU backend (numba) is not installed")

SETS = {"hh": ChannelSet(HH_CHANNELS), "pospischil": ChannelSet(POSPISCHIL_RS_CHANNELS)}


def _run(cs, depth, monkeypatch):
    from fusekit.backends.cpu import ion as cpu_ion

    monkeypatch.setattr(cpu_ion, "STAGE_DEPTH", depth)
    monkeypatch.setattr(cpu_ion, "_kernels", {})  # a fresh kernel for this stage count
    n = 37  # not a multiple of the vector width: the loops' remainders run too
    rng = np.random.default_rng(11)
    v0 = rng.uniform(-75.0, -55.0, n)
    kw = dict(channels=cs, dt=0.025, n_steps=800, record_every=50, max_spikes=8,
              backend="cpu")
    return fusekit.ops.ion_simulate(v0, cs.steady_states(v0), cs.default_params(n),
                                    rng.uniform(0.0, 15.0, n), **kw)


@pytest.mark.parametrize("name", sorted(SETS))
def test_stages_compute_the_same_step(name, monkeypatch):
    from fusekit.backends.cpu import ion as cpu_ion

    cs = SETS[name]
    one = _run(cs, 10**9, monkeypatch)  # a depth no step reaches: one loop
    many = _run(cs, 30, monkeypatch)  # about 7 stages
    assert one.spike_count.sum() > 20
    np.testing.assert_array_equal(one.spike_count, many.spike_count)
    for a, b in zip(one, many, strict=True):
        # float64: contraction into FMAs may differ across the cut, nothing else
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    monkeypatch.setattr(cpu_ion, "STAGE_DEPTH", 30)
    src = cpu_ion.generated_source(cs)
    assert src.count("for j in range(w):") >= 6 + 5  # the stages and the other block loops


def test_staged_loops_carry_values_between_stages():
    from fusekit.backends.cpu.ion import staged_loops

    body = ["a = EXP(v)", "b = EXP(a)", "c = a + b", "v_n = c / p0", "v = v_n"]
    text, n_spill = staged_loops(body, {"v": 0, "p0": 3}, 4, 2, "", ["v_old = buf[j]"],
                                 ["buf[j] = v"])
    loops = text.split("for j in range(w):")[1:]
    assert len(loops) == 2 and n_spill >= 1
    # the first stage stores what the second reads, from a row past the inputs' rows
    assert "a = EXP(v)" in loops[0] and "v_n = c / p0" in loops[1]
    assert "buf[4 * ROW + j] = a" in loops[0] and "a = buf[4 * ROW + j]" in loops[1]
    assert loops[1].strip().startswith("v_old = buf[j]") and "buf[j] = v" in loops[1]
    # one stage: no spill rows, everything in one loop
    text, n_spill = staged_loops(body, {"v": 0, "p0": 3}, 4, 1, "")
    assert n_spill == 0 and text.count("for j in range(w):") == 1


def test_lines_of_parameters_only_leave_the_step_loop():
    from fusekit.backends.cpu.ion import generated_source, hoist_invariants

    body = ["k = dt / p0", "q = k * K1", "g = p1 * p2", "a = EXP(v)", "b = a * q",
            "c = g * s0", "v_n = v + b + c", "v = v_n"]
    rows = {"v": 0, "s0": 3, "p0": 4, "p1": 5, "p2": 6}
    pre, rest, new_rows = hoist_invariants(body, rows, ["p0", "p1", "p2"], 7, "")
    # every line that reads only parameters, dt, constants or such lines is hoisted ...
    assert rest == ["a = EXP(v)", "b = a * q", "c = g * s0", "v_n = v + b + c", "v = v_n"]
    assert new_rows == {**rows, "k": 7, "q": 8, "g": 9}
    # ... into one loop that loads the parameters once and stores into the new rows
    assert pre.count("for j in range(w):") == 1
    for line in ("p0 = buf[4 * ROW + j]", "k = dt / p0", "buf[8 * ROW + j] = q",
                 "buf[9 * ROW + j] = g"):
        assert line in pre
    assert "s0" not in pre and "EXP" not in pre
    # a name assigned twice (the untraced step re-uses names) is never hoisted
    pre, again, _ = hoist_invariants(["a_ = dt / p0", "b = a_ * v", "a_ = b + p1"], rows,
                                     ["p0", "p1"], 7, "")
    assert pre == "" and again[0] == "a_ = dt / p0"
    # nothing to hoist: no loop, the body unchanged
    pre, again, same = hoist_invariants(rest, new_rows, ["p0", "p1", "p2"], 10, "")
    assert pre == "" and again == rest and same == new_rows
    # squid HH: dt / c_m is computed once per call, before the step loop
    src = generated_source(SETS["hh"])
    head, steps = src.split("for step in range(n_steps):")
    assert "dt / p0" in head and "dt / p0" not in steps
