"""Bad input to fit_parameters, trace_loss, the mst inputs and options, cable_tree and
cable_coupling raises InputError saying what was wrong and what to do."""

import numpy as np
import pytest

import fusekit
from fusekit.mst import (
    from_networkx,
    from_scipy,
    kruskal_schedule,
    minimum_spanning_forest,
)
from fusekit.neuro import (
    HH_CHANNELS,
    cable_coupling,
    cable_tree,
    fit_parameters,
    read_swc,
    trace_loss,
)

torch = pytest.importorskip("torch")

# ------------------------------------------------------------------------ fit_parameters

N_STEPS, N_SWEEPS = 20, 2


def fit(target=None, i_ext=None, initial=None, **kw):
    """One cheap Adam step of a fit with the given pieces replaced."""
    i_ext = torch.zeros(N_STEPS, N_SWEEPS, dtype=torch.float64) if i_ext is None else i_ext
    target = torch.full((N_STEPS, N_SWEEPS), -65.0, dtype=torch.float64) if target is None \
        else target
    kw = {"dt": 0.025, "adam_steps": 1, "lbfgs_steps": 0, **kw}
    return fit_parameters(HH_CHANNELS, target, i_ext, {"g_na": 100.0} if initial is None
                          else initial, **kw)


GOOD_TARGET = torch.full((N_STEPS, N_SWEEPS), -65.0, dtype=torch.float64)


@pytest.mark.parametrize("target", [GOOD_TARGET[:, :1], GOOD_TARGET[:1], GOOD_TARGET[:7],
                                    GOOD_TARGET[:, 0]])
def test_fit_refuses_a_target_that_does_not_match_the_stimuli(target):
    with pytest.raises(fusekit.InputError, match=r"target_v must have shape .* = \(20, 2\)"):
        fit(target)


def test_fit_target_shape_follows_record_every():
    with pytest.raises(fusekit.InputError, match=r"= \(6, 2\) to match i_ext \(20, 2\) and "
                                                 "record_every=3"):
        fit(record_every=3)
    assert fit(GOOD_TARGET[:6], record_every=3).n_simulations == 1


def test_fit_refuses_nan_in_the_target_or_the_stimuli():
    bad = GOOD_TARGET.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(fusekit.InputError, match="target_v contains NaN"):
        fit(bad)
    with pytest.raises(fusekit.InputError, match="i_ext contains NaN"):
        fit(i_ext=torch.full((N_STEPS, N_SWEEPS), float("inf"), dtype=torch.float64))


def test_fit_takes_numpy_traces_as_tensors():
    a = fit(GOOD_TARGET.numpy(), np.zeros((N_STEPS, N_SWEEPS)))
    b = fit()
    assert a.values == b.values


@pytest.mark.parametrize("kw,match", [
    ({"target": [[-65.0] * 2] * 20}, "target_v must be a torch tensor or NumPy array"),
    ({"target": GOOD_TARGET.long()}, "target_v must be float32 or float64"),
    ({"i_ext": torch.zeros(N_STEPS, dtype=torch.float64)}, r"i_ext must have shape \(n_steps"),
    ({"i_ext": torch.zeros(2, N_SWEEPS, dtype=torch.float64), "record_every": 4},
     "fewer than record_every=4"),
    ({"initial": {}}, "initial must be a non-empty dict.*g_na"),
    ({"initial": {"g_nax": 1.0}}, "names 'g_nax', which is no parameter"),
    ({"initial": {"g_na": float("inf")}}, "g_na must be positive and finite"),
    ({"initial": {"g_na": "100"}}, "g_na must be positive and finite"),
    ({"fixed": {"g_na": 120.0}}, "'g_na' is in both initial"),
    ({"fixed": {"gk": 1.0}}, "fixed names 'gk'"),
    ({"dt": 0}, "dt must be a positive finite time step"),
    ({"dt": float("nan")}, "dt must be a positive finite time step"),
    ({"record_every": 0}, "record_every must be >= 1"),
    ({"adam_steps": 1.5}, "adam_steps must be an integer"),
    ({"target_spike_times": torch.zeros(3, 1, dtype=torch.float64)},
     r"target_spike_times must be .* \(max_spikes, 2\)"),
    ({"target_spike_times": torch.full((3, 2), float("inf"), dtype=torch.float64)},
     "mark a missing spike with NaN"),
])
def test_fit_bad_arguments_raise_input_error(kw, match):
    with pytest.raises(fusekit.InputError, match=match):
        fit(**kw)


def test_trace_loss_refuses_traces_of_different_shapes():
    with pytest.raises(fusekit.InputError, match=r"one shape .* got \(20, 2\) and \(7, 2\)"):
        trace_loss(GOOD_TARGET, GOOD_TARGET[:7])


# ------------------------------------------------------------------------ mst inputs


