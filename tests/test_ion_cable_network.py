"""cable_network_simulate and CableNetwork: branched cells with synapses on compartments."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit
from fusekit import InputError
from fusekit.neuro import (
    HH_CHANNELS,
    CableNetwork,
    ChannelSet,
    cable_coupling,
    random_connectivity,
)

HH = ChannelSet(HH_CHANNELS)
CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]
#: Soma, a dendrite of two compartments and a side branch off the first.
PARENT = np.array([-1, 0, 1, 2, 1])
LENGTH = [20.0, 100.0, 80.0, 60.0, 50.0]
DIAM = [20.0, 2.0, 1.5, 1.0, 1.0]


def cells(n_cells, seed=0, soma_current=(0.0, 25.0), dtype=np.float64):
    """Cells of PARENT's morphology, somata driven by random currents."""
    rng = np.random.default_rng(seed)
    n_comp = PARENT.size
    v = rng.uniform(-70.0, -60.0, (n_cells, n_comp)).astype(dtype)
    S = HH.steady_states(v.reshape(-1)).reshape(-1, n_cells, n_comp).astype(dtype)
    P = HH.default_params(n_cells * n_comp, dtype).reshape(-1, n_cells, n_comp)
    i_ext = np.zeros((n_cells, n_comp), dtype)
    i_ext[:, 0] = rng.uniform(*soma_current, n_cells)
    cpl = cable_coupling(PARENT, LENGTH, DIAM)
    coupling = np.ascontiguousarray(np.broadcast_to(cpl[:, None], (2, n_cells, n_comp)),
                                    dtype=dtype)
    return v, S, P, i_ext, coupling, rng


