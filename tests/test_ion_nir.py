"""NIR export of HH populations and networks as fitted LIF / CubaLIF stand-ins."""

import sys

import numpy as np
import pytest
import scipy.sparse as sp

import fusekit
from fusekit.neuro import (
    HH_CHANNELS,
    Network,
    Population,
    fit_lif,
    simulate_nir,
    to_nir,
    write_nir,
)

nir = pytest.importorskip("nir")

CURRENTS = np.arange(0.0, 42.0, 2.0)  # fit_lif's default currents


def made_up_fit(tau=2.0, r=1.0, v_leak=-65.0, v_threshold=-60.0, v_reset=-70.0):
    """A stand-in with chosen parameters (no HH runs), for tests of the graph itself."""
    none = np.zeros(1)
    return fusekit.neuro.LIFFit(tau, r, v_leak, v_threshold, v_reset, none, none, none, 0.0,
                                none, none, 0.0, 0)


@pytest.fixture(scope="module")
def hh_fit():
    return fit_lif()  # 200 ms per current


def test_fit_matches_hh_rates_within_ten_percent(hh_fit):
    # measured: 3.5 % relative RMS over 0..40 uA/cm^2
    assert hh_fit.rate_rel_rms < 0.06
    assert hh_fit.rate_hh[-1] > 50  # the HH neuron fires repetitively at 40 uA/cm^2
    assert np.abs(hh_fit.rate_lif - hh_fit.rate_hh)[CURRENTS >= 10].max() <= 20  # Hz


def test_fit_reports_the_first_spike_error_against_the_hh_run(hh_fit):
    both = np.isfinite(hh_fit.first_spike_hh) & np.isfinite(hh_fit.first_spike_lif)
    expected = np.abs(hh_fit.first_spike_lif - hh_fit.first_spike_hh)[both].mean()
    assert hh_fit.first_spike_mae == pytest.approx(expected)
    assert 0 < hh_fit.first_spike_mae < 1.0  # ms; measured 0.44
    # HH fires single transient spikes at 4 and 6 uA/cm^2, below its rheobase for repetitive
    # firing; a LIF cannot
    assert hh_fit.first_spike_missing == 2


def test_fit_rest_is_the_hh_resting_potential(hh_fit):
    assert hh_fit.v_leak == pytest.approx(-65.0, abs=0.1)
    assert hh_fit.v_reset < hh_fit.v_leak < hh_fit.v_threshold


def test_fit_rates_come_from_the_stand_in_stepper(hh_fit):
    lif = fusekit.neuro._nir._step_lif(
        CURRENTS, 8000, 0.025, **{k: np.full(CURRENTS.size, getattr(hh_fit, k))
                                  for k in ("tau", "r", "v_leak", "v_threshold", "v_reset")})
    assert np.array_equal(lif.spike_count / 200.0 * 1e3, hh_fit.rate_lif)


def test_population_graph_round_trips_through_a_nir_file(tmp_path, hh_fit):
    pop = Population(HH_CHANNELS, n=4)
    graph = write_nir(tmp_path / "pop.nir", pop, fits=hh_fit)
    back = nir.read(tmp_path / "pop.nir")
    assert set(back.nodes) == {"input", "neurons", "output"}
    assert sorted(back.edges) == sorted(graph.edges)
    lif = back.nodes["neurons"]
    assert isinstance(lif, nir.LIF)
    np.testing.assert_allclose(lif.tau, np.full(4, hh_fit.tau * 1e-3))  # seconds
    np.testing.assert_allclose(lif.v_threshold, np.full(4, hh_fit.v_threshold))
    assert back.metadata["time_unit"] == "s"
    np.testing.assert_allclose(back.metadata["fit_rate_rel_rms"], [hh_fit.rate_rel_rms])


def test_population_stand_in_spike_counts_agree_with_hh(hh_fit):
    pop = Population(HH_CHANNELS, n=6)
    pop.i_ext[:] = [0.0, 10.0, 15.0, 20.0, 30.0, 40.0]
    graph = to_nir(pop, fits=hh_fit, time_unit="ms")
    lif = simulate_nir(graph, pop.i_ext, 100.0)
    hh = pop.run(100.0, backend="reference", max_spikes=1)
    assert lif.spike_count[0] == hh.spike_count[0] == 0
    # measured: 0 7 8 9 10 11 spikes for both
    assert np.abs(lif.spike_count - hh.spike_count).max() <= 1


