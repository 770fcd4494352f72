"""The Kronecker-sum product ``y = sum_k (A[k] kron B[k]) x``, never forming the Kronecker product.

With ``X = x.reshape(n1, n2)``, ``(A kron B) x = vec(A X B^T)``: ``r`` terms cost two small
matrix products per row of ``x`` instead of one ``(m1 m2) x (n1 n2)`` matrix-vector product.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InputError
from .._registry import Op, TorchBridge, array_dtype
from ._common import (
    FLOAT_DTYPES,
    is_tensor,
    require_ndim,
    require_same_float_dtype,
    torch_call,
)

__all__ = [
    "kron_linear",
    "kron_factor_grads",
    "kron_linear_reference",
    "kron_factor_grads_reference",
]


def _check_factors(op: str, A: Any, B: Any) -> tuple[int, int, int, int, int]:
    require_ndim(op, "A", A, 3, "(r, m1, n1)")
    require_ndim(op, "B", B, 3, "(r, m2, n2)")
    r, m1, n1 = A.shape
    rb, m2, n2 = B.shape
    if r != rb:
        raise InputError(
            f"{op}: A and B must hold the same number r of Kronecker terms, got A with r={r} "
            f"(shape {tuple(A.shape)}) and B with r={rb} (shape {tuple(B.shape)})"
        )
    if min(m1, n1, m2, n2) < 1:
        raise InputError(
            f"{op}: factor dimensions must be positive, got A {tuple(A.shape)} and "
            f"B {tuple(B.shape)}"
        )
    return int(r), int(m1), int(n1), int(m2), int(n2)


def _check_kron_linear(x: Any, A: Any, B: Any) -> str:
    # Fast path for good input (this runs on every call); the slow path says what is wrong.
    if A.ndim == 3 and B.ndim == 3 and x.ndim >= 1:
        r, m1, n1 = A.shape
        rb, m2, n2 = B.shape
        if r == rb and x.shape[-1] == n1 * n2 and m1 > 0 and n1 > 0 and m2 > 0 and n2 > 0:
            dtype = array_dtype(x)
            if dtype in FLOAT_DTYPES and array_dtype(A) == dtype and array_dtype(B) == dtype:
                return dtype
    op = "kron_linear"
    _, _, n1, _, n2 = _check_factors(op, A, B)
    if x.ndim < 1 or x.shape[-1] != n1 * n2:
        raise InputError(
            f"{op}: x must have shape (..., n1*n2) = (..., {n1 * n2}) to match A "
            f"{tuple(A.shape)} and B {tuple(B.shape)}, got x of shape {tuple(x.shape)}"
        )
    return require_same_float_dtype(op, ("x", "A", "B"), (x, A, B))


def _check_factor_grads(x: Any, grad_y: Any, A: Any, B: Any) -> str:
    op = "kron_factor_grads"
    _, m1, n1, m2, n2 = _check_factors(op, A, B)
    if x.ndim < 1 or x.shape[-1] != n1 * n2:
        raise InputError(
            f"{op}: x must have shape (..., {n1 * n2}), got {tuple(x.shape)}"
        )
    if tuple(grad_y.shape) != (*x.shape[:-1], m1 * m2):
        raise InputError(
            f"{op}: grad_y must have shape {(*tuple(x.shape[:-1]), m1 * m2)} (x's batch shape "
            f"and m1*m2), got {tuple(grad_y.shape)}"
        )
    return require_same_float_dtype(op, ("x", "grad_y", "A", "B"), (x, grad_y, A, B))


# ------------------------------------------------------------------ torch bridge: fake, autograd


def _kron_linear_fake(x: Any, A: Any, B: Any, backend: str | None = None) -> Any:
    _check_kron_linear(x, A, B)
    return x.new_empty((*x.shape[:-1], A.shape[1] * B.shape[1]))


def _kron_factor_grads_fake(
    x: Any, grad_y: Any, A: Any, B: Any, backend: str | None = None
) -> tuple[Any, Any]:
    _check_factor_grads(x, grad_y, A, B)
    return A.new_empty(A.shape), B.new_empty(B.shape)


def _kron_linear_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, A, B, backend = inputs
    ctx.save_for_backward(x, A, B)
    ctx.backend = backend


def _kron_linear_backward(ctx: Any, grad_y: Any) -> tuple[Any, Any, Any, None]:
    # y = sum_k A_k X B_k^T  =>  dX = sum_k A_k^T G B_k, i.e. the product with transposed factors.
    x, A, B = ctx.saved_tensors
    grad_x = grad_A = grad_B = None
    if ctx.needs_input_grad[0]:
        grad_x = kron_linear(grad_y, A.transpose(1, 2), B.transpose(1, 2), backend=ctx.backend)
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        grad_A, grad_B = kron_factor_grads(x, grad_y, A, B, backend=ctx.backend)
    return grad_x, grad_A, grad_B, None


def _kron_factor_grads_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    pass


def _kron_factor_grads_backward(ctx: Any, *grads: Any) -> None:
    raise NotImplementedError(
        "kron_factor_grads has no backward: second derivatives of kron_linear with respect "
        "to A and B are not supported yet (first derivatives and d2y/dx2 are)"
    )


kron_linear_op = Op(
    name="kron_linear",
    family="kron",
    array_args=("x", "A", "B"),
    check=_check_kron_linear,
    torch=TorchBridge(
        schema="(Tensor x, Tensor A, Tensor B, str? backend=None) -> Tensor",
        fake=_kron_linear_fake,
        setup_context=_kron_linear_setup,
        backward=_kron_linear_backward,
    ),
)
kron_factor_grads_op = Op(
    name="kron_factor_grads",
    family="kron",
    array_args=("x", "grad_y", "A", "B"),
    check=_check_factor_grads,
    torch=TorchBridge(
        schema="(Tensor x, Tensor grad_y, Tensor A, Tensor B, str? backend=None) "
        "-> (Tensor, Tensor)",
        fake=_kron_factor_grads_fake,
        setup_context=_kron_factor_grads_setup,
        backward=_kron_factor_grads_backward,
    ),
)


def kron_linear(x: Any, A: Any, B: Any, *, backend: str | None = None) -> Any:
    """Kronecker-sum product ``y = sum_k (A[k] kron B[k]) x`` along the last axis of ``x``.

    Example:
        >>> import numpy as np, fusekit
        >>> A, B = np.random.rand(2, 3, 4), np.random.rand(2, 5, 6)
        >>> x = np.random.rand(7, 4 * 6)
        >>> y = fusekit.ops.kron_linear(x, A, B)
        >>> dense = np.kron(A[0], B[0]) + np.kron(A[1], B[1])
        >>> bool(np.allclose(y, x @ dense.T))
        True

    Args:
        x: Input of shape ``(..., n1*n2)``.
        A: Left factors, shape ``(r, m1, n1)``.
        B: Right factors, shape ``(r, m2, n2)``; same dtype and array library as ``x`` and ``A``
            (float32, float64, or bfloat16 for torch tensors).
        backend: ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"auto"``; ``None`` follows
            :func:`fusekit.use_backend` and ``FUSEKIT_BACKEND``.

    Returns:
        ``y`` of shape ``(..., m1*m2)``, the same kind of array as ``x``. Torch tensors are
        differentiable with respect to ``x``, ``A`` and ``B``.
    """
    if is_tensor(x):
        return torch_call("kron_linear", {"x": x, "A": A, "B": B}, backend)
    return kron_linear_op.run((x, A, B), {}, backend)


def kron_factor_grads(
    x: Any, grad_y: Any, A: Any, B: Any, *, backend: str | None = None
) -> tuple[Any, Any]:
    """Gradients of ``kron_linear(x, A, B)`` with respect to ``A`` and ``B``.

    ``grad_A[k] = sum_b G_b B[k] X_b^T`` and ``grad_B[k] = sum_b G_b^T A[k] X_b``, where
    ``X_b`` is row ``b`` of ``x`` as an ``n1 x n2`` matrix and ``G_b`` row ``b`` of ``grad_y``
    as ``m1 x m2``.

    Args:
        x: Input of the forward product, shape ``(..., n1*n2)``.
        grad_y: Gradient of the output, shape ``(..., m1*m2)``.
        A: Left factors, shape ``(r, m1, n1)``.
        B: Right factors, shape ``(r, m2, n2)``.
        backend: As for :func:`kron_linear`.

    Returns:
        ``(grad_A, grad_B)`` with the shapes of ``A`` and ``B``.
    """
    if is_tensor(x):
        return torch_call("kron_factor_grads", {"x": x, "grad_y": grad_y, "A": A, "B": B}, backend)
    return kron_factor_grads_op.run((x, grad_y, A, B), {}, backend)


# ------------------------------------------------------------------------ float64 references


def kron_linear_reference(x: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Float64 NumPy oracle of :func:`kron_linear`; the result has the input dtype.

    ``Y_b = sum_k A_k X_b B_k^T``, contracted pairwise so that no ``(A kron B)``-sized
    temporary is ever formed.
    """
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    X = x.reshape(-1, n1, n2).astype(np.float64)
    T = np.einsum("bjl,kml->bkjm", X, B.astype(np.float64), optimize=True)
    Y = np.einsum("kij,bkjm->bim", A.astype(np.float64), T, optimize=True)
    return Y.reshape(*x.shape[:-1], m1 * m2).astype(x.dtype)


def kron_factor_grads_reference(
    x: np.ndarray, grad_y: np.ndarray, A: np.ndarray, B: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Float64 NumPy oracle of :func:`kron_factor_grads`."""
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    X = x.reshape(-1, n1, n2).astype(np.float64)
    G = grad_y.reshape(-1, m1, m2).astype(np.float64)
    T = np.einsum("bjl,kml->bkjm", X, B.astype(np.float64), optimize=True)  # X_b B_k^T
    U = np.einsum("kij,bjl->bkil", A.astype(np.float64), X, optimize=True)  # A_k X_b
    gA = np.einsum("bim,bkjm->kij", G, T, optimize=True)
    gB = np.einsum("bim,bkil->kml", G, U, optimize=True)
    return gA.astype(A.dtype), gB.astype(B.dtype)
