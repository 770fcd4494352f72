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
"""

import functools
import os

import numpy as np
import pytest

pytest.importorskip("scipy")
from scipy.sparse import coo_matrix  # noqa: E402
from scipy.sparse.csgraph import minimum_spanning_tree  # noqa: E402

from fusekit.mst import graphs, minimum_spanning_forest  # noqa: E402

LOG2N = int(os.environ.get("FUSEKIT_BENCH_MST_LOG2N", "16"))
FAMILIES = {
    "delaunay": lambda scheme: graphs.delaunay_graph(1 << LOG2N, seed=0, weights=scheme),
    "rgg": lambda scheme: graphs.random_geometric_graph(1 << LOG2N, seed=0, weights=scheme),
    "kronecker": lambda scheme: graphs.kronecker_graph(LOG2N - 2, seed=0, weights=scheme),
}
CASES = [(f, s) for f in FAMILIES for s in ("uniform", "int255")]
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
    igraph = pytest.importorskip("igraph")
    u, v, w, n = graph(family, scheme)
    benchmark.group = group(family, scheme)
    g = igraph.Graph(n=n, edges=np.column_stack([u, v]).tolist())
    weights = w.astype(np.float64).tolist()
    tree = benchmark(g.spanning_tree, weights=weights)
    assert tree.ecount() == n - len(g.connected_components())


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
