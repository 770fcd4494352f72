"""The CUDA fp8 and fp8_matmul kernels against the NumPy oracles, in Numba's CUDA simulator.

Inputs are tiny because the simulator runs every GPU thread as a Python thread. Codes and
quantization scales must match the references bit for bit; the products match the float64
references to rounding. Tiles are 4 wide so that 9 x 7 and 9 x 10 weights end in partial
tiles on both axes.
"""

import sys

import numpy as np
import pytest
from numba import cuda

from fusekit._registry import kernels_for
from fusekit.backends.cuda import fp8 as cuda_fp8
from fusekit.backends.cuda import fp8_matmul as cuda_mm
from fusekit.ops.fp8 import (
    FP8_FORMATS,
    decode_table,
    fp8_act_quantize_reference,
    fp8_block_dequantize_reference,
    fp8_block_quantize_reference,
    fp8_decode_reference,
    fp8_encode_reference,
)
from fusekit.ops.fp8_matmul import fp8_gemv_reference, fp8_gemv_t_reference

pytestmark = pytest.mark.cudasim

FORMATS = ["e4m3fn", "e5m2"]
DTYPES = [np.float32, np.float64]
ALL_CODES = np.arange(256, dtype=np.uint8)
BLOCK = 4
TOL = {
    np.float32: {"rtol": 1e-5, "atol": 1e-6},
    np.float64: {"rtol": 1e-13, "atol": 1e-14},
}


def values_to_encode(dtype, seed=0):
    """Random bit patterns (NaN, inf, subnormal, huge, tiny), specials and exact FP8 ties."""
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        bits = rng.integers(0, 2**32, 300, dtype=np.uint64).astype(np.uint32).view(np.float32)
    else:
        bits = rng.integers(0, 2**63, 300, dtype=np.uint64).view(np.float64)
        bits = np.where(np.arange(300) % 2 == 0, bits, -bits)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 448, 464, 480, -500,
                        57344, 61440, 1e30, 2**-9, 2**-10, 3 * 2**-11, 2**-16, 2**-17,
                        1e-40, -1e-45, 5e-324], dtype=dtype)
    pieces = [bits, special, rng.standard_normal(40).astype(dtype) * 100]
    for fmt in FORMATS:
        positive = decode_table(fmt)[: FP8_FORMATS[fmt].max_code + 1]  # increasing
        mid = (positive[1:] + positive[:-1]) / 2  # exact ties between neighbouring codes
        mid = np.concatenate([mid[:20], mid[20::7]]).astype(dtype)  # all subnormal ties
        mid = np.where(np.arange(mid.size) % 2 == 0, mid, -mid)
        pieces += [mid, np.nextafter(mid, dtype(np.inf)), np.nextafter(mid, dtype(-np.inf))]
    return np.concatenate(pieces)


def encode(x, fmt, saturate):
    out = np.empty(x.shape, np.uint8)
    cuda_fp8.fp8_encode_launch(x, out, fmt=fmt, saturate=saturate)
    return out


def quantized_weight(n, k, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)) * np.exp2(rng.integers(-8, 8, (n, k)))
    return fp8_block_quantize_reference(w, BLOCK)


# ----------------------------------------------------------------------------- encode


@pytest.mark.parametrize("saturate", [True, False])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_encode_is_bit_exact_with_the_reference(dtype, fmt, saturate):
    x = values_to_encode(dtype)
    got = encode(x, fmt, saturate)
    expected = fp8_encode_reference(x, fmt, saturate)
    bad = np.nonzero(got != expected)[0]
    assert bad.size == 0, [(float(x[i]), hex(got[i]), hex(expected[i])) for i in bad[:5]]


def test_encode_rounds_float64_ties_that_float32_would_hide():
    # 1 + 1/16 is the tie between codes 56 and 57; just above it must round up.
    x = np.array([1 + 2**-4, 1 + 2**-4 + 2**-40, 1 + 2**-4 - 2**-40, 3 * 2**-10 + 2**-50])
    np.testing.assert_array_equal(encode(x, "e4m3fn", True), fp8_encode_reference(x))


