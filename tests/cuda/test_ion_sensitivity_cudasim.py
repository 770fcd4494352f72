"""The generated CUDA ion_sensitivity kernel against the float64 oracle, in the CUDA simulator.

The simulator runs every GPU thread as a Python thread, so populations and step counts are
tiny; the neurons span a partial block.
"""

import numpy as np
import pytest
from numba import cuda

from fusekit.backends.cuda import ion_sensitivity as cuda_sens
from fusekit.neuro import HH_CHANNELS, ChannelSet
from fusekit.neuro.pospischil import PospischilCaT, PospischilM
from fusekit.ops.ion_channel import Channel, exp, log, sqrt, vtrap
from fusekit.ops.ion_forward import ion_sensitivity_reference

pytestmark = pytest.mark.cudasim

HH = ChannelSet(HH_CHANNELS)


class OddK(Channel):
    """A test channel whose tangent step needs LOG, SQRT, ABS and SIGN (and a power)."""

    params = {"g_odd": 0.5, "k_odd": 3.0}
    states = {"w": 0.2}
    reversal = -80.0

    def inf_w(v):
        return 1.0 / (1.0 + exp(-(v + 40.0) / 6.0))

    def tau_w(v, k_odd):
        return 2.0 + sqrt(abs(v + 50.0) + k_odd) + log(1.0 + k_odd)

    def conductance(w, g_odd):
        return g_odd * w**1.5


def launch(cs, v0, S, P, i_ext, dv0, dS0, *, dt, n_steps, wrt, record_every, max_spikes,
           spike_threshold=0.0):
    """The kernel on Numba device arrays (no CuPy); the nine results copied back."""
    n, d = v0.shape[0], len(wrt)
    n_rec = n_steps // record_every if record_every else 0
    dev = [cuda.to_device(a.copy()) for a in (v0, S, P, i_ext.reshape(-1, n), dv0, dS0)]
    V_rec = cuda.device_array((n_rec, n), dtype=v0.dtype)
    DV_rec = cuda.device_array((n_rec, d, n), dtype=v0.dtype)
    counts = cuda.to_device(np.zeros(n, np.int64))
    times = cuda.to_device(np.full((max_spikes, n), np.nan, v0.dtype))
    dtimes = cuda.to_device(np.full((max_spikes, d, n), np.nan, v0.dtype))
    cuda_sens.ion_sensitivity_launch(
        *dev, V_rec, DV_rec, counts, times, dtimes, channels=cs, dt=dt, n_steps=n_steps,
        wrt=wrt, record_every=record_every, spike_threshold=spike_threshold,
        max_spikes=max_spikes)
    V, S_d, _, _, DV, DS = dev
    return (V.copy_to_host(), S_d.copy_to_host(), V_rec.copy_to_host(), counts.copy_to_host(),
            times.copy_to_host(), DV.copy_to_host(), DS.copy_to_host(), DV_rec.copy_to_host(),
            dtimes.copy_to_host())


def hh_inputs(dtype):
    # Rest gates with depolarised starts: the last neurons fire within the 3 ms window, the
    # ones at -40 and -55 mV sit on the 0/0 points of alpha_m and alpha_n (VTRAP's series).
    v0 = np.array([-65.0, -40.0, -55.0, -30.0, -20.0], dtype)
    n = v0.shape[0]
    return (v0, HH.initial_states(n, dtype), HH.default_params(n, dtype),
            np.linspace(0.0, 20.0, n).astype(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_hh_tangents_match_the_reference_through_a_spike(dtype):
    v0, S, P, i_ext = hh_inputs(dtype)
    wrt = ("g_na", "g_k", "i_ext")
    d, n = len(wrt), v0.shape[0]
    dv0, dS0 = np.zeros((d, n), dtype), np.zeros((d, 3, n), dtype)
    kw = dict(dt=0.025, n_steps=120, wrt=wrt, record_every=40, max_spikes=2)
    got = launch(HH, v0, S, P, i_ext, dv0, dS0, **kw)
    ref = ion_sensitivity_reference(v0, S, P, i_ext, dv0, dS0, channels=HH, **kw)
    assert ref[3].sum() >= 2 and np.isfinite(ref[8][0]).sum() >= 2 * d  # spikes, tangents
    assert np.abs(ref[5]).max() > 0  # the tangents moved
    names = ("v", "states", "v_record", "spike_count", "spike_times", "dv", "dstates",
             "dv_record", "dspike_times")
    for name, a, b in zip(names, got, ref, strict=True):
        if dtype == np.float64:
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-9, err_msg=name)
        elif name.startswith("d"):
            # float32 tangents through a spike amplify rounding: relative to their largest.
            scale = np.nanmax(np.abs(b))
            np.testing.assert_allclose(a / scale, b / scale, atol=1e-2, err_msg=name)
        else:
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=5e-2, err_msg=name)


