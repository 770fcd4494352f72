"""Whole minimum-spanning-forest kernels: filter-Kruskal and Borůvka.

Both return the minimum spanning forest under the total order ``(w[e], e)`` (weight, ties by
edge id), which is unique, so every method of :mod:`fusekit.mst` returns the same edges as
Kruskal's algorithm with a stable sort. Self-loops are never taken; of parallel edges only the
lightest (then lowest id) can be.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InputError
from .._registry import Op, array_dtype
from ._common import require_ndim
from .spike import KEY_DTYPES, VERTEX_DTYPES, union_find_union_reference

__all__ = ["boruvka", "filter_kruskal", "forest_reference"]


def _check_forest(u: Any, v: Any, w: Any, *, n: int, max_unions: int = 0) -> str:
    op = "minimum spanning forest kernel"
    require_ndim(op, "u", u, 1, "(m,)")
    if tuple(v.shape) != tuple(u.shape) or tuple(w.shape) != tuple(u.shape):
        raise InputError(f"{op}: u, v and w must share one shape (m,), got {tuple(u.shape)}, "
                         f"{tuple(v.shape)} and {tuple(w.shape)}")
    dtype = array_dtype(u)
    if dtype not in VERTEX_DTYPES or array_dtype(v) != dtype:
        raise InputError(f"{op}: u and v must share one dtype of {', '.join(VERTEX_DTYPES)}")
    if array_dtype(w) not in KEY_DTYPES:
        raise InputError(f"{op}: w must have one of {', '.join(KEY_DTYPES)}, got "
                         f"{array_dtype(w)}")
    if u.shape[0] and (int(u.min()) < 0 or int(v.min()) < 0 or int(u.max()) >= n
                       or int(v.max()) >= n):
        raise InputError(f"{op}: vertex ids must lie in [0, {n})")
    return dtype


filter_kruskal_op = Op(name="filter_kruskal", family="mst", array_args=("u", "v", "w"),
                       check=_check_forest, params=("n", "max_unions"))
boruvka_op = Op(name="boruvka", family="mst", array_args=("u", "v", "w"), check=_check_forest,
                params=("n",))


def filter_kruskal(u: Any, v: Any, w: Any, n: int, *, max_unions: int | None = None,
                   backend: str | None = None) -> tuple[Any, np.ndarray]:
    """Minimum spanning forest by filter-Kruskal (Osipov, Sanders, Singler 2009).

    Partition the edges around a pivot weight, solve the light part, drop heavy edges whose
    endpoints are already connected, then solve the rest; small parts are sorted and run
    through Kruskal's loop.

    Example:
        >>> import numpy as np, fusekit
        >>> ids, _ = fusekit.ops.filter_kruskal(np.array([0, 1, 0]), np.array([1, 2, 2]),
        ...                                      np.array([1.0, 2.0, 3.0]), 3)
        >>> sorted(ids.tolist())
        [0, 1]

    Args:
        u: First endpoints, shape ``(m,)``, int32 or int64 in ``[0, n)``.
        v: Second endpoints, shape ``(m,)``, the dtype of ``u``.
        w: Weights, shape ``(m,)``, integer or float, finite.
        n: Number of vertices.
        max_unions: Stop after this many tree edges (``n - components`` if known).
        backend: ``"reference"``, ``"cpu"`` or ``"auto"``.

    Returns:
        ``(edge_ids, counters)``: int64 ids of the forest's edges in ``(w, id)`` order, and
        int64 ``[finds, hops, unions, edges_filtered, synapse_updates]``.
    """
    limit = np.iinfo(np.int64).max if max_unions is None else int(max_unions)
    ids, counters = filter_kruskal_op.run((u, v, w), {"n": int(n), "max_unions": limit}, backend)
    return ids, np.asarray(counters)


def boruvka(u: Any, v: Any, w: Any, n: int, *, backend: str | None = None
            ) -> tuple[Any, np.ndarray]:
    """Minimum spanning forest by Borůvka's rounds (every component takes its lightest edge).

    Args:
        u: First endpoints, shape ``(m,)``, int32 or int64 in ``[0, n)``.
        v: Second endpoints, shape ``(m,)``, the dtype of ``u``.
        w: Weights, shape ``(m,)``, integer or float, finite.
        n: Number of vertices.
        backend: ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Returns:
        ``(edge_ids, counters)``: int64 ids of the forest's edges (sorted by id), and int64
        ``[rounds, finds, hops, unions]``.
    """
    ids, counters = boruvka_op.run((u, v, w), {"n": int(n)}, backend)
    return ids, np.asarray(counters)


def forest_reference(u: np.ndarray, v: np.ndarray, w: np.ndarray, *, n: int,
                     max_unions: int = np.iinfo(np.int64).max) -> tuple[np.ndarray, np.ndarray]:
    """Oracle: Kruskal over a stable argsort of ``w`` with the reference union-find."""
    order = np.argsort(w, kind="stable").astype(np.int64)
    parent, size = np.arange(n, dtype=np.int64), np.ones(n, dtype=np.int64)
    acc, cnt = union_find_union_reference(parent, size, u, v, order, max_unions=max_unions)
    cnt[3] = 0  # edges filtered: the oracle filters none
    return order[acc], cnt


def boruvka_reference(u: np.ndarray, v: np.ndarray, w: np.ndarray, *, n: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Oracle of :func:`boruvka`: the same forest (sorted by id); counters are Kruskal's."""
    ids, cnt = forest_reference(u, v, w, n=n)
    return np.sort(ids), np.array([0, cnt[0], cnt[1], cnt[2]], dtype=np.int64)
