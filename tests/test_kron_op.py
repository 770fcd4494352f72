"""kron_linear and kron_factor_grads against float64 references, on every CPU-side backend."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit
from fusekit.backends.cpu import kron as cpu_kron
from fusekit.ops.kron import kron_factor_grads_reference, kron_linear_reference

CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def dense_product(x, A, B):
    """The definition: y = sum_k (A[k] kron B[k]) x, forming the Kronecker products."""
    W = sum(np.kron(A[k], B[k]) for k in range(A.shape[0]))
    return x @ W.T


def make(rng, r, m1, n1, m2, n2, batch, dtype):
    A = rng.standard_normal((r, m1, n1)).astype(dtype)
    B = rng.standard_normal((r, m2, n2)).astype(dtype)
    x = rng.standard_normal((*batch, n1 * n2)).astype(dtype)
    return x, A, B


def test_reference_matches_the_dense_kronecker_definition(rng):
    x, A, B = make(rng, 3, 4, 5, 6, 7, (9,), np.float64)
    np.testing.assert_allclose(kron_linear_reference(x, A, B), dense_product(x, A, B),
                               rtol=1e-12, atol=1e-12)


def test_factor_grads_reference_matches_finite_differences(rng):
    x, A, B = make(rng, 2, 3, 2, 2, 3, (4,), np.float64)
    G = rng.standard_normal((4, 6))
    gA, gB = kron_factor_grads_reference(x, G, A, B)
    eps = 1e-6
    loss = lambda A_, B_: float((kron_linear_reference(x, A_, B_) * G).sum())  # noqa: E731
    num_A = np.zeros_like(A)
    for idx in np.ndindex(A.shape):
        d = np.zeros_like(A)
        d[idx] = eps
        num_A[idx] = (loss(A + d, B) - loss(A - d, B)) / (2 * eps)
    num_B = np.zeros_like(B)
    for idx in np.ndindex(B.shape):
        d = np.zeros_like(B)
        d[idx] = eps
        num_B[idx] = (loss(A, B + d) - loss(A, B - d)) / (2 * eps)
    np.testing.assert_allclose(gA, num_A, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gB, num_B, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [(), (1,), (5,), (2, 3)])
def test_kron_linear_matches_reference(rng, backend, dtype, batch):
    x, A, B = make(rng, 3, 4, 5, 6, 7, batch, dtype)
    y = fusekit.ops.kron_linear(x, A, B, backend=backend)
    expected = kron_linear_reference(x.astype(np.float64), A.astype(np.float64),
                                     B.astype(np.float64))
    assert y.shape == (*batch, 24) and y.dtype == dtype
    np.testing.assert_allclose(y, expected, **TOL[dtype])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kron_factor_grads_match_reference(rng, backend, dtype):
    x, A, B = make(rng, 2, 3, 4, 5, 2, (2, 3), dtype)
    G = rng.standard_normal((2, 3, 15)).astype(dtype)
    gA, gB = fusekit.ops.kron_factor_grads(x, G, A, B, backend=backend)
    rA, rB = kron_factor_grads_reference(*(a.astype(np.float64) for a in (x, G, A, B)))
    assert gA.shape == A.shape and gB.shape == B.shape and gA.dtype == dtype
    np.testing.assert_allclose(gA, rA, **TOL[dtype])
    np.testing.assert_allclose(gB, rB, **TOL[dtype])


@pytest.mark.parametrize("strategy", ["fused", "blas"])
@pytest.mark.parametrize("shapes", [(8, 4, 3, 8), (24, 2, 2, 12), (2, 12, 24, 2), (6, 6, 6, 6)],
                         ids=["mixed", "flat", "tall", "square"])
def test_cpu_strategies_agree_with_reference(rng, monkeypatch, strategy, shapes):
    """Both CPU code paths (small-call Numba loops, large-call BLAS), and each BLAS product
    order (chosen by shape: flat factors take the other order) are exercised."""
    monkeypatch.setattr(cpu_kron, "BLAS_MIN_MACS", 0 if strategy == "blas" else 1 << 62)
    m1, n1, m2, n2 = shapes
    x, A, B = make(rng, 2, m1, n1, m2, n2, (6,), np.float64)
    G = rng.standard_normal((6, m1 * m2))
    np.testing.assert_allclose(cpu_kron.kron_linear_cpu(x, A, B), kron_linear_reference(x, A, B),
                               rtol=1e-12, atol=1e-12)
    for got, want in zip(cpu_kron.kron_factor_grads_cpu(x, G, A, B),
                         kron_factor_grads_reference(x, G, A, B), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_non_contiguous_inputs_give_the_same_result(rng, backend):
    x, A, B = make(rng, 2, 3, 4, 5, 6, (7,), np.float64)
    At = np.ascontiguousarray(A.transpose(0, 2, 1)).transpose(0, 2, 1)  # same values, F-order
    xs = np.repeat(x, 2, axis=0)[::2]  # strided view
    np.testing.assert_allclose(fusekit.ops.kron_linear(xs, At, B, backend=backend),
                               kron_linear_reference(x, A, B), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_nan_and_inf_propagate_like_the_dense_product(backend):
    A = np.ones((1, 2, 2))
    B = np.ones((1, 2, 2))
    x = np.array([[np.nan, 0, 0, 0], [np.inf, 0, 0, 0], [1, 2, 3, 4]])
    y = fusekit.ops.kron_linear(x, A, B, backend=backend)
    assert np.isnan(y[0]).all()
    assert np.isposinf(y[1]).all()
    np.testing.assert_allclose(y[2], dense_product(x[2:], A, B)[0])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_batch_gives_empty_output(backend):
    y = fusekit.ops.kron_linear(np.ones((0, 6)), np.ones((1, 2, 2)), np.ones((1, 4, 3)),
                                backend=backend)
    assert y.shape == (0, 8)


@settings(max_examples=40, deadline=None)
@given(
    r=st.integers(0, 3), m1=st.integers(1, 5), n1=st.integers(1, 5), m2=st.integers(1, 5),
    n2=st.integers(1, 5), batch=st.lists(st.integers(0, 3), max_size=2),
    dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**32 - 1),
)
def test_property_cpu_kernel_matches_dense_definition_for_any_shape(r, m1, n1, m2, n2, batch,
                                                                    dtype, seed):
    rng = np.random.default_rng(seed)
    x, A, B = make(rng, r, m1, n1, m2, n2, tuple(batch), dtype)
    y = fusekit.ops.kron_linear(x, A, B, backend="cpu")
    assert y.shape == (*batch, m1 * m2) and y.dtype == dtype
    if r == 0:
        assert not y.any()
    else:
        np.testing.assert_allclose(y, dense_product(x.astype(np.float64), A.astype(np.float64),
                                                    B.astype(np.float64)),
                                   rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(a=st.floats(-1e3, 1e3), b=st.floats(-1e3, 1e3), seed=st.integers(0, 2**32 - 1))
def test_property_kron_linear_is_linear_in_x(a, b, seed):
    rng = np.random.default_rng(seed)
    x1, A, B = make(rng, 2, 3, 2, 2, 3, (4,), np.float64)
    x2 = rng.standard_normal(x1.shape)
    lhs = fusekit.ops.kron_linear(a * x1 + b * x2, A, B, backend="cpu")
    rhs = a * fusekit.ops.kron_linear(x1, A, B, backend="cpu") + b * fusekit.ops.kron_linear(
        x2, A, B, backend="cpu")
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9, atol=1e-9 * (abs(a) + abs(b) + 1))


def test_rank_one_single_factor_shapes_reduce_to_outer_products(rng):
    """(a kron b) x with column factors equals a (b . x) structure: checks the index order."""
    A = rng.standard_normal((1, 3, 1))
    B = rng.standard_normal((1, 1, 4))
    x = rng.standard_normal(4)
    y = fusekit.ops.kron_linear(x, A, B, backend="cpu")
    np.testing.assert_allclose(y, A[0, :, 0] * (B[0, 0] @ x), rtol=1e-12)