def test_encode_keeps_the_shape_of_a_device_output():
    x = values_to_encode(np.float32)[:60].reshape(3, 4, 5)
    out = cuda.device_array((3, 4, 5), np.uint8)
    cuda_fp8.fp8_encode_launch(cuda.to_device(x), out, threads=32)
    np.testing.assert_array_equal(out.copy_to_host(), fp8_encode_reference(x))


def test_encode_rejects_a_non_contiguous_device_array():
    x = cuda.to_device(np.ones((4, 4), np.float32)).transpose((1, 0))
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda_fp8.fp8_encode_launch(x, np.empty(16, np.uint8))


def test_encode_of_an_empty_array_is_empty():
    assert encode(np.empty((0, 3), np.float32), "e4m3fn", True).shape == (0, 3)


# ----------------------------------------------------------------------------- decode


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_of_every_code_matches_the_reference_bit_for_bit(fmt):
    out = np.empty(256, np.float32)
    cuda_fp8.fp8_decode_launch(ALL_CODES, out, fmt=fmt)
    expected = fp8_decode_reference(ALL_CODES, fmt)
    np.testing.assert_array_equal(out.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_to_float64_with_a_given_table(fmt):
    codes = ALL_CODES.reshape(16, 16)
    out = cuda.device_array((16, 16), np.float64)
    table = cuda.to_device(cuda_fp8.host_table(fmt, "float64"))
    cuda_fp8.fp8_decode_launch(cuda.to_device(codes), out, fmt=fmt, table=table, threads=64)
    np.testing.assert_array_equal(out.copy_to_host(), fp8_decode_reference(codes, fmt, "float64"))


# ------------------------------------------------------------------ block quantization


@pytest.mark.parametrize("dtype", DTYPES)
def test_block_dequantize_of_a_ragged_weight_matches_the_reference(dtype):
    rng = np.random.default_rng(1)
    w_fp8 = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    scale = (rng.uniform(0.5, 2.0, (3, 2)) * 2.0 ** rng.integers(-20, 20, (3, 2))).astype(
        np.float32)
    out = np.empty((9, 7), dtype)
    cuda_fp8.fp8_block_dequantize_launch(w_fp8, scale, out, block=BLOCK, threads=32)
    np.testing.assert_array_equal(
        out, fp8_block_dequantize_reference(w_fp8, scale, np.dtype(dtype).name, BLOCK))


@pytest.mark.parametrize("threads", [4, 32])
@pytest.mark.parametrize("dtype", DTYPES)
def test_block_quantize_of_a_ragged_weight_matches_the_reference(dtype, threads):
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((9, 7)) * np.exp2(rng.integers(-30, 30, (9, 7)))).astype(dtype)
    w[4:8, :4] = 0  # an all-zero tile gets scale 1
    codes = np.empty((9, 7), np.uint8)
    scale = np.empty((3, 2), np.float32)
    cuda_fp8.fp8_block_quantize_launch(w, codes, scale, block=BLOCK, threads=threads)
    ref_codes, ref_scale = fp8_block_quantize_reference(w, BLOCK)
    assert scale[1, 0] == 1.0
    np.testing.assert_array_equal(scale.view(np.uint32), ref_scale.view(np.uint32))
    np.testing.assert_array_equal(codes, ref_codes)


def test_block_quantize_uses_a_given_workspace_for_the_quotient():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 6)).astype(np.float32)
    codes = cuda.device_array((5, 6), np.uint8)
    scale = cuda.device_array((2, 2), np.float32)
    workspace = cuda.device_array(30, np.float64)
    cuda_fp8.fp8_block_quantize_launch(w, codes, scale, block=BLOCK, workspace=workspace,
                                       threads=8)
    ref_codes, ref_scale = fp8_block_quantize_reference(w, BLOCK)
    np.testing.assert_array_equal(codes.copy_to_host(), ref_codes)
    full = np.repeat(np.repeat(ref_scale.astype(np.float64), BLOCK, 0), BLOCK, 1)[:5, :6]
    np.testing.assert_array_equal(workspace.copy_to_host().reshape(5, 6), w / full)


