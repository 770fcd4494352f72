"""CPU kernels of the spike family (Numba, one thread, ``nogil`` so stages can overlap).

* spike sort: a counting sort by firing step (histogram, prefix sum, stable scatter; for
  integer keys on a unit grid a leaner one, :func:`_unit_sort`), or on
  grids of :data:`LSD_MIN_STEPS` steps or more a bucket sort of packed (step, fine place, id)
  words (:func:`_step_sort`, same result; parallel with several threads), then, for
  ``exact``, each step's keys ordered by value (insertion sort for short runs, a stable merge
  sort for long ones);
* spiking radix sort: one stable counting-sort pass per digit of the level;
* union-find: Kruskal's ordered union with path halving and union by size, with software
  prefetches of the parents and root sizes of edges ahead;
* endpoint gather: from ``u`` and ``v`` interleaved, with prefetches.

The kernels below are also the building blocks of :mod:`fusekit.mst`'s fused CPU paths.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import prange

from ..._registry import register_kernel
from ...ops import spike
from ._memory import huge_empty, huge_zeros
from ._numba import get_num_threads, njit
from ._vmath import prefetch

#: Runs of at most this many keys in one step are ordered by insertion sort.
INSERTION_MAX = 24
#: The parallel spike sort (and endpoint gather) runs for at least this many keys. Measured
#: here on 2 cores: 2 threads were 1.3-2x slower than one at 2^16-vertex graphs (2-3.4e5 keys)
#: and 0.9-1.1x at 2^20 (3-7e6 keys), so only multi-million-key inputs take the parallel path.
PARALLEL_MIN_KEYS = 1 << 22
#: ... and for grids of at most this many steps per key (one histogram per thread).
PARALLEL_MAX_STEPS_PER_KEY = 4
#: The bucket step sort (grids of :data:`LSD_MIN_STEPS` steps or more) runs on several threads
#: from this many keys.
PARALLEL_STEP_SORT_MIN_KEYS = 1 << 18
#: Grids of at least this many steps are sorted by firing step with a radix sort of packed
#: words instead of one counting pass (first an LSD radix sort of (step, id) pairs: measured
#: under load, 1.2-1.5x faster from 2e5 steps, 0.85-0.9x at 1e5 steps; now the bucket sort
#: :func:`_step_sort`, faster again).
LSD_MIN_STEPS = 1 << 17
#: ... with digits of at most this many bits (2^11 counters per pass stay in L1/L2) ...
LSD_DIGIT_BITS = 11
#: ... for fewer keys than this (with at most 2^28 steps, step and id fit in 60 bits).
LSD_MAX_KEYS = 1 << 32
#: Most bits of a key's place inside its step in the bucket step sort's words (fewer when the
#: step and the id leave fewer); keys of one step that share it are compared themselves.
STEP_SORT_FINE_BITS = 30
#: The counting sort of integer keys on a unit grid (quantum 1, where a key's firing step is
#: ``key - lo``) runs on several threads from this many keys. Measured at 2^20 vertices
#: (Delaunay, 3.1e6 keys of 1..255): 7.1 ms on 2 threads against 10.5 ms on one.
UNIT_PARALLEL_MIN_KEYS = 1 << 20
#: Union-find prefetches the parents of the edge this many places ahead in the order (and
#: the next parents and sizes half as far ahead). Measured at 2^20 vertices (under load):
#: 8-32 all gave 2-4x over no prefetch; 16 was as good as any.
PREFETCH_AHEAD = 16
#: The endpoint gather prefetches the edge this many ids ahead (measured at 2^20 vertices,
#: under load: 32 beat 16 on RGG graphs, by 1.2-1.5x).
GATHER_AHEAD = 32
#: ... and runs in Numba from this many ids (NumPy's fancy indexing below) ...
GATHER_MIN_KEYS = 1 << 14
#: ... on several threads (when set) from this many ids: independent random reads, about 10 ms
#: of work per million ids; lowered from :data:`PARALLEL_MIN_KEYS` (2^22) so that the
#: 2^20-vertex Delaunay graphs (3.1e6 edges) gather in parallel too (not measured on two free
#: cores: none was free here).
GATHER_PARALLEL_MIN_KEYS = 1 << 20


@njit(nogil=True)
def firing_step(key, lo, quantum, top, float_grid):
    """``(step, quantization error)`` of one key on the grid; steps past ``top`` are ``top``.

    On a float grid the step is floor(d / quantum), as in the reference; Numba's float // is
    a floor division with an fmod correction and several times slower.
    """
    d = key - lo
    if float_grid:
        s = np.int64(math.floor(d / quantum))
    else:
        s = np.int64(d // quantum)
    if s > top:
        s = top
    return s, np.float64(d) - np.float64(s) * np.float64(quantum)


@njit(nogil=True)
def firing_steps(keys, lo, quantum, n_steps, float_grid):  # noqa: D103 - see module doc
    n = keys.shape[0]
    steps = huge_empty(n, np.int64)
    counts = huge_zeros(n_steps + 1, np.int64)
    qerr = 0.0
    top = n_steps - 1
    for i in range(n):
        s, e = firing_step(keys[i], lo, quantum, top, float_grid)
        steps[i] = s
        counts[s + 1] += 1
        if e > qerr:
            qerr = e
    for t in range(n_steps):
        counts[t + 1] += counts[t]
    return steps, counts, qerr


@njit(nogil=True)
def scatter_by_step(steps, offsets, keys, with_keys):  # noqa: D103
    # with_keys: also lay the keys out in firing order, so that ordering each step by value
    # reads them sequentially instead of at random (measured: most of the exact sort's time)
    n = steps.shape[0]
    order = huge_empty(n, np.int64)
    skeys = huge_empty(n if with_keys else 0, keys.dtype)
    cursor = offsets[:-1].copy()
    for i in range(n):
        s = steps[i]
        order[cursor[s]] = i
        if with_keys:
            skeys[cursor[s]] = keys[i]
        cursor[s] += 1
    return order, skeys


@njit(nogil=True)
def insert_last(order, skeys, a, i):
    """Move entry ``i`` into the key-sorted run ``[a, i)`` (stable: equal keys stay before)."""
    x = order[i]
    kx = skeys[i]
    j = i - 1
    while j >= a and skeys[j] > kx:
        order[j + 1] = order[j]
        skeys[j + 1] = skeys[j]
        j -= 1
    order[j + 1] = x
    skeys[j + 1] = kx


@njit(nogil=True)
def sort_run_sorted_keys(order, skeys, a, b):  # noqa: D103
    # order[a:b] holds increasing ids, skeys[a:b] their keys; order both by key (stable).
    if b - a <= INSERTION_MAX:
        for i in range(a + 1, b):
            insert_last(order, skeys, a, i)
    else:
        seg = order[a:b].copy()
        kseg = skeys[a:b].copy()
        perm = np.argsort(kseg, kind="mergesort")
        for i in range(b - a):
            order[a + i] = seg[perm[i]]
            skeys[a + i] = kseg[perm[i]]


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
def sort_within_steps(order, offsets, skeys):  # noqa: D103
    for t in range(offsets.shape[0] - 1):
        a, b = offsets[t], offsets[t + 1]
        if b - a > 1:
            sort_run_sorted_keys(order, skeys, a, b)


@njit(nogil=True)
def _spike_sort(keys, lo, quantum, n_steps, exact, float_grid):
    steps, offsets, qerr = firing_steps(keys, lo, quantum, n_steps, float_grid)
    order, skeys = scatter_by_step(steps, offsets, keys, exact)
    if exact:
        sort_within_steps(order, offsets, skeys)
    return order, offsets, qerr


@njit(nogil=True)
def _unit_sort(keys, lo, n_steps, u, v, carry):
    """The counting sort of integer keys on a unit grid: step ``min(key - lo, n_steps - 1)``.

    No steps array, no int64 copy of the keys and no division: both passes compute the step
    from the key (measured at 2^20 vertices: 3.1e6 keys of 1..255 in 10 ms against 38-49 ms
    through :func:`_spike_sort`; 6.9e6 keys in 20-30 ms against 120-150 ms). Every key lies
    on the grid, so the quantization error is 0 and the order within a step is by id, which
    is exact (equal keys). ``carry``: the scatter also writes ``u`` and ``v`` in firing order
    (a random gather afterwards costs more than the two extra streams).
    """
    n = keys.shape[0]
    top = n_steps - 1
    offsets = huge_zeros(n_steps + 1, np.int64)
    for i in range(n):
        offsets[min(np.int64(keys[i]) - lo, top) + 1] += 1
    for t in range(n_steps):
        offsets[t + 1] += offsets[t]
    order = huge_empty(n, np.int64)
    su = huge_empty(n if carry else 0, u.dtype)
    sv = huge_empty(n if carry else 0, v.dtype)
    _unit_scatter(keys, lo, top, offsets[:-1].copy(), order, u, v, su, sv, 0, n, carry)
    return order, offsets, su, sv


@njit(nogil=True)
def _unit_scatter(keys, lo, top, cursor, order, u, v, su, sv, a, b, carry):
    # stable scatter of keys a .. b - 1 (and, with carry, their endpoints) by step
    if carry:
        for i in range(a, b):
            s = min(np.int64(keys[i]) - lo, top)
            pos = cursor[s]
            order[pos] = i
            su[pos] = u[i]
            sv[pos] = v[i]
            cursor[s] = pos + 1
    else:
        for i in range(a, b):
            s = min(np.int64(keys[i]) - lo, top)
            pos = cursor[s]
            order[pos] = i
            cursor[s] = pos + 1


@njit(nogil=True, parallel=True)
def _unit_sort_parallel(keys, lo, n_steps, u, v, carry, n_chunks):
    """:func:`_unit_sort` on ``n_chunks`` threads, the same result.

    Chunked histograms keep the scatter stable, as in :func:`spike_sort_parallel`.
    """
    n = keys.shape[0]
    top = n_steps - 1
    hist = huge_zeros(n_chunks * n_steps, np.int64).reshape((n_chunks, n_steps))
    for c in prange(n_chunks):
        counts = hist[c]
        for i in range(n * c // n_chunks, n * (c + 1) // n_chunks):
            counts[min(np.int64(keys[i]) - lo, top)] += 1
    offsets = chunk_cursors(hist)
    order = huge_empty(n, np.int64)
    su = huge_empty(n if carry else 0, u.dtype)
    sv = huge_empty(n if carry else 0, v.dtype)
    for c in prange(n_chunks):
        _unit_scatter(keys, lo, top, hist[c], order, u, v, su, sv, n * c // n_chunks,
                      n * (c + 1) // n_chunks, carry)
    return order, offsets, su, sv


@njit(nogil=True)
def pack_steps(keys, lo, quantum, top, float_grid, a, b, packed, hist, top_shift, fine_bits,
               id_bits):
    """Pack keys ``a .. b - 1`` into sortable words; returns their largest quantization error.

    ``packed[i] = step << (fine_bits + id_bits) | fine << id_bits | i``: the firing step (as
    :func:`firing_step` computes it), then ``fine``, the key's place inside its step on a
    grid of ``2**fine_bits`` (nondecreasing in the key within a step, so a smaller ``fine``
    means a smaller key and only equal ``fine`` values need the keys themselves), then the
    key's index. ``hist[step >> top_shift]`` counts the words per bucket.
    """
    scale = np.float64(np.int64(1) << fine_bits)
    fine_max = (np.int64(1) << fine_bits) - 1
    low_shift = fine_bits + id_bits
    qerr = 0.0
    x = 0.0
    for i in range(a, b):
        d = keys[i] - lo
        if float_grid:
            x = d / quantum
            s = np.int64(math.floor(x))
        else:
            s = np.int64(d // quantum)
        if s > top:
            s = top
        e = np.float64(d) - np.float64(s) * np.float64(quantum)
        if e > qerr:
            qerr = e
        f = np.int64(0)
        if fine_bits:
            if float_grid:
                f = np.int64(math.floor((x - s) * scale))
            else:
                f = np.int64(math.floor(np.float64(d - s * quantum) / np.float64(quantum)
                                        * scale))
            f = min(max(f, np.int64(0)), fine_max)
        packed[i] = (s << low_shift) | (f << id_bits) | i
        hist[s >> top_shift] += 1
    return qerr


@njit(nogil=True)
def scatter_words(packed, cursor, out, a, b, shift):  # noqa: D103
    # stable scatter of words a .. b - 1 by their bucket (word >> shift)
    for i in range(a, b):
        x = packed[i]
        d = x >> shift
        pos = cursor[d]
        out[pos] = x
        cursor[d] = pos + 1


@njit(nogil=True)
def finish_buckets(src, bucket_off, b0, b1, keys, order, offsets, low_bits, passes, digit_bits,
                   shift, id_bits, exact, n_steps):
    """Order buckets ``b0 .. b1 - 1`` by step (and key), writing ``order`` and ``offsets``.

    Bucket ``b`` holds ``src[bucket_off[b]:bucket_off[b + 1]]``, the words whose step's top
    bits are ``b``, in id order; ``passes`` stable counting passes of ``digit_bits``-bit digits
    order its low ``low_bits`` step bits in a buffer of the bucket's size (in cache for
    buckets of a few thousand words), then one scan writes the ids, the bucket's step offsets
    and, for ``exact``, inserts each word into its step's sorted run (runs that outgrow
    :data:`INSERTION_MAX` words are finished by a merge sort of their keys).
    """
    if b1 <= b0:
        return
    big = 0
    for b in range(b0, b1):
        big = max(big, bucket_off[b + 1] - bucket_off[b])
    buf = np.empty(big, np.int64)
    tmp = np.empty(big, np.int64)
    radix = 1 << digit_bits
    mask = radix - 1
    counts = np.empty(radix, np.int64)
    id_mask = (np.int64(1) << id_bits) - 1
    step_mask = (np.int64(1) << low_bits) - 1
    for b in range(b0, b1):
        a, z = bucket_off[b], bucket_off[b + 1]
        k = z - a
        first = b << low_bits
        last = min((b + 1) << low_bits, n_steps)
        if k == 0:
            for t in range(first, last):
                offsets[t] = a
            continue
        cur = src[a:z]
        for p in range(passes):
            sh = shift + p * digit_bits
            counts[:] = 0
            for i in range(k):
                counts[(cur[i] >> sh) & mask] += 1
            run = 0
            for dgt in range(radix):
                c = counts[dgt]
                counts[dgt] = run
                run += c
            dst = buf if p % 2 == 0 else tmp
            for i in range(k):
                x = cur[i]
                dgt = (x >> sh) & mask
                dst[counts[dgt]] = x
                counts[dgt] += 1
            cur = dst[:k]
        t = first
        long_runs = 0
        for i in range(k):
            s = first + ((cur[i] >> shift) & step_mask)
            if t > s:  # same step as word i - 1
                if not exact:
                    order[a + i] = cur[i] & id_mask
                elif i - (offsets[s] - a) < INSERTION_MAX:
                    # into the step's sorted run; words compare by (step, fine place), equal
                    # ones by key (stable: ids arrive increasing, equal keys are not passed).
                    # Written out: as a function call the scan took 1.7x as long.
                    ra = offsets[s] - a
                    x = cur[i]
                    e = x & id_mask
                    xf = x >> id_bits
                    j = i - 1
                    while j >= ra:
                        y = cur[j]
                        yf = y >> id_bits
                        if yf < xf:
                            break
                        if yf == xf and keys[y & id_mask] <= keys[e]:
                            break
                        cur[j + 1] = y
                        order[a + j + 1] = y & id_mask
                        j -= 1
                    cur[j + 1] = x
                    order[a + j + 1] = e
                else:
                    order[a + i] = cur[i] & id_mask
                    if i - (offsets[s] - a) == INSERTION_MAX:
                        long_runs += 1
                continue
            order[a + i] = cur[i] & id_mask
            while t <= s:  # offsets[t]: how many keys fire before step t
                offsets[t] = a + i
                t += 1
        while t < last:
            offsets[t] = z
            t += 1
        if long_runs:  # the runs' first INSERTION_MAX ids are sorted, the rest increasing
            for t in range(first, last):
                lo_, hi_ = offsets[t], (offsets[t + 1] if t + 1 < last else z)
                if hi_ - lo_ > INSERTION_MAX:
                    sort_run_by_key(order, lo_, hi_, keys)


@njit(nogil=True)
def _step_sort(keys, lo, quantum, n_steps, exact, float_grid, top_bits, passes, digit_bits,
               fine_bits, id_bits):
    # The counting sort's result for long grids, by a bucket (MSD) radix sort of packed words
    # (:func:`pack_steps`, layout from :func:`step_sort_layout`): one pass packs the keys and
    # counts them per bucket (the step's top bits), one stable scatter puts each bucket's
    # words together, then each bucket is ordered by the rest of its step in a buffer that
    # stays in cache (:func:`finish_buckets`). It replaced an LSD sort of (step, id) pairs
    # whose passes each read and wrote every pair in memory and whose last scan read each
    # key at random (measured under load at 2^20-vertex Delaunay, uniform weights: the sort
    # 1.2-2x faster). Histograms never span the grid, so nothing is read or written at random
    # across an ``n_steps``-long array, as the counting sort does on long grids.
    n = keys.shape[0]
    low_bits = passes * digit_bits
    shift = fine_bits + id_bits
    hist = np.zeros((1, 1 << top_bits), np.int64)
    packed = huge_empty(n, np.int64)
    qerr = pack_steps(keys, lo, quantum, n_steps - 1, float_grid, 0, n, packed, hist[0],
                      low_bits, fine_bits, id_bits)
    bucket_off = chunk_cursors(hist)
    words = huge_empty(n, np.int64)
    scatter_words(packed, hist[0], words, 0, n, shift + low_bits)
    order = packed  # reuse: the packed words are no longer needed
    offsets = huge_empty(n_steps + 1, np.int64)
    finish_buckets(words, bucket_off, 0, hist.shape[1], keys, order, offsets, low_bits, passes,
                   digit_bits, shift, id_bits, exact, n_steps)
    offsets[n_steps] = n
    return order, offsets, qerr


@njit(nogil=True, parallel=True)
def _step_sort_parallel(keys, lo, quantum, n_steps, exact, float_grid, top_bits, passes,
                        digit_bits, fine_bits, id_bits, n_chunks):
    # the same on n_chunks threads: per-chunk bucket histograms, a stable parallel scatter
    # (chunk c's words of bucket b after the earlier chunks' ones), then blocks of whole
    # buckets holding about equal word counts finished in parallel
    n = keys.shape[0]
    low_bits = passes * digit_bits
    shift = fine_bits + id_bits
    packed, words, bucket_off, qerr = bucket_words_parallel(
        keys, lo, quantum, n_steps, float_grid, top_bits, low_bits, fine_bits, id_bits, n_chunks)
    order = packed
    offsets = huge_empty(n_steps + 1, np.int64)
    n_buckets = bucket_off.shape[0] - 1
    n_blocks = 4 * n_chunks
    first = np.searchsorted(bucket_off, np.arange(n_blocks + 1) * n // n_blocks)
    first[0], first[n_blocks] = 0, n_buckets
    for k in prange(n_blocks):
        finish_buckets(words, bucket_off, first[k], max(first[k + 1], first[k]), keys, order,
                       offsets, low_bits, passes, digit_bits, shift, id_bits, exact, n_steps)
    offsets[n_steps] = n
    return order, offsets, qerr


@njit(nogil=True, parallel=True)
def bucket_words_parallel(keys, lo, quantum, n_steps, float_grid, top_bits, low_bits, fine_bits,
                          id_bits, n_chunks):
    """The bucket step sort's first two passes on ``n_chunks`` threads.

    Packs the keys into words (:func:`pack_steps`) with one bucket histogram per chunk of
    keys, then scatters the words stably into their buckets (chunk ``c``'s words of bucket
    ``b`` after the earlier chunks' ones). Returns ``(packed, words, bucket_off, qerr)``:
    bucket ``b`` is ``words[bucket_off[b]:bucket_off[b + 1]]``.
    """
    n = keys.shape[0]
    hist = np.zeros((n_chunks, 1 << top_bits), np.int64)
    qerrs = np.zeros(n_chunks)
    packed = huge_empty(n, np.int64)
    for c in prange(n_chunks):
        qerrs[c] = pack_steps(keys, lo, quantum, n_steps - 1, float_grid, n * c // n_chunks,
                              n * (c + 1) // n_chunks, packed, hist[c], low_bits, fine_bits,
                              id_bits)
    bucket_off = chunk_cursors(hist)
    words = huge_empty(n, np.int64)
    for c in prange(n_chunks):
        scatter_words(packed, hist[c], words, n * c // n_chunks, n * (c + 1) // n_chunks,
                      fine_bits + id_bits + low_bits)
    return packed, words, bucket_off, qerrs.max()


def step_sort_layout(n: int, n_steps: int, exact: bool) -> tuple[int, int, int, int, int]:
    """``(top_bits, passes, digit_bits, fine_bits, id_bits)`` of the bucket step sort.

    A word is ``step | fine | id`` (63 bits); the top ``top_bits`` of the step (at most
    :data:`LSD_DIGIT_BITS`, at most half the step bits) pick one of ``2**top_bits`` buckets,
    and ``passes`` digits of ``digit_bits`` (at most :data:`LSD_DIGIT_BITS`) order the rest of
    the step inside a bucket. ``fine_bits`` (exact sorts only) take what the step and the id
    leave.
    """
    step_bits = max(int(n_steps - 1).bit_length(), 1)
    id_bits = max(int(n - 1).bit_length(), 1)
    top_bits = min(LSD_DIGIT_BITS, step_bits // 2)
    low = step_bits - top_bits
    passes = -(-low // LSD_DIGIT_BITS)
    digit_bits = -(-low // passes)
    low = passes * digit_bits
    fine_bits = min(max(63 - top_bits - low - id_bits, 0), STEP_SORT_FINE_BITS) if exact else 0
    return top_bits, passes, digit_bits, fine_bits, id_bits


@njit(nogil=True, parallel=True)
def chunk_histograms(keys, lo, quantum, n_steps, float_grid, n_chunks):  # noqa: D103
    # firing steps of every key and one histogram of steps per chunk of consecutive keys
    n = keys.shape[0]
    steps = huge_empty(n, np.int64)
    hist = huge_zeros(n_chunks * n_steps, np.int64).reshape((n_chunks, n_steps))
    qerrs = np.zeros(n_chunks)
    for c in prange(n_chunks):
        counts = hist[c]
        qerr = 0.0
        top = n_steps - 1
        for i in range(n * c // n_chunks, n * (c + 1) // n_chunks):
            t, e = firing_step(keys[i], lo, quantum, top, float_grid)
            steps[i] = t
            counts[t] += 1
            if e > qerr:
                qerr = e
        qerrs[c] = qerr
    return steps, hist, qerrs


@njit(nogil=True)
def chunk_cursors(hist):  # noqa: D103
    # hist[c, s] becomes chunk c's first slot for step s: keys of earlier steps, then the
    # earlier chunks' keys of step s, come first (a stable order); returns the step offsets
    n_chunks, n_steps = hist.shape
    offsets = huge_empty(n_steps + 1, np.int64)
    run = 0
    for t in range(n_steps):
        offsets[t] = run
        for c in range(n_chunks):
            count = hist[c, t]
            hist[c, t] = run
            run += count
    offsets[n_steps] = run
    return offsets


@njit(nogil=True, parallel=True)
def chunk_scatter(steps, hist, keys, with_keys):  # noqa: D103
    n = steps.shape[0]
    n_chunks = hist.shape[0]
    order = huge_empty(n, np.int64)
    skeys = huge_empty(n if with_keys else 0, keys.dtype)
    for c in prange(n_chunks):
        _scatter_chunk(steps, hist[c], keys, order, skeys, n * c // n_chunks,
                       n * (c + 1) // n_chunks, with_keys)
    return order, skeys


@njit(nogil=True)
def _scatter_chunk(steps, cursor, keys, order, skeys, a, b, with_keys):
    # a plain function per chunk: compiled like the serial scatter, outside the parfor body
    if with_keys:
        for i in range(a, b):
            t = steps[i]
            pos = cursor[t]
            order[pos] = i
            skeys[pos] = keys[i]
            cursor[t] = pos + 1
    else:
        for i in range(a, b):
            t = steps[i]
            pos = cursor[t]
            order[pos] = i
            cursor[t] = pos + 1


@njit(nogil=True, parallel=True)
def sort_within_steps_parallel(order, offsets, skeys, n_blocks):  # noqa: D103
    # blocks of whole steps holding about n / n_blocks keys each
    n = order.shape[0]
    n_steps = offsets.shape[0] - 1
    first = np.searchsorted(offsets, np.arange(n_blocks + 1) * n // n_blocks)
    first[0], first[n_blocks] = 0, n_steps
    for k in prange(n_blocks):
        for t in range(first[k], max(first[k + 1], first[k])):
            a, b = offsets[t], offsets[t + 1]
            if b - a > 1:
                sort_run_sorted_keys(order, skeys, a, b)


def spike_sort_parallel(keys: np.ndarray, lo: Any, quantum: Any, n_steps: int, exact: bool,
                        float_grid: bool, n_chunks: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The counting sort of :func:`_spike_sort` on ``n_chunks`` threads, the same result.

    Each chunk of consecutive keys gets its own histogram of firing steps; chunk ``c``'s keys
    of step ``s`` go after every key of earlier steps and after the earlier chunks' keys of
    step ``s``, so the scatter stays stable. Steps are then ordered by value in blocks of
    about equal key counts.
    """
    steps, hist, qerrs = chunk_histograms(keys, lo, quantum, n_steps, float_grid, n_chunks)
    offsets = chunk_cursors(hist)
    order, skeys = chunk_scatter(steps, hist, keys, exact)
    if exact:
        sort_within_steps_parallel(order, offsets, skeys, 4 * n_chunks)
    return order, offsets, float(qerrs.max())


@njit(nogil=True)
def interleave(u, v, uv, a, b):  # noqa: D103
    for i in range(a, b):
        uv[2 * i] = u[i]
        uv[2 * i + 1] = v[i]


@njit(nogil=True)
def gather_interleaved(uv, order, gu, gv, a, b):
    """``gu[i], gv[i] = uv[2 order[i]], uv[2 order[i] + 1]`` for ``i`` in ``[a, b)``.

    Both endpoints of an edge share a cache line of ``uv``, and the line of the edge
    :data:`GATHER_AHEAD` places ahead is prefetched, so several random reads are in flight.
    """
    line = 2 * uv.itemsize
    for i in range(a, b):
        j = i + GATHER_AHEAD
        if j < b:
            prefetch(uv, order[j] * line)
        e = order[i]
        gu[i] = uv[2 * e]
        gv[i] = uv[2 * e + 1]


@njit(nogil=True)
def gather_pairs_serial(u, v, order):  # noqa: D103
    uv = huge_empty(2 * u.shape[0], u.dtype)
    interleave(u, v, uv, 0, u.shape[0])
    k = order.shape[0]
    gu = huge_empty(k, u.dtype)
    gv = huge_empty(k, u.dtype)
    gather_interleaved(uv, order, gu, gv, 0, k)
    return gu, gv


@njit(nogil=True, parallel=True)
def gather_pairs(u, v, order, n_chunks):  # noqa: D103
    m = u.shape[0]
    uv = huge_empty(2 * m, u.dtype)
    for c in prange(n_chunks):
        interleave(u, v, uv, m * c // n_chunks, m * (c + 1) // n_chunks)
    k = order.shape[0]
    gu = huge_empty(k, u.dtype)
    gv = huge_empty(k, u.dtype)
    for c in prange(n_chunks):
        gather_interleaved(uv, order, gu, gv, k * c // n_chunks, k * (c + 1) // n_chunks)
    return gu, gv


@njit(nogil=True)
def _radix_sort(keys, lo, quantum, n_levels, radix_bits, passes, exact, float_grid):
    levels, offsets, qerr = firing_steps(keys, lo, quantum, max(n_levels, 1), float_grid)
    n = keys.shape[0]
    order = np.arange(n)
    tmp = huge_empty(n, np.int64)
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
def ordered_union(parent, size, u, v, order, start, stop, max_unions, accepted, counters,
                  by_index=False, ahead=PREFETCH_AHEAD, test_only=False):
    """Kruskal's loop over ``order[start:stop]``; ``counters`` accumulates across calls.

    ``counters``: finds, hops, unions, edges processed, synapse updates (the smaller side's
    vertices, whose root synapses a union rewires). ``by_index``: the edges are
    ``start .. stop - 1`` themselves and ``order`` is not read (measured: reading the ids
    through an identity ``order`` made the loop 1.3-1.6x slower at 2^20 vertices).
    ``test_only``: mark the edges whose endpoints lie in different trees, unite nothing
    (filter-Kruskal's filter).

    Software prefetches keep several edges' random reads in flight, in three stages, so that
    the finds of the ``k``-th edge find their cache lines loaded: the endpoints of the edge
    ``2 D`` places ahead (random when ``order`` is), the endpoints' parents ``D`` ahead, and
    ``D / 2`` ahead the next parents and their sizes (mostly the roots, which a union reads);
    ``D`` is ``ahead`` (0: no prefetch, the loop as it was before). They are hints: the
    union-find is unchanged. (Written out here: moved into a helper function, the loop ran
    1.6x slower.)
    """
    pf = ahead > 0
    finds, hops, unions, processed = counters[0], counters[1], counters[2], counters[3]
    rewired = counters[4]
    k = start
    while k < stop and unions < max_unions:
        j = k + 2 * ahead
        if pf and j < stop and not by_index:
            e = order[j]
            prefetch(u, e * u.itemsize)
            prefetch(v, e * v.itemsize)
        j = k + ahead
        if pf and j < stop:
            e = j if by_index else order[j]
            prefetch(parent, np.int64(u[e]) * parent.itemsize)
            prefetch(parent, np.int64(v[e]) * parent.itemsize)
        j = k + ahead // 2
        if pf and j < stop:
            e = j if by_index else order[j]
            pu = np.int64(parent[u[e]]) * parent.itemsize
            pv = np.int64(parent[v[e]]) * parent.itemsize
            prefetch(parent, pu)
            prefetch(parent, pv)
            prefetch(size, pu)
            prefetch(size, pv)
        e = k if by_index else order[k]
        a, ha = find_root(parent, np.int64(u[e]))
        b, hb = find_root(parent, np.int64(v[e]))
        hops += ha + hb
        finds += 2
        if test_only:
            accepted[k] = a != b
        elif a != b:
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
    # a root is at most n - 1 hops away: a longer walk is on a cycle, marked -1 (the op raises)
    n = parent.shape[0]
    out = huge_empty(x.shape[0], np.int64)
    for i in range(x.shape[0]):
        r = np.int64(x[i])
        hops = 0
        while parent[r] != r:
            r = parent[r]
            hops += 1
            if hops >= n:
                r = -1
                break
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
    if unit_grid(keys, lo, quantum, n_steps):
        none = np.empty(0, np.int32)
        order, offsets, _, _ = unit_sort(keys, lo, n_steps, none, none, False)
        return order, offsets, np.zeros(1)
    k = _as_int_keys(np.ascontiguousarray(keys), quantum)
    lo_t, q_t = _typed_grid(k, lo, quantum)
    exact = exact and not (k.dtype.kind == "i" and isinstance(quantum, int) and quantum == 1)
    threads = sort_threads(k.shape[0], n_steps)
    float_grid = q_t.dtype.kind == "f"
    if uses_step_sort(k.shape[0], n_steps):
        layout = step_sort_layout(k.shape[0], n_steps, exact)
        if threads > 1:
            order, offsets, qerr = _step_sort_parallel(k, lo_t, q_t, n_steps, exact, float_grid,
                                                       *layout, threads)
        else:
            order, offsets, qerr = _step_sort(k, lo_t, q_t, n_steps, exact, float_grid, *layout)
    elif threads > 1:
        order, offsets, qerr = spike_sort_parallel(k, lo_t, q_t, n_steps, exact, float_grid,
                                                   threads)
    else:
        order, offsets, qerr = _spike_sort(k, lo_t, q_t, n_steps, exact, float_grid)
    return order, offsets, np.array([qerr])


def uses_step_sort(n: int, n_steps: int) -> bool:
    """Whether ``n`` keys on ``n_steps`` steps take the bucket step sort (:func:`_step_sort`)."""
    return n_steps >= LSD_MIN_STEPS and n < LSD_MAX_KEYS


def unit_sort(keys: np.ndarray, lo: Any, n_steps: int, u: np.ndarray, v: np.ndarray,
              carry: bool) -> tuple[np.ndarray, ...]:
    """:func:`_unit_sort` (``(order, offsets, u in order, v in order)``), on threads if large."""
    keys = np.ascontiguousarray(keys)
    u, v = np.ascontiguousarray(u), np.ascontiguousarray(v)
    threads = sort_threads(keys.shape[0], n_steps, unit=True)
    if threads > 1:
        return _unit_sort_parallel(keys, np.int64(lo), n_steps, u, v, carry, threads)
    return _unit_sort(keys, np.int64(lo), n_steps, u, v, carry)


@register_kernel(spike.spike_sort_edges_op, backend="cpu", arrays=["numpy"],
                 dtypes=spike.KEY_DTYPES)
def spike_sort_edges_cpu(keys: np.ndarray, u: np.ndarray, v: np.ndarray, *, lo: Any,
                         quantum: Any, n_steps: int, exact: bool) -> tuple[np.ndarray, ...]:
    """The spike sort with the endpoints in firing order.

    On a unit grid of integer keys the sort's scatter writes them; otherwise they are gathered
    after the sort (:func:`gather_endpoints_cpu`).
    """
    if keys.shape[0] and unit_grid(keys, lo, quantum, n_steps):
        order, offsets, su, sv = unit_sort(keys, lo, n_steps, u, v, True)
        return order, offsets, np.zeros(1), su, sv
    order, offsets, qerr = spike_sort_cpu(keys, lo=lo, quantum=quantum, n_steps=n_steps,
                                          exact=exact)
    su, sv = gather_endpoints_cpu(u, v, order)
    return order, offsets, qerr, su, sv


def unit_grid(keys: np.ndarray, lo: Any, quantum: Any, n_steps: int) -> bool:
    """Whether the sort takes :func:`_unit_sort`: integer keys, integer ``lo``, quantum 1."""
    return (keys.dtype.kind in "iu" and isinstance(quantum, int) and quantum == 1
            and isinstance(lo, (int, np.integer)) and not uses_step_sort(keys.shape[0], n_steps))


def sort_threads(n: int, n_steps: int, unit: bool = False) -> int:
    """Threads the spike sort of ``n`` keys over ``n_steps`` steps runs on (1: serial kernel).

    ``fusekit.get_num_threads()`` when that is more than one and the sort is large enough:
    grids that take the bucket step sort (:func:`uses_step_sort`) from
    :data:`PARALLEL_STEP_SORT_MIN_KEYS` keys; other grids (the chunked counting sort, which
    keeps one histogram of ``n_steps`` counts per thread) from :data:`PARALLEL_MIN_KEYS` keys,
    or :data:`UNIT_PARALLEL_MIN_KEYS` on a unit grid (``unit``, see :func:`unit_grid`), and
    for at most :data:`PARALLEL_MAX_STEPS_PER_KEY` steps per key.
    """
    if uses_step_sort(n, n_steps):
        if n < PARALLEL_STEP_SORT_MIN_KEYS:
            return 1
    elif (n < (UNIT_PARALLEL_MIN_KEYS if unit else PARALLEL_MIN_KEYS)
          or n_steps > PARALLEL_MAX_STEPS_PER_KEY * n):
        return 1
    return get_num_threads()


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
                         order: np.ndarray, *, max_unions: int,
                         all_edges: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Kruskal's ordered union in one Numba loop (``all_edges``: every edge, by index)."""
    k = u.shape[0] if all_edges else order.shape[0]
    accepted = np.zeros(k, dtype=np.bool_)
    counters = np.zeros(5, np.int64)
    ordered_union(parent, size, u, v, order, 0, k, max_unions, accepted, counters, all_edges)
    return accepted, counters


@register_kernel(spike.union_find_find_op, backend="cpu", arrays=["numpy"],
                 dtypes=spike.VERTEX_DTYPES)
def union_find_find_cpu(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Roots by following parents (read-only)."""
    return _find_many(parent, x)


@register_kernel(spike.gather_endpoints_op, backend="cpu", arrays=["numpy"],
                 dtypes=spike.VERTEX_DTYPES)
def gather_endpoints_cpu(u: np.ndarray, v: np.ndarray, order: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``u[order], v[order]``, from ``u`` and ``v`` interleaved, with prefetches.

    Small gathers use NumPy; from :data:`GATHER_MIN_KEYS` ids one Numba loop, which copies
    ``u`` and ``v`` into one interleaved array first (so an edge's endpoints are one cache
    line, not two) and prefetches ahead (measured at 2^20 vertices: 2.4-3.5x NumPy's fancy
    indexing); parallel from :data:`GATHER_PARALLEL_MIN_KEYS` ids with more than one thread.
    """
    k = order.shape[0]
    if k < GATHER_MIN_KEYS:
        return u[order], v[order]
    u, v, order = (np.ascontiguousarray(a) for a in (u, v, order))
    threads = get_num_threads()
    if k >= GATHER_PARALLEL_MIN_KEYS and threads > 1:
        return gather_pairs(u, v, order, threads)
    return gather_pairs_serial(u, v, order)
