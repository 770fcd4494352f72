"""``minimum_spanning_forest``: the methods, their stages and what they report."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import BackendUnavailableError, InputError
from .._registry import unavailable_reason
from ..ops import mst as mst_ops
from ..ops import spike
from ..ops.spike import SpikeStats
from ._input import EdgeList, as_edge_list
from ._model import SpikingSchedule, check_quantum, kruskal_schedule
from ._model import count as _count

METHODS = ("auto", "pipelined", "spike-kruskal", "radix-kruskal", "filter-kruskal", "boruvka")
#: ``auto`` takes the counting sort (spike-kruskal) for integer weights whose range spans at
#: most this many time steps per edge, and filter-Kruskal for graphs at least this dense
#: (average degree). It was 8 until union-find's prefetches and the LSD step sort made
#: spike-Kruskal faster than filter-Kruskal (with its prefetched filter) on RGG graphs: 1.1-1.4x
#: at 2^16, 1.35-1.55x at 2^18, 1.07-1.11x at 2^20 vertices (degree 10.5-13.2, uniform
#: weights; measured under load); on Kronecker graphs (degree 28, 2^16 vertices)
#: filter-Kruskal stayed 1.1-1.4x faster.
AUTO_INT_STEPS_PER_EDGE = 4
AUTO_FILTER_MIN_DEGREE = 20.0
#: ... and, with two or more threads, the pipelined method for float weights from this many
#: edges (its grid then takes the bucket step sort, whose stages the CPU kernel overlaps).
AUTO_PIPELINE_MIN_EDGES = 1 << 18


@dataclass
class MSTResult:
    """A minimum spanning forest and what computing it cost.

    Attributes:
        edges: Ids of the forest's edges in the input edge list, int64, ``n - n_components``
            of them (Kruskal methods: in ``(weight, id)`` order; Borůvka: by id).
        total_weight: Sum of the forest's weights (int for integer weights).
        n_components: Connected components of the graph (isolated vertices count).
        method: The method that ran (``auto`` resolved).
        timings: Wall-clock seconds per stage (``total`` for the whole call).
        stats: The spiking model's counts of the run (sort and union-find).
        graph: The validated edge list (``u``, ``v``, ``w``, ``n``).
        counts: Method-specific counts (Borůvka ``rounds``, filter-Kruskal
            ``edges_filtered``, pipelined ``batches``).
    """

    edges: np.ndarray
    total_weight: float
    n_components: int
    method: str
    timings: dict[str, float]
    stats: SpikeStats
    graph: EdgeList = field(repr=False)
    counts: dict[str, int] = field(default_factory=dict)

    def tree(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(u, v, w)`` of the forest's edges."""
        g = self.graph
        return g.u[self.edges], g.v[self.edges], g.w[self.edges]

    def schedule(self, p: int = 1, quantum: float | None = None) -> SpikingSchedule:
        """Model time steps of serial and pipelined spiking Kruskal and spiking Prim's.

        Args:
            p: Union-find events the network handles per time step.
            quantum: Weight units per step (default: 1 for integer weights, 2 range / m).

        Returns:
            A :class:`~fusekit.mst.SpikingSchedule`; ``speedups()`` names each comparison.

        Raises:
            InputError: ``p`` not an integer ``>= 1``, ``quantum`` not a positive finite
                number, or float weights whose range overflows float64.
        """
        return kruskal_schedule(self.graph.w, self.edges, p=p, quantum=quantum)


