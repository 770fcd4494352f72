"""CUDA kernels of the spike family (Numba CUDA, so the simulator can check them).

* spike sort: one thread per key computes its firing step and counts it (atomic add); one
  thread prefix-sums the step counts; one thread per key takes a slot in its step (atomic
  cursor, so the order inside a step is arbitrary); one thread per run of equal steps then
  orders the run by ``(key, id)`` (``exact``) or by id, which restores stability. Runs are
  insertion-sorted, fine for the short runs of a fine time grid, quadratic for long ones.
* spiking radix sort: the same three kernels per digit pass, stabilised by sorting each
  bucket by the previous pass's position.
* union-find: Kruskal's ordered union is sequential by definition (each edge's test depends on
  every earlier accepted edge), so it runs in one GPU thread; it exists so that a CUDA
  pipeline never copies to the host. Finds run one thread per vertex.

The ``*_launch`` functions take host NumPy arrays or Numba device arrays and return Numba
device arrays; the registered kernels wrap them for CuPy (checked on an H200).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda

from ..._registry import register_kernel
from ...ops import spike
from ._device import cupy_stream, to_device

THREADS = 128


def _blocks(n: int) -> int:
    return max(1, -(-n // THREADS))


@cuda.jit
def _firing_steps(keys, lo, quantum, top, float_grid, steps, counts, err):
    i = cuda.grid(1)
    if i < keys.shape[0]:
        d = keys[i] - lo
        if float_grid:
            s = np.int64(math.floor(d / quantum))
        else:
            s = np.int64(d // quantum)
        if s > top:
            s = top
        steps[i] = s
        cuda.atomic.add(counts, s + 1, 1)
        err[i] = np.float64(d) - np.float64(s) * np.float64(quantum)


@cuda.jit
def _inclusive_scan(counts):
    if cuda.grid(1) == 0:
        for t in range(1, counts.shape[0]):
            counts[t] += counts[t - 1]


@cuda.jit
def _scatter(steps, cursor, order):
    i = cuda.grid(1)
    if i < steps.shape[0]:
        slot = cuda.atomic.add(cursor, steps[i], 1)
        order[slot] = i


@cuda.jit
def _sort_runs(order, levels, keys, use_keys):
    # One thread per run of equal levels[order[.]]; insertion sort by (keys[x], x) or by x.
    j = cuda.grid(1)
    n = order.shape[0]
    if j < n and (j == 0 or levels[order[j]] != levels[order[j - 1]]):
        b = j + 1
        while b < n and levels[order[b]] == levels[order[j]]:
            b += 1
        for i in range(j + 1, b):
            x = order[i]
            k = i - 1
            while k >= j:
                y = order[k]
                if use_keys:
                    later = keys[y] > keys[x] or (keys[y] == keys[x] and y > x)
                else:
                    later = y > x
                if not later:
                    break
                order[k + 1] = y
                k -= 1
            order[k + 1] = x


@cuda.jit
def _digits(order, levels, shift, mask, digit, counts):
    j = cuda.grid(1)
    if j < order.shape[0]:
        d = (levels[order[j]] >> shift) & mask
        digit[j] = d
        cuda.atomic.add(counts, d + 1, 1)


@cuda.jit
def _gather(order, pos, out):
    j = cuda.grid(1)
    if j < order.shape[0]:
        out[j] = order[pos[j]]


@cuda.jit
def _ordered_union(parent, size, u, v, order, max_unions, accepted, counters):
    if cuda.grid(1) != 0:
        return
    finds = hops = unions = rewired = 0
    k = 0
    while k < order.shape[0] and unions < max_unions:
        e = order[k]
        a = np.int64(u[e])
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
            hops += 1
        b = np.int64(v[e])
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
            hops += 1
        finds += 2
        accepted[k] = False
        if a != b:
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
            rewired += size[b]
            unions += 1
            accepted[k] = True
        k += 1
    while k < order.shape[0]:
        accepted[k] = False
        k += 1
    counters[0] = finds
    counters[1] = hops
    counters[2] = unions
    counters[3] = min(order.shape[0], finds // 2)
    counters[4] = rewired


@cuda.jit
def _find(parent, x, out):
    # As the CPU kernel: a walk longer than n hops is a cycle; -1 marks it for the op.
    i = cuda.grid(1)
    if i < x.shape[0]:
        r = np.int64(x[i])
        hops = 0
        while parent[r] != r and hops <= parent.shape[0]:
            r = parent[r]
            hops += 1
        out[i] = r if parent[r] == r else -1


def _grid_values(keys: Any, lo: Any, quantum: Any) -> tuple[Any, Any]:
    if isinstance(quantum, int):
        return np.int64(lo), np.int64(quantum)
    return np.float64(lo), np.float64(quantum)


def _steps_and_offsets(keys: Any, lo: Any, quantum: Any, n_steps: int,
                       stream: Any) -> tuple[Any, Any, Any]:
    n = keys.shape[0]
    steps = cuda.device_array(n, dtype=np.int64, stream=stream)
    counts = cuda.to_device(np.zeros(n_steps + 1, np.int64), stream=stream)
    err = cuda.device_array(n, dtype=np.float64, stream=stream)
    lo_t, q_t = _grid_values(keys, lo, quantum)
    _firing_steps[_blocks(n), THREADS, stream](keys, lo_t, q_t, n_steps - 1,
                                               not isinstance(quantum, int), steps, counts, err)
    _inclusive_scan[1, 1, stream](counts)
    return steps, counts, err


def spike_sort_launch(keys: Any, *, lo: Any, quantum: Any, n_steps: int, exact: bool,
                      stream: Any = 0) -> tuple[Any, Any, Any]:
    """Spike sort on the device: ``(order, step_offsets, per-key quantization error)``.

    Args:
        keys: Keys, shape ``(n,)``, ``n >= 1``; signed integer keys as int64.
        lo: Smallest key.
        quantum: Key units per step.
        n_steps: Steps of the time grid.
        exact: Order each step's keys by value.
        stream: Numba stream.

    Returns:
        Numba device arrays: order (int64, ``(n,)``), step offsets (int64,
        ``(n_steps + 1,)``), quantization error per key (float64, ``(n,)``).
    """
    keys = to_device("keys", keys, stream)
    n = keys.shape[0]
    steps, offsets, err = _steps_and_offsets(keys, lo, quantum, n_steps, stream)
    cursor = cuda.device_array(n_steps, dtype=np.int64, stream=stream)
    cursor[:] = offsets[:-1]
    order = cuda.device_array(n, dtype=np.int64, stream=stream)
    _scatter[_blocks(n), THREADS, stream](steps, cursor, order)
    _sort_runs[_blocks(n), THREADS, stream](order, steps, keys, bool(exact))
    return order, offsets, err


def spike_radix_sort_launch(keys: Any, *, lo: Any, quantum: Any, n_levels: int,
                            radix_bits: int, exact: bool, stream: Any = 0
                            ) -> tuple[Any, np.ndarray, Any]:
    """Spiking radix sort on the device: ``(order, pass_stats, errors)`` (see the reference)."""
    keys = to_device("keys", keys, stream)
    n = keys.shape[0]
    levels, _, err = _steps_and_offsets(keys, lo, quantum, max(n_levels, 1), stream)
    order = cuda.to_device(np.arange(n, dtype=np.int64), stream=stream)
    passes = spike.radix_passes(n_levels, radix_bits)
    radix = 1 << radix_bits
    digit = cuda.device_array(n, dtype=np.int64, stream=stream)
    pos = cuda.device_array(n, dtype=np.int64, stream=stream)
    nxt = cuda.device_array(n, dtype=np.int64, stream=stream)
    pass_stats = np.zeros((passes, 2), np.int64)
    for p in range(passes):
        counts = cuda.to_device(np.zeros(radix + 1, np.int64), stream=stream)
        _digits[_blocks(n), THREADS, stream](order, levels, p * radix_bits, radix - 1, digit,
                                             counts)
        host_counts = counts.copy_to_host(stream=stream)
        pass_stats[p] = host_counts.max(), np.count_nonzero(host_counts)
        _inclusive_scan[1, 1, stream](counts)
        cursor = cuda.device_array(radix, dtype=np.int64, stream=stream)
        cursor[:] = counts[:-1]
        _scatter[_blocks(n), THREADS, stream](digit, cursor, pos)
        _sort_runs[_blocks(n), THREADS, stream](pos, digit, keys, False)
        _gather[_blocks(n), THREADS, stream](order, pos, nxt)
        order, nxt = nxt, order
    if exact:
        _sort_runs[_blocks(n), THREADS, stream](order, levels, keys, True)
    return order, pass_stats, err


def union_find_union_launch(parent: Any, size: Any, u: Any, v: Any, order: Any, *,
                            max_unions: int, stream: Any = 0) -> tuple[Any, Any]:
    """Kruskal's ordered union in one device thread: ``(accepted, counters)`` device arrays.

    ``parent`` and ``size`` must be device arrays to be updated in place (host arrays are
    copied and the copies updated).
    """
    parent, size = to_device("parent", parent, stream), to_device("size", size, stream)
    u, v, order = (to_device(nm, a, stream) for nm, a in (("u", u), ("v", v), ("order", order)))
    accepted = cuda.device_array(order.shape[0], dtype=np.bool_, stream=stream)
    counters = cuda.to_device(np.zeros(5, np.int64), stream=stream)
    _ordered_union[1, 1, stream](parent, size, u, v, order, max_unions, accepted, counters)
    return accepted, counters


def union_find_find_launch(parent: Any, x: Any, *, stream: Any = 0) -> Any:
    """Roots of ``x`` on the device, one thread per vertex (int64 device array)."""
    parent, x = to_device("parent", parent, stream), to_device("x", x, stream)
    out = cuda.device_array(x.shape[0], dtype=np.int64, stream=stream)
    if x.shape[0]:
        _find[_blocks(x.shape[0]), THREADS, stream](parent, x, out)
    return out


def _int_keys(keys: Any, quantum: Any) -> Any:
    if keys.dtype.kind in "iu" and (keys.dtype.kind == "u" or isinstance(quantum, int)):
        return keys.astype("int64")
    return keys


@register_kernel(spike.spike_sort_op, backend="cuda", arrays=["cupy"], dtypes=spike.KEY_DTYPES)
def spike_sort_cuda(keys: Any, *, lo: Any, quantum: Any, n_steps: int,
                    exact: bool) -> tuple[Any, Any, Any]:
    """Spike sort of CuPy keys on CuPy's current stream."""
    import cupy

    if keys.shape[0] == 0:
        return cupy.empty(0, cupy.int64), cupy.zeros(1, cupy.int64), cupy.zeros(1)
    stream = cupy_stream(cupy)
    keys = cupy.ascontiguousarray(_int_keys(keys, quantum))
    order, offsets, err = spike_sort_launch(keys, lo=lo, quantum=quantum, n_steps=n_steps,
                                            exact=exact, stream=stream)
    return cupy.asarray(order), cupy.asarray(offsets), cupy.asarray(err).max(keepdims=True)


