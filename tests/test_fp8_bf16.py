"""The AVX-512 BF16 FP8 kernels (backends/cpu/_fp8_bf16.py): decode, activation parts, sums."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit
from fp8_data import bf16_values, quantized_weight
from fusekit.backends.cpu import _fp8_bf16 as bf16
from fusekit.ops.fp8_matmul import fp8_gate_up_reference, fp8_gemv_reference

pytestmark = pytest.mark.skipif(not bf16.available(),
                                reason="Numba's target has no AVX-512 BF16/VBMI/BW")


def e4m3_values():
    """The value of every E4M3FN code (NaN codes read as +-480, as the CPU kernels do)."""
    codes = np.arange(256, dtype=np.uint8)
    vals = fusekit.ops.fp8_decode(codes, "e4m3fn").astype(np.float64)
    vals[0x7F], vals[0xFF] = 480.0, -480.0
    return vals


def as_float(bits16):
    return (bits16.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def test_byte_tables_hold_every_magnitude_times_2_to_the_minus_8():
    tab = bf16.byte_tables()
    bits = tab[:128].astype(np.uint16) | (tab[128:].astype(np.uint16) << 8)
    np.testing.assert_array_equal(as_float(bits), e4m3_values()[:128] * 2.0**-8)
    assert (as_float(bits)[1:] >= 2.0**-126).all()  # normal: vdpbf16ps flushes no weight


def decode_through_kernel(w):
    """W (N, K) read back through the kernel: x = identity rows, scale 1."""
    n, k = w.shape
    x = np.eye(k, dtype=np.float32)
    s = np.ones(((n + 127) // 128, k // 128), np.float32)
    return bf16.gemm(x, w, s).T.astype(np.float64)


def test_every_code_decodes_exactly_by_the_tables():
    # every group holds exponent-0 codes, so every tile takes the table decode
    w = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    np.testing.assert_array_equal(decode_through_kernel(w), e4m3_values()[w])


def test_normal_codes_decode_exactly_by_the_fast_path():
    normal = np.array([c for c in range(256) if c & 0x78], dtype=np.uint8)  # 240 codes
    w = np.stack([np.roll(normal, r)[:128] for r in range(5)] +
                 [np.roll(normal, r)[112:240] for r in range(3)])
    np.testing.assert_array_equal(decode_through_kernel(w), e4m3_values()[w])


def test_one_subnormal_code_sends_only_its_tile_to_the_tables():
    w = np.full((4, 384), 0x38, dtype=np.uint8)  # 1.0
    w[2, 200] = 0x01  # 2^-9, in the second tile
    w[0, 10] = 0x80  # -0.0, in the first
    np.testing.assert_array_equal(decode_through_kernel(w), e4m3_values()[w])


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 5), k_tiles=st.integers(1, 3), seed=st.integers(0, 2**16),
       spread=st.sampled_from([0.0, 30.0, 60.0]))
def test_parts_sum_exactly_to_the_activations(rows, k_tiles, seed, spread):
    # exact for activations down to 2^-140 times the row's largest (here 2^-120 at most)
    rng = np.random.default_rng(seed)
    k = 128 * k_tiles
    mant = rng.standard_normal((rows, k))
    expo = rng.uniform(-spread, spread, (rows, k)).round()
    x = (mant * 2.0**expo).astype(np.float32)
    x[rng.random((rows, k)) < 0.1] = 0.0
    xb, parts, row_scale = bf16.prepare(x)
    inverse = np.argsort(bf16.bf16_order(k))
    total = sum(as_float(xb[p * rows:(p + 1) * rows, :k])[:, inverse] for p in range(3))
    np.testing.assert_array_equal(total * row_scale[:, None] * 2.0**-bf16.WEIGHT_SHIFT,
                                  x.astype(np.float64))
    assert 1 <= parts <= 3


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_split_gives_three_bfloat16s_that_sum_exactly(seed):
    # any float32 bit pattern of magnitude 2^-60 .. 2^64 (prepare's range), ties included
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**23, 256, dtype=np.uint32)
    bits[:64] |= np.uint32(0x7FFF)  # low halves at and around the rounding ties
    bits[64:96] = (bits[64:96] & np.uint32(0x7F0000)) | np.uint32(0x8000)  # exact ties
    expo = rng.integers(127 - 60, 127 + 64, 256, dtype=np.uint32)
    sign = rng.integers(0, 2, 256, dtype=np.uint32) << np.uint32(31)
    row = (sign | (expo << np.uint32(23)) | bits).view(np.float32)
    t = np.empty((3, row.size), np.uint16)
    bf16._split_row(row, t, np.float32(1), np.float32(1))
    parts = (t.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
    np.testing.assert_array_equal(parts.sum(axis=0), row.astype(np.float64))


def test_activations_far_below_the_row_maximum_lose_only_their_low_bits():
    x = np.array([[1e30] + [1e-12] * 127], np.float32)  # 2^-139 of the maximum
    xb, _, row_scale = bf16.prepare(x)
    inverse = np.argsort(bf16.bf16_order(128))
    total = sum(as_float(xb[p:p + 1, :128])[:, inverse] for p in range(3))
    total = total * row_scale[:, None] * 2.0**-bf16.WEIGHT_SHIFT
    np.testing.assert_allclose(total, x.astype(np.float64), rtol=1e-7)


def test_bfloat16_activations_need_one_part_float32_three():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 256)).astype(np.float32)
    as_bf16 = bf16_values(x)
    assert bf16.prepare(as_bf16)[1] == 1
    sixteen_bits = (x.view(np.uint32) & np.uint32(0xFFFFFF00)).view(np.float32)
    assert bf16.prepare(sixteen_bits)[1] <= 2
    assert bf16.prepare(x)[1] == 3


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_activations_go_to_the_fma_kernel(bad, monkeypatch):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((64, 256)) * 0.02).astype(np.float32)
    q, s = fusekit.ops.fp8_block_quantize(w)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    x[1, 7] = bad
    assert bf16.prepare(x) is None
    got = fusekit.ops.fp8_gemv(x, q, s, backend="cpu")
    monkeypatch.setenv("FUSEKIT_FP8_BF16", "0")
    want = fusekit.ops.fp8_gemv(x, q, s, backend="cpu")
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got[0]).all() and not np.isfinite(got[1]).any()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_one_row_with_nan_or_inf_goes_to_the_fma_kernel(bad, monkeypatch):
    # the one-row kernel prepares x inside its launch and reports NaN/Inf by 0 parts
    rng = np.random.default_rng(2)
    q, s = fusekit.ops.fp8_block_quantize((rng.standard_normal((64, 256)) * 0.02)
                                          .astype(np.float32))
    x = rng.standard_normal((1, 256)).astype(np.float32)
    x[0, 5] = bad
    assert bf16.gemm(x, q, s) is None
    got = fusekit.ops.fp8_gemv(x, q, s, backend="cpu")
    monkeypatch.setenv("FUSEKIT_FP8_BF16", "0")
    np.testing.assert_array_equal(got, fusekit.ops.fp8_gemv(x, q, s, backend="cpu"))
    assert not np.isfinite(got).any()


def relative_errors(got, x, q, s):
    ref = fp8_gemv_reference(x.astype(np.float64), q, s)
    deq = fusekit.ops.fp8_block_dequantize(q, s).astype(np.float64)
    bound = np.abs(x.astype(np.float64)) @ np.abs(deq.T)
    return np.abs(got.astype(np.float64) - ref) / bound


@pytest.mark.parametrize("m", [1, 2, 5, 16, 64])
@pytest.mark.parametrize("n,k", [(130, 384), (64, 128), (9, 256)])
@pytest.mark.parametrize("kind", ["float32", "bfloat16", "two-parts", "subnormal-heavy"])
def test_products_match_float64(m, n, k, kind):
    rng = np.random.default_rng(m * 1000 + n)
    q, s = quantized_weight(rng, n, k, "float32" if kind == "two-parts" else kind)
    x = rng.standard_normal((m, k)).astype(np.float32)
    if kind == "bfloat16":
        x = bf16_values(x)
    if kind == "two-parts":  # 16 significant bits: two bfloat16 parts
        x = (x.view(np.uint32) & np.uint32(0xFFFFFF00)).view(np.float32)
        assert bf16.prepare(x)[1] == 2
    got = fusekit.ops.fp8_gemv(x, q, s, backend="cpu")
    assert relative_errors(got, x, q, s).max() <= 1e-6


def test_tiny_and_huge_rows_keep_their_scale():
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((32, 256)) * 0.02).astype(np.float32)
    q, s = fusekit.ops.fp8_block_quantize(w)
    x = rng.standard_normal((3, 256)).astype(np.float32)
    x[0] *= np.float32(1e-38)  # products below float32's normal range at the end
    x[1] *= np.float32(1e30)
    x[2] = 0.0
    ref = fp8_gemv_reference(x.astype(np.float64), q, s)
    for got in (bf16.gemm(x, q, s), np.concatenate([bf16.gemm(r[None], q, s) for r in x])):
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-5)  # all rows, and one by one
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-44)
        assert (got[2] == 0).all()


@pytest.mark.parametrize("chunk_bytes", [1, 2 * 5 * 3 * 128 * 2])
def test_k_in_chunks_gives_the_same_sums(chunk_bytes):
    # x's parts (5 rows x 3 parts x 128 bfloat16 a tile) beyond X_CHUNK_BYTES: K = 5 tiles in
    # chunks of one tile, and of two (a ragged last chunk); the same sums in the same order
    rng = np.random.default_rng(4)
    q, s = quantized_weight(rng, 130, 640)
    x = rng.standard_normal((5, 640)).astype(np.float32)
    whole = bf16.gemm(x, q, s)
    got = bf16.gemm(x, q, s, x_chunk_bytes=chunk_bytes)
    ref = fp8_gemv_reference(x.astype(np.float64), q, s)
    bound = np.abs(x).astype(np.float64) @ np.abs(fusekit.ops.fp8_block_dequantize(q, s)).T
    assert (np.abs(got - ref) <= 1e-6 * bound).all()
    np.testing.assert_array_equal(got, whole)


def test_products_beyond_float32_come_out_infinite():
    # the row's scale is applied in float64 and the result rounded once: +-inf, no warning
    w = np.full((8, 128), 400.0, dtype=np.float32)
    w[1::2] *= -1
    q, s = fusekit.ops.fp8_block_quantize(w)
    x = np.full((2, 128), 3e38, dtype=np.float32)
    x[1] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = bf16.gemm(x, q, s)
    assert (got[0, ::2] == np.inf).all() and (got[0, 1::2] == -np.inf).all()
    np.testing.assert_allclose(got[1], fp8_gemv_reference(x[1:].astype(np.float64), q, s)[0],
                               rtol=1e-6)


def test_gate_up_matches_float64():
    rng = np.random.default_rng(3)
    mats = []
    for _ in range(2):
        w = (rng.standard_normal((130, 256)) * 0.05).astype(np.float32)
        mats.append(fusekit.ops.fp8_block_quantize(w))
    x = rng.standard_normal((4, 256)).astype(np.float32)
    got = bf16.gate_up(x, *mats[0], *mats[1]).astype(np.float64)
    want = fp8_gate_up_reference(x.astype(np.float64), *mats[0], *mats[1])
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6 * np.abs(want).max())


def test_shapes_the_kernel_does_not_take_fall_back():
    assert bf16.fits(7168, 128) and bf16.fits(128, 128)
    assert not bf16.fits(7168 + 64, 128)  # a partial last tile
    assert not bf16.fits(7168, 64)  # other tile sizes
    assert not bf16.fits(0, 128)


def test_empty_activations():
    q = np.zeros((8, 128), np.uint8)
    s = np.ones((1, 1), np.float32)
    assert bf16.gemm(np.zeros((0, 128), np.float32), q, s).shape == (0, 8)


# ------------------------------------------------------------ the transposed product g W


def transposed_case(seed, m, n, k, kind):
    """``(g, q, s)``: m rows of g (bfloat16 values for ``kind="bfloat16"``), a weight of kind."""
    rng = np.random.default_rng(seed)
    q, s = quantized_weight(rng, n, k, kind)
    g = rng.standard_normal((m, n)).astype(np.float32)
    return (bf16_values(g) if kind == "bfloat16" else g), q, s


def relative_errors_t(got, g, q, s):
    deq = fusekit.ops.fp8_block_dequantize(q, s).astype(np.float64)
    ref = g.astype(np.float64) @ deq
    bound = np.abs(g.astype(np.float64)) @ np.abs(deq)
    return np.abs(got.astype(np.float64) - ref) / np.maximum(bound, 1e-300)


@pytest.mark.parametrize("m", [1, 3, 4, 9])
@pytest.mark.parametrize("n,k", [(128, 64), (256, 384), (384, 1152)])
@pytest.mark.parametrize("kind", ["float32", "bfloat16", "subnormal-heavy"])
def test_transposed_products_match_float64(m, n, k, kind):
    # k of 1152: two tasks of 512 columns and one of 128; m of 3 and 9: rows of g left over
    # after the blocks of four
    g, q, s = transposed_case(m * 1000 + n + k, m, n, k, kind)
    got = bf16.gemm_t(g, q, s)
    assert got.shape == (m, k) and got.dtype == np.float32
    assert relative_errors_t(got, g, q, s).max() <= 1e-6


def test_every_code_goes_through_the_transposed_product_exactly():
    # rows of W are pairs of code rows: every code meets a one-hot row of g exactly
    codes = np.tile(np.arange(256, dtype=np.uint8).reshape(4, 64), (32, 1))  # 128 x 64
    s = np.ones((1, 1), np.float32)
    got = bf16.gemm_t(np.eye(128, dtype=np.float32), codes, s)
    np.testing.assert_array_equal(got.astype(np.float64), e4m3_values()[codes])


def test_transposed_product_keeps_tiny_and_huge_rows_and_refuses_nan():
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((128, 128)) * 0.02).astype(np.float32)
    q, s = fusekit.ops.fp8_block_quantize(w)
    g = rng.standard_normal((3, 128)).astype(np.float32)
    g[0] *= np.float32(1e-38)
    g[1] *= np.float32(1e30)
    g[2] = 0.0
    got = bf16.gemm_t(g, q, s)
    ref = g.astype(np.float64) @ fusekit.ops.fp8_block_dequantize(q, s).astype(np.float64)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-5)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-44)
    assert (got[2] == 0).all()
    g[1, 5] = np.nan
    assert bf16.gemm_t(g, q, s) is None
    assert bf16.gemm_t(rng.standard_normal((2, 128)).astype(np.float32), q, s,
                       max_parts=1) is None  # float32 values need three parts


def test_gemv_t_takes_the_bf16_kernel_for_many_bfloat16_rows(monkeypatch):
    from fusekit.backends.cpu import fp8_matmul as cpu_mm

    calls = []
    real = bf16.gemm_t
    monkeypatch.setattr(bf16, "gemm_t", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((256, 128)) * 0.02).astype(np.float32)
    q, s = fusekit.ops.fp8_block_quantize(w)
    m = cpu_mm.T_BF16_MIN_M
    g = rng.standard_normal((2, m, 256)).astype(np.float32)
    g_bf16 = bf16_values(g)
    for gg in (g_bf16, g):  # bfloat16 values: the bf16 kernel; float32: it declines
        got = fusekit.ops.fp8_gemv_t(gg, q, s, backend="cpu")
        assert got.shape == (2, m, 128)
        assert relative_errors_t(got.reshape(-1, 128), gg.reshape(-1, 256), q, s).max() <= 1e-6
    assert calls == [{"max_parts": 1}] * 2
    calls.clear()
    fusekit.ops.fp8_gemv_t(g_bf16[0, : m - 1], q, s, backend="cpu")  # too few rows
    assert calls == []


@pytest.mark.parametrize("m", [1, 2, 5])
@pytest.mark.parametrize("n,k", [(128, 128), (256, 384), (1152, 256)])
@pytest.mark.parametrize("kind", ["float32", "bfloat16", "subnormal-heavy"])
def test_few_rows_transposed_product_matches_float64(m, n, k, kind):
    # n of 1152: nine row tiles over T1_TASKS = 8 runs (one run of two); the prefetch of the
    # rows ahead stops at W's end
    g, q, s = transposed_case(m + n + k, m, n, k, kind)
    got = bf16.gemm_t_rows(g, q, s)
    assert got.shape == (m, k) and got.dtype == np.float32
    assert relative_errors_t(got, g, q, s).max() <= 1e-6
    huge = g * np.float32(1e30)  # the row's scale keeps these exact
    assert relative_errors_t(bf16.gemm_t_rows(huge, q, s), huge, q, s).max() <= 1e-6
    tiny = g * np.float32(1e-30)  # outputs near 1e-30 (float32's normal range ends at 1e-38)
    assert relative_errors_t(bf16.gemm_t_rows(tiny, q, s), tiny, q, s).max() <= 1e-6


def test_few_rows_transposed_product_is_the_same_on_any_threads_and_refuses_nan():
    rng = np.random.default_rng(6)
    q, s = quantized_weight(rng, 640, 256)
    g = rng.standard_normal((2, 640)).astype(np.float32)
    before = fusekit.get_num_threads()
    try:
        fusekit.set_num_threads(1)
        one = bf16.gemm_t_rows(g, q, s)
        fusekit.set_num_threads(2)
        two = bf16.gemm_t_rows(g, q, s)
    finally:
        fusekit.set_num_threads(before)
    np.testing.assert_array_equal(one, two)
    assert bf16.gemm_t_rows(g, q, s, max_parts=1) is None  # float32 values need three parts
    g[1, 7] = np.nan
    assert bf16.gemm_t_rows(g, q, s) is None


def test_gemv_t_takes_the_few_rows_kernel_below_the_buffered_one(monkeypatch):
    from fusekit.backends.cpu import fp8_matmul as cpu_mm

    used = []
    real = bf16.gemm_t_rows
    monkeypatch.setattr(bf16, "gemm_t_rows",
                        lambda *a, **kw: used.append(real(*a, **kw) is not None) or real(*a, **kw))
    rng = np.random.default_rng(7)
    q, s = quantized_weight(rng, 256, 128)
    f32_max = cpu_mm.T_ROWS_F32_MAX_M
    cases = [(rng.standard_normal(256).astype(np.float32), True),  # one float32 row
             (rng.standard_normal((f32_max, 256)).astype(np.float32), True),
             (rng.standard_normal((f32_max + 1, 256)).astype(np.float32), False),  # FMA
             (bf16_values(rng.standard_normal((1, cpu_mm.T_BF16_MIN_M - 1, 256))
                          .astype(np.float32)), True)]
    for g, taken in cases:
        used.clear()
        got = fusekit.ops.fp8_gemv_t(g, q, s, backend="cpu")
        assert got.shape == (*g.shape[:-1], 128)
        assert relative_errors_t(got.reshape(-1, 128), g.reshape(-1, 256), q, s).max() <= 1e-6
        assert used == [taken]


def test_shapes_the_transposed_kernel_does_not_take():
    assert bf16.fits_t(2048, 7168, 128) and bf16.fits_t(128, 128, 128)
    assert not bf16.fits_t(2048 + 64, 7168, 128)  # a partial tile of rows
    assert not bf16.fits_t(2048, 7168 + 64, 128)  # of columns
    assert not bf16.fits_t(2048, 7168, 64) and not bf16.fits_t(0, 128, 128)


def test_torch_backward_of_bf16_activations_runs_the_bf16_transposed_kernel(monkeypatch):
    # a bfloat16 model's backward: the gradient reaching fp8_gemv_t holds bfloat16 values
    import torch

    from fusekit.backends.cpu import fp8_matmul as cpu_mm

    calls = []
    real = bf16.gemm_t
    monkeypatch.setattr(bf16, "gemm_t", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    rng = np.random.default_rng(6)
    w = (rng.standard_normal((256, 384)) * 0.02).astype(np.float32)
    q, s = fusekit.ops.fp8_block_quantize(w)
    m = cpu_mm.T_BF16_MIN_M + 4
    x = torch.from_numpy(rng.standard_normal((m, 384)).astype(np.float32)).bfloat16()
    x.requires_grad_()
    y = fusekit.ops.fp8_gemv(x, torch.from_numpy(q), torch.from_numpy(s))
    gy = torch.from_numpy(rng.standard_normal((m, 256)).astype(np.float32)).bfloat16()
    (y * gy).sum().backward()
    deq = fusekit.ops.fp8_block_dequantize(q, s).astype(np.float64)
    want = gy.double().numpy() @ deq
    got = x.grad.double().numpy()
    assert calls == [1]
    np.testing.assert_allclose(got, want, rtol=2**-7, atol=2**-7 * np.abs(want).max())
