"""CPU kernels of the spike family (Numba, one thread, ``nogil`` so stages can overlap).

* spike sort: a counting sort by firing step (histogram, prefix sum, stable scatter), then,
  for ``exact``, each step's keys ordered by value (insertion sort for short runs, a stable
  merge sort for long ones);
* spiking radix sort: one stable counting-sort pass per digit of the level;
* union-find: Kruskal's ordered union with path halving and union by size.

The kernels below are also the building blocks of :mod:`fusekit.mst`'s fused CPU paths.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..._registry import register_kernel
from ...ops import spike
from ._numba import njit

#: Runs of at most this many keys in one step are ordered by insertion sort.
INSERTION_MAX = 24


@njit(nogil=True)
def firing_steps(keys, lo, quantum, n_steps, float_grid):  # noqa: D103 - see module doc
    # On a float grid the step is floor(d / quantum), as in the reference; Numba's float //
    # is a floor division with an fmod correction and several times slower.
    n = keys.shape[0]
    steps = np.empty(n, np.int64)
    counts = np.zeros(n_steps + 1, np.int64)
    qerr = 0.0
    top = n_steps - 1
    for i in range(n):
        d = keys[i] - lo
        if float_grid:
            s = np.int64(math.floor(d / quantum))
        else:
            s = np.int64(d // quantum)
        if s > top:
            s = top
        steps[i] = s
        counts[s + 1] += 1
        e = np.float64(d) - np.float64(s) * np.float64(quantum)
        if e > qerr:
            qerr = e
    for t in range(n_steps):
        counts[t + 1] += counts[t]
    return steps, counts, qerr


@njit(nogil=True)
def scatter_by_step(steps, offsets):  # noqa: D103
    n = steps.shape[0]
    order = np.empty(n, np.int64)
    cursor = offsets[:-1].copy()
    for i in range(n):
        s = steps[i]
        order[cursor[s]] = i
        cursor[s] += 1
    return order


@njit(nogil=True)
def sort_run_by_key(order, a, b, keys):  # noqa: D103
    # order[a:b] holds increasing ids; order them by key, ties by id (stable).
    if b - a <= INSERTION_MAX:
        for i in range(a + 1, b):
            x = order[i]
            kx = keys[x]
            j = i - 1
            while j >= a and keys[order[j]] > kx:
                order[j + 1] = order[j]
                j -= 1
            order[j + 1] = x
    else:
        seg = order[a:b].copy()
        perm = np.argsort(keys[seg], kind="mergesort")
        for i in range(b - a):
            order[a + i] = seg[perm[i]]


@njit(nogil=True)
def sort_within_steps(order, offsets, keys):  # noqa: D103
    for t in range(offsets.shape[0] - 1):
        a, b = offsets[t], offsets[t + 1]
        if b - a > 1:
            sort_run_by_key(order, a, b, keys)


@njit(nogil=True)
def _spike_sort(keys, lo, quantum, n_steps, exact, float_grid):
    steps, offsets, qerr = firing_steps(keys, lo, quantum, n_steps, float_grid)
    order = scatter_by_step(steps, offsets)
    if exact:
        sort_within_steps(order, offsets, keys)
    return order, offsets, qerr


@njit(nogil=True)
def _radix_sort(keys, lo, quantum, n_levels, radix_bits, passes, exact, float_grid):
    levels, offsets, qerr = firing_steps(keys, lo, quantum, max(n_levels, 1), float_grid)
    n = keys.shape[0]
    order = np.arange(n)
    tmp = np.empty(n, np.int64)
    radix = 1 << radix_bits
    mask = radix - 1
    pass_stats = np.zeros((passes, 2), np.int64)
    counts = np.empty(radix + 1, np.int64)
    for p in range(passes):
        shift = p * radix_bits
        counts[:] = 0
        for i in range(n):
            counts[((levels[order[i]] >> shift) & mask) + 1] += 1
        pass_stats[p, 0] = counts.max()
        pass_stats[p, 1] = np.count_nonzero(counts)
        for d in range(radix):
            counts[d + 1] += counts[d]
        for i in range(n):
            x = order[i]
            d = (levels[x] >> shift) & mask
            tmp[counts[d]] = x
            counts[d] += 1
        order, tmp = tmp, order
    if exact and n > 1:
        a = 0
        for i in range(1, n + 1):
            if i == n or levels[order[i]] != levels[order[a]]:
                if i - a > 1:
                    sort_run_by_key(order, a, i, keys)
                a = i
    return order, pass_stats, qerr


@njit(nogil=True)
def find_root(parent, x):  # noqa: D103
    hops = 0
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
        hops += 1
    return x, hops


@njit(nogil=True)
def ordered_union(parent, size, u, v, order, start, stop, max_unions, accepted, counters):
    """Kruskal's loop over ``order[start:stop]``; ``counters`` accumulates across calls.

    ``counters``: finds, hops, unions, edges processed, synapse updates (the smaller side's
    vertices, whose root synapses a union rewires).
    """
    finds, hops, unions, processed = counters[0], counters[1], counters[2], counters[3]
    rewired = counters[4]
    k = start
    while k < stop and unions < max_unions:
        e = order[k]
        a, ha = find_root(parent, np.int64(u[e]))
        b, hb = find_root(parent, np.int64(v[e]))
        hops += ha + hb
        finds += 2
        if a != b:
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
            rewired += size[b]
            unions += 1
            accepted[k] = True
        k += 1
    processed += k - start
    counters[0], counters[1], counters[2], counters[3] = finds, hops, unions, processed
    counters[4] = rewired
    return k


@njit(nogil=True)
def _find_many(parent, x):
    out = np.empty(x.shape[0], np.int64)
    for i in range(x.shape[0]):
        r = np.int64(x[i])
        while parent[r] != r:
            r = parent[r]
        out[i] = r
    return out


def _typed_grid(keys: np.ndarray, lo: Any, quantum: Any) -> tuple[Any, Any]:
    if isinstance(quantum, int):
        return keys.dtype.type(lo), np.int64(quantum)
    return np.float64(lo), np.float64(quantum)


def _as_int_keys(keys: np.ndarray, quantum: Any) -> np.ndarray:
    # unsigned minus lo would wrap in Numba; int64 holds every supported integer key.
    if keys.dtype.kind == "u" or (keys.dtype.kind == "i" and isinstance(quantum, int)):
        return keys.astype(np.int64, copy=False)
    return keys


@register_kernel(spike.spike_sort_op, backend="cpu", arrays=["numpy"], dtypes=spike.KEY_DTYPES)
def spike_sort_cpu(keys: np.ndarray, *, lo: Any, quantum: Any, n_steps: int,
                   exact: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counting sort by firing step, then exact order within each step."""
    if keys.shape[0] == 0:
        return np.empty(0, np.int64), np.zeros(1, np.int64), np.zeros(1)
    k = _as_int_keys(np.ascontiguousarray(keys), quantum)
    lo_t, q_t = _typed_grid(k, lo, quantum)
    exact = exact and not (k.dtype.kind == "i" and isinstance(quantum, int) and quantum == 1)
    order, offsets, qerr = _spike_sort(k, lo_t, q_t, n_steps, exact, q_t.dtype.kind == "f")
    return order, offsets, np.array([qerr])


