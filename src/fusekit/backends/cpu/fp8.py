"""CPU kernels of the fp8 family: bit-level rounding to FP8 and table decoding, in Numba.

Encoding works on the input's bits, like the fast float-to-half conversions: normal results
add the exponent re-bias and a round-to-nearest-even increment to the magnitude bits and
shift; results in FP8's subnormal range scale by a power of two (exact) and round with
``rint``. No float32 denormal arithmetic is involved, so subnormal-heavy data runs at the same
speed.
"""

from __future__ import annotations

import numpy as np

from ..._registry import register_kernel
from ...ops import fp8
from ._numba import njit


@njit
def _encode(x, bits, out, shift, rebias, round_bias, min_normal_bits, subnormal_scale,
            clamp_bits, inf_bits, sign_shift, max_code, over_code, inf_code, nan_code):
    abs_mask = (np.int64(1) << sign_shift) - 1 if sign_shift < 63 else np.int64(-1) ^ (
        np.int64(1) << 63)
    for i in range(x.size):
        u = np.int64(bits[i])
        a = u & abs_mask
        if a > inf_bits:
            code = nan_code
        elif a == inf_bits:
            code = inf_code
        elif a < min_normal_bits:
            code = np.int64(np.rint(abs(x[i]) * subnormal_scale))
        else:
            a = min(a, clamp_bits)
            code = (a + rebias + round_bias + ((a >> shift) & 1)) >> shift
            if code > max_code:
                code = over_code
        sign = (u >> sign_shift) & 1
        out[i] = np.uint8(code | (sign << 7))


@njit
def _decode(codes, table, out):
    for i in range(codes.size):
        out[i] = table[codes[i]]


@register_kernel(fp8.fp8_encode_op, backend="cpu", arrays=["numpy"], dtypes=fp8.INPUT_LAYOUT)
def fp8_encode_cpu(x: np.ndarray, fmt: str = "e4m3fn", saturate: bool = True) -> np.ndarray:
    """Round float32/float64 to FP8 codes on the CPU."""
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.size, dtype=np.uint8)
    consts = fp8.encode_constants(x.dtype.name, fp8.FP8_FORMATS[fmt], saturate)
    _encode(flat, flat.view(fp8.INPUT_LAYOUT[x.dtype.name][0]), out, *consts)
    return out.reshape(x.shape)


@register_kernel(fp8.fp8_decode_op, backend="cpu", arrays=["numpy"], dtypes=("uint8",))
def fp8_decode_cpu(codes: np.ndarray, fmt: str = "e4m3fn", dtype: str = "float32") -> np.ndarray:
    """Decode FP8 codes on the CPU by table lookup."""
    table = fp8.decode_table_f32(fmt) if dtype == "float32" else fp8.decode_table(fmt)
    flat = np.ascontiguousarray(codes).reshape(-1)
    out = np.empty(flat.size, dtype=table.dtype)
    _decode(flat, table, out)
    return out.reshape(codes.shape)


@njit
def _dequantize(w, table, scale, block, out):
    n, k = w.shape
    for i in range(n):
        srow = scale[i // block]
        for j in range(k):
            out[i, j] = table[w[i, j]] * srow[j // block]


@register_kernel(fp8.fp8_block_quantize_op, backend="cpu", arrays=["numpy"],
                 dtypes=fp8.INPUT_LAYOUT)
def fp8_block_quantize_cpu(w: np.ndarray, block: int = fp8.FP8_BLOCK
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Block-quantize a weight on the CPU (scales as the reference, Numba rounding)."""
    w64 = w.astype(np.float64)
    scale, full = fp8.tile_scales(w64, block, block)
    return fp8_encode_cpu(w64 / full, "e4m3fn", True), scale


@register_kernel(fp8.fp8_block_dequantize_op, backend="cpu", arrays=["numpy"],
                 dtypes=("uint8",))
def fp8_block_dequantize_cpu(w_fp8: np.ndarray, weight_scale_inv: np.ndarray,
                             dtype: str = "float32", block: int = fp8.FP8_BLOCK) -> np.ndarray:
    """Dequantize a block-scaled weight on the CPU; each product is rounded once."""
    table = fp8.decode_table("e4m3fn").astype(dtype)
    out = np.empty(w_fp8.shape, dtype=dtype)
    _dequantize(np.ascontiguousarray(w_fp8), table, weight_scale_inv.astype(dtype), block, out)
    return out


@register_kernel(fp8.fp8_act_quantize_op, backend="cpu", arrays=["numpy"], dtypes=fp8.INPUT_LAYOUT)
def fp8_act_quantize_cpu(x: np.ndarray, block: int = fp8.FP8_BLOCK
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Per-token, per-``block``-channel activation quantization on the CPU."""
    rows = fp8.as_rows(x).astype(np.float64)
    scale, full = fp8.tile_scales(rows, 1, block)
    codes = fp8_encode_cpu(rows / full, "e4m3fn", True)
    return codes.reshape(x.shape), scale.reshape(*x.shape[:-1], scale.shape[1])
