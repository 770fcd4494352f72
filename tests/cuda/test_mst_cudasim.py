"""The CUDA Borůvka kernels against the stable-Kruskal oracle, in Numba's CUDA simulator."""

import numpy as np
import pytest

from fusekit.backends.cuda import mst as cuda_mst
from fusekit.ops.mst import forest_reference

pytestmark = pytest.mark.cudasim


def ranks(w):
    edge_of_rank = np.argsort(w, kind="stable").astype(np.int64)
    rank = np.empty_like(edge_of_rank)
    rank[edge_of_rank] = np.arange(w.size)
    return rank, edge_of_rank


@pytest.mark.parametrize("seed,n,m", [(0, 12, 30), (1, 20, 12), (2, 6, 40)])
def test_boruvka_takes_the_stable_kruskal_forest(seed, n, m):
    rng = np.random.default_rng(seed)
    u, v = rng.integers(0, n, m), rng.integers(0, n, m)  # with self-loops and multi-edges
    w = rng.integers(0, 4, m).astype(np.float64)  # many ties
    taken, rounds = cuda_mst.boruvka_launch(u, v, *ranks(w), n)
    expected, _ = forest_reference(u, v, w, n=n)
    np.testing.assert_array_equal(np.flatnonzero(taken.copy_to_host()), np.sort(expected))
    assert 1 <= rounds <= int(np.ceil(np.log2(n))) + 1


def test_boruvka_on_a_graph_without_edges_takes_nothing():
    e = np.empty(0, np.int64)
    taken, rounds = cuda_mst.boruvka_launch(e, e, e, e, 4)
    assert taken.copy_to_host().size == 0 and rounds == 0
