"""CUDA kernels of the fp8_matmul family: ``y = x W^T`` and ``g W`` on block-scaled FP8 weights.

W is ``[N, K]`` E4M3FN codes with one float32 scale per ``block x block`` tile; it is never
dequantized in memory. Both kernels follow the same plan, made for small M (decoding):

* The 256-entry decode table goes to shared memory once per thread block; every weight byte
  is decoded by one shared-memory lookup.
* Each thread keeps ``m_tile`` accumulators (one per row of x) in registers, so each weight
  byte is read from global memory once per pass for up to ``m_tile`` rows of x (``m_tile``
  is 1, 2, 4 or 8, the smallest that holds M; larger M runs as several passes side by side,
  which find the weight in L2 after the first).
* Partial sums of the threads that share an output are added in shared memory in a fixed
  order, so results do not depend on timing (no atomics).

:func:`fp8_gemv_launch` (``y = x W^T``): ``ROWS_PER_BLOCK`` weight rows per thread block and
``ROW_SPLITS`` warps per row, which split the row's K. A lane reads ``vec`` consecutive
weight bytes per step (8 where the scale tile allows, so that the bytes of one step share a
scale), so a warp keeps 256 bytes of its row in flight; each decoded weight is multiplied by
its tile's scale before the multiply-add. (Lanes reading consecutive bytes instead, 8 loads
of 32 bytes per warp and step with the scale looked up per byte, ran 2x slower at M = 1 on an
H200.)
For up to :data:`WIDE_MAX_M` rows of x, where K and the block are multiples of 8, the wide
kernel (:func:`_gemv_wide_kernel`) reads the weight as 8-byte words instead, 8 rows per block
and one warp per row, 2 words in flight per lane (on an H200: 26 us at M = 1 on a [2048,
7168] weight against the byte kernel's 33 us).
:func:`fp8_gemm_tiled_launch` is for many rows of x: W and x in shared memory chunk by
chunk, a block of sums per thread in registers, K split over the grid and the parts summed
by a second kernel. It runs only when asked (``tiled=True``) until it has been timed on a GPU
(:data:`TILED_MIN_M`).
:func:`fp8_gemv_t_launch` (``g W``, the gradient w.r.t. x): one lane per column ``k`` (32
columns per block) and ``SPLITS`` warps that split the rows ``n``; products are summed over
one ``block``-wide tile of the rows, then multiplied by that tile's scale once.
Accumulation is in the input dtype (float32 or float64).

The ``*_launch`` functions take Numba device arrays (or host NumPy arrays, copied over) and
run without CuPy, so the simulator tests call them directly. The registered kernels take
CuPy arrays, make them contiguous, allocate outputs with CuPy and launch on CuPy's current
stream, passing the CuPy arrays as they are (``device=``) so that repeated launches skip
Numba's dispatcher (``_device.launch``). CuPy is imported inside them, never at import time.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numba import cuda

from ..._arrays import dtype_name
from ..._registry import register_kernel
from ...ops import fp8_matmul
from ...ops.fp8 import FP8_BLOCK
from ._device import copy_back, cupy_stream, launch, output, to_device
from .fp8 import _table_on_device, device_table, stage_table

_FLOATS = ("float32", "float64")
WARP = 32
#: Weight rows per thread block of the forward product.
ROWS_PER_BLOCK = 2
#: Warps that split one weight row's reduced axis in the forward product.
ROW_SPLITS = 4
#: Warps that split the weight rows in a thread block of the transposed product.
SPLITS = 8
#: Rows of x one pass over the weight serves; M is rounded up to the next of these. Larger M
#: runs as several passes side by side (grid y), which read the weight from L2 after the
#: first. 64 accumulators per thread ran 14x slower than 16 on an H200 (likely spilled to
#: local memory; not checked with -Xptxas -v).
M_TILES = (1, 2, 4, 8)
_MAX_GRID_Y = 65535
#: fp8_gemv reads the weight as 8-byte words (:func:`_gemv_wide_kernel`) where it can for
#: up to this many rows of x. On an H200 (gate/up [2048, 7168], float32, warm clock) the wide
#: kernel with 8 rows per block and one warp per row took 26.2 us at M = 1 and 69.3 us at
#: M = 4, the byte kernel's best 32.4 and 71.1 us; at M = 16 and 64 the byte kernel was
#: faster (257 against 293 us at M = 16).
WIDE_MAX_M = 4
#: Weight rows per block, warps per row and words unrolled of the wide kernel by default.
WIDE_ROWS, WIDE_SPLITS, WIDE_UNROLL = 8, 1, 2
#: The tiled kernel's (rows of x, rows of W, K chunk, rows and columns per thread) by default.
TILED_SHAPE = (16, 128, 32, 4, 4)
#: Thread blocks the tiled kernel aims for, splitting K to get there (2 per SM of an H200).
TILED_BLOCKS = 264
#: fp8_gemv runs the tiled kernel (:func:`_gemm_kernel`) from this many rows of x up; ``None``:
#: only when asked (``tiled=True``), until it has been timed on a GPU.
TILED_MIN_M: int | None = None


def _m_tile(m: int) -> int:
    return next((t for t in M_TILES if t >= m), M_TILES[-1])


def _vec(block: int) -> int:
    """Weight bytes a lane reads per step: the most of 8, 4, 2, 1 that divides ``block``.

    The bytes of one step then share one scale tile.
    """
    return next(v for v in (8, 4, 2, 1) if block % v == 0)


@functools.cache
def _gemv_kernel(dtype: str, m_tile: int, rows: int, splits: int, vec: int) -> Any:
    """``y[m, n] = sum_j x[m, j] * table[w[n, j]] * scale[n // b, j // b]``."""
    scalar = np.dtype(dtype).type
    warps = rows * splits

    @cuda.jit
    def gemv(x, w, scale, table_in, y, block):
        table = cuda.shared.array(256, scalar)
        sums = cuda.shared.array((warps, m_tile, WARP), scalar)
        acc = cuda.local.array(m_tile, scalar)
        lane = cuda.threadIdx.x
        warp = cuda.threadIdx.y
        tid = warp * WARP + lane
        stage_table(table, table_in, tid, WARP * warps)
        m_rows, k = x.shape
        n = w.shape[0]
        first_row = cuda.blockIdx.x * rows
        row = first_row + warp // splits
        step = WARP * splits * vec
        # Every thread runs the same m0 loop and reaches every barrier; warps past the
        # last weight row only add zeros.
        for m0 in range(cuda.blockIdx.y * m_tile, m_rows, cuda.gridDim.y * m_tile):
            for m in range(m_tile):
                acc[m] = scalar(0)
            if row < n:
                srow = row // block
                for j in range(((warp % splits) * WARP + lane) * vec, k, step):
                    s = scalar(scale[srow, j // block])
                    if j + vec <= k:  # vec bytes in flight per lane, in one scale tile
                        for e in range(vec):
                            wv = table[w[row, j + e]] * s
                            for m in range(m_tile):
                                if m0 + m < m_rows:
                                    acc[m] += x[m0 + m, j + e] * wv
                    else:  # the ragged end of a row
                        for e in range(k - j):
                            wv = table[w[row, j + e]] * s
                            for m in range(m_tile):
                                if m0 + m < m_rows:
                                    acc[m] += x[m0 + m, j + e] * wv
            for m in range(m_tile):
                sums[warp, m, lane] = acc[m]
            cuda.syncthreads()
            # One thread per (row, m) adds the row's splits * 32 partial sums in a fixed order.
            for i in range(tid, rows * m_tile, WARP * warps):
                r = i // m_tile
                m = i - r * m_tile
                if first_row + r < n and m0 + m < m_rows:
                    total = scalar(0)
                    for p in range(splits):
                        for t in range(WARP):
                            total += sums[r * splits + p, m, t]
                    y[m0 + m, first_row + r] = total
            cuda.syncthreads()

    return gemv


@functools.cache
def _gemv_wide_kernel(dtype: str, m_tile: int, rows: int, splits: int, unroll: int) -> Any:
    """:func:`_gemv_kernel` reading the weight as 8-byte words (``w`` viewed as uint64).

    One load per lane brings 8 weights of one scale tile (``block % 8 == 0``); ``unroll``
    words per lane are loaded before any is decoded, so that many loads are in flight. The
    8 products of a word are summed, then multiplied by the tile's scale once. Each warp's
    sums are added as a tree in shared memory (the simulator has no shuffles), then a row's
    ``splits`` warps by one thread, in a fixed order.
    """
    scalar = np.dtype(dtype).type
    warps = rows * splits

    @cuda.jit
    def gemv(x, w, scale, table_in, y, block):
        table = cuda.shared.array(256, scalar)
        sums = cuda.shared.array((warps, m_tile, WARP), scalar)
        acc = cuda.local.array(m_tile, scalar)
        part = cuda.local.array(m_tile, scalar)
        words = cuda.local.array(unroll, np.uint64)
        lane = cuda.threadIdx.x
        warp = cuda.threadIdx.y
        tid = warp * WARP + lane
        stage_table(table, table_in, tid, WARP * warps)
        m_rows = x.shape[0]
        n, kw = w.shape
        tile_words = block // 8
        first_row = cuda.blockIdx.x * rows
        row = first_row + warp // splits
        step = WARP * splits
        for m0 in range(cuda.blockIdx.y * m_tile, m_rows, cuda.gridDim.y * m_tile):
            for m in range(m_tile):
                acc[m] = scalar(0)
            if row < n:
                srow = row // block
                for q0 in range((warp % splits) * WARP + lane, kw, step * unroll):
                    for u in range(unroll):
                        q = q0 + u * step
                        words[u] = w[row, q] if q < kw else np.uint64(0)
                    for u in range(unroll):
                        q = q0 + u * step
                        if q < kw:
                            word = words[u]
                            for m in range(m_tile):
                                part[m] = scalar(0)
                            for e in range(8):
                                wv = table[np.int32((word >> np.uint64(8 * e)) & np.uint64(255))]
                                for m in range(m_tile):
                                    if m0 + m < m_rows:
                                        part[m] += x[m0 + m, q * 8 + e] * wv
                            s = scalar(scale[srow, q // tile_words])
                            for m in range(m_tile):
                                acc[m] += part[m] * s
            for m in range(m_tile):
                sums[warp, m, lane] = acc[m]
            cuda.syncthreads()
            offset = WARP // 2
            while offset > 0:  # a tree over each warp's lanes, the same order every call
                if lane < offset:
                    for m in range(m_tile):
                        sums[warp, m, lane] += sums[warp, m, lane + offset]
                cuda.syncthreads()
                offset //= 2
            for i in range(tid, rows * m_tile, WARP * warps):
                r = i // m_tile
                m = i - r * m_tile
                if first_row + r < n and m0 + m < m_rows:
                    total = scalar(0)
                    for p in range(splits):
                        total += sums[r * splits + p, m, 0]
                    y[m0 + m, first_row + r] = total
            cuda.syncthreads()

    return gemv


@functools.cache
def _gemm_kernel(dtype: str, bm: int, bn: int, bk: int, tm: int, tn: int) -> Any:
    """``part[z, m, n] = sum over split z's K chunks of x[m, k] * W[n, k]``, tiled.

    A thread block computes ``bm`` rows of x against ``bn`` rows of W over the ``bk``-wide
    K chunks of its split (grid z): each chunk of W is decoded once, times its tile's scale,
    into shared memory (k-major, padded against bank conflicts), the x chunk beside it, and
    each thread adds a ``tm x tn`` block of products in registers (rows ``ty + i * (bm //
    tm)``, columns ``tx + j * (bn // tn)``, so that a warp reads consecutive words).
    ``bk`` must divide the scale block, so that a chunk lies in one scale tile.
    """
    scalar = np.dtype(dtype).type
    ty_n, tx_n = bm // tm, bn // tn
    threads = ty_n * tx_n

    @cuda.jit
    def gemm(x, w, scale, table_in, part, block, chunks_per_split):
        table = cuda.shared.array(256, scalar)
        xs = cuda.shared.array((bk, bm + 1), scalar)
        ws = cuda.shared.array((bk, bn + 1), scalar)
        acc = cuda.local.array((tm, tn), scalar)
        a = cuda.local.array(tm, scalar)
        b = cuda.local.array(tn, scalar)
        tid = cuda.threadIdx.x
        tx = tid % tx_n
        ty = tid // tx_n
        stage_table(table, table_in, tid, threads)
        m_rows, k = x.shape
        n = w.shape[0]
        n0 = cuda.blockIdx.x * bn
        m0 = cuda.blockIdx.y * bm
        split = cuda.blockIdx.z
        c_begin = split * chunks_per_split
        c_end = c_begin + chunks_per_split
        n_chunks = (k + bk - 1) // bk
        if c_end > n_chunks:
            c_end = n_chunks
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = scalar(0)
        for c in range(c_begin, c_end):
            k0 = c * bk
            # consecutive threads take consecutive bytes of a row: coalesced reads
            for e in range(tid, bn * bk, threads):
                r = e // bk
                kk = e - r * bk
                row = n0 + r
                col = k0 + kk
                v = scalar(0)
                if row < n and col < k:
                    v = table[w[row, col]] * scalar(scale[row // block, col // block])
                ws[kk, r] = v
            for e in range(tid, bm * bk, threads):
                r = e // bk
                kk = e - r * bk
                mr = m0 + r
                col = k0 + kk
                v = scalar(0)
                if mr < m_rows and col < k:
                    v = x[mr, col]
                xs[kk, r] = v
            cuda.syncthreads()
            for kk in range(bk):
                for i in range(tm):
                    a[i] = xs[kk, ty + i * ty_n]
                for j in range(tn):
                    b[j] = ws[kk, tx + j * tx_n]
                for i in range(tm):
                    for j in range(tn):
                        acc[i, j] += a[i] * b[j]
            cuda.syncthreads()
        for i in range(tm):
            mr = m0 + ty + i * ty_n
            if mr < m_rows:
                for j in range(tn):
                    col = n0 + tx + j * tx_n
                    if col < n:
                        part[split, mr, col] = acc[i, j]

    return gemm


@cuda.jit
def _sum_splits(part, y):  # pragma: no cover - compiled
    """``y[m, n] = sum_z part[z, m, n]``, z in order (the same result every call)."""
    i = cuda.grid(1)
    splits, m_rows, n = part.shape
    if i < m_rows * n:
        m = i // n
        c = i - m * n
        total = part[0, m, c]
        for z in range(1, splits):
            total += part[z, m, c]
        y[m, c] = total


@functools.cache
def _gemv_t_kernel(dtype: str, m_tile: int, splits: int) -> Any:
    """``out[m, k] = sum_nt scale[nt, k // b] * sum_{r in nt} g[m, r] * table[w[r, k]]``."""
    scalar = np.dtype(dtype).type

    @cuda.jit
    def gemv_t(g, w, scale, table_in, out, block):
        table = cuda.shared.array(256, scalar)
        partial_sums = cuda.shared.array((splits, WARP), scalar)
        acc = cuda.local.array(m_tile, scalar)
        part = cuda.local.array(m_tile, scalar)
        lane = cuda.threadIdx.x
        split = cuda.threadIdx.y
        stage_table(table, table_in, split * WARP + lane, WARP * splits)
        m_rows, n = g.shape
        k = w.shape[1]
        col = cuda.blockIdx.x * WARP + lane
        n_ntiles = (n + block - 1) // block
        for m0 in range(cuda.blockIdx.y * m_tile, m_rows, cuda.gridDim.y * m_tile):
            for m in range(m_tile):
                acc[m] = scalar(0)
            if col < k:
                scol = col // block
                for nt in range(n_ntiles):
                    for m in range(m_tile):
                        part[m] = scalar(0)
                    n_end = nt * block + block
                    if n_end > n:
                        n_end = n
                    for r in range(nt * block + split, n_end, splits):
                        wv = table[w[r, col]]
                        for m in range(m_tile):
                            if m0 + m < m_rows:
                                part[m] += g[m0 + m, r] * wv
                    s = scalar(scale[nt, scol])
                    for m in range(m_tile):
                        acc[m] += part[m] * s
            for m in range(m_tile):
                partial_sums[split, lane] = acc[m]
                cuda.syncthreads()
                if split == 0 and col < k and m0 + m < m_rows:
                    total = scalar(0)
                    for t in range(splits):
                        total += partial_sums[t, lane]
                    out[m0 + m, col] = total
                cuda.syncthreads()

    return gemv_t


# ----------------------------------------------------------------------- launch functions


def _product_launch(kernel: Any, threads_y: int, name: str, a: Any, w_fp8: Any,
                    weight_scale_inv: Any, out: Any, out_cols: int, grid_x: int, block: int,
                    table: Any, stream: Any, m_tile: int | None,
                    weight_view: Any = None, device: int | None = None) -> None:
    """Launch ``kernel(dtype, m_tile)`` on a ``(grid_x, passes)`` grid of (32, threads_y).

    ``weight_view``, if given, turns the weight's device array into what the kernel takes.
    ``device`` set means every array (and ``table``) is a C-contiguous CuPy array on that
    device, passed to the kernel as it is (see ``_device.launch``).
    """
    reduced = a.shape[-1]
    m = math.prod(a.shape[:-1])
    dtype = dtype_name(a)
    if device is None:
        ad = to_device(name, a, stream).reshape(m, reduced)
        wd = to_device("w_fp8", w_fp8, stream)
        sd = to_device("weight_scale_inv", weight_scale_inv, stream)
        od, host = output("out", out, (m, out_cols), stream)
        table = _table_on_device(table, "e4m3fn", dtype, stream)
    else:
        ad, wd, sd, od, host = a.reshape(m, reduced), w_fp8, weight_scale_inv, out, None
    if weight_view is not None:
        wd = weight_view(wd)
    if m > 0 and out_cols > 0:
        mt = _m_tile(m) if m_tile is None else m_tile
        grid = (grid_x, min(-(-m // mt), _MAX_GRID_Y))
        launch(kernel(dtype, mt), grid, (WARP, threads_y), stream,
               (ad, wd, sd, table, od, block), device)
    copy_back(stream, (od, host))


def fp8_gemm_tiled_launch(
    x: Any,
    w_fp8: Any,
    weight_scale_inv: Any,
    out: Any,
    *,
    block: int = FP8_BLOCK,
    table: Any = None,
    stream: Any = 0,
    shape: tuple[int, int, int, int, int] | None = None,
    splits: int | None = None,
    device: int | None = None,
) -> None:
    """Write ``y = x W^T`` into ``out`` with the tiled kernel (:func:`_gemm_kernel`).

    For many rows of x: each weight byte is decoded once per ``bm`` rows of x in shared
    memory, and each thread keeps a ``tm x tn`` block of sums in registers. K is split over
    the grid's z axis (``splits``; by default enough for :data:`TILED_BLOCKS` blocks) into a
    ``(splits, M, N)`` workspace, which a second kernel sums in a fixed order.

    Args:
        x: Activations ``(..., K)``, float32 or float64.
        w_fp8: E4M3FN codes ``[N, K]``, uint8.
        weight_scale_inv: float32 ``[ceil(N/block), ceil(K/block)]``.
        out: ``(..., N)`` in x's dtype.
        block: Scale tile side.
        table: As for :func:`fp8_gemv_launch`.
        stream: As for :func:`fp8_gemv_launch`.
        device: As for :func:`fp8_gemv_launch`.
        shape: ``(bm, bn, bk, tm, tn)``: rows of x and of W per block, the K chunk (a
            divisor of ``block``), and the rows and columns each thread sums (divisors of
            ``bm`` and ``bn``); default :data:`TILED_SHAPE`.
        splits: How many parts K is split into (at most one per chunk).
    """
    bm, bn, bk, tm, tn = TILED_SHAPE if shape is None else shape
    if bm % tm or bn % tn or block % bk:
        raise ValueError(
            f"tiled fp8_gemv shape {(bm, bn, bk, tm, tn)}: tm must divide bm, tn bn, and the "
            f"K chunk bk the scale block {block}"
        )
    n, k = w_fp8.shape
    m = math.prod(x.shape[:-1])
    dtype = dtype_name(x)
    if device is None:
        ad = to_device("x", x, stream).reshape(m, k)
        wd = to_device("w_fp8", w_fp8, stream)
        sd = to_device("weight_scale_inv", weight_scale_inv, stream)
        od, host = output("out", out, (m, n), stream)
        table = _table_on_device(table, "e4m3fn", dtype, stream)
    else:
        ad, wd, sd, od, host = x.reshape(m, k), w_fp8, weight_scale_inv, out, None
    if m > 0 and n > 0:
        n_chunks = -(-k // bk)
        grid_xy = -(-n // bn) * -(-m // bm)
        if splits is None:
            splits = -(-TILED_BLOCKS // grid_xy)
        per_split = max(1, -(-n_chunks // max(1, min(splits, n_chunks))))
        splits = max(1, -(-n_chunks // per_split))
        if device is None:
            part = cuda.device_array((splits, m, n), dtype=dtype, stream=stream)
        else:
            import cupy

            part = cupy.empty((splits, m, n), dtype=dtype)
        launch(_gemm_kernel(dtype, bm, bn, bk, tm, tn), (-(-n // bn), -(-m // bm), splits),
               ((bm // tm) * (bn // tn),), stream, (ad, wd, sd, table, part, block, per_split),
               device)
        launch(_sum_splits, (-(-(m * n) // 256),), (256,), stream, (part, od), device)
    copy_back(stream, (od, host))


def fp8_gemv_launch(
    x: Any,
    w_fp8: Any,
    weight_scale_inv: Any,
    out: Any,
    *,
    block: int = FP8_BLOCK,
    table: Any = None,
    stream: Any = 0,
    rows_per_block: int | None = None,
    splits: int | None = None,
    m_tile: int | None = None,
    wide: bool | None = None,
    unroll: int = WIDE_UNROLL,
    device: int | None = None,
    tiled: bool | None = None,
) -> None:
    """Write ``y = x W^T`` into ``out``, W = E4M3FN ``w_fp8`` times its tile scales.

    Args:
        x: Activations ``(..., K)``, float32 or float64.
        w_fp8: E4M3FN codes ``[N, K]``, uint8.
        weight_scale_inv: float32 ``[ceil(N/block), ceil(K/block)]``.
        out: ``(..., N)`` in x's dtype (as many elements as that).
        block: Scale tile side.
        table: Optional device copy of ``host_table("e4m3fn", x.dtype)``; copied per call
            when ``None``.
        stream: Numba stream to launch on (``0``: the default stream).
        rows_per_block: Weight rows in a thread block (default :data:`ROWS_PER_BLOCK`, or
            :data:`WIDE_ROWS` for the wide kernel).
        splits: Warps that split each weight row's K (``rows_per_block * splits`` warps;
            default :data:`ROW_SPLITS`, or :data:`WIDE_SPLITS` for the wide kernel).
        m_tile: Rows of x served by one pass over the weight; by default the smallest of
            :data:`M_TILES` that holds all rows.
        wide: Read the weight as 8-byte words (:func:`_gemv_wide_kernel`); needs ``K`` and
            ``block`` multiples of 8 and an 8-byte aligned weight. ``None``: wide when those
            hold and x has at most :data:`WIDE_MAX_M` rows; ``True`` raises ``ValueError``
            when they do not hold.
        unroll: Words a lane loads before decoding them (wide kernel only).
        device: Set (to the CUDA device) only when every array, ``table`` included, is a
            C-contiguous CuPy array on it: they then go to the kernel as they are, and
            repeated launches skip Numba's dispatcher (``_device.launch``).
        tiled: Run :func:`fp8_gemm_tiled_launch` (default shape) instead; ``None``: from
            :data:`TILED_MIN_M` rows of x up where that is set and the block allows.

    Device arrays (Numba's, or any ``__cuda_array_interface__`` array) must be C-contiguous
    and are used in place; host NumPy arrays are copied to the device, and a host ``out`` is
    filled when the call returns. Inputs are not checked beyond that: the op checks them.

    Example:
        >>> import numpy as np
        >>> w_fp8, scale = np.full((2, 3), 56, np.uint8), np.ones((1, 1), np.float32)
        >>> y = np.empty((1, 2), np.float32)
        >>> fp8_gemv_launch(np.ones((1, 3), np.float32), w_fp8, scale, y)  # doctest: +SKIP
        >>> y  # doctest: +SKIP
        array([[3., 3.]], dtype=float32)
    """
    if tiled is None:
        tiled = (TILED_MIN_M is not None and math.prod(x.shape[:-1]) >= TILED_MIN_M
                 and block % TILED_SHAPE[2] == 0)
    if tiled:
        fp8_gemm_tiled_launch(x, w_fp8, weight_scale_inv, out, block=block, table=table,
                              stream=stream, device=device)
        return
    n, k = w_fp8.shape
    fits = k % 8 == 0 and block % 8 == 0 and _aligned(w_fp8, 8)
    if wide and not fits:
        raise ValueError(
            f"the wide fp8_gemv kernel needs K ({k}) and block ({block}) multiples of 8 and an "
            "8-byte aligned weight; pass wide=None to fall back to the byte kernel"
        )
    if wide is None:
        wide = fits and math.prod(x.shape[:-1]) <= WIDE_MAX_M
    if wide:
        rows_per_block = WIDE_ROWS if rows_per_block is None else rows_per_block
        splits = WIDE_SPLITS if splits is None else splits
        _product_launch(
            lambda dtype, mt: _gemv_wide_kernel(dtype, mt, rows_per_block, splits, unroll),
            rows_per_block * splits, "x", x, w_fp8, weight_scale_inv, out, n,
            -(-n // rows_per_block), block, table, stream, m_tile,
            weight_view=lambda wd: wd.view(np.uint64), device=device)
        return
    vec = _vec(block)
    rows_per_block = ROWS_PER_BLOCK if rows_per_block is None else rows_per_block
    splits = ROW_SPLITS if splits is None else splits
    _product_launch(lambda dtype, mt: _gemv_kernel(dtype, mt, rows_per_block, splits, vec),
                    rows_per_block * splits, "x", x, w_fp8, weight_scale_inv, out, n,
                    -(-n // rows_per_block), block, table, stream, m_tile, device=device)


def _aligned(a: Any, alignment: int) -> bool:
    """Whether the data of ``a`` (device or host array) starts at a multiple of ``alignment``."""
    iface = getattr(a, "__cuda_array_interface__", None) or getattr(
        a, "__array_interface__", None)
    if iface is None:  # the simulator's device arrays: host memory, any alignment works
        return True
    return iface["data"][0] % alignment == 0


def fp8_gemv_t_launch(
    grad_y: Any,
    w_fp8: Any,
    weight_scale_inv: Any,
    out: Any,
    *,
    block: int = FP8_BLOCK,
    table: Any = None,
    stream: Any = 0,
    splits: int = SPLITS,
    m_tile: int | None = None,
    device: int | None = None,
) -> None:
    """Write ``grad_x = grad_y W`` into ``out`` (the gradient of :func:`fp8_gemv_launch`).

    Args:
        grad_y: ``(..., N)``, float32 or float64.
        w_fp8: E4M3FN codes ``[N, K]``, uint8.
        weight_scale_inv: float32 ``[ceil(N/block), ceil(K/block)]``.
        out: ``(..., K)`` in grad_y's dtype.
        block: Scale tile side.
        table: Optional device copy of ``host_table("e4m3fn", grad_y.dtype)``.
        stream: Numba stream to launch on (``0``: the default stream).
        splits: Warps that split the weight rows in a thread block.
        m_tile: Rows of ``grad_y`` served by one pass over the weight (default as for
            :func:`fp8_gemv_launch`).
        device: As for :func:`fp8_gemv_launch`.

    Arrays (and ``device``) are taken as by :func:`fp8_gemv_launch`; ``N = 0`` gives zeros.
    """
    k = w_fp8.shape[1]
    _product_launch(lambda dtype, mt: _gemv_t_kernel(dtype, mt, splits), splits, "grad_y",
                    grad_y, w_fp8, weight_scale_inv, out, k, -(-k // WARP), block, table,
                    stream, m_tile, device=device)


# ------------------------------------------------------------------ registered kernels


def _product_cuda(launch: Any, a: Any, w_fp8: Any, weight_scale_inv: Any, out_cols: int,
                  block: int) -> Any:
    import cupy

    m = math.prod(a.shape[:-1])
    with a.device:
        if a.size == 0 or w_fp8.size == 0:  # nothing to sum over, or nothing to write
            return cupy.zeros((*a.shape[:-1], out_cols), dtype=a.dtype)
        A = cupy.ascontiguousarray(a).reshape(m, a.shape[-1])  # noqa: N806
        out = cupy.empty((m, out_cols), dtype=a.dtype)
        launch(A, cupy.ascontiguousarray(w_fp8), cupy.ascontiguousarray(weight_scale_inv), out,
               block=block, table=device_table(cupy, "e4m3fn", dtype_name(a)),
               stream=cupy_stream(cupy), device=a.device.id)
    return out.reshape(*a.shape[:-1], out_cols)


@register_kernel(fp8_matmul.fp8_gemv_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def fp8_gemv_cuda(x: Any, w_fp8: Any, weight_scale_inv: Any, block: int = FP8_BLOCK) -> Any:
    """``x W^T`` with block-scaled FP8 W on the GPU, on CuPy's current stream."""
    return _product_cuda(fp8_gemv_launch, x, w_fp8, weight_scale_inv, w_fp8.shape[0], block)


@register_kernel(fp8_matmul.fp8_gemv_t_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def fp8_gemv_t_cuda(grad_y: Any, w_fp8: Any, weight_scale_inv: Any,
                    block: int = FP8_BLOCK) -> Any:
    """``grad_y W`` with block-scaled FP8 W on the GPU (the gradient of ``fp8_gemv``)."""
    return _product_cuda(fp8_gemv_t_launch, grad_y, w_fp8, weight_scale_inv, w_fp8.shape[1],
                         block)


@register_kernel(fp8_matmul.fp8_gate_up_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def fp8_gate_up_cuda(x: Any, w_gate: Any, s_gate: Any, w_up: Any, s_up: Any,
                     block: int = FP8_BLOCK) -> Any:
    """``silu(x W_gate^T) * (x W_up^T)`` on the GPU: the two gemv kernels, then CuPy."""
    import cupy

    g = fp8_gemv_cuda(x, w_gate, s_gate, block)
    u = fp8_gemv_cuda(x, w_up, s_up, block)
    return g / (1 + cupy.exp(-g)) * u
