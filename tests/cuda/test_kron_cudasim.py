"""The CUDA kron kernels against the float64 NumPy oracles, in Numba's CUDA simulator.

Inputs are tiny because the simulator runs every GPU thread as a Python thread. Most tests
use 2x2 tiles so that every axis spans several tiles and ends in a partial one; one test per
op keeps the real 16x16 tile.
"""

import sys

import numpy as np
import pytest
from numba import cuda

from fusekit._registry import kernels_for
from fusekit.backends.cuda import kron as cuda_kron
from fusekit.ops.kron import kron_factor_grads_reference, kron_linear_reference

pytestmark = pytest.mark.cudasim

SMALL_TILE = 2
DTYPES = [np.float32, np.float64]
TOL = {
    np.float32: {"rtol": 2e-5, "atol": 2e-6},
    np.float64: {"rtol": 1e-12, "atol": 1e-13},
}


def random_inputs(batch_shape, r, m1, n1, m2, n2, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (*batch_shape, n1 * n2)).astype(dtype)
    A = rng.uniform(-1, 1, (r, m1, n1)).astype(dtype)
    B = rng.uniform(-1, 1, (r, m2, n2)).astype(dtype)
    grad_y = rng.uniform(-1, 1, (*batch_shape, m1 * m2)).astype(dtype)
    return x, A, B, grad_y


def launch_linear(x, A, B, tile=SMALL_TILE):
    r, m1, _ = A.shape
    m2 = B.shape[1]
    out = cuda.device_array((*x.shape[:-1], m1 * m2), dtype=x.dtype)
    cuda_kron.kron_linear_launch(
        cuda.to_device(np.ascontiguousarray(x)), cuda.to_device(np.ascontiguousarray(A)),
        cuda.to_device(np.ascontiguousarray(B)), out, tile=tile,
    )
    return out.copy_to_host()


def launch_factor_grads(x, grad_y, A, B, tile=SMALL_TILE):
    gA = cuda.device_array(A.shape, dtype=A.dtype)
    gB = cuda.device_array(B.shape, dtype=B.dtype)
    cuda_kron.kron_factor_grads_launch(
        cuda.to_device(x), cuda.to_device(grad_y), cuda.to_device(np.ascontiguousarray(A)),
        cuda.to_device(np.ascontiguousarray(B)), gA, gB, tile=tile,
    )
    return gA.copy_to_host(), gB.copy_to_host()


# ----------------------------------------------------------------------------- kron_linear


@pytest.mark.parametrize("dtype", DTYPES)
def test_kron_linear_matches_reference_over_several_tiles(dtype):
    x, A, B, _ = random_inputs((2,), 2, 3, 4, 5, 3, dtype)
    y = launch_linear(x, A, B)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, kron_linear_reference(x, A, B), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_kron_linear_matches_reference_with_the_default_tile(dtype):
    x, A, B, _ = random_inputs((2,), 2, 4, 3, 3, 5, dtype)
    y = launch_linear(x, A, B, tile=cuda_kron.TILE)
    np.testing.assert_allclose(y, kron_linear_reference(x, A, B), **TOL[dtype])


def test_kron_linear_keeps_two_leading_batch_dims():
    x, A, B, _ = random_inputs((2, 3), 1, 2, 3, 3, 2, np.float64)
    y = launch_linear(x, A, B)
    assert y.shape == (2, 3, 6)
    np.testing.assert_allclose(y, kron_linear_reference(x, A, B), **TOL[np.float64])


def test_kron_linear_of_a_single_vector_without_batch_dims():
    x, A, B, _ = random_inputs((), 2, 3, 2, 2, 3, np.float64)
    y = launch_linear(x, A, B)
    assert y.shape == (6,)
    np.testing.assert_allclose(y, kron_linear_reference(x, A, B), **TOL[np.float64])


def test_kron_linear_with_transposed_factors_is_the_backward_product():
    # The backward pass calls kron_linear(grad_y, A^T, B^T): factors arrive transposed.
    _, A, B, grad_y = random_inputs((3,), 2, 4, 3, 5, 2, np.float32)
    At, Bt = A.transpose(0, 2, 1), B.transpose(0, 2, 1)
    assert not At.flags.c_contiguous
    grad_x = launch_linear(grad_y, At, Bt)
    np.testing.assert_allclose(grad_x, kron_linear_reference(grad_y, At, Bt), **TOL[np.float32])


def test_kron_linear_copies_non_contiguous_host_inputs():
    x, A, B, _ = random_inputs((3,), 1, 2, 3, 2, 2, np.float64)
    x_strided = np.repeat(x, 2, axis=0)[::2]
    out = np.empty((3, 4))
    cuda_kron.kron_linear_launch(x_strided, A.transpose(0, 2, 1).copy().transpose(0, 2, 1),
                                 B, out, tile=SMALL_TILE)
    np.testing.assert_allclose(out, kron_linear_reference(x, A, B), **TOL[np.float64])


