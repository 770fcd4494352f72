"""The CUDA kron_svd kernels' code path, run on any machine with NumPy standing in for CuPy.

This is a test of the code path only: the Python of ``fusekit.backends.cuda.kron_svd`` (the
reshapes, the range finder, the canonical signs, the registrations) runs against a small shim
module installed as ``sys.modules["cupy"]`` that maps the CuPy calls it makes to NumPy. It says
nothing about CuPy itself, cuSOLVER or a GPU; ``benchmarks/gpu/run_gpu_checks.py`` checks the
same kernels on real CuPy arrays and torch CUDA tensors.

The module is executed afresh into a copy of the registry's kernel table, and the shim is
installed with ``monkeypatch``, so neither the registrations nor the fake ``cupy`` outlive a
test.
"""

import importlib.util
import sys
import types

import numpy as np
import pytest

from fusekit import _registry
from fusekit.ops import kron_svd
from fusekit.ops.kron_svd import (
    kpsvd_reference,
    kron_rearrange_inverse_reference,
    kron_rearrange_reference,
)

MODULE = "fusekit.backends.cuda.kron_svd"
OPS = (kron_svd.kron_rearrange_op, kron_svd.kron_rearrange_inverse_op, kron_svd.kpsvd_op)


def numpy_cupy_shim() -> types.ModuleType:
    """A module named ``cupy`` exposing, from NumPy, exactly what the kernels call."""
    shim = types.ModuleType("cupy")
    for name in ("asarray", "ascontiguousarray", "argmax", "abs", "sign", "arange", "sqrt"):
        setattr(shim, name, getattr(np, name))
    shim.linalg = types.SimpleNamespace(svd=np.linalg.svd, qr=np.linalg.qr)
    shim.random = types.SimpleNamespace(default_rng=np.random.default_rng)
    return shim


@pytest.fixture
def cuda_kernels(monkeypatch):
    """``{op name: kernel}`` of the CUDA kron_svd module, executed against the NumPy shim."""
    monkeypatch.setitem(sys.modules, "cupy", numpy_cupy_shim())
    monkeypatch.setattr(_registry, "_kernels",
                        {op: list(ks) for op, ks in _registry._kernels.items()})
    monkeypatch.setattr(_registry, "_selection_cache", {})
    spec = importlib.util.find_spec(MODULE)
    module = importlib.util.module_from_spec(spec)  # not put in sys.modules: nothing leaks
    spec.loader.exec_module(module)
    kernels = {}
    for op in OPS:
        (kernel,) = [k for k in _registry.kernels_for(op.name) if k.fn.__module__ == MODULE]
        kernels[op.name] = kernel
    return kernels


def structured(dtype, seed=1):
    """Two Kronecker terms ``A (4, 3)``, ``B (3, 5)`` plus a little noise: distinct spectrum."""
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 3, 5))
    w = np.kron(A[0], B[0]) + np.kron(A[1], B[1]) + 1e-3 * rng.standard_normal((12, 15))
    return w.astype(dtype)


def call(kernel, op, *arrays, **params):
    """Run the op's input check as the registry does, then the kernel function."""
    op.check(*arrays, **params)
    return kernel.fn(*arrays, **params)


def test_kernels_register_for_cupy_arrays_on_the_cuda_backend(cuda_kernels):
    for kernel in cuda_kernels.values():
        assert kernel.backend == "cuda"
        assert kernel.arrays == frozenset({"cupy"})
        assert kernel.dtypes == frozenset({"float32", "float64"})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rearrangement_round_trip(cuda_kernels, dtype):
    rng = np.random.default_rng(0)
    a_shape, b_shape = [3, 4], [5, 2]
    w = rng.standard_normal((15, 8)).astype(dtype)
    params = {"a_shape": a_shape, "b_shape": b_shape}
    r = call(cuda_kernels["kron_rearrange"], kron_svd.kron_rearrange_op, w, **params)
    assert r.shape == (12, 10) and r.dtype == dtype and r.flags.c_contiguous
    np.testing.assert_array_equal(r, kron_rearrange_reference(w, a_shape, b_shape))
    back = call(cuda_kernels["kron_rearrange_inverse"], kron_svd.kron_rearrange_inverse_op, r,
                **params)
    assert back.flags.c_contiguous
    np.testing.assert_array_equal(back, w)
    np.testing.assert_array_equal(back, kron_rearrange_inverse_reference(r, a_shape, b_shape))
    # A non-contiguous input (a transposed view) is copied, not misread.
    wt = np.ascontiguousarray(w.T).T
    np.testing.assert_array_equal(
        call(cuda_kernels["kron_rearrange"], kron_svd.kron_rearrange_op, wt, **params), r)


@pytest.mark.parametrize("method", ["exact", "randomized"])
@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, 1e-7, 1e-9),
                                               (np.float32, 1e-4, 1e-5)])
def test_kpsvd_matches_the_reference_with_canonical_signs(cuda_kernels, method, dtype, rtol,
                                                          atol):
    w = structured(dtype)
    params = {"a_shape": [4, 3], "b_shape": [3, 5], "rank": 2, "method": method,
              "oversample": -1, "power_iters": 2, "seed": 0}
    A, B, s = call(cuda_kernels["kpsvd"], kron_svd.kpsvd_op, w, **params)
    rA, rB, rs = kpsvd_reference(w, [4, 3], [3, 5], 2)
    assert A.shape == (2, 4, 3) and B.shape == (2, 3, 5) and s.shape == (2,)
    assert A.dtype == B.dtype == s.dtype == dtype
    assert A.flags.c_contiguous and B.flags.c_contiguous
    np.testing.assert_allclose(s, rs, rtol=rtol)
    np.testing.assert_allclose(A, rA, rtol=rtol, atol=atol)
    np.testing.assert_allclose(B, rB, rtol=rtol, atol=atol)
    # The sign rule: the largest-magnitude entry of each u_k (A[k] flattened) is positive.
    flat = A.reshape(2, -1)
    assert (flat[np.arange(2), np.abs(flat).argmax(axis=1)] > 0).all()


def test_randomized_kpsvd_is_deterministic_in_the_seed(cuda_kernels):
    w = structured(np.float64)
    params = {"a_shape": [4, 3], "b_shape": [3, 5], "rank": 3, "method": "randomized",
              "oversample": 0, "power_iters": 0, "seed": 7}
    first = call(cuda_kernels["kpsvd"], kron_svd.kpsvd_op, w, **params)
    second = call(cuda_kernels["kpsvd"], kron_svd.kpsvd_op, w, **params)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_nothing_leaks_from_the_tests_above():
    """Run last in this file: no shim left in ``sys.modules``, no stand-in kernel registered."""
    cupy = sys.modules.get("cupy")
    assert cupy is None or hasattr(cupy, "__file__")  # the shim has no file; CuPy has one
    real = sys.modules.get(MODULE)  # imported for real only where CuPy and a GPU are
    for op in OPS:
        for kernel in _registry.kernels_for(op.name):
            if kernel.fn.__module__ == MODULE:
                assert real is not None and getattr(real, kernel.fn.__name__) is kernel.fn
