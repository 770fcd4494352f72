"""ion_sensitivity: forward-mode tangents against torch autograd, CPU against the reference,
the symbolic derivatives, simulate(gradient="forward") and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from branchy_channel import Branchy
from fusekit import InputError
from fusekit.neuro import HH_CHANNELS, POSPISCHIL_RS_CHANNELS, params_tensor, simulate
from fusekit.ops import ion_sensitivity
from fusekit.ops.ion_channel import ChannelSet, exp, vtrap
from fusekit.ops.ion_grad import spike_crossing, torch_step
from fusekit.ops.ion_symbolic import Graph, emit, vtrap_dx

HH = ChannelSet(HH_CHANNELS)
DT = 0.025
# Few distinct direction lists: each (channels, wrt, dtype) compiles its own CPU kernel.
WRT_G = ("g_na", "g_k", "g_leak")  # also what fit_parameters compiles for the tour
WRT_X = ("c_m", "e_k", "i_ext")


def _hh_inputs(n: int, dtype: str = "float64", seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    P = HH.default_params(n)
    P[HH.param_index("g_na")] = rng.uniform(90, 150, n)
    P[HH.param_index("g_k")] = rng.uniform(25, 45, n)
    P[HH.param_index("c_m")] = rng.uniform(0.8, 1.2, n)
    v0 = rng.uniform(-70, -60, n)
    S0 = HH.steady_states(v0, P)
    i_ext = rng.uniform(2, 25, n)
    return tuple(a.astype(dtype) for a in (v0, S0, P, i_ext))


def _torch_tangents(cs: ChannelSet, v0, S0, P, i_ext, wrt, n_steps, record_every, max_spikes):
    """The same outputs' derivatives by full-history torch autograd, one neuron at a time."""
    Pt = torch.tensor(P, requires_grad=True)
    It = torch.tensor(i_ext, requires_grad=True)
    v, S = torch.tensor(v0), torch.tensor(S0)
    n = v.shape[0]
    recs, count = [], torch.zeros(n, dtype=torch.int64)
    times = [[None] * n for _ in range(max_spikes)]
    for step in range(n_steps):
        i_inj = It if It.ndim == 1 else It[step]
        v_new, S = torch_step(cs, v, S, Pt, i_inj, DT)
        crossed, t_cross = spike_crossing(v, v_new, 0.0, step, DT)
        for j in torch.nonzero(crossed).flatten().tolist():
            if count[j] < max_spikes:
                times[int(count[j])][j] = t_cross[j]
        count = count + crossed.to(torch.int64)
        v = v_new
        if record_every and (step + 1) % record_every == 0:
            recs.append(v)

    def grad(y):
        gP, gI = torch.autograd.grad(y, (Pt, It), retain_graph=True, allow_unused=True)
        gP = torch.zeros_like(Pt) if gP is None else gP
        gI = torch.zeros_like(It) if gI is None else gI
        return [gI if w == "i_ext" else gP[cs.param_index(w)] for w in wrt]

    d = len(wrt)
    dv = np.zeros((d, n))
    dS = np.zeros((d, S.shape[0], n))
    dv_rec = np.zeros((len(recs), d, n))
    dT = np.full((max_spikes, d, n), np.nan)
    for j in range(n):
        dv[:, j] = [g[j].item() for g in grad(v[j])]
        for k in range(S.shape[0]):
            dS[:, k, j] = [g[j].item() for g in grad(S[k, j])]
        for r, rec in enumerate(recs):
            dv_rec[r, :, j] = [g[j].item() for g in grad(rec[j])]
        for s in range(max_spikes):
            if times[s][j] is not None:
                dT[s, :, j] = [g[j].item() for g in grad(times[s][j])]
    return dv, dS, dv_rec, dT


@pytest.mark.parametrize("wrt", [WRT_G, WRT_X])
def test_reference_tangents_equal_torch_autograd(wrt):
    args = _hh_inputs(3)
    out = ion_sensitivity(*args, channels=HH, dt=DT, n_steps=160, wrt=wrt, record_every=40,
                          max_spikes=2, backend="reference")
    assert int(out.spike_count.sum()) >= 2  # spike-time tangents are exercised
    want = _torch_tangents(HH, *args, wrt, 160, 40, 2)
    for got, ref in zip((out.dv, out.dstates, out.dv_record, out.dspike_times), want,
                        strict=True):
        assert got.shape == ref.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(np.nan_to_num(got), np.nan_to_num(ref), rtol=1e-9,
                                   atol=1e-12 * max(1.0, np.nanmax(np.abs(ref))))


