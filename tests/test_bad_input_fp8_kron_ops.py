"""Bad input to the FP8 and KPSVD ops gets a clear InputError; edge inputs match the reference."""

import numpy as np
import pytest
import torch

import fusekit
from fusekit import ops
from fusekit.ops.fp8_matmul import fp8_expert_reference, fp8_gate_up_reference, fp8_gemv_reference


def _ones_weight(n=8, k=16):
    return ops.fp8_block_quantize(np.ones((n, k), np.float32), block=8)


# 1. SiLU epilogue stays finite for any finite gate


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("gate", [-89 / 16, -200 / 16, -6.0, 6.0, 0.25])
def test_gate_up_silu_matches_reference_for_extreme_gates(rows, gate):
    w, s = _ones_weight()
    x = np.full((rows, 16), gate, np.float32)
    got = ops.fp8_gate_up(x, (w, s), (w, s), block=8, backend="cpu")
    want = fp8_gate_up_reference(x, w, s, w, s, block=8)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-38)


def test_expert_matches_reference_for_very_negative_gate():
    w, s = _ones_weight()
    wd, sd = _ones_weight(16, 8)
    x = np.full((1, 16), -89 / 16, np.float32)
    got = ops.fp8_expert(x, (w, s), (w, s), (wd, sd), block=8, backend="cpu")
    want = fp8_expert_reference(x, (w, s), (w, s), (wd, sd), block=8)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-38)


# 2. quantizers and kpsvd have no gradient: backward says so


@pytest.mark.parametrize("call", [
    lambda w: ops.kpsvd(w, (2, 2), (3, 4), rank=2)[0],
    lambda w: ops.fp8_act_quantize(w, block=8)[1],
    lambda w: ops.fp8_block_quantize(w, block=8)[1],
])
def test_backward_through_non_differentiable_op_is_refused(call):
    w = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    out = call(w)
    with pytest.raises(fusekit.InputError, match=r"not differentiable.*detach"):
        out.sum().backward()


# 3. zero-width K: cpu returns what the reference returns


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_act_quantize_of_zero_channels_is_empty(backend):
    codes, scale = ops.fp8_act_quantize(np.zeros((3, 0), np.float32), block=8, backend=backend)
    assert codes.shape == (3, 0) and scale.shape == (3, 0)


def test_gemv_with_zero_k_is_zeros_as_reference():
    x, w, s = np.zeros((3, 0), np.float32), np.zeros((8, 0), np.uint8), np.zeros((1, 0),
                                                                                   np.float32)
    got = ops.fp8_gemv(x, w, s, block=8, backend="cpu")
    np.testing.assert_array_equal(got, fp8_gemv_reference(x, w, s, block=8))
    assert got.shape == (3, 8)


def test_gate_up_with_zero_h_is_zeros_as_reference():
    w, s = np.zeros((8, 0), np.uint8), np.zeros((1, 0), np.float32)
    x = np.zeros((2, 0), np.float32)
    got = ops.fp8_gate_up(x, (w, s), (w, s), block=8, backend="cpu")
    np.testing.assert_array_equal(got, fp8_gate_up_reference(x, w, s, w, s, block=8))


# 4. meta tensors


def test_kpsvd_auto_rank_on_meta_tensor_asks_for_rank():
    with pytest.raises(fusekit.InputError, match="pass rank="):
        ops.kpsvd(torch.randn(6, 8).to("meta"), (2, 2), (3, 4))


# 5. kron_factor_shapes


@pytest.mark.parametrize("shape", [(4,), (4.5, 6), ("a", 6), 6, (4, 6, 8), (0, 6), (True, 6)])
def test_kron_factor_shapes_refuses_what_is_no_2d_shape(shape):
    with pytest.raises(fusekit.InputError, match="two positive ints"):
        ops.kron_factor_shapes(shape)


def test_kpsvd_of_1d_weight_is_refused():
    with pytest.raises(fusekit.InputError, match="2-D weight"):
        ops.kpsvd(np.ones(48))


# 6. and 8. factor shapes and params, NumPy and torch alike


@pytest.mark.parametrize("a_shape", [(2.0, 2), (2.5, 2), None, (2, 2, 1)])
@pytest.mark.parametrize("make", [np.ones, torch.ones])
def test_kron_rearrange_refuses_non_int_shape(a_shape, make):
    with pytest.raises(fusekit.InputError, match="a_shape must be the shape"):
        ops.kron_rearrange(make((6, 8)), a_shape, (3, 4))


