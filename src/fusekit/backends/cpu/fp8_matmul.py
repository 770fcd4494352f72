"""CPU kernels of the fp8_matmul family: block-scaled FP8 products in Numba, W read once.

Decoding E4M3FN needs no table: the code's magnitude bits shifted into a float32's exponent
and mantissa fields give the value times 2^-120, and one exact multiply by 2^120 restores it.
Both steps are plain vector integer and float operations, so LLVM vectorises the whole loop.
(An E4M3 subnormal becomes a float32 denormal in between; see docs/benchmarks.md for what that
costs on the machine at hand.)

Where Numba's target has AVX-512 BF16 (and the tiles are DeepSeek-V3's), ``fp8_gemv`` and
``fp8_gate_up`` run the bfloat16 dot-product kernels of ``_fp8_bf16`` instead.

Rows of W are split across threads in one parallel launch. For each row and each 128-wide
tile of K, every row of x is multiplied with the tile and the sum scaled once by the tile's
``weight_scale_inv``: W's bytes are read once per call, whatever M is.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ..._registry import register_kernel
from ...ops import fp8, fp8_matmul
from . import _fp8_bf16
from ._fp8_planes import GROUP, T_ROWS, cols_t, dot4_planes, plane_order
from ._numba import njit
from ._vmath import prefetch_l2, silu_mul


@njit(inline="always")
def _e4m3_scaled(c):
    # E4M3FN code -> its value times 2^-120, exactly, as float32: the code as a signed byte,
    # shifted so exponent+mantissa land in bits 26..20, masked to those and the sign bit
    # (0x87F00000).
    return np.int32((np.int32(np.int8(c)) << 20) & np.int32(-2014314496)).view(np.float32)


#: Weights of each row between two bursts of prefetches in the M=1 kernel (a multiple of
#: ``GROUP``; 128-512 measured alike, see docs/benchmarks.md).
_CHUNK = 256
_LINE = 64
#: How many quads of rows ahead the M=1 kernel prefetches (into L2): on Zen 4, 3 quads into
#: L2 doubled one thread's bandwidth from DRAM against 1 quad into L1 (docs/benchmarks.md).
_AHEAD_QUADS = 3
#: Rows of g from which ``fp8_gemv_t`` takes the bfloat16 kernel for bfloat16-valued g
#: (measured on Zen 4: docs/benchmarks.md, session 21).
T_BF16_MIN_M = 12
#: Rows of float32 (three-part) g up to which ``fp8_gemv_t`` takes ``gemm_t_rows`` on
#: AVX-512 BF16 CPUs (Zen 4, 2 threads, rotating weights, ms: 1 row 0.54-0.83 against the
#: FMA kernel's 0.92-1.50, 2 rows 0.74-1.05 against 0.96-1.20, 4 rows 1.32-1.43 against
#: 1.03-1.20); bfloat16-valued g takes it below T_BF16_MIN_M (8 rows 1.66-1.94 against
#: 1.84-2.99, the buffered kernel 2.03-2.04).
T_ROWS_F32_MAX_M = 2


@njit(inline="always", fastmath=True)
def _dot_fp8_quad(xs, flat, k, i, rows, y, ahead):
    # Rows i .. i + rows - 1 (rows <= 4; fewer re-read the last) of W, flat, against xs (x in
    # plane order, ``_fp8_planes``, times its tiles' scales): each load of xs serves four
    # rows, and eight FMA chains keep the vector units busy. While it reads 4 * _CHUNK bytes of
    # these rows it prefetches into L2 the next 4 * _CHUNK bytes of W after byte ``ahead`` of
    # ``flat`` (the start of the quad ``_AHEAD_QUADS`` quads on), so those are in cache when
    # their turn comes: the hardware prefetcher alone restarts on every row and left short
    # rows (K = 2048) at 60% of the streaming bandwidth.
    o0 = i * k
    o1 = (i + min(1, rows - 1)) * k
    o2 = (i + min(2, rows - 1)) * k
    o3 = (i + min(3, rows - 1)) * k
    d0 = d1 = d2 = d3 = np.float32(0)
    n_groups = k // GROUP
    limit = flat.size
    g = 0
    while g < n_groups:
        c = min(_CHUNK // GROUP, n_groups - g)
        p = ahead + 4 * GROUP * g
        for q in range(4 * GROUP * c // _LINE):
            if p + q * _LINE < limit:
                prefetch_l2(flat, p + q * _LINE)
        o = g * GROUP
        e0, e1, e2, e3 = dot4_planes(flat, o0 + o, o1 + o, o2 + o, o3 + o, xs, o, c)
        d0 += e0
        d1 += e1
        d2 += e2
        d3 += e3
        g += c
    for j in range(n_groups * GROUP, k):  # the last k % 32 codes, in their own order
        xj = xs[j]
        d0 += xj * _e4m3_scaled(flat[o0 + j])
        d1 += xj * _e4m3_scaled(flat[o1 + j])
        d2 += xj * _e4m3_scaled(flat[o2 + j])
        d3 += xj * _e4m3_scaled(flat[o3 + j])
    for r, d in enumerate((d0, d1, d2, d3)):
        if r < rows:
            y[0, i + r] = d


@njit(inline="always", fastmath=True)
def _dot4(x0, x1, x2, x3, t, out):
    d0 = d1 = d2 = d3 = np.float32(0)
    for j in range(t.size):
        tj = t[j]
        d0 += x0[j] * tj
        d1 += x1[j] * tj
        d2 += x2[j] * tj
        d3 += x3[j] * tj
    out[0] = d0
    out[1] = d1
    out[2] = d2
    out[3] = d3


@njit(inline="always", fastmath=True)
def _dot(x, t):
    d = np.float32(0)
    for j in range(x.size):
        d += x[j] * t[j]
    return d


@njit(fastmath=True)
def _row_block(x, xp, w, scale, block, rb, y, xs, row, d4):
    # y[:, rows of block rb] = x W[rows]^T, x pre-scaled by 2^120 / 2^e(row) so that
    # x * (w 2^-120) stays well inside float32. With xp (one row of x in plane order,
    # ``planes_of``; block a multiple of 32): four rows at a time, decoded 32 codes at a time.
    # Else all rows of one 128-row block share their tile scales: fold them into a copy of x
    # once per block, and each row of W, decoded once, is one long dot product with every
    # row of x.
    m_rows, k = x.shape
    i_end = min(w.shape[0], (rb + 1) * block)
    n_tiles = (k + block - 1) // block
    for m in range(m_rows):
        src = x[m] if xp.size == 0 else xp  # xp's tiles are whole groups: scaled as they lie
        for t in range(n_tiles):
            s = scale[rb, t]
            for j in range(t * block, min(k, (t + 1) * block)):
                xs[m, j] = src[j] * s
    if xp.size:
        i = rb * block
        flat = w.reshape(-1)
        while i < i_end:
            rows = min(4, i_end - i)
            _dot_fp8_quad(xs[0], flat, k, i, rows, y, (i + 4 * _AHEAD_QUADS) * k)
            i += rows
        return
    for i in range(rb * block, i_end):
        wi = w[i]
        for j in range(k):
            row[j] = _e4m3_scaled(wi[j])
        m = 0
        while m + 4 <= m_rows:
            _dot4(xs[m], xs[m + 1], xs[m + 2], xs[m + 3], row, d4)
            for r in range(4):
                y[m + r, i] = d4[r]
            m += 4
        while m < m_rows:
            y[m, i] = _dot(xs[m], row)
            m += 1


@njit(parallel=True, fastmath=True)
def _gemv_rows(x, xp, w, scale, block, y):
    m_rows, k = x.shape
    for rb in prange((w.shape[0] + block - 1) // block):
        xs = np.empty((m_rows, k), dtype=np.float32)
        row = np.empty(k if xp.size == 0 else 0, dtype=np.float32)
        d4 = np.empty(4, dtype=np.float32)
        _row_block(x, xp, w, scale, block, rb, y, xs, row, d4)


@njit(parallel=True, fastmath=True)
def _gate_up_rows(x, xp, row_scale, w_gate, s_gate, w_up, s_up, block, g, u, h):
    # One launch for both projections of an expert and the SiLU(gate) * up epilogue.
    m_rows, k = x.shape
    for rb in prange((w_gate.shape[0] + block - 1) // block):
        xs = np.empty((m_rows, k), dtype=np.float32)
        row = np.empty(k if xp.size == 0 else 0, dtype=np.float32)
        d4 = np.empty(4, dtype=np.float32)
        _row_block(x, xp, w_gate, s_gate, block, rb, g, xs, row, d4)
        _row_block(x, xp, w_up, s_up, block, rb, u, xs, row, d4)
        for m in range(m_rows):
            rs = row_scale[m]
            for i in range(rb * block, min(w_gate.shape[0], (rb + 1) * block)):
                h[m, i] = silu_mul(g[m, i] * rs, u[m, i] * rs)


@njit(parallel=True, fastmath=True)
def _gemv_t_cols(g, w, scale, block, out):
    # out[m, :] = sum_n g[m, n] * W[n, :]: threads own column ranges of K; W read once. (For
    # K not in whole tiles; ``_gemv_t_tiles`` below takes the rest, 2.6-3.7x faster on Zen 4.)
    m_rows, n = g.shape
    k = w.shape[1]
    chunk = block
    for c in prange((k + chunk - 1) // chunk):
        k0 = c * chunk
        k1 = min(k, k0 + chunk)
        acc = np.zeros((m_rows, k1 - k0), dtype=np.float32)
        t = k0 // block
        for i in range(n):
            s = scale[i // block, t]
            wt = w[i, k0:k1]
            for m in range(m_rows):
                gs = g[m, i] * s
                am = acc[m]
                for j in range(wt.size):
                    am[j] += gs * _e4m3_scaled(wt[j])
        for m in range(m_rows):
            for j in range(k0, k1):
                out[m, j] = acc[m, j - k0]


#: Columns of W one task of the transposed product owns (whole scale tiles).
_T_COLS = 512


@njit(parallel=True, fastmath=True)
def _gemv_t_tiles(g, w, scale, block, order, out):
    # out[m, :] = sum_n g[m, n] * W[n, :] by column chunks of W and groups of four rows of g.
    # Within a task, row block by row block (so that a block's pages are reused by all of the
    # chunk's column groups), each column group of 64 (or 32) is summed over the block's rows
    # in registers (``cols_t``), its codes decoded as the M=1 kernel decodes them; the sums
    # live in ``acc`` between blocks.
    m_rows, n = g.shape
    k = w.shape[1]
    chunk = max(block, (_T_COLS // block) * block)
    n_chunks = (k + chunk - 1) // chunk
    n_groups = (m_rows + T_ROWS - 1) // T_ROWS
    flat = w.reshape(-1)
    for task in prange(n_chunks * n_groups):
        c0 = (task // n_groups) * chunk
        c1 = min(k, c0 + chunk)
        q = task % n_groups
        acc = np.zeros(((c1 - c0) // GROUP) * T_ROWS * GROUP, dtype=np.float32)
        gs = np.empty(block * T_ROWS, dtype=np.float32)
        for r0 in range(0, n, block):
            rows = min(block, n - r0)
            rb = r0 // block
            for t in range(c0 // block, c1 // block):
                s = scale[rb, t]
                for i in range(rows):
                    for m in range(T_ROWS):
                        mm = q * T_ROWS + m
                        gs[i * T_ROWS + m] = g[mm, r0 + i] * s if mm < m_rows else np.float32(0)
                for c in range(t * block, (t + 1) * block, GROUP):
                    a0 = ((c - c0) // GROUP) * T_ROWS * GROUP
                    cols_t(flat, c, r0, rows, k, block, gs, acc[a0:a0 + T_ROWS * GROUP])
        for c in range(c0, c1, GROUP):
            a0 = ((c - c0) // GROUP) * T_ROWS * GROUP
            for m in range(T_ROWS):
                mm = q * T_ROWS + m
                if mm < m_rows:
                    for p in range(GROUP):
                        out[mm, c + order[p]] = acc[a0 + m * GROUP + p]


@njit
def _prescale_into(rows, out, scales):
    for r in range(rows.shape[0]):
        amax = 0.0
        for j in range(rows.shape[1]):
            v = abs(np.float64(rows[r, j]))
            if not v <= amax:  # also catches NaN, which makes amax non-finite below
                amax = v
        if not np.isfinite(amax):
            amax = 1.0
        e = math.frexp(amax)[1]
        factor = math.ldexp(1.0, 120 - e)
        for j in range(rows.shape[1]):
            out[r, j] = np.float32(rows[r, j] * factor)
        scales[r] = np.float32(math.ldexp(1.0, e))


def planes_of(xr: np.ndarray, block: int) -> np.ndarray:
    """The one row of ``xr`` in plane order for the M=1 kernel (``_fp8_planes``), or nothing.

    Empty unless ``xr`` is one row and ``block`` a multiple of 32 (so no group of 32 codes
    straddles two scale tiles): then the codes are decoded as ``_fp8_planes`` does, with the
    last ``K % 32`` values after the groups in their own order.
    """
    m_rows, k = xr.shape
    if m_rows != 1 or block % GROUP:
        return np.empty(0, dtype=np.float32)
    k32 = k - k % GROUP
    return np.concatenate([xr[0, plane_order(k32)], xr[0, k32:]])


def _prescaled_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``a`` times ``2^(120 - e)``, ``e`` the binary exponent of the row's max |a|.

    The kernels multiply by FP8 values carried as ``value * 2^-120``; this exact power-of-two
    scaling keeps every product in float32's normal range. Returns the rows and ``2^e``. (A
    Numba loop: the NumPy version took 30-65 us per 7168-wide row, 4-7% of an M=1 GEMV.)
    """
    rows = np.ascontiguousarray(fp8.as_rows(a))
    out = np.empty(rows.shape, dtype=np.float32)
    scales = np.empty(rows.shape[0], dtype=np.float32)
    _prescale_into(rows, out, scales)
    return out, scales