def test_network_exports_weights_as_post_by_pre_current_jumps(hh_fit):
    W = sp.csr_matrix(np.array([[0.0, 0.2, 0.0], [0.0, 0.0, 0.1], [0.3, 0.0, 0.0]]))
    net = Network(HH_CHANNELS, W, delay=1.0, tau_syn=5.0, e_syn=0.0)
    graph = to_nir(net, fits=hh_fit, time_unit="ms")
    weight = graph.nodes["synapses"].weight
    assert weight.shape == (3, 3)
    np.testing.assert_allclose(weight, W.toarray().T * (0.0 - hh_fit.v_leak) * 5.0)
    assert isinstance(graph.nodes["neurons"], nir.CubaLIF)
    np.testing.assert_allclose(graph.nodes["delay"].delay, 1.0)
    assert ("synapses", "neurons") in graph.edges and ("delay", "synapses") in graph.edges


def test_network_stand_in_spike_counts_track_hh_network(tmp_path, hh_fit):
    W = sp.random(20, 20, density=0.2, format="csr", random_state=0) * 0.3
    net = Network(HH_CHANNELS, W, delay=1.0)
    net.i_ext[:5] = 12.0
    write_nir(tmp_path / "net.nir", net, fits=hh_fit)
    lif = simulate_nir(nir.read(tmp_path / "net.nir"), net.i_ext, 100.0)
    hh = net.run(100.0, backend="reference", max_spikes=1)
    # measured: 7.0 HH spikes per neuron on average against 6.9 for the stand-in, 1.2 apart
    # per neuron on average, 4 at most; neuron 19 gets too little synaptic drive to fire in
    # either
    assert abs(lif.spike_count.mean() - hh.spike_count.mean()) < 0.5
    assert np.abs(lif.spike_count - hh.spike_count).mean() < 1.5
    assert np.abs(lif.spike_count - hh.spike_count).max() <= 4
    assert hh.spike_count[19] == lif.spike_count[19] == 0
    assert (hh.spike_count[5:19] > 0).all() and (lif.spike_count[5:19] > 0).all()


def test_synaptic_spike_reaches_the_stand_in_one_delay_later():
    fit = made_up_fit()
    W = sp.csr_matrix(np.array([[0.0, 0.5], [0.0, 0.0]]))
    graph = to_nir(Network(HH_CHANNELS, W, delay=2.0), fits=fit, time_unit="ms")
    with_drive = simulate_nir(graph, np.array([20.0, 0.0]), 10.0)
    t_pre = with_drive.spike_times[0, 0]
    assert with_drive.spike_count[1] >= 1
    t_post = with_drive.spike_times[0, 1]
    assert 2.0 <= t_post - t_pre < 2.5  # one 2 ms delay plus the rise to threshold


def test_neurons_with_different_parameters_get_their_own_fits():
    pop = Population(HH_CHANNELS, n=3, g_na=np.array([120.0, 100.0, 120.0]))
    graph = to_nir(pop, currents=[0.0, 10.0, 20.0, 40.0], duration=50.0)
    assert graph.metadata["fit_index"].tolist() in ([1, 0, 1], [0, 1, 0])
    tau = graph.nodes["neurons"].tau
    assert tau[0] == tau[2] and len(graph.metadata["fit_rate_rel_rms"]) == 2


def test_wrong_model_and_time_unit_are_refused():
    with pytest.raises(fusekit.InputError, match="Population, Network or CableNetwork"):
        to_nir(object())
    with pytest.raises(fusekit.InputError, match="time_unit"):
        to_nir(Population(HH_CHANNELS, n=1), time_unit="us")


def test_a_neuron_that_never_fires_cannot_be_fitted():
    with pytest.raises(fusekit.InputError, match="never fired"):
        fit_lif(currents=[0.0, 0.5, 1.0], duration=20.0)