def minimum_spanning_forest(graph: Any, v: Any = None, w: Any = None, n: int | None = None,
                            method: str = "auto", *, quantum: float | None = None,
                            chunks: int | None = None, backend: str | None = None
                            ) -> MSTResult:
    """Minimum spanning forest of an undirected weighted graph.

    Example:
        >>> import numpy as np
        >>> from fusekit.mst import minimum_spanning_forest
        >>> r = minimum_spanning_forest(np.array([0, 1, 0, 2]), np.array([1, 2, 2, 2]),
        ...                             np.array([4, 1, 2, 0]), n=4)
        >>> sorted(r.edges.tolist()), r.total_weight, r.n_components
        ([1, 2], 3, 2)

    Self-loops are never taken; of parallel edges only the lightest can be (ties: lowest id).
    Every method returns the same forest: the minimum one under the order (weight, edge id).

    Args:
        graph: First endpoints ``u``, shape ``(m,)``, integer vertex ids; or a
            ``scipy.sparse`` adjacency matrix, a networkx graph or an ``EdgeList`` (then leave
            ``v``, ``w``, ``n`` out).
        v: Second endpoints, shape ``(m,)``.
        w: Weights, shape ``(m,)``, integer or float, no NaN or infinity.
        n: Number of vertices (ids ``0 .. n - 1``).
        method: ``"pipelined"`` (spike sort and union-find running concurrently on two
            threads, handing events over in firing order; on the CPU backend with two or more
            threads and float weights on large graphs, else one stage after the other),
            ``"spike-kruskal"`` (spike sort,
            then union-find), ``"radix-kruskal"`` (spiking radix sort, then union-find),
            ``"filter-kruskal"``, ``"boruvka"``, or ``"auto"`` (by weight type, range and
            density; Borůvka with ``backend="cuda"``; see ``docs/mst.md``).
        quantum: Weight units per spike time step for the spiking methods, a positive
            finite number (``filter-kruskal`` and ``boruvka`` do not use it, but refuse an
            invalid one all the same).
        chunks: Hand-over batches of the pipelined method (runs of consecutive time steps;
            default one per 2^14 edges), an integer ``>= 1`` (the other methods do not use
            it, but refuse an invalid one all the same).
        backend: Backend of the ops (``"cpu"``, ``"reference"``; ``"cuda"`` runs Borůvka
            on the GPU, copying the edge list there and the forest's ids back).

    Returns:
        An :class:`MSTResult`.

    Raises:
        InputError: Mismatched lengths, vertex ids outside ``[0, n)``, NaN or infinite
            weights, negative ``n``, an unknown method, a ``quantum`` that is not a positive
            finite number, ``chunks`` that is not an integer ``>= 1``.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise InputError(f"minimum_spanning_forest: unknown method {method!r}; choose one of "
                         f"{', '.join(METHODS)}")
    check_quantum("minimum_spanning_forest", quantum)
    if chunks is not None:
        chunks = _count("minimum_spanning_forest", "chunks", chunks,
                        "an integer number of hand-over batches of the pipelined method")
    g = as_edge_list(graph, v, w, n)
    if method == "auto":
        method = "boruvka" if backend == "cuda" else choose_method(g, quantum)
    # The serial Kruskal loops stop at n - 1 unions (a spanning tree) or at the last edge; only
    # the methods that skip whole parts of the work when they stop early count the vertices
    # with an edge first (at 2^20 vertices that count took 30-60 ms, more than the loop's
    # tail after the last tree edge costs).
    if method == "filter-kruskal":
        target = _tree_edges_at_most(g)
    else:
        target = max(g.n - 1, 0)
    timings = {"prepare": time.perf_counter() - t0}
    runner = _RUNNERS[method]
    edges, stats = runner(g, target, quantum, chunks, backend, timings)
    edges = np.asarray(edges, dtype=np.int64)
    total = _total_weight(g.w[edges])
    counts = {k: int(timings.pop(k)) for k in ("rounds", "edges_filtered", "batches")
              if k in timings}
    timings["total"] = time.perf_counter() - t0
    return MSTResult(edges, total, g.n - edges.size, method, timings, stats, g, counts)


def _total_weight(we: np.ndarray) -> float:
    """Sum of the forest's weights: an exact int for integer weights, float64 otherwise."""
    if we.dtype.kind not in "iu":
        with np.errstate(over="ignore"):  # a sum beyond float64 is +-inf, as it should be
            return float(we.sum(dtype=np.float64))
    if we.size and max(-int(we.min()), int(we.max())) * we.size >= 2**63:
        return int(we.astype(object).sum())  # an int64 sum could overflow: Python ints
    return int(we.sum(dtype=np.int64))


def choose_method(g: EdgeList, quantum: float | None = None) -> str:
    """What ``method="auto"`` runs for this graph (see ``docs/mst.md`` for the measurements)."""
    m = g.u.shape[0]
    if m == 0:
        return "spike-kruskal"
    w_lo, w_hi = g.w_bounds if g.w_bounds is not None else (g.w.min().item(), g.w.max().item())
    if g.w.dtype.kind == "f" and not math.isfinite(float(w_hi) - float(w_lo)):
        return "filter-kruskal"  # no spike-time grid spans a range that overflows float64
    if g.w.dtype.kind in "iu" and quantum is None:
        steps = int(w_hi) - int(w_lo) + 1
        if steps <= AUTO_INT_STEPS_PER_EDGE * m:
            return "spike-kruskal"
    if m >= AUTO_FILTER_MIN_DEGREE * max(g.n, 1) / 2:
        return "filter-kruskal"
    if g.w.dtype.kind != "f":
        return "filter-kruskal"
    return "pipelined" if m >= AUTO_PIPELINE_MIN_EDGES and _threads() > 1 else "spike-kruskal"


def _threads() -> int:
    """The CPU backend's thread count here (1 without Numba)."""
    try:
        from .._threads import get_num_threads
    except ImportError:  # pragma: no cover - the package always ships it
        return 1
    try:
        return get_num_threads()
    except ImportError:  # no Numba: only the reference backend, on one thread
        return 1


def _tree_edges_at_most(g: EdgeList) -> int:
    """``n_active - 1``: a forest of the non-isolated vertices never has more edges."""
    if g.u.shape[0] == 0:
        return 0
    touched = np.zeros(g.n, dtype=np.bool_)
    touched[g.u] = True
    touched[g.v] = True
    return max(int(np.count_nonzero(touched)) - 1, 0)


def _uf_stats(n: int, counters: np.ndarray) -> SpikeStats:
    finds, hops, unions, processed, rewired = (int(c) for c in counters[:5])
    return SpikeStats(neurons=n, synapses=n, spikes=hops, uf_events=processed, uf_hops=hops,
                      uf_unions=unions, uf_synapse_updates=rewired)


