"""Bad input to the kron ops gets a clear InputError that says what to do."""

import numpy as np
import pytest

import fusekit


def ok():
    return np.ones((5, 12)), np.ones((2, 3, 3)), np.ones((2, 4, 4))


def test_wrong_x_width_names_the_expected_shape():
    x, A, B = ok()
    expected = r"x must have shape \(\.\.\., n1\*n2\) = \(\.\.\., 12\)"
    with pytest.raises(fusekit.InputError, match=expected):
        fusekit.ops.kron_linear(np.ones((5, 11)), A, B)


def test_factor_rank_mismatch_is_reported():
    x, A, _ = ok()
    with pytest.raises(fusekit.InputError, match="same number r of Kronecker terms"):
        fusekit.ops.kron_linear(x, A, np.ones((3, 4, 4)))


def test_factor_with_wrong_ndim_is_reported():
    x, _, B = ok()
    with pytest.raises(fusekit.InputError, match=r"A must have shape \(r, m1, n1\)"):
        fusekit.ops.kron_linear(x, np.ones((3, 3)), B)


def test_zero_sized_factor_dimension_is_rejected():
    with pytest.raises(fusekit.InputError, match="factor dimensions must be positive"):
        fusekit.ops.kron_linear(np.ones((2, 0)), np.ones((1, 0, 0)), np.ones((1, 2, 2)))


def test_mixed_dtypes_are_rejected_with_a_cast_hint():
    x, A, B = ok()
    with pytest.raises(fusekit.InputError, match="x is float32 and A is float64"):
        fusekit.ops.kron_linear(x.astype(np.float32), A, B)


def test_integer_input_is_rejected():
    x, A, B = ok()
    with pytest.raises(fusekit.InputError, match="x has dtype int64"):
        fusekit.ops.kron_linear(x.astype(np.int64), A, B)


def test_python_list_is_rejected_with_asarray_hint():
    _, A, B = ok()
    with pytest.raises(fusekit.InputError, match="numpy.asarray"):
        fusekit.ops.kron_linear([[1.0] * 12], A, B)


def test_grad_y_shape_mismatch_is_reported():
    x, A, B = ok()
    with pytest.raises(fusekit.InputError, match=r"grad_y must have shape \(5, 12\)"):
        fusekit.ops.kron_factor_grads(x, np.ones((5, 11)), A, B)


def test_numpy_mixed_with_torch_is_rejected():
    torch = pytest.importorskip("torch")
    x, A, B = ok()
    expected = "x is a numpy array on cpu but A is a torch"
    with pytest.raises(fusekit.MixedArraysError, match=expected):
        fusekit.ops.kron_linear(x, torch.from_numpy(A), B)


def test_torch_mixed_with_numpy_is_rejected():
    torch = pytest.importorskip("torch")
    x, A, B = ok()
    with pytest.raises(fusekit.MixedArraysError, match="torch"):
        fusekit.ops.kron_linear(torch.from_numpy(x), A, torch.from_numpy(B))


def test_float16_is_rejected_with_supported_dtypes_listed():
    x, A, B = ok()
    with pytest.raises(fusekit.InputError, match="supported are bfloat16, float32, float64"):
        fusekit.ops.kron_linear(*(a.astype(np.float16) for a in (x, A, B)))


class _FakeDevice:
    id = 0


def _fake_cupy_array(shape):
    """Stands in for a CuPy array (no GPU here): only what the kind check reads."""
    cls = type("ndarray", (), {"__module__": "cupy._core.core", "device": _FakeDevice(),
                               "shape": shape, "ndim": len(shape), "dtype": np.dtype("float64")})
    return cls()


def test_numpy_mixed_with_cupy_is_rejected():
    x, A, B = ok()
    with pytest.raises(fusekit.MixedArraysError, match="B is a cupy array on cuda:0"):
        fusekit.ops.kron_linear(x, A, _fake_cupy_array(B.shape))
