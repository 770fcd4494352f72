"""Edge lists in: COO arrays, SciPy sparse matrices, networkx graphs; one validation."""

from __future__ import annotations

import operator
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import InputError
from ..ops._common import ids_in_range


@dataclass
class EdgeList:
    """A validated undirected edge list: edge ``e`` joins ``u[e]`` and ``v[e]`` with ``w[e]``.

    Attributes:
        u: First endpoints, shape ``(m,)``, int32 (int64 when ``n >= 2**31``).
        v: Second endpoints, shape ``(m,)``, the dtype of ``u``.
        w: Weights, shape ``(m,)``, the caller's integer or float dtype, finite.
        n: Number of vertices.
        nodes: For networkx input, the node of each vertex id; else ``None``.
        w_bounds: ``(min(w), max(w))`` as found by the validation (``None`` when there are no
            edges), so that later steps need not scan ``w`` again.
    """

    u: np.ndarray
    v: np.ndarray
    w: np.ndarray
    n: int
    nodes: list[Any] | None = None
    w_bounds: tuple[Any, Any] | None = field(default=None, repr=False)


_WEIGHT_KINDS = "iuf"


def edge_list(u: Any, v: Any, w: Any, n: int) -> EdgeList:
    """Check and convert COO edge arrays (see :class:`EdgeList`); raise :class:`InputError`."""
    where = "minimum_spanning_forest"
    try:
        if isinstance(n, (bool, np.bool_)):
            raise TypeError
        n = operator.index(n)  # ints and NumPy integers; 3.5 or "3" must not pass silently
    except TypeError:
        raise InputError(f"{where}: n must be an integer number of vertices, got "
                         f"{n!r} ({type(n).__name__})") from None
    if n < 0:
        raise InputError(f"{where}: n must be >= 0 (the number of vertices), got {n}")
    u, v, w = (np.asarray(a) for a in (u, v, w))
    for name, a in (("u", u), ("v", v), ("w", w)):
        if a.ndim != 1:
            raise InputError(f"{where}: {name} must be one-dimensional (m,), got shape {a.shape}")
    if not (u.shape == v.shape == w.shape):
        raise InputError(f"{where}: u, v and w must have the same length, got {u.shape[0]}, "
                         f"{v.shape[0]} and {w.shape[0]}")
    for name, a in (("u", u), ("v", v)):
        if a.size and a.dtype.kind not in "iu":
            raise InputError(f"{where}: {name} must hold integer vertex ids, got dtype {a.dtype}"
                             f"; convert whole-number ids with {name}.astype(np.int64)")
    if w.dtype == np.bool_ or w.dtype.kind not in _WEIGHT_KINDS:
        if w.size:
            raise InputError(f"{where}: w must hold real integer or float weights, got dtype "
                             f"{w.dtype}; convert them, e.g. np.asarray(w, dtype=np.float64)")
        w = w.astype(np.float64)
    if w.dtype.kind == "f" and w.dtype not in (np.float32, np.float64):
        w = w.astype(np.float64)
    if w.dtype.kind in "iu" and w.dtype.itemsize == 8 and w.dtype.kind == "u":
        w = w.astype(np.float64)  # uint64 has no exact home; float64 keeps the order
    if w.dtype == np.int16 or w.dtype == np.int8:
        w = w.astype(np.int32)
    vdt = np.int32 if n < 2**31 else np.int64
    m = u.shape[0]
    if m:
        if not (ids_in_range(u, n) and ids_in_range(v, n)):  # one pass each; then say which
            lo, hi = min(int(u.min()), int(v.min())), max(int(u.max()), int(v.max()))
            bad = lo if lo < 0 else hi
            raise InputError(f"{where}: vertex id {bad} is out of range [0, {n}); pass n larger "
                             "than the largest vertex id")
        # min and max propagate NaN and show infinities, with no boolean temporary
        w_lo, w_hi = w.min(), w.max()
        if w.dtype.kind == "f" and not (np.isfinite(w_lo) and np.isfinite(w_hi)):
            what = "NaN" if np.isnan(w).any() else "infinite"
            raise InputError(f"{where}: w holds {what} weights; drop or replace those edges "
                             "first")
        bounds = (w_lo.item(), w_hi.item())
    else:
        bounds = None
    return EdgeList(u.astype(vdt, copy=False), v.astype(vdt, copy=False), w, n,
                    w_bounds=bounds)


def from_scipy(matrix: Any) -> EdgeList:
    """Edges of a SciPy sparse adjacency matrix: every stored entry ``(i, j, a_ij)`` is an edge.

    Both triangles may be stored; the duplicate direction is a parallel edge and costs nothing
    in the result. Edge ids index the matrix's COO form (``matrix.tocoo()`` order).

    Example:
        >>> import scipy.sparse as sp
        >>> from fusekit.mst import from_scipy
        >>> from_scipy(sp.coo_matrix(([2.0], ([0], [1])), shape=(3, 3))).n
        3

    Args:
        matrix: A square ``scipy.sparse`` matrix or array.

    Returns:
        The :class:`EdgeList`.
    """
    coo = matrix.tocoo()
    if coo.shape[0] != coo.shape[1]:
        raise InputError(f"from_scipy: the adjacency matrix must be square, got {coo.shape}")
    return edge_list(coo.row, coo.col, coo.data, coo.shape[0])


def from_networkx(graph: Any, weight: str = "weight", default: float = 1.0) -> EdgeList:
    """Edges of a networkx graph; vertex ids follow ``list(graph)`` (kept in ``nodes``).

    Args:
        graph: A networkx ``Graph``, ``DiGraph`` (directions ignored) or multigraph.
        weight: Edge attribute holding the weight.
        default: Weight of edges without that attribute.

    Returns:
        The :class:`EdgeList`; ``nodes[i]`` is the networkx node of vertex ``i``.
    """
    nodes = list(graph)
    index = {node: i for i, node in enumerate(nodes)}
    m = graph.number_of_edges()
    u = np.empty(m, np.int64)
    v = np.empty(m, np.int64)
    w = np.empty(m, np.float64)
    for e, (a, b, d) in enumerate(graph.edges(data=weight, default=default)):
        u[e], v[e], w[e] = index[a], index[b], d
    out = edge_list(u, v, w, len(nodes))
    out.nodes = nodes
    return out


def as_edge_list(graph: Any, v: Any, w: Any, n: Any) -> EdgeList:
    """Any accepted input as an :class:`EdgeList` (arrays, SciPy sparse, networkx)."""
    if isinstance(graph, EdgeList):
        return graph
    if v is None and w is None:
        scipy_sparse = sys.modules.get("scipy.sparse")
        if scipy_sparse is not None and scipy_sparse.issparse(graph):
            return from_scipy(graph)
        nx = sys.modules.get("networkx")
        if nx is not None and isinstance(graph, nx.Graph):
            return from_networkx(graph)
        raise InputError(
            "minimum_spanning_forest: pass edge arrays (u, v, w, n), a scipy.sparse adjacency "
            f"matrix or a networkx graph; got {type(graph).__name__} alone"
        )
    if v is None or w is None or n is None:
        raise InputError("minimum_spanning_forest: with edge arrays, pass u, v, w and n")
    return edge_list(graph, v, w, n)
