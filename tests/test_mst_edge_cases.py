"""Edge cases of minimum_spanning_forest, for every method on the CPU and reference backends.

Empty graphs, a single vertex, all-equal weights, negative weights, extreme weight ranges and
every weight dtype give the forest of the stable-Kruskal oracle (and SciPy's weight where
SciPy can express the graph: it reads a stored 0 as no edge and sums parallel COO entries, so
it is only asked about graphs without zero weights, after keeping each pair's lightest edge);
wrong dtypes and values raise InputError saying what to do.
"""

import numpy as np
import pytest

pytest.importorskip("scipy")
from scipy.sparse import coo_matrix  # noqa: E402
from scipy.sparse.csgraph import minimum_spanning_tree  # noqa: E402

import fusekit  # noqa: E402
from fusekit.mst import METHODS, minimum_spanning_forest  # noqa: E402
from fusekit.ops.mst import forest_reference  # noqa: E402

RUN = [(m, b) for m in METHODS for b in ("cpu", "reference")]
SPIKING = ("pipelined", "spike-kruskal", "radix-kruskal")


def scipy_weight(u, v, w, n):
    """SciPy's forest weight and component count (self-loops dropped, lightest parallel edge)."""
    keep = u != v
    a, b, x = np.minimum(u, v)[keep], np.maximum(u, v)[keep], w[keep].astype(np.float64)
    order = np.lexsort((x, b, a))
    a, b, x = a[order], b[order], x[order]
    first = np.ones(a.size, bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    assert (x[first] != 0).all(), "SciPy would read a zero weight as a missing edge"
    t = minimum_spanning_tree(coo_matrix((x[first], (a[first], b[first])), shape=(n, n)).tocsr())
    return t.sum(), n - t.nnz


def assert_oracle_forest(u, v, w, n, method, backend):
    expected, _ = forest_reference(u, v, w, n=n)
    r = minimum_spanning_forest(u, v, w, n, method=method, backend=backend)
    np.testing.assert_array_equal(np.sort(r.edges), np.sort(expected))
    assert r.n_components == n - expected.size
    if w.dtype.kind in "iu":
        assert r.total_weight == sum(int(x) for x in w[expected])
    else:
        assert r.total_weight == pytest.approx(float(w[expected].astype(np.float64).sum()))
    return r


@pytest.mark.parametrize("method,backend", RUN)
@pytest.mark.parametrize("wdtype", [np.float64, np.int32])
def test_empty_graph_without_vertices(method, backend, wdtype):
    e = np.empty(0, np.int64)
    r = assert_oracle_forest(e, e, np.empty(0, wdtype), 0, method, backend)
    assert r.edges.size == 0 and r.n_components == 0 and r.total_weight == 0
    s = r.schedule(p=3)
    assert (s.events, s.serial_steps, s.pipelined_steps, s.prim_steps) == (0, 0, 0, 0)


@pytest.mark.parametrize("method,backend", RUN)
def test_vertices_without_edges_are_their_own_components(method, backend):
    e = np.empty(0, np.int64)
    r = assert_oracle_forest(e, e, np.empty(0, np.int64), 5, method, backend)
    assert r.n_components == 5 and r.total_weight == 0


@pytest.mark.parametrize("method,backend", RUN)
def test_single_vertex_with_and_without_self_loops(method, backend):
    e = np.empty(0, np.int64)
    r = assert_oracle_forest(e, e, np.empty(0), 1, method, backend)
    assert r.n_components == 1
    loops = np.zeros(3, np.int64)
    r = assert_oracle_forest(loops, loops, np.array([-2.0, 0.0, 5.0]), 1, method, backend)
    assert r.edges.size == 0 and r.n_components == 1 and r.total_weight == 0


def multigraph(seed, n=40, m=300):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, m), rng.integers(0, n, m), n


@pytest.mark.parametrize("method,backend", RUN)
@pytest.mark.parametrize("weight", [0.5, 7, -3, 0.0, 0])
def test_all_equal_weights_take_the_lowest_edge_ids(method, backend, weight):
    u, v, n = multigraph(1)
    w = np.full(u.size, weight)
    r = assert_oracle_forest(u, v, w, n, method, backend)
    if weight != 0:
        expected_weight, components = scipy_weight(u, v, w, n)
        assert r.total_weight == pytest.approx(expected_weight) and r.n_components == components


