"""CUDA kernels of the mst family: Borůvka's algorithm (Numba CUDA, simulator-checked).

Edges are compared by their rank in a stable sort of the weights, a unique 64-bit key equal
to the order ``(w, id)``, so one ``atomic.min`` per endpoint finds each component's lightest
edge. Each round:

1. ``best[c] = min rank`` over edges leaving component ``c`` (one thread per edge);
2. every component root ``c`` with an edge points to the component across it and marks the
   edge taken (one thread per vertex); two components that chose the same edge form a
   2-cycle, broken by letting the smaller label stay a root;
3. pointer jumping until every root points at its tree's root, then every vertex takes its
   component's new label.

Rounds repeat until no edge leaves a component (at most ``log2 n`` rounds). The ranks come
from a stable argsort on the device (CuPy) or on the host (simulator tests). Not yet run on a
GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from ..._registry import register_kernel
from ...ops import mst, spike
from ._device import cupy_stream, to_device

THREADS = 128
_NO_EDGE = np.iinfo(np.int64).max


def _blocks(n: int) -> int:
    return max(1, -(-n // THREADS))


@cuda.jit
def _reset(best, nxt, n):
    c = cuda.grid(1)
    if c < n:
        best[c] = _NO_EDGE
        nxt[c] = c


@cuda.jit
def _lightest_edges(u, v, rank, comp, best, changed):
    e = cuda.grid(1)
    if e < u.shape[0]:
        a = comp[u[e]]
        b = comp[v[e]]
        if a != b:
            r = rank[e]
            cuda.atomic.min(best, a, r)
            cuda.atomic.min(best, b, r)
            changed[0] = 1


@cuda.jit
def _hook(u, v, edge_of_rank, comp, best, nxt, taken):
    c = cuda.grid(1)
    if c < comp.shape[0] and comp[c] == c and best[c] != _NO_EDGE:
        e = edge_of_rank[best[c]]
        a = comp[u[e]]
        b = comp[v[e]]
        nxt[c] = b if a == c else a
        taken[e] = True


@cuda.jit
def _break_two_cycles(comp, nxt):
    c = cuda.grid(1)
    if c < comp.shape[0] and comp[c] == c:
        d = nxt[c]
        if d != c and nxt[d] == c and c < d:
            nxt[c] = c


@cuda.jit
def _jump(comp, nxt, changed):
    c = cuda.grid(1)
    if c < comp.shape[0] and comp[c] == c:
        d = nxt[c]
        dd = nxt[d]
        if dd != d:
            nxt[c] = dd
            changed[0] = 1


@cuda.jit
def _relabel(comp, nxt):
    i = cuda.grid(1)
    if i < comp.shape[0]:
        comp[i] = nxt[comp[i]]


def boruvka_launch(u: Any, v: Any, rank: Any, edge_of_rank: Any, n: int, *,
                   stream: Any = 0) -> tuple[Any, int]:
    """Borůvka's rounds on the device.

    Args:
        u: First endpoints, shape ``(m,)``, int32 or int64 in ``[0, n)``.
        v: Second endpoints, shape ``(m,)``.
        rank: Rank of each edge in a stable sort of the weights, shape ``(m,)``, int64.
        edge_of_rank: The inverse permutation (the stable argsort), shape ``(m,)``, int64.
        n: Number of vertices.
        stream: Numba stream.

    Returns:
        ``(taken, rounds)``: a bool device array marking the forest's edges, and the number
        of rounds that took edges.
    """
    u, v = to_device("u", u, stream), to_device("v", v, stream)
    rank, edge_of_rank = to_device("rank", rank, stream), to_device("edge_of_rank",
                                                                    edge_of_rank, stream)
    m = u.shape[0]
    comp = cuda.to_device(np.arange(n, dtype=np.int64), stream=stream)
    best = cuda.device_array(n, dtype=np.int64, stream=stream)
    nxt = cuda.device_array(n, dtype=np.int64, stream=stream)
    taken = cuda.to_device(np.zeros(m, np.bool_), stream=stream)
    flag = cuda.device_array(1, dtype=np.int32, stream=stream)
    rounds = 0
    while m and n:
        _reset[_blocks(n), THREADS, stream](best, nxt, n)
        flag[:] = 0
        _lightest_edges[_blocks(m), THREADS, stream](u, v, rank, comp, best, flag)
        if not flag.copy_to_host(stream=stream)[0]:
            break
        rounds += 1
        _hook[_blocks(n), THREADS, stream](u, v, edge_of_rank, comp, best, nxt, taken)
        _break_two_cycles[_blocks(n), THREADS, stream](comp, nxt)
        while True:
            flag[:] = 0
            _jump[_blocks(n), THREADS, stream](comp, nxt, flag)
            if not flag.copy_to_host(stream=stream)[0]:
                break
        _relabel[_blocks(n), THREADS, stream](comp, nxt)
    return taken, rounds


@register_kernel(mst.boruvka_op, backend="cuda", arrays=["cupy"], dtypes=spike.VERTEX_DTYPES)
def boruvka_cuda(u: Any, v: Any, w: Any, *, n: int) -> tuple[Any, np.ndarray]:
    """Borůvka on CuPy arrays; ranks from CuPy's (stable) argsort of the weights."""
    import cupy

    stream = cupy_stream(cupy)
    m = u.shape[0]
    edge_of_rank = cupy.argsort(w).astype(cupy.int64)
    rank = cupy.empty(m, dtype=cupy.int64)
    rank[edge_of_rank] = cupy.arange(m, dtype=cupy.int64)
    taken, rounds = boruvka_launch(cupy.ascontiguousarray(u), cupy.ascontiguousarray(v), rank,
                                   edge_of_rank, n, stream=stream)
    ids = cupy.flatnonzero(cupy.asarray(taken)).astype(cupy.int64)
    return ids, np.array([rounds, 0, 0, int(ids.size)], dtype=np.int64)