def test_kpsvd_torch_float_rank_is_refused():
    with pytest.raises(fusekit.InputError, match="rank must be an int"):
        ops.kpsvd(torch.randn(6, 8), (2, 2), (3, 4), rank=2.0)


@pytest.mark.parametrize("call", [
    lambda b: ops.fp8_block_quantize(torch.randn(8, 16), block=b),
    lambda b: ops.fp8_act_quantize(torch.randn(2, 16), block=b),
    lambda b: ops.fp8_gemv(torch.randn(1, 16), *ops.fp8_block_quantize(torch.randn(8, 16),
                                                                         block=8), block=b),
])
@pytest.mark.parametrize("block", [8.5, 8.0])
def test_torch_float_block_is_refused(call, block):
    with pytest.raises(fusekit.InputError, match="block must be a positive int"):
        call(block)


# 7. randomized kpsvd parameters


@pytest.mark.parametrize("kw, name", [
    ({"power_iters": 1.5}, "power_iters"), ({"power_iters": -1}, "power_iters"),
    ({"seed": "a"}, "seed"), ({"oversample": -5}, "oversample"),
])
@pytest.mark.parametrize("make", [np.ones, torch.ones])
def test_randomized_kpsvd_params_are_checked(kw, name, make):
    with pytest.raises(fusekit.InputError, match=f"{name} must be a non-negative integer"):
        ops.kpsvd(make((6, 8), dtype=np.float64 if make is np.ones else torch.float64),
                  (2, 2), (3, 4), rank=2, method="randomized", **kw)


# 9. block scales must be normal float32


@pytest.mark.parametrize("value, what", [(1e300, "infinite"), (1e-50, "underflow")])
@pytest.mark.parametrize("make", [np.full, torch.full])
def test_block_quantize_refuses_scale_outside_float32(value, what, make):
    w = make((2, 2), value, dtype=np.float64 if make is np.full else torch.float64)
    with pytest.raises(fusekit.InputError, match=what):
        ops.fp8_block_quantize(w, block=8)


def test_act_quantize_refuses_tiny_token_group():
    x = np.array([[1.0, 1.0], [1e-50, 0.0]])
    with pytest.raises(fusekit.InputError, match="underflow"):
        ops.fp8_act_quantize(x, block=2)


def test_block_quantize_of_zero_tile_is_still_fine():
    _, scale = ops.fp8_block_quantize(np.zeros((2, 2)), block=8)
    assert scale.tolist() == [[1.0]]


# 10. select_rank


@pytest.mark.parametrize("total", [0.0, float("nan"), -1.0, 1.0, "14"])
def test_select_rank_refuses_bad_total_energy(total):
    with pytest.raises(fusekit.InputError, match="total_energy must be"):
        ops.select_rank([3, 2, 1], total_energy=total)


def test_select_rank_accepts_total_energy_of_whole_spectrum():
    assert ops.select_rank([3, 2], total_energy=14.0, energy=0.9) == 2


def test_select_rank_refuses_2d_values():
    with pytest.raises(fusekit.InputError, match="1-D sequence"):
        ops.select_rank([[3, 2], [1, 0]])


def test_select_rank_refuses_string_energy():
    with pytest.raises(fusekit.InputError, match="energy must be a number"):
        ops.select_rank([3, 2, 1], energy="0.9")


def test_select_rank_takes_tensor_that_requires_grad():
    assert ops.select_rank(torch.tensor([3.0, 2.0], requires_grad=True), energy=0.5) == 1


# 11. (codes, scales) pairs


def test_gate_up_refuses_gate_that_is_no_pair():
    w, s = _ones_weight()
    with pytest.raises(fusekit.InputError, match=r"gate must be a pair \(w_fp8"):
        ops.fp8_gate_up(np.ones((1, 16), np.float32), w, (w, s), block=8)


def test_expert_refuses_down_triple():
    w, s = _ones_weight()
    with pytest.raises(fusekit.InputError, match="down must be a pair.*length 3"):
        ops.fp8_expert(np.ones((1, 16), np.float32), (w, s), (w, s), (w, s, 1), block=8)
