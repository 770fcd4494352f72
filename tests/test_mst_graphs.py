"""fusekit.mst.graphs: DIMACS10-family generators, weight schemes and file readers."""

import math

import numpy as np
import pytest

pytest.importorskip("scipy")

import fusekit  # noqa: E402
from fusekit.mst import graphs, minimum_spanning_forest  # noqa: E402


def assert_simple(u, v, n):
    assert u.dtype == np.int32 and (u < v).all() and v.max() < n
    assert np.unique(u.astype(np.int64) * n + v).size == u.size


def test_delaunay_graph_is_a_planar_triangulation():
    u, v, w, n = graphs.delaunay_graph(2000, seed=0)
    assert_simple(u, v, n)
    assert 2.9 * n < u.size <= 3 * n - 6  # planar: at most 3n - 6 edges
    assert minimum_spanning_forest(u, v, w, n).n_components == 1


def test_random_geometric_graph_joins_points_within_the_dimacs_radius():
    n = 4096
    u, v, _, _ = graphs.random_geometric_graph(n, seed=2)
    assert_simple(u, v, n)
    r = 0.55 * math.sqrt(math.log(n) / n)
    expected = n * (n - 1) / 2 * math.pi * r * r  # boundary effects make it a bit smaller
    assert 0.85 * expected < u.size < expected


def test_kronecker_graph_is_simple_and_skewed():
    u, v, _, n = graphs.kronecker_graph(10, edgefactor=16, seed=0)
    assert n == 1024
    assert_simple(u, v, n)
    deg = np.bincount(np.concatenate([u, v]), minlength=n)
    assert deg.max() > 20 * np.median(deg[deg > 0])  # heavy-tailed degrees


@pytest.mark.parametrize("scheme,lo,hi,kind", [("uniform", 0.0, 1.0, "f"),
                                               ("int255", 1, 255, "i"),
                                               ("int1000", 1, 1000, "i")])
def test_weight_schemes_cover_their_range(scheme, lo, hi, kind):
    w = graphs.edge_weights(20000, scheme, seed=1)
    assert w.dtype.kind == kind and w.min() >= lo and w.max() <= hi
    if kind == "i":
        assert w.min() == lo and w.max() == hi


def test_unknown_weight_scheme_names_the_schemes():
    with pytest.raises(fusekit.InputError, match="int255"):
        graphs.edge_weights(3, "gaussian")


def test_read_metis_with_and_without_edge_weights(tmp_path):
    # triangle 1-2-3 plus an isolated vertex 4
    plain = tmp_path / "tri.graph"
    plain.write_text("% a comment\n4 3\n2 3\n1 3\n1 2\n\n")
    u, v, w, n = graphs.read_metis(plain)
    assert n == 4 and sorted(zip(u.tolist(), v.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2)]
    assert w.tolist() == [1, 1, 1]
    weighted = tmp_path / "triw.graph"
    weighted.write_text("4 3 011 1\n7 2 5 3 6\n8 1 5 3 4\n9 1 6 2 4\n1\n")
    u, v, w, n = graphs.read_metis(weighted)
    pairs = zip(u.tolist(), v.tolist(), strict=True)
    assert dict(zip(pairs, w.tolist(), strict=True)) == {(0, 1): 5, (0, 2): 6, (1, 2): 4}
    assert minimum_spanning_forest(u, v, w, n).total_weight == 9


def test_read_metis_rejects_a_wrong_edge_count(tmp_path):
    f = tmp_path / "bad.graph"
    f.write_text("3 5\n2\n1\n\n")
    with pytest.raises(fusekit.InputError, match="declares 5 edges"):
        graphs.read_metis(f)


def test_read_dimacs_gr(tmp_path):
    f = tmp_path / "g.gr"
    f.write_text("c test\np sp 3 4\na 1 2 7\na 2 1 7\na 2 3 1\na 3 2 1\n")
    u, v, w, n = graphs.read_dimacs_gr(f)
    assert n == 3 and u.tolist() == [0, 1, 1, 2] and w.tolist() == [7, 7, 1, 1]
    assert minimum_spanning_forest(u, v, w, n).total_weight == 8


def test_read_matrix_market(tmp_path):
    import scipy.io
    import scipy.sparse

    a = scipy.sparse.coo_matrix(([2.0, 3.0, 1.0], ([0, 1, 0], [1, 2, 2])), shape=(4, 4))
    scipy.io.mmwrite(tmp_path / "g.mtx", a)
    u, v, w, n = graphs.read_matrix_market(tmp_path / "g.mtx")
    assert n == 4 and sorted(w.tolist()) == [1.0, 2.0, 3.0]
    r = minimum_spanning_forest(u, v, w, n)
    assert r.total_weight == 3.0 and r.n_components == 2
