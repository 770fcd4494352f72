"""Minimum spanning forests: fusekit's methods against SciPy, igraph and networkx.

One group per DIMACS10-family graph and weight scheme, all on the same edge list:

* ``scipy_csr``: ``scipy.sparse.csgraph.minimum_spanning_tree`` on a CSR matrix built
  beforehand (the baseline to beat; its input conversion is not timed);
* ``scipy_from_coo``: the same, building the CSR matrix from the edge arrays in the call (what
  a user holding an edge list pays);
* ``igraph``: ``Graph.spanning_tree(weights=...)`` on a graph built beforehand (if installed);
* ``fusekit[method]``: :func:`fusekit.mst.minimum_spanning_forest` on the edge arrays.

networkx is 30-150x slower than SciPy, so it has its own small group.
``FUSEKIT_BENCH_MST_LOG2N`` (default 16) sets the size: ``2**N`` vertices (Kronecker graphs
use scale ``N - 2``, which has about as many edges).

End to end (the issue's comparison), groups ``mst end-to-end``: Delaunay and RGG graphs at
2^16 vertices (``FUSEKIT_BENCH_MST_LARGE=1`` adds 2^18 and 2^20), a user holding COO edge
arrays: ``fusekit[1 thread]`` / ``fusekit[2 threads]`` is ``minimum_spanning_forest(u, v, w,
n)`` (method ``auto``) with that many Numba threads, ``scipy_coo_to_csr_mst`` is
``minimum_spanning_tree(coo_matrix((w, (u, v)), shape=(n, n)).tocsr())``, CSR build included;
``scipy_csr_given`` and ``igraph`` are SciPy and igraph on structures built beforehand, so one
run (``FUSEKIT_BENCH_MST_LARGE=1 ... -k e2e``) gives every figure of the issue's table.
Groups ``spike_sort threads`` time the spike sort of the same weights with one and two
threads (the stage that runs in parallel).
"""

import functools
import os

import numpy as np
import pytest

pytest.importorskip("scipy")
from scipy.sparse import coo_matrix  # noqa: E402
from scipy.sparse.csgraph import minimum_spanning_tree  # noqa: E402

import fusekit  # noqa: E402
from fusekit._threads import set_kernel_threads  # noqa: E402
from fusekit.mst import graphs, minimum_spanning_forest  # noqa: E402

LOG2N = int(os.environ.get("FUSEKIT_BENCH_MST_LOG2N", "16"))
FAMILIES = {
    "delaunay": lambda scheme: graphs.delaunay_graph(1 << LOG2N, seed=0, weights=scheme),
    "rgg": lambda scheme: graphs.random_geometric_graph(1 << LOG2N, seed=0, weights=scheme),
    "kronecker": lambda scheme: graphs.kronecker_graph(LOG2N - 2, seed=0, weights=scheme),
}
SCHEMES = ("uniform", "int255", "int1000")  # the three weight schemes
CASES = [(f, s) for f in FAMILIES for s in SCHEMES]
METHODS = ["auto", "spike-kruskal", "pipelined", "radix-kruskal", "filter-kruskal", "boruvka"]


@functools.cache
def graph(family, scheme):
    return FAMILIES[family](scheme)


@functools.cache
def scipy_forest(family, scheme):
    u, v, w, n = graph(family, scheme)
    a = coo_matrix((w.astype(np.float64), (u, v)), shape=(n, n)).tocsr()
    return a, minimum_spanning_tree(a).sum()


def group(family, scheme):
    u, _, _, n = graph(family, scheme)
    return f"mst {family} n={n} m={u.size} {scheme}"


@pytest.mark.parametrize("family,scheme", CASES)
@pytest.mark.parametrize("method", METHODS)
def test_fusekit_mst(benchmark, family, scheme, method):
    u, v, w, n = graph(family, scheme)
    benchmark.group = group(family, scheme)
    minimum_spanning_forest(u, v, w, n, method=method)  # compile / load the Numba cache
    r = benchmark(minimum_spanning_forest, u, v, w, n, method=method)
    assert r.total_weight == pytest.approx(scipy_forest(family, scheme)[1], rel=1e-9)


@pytest.mark.parametrize("family,scheme", CASES)
def test_scipy_csr(benchmark, family, scheme):
    benchmark.group = group(family, scheme)
    a, _ = scipy_forest(family, scheme)
    benchmark(minimum_spanning_tree, a)


@pytest.mark.parametrize("family,scheme", CASES)
def test_scipy_from_coo(benchmark, family, scheme):
    u, v, w, n = graph(family, scheme)
    benchmark.group = group(family, scheme)
    benchmark(lambda: minimum_spanning_tree(coo_matrix((w, (u, v)), shape=(n, n)).tocsr()))


@pytest.mark.parametrize("family,scheme", CASES)
def test_igraph(benchmark, family, scheme):
    u, v, w, n = graph(family, scheme)
    benchmark.group = group(family, scheme)
    igraph_tree(benchmark, u, v, w, n)


SMALL = 1 << 12


@functools.cache
def small_graph():
    return graphs.delaunay_graph(SMALL, seed=0, weights="uniform")


def test_networkx_small(benchmark):
    nx = pytest.importorskip("networkx")
    u, v, w, n = small_graph()
    g = nx.Graph()
    g.add_weighted_edges_from(zip(u.tolist(), v.tolist(), w.tolist(), strict=True))
    benchmark.group = f"mst delaunay n={SMALL} uniform (networkx)"
    benchmark(lambda: nx.minimum_spanning_tree(g))


