"""A network of multi-compartment HH cells, synapses on dendrites: fusekit against NEURON.

500 cells of a soma (20 x 20 um) and a dendrite of five 100 um sections (2, 1.5, 1, 1, 1 um),
nseg = 1 everywhere: 6 compartments in a chain, which NEURON couples exactly as
``cable_coupling`` does (at a branch point NEURON's zero-area node couples three half-sections
at once, which fusekit's pairwise coupling does not model yet). Squid HH in every
compartment; 20 % of the somata driven at 5-30 uA/cm^2; 10,000 excitatory synapses (20 per
cell on average, p = 0.04, no self-connections) from somata onto random compartments, tau
2 ms, 0 mV, 1 ms delay; 50 ms at dt = 0.025 ms, float64. NEURON: one ``ExpSyn`` per
compartment (an ExpSyn is linear, so its NetCons sum as fusekit's per-compartment
conductance does), a ``NetCon`` per synapse, rate tables off, its threads set to the
benchmark's count; set-up is not timed. ``extra_info`` reports compartment-steps/s; the
spike counts of the two are compared (equal in every cell when measured; the somatic
voltages of all 500 cells agreed to 1.2e-9 mV over the 50 ms, and
tests/test_ion_cable_network.py checks every compartment of a small network to 1e-8 mV).
"""

import os

import numpy as np
import pytest

import fusekit
from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_coupling, random_connectivity

THREADS = int(os.environ.get("FUSEKIT_BENCH_THREADS", "2"))  # as benchmarks/conftest.py

HH = ChannelSet(HH_CHANNELS)
N_CELLS = 500
PARENT = np.array([-1, 0, 1, 2, 3, 4])
LENGTH = np.array([20.0, 100.0, 100.0, 100.0, 100.0, 100.0])
DIAM = np.array([20.0, 2.0, 1.5, 1.0, 1.0, 1.0])
P_CONNECT, WEIGHT_US, TAU, DELAY_MS = 0.04, 2e-3, 2.0, 1.0
DT, N_STEPS = 0.025, 2000
GROUP = (f"HH network of {N_CELLS} cells ({PARENT.size} compartments), synapses on "
         f"dendrites, 50 ms, float64")
COMP_STEPS = N_CELLS * PARENT.size * N_STEPS


def network():
    """Connectivity (CSR over presynaptic cells), target compartments, weights in uS."""
    rng = np.random.default_rng(0)
    indptr, indices, w_us = random_connectivity(N_CELLS, P_CONNECT, WEIGHT_US, rng)
    comps = rng.integers(0, PARENT.size, indices.shape[0])
    drive = np.where(rng.random(N_CELLS) < 0.2, rng.uniform(5.0, 30.0, N_CELLS), 0.0)
    return indptr, indices, comps, w_us, drive


def fusekit_args():
    indptr, indices, comps, w_us, drive = network()
    n_comp = PARENT.size
    area_cm2 = np.pi * DIAM * LENGTH * 1e-8
    v0 = np.full((N_CELLS, n_comp), -65.0)
    S = HH.steady_states(v0.reshape(-1)).reshape(-1, N_CELLS, n_comp)
    P = HH.default_params(N_CELLS * n_comp).reshape(-1, N_CELLS, n_comp)
    i_ext = np.zeros((N_CELLS, n_comp))
    i_ext[:, 0] = drive
    cpl = cable_coupling(PARENT, LENGTH, DIAM, 100.0)
    coupling = np.ascontiguousarray(np.broadcast_to(cpl[:, None], (2, N_CELLS, n_comp)))
    weights = w_us * 1e-3 / area_cm2[comps]  # uS -> mS/cm^2 of the target compartment
    args = (v0, S, P, i_ext, PARENT, coupling, np.zeros_like(v0), indptr, indices, weights)
    # NEURON stamps a spike with the end of its step: its 1 ms delay is 41 steps here
    kw = dict(channels=HH, dt=DT, n_steps=N_STEPS, delay_steps=int(round(DELAY_MS / DT)) + 1,
              tau_syn=TAU, e_syn=0.0, synapse_compartment=comps, max_spikes=64)
    return args, kw


def report(benchmark, counts):
    benchmark.extra_info["spikes"] = int(np.sum(counts))
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    benchmark.extra_info["compartment_steps_per_s"] = COMP_STEPS / benchmark.stats.stats.median


def test_fusekit_cable_network_cpu(benchmark):
    args, kw = fusekit_args()
    benchmark.group = GROUP
    fusekit.ops.cable_network_simulate(*args, **{**kw, "n_steps": 10}, backend="cpu")  # JIT
    out = benchmark.pedantic(lambda: fusekit.ops.cable_network_simulate(*args, **kw,
                                                                        backend="cpu"),
                             rounds=3, iterations=1)
    report(benchmark, out.spike_count)
    undriven = args[3][:, 0] == 0
    assert out.spike_count[undriven].sum() > 0  # the synapses made undriven cells fire


def test_neuron_cable_network(benchmark):
    neuron = pytest.importorskip("neuron")
    h = neuron.h
    h.load_file("stdrun.hoc")
    h.celsius = 6.3
    h.usetable_hh = 0
    indptr, indices, comps, w_us, drive = network()
    cells, syns, keep = [], [], []
    for c in range(N_CELLS):
        secs = [h.Section(name=f"bench_c{c}_{i}") for i in range(PARENT.size)]
        for i, sec in enumerate(secs):
            sec.L, sec.diam, sec.nseg, sec.Ra, sec.cm = LENGTH[i], DIAM[i], 1, 100.0, 1.0
            sec.insert("hh")
            sec.ena, sec.ek = 50.0, -77.0
            if PARENT[i] >= 0:
                sec.connect(secs[PARENT[i]](1))
        for sec in secs:
            syn = h.ExpSyn(sec(0.5))
            syn.tau, syn.e = TAU, 0.0
            syns.append(syn)
        if drive[c]:
            stim = h.IClamp(secs[0](0.5))
            stim.delay, stim.dur = 0.0, 1e9
            stim.amp = drive[c] * secs[0](0.5).area() * 1e-8 * 1e3  # uA/cm^2 -> nA
            keep.append(stim)
        cells.append(secs)
    counters = []
    for c in range(N_CELLS):
        count = h.APCount(cells[c][0](0.5))
        count.thresh = 0.0
        counters.append(count)
        for e in range(indptr[c], indptr[c + 1]):
            nc = h.NetCon(cells[c][0](0.5)._ref_v, syns[indices[e] * PARENT.size + comps[e]],
                          sec=cells[c][0])
            nc.threshold, nc.delay, nc.weight[0] = 0.0, DELAY_MS, w_us[e]
            keep.append(nc)
    pc = h.ParallelContext()
    pc.nthread(THREADS)
    h.dt, h.steps_per_ms, h.tstop = DT, 1 / DT, N_STEPS * DT
    benchmark.group = GROUP

    def run():
        h.finitialize(-65.0)
        h.run()

    benchmark.pedantic(run, rounds=2, iterations=1)
    counts = np.array([c.n for c in counters])
    report(benchmark, counts)
    args, kw = fusekit_args()
    ours = fusekit.ops.cable_network_simulate(*args, **kw, backend="cpu").spike_count
    benchmark.extra_info["cells_whose_spike_count_differs"] = int((counts != ours).sum())
    assert np.abs(counts - ours).max() <= 1
    pc.nthread(1)
