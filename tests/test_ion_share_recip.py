"""Shared reciprocals in the emitted forward-mode step (``ion_symbolic.share_reciprocals``)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusekit.neuro import HH_CHANNELS, POSPISCHIL_RS_CHANNELS
from fusekit.ops import ion_symbolic as sym
from fusekit.ops.ion_channel import ChannelSet
from fusekit.ops.ion_forward import NUMPY_MATH
from fusekit.ops.ion_symbolic import Graph, emit, tangent_step_source

_DIV = re.compile(r"/ (t\d+)")  # a division by an emitted local (not by a constant K<i>)


def _run(lines: list[str], consts: dict[str, float], env: dict[str, np.ndarray],
         names: list[str]) -> list[np.ndarray]:
    lowered = {name.upper(): (lambda f: lambda *a: f(*a, np.where, np.abs))(getattr(sym, name))
               for name in ("vtrap_e", "vtrap_r", "vtrap_er", "vtrap_dxr")}
    ns = {**NUMPY_MATH, **lowered, "ONE": 1.0, **consts, **env}
    exec("\n".join(line.strip() for line in lines), ns)
    return [ns[n] for n in names]


@pytest.mark.parametrize("channels", [HH_CHANNELS, POSPISCHIL_RS_CHANNELS],
                         ids=["hh", "pospischil"])
def test_tangent_step_same_values_fewer_divisions(channels: object) -> None:
    cs = ChannelSet(channels)
    wrt = tuple(cs.param_names[:3])
    plain, c0 = tangent_step_source(cs, wrt, "", share_exp=True)
    shared, c1 = tangent_step_source(cs, wrt, "", share_exp=True, share_recip=True)
    n_div = [len(_DIV.findall("\n".join(x))) for x in (plain, shared)]
    assert n_div[1] <= n_div[0]
    assert "VTRAP_DX(" not in "\n".join(shared)
    rng = np.random.default_rng(1)
    n, n_states = 64, len(cs.state_names)
    v = rng.uniform(-90, 40, n)
    v[:8] = [-40.0, -55.0, -40 + 1e-9, -55 - 1e-7, -40 - 2e-3, -55 + 2e-3, -35.0, -60.0]
    env = {"v": v, "i_inj": rng.uniform(0, 20, n), "dt": 0.025}
    env.update({f"s{k}": rng.uniform(0.01, 0.99, n) for k in range(n_states)})
    defaults = cs.default_params(n)
    env.update({f"p{i}": defaults[i] * rng.uniform(0.5, 1.5, n)
                for i in range(len(cs.param_names))})
    for j in range(len(wrt)):
        env[f"dv_{j}"] = rng.normal(size=n)
        env.update({f"ds{k}_{j}": rng.normal(size=n) * 1e-3 for k in range(n_states)})
    out = ["v", *(f"s{k}" for k in range(n_states))]
    out += [f"dv_{j}" for j in range(len(wrt))]
    out += [f"ds{k}_{j}" for j in range(len(wrt)) for k in range(n_states)]
    want = _run(plain, c0, dict(env), out)
    got = _run(shared, c1, dict(env), out)
    for name, a, b in zip(out, got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max(), err_msg=name)


def test_hh_forward_mode_divides_by_each_rate_sum_once() -> None:
    cs = ChannelSet(HH_CHANNELS)
    plain, _ = tangent_step_source(cs, ("g_na", "g_k", "g_leak"), "", share_exp=True)
    shared, _ = tangent_step_source(cs, ("g_na", "g_k", "g_leak"), "", share_exp=True,
                                    share_recip=True)
    # three gates' rate sums, the sodium inactivation's beta and the implicit voltage update
    assert len(_DIV.findall("\n".join(plain))) == 10
    assert len(_DIV.findall("\n".join(shared))) == 5
    # each is a reciprocal, 1 / b, then multiplied
    assert all(re.search(r"= K\d+ / t\d+$", b) for b in shared if _DIV.search(b))


def test_single_division_is_left_alone() -> None:
    g = Graph()
    x, y = g.var("x"), g.var("y")
    lines, _ = emit([("a", g.div(x, y)), ("b", g.mul(x, y))], "", share_recip=True)
    assert any("x / y" in line for line in lines)
    lines, consts = emit([("a", g.div(x, y)), ("b", g.div(g.exp(x), y))], "", share_recip=True)
    text = "\n".join(lines)
    assert text.count("/") == 1 and re.search(r"= K\d+ / y", text)
    x_val, y_val = np.array([0.3, -2.0]), np.array([1.7, 0.9])
    a, b = _run(lines, consts, {"x": x_val, "y": y_val}, ["a", "b"])
    np.testing.assert_allclose(a, x_val / y_val, rtol=1e-15)
    np.testing.assert_allclose(b, np.exp(x_val) / y_val, rtol=1e-15)


_MATH: dict[str, dict[str, object]] = {}


def _cpu_math(dtype: str) -> dict[str, object]:
    """The CPU kernels' math, made once per dtype (each call compiles anew)."""
    if dtype not in _MATH:
        from fusekit.backends.cpu.ion import graph_math

        _MATH[dtype] = graph_math(dtype)
    return _MATH[dtype]


@settings(max_examples=200, deadline=None)
@given(x=st.floats(-200, 200), y=st.sampled_from([-10.0, -5.0, 10.0, 18.0]),
       dtype=st.sampled_from(["float32", "float64"]))
def test_cpu_vtrap_pair_matches_vtrap_and_its_derivative(x: float, y: float, dtype: str) -> None:
    m = _cpu_math(dtype)
    f = np.dtype(dtype).type
    e = np.exp(np.float64(x) / y)
    r = m["VTRAP_R"](f(x), f(y), f(e))
    value = m["VTRAP_ER"](f(x), f(y), r)
    dx = m["VTRAP_DXR"](f(x), f(y), value, r)
    want = sym.vtrap_e(x, y, e, lambda c, a, b: a if c else b, abs)
    want_dx = sym.vtrap_dx(x, y, want, lambda c, a, b: a if c else b, abs)
    # float32: the derivative's cancellation near the series cut-off, as VTRAP_DX's own
    # (both measured up to 5.3e-6 on a grid of 16,000 points)
    tol = 2e-5 if dtype == "float32" else 1e-12
    assert abs(value - want) <= tol * max(1.0, abs(want))
    assert abs(dx - want_dx) <= tol * max(1.0, abs(want_dx))
