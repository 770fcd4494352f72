"""ion_adjoint: the compiled checkpointed backward against the torch recompute, CPU against the
reference, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from branchy_channel import Branchy
from fusekit import InputError
from fusekit.neuro import HH_CHANNELS, POSPISCHIL_RS_CHANNELS
from fusekit.ops.ion import ion_simulate_op
from fusekit.ops.ion_backprop import ion_adjoint
from fusekit.ops.ion_channel import ChannelSet
from fusekit.ops.ion_grad import checkpointed_backward, checkpointed_forward, segment_length

HH = ChannelSet(HH_CHANNELS)
DT = 0.025


def _problem(cs, n, n_steps, *, per_step=False, record_every=5, max_spikes=3, seed=0,
             dtype="float64", checkpoint_every=0):
    rng = np.random.default_rng(seed)
    P = cs.default_params(n)
    if "g_na" in cs.param_names:
        P[cs.param_index("g_na")] *= rng.uniform(0.8, 1.2, n)
    v0 = rng.uniform(-70, -60, n)
    S0 = cs.steady_states(v0, P)
    i_ext = rng.uniform(2, 25, (n_steps, n) if per_step else n)
    arrays = [a.astype(dtype) for a in (v0, S0, P, i_ext)]
    kw = {"channels": cs.key, "dt": DT, "n_steps": n_steps, "record_every": record_every,
          "spike_threshold": 0.0, "max_spikes": max_spikes}
    out = checkpointed_forward(ion_simulate_op.run, *arrays, **kw,
                               checkpoint_every=checkpoint_every, backend="cpu")
    n_states = S0.shape[0]
    grads = [rng.normal(size=n), rng.normal(size=(n_states, n)),
             rng.normal(size=(n_steps // record_every if record_every else 0, n)),
             np.where(np.isnan(out[4]), 0.0, rng.normal(size=(max_spikes, n)))]
    grads = [g.astype(dtype) for g in grads]
    seg = segment_length(n_steps, checkpoint_every, record_every)
    return arrays, out, grads, kw, seg


def _adjoint(arrays, out, grads, kw, seg, backend):
    return ion_adjoint(out[5], out[6], arrays[2], arrays[3], *grads, channels=kw["channels"],
                       dt=DT, n_steps=kw["n_steps"], segment=seg,
                       record_every=kw["record_every"], max_spikes=kw["max_spikes"],
                       backend=backend)


def _torch_recompute(arrays, out, grads, kw, checkpoint_every=0):
    t = torch.tensor
    g_v, g_S, g_rec, g_t = (t(g) for g in grads)
    return checkpointed_backward((g_v, g_S, g_rec, None, g_t), t(out[5]), t(out[6]),
                                 t(arrays[2]), t(arrays[3]), **kw,
                                 checkpoint_every=checkpoint_every, needs=(True,) * 4)


@pytest.mark.parametrize("per_step", [False, True])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_adjoint_equals_the_torch_recompute(backend, per_step):
    problem = _problem(HH, 7, 300, per_step=per_step)
    assert int(problem[1][3].sum()) > 0  # spike-time gradients are exercised
    got = _adjoint(*problem, backend)
    want = _torch_recompute(*problem)
    for a, b in zip(got, want, strict=True):
        b = b.numpy()
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize("checkpoint_every", [1, 13, 300])
def test_cpu_equals_reference_for_several_segment_lengths(checkpoint_every):
    # 300 neurons: more than one block and a ragged last one; record_every 1 so that any
    # segment length is allowed.
    problem = _problem(HH, 300, 120, record_every=1, checkpoint_every=checkpoint_every,
                       seed=2)
    cpu = _adjoint(*problem, "cpu")
    ref = _adjoint(*problem, "reference")
    for a, b in zip(cpu, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11 * np.abs(b).max())


def test_float32_adjoint_is_close_to_float64():
    p64 = _problem(HH, 20, 200, seed=3)
    p32 = _problem(HH, 20, 200, seed=3, dtype="float32")
    got = _adjoint(*p32, "cpu")
    want = _adjoint(*p64, "cpu")
    assert got[2].dtype == np.float32
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=3e-3 * np.abs(b).max())


def test_pospischil_channels_adjoint_cpu_equals_reference():
    cs = ChannelSet(POSPISCHIL_RS_CHANNELS)
    problem = _problem(cs, 5, 150, record_every=3, max_spikes=2, seed=4)
    cpu = _adjoint(*problem, "cpu")
    want = _torch_recompute(*problem)
    for a, b in zip(cpu, want, strict=True):
        b = b.numpy()
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(b).max()))


def test_torch_backward_uses_the_adjoint_and_falls_back_for_fake_tensors(monkeypatch):
    # The torch form of ion_simulate routes its backward through ion_adjoint; with the
    # compiled op unavailable it still gives the same gradient through the torch recompute.
    from fusekit.ops import ion_grad
    from fusekit.ops.ion import ion_simulate

    n = 3
    P = torch.tensor(HH.default_params(n), requires_grad=True)
    i_ext = torch.tensor([5.0, 10.0, 20.0], dtype=torch.float64, requires_grad=True)
    v0 = torch.full((n,), -65.0, dtype=torch.float64)
    S0 = torch.tensor(HH.initial_states(n))

    def grads():
        out = ion_simulate(v0, S0, P, i_ext, channels=HH, dt=DT, n_steps=200,
                           record_every=4, max_spikes=2, backend="cpu")
        loss = out.v_record.square().mean() + torch.nan_to_num(out.spike_times).sum()
        return torch.autograd.grad(loss, (P, i_ext))

    calls = []
    real = ion_grad.adjoint_backward
    monkeypatch.setattr(ion_grad, "adjoint_backward",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    import fusekit.ops.ion as ion_module

    monkeypatch.setattr(ion_module, "adjoint_backward", ion_grad.adjoint_backward)
    with_kernel = grads()
    assert calls
    monkeypatch.setattr(ion_module, "adjoint_backward", lambda *a, **k: None)
    recompute = grads()
    for a, b in zip(with_kernel, recompute, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_zero_steps_give_the_incoming_gradients():
    n = 2
    g_v, g_S = np.ones(n), np.full((3, n), 2.0)
    out = ion_adjoint(np.zeros((0, 4, n)), np.zeros((0, n), np.int64), HH.default_params(n),
                      np.zeros(n), g_v, g_S, np.zeros((0, n)), np.zeros((0, n)), channels=HH,
                      dt=DT, n_steps=0, segment=1, backend="cpu")
    np.testing.assert_array_equal(out[0], g_v)
    np.testing.assert_array_equal(out[1], g_S)
    assert not out[2].any() and not out[3].any()


@pytest.mark.parametrize(("change", "message"), [
    ({"segment": 0}, "segment must be a positive number"),
    ({"segment": 3, "record_every": 2}, r"segment \(3\) must be a multiple of record_every"),
    ({"checkpoints": np.zeros((2, 4, 2))}, r"checkpoints must have shape \(1, 4, 2\)"),
    ({"counts_at": np.zeros((1, 2))}, "counts_at must be int64"),
    ({"g_v": np.zeros(2, np.float32)}, "g_v must be float64"),
    ({"g_states": np.full((3, 2), np.nan)}, "g_states"),
    ({"i_ext": np.zeros((3, 2))}, r"i_ext must have shape \(2,\) or \(4, 2\)"),
])
def test_bad_input_is_refused_with_a_clear_error(change, message):
    n = 2
    args = {"checkpoints": np.zeros((1, 4, n)), "counts_at": np.zeros((1, n), np.int64),
            "params": HH.default_params(n), "i_ext": np.zeros(n), "g_v": np.zeros(n),
            "g_states": np.zeros((3, n)), "g_v_record": np.zeros((2, n)),
            "g_spike_times": np.zeros((0, n))}
    kw = {"channels": HH, "dt": DT, "n_steps": 4, "segment": 4, "record_every": 2}
    for key in list(change):
        if key in args:
            args[key] = change.pop(key)
    kw.update(change)
    if kw["record_every"] != 2:
        args["g_v_record"] = np.zeros((4 // kw["record_every"], n))
    with pytest.raises(InputError, match=message):
        ion_adjoint(*args.values(), **kw, backend="reference")


def test_channels_that_branch_fall_back_to_compiled_calls_and_the_torch_recompute():
    # A channel whose function branches (np.where on v) cannot be traced: the CPU forward
    # kernel calls its compiled functions instead, and the gradient takes the torch
    # recompute; both still agree with the reference / finite differences.
    from fusekit.ops.ion import ion_simulate


    cs = ChannelSet([Branchy])
    args = (np.full(3, -65.0), cs.initial_states(3), cs.default_params(3),
            np.array([0.0, 5.0, 50.0]))
    cpu = ion_simulate(*args, channels=cs, dt=DT, n_steps=200, backend="cpu")
    ref = ion_simulate(*args, channels=cs, dt=DT, n_steps=200, backend="reference")
    np.testing.assert_allclose(cpu.v, ref.v, rtol=1e-12)

    def final_v(g_b):
        P = torch.tensor(args[2])
        P = torch.cat([P[:1], g_b[None].expand(1, 3), P[2:]])
        out = ion_simulate(torch.tensor(args[0]), torch.tensor(args[1]), P,
                           torch.tensor(args[3]), channels=cs, dt=DT, n_steps=40,
                           backend="cpu")
        return out.v

    g = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(final_v, (g,))
