"""Graphs of the DIMACS10 families defined by a procedure, weight schemes, and file readers.

Generators return ``(u, v, w, n)``: each undirected edge once (``u < v``), int32 endpoints,
weights from :func:`edge_weights`.

* :func:`delaunay_graph`: Delaunay triangulation of ``n`` uniform points in the unit square
  (DIMACS10 ``delaunay_nX``);
* :func:`random_geometric_graph`: points in the unit square joined when closer than
  ``0.55 * sqrt(ln n / n)`` (DIMACS10 ``rgg_n_2_X_s0``);
* :func:`kronecker_graph`: the Graph500 Kronecker generator (A, B, C = 0.57, 0.19, 0.19),
  self-loops and parallel edges removed as in DIMACS10 ``kron_g500-logn*``; isolated
  vertices stay.

Readers: :func:`read_metis` (``.graph``), :func:`read_dimacs_gr` (9th DIMACS challenge
``.gr``), :func:`read_matrix_market` (``.mtx``). SciPy is needed for the geometric
generators and Matrix Market (``pip install scipy``).
"""

from __future__ import annotations

import importlib
import math
import operator
import os
from typing import Any

import numpy as np

from .._errors import InputError

__all__ = ["WEIGHT_SCHEMES", "delaunay_graph", "edge_weights", "kronecker_graph",
           "random_geometric_graph", "read_dimacs_gr", "read_matrix_market", "read_metis"]

Graph = tuple[np.ndarray, np.ndarray, np.ndarray, int]
#: Weight schemes: uniform floats in [0, 1), integers 1..255, integers 1..1000.
WEIGHT_SCHEMES = ("uniform", "int255", "int1000")


def _scipy(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"fusekit.mst.graphs needs SciPy for this ({module}); install it with "
            "pip install scipy (or pip install 'fusekit[mst]')"
        ) from None


def edge_weights(m: int, scheme: str = "uniform", seed: int = 0) -> np.ndarray:
    """Random edge weights.

    Args:
        m: Number of edges.
        scheme: ``"uniform"`` (float64 in ``[0, 1)``), ``"int255"`` (int32 in ``1..255``) or
            ``"int1000"`` (int32 in ``1..1000``).
        seed: Seed of NumPy's default generator.

    Returns:
        Weights, shape ``(m,)``.
    """
    rng = np.random.default_rng(seed)
    if scheme == "uniform":
        return rng.random(m)
    if scheme == "int255":
        return rng.integers(1, 256, m, dtype=np.int32)
    if scheme == "int1000":
        return rng.integers(1, 1001, m, dtype=np.int32)
    raise InputError(f"unknown weight scheme {scheme!r}; choose one of {', '.join(WEIGHT_SCHEMES)}")


def _whole(where: str, name: str, value: Any, least: int) -> int:
    """``value`` as an int ``>= least``; :class:`InputError` for 2.5, "3", True or less."""
    try:
        if isinstance(value, bool | np.bool_):
            raise TypeError
        k = operator.index(value)
    except TypeError:
        raise InputError(f"{where}: {name} must be an integer, got {value!r} "
                         f"({type(value).__name__})") from None
    if k < least:
        raise InputError(f"{where}: {name} must be >= {least}, got {k}")
    return k


def _finish(u: np.ndarray, v: np.ndarray, n: int, weights: str, seed: int) -> Graph:
    u, v = np.minimum(u, v).astype(np.int32), np.maximum(u, v).astype(np.int32)
    return u, v, edge_weights(u.shape[0], weights, seed + 1), n


