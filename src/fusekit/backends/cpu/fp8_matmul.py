"""CPU kernels of the fp8_matmul family: block-scaled FP8 products in Numba, W read once.

Decoding E4M3FN needs no table: the code's magnitude bits shifted into a float32's exponent
and mantissa fields give the value times 2^-120, and one exact multiply by 2^120 restores it.
Both steps are plain vector integer and float operations, so LLVM vectorises the whole loop.
(An E4M3 subnormal becomes a float32 denormal in between; see docs/benchmarks.md for what that
costs on the machine at hand.)

Rows of W are split across threads in one parallel launch. For each row and each 128-wide
tile of K, every row of x is multiplied with the tile and the sum scaled once by the tile's
``weight_scale_inv``: W's bytes are read once per call, whatever M is.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ..._registry import register_kernel
from ...ops import fp8_matmul
from ._numba import njit
from ._vmath import prefetch


@njit(inline="always")
def _e4m3_scaled(c):
    # E4M3FN code -> its value times 2^-120, exactly, as float32: the code as a signed byte,
    # shifted so exponent+mantissa land in bits 26..20, masked to those and the sign bit
    # (0x87F00000).
    return np.int32((np.int32(np.int8(c)) << 20) & np.int32(-2014314496)).view(np.float32)


@njit(inline="always", fastmath=True)
def _dot_fp8(x, w):
    d = np.float32(0)
    for j in range(x.size):
        d += x[j] * _e4m3_scaled(w[j])
    return d


#: Weights of each row between two bursts of prefetches in the M=1 kernel (constant trip
#: count, so the inner loop vectorises fully; 128-512 measured alike, see docs/benchmarks.md).
_CHUNK = 256
_LINE = 64


@njit(inline="always", fastmath=True)
def _dot_fp8_quad(x, w0, w1, w2, w3, y, i, flat, ahead):
    # Four rows of W against one x: each load of x serves four products, and four
    # independent FMA chains keep the vector units busy. While it reads 4 * _CHUNK bytes of
    # these rows it prefetches the next 4 * _CHUNK bytes of W after byte ``ahead`` of ``flat``
    # (the start of the next four rows), so those are in cache when their turn comes: the
    # hardware prefetcher alone restarts on every row and left short rows (K = 2048) at
    # 60% of the streaming bandwidth.
    d0 = d1 = d2 = d3 = np.float32(0)
    k = x.size
    n_full = k // _CHUNK
    limit = flat.size
    for c in range(n_full):
        p = ahead + 4 * _CHUNK * c
        for q in range(4 * _CHUNK // _LINE):
            if p + q * _LINE < limit:
                prefetch(flat, p + q * _LINE)
        o = c * _CHUNK
        e0 = e1 = e2 = e3 = np.float32(0)
        for j in range(_CHUNK):
            xj = x[o + j]
            e0 += xj * _e4m3_scaled(w0[o + j])
            e1 += xj * _e4m3_scaled(w1[o + j])
            e2 += xj * _e4m3_scaled(w2[o + j])
            e3 += xj * _e4m3_scaled(w3[o + j])
        d0 += e0
        d1 += e1
        d2 += e2
        d3 += e3
    for j in range(n_full * _CHUNK, k):
        xj = x[j]
        d0 += xj * _e4m3_scaled(w0[j])
        d1 += xj * _e4m3_scaled(w1[j])
        d2 += xj * _e4m3_scaled(w2[j])
        d3 += xj * _e4m3_scaled(w3[j])
    y[0, i] = d0
    y[0, i + 1] = d1
    y[0, i + 2] = d2
    y[0, i + 3] = d3


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
def _row_block(x, w, scale, block, rb, y, xs, row, d4):
    # y[:, rows of block rb] = x W[rows]^T, x pre-scaled by 2^120 / 2^e(row) so that
    # x * (w 2^-120) stays well inside float32. All rows of one 128-row block share their tile
    # scales: fold them into a copy of x once per block, and each row of W becomes one long
    # dot product with no per-tile sums.
    m_rows, k = x.shape
    n_tiles = (k + block - 1) // block
    for m in range(m_rows):
        for t in range(n_tiles):
            s = scale[rb, t]
            for j in range(t * block, min(k, (t + 1) * block)):
                xs[m, j] = x[m, j] * s
    i_end = min(w.shape[0], (rb + 1) * block)
    if m_rows == 1:
        i = rb * block
        flat = w.reshape(-1)
        while i + 4 <= i_end:
            _dot_fp8_quad(xs[0], w[i], w[i + 1], w[i + 2], w[i + 3], y, i, flat, (i + 4) * k)
            i += 4
        while i < i_end:
            y[0, i] = _dot_fp8(xs[0], w[i])
            i += 1
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
def _gemv_rows(x, w, scale, block, y):
    m_rows, k = x.shape
    for rb in prange((w.shape[0] + block - 1) // block):
        xs = np.empty((m_rows, k), dtype=np.float32)
        row = np.empty(k, dtype=np.float32)
        d4 = np.empty(4, dtype=np.float32)
        _row_block(x, w, scale, block, rb, y, xs, row, d4)


@njit(parallel=True, fastmath=True)
def _gate_up_rows(x, row_scale, w_gate, s_gate, w_up, s_up, block, g, u, h):
    # One launch for both projections of an expert and the SiLU(gate) * up epilogue.
    m_rows, k = x.shape
    for rb in prange((w_gate.shape[0] + block - 1) // block):
        xs = np.empty((m_rows, k), dtype=np.float32)
        row = np.empty(k, dtype=np.float32)
        d4 = np.empty(4, dtype=np.float32)
        _row_block(x, w_gate, s_gate, block, rb, g, xs, row, d4)
        _row_block(x, w_up, s_up, block, rb, u, xs, row, d4)
        for m in range(m_rows):
            rs = row_scale[m]
            for i in range(rb * block, min(w_gate.shape[0], (rb + 1) * block)):
                gi = g[m, i] * rs
                h[m, i] = gi / (np.float32(1) + np.exp(-gi)) * (u[m, i] * rs)


@njit(parallel=True, fastmath=True)
def _gemv_t_cols(g, w, scale, block, out):
    # out[m, :] = sum_n g[m, n] * W[n, :]: threads own column ranges of K; W read once.
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


def _prescaled_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``a`` times ``2^(120 - e)``, ``e`` the binary exponent of the row's max |a|.

    The kernels multiply by FP8 values carried as ``value * 2^-120``; this exact power-of-two
    scaling keeps every product in float32's normal range. Returns the rows and ``2^e``. (A
    Numba loop: the NumPy version took 30-65 us per 7168-wide row, 4-7% of an M=1 GEMV.)
    """
    rows = np.ascontiguousarray(a.reshape(-1, a.shape[-1]))
    out = np.empty(rows.shape, dtype=np.float32)
    scales = np.empty(rows.shape[0], dtype=np.float32)
    _prescale_into(rows, out, scales)
    return out, scales