@register_kernel(fp8_matmul.fp8_gemv_op, backend="cpu", arrays=["numpy"], dtypes=("float32",))
def fp8_gemv_cpu(x: np.ndarray, w_fp8: np.ndarray, weight_scale_inv: np.ndarray,
                 block: int = 128) -> np.ndarray:
    """``x W^T`` on the CPU with W in block-scaled FP8, float32 accumulation."""
    if _fp8_bf16.fits(w_fp8.shape[1], block):
        y = _fp8_bf16.gemm(fp8.as_rows(x), np.ascontiguousarray(w_fp8),
                           np.ascontiguousarray(weight_scale_inv))
        if y is not None:
            return y.reshape(*x.shape[:-1], w_fp8.shape[0])
    xr, row_scale = _prescaled_rows(x)
    y = np.empty((xr.shape[0], w_fp8.shape[0]), dtype=np.float32)
    _gemv_rows(xr, planes_of(xr, block), np.ascontiguousarray(w_fp8),
               np.ascontiguousarray(weight_scale_inv), block, y)
    y *= row_scale[:, None]
    return y.reshape(*x.shape[:-1], w_fp8.shape[0])


@register_kernel(fp8_matmul.fp8_gate_up_op, backend="cpu", arrays=["numpy"],
                 dtypes=("float32",))
