"""FP8 formats: encode floats to E4M3FN / E5M2 codes and decode them, bit-exact.

Codes are ``uint8`` arrays (NumPy and CuPy have no FP8 dtype; ``ml_dtypes`` float8 arrays are
accepted as input and read as their bytes). torch FP8 tensors travel through the kernels as
``uint8`` views and come back as ``torch.float8_e4m3fn`` / ``torch.float8_e5m2``.

Rounding is to nearest, ties to even, directly from the input's precision (a float64 input is
not rounded to float32 first). Out-of-range values:

* ``saturate=True`` (default, what checkpoint quantizers want): finite values beyond the
  largest FP8 value, and infinities, become ``+-max`` (448 for E4M3FN, 57344 for E5M2).
  Bit-exact with torch's E4M3FN conversion for every float32 input.
* ``saturate=False``: they become NaN (E4M3FN has no infinity) or ``+-inf`` (E5M2), bit-exact
  with ``ml_dtypes`` for every float32 input, NaN payloads included (torch's E5M2 conversion
  matches too, except that it writes NaN as ``0x7F`` where ml_dtypes writes ``0x7E``).

NaN stays NaN with its sign. Decoding gives the exact value; NaN codes decode to the quiet NaN
``0x7FC00000`` with the code's sign.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from .._registry import Op, TorchBridge, array_dtype
from ._common import is_tensor, torch_call

__all__ = [
    "FP8_BLOCK",
    "FP8_FORMATS",
    "Fp8Format",
    "fp8_act_quantize",
    "fp8_act_quantize_reference",
    "fp8_block_dequantize",
    "fp8_block_dequantize_reference",
    "fp8_block_quantize",
    "fp8_block_quantize_reference",
    "fp8_decode",
    "fp8_decode_reference",
    "fp8_encode",
    "fp8_encode_reference",
]


@dataclass(frozen=True)
class Fp8Format:
    """One FP8 format: its bit layout and special codes (sign bit excluded)."""

    name: str
    exp_bits: int
    mant_bits: int
    bias: int
    max_code: int
    nan_code: int
    inf_code: int | None
    torch_dtype: str

    @property
    def max_value(self) -> float:
        """Largest finite value."""
        return float(decode_table(self.name)[self.max_code])

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value, ``2**(1 - bias)``."""
        return 2.0 ** (1 - self.bias)


FP8_FORMATS: dict[str, Fp8Format] = {
    # OCP 8-bit floating point: E4M3 without infinities (S.1111.111 is NaN), E5M2 IEEE-like.
    "e4m3fn": Fp8Format("e4m3fn", 4, 3, 7, 0x7E, 0x7F, None, "float8_e4m3fn"),
    "e5m2": Fp8Format("e5m2", 5, 2, 15, 0x7B, 0x7E, 0x7C, "float8_e5m2"),
}


def get_format(fmt: str) -> Fp8Format:
    """The :class:`Fp8Format` called ``fmt``, or an :class:`InputError` listing the choices."""
    try:
        return FP8_FORMATS[fmt]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown FP8 format {fmt!r}; choose one of {', '.join(FP8_FORMATS)}"
        ) from None


@functools.cache
def decode_table(fmt: str) -> np.ndarray:
    """float64 value of every code 0..255 of ``fmt``, from the format's definition."""
    f = FP8_FORMATS[fmt]
    table = np.empty(256, dtype=np.float64)
    for code in range(256):
        sign = -1.0 if code & 0x80 else 1.0
        e = (code >> f.mant_bits) & ((1 << f.exp_bits) - 1)
        m = code & ((1 << f.mant_bits) - 1)
        mag = code & 0x7F
        if mag == f.inf_code:
            table[code] = sign * np.inf
        elif mag > f.max_code:
            table[code] = np.nan
        elif e == 0:
            table[code] = sign * m * 2.0 ** (1 - f.bias - f.mant_bits)
        else:
            table[code] = sign * (1 + m / (1 << f.mant_bits)) * 2.0 ** (e - f.bias)
    return table


