"""CPU kernels of the mst family: filter-Kruskal and Borůvka in Numba (one thread, nogil).

Both compare edges by ``(w[e], e)``, so they return the same forest as a stable Kruskal.
"""

from __future__ import annotations

import numpy as np

from ..._registry import register_kernel
from ...ops import mst, spike
from ._numba import njit
from .spike import PREFETCH_AHEAD, find_root, ordered_union

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
    taken = np.zeros(m, np.bool_)
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
