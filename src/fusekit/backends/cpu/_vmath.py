"""Vectorisable ``exp`` for Numba CPU kernels, in float32 and float64.

Numba from pip has no vector math library: ``math.exp`` stays a scalar libm call (about 6 ns
an element), which keeps LLVM from vectorising any loop that calls it. The functions here are
plain arithmetic (Cody-Waite range reduction, a polynomial, the power of two built from its
bits), so a loop over neurons that calls them vectorises.

``x = n ln2 + r`` with ``n = round(x / ln2)`` (by adding 1.5 * 2^p, no float-to-int conversion)
and ``|r| <= ln2 / 2``; ``exp(r)`` by a polynomial (float32: a degree-5 near-minimax fit,
float64: a degree-10 near-minimax fit, truncation about one unit in the last place);
``2**n`` from its exponent bits. Arguments are clamped to the normal range (float32:
``[-87.3, 88.3]``, float64: ``[-708, 709]``), so the result is never infinite or subnormal.

Measured maximum relative error against float64/``np.exp`` over ``[-87, 88]`` (float32) and
``[-700, 700]`` (float64), see ``tests/test_ion_vmath.py``: ``EXP32_MAX_REL_ERR`` and
``EXP64_MAX_REL_ERR``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._numba import njit

#: Documented bounds on the relative error of :func:`exp_f32` / :func:`exp_f64` (the tests
#: check them; measured values are about 2.0e-7 and 4e-16).
EXP32_MAX_REL_ERR = 3.0e-7
EXP64_MAX_REL_ERR = 1.0e-15

_F32_OPTIONS = {"fastmath": {"contract", "nsz"}, "error_model": "numpy"}


@intrinsic
def _float_bits_as_int(typingctx, x):  # noqa: ARG001
    """Reinterpret a float32 as int32 or a float64 as int64 (a bit cast, no conversion)."""
    if x == types.float32:
        sig, llty = types.int32(types.float32), ir.IntType(32)
    elif x == types.float64:
        sig, llty = types.int64(types.float64), ir.IntType(64)
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llty)

    return sig, codegen


@intrinsic
def _int_bits_as_float(typingctx, bits):  # noqa: ARG001 - Numba's intrinsic signature
    """Reinterpret an int32 as float32 or an int64 as float64 (a bit cast, no conversion)."""
    if bits == types.int32:
        sig = types.float32(types.int32)
        llty = ir.FloatType()
    elif bits == types.int64:
        sig = types.float64(types.int64)
        llty = ir.DoubleType()
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llty)

    return sig, codegen


def array_address(context: Any, builder: ir.IRBuilder, signature: Any, args: Any,
                  j: int) -> ir.Value:
    """In an intrinsic's codegen: the data address of array argument ``j``, as an i64."""
    ary = context.make_array(signature.args[j])(context, builder, args[j])
    return builder.ptrtoint(ary.data, ir.IntType(64))