@functools.cache
def decode_table_f32(fmt: str) -> np.ndarray:
    """:func:`decode_table` as float32 (exact), NaN codes as signed quiet NaN ``0x7FC00000``."""
    bits = decode_table(fmt).astype(np.float32).view(np.uint32).copy()
    codes = np.arange(256)
    nan = np.isnan(decode_table(fmt))
    bits[nan] = np.where(codes[nan] & 0x80, 0xFFC00000, 0x7FC00000).astype(np.uint32)
    return bits.view(np.float32)


# ------------------------------------------------------- bit-level encoding, shared by kernels

#: Float input -> (unsigned view, mantissa bits, exponent bias, total bits).
INPUT_LAYOUT = {
    "float32": (np.uint32, 23, 127, 32),
    "float64": (np.uint64, 52, 1023, 64),
}


def encode_constants(dtype: str, f: Fp8Format, saturate: bool) -> tuple:
    """Constants of the bit-level encoder (CPU and CUDA kernels) for ``dtype`` input.

    Normal results add the exponent re-bias and a round-to-nearest-even increment to the
    input's magnitude bits and shift; results in FP8's subnormal range scale by a power of two
    and round with ``rint``.
    """
    uint, mant_in, bias_in, nbits = INPUT_LAYOUT[dtype]
    float_t = np.dtype(dtype).type
    shift = mant_in - f.mant_bits

    def bits_of(v: float) -> int:
        return int(np.array(v, dtype=float_t).view(uint))

    over = f.max_code if saturate else (f.inf_code if f.inf_code is not None else f.nan_code)
    inf_code = f.max_code if saturate else over
    return (
        shift,
        (f.bias - bias_in) << mant_in,  # exponent re-bias, on the magnitude bits
        (1 << (shift - 1)) - 1,  # round half up, plus the odd bit below: ties to even
        bits_of(f.min_normal),
        float_t(2.0 ** (f.bias + f.mant_bits - 1)),  # value -> count of subnormal steps
        bits_of(2 * f.max_value),  # larger inputs all overflow; keeps the sum in range
        bits_of(np.inf),
        nbits - 1,
        f.max_code,
        over,
        inf_code,
        f.nan_code,
    )


# ------------------------------------------------------------------------------- checks


_ENCODE_INPUTS = ("float32", "float64", "bfloat16")
_CODE_DTYPES = ("uint8", "float8_e4m3fn", "float8_e5m2")
_DECODE_OUTPUTS = ("float32", "float64")


def _check_encode(x: Any, fmt: str = "e4m3fn", saturate: bool = True) -> str:
    get_format(fmt)
    dtype = array_dtype(x)
    if dtype not in _ENCODE_INPUTS:
        raise InputError(
            f"fp8_encode: x has dtype {dtype}; encode float32 or float64 arrays (or bfloat16 "
            "tensors): cast with .astype(np.float32) or .float()"
        )
    if not isinstance(saturate, bool):
        raise InputError(f"fp8_encode: saturate must be True or False, got {saturate!r}")
    return dtype


def _check_decode(codes: Any, fmt: str = "e4m3fn", dtype: str = "float32") -> str:
    f = get_format(fmt)
    got = array_dtype(codes)
    if got.startswith("float8") and got != f.torch_dtype:
        raise InputError(
            f"fp8_decode: codes are {got} but fmt={fmt!r} decodes {f.torch_dtype}; pass the "
            "format the codes were written in"
        )
    if got not in _CODE_DTYPES:
        raise InputError(
            f"fp8_decode: codes must be uint8 bytes (or float8 tensors / ml_dtypes arrays), "
            f"got dtype {got}"
        )
    if dtype not in _DECODE_OUTPUTS:
        raise InputError(
            f"fp8_decode: dtype must be one of {', '.join(_DECODE_OUTPUTS)} (or 'bfloat16' for "
            f"torch tensors), got {dtype!r}"
        )
    return "uint8"