def test_missing_nir_package_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)
    with pytest.raises(ImportError, match="pip install nir"):
        to_nir(Population(HH_CHANNELS, n=1), fits=made_up_fit())


# ------------------------------------------------------- several synapse types, cable cells

BALL_AND_STICK = (np.array([-1, 0, 1, 2, 1]), [20.0, 100, 100, 100, 80],
                  [20.0, 2, 1.5, 1.0, 1.0])


def test_network_with_two_synapse_types_keeps_each_types_charge():
    # Exc. (0 mV, 3 ms) from even cells, inh. (-80 mV, 8 ms) from odd ones. This used to
    # raise a TypeError (e_syn as a sequence minus an array).
    W = sp.csr_matrix(np.array([[0.0, 0.2, 0.1], [0.3, 0.0, 0.4], [0.0, 0.5, 0.0]]))
    net = Network(HH_CHANNELS, W, tau_syn=(3.0, 8.0), e_syn=(0.0, -80.0),
                  synapse_type=np.array([0, 1, 0]))
    fit = made_up_fit(v_leak=-65.0)
    graph = to_nir(net, fits=fit, time_unit="ms")
    e_syn, tau_syn = np.array([0.0, -80.0, 0.0]), np.array([3.0, 8.0, 3.0])  # by pre
    want = W.toarray().T * ((e_syn + 65.0) * tau_syn)[None, :]
    np.testing.assert_allclose(graph.nodes["synapses"].weight, want)
    assert (graph.nodes["synapses"].weight[:, 1] <= 0).all()  # inhibitory column
    # post 0 gets only inh. charge, post 1 only exc.; post 2 both, weighted by |charge|
    charge = np.abs(want[2])
    tau2 = (charge[0] * 3.0 + charge[1] * 8.0) / (charge[0] + charge[1])
    np.testing.assert_allclose(graph.nodes["neurons"].tau_syn, [8.0, 3.0, tau2])


def passive_cell(junctions=False):
    from fusekit.neuro import CableNetwork, ChannelSet
    from fusekit.neuro.hh import HHLeak

    return CableNetwork(ChannelSet([HHLeak]), BALL_AND_STICK, sp.csr_matrix((2, 2)),
                        junctions=junctions)


def test_soma_attenuation_of_a_passive_cell_is_the_linear_solve():
    from fusekit.neuro import soma_attenuation

    cell = passive_cell()
    got = soma_attenuation(cell)
    # The steady state of the leak-only cable: M v = g e + i, M = diag(g) + axial terms
    # (the rows of cable_coupling: C0 couples a compartment to its parent, C1 the parent
    # to it), all per unit area; a current I into compartment c is I / area[c] there.
    c0, c1 = cell.coupling[0, 0], cell.coupling[1, 0]
    g = cell.params[cell.channel_set.param_names.index("g_leak"), 0].astype(np.float64)
    M = np.diag(g)
    for j, p in enumerate(cell.parent[1:], start=1):
        M[j, j] += c0[j]
        M[p, p] += c1[j]
        M[j, p] -= c0[j]
        M[p, j] -= c1[j]
    z = np.linalg.inv(M)[0] / cell.area
    np.testing.assert_allclose(got, z / z[0], rtol=1e-9)  # measured 1.5e-11
    assert got[0] == 1.0 and (np.diff(got[:4]) < 0).all()  # falls along the dendrite


