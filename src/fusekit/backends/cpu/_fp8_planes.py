"""E4M3FN dot products of four weight rows against x in "planes", 32 weights at a time.

The portable decode (``fp8_matmul._e4m3_scaled``) widens each code to 32 bits before it
shifts and masks it: per 8 weights a byte-extending load, a shift, a mask and an FMA. On Zen 1
(AVX2, each 256-bit instruction two 128-bit halves) that loop decodes about 5 GB/s per core,
under the memory's stream, and the shifts and extends share the same pipes.

Here 32 codes are loaded as they lie and decoded in 16-bit lanes by ``vpmaddubsw`` (an
unsigned byte times a signed byte, adjacent pairs summed into 16 bits), which sign-extends
and shifts in one multiply: with the byte pairs ``(16, 0)`` every 16-bit lane ``i`` becomes
``16 * int8(code[2i])``, with ``(0, 16)`` ``16 * int8(code[2i + 1])``. Masked with
``0x87F0`` such a lane is the code's value times ``2^-120`` as a bfloat16, so the high lane
of each 32-bit word is a float32 after one AND, and the low lane after a 16-bit shift and an
AND. Per 32 weights: 2 multiplies, 2 shifts, 4 ANDs and 4 FMAs (the portable loop: 4 extends,
4 shifts, 4 ANDs, 4 FMAs). The four float32 vectors of a group hold codes ``4t``, ``4t + 2``,
``4t + 1`` and ``4t + 3`` (``t`` = 0..7), so x is laid out once per call in that order
(:func:`plane_order`): its "planes".

Where Numba's target has no AVX2, the same arithmetic is emitted as plain LLVM vector code
(the even or odd bytes picked by a shuffle, sign-extended to 16 bits, shifted left by 4),
which every target compiles: the same bits, but LLVM does not find ``vpmaddubsw`` in it
(on Zen 1 that form decoded 5.7-6.2 GB/s in cache against 8.0-8.8 GB/s for the intrinsic).
"""

from __future__ import annotations

import functools
import os

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..._cpu import cpu_features
from ._vmath import array_address, carried_loop, emit_prefetch, splat

#: The mask that keeps a float32's sign and the bits 26..20 that carry an E4M3 code's
#: exponent and mantissa (as in ``fp8_matmul._e4m3_scaled``).
_MASK = 0x87F00000


def target_has(feature: str) -> bool:
    """Whether the code Numba compiles may use ``feature``.

    The host's features, unless NUMBA_CPU_NAME and NUMBA_CPU_FEATURES name others.
    """
    name = os.environ.get("NUMBA_CPU_NAME", "")
    if name and name != "host":
        return f"+{feature}" in os.environ.get("NUMBA_CPU_FEATURES", "")
    return feature in cpu_features().flags


def target_has_avx2() -> bool:
    """Whether the code Numba compiles may use AVX2."""
    return target_has("avx2")


def target_has_avx512bw() -> bool:
    """Whether the code Numba compiles may use AVX-512BW (512-bit byte and word operations)."""
    return target_has("avx512bw")


#: Float32 lanes of one vector of the decode: 16 (zmm) where the target has AVX-512BW, else 8.
LANES = 16 if target_has_avx512bw() else 8
#: Weights per group: one vector load of codes (64 with AVX-512BW, else 32).
GROUP = 4 * LANES