def test_from_networkx_keeps_large_integer_weights_exact():
    nx = pytest.importorskip("networkx")
    g = nx.Graph()
    g.add_edge(0, 1, weight=2**53 + 1)
    g.add_edge(1, 2, weight=1)
    g.add_edge(0, 2, weight=2**53)  # a float64 ties it with 0-1
    el = from_networkx(g)
    assert el.w.dtype == np.int64
    r = minimum_spanning_forest(g)
    assert sorted(zip(*(x.tolist() for x in r.tree()[:2]), strict=True)) == [(0, 2), (1, 2)]
    assert r.total_weight == 2**53 + 1


def test_from_networkx_integer_weights_beyond_int64():
    nx = pytest.importorskip("networkx")
    g = nx.Graph([(0, 1, {"weight": 2**64}), (1, 2, {"weight": 1})])
    with pytest.raises(fusekit.InputError, match="neither int64 nor uint64"):
        from_networkx(g)
    g = nx.Graph([(0, 1, {"weight": 2**63 + 1}), (1, 2, {"weight": 2**63 + 2})])
    with pytest.raises(fusekit.InputError, match="uint64 weights .* subtract"):
        from_networkx(g)


def test_from_networkx_refuses_ints_that_float64_would_round_among_floats():
    nx = pytest.importorskip("networkx")
    g = nx.Graph([(0, 1, {"weight": 2**53 + 1}), (1, 2, {"weight": 0.5})])
    with pytest.raises(fusekit.InputError, match="mix floats with the integer"):
        from_networkx(g)
    g = nx.Graph([(0, 1, {"weight": 3}), (1, 2, {"weight": 0.5})])
    assert from_networkx(g).w.tolist() == [3.0, 0.5]


def test_uint64_weights_are_compared_exactly():
    u, v = np.array([0, 1, 0]), np.array([1, 2, 2])
    w = np.array([2**53 + 1, 1, 2**53], dtype=np.uint64)
    r = minimum_spanning_forest(u, v, w, 3)
    assert sorted(r.edges.tolist()) == [1, 2]
    with pytest.raises(fusekit.InputError, match="subtract"):
        minimum_spanning_forest(u, v, w + np.uint64(2**63), 3)


@pytest.mark.parametrize("weight,match", [
    ("3", r"edge \(0, 1\) has weight '3' \(str\)"),
    (1j, r"has weight 1j \(complex\)"),
    (True, r"has weight True \(bool\)"),
    (None, r"has weight None"),
])
def test_from_networkx_refuses_weights_that_are_not_real_numbers(weight, match):
    nx = pytest.importorskip("networkx")
    with pytest.raises(fusekit.InputError, match=match):
        from_networkx(nx.Graph([(0, 1, {"weight": weight})]))


def test_from_networkx_refuses_a_bad_default_and_a_non_graph():
    nx = pytest.importorskip("networkx")
    with pytest.raises(fusekit.InputError, match="default must be a real number"):
        from_networkx(nx.Graph([(0, 1)]), default="x")
    with pytest.raises(fusekit.InputError, match="expected a networkx Graph.* got dict"):
        from_networkx({0: [1]})


def test_from_scipy_refuses_a_dense_array_saying_how_to_convert():
    pytest.importorskip("scipy")
    with pytest.raises(fusekit.InputError, match=r"got ndarray.*scipy.sparse.coo_array"):
        from_scipy(np.eye(3))


@pytest.mark.parametrize("make,match", [
    (lambda g: g.delaunay_graph(2), "delaunay_graph: n must be >= 3, got 2"),
    (lambda g: g.delaunay_graph(2.5), r"n must be an integer, got 2.5 \(float\)"),
    (lambda g: g.random_geometric_graph(-1), "random_geometric_graph: n must be >= 0"),
    (lambda g: g.random_geometric_graph(10, radius=-1.0), "radius must be a positive finite"),
    (lambda g: g.kronecker_graph(-1), "kronecker_graph: scale must be >= 0"),
    (lambda g: g.kronecker_graph(3, edgefactor=0), "edgefactor must be >= 1"),
])
def test_graph_generators_refuse_bad_sizes(make, match):
    pytest.importorskip("scipy")
    from fusekit.mst import graphs

    with pytest.raises(fusekit.InputError, match=match):
        make(graphs)


# ------------------------------------------------------------------------ mst options

U, V, W = np.array([0, 1]), np.array([1, 2]), np.array([1.0, 2.0])


@pytest.mark.parametrize("method", ["auto", "pipelined", "spike-kruskal", "radix-kruskal",
                                    "filter-kruskal", "boruvka"])