def test_cable_network_synapses_reach_the_soma_attenuated(tmp_path):
    from fusekit.neuro import CableNetwork, soma_attenuation

    W = sp.csr_matrix(np.array([[0.0, 0.2, 0.0], [0.0, 0.0, 0.1], [0.3, 0.0, 0.0]]))
    comps = np.array([3, 0, 4])  # the synapses in CSR order
    net = CableNetwork(HH_CHANNELS, BALL_AND_STICK, W, synapse_compartment=comps,
                       tau_syn=5.0, e_syn=0.0)
    fit = made_up_fit(v_leak=-65.0)
    graph = to_nir(net, fits=fit, time_unit="ms")
    atten = soma_attenuation(net, backend="reference")  # to_nir's default backend
    np.testing.assert_allclose(graph.metadata["soma_attenuation"], atten[None])
    gain = atten[comps] * net.area[comps] / net.area[0]
    want = np.zeros((3, 3))
    pre, post = np.array([0, 1, 2]), W.indices
    want[post, pre] = W.data * 65.0 * 5.0 * gain
    np.testing.assert_allclose(graph.nodes["synapses"].weight, want, rtol=1e-12)
    assert 0 < atten[3] < atten[2] < atten[1] < 1 and atten[4] < 1
    assert isinstance(graph.nodes["neurons"], nir.CubaLIF)
    assert "dendrites" in graph.metadata["lost"]
    write_nir(tmp_path / "cells.nir", net, fits=fit, time_unit="ms")  # and back
    back = nir.read(tmp_path / "cells.nir")
    np.testing.assert_array_equal(back.nodes["synapses"].weight, graph.nodes["synapses"].weight)
    np.testing.assert_array_equal(np.asarray(back.metadata["soma_attenuation"]), atten[None])


def test_cable_stand_ins_track_the_cells_in_tonic_firing():
    from fusekit.neuro import CableNetwork, fit_lif_cable

    W = sp.random(20, 20, density=0.2, format="csr", random_state=0) * 0.2
    comps = np.random.default_rng(1).integers(0, 5, W.nnz)
    net = CableNetwork(HH_CHANNELS, BALL_AND_STICK, W, synapse_compartment=comps)
    fit = fit_lif_cable(net)
    assert fit.rate_rel_rms < 0.1  # measured 0.040
    net.i_ext[:, 0] = np.linspace(15.0, 35.0, 20)  # every soma above its rheobase
    lif = simulate_nir(to_nir(net, fits=fit), net.i_ext[:, 0], 200.0)
    hh = net.run(200.0, max_spikes=1)
    # measured: 15.05 HH spikes per cell against 14.85, 0.2 apart on average, 1 at most
    assert abs(lif.spike_count.mean() - hh.spike_count.mean()) < 0.5
    assert np.abs(lif.spike_count - hh.spike_count).max() <= 2


def test_a_cell_that_fires_at_rest_has_no_attenuation_to_measure():
    from fusekit.neuro import CableNetwork, fit_lif_cable, soma_attenuation

    net = CableNetwork(HH_CHANNELS, BALL_AND_STICK, sp.csr_matrix((2, 2)), e_leak=-30.0)
    with pytest.raises(fusekit.InputError, match="fires at rest"):
        soma_attenuation(net)
    with pytest.raises(fusekit.InputError, match="at least 3 currents"):
        fit_lif_cable(net, currents=[1.0, 2.0])


def test_cable_cells_of_two_kinds_get_their_own_attenuation():
    from fusekit.neuro import CableNetwork, soma_attenuation

    W = sp.csr_matrix(np.array([[0.0, 0.2, 0.1], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    g_leak = np.full((3, 5), 0.0003)
    g_leak[2] = 0.003  # cell 2 leaks ten times more
    net = CableNetwork(HH_CHANNELS, BALL_AND_STICK, W, synapse_compartment=3, g_leak=g_leak)
    fits = [made_up_fit(v_leak=-65.0), made_up_fit(v_leak=-60.0)]
    graph = to_nir(net, fits=fits, time_unit="ms")
    atten = graph.metadata["soma_attenuation"]
    assert atten.shape == (2, 5) and atten[0, 3] != atten[1, 3]
    np.testing.assert_array_equal(graph.metadata["fit_index"], [0, 0, 1])
    for cell, kind in ((1, 0), (2, 1)):
        want = soma_attenuation(net, cell, backend="reference")
        np.testing.assert_allclose(atten[kind], want, rtol=1e-12)
        gain = want[3] * net.area[3] / net.area[0]
        v_leak = fits[kind].v_leak
        np.testing.assert_allclose(graph.nodes["synapses"].weight[cell, 0],
                                   W[0, cell] * (0.0 - v_leak) * 5.0 * gain, rtol=1e-12)
