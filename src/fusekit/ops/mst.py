"""Whole minimum-spanning-forest kernels: filter-Kruskal and Borůvka.

Both return the minimum spanning forest under the total order ``(w[e], e)`` (weight, ties by
edge id), which is unique, so every method of :mod:`fusekit.mst` returns the same edges as
Kruskal's algorithm with a stable sort. Self-loops are never taken; of parallel edges only the
lightest (then lowest id) can be.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._arrays import common_kind
from .._errors import InputError
from .._registry import Op, array_dtype
from ._common import check_counts, ids_in_range, require_finite, require_ndim
from .spike import (
    KEY_DTYPES,
    VERTEX_DTYPES,
    SpikeStats,
    sort_stats,
    spike_sort_reference,
    time_grid,
    union_find_union_reference,
    vertex_dtype,
)

__all__ = ["boruvka", "filter_kruskal", "forest_reference", "pipelined_kruskal",
           "pipelined_kruskal_reference"]


def _check_forest(u: Any, v: Any, w: Any, *, n: int, max_unions: int = 0,
                  **grid: Any) -> str:
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
    if array_dtype(w).startswith("float"):
        require_finite(op, "w", w)  # a NaN weight would make the forest depend on the method
    if not (ids_in_range(u, n) and ids_in_range(v, n)):
        raise InputError(f"{op}: vertex ids must lie in [0, {n})")
    return dtype


def _check_counts(op: str, n: Any, max_unions: Any) -> None:
    if isinstance(n, numbers.Integral) and not isinstance(n, bool) and n < 0:
        raise InputError(f"{op}: n must be >= 0 (the number of vertices), got {n}")
    check_counts(op, n=n)
    if max_unions is not None:
        check_counts(op, max_unions=max_unions)


filter_kruskal_op = Op(name="filter_kruskal", family="mst", array_args=("u", "v", "w"),
                       check=_check_forest, params=("n", "max_unions"))
boruvka_op = Op(name="boruvka", family="mst", array_args=("u", "v", "w"), check=_check_forest,
                params=("n",))
pipelined_kruskal_op = Op(name="pipelined_kruskal", family="mst", array_args=("u", "v", "w"),
                          check=_check_forest,
                          params=("n", "lo", "quantum", "n_steps", "max_unions", "batches"))


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
    _check_counts("filter_kruskal", n, max_unions)
    limit = np.iinfo(np.int64).max if max_unions is None else max_unions
    ids, counters = filter_kruskal_op.run((u, v, w), {"n": n, "max_unions": limit}, backend)
    return ids, np.asarray(counters)


def pipelined_kruskal(u: Any, v: Any, w: Any, n: int, *, quantum: float | None = None,
                      max_unions: int | None = None, batches: int | None = None,
                      backend: str | None = None) -> tuple[Any, np.ndarray, SpikeStats, int]:
    """Kruskal with the spike sort and union-find running at the same time, events in order.

    The sort fires the edges in time order (``spike_sort(w, quantum)``, exact) and hands them
    over in ``batches`` batches of consecutive time steps; union-find takes each batch as soon
    as it is complete and stops the sort once ``max_unions`` edges are taken. The CPU kernel
    runs the two stages on two threads of one Numba call (with :func:`fusekit.set_num_threads`
    of 2 or more; the hand-over is an atomic flag per batch) for grids that take the bucket
    step sort (``2**17`` steps or more: float weights on large graphs); on smaller grids, or
    with one thread, the stages run one after the other.

    Example:
        >>> import numpy as np, fusekit
        >>> ids, counters, stats, handed = fusekit.ops.pipelined_kruskal(
        ...     np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([1.0, 2.0, 3.0]), 3)
        >>> ids.tolist(), int(counters[2]), stats.spikes
        ([0, 1], 2, 3)

    Args:
        u: First endpoints, shape ``(m,)``, int32 or int64 in ``[0, n)``.
        v: Second endpoints, shape ``(m,)``, the dtype of ``u``.
        w: Weights, shape ``(m,)``, integer or float, finite.
        n: Number of vertices.
        quantum: Weight units per spike time step (as for ``spike_sort``).
        max_unions: Stop after this many tree edges (default ``n - 1``).
        batches: Hand-over batches (default: one per 2^14 edges, at least one).
        backend: ``"reference"``, ``"cpu"`` or ``"auto"``.

    Returns:
        ``(edge_ids, counters, sort_stats, handed)``: int64 ids of the forest's edges in
        ``(w, id)`` order; int64 ``[finds, hops, unions, edges processed, synapse updates]``;
        the spike sort's :class:`~fusekit.ops.SpikeStats` up to the time step in which
        union-find stopped (the network stops there); and the batches the sort handed over.
    """
    try:  # plain Python lists: say so before reading their shape
        common_kind(("u", "v", "w"), (u, v, w))
    except InputError as e:
        raise type(e)(f"pipelined_kruskal: {e}") from None
    _check_counts("pipelined_kruskal", n, max_unions)
    if batches is not None:
        check_counts("pipelined_kruskal", batches=batches)
    m = int(u.shape[0])
    limit = max(n - 1, 0) if max_unions is None else max_unions
    n_batches = max(1, m >> 14) if batches is None else batches
    if n_batches < 1:
        raise InputError(f"pipelined_kruskal: batches must be >= 1, got {batches}")
    lo, q, n_steps = time_grid(w, quantum, op="pipelined_kruskal")
    ids, offsets, qerr, counters, handed = pipelined_kruskal_op.run(
        (u, v, w), {"n": n, "lo": lo, "quantum": q, "n_steps": n_steps,
                    "max_unions": limit, "batches": n_batches}, backend)
    counters = np.asarray(counters)
    processed = int(counters[3])
    offs = np.asarray(offsets)
    # the steps that fired before union-find stopped: through the last processed edge's step
    fired_steps = n_steps if processed >= m else (
        int(np.searchsorted(offs, processed - 1, side="right")) if processed else 0)
    counts = np.diff(offs[:fired_steps + 1])
    fired = int(offs[fired_steps]) if fired_steps else 0
    st = sort_stats(fired, fired_steps, int(counts.max()) if counts.size else 0,
                    int(np.count_nonzero(counts)), float(np.asarray(qerr).reshape(-1)[0]))
    st.neurons, st.synapses = m + 1, m  # every edge has its neuron, fired or not
    return ids, counters, st, int(np.asarray(handed).reshape(-1)[0])


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
    _check_counts("boruvka", n, None)
    ids, counters = boruvka_op.run((u, v, w), {"n": n}, backend)
    return ids, np.asarray(counters)


def forest_reference(u: np.ndarray, v: np.ndarray, w: np.ndarray, *, n: int,
                     max_unions: int = np.iinfo(np.int64).max) -> tuple[np.ndarray, np.ndarray]:
    """Oracle: Kruskal over a stable argsort of ``w`` with the reference union-find."""
    order = np.argsort(w, kind="stable").astype(np.int64)
    parent, size = np.arange(n, dtype=np.int64), np.ones(n, dtype=np.int64)
    acc, cnt = union_find_union_reference(parent, size, u, v, order, max_unions=max_unions)
    cnt[3] = 0  # edges filtered: the oracle filters none
    return order[acc], cnt


def pipelined_kruskal_reference(u: np.ndarray, v: np.ndarray, w: np.ndarray, *, n: int, lo: Any,
                                quantum: Any, n_steps: int, max_unions: int, batches: int
                                ) -> tuple[np.ndarray, ...]:
    """Oracle of :func:`pipelined_kruskal`: the whole spike sort, then the reference union-find.

    Returns ``(edge_ids, step_offsets, [quantization error], counters, [batches])``; the stages
    run one after the other, so every batch counts as handed over.
    """
    order, offsets, qerr = spike_sort_reference(w, lo=lo, quantum=quantum, n_steps=n_steps,
                                                exact=True)
    parent = np.arange(n, dtype=vertex_dtype(n))
    size = np.ones(n, dtype=parent.dtype)
    acc, cnt = union_find_union_reference(parent, size, u, v, order, max_unions=max_unions)
    return order[acc], offsets, qerr, cnt, np.array([batches], np.int64)


def boruvka_reference(u: np.ndarray, v: np.ndarray, w: np.ndarray, *, n: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Oracle of :func:`boruvka`: the same forest (sorted by id); counters are Kruskal's."""
    ids, cnt = forest_reference(u, v, w, n=n)
    return np.sort(ids), np.array([0, cnt[0], cnt[1], cnt[2]], dtype=np.int64)
