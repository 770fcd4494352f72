"""CPU kernels of the mst family: filter-Kruskal, Borůvka and the pipelined spiking Kruskal.

Filter-Kruskal and Borůvka run on one thread (nogil); the pipelined Kruskal runs its sort and
union-find stages on two threads of one call. All compare edges by ``(w[e], e)``, so they
return the same forest as a stable Kruskal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange

from ..._registry import register_kernel
from ...ops import mst, spike
from ._atomic import atomic_cas, atomic_fetch_add, atomic_load, atomic_store, spin_pause
from ._memory import huge_empty, huge_zeros
from ._numba import get_num_threads, njit
from .spike import (
    PREFETCH_AHEAD,
    _as_int_keys,
    _typed_grid,
    bucket_words_parallel,
    find_root,
    finish_buckets,
    gather_endpoints_cpu,
    gather_interleaved,
    interleave,
    ordered_union,
    spike_sort_cpu,
    step_sort_layout,
    uses_step_sort,
)

#: Parts of at most this many edges are sorted and run through Kruskal's loop.
FILTER_BASE = 2048
#: Edges sampled to choose a pivot.
PIVOT_SAMPLE = 31


@njit(nogil=True)
def _lighter(w, a, b):
    return w[a] < w[b] or (w[a] == w[b] and a < b)


@njit(nogil=True)
def _solve_part(ids, a, b, u, v, w, parent, size, max_unions, counters, out, n_out):
    # ids[a:b] is in increasing id order, so a stable sort by w orders it by (w, id).
    seg = ids[a:b].copy()
    perm = np.argsort(w[seg], kind="mergesort")
    for i in range(b - a):
        ids[a + i] = seg[perm[i]]
    acc = np.zeros(b - a, np.bool_)
    ordered_union(parent, size, u, v, ids[a:b], 0, b - a, max_unions, acc, counters)
    for i in range(b - a):
        if acc[i]:
            out[n_out] = ids[a + i]
            n_out += 1
    return n_out


@njit(nogil=True)
def _filter_kruskal(u, v, w, parent, size, max_unions, seed):
    n = parent.shape[0]
    m = u.shape[0]
    ids = np.arange(m)
    tmp = np.empty(m, np.int64)
    out = np.empty(min(max(n - 1, 0), m), np.int64)
    n_out = 0
    counters = np.zeros(5, np.int64)  # finds, hops, unions, processed, synapse updates
    filtered = 0
    stack_a = np.empty(128, np.int64)
    stack_b = np.empty(128, np.int64)
    stack_f = np.empty(128, np.bool_)
    stack_a[0], stack_b[0], stack_f[0] = 0, m, False
    top = 1
    np.random.seed(seed)
    sample = np.empty(PIVOT_SAMPLE, np.int64)
    while top > 0 and counters[2] < max_unions:
        top -= 1
        a, b, filt = stack_a[top], stack_b[top], stack_f[top]
        if filt:  # drop edges that already close a cycle; keeps ids in increasing order
            keep = np.empty(b - a, np.bool_)
            ordered_union(parent, size, u, v, ids[a:b], 0, b - a, max_unions, keep, counters,
                          False, PREFETCH_AHEAD, True)
            k = a
            for i in range(a, b):
                if keep[i - a]:
                    ids[k] = ids[i]
                    k += 1
            filtered += b - k
            b = k
        if b - a <= FILTER_BASE or top >= 126:
            n_out = _solve_part(ids, a, b, u, v, w, parent, size, max_unions, counters, out,
                                n_out)
            continue
        for s in range(PIVOT_SAMPLE):
            sample[s] = ids[a + np.random.randint(0, b - a)]
        for i in range(1, PIVOT_SAMPLE):  # insertion sort of the sample by (w, id)
            x = sample[i]
            j = i - 1
            while j >= 0 and _lighter(w, x, sample[j]):
                sample[j + 1] = sample[j]
                j -= 1
            sample[j + 1] = x
        pivot = sample[PIVOT_SAMPLE // 2]
        # stable partition: light (<= pivot) first, heavy after, both in increasing id order
        k = a
        h = 0
        for i in range(a, b):
            e = ids[i]
            if e == pivot or _lighter(w, e, pivot):
                ids[k] = e
                k += 1
            else:
                tmp[h] = e
                h += 1
        for i in range(h):
            ids[k + i] = tmp[i]
        if k == b:  # the pivot was the heaviest edge of the sample and of the part
            n_out = _solve_part(ids, a, b, u, v, w, parent, size, max_unions, counters, out,
                                n_out)
            continue
        stack_a[top], stack_b[top], stack_f[top] = k, b, True  # heavy: later, filtered
        top += 1
        stack_a[top], stack_b[top], stack_f[top] = a, k, False  # light: next
        top += 1
    counters[3] = filtered
    return out[:n_out], counters


@njit(nogil=True)
def _boruvka(u, v, w, parent, size):
    n = parent.shape[0]
    m = u.shape[0]
    best = np.full(n, -1, np.int64)
    alive = np.arange(m)
    n_alive = m
    taken = huge_zeros(m, np.bool_)
    counters = np.zeros(4, np.int64)  # rounds, finds, hops, unions
    while True:
        k = 0
        for i in range(n_alive):  # each component's lightest edge by (w, id)
            e = alive[i]
            a, ha = find_root(parent, np.int64(u[e]))
            b, hb = find_root(parent, np.int64(v[e]))
            counters[1] += 2
            counters[2] += ha + hb
            if a == b:
                continue
            alive[k] = e
            k += 1
            if best[a] < 0 or _lighter(w, e, best[a]):
                best[a] = e
            if best[b] < 0 or _lighter(w, e, best[b]):
                best[b] = e
        n_alive = k
        if n_alive == 0:
            break
        counters[0] += 1
        for i in range(n_alive):  # hook along the chosen edges (roots only hold best)
            e = alive[i]
            for x in (u[e], v[e]):
                r, _ = find_root(parent, np.int64(x))
                c = best[r]
                if c >= 0:
                    best[r] = -1
                    ra, _ = find_root(parent, np.int64(u[c]))
                    rb, _ = find_root(parent, np.int64(v[c]))
                    if ra != rb:
                        if size[ra] < size[rb]:
                            ra, rb = rb, ra
                        parent[rb] = ra
                        size[ra] += size[rb]
                        taken[c] = True
                        counters[3] += 1
    return np.flatnonzero(taken), counters


@register_kernel(mst.filter_kruskal_op, backend="cpu", arrays=["numpy"],
                 dtypes=spike.VERTEX_DTYPES)
def filter_kruskal_cpu(u: np.ndarray, v: np.ndarray, w: np.ndarray, *, n: int,
                       max_unions: int) -> tuple[np.ndarray, np.ndarray]:
    """Filter-Kruskal in one Numba call."""
    parent = np.arange(n, dtype=spike.vertex_dtype(n))
    return _filter_kruskal(np.ascontiguousarray(u), np.ascontiguousarray(v),
                           np.ascontiguousarray(w), parent, np.ones_like(parent), max_unions,
                           12345)


@register_kernel(mst.boruvka_op, backend="cpu", arrays=["numpy"], dtypes=spike.VERTEX_DTYPES)
def boruvka_cpu(u: np.ndarray, v: np.ndarray, w: np.ndarray, *, n: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Borůvka's rounds in one Numba call."""
    parent = np.arange(n, dtype=spike.vertex_dtype(n))
    return _boruvka(np.ascontiguousarray(u), np.ascontiguousarray(v), np.ascontiguousarray(w),
                    parent, np.ones_like(parent))


