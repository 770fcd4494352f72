"""The generated CUDA ion kernel against the float64 oracle, in Numba's CUDA simulator.

The simulator runs every GPU thread as a Python thread, so populations and step counts are
tiny; the 5 neurons span a partial block.
"""

import numpy as np
import pytest
from numba import cuda

from fusekit.backends.cuda import ion as cuda_ion
from fusekit.neuro import HH_CHANNELS, ChannelSet, exp
from fusekit.ops.ion import ion_simulate_reference
from fusekit.ops.ion_channel import Channel

pytestmark = pytest.mark.cudasim

HH = ChannelSet(HH_CHANNELS)


class SlowK(Channel):
    """A test channel in inf/tau form with a constant reversal potential."""

    params = {"g_slow": 2.0}
    states = {"q": 0.1}
    reversal = -90.0

    def inf_q(v):
        return 1.0 / (1.0 + exp(-(v + 50.0) / 5.0))

    def tau_q(v):
        return 20.0

    def conductance(q, g_slow):
        return g_slow * q


def launch(cs, v0, S, P, i_ext, *, dt, n_steps, record_every, max_spikes, thr=0.0):
    n = v0.shape[0]
    n_rec = n_steps // record_every if record_every else 0
    V = cuda.to_device(v0.copy())
    S_d = cuda.to_device(S.copy() if S.shape[0] else np.zeros((1, n), v0.dtype))
    V_rec = cuda.device_array((n_rec, n), dtype=v0.dtype)
    counts = cuda.to_device(np.zeros(n, np.int64))
    times = cuda.to_device(np.full((max_spikes, n), np.nan, v0.dtype))
    cuda_ion.ion_simulate_launch(
        V, S_d, cuda.to_device(P), cuda.to_device(i_ext.reshape(-1, n)), V_rec, counts, times,
        channels=cs, dt=dt, n_steps=n_steps, record_every=record_every,
        spike_threshold=thr, max_spikes=max_spikes)
    return (V.copy_to_host(), S_d.copy_to_host()[: S.shape[0]], V_rec.copy_to_host(),
            counts.copy_to_host(), times.copy_to_host())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_hh_kernel_matches_reference_through_a_spike(dtype):
    n = 5
    # Rest gates with depolarised starts: the last neurons fire within the 3 ms window, the
    # ones at -40 and -55 mV sit on the 0/0 points of alpha_m and alpha_n.
    v0 = np.array([-65.0, -40.0, -55.0, -30.0, -20.0], dtype)
    S = HH.initial_states(n, dtype)
    P = HH.default_params(n, dtype)
    i_ext = np.linspace(0.0, 20.0, n).astype(dtype)
    kw = dict(dt=0.05, n_steps=60, record_every=20, max_spikes=2)
    got = launch(HH, v0, S, P, i_ext, **kw)
    ref = ion_simulate_reference(v0, S, P, i_ext, channels=HH, spike_threshold=0.0, **kw)
    tol = dict(rtol=1e-10, atol=1e-9) if dtype == np.float64 else dict(rtol=1e-3, atol=2e-2)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, **tol)
    assert ref[3].sum() > 0  # some neuron spiked in the window