@pytest.mark.parametrize("dtype", DTYPES)
def test_act_quantize_per_token_and_group_matches_the_reference(dtype):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 3, 9)) * 10.0 ** rng.integers(-3, 4, (2, 3, 1))).astype(dtype)
    x[1, 2, 4:8] = 0
    codes = np.empty(x.shape, np.uint8)
    scale = np.empty((2, 3, 3), np.float32)
    cuda_fp8.fp8_act_quantize_launch(x, codes, scale, block=BLOCK, threads=8)
    ref_codes, ref_scale = fp8_act_quantize_reference(x, BLOCK)
    assert scale[1, 2, 1] == 1.0
    np.testing.assert_array_equal(scale.view(np.uint32), ref_scale.view(np.uint32))
    np.testing.assert_array_equal(codes, ref_codes)


def test_act_quantize_of_a_single_token_without_batch_dims():
    x = np.linspace(-3, 5, 10)
    codes = np.empty(10, np.uint8)
    scale = np.empty(3, np.float32)
    cuda_fp8.fp8_act_quantize_launch(x, codes, scale, block=BLOCK, threads=4)
    ref_codes, ref_scale = fp8_act_quantize_reference(x, BLOCK)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(scale, ref_scale)


def test_quantize_rejects_threads_that_are_not_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        cuda_fp8.fp8_block_quantize_launch(np.ones((2, 2)), np.empty((2, 2), np.uint8),
                                           np.empty((1, 1), np.float32), threads=12)


# ------------------------------------------------------------------------- gemv, gemv_t


def gemv(x, w_fp8, scale, **kw):
    out = np.empty((*x.shape[:-1], w_fp8.shape[0]), x.dtype)
    cuda_mm.fp8_gemv_launch(x, w_fp8, scale, out, block=BLOCK, **kw)
    return out


def gemv_t(g, w_fp8, scale, **kw):
    out = np.empty((*g.shape[:-1], w_fp8.shape[1]), g.dtype)
    cuda_mm.fp8_gemv_t_launch(g, w_fp8, scale, out, block=BLOCK, **kw)
    return out


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemv_of_a_ragged_weight_matches_the_reference(dtype, m):
    w_fp8, scale = quantized_weight(9, 10)
    x = np.random.default_rng(5).standard_normal((m, 10)).astype(dtype)
    y = gemv(x, w_fp8, scale)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, fp8_gemv_reference(x, w_fp8, scale, BLOCK), **TOL[dtype])


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemv_t_of_a_ragged_weight_matches_the_reference(dtype, m):
    w_fp8, scale = quantized_weight(9, 10, seed=1)
    g = np.random.default_rng(6).standard_normal((m, 9)).astype(dtype)
    out = gemv_t(g, w_fp8, scale)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, fp8_gemv_t_reference(g, w_fp8, scale, BLOCK), **TOL[dtype])


def test_gemv_serves_more_rows_than_one_pass_holds():
    # m_tile=2 with 5 rows: three passes over the weight, the last one partial.
    w_fp8, scale = quantized_weight(6, 9, seed=2)
    x = np.random.default_rng(7).standard_normal((5, 9))
    y = gemv(x, w_fp8, scale, m_tile=2, rows_per_block=2)
    np.testing.assert_allclose(y, fp8_gemv_reference(x, w_fp8, scale, BLOCK), **TOL[np.float64])
    g = np.random.default_rng(8).standard_normal((5, 6))
    out = gemv_t(g, w_fp8, scale, m_tile=2, splits=2)
    np.testing.assert_allclose(out, fp8_gemv_t_reference(g, w_fp8, scale, BLOCK),
                               **TOL[np.float64])


