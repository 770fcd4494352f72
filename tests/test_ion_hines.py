"""hines_solve against a dense solve of the same tree-structured matrix."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit

CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]


def random_tree(n_nodes, rng):
    """Parents in Hines order: every node hangs from an earlier one."""
    parent = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, n_nodes)])
    return parent


def cable_system(parent, batch, rng, dtype=np.float64):
    """Backward-Euler matrix of a passive branched cable: c/dt + g_leak + axial couplings."""
    n = parent.shape[0]
    g_axial = rng.uniform(0.5, 2.0, (batch, n))
    area = rng.uniform(0.5, 1.5, (batch, n))
    diag = area * (1.0 / 0.025 + 0.3)
    lower = np.zeros((batch, n))
    upper = np.zeros((batch, n))
    for i in range(1, n):
        p = parent[i]
        diag[:, i] += g_axial[:, i]
        diag[:, p] += g_axial[:, i]
        lower[:, i] = upper[:, i] = -g_axial[:, i]
    rhs = rng.standard_normal((batch, n))
    return tuple(a.astype(dtype) for a in (diag, upper, lower, rhs))


def dense(parent, diag, upper, lower):
    n = parent.shape[0]
    A = np.zeros((diag.shape[0], n, n))
    A[:, np.arange(n), np.arange(n)] = diag
    for i in range(1, n):
        A[:, i, parent[i]] = lower[:, i]
        A[:, parent[i], i] = upper[:, i]
    return A


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_hines_matches_dense_solve_on_a_random_branched_tree(backend, dtype):
    rng = np.random.default_rng(0)
    parent = random_tree(60, rng)
    diag, upper, lower, rhs = cable_system(parent, 5, rng, dtype)
    # An unsymmetric matrix too: upper and lower differ, as with unequal compartment areas.
    upper = (upper * rng.uniform(0.5, 1.5, upper.shape)).astype(dtype)
    x = fusekit.ops.hines_solve(parent, diag, upper, lower, rhs, backend=backend)
    A = dense(parent, *(a.astype(np.float64) for a in (diag, upper, lower)))
    expected = np.linalg.solve(A, rhs.astype(np.float64)[..., None])[..., 0]
    assert x.dtype == dtype and x.shape == rhs.shape
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(x, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_unbranched_cable_is_the_tridiagonal_solve(backend):
    n = 7
    parent = np.arange(-1, n - 1)
    diag, off, rhs = np.full(n, 3.0), np.full(n, -1.0), np.arange(n, dtype=float)
    x = fusekit.ops.hines_solve(parent, diag, off, off, rhs, backend=backend)
    A = np.diag(diag) + np.diag(off[1:], 1) + np.diag(off[1:], -1)
    np.testing.assert_allclose(x, np.linalg.solve(A, rhs), rtol=1e-13)


@settings(max_examples=25, deadline=None)
@given(n_nodes=st.integers(1, 30), batch=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_property_cpu_hines_matches_dense_for_any_tree(n_nodes, batch, seed):
    rng = np.random.default_rng(seed)
    parent = random_tree(n_nodes, rng)
    diag, upper, lower, rhs = cable_system(parent, batch, rng)
    x = fusekit.ops.hines_solve(parent, diag, upper, lower, rhs, backend="cpu")
    expected = np.linalg.solve(dense(parent, diag, upper, lower), rhs[..., None])[..., 0]
    np.testing.assert_allclose(x, expected, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("parent, match", [
    (np.array([0, 0, 1]), "parent\\[0\\] = -1"),
    (np.array([-1, 0, 2]), "0 <= parent\\[i\\] < i"),
    (np.array([-1.0, 0.0, 1.0]), "parent must be an int32 or int64"),
])
def test_parents_out_of_hines_order_are_refused(parent, match):
    with pytest.raises(fusekit.InputError, match=match):
        fusekit.ops.hines_solve(parent, *(np.ones(3) for _ in range(4)), backend="reference")


def test_mismatched_shapes_are_refused():
    with pytest.raises(fusekit.InputError, match="rhs must have diag's shape"):
        fusekit.ops.hines_solve(np.array([-1, 0]), np.ones((2, 2)), np.ones((2, 2)),
                                np.ones((2, 2)), np.ones((1, 2)))
