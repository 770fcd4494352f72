"""Block quantization in the DeepSeek-V3 layout, and per-token activation quantization."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit
from fusekit.ops.fp8 import (
    decode_table,
    fp8_act_quantize_reference,
    fp8_block_dequantize_reference,
    fp8_block_quantize_reference,
)

CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]


def weight(n, k, seed=0):
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", [(256, 384), (300, 200), (1, 129), (128, 1)])
def test_block_quantize_layout_and_match_with_reference(backend, shape):
    w = weight(*shape)
    w_fp8, scale = fusekit.ops.fp8_block_quantize(w, backend=backend)
    assert w_fp8.dtype == np.uint8 and w_fp8.shape == shape
    assert scale.dtype == np.float32
    assert scale.shape == (-(-shape[0] // 128), -(-shape[1] // 128))
    ref_codes, ref_scale = fp8_block_quantize_reference(w)
    np.testing.assert_array_equal(w_fp8, ref_codes)
    np.testing.assert_array_equal(scale, ref_scale)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_scale_is_tile_amax_over_448_and_tile_max_hits_448(backend):
    w = weight(300, 200)
    w_fp8, scale = fusekit.ops.fp8_block_quantize(w, backend=backend)
    for bi, bj in [(0, 0), (2, 1), (1, 0)]:
        tile = w[bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128]
        assert scale[bi, bj] == np.float32(np.abs(tile).max() / 448.0)
        codes = w_fp8[bi * 128:(bi + 1) * 128, bj * 128:(bj + 1) * 128]
        assert (codes & 0x7F).max() == 0x7E  # the largest element maps to +-448


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_round_trip_error_is_within_half_an_e4m3_step(backend):
    w = weight(300, 260, seed=3)
    w_fp8, scale = fusekit.ops.fp8_block_quantize(w, backend=backend)
    back = fusekit.ops.fp8_block_dequantize(w_fp8, scale, dtype="float64", backend=backend)
    full = np.repeat(np.repeat(scale.astype(np.float64), 128, 0), 128, 1)[:300, :260]
    # E4M3: relative step 2^-3 for normals (half: 2^-4), absolute 2^-9 below 2^-6.
    bound = np.maximum(np.abs(w) * 2.0**-4, full * 2.0**-10) * (1 + 1e-12)
    assert (np.abs(back - w) <= bound).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_block_dequantize_matches_reference_bit_for_bit(backend, dtype):
    rng = np.random.default_rng(1)
    w_fp8 = rng.integers(0, 256, (200, 300), dtype=np.uint8)
    w_fp8[(w_fp8 & 0x7F) == 0x7F] = 0  # NaN codes are not weights
    scale = rng.uniform(1e-4, 1, (2, 3)).astype(np.float32)
    got = fusekit.ops.fp8_block_dequantize(w_fp8, scale, dtype=dtype, backend=backend)
    np.testing.assert_array_equal(got, fp8_block_dequantize_reference(w_fp8, scale, dtype))
    assert got[5, 7] == np.dtype(dtype).type(decode_table("e4m3fn")[w_fp8[5, 7]] * scale[0, 0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_all_zero_tile_gets_scale_one(backend):
    w = np.zeros((130, 130), np.float32)
    w[129, 129] = 3.0
    w_fp8, scale = fusekit.ops.fp8_block_quantize(w, backend=backend)
    np.testing.assert_array_equal(scale, [[1, 1], [1, np.float32(3 / 448)]])
    assert not w_fp8[:128, :128].any()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), k=st.integers(1, 20), block=st.integers(1, 8),
       seed=st.integers(0, 2**32 - 1), scale_exp=st.integers(-30, 30))
def test_property_cpu_block_quantize_equals_reference(n, k, block, seed, scale_exp):
    w = (np.random.default_rng(seed).standard_normal((n, k)) * 2.0**scale_exp).astype(np.float32)
    got = fusekit.ops.fp8_block_quantize(w, block=block, backend="cpu")
    ref = fp8_block_quantize_reference(w, block)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_act_quantize_scales_each_token_and_128_channels(backend):
    x = np.random.default_rng(2).standard_normal((2, 3, 300)).astype(np.float32)
    x_fp8, scale = fusekit.ops.fp8_act_quantize(x, backend=backend)
    assert x_fp8.shape == x.shape and scale.shape == (2, 3, 3)
    assert scale[1, 2, 2] == np.float32(np.abs(x[1, 2, 256:]).max() / 448.0)
    ref = fp8_act_quantize_reference(x)
    np.testing.assert_array_equal(x_fp8, ref[0])
    np.testing.assert_array_equal(scale, ref[1])


def test_torch_quantize_returns_float8_tensors_and_dequantizes_to_bfloat16():
    torch = pytest.importorskip("torch")
    w = torch.from_numpy(weight(200, 130))
    w_fp8, scale = fusekit.ops.fp8_block_quantize(w.bfloat16())
    assert w_fp8.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
    back = fusekit.ops.fp8_block_dequantize(w_fp8, scale, dtype="bfloat16")
    assert back.dtype == torch.bfloat16 and back.shape == w.shape
    torch.testing.assert_close(back.float(), w, atol=0.15, rtol=0.07)


def test_torch_block_quantize_op_passes_opcheck():
    torch = pytest.importorskip("torch")
    import fusekit.torch  # noqa: F401

    torch.library.opcheck(torch.ops.fusekit.fp8_block_quantize.default,
                          (torch.from_numpy(weight(20, 30)),), {"block": 8})


def test_nan_in_weight_is_rejected():
    w = weight(4, 4)
    w[1, 1] = np.nan
    with pytest.raises(fusekit.InputError, match="w contains NaN or infinity"):
        fusekit.ops.fp8_block_quantize(w)


def test_non_2d_weight_is_rejected():
    with pytest.raises(fusekit.InputError, match=r"w must be a 2-D weight \[N, K\]"):
        fusekit.ops.fp8_block_quantize(np.ones(5, np.float32))


def test_mismatched_scale_shape_names_the_expected_shape():
    w_fp8 = np.zeros((300, 200), np.uint8)
    with pytest.raises(fusekit.InputError, match=r"must have shape .* = \[3, 2\] .* got \[2, 2\]"):
        fusekit.ops.fp8_block_dequantize(w_fp8, np.ones((2, 2), np.float32))


def test_float64_scales_are_rejected():
    with pytest.raises(fusekit.InputError, match="weight_scale_inv must be float32"):
        fusekit.ops.fp8_block_dequantize(np.zeros((3, 3), np.uint8), np.ones((1, 1)))


def test_float_weight_codes_are_rejected():
    with pytest.raises(fusekit.InputError, match="w_fp8 must hold float8_e4m3fn codes"):
        fusekit.ops.fp8_block_dequantize(np.zeros((3, 3), np.float32),
                                         np.ones((1, 1), np.float32))