def test_gemv_keeps_leading_dims_and_takes_a_single_vector():
    w_fp8, scale = quantized_weight(5, 6, seed=3)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 2, 6))
    np.testing.assert_allclose(gemv(x, w_fp8, scale), fp8_gemv_reference(x, w_fp8, scale, BLOCK),
                               **TOL[np.float64])
    v = rng.standard_normal(5)
    out = gemv_t(v, w_fp8, scale)
    assert out.shape == (6,)
    np.testing.assert_allclose(out, fp8_gemv_t_reference(v, w_fp8, scale, BLOCK),
                               **TOL[np.float64])


def test_gemv_uses_the_real_128_block_across_tiles():
    w_fp8, scale = fp8_block_quantize_reference(
        np.random.default_rng(10).standard_normal((3, 130)), 128)
    x = np.random.default_rng(11).standard_normal((1, 130)).astype(np.float32)
    out = np.empty((1, 3), np.float32)
    cuda_mm.fp8_gemv_launch(x, w_fp8, scale, out, block=128, rows_per_block=1)
    np.testing.assert_allclose(out, fp8_gemv_reference(x, w_fp8, scale, 128), **TOL[np.float32])


@pytest.mark.parametrize(("block", "splits", "rows_per_block"), [(6, 3, 3), (5, 2, 1), (8, 1, 2)])
def test_gemv_splits_rows_over_warps_and_reads_vec_bytes_per_step(block, splits,
                                                                   rows_per_block):
    # block 6 reads 2 bytes per step, 5 one, 8 eight; N = 7 leaves a partial block of rows,
    # K = 29 a ragged end of each row and splits that get no whole step.
    w_fp8, scale = fp8_block_quantize_reference(
        np.random.default_rng(12).standard_normal((7, 29)), block)
    x = np.random.default_rng(13).standard_normal((3, 29))
    out = np.empty((3, 7))
    cuda_mm.fp8_gemv_launch(x, w_fp8, scale, out, block=block, splits=splits,
                            rows_per_block=rows_per_block, m_tile=2)
    np.testing.assert_allclose(out, fp8_gemv_reference(x, w_fp8, scale, block),
                               **TOL[np.float64])


@pytest.mark.parametrize(("block", "splits", "rows_per_block", "unroll", "m", "dtype"),
                         [(8, 2, 2, 2, 3, np.float64), (16, 1, 1, 3, 1, np.float32),
                          (8, 1, 3, 1, 5, np.float64)])
def test_wide_gemv_reads_8_byte_words_across_tiles_and_passes(block, splits, rows_per_block,
                                                               unroll, m, dtype):
    # K = 40: 5 words per row, so unrolled loads run past the row's end; N = 7 leaves a
    # partial block of rows; m_tile=2 with m = 3 or 5 makes a partial last pass.
    w_fp8, scale = fp8_block_quantize_reference(
        np.random.default_rng(14).standard_normal((7, 40)), block)
    x = np.random.default_rng(15).standard_normal((m, 40)).astype(dtype)
    out = np.empty((m, 7), dtype)
    cuda_mm.fp8_gemv_launch(x, w_fp8, scale, out, block=block, splits=splits,
                            rows_per_block=rows_per_block, m_tile=2, wide=True, unroll=unroll)
    np.testing.assert_allclose(out, fp8_gemv_reference(x, w_fp8, scale, block), **TOL[dtype])


@pytest.mark.parametrize(("m", "wide"), [(1, True), (4, True), (5, False)])
def test_gemv_reads_words_by_default_for_a_few_rows(monkeypatch, m, wide):
    used = []
    for name in ("_gemv_wide_kernel", "_gemv_kernel"):
        real = getattr(cuda_mm, name)
        monkeypatch.setattr(cuda_mm, name,
                            lambda *a, real=real, name=name: used.append(name) or real(*a))
    w_fp8, scale = fp8_block_quantize_reference(
        np.random.default_rng(16).standard_normal((9, 24)), 8)
    x = np.random.default_rng(17).standard_normal((m, 24))
    out = np.empty((m, 9))
    cuda_mm.fp8_gemv_launch(x, w_fp8, scale, out, block=8)
    assert used == ["_gemv_wide_kernel" if wide else "_gemv_kernel"]
    np.testing.assert_allclose(out, fp8_gemv_reference(x, w_fp8, scale, 8), **TOL[np.float64])