@register_kernel(spike.spike_radix_sort_op, backend="cpu", arrays=["numpy"],
                 dtypes=spike.KEY_DTYPES)
def spike_radix_sort_cpu(keys: np.ndarray, *, lo: Any, quantum: Any, n_levels: int,
                         radix_bits: int, exact: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LSD radix sort over the quantized levels, one stable counting pass per digit."""
    if keys.shape[0] == 0:
        return np.empty(0, np.int64), np.zeros((0, 2), np.int64), np.zeros(1)
    k = _as_int_keys(np.ascontiguousarray(keys), quantum)
    lo_t, q_t = _typed_grid(k, lo, quantum)
    passes = spike.radix_passes(n_levels, radix_bits)
    order, pass_stats, qerr = _radix_sort(k, lo_t, q_t, n_levels, radix_bits, passes, exact,
                                        q_t.dtype.kind == "f")
    return order, pass_stats, np.array([qerr])


@register_kernel(spike.union_find_union_op, backend="cpu", arrays=["numpy"],
                 dtypes=spike.VERTEX_DTYPES)
def union_find_union_cpu(parent: np.ndarray, size: np.ndarray, u: np.ndarray, v: np.ndarray,
                         order: np.ndarray, *, max_unions: int) -> tuple[np.ndarray, np.ndarray]:
    """Kruskal's ordered union in one Numba loop."""
    accepted = np.zeros(order.shape[0], dtype=np.bool_)
    counters = np.zeros(5, np.int64)
    ordered_union(parent, size, u, v, order, 0, order.shape[0], max_unions, accepted, counters)
    return accepted, counters


@register_kernel(spike.union_find_find_op, backend="cpu", arrays=["numpy"],
                 dtypes=spike.VERTEX_DTYPES)
def union_find_find_cpu(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Roots by following parents (read-only)."""
    return _find_many(parent, x)