def _assert_outputs_close(a, b, rtol):
    for name in a._fields:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.shape == y.shape, name
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(np.isnan(x.astype(float)), np.isnan(y.astype(float)),
                                      err_msg=name)
        finite = np.abs(y[np.isfinite(y.astype(float))])
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
        np.testing.assert_allclose(np.nan_to_num(x), np.nan_to_num(y), rtol=rtol,
                                   atol=rtol * scale, err_msg=name)


@pytest.mark.parametrize("wrt", [WRT_G, WRT_X])
def test_cpu_equals_reference_float64(wrt):
    args = _hh_inputs(300, seed=1)  # more than one block of neurons, a ragged last block
    i_rows = np.random.default_rng(2).uniform(0, 20, (400, 300)) if "i_ext" not in wrt \
        else args[3]
    args = (*args[:3], i_rows)
    kw = {"channels": HH, "dt": DT, "n_steps": 400, "wrt": wrt, "record_every": 25,
          "max_spikes": 3}
    _assert_outputs_close(ion_sensitivity(*args, **kw, backend="cpu"),
                          ion_sensitivity(*args, **kw, backend="reference"), 1e-9)


def test_cpu_float32_is_close_to_the_float64_reference():
    args = _hh_inputs(40, "float32", seed=3)
    kw = {"channels": HH, "dt": DT, "n_steps": 200, "wrt": WRT_G, "record_every": 50}
    got = ion_sensitivity(*args, **kw, backend="cpu")
    ref = ion_sensitivity(*(a.astype(np.float64) for a in args), **kw, backend="reference")
    assert got.dv.dtype == np.float32
    # Tangents grow and shrink with the dynamics; float32 keeps about 3-4 digits of them
    # over 200 steps (the kernels' polynomial exp and fast-math differ by ulps per step).
    np.testing.assert_allclose(got.dv, ref.dv, rtol=0, atol=2e-3 * np.abs(ref.dv).max())
    np.testing.assert_allclose(got.dv_record, ref.dv_record, rtol=0,
                               atol=2e-3 * np.abs(ref.dv_record).max())