def fp8_gate_up_cpu(x: np.ndarray, w_gate: np.ndarray, s_gate: np.ndarray, w_up: np.ndarray,
                    s_up: np.ndarray, block: int = 128) -> np.ndarray:
    """``silu(x W_gate^T) * (x W_up^T)``, each weight read once.

    One parallel launch for the FMA kernels; two and the SiLU product for the BF16 ones.
    """
    if _fp8_bf16.fits(w_gate.shape[1], block):
        h = _fp8_bf16.gate_up(fp8.as_rows(x), np.ascontiguousarray(w_gate),
                              np.ascontiguousarray(s_gate), np.ascontiguousarray(w_up),
                              np.ascontiguousarray(s_up))
        if h is not None:
            return h.reshape(*x.shape[:-1], w_gate.shape[0])
    xr, row_scale = _prescaled_rows(x)
    n = w_gate.shape[0]
    g = np.empty((xr.shape[0], n), dtype=np.float32)
    u = np.empty_like(g)
    h = np.empty_like(g)
    c = np.ascontiguousarray
    _gate_up_rows(xr, planes_of(xr, block), row_scale, c(w_gate), c(s_gate), c(w_up), c(s_up),
                  block, g, u, h)
    return h.reshape(*x.shape[:-1], n)


@register_kernel(fp8_matmul.fp8_gemv_t_op, backend="cpu", arrays=["numpy"], dtypes=("float32",))
def fp8_gemv_t_cpu(grad_y: np.ndarray, w_fp8: np.ndarray, weight_scale_inv: np.ndarray,
                   block: int = 128) -> np.ndarray:
    """``g W`` on the CPU (the gradient of ``fp8_gemv`` w.r.t. x), float32 accumulation.

    On AVX-512 BF16 CPUs, bfloat16 dot products: below :data:`T_BF16_MIN_M` rows of g
    ``_fp8_bf16.gemm_t_rows`` (for float32 g up to :data:`T_ROWS_F32_MAX_M` rows, for
    bfloat16 values, a bfloat16 model's gradients, at any count), from it
    ``_fp8_bf16.gemm_t`` for bfloat16 values; else float32 FMAs.
    """
    rows = fp8.as_rows(grad_y)
    n, k = w_fp8.shape
    m_rows = rows.shape[0]
    if m_rows and _fp8_bf16.fits_t(n, k, block):
        w, sc = np.ascontiguousarray(w_fp8), np.ascontiguousarray(weight_scale_inv)
        if m_rows >= T_BF16_MIN_M:
            got = _fp8_bf16.gemm_t(rows, w, sc, max_parts=1)
        else:
            got = _fp8_bf16.gemm_t_rows(rows, w, sc,
                                        max_parts=3 if m_rows <= T_ROWS_F32_MAX_M else 1)
        if got is not None:
            return got.reshape(*grad_y.shape[:-1], k)
    gr, row_scale = _prescaled_rows(grad_y)
    out = np.empty((gr.shape[0], w_fp8.shape[1]), dtype=np.float32)
    w, sc = np.ascontiguousarray(w_fp8), np.ascontiguousarray(weight_scale_inv)
    if w.shape[1] % block == 0 and block % GROUP == 0 and w.shape[0] > 0:
        _gemv_t_tiles(gr, w, sc, block, plane_order(GROUP), out)
    else:
        _gemv_t_cols(gr, w, sc, block, out)
    out *= row_scale[:, None]
    return out.reshape(*grad_y.shape[:-1], w_fp8.shape[1])