@pytest.mark.parametrize("quantum", [0, -1, float("nan"), float("inf"), "1", True])
def test_every_method_refuses_an_invalid_quantum(method, quantum):
    with pytest.raises(fusekit.InputError, match="quantum must be a positive finite number"):
        minimum_spanning_forest(U, V, W, 3, method=method, quantum=quantum)


@pytest.mark.parametrize("chunks,match", [
    ("2", r"chunks must be an integer .* got '2' \(str\)"),
    (1.5, r"chunks must be an integer .* got 1.5 \(float\)"),
    (0, "chunks must be >= 1"),
])
def test_chunks_must_be_a_positive_integer(chunks, match):
    with pytest.raises(fusekit.InputError, match=match):
        minimum_spanning_forest(U, V, W, 3, method="pipelined", chunks=chunks)


@pytest.mark.parametrize("p,match", [
    (1.5, r"p must be an integer .* got 1.5"),
    (0, "p must be >= 1"),
    ("1", r"p must be an integer .* got '1'"),
])
def test_schedule_refuses_a_p_that_is_not_a_positive_integer(p, match):
    r = minimum_spanning_forest(U, V, W, 3)
    with pytest.raises(fusekit.InputError, match=match):
        r.schedule(p=p)
    with pytest.raises(fusekit.InputError, match=match):
        kruskal_schedule(W, r.edges, p=p)


# ------------------------------------------------------------------------ cable geometry

L3, D3 = np.full(3, 20.0), np.full(3, 2.0)


@pytest.mark.parametrize("parent,match", [
    ([-1, 2, 0], r"Hines order.* parent\[1\] = 2"),     # a child before its parent
    ([-1, -1, 0], r"parent\[1\] = -1"),                 # two roots
    ([-1, 0, -2], r"parent\[2\] = -2"),
    ([-1, 0, 5], r"parent\[2\] = 5"),                   # out of range
    ([0, -1, 1], r"parent\[0\] = 0"),                   # the root is not first
    ([-1.0, 0.0, 1.0], "integer compartment indices, got dtype float64"),
])
@pytest.mark.parametrize("function", [cable_tree, cable_coupling])
def test_cable_geometry_refuses_parents_out_of_hines_order(function, parent, match):
    with pytest.raises(fusekit.InputError, match=match) as exc:
        function(np.array(parent), L3, D3)
    assert function.__name__ in str(exc.value)


@pytest.mark.parametrize("function", [cable_tree, cable_coupling])
def test_cable_geometry_refuses_an_empty_parent(function):
    with pytest.raises(fusekit.InputError, match=r"non-empty \(n_comp,\).* got shape \(0,\)"):
        function(np.array([], dtype=np.int64), L3[:0], D3[:0])


@pytest.mark.parametrize("r_axial", [float("inf"), 0.0, float("nan"), "100", [1.0, 2.0]])
@pytest.mark.parametrize("function", [cable_tree, cable_coupling])
def test_cable_geometry_refuses_r_axial_that_is_not_positive_and_finite(function, r_axial):
    with pytest.raises(fusekit.InputError, match="r_axial must be one positive finite number"):
        function(np.array([-1, 0, 0]), L3, D3, r_axial)


def test_cable_tree_takes_geometry_as_tensors():
    a = cable_tree(torch.tensor([-1, 0, 0]), torch.tensor(L3), torch.tensor(D3),
                   torch.tensor(50.0))
    b = cable_tree(np.array([-1, 0, 0]), L3, D3, 50.0)
    np.testing.assert_array_equal(a.coupling, b.coupling)


@pytest.mark.parametrize("name", ["length", "diam", "r_axial"])
def test_cable_tree_and_network_refuse_geometry_that_requires_grad(name):
    from fusekit.neuro import CableNetwork

    geometry = {"length": torch.tensor(L3), "diam": torch.tensor(D3),
                "r_axial": torch.tensor(50.0)}
    geometry[name].requires_grad_()
    with pytest.raises(fusekit.InputError, match=f"cable_tree: {name} requires grad.*"
                       "cable_coupling"):
        cable_tree(np.array([-1, 0, 0]), **geometry)
    r_axial = geometry.pop("r_axial")
    with pytest.raises(fusekit.InputError, match=f"CableNetwork: {name} requires grad"):
        CableNetwork(HH_CHANNELS, (np.array([-1, 0, 0]), geometry["length"], geometry["diam"]),
                     np.zeros((1, 1)), r_axial=r_axial)


@pytest.mark.parametrize("min_length", [float("nan"), 0.0, -1.0, float("inf"), "0.1"])
def test_read_swc_refuses_a_bad_min_length(tmp_path, min_length):
    path = tmp_path / "cell.swc"
    path.write_text("1 1 0 0 0 5 -1\n2 3 10 0 0 1 1\n")
    with pytest.raises(fusekit.InputError, match="min_length must be a positive finite"):
        read_swc(path, min_length=min_length)