def test_fusekit_mst_small(benchmark):
    u, v, w, n = small_graph()
    benchmark.group = f"mst delaunay n={SMALL} uniform (networkx)"
    minimum_spanning_forest(u, v, w, n)
    benchmark(minimum_spanning_forest, u, v, w, n)


def test_scipy_csr_small(benchmark):
    u, v, w, n = small_graph()
    a = coo_matrix((w, (u, v)), shape=(n, n)).tocsr()
    benchmark.group = f"mst delaunay n={SMALL} uniform (networkx)"
    benchmark(minimum_spanning_tree, a)


E2E_LOG2N = [16] + ([18, 20] if os.environ.get("FUSEKIT_BENCH_MST_LARGE") == "1" else [])
E2E_CASES = [(f, s, k) for k in E2E_LOG2N for f in ("delaunay", "rgg") for s in SCHEMES]


@functools.cache
def e2e_graph(family, scheme, log2n):
    return FAMILIES_BY_SIZE[family](1 << log2n, seed=0, weights=scheme)


FAMILIES_BY_SIZE = {"delaunay": graphs.delaunay_graph, "rgg": graphs.random_geometric_graph}


@functools.cache
def e2e_scipy_weight(family, scheme, log2n):
    u, v, w, n = e2e_graph(family, scheme, log2n)
    return minimum_spanning_tree(coo_matrix((w, (u, v)), shape=(n, n)).tocsr()).sum()


@pytest.fixture
def kernel_threads():
    """Set Numba's threads for one benchmark; the session's count is restored afterwards."""
    before = fusekit.get_num_threads()
    yield set_kernel_threads
    set_kernel_threads(before)


def require_threads(threads):
    from fusekit.backends.cpu._numba import numba_max_threads

    if threads > min(os.cpu_count() or 1, numba_max_threads()):
        pytest.skip(f"needs {threads} CPU threads for Numba")


@pytest.mark.parametrize("threads", [1, 2], ids=["1 thread", "2 threads"])
@pytest.mark.parametrize("family,scheme,log2n", E2E_CASES)
def test_e2e_fusekit(benchmark, kernel_threads, family, scheme, log2n, threads):
    require_threads(threads)
    u, v, w, n = e2e_graph(family, scheme, log2n)
    benchmark.group = f"mst end-to-end {family} n=2^{log2n} m={u.size} {scheme}"
    kernel_threads(threads)
    minimum_spanning_forest(u, v, w, n)  # compile / load the Numba cache
    r = benchmark(minimum_spanning_forest, u, v, w, n)
    assert r.total_weight == pytest.approx(e2e_scipy_weight(family, scheme, log2n), rel=1e-9)


@pytest.mark.parametrize("family,scheme,log2n", E2E_CASES)
def test_e2e_scipy_coo_to_csr_mst(benchmark, family, scheme, log2n):
    u, v, w, n = e2e_graph(family, scheme, log2n)
    benchmark.group = f"mst end-to-end {family} n=2^{log2n} m={u.size} {scheme}"
    benchmark(lambda: minimum_spanning_tree(coo_matrix((w, (u, v)), shape=(n, n)).tocsr()))


@pytest.mark.parametrize("family,scheme,log2n", E2E_CASES)
def test_e2e_scipy_csr_given(benchmark, family, scheme, log2n):
    """SciPy on a CSR matrix built beforehand (the 3x and 4.5x goals), in the same group."""
    u, v, w, n = e2e_graph(family, scheme, log2n)
    benchmark.group = f"mst end-to-end {family} n=2^{log2n} m={u.size} {scheme}"
    a = coo_matrix((w.astype(np.float64), (u, v)), shape=(n, n)).tocsr()
    benchmark(minimum_spanning_tree, a)


@pytest.mark.parametrize("family,scheme,log2n", E2E_CASES)
def test_e2e_igraph(benchmark, family, scheme, log2n):
    """igraph on a graph built beforehand, in the same group."""
    u, v, w, n = e2e_graph(family, scheme, log2n)
    benchmark.group = f"mst end-to-end {family} n=2^{log2n} m={u.size} {scheme}"
    igraph_tree(benchmark, u, v, w, n)


def igraph_tree(benchmark, u, v, w, n):
    """Time ``Graph.spanning_tree`` on a graph built beforehand (skips without igraph)."""
    igraph = pytest.importorskip("igraph")
    g = igraph.Graph(n=n, edges=np.column_stack([u, v]).tolist())
    weights = w.astype(np.float64).tolist()
    tree = benchmark(g.spanning_tree, weights=weights)
    assert tree.ecount() == n - len(g.connected_components())


@pytest.mark.parametrize("threads", [1, 2], ids=["1 thread", "2 threads"])
@pytest.mark.parametrize("family,scheme,log2n", E2E_CASES)
def test_spike_sort_fusekit_threads(benchmark, kernel_threads, family, scheme, log2n, threads):
    require_threads(threads)
    _, _, w, _ = e2e_graph(family, scheme, log2n)
    benchmark.group = f"spike_sort threads {family} n=2^{log2n} m={w.size} {scheme}"
    kernel_threads(threads)
    fusekit.ops.spike_sort(w, backend="cpu")
    r = benchmark(fusekit.ops.spike_sort, w, backend="cpu")
    assert r.order.size == w.size