@njit(nogil=True)
def _hand_over(b, first, bucket_off, words, keys, order, offsets, low_bits, passes, digit_bits,
               shift, id_bits, n_steps, uv, eu, ev):
    # the sort stage's work for batch b: finish its buckets (ids in firing order, exact), then
    # gather their endpoints, so union-find streams them
    b0, b1 = first[b], first[b + 1]
    finish_buckets(words, bucket_off, b0, b1, keys, order, offsets, low_bits, passes, digit_bits,
                   shift, id_bits, True, n_steps)
    gather_interleaved(uv, order, eu, ev, bucket_off[b0], bucket_off[b1])


@njit(nogil=True, parallel=True)
def _pipelined_step_kruskal(keys, u, v, lo, quantum, n_steps, float_grid, top_bits, passes,
                            digit_bits, fine_bits, id_bits, n_chunks, n_batches, max_unions,
                            parent, size):
    """The bucket step sort and union-find as two stages on two threads, batches in order.

    The sort is :func:`~fusekit.backends.cpu.spike._step_sort`'s; a batch is a run of whole
    buckets. First, on every thread: pack the keys into words, interleave the endpoints, scatter the
    words into buckets. Then ``prange(2)``: iteration 0 (the sort stage) claims batches in
    order from a shared counter, finishes and gathers each, and sets its ready flag;
    iteration 1 (union-find) waits for each batch's flag in turn and runs Kruskal's loop over
    it; when a batch it needs is unclaimed it claims and finishes it itself, so the two
    iterations can also run one after the other on one thread in either order. Union-find
    raises a stop flag once it has ``max_unions`` edges; the sort stage then claims no more.
    """
    m = keys.shape[0]
    low_bits = passes * digit_bits
    shift = fine_bits + id_bits
    packed, words, bucket_off, qerr = bucket_words_parallel(
        keys, lo, quantum, n_steps, float_grid, top_bits, low_bits, fine_bits, id_bits, n_chunks)
    uv = huge_empty(2 * m, u.dtype)
    for c in prange(n_chunks):
        interleave(u, v, uv, m * c // n_chunks, m * (c + 1) // n_chunks)
    order = packed  # reused: the packed words are no longer needed
    offsets = huge_empty(n_steps + 1, np.int64)
    n_buckets = bucket_off.shape[0] - 1
    first = np.searchsorted(bucket_off, np.arange(n_batches + 1) * m // n_batches)
    first[0], first[n_batches] = 0, n_buckets
    eu = huge_empty(m, u.dtype)
    ev = huge_empty(m, v.dtype)
    sync = np.zeros(2 + n_batches, np.int64)  # next batch to claim, stop flag, ready flags
    accepted = huge_zeros(m, np.bool_)
    counters = np.zeros(5, np.int64)
    for stage in prange(2):
        if stage == 0:
            while atomic_load(sync, 1) == 0:
                b = atomic_fetch_add(sync, 0, 1)
                if b >= n_batches:
                    break
                _hand_over(b, first, bucket_off, words, keys, order, offsets, low_bits, passes,
                           digit_bits, shift, id_bits, n_steps, uv, eu, ev)
                atomic_store(sync, 2 + b, 1)
        else:
            for b in range(n_batches):
                while atomic_load(sync, 2 + b) == 0:
                    if atomic_cas(sync, 0, b, b + 1) == b:  # unclaimed: finish it here
                        _hand_over(b, first, bucket_off, words, keys, order, offsets, low_bits,
                                   passes, digit_bits, shift, id_bits, n_steps, uv, eu, ev)
                        atomic_store(sync, 2 + b, 1)
                    else:
                        spin_pause()
                ordered_union(parent, size, eu, ev, eu, bucket_off[first[b]],
                              bucket_off[first[b + 1]], max_unions, accepted, counters, True)
                if counters[2] >= max_unions:
                    atomic_store(sync, 1, 1)
                    break
    handed = min(atomic_load(sync, 0), n_batches)
    # steps past the last finished batch did not fire: make offsets a nondecreasing array
    for t in range(min(first[handed] << low_bits, n_steps), n_steps + 1):
        offsets[t] = m
    return order, offsets, accepted, counters, qerr, handed


@register_kernel(mst.pipelined_kruskal_op, backend="cpu", arrays=["numpy"],
                 dtypes=spike.VERTEX_DTYPES)
def pipelined_kruskal_cpu(u: np.ndarray, v: np.ndarray, w: np.ndarray, *, n: int, lo: Any,
                          quantum: Any, n_steps: int, max_unions: int, batches: int
                          ) -> tuple[np.ndarray, ...]:
    """Two threads of one Numba call on bucket-step-sort grids, else the stages in turn.

    The batches handed over come back as a one-element array, as the quantization error
    does, so that the op can hand every output back as the inputs' kind (torch, say).
    """
    m = u.shape[0]
    parent = np.arange(n, dtype=spike.vertex_dtype(n))
    size = np.ones(n, dtype=parent.dtype)
    u, v = np.ascontiguousarray(u), np.ascontiguousarray(v)
    if m and uses_step_sort(m, n_steps) and get_num_threads() > 1:
        k = _as_int_keys(np.ascontiguousarray(w), quantum)
        lo_t, q_t = _typed_grid(k, lo, quantum)
        order, offsets, acc, counters, qerr, handed = _pipelined_step_kruskal(
            k, u, v, lo_t, q_t, n_steps, q_t.dtype.kind == "f",
            *step_sort_layout(m, n_steps, True), get_num_threads(), min(batches, m), max_unions,
            parent, size)
        return order[acc], offsets, np.array([qerr]), counters, np.array([handed], np.int64)
    order, offsets, qerr = spike_sort_cpu(w, lo=lo, quantum=quantum, n_steps=n_steps, exact=True)
    eu, ev = gather_endpoints_cpu(u, v, order)
    accepted = np.zeros(m, dtype=np.bool_)
    counters = np.zeros(5, np.int64)
    ordered_union(parent, size, eu, ev, order, 0, m, max_unions, accepted, counters, True)
    return order[accepted], offsets, qerr, counters, np.array([batches], np.int64)