def test_kron_linear_rejects_a_non_contiguous_device_array():
    x, A, B, _ = random_inputs((2,), 1, 2, 3, 2, 2, np.float64)
    A_dev_t = cuda.to_device(A.transpose(0, 2, 1).copy()).transpose((0, 2, 1))
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda_kron.kron_linear_launch(x, A_dev_t, B, np.empty((2, 4)))


def test_kron_linear_of_an_empty_batch_is_empty():
    x, A, B, _ = random_inputs((0,), 2, 2, 3, 2, 2, np.float32)
    y = launch_linear(x, A, B)
    assert y.shape == (0, 4)


def test_kron_linear_uses_a_given_workspace():
    x, A, B, _ = random_inputs((2,), 2, 2, 3, 3, 2, np.float64)
    workspace = cuda.device_array((2, 2, 3, 3), dtype=np.float64)
    out = cuda.device_array((2, 6), dtype=np.float64)
    cuda_kron.kron_linear_launch(x, A, B, out, workspace=workspace, tile=SMALL_TILE)
    np.testing.assert_allclose(out.copy_to_host(), kron_linear_reference(x, A, B),
                               **TOL[np.float64])
    # The workspace holds T[b, k, j1, i2] = sum_j2 X[b, j1, j2] B[k, i2, j2].
    T = np.einsum("bjl,kil->bkji", x.reshape(2, 3, 2), B)
    np.testing.assert_allclose(workspace.copy_to_host(), T, **TOL[np.float64])


def test_kron_linear_rejects_a_workspace_of_the_wrong_size():
    x, A, B, _ = random_inputs((2,), 1, 2, 2, 2, 2, np.float64)
    with pytest.raises(ValueError, match="workspace"):
        cuda_kron.kron_linear_launch(x, A, B, np.empty((2, 4)),
                                     workspace=cuda.device_array(3, dtype=np.float64))


# ----------------------------------------------------------------------- kron_factor_grads


@pytest.mark.parametrize("dtype", DTYPES)
def test_kron_factor_grads_match_reference_over_several_tiles(dtype):
    x, A, B, grad_y = random_inputs((3,), 2, 3, 4, 3, 3, dtype)
    gA, gB = launch_factor_grads(x, grad_y, A, B)
    ref_A, ref_B = kron_factor_grads_reference(x, grad_y, A, B)
    assert gA.dtype == gB.dtype == dtype
    np.testing.assert_allclose(gA, ref_A, **TOL[dtype])
    np.testing.assert_allclose(gB, ref_B, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_kron_factor_grads_match_reference_with_the_default_tile(dtype):
    x, A, B, grad_y = random_inputs((2,), 1, 4, 3, 3, 4, dtype)
    gA, gB = launch_factor_grads(x, grad_y, A, B, tile=cuda_kron.TILE)
    ref_A, ref_B = kron_factor_grads_reference(x, grad_y, A, B)
    np.testing.assert_allclose(gA, ref_A, **TOL[dtype])
    np.testing.assert_allclose(gB, ref_B, **TOL[dtype])


def test_kron_factor_grads_sum_over_two_leading_batch_dims():
    x, A, B, grad_y = random_inputs((2, 2), 2, 2, 3, 3, 2, np.float64)
    gA, gB = launch_factor_grads(x, grad_y, A, B)
    ref_A, ref_B = kron_factor_grads_reference(x, grad_y, A, B)
    np.testing.assert_allclose(gA, ref_A, **TOL[np.float64])
    np.testing.assert_allclose(gB, ref_B, **TOL[np.float64])


def test_kron_factor_grads_accept_transposed_factors():
    x, A, B, grad_y = random_inputs((3,), 2, 3, 2, 2, 4, np.float32)
    At = np.ascontiguousarray(A.transpose(0, 2, 1)).transpose(0, 2, 1)  # A's values, strided
    Bt = np.ascontiguousarray(B.transpose(0, 2, 1)).transpose(0, 2, 1)
    gA = np.empty(A.shape, np.float32)
    gB = np.empty(B.shape, np.float32)
    cuda_kron.kron_factor_grads_launch(x, grad_y, At, Bt, gA, gB, tile=SMALL_TILE)
    ref_A, ref_B = kron_factor_grads_reference(x, grad_y, A, B)
    np.testing.assert_allclose(gA, ref_A, **TOL[np.float32])
    np.testing.assert_allclose(gB, ref_B, **TOL[np.float32])


def test_kron_factor_grads_of_an_empty_batch_are_zero():
    x, A, B, grad_y = random_inputs((0,), 2, 2, 3, 3, 2, np.float64)
    gA, gB = launch_factor_grads(x, grad_y, A, B)
    assert not gA.any() and not gB.any()
    assert gA.shape == A.shape and gB.shape == B.shape


# --------------------------------------------------------------------- module, registration


def test_importing_the_cuda_kron_module_does_not_import_cupy():
    assert "cupy" not in sys.modules


def test_cuda_kernels_are_registered_for_cupy_float32_and_float64():
    for op in ("kron_linear", "kron_factor_grads"):
        (kernel,) = [k for k in kernels_for(op) if k.backend == "cuda"]
        assert kernel.arrays == {"cupy"}
        assert kernel.dtypes == {"float32", "float64"}
