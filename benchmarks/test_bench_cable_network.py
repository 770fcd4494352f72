"""A network of multi-compartment HH cells, synapses on dendrites: fusekit against NEURON.

500 cells of a soma (20 x 20 um) with two dendrites (150 um x 2 um, 100 x 1.5) off its end, two
branches (80 x 1, 60 x 1) off the first one's end and one (120 x 1.2) continuing the second: 6
sections of nseg = 1, joined at NEURON's zero-area nodes where they branch (``CableNetwork``'s
junctions). Squid HH in every compartment; 20 % of the somata driven at 5-30 uA/cm^2; 10,000
excitatory synapses (20 per cell on average, p = 0.04, no self-connections) from somata onto
random compartments, tau 2 ms, 0 mV, 1 ms delay; 50 ms at dt = 0.025 ms, float64. NEURON (built
by ``fusekit.neuro.to_neuron``): one ``ExpSyn`` per compartment (an ExpSyn is linear, so its
NetCons sum as fusekit's per-compartment conductance does), a ``NetCon`` per synapse, rate
tables off, its threads set to the benchmark's count; set-up is not timed. ``extra_info``
reports compartment-steps/s; the spike counts of the two are compared (equal in every cell when
measured; the voltages of every compartment of all 500 cells agreed to 1.0e-7 mV over the 50
ms, and tests/test_ion_cable_network.py checks a small network to 1e-8 mV).
"""

import functools
import os
import tempfile

import numpy as np
import pytest

from fusekit.neuro import HH_CHANNELS, CableNetwork, random_connectivity

THREADS = int(os.environ.get("FUSEKIT_BENCH_THREADS", "2"))  # as benchmarks/conftest.py
N_CELLS = 500
PARENT = np.array([-1, 0, 0, 1, 1, 2])
LENGTH = np.array([20.0, 150.0, 100.0, 80.0, 60.0, 120.0])
DIAM = np.array([20.0, 2.0, 1.5, 1.0, 1.0, 1.2])
P_CONNECT, WEIGHT_US, TAU, DELAY_MS = 0.04, 2e-3, 2.0, 1.0
DT, N_STEPS = 0.025, 2000
GROUP = (f"HH network of {N_CELLS} branched cells ({PARENT.size} compartments), synapses on "
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


def report(benchmark, counts, comp_steps=COMP_STEPS):
    benchmark.extra_info["spikes"] = int(np.sum(counts))
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    benchmark.extra_info["compartment_steps_per_s"] = comp_steps / benchmark.stats.stats.median


def run_fusekit(net):
    return net.run(N_STEPS * DT, dt=DT, backend="cpu")


def time_fusekit(benchmark, make, group, comp_steps):
    """Time ``make()``'s network on fusekit's CPU kernel; its run's result."""
    benchmark.group = group
    make().run(10 * DT, dt=DT, backend="cpu")  # compile (or load) the kernel
    # a fresh network every round (set up outside the timing): a run carries its state on
    out = benchmark.pedantic(run_fusekit, setup=lambda: ((make(),), {}), rounds=3,
                             iterations=1)
    report(benchmark, out.spike_count, comp_steps)
    return out


def time_neuron(benchmark, make, group, comp_steps):
    """Time the same network built in NEURON by to_neuron; compare the spike counts."""
    pytest.importorskip("neuron")
    from fusekit.neuro import to_neuron

    model = to_neuron(make(), DT)
    benchmark.group = group
    counts = benchmark.pedantic(lambda: model.run(N_STEPS * DT, threads=THREADS)[1], rounds=2,
                                iterations=1)
    report(benchmark, counts, comp_steps)
    ours = run_fusekit(make()).spike_count
    benchmark.extra_info["cells_whose_spike_count_differs"] = int((counts != ours).sum())
    assert np.abs(counts - ours).max() <= 1


def test_fusekit_cable_network_cpu(benchmark):
    out = time_fusekit(benchmark, make_net, GROUP, COMP_STEPS)
    undriven = make_net().i_ext[:, 0] == 0
    assert out.spike_count[undriven].sum() > 0  # the synapses made undriven cells fire


def test_neuron_cable_network(benchmark):
    time_neuron(benchmark, make_net, GROUP, COMP_STEPS)


# Reconstructed cells as NEURON imports them: fusekit's synthetic reconstruction (1,013 SWC
# points) through Morphology.neuron_tree (Import3d's sections and frusta, nseg by d_lambda 0.1:
# 54 segments and 4 junction nodes), 200 cells, synapses from somata onto random segments.
# NEURON runs the same sections built from the tree's 3-d points by to_neuron (the cell
# NEURON's own Import3d makes, tests/test_ion_import3d.py).
N_IMPORTED = 200
GROUP_IMPORTED = (f"HH network of {N_IMPORTED} reconstructed cells as NEURON imports them "
                  "(Import3d, d_lambda 0.1), 50 ms, float64")


@functools.lru_cache(maxsize=1)
def imported_tree():
    """The synthetic reconstruction as NEURON imports it (built once)."""
    from fusekit.neuro import _cable, read_swc

    with tempfile.TemporaryDirectory() as where:
        _cable.synthetic_swc(f"{where}/cell.swc")
        return read_swc(f"{where}/cell.swc").neuron_tree(0.1)


def make_imported_net():
    """The network of imported cells (weights drawn in uS, as a NEURON user gives them)."""
    tree = imported_tree()
    rng = np.random.default_rng(1)
    indptr, indices, w_us = random_connectivity(N_IMPORTED, P_CONNECT, WEIGHT_US, rng)
    comps = rng.integers(0, tree.node.size, indices.shape[0])
    drive = np.where(rng.random(N_IMPORTED) < 0.2, rng.uniform(20.0, 60.0, N_IMPORTED), 0.0)
    weights = w_us * 1e-3 / tree.area[tree.node][comps]
    net = CableNetwork(HH_CHANNELS, tree, (indptr, indices, weights), synapse_compartment=comps,
                       delay=DELAY_MS + DT, tau_syn=TAU, e_syn=0.0)
    net.i_ext[:, 0] = drive
    return net


def imported_steps():
    return N_IMPORTED * imported_tree().node.size * N_STEPS


def test_fusekit_imported_cells_cpu(benchmark):
    out = time_fusekit(benchmark, make_imported_net, GROUP_IMPORTED, imported_steps())
    assert out.spike_count[make_imported_net().i_ext[:, 0] > 0].min() > 0


def test_neuron_imported_cells(benchmark):
    time_neuron(benchmark, make_imported_net, GROUP_IMPORTED, imported_steps())