def test_continuing_from_returned_tangents_equals_one_call():
    args = _hh_inputs(20, seed=4)
    kw = {"channels": HH, "dt": DT, "wrt": WRT_G, "backend": "cpu"}
    whole = ion_sensitivity(*args, n_steps=300, **kw)
    first = ion_sensitivity(*args, n_steps=120, **kw)
    second = ion_sensitivity(first.v, first.states, args[2], args[3], n_steps=180,
                             dv0=first.dv, dstates0=first.dstates, **kw)
    np.testing.assert_allclose(second.dv, whole.dv, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(second.dstates, whole.dstates, rtol=1e-10, atol=1e-12)


def test_pospischil_channels_with_parameters_inside_the_gates():
    # v_t and tau_max are read by rate functions and tau (the inf/tau form): their tangents
    # go through the gates, not only the conductances.
    cs = ChannelSet(POSPISCHIL_RS_CHANNELS)
    n = 3
    P = cs.default_params(n)
    v0 = np.full(n, -70.0)
    S0 = cs.steady_states(v0, P)
    i_ext = np.array([0.5, 1.5, 3.0])
    wrt = ("v_t", "tau_max", "g_kd")
    out = ion_sensitivity(v0, S0, P, i_ext, channels=cs, dt=DT, n_steps=120, wrt=wrt,
                          record_every=30, backend="reference")
    want = _torch_tangents(cs, v0, S0, P, i_ext, wrt, 120, 30, 0)
    np.testing.assert_allclose(out.dv, want[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out.dv_record, want[2], rtol=1e-9, atol=1e-12)
    cpu = ion_sensitivity(v0, S0, P, i_ext, channels=cs, dt=DT, n_steps=120, wrt=wrt,
                          record_every=30, backend="cpu")
    _assert_outputs_close(cpu, out, 1e-9)


@settings(max_examples=8, deadline=None)
@given(g_na=st.floats(0.0, 200.0), g_leak=st.floats(0.0, 2.0), i=st.floats(-10.0, 60.0),
       v0=st.floats(-90.0, 30.0))
def test_cpu_agrees_with_reference_over_parameter_ranges(g_na, g_leak, i, v0):
    P = HH.default_params(2, g_na=g_na, g_leak=g_leak)
    V = np.array([v0, -40.0])  # -40 mV: alpha_m's 0/0 point, handled by vtrap's series
    S0 = HH.steady_states(V, P)
    kw = {"channels": HH, "dt": DT, "n_steps": 80, "wrt": WRT_G, "max_spikes": 2}
    cpu = ion_sensitivity(V, S0, P, np.full(2, i), **kw, backend="cpu")
    ref = ion_sensitivity(V, S0, P, np.full(2, i), **kw, backend="reference")
    assert np.isfinite(cpu.dv).all()
    _assert_outputs_close(cpu, ref, 1e-8)


# ----------------------------------------------------------------- symbolic differentiation


def _numeric(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


def test_graph_derivatives_match_finite_differences():
    g = Graph()
    x, y = g.var("x"), g.var("y")
    expr = (x ** 3 * exp(x / 7.0) - 2.0 / (1.0 + y * y)) / (x - 5.0) + g.vtrap(-(x + 1.0), y) \
        + abs(x - 0.3) ** 0.5
    math_ns = {"EXP": np.exp, "LOG": np.log, "SQRT": np.sqrt, "ABS": np.abs, "SIGN": np.sign,
               "VTRAP": vtrap,
               "VTRAP_DX": lambda a, b, f: vtrap_dx(a, b, f, np.where, np.abs),
               "ONE": 1.0}
    lines, consts = emit([("f", expr), ("fx", g.diff(expr, x)), ("fy", g.diff(expr, y))], "    ")
    src = "def fn(x, y):\n" + "\n".join(lines) + "\n    return f, fx, fy\n"
    ns = {**math_ns, **consts}
    exec(src, ns)
    for xv, yv in [(1.7, 3.0), (-0.9, 10.0), (2.4, -4.0), (-1.0 + 1e-4, 10.0)]:
        f, fx, fy = ns["fn"](np.float64(xv), np.float64(yv))
        assert fx == pytest.approx(_numeric(lambda t, yv=yv: ns["fn"](t, yv)[0], xv), rel=1e-6)
        assert fy == pytest.approx(_numeric(lambda t, xv=xv: ns["fn"](xv, t)[0], yv), rel=1e-6)


@pytest.mark.parametrize("u", [-3.0, -0.2, -0.1, -0.05, 0.0, 1e-9, 0.0999, 0.1, 0.5, 4.0])
def test_vtrap_dx_is_the_derivative_of_vtrap_on_both_sides_of_its_series_cut(u):
    y = 10.0
    x = u * y
    got = vtrap_dx(np.float64(x), y, vtrap(np.float64(x), y), np.where, np.abs)
    # d/dx [x / (e^(x/y) - 1)] by a high-precision rational formula around x
    want = _numeric(lambda t: float(vtrap(np.float64(t), y)), x, h=1e-5)
    assert float(got) == pytest.approx(want, rel=2e-7, abs=1e-10)


def test_a_channel_that_branches_gets_a_clear_error():

    cs = ChannelSet([Branchy])
    with pytest.raises(InputError, match="Branchy.inf_x.*plain arithmetic"):
        ion_sensitivity(np.full(1, -65.0), cs.initial_states(1), cs.default_params(1),
                        np.zeros(1), channels=cs, dt=DT, n_steps=2, wrt=["g_b"],
                        backend="reference")


# ------------------------------------------------------------------------ torch: simulate


def _loss(out):
    return ((out.v_record + 60.0) ** 2).mean() + torch.nansum(out.spike_times) \
        + out.v.sum() + out.states.sum()


def test_simulate_forward_gradient_equals_backprop():
    n = 4
    g_na = torch.tensor([95.0, 120.0, 130.0, 145.0], dtype=torch.float64, requires_grad=True)
    i_ext = torch.tensor([4.0, 9.0, 15.0, 22.0], dtype=torch.float64, requires_grad=True)
    grads = {}
    for mode, wrt in (("backprop", None), ("forward", ("g_na", "c_m", "i_ext"))):
        P = params_tensor(HH_CHANNELS, n, g_na=g_na)
        out = simulate(HH_CHANNELS, P, i_ext, duration=8.0, record_every=8, max_spikes=2,
                       gradient=mode, wrt=wrt, backend="cpu")
        grads[mode] = torch.autograd.grad(_loss(out), (g_na, i_ext))
    for got, want in zip(grads["forward"], grads["backprop"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_simulate_forward_gradcheck():
    i_ext = torch.tensor([6.0, 14.0], dtype=torch.float64)

    def f(g):
        P = params_tensor(HH_CHANNELS, 2, g_na=g[0], g_k=g[1], g_leak=g[2])
        out = simulate(HH_CHANNELS, P, i_ext, duration=3.0, record_every=10,
                       gradient="forward", wrt=WRT_G, backend="cpu")
        return out.v_record

    g = torch.tensor([120.0, 36.0, 0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (g,), eps=1e-4, atol=1e-6, rtol=1e-4)


def test_simulate_forward_rows_outside_wrt_get_zero_gradient():
    P = torch.tensor(HH.default_params(2), requires_grad=True)
    out = simulate(HH_CHANNELS, P, torch.full((2,), 10.0, dtype=torch.float64), duration=2.0,
                   gradient="forward", wrt=WRT_G, backend="cpu")
    (g,) = torch.autograd.grad(out.v.sum(), (P,))
    rows = [HH.param_index(w) for w in WRT_G]
    assert bool((g[rows] != 0).all())
    assert bool((np.delete(g.numpy(), rows, axis=0) == 0).all())


def test_simulate_forward_refuses_what_it_cannot_differentiate():
    P = params_tensor(HH_CHANNELS, 1, g_na=torch.tensor(120.0, dtype=torch.float64,
                                                       requires_grad=True))
    i = torch.full((1,), 5.0, dtype=torch.float64)
    v0 = torch.full((1,), -65.0, dtype=torch.float64, requires_grad=True)
    with pytest.raises(InputError, match="v0 requires grad.*backprop"):
        simulate(HH_CHANNELS, P, i, duration=1.0, v0=v0, gradient="forward", wrt=WRT_G)
    with pytest.raises(InputError, match="i_ext requires grad but 'i_ext' is not in wrt"):
        simulate(HH_CHANNELS, P, i.clone().requires_grad_(), duration=1.0, gradient="forward",
                 wrt=WRT_G)
    with pytest.raises(InputError, match="gradient must be 'backprop' or 'forward'"):
        simulate(HH_CHANNELS, P, i, duration=1.0, gradient="adjoint")
    with pytest.raises(InputError, match="wrt applies to gradient='forward'"):
        simulate(HH_CHANNELS, P, i, duration=1.0, wrt=WRT_G)


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("change", "message"), [
    ({"wrt": []}, "wrt must be a non-empty list"),
    ({"wrt": "g_na"}, "wrt must be a non-empty list"),
    ({"wrt": ["g_xx"]}, "'g_xx' is neither a parameter"),
    ({"wrt": ["g_na", "g_na"]}, "names 'g_na' twice"),
    ({"wrt": ["i_ext"], "i_ext": np.zeros((5, 2))}, "wrt 'i_ext' needs a constant current"),
    ({"dv0": np.zeros((2, 2))}, r"dv0 must have shape \(1, 2\)"),
    ({"dstates0": np.zeros((1, 3, 2), np.float32)}, "dstates0 must be float64"),
    ({"dv0": np.full((1, 2), np.nan)}, "dv0"),
    ({"dt": 1.0}, "ion_sensitivity: dt = 1.0 ms is more than"),
])
def test_bad_input_is_refused_with_a_clear_error(change, message):
    kw = {"channels": HH, "dt": DT, "n_steps": 5, "wrt": ["g_na"], "backend": "reference"}
    args = {"v0": np.full(2, -65.0), "states0": HH.initial_states(2),
            "params": HH.default_params(2), "i_ext": np.zeros(2)}
    for key in ("v0", "states0", "params", "i_ext"):
        if key in change:
            args[key] = change.pop(key)
    with pytest.raises(InputError, match=message):
        ion_sensitivity(*args.values(), **{**kw, **change})


def test_zero_steps_return_the_initial_tangents():
    args = _hh_inputs(3)
    dv0 = np.arange(6.0).reshape(2, 3)
    out = ion_sensitivity(*args, channels=HH, dt=DT, n_steps=0, wrt=["g_na", "i_ext"],
                          dv0=dv0, backend="cpu")
    np.testing.assert_array_equal(out.dv, dv0)
    assert out.dstates.shape == (2, 3, 3) and not out.dstates.any()
    assert math.isfinite(float(out.v[0]))