@pytest.mark.parametrize(("shape", "splits", "m", "dtype"), [
    ((4, 8, 4, 2, 2), None, 5, np.float64),  # 2 x 4 threads, M and N in partial tiles
    ((2, 4, 8, 1, 2), 3, 3, np.float32),     # K = 37: 5 chunks in 3 splits, a ragged last one
    ((8, 8, 2, 4, 4), 1, 8, np.float64),     # one split, 2 x 2 threads
])
def test_tiled_gemm_matches_the_reference(shape, splits, m, dtype):
    w_fp8, scale = fp8_block_quantize_reference(
        np.random.default_rng(18).standard_normal((9, 37)), 8)
    x = np.random.default_rng(19).standard_normal((m, 37)).astype(dtype)
    out = np.empty((m, 9), dtype)
    cuda_mm.fp8_gemm_tiled_launch(x, w_fp8, scale, out, block=8, shape=shape, splits=splits)
    np.testing.assert_allclose(out, fp8_gemv_reference(x, w_fp8, scale, 8), **TOL[dtype])


def test_tiled_gemm_sums_nothing_to_zeros_and_refuses_a_shape_that_does_not_tile():
    w_fp8, scale = quantized_weight(5, 6)
    out = np.full((2, 5), np.nan)
    cuda_mm.fp8_gemm_tiled_launch(np.empty((2, 0)), np.empty((5, 0), np.uint8),
                                  np.ones((2, 0), np.float32), out, block=BLOCK,
                                  shape=(2, 4, 4, 1, 2))
    np.testing.assert_array_equal(out, 0)
    with pytest.raises(ValueError, match="must divide"):
        cuda_mm.fp8_gemm_tiled_launch(np.ones((1, 6)), w_fp8, scale, np.empty((1, 5)),
                                      block=BLOCK, shape=(2, 4, 3, 1, 2))


def test_gemv_takes_the_tiled_kernel_when_asked():
    # the default shape: 128 threads, K chunks of 32 (so scale blocks of 32 or more)
    w_fp8, scale = fp8_block_quantize_reference(
        np.random.default_rng(21).standard_normal((9, 70)), 32)
    x = np.random.default_rng(20).standard_normal((3, 70))
    out = np.empty((3, 9))
    cuda_mm.fp8_gemv_launch(x, w_fp8, scale, out, block=32, tiled=True)
    np.testing.assert_allclose(out, fp8_gemv_reference(x, w_fp8, scale, 32), **TOL[np.float64])


def test_wide_gemv_refuses_a_weight_it_cannot_read_in_words():
    w_fp8, scale = quantized_weight(5, 6)
    with pytest.raises(ValueError, match="multiples of 8"):
        gemv(np.ones((1, 6)), w_fp8, scale, wide=True)


def test_gemv_of_an_empty_batch_is_empty():
    w_fp8, scale = quantized_weight(5, 6)
    assert gemv(np.empty((0, 6)), w_fp8, scale).shape == (0, 5)


# --------------------------------------------------------------------- module, registration


def test_importing_the_cuda_fp8_modules_does_not_import_cupy():
    assert "cupy" not in sys.modules


@pytest.mark.parametrize("op, dtypes", [
    ("fp8_encode", {"float32", "float64"}),
    ("fp8_decode", {"uint8"}),
    ("fp8_block_quantize", {"float32", "float64"}),
    ("fp8_block_dequantize", {"uint8"}),
    ("fp8_act_quantize", {"float32", "float64"}),
    ("fp8_gemv", {"float32", "float64"}),
    ("fp8_gemv_t", {"float32", "float64"}),
])
def test_cuda_kernels_are_registered_for_cupy(op, dtypes):
    (kernel,) = [k for k in kernels_for(op) if k.backend == "cuda"]
    assert kernel.arrays == {"cupy"}
    assert kernel.dtypes == dtypes