def delaunay_graph(n: int, seed: int = 0, weights: str = "uniform") -> Graph:
    """Delaunay triangulation of ``n`` uniform random points in the unit square.

    Example:
        >>> from fusekit.mst import graphs
        >>> u, v, w, n = graphs.delaunay_graph(100, seed=1)
        >>> n, bool(250 < u.size < 300)
        (100, True)

    Args:
        n: Number of vertices (``>= 3``).
        seed: Seed of the points (weights use ``seed + 1``).
        weights: A scheme of :func:`edge_weights`.

    Returns:
        ``(u, v, w, n)``, about ``3 n`` edges.
    """
    n = _whole("delaunay_graph", "n", n, 3)  # a triangulation needs three points
    spatial = _scipy("scipy.spatial")
    pts = np.random.default_rng(seed).random((n, 2))
    indptr, indices = spatial.Delaunay(pts).vertex_neighbor_vertices
    u = np.repeat(np.arange(n), np.diff(indptr))
    keep = u < indices
    return _finish(u[keep], indices[keep], n, weights, seed)


def random_geometric_graph(n: int, seed: int = 0, radius: float | None = None,
                           weights: str = "uniform") -> Graph:
    """Random geometric graph: uniform points in the unit square, joined within ``radius``.

    Args:
        n: Number of vertices.
        seed: Seed of the points (weights use ``seed + 1``).
        radius: Connection radius; default ``0.55 * sqrt(ln n / n)`` (DIMACS10).
        weights: A scheme of :func:`edge_weights`.

    Returns:
        ``(u, v, w, n)``, about ``pi * 0.55**2 / 2 * ln n`` edges per vertex.
    """
    n = _whole("random_geometric_graph", "n", n, 0)
    if radius is not None and not (isinstance(radius, int | float | np.integer | np.floating)
                                   and not isinstance(radius, bool) and radius > 0
                                   and math.isfinite(radius)):
        raise InputError(f"random_geometric_graph: radius must be a positive finite distance "
                         f"(the unit square's units) or None, got {radius!r}")
    spatial = _scipy("scipy.spatial")
    if radius is None:
        radius = 0.55 * math.sqrt(math.log(max(n, 2)) / max(n, 1))
    pts = np.random.default_rng(seed).random((n, 2))
    pairs = spatial.cKDTree(pts).query_pairs(radius, output_type="ndarray")
    return _finish(pairs[:, 0], pairs[:, 1], n, weights, seed)