# ------------------------------------------------------------------- torch bridge (no grad)


def _encode_fake(x: Any, fmt: str, saturate: bool = True, backend: str | None = None) -> Any:
    import torch

    _check_encode(x, fmt, saturate)
    return x.new_empty(x.shape, dtype=torch.uint8)


def _decode_fake(codes: Any, fmt: str, dtype: str = "float32", backend: str | None = None) -> Any:
    import torch

    _check_decode(codes, fmt, dtype)
    return codes.new_empty(codes.shape, dtype=getattr(torch, dtype))


fp8_encode_op = Op(
    name="fp8_encode",
    family="fp8",
    array_args=("x",),
    params=("fmt", "saturate"),
    check=_check_encode,
    torch=TorchBridge(
        schema="(Tensor x, str fmt, bool saturate=True, str? backend=None) -> Tensor",
        fake=_encode_fake,
        bf16_outputs=False,
    ),
)
fp8_decode_op = Op(
    name="fp8_decode",
    family="fp8",
    array_args=("codes",),
    params=("fmt", "dtype"),
    check=_check_decode,
    torch=TorchBridge(
        schema="(Tensor codes, str fmt, str dtype='float32', str? backend=None) -> Tensor",
        fake=_decode_fake,
    ),
)


# ------------------------------------------------------------------------------ public API


def _as_code_bytes(codes: Any, fmt: str) -> Any:
    """uint8 view of FP8 codes (torch float8 tensors, ml_dtypes arrays), checked against fmt."""
    dtype = array_dtype(codes)
    if dtype.startswith("float8"):
        _check_decode(codes, fmt)
        return codes.view(torch_uint8()) if is_tensor(codes) else codes.view(np.uint8)
    return codes


def torch_uint8() -> Any:
    """``torch.uint8`` (imported only when tensors are in play)."""
    import torch

    return torch.uint8


def fp8_encode(x: Any, fmt: str = "e4m3fn", *, saturate: bool = True,
               backend: str | None = None) -> Any:
    """Round floats to FP8 codes (nearest, ties to even).

    Example:
        >>> import numpy as np, fusekit
        >>> fusekit.ops.fp8_encode(np.array([1.0, -0.5, 1000.0], np.float32))
        array([ 56, 176, 126], dtype=uint8)

    Args:
        x: float32 or float64 array (torch: also bfloat16), any shape.
        fmt: ``"e4m3fn"`` or ``"e5m2"``.
        saturate: Map out-of-range values and infinities to ``+-max`` (default) instead of
            NaN (E4M3FN) / infinity (E5M2). See the module docstring for compatibility.
        backend: As for every op (``None``: context, ``FUSEKIT_BACKEND``, auto).

    Returns:
        Codes of ``x``'s shape: ``uint8`` for NumPy/CuPy, a ``torch.float8_*`` tensor for
        torch input.
    """
    if is_tensor(x):
        import torch

        codes = torch_call("fp8_encode", {"x": x}, backend, fmt, saturate)
        return codes.view(getattr(torch, get_format(fmt).torch_dtype))
    return fp8_encode_op.run((x,), {"fmt": fmt, "saturate": saturate}, backend)


def fp8_decode(codes: Any, fmt: str = "e4m3fn", *, dtype: str = "float32",
               backend: str | None = None) -> Any:
    """Exact values of FP8 codes.

    Example:
        >>> import numpy as np, fusekit
        >>> fusekit.ops.fp8_decode(np.array([56, 176, 126], np.uint8))
        array([  1. ,  -0.5, 448. ], dtype=float32)

    Args:
        codes: ``uint8`` array of codes, a torch ``float8_*`` or ``uint8`` tensor, or an
            ``ml_dtypes`` float8 array.
        fmt: ``"e4m3fn"`` or ``"e5m2"``; must match a float8 dtype if the codes carry one.
        dtype: ``"float32"`` (default), ``"float64"``, or ``"bfloat16"`` for torch (all exact).
        backend: As for every op.

    Returns:
        Values of ``codes``' shape and the requested dtype, the same kind of array.
    """
    if is_tensor(codes):
        import torch

        if dtype == "bfloat16":  # every FP8 value is exact in bfloat16
            return fp8_decode(codes, fmt, backend=backend).to(torch.bfloat16)
        codes = _as_code_bytes(codes, fmt)
        return torch_call("fp8_decode", {"codes": codes}, backend, fmt, dtype)
    return fp8_decode_op.run((_as_code_bytes(codes, fmt),), {"fmt": fmt, "dtype": dtype}, backend)