@register_kernel(fp8_matmul.fp8_gemv_op, backend="cpu", arrays=["numpy"], dtypes=("float32",))
def fp8_gemv_cpu(x: np.ndarray, w_fp8: np.ndarray, weight_scale_inv: np.ndarray,
                 block: int = 128) -> np.ndarray:
    """``x W^T`` on the CPU with W in block-scaled FP8, float32 accumulation."""
    xr, row_scale = _prescaled_rows(x)
    y = np.empty((xr.shape[0], w_fp8.shape[0]), dtype=np.float32)
    _gemv_rows(xr, np.ascontiguousarray(w_fp8), np.ascontiguousarray(weight_scale_inv), block, y)
    y *= row_scale[:, None]
    return y.reshape(*x.shape[:-1], w_fp8.shape[0])


@register_kernel(fp8_matmul.fp8_gate_up_op, backend="cpu", arrays=["numpy"],
                 dtypes=("float32",))
def fp8_gate_up_cpu(x: np.ndarray, w_gate: np.ndarray, s_gate: np.ndarray, w_up: np.ndarray,
                    s_up: np.ndarray, block: int = 128) -> np.ndarray:
    """``silu(x W_gate^T) * (x W_up^T)`` in one parallel launch, each weight read once."""
    xr, row_scale = _prescaled_rows(x)
    n = w_gate.shape[0]
    g = np.empty((xr.shape[0], n), dtype=np.float32)
    u = np.empty_like(g)
    h = np.empty_like(g)
    c = np.ascontiguousarray
    _gate_up_rows(xr, row_scale, c(w_gate), c(s_gate), c(w_up), c(s_up), block, g, u, h)
    return h.reshape(*x.shape[:-1], n)


@register_kernel(fp8_matmul.fp8_gemv_t_op, backend="cpu", arrays=["numpy"], dtypes=("float32",))
def fp8_gemv_t_cpu(grad_y: np.ndarray, w_fp8: np.ndarray, weight_scale_inv: np.ndarray,
                   block: int = 128) -> np.ndarray:
    """``g W`` on the CPU (the gradient of ``fp8_gemv`` w.r.t. x), float32 accumulation."""
    gr, row_scale = _prescaled_rows(grad_y)
    out = np.empty((gr.shape[0], w_fp8.shape[1]), dtype=np.float32)
    _gemv_t_cols(gr, np.ascontiguousarray(w_fp8), np.ascontiguousarray(weight_scale_inv), block,
                 out)
    out *= row_scale[:, None]
    return out.reshape(*grad_y.shape[:-1], w_fp8.shape[1])