def plane_order(k: int, group: int = GROUP) -> np.ndarray:
    """Indices ``p`` such that ``x[p]`` is x in plane order: ``k`` a multiple of ``group``."""
    t = np.arange(group // 4)
    lanes = np.concatenate([4 * t, 4 * t + 2, 4 * t + 1, 4 * t + 3])
    return (np.arange(0, k, group)[:, None] + lanes[None, :]).reshape(-1)


def _decode_pairs(builder: ir.IRBuilder, raw: ir.Value, odd: bool, isa: str) -> ir.Value:
    """``16 * int8(code)`` of the even (or odd) codes of ``raw`` in 16-bit lanes."""
    n = raw.type.count
    i8, i16 = ir.IntType(8), ir.IntType(16)
    vbytes, vwords = ir.VectorType(i8, n), ir.VectorType(i16, n // 2)
    if isa != "portable":  # vpmaddubsw: unsigned bytes (16, 0) or (0, 16) times the signed codes
        weights = ir.Constant(vbytes, [0, 16] * (n // 2) if odd else [16, 0] * (n // 2))
        name = "llvm.x86.avx512.pmaddubs.w.512" if isa == "avx512" else "llvm.x86.avx2.pmadd.ub.sw"
        fn = builder.module.declare_intrinsic(name, (), ir.FunctionType(vwords, [vbytes, vbytes]))
        return builder.call(fn, [weights, raw])
    pick = ir.Constant(ir.VectorType(ir.IntType(32), n // 2), [2 * i + odd for i in range(n // 2)])
    codes = builder.shuffle_vector(raw, raw, pick)
    return builder.shl(builder.sext(codes, vwords), ir.Constant(vwords, [4] * (n // 2)))


def _planes(builder: ir.IRBuilder, raw: ir.Value, isa: str, lanes: int) -> list:
    """The four float32 vectors (value x 2^-120) of the ``4 * lanes`` codes in ``raw``.

    Plane p lane t holds code ``4t``, ``4t + 2``, ``4t + 1``, ``4t + 3`` for p = 0..3
    (:func:`plane_order`).
    """
    vi = ir.VectorType(ir.IntType(32), lanes)
    mask = ir.Constant(vi, [_MASK - (1 << 32)] * lanes)
    sixteen = ir.Constant(vi, [16] * lanes)
    even = builder.bitcast(_decode_pairs(builder, raw, False, isa), vi)
    odd = builder.bitcast(_decode_pairs(builder, raw, True, isa), vi)
    planes = [builder.and_(builder.shl(even, sixteen), mask), builder.and_(even, mask),
              builder.and_(builder.shl(odd, sixteen), mask), builder.and_(odd, mask)]
    return [builder.bitcast(p, ir.VectorType(ir.FloatType(), lanes)) for p in planes]


def _make_dot4(isa: str, lanes: int = LANES):  # noqa: ANN202 - a Numba intrinsic
    """:func:`dot4_planes` with the ``isa`` decode ("avx512", "avx2" or "portable").

    On vectors of ``lanes`` float32s, groups of ``4 * lanes`` codes.
    """
    group = 4 * lanes

    @intrinsic
    def dot4_planes(typingctx, w, o0, o1, o2, o3, xp, xo, n_groups):  # noqa: ARG001
        """Four dot products of E4M3FN codes with x in plane order, as float32 times 2^-120.

        The codes of 1-D uint8 ``w`` from byte offsets ``o0 .. o3`` (each ``n_groups * GROUP``
        long) against ``n_groups * GROUP`` values of 1-D float32 ``xp`` from ``xo``.
        """
        if not (isinstance(w, types.Array) and w.ndim == 1 and w.dtype == types.uint8
                and isinstance(xp, types.Array) and xp.ndim == 1 and xp.dtype == types.float32):
            return None
        sig = types.UniTuple(types.float32, 4)(w, types.intp, types.intp, types.intp, types.intp,
                                              xp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            i32, i64, f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
            v8f32 = ir.VectorType(f32, lanes)
            v32i8 = ir.VectorType(ir.IntType(8), group)
            wa = context.make_array(signature.args[0])(context, builder, args[0])
            xa = context.make_array(signature.args[5])(context, builder, args[5])
            w_base = builder.ptrtoint(wa.data, i64)
            x_base = builder.ptrtoint(xa.data, i64)
            offs = [context.cast(builder, a, t, types.int64)
                    for a, t in zip(args[1:5], signature.args[1:5], strict=True)]
            xo = context.cast(builder, args[6], signature.args[6], types.int64)
            n = context.cast(builder, args[7], signature.args[7], types.int64)
            fma = builder.module.declare_intrinsic(f"llvm.fma.v{lanes}f32", (),
                                                   ir.FunctionType(v8f32, [v8f32] * 3))
            zero = ir.Constant(v8f32, [0.0] * lanes)

            def step(g, acc):
                first = builder.add(xo, builder.mul(g, ir.Constant(i64, group)))
                x_addr = builder.add(x_base, builder.mul(first, ir.Constant(i64, 4)))
                xs = []
                for q in range(4):
                    ptr = builder.inttoptr(builder.add(x_addr, ir.Constant(i64, 4 * lanes * q)),
                                           v8f32.as_pointer())
                    xs.append(builder.load(ptr, align=4))
                g32 = builder.mul(g, ir.Constant(i64, group))
                new = []
                for r in range(4):
                    ptr = builder.inttoptr(builder.add(builder.add(w_base, offs[r]), g32),
                                           v32i8.as_pointer())
                    planes = _planes(builder, builder.load(ptr, align=1), isa, lanes)
                    a0 = builder.call(fma, [xs[0], planes[0], acc[2 * r]])
                    a1 = builder.call(fma, [xs[1], planes[1], acc[2 * r + 1]])
                    new += [builder.call(fma, [xs[2], planes[2], a0]),
                            builder.call(fma, [xs[3], planes[3], a1])]
                return new

            acc = carried_loop(builder, n, [zero] * 8, step, "fp8p")  # two sums a row
            sums = []
            for r in range(4):
                s = builder.fadd(acc[2 * r], acc[2 * r + 1])
                total = builder.extract_element(s, ir.Constant(i32, 0))
                for e in range(1, lanes):
                    total = builder.fadd(total, builder.extract_element(s, ir.Constant(i32, e)))
                sums.append(total)
            return context.make_tuple(builder, signature.return_type, sums)

        return sig, codegen

    return dot4_planes


#: The decode Numba's target allows: AVX-512BW, AVX2 or portable vector code.
ISA = "avx512" if LANES == 16 else "avx2" if target_has_avx2() else "portable"
#: Four dot products of E4M3FN codes with x in plane order, decoded with ``ISA``.
dot4_planes = _make_dot4(ISA)
#: The same with the portable decode, on groups of the same size (for tests).
dot4_planes_portable = _make_dot4("portable")


#: Rows of g (the transposed product's left operand) handled by one call of ``cols_t``.
T_ROWS = 4


def _make_cols_t(isa: str, lanes: int = LANES):  # noqa: ANN202, C901 - a Numba intrinsic
    """``cols_t``: one group of columns of W against four rows of g, summed over W's rows."""
    group = 4 * lanes

    @intrinsic
    def cols_t(typingctx, w, col, row0, n_rows, k, ahead, gs, acc):  # noqa: ARG001
        """``acc[m, p] += sum_i gs[i - row0, m] * W[i, col + plane p]``, m < 4, x 2^-120.

        Rows ``i`` from ``row0``, ``n_rows`` of them; the same columns ``ahead`` rows on are
        prefetched into L2 meanwhile. ``w``: 1-D uint8, rows of ``k`` codes;
        ``col``: the group's first column (a multiple of ``GROUP``); ``gs``: 1-D float32,
        ``n_rows * 4``: each row's four factors (g times the scale of its tile); ``acc``: 1-D
        float32, ``4 * GROUP``, row m's sums in plane order, added to.
        """
        if not (isinstance(w, types.Array) and w.dtype == types.uint8
                and isinstance(gs, types.Array) and gs.dtype == types.float32
                and isinstance(acc, types.Array) and acc.dtype == types.float32):
            return None
        sig = types.void(w, types.intp, types.intp, types.intp, types.intp, types.intp, gs,
                         acc)

        def codegen(context, builder, signature, args):
            i64, f32 = ir.IntType(64), ir.FloatType()
            vf = ir.VectorType(f32, lanes)
            vcodes = ir.VectorType(ir.IntType(8), group)

            data = functools.partial(array_address, context, builder, signature, args)

            w_base, g_base, a_base = data(0), data(6), data(7)
            col, row0, n_rows, k, ahead_rows = args[1], args[2], args[3], args[4], args[5]
            fma = builder.module.declare_intrinsic(f"llvm.fma.v{lanes}f32", (),
                                                   ir.FunctionType(vf, [vf] * 3))

            start = [builder.load(builder.inttoptr(builder.add(a_base, ir.Constant(
                i64, 4 * lanes * q)), vf.as_pointer()), align=4) for q in range(T_ROWS * 4)]
            def step(i, acc):
                row = builder.add(w_base, builder.add(builder.mul(builder.add(row0, i), k), col))
                ahead = builder.add(row, builder.mul(k, ahead_rows))
                emit_prefetch(builder, ahead, 2)
                raw = builder.load(builder.inttoptr(row, vcodes.as_pointer()), align=1)
                planes = _planes(builder, raw, isa, lanes)
                g_row = builder.add(g_base, builder.mul(i, ir.Constant(i64, 4 * T_ROWS)))
                new = []
                for m in range(T_ROWS):
                    gm = builder.load(builder.inttoptr(
                        builder.add(g_row, ir.Constant(i64, 4 * m)), f32.as_pointer()), align=4)
                    gv = splat(builder, gm, vf)
                    new += [builder.call(fma, [gv, planes[p], acc[4 * m + p]]) for p in range(4)]
                return new

            acc = carried_loop(builder, n_rows, start, step, "colst")
            for q, a in enumerate(acc):
                addr = builder.add(a_base, ir.Constant(i64, 4 * lanes * q))
                builder.store(a, builder.inttoptr(addr, vf.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return cols_t


#: The transposed product's column group, decoded as ``dot4_planes`` decodes.
cols_t = _make_cols_t(ISA)