# ------------------------------------------------------------------------------ references


def fp8_encode_reference(x: np.ndarray, fmt: str = "e4m3fn", saturate: bool = True) -> np.ndarray:
    """Oracle of :func:`fp8_encode`: the nearest code by search over the code table.

    Every finite input is compared, in float64, with its two neighbouring FP8 values; a tie
    goes to the even code. Above the largest value the next step (``max + ulp``) stands for
    overflow, so the overflow threshold follows the same rule.
    """
    f = FP8_FORMATS[fmt]
    table = decode_table(fmt)
    vals = table[: f.max_code + 1]  # the positive finite values, increasing with the code
    ulp_top = vals[f.max_code] - vals[f.max_code - 1]
    vals = np.append(vals, vals[f.max_code] + ulp_top)  # virtual code max_code + 1
    sign = np.signbit(x).astype(np.uint8) << 7
    with np.errstate(invalid="ignore"):  # signalling NaNs quieten; inf - inf below
        a = np.abs(x.astype(np.float64))
        hi = np.clip(np.searchsorted(vals, a, side="left"), 1, len(vals) - 1)
        lo = hi - 1
        d_lo = a - vals[lo]
        d_hi = vals[hi] - a
    take_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = np.where(take_hi, hi, lo)
    code = np.where(a == 0, 0, code)
    overflow = (code > f.max_code) | np.isinf(a)
    over_code = f.max_code if saturate else (f.inf_code if f.inf_code is not None else f.nan_code)
    code = np.where(overflow, over_code, code)
    code = np.where(np.isnan(a), f.nan_code, code)
    return (code.astype(np.uint8) | sign).reshape(x.shape)


def fp8_decode_reference(codes: np.ndarray, fmt: str = "e4m3fn",
                         dtype: str = "float32") -> np.ndarray:
    """Oracle of :func:`fp8_decode`: a lookup in the table built from the format definition."""
    table = decode_table_f32(fmt) if dtype == "float32" else decode_table(fmt)
    return table[codes]


# ---------------------------------------------------------------------- block quantization
#
# DeepSeek-V3 checkpoint layout: a weight [N, K] is stored as float8_e4m3fn with one float32
# scale per 128x128 block, ``weight_scale_inv`` [ceil(N/128), ceil(K/128)], and the real weight
# is ``w_fp8 * weight_scale_inv`` block by block. The quantizer picks ``amax(block) / 448`` so
# that each block uses the whole E4M3 range; an all-zero block gets scale 1.

FP8_BLOCK = 128
_E4M3_MAX = 448.0