def _union_stage(g: EdgeList, order: Any, target: int, backend: str | None,
                 ends: tuple[Any, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    parent = np.arange(g.n, dtype=spike.vertex_dtype(g.n))
    size = np.ones(g.n, dtype=parent.dtype)
    # The endpoints in firing order (``ends``, or gathered here) let the union-find loop
    # stream them (measured: about 2x faster than reading u[order[k]] at 2^18 vertices).
    eu, ev = ends if ends is not None else spike.gather_endpoints(g.u, g.v, order,
                                                                   backend=backend)
    acc, cnt = spike.union_find_union(parent, size, eu, ev, max_unions=target, backend=backend)
    return order[acc], cnt


def _spike_kruskal(g: EdgeList, target: int, quantum: Any, chunks: int | None, backend: Any,
                   timings: dict[str, float]) -> tuple[np.ndarray, SpikeStats]:
    t = time.perf_counter()
    # the sort lays the endpoints out in firing order as well (in its scatter where it can)
    res, eu, ev = spike.spike_sort_edges(g.w, g.u, g.v, quantum, exact=True, backend=backend)
    timings["sort"] = time.perf_counter() - t
    t = time.perf_counter()
    edges, cnt = _union_stage(g, res.order, target, backend, (eu, ev))
    timings["union_find"] = time.perf_counter() - t
    return edges, res.stats.merged(_uf_stats(g.n, cnt))


def _radix_kruskal(g: EdgeList, target: int, quantum: Any, chunks: int | None, backend: Any,
                   timings: dict[str, float]) -> tuple[np.ndarray, SpikeStats]:
    t = time.perf_counter()
    res = spike.spike_radix_sort(g.w, quantum, radix_bits=8, exact=True, backend=backend)
    timings["sort"] = time.perf_counter() - t
    t = time.perf_counter()
    edges, cnt = _union_stage(g, res.order, target, backend)
    timings["union_find"] = time.perf_counter() - t
    return edges, res.stats.merged(_uf_stats(g.n, cnt))


def _filter_kruskal(g: EdgeList, target: int, quantum: Any, chunks: int | None, backend: Any,
                    timings: dict[str, float]) -> tuple[np.ndarray, SpikeStats]:
    t = time.perf_counter()
    edges, cnt = mst_ops.filter_kruskal(g.u, g.v, g.w, g.n, max_unions=target, backend=backend)
    timings["filter_kruskal"] = time.perf_counter() - t
    finds, hops, unions, filtered, rewired = (int(c) for c in cnt)
    timings["edges_filtered"] = filtered
    return edges, SpikeStats(uf_events=finds // 2, uf_hops=hops, uf_unions=unions,
                             uf_synapse_updates=rewired)


def _boruvka(g: EdgeList, target: int, quantum: Any, chunks: int | None, backend: Any,
             timings: dict[str, float]) -> tuple[np.ndarray, SpikeStats]:
    t = time.perf_counter()
    if backend == "cuda":  # the CUDA kernel takes device arrays: copy the edge list over
        reason = unavailable_reason("cuda")
        if reason is not None:
            raise BackendUnavailableError(
                f"minimum_spanning_forest: backend 'cuda' is not available: {reason}")
        import cupy

        ids, cnt = mst_ops.boruvka(cupy.asarray(g.u), cupy.asarray(g.v), cupy.asarray(g.w),
                                   g.n, backend="cuda")
        edges = cupy.asnumpy(ids)
    else:
        edges, cnt = mst_ops.boruvka(g.u, g.v, g.w, g.n, backend=backend)
    timings["boruvka"] = time.perf_counter() - t
    rounds, finds, hops, unions = (int(c) for c in cnt)
    timings["rounds"] = rounds
    return edges, SpikeStats(uf_events=finds // 2, uf_hops=hops, uf_unions=unions)


def _pipelined(g: EdgeList, target: int, quantum: Any, chunks: int | None, backend: Any,
               timings: dict[str, float]) -> tuple[np.ndarray, SpikeStats]:
    """The spike sort and union-find as concurrent stages (``fusekit.ops.pipelined_kruskal``).

    On the CPU backend with two or more threads and a bucket-step-sort grid (float weights,
    from about 2^18 edges) both stages run at once on two threads of one Numba call, the sort
    handing over batches of time steps in order; union-find stops it once the forest is
    complete. Elsewhere the stages run in turn.
    """
    t = time.perf_counter()
    edges, counters, sort_stats, handed = mst_ops.pipelined_kruskal(
        g.u, g.v, g.w, g.n, quantum=quantum, max_unions=target, batches=chunks,
        backend=backend)
    timings["pipeline"] = time.perf_counter() - t
    timings["batches"] = handed
    return edges, sort_stats.merged(_uf_stats(g.n, counters))


_RUNNERS = {
    "pipelined": _pipelined,
    "spike-kruskal": _spike_kruskal,
    "radix-kruskal": _radix_kruskal,
    "filter-kruskal": _filter_kruskal,
    "boruvka": _boruvka,
}
