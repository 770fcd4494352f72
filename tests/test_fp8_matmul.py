"""FP8 block-scaled products: fp8_gemv / fp8_gemm, the transposed product, the fused expert."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit
from fusekit.ops.fp8_matmul import (
    fp8_expert_reference,
    fp8_gemv_reference,
    fp8_gemv_t_reference,
)

CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]


def quantized(n, k, block=128, seed=0, scale=0.02):
    w = (np.random.default_rng(seed).standard_normal((n, k)) * scale).astype(np.float32)
    return fusekit.ops.fp8_block_quantize(w, block=block)


def rel_err(got, want):
    return np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("m", [1, 2, 4, 5, 16])
@pytest.mark.parametrize("shape", [(256, 7168), (300, 200), (7, 130)])
def test_gemv_matches_float64_reference_within_1e6(backend, m, shape):
    q, s = quantized(*shape)
    x = np.random.default_rng(m).standard_normal((m, shape[1])).astype(np.float32)
    y = fusekit.ops.fp8_gemv(x, q, s, backend=backend)
    assert y.shape == (m, shape[0]) and y.dtype == np.float32
    assert rel_err(y, fp8_gemv_reference(x.astype(np.float64), q, s)) <= 1e-6


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("m", [1, 3])
def test_gemv_t_matches_float64_reference_within_1e6(backend, m):
    q, s = quantized(300, 520)
    g = np.random.default_rng(5).standard_normal((m, 300)).astype(np.float32)
    out = fusekit.ops.fp8_gemv_t(g, q, s, backend=backend)
    assert out.shape == (m, 520)
    assert rel_err(out, fp8_gemv_t_reference(g.astype(np.float64), q, s)) <= 1e-6


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gemm_is_gemv_with_batch_dimensions(backend):
    q, s = quantized(64, 96, block=32)
    x = np.random.default_rng(1).standard_normal((2, 3, 96)).astype(np.float32)
    y = fusekit.ops.fp8_gemm(x, q, s, block=32, backend=backend)
    assert y.shape == (2, 3, 64)
    np.testing.assert_allclose(y.reshape(6, 64),
                               fusekit.ops.fp8_gemv(x.reshape(6, 96), q, s, block=32,
                                                    backend=backend), rtol=1e-6, atol=1e-7)


def test_subnormal_heavy_weights_are_exact_too():
    rng = np.random.default_rng(3)
    q = rng.integers(0, 8, (64, 256), dtype=np.uint8) | (rng.integers(0, 2, (64, 256),
                                                                      dtype=np.uint8) << 7)
    s = np.full((1, 2), 0.5, np.float32)
    x = rng.standard_normal((2, 256)).astype(np.float32)
    y = fusekit.ops.fp8_gemv(x, q, s, backend="cpu")
    assert rel_err(y, fp8_gemv_reference(x.astype(np.float64), q, s)) <= 1e-6


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_tiny_and_huge_activations_keep_relative_accuracy(scale):
    q, s = quantized(40, 300)
    x = (np.random.default_rng(4).standard_normal((2, 300)) * scale).astype(np.float32)
    y = fusekit.ops.fp8_gemv(x, q, s, backend="cpu")
    assert rel_err(y, fp8_gemv_reference(x.astype(np.float64), q, s)) <= 1e-6


def test_nan_and_inf_in_activations_propagate_like_a_matmul():
    q, s = quantized(8, 16, block=8)
    x = np.ones((3, 16), np.float32)
    x[0, 3] = np.nan
    x[1, 2] = np.inf
    y = fusekit.ops.fp8_gemv(x, q, s, block=8, backend="cpu")
    ref = fp8_gemv_reference(x.astype(np.float64), q, s, 8)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_allclose(y[2], ref[2], rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 40), m=st.integers(1, 6), block=st.integers(1, 9),
       seed=st.integers(0, 2**32 - 1))
def test_property_cpu_gemv_matches_reference_for_any_shape(n, k, m, block, seed):
    q, s = quantized(n, k, block=block, seed=seed)
    x = np.random.default_rng(seed).standard_normal((m, k)).astype(np.float32)
    y = fusekit.ops.fp8_gemv(x, q, s, block=block, backend="cpu")
    ref = fp8_gemv_reference(x.astype(np.float64), q, s, block)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * (np.abs(ref).max() + 1e-30))


def test_expert_matches_reference():
    h, i = 96, 160
    gate, up, down = quantized(i, h, 32, 1), quantized(i, h, 32, 2), quantized(h, i, 32, 3)
    x = np.random.default_rng(0).standard_normal((3, h)).astype(np.float32)
    y = fusekit.ops.fp8_expert(x, gate, up, down, block=32, backend="cpu")
    ref = fp8_expert_reference(x.astype(np.float64), gate, up, down, 32)
    assert rel_err(y, ref) <= 1e-5


def test_torch_gemv_backward_is_the_transposed_product():
    torch = pytest.importorskip("torch")
    q, s = quantized(48, 64, block=16)
    qt, st_ = torch.from_numpy(q).view(torch.float8_e4m3fn), torch.from_numpy(s)
    x = torch.randn(3, 64, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fusekit.ops.fp8_gemv(x, qt, st_, block=16), (x,))
    x32 = torch.randn(3, 64, requires_grad=True)
    y = fusekit.ops.fp8_gemv(x32, qt, st_, block=16)
    g = torch.randn_like(y)
    y.backward(g)
    np.testing.assert_allclose(x32.grad.numpy(),
                               fp8_gemv_t_reference(g.double().numpy(), q, s, 16), rtol=1e-5,
                               atol=1e-6)


def test_torch_bfloat16_activations_accumulate_in_float32():
    torch = pytest.importorskip("torch")
    q, s = quantized(64, 256)
    qt, st_ = torch.from_numpy(q).view(torch.float8_e4m3fn), torch.from_numpy(s)
    x = torch.randn(2, 256).bfloat16()
    y = fusekit.ops.fp8_gemv(x, qt, st_)
    assert y.dtype == torch.bfloat16
    ref = fp8_gemv_reference(x.double().numpy(), q, s)
    # bf16 output: one rounding of the float32 result, relative 2^-8 per element
    np.testing.assert_allclose(y.double().numpy(), ref, rtol=2**-8, atol=1e-6)


def test_torch_gemv_opcheck_and_compile():
    torch = pytest.importorskip("torch")
    import fusekit.torch  # noqa: F401

    q, s = quantized(32, 48, block=16)
    qt, st_ = torch.from_numpy(q), torch.from_numpy(s)
    x = torch.randn(2, 48, requires_grad=True)
    torch.library.opcheck(torch.ops.fusekit.fp8_gemv.default, (x, qt, st_), {"block": 16})
    f = torch.compile(lambda x: torch.relu(fusekit.ops.fp8_gemv(x, qt.view(torch.float8_e4m3fn),
                                                                st_, block=16)), fullgraph=True)
    torch.testing.assert_close(f(x), torch.relu(fusekit.ops.fp8_gemv(x, qt, st_, block=16)))


def test_activation_width_mismatch_is_reported():
    q, s = quantized(8, 16, block=8)
    expected = r"x must have shape \(\.\.\., K\) = \(\.\.\., 16\)"
    with pytest.raises(fusekit.InputError, match=expected):
        fusekit.ops.fp8_gemv(np.ones((1, 15), np.float32), q, s, block=8)


def test_scales_for_another_block_size_are_reported():
    q, s = quantized(300, 200)
    with pytest.raises(fusekit.InputError, match=r"weight_scale_inv must have shape"):
        fusekit.ops.fp8_gemv(np.ones((1, 200), np.float32), q, s, block=64)


def test_float_weight_is_rejected():
    _, s = quantized(8, 8, block=8)
    with pytest.raises(fusekit.InputError, match="w_fp8 must hold float8_e4m3fn codes"):
        fusekit.ops.fp8_gemv(np.ones((1, 8), np.float32), np.ones((8, 8), np.float32), s, block=8)


def test_integer_activations_are_rejected():
    q, s = quantized(8, 8, block=8)
    with pytest.raises(fusekit.InputError, match="x has dtype int64"):
        fusekit.ops.fp8_gemv(np.ones((1, 8), np.int64), q, s, block=8)


@pytest.mark.parametrize("block", [0, 128.0, True])
def test_block_must_be_a_positive_int(block):
    q, s = quantized(8, 8, block=8)
    with pytest.raises(fusekit.InputError, match="block must be a positive int"):
        fusekit.ops.fp8_gemv(np.ones((1, 8), np.float32), q, s, block=block)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("m", [1, 3, 6])
def test_gate_up_matches_reference(backend, m):
    from fusekit.ops.fp8_matmul import fp8_gate_up_reference

    gate, up = quantized(300, 260, seed=1), quantized(300, 260, seed=2)
    x = np.random.default_rng(m).standard_normal((m, 260)).astype(np.float32)
    h = fusekit.ops.fp8_gate_up(x, gate, up, backend=backend)
    assert h.shape == (m, 300)
    assert rel_err(h, fp8_gate_up_reference(x.astype(np.float64), *gate, *up)) <= 1e-6


def test_torch_gate_up_gradcheck_and_opcheck():
    torch = pytest.importorskip("torch")
    import fusekit.torch  # noqa: F401

    gate = tuple(map(torch.from_numpy, quantized(40, 48, block=16, seed=1)))
    up = tuple(map(torch.from_numpy, quantized(40, 48, block=16, seed=2)))
    x = torch.randn(2, 48, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: fusekit.ops.fp8_gate_up(x, gate, up, block=16), (x,))
    torch.library.opcheck(torch.ops.fusekit.fp8_gate_up.default,
                          (x.detach().float().requires_grad_(), *gate, *up), {"block": 16})


def test_gate_and_up_of_different_shapes_are_rejected():
    with pytest.raises(fusekit.InputError, match="gate and up projections must have the same"):
        fusekit.ops.fp8_gate_up(np.ones((1, 16), np.float32), quantized(8, 16, 8),
                                quantized(16, 16, 8), block=8)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_views_give_the_same_result(backend):
    q, s = quantized(64, 96, block=32)
    x = np.random.default_rng(0).standard_normal((96, 3)).astype(np.float32).T  # F-order rows
    q_view = np.asfortranarray(q)
    y = fusekit.ops.fp8_gemv(x, q_view, s, block=32, backend=backend)
    np.testing.assert_allclose(y, fusekit.ops.fp8_gemv(np.ascontiguousarray(x), q, s, block=32,
                                                       backend=backend), rtol=1e-6, atol=1e-7)
