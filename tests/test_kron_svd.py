"""KPSVD: the rearrangement, exact and randomized KPSVD, default factor shapes, rank rules."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit
from fusekit.ops.kron_svd import (
    factorization,
    kpsvd_reference,
    kron_rearrange_inverse_reference,
    kron_rearrange_reference,
)

CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]


def kron_sum(A, B):
    return sum(np.kron(A[k], B[k]) for k in range(A.shape[0]))


def structured(r, a_shape, b_shape, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((r, *a_shape))
    B = rng.standard_normal((r, *b_shape))
    return kron_sum(A, B).astype(dtype)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_rearrangement_maps_a_kronecker_product_to_an_outer_product(backend):
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((3, 4)), rng.standard_normal((5, 2))
    r = fusekit.ops.kron_rearrange(np.kron(A, B), (3, 4), (5, 2), backend=backend)
    np.testing.assert_allclose(r, np.outer(A.ravel(), B.ravel()), rtol=0, atol=1e-15)


@settings(max_examples=30, deadline=None)
@given(m1=st.integers(1, 5), n1=st.integers(1, 5), m2=st.integers(1, 5), n2=st.integers(1, 5),
       seed=st.integers(0, 2**32 - 1))
def test_property_inverse_rearrangement_undoes_it(m1, n1, m2, n2, seed):
    w = np.random.default_rng(seed).standard_normal((m1 * m2, n1 * n2))
    r = fusekit.ops.kron_rearrange(w, (m1, n1), (m2, n2), backend="cpu")
    assert r.shape == (m1 * n1, m2 * n2)
    np.testing.assert_array_equal(
        fusekit.ops.kron_rearrange_inverse(r, (m1, n1), (m2, n2), backend="cpu"), w)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("method", ["exact", "randomized"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_kpsvd_recovers_exact_kronecker_structure(backend, method, dtype, tol):
    w = structured(3, (6, 4), (5, 7), dtype=dtype)
    A, B, s = fusekit.ops.kpsvd(w, (6, 4), (5, 7), rank=3, method=method, backend=backend)
    assert A.shape == (3, 6, 4) and B.shape == (3, 5, 7) and A.dtype == dtype
    assert (np.diff(s) <= 0).all()
    err = np.linalg.norm(kron_sum(A, B) - w) / np.linalg.norm(w)
    assert err <= tol


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_cpu_factors_equal_the_reference_with_canonical_signs(method):
    w = structured(2, (4, 3), (3, 5), seed=1) + 1e-3 * np.random.default_rng(9).standard_normal(
        (12, 15))
    A, B, s = fusekit.ops.kpsvd(w, (4, 3), (3, 5), rank=2, method=method, backend="cpu")
    rA, rB, rs = kpsvd_reference(w, (4, 3), (3, 5), 2)
    np.testing.assert_allclose(s, rs, rtol=1e-9)
    np.testing.assert_allclose(A, rA, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(B, rB, rtol=1e-7, atol=1e-9)


def test_truncated_kpsvd_is_the_best_rank_r_kronecker_approximation():
    w = np.random.default_rng(2).standard_normal((12, 20))
    A, B, s = fusekit.ops.kpsvd(w, (3, 4), (4, 5), rank=2)
    full = np.linalg.svd(kron_rearrange_reference(w, (3, 4), (4, 5)), compute_uv=False)
    err = np.linalg.norm(kron_sum(A, B) - w)
    np.testing.assert_allclose(err, np.sqrt((full[2:] ** 2).sum()), rtol=1e-10)


def test_column_and_row_factors_make_kpsvd_the_ordinary_svd():
    """(m x 1) kron (1 x n): the PiSSA special case."""
    w = np.random.default_rng(3).standard_normal((6, 8))
    A, B, s = fusekit.ops.kpsvd(w, (6, 1), (1, 8), rank=3)
    np.testing.assert_allclose(s, np.linalg.svd(w, compute_uv=False)[:3], rtol=1e-12)


def test_randomized_kpsvd_matches_the_optimal_error_on_a_decaying_spectrum():
    rng = np.random.default_rng(4)
    w = structured(4, (16, 16), (16, 16), seed=5) + 1e-3 * rng.standard_normal((256, 256))
    exact = fusekit.ops.kpsvd(w, (16, 16), (16, 16), rank=4, method="exact")
    approx = fusekit.ops.kpsvd(w, (16, 16), (16, 16), rank=4, method="randomized")
    e_exact = np.linalg.norm(kron_sum(*exact[:2]) - w)
    e_rand = np.linalg.norm(kron_sum(*approx[:2]) - w)
    assert e_rand <= e_exact * (1 + 1e-6)


def test_default_factor_shapes_are_the_divisors_nearest_the_square_root():
    assert factorization(4096) == (64, 64)
    assert factorization(768) == (24, 32)
    assert factorization(13) == (1, 13)
    assert fusekit.ops.kron_factor_shapes((384, 1536)) == ((16, 32), (24, 48))
    A, B, _ = fusekit.ops.kpsvd(structured(1, (4, 3), (5, 6)))
    assert A.shape[1:] == (4, 3) and B.shape[1:] == (5, 6)


def test_automatic_rank_uses_the_energy_threshold():
    w = structured(2, (4, 3), (5, 6), seed=6)
    A, _, s = fusekit.ops.kpsvd(w, (4, 3), (5, 6), energy=0.999999)
    assert A.shape[0] == 2


def test_select_rank_energy_threshold_formula():
    s = np.array([3.0, 2.0, 1.0, 0.0])  # energies 9, 4, 1 of 14
    assert fusekit.ops.select_rank(s, energy=9 / 14) == 1
    assert fusekit.ops.select_rank(s, energy=13 / 14) == 2
    assert fusekit.ops.select_rank(s, energy=1.0) == 3


def test_select_rank_elbow_finds_the_knee_and_abstains_on_flat_spectra():
    knee = np.array([100, 50, 10, 2, 1.5, 1.2, 1.1, 1.0])
    assert fusekit.ops.select_rank(knee, energy=None, elbow=True) == 3
    flat = np.linspace(1.0, 0.99, 4096)
    assert fusekit.ops.select_rank(flat, energy=None, elbow=True) == 4096  # guard: no elbow
    assert fusekit.ops.select_rank(flat, energy=0.5, elbow=True) == fusekit.ops.select_rank(
        flat, energy=0.5)
    assert fusekit.ops.select_rank(knee, energy=0.9999, elbow=True) == 3


def test_torch_rearrangement_is_differentiable_and_passes_opcheck():
    torch = pytest.importorskip("torch")
    import fusekit.torch  # noqa: F401

    w = torch.randn(6, 20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda w: fusekit.ops.kron_rearrange(w, (2, 4), (3, 5)), (w,))
    torch.library.opcheck(torch.ops.fusekit.kron_rearrange.default, (w, [2, 4], [3, 5]))
    r = fusekit.ops.kron_rearrange(w.detach(), (2, 4), (3, 5))
    np.testing.assert_array_equal(r.numpy(), kron_rearrange_reference(w.detach().numpy(),
                                                                      (2, 4), (3, 5)))
    back = fusekit.ops.kron_rearrange_inverse(r, (2, 4), (3, 5))
    np.testing.assert_array_equal(back.numpy(), kron_rearrange_inverse_reference(
        r.numpy(), (2, 4), (3, 5)))


def test_torch_kpsvd_returns_tensors_in_kron_linear_layout():
    torch = pytest.importorskip("torch")
    w = torch.from_numpy(structured(2, (4, 3), (5, 6), dtype=np.float32))
    A, B, s = fusekit.ops.kpsvd(w, (4, 3), (5, 6), rank=2, method="randomized")
    assert isinstance(A, torch.Tensor) and A.shape == (2, 4, 3)
    x = torch.randn(7, 18)
    torch.testing.assert_close(fusekit.ops.kron_linear(x, A, B), x @ w.T, rtol=1e-4, atol=1e-4)


def test_wrong_weight_shape_names_the_expected_one():
    with pytest.raises(fusekit.InputError, match=r"w must have shape \(m1\*m2, n1\*n2\) = "
                                                 r"\(20, 18\)"):
        fusekit.ops.kpsvd(np.ones((20, 17)), (4, 3), (5, 6), rank=1)


def test_rank_above_what_the_factors_allow_is_rejected():
    with pytest.raises(fusekit.InputError, match=r"rank must be an int between 1 and "
                                                 r"min\(m1\*n1, m2\*n2\) = 12"):
        fusekit.ops.kpsvd(np.ones((20, 18)), (4, 3), (5, 6), rank=13)


def test_nan_weight_is_rejected():
    w = np.ones((20, 18))
    w[0, 0] = np.nan
    with pytest.raises(fusekit.InputError, match="NaN"):
        fusekit.ops.kpsvd(w, (4, 3), (5, 6), rank=1)


def test_select_rank_rejects_unsorted_spectra():
    with pytest.raises(fusekit.InputError, match="non-increasing"):
        fusekit.ops.select_rank([1.0, 2.0])


def test_select_rank_with_total_energy_from_the_frobenius_norm():
    # Leading values of a longer spectrum: energy is measured against the whole of it.
    assert fusekit.ops.select_rank([3.0, 2.0], energy=0.9, total_energy=14.0) == 2
    assert fusekit.ops.select_rank([3.0, 2.0], energy=0.5, total_energy=14.0) == 1