def kronecker_graph(scale: int, edgefactor: int = 16, seed: int = 0,
                    weights: str = "uniform") -> Graph:
    """Graph500 Kronecker graph with ``2**scale`` vertices, simple (as in DIMACS10).

    Follows the Graph500 reference generator: ``edgefactor * 2**scale`` edges, each placed by
    ``scale`` recursive quadrant choices with probabilities A=0.57, B=0.19, C=0.19, D=0.05,
    then vertex labels permuted at random. Self-loops and parallel edges are removed.

    Args:
        scale: log2 of the number of vertices.
        edgefactor: Generated edges per vertex (before removing duplicates).
        seed: Seed of the generator (weights use ``seed + 1``).
        weights: A scheme of :func:`edge_weights`.

    Returns:
        ``(u, v, w, n)``.
    """
    scale = _whole("kronecker_graph", "scale", scale, 0)
    edgefactor = _whole("kronecker_graph", "edgefactor", edgefactor, 1)
    n = 1 << scale
    m = edgefactor * n
    a, b, c = 0.57, 0.19, 0.19
    rng = np.random.default_rng(seed)
    ii = np.zeros(m, np.int64)
    jj = np.zeros(m, np.int64)
    ab = a + b
    c_norm = c / (1 - ab)
    a_norm = a / ab
    for bit in range(scale):
        ii_bit = rng.random(m) > ab
        jj_bit = rng.random(m) > np.where(ii_bit, c_norm, a_norm)
        ii += ii_bit.astype(np.int64) << bit
        jj += jj_bit.astype(np.int64) << bit
    perm = rng.permutation(n)
    u, v = perm[ii], perm[jj]
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    key = np.unique(lo[lo != hi] * n + hi[lo != hi])
    return _finish(key // n, key % n, n, weights, seed)


def _lines(path: str | os.PathLike[str], comment: str) -> list[str]:
    with open(path) as f:
        return [ln for ln in (raw.strip() for raw in f) if ln and not ln.startswith(comment)]


def read_metis(path: str | os.PathLike[str]) -> Graph:
    """Read a METIS ``.graph`` file (the DIMACS10 format).

    The header is ``n m [fmt [ncon]]``; line ``i`` lists vertex ``i``'s neighbours (1-based),
    preceded by its size and ``ncon`` vertex weights when ``fmt`` says so and each followed by
    the edge weight when ``fmt`` ends in 1. Lines starting with ``%`` are comments.

    Args:
        path: File to read.

    Returns:
        ``(u, v, w, n)`` with each edge once (``u < v``); ``w`` is int64 from the file, or
        all ones when the file has no edge weights.
    """
    lines = _lines(path, "%")
    if not lines:
        raise InputError(f"read_metis: {path} has no header line")
    head = lines[0].split()
    n, m = int(head[0]), int(head[1])
    fmt = head[2].rjust(3, "0") if len(head) > 2 else "000"
    ncon = int(head[3]) if len(head) > 3 else (1 if fmt[1] == "1" else 0)
    skip = (1 if fmt[0] == "1" else 0) + (ncon if fmt[1] == "1" else 0)
    step = 2 if fmt[2] == "1" else 1
    body = lines[1:]
    if len(body) < n:
        body += [""] * (n - len(body))  # trailing isolated vertices may have empty lines
    us, vs, ws = [], [], []
    for i in range(n):
        vals = np.array(body[i].split(), dtype=np.int64)[skip:]
        nbr = vals[::step] - 1
        us.append(np.full(nbr.size, i, np.int64))
        vs.append(nbr)
        ws.append(vals[1::2] if step == 2 else np.ones(nbr.size, np.int64))
    u, v, w = (np.concatenate(x) if x else np.empty(0, np.int64) for x in (us, vs, ws))
    if u.size and (v.min() < 0 or v.max() >= n):
        raise InputError(f"read_metis: {path} has a neighbour id outside 1..{n}")
    keep = u < v
    if int(keep.sum()) != m:
        raise InputError(f"read_metis: {path} declares {m} edges but lists {int(keep.sum())}")
    return u[keep].astype(np.int32), v[keep].astype(np.int32), w[keep], n


def read_dimacs_gr(path: str | os.PathLike[str]) -> Graph:
    """Read a 9th DIMACS challenge ``.gr`` file (``p sp n m`` and ``a u v w`` lines).

    Arcs are read as undirected edges; both directions of an edge become parallel edges, which
    the spanning-forest methods handle (only the lighter can be taken).

    Args:
        path: File to read.

    Returns:
        ``(u, v, w, n)``, 0-based vertex ids, ``w`` int64.
    """
    n = None
    arcs = []
    for ln in _lines(path, "c"):
        parts = ln.split()
        if parts[0] == "p":
            n = int(parts[2])
        elif parts[0] == "a":
            arcs.append(parts[1:4])
    if n is None:
        raise InputError(f"read_dimacs_gr: {path} has no 'p sp n m' line")
    a = np.array(arcs, dtype=np.int64).reshape(-1, 3)
    return (a[:, 0] - 1).astype(np.int32), (a[:, 1] - 1).astype(np.int32), a[:, 2], n


def read_matrix_market(path: str | os.PathLike[str]) -> Graph:
    """Read a Matrix Market ``.mtx`` adjacency matrix; each stored entry is an edge.

    Args:
        path: File to read (symmetric files are expanded by SciPy, so both directions appear).

    Returns:
        ``(u, v, w, n)``; pattern matrices get weight 1.
    """
    sio = _scipy("scipy.io")
    coo = sio.mmread(path)
    coo = coo.tocoo()
    if coo.shape[0] != coo.shape[1]:
        raise InputError(f"read_matrix_market: {path} holds a {coo.shape} matrix, not square")
    keep = coo.row != coo.col
    return (coo.row[keep].astype(np.int32), coo.col[keep].astype(np.int32),
            np.asarray(coo.data[keep]), coo.shape[0])
