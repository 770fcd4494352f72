"""fusekit.mst: every method against SciPy's minimum_spanning_tree and the Kruskal oracle."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

nx = pytest.importorskip("networkx")
scipy_sparse = pytest.importorskip("scipy.sparse")
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree  # noqa: E402

import fusekit  # noqa: E402
from fusekit.mst import METHODS, from_networkx, from_scipy, graphs, minimum_spanning_forest  # noqa: E402
from fusekit.ops.mst import forest_reference  # noqa: E402

RUN_METHODS = [m for m in METHODS if m != "auto"] + ["auto"]


def scipy_forest_weight(u, v, w, n):
    """SciPy's forest weight, with parallel edges reduced to the lightest and no self-loops.

    SciPy sums duplicate COO entries and reads a stored zero as no edge, so weights are
    shifted to be positive and duplicates reduced here first.
    """
    u, v, w = np.asarray(u), np.asarray(v), np.asarray(w, dtype=np.float64)
    keep = u != v
    u, v, w = np.minimum(u, v)[keep], np.maximum(u, v)[keep], w[keep]
    shift = 1.0 - w.min() if w.size else 0.0
    order = np.lexsort((w, v, u))
    u, v, w = u[order], v[order], w[order]
    first = np.ones(u.size, bool)
    first[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    u, v, w = u[first], v[first], w[first]
    a = scipy_sparse.coo_matrix((w + shift, (u, v)), shape=(n, n)).tocsr()
    t = minimum_spanning_tree(a)
    return t.sum() - shift * t.nnz, n - t.nnz


def random_graph(rng, n, m, weights, self_loops=True):
    u, v = rng.integers(0, n, m), rng.integers(0, n, m)
    if not self_loops:
        v = np.where(u == v, (v + 1) % n, v)
    if weights == "float":
        w = rng.random(m)
    elif weights == "ties":
        w = rng.integers(0, 4, m).astype(np.float64) / 2
    else:
        w = rng.integers(1, 20, m)
    return u, v, w, n


GRAPHS = [
    ("connected-ish", 60, 400),
    ("disconnected", 80, 60),
    ("multi-edges", 10, 200),
    ("single vertex", 1, 3),
]


@pytest.mark.parametrize("method", RUN_METHODS)
@pytest.mark.parametrize("weights", ["float", "int", "ties"])
@pytest.mark.parametrize("name,n,m", GRAPHS)
def test_forest_weight_and_components_match_scipy(rng, method, weights, name, n, m):
    u, v, w, n = random_graph(rng, n, m, weights)
    r = minimum_spanning_forest(u, v, w, n, method=method)
    expected_weight, expected_components = scipy_forest_weight(u, v, w, n)
    assert r.total_weight == pytest.approx(expected_weight, rel=1e-12, abs=1e-9)
    assert r.n_components == expected_components
    assert r.edges.size == n - expected_components


@pytest.mark.parametrize("method", RUN_METHODS)
def test_every_method_returns_the_forest_of_stable_kruskal(rng, method):
    u, v, w, n = random_graph(rng, 300, 2000, "ties")
    expected, _ = forest_reference(u, v, w, n=n)
    r = minimum_spanning_forest(u, v, w, n, method=method, chunks=7)
    np.testing.assert_array_equal(np.sort(r.edges), np.sort(expected))


@pytest.mark.parametrize("method", ["spike-kruskal", "radix-kruskal", "filter-kruskal",
                                    "boruvka"])
def test_reference_backend_gives_the_same_forest(rng, method):
    u, v, w, n = random_graph(rng, 50, 200, "float")
    cpu = minimum_spanning_forest(u, v, w, n, method=method, backend="cpu")
    ref = minimum_spanning_forest(u, v, w, n, method=method, backend="reference")
    np.testing.assert_array_equal(np.sort(cpu.edges), np.sort(ref.edges))


def test_self_loops_and_heavier_parallel_edges_are_never_taken():
    u, v = np.array([0, 0, 1, 0, 1]), np.array([0, 1, 0, 1, 2])
    w = np.array([0.0, 5.0, 2.0, 2.0, 1.0])
    for method in RUN_METHODS:
        r = minimum_spanning_forest(u, v, w, 3, method=method)
        assert sorted(r.edges.tolist()) == [2, 4], method  # edge 2 ties edge 3, lower id wins


def test_empty_graph_is_a_forest_of_isolated_vertices():
    for method in RUN_METHODS:
        r = minimum_spanning_forest(np.empty(0, int), np.empty(0, int), np.empty(0), 5,
                                    method=method)
        assert r.edges.size == 0 and r.n_components == 5 and r.total_weight == 0


def is_forest(n, u, v):
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(u.tolist(), v.tolist(), strict=True))
    return nx.is_forest(g) and g.number_of_edges() == len(u)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 30), m=st.integers(0, 80), seed=st.integers(0, 2**32 - 1),
       method=st.sampled_from(RUN_METHODS), weights=st.sampled_from(["float", "int", "ties"]))
def test_property_result_is_a_spanning_forest_with_n_minus_c_edges(n, m, seed, method, weights):
    u, v, w, n = random_graph(np.random.default_rng(seed), n, m, weights)
    r = minimum_spanning_forest(u, v, w, n, method=method, chunks=3)
    tu, tv, _ = r.tree()
    assert is_forest(n, tu, tv)
    a = scipy_sparse.coo_matrix((np.ones(m), (u, v)), shape=(n, n))
    assert r.n_components == connected_components(a, directed=False)[0]
    assert r.edges.size == n - r.n_components


def test_pipelined_stops_the_sort_once_the_forest_is_complete(rng):
    n = 200
    ring = np.arange(n)
    u = np.concatenate([ring, rng.integers(0, n, 5000)])
    v = np.concatenate([(ring + 1) % n, rng.integers(0, n, 5000)])
    w = np.concatenate([np.zeros(n), 1 + rng.random(5000)])  # the ring is lightest
    r = minimum_spanning_forest(u, v, w, n, method="pipelined", chunks=50)
    assert r.n_components == 1 and r.stats.uf_events < 5000
    assert r.timings["pipeline"] >= 0 and 1 <= r.counts["batches"] <= 50
    # the network stops in the step the last ring edge fires: the ring's step only
    assert r.stats.time_steps == 1 and r.stats.spikes == n + 1 + r.stats.uf_hops


def test_scipy_matrix_and_networkx_graph_inputs():
    u, v, w, n = graphs.delaunay_graph(200, seed=3)
    a = scipy_sparse.coo_matrix((w, (u, v)), shape=(n, n)).tocsr()
    expected = minimum_spanning_tree(a).sum()
    assert minimum_spanning_forest(a).total_weight == pytest.approx(expected)
    assert from_scipy(a).n == n
    g = nx.Graph()
    g.add_weighted_edges_from(zip(u.tolist(), v.tolist(), w.tolist(), strict=True))
    r = minimum_spanning_forest(g)
    assert r.total_weight == pytest.approx(expected)
    el = from_networkx(g)
    assert sorted(el.nodes) == list(range(n))


def test_schedule_model_counts_pipelined_serial_and_prim_steps():
    # Path 0-1-2-3 with integer weights 1, 2, 3 and a heavy chord: quantum 1.
    u, v, w = np.array([0, 1, 2, 0]), np.array([1, 2, 3, 3]), np.array([1, 2, 3, 9])
    r = minimum_spanning_forest(u, v, w, 4, method="spike-kruskal")
    s = r.schedule(p=1)
    assert (s.sort_steps, s.events, s.last_tree_step) == (9, 3, 2)
    assert s.serial_steps == 9 + 3
    assert s.pipelined_steps == 3  # one event per step, handled as it fires
    assert s.prim_steps == (0 + 2) + (1 + 2) + (2 + 2)
    assert set(s.speedups()) == {"pipelined vs spiking Prim's (model steps)",
                                 "pipelined vs serial spike Kruskal (model steps)",
                                 "serial spike Kruskal vs spiking Prim's (model steps)"}


def test_schedule_with_more_events_per_step_is_not_slower(rng):
    u, v, w, n = graphs.random_geometric_graph(2000, seed=1, weights="int255")
    r = minimum_spanning_forest(u, v, w, n)
    steps = [r.schedule(p).pipelined_steps for p in (1, 4, 64, 10**9)]
    assert steps == sorted(steps, reverse=True)
    assert steps[-1] == r.schedule(1).last_tree_step + 1


def test_auto_picks_the_counting_sort_for_small_integer_weights():
    u, v, w, n = graphs.delaunay_graph(300, seed=0, weights="int255")
    assert minimum_spanning_forest(u, v, w, n).method == "spike-kruskal"


@pytest.mark.parametrize("args,match", [
    ((np.array([0, 1]), np.array([1]), np.array([1.0, 2.0]), 3), "same length"),
    ((np.array([0, 5]), np.array([1, 2]), np.array([1.0, 2.0]), 3), "vertex id 5 is out"),
    ((np.array([0, -1]), np.array([1, 2]), np.array([1.0, 2.0]), 3), "vertex id -1 is out"),
    ((np.array([0, 1]), np.array([1, 2]), np.array([1.0, np.nan]), 3), "NaN weights"),
    ((np.array([0, 1]), np.array([1, 2]), np.array([1.0, np.inf]), 3), "infinite weights"),
    ((np.array([0]), np.array([0]), np.array([1.0]), -1), "n must be >= 0"),
    ((np.array([0.5]), np.array([0]), np.array([1.0]), 2), "integer vertex ids"),
])
def test_bad_input_raises_input_error_naming_the_problem(args, match):
    with pytest.raises(fusekit.InputError, match=match):
        minimum_spanning_forest(*args)


def test_unknown_method_lists_the_methods():
    with pytest.raises(fusekit.InputError, match="pipelined"):
        minimum_spanning_forest(np.array([0]), np.array([1]), np.array([1.0]), 2,
                                method="prim")


def test_a_lone_array_is_rejected_with_what_to_pass():
    with pytest.raises(fusekit.InputError, match="scipy.sparse"):
        minimum_spanning_forest(np.array([0, 1]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), chunks=st.integers(1, 200),
       scale=st.floats(1e-6, 1e6), offset=st.floats(-1e4, 1e4),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_property_pipelined_equals_stable_kruskal_for_any_slicing(seed, chunks, scale, offset,
                                                                 dtype):
    rng = np.random.default_rng(seed)
    n, m = 60, 300
    u, v = rng.integers(0, n, m), rng.integers(0, n, m)
    w = (rng.random(m) * scale + offset).astype(dtype)
    expected, _ = forest_reference(u, v, w, n=n)
    r = minimum_spanning_forest(u, v, w, n, method="pipelined", chunks=chunks)
    np.testing.assert_array_equal(np.sort(r.edges), np.sort(expected))


@pytest.mark.skipif("cuda" in fusekit.available_backends(), reason="a GPU is present")
def test_cuda_backend_without_a_gpu_says_why():
    u, v, w, n = random_graph(np.random.default_rng(0), 10, 20, "float")
    with pytest.raises(fusekit.BackendUnavailableError, match="backend 'cuda' is not available"):
        minimum_spanning_forest(u, v, w, n, backend="cuda")


@pytest.mark.parametrize("degree,expected", [(13.0, "spike-kruskal"), (20.0, "filter-kruskal")])
def test_auto_takes_filter_kruskal_only_for_dense_float_graphs(rng, degree, expected):
    from fusekit.mst import choose_method, edge_list

    n = 200
    m = int(degree * n / 2)
    g = edge_list(rng.integers(0, n, m), rng.integers(0, n, m), rng.random(m), n)
    assert choose_method(g) == expected
    assert minimum_spanning_forest(g).method == expected


def test_pipelined_kruskal_rejects_no_batches_and_mismatched_edges():
    u, v, w = np.array([0, 1]), np.array([1, 2]), np.array([1.0, 2.0])
    with pytest.raises(fusekit.InputError, match="batches must be >= 1"):
        fusekit.ops.pipelined_kruskal(u, v, w, 3, batches=0)
    with pytest.raises(fusekit.InputError, match="must share one shape"):
        fusekit.ops.pipelined_kruskal(u, v, w[:1], 3)
    with pytest.raises(fusekit.InputError, match="chunks must be >= 1"):
        minimum_spanning_forest(u, v, w, 3, method="pipelined", chunks=0)