def test_initial_tangents_carry_through_like_the_reference():
    v0, S, P, i_ext = hh_inputs(np.float64)
    wrt = ("e_na", "c_m")
    rng = np.random.default_rng(3)
    dv0 = rng.standard_normal((2, 5))
    dS0 = 0.01 * rng.standard_normal((2, 3, 5))
    kw = dict(dt=0.05, n_steps=50, wrt=wrt, record_every=7, max_spikes=1, spike_threshold=-10.0)
    got = launch(HH, v0, S, P, i_ext, dv0, dS0, **kw)
    ref = ion_sensitivity_reference(v0, S, P, i_ext, dv0, dS0, channels=HH, **kw)
    assert ref[3].sum() >= 1
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-9)


def test_inf_tau_channels_with_voltage_dependent_conductance_and_per_step_current():
    # M current (tau from a channel parameter) and T-type Ca (instantaneous s_inf(v) in the
    # conductance), tangents with respect to their own parameters.
    cs = ChannelSet([PospischilM, PospischilCaT, HH_CHANNELS[2]])
    n, steps = 3, 60
    wrt = ("tau_max", "v_x", "e_ca")
    v0 = np.array([-90.0, -60.0, -30.0])
    S, P = cs.initial_states(n), cs.default_params(n)
    i_ext = np.random.default_rng(0).uniform(-5, 5, (steps, n))
    dv0, dS0 = np.zeros((3, n)), np.zeros((3, 2, n))
    kw = dict(dt=0.1, n_steps=steps, wrt=wrt, record_every=0, max_spikes=0)
    got = launch(cs, v0, S, P, i_ext, dv0, dS0, **kw)
    ref = ion_sensitivity_reference(v0, S, P, i_ext, dv0, dS0, channels=cs, **kw)
    assert np.abs(ref[5]).min() > 0
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_log_sqrt_abs_and_a_power_in_a_user_channel():
    cs = ChannelSet([*HH_CHANNELS, OddK])
    n = 4
    wrt = ("k_odd", "g_odd", "i_ext")
    v0 = np.array([-70.0, -50.0, -45.0, -20.0])  # one on either side of abs's kink
    S, P = cs.initial_states(n), cs.default_params(n)
    i_ext = np.array([0.0, 5.0, 10.0, 15.0])
    dv0, dS0 = np.zeros((3, n)), np.zeros((3, 4, n))
    kw = dict(dt=0.025, n_steps=80, wrt=wrt, record_every=16, max_spikes=1)
    got = launch(cs, v0, S, P, i_ext, dv0, dS0, **kw)
    ref = ion_sensitivity_reference(v0, S, P, i_ext, dv0, dS0, channels=cs, **kw)
    assert ref[3].sum() >= 1 and np.abs(ref[5][0]).min() > 0
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_vtrap_dx_device_function_matches_the_symbolic_one_across_the_cut():
    from fusekit.backends.cuda.ion import _math
    from fusekit.ops.ion_channel import VTRAP_SERIES_BELOW
    from fusekit.ops.ion_symbolic import vtrap_dx

    fn = _math("float64")[0]["vtrap_dx"]
    vtrap_fn = _math("float64")[0]["vtrap"]
    y = 10.0
    u = np.array([-3.0, -VTRAP_SERIES_BELOW * 1.001, -VTRAP_SERIES_BELOW * 0.999, -1e-9, 0.0,
                  1e-6, VTRAP_SERIES_BELOW * 0.5, VTRAP_SERIES_BELOW * 1.001, 2.5])
    x = u * y

    @cuda.jit
    def apply(X, out):
        i = cuda.grid(1)
        if i < X.shape[0]:
            out[i] = fn(X[i], y, vtrap_fn(X[i], y))

    out = cuda.device_array(x.shape[0])
    apply[1, 32](cuda.to_device(x), out)
    ref = vtrap_dx(x, y, vtrap(x, y), np.where, np.abs)
    np.testing.assert_allclose(out.copy_to_host(), ref, rtol=1e-12, atol=1e-15)