@pytest.mark.parametrize("method,backend", RUN)
@pytest.mark.parametrize("kind", ["float", "int", "all negative float"])
def test_negative_weights_match_scipy_and_the_oracle(method, backend, kind):
    u, v, n = multigraph(2)
    rng = np.random.default_rng(3)
    if kind == "float":
        w = rng.random(u.size) - 0.5
    elif kind == "int":
        w = rng.integers(-20, 20, u.size)  # zeros too: the oracle only
    else:
        w = -1.0 - rng.random(u.size)
    r = assert_oracle_forest(u, v, w, n, method, backend)
    if kind != "int":
        expected_weight, components = scipy_weight(u, v, w, n)
        assert r.total_weight == pytest.approx(expected_weight) and r.n_components == components


@pytest.mark.parametrize("method,backend", RUN)
@pytest.mark.parametrize("low,high,dtype", [
    (-(2**40), 2**40, np.int64),       # wider than 2**28 unit steps: a coarser integer grid
    (-(2**62), 2**62, np.int64),       # wider than int64 can subtract: a float grid
    (0, 2**32 - 1, np.uint32),
])
def test_integer_weights_of_any_range(method, backend, low, high, dtype):
    u, v, n = multigraph(4)
    rng = np.random.default_rng(5)
    w = rng.integers(low, high, u.size, dtype=np.int64, endpoint=True).astype(dtype)
    w[:4] = [low, high, low + 1, high - 1]  # the extremes and neighbours that must not tie
    r = assert_oracle_forest(u, v, w, n, method, backend)
    assert r.schedule(p=2).events > 0


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint8, np.uint16, np.int32, np.int64,
                                   np.uint32, np.uint64, np.float16, np.float32, np.float64])
def test_every_real_weight_dtype(dtype):
    u, v, n = multigraph(6)
    w = np.random.default_rng(7).integers(0, 100, u.size).astype(dtype)
    expected, _ = forest_reference(u, v, w, n=n)
    for method in METHODS:
        r = minimum_spanning_forest(u, v, w, n, method=method)
        np.testing.assert_array_equal(np.sort(r.edges), np.sort(expected), err_msg=method)


def test_float_range_beyond_float64_is_solved_by_comparison_methods_only():
    u, v, n = multigraph(8)
    w = np.random.default_rng(9).random(u.size)
    w[:2] = -1.7e308, 1.7e308  # max - min overflows
    for method, backend in RUN:
        if method in SPIKING:
            with pytest.raises(fusekit.InputError, match="wider than float64 can hold"):
                minimum_spanning_forest(u, v, w, n, method=method, backend=backend)
        else:  # auto picks filter-Kruskal here
            r = assert_oracle_forest(u, v, w, n, method, backend)
            with pytest.raises(fusekit.InputError, match="scale the keys down"):
                r.schedule()


@pytest.mark.parametrize("u,v,w,n,match", [
    (np.array([0.0, 1.0]), np.array([1, 2]), np.array([1.0, 2.0]), 3, "u must hold integer"),
    (np.array([0, 1]), np.array([True, False]), np.array([1.0, 2.0]), 3, "v must hold integer"),
    (np.array([0, 1]), np.array([1, 2]), np.array([True, False]), 3, "got dtype bool"),
    (np.array([0, 1]), np.array([1, 2]), np.array([1j, 2.0]), 3, "got dtype complex128"),
    (np.array([0, 1]), np.array([1, 2]), np.array(["1", "2"]), 3, "got dtype <U1"),
    (np.array([0, 1]), np.array([1, 2]), np.array([1, None], dtype=object), 3, "dtype object"),
    (np.array([0, 1]), np.array([1, 2]), np.array([1.0, 2.0]), 3.5, "n must be an integer"),
    (np.array([0, 1]), np.array([1, 2]), np.array([1.0, 2.0]), "3", "n must be an integer"),
    (np.array([0, 1]), np.array([1, 2]), np.array([1.0, 2.0]), True, "n must be an integer"),
])
def test_wrong_dtypes_raise_input_error_saying_what_to_do(u, v, w, n, match):
    with pytest.raises(fusekit.InputError, match=match) as exc:
        minimum_spanning_forest(u, v, w, n)
    assert "astype" in str(exc.value) or "np.float64" in str(exc.value) or "n must" in str(
        exc.value)
