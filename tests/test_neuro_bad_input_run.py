"""Bad input to the neuro models and their torch simulators: clear InputErrors, never crashes.

Each test names one kind of bad input; the reference beside it is what a user must read.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from fusekit import InputError
from fusekit.neuro import (
    HH_CHANNELS,
    CableNetwork,
    ChannelSet,
    Network,
    Population,
    cable_network_simulate_torch,
    fit_lif,
    network_simulate_torch,
    params_tensor,
    record,
    simulate,
    simulate_torch,
)

HH = ChannelSet(HH_CHANNELS)
F64 = torch.float64
CSR = (np.array([0, 1, 1]), np.array([1]), np.array([0.1]))  # neuron 0 -> neuron 1
BALL_AND_STICK = (np.array([-1, 0, 1]), [20.0, 100.0, 100.0], [20.0, 2.0, 2.0])


# --------------------------------------------------------------- connectivity (Network)


def test_a_csc_matrix_gives_the_network_of_its_csr_form():
    dense = np.array([[0, 0.1, 0], [0, 0, 0.2], [0.3, 0, 0]])
    csc, csr = Network(HH, sp.csc_matrix(dense)), Network(HH, sp.csr_matrix(dense))
    np.testing.assert_array_equal(csc.indptr, csr.indptr)
    np.testing.assert_array_equal(csc.indices, csr.indices)
    np.testing.assert_array_equal(csc.weights, csr.weights)
    np.testing.assert_array_equal(csc.indptr, [0, 1, 2, 3])  # 0 -> 1, 1 -> 2, 2 -> 0
    np.testing.assert_array_equal(csc.indices, [1, 2, 0])


def test_coo_matrices_and_sparse_arrays_are_taken_as_csr():
    dense = np.array([[0, 0.1], [0, 0]])
    for W in (sp.coo_matrix(dense), sp.csr_array(dense), sp.coo_array(dense)):
        net = Network(HH, W)
        np.testing.assert_array_equal(net.indptr, [0, 1, 1])
        np.testing.assert_array_equal(net.indices, [1])


@pytest.mark.parametrize("bad", [np.zeros((3, 3)), [[0, 1], [0, 0]], None, CSR[:2]],
                         ids=["dense", "list", "none", "2-tuple"])
def test_other_connectivity_is_refused_naming_the_accepted_forms(bad):
    with pytest.raises(InputError, match=r"Network: connectivity must be a scipy.sparse "
                                         r"matrix .* or a tuple \(indptr, indices, weights\)"):
        Network(HH, bad)


def test_a_non_square_matrix_is_refused():
    with pytest.raises(InputError, match=r"must be a square \(n, n\) matrix .* \(5, 2\)"):
        Network(HH, sp.csr_matrix(np.ones((5, 2))))


def test_fractional_neuron_ids_are_refused_not_truncated():
    with pytest.raises(InputError, match=r"Network: indices must hold integer ids, .*1\.7"):
        Network(HH, (np.array([0, 1, 2]), np.array([1.7, 0.2]), np.array([0.1, 0.1])))
    whole = Network(HH, (np.array([0.0, 1.0, 1.0]), np.array([1.0]), np.array([0.1])))
    np.testing.assert_array_equal(whole.indices, [1])  # whole numbers in floats are ids


def test_complex_weights_are_refused():
    with pytest.raises(InputError, match="weights must be real conductances"):
        Network(HH, (CSR[0], CSR[1], np.array([0.1 + 1j])))


@pytest.mark.parametrize("weight, match", [(np.nan, "weights contains NaN"),
                                           (-0.1, "must not be negative")])
def test_nan_and_negative_weights_are_refused_at_construction(weight, match):
    with pytest.raises(InputError, match=f"Network: .*{match}"):
        Network(HH, (CSR[0], CSR[1], np.array([weight])))
    with pytest.raises(InputError, match=f"CableNetwork: .*{match}"):
        CableNetwork(HH, BALL_AND_STICK, (CSR[0], CSR[1], np.array([weight])))


def test_out_of_range_neurons_and_malformed_indptr_are_refused_at_construction():
    with pytest.raises(InputError, match=r"Network: indices .* must lie in \[0, 2\)"):
        Network(HH, (CSR[0], np.array([5]), CSR[2]))
    with pytest.raises(InputError, match="indptr must start at 0, never decrease"):
        Network(HH, (np.array([1, 2, 2, 2]), np.array([1, 2]), np.array([0.1, 0.1])))


def test_fractional_synapse_types_and_compartments_are_refused():
    with pytest.raises(InputError, match="synapse_type must hold integer ids"):
        Network(HH, CSR, tau_syn=[5.0, 10.0], synapse_type=[0.5])
    with pytest.raises(InputError, match=r"synapse_type must lie in \[0, 2\)"):
        Network(HH, CSR, tau_syn=[5.0, 10.0], synapse_type=[2])
    with pytest.raises(InputError, match="synapse_compartment must hold integer ids"):
        CableNetwork(HH, BALL_AND_STICK, CSR, synapse_compartment=1.5)


# --------------------------------------------------------------------------- delays


@pytest.mark.parametrize("delay", [-5.0, 0.0, np.nan, np.inf, "1.0"])
def test_a_delay_that_is_not_a_positive_finite_time_is_refused(delay):
    with pytest.raises(InputError, match="Network: delay must be a finite synaptic delay"):
        Network(HH, CSR, delay=delay)
    with pytest.raises(InputError, match="CableNetwork: delay must be a finite synaptic"):
        CableNetwork(HH, BALL_AND_STICK, CSR, delay=delay)


def test_a_delay_shorter_than_one_step_is_refused_at_run():
    net = Network(HH, CSR, delay=0.01)
    with pytest.raises(InputError, match=r"Network.run: the synaptic delay 0.01 ms is shorter "
                                         r"than one step, dt = 0.025 ms"):
        net.run(0.5)
    net.run(0.5, dt=0.01)  # a step of the delay's length is fine


# ---------------------------------------------------------------- dt and duration


def _runs():
    return {
        "Population.run": lambda **kw: Population(HH, n=2).run(**kw),
        "Network.run": lambda **kw: Network(HH, CSR).run(**kw),
        "CableNetwork.run": lambda **kw: CableNetwork(HH, BALL_AND_STICK, CSR).run(**kw),
        "record": lambda **kw: record(Population(HH, n=2), record_every=1, **kw),
        "simulate": lambda **kw: simulate(HH, params_tensor(HH, 2), torch.zeros(2, dtype=F64),
                                          **kw),
    }


@pytest.mark.parametrize("owner", list(_runs()))
@pytest.mark.parametrize("dt, match", [(0.0, "dt must be a positive finite"),
                                       (-0.025, "dt must be a positive finite"),
                                       (np.nan, "dt must be a positive finite"),
                                       (np.inf, "dt must be a positive finite"),
                                       ("0.025", "dt must be a number of ms")])
def test_a_bad_dt_is_refused_before_it_divides(owner, dt, match):
    with pytest.raises(InputError, match=f"{owner}: {match}"):
        _runs()[owner](duration=1.0, dt=dt)


@pytest.mark.parametrize("owner", list(_runs()))
@pytest.mark.parametrize("duration, match", [(-1.0, "duration must be a finite time >= 0"),
                                             (np.nan, "duration must be a finite time >= 0"),
                                             (np.inf, "duration must be a finite time >= 0"),
                                             (True, "duration must be a number of ms")])
def test_a_bad_duration_is_refused(owner, duration, match):
    with pytest.raises(InputError, match=f"{owner}: {match}"):
        _runs()[owner](duration=duration, dt=0.025)


def test_fit_lif_refuses_an_infinite_duration():
    with pytest.raises(InputError, match="fit_lif: duration must be a finite time >= 0"):
        fit_lif(duration=np.inf)


# ------------------------------------------------------------ whole-number counts


@pytest.mark.parametrize("owner", ["Population.run", "Network.run", "CableNetwork.run",
                                   "simulate"])
@pytest.mark.parametrize("name, value", [("record_every", 0.5), ("record_every", 2.5),
                                         ("max_spikes", 2.7), ("max_spikes", -1)])
def test_fractional_or_negative_counts_are_refused_not_truncated(owner, name, value):
    with pytest.raises(InputError, match=f"{owner}: {name} must be a non-negative integer"):
        _runs()[owner](duration=0.5, **{name: value})


# ---------------------------------------------------------------- simulate_torch


def _torch_population(n=2):
    return (torch.full((n,), -65.0, dtype=F64), torch.tensor(HH.initial_states(n)),
            torch.tensor(HH.default_params(n)), torch.zeros(n, dtype=F64))


def _simulate_torch(v0=None, S=None, P=None, i_ext=None, **kw):
    d_v0, d_S, d_P, d_i = _torch_population()
    kw = {"dt": 0.025, "n_steps": 4, **kw}
    return simulate_torch(HH, d_v0 if v0 is None else v0, d_S if S is None else S,
                          d_P if P is None else P, d_i if i_ext is None else i_ext, **kw)


def test_simulate_torch_refuses_nan_and_unphysical_values():
    v0, _, P, _ = _torch_population()
    with pytest.raises(InputError, match="simulate_torch: v0 contains NaN"):
        _simulate_torch(v0=v0 * np.nan)
    with pytest.raises(InputError, match="simulate_torch: params contains NaN"):
        _simulate_torch(P=P * np.nan)
    P0 = P.clone()
    P0[0] = 0.0
    with pytest.raises(InputError, match=r"simulate_torch: params row 0 \(c_m"):
        _simulate_torch(P=P0)


@pytest.mark.parametrize("kw, match", [({"dt": 0.0}, "dt must be a positive finite"),
                                       ({"dt": -0.025}, "dt must be a positive finite"),
                                       ({"dt": 1.0}, "dt = 1.0 ms is more than 2 times"),
                                       ({"n_steps": -4}, "n_steps must be a non-negative"),
                                       ({"max_spikes": 2.7}, "max_spikes must be a non-neg")])
def test_simulate_torch_refuses_bad_steps(kw, match):
    with pytest.raises(InputError, match=f"simulate_torch: {match}"):
        _simulate_torch(**kw)


def test_simulate_torch_refuses_wrong_shapes_and_numpy_arrays():
    _, S, P, _ = _torch_population()
    with pytest.raises(InputError, match=r"simulate_torch: params must have shape"):
        _simulate_torch(P=P[:, :1])  # (7, 1) would broadcast over the neurons
    with pytest.raises(InputError, match=r"simulate_torch: states0 must have shape"):
        _simulate_torch(S=S[:2])
    with pytest.raises(InputError, match="simulate_torch: v0 must be a torch tensor"):
        _simulate_torch(v0=np.full(2, -65.0))


# ------------------------------------------------- the torch networks' synapse checks


def _torch_network(engine, *, g_syn0=None, indptr=(0, 1, 1), indices=(1,), weights=(0.1,),
                   **kw):
    v0, S, P, i_ext = _torch_population()
    g = torch.zeros(2, dtype=F64) if g_syn0 is None else g_syn0
    kw = {"dt": 0.025, "n_steps": 4, "delay_steps": 1, **kw}
    return network_simulate_torch(HH, v0, S, P, i_ext, g, list(indptr), list(indices),
                                  torch.tensor(weights, dtype=F64), engine=engine, **kw)


ENGINES = ["torch", "kernel"]


@pytest.mark.parametrize("engine", ENGINES)
def test_torch_networks_refuse_nan_or_negative_conductances(engine):
    nan = torch.tensor([np.nan, 0.0], dtype=F64)
    with pytest.raises(InputError, match="network_simulate_torch: g_syn0 contains NaN"):
        _torch_network(engine, g_syn0=nan)
    with pytest.raises(InputError, match="g_syn0 are conductances .* must not be negative"):
        _torch_network(engine, g_syn0=torch.tensor([-1.0, 0.0], dtype=F64))
    arrivals = torch.full((1, 2), -1.0, dtype=F64)
    with pytest.raises(InputError, match="arrivals0 are conductances .* must not be negative"):
        _torch_network(engine, arrivals0=arrivals)
    with pytest.raises(InputError, match="network_simulate_torch: weights contains NaN or inf"):
        _torch_network(engine, indptr=(0, 2, 2), indices=(1, 0), weights=(np.inf, 0.2))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("indptr", [(1, 2, 2), (0, 3, 2)])
def test_torch_networks_refuse_a_malformed_indptr(engine, indptr):
    with pytest.raises(InputError, match="indptr must start at 0, never decrease"):
        _torch_network(engine, indptr=indptr, indices=(1, 0), weights=(0.1, 0.1))


@pytest.mark.parametrize("engine", ENGINES)
def test_torch_networks_refuse_fractional_ids(engine):
    with pytest.raises(InputError, match="network_simulate_torch: indices must hold integer"):
        _torch_network(engine, indices=(0.5,))
    with pytest.raises(InputError, match="network_simulate_torch: synapse_type must hold int"):
        _torch_network(engine, synapse_type=[0.5], tau_syn=[5.0, 10.0],
                       g_syn0=torch.zeros(2, 2, dtype=F64))


@pytest.mark.parametrize("engine", ENGINES)
def test_torch_networks_refuse_a_fractional_delay_and_an_unknown_surrogate(engine):
    with pytest.raises(InputError, match="delay_steps must be an integer >= 1 .* got 1.5"):
        _torch_network(engine, delay_steps=1.5)
    with pytest.raises(InputError, match="surrogate must be a callable"):
        _torch_network("torch", surrogate="x")


def test_the_torch_cable_network_refuses_fractional_compartments():
    v0, S = torch.full((2, 3), -65.0, dtype=F64), torch.tensor(HH.initial_states(6))
    parent = np.array([-1, 0, 1])
    cpl = torch.zeros(2, 2, 3, dtype=F64)
    args = (v0, S.reshape(3, 2, 3), torch.tensor(HH.default_params(6)).reshape(-1, 2, 3),
            torch.zeros(2, 3, dtype=F64), parent, cpl, torch.zeros(2, 3, dtype=F64),
            [0, 1, 1], [1], torch.tensor([0.1], dtype=F64))
    with pytest.raises(InputError, match="synapse_compartment must hold integer ids"):
        cable_network_simulate_torch(HH, *args, synapse_compartment=[1.5], dt=0.025,
                                     n_steps=2, delay_steps=1)


def test_cable_network_refuses_fractional_parents():
    with pytest.raises(InputError, match="CableNetwork: parent must hold integer"):
        CableNetwork(HH_CHANNELS, (np.array([-1.0, 0.5]), np.full(2, 10.0), np.full(2, 1.0)),
                     None)


def test_to_nir_names_fits_that_are_not_lif_fits_or_do_not_match():
    pytest.importorskip("nir")
    from fusekit.neuro import LIFFit, to_nir

    pop = Population(HH_CHANNELS, 2)
    with pytest.raises(InputError, match=r"fits must be LIFFit results .* got \['dict'\]"):
        to_nir(pop, fits=[{"tau": 1.0}])
    with pytest.raises(InputError, match="fits must be LIFFit results .* got none"):
        to_nir(pop, fits=[])
    empty = np.zeros(0)
    fit = LIFFit(10.0, 1.0, -65.0, -50.0, -65.0, empty, empty, empty, 0.0, empty, empty, 0.0, 0)
    with pytest.raises(InputError, match="1 distinct neurons .* but 2 fits were given"):
        to_nir(pop, fits=[fit, fit])
    assert to_nir(pop, fits=[fit]) is not None


def test_cable_network_names_a_reassigned_i_ext_of_the_wrong_shape():
    net = CableNetwork(HH_CHANNELS, (np.array([-1, 0, 0]), np.full(3, 20.0), np.full(3, 1.0)),
                       sp.csr_array((2, 2)))
    net.i_ext = np.zeros(5)
    with pytest.raises(InputError, match=r"i_ext must have shape \(n_cells, n_comp\) = \(2, 3\)"):
        net.run(0.1)
    net.i_ext = np.zeros((2, 3))
    assert net.run(0.1).v.shape == (2, 3)
