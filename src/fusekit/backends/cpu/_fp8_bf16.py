"""Block-scaled E4M3FN products on AVX-512 BF16 CPUs: bfloat16 weights and ``vdpbf16ps``.

Every E4M3FN value is exactly a bfloat16 (3 mantissa bits, exponents 2^-9 .. 2^8), and the
product of two bfloat16 numbers is exact in float32, so ``vdpbf16ps`` (32 products a
register, added pairwise into 16 float32 sums) computes the same float32 sums as the FMA
kernels, from weights decoded in fewer instructions.

**Decode.** ``vpmaddubsw`` with byte pairs (16, 0) turns the 32 even codes of 64 into words
``16 * int8(code)`` (an arithmetic shift right by 4 does the same for the odd codes, the
high bytes: measured 10% faster at M = 1 than a second ``vpmaddubsw``, and than shifts for
the even codes too): sign in bit 15, copies of it in bits 14..11, the exponent in 10..7 and
the mantissa in 6..4. One ``vpternlogd`` keeps the sign, exponent and mantissa and sets bits
14..11 to 0111: a bfloat16 of exponent field ``112 + e``, which is the code's value times 2^-8
for every normal code: two instructions per 32 weights. Codes with
exponent field 0 (zero and the subnormals) would come out wrong, so each group of 64 codes is
tested (``(code & 0x78) == 0``); a tile holding any is decoded again by two 128-entry byte
tables (:func:`byte_tables`, the same values times 2^-8, exact and normal) with ``vpermi2b``
and an interleave, which realistic weights need for a few percent of tiles. Measured with W in
L2, one thread, M=1 (session 20): the fast decode and its test 35.8 GB/s, the tables for
every tile 32.0 GB/s (so subnormal-heavy weights lose about a tenth), the fast decode without
the test (not exact) 42 GB/s; at M=16 the three are alike. With the shift for the odd codes
(session 22, W in L3): 41 GB/s with the test, 47.5 without.

**Activations.** A float32 row of x is scaled by a power of two (its largest magnitude to
[2^63, 2^64), exact) and split into up to three bfloat16 parts whose sum is exactly it
(:func:`prepare`): one part where every value is a bfloat16 already (bfloat16 activations),
else three. Scaled so, no product comes near float32's subnormal range, which ``vdpbf16ps``
flushes to zero: activations down to 2^-140 times the row's largest are split exactly, and
smaller ones can lose their lowest bits.

**Tiles.** Per tile of 128 codes (one ``weight_scale_inv`` entry), four rows of W are decoded
into registers once and multiplied with every row of x (every part of every row), two rows
of x at a time (eight independent chains of ``vdpbf16ps``, whose latency is six cycles on
Zen 4). For one row of x the four 16-lane sums are multiplied by the tile's scale and added
into running sums in registers; for more, the four sums of a row of x are first added down
to one vector, four lanes a row of W (:func:`_fold_rows`), which takes one scale FMA and one
read and write of the running sum in memory a tile (against four of each: one thread, W in
L3, 6-15% faster at M = 16 and 64). W's bytes are read once per call; the tiles of the rows
three quads on are prefetched into L2 meanwhile, and for one row of x each row's own lines
:data:`L1_AHEAD` tiles on into L1 as well (from DRAM, 2-5% nearer the stream read's rate).
One call of the tile kernel covers a run of quads.

**The transposed product** ``g W`` (:func:`gemm_t`, the gradient of ``x W^T`` w.r.t. x)
sums down W's rows, so ``vdpbf16ps`` needs the codes of two rows side by side: rows ``2q``
and ``2q + 1`` of a 128-row tile are decoded as above and their words paired column by
column (``vpermt2w``), 64 columns at a time, into a buffer that stays in L1
(:func:`_decode_pairs`); then each row of g (four at a time) broadcasts its pair of values
``(g[2q], g[2q + 1])`` against the four paired registers (:func:`_make_dot_pairs`), and each
tile's sums are multiplied by its scale once. A task owns 512 columns (a run of 8 lines of
every row; tasks of 64 columns were slower on the 2048 x 7168 weight, one run each: M = 1
3.4 against 1.6 ms, M = 64 14.0 against 12.6 ms). It pays from about 12 rows
of g whose values are bfloat16 (one part); three parts are slower than the float32 FMA
kernel.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._fp8_planes import target_has
from ._numba import njit
from ._vmath import (
    _float_bits_as_int,
    _int_bits_as_float,
    array_address,
    carried_loop,
    emit_prefetch,
    silu_mul,
    splat,
)

#: Codes per group: one 512-bit load.
GROUP = 64
#: Codes per tile: one ``weight_scale_inv`` entry (DeepSeek-V3's 128; other blocks take the
#: FMA kernels).
TILE = 128
#: Rows of W decoded together.
ROWS = 4
#: How many groups of ``ROWS`` rows ahead the kernel prefetches, into L2.
AHEAD = 3
#: Tiles ahead in its own row whose lines the one-row kernel (M = 1) also prefetches into L1:
#: with W from DRAM the L2 prefetch alone left the rows' lines to arrive from L2 at the load
#: (two threads, each call paired with a stream read: the 7168 x 2048 product 0.82-0.83 of
#: the stream's rate by medians without, 0.87-0.88 with 4-8 tiles ahead; 2048 x 7168
#: 0.87-0.88 against 0.89-0.90). Past a row's end they are the next quad's row's first lines
#: (down, 16 tiles a row: 0.89-0.91 against 0.86-0.89 in four alternated rounds).
L1_AHEAD = 6
#: Bytes of x's bfloat16 parts that one pass over a block of W's rows reads: beyond it, K is
#: taken in chunks (x for 64 rows of K = 7168 is 0.9 MB, about L2).
X_CHUNK_BYTES = 256 * 1024
#: Power of two the largest magnitude of each row of x is scaled below.
X_TOP = 64
#: The decoded weights are the codes' values times ``2^-WEIGHT_SHIFT``.
WEIGHT_SHIFT = 8


def available() -> bool:
    """Whether Numba's target has AVX-512 BF16, VBMI and BW (this module's instructions)."""
    return os.environ.get("FUSEKIT_FP8_BF16", "1") != "0" and _target_ok()


@functools.cache
def _target_ok() -> bool:
    # fixed once Numba has started: its target is chosen when it is imported (_numba.py)
    return all(target_has(f) for f in ("avx512bf16", "avx512vbmi", "avx512bw"))


@functools.cache
def byte_tables() -> np.ndarray:
    """The 256 bytes ``vpermi2b`` reads for the exact decode.

    The low bytes of the bfloat16 of magnitude codes 0..127 times ``2^-WEIGHT_SHIFT``, then
    their high bytes. Code 0x7F (NaN) is read as 480, as the fast decode and the other CPU
    kernels read it.
    """
    code = np.arange(128)
    exp, man = code >> 3, code & 7
    value = np.where(exp == 0, man / 8.0 * 2.0**-6, (1 + man / 8.0) * 2.0 ** (exp - 7.0))
    value = value * 2.0**-WEIGHT_SHIFT
    bits = (value.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return np.concatenate([bits & 0xFF, bits >> 8]).astype(np.uint8)


def bf16_order(k: int) -> np.ndarray:
    """Indices ``p`` such that ``x[p]`` lines up with the decoded weights: ``k % 64 == 0``.

    The first register of a group holds the even codes, the second the odd ones, each in
    order; ``vdpbf16ps`` pairs adjacent words, so any order would do as long as x matches.
    """
    group = np.concatenate([np.arange(0, GROUP, 2), np.arange(1, GROUP, 2)])
    return (np.arange(0, k, GROUP)[:, None] + group[None, :]).reshape(-1)


#: Veltkamp's splitter for float32: ``c = v * SPLITTER; c - (c - v)`` is ``v`` rounded to
#: 24 - 16 = 8 significant bits, a bfloat16, and the rest ``v - hi`` is exact.
SPLITTER = np.float32(2**16 + 1)


@njit(inline="always")
def _head(v):
    """Finite float32 ``v`` rounded to 8 significant bits (a bfloat16), and the exact rest.

    Float32 arithmetic throughout (no contraction, no reassociation: the caller compiles
    without fastmath), so it runs in 16-lane vectors. No overflow: ``|v| < 2^64`` here.
    """
    c = v * SPLITTER
    hi = c - (c - v)
    return hi, v - hi


@njit(inline="always")
def _hi16(h):
    # the high 16 bits of float32 h, whose low 16 are zero: its bfloat16
    return np.uint16(np.uint32(_float_bits_as_int(h)) >> np.uint32(16))


@njit
def _split_row(row, t, f1, f2):
    """The three bfloat16 parts of each value of ``(row * f1) * f2`` into ``t`` (3, K), in order.

    Their sum is exactly the scaled value (the last rest has at most 8 significant bits).
    Returns whether a second and a third part were needed (a -0.0 part counts: harmless).
    (No fastmath, which would undo the split; kept in order and free of float reductions, so
    that LLVM vectorises it. The parts' largest bits, not their "or", which Numba widens to
    64-bit lanes: 1.7 against 2.7 us for a row of 7168.)
    """
    t0, t1, t2 = t[0], t[1], t[2]
    top1 = np.uint16(0)
    top2 = np.uint16(0)
    for j in range(row.size):
        h0, r1 = _head((row[j] * f1) * f2)
        h1, r2 = _head(r1)
        t0[j] = _hi16(h0)
        b1 = _hi16(h1)
        b2 = _hi16(r2)
        t1[j] = b1
        t2[j] = b2
        top1 = max(top1, b1)
        top2 = max(top2, b2)
    return top1 != 0, top2 != 0


@intrinsic
def _deinterleave(typingctx, src, out):  # noqa: ARG001 - Numba's intrinsic signature
    """``src`` (1-D uint16, in order, a multiple of 64 long) into ``out`` in bf16_order.

    Each group's even values, then its odd ones: two shuffles a group.
    """
    if not (isinstance(src, types.Array) and src.dtype == types.uint16
            and isinstance(out, types.Array) and out.dtype == types.uint16):
        return None

    def codegen(context, builder, signature, args):
        i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
        v64, v32 = ir.VectorType(i16, GROUP), ir.VectorType(i16, GROUP // 2)
        sa = context.make_array(signature.args[0])(context, builder, args[0])
        oa = context.make_array(signature.args[1])(context, builder, args[1])
        s_base = builder.ptrtoint(sa.data, i64)
        o_base = builder.ptrtoint(oa.data, i64)
        n = builder.udiv(builder.extract_value(sa.shape, 0), ir.Constant(i64, GROUP))
        masks = [ir.Constant(ir.VectorType(i32, GROUP // 2), list(range(h, GROUP, 2)))
                 for h in (0, 1)]
        with cgutils.for_range(builder, n) as loop:
            off = builder.mul(loop.index, ir.Constant(i64, 2 * GROUP))
            group = builder.load(builder.inttoptr(builder.add(s_base, off), v64.as_pointer()),
                                 align=2)
            for h in (0, 1):
                half = builder.shuffle_vector(group, ir.Constant(v64, None), masks[h])
                addr = builder.add(builder.add(o_base, off), ir.Constant(i64, GROUP * h))
                builder.store(half, builder.inttoptr(addr, v32.as_pointer()), align=2)
        return context.get_dummy_value()

    return types.void(src, out), codegen


@njit(inline="always")
def _prepare_row(x, m, xb, row_scale, needs, in_order):
    m_rows, k = x.shape
    row = x[m]
    top = np.int32(0)  # the largest magnitude's bits: integers compare like the floats
    for j in range(k):
        top = max(top, np.int32(_float_bits_as_int(row[j]) & np.int32(0x7FFFFFFF)))
    if top >= np.int32(0x7F800000):  # an infinity or NaN
        needs[m] = 0
        return
    amax = np.float64(_int_bits_as_float(top))
    e = math.frexp(amax)[1] if amax > 0 else 0
    row_scale[m] = math.ldexp(1.0, e - X_TOP + WEIGHT_SHIFT)  # float64: may be < 2^-149
    # 2^(X_TOP - e) may exceed float32's range when the row is tiny: scale in two steps
    t = np.empty((3, k), dtype=np.uint16)
    half_e = (X_TOP - e) // 2
    f1 = np.float32(math.ldexp(1.0, half_e))
    f2 = np.float32(math.ldexp(1.0, X_TOP - e - half_e))
    second, third = _split_row(row, t, f1, f2)
    needs[m] = 3 if third else 2 if second else 1
    # the parts beyond a row's own are zeros the kernel reads when another row needs them
    for p in range(3 if m_rows > 1 else needs[m]):
        if in_order:
            xb[p * m_rows + m] = t[p]
        else:
            _deinterleave(t[p], xb[p * m_rows + m])


@njit(inline="always")
def _parts(needs):
    # the parts every row gets: the most any row needs, or 0 when a row holds NaN or Inf
    most = 1
    for m in range(needs.size):
        if needs[m] == 0:
            return 0
        most = max(most, needs[m])
    return most


@njit(parallel=True)
def _prepare_into(x, xb, row_scale, needs, in_order):
    """Scale each row of ``x`` (M, K) and split it into bfloat16 parts in :func:`bf16_order`.

    Part ``p`` of row ``m`` goes to row ``p * M + m`` of ``xb`` (3M, K); ``needs[m]`` becomes
    the number of parts row ``m`` needs (1 to 3), or 0 when it holds NaN or an infinity.
    With ``in_order`` the parts keep x's order (for the transposed product). Returns the
    parts every row gets (:func:`_parts`).
    """
    for m in prange(x.shape[0]):
        _prepare_row(x, m, xb, row_scale, needs, in_order)
    return _parts(needs)


@njit
def _prepare_one(x, xb, row_scale, needs, in_order):
    # _prepare_into for one row, without a parallel launch (a few microseconds)
    _prepare_row(x, 0, xb, row_scale, needs, in_order)
    return _parts(needs)


def prepare(x: np.ndarray, in_order: bool = False) -> tuple[np.ndarray, int, np.ndarray] | None:
    """``(xb, parts, row_scale)`` for the kernel from float32 rows ``x`` (M, K), or None.

    ``xb`` holds ``parts * M`` rows of bfloat16 bits in :func:`bf16_order` (in x's own order
    with ``in_order``); the product of row ``m`` is ``row_scale[m]`` times the sum of its
    parts' products. None when x holds NaN or an infinity (the FMA kernels then propagate
    them as a matmul does).
    """
    m_rows, k = x.shape
    xb = np.empty((3 * m_rows, k), dtype=np.uint16)
    row_scale = np.empty(m_rows, dtype=np.float64)
    if m_rows == 0:
        return xb, 1, row_scale
    prep = _prepare_one if m_rows == 1 else _prepare_into
    parts = prep(np.ascontiguousarray(x, dtype=np.float32), xb, row_scale,
                 np.empty(m_rows, dtype=np.int32), in_order)
    return None if parts == 0 else (xb, int(parts), row_scale)


def _decode_consts(builder: ir.IRBuilder, tab_base: ir.Value) -> dict:
    """The constants of the fast and the table decode (see the module's docstring)."""
    i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
    v64i8, v32i16 = ir.VectorType(i8, 64), ir.VectorType(i16, 32)
    return {
        "tables": [builder.load(builder.inttoptr(builder.add(tab_base, ir.Constant(i64, 64 * q)),
                                                 v64i8.as_pointer()), align=1) for q in range(4)],
        "pick": ir.Constant(v64i8, [16, 0] * 32),
        "keep": ir.Constant(v32i16, [0x87F0 - 65536] * 32),
        "bias": ir.Constant(v32i16, [0x3800] * 32),
        "exp_bits": ir.Constant(v64i8, [0x78] * 64),
        "sign": ir.Constant(v64i8, [0x80 - 256] * 64),
        "zero8": ir.Constant(v64i8, [0] * 64),
        "interleave": [ir.Constant(ir.VectorType(i32, 64),
                                   [v for j in range(32) for v in (2 * j + h, 64 + 2 * j + h)])
                       for h in (0, 1)],
        "madd": builder.module.declare_intrinsic(
            "llvm.x86.avx512.pmaddubs.w.512", (), ir.FunctionType(v32i16, [v64i8, v64i8])),
        "perm": builder.module.declare_intrinsic(
            "llvm.x86.avx512.vpermi2var.qi.512", (), ir.FunctionType(v64i8, [v64i8] * 3)),
    }


def _fast_words(builder: ir.IRBuilder, c: dict, raw: ir.Value) -> list:
    """The even and the odd codes of ``raw`` (64 bytes) as bfloat16 words (x 2^-8), 2 x v32i16.

    Wrong for codes with exponent field 0; :func:`_low_exponent` finds them.
    """
    v32i16 = ir.VectorType(ir.IntType(16), 32)
    even = builder.call(c["madd"], [c["pick"], raw])
    # the odd code is the word's high byte: shifted right 4 (arithmetically) it is 16 * code
    # plus the even code's top bits in bits 3..0, which the mask drops
    odd = builder.ashr(builder.bitcast(raw, v32i16), ir.Constant(v32i16, [4] * 32))
    return [builder.or_(builder.and_(v, c["keep"]), c["bias"]) for v in (even, odd)]


def _low_exponent(builder: ir.IRBuilder, c: dict, raw: ir.Value) -> ir.Value:
    """A 64-bit mask of the codes of ``raw`` whose exponent field is 0."""
    hit = builder.icmp_unsigned("==", builder.and_(raw, c["exp_bits"]), c["zero8"])
    return builder.bitcast(hit, ir.IntType(64))


def _exact_words(builder: ir.IRBuilder, c: dict, raw: ir.Value) -> list:
    """:func:`_fast_words` by the byte tables: exact for every code."""
    lo = builder.call(c["perm"], [c["tables"][0], raw, c["tables"][1]])
    hi = builder.or_(builder.call(c["perm"], [c["tables"][2], raw, c["tables"][3]]),
                     builder.and_(raw, c["sign"]))
    v32i16 = ir.VectorType(ir.IntType(16), 32)
    return [builder.bitcast(builder.shuffle_vector(lo, hi, m), v32i16) for m in c["interleave"]]


def _decode(builder: ir.IRBuilder, c: dict, raws: list) -> list:
    """The codes of ``raws`` (64-byte vectors) as words, exactly: 2 x v32i16 a vector.

    The fast decode, and the tables (in a block of their own, taken only then) where any of
    the codes has exponent field 0.
    """
    fast = [v for raw in raws for v in _fast_words(builder, c, raw)]
    low = None
    for raw in raws:
        hit = _low_exponent(builder, c, raw)
        low = hit if low is None else builder.or_(low, hit)
    fast_end = builder.block
    slow = builder.append_basic_block("fp8.tables")
    merge = builder.append_basic_block("fp8.decoded")
    builder.cbranch(builder.icmp_unsigned("!=", low, ir.Constant(ir.IntType(64), 0)), slow,
                    merge)
    builder.position_at_end(slow)
    exact = [v for raw in raws for v in _exact_words(builder, c, raw)]
    builder.branch(merge)
    builder.position_at_end(merge)
    words = []
    for f, e in zip(fast, exact, strict=True):
        ph = builder.phi(f.type)
        ph.add_incoming(f, fast_end)
        ph.add_incoming(e, slow)
        words.append(ph)
    return words


#: Which 4 lanes of :func:`_fold_rows`' vector hold row r's partial sums: lanes
#: ``4 * FOLD_GROUP[r]`` to ``4 * FOLD_GROUP[r] + 3``.
FOLD_GROUP = (0, 2, 1, 3)


def _fold_rows(builder: ir.IRBuilder, sums: list) -> ir.Value:
    """Four rows' 16-lane sums added down to one vector, four lanes a row (see FOLD_GROUP).

    Two rounds of (a shuffle or blend of both halves, an add): 3 adds and a few shuffles
    instead of a scale FMA for each row and its running sum in memory.
    """
    def mix(a, b, keep, swap):
        i32 = ir.IntType(32)
        return builder.fadd(
            builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, 16), keep)),
            builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, 16), swap)))

    halves = ([*range(8), *range(24, 32)], [*range(8, 16), *range(16, 24)])
    quarters = ([*range(4), *range(20, 24), *range(8, 12), *range(28, 32)],
                [*range(4, 8), *range(16, 20), *range(12, 16), *range(24, 28)])
    ab = mix(sums[0], sums[1], *halves)  # lanes 0-7 row a, 8-15 row b
    cd = mix(sums[2], sums[3], *halves)
    return mix(ab, cd, *quarters)  # a, c, b, d