def assert_same(got, ref, tol):
    np.testing.assert_array_equal(got.spike_count, ref.spike_count)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_one_compartment_cells_are_network_simulate(backend):
    n = 40
    rng = np.random.default_rng(1)
    v0 = rng.uniform(-70.0, -60.0, n)
    S, P = HH.steady_states(v0), HH.default_params(n)
    i_ext = np.where(np.arange(n) < 10, 15.0, 0.0)
    indptr, indices, weights = random_connectivity(n, 0.2, 0.4, rng)
    kw = dict(channels=HH, dt=0.025, n_steps=800, delay_steps=30, record_every=40,
              max_spikes=6, backend=backend)
    net = fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(n), indptr, indices, weights,
                                       **kw)
    cab = fusekit.ops.cable_network_simulate(
        v0[:, None], S[:, :, None], P[:, :, None], i_ext[:, None], np.array([-1]),
        np.zeros((2, n, 1)), np.zeros((n, 1)), indptr, indices, weights, **kw)
    assert net.spike_count[10:].sum() > 0  # synapses made undriven neurons fire
    np.testing.assert_array_equal(cab.spike_count, net.spike_count)
    for a, b in ((cab.v[:, 0], net.v), (cab.states[..., 0], net.states),
                 (cab.g_syn[:, 0], net.g_syn), (cab.v_record[..., 0], net.v_record),
                 (cab.spike_times, net.spike_times), (cab.arrivals[..., 0], net.arrivals)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_without_synapses_it_is_cable_simulate():
    v, S, P, i_ext, coupling, _ = cells(12)
    kw = dict(channels=HH, dt=0.025, n_steps=400, record_every=20, max_spikes=4)
    plain = fusekit.ops.cable_simulate(v, S, P, i_ext, PARENT, coupling, backend="cpu", **kw)
    empty = fusekit.ops.cable_network_simulate(
        v, S, P, i_ext, PARENT, coupling, np.zeros_like(v), np.zeros(13, np.int64),
        np.zeros(0, np.int64), np.zeros(0), delay_steps=7, backend="cpu", **kw)
    assert plain.spike_count.sum() > 0
    for a, b in zip(empty[:2] + empty[3:6], plain, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("typed", [False, True])
def test_cpu_matches_the_reference_on_a_random_network_of_branched_cells(typed):
    n = 30
    v, S, P, i_ext, coupling, rng = cells(n, seed=2)
    indptr, indices, weights = random_connectivity(n, 0.2, 1.5, rng)
    comps = rng.integers(0, PARENT.size, indices.shape[0])
    kinds = {}
    g0 = np.zeros_like(v)
    if typed:
        kinds = dict(tau_syn=[3.0, 8.0], e_syn=[0.0, -80.0],
                     synapse_type=rng.integers(0, 2, indices.shape[0]))
        g0 = np.zeros((2, *v.shape))
    kw = dict(channels=HH, dt=0.025, n_steps=1000, delay_steps=40, record_every=25,
              record_at=[0, 3], max_spikes=8, synapse_compartment=comps, **kinds)
    args = (v, S, P, i_ext, PARENT, coupling, g0, indptr, indices, weights)
    ref = fusekit.ops.cable_network_simulate(*args, backend="reference", **kw)
    got = fusekit.ops.cable_network_simulate(*args, backend="cpu", **kw)
    assert ref.spike_count.sum() > n and (ref.g_syn > 0).any()
    assert ref.v_record.shape == (40, n, 2)
    assert_same(got, ref, 1e-8)


def test_float32_follows_the_float64_reference():
    n = 30
    v, S, P, i_ext, coupling, rng = cells(n, seed=4)
    indptr, indices, weights = random_connectivity(n, 0.15, 1.0, rng)
    comps = rng.integers(0, PARENT.size, indices.shape[0])
    kw = dict(channels=HH, dt=0.025, n_steps=800, delay_steps=40, max_spikes=8,
              synapse_compartment=comps)
    ref = fusekit.ops.cable_network_simulate(v, S, P, i_ext, PARENT, coupling,
                                             np.zeros_like(v), indptr, indices, weights,
                                             backend="reference", **kw)
    f32 = [a.astype(np.float32) for a in (v, S, P, i_ext, coupling, np.zeros_like(v))]
    got = fusekit.ops.cable_network_simulate(*f32[:4], PARENT, f32[4], f32[5], indptr, indices,
                                             weights.astype(np.float32), backend="cpu", **kw)
    assert got.v.dtype == np.float32 and ref.spike_count.sum() > n
    assert np.abs(got.spike_count - ref.spike_count).max() <= 1
    both = (got.spike_count == ref.spike_count)
    first = np.abs(got.spike_times[0, both] - ref.spike_times[0, both])
    assert np.nanmax(first) < 0.05  # ms


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_spike_reaches_exactly_its_compartment_delay_steps_later(backend):
    # Cell 0 fires; its synapses sit on compartment 3 of cell 1 (type 0) and on compartment
    # 4 of cell 2 (type 1). Their conductances are zero everywhere until the delay has
    # passed, then nonzero on exactly those compartments.
    v, S, P, i_ext, coupling, _ = cells(3, soma_current=(0.0, 0.0))
    i_ext[0, 0] = 40.0
    indptr = np.array([0, 2, 2, 2])
    indices, comps, types = np.array([1, 2]), np.array([3, 4]), np.array([0, 1])
    kw = dict(channels=HH, dt=0.025, delay_steps=20, tau_syn=[2.0, 5.0], e_syn=[0.0, -80.0],
              synapse_type=types, synapse_compartment=comps, max_spikes=4, backend=backend)
    first = fusekit.ops.cable_network_simulate(
        v, S, P, i_ext, PARENT, coupling, np.zeros((2, *v.shape)), indptr, indices,
        np.array([0.5, 0.5]), n_steps=200, **kw)
    assert first.spike_count[0] == 1
    k = int(math.floor(first.spike_times[0, 0] / 0.025))  # the step of the crossing
    before = fusekit.ops.cable_network_simulate(
        v, S, P, i_ext, PARENT, coupling, np.zeros((2, *v.shape)), indptr, indices,
        np.array([0.5, 0.5]), n_steps=k + 20, **kw)
    at = fusekit.ops.cable_network_simulate(
        v, S, P, i_ext, PARENT, coupling, np.zeros((2, *v.shape)), indptr, indices,
        np.array([0.5, 0.5]), n_steps=k + 21, **kw)
    assert before.g_syn.max() == 0
    expect = np.zeros_like(at.g_syn)
    expect[0, 1, 3] = expect[1, 2, 4] = 0.5
    np.testing.assert_array_equal(at.g_syn, expect)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("first", [13, 40, 57])
def test_a_run_in_two_calls_equals_one_call(backend, first):
    n = 20
    v, S, P, i_ext, coupling, rng = cells(n, seed=5)
    indptr, indices, weights = random_connectivity(n, 0.25, 1.5, rng)
    comps = rng.integers(0, PARENT.size, indices.shape[0])
    kw = dict(channels=HH, dt=0.025, delay_steps=20, tau_syn=[3.0, 8.0], e_syn=[0.0, -80.0],
              synapse_type=rng.integers(0, 2, indices.shape[0]), synapse_compartment=comps,
              max_spikes=8, backend=backend)
    csr = (indptr, indices, weights)
    one = fusekit.ops.cable_network_simulate(v, S, P, i_ext, PARENT, coupling,
                                             np.zeros((2, n, 5)), *csr, n_steps=400, **kw)
    a = fusekit.ops.cable_network_simulate(v, S, P, i_ext, PARENT, coupling,
                                           np.zeros((2, n, 5)), *csr, n_steps=first, **kw)
    b = fusekit.ops.cable_network_simulate(a.v, a.states, P, i_ext, PARENT, coupling, a.g_syn,
                                           *csr, n_steps=400 - first, arrivals0=a.arrivals,
                                           **kw)
    assert one.spike_count.sum() > n // 2
    np.testing.assert_allclose(b.v, one.v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.g_syn, one.g_syn, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.arrivals, one.arrivals, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(a.spike_count + b.spike_count, one.spike_count)


def test_channels_that_branch_take_the_one_loop_kernel():
    from branchy_channel import Branchy

    cs = ChannelSet([*HH_CHANNELS, Branchy])
    n, n_comp = 16, PARENT.size
    _, _, _, i_ext, coupling, rng = cells(n, seed=6)
    v = np.full((n, n_comp), -65.0)
    S = cs.steady_states(v.reshape(-1)).reshape(-1, n, n_comp)
    P = cs.default_params(n * n_comp).reshape(-1, n, n_comp)
    indptr, indices, weights = random_connectivity(n, 0.3, 1.5, rng)
    kw = dict(channels=cs, dt=0.025, n_steps=400, delay_steps=20, record_every=50,
              max_spikes=4, synapse_compartment=rng.integers(0, n_comp, indices.shape[0]))
    args = (v, S, P, i_ext, PARENT, coupling, np.zeros_like(v), indptr, indices, weights)
    ref = fusekit.ops.cable_network_simulate(*args, backend="reference", **kw)
    got = fusekit.ops.cable_network_simulate(*args, backend="cpu", **kw)
    assert ref.spike_count.sum() > 0
    assert_same(got, ref, 1e-9)


@pytest.mark.parametrize("junctions", [True, False])
def test_cable_network_object_runs_in_pieces_like_one_run(junctions):
    import scipy.sparse as sp

    W = sp.random(24, 24, density=0.2, format="csr", random_state=3) * 1.5
    morph = (PARENT, LENGTH, DIAM)
    kw = dict(junctions=junctions, synapse_compartment=np.arange(W.nnz) % PARENT.size,
              tau_syn=[3.0, 8.0],
              e_syn=[0.0, -80.0], synapse_type=(np.arange(24) >= 20).astype(int),
              g_na=np.array([120.0, 0, 0, 0, 0]))  # sodium in the soma only
    one, parts = CableNetwork(HH_CHANNELS, morph, W, **kw), CableNetwork(HH_CHANNELS, morph, W,
                                                                         **kw)
    for net in (one, parts):
        net.i_ext[:6, 0] = 20.0
    whole = one.run(30.0, record_every=40, record_at=[0])
    got = [parts.run(12.5), parts.run(17.5)]
    assert whole.spike_count[6:].sum() > 0  # synapses on dendrites made undriven cells fire
    assert whole.v_record.shape == (30, 24, 1) and parts.v.shape == (24, PARENT.size)
    assert one.coupling.shape[2] == PARENT.size + junctions  # PARENT branches once
    np.testing.assert_allclose(parts.v, one.v, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got[0].spike_count + got[1].spike_count, whole.spike_count)
    times = np.sort(np.concatenate([g.spike_times[:, 0] for g in got]))
    np.testing.assert_allclose(times[~np.isnan(times)],
                               whole.spike_times[:whole.spike_count[0], 0], atol=1e-9)
    assert one.params[HH.param_names.index("g_na"), 0, 1] == 0


BAD = [
    (dict(synapse_compartment=np.array([0, 5])), "synapse_compartment must lie in \\[0, 5\\)"),
    (dict(synapse_compartment=np.array([0])), "synapse_compartment must be an int \\(2,\\)"),
    (dict(synapse_compartment=np.array([0.0, 1.0])), "synapse_compartment must be an int"),
    (dict(indices=np.array([0, 3])), "indices \\(postsynaptic neurons\\) must lie in \\[0, 3\\)"),
    (dict(g_syn0=np.zeros(3)), "g_syn0 must be a \\(3, 5\\)"),
    (dict(arrivals0=np.zeros((4, 3))), "arrivals0 must be a \\(4, 3, 5\\)"),
    (dict(weights=np.array([0.1, -0.1])), "must not be negative"),
    (dict(coupling=np.zeros((2, 3, 4))), "cable_network_simulate: coupling must have shape"),
    (dict(delay_steps=0), "delay_steps must be an integer >= 1"),
    (dict(tau_syn=[2.0, 5.0], e_syn=[0.0, -80.0]), "give synapse_type"),
]


@pytest.mark.parametrize(("change", "match"), BAD)
def test_bad_input_is_refused_with_what_to_do(change, match):
    v, S, P, i_ext, coupling, _ = cells(3)
    args = dict(v0=v, states0=S, params=P, i_ext=i_ext, parent=PARENT, coupling=coupling,
                g_syn0=np.zeros_like(v), indptr=np.array([0, 2, 2, 2]),
                indices=np.array([1, 2]), weights=np.array([0.1, 0.1]))
    kw = dict(channels=HH, dt=0.025, n_steps=10, delay_steps=4)
    for key, value in change.items():
        (args if key in args else kw)[key] = value
    with pytest.raises(InputError, match=match):
        fusekit.ops.cable_network_simulate(*args.values(), backend="cpu", **kw)


def test_cable_network_object_refuses_bad_morphology_and_parameters():
    W = (np.array([0, 1, 1]), np.array([1]), np.array([0.1]))
    with pytest.raises(InputError, match="morphology must be a Morphology"):
        CableNetwork(HH_CHANNELS, "cell.swc", W)
    with pytest.raises(InputError, match="parameter g_na must be a number, one value per"):
        CableNetwork(HH_CHANNELS, (PARENT, LENGTH, DIAM), W, g_na=np.ones(3))
    with pytest.raises(InputError, match="synapse_compartment must be one compartment"):
        CableNetwork(HH_CHANNELS, (PARENT, LENGTH, DIAM), W, synapse_compartment=[0, 1])
    for bad in (5, -1):  # -1 would index the last junction node
        with pytest.raises(InputError, match=r"synapse_compartment must lie in \[0, 5\)"):
            CableNetwork(HH_CHANNELS, (PARENT, LENGTH, DIAM), W, synapse_compartment=bad)


@settings(max_examples=12, deadline=None)
@given(delay=st.integers(1, 9), n_steps=st.integers(0, 30), comp=st.integers(0, 4),
       w=st.floats(0.0, 5.0))
def test_any_delay_and_length_agree_with_the_reference(delay, n_steps, comp, w):
    v, S, P, i_ext, coupling, _ = cells(3, seed=7, soma_current=(30.0, 60.0))
    v[0, 0] = 10.0  # cell 0 crosses at once or soon
    args = (v, S, P, i_ext, PARENT, coupling, np.zeros_like(v), np.array([0, 2, 3, 3]),
            np.array([1, 2, 2]), np.array([w, w, w]))
    kw = dict(channels=HH, dt=0.025, n_steps=n_steps, delay_steps=delay, max_spikes=2,
              synapse_compartment=np.array([comp, 0, comp]),
              arrivals0=np.full((delay, 3, 5), 0.01))
    ref = fusekit.ops.cable_network_simulate(*args, backend="reference", **kw)
    got = fusekit.ops.cable_network_simulate(*args, backend="cpu", **kw)
    assert_same(got, ref, 1e-9)


def test_synapses_on_dendrites_agree_with_neuron():
    """Three cells of soma and two dendrite sections (nseg = 1), ExpSyn excitation onto a
    dendrite tip and a soma and inhibition onto a dendrite, NetCon delay 1 ms: every
    compartment's voltage agrees with NEURON's to round-off (NEURON stamps a spike with the
    end of its step, so its 1 ms is 41 steps of 0.025 ms here)."""
    neuron = pytest.importorskip("neuron")
    h = neuron.h
    h.load_file("stdrun.hoc")
    h.celsius = 6.3
    h.usetable_hh = 0
    geometry = [(20.0, 20.0), (200.0, 2.0), (100.0, 1.0)]
    secs = []
    for c in range(3):
        cell = [h.Section(name=f"net_c{c}_{i}") for i in range(3)]
        for sec, (length, diam) in zip(cell, geometry, strict=True):
            sec.L, sec.diam, sec.nseg, sec.Ra, sec.cm = length, diam, 1, 100.0, 1.0
            sec.insert("hh")
            sec.ena, sec.ek = 50.0, -77.0
        cell[1].connect(cell[0](1))
        cell[2].connect(cell[1](1))
        secs.append(cell)
    stim = h.IClamp(secs[0][0](0.5))
    stim.delay, stim.dur = 0.0, 1e9
    stim.amp = 20.0 * secs[0][0](0.5).area() * 1e-8 * 1e3  # 20 uA/cm^2 -> nA
    taus, es = (2.0, 5.0), (0.0, -80.0)
    synapses = [(0, 1, 2, 0, 0.4), (0, 2, 0, 0, 0.02), (1, 2, 1, 1, 0.05)]  # pre, post, comp,
    keep, density = [], []                                                   # type, weight uS
    for pre, post, comp, kind, w_us in synapses:
        seg = secs[post][comp](0.5)
        syn = h.ExpSyn(seg)
        syn.tau, syn.e = taus[kind], es[kind]
        nc = h.NetCon(secs[pre][0](0.5)._ref_v, syn, sec=secs[pre][0])
        nc.threshold, nc.delay, nc.weight[0] = 0.0, 1.0, w_us
        keep += [syn, nc]
        density.append(w_us * 1e-3 / (seg.area() * 1e-8))  # uS -> mS/cm^2 of the segment
    records = [[h.Vector().record(sec(0.5)._ref_v) for sec in cell] for cell in secs]
    h.dt, h.steps_per_ms, h.tstop = 0.025, 40, 30.0
    h.finitialize(-65.0)
    h.run()
    v_neuron = np.array([[np.array(r)[1:] for r in cell] for cell in records])

    parent = np.array([-1, 0, 1])
    cpl = cable_coupling(parent, [g[0] for g in geometry], [g[1] for g in geometry], 100.0)
    v = np.full((3, 3), -65.0)
    i_ext = np.zeros((3, 3))
    i_ext[0, 0] = 20.0
    out = fusekit.ops.cable_network_simulate(
        v, HH.steady_states(v.reshape(-1)).reshape(-1, 3, 3), HH.default_params(9).reshape(
            -1, 3, 3), i_ext, parent, np.ascontiguousarray(np.broadcast_to(cpl[:, None],
                                                                            (2, 3, 3))),
        np.zeros((2, 3, 3)), np.array([0, 2, 3, 3]), np.array([1, 2, 2]), np.array(density),
        channels=HH, dt=0.025, n_steps=1200, delay_steps=41, tau_syn=taus, e_syn=es,
        synapse_type=np.array([0, 0, 1]), synapse_compartment=np.array([2, 0, 1]),
        record_every=1, max_spikes=8, backend="cpu")
    assert (out.spike_count >= 1).all()  # every cell fired: cells 1 and 2 by their synapses
    np.testing.assert_allclose(out.v_record.transpose(1, 2, 0), v_neuron, atol=1e-8)


@pytest.mark.parametrize("parent", [[-1, 0, 1, 2], [-1, 0, 0, 1]], ids=["chain", "branched"])
def test_to_neuron_builds_the_same_network_in_neuron(parent):
    """A random E/I network with per-compartment conductances, built in NEURON by
    to_neuron: the same voltages to round-off and the same spike counts (branched cells
    through CableNetwork's junction nodes)."""
    pytest.importorskip("neuron")
    from fusekit.neuro import to_neuron

    rng = np.random.default_rng(8)
    n = 40
    morph = (np.array(parent), [20.0, 100.0, 100.0, 100.0], [20.0, 2.0, 1.5, 1.0])
    net = CableNetwork(HH_CHANNELS, morph, random_connectivity(n, 0.1, 2.0, rng),
                       synapse_compartment=rng.integers(0, 4, 157), tau_syn=[2.0, 6.0],
                       e_syn=[0.0, -80.0], synapse_type=(np.arange(n) >= 32).astype(int),
                       g_na=np.array([120.0, 60.0, 30.0, 0.0]), delay=0.5)
    assert net.indices.shape == (157,)
    net.i_ext[:10, 0] = rng.uniform(5.0, 30.0, 10)
    net.i_ext[32:36, 0] = 20.0  # inhibitory cells
    v_neuron, counts = to_neuron(net).run(30.0, record_every=4, record_at=[0, 3])
    out = net.run(30.0, record_every=4, record_at=[0, 3])
    assert out.spike_count[10:32].sum() > 0 and (out.g_syn[1] > 0).any()
    np.testing.assert_array_equal(counts, out.spike_count)
    np.testing.assert_allclose(v_neuron, out.v_record, atol=1e-8)
    with pytest.raises(InputError, match="before it runs"):
        to_neuron(net)


# ------------------------------------------------------------------ the torch form


def torch_network(n=6, seed=9, junction_tree=False):
    """A small E/I network of branched cells as torch tensors, and the op's NumPy inputs."""
    torch = pytest.importorskip("torch")
    from fusekit.neuro import cable_tree

    v, S, P, i_ext, coupling, rng = cells(n, seed=seed, soma_current=(15.0, 40.0))
    parent = PARENT
    if junction_tree:  # the same cells through cable_tree's zero-area nodes
        tree = cable_tree(PARENT, LENGTH, DIAM)
        parent, m = tree.parent, tree.parent.size
        widen = np.zeros((PARENT.size, m))
        widen[np.arange(PARENT.size), tree.node] = 1.0
        v, i_ext = v @ widen, i_ext @ widen
        S = np.einsum("kcj,jm->kcm", S, widen)
        P = np.einsum("kcj,jm->kcm", P, widen)
        P[:, :, tree.junction] = HH.default_params(1)[:, :, None]
        for name in ("c_m", "g_na", "g_k", "g_leak"):
            P[HH.param_names.index(name)][:, tree.junction] = 0.0
        v[:, tree.junction] = -65.0
        S[:, :, tree.junction] = HH.steady_states(np.full(1, -65.0))[:, :, None]
        coupling = np.ascontiguousarray(np.broadcast_to(tree.coupling[:, None], (2, n, m)))
    indptr, indices, weights = random_connectivity(n, 0.5, 1.0, rng)
    m = parent.size
    comps = rng.integers(0, m, indices.shape[0])
    kinds = (np.arange(n) >= n - 2).astype(np.int64)
    numpy_args = (v, S, P, i_ext, parent, coupling, np.zeros((2, n, m)), indptr, indices,
                  weights)
    kw = dict(dt=0.025, n_steps=240, delay_steps=20, tau_syn=[2.0, 6.0], e_syn=[0.0, -80.0],
              synapse_type=np.repeat(kinds, np.diff(indptr)), synapse_compartment=comps,
              record_every=8, record_at=[0, m - 1], max_spikes=4)
    return torch, numpy_args, kw


@pytest.mark.parametrize("junction_tree", [False, True])
def test_torch_cable_network_matches_the_op(junction_tree):
    from fusekit.neuro import cable_network_simulate_torch

    torch, args, kw = torch_network(junction_tree=junction_tree)
    ref = fusekit.ops.cable_network_simulate(*args, channels=HH, backend="reference", **kw)
    t = [torch.as_tensor(a) for a in args]
    got = cable_network_simulate_torch(HH, *t, **kw)
    assert ref.spike_count.sum() >= 6 and (ref.g_syn > 0).any()
    np.testing.assert_array_equal(got.spike_count.numpy(), ref.spike_count)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.nan_to_num(a.detach().numpy()), np.nan_to_num(b),
                                   rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("engine", ["torch", "kernel"])
def test_torch_cable_network_of_one_compartment_is_network_simulate_torch(engine):
    from fusekit.neuro import cable_network_simulate_torch, network_simulate_torch

    torch = pytest.importorskip("torch")
    n = 12
    rng = np.random.default_rng(4)
    v0 = rng.uniform(-70.0, -60.0, n)
    indptr, indices, weights = random_connectivity(n, 0.3, 0.4, rng)
    i_ext = np.where(np.arange(n) < 4, 15.0, 0.0)
    kw = dict(dt=0.025, n_steps=300, delay_steps=20, record_every=10, max_spikes=3,
              engine=engine)
    w1 = torch.tensor(weights, requires_grad=True)
    w2 = torch.tensor(weights, requires_grad=True)
    a = network_simulate_torch(HH, torch.tensor(v0), torch.tensor(HH.steady_states(v0)),
                               torch.tensor(HH.default_params(n)), torch.tensor(i_ext),
                               torch.zeros(n, dtype=torch.float64), indptr, indices, w1, **kw)
    b = cable_network_simulate_torch(
        HH, torch.tensor(v0[:, None]), torch.tensor(HH.steady_states(v0)[:, :, None]),
        torch.tensor(HH.default_params(n)[:, :, None]), torch.tensor(i_ext[:, None]), [-1],
        torch.zeros(2, n, 1, dtype=torch.float64), torch.zeros(n, 1, dtype=torch.float64),
        indptr, indices, w2, **kw)
    assert int(a.spike_count[4:].sum()) > 0
    np.testing.assert_array_equal(a.spike_count.numpy(), b.spike_count.numpy())
    torch.testing.assert_close(b.v_record[..., 0], a.v_record, rtol=1e-9, atol=1e-9)
    a.v_record.mean().backward()
    b.v_record.mean().backward()
    torch.testing.assert_close(w2.grad, w1.grad, rtol=1e-6, atol=1e-9)


def test_torch_cable_network_weight_gradients_pass_gradcheck_on_an_exact_path():
    """Weights onto a cell without outgoing synapses, a loss on that cell only: no spike
    output lies on the path, so the gradient is exact (finite differences agree)."""
    from fusekit.neuro import cable_network_simulate_torch

    torch = pytest.importorskip("torch")
    v, S, P, i_ext, coupling, _ = cells(3, soma_current=(0.0, 0.0))
    i_ext[0, 0] = 30.0  # cell 0 fires; cells 0 and 1 project onto cell 2 (no outputs)
    t = [torch.as_tensor(a) for a in (v, S, P, i_ext, coupling)]

    def loss(w):
        out = cable_network_simulate_torch(
            HH, *t[:4], PARENT, t[4], torch.zeros(3, 5, dtype=torch.float64),
            [0, 2, 3, 3], [2, 2, 2], w, synapse_compartment=[3, 0, 4], dt=0.025, n_steps=120,
            delay_steps=10, record_every=4, record_at=[0, 3])
        return out.v_record[:, 2].mean(0)

    w = torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (w,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_torch_cable_network_checkpoints_give_the_same_gradients():
    from fusekit.neuro import cable_network_simulate_torch

    torch, args, kw = torch_network(seed=10)
    grads = []
    for every in (0, 37):
        t = [torch.as_tensor(a) for a in args]
        for k in (2, 5, 9):  # params, coupling, weights
            t[k].requires_grad_()
        out = cable_network_simulate_torch(HH, *t, checkpoint_every=every, **kw)
        loss = out.v_record.mean() + out.g_syn.sum()
        grads.append(torch.autograd.grad(loss, [t[2], t[5], t[9]]))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert all(float(g.abs().max()) > 0 for g in grads[0])


def test_torch_cable_network_refuses_numpy_and_bad_compartments():
    from fusekit.neuro import cable_network_simulate_torch

    torch, args, kw = torch_network()
    t = [torch.as_tensor(a) for a in args]
    with pytest.raises(InputError, match="weights must be a torch tensor"):
        cable_network_simulate_torch(HH, *t[:9], args[9], **kw)
    bad = {**kw, "synapse_compartment": np.full(args[8].shape, 7)}
    with pytest.raises(InputError, match="synapse_compartment must be"):
        cable_network_simulate_torch(HH, *t, **bad)
    with pytest.raises(InputError, match="cable_network_simulate_torch: coupling must have"):
        cable_network_simulate_torch(HH, *t[:5], t[5][:, :, :3], *t[6:], **kw)


def test_cable_network_of_swc_cells_agrees_with_neuron(tmp_path):
    """Cells read from an SWC file (a soma with two neurites, one forking): the network
    inserts a junction node at each fork, and NEURON (to_neuron) computes the same."""
    pytest.importorskip("neuron")
    from fusekit.neuro import read_swc, to_neuron

    path = tmp_path / "cell.swc"
    path.write_text("# soma, a forked dendrite and an axon stub\n1 1 0 0 0 10 -1\n"
                    "2 3 0 10 0 1.5 1\n3 3 0 30 0 1 2\n4 3 20 30 0 0.5 3\n"
                    "5 3 -20 30 0 0.5 3\n6 2 0 -20 0 0.5 1\n")
    morph = read_swc(path)
    rng = np.random.default_rng(12)
    n = 10
    csr = random_connectivity(n, 0.3, 3.0, rng)
    net = CableNetwork(HH_CHANNELS, morph, csr,
                       synapse_compartment=rng.integers(0, 6, csr[1].shape[0]))
    net.i_ext[:3, 0] = 30.0
    assert net.tree.junction.sum() == 2 and net.coupling.shape == (2, n, 8)
    v_neuron, counts = to_neuron(net).run(20.0, record_every=2, record_at=range(6))
    out = net.run(20.0, record_every=2)
    assert out.v_record.shape == (400, n, 6) and out.spike_count[3:].sum() > 0
    np.testing.assert_array_equal(counts, out.spike_count)
    np.testing.assert_allclose(v_neuron, out.v_record, atol=1e-8)


@pytest.mark.parametrize("kind", ["Network", "CableNetwork"])
def test_network_runs_with_a_progress_bar_equal_one_call(kind):
    """The bar splits the run into about 50 kernel calls; spikes in flight carry over."""
    import io

    from fusekit.neuro import Network

    csr = random_connectivity(16, 0.3, 1.5, 3)

    def make():
        if kind == "Network":
            net = Network(HH_CHANNELS, (csr[0], csr[1], csr[2] * 0.2))
            net.i_ext[:5] = 15.0
        else:
            net = CableNetwork(HH_CHANNELS, (PARENT, LENGTH, DIAM), csr,
                               synapse_compartment=np.arange(csr[1].size) % 5)
            net.i_ext[:5, 0] = 25.0
        return net

    bar = io.StringIO()
    chunked = make().run(25.0, record_every=10, max_spikes=6, progress=True, progress_file=bar)
    whole = make().run(25.0, record_every=10, max_spikes=6)
    assert "100%" in bar.getvalue() and bar.getvalue().count("\r") >= 40
    assert whole.spike_count[5:].sum() > 0  # synapses made undriven neurons fire
    np.testing.assert_array_equal(chunked.spike_count, whole.spike_count)
    for a, b in zip(chunked, whole, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_network_ops_refuse_inputs_that_require_grad():
    """The ops' spikes are discrete: a tensor that requires grad would get no gradient, so
    they say so and name the torch form instead."""
    torch, args, kw = torch_network()
    t = [torch.as_tensor(a) for a in args]
    kw = {k: torch.as_tensor(x) if isinstance(x, np.ndarray) else x for k, x in kw.items()}
    t[9].requires_grad_()
    with pytest.raises(InputError, match="use fusekit.neuro.cable_network_simulate_torch"):
        fusekit.ops.cable_network_simulate(*t, channels=HH, **kw)
    out = fusekit.ops.cable_network_simulate(*t[:4], args[4], *t[5:9], t[9].detach(),
                                             channels=HH, **kw)
    assert isinstance(out.v, torch.Tensor)  # tensors without grad run (parent may be NumPy)
    n = 4
    v0 = torch.full((n,), -65.0, dtype=torch.float64)
    w = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    with pytest.raises(InputError, match="use fusekit.neuro.network_simulate_torch"):
        fusekit.ops.network_simulate(
            v0, torch.tensor(HH.steady_states(np.full(n, -65.0))),
            torch.tensor(HH.default_params(n)), torch.zeros(n, dtype=torch.float64),
            torch.zeros(n, dtype=torch.float64), torch.tensor([0, 1, 1, 1, 1]),
            torch.tensor([1]), w, channels=HH, dt=0.025, n_steps=10, delay_steps=4)


def test_a_current_per_step_follows_the_reference():
    """``i_ext`` of shape (n_steps, n_cells, n_comp): the windows read the right rows."""
    n, n_steps = 8, 300
    v, S, P, _, coupling, rng = cells(n, seed=13)
    i_ext = np.zeros((n_steps, n, PARENT.size))
    i_ext[50:250, :, 0] = rng.uniform(10.0, 40.0, n)  # a pulse into every soma
    i_ext[100:140, :, 3] = 5.0                         # and a shorter one into a dendrite
    indptr, indices, weights = random_connectivity(n, 0.4, 1.5, rng)
    kw = dict(channels=HH, dt=0.025, n_steps=n_steps, delay_steps=17, record_every=10,
              max_spikes=4, synapse_compartment=rng.integers(0, PARENT.size, indices.size))
    args = (v, S, P, i_ext, PARENT, coupling, np.zeros_like(v), indptr, indices, weights)
    ref = fusekit.ops.cable_network_simulate(*args, backend="reference", **kw)
    got = fusekit.ops.cable_network_simulate(*args, backend="cpu", **kw)
    assert ref.spike_count.sum() >= n and np.isnan(ref.spike_times[0, :]).sum() == 0
    assert_same(got, ref, 1e-8)


def test_to_neuron_without_neuron_says_how_to_install_it(monkeypatch):
    import sys

    from fusekit.neuro import to_neuron

    monkeypatch.setitem(sys.modules, "neuron", None)  # makes `import neuron` fail
    net = CableNetwork(HH_CHANNELS, (PARENT, LENGTH, DIAM), random_connectivity(4, 0.5, 0.1, 0))
    with pytest.raises(InputError, match=r"NEURON is not installed \(pip install neuron\)"):
        to_neuron(net)