@register_kernel(spike.spike_radix_sort_op, backend="cuda", arrays=["cupy"],
                 dtypes=spike.KEY_DTYPES)
def spike_radix_sort_cuda(keys: Any, *, lo: Any, quantum: Any, n_levels: int, radix_bits: int,
                          exact: bool) -> tuple[Any, np.ndarray, Any]:
    """Spiking radix sort of CuPy keys on CuPy's current stream."""
    import cupy

    if keys.shape[0] == 0:
        return cupy.empty(0, cupy.int64), np.zeros((0, 2), np.int64), cupy.zeros(1)
    stream = cupy_stream(cupy)
    keys = cupy.ascontiguousarray(_int_keys(keys, quantum))
    order, pass_stats, err = spike_radix_sort_launch(
        keys, lo=lo, quantum=quantum, n_levels=n_levels, radix_bits=radix_bits, exact=exact,
        stream=stream)
    return cupy.asarray(order), pass_stats, cupy.asarray(err).max(keepdims=True)


@register_kernel(spike.union_find_union_op, backend="cuda", arrays=["cupy"],
                 dtypes=spike.VERTEX_DTYPES)
def union_find_union_cuda(parent: Any, size: Any, u: Any, v: Any, order: Any, *,
                          max_unions: int, all_edges: bool = False) -> tuple[Any, Any]:
    """Ordered union on CuPy arrays (``parent``/``size`` updated in place)."""
    import cupy

    if all_edges:  # every edge in index order
        order = cupy.arange(u.shape[0], dtype=cupy.int64)

    acc, cnt = union_find_union_launch(parent, size, cupy.ascontiguousarray(u),
                                       cupy.ascontiguousarray(v), cupy.ascontiguousarray(order),
                                       max_unions=max_unions, stream=cupy_stream(cupy))
    return cupy.asarray(acc), cupy.asarray(cnt)


@register_kernel(spike.union_find_find_op, backend="cuda", arrays=["cupy"],
                 dtypes=spike.VERTEX_DTYPES)
def union_find_find_cuda(parent: Any, x: Any) -> Any:
    """Roots of CuPy vertex ids."""
    import cupy

    return cupy.asarray(union_find_find_launch(parent, cupy.ascontiguousarray(x),
                                               stream=cupy_stream(cupy)))
