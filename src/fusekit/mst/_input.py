"""Edge lists in: COO arrays, SciPy sparse matrices, networkx graphs; one validation."""

from __future__ import annotations

import numbers
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
    if w.dtype == np.uint64:
        w = _uint64_weights(where, w)
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


def _uint64_weights(where: str, w: np.ndarray) -> np.ndarray:
    """uint64 weights in a dtype the kernels take, exactly: float64 or int64, else refused.

    Rounding to float64 alone could tie two different weights (above 2**53) and pick a
    heavier edge; int64 holds every weight below 2**63 exactly.
    """
    as_float = w.astype(np.float64)
    with np.errstate(invalid="ignore"):  # 2**64 (rounded up from near it) has no uint64
        exact = w.size == 0 or np.array_equal(as_float.astype(np.uint64), w)
    if exact:
        return as_float  # every weight is a float64 exactly (the common case: small weights)
    top = int(w.max())
    if top < 2**63:
        return w.astype(np.int64)
    raise InputError(f"{where}: uint64 weights up to {top} are neither int64 nor float64 "
                     "exactly, and rounding them could pick a heavier edge; subtract "
                     "min(w) (the forest does not change) so that they fit int64")


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
        matrix: A square ``scipy.sparse`` matrix or array (a dense NumPy array is refused:
            whether its zeros are edges is ambiguous; convert it with
            ``scipy.sparse.coo_array``).

    Returns:
        The :class:`EdgeList`.

    Raises:
        InputError: Not a SciPy sparse matrix, not square, or weights as ``edge_list``
            refuses them.
    """
    scipy_sparse = sys.modules.get("scipy.sparse")
    if scipy_sparse is None or not scipy_sparse.issparse(matrix):
        raise InputError(
            f"from_scipy: expected a scipy.sparse matrix or array, got {type(matrix).__name__}; "
            "for a dense adjacency matrix a, pass scipy.sparse.coo_array(a) (its zeros become "
            "no edge) or the edge arrays (u, v, w, n) to minimum_spanning_forest")
    coo = matrix.tocoo()
    if len(coo.shape) != 2 or coo.shape[0] != coo.shape[1]:
        raise InputError(f"from_scipy: the adjacency matrix must be square, got {coo.shape}")
    return edge_list(coo.row, coo.col, coo.data, coo.shape[0])


def from_networkx(graph: Any, weight: str = "weight", default: float = 1.0) -> EdgeList:
    """Edges of a networkx graph; vertex ids follow ``list(graph)`` (kept in ``nodes``).

    Integer weights (Python or NumPy ints) stay integers (int64, or uint64 above it), so
    that weights beyond 2**53 are compared exactly; float weights, or ints mixed with floats
    when every int is a float64 exactly, become float64.

    Example:
        >>> import networkx as nx
        >>> from fusekit.mst import from_networkx
        >>> g = nx.Graph([(0, 1, {"weight": 2**53 + 1}), (1, 2, {"weight": 1})])
        >>> from_networkx(g).w.dtype
        dtype('int64')

    Args:
        graph: A networkx ``Graph``, ``DiGraph`` (directions ignored) or multigraph.
        weight: Edge attribute holding the weight.
        default: Weight of edges without that attribute.

    Returns:
        The :class:`EdgeList`; ``nodes[i]`` is the networkx node of vertex ``i``.

    Raises:
        InputError: ``graph`` is not a networkx graph; a weight (or ``default``) that is not a
            real number (strings, complex, bools, None); integer weights beyond int64 and
            uint64, or ints mixed with floats that float64 cannot hold exactly.
    """
    where = "from_networkx"
    nx = sys.modules.get("networkx")
    if nx is None or not isinstance(graph, nx.Graph):
        raise InputError(f"{where}: expected a networkx Graph, DiGraph or multigraph, got "
                         f"{type(graph).__name__}; build one with networkx.Graph(...) or pass "
                         "edge arrays (u, v, w, n) to minimum_spanning_forest")
    if _weight_kind(default) is None:
        raise InputError(f"{where}: default must be a real number (the weight of edges without "
                         f"a {weight!r} attribute), got {default!r}")
    nodes = list(graph)
    index = {node: i for i, node in enumerate(nodes)}
    m = graph.number_of_edges()
    u = np.empty(m, np.int64)
    v = np.empty(m, np.int64)
    weights: list[Any] = [None] * m
    kinds = set()
    for e, (a, b, d) in enumerate(graph.edges(data=weight, default=default)):
        kind = _weight_kind(d)
        if kind is None:
            raise InputError(f"{where}: edge ({a!r}, {b!r}) has {weight} {d!r} "
                             f"({type(d).__name__}); weights must be real numbers (int or "
                             "float): convert them, e.g. float(...), or drop the edge")
        kinds.add(kind)
        u[e], v[e], weights[e] = index[a], index[b], d
    out = edge_list(u, v, _weight_array(where, weights, kinds), len(nodes))
    out.nodes = nodes
    return out


def _weight_kind(x: Any) -> str | None:
    """``"int"`` or ``"float"`` for a real number, ``None`` for anything else (bools too)."""
    if isinstance(x, bool | np.bool_):
        return None
    if isinstance(x, numbers.Integral):
        return "int"
    if isinstance(x, numbers.Real):
        return "float"
    return None


def _weight_array(where: str, weights: list[Any], kinds: set[str]) -> np.ndarray:
    """The weights in one exact dtype: int64 or uint64 for ints, float64 otherwise."""
    if not weights:
        return np.empty(0, np.float64)
    if kinds == {"int"}:
        ints = [int(x) for x in weights]
        lo, hi = min(ints), max(ints)
        if lo >= -(2**63) and hi < 2**63:
            return np.array(ints, dtype=np.int64)
        if lo >= 0 and hi < 2**64:
            return np.array(ints, dtype=np.uint64)
        raise InputError(f"{where}: integer weights span [{lo}, {hi}], which neither int64 nor "
                         "uint64 holds; shift them (subtract min(w): the forest does not "
                         "change) or convert them to float")
    if "int" in kinds:  # ints mixed with floats: float64, if that keeps every int exactly
        for x in weights:
            if _weight_kind(x) == "int" and int(float(x)) != int(x):
                raise InputError(f"{where}: the weights mix floats with the integer {int(x)}, "
                                 "which float64 cannot hold exactly (rounding could pick a "
                                 "heavier edge); give every weight as an int or every one as "
                                 "a float")
    return np.array([float(x) for x in weights], dtype=np.float64)


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