def test_inf_tau_channel_with_constant_reversal_and_per_step_current():
    cs = ChannelSet([SlowK, HH_CHANNELS[2]])
    n, steps = 3, 12
    v0 = np.array([-70.0, -50.0, -30.0])
    S = cs.initial_states(n)
    P = cs.default_params(n)
    i_ext = np.random.default_rng(0).uniform(-5, 5, (steps, n))
    kw = dict(dt=0.1, n_steps=steps, record_every=0, max_spikes=0)
    got = launch(cs, v0, S, P, i_ext, **kw)
    ref = ion_simulate_reference(v0, S, P, i_ext, channels=cs, **kw)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_hines_kernel_matches_the_reference_on_a_branched_tree(dtype):
    from fusekit.ops.ion import hines_solve_reference

    rng = np.random.default_rng(1)
    parent = np.array([-1, 0, 1, 1, 3, 0, 5, 5])
    batch, n = 3, parent.shape[0]
    diag = rng.uniform(4.0, 6.0, (batch, n)).astype(dtype)
    upper, lower = (-rng.uniform(0.5, 1.5, (batch, n)).astype(dtype) for _ in range(2))
    rhs = rng.standard_normal((batch, n)).astype(dtype)
    X = cuda.device_array((batch, n), dtype=dtype)
    cuda_ion.hines_solve_launch(cuda.to_device(parent), cuda.to_device(diag.copy()),
                                cuda.to_device(upper), cuda.to_device(lower),
                                cuda.to_device(rhs.copy()), X)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(X.copy_to_host(),
                               hines_solve_reference(parent, diag, upper, lower, rhs),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("junction", [False, True])
def test_cable_kernel_matches_the_reference_on_a_branched_hh_cell(junction):
    from test_cable_adjoint_cudasim import PARENT as parent
    from test_cable_adjoint_cudasim import branched_cells

    from fusekit.ops.ion import cable_simulate_reference

    v, S, P, coupling, i_ext = branched_cells(soma_currents=(200.0, 400.0), junction=junction)
    n_cells, n_comp, steps = 2, 4, 30
    kw = dict(dt=0.025, n_steps=steps, record_every=10, spike_threshold=0.0, max_spikes=2)
    ref = cable_simulate_reference(v, S, P, i_ext, parent, coupling, channels=HH, **kw)
    V, S_d = cuda.to_device(v.copy()), cuda.to_device(S.copy())
    V_rec = cuda.device_array((3, n_cells, n_comp))
    counts = cuda.to_device(np.zeros(n_cells, np.int64))
    times = cuda.to_device(np.full((2, n_cells), np.nan))
    D, B = cuda.device_array((n_cells, n_comp)), cuda.device_array((n_cells, n_comp))
    cuda_ion.cable_simulate_launch(
        V, S_d, cuda.to_device(P), cuda.to_device(i_ext[None]), cuda.to_device(parent),
        cuda.to_device(coupling), V_rec, counts, times, D, B, channels=HH, **kw)
    got = (V.copy_to_host(), S_d.copy_to_host(), V_rec.copy_to_host(), counts.copy_to_host(),
           times.copy_to_host())
    assert ref[3].sum() >= 1
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    if junction:  # no membrane there: the states held
        np.testing.assert_array_equal(got[1][:, :, 1], S[:, :, 1])


def _network_launch_args(v0, S, P, i_ext, g_syn0, indptr, indices, weights, types, tau_syn,
                         e_syn, dt):
    """Device arrays for ``network_simulate_launch`` up to ``weights``, then types."""
    dev = [cuda.to_device(a) for a in (v0.copy(), S.copy(), P, i_ext[None], g_syn0.copy(),
                                       indptr, indices, weights, types)]
    syn = np.array([[np.exp(-dt / t) for t in tau_syn], list(e_syn)])
    return dev, cuda.to_device(syn)


def test_network_kernels_match_the_reference_on_a_small_chain():
    from fusekit.ops.ion import network_simulate_reference

    n, steps, delay = 4, 60, 8
    v0 = np.array([-20.0, -65.0, -65.0, -65.0])  # neuron 0 fires at once
    S = HH.initial_states(n)
    P = HH.default_params(n)
    i_ext = np.zeros(n)
    indptr = np.array([0, 2, 3, 3, 3])  # 0 -> 1, 0 -> 2, 1 -> 3
    indices = np.array([1, 2, 3])
    weights = np.array([5.0, 0.5, 5.0])
    types = np.zeros(3, np.int64)
    kw = dict(dt=0.05, n_steps=steps, delay_steps=delay, record_every=20, spike_threshold=0.0,
              max_spikes=2)
    ref = network_simulate_reference(v0, S, P, i_ext, np.zeros((1, n)), indptr, indices,
                                     weights, np.zeros((delay, 1, n)), types, channels=HH,
                                     tau_syn=(2.0,), e_syn=(0.0,), **kw)
    dev, syn = _network_launch_args(v0, S, P, i_ext, np.zeros((1, n)), indptr, indices,
                                    weights, types, (2.0,), (0.0,), kw["dt"])
    V_rec = cuda.device_array((3, n))
    counts = cuda.to_device(np.zeros(n, np.int64))
    times = cuda.to_device(np.full((2, n), np.nan))
    INC = cuda.to_device(np.zeros((delay, 1, n)))
    SPIKED = cuda.to_device(np.zeros((delay, n), np.uint8))
    cuda_ion.network_simulate_launch(*dev, V_rec, counts, times, INC, SPIKED, syn, channels=HH,
                                     **kw)
    in_flight = INC.copy_to_host()[(steps + np.arange(delay)) % delay]
    got = (dev[0].copy_to_host(), dev[1].copy_to_host(), dev[4].copy_to_host(),
           V_rec.copy_to_host(), counts.copy_to_host(), times.copy_to_host(), in_flight)
    assert ref[4][0] >= 1 and ref[2][0, 1] > 0  # neuron 0 fired and its spike arrived
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_network_kernels_match_the_reference_with_two_synapse_types():
    # neuron 0 excites 1 and 2 (type 0, 0 mV, 2 ms); neuron 1 inhibits 2 and 3 (type 1,
    # -80 mV, 8 ms): each type's conductance decays and reverses on its own
    from fusekit.ops.ion import network_simulate_reference

    n, steps, delay = 4, 80, 8
    v0 = np.array([-20.0, -65.0, -65.0, -65.0])
    S, P, i_ext = HH.initial_states(n), HH.default_params(n), np.array([0.0, 0.0, 8.0, 8.0])
    indptr = np.array([0, 2, 4, 4, 4])
    indices = np.array([1, 2, 2, 3])
    weights = np.array([5.0, 0.5, 2.0, 2.0])
    types = np.array([0, 0, 1, 1])
    taus, es = (2.0, 8.0), (0.0, -80.0)
    kw = dict(dt=0.05, n_steps=steps, delay_steps=delay, record_every=20, spike_threshold=0.0,
              max_spikes=2)
    ref = network_simulate_reference(v0, S, P, i_ext, np.zeros((2, n)), indptr, indices,
                                     weights, np.zeros((delay, 2, n)), types, channels=HH,
                                     tau_syn=taus, e_syn=es, **kw)
    dev, syn = _network_launch_args(v0, S, P, i_ext, np.zeros((2, n)), indptr, indices,
                                    weights, types, taus, es, kw["dt"])
    V_rec = cuda.device_array((4, n))
    counts = cuda.to_device(np.zeros(n, np.int64))
    times = cuda.to_device(np.full((2, n), np.nan))
    INC = cuda.to_device(np.zeros((delay, 2, n)))
    cuda_ion.network_simulate_launch(*dev, V_rec, counts, times, INC,
                                     cuda.to_device(np.zeros((delay, n), np.uint8)), syn,
                                     channels=HH, **kw)
    assert ref[2][1, 2] > 0 and ref[2][1, 3] > 0  # the inhibitory spikes arrived
    got = (dev[0].copy_to_host(), dev[4].copy_to_host(), V_rec.copy_to_host(),
           counts.copy_to_host())
    for a, b in zip(got, (ref[0], ref[2], ref[3], ref[4]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_network_launches_carry_spikes_in_flight_like_one_run():
    # Two launches, the second starting from the first's INC rotated to its step 0, equal one
    # reference run: the spikes in flight at the cut arrive in the second launch.
    from fusekit.ops.ion import network_simulate_reference

    n, delay, first, steps = 4, 8, 22, 60  # neuron 1 fired at step 20: in flight at 22
    v0 = np.array([-20.0, -65.0, -65.0, -65.0])
    S, P, i_ext = HH.initial_states(n), HH.default_params(n), np.zeros(n)
    indptr, indices = np.array([0, 2, 3, 3, 3]), np.array([1, 2, 3])
    weights = np.array([5.0, 0.5, 5.0])
    types = np.zeros(0, np.int64)  # empty: every synapse of type 0 (the one-type form)
    kw = dict(dt=0.05, delay_steps=delay, spike_threshold=0.0, max_spikes=2)
    ref = network_simulate_reference(v0, S, P, i_ext, np.zeros((1, n)), indptr, indices,
                                     weights, np.zeros((delay, 1, n)), types, channels=HH,
                                     n_steps=steps, tau_syn=(2.0,), e_syn=(0.0,), **kw)
    dev, syn = _network_launch_args(v0, S, P, i_ext, np.zeros((1, n)), indptr, indices,
                                    weights, types, (2.0,), (0.0,), kw["dt"])
    inc = np.zeros((delay, 1, n))
    counts_total = np.zeros(n, np.int64)
    for a, b in ((0, first), (first, steps)):
        counts = cuda.to_device(np.zeros(n, np.int64))
        INC = cuda.to_device(inc)
        cuda_ion.network_simulate_launch(
            *dev, cuda.device_array((0, n)), counts, cuda.to_device(np.full((2, n), np.nan)),
            INC, cuda.to_device(np.zeros((delay, n), np.uint8)), syn, channels=HH,
            n_steps=b - a, **kw)
        inc = INC.copy_to_host()[(b - a + np.arange(delay)) % delay]
        counts_total += counts.copy_to_host()
        if a == 0:
            assert inc.max() > 0  # neuron 0's spike is in flight at the cut
    np.testing.assert_array_equal(counts_total, ref[4])
    np.testing.assert_allclose(dev[0].copy_to_host(), ref[0], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(inc, ref[6], rtol=1e-10, atol=1e-12)
