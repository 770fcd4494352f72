"""The same HH neuron in NEURON (when it is installed): first spike times agree to round-off.

NEURON's ``hh`` interpolates its rates in 1 mV tables by default (``usetable_hh = 1``); with
the tables off it computes the same rates, and its fixed-step scheme (backward-Euler voltage,
then the gates by exponential Euler at the new voltage) produces the same voltages as ours
when the gates start at their steady state.
"""

import math

import numpy as np
import pytest

neuron = pytest.importorskip("neuron")

import fusekit  # noqa: E402
from fusekit.neuro import HH_CHANNELS, ChannelSet  # noqa: E402

HH = ChannelSet(HH_CHANNELS)


def first_crossing(t, v, dt):
    k = np.flatnonzero((v[:-1] < 0) & (v[1:] >= 0))[0]
    return t[k] + (0 - v[k]) / (v[k + 1] - v[k]) * dt


@pytest.mark.parametrize("i_ext", [7.0, 10.0, 30.0])
def test_first_spike_time_agrees_with_neuron_hh(i_ext):
    h = neuron.h
    h.load_file("stdrun.hoc")
    h.celsius = 6.3
    h.usetable_hh = 0
    side = 100 / math.sqrt(math.pi)  # area 10,000 um^2 = 1e-4 cm^2
    soma = h.Section(name="soma")
    soma.L = soma.diam = side
    soma.insert("hh")
    soma.ena, soma.ek = 50.0, -77.0
    stim = h.IClamp(soma(0.5))
    stim.delay, stim.dur = 0.0, 1e9
    stim.amp = i_ext * 1e-4 * 1e3  # uA/cm^2 * cm^2 -> uA -> nA
    v_rec, t_rec = h.Vector().record(soma(0.5)._ref_v), h.Vector().record(h._ref_t)
    h.dt, h.steps_per_ms, h.tstop = 0.025, 40, 20.0
    h.finitialize(-65.0)
    h.run()
    t_neuron = first_crossing(np.array(t_rec), np.array(v_rec), 0.025)

    v0 = np.array([-65.0])
    out = fusekit.ops.ion_simulate(v0, HH.steady_states(v0), HH.default_params(1),
                                   np.array([i_ext]), channels=HH, dt=0.025, n_steps=800,
                                   max_spikes=1, backend="reference")
    assert abs(float(out.spike_times[0, 0]) - t_neuron) < 1e-10


def test_branched_cell_voltages_agree_with_neuron():
    """Soma, dendrite, second dendrite (nseg = 1 each): NEURON's zero-area section ends are
    series resistances between the segment centres, which is what cable_coupling computes."""
    from fusekit.neuro import cable_coupling

    h = neuron.h
    h.load_file("stdrun.hoc")
    h.celsius = 6.3
    h.usetable_hh = 0
    geometry = [(20.0, 20.0), (200.0, 2.0), (100.0, 1.0)]  # (L, diam) um
    sections = [h.Section(name=f"sec{i}") for i in range(3)]
    for sec, (length, diam) in zip(sections, geometry, strict=True):
        sec.L, sec.diam, sec.nseg, sec.Ra, sec.cm = length, diam, 1, 100.0, 1.0
        sec.insert("hh")
        sec.ena, sec.ek = 50.0, -77.0
    sections[1].connect(sections[0](1))
    sections[2].connect(sections[1](1))
    i_soma = 20.0  # uA/cm^2 of the soma's area
    stim = h.IClamp(sections[0](0.5))
    stim.delay, stim.dur = 0.0, 1e9
    stim.amp = i_soma * sections[0](0.5).area() * 1e-8 * 1e3
    records = [h.Vector().record(sec(0.5)._ref_v) for sec in sections]
    h.dt, h.steps_per_ms, h.tstop = 0.025, 40, 10.0
    h.finitialize(-65.0)
    h.run()
    v_neuron = np.array([np.array(r)[1:] for r in records])

    parent = np.array([-1, 0, 1])
    coupling = cable_coupling(parent, [g[0] for g in geometry], [g[1] for g in geometry],
                              100.0)[:, None]
    v = np.full((1, 3), -65.0)
    i_ext = np.array([[i_soma, 0.0, 0.0]])
    out = fusekit.ops.cable_simulate(
        v, HH.steady_states(v.reshape(-1)).reshape(3, 1, 3),
        HH.default_params(3).reshape(-1, 1, 3), i_ext, parent, coupling, channels=HH,
        dt=0.025, n_steps=400, record_every=1, backend="reference")
    assert v_neuron.max() > 0  # the cell fired
    np.testing.assert_allclose(out.v_record[:, 0, :].T, v_neuron, atol=1e-8)


def test_branch_points_agree_with_neuron_through_junction_nodes():
    """Two dendrites off the soma's end and two off the first dendrite's (nseg = 1): NEURON
    joins each end's sections at a zero-area node; cable_tree adds those nodes (c_m = 0, no
    channel conductance), and the voltages agree to round-off. Pairwise coupling does not."""
    from fusekit.neuro import cable_coupling, cable_tree

    h = neuron.h
    h.load_file("stdrun.hoc")
    h.celsius = 6.3
    h.usetable_hh = 0
    parent = np.array([-1, 0, 0, 1, 1, 2])
    length = [20.0, 150.0, 100.0, 80.0, 60.0, 120.0]
    diam = [20.0, 2.0, 1.5, 1.0, 1.0, 1.2]
    sections = [h.Section(name=f"branchy{i}") for i in range(6)]
    for i, sec in enumerate(sections):
        sec.L, sec.diam, sec.nseg, sec.Ra, sec.cm = length[i], diam[i], 1, 100.0, 1.0
        sec.insert("hh")
        sec.ena, sec.ek = 50.0, -77.0
        if parent[i] >= 0:
            sec.connect(sections[parent[i]](1))
    stim = h.IClamp(sections[0](0.5))
    stim.delay, stim.dur = 0.0, 1e9
    stim.amp = 20.0 * sections[0](0.5).area() * 1e-8 * 1e3
    records = [h.Vector().record(sec(0.5)._ref_v) for sec in sections]
    h.dt, h.steps_per_ms, h.tstop = 0.025, 40, 20.0
    h.finitialize(-65.0)
    h.run()
    v_neuron = np.array([np.array(r)[1:] for r in records])

    def run(par, coupling, junction):
        n = par.shape[0]
        v = np.full((1, n), -65.0)
        P = HH.default_params(n).reshape(-1, 1, n)
        for name in ("c_m", "g_na", "g_k", "g_leak"):
            P[HH.param_names.index(name), 0, junction] = 0.0
        i_ext = np.zeros((1, n))
        i_ext[0, 0] = 20.0
        return fusekit.ops.cable_simulate(
            v, HH.steady_states(v.reshape(-1)).reshape(3, 1, n), P, i_ext, par,
            coupling[:, None], channels=HH, dt=0.025, n_steps=800, record_every=1,
            backend="cpu").v_record[:, 0]

    tree = cable_tree(parent, length, diam, 100.0)
    assert tree.junction.sum() == 2 and tree.parent.shape == (8,)
    with_junctions = run(tree.parent, tree.coupling, tree.junction)[:, tree.node].T
    pairwise = run(parent, cable_coupling(parent, length, diam, 100.0), np.zeros(6, bool)).T
    assert v_neuron.max() > 0  # the cell fired
    np.testing.assert_allclose(with_junctions, v_neuron, atol=1e-8)
    assert np.abs(pairwise - v_neuron).max() > 1.0  # mV: the junctions are what agrees
