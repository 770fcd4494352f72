"""network_simulate: HH neurons with CSR synapses, event-driven, against the reference."""

import math

import numpy as np
import pytest

import fusekit
from fusekit.neuro import HH_CHANNELS, ChannelSet

HH = ChannelSet(HH_CHANNELS)
CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]


def population(n, seed=0):
    rng = np.random.default_rng(seed)
    v0 = rng.uniform(-70.0, -60.0, n)
    return v0, HH.steady_states(v0), HH.default_params(n), rng


def random_csr(n, p, rng, w_max):
    dense = (rng.random((n, n)) < p) & ~np.eye(n, dtype=bool)
    indptr = np.concatenate([[0], np.cumsum(dense.sum(1))])
    indices = np.nonzero(dense)[1]
    return indptr, indices, rng.uniform(0.0, w_max, indices.shape[0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_without_synapses_it_is_ion_simulate(backend):
    n = 20
    v0, S, P, rng = population(n)
    i_ext = rng.uniform(0, 15, n)
    kw = dict(channels=HH, dt=0.025, n_steps=300, record_every=30, max_spikes=3,
              backend=backend)
    net = fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(n), np.zeros(n + 1, int),
                                       np.zeros(0, int), np.zeros(0), delay_steps=7, **kw)
    single = fusekit.ops.ion_simulate(v0, S, P, i_ext, **kw)
    for name in ("v", "states", "v_record", "spike_count", "spike_times"):
        np.testing.assert_allclose(getattr(net, name), getattr(single, name), rtol=1e-12)


def test_cpu_matches_reference_on_a_random_excitatory_network():
    n = 300
    v0, S, P, rng = population(n, seed=1)
    i_ext = np.where(np.arange(n) < 30, 15.0, 0.0)  # a tenth of the neurons are driven
    indptr, indices, weights = random_csr(n, 0.05, rng, 0.4)
    kw = dict(channels=HH, dt=0.025, n_steps=1200, delay_steps=40, tau_syn=3.0, e_syn=0.0,
              record_every=100, max_spikes=5)
    got = fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(n), indptr, indices, weights,
                                       backend="cpu", **kw)
    ref = fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(n), indptr, indices, weights,
                                       backend="reference", **kw)
    assert ref.spike_count[30:].sum() > 0  # undriven neurons fire from synaptic input
    np.testing.assert_array_equal(got.spike_count, ref.spike_count)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_spike_arrives_exactly_delay_steps_later(backend):
    dt, delay, w = 0.025, 12, 0.7
    v0, S, P, _ = population(2)
    i_ext = np.array([20.0, 0.0])
    csr = (np.array([0, 1, 1]), np.array([1]), np.array([w]))

    def run(n_steps):
        return fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(2), *csr, channels=HH,
                                            dt=dt, n_steps=n_steps, delay_steps=delay,
                                            tau_syn=2.0, max_spikes=1, backend=backend)

    k = int(run(400).spike_times[0, 0] // dt)  # the step in which neuron 0 crossed 0 mV
    assert run(k + delay).g_syn[1] == 0.0
    np.testing.assert_allclose(run(k + delay + 1).g_syn[1], w, rtol=1e-15)
    np.testing.assert_allclose(run(k + delay + 3).g_syn[1], w * math.exp(-2 * dt / 2.0),
                               rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(indptr=np.array([0, 2, 1, 1])), "indptr must start at 0, never decrease"),
    (dict(indices=np.array([0, 5])), r"indices \(postsynaptic neurons\) must lie in"),
    (dict(delay_steps=0), "delay_steps must be an integer >= 1"),
    (dict(tau_syn=0.0), "tau_syn must be a positive"),
    (dict(weights=np.array([0.1, -0.1])), "inhibitory with its reversal potential e_syn"),
])
def test_bad_connectivity_is_refused(kwargs, match):
    v0, S, P, _ = population(3)
    args = dict(indptr=np.array([0, 1, 2, 2]), indices=np.array([1, 2]),
                weights=np.array([0.1, 0.1]), delay_steps=4, tau_syn=3.0)
    args.update(kwargs)
    with pytest.raises(fusekit.InputError, match=match):
        fusekit.ops.network_simulate(v0, S, P, np.zeros(3), np.zeros(3), args["indptr"],
                                     args["indices"], args["weights"], channels=HH, dt=0.025,
                                     n_steps=2, delay_steps=args["delay_steps"],
                                     tau_syn=args["tau_syn"], backend="reference")


def test_network_object_wraps_the_op_and_keeps_state():
    import scipy.sparse as sp

    from fusekit.neuro import Network

    n = 30
    W = sp.random(n, n, density=0.1, format="csr", random_state=3) * 0.5
    net = Network(HH_CHANNELS, W, delay=0.5, tau_syn=3.0)
    net.i_ext[:5] = 15.0
    first = net.run(10.0, backend="reference", max_spikes=4)
    assert net.t == pytest.approx(10.0) and first.spike_count[:5].min() >= 1
    second = net.run(5.0, backend="reference", max_spikes=4)
    fired = second.spike_count > 0
    assert (second.spike_times[0, fired] >= 10.0).all()
    v0 = np.full(n, -65.0)
    direct = fusekit.ops.network_simulate(
        v0, HH.steady_states(v0), HH.default_params(n), net.i_ext, np.zeros(n), W.indptr,
        W.indices, W.data, channels=HH, dt=0.025, n_steps=400, delay_steps=20, tau_syn=3.0,
        max_spikes=4, backend="reference")
    np.testing.assert_allclose(first.v, direct.v, rtol=1e-12)
