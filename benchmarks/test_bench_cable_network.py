"""A network of multi-compartment HH cells, synapses on dendrites: fusekit against NEURON.

500 cells of a soma (20 x 20 um) and a dendrite of five 100 um sections (2, 1.5, 1, 1, 1 um),
nseg = 1 everywhere: 6 compartments in a chain, which NEURON couples exactly as
``cable_coupling`` does (at a branch point NEURON's zero-area node couples three half-sections
at once, which fusekit's pairwise coupling does not model yet). Squid HH in every compartment;
20 % of the somata driven at 5-30 uA/cm^2; 10,000 excitatory synapses (20 per cell on average,
p = 0.04, no self-connections) from somata onto random compartments, tau 2 ms, 0 mV, 1 ms
delay; 50 ms at dt = 0.025 ms, float64. NEURON (built by ``fusekit.neuro.to_neuron``): one
``ExpSyn`` per compartment (an ExpSyn is linear, so its NetCons sum as fusekit's per-
compartment conductance does), a ``NetCon`` per synapse, rate tables off, its threads set to
the benchmark's count; set-up is not timed. ``extra_info`` reports compartment-steps/s; the
spike counts of the two are compared (equal in every cell when measured; the somatic voltages
of all 500 cells agreed to 1.2e-9 mV over the 50 ms, and tests/test_ion_cable_network.py checks
every compartment of a small network to 1e-8 mV).
"""

import os

import numpy as np
import pytest

import fusekit
from fusekit.neuro import HH_CHANNELS, CableNetwork, random_connectivity

THREADS = int(os.environ.get("FUSEKIT_BENCH_THREADS", "2"))  # as benchmarks/conftest.py
N_CELLS = 500
PARENT = np.array([-1, 0, 1, 2, 3, 4])
LENGTH = np.array([20.0, 100.0, 100.0, 100.0, 100.0, 100.0])
DIAM = np.array([20.0, 2.0, 1.5, 1.0, 1.0, 1.0])
P_CONNECT, WEIGHT_US, TAU, DELAY_MS = 0.04, 2e-3, 2.0, 1.0
DT, N_STEPS = 0.025, 2000
GROUP = (f"HH network of {N_CELLS} cells ({PARENT.size} compartments), synapses on "
         f"dendrites, 50 ms, float64")
COMP_STEPS = N_CELLS * PARENT.size * N_STEPS


def make_net():
    """The network as a CableNetwork (its weights drawn in uS, as a NEURON user gives them)."""
    rng = np.random.default_rng(0)
    indptr, indices, w_us = random_connectivity(N_CELLS, P_CONNECT, WEIGHT_US, rng)
    comps = rng.integers(0, PARENT.size, indices.shape[0])
    drive = np.where(rng.random(N_CELLS) < 0.2, rng.uniform(5.0, 30.0, N_CELLS), 0.0)
    area_cm2 = np.pi * DIAM * LENGTH * 1e-8
    weights = w_us * 1e-3 / area_cm2[comps]  # uS -> mS/cm^2 of the target compartment
    # NEURON stamps a spike with the end of its step: its 1 ms delay is 41 steps here
    net = CableNetwork(HH_CHANNELS, (PARENT, LENGTH, DIAM), (indptr, indices, weights),
                       synapse_compartment=comps, delay=DELAY_MS + DT, tau_syn=TAU, e_syn=0.0)
    net.i_ext[:, 0] = drive
    return net


def report(benchmark, counts):
    benchmark.extra_info["spikes"] = int(np.sum(counts))
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    benchmark.extra_info["compartment_steps_per_s"] = COMP_STEPS / benchmark.stats.stats.median


def run_fusekit(net, n_steps=N_STEPS):
    """The op on the fresh network's arrays (``net.run`` would carry the state on)."""
    return fusekit.ops.cable_network_simulate(
        net.v, net.states, net.params, net.i_ext, net.parent, net.coupling, net.g_syn,
        net.indptr, net.indices, net.weights, channels=net.channel_set, dt=DT, n_steps=n_steps,
        delay_steps=int(round(net.delay / DT)), tau_syn=net.tau_syn, e_syn=net.e_syn,
        synapse_compartment=net.synapse_compartment, max_spikes=64, backend="cpu")


def test_fusekit_cable_network_cpu(benchmark):
    net = make_net()
    benchmark.group = GROUP
    run_fusekit(net, 10)  # compile (or load) the kernel
    out = benchmark.pedantic(lambda: run_fusekit(net), rounds=3, iterations=1)
    report(benchmark, out.spike_count)
    undriven = net.i_ext[:, 0] == 0
    assert out.spike_count[undriven].sum() > 0  # the synapses made undriven cells fire


def test_neuron_cable_network(benchmark):
    pytest.importorskip("neuron")
    from fusekit.neuro import to_neuron

    net = make_net()
    model = to_neuron(net, DT)
    benchmark.group = GROUP
    counts = benchmark.pedantic(lambda: model.run(N_STEPS * DT, threads=THREADS)[1], rounds=2,
                                iterations=1)
    report(benchmark, counts)
    ours = run_fusekit(net).spike_count
    benchmark.extra_info["cells_whose_spike_count_differs"] = int((counts != ours).sum())
    assert np.abs(counts - ours).max() <= 1