def _blocks(n: int, block: int) -> int:
    return -(-n // block)


def _require_block(op: str, block: Any) -> None:
    if type(block) is not int or block < 1:
        raise InputError(f"{op}: block must be a positive int, got {block!r}")


#: Smallest and largest normal float32: a tile scale ``amax / 448`` must lie between them.
_F32_TINY = float(np.finfo(np.float32).tiny)
_F32_MAX = float(np.finfo(np.float32).max)


def _tile_amax(a: Any, rows: int, block: int) -> Any:
    """Largest ``|a|`` of each ``rows x block`` tile of the 2-D ``a``, in ``a``'s module."""
    n, k = a.shape
    nb, kb = _blocks(n, rows), _blocks(k, block)
    if is_tensor(a):
        padded = a.new_zeros((nb * rows, kb * block))
        padded[:n, :k] = a.abs()
        return padded.reshape(nb, rows, kb, block).amax(dim=(1, 3))
    import sys

    xp = sys.modules[type(a).__module__.split(".", 1)[0]]
    padded = xp.zeros((nb * rows, kb * block), dtype=a.dtype)
    padded[:n, :k] = xp.abs(a)
    return padded.reshape(nb, rows, kb, block).max(axis=(1, 3))


def _require_float32_scales(op: str, name: str, a: Any, rows: int, block: int) -> None:
    """Refuse float64 tiles whose scale ``amax / 448`` is no normal float32.

    Beyond float32's range the scale would be infinity (codes 0, dequantized to NaN); below
    its normal range it would be 0 or a denormal (codes 448, dequantized to 0 or to a few
    bits). Only float64 input can get there (float32's largest value / 448 fits).
    """
    if array_dtype(a) != "float64" or 0 in tuple(a.shape):
        return
    if is_tensor(a):
        from torch._subclasses.fake_tensor import is_fake

        if a.is_meta or is_fake(a):
            return  # tracing: no values to look at; the real call checks them
    amax = _tile_amax(a.reshape(-1, a.shape[-1]), rows, block)
    if bool((amax > _E4M3_MAX * _F32_MAX).any()):
        raise InputError(
            f"{op}: {name} has a {rows}x{block} tile whose largest |value| exceeds "
            f"448 * float32 max = {_E4M3_MAX * _F32_MAX:.3g}, so its float32 scale would be "
            "infinite; rescale the input (divide by a power of two) first"
        )
    if bool(((amax > 0) & (amax < _E4M3_MAX * _F32_TINY)).any()):
        raise InputError(
            f"{op}: {name} has a {rows}x{block} tile whose largest |value| is nonzero but "
            f"below 448 * float32's smallest normal = {_E4M3_MAX * _F32_TINY:.3g}, so its "
            "float32 scale would underflow and the tile dequantize to 0; rescale the input "
            "(multiply by a power of two) or set such values to 0 first"
        )


def _check_quantizer_input(op: str, name: str, a: Any, block: Any, rows: int | None = None
                           ) -> str:
    """Block size, float dtype, finite values and representable scales of a quantizer's input.

    ``rows``: rows per scale tile (``block`` for weights, 1 for activations).
    """
    from ._common import require_finite

    _require_block(op, block)
    dtype = array_dtype(a)
    if dtype not in _ENCODE_INPUTS:
        raise InputError(f"{op}: {name} has dtype {dtype}; quantize float32/float64 (or "
                         "bfloat16 tensors)")
    require_finite(op, name, a)
    _require_float32_scales(op, name, a, block if rows is None else rows, block)
    return dtype


def _check_block_quantize(w: Any, block: int = FP8_BLOCK) -> str:
    op = "fp8_block_quantize"
    if w.ndim != 2:
        raise InputError(f"{op}: w must be a 2-D weight [N, K], got shape {tuple(w.shape)}")
    return _check_quantizer_input(op, "w", w, block)


def _check_block_dequantize(w_fp8: Any, weight_scale_inv: Any, dtype: str = "float32",
                            block: int = FP8_BLOCK) -> str:
    op = "fp8_block_dequantize"
    check_weight_and_scales(op, w_fp8, weight_scale_inv, block)
    if dtype not in _DECODE_OUTPUTS:
        raise InputError(f"{op}: dtype must be float32 or float64 (or 'bfloat16' for torch "
                         f"tensors), got {dtype!r}")
    return "uint8"


def check_weight_and_scales(op: str, w_fp8: Any, weight_scale_inv: Any,
                            block: int = FP8_BLOCK) -> None:
    """Raise unless ``w_fp8`` [N, K] uint8/e4m3fn and its block scales fit together."""
    _require_block(op, block)
    got = array_dtype(w_fp8)
    if got not in ("uint8", "float8_e4m3fn"):
        raise InputError(f"{op}: w_fp8 must hold float8_e4m3fn codes (uint8 bytes), got "
                         f"dtype {got}")
    if w_fp8.ndim != 2:
        raise InputError(f"{op}: w_fp8 must be 2-D [N, K], got shape {tuple(w_fp8.shape)}")
    n, k = w_fp8.shape
    want = (_blocks(n, block), _blocks(k, block))
    if tuple(weight_scale_inv.shape) != want:
        raise InputError(
            f"{op}: weight_scale_inv must have shape [ceil(N/{block}), ceil(K/{block})] = "
            f"{list(want)} for w_fp8 of shape {[n, k]}, got {list(weight_scale_inv.shape)}"
        )
    if array_dtype(weight_scale_inv) != "float32":
        raise InputError(f"{op}: weight_scale_inv must be float32, got "
                         f"{array_dtype(weight_scale_inv)}")


def no_backward(op: str) -> tuple[Any, Any]:
    """``(setup_context, backward)`` of an op that has no gradient: backward raises.

    Without a backward, torch would leave ``.grad`` of the input at ``None`` with only a
    warning; this makes the mistake an :class:`InputError` at ``.backward()`` time.
    """

    def setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        pass

    def backward(ctx: Any, *grads: Any) -> None:
        raise InputError(
            f"{op} is not differentiable (its result is rounded or chosen, not a smooth "
            f"function of the input): call it on w.detach() (or under torch.no_grad()), and "
            "write your own straight-through estimator if you need a gradient"
        )

    return setup, backward


def _block_quantize_fake(w: Any, block: int = FP8_BLOCK, backend: str | None = None) -> Any:
    import torch

    _check_block_quantize(w, block)
    n, k = w.shape
    return (w.new_empty((n, k), dtype=torch.uint8),
            w.new_empty((_blocks(n, block), _blocks(k, block)), dtype=torch.float32))


def _block_dequantize_fake(w_fp8: Any, weight_scale_inv: Any, dtype: str = "float32",
                           block: int = FP8_BLOCK, backend: str | None = None) -> Any:
    import torch

    _check_block_dequantize(w_fp8, weight_scale_inv, dtype, block)
    return w_fp8.new_empty(w_fp8.shape, dtype=getattr(torch, dtype))


_BLOCK_QUANTIZE_NO_GRAD = no_backward("fp8_block_quantize")
_ACT_QUANTIZE_NO_GRAD = no_backward("fp8_act_quantize")

fp8_block_quantize_op = Op(
    name="fp8_block_quantize",
    family="fp8",
    array_args=("w",),
    params=("block",),
    check=_check_block_quantize,
    torch=TorchBridge(
        schema="(Tensor w, int block=128, str? backend=None) -> (Tensor, Tensor)",
        fake=_block_quantize_fake,
        bf16_outputs=False,
        setup_context=_BLOCK_QUANTIZE_NO_GRAD[0],
        backward=_BLOCK_QUANTIZE_NO_GRAD[1],
    ),
)
fp8_block_dequantize_op = Op(
    name="fp8_block_dequantize",
    family="fp8",
    array_args=("w_fp8", "weight_scale_inv"),
    params=("dtype", "block"),
    check=_check_block_dequantize,
    torch=TorchBridge(
        schema="(Tensor w_fp8, Tensor weight_scale_inv, str dtype='float32', int block=128, "
        "str? backend=None) -> Tensor",
        fake=_block_dequantize_fake,
    ),
)


def fp8_block_quantize(w: Any, *, block: int = FP8_BLOCK,
                       backend: str | None = None) -> tuple[Any, Any]:
    """Quantize a weight to FP8 E4M3FN with one scale per ``block x block`` tile.

    The DeepSeek-V3 checkpoint layout: ``w ~= w_fp8 * weight_scale_inv`` tile by tile, with
    ``weight_scale_inv = amax(tile) / 448`` (1 for an all-zero tile). Edge tiles of a shape
    that is not a multiple of ``block`` are smaller and scaled on their own.

    Example:
        >>> import numpy as np, fusekit
        >>> w = np.random.default_rng(0).standard_normal((300, 200)).astype(np.float32)
        >>> w_fp8, scale = fusekit.ops.fp8_block_quantize(w)
        >>> w_fp8.dtype, w_fp8.shape, scale.shape
        (dtype('uint8'), (300, 200), (3, 2))

    Args:
        w: Weight ``[N, K]``, float32 or float64 (torch: also bfloat16); NaN and infinity are
            rejected.
        block: Tile side (128 in DeepSeek-V3 checkpoints).
        backend: As for every op.

    Returns:
        ``(w_fp8, weight_scale_inv)``: codes ``[N, K]`` (``uint8``; a ``torch.float8_e4m3fn``
        tensor for torch input) and float32 scales ``[ceil(N/block), ceil(K/block)]``.
    """
    if is_tensor(w):
        import torch

        _require_block("fp8_block_quantize", block)  # before torch's schema sees it
        codes, scale = torch_call("fp8_block_quantize", {"w": w}, backend, block)
        return codes.view(torch.float8_e4m3fn), scale
    return fp8_block_quantize_op.run((w,), {"block": block}, backend)


def fp8_block_dequantize(w_fp8: Any, weight_scale_inv: Any, *, dtype: str = "float32",
                         block: int = FP8_BLOCK, backend: str | None = None) -> Any:
    """The weight ``w_fp8 * weight_scale_inv`` (tile by tile) as floats.

    Args:
        w_fp8: E4M3FN codes ``[N, K]``: uint8 bytes, a ``torch.float8_e4m3fn`` tensor or an
            ``ml_dtypes`` array.
        weight_scale_inv: float32 ``[ceil(N/block), ceil(K/block)]``.
        dtype: ``"float32"`` (default), ``"float64"``, or ``"bfloat16"`` for torch.
        block: Tile side.
        backend: As for every op.

    Returns:
        The weight ``[N, K]`` in ``dtype``.
    """
    if is_tensor(w_fp8):
        import torch

        _require_block("fp8_block_dequantize", block)  # before torch's schema sees it
        if dtype == "bfloat16":  # scale products are rounded once, from float32
            return fp8_block_dequantize(w_fp8, weight_scale_inv, block=block,
                                        backend=backend).to(torch.bfloat16)
        codes = _as_code_bytes(w_fp8, "e4m3fn")
        return torch_call("fp8_block_dequantize", {"w_fp8": codes,
                          "weight_scale_inv": weight_scale_inv}, backend, dtype, block)
    return fp8_block_dequantize_op.run((_as_code_bytes(w_fp8, "e4m3fn"), weight_scale_inv),
                                       {"dtype": dtype, "block": block}, backend)


def tile_scales(w64: np.ndarray, rows: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Scales ``amax / 448`` (1 for an all-zero tile) of ``rows x block`` tiles of ``w64``.

    Returns float32 ``[ceil(N/rows), ceil(K/block)]`` and the same as float64 per element.
    """
    n, k = w64.shape
    nb, kb = _blocks(n, rows), _blocks(k, block)
    padded = np.zeros((nb * rows, kb * block))
    padded[:n, :k] = np.abs(w64)
    amax = padded.reshape(nb, rows, kb, block).max(axis=(1, 3))
    scale = np.where(amax > 0, amax / _E4M3_MAX, 1.0).astype(np.float32)
    return scale, expand_tiles(scale.astype(np.float64), (n, k), block, rows)


def expand_tiles(scale: np.ndarray, shape: tuple[int, int], block: int,
                 rows: int | None = None) -> np.ndarray:
    """Per-element copy of per-tile scales ``[nb, kb] -> [N, K]`` (``rows x block`` tiles)."""
    rows = block if rows is None else rows
    return np.repeat(np.repeat(scale, rows, axis=0), block, axis=1)[: shape[0], : shape[1]]


def fp8_block_quantize_reference(w: np.ndarray, block: int = FP8_BLOCK
                                 ) -> tuple[np.ndarray, np.ndarray]:
    """Oracle of :func:`fp8_block_quantize`: float64 division, then the encode oracle."""
    w64 = w.astype(np.float64)
    scale, full = tile_scales(w64, block, block)
    return fp8_encode_reference(w64 / full, "e4m3fn", saturate=True), scale


def fp8_block_dequantize_reference(w_fp8: np.ndarray, weight_scale_inv: np.ndarray,
                                   dtype: str = "float32", block: int = FP8_BLOCK) -> np.ndarray:
    """Oracle of :func:`fp8_block_dequantize`: exact product in float64, rounded once."""
    values = decode_table("e4m3fn")[w_fp8]
    full = values * expand_tiles(weight_scale_inv.astype(np.float64), w_fp8.shape, block)
    return full.astype(np.dtype(dtype))


# ------------------------------------------------- activation quantization (per token, 1x128)


def _check_act_quantize(x: Any, block: int = FP8_BLOCK) -> str:
    op = "fp8_act_quantize"
    if x.ndim < 1:
        raise InputError(f"{op}: x must have at least one dimension (..., K)")
    return _check_quantizer_input(op, "x", x, block, rows=1)


def _act_quantize_fake(x: Any, block: int = FP8_BLOCK, backend: str | None = None) -> Any:
    import torch

    _check_act_quantize(x, block)
    return (x.new_empty(x.shape, dtype=torch.uint8),
            x.new_empty((*x.shape[:-1], _blocks(x.shape[-1], block)), dtype=torch.float32))


fp8_act_quantize_op = Op(
    name="fp8_act_quantize",
    family="fp8",
    array_args=("x",),
    params=("block",),
    check=_check_act_quantize,
    torch=TorchBridge(
        schema="(Tensor x, int block=128, str? backend=None) -> (Tensor, Tensor)",
        fake=_act_quantize_fake,
        bf16_outputs=False,
        setup_context=_ACT_QUANTIZE_NO_GRAD[0],
        backward=_ACT_QUANTIZE_NO_GRAD[1],
    ),
)


def fp8_act_quantize(x: Any, *, block: int = FP8_BLOCK,
                     backend: str | None = None) -> tuple[Any, Any]:
    """Quantize activations to E4M3FN with one scale per token and ``block`` channels.

    DeepSeek-V3's ``act_quant``: ``scale = amax(group) / 448`` over each run of ``block``
    consecutive channels of each row (1 for an all-zero group), ``x ~= x_fp8 * scale``.

    Args:
        x: Activations ``(..., K)``, float32/float64 (torch: also bfloat16), finite.
        block: Channels per scale.
        backend: As for every op.

    Returns:
        ``(x_fp8, scale)``: codes of ``x``'s shape and float32 scales ``(..., ceil(K/block))``.
    """
    if is_tensor(x):
        import torch

        _require_block("fp8_act_quantize", block)  # before torch's schema sees it
        codes, scale = torch_call("fp8_act_quantize", {"x": x}, backend, block)
        return codes.view(torch.float8_e4m3fn), scale
    return fp8_act_quantize_op.run((x,), {"block": block}, backend)


def as_rows(x: Any) -> Any:
    """``x`` ``(..., K)`` as the 2-D ``(prod(...), K)`` (``reshape(-1, K)`` fails for K = 0)."""
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1])


def fp8_act_quantize_reference(x: np.ndarray, block: int = FP8_BLOCK
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Oracle of :func:`fp8_act_quantize`: the block quantizer on rows of 1 x ``block`` tiles."""
    rows = as_rows(x).astype(np.float64)
    scale, full = tile_scales(rows, 1, block)
    codes = fp8_encode_reference(rows / full, "e4m3fn", saturate=True)
    return codes.reshape(x.shape), scale.reshape(*x.shape[:-1], scale.shape[1])