def emit_prefetch(builder: ir.IRBuilder, addr: ir.Value, locality: int) -> None:
    """Emit ``llvm.prefetch`` of the i64 address ``addr``: a read into the data cache.

    ``locality`` 3 is ``prefetcht0`` (into L1), 2 ``prefetcht1`` (L2). A hint: it never
    faults.
    """
    i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    fn = builder.module.declare_intrinsic(
        "llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
    builder.call(fn, [builder.inttoptr(addr, i8p), ir.Constant(i32, 0),
                      ir.Constant(i32, locality), ir.Constant(i32, 1)])


def splat(builder: ir.IRBuilder, value: ir.Value, ty: ir.VectorType) -> ir.Value:
    """``value`` in every lane of a vector of type ``ty``."""
    i32 = ir.IntType(32)
    one = builder.insert_element(ir.Constant(ty, None), value, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, ir.Constant(ty, None),
                                  ir.Constant(ir.VectorType(i32, ty.count), [0] * ty.count))


def _make_prefetch(locality: int, instruction: str):  # noqa: ANN202 - a Numba intrinsic

    @intrinsic
    def prefetch(typingctx, arr, offset):  # noqa: ARG001 - Numba's intrinsic signature
        if not (isinstance(arr, types.Array) and arr.ndim == 1
                and isinstance(offset, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            off = context.cast(builder, args[1], signature.args[1], types.intp)
            emit_prefetch(builder, builder.add(array_address(context, builder, signature,
                                                             args, 0), off), locality)
            return context.get_dummy_value()

        return types.void(arr, offset), codegen

    prefetch.__doc__ = f"""Hint the CPU to fetch the cache line at byte ``offset`` of 1-D ``arr``
    (``{instruction}``).

    A hint, not a load: it never faults and reads nothing into the program, so callers may
    pass offsets past the end; the fp8 kernels still keep them inside the array.
    """
    return prefetch


def carried_loop(builder: ir.IRBuilder, count: ir.Value, inits: list, body, name: str) -> list:  # noqa: ANN001
    """Emit ``for i in range(count)`` (i64) carrying ``inits`` through ``body``; its values after.

    ``body(i, values)`` emits the loop body at the builder's position (it may add blocks of
    its own, nested loops too) and returns the new values, one per value carried. On return
    the builder sits after the loop. (The loop scaffolding of the FP8 intrinsics.)
    """
    i64 = ir.IntType(64)
    entry = builder.block
    head = builder.append_basic_block(f"{name}.head")
    loop = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    values = []
    for v in inits:
        ph = builder.phi(v.type)
        ph.add_incoming(v, entry)
        values.append(ph)
    builder.cbranch(builder.icmp_signed("<", i, count), loop, done)
    builder.position_at_end(loop)
    new = body(i, values)
    i_next = builder.add(i, ir.Constant(i64, 1))
    end = builder.block
    builder.branch(head)
    i.add_incoming(i_next, end)
    for ph, v in zip(values, new, strict=True):
        ph.add_incoming(v, end)
    builder.position_at_end(done)
    return values


#: Prefetch into L1 (``prefetcht0``).
prefetch = _make_prefetch(3, "prefetcht0")
#: Prefetch into L2 (``prefetcht1``): for streams read once, where L1 prefetches of many
#: lines at once stalled the loads that needed their miss buffers (the FP8 M=1 kernels on
#: Zen 4, docs/benchmarks.md).
prefetch_l2 = _make_prefetch(2, "prefetcht1")


@njit(inline="always")
def silu_mul(g, u):
    """``silu(g) * u`` (the MoE expert's gate times up), in ``g``'s float type.

    The sigmoid comes from ``exp(-|g|) <= 1``: ``exp(-g)`` overflows for g < -88 in float32,
    and fastmath (no infinities) then turned ``g / (1 + inf)`` into NaN.
    """
    e = np.exp(-abs(g))
    sig = (np.float32(1) if g >= 0 else e) / (np.float32(1) + e)
    return g * sig * u


@njit(**_F32_OPTIONS)
def _horner(coeffs, r):
    """``sum(coeffs[k] * r**k)`` by Horner's rule (a tuple: unrolled and inlined by LLVM)."""
    p = coeffs[-1]
    for k in range(len(coeffs) - 2, -1, -1):
        p = p * r + coeffs[k]
    return p


_LOG2E32 = np.float32(1.4426950408889634)
_SHIFT32 = np.float32(12582912.0)  # 1.5 * 2**23
_LN2HI32 = np.float32(0.693359375)  # exact in 9 bits: n * _LN2HI32 is exact for |n| < 2**15
_LN2LO32 = np.float32(-2.12194440e-4)
_MIN32 = np.float32(-87.3)
_MAX32 = np.float32(88.3)  # round(88.3 / ln2) = 127: the largest finite power of two
#: exp(r) on |r| <= ln2/2 to relative error 7.5e-8 (exact arithmetic): degree 5, fitted to
#: the relative error by Lawson's iteration (near-minimax). The degree-7 Taylor polynomial it
#: replaces needed two more FMAs; the ion kernel ran 1.0-1.3x faster per round with it.
_P32 = tuple(np.float32(c) for c in (
    1.0000000716546553, 0.9999996919902635, 0.49998894851398773, 0.16667574733010138,
    0.04191538197649061, 0.008297654793364685))


@njit(**_F32_OPTIONS)
def exp_f32(x):
    """``exp(x)`` for float32 ``x``, vectorisable; relative error below ``EXP32_MAX_REL_ERR``."""
    x = min(max(x, _MIN32), _MAX32)
    # Round x / ln2 to the nearest integer by adding 1.5 * 2**23: the sum's low mantissa bits
    # hold n, read without a float-to-int conversion.
    kd = x * _LOG2E32 + _SHIFT32
    nf = kd - _SHIFT32
    r = (x - nf * _LN2HI32) - nf * _LN2LO32
    p = _horner(_P32, r)
    bits = np.int32((_float_bits_as_int(kd) + np.int32(127)) << np.int32(23))
    return p * _int_bits_as_float(bits)


_LOG2E64 = 1.4426950408889634
_SHIFT64 = 6755399441055744.0  # 1.5 * 2**52
_LN2HI64 = 6.93147180369123816490e-01  # fdlibm's split of ln 2: n * hi is exact
_LN2LO64 = 1.90821492927058770002e-10
#: exp(r) on |r| <= ln2/2 to relative error 2.9e-16 (exact arithmetic): degree 10, the
#: interpolant at the 11 Chebyshev nodes of the interval (near-minimax), solved in 50-digit
#: arithmetic and rounded to float64. The degree-12 Taylor polynomial it replaces needed two
#: more FMAs per exp; the float64 HH forward ran 6.5% faster with it (session 10).
_P64 = (1.0, 1.0000000000000067, 0.5000000000000006, 0.16666666666554406, 0.04166666666657314,
        0.008333333385667782, 0.0013888888932488599, 0.00019841170270440067,
        2.4801504346997686e-05, 2.764018079620985e-06, 2.7626357241447223e-07)


@njit(**_F32_OPTIONS)
def exp_f64(x):
    """``exp(x)`` for float64 ``x``, vectorisable; relative error below ``EXP64_MAX_REL_ERR``."""
    x = min(max(x, -708.0), 709.0)
    # Round x / ln2 to the nearest integer by adding 1.5 * 2**52: the sum's low mantissa bits
    # hold n, read without a float-to-int64 conversion (AVX2 has no vector one).
    kd = x * _LOG2E64 + _SHIFT64
    nf = kd - _SHIFT64
    r = (x - nf * _LN2HI64) - nf * _LN2LO64
    p = _horner(_P64, r)
    bits = (_float_bits_as_int(kd) + np.int64(1023)) << np.int64(52)
    return p * _int_bits_as_float(bits)