def _make_kernel(r_rows: int, groups_per_tile: int, single: bool = False):  # noqa: ANN202, C901, PLR0915
    """The intrinsic ``bf16_tiles``: ``r_rows`` rows of W against any number of rows of x.

    With ``single``, for one row of x only: the running sums stay in registers from tile to
    tile and are folded and written to ``acc`` once at the end. ``r_rows`` must be 4 (what
    :func:`_fold_rows` adds down).
    """
    if r_rows != len(FOLD_GROUP):
        raise ValueError(f"the BF16 tile kernel folds {len(FOLD_GROUP)} rows of W, not {r_rows}")

    @intrinsic
    def bf16_tiles(typingctx, w, offs, xb, xstride, m_rows, parts, n_tiles, scales,  # noqa: ARG001
                   tab, ahead, acc, n_quads, quad_step, ahead_end):
        """``acc[c, r] += sum_t scales[t] * sum_p (W row r . xb row p * M + c over tile t)``.

        (16 lanes of row c of acc, four a row of W as :func:`_fold_rows` leaves them.) For
        each of ``n_quads`` quads of rows, ``quad_step`` bytes apart in ``w`` (and in
        ``ahead``, which stops at ``ahead_end``), their ``m_rows * 16`` floats of ``acc`` one
        after another: one call for a run of quads (a call a quad cost about 16 ns, 7% of the
        7168 x 2048 product at M = 1).
        ``w``: 1-D uint8 codes; ``offs``: R byte offsets of the rows (a UniTuple of intp);
        ``xb``: 1-D uint16, part p of row c of x from
        ``(p * m_rows + c) * xstride``; ``parts`` parts a row; ``n_tiles`` tiles of
        ``groups_per_tile * 64`` codes; ``scales``: 1-D float32, one per tile; ``tab``:
        :func:`byte_tables`; ``ahead``: byte offset in ``w`` of the ``R`` rows to prefetch
        into L2, ``R * 64`` bytes per group; ``acc``: 1-D float32, ``m_rows * 16``.
        """
        if not (isinstance(w, types.Array) and w.dtype == types.uint8
                and isinstance(xb, types.Array) and xb.dtype == types.uint16
                and isinstance(acc, types.Array) and acc.dtype == types.float32
                and isinstance(offs, types.UniTuple) and len(offs) == r_rows):
            return None
        sig = types.void(w, offs, xb, types.intp, types.intp, types.intp, types.intp, scales,
                         tab, types.intp, acc, types.intp, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            i8 = ir.IntType(8)
            i32, i64, f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
            v64i8 = ir.VectorType(i8, 64)
            v16i32, v16f = ir.VectorType(i32, 16), ir.VectorType(f32, 16)
            mod = builder.module

            data = functools.partial(array_address, context, builder, signature, args)

            w_len = builder.extract_value(
                context.make_array(signature.args[0])(context, builder, args[0]).shape, 0)

            def load(addr, ty, align):
                return builder.load(builder.inttoptr(addr, ty.as_pointer()), align=align)

            def c64(v):
                return ir.Constant(i64, v)

            w_base, x_base, s_base, t_base, acc_base = (data(0), data(2), data(7), data(8),
                                                        data(10))
            offs0 = [builder.extract_value(args[1], r) for r in range(r_rows)]
            xstride, m_rows, parts, n_tiles, ahead0 = args[3], args[4], args[5], args[6], args[9]
            n_quads, quad_step, ahead_end = args[11], args[12], args[13]
            c = _decode_consts(builder, t_base)
            dp = mod.declare_intrinsic("llvm.x86.avx512bf16.dpbf16ps.512", (),
                                       ir.FunctionType(v16f, [v16f, v16i32, v16i32]))
            fma = mod.declare_intrinsic("llvm.fma.v16f32", (), ir.FunctionType(v16f, [v16f] * 3))
            zero = ir.Constant(v16f, [0.0] * 16)
            tile_bytes = groups_per_tile * GROUP

            # set per quad by quad() below, read by tile()
            offs, ahead, a_base = list(offs0), ahead0, acc_base

            def tile(t, totals):
                # prefetch, then decode the tile of every row exactly
                tb = builder.mul(t, c64(tile_bytes))
                base = builder.add(builder.add(w_base, ahead), builder.mul(tb, c64(r_rows)))
                for q in range(r_rows * groups_per_tile):
                    emit_prefetch(builder, builder.add(base, c64(64 * q)), 2)
                if single:  # and each row's own lines L1_AHEAD tiles on into L1: past the
                    # row's end, the next quad's row's first ones (inside W)
                    row_bytes = builder.mul(n_tiles, c64(tile_bytes))
                    near_b = builder.add(tb, c64(L1_AHEAD * tile_bytes))
                    near_b = builder.select(
                        builder.icmp_signed(">=", near_b, row_bytes),
                        builder.add(near_b, builder.sub(quad_step, row_bytes)), near_b)
                    last = builder.add(builder.add(offs[r_rows - 1], near_b), c64(tile_bytes))
                    near_b = builder.select(builder.icmp_signed("<=", last, w_len), near_b, tb)
                    for r in range(r_rows):
                        for g in range(groups_per_tile):
                            emit_prefetch(builder, builder.add(builder.add(w_base, offs[r]),
                                          builder.add(near_b, c64(GROUP * g))), 3)
                raws = [load(builder.add(builder.add(w_base, offs[r]),
                                         builder.add(tb, c64(g * GROUP))), v64i8, 1)
                        for g in range(groups_per_tile) for r in range(r_rows)]
                regs = [builder.bitcast(v, v16i32) for v in _decode(builder, c, raws)]
                s = load(builder.add(s_base, builder.mul(t, c64(4))), f32, 4)
                sv = splat(builder, s, v16f)

                def parts_of_rows(rows):  # every part of each row of x into its own sums
                    def part(p, sums):
                        new = list(sums)
                        for j, row in enumerate(rows):
                            xrow = builder.add(builder.mul(p, m_rows), row)
                            xa = builder.add(x_base, builder.mul(
                                builder.add(builder.mul(xrow, xstride), tb), c64(2)))
                            for g in range(groups_per_tile):
                                xg = builder.add(xa, c64(2 * g * GROUP))
                                xs = [load(xg, v16i32, 2),
                                      load(builder.add(xg, c64(64)), v16i32, 2)]
                                for r in range(r_rows):
                                    q, a = 2 * (g * r_rows + r), j * r_rows + r
                                    new[a] = builder.call(dp, [new[a], regs[q], xs[0]])
                                    new[a] = builder.call(dp, [new[a], regs[q + 1], xs[1]])
                        return new

                    return carried_loop(builder, parts, [zero] * (r_rows * len(rows)), part,
                                        "bf16.p")

                if single:  # one row of x: the running sums stay in registers, folded at the end
                    return [builder.call(fma, [v, sv, t])
                            for v, t in zip(parts_of_rows([c64(0)]), totals, strict=True)]

                def add_rows(rows):  # one read and write of acc a tile and row of x
                    sums = parts_of_rows(rows)
                    for j, row in enumerate(rows):
                        folded = _fold_rows(builder, sums[j * r_rows:(j + 1) * r_rows])
                        addr = builder.inttoptr(builder.add(a_base, builder.mul(row, c64(64))),
                                                v16f.as_pointer())
                        builder.store(builder.call(fma, [folded, sv,
                                                         builder.load(addr, align=4)]),
                                      addr, align=4)

                def pair(j, _):  # two rows of x at once: eight independent dot-product chains
                    first = builder.shl(j, c64(1))
                    add_rows([first, builder.add(first, c64(1))])
                    return []

                carried_loop(builder, builder.ashr(m_rows, c64(1)), [], pair, "bf16.c")
                odd = builder.icmp_signed("!=", builder.and_(m_rows, c64(1)), c64(0))
                with builder.if_then(odd):
                    add_rows([builder.sub(m_rows, c64(1))])
                return []

            def quad(qi, _):
                nonlocal offs, ahead, a_base
                shift = builder.mul(qi, quad_step)
                offs = [builder.add(o, shift) for o in offs0]
                ahead = builder.add(ahead0, shift)
                ahead = builder.select(builder.icmp_signed("<", ahead, ahead_end), ahead,
                                       ahead_end)
                a_base = builder.add(acc_base, builder.mul(qi, builder.mul(m_rows, c64(64))))
                totals = carried_loop(builder, n_tiles, [zero] * r_rows if single else [],
                                      tile, "bf16.t")
                if single:
                    builder.store(_fold_rows(builder, totals),
                                  builder.inttoptr(a_base, v16f.as_pointer()), align=4)
                return []

            carried_loop(builder, n_quads, [], quad, "bf16.q")
            return context.get_dummy_value()

        return sig, codegen

    return bf16_tiles


_tiles = _make_kernel(ROWS, TILE // GROUP)
_tiles_one_row = _make_kernel(ROWS, TILE // GROUP, single=True)


@njit(fastmath={"reassoc", "contract", "nsz"})  # sums of 16 lanes as vectors
def _row_block(w, xb, parts, m_rows, scale, tab, row_scale, chunk, rb, y):
    # rows rb * TILE .. of y: y[m, i] = row_scale[m] * sum over the parts p of
    # xb rows p * m_rows + m . W row i (the product in float64, then rounded once: row_scale
    # may be below float32's range); K in runs of ``chunk`` tiles
    n, k = w.shape
    flat = w.reshape(-1)
    n_tiles = k // TILE
    xflat = xb.reshape(-1)
    xstride = xb.shape[1]
    srow = scale[rb]
    i0 = rb * TILE
    i_end = min(n, i0 + TILE)
    n_quads = (i_end - i0 + ROWS - 1) // ROWS
    acc = np.zeros(n_quads * m_rows * 16, dtype=np.float32)
    for t0 in range(0, n_tiles, chunk):
        nt = min(chunk, n_tiles - t0)
        xpart = xflat[t0 * TILE:]
        spart = srow[t0:]
        o = t0 * TILE
        # prefetched from a quad's ahead on: ROWS * nt * TILE bytes, inside W
        ahead_end = max(0, flat.size - ROWS * nt * TILE)
        full = (i_end - i0) // ROWS
        for q, count in ((0, full), (full, n_quads - full)):  # the full quads, a ragged one
            if count == 0:
                continue
            i = i0 + q * ROWS
            rows = min(ROWS, i_end - i)
            offs = (i * k + o, (i + min(1, rows - 1)) * k + o,
                    (i + min(2, rows - 1)) * k + o, (i + min(3, rows - 1)) * k + o)
            ahead = min((i + AHEAD * ROWS) * k + o, ahead_end)
            a = acc[q * m_rows * 16:]
            if m_rows == 1:
                _tiles_one_row(flat, offs, xpart, xstride, m_rows, parts, nt, spart, tab,
                               ahead, a, count, ROWS * k, ahead_end)
            else:
                _tiles(flat, offs, xpart, xstride, m_rows, parts, nt, spart, tab, ahead, a,
                       count, ROWS * k, ahead_end)
    for q in range(n_quads):
        i = i0 + q * ROWS
        for m in range(m_rows):
            for r in range(min(ROWS, i_end - i)):
                o = (q * m_rows + m) * 16 + 4 * FOLD_GROUP[r]
                total = (acc[o] + acc[o + 1]) + (acc[o + 2] + acc[o + 3])
                y[m, i + r] = np.float32(np.float64(total) * row_scale[m])


@njit(parallel=True)
def _rows_kernel(w, xb, parts, m_rows, scale, tab, row_scale, chunk_bytes, y):
    # y = x W^T from x's prepared parts (see _row_block), a task per block of TILE rows of W
    n_tiles = w.shape[1] // TILE
    # tiles of K a pass over a block's quads: every tile, unless the parts of x outgrow L2
    chunk = n_tiles
    if m_rows > 1:
        chunk = min(n_tiles, max(1, chunk_bytes // (m_rows * parts * TILE * 2)))
    for rb in prange((w.shape[0] + TILE - 1) // TILE):
        _row_block(w, xb, parts, m_rows, scale, tab, row_scale, chunk, rb, y)


@njit(parallel=True)
def _one_row_kernel(x, w, scale, tab, y):
    # _rows_kernel for one row of x (1, K), prepared here: one call from Python instead of
    # two. Returns the parts (0, nothing computed, when x holds NaN or an infinity).
    k = x.shape[1]
    xb = np.empty((3, k), dtype=np.uint16)
    row_scale = np.empty(1, dtype=np.float64)
    parts = _prepare_one(x, xb, row_scale, np.empty(1, dtype=np.int32), False)
    if parts == 0:
        return 0
    for rb in prange((w.shape[0] + TILE - 1) // TILE):
        _row_block(w, xb, parts, 1, scale, tab, row_scale, k // TILE, rb, y)
    return parts


def fits(k: int, block: int) -> bool:
    """Whether a product of inner size ``k`` with ``block``-wide scale tiles runs here."""
    return available() and block == TILE and k % TILE == 0 and k > 0


def gemm(x: np.ndarray, w_fp8: np.ndarray, weight_scale_inv: np.ndarray,
         x_chunk_bytes: int = X_CHUNK_BYTES) -> np.ndarray | None:
    """``x W^T`` (float32 rows x), or None when x holds NaN/Inf (see :func:`prepare`).

    ``x_chunk_bytes``: see :data:`X_CHUNK_BYTES`.
    """
    m_rows = x.shape[0]
    y = np.empty((m_rows, w_fp8.shape[0]), dtype=np.float32)
    if m_rows == 1:
        parts = _one_row_kernel(np.ascontiguousarray(x, dtype=np.float32), w_fp8,
                                weight_scale_inv, byte_tables(), y)
        return y if parts else None
    prepared = prepare(x)
    if prepared is None:
        return None
    xb, parts, row_scale = prepared
    _rows_kernel(w_fp8, xb, parts, m_rows, weight_scale_inv, byte_tables(), row_scale,
                 x_chunk_bytes, y)
    return y  # a product beyond float32's range is +-inf


@njit(fastmath={"contract", "nsz"})
def _silu_times(g, u, row_scale, h):
    # h = silu(g * rs) * (u * rs), in float64: rs may be below float32's range
    for m in range(g.shape[0]):
        rs = row_scale[m]
        for i in range(g.shape[1]):
            h[m, i] = np.float32(silu_mul(g[m, i] * rs, u[m, i] * rs))


def gate_up(x: np.ndarray, w_gate: np.ndarray, s_gate: np.ndarray, w_up: np.ndarray,
            s_up: np.ndarray) -> np.ndarray | None:
    """``silu(x W_gate^T) * (x W_up^T)``, x prepared once, each weight read once.

    None where :func:`gemm` gives None.
    """
    prepared = prepare(x)
    if prepared is None:
        return None
    xb, parts, row_scale = prepared
    m_rows = x.shape[0]
    n = w_gate.shape[0]
    g = np.empty((m_rows, n), dtype=np.float32)
    u = np.empty_like(g)
    tab = byte_tables()
    ones = np.ones(m_rows)  # row_scale is applied in float64 by _silu_times
    _rows_kernel(w_gate, xb, parts, m_rows, s_gate, tab, ones, X_CHUNK_BYTES, g)
    _rows_kernel(w_up, xb, parts, m_rows, s_up, tab, ones, X_CHUNK_BYTES, u)
    h = np.empty_like(g)
    _silu_times(g, u, row_scale, h)
    return h


# --------------------------------------------------------------- the transposed product g W
# out[m, k] = sum_n g[m, n] W[n, k] s[n // 128, k // 128]: the reduction runs down W's rows,
# so two rows n, n + 1 are decoded and their words paired column by column (vpermt2w), and
# each row of g supplies the matching pair (g[m, n], g[m, n + 1]) as one broadcast dword.

#: Columns of W (and of out) a task owns: one 64-byte line of each row.
T_COLS = 64
#: Rows of g multiplied with each decoded pair of W rows at once.
T_GROWS = 4


def t_column_order() -> np.ndarray:
    """Column (within a task's 64) of each lane of the four pair registers, in order.

    Register 0 pairs the even columns 0, 2, .., 30; 1 the even columns 32 .. 62; 2 and 3 the
    odd ones likewise.
    """
    even, odd = np.arange(0, T_COLS, 2), np.arange(1, T_COLS, 2)
    return np.concatenate([even[:16], even[16:], odd[:16], odd[16:]])


def _pair_rows(builder: ir.IRBuilder, words: list) -> list:
    """Two rows' words ``[a_even, a_odd, b_even, b_odd]`` paired column by column.

    Four v32i16 registers of 16 dwords (a's word, b's word), lanes in
    :func:`t_column_order`: word i of (a_h, b_h) and its 16 * half + i.
    """
    i32 = ir.IntType(32)
    masks = [ir.Constant(ir.VectorType(i32, 32),
                         [v for i in range(16) for v in (16 * half + i, 32 + 16 * half + i)])
             for half in (0, 1)]
    a_even, a_odd, b_even, b_odd = words
    return [builder.shuffle_vector(a, b, m) for a, b in ((a_even, b_even), (a_odd, b_odd))
            for m in masks]


@intrinsic
def _decode_pairs(typingctx, w, first, k, n_pairs, tab, buf):  # noqa: ARG001
    """Decode ``2 * n_pairs`` rows x 64 codes of ``w`` into ``buf`` as column pairs.

    Rows ``2q`` and ``2q + 1`` start at byte ``first + 2q * k`` and ``first + (2q + 1) * k``;
    pair ``q`` becomes four registers of 16 dwords (bfloat16 of row 2q, of row 2q + 1) at
    ``buf[64 q ..]``, lanes in :func:`t_column_order`. Exact for every code: a pair of rows
    holding a code of exponent field 0 is decoded again by the tables (:func:`_decode`).
    """
    if not (isinstance(w, types.Array) and w.dtype == types.uint8
            and isinstance(buf, types.Array) and buf.dtype == types.int32):
        return None
    sig = types.void(w, types.intp, types.intp, types.intp, tab, buf)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        v64i8, v32i16 = ir.VectorType(ir.IntType(8), 64), ir.VectorType(ir.IntType(16), 32)

        data = functools.partial(array_address, context, builder, signature, args)

        w_base, b_base = data(0), data(5)
        first, k, n_pairs = args[1], args[2], args[3]
        c = _decode_consts(builder, data(4))
        with cgutils.for_range(builder, n_pairs) as loop:
            q = loop.index
            a_addr = builder.add(w_base, builder.add(first, builder.mul(builder.shl(
                q, ir.Constant(i64, 1)), k)))
            raws = [builder.load(builder.inttoptr(addr, v64i8.as_pointer()), align=1)
                    for addr in (a_addr, builder.add(a_addr, k))]
            regs = _pair_rows(builder, _decode(builder, c, raws))
            out = builder.add(b_base, builder.mul(q, ir.Constant(i64, 4 * 64)))
            for j, r in enumerate(regs):
                builder.store(r, builder.inttoptr(builder.add(out, ir.Constant(i64, 64 * j)),
                                                  v32i16.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _make_dot_pairs(r_rows: int):  # noqa: ANN202 - a Numba intrinsic
    """The intrinsic ``dot_pairs``: decoded pairs of W rows against ``r_rows`` rows of g."""

    @intrinsic
    def dot_pairs(typingctx, buf, gb, m0, m_rows, n, row0, n_pairs, parts, s, acc):  # noqa: ARG001
        """``acc[m0 + c, lanes] += s * sum_p sum_q (pair q of buf) . (g rows p*m_rows + m0 + c)``.

        ``buf``: :func:`_decode_pairs`' output (int32); ``gb``: 1-D uint16, rows ``n`` values
        apart, row ``p * m_rows + m`` part ``p`` of row ``m`` of g; pair ``q`` meets values
        ``row0 + 2q`` and ``row0 + 2q + 1`` of each row; ``acc``: float32, 64 per row of g
        in :func:`t_column_order`.
        """
        if not (isinstance(buf, types.Array) and buf.dtype == types.int32
                and isinstance(gb, types.Array) and gb.dtype == types.uint16
                and isinstance(acc, types.Array) and acc.dtype == types.float32):
            return None
        sig = types.void(buf, gb, types.intp, types.intp, types.intp, types.intp, types.intp,
                         types.intp, types.float32, acc)

        def codegen(context, builder, signature, args):
            i32, i64, f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
            v16i32, v16f = ir.VectorType(i32, 16), ir.VectorType(f32, 16)
            mod = builder.module
            dp = mod.declare_intrinsic("llvm.x86.avx512bf16.dpbf16ps.512", (),
                                       ir.FunctionType(v16f, [v16f, v16i32, v16i32]))
            fma = mod.declare_intrinsic("llvm.fma.v16f32", (), ir.FunctionType(v16f, [v16f] * 3))

            data = functools.partial(array_address, context, builder, signature, args)

            def c64(v):
                return ir.Constant(i64, v)

            b_base, g_base, a_base = data(0), data(1), data(9)
            m0, m_rows, n, row0, n_pairs, parts, s = args[2:9]
            zero = ir.Constant(v16f, [0.0] * 16)

            def part(p, acc):  # the sums over every pair, for part p of the rows of g
                def pair(q, acc):
                    base = builder.add(b_base, builder.mul(q, c64(4 * 64)))
                    regs = [builder.load(builder.inttoptr(builder.add(base, c64(64 * j)),
                                                          v16i32.as_pointer()), align=4)
                            for j in range(4)]
                    col = builder.add(row0, builder.shl(q, c64(1)))
                    new = []
                    for r in range(r_rows):
                        grow = builder.add(builder.mul(p, m_rows), builder.add(m0, c64(r)))
                        addr = builder.add(g_base, builder.shl(
                            builder.add(builder.mul(grow, n), col), c64(1)))
                        gv = splat(builder, builder.load(builder.inttoptr(addr, i32.as_pointer()),
                                                         align=2), v16i32)
                        new += [builder.call(dp, [acc[4 * r + j], regs[j], gv])
                                for j in range(4)]
                    return new

                return carried_loop(builder, n_pairs, acc, pair, "dp.q")

            sums = carried_loop(builder, parts, [zero] * (4 * r_rows), part, "dp.p")
            sv = splat(builder, s, v16f)
            for r in range(r_rows):
                row = builder.add(a_base, builder.mul(builder.add(m0, c64(r)), c64(4 * T_COLS)))
                for j in range(4):
                    addr = builder.inttoptr(builder.add(row, c64(64 * j)), v16f.as_pointer())
                    total = builder.call(fma, [sums[4 * r + j], sv, builder.load(addr, align=4)])
                    builder.store(total, addr, align=4)
            return context.get_dummy_value()

        return sig, codegen

    return dot_pairs


_dot_pairs = _make_dot_pairs(T_GROWS)
_dot_pairs_one = _make_dot_pairs(1)


#: Column blocks (of :data:`T_COLS`) a task of the transposed product owns: 512 bytes of each
#: row of W, read line after line.
T_BLOCKS = 8


@njit(parallel=True, fastmath={"contract", "nsz"})
def _t_kernel(w, gb, parts, m_rows, scale, tab, order, out):
    # out[m, c] = sum over the parts p of gb rows p * m_rows + m . W column c (x 2^-8)
    n, k = w.shape
    flat = w.reshape(-1)
    gflat = gb.reshape(-1)
    gstride = gb.shape[1]
    n_blocks = k // T_COLS
    for task in prange((n_blocks + T_BLOCKS - 1) // T_BLOCKS):
        b_first = task * T_BLOCKS
        b_end = min(n_blocks, b_first + T_BLOCKS)
        acc = np.zeros((b_end - b_first) * m_rows * T_COLS, dtype=np.float32)
        buf = np.empty(TILE // 2 * T_COLS, dtype=np.int32)
        for t in range(n // TILE):
            for cb in range(b_first, b_end):
                col0 = cb * T_COLS
                _decode_pairs(flat, t * TILE * k + col0, k, TILE // 2, tab, buf)
                s = scale[t, col0 // TILE]
                a = acc[(cb - b_first) * m_rows * T_COLS:]
                m = 0
                while m + T_GROWS <= m_rows:
                    _dot_pairs(buf, gflat, m, m_rows, gstride, t * TILE, TILE // 2, parts, s,
                               a)
                    m += T_GROWS
                while m < m_rows:
                    _dot_pairs_one(buf, gflat, m, m_rows, gstride, t * TILE, TILE // 2, parts,
                                   s, a)
                    m += 1
        for cb in range(b_first, b_end):
            base = (cb - b_first) * m_rows * T_COLS
            for m in range(m_rows):
                for j in range(T_COLS):
                    out[m, cb * T_COLS + order[j]] = acc[base + m * T_COLS + j]


def fits_t(n: int, k: int, block: int) -> bool:
    """Whether ``g W`` with W ``[n, k]`` and ``block``-wide scale tiles runs here."""
    return available() and block == TILE and n % TILE == 0 and k % TILE == 0 and n > 0 < k


def gemm_t(g: np.ndarray, w_fp8: np.ndarray, weight_scale_inv: np.ndarray,
           max_parts: int = 3) -> np.ndarray | None:
    """``g W`` (float32 rows g), or None.

    None when g holds NaN/Inf (see :func:`prepare`) or needs more than ``max_parts``
    bfloat16 parts (the float32 FMA kernel is faster for three).
    """
    return _transposed(g, w_fp8, max_parts, lambda gb, parts, out: _t_kernel(
        w_fp8, gb, parts, g.shape[0], weight_scale_inv, byte_tables(), t_column_order(), out))


def _transposed(g: np.ndarray, w_fp8: np.ndarray, max_parts: int, run: Any
                ) -> np.ndarray | None:
    """What the ``g W`` kernels share around ``run(gb, parts, out)``.

    g split into bfloat16 parts before, the rows' scales applied after; None where
    :func:`gemm_t` says.
    """
    prepared = prepare(g, in_order=True)
    if prepared is None or prepared[1] > max_parts:
        return None
    gb, parts, row_scale = prepared
    out = np.empty((g.shape[0], w_fp8.shape[1]), dtype=np.float32)
    run(gb, parts, out)
    with np.errstate(over="ignore"):  # a product beyond float32's range is +-inf
        return (out * row_scale[:, None]).astype(np.float32)


# ---------------------------------------------- the transposed product for a few rows of g
# g W with a few rows of g: no buffer of decoded pairs (which pays only when many rows of g
# share it). Each task owns a run of W's row tiles and reads four rows at a time whole,
# line by line (four streams, the next rows prefetched into L2 as it goes): each pair of
# rows is decoded, paired column by column and multiplied at once into K sums per row of g
# (L1/L2); the tasks' sums are added at the end. Column tasks (each thread reading 512
# bytes of every row) ran at half the rate from DRAM.

#: Runs of W's row tiles the few-rows transposed product splits W into, whatever the threads
#: (their sums are added in a fixed order: the same result on any number of threads).
T1_TASKS = 8
#: Steps (of four rows of W) ahead whose lines the few-rows transposed product prefetches:
#: 1-4 measured alike on Zen 4 (2 threads, rotating weights: 404-542 us a 2048x7168 product).
T1_AHEAD = 4


@intrinsic
def _pairs_dot(typingctx, w, first, k, n_pairs, n_lines, gb, g0, parts, gstride, m_rows,  # noqa: ARG001
               tab, rows_left, acc):
    """``acc[m, l, lanes] += sum_p sum_q (pair q, line l of W) . (g row m part p, g0 + 2q..)``.

    Rows ``2q`` and ``2q + 1`` of W start at bytes ``first + 2q * k`` and ``+ k``; line ``l``
    is their 64 codes from byte ``64 l`` on, decoded exactly (:func:`_decode`) and paired
    as :func:`_decode_pairs` pairs them (lanes in :func:`t_column_order`). ``gb``: 1-D
    uint16, part ``p`` of row ``m`` of g from ``(p * m_rows + m) * gstride``; ``acc``:
    float32, ``k`` a row of g, 64 a line. Two pairs a step; the lines of the four rows
    ``T1_AHEAD`` steps on are prefetched into L2 line by line while they are inside W
    (``rows_left`` rows from ``first`` on).
    """
    if not (isinstance(w, types.Array) and w.dtype == types.uint8
            and isinstance(gb, types.Array) and gb.dtype == types.uint16
            and isinstance(acc, types.Array) and acc.dtype == types.float32):
        return None
    sig = types.void(w, types.intp, types.intp, types.intp, types.intp, gb, types.intp,
                     types.intp, types.intp, types.intp, tab, types.intp, acc)

    def codegen(context, builder, signature, args):
        i32, i64, f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
        v64i8, v16i32, v16f = ir.VectorType(ir.IntType(8), 64), ir.VectorType(i32, 16), \
            ir.VectorType(f32, 16)
        mod = builder.module
        dp = mod.declare_intrinsic("llvm.x86.avx512bf16.dpbf16ps.512", (),
                                   ir.FunctionType(v16f, [v16f, v16i32, v16i32]))

        data = functools.partial(array_address, context, builder, signature, args)

        def c64(v):
            return ir.Constant(i64, v)

        w_base, g_base, a_base = data(0), data(5), data(12)
        first, k, n_pairs, n_lines, g0, parts, gstride = (args[1], args[2], args[3], args[4],
                                                          args[6], args[7], args[8])
        m_rows, rows_left = args[9], args[11]
        c = _decode_consts(builder, data(10))

        def pair(qq, _):  # pairs 2 qq and 2 qq + 1: rows 4 qq .. 4 qq + 3
            q = builder.shl(qq, c64(1))
            a_addr = builder.add(w_base, builder.add(first, builder.mul(builder.shl(
                q, c64(1)), k)))
            # the rows T1_AHEAD steps on (4 a step), prefetched line by line below; the
            # current rows again where those would pass W's end
            ahead_ok = builder.icmp_signed("<", builder.add(builder.shl(q, c64(1)), c64(
                4 * T1_AHEAD + 3)), rows_left)
            p_addr = builder.select(ahead_ok, builder.add(a_addr, builder.mul(c64(
                4 * T1_AHEAD), k)), a_addr)

            def line(ln, _):
                off = builder.shl(ln, c64(6))
                for r in range(4):
                    emit_prefetch(builder, builder.add(builder.add(
                        p_addr, builder.mul(c64(r), k)), off), 2)
                raws = [builder.load(builder.inttoptr(builder.add(builder.add(
                    a_addr, builder.mul(c64(r), k)), off), v64i8.as_pointer()), align=1)
                        for r in range(4)]
                words = _decode(builder, c, raws)
                regs = [[builder.bitcast(v, v16i32) for v in _pair_rows(
                    builder, words[4 * h:4 * h + 4])] for h in (0, 1)]  # rows 0, 1 and 2, 3

                def row(m, _):  # row m of g: its sums of this line, read and written once
                    base = builder.add(a_base, builder.add(builder.shl(builder.mul(m, k),
                                                                       c64(2)),
                                                           builder.shl(ln, c64(8))))
                    ptrs = [builder.inttoptr(builder.add(base, c64(64 * j)),
                                             v16f.as_pointer()) for j in range(4)]

                    def part(p, sums):
                        g_row = builder.mul(builder.add(builder.mul(p, m_rows), m), gstride)
                        for h in (0, 1):
                            gi = builder.add(g_row, builder.add(g0, builder.add(
                                builder.shl(q, c64(1)), c64(2 * h))))
                            gv = builder.load(builder.inttoptr(builder.add(
                                g_base, builder.shl(gi, c64(1))), i32.as_pointer()), align=2)
                            gs = splat(builder, gv, v16i32)
                            sums = [builder.call(dp, [s, r, gs])
                                    for s, r in zip(sums, regs[h], strict=True)]
                        return sums

                    sums = carried_loop(builder, parts, [builder.load(p, align=4)
                                                         for p in ptrs], part, "t1.p")
                    for s, p in zip(sums, ptrs, strict=True):
                        builder.store(s, p, align=4)
                    return []

                carried_loop(builder, m_rows, [], row, "t1.m")
                return []

            carried_loop(builder, n_lines, [], line, "t1.l")
            return []

        carried_loop(builder, builder.ashr(n_pairs, c64(1)), [], pair, "t1.q")
        return context.get_dummy_value()

    return sig, codegen


@njit(parallel=True, fastmath={"contract", "nsz"})
def _t_rows_kernel(w, gb, parts, m_rows, scale, tab, order, n_tasks, out):
    # out[m, c] = sum over the parts p of gb rows p * m_rows + m . W column c (x 2^-8): each
    # task owns a run of W's row tiles and reads its rows whole, four at a time
    n, k = w.shape
    flat = w.reshape(-1)
    gflat = gb.reshape(-1)
    gstride = gb.shape[1]
    n_lines = k // T_COLS
    n_row_tiles = n // TILE
    partial = np.zeros((n_tasks, m_rows, k), dtype=np.float32)
    for task in prange(n_tasks):
        t_first = task * n_row_tiles // n_tasks
        t_end = (task + 1) * n_row_tiles // n_tasks
        acc = np.empty((m_rows, k), dtype=np.float32)
        total = partial[task]
        for t in range(t_first, t_end):
            acc[:] = 0
            _pairs_dot(flat, t * TILE * k, k, TILE // 2, n_lines, gflat, t * TILE, parts,
                       gstride, m_rows, tab, n - t * TILE, acc.reshape(-1))
            for m in range(m_rows):
                for c in range(k):
                    total[m, c] += scale[t, c // TILE] * acc[m, c]
    for m in range(m_rows):
        for ln in range(n_lines):
            for j in range(T_COLS):
                v = np.float32(0)
                for task in range(n_tasks):
                    v += partial[task, m, ln * T_COLS + j]
                out[m, ln * T_COLS + order[j]] = v


def gemm_t_rows(g: np.ndarray, w_fp8: np.ndarray, weight_scale_inv: np.ndarray,
                max_parts: int = 3) -> np.ndarray | None:
    """:func:`gemm_t` for a few rows of g, without the buffer of decoded pairs.

    Runs where :func:`fits_t` does; None as for :func:`gemm_t`. Faster than the FMA kernel
    for float32 g (three parts) at one and two rows and for bfloat16-valued g below the
    buffered kernel's 12 rows (docs/benchmarks.md, session 22).
    """
    n_tasks = max(1, min(T1_TASKS, w_fp8.shape[0] // TILE))
    return _transposed(g, w_fp8, max_parts, lambda gb, parts, out: _t_rows_kernel(
        w_fp8, gb, parts, g.shape[0], weight_scale_inv, byte_tables(), t_column_order(),
        n_tasks, out))
