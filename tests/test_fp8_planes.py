"""The M=1 FP8 decode in planes (backends/cpu/_fp8_planes.py)."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit
from fp8_data import quantized_weight
from fusekit._cpu import cpu_features
from fusekit.backends.cpu._fp8_planes import GROUP, dot4_planes, dot4_planes_portable, plane_order


def scaled_decode(codes):
    """What the CPU kernels multiply by: the code's value times 2^-120 (as _e4m3_scaled)."""
    bits = (codes.astype(np.int8).astype(np.int32) << 20) & np.int32(-2014314496)
    return bits.view(np.float32).astype(np.float64)


@numba.njit
def dot4(w, offsets, xp, xo, n_groups):
    return dot4_planes(w, offsets[0], offsets[1], offsets[2], offsets[3], xp, xo, n_groups)


@numba.njit
def dot4_portable(w, offsets, xp, xo, n_groups):
    return dot4_planes_portable(w, offsets[0], offsets[1], offsets[2], offsets[3], xp, xo,
                                n_groups)


FORMS = [dot4, dot4_portable]  # the decode fusekit compiles here (AVX2 or not), the portable one


def test_plane_order_puts_each_group_in_lane_order():
    order = plane_order(64, group=32)
    assert sorted(order) == list(range(64))
    # group 0: codes 0, 4, .., 28, then 2, 6, .., then 1, 5, .., then 3, 7, ..
    assert list(order[:8]) == [0, 4, 8, 12, 16, 20, 24, 28]
    assert list(order[8:16]) == [2, 6, 10, 14, 18, 22, 26, 30]
    assert list(order[16:24]) == [1, 5, 9, 13, 17, 21, 25, 29]
    assert list(order[24:32]) == [3, 7, 11, 15, 19, 23, 27, 31]
    assert (order[32:] == order[:32] + 32).all()
    wide = plane_order(128, group=64)  # the AVX-512 groups: 16 lanes a plane
    assert list(wide[:16]) == list(range(0, 64, 4))
    assert list(wide[16:32]) == list(range(2, 64, 4))
    assert (wide[64:] == wide[:64] + 64).all()
    assert GROUP in (32, 64)
    assert (plane_order(2 * GROUP) == plane_order(2 * GROUP, group=GROUP)).all()


@pytest.mark.parametrize("dot4", FORMS)
def test_every_code_decodes_as_the_portable_kernel(dot4):
    n_groups = 8
    k = n_groups * GROUP
    rng = np.random.default_rng(0)
    w = np.concatenate([np.arange(256, dtype=np.uint8), rng.integers(0, 256, 4 * k,
                                                                      dtype=np.uint8)])[:4 * k]
    for lane in range(k):  # one x value at a time: each product is exact
        x = np.zeros(k, np.float32)
        x[lane] = 1.0
        got = np.array(dot4(w, np.array([0, k, 2 * k, 3 * k]), x[plane_order(k)], 0, n_groups))
        want = scaled_decode(w.reshape(4, k)[:, lane])
        np.testing.assert_array_equal(got, want.astype(np.float32))


