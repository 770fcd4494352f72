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
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from .._registry import Op, TorchBridge, array_dtype
from ._common import is_tensor, torch_call

__all__ = [
    "FP8_FORMATS",
    "Fp8Format",
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