@pytest.mark.parametrize("dot4", FORMS)
@settings(max_examples=25, deadline=None)
@given(n_groups=st.integers(0, 20), skip=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_sums_match_float64(dot4, n_groups, skip, seed):
    rng = np.random.default_rng(seed)
    k = (n_groups + skip) * GROUP
    w = rng.integers(0, 256, 4 * k + 7, dtype=np.uint8)
    w[(w & 0x7F) == 0x7F] = 0x33  # NaN codes are not values
    x = rng.standard_normal(k).astype(np.float32) * np.float32(2.0**100)
    offsets = np.array([7, k + 7, 2 * k + 7, 3 * k + 7])
    lo, hi = skip * GROUP, (skip + n_groups) * GROUP
    got = np.array(dot4(w, offsets + lo, x[plane_order(k)], lo, n_groups), dtype=np.float64)
    terms = [x[lo:hi].astype(np.float64) * scaled_decode(w[o + lo:o + hi]) for o in offsets]
    want = np.array([t.sum() for t in terms])
    bound = np.array([np.abs(t).sum() for t in terms]) * 1e-6
    assert (np.abs(got - want) <= bound + 1e-300).all()


def test_both_forms_give_the_same_bits():
    rng = np.random.default_rng(3)
    n_groups = 13
    k = n_groups * GROUP
    w = rng.integers(0, 256, 4 * k, dtype=np.uint8)
    xp = rng.standard_normal(k).astype(np.float32)
    offsets = np.array([0, k, 2 * k, 3 * k])
    assert dot4(w, offsets, xp, 0, n_groups) == dot4_portable(w, offsets, xp, 0, n_groups)


@pytest.mark.skipif("avx2" not in cpu_features().flags, reason="the CPU has no AVX2")
def test_the_avx2_decode_is_vpmaddubsw():
    k = 2 * GROUP
    args = (np.zeros(4 * k, np.uint8), np.array([0, k, 2 * k, 3 * k]), np.zeros(k, np.float32),
            0, 2)
    dot4(*args)
    dot4_portable(*args)
    assert "vpmaddubsw" in "".join(dot4.inspect_asm().values())
    assert "vpmaddubsw" not in "".join(dot4_portable.inspect_asm().values())


@pytest.mark.parametrize("n,k,block", [(7, 32 * 9 + 5, 128), (130, 7168 + 64, 128),
                                       (9, 300, 48), (5, 31, 16)])
def test_m1_gemv_with_ragged_rows_and_columns(n, k, block):
    rng = np.random.default_rng(n)
    w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
    q, s = fusekit.ops.fp8_block_quantize(w, block=block)
    x = rng.standard_normal((1, k)).astype(np.float32)
    got = fusekit.ops.fp8_gemv(x, q, s, block=block, backend="cpu").astype(np.float64)
    deq = fusekit.ops.fp8_block_dequantize(q, s, block=block).astype(np.float64)
    want = x.astype(np.float64) @ deq.T
    bound = np.abs(x.astype(np.float64)) @ np.abs(deq.T) * 1e-6
    assert (np.abs(got - want) <= bound).all()


@pytest.mark.parametrize("m", [1, 4, 5, 9])
@pytest.mark.parametrize("n,k", [(130, 384), (7, 128), (256, 256)])
@pytest.mark.parametrize("codes", ["realistic", "subnormal-heavy"])
def test_transposed_product_by_tiles_matches_float64(m, n, k, codes):
    # fp8_gemv_t's column-tile kernel (cols_t): K whole tiles, any N and M
    rng = np.random.default_rng(m * 100 + n)
    q, s = quantized_weight(rng, n, k, codes)
    g = rng.standard_normal((m, n)).astype(np.float32)
    got = fusekit.ops.fp8_gemv_t(g, q, s, backend="cpu").astype(np.float64)
    deq = fusekit.ops.fp8_block_dequantize(q, s).astype(np.float64)
    want = g.astype(np.float64) @ deq
    bound = np.abs(g.astype(np.float64)) @ np.abs(deq) * 1e-6
    assert (np.abs(got - want) <= bound + 1e-300).all()


def test_transposed_product_tiles_and_columns_agree():
    from fusekit.backends.cpu.fp8_matmul import _gemv_t_cols, _gemv_t_tiles

    rng = np.random.default_rng(5)
    w = (rng.standard_normal((300, 256)) * 0.02).astype(np.float32)
    q, s = fusekit.ops.fp8_block_quantize(w)
    g = rng.standard_normal((6, 300)).astype(np.float32) * np.float32(2.0**100)
    a = np.empty((6, 256), np.float32)
    b = np.empty((6, 256), np.float32)
    _gemv_t_tiles(g, q, s, 128, plane_order(GROUP), a)
    _gemv_t_cols(g, q, s, 128, b)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())
