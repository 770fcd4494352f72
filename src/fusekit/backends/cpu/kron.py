"""CPU kernels of the kron family.

Two strategies, picked per call by the amount of work:

* **fused** (Numba, one thread): each row's ``X_b B_k^T`` and ``A_k (.)`` as contiguous
  axpy loops that stay in L1, with one ``n1 x m2`` tile as the only temporary and no Python
  overhead between the steps: wins while the whole call is small (under ``BLAS_MIN_MACS``).
* **blas**: the same two contractions as two large matrix products over the whole batch
  (``X B^T`` then ``A (.)``, with one transpose between them), on torch's BLAS and thread
  pool, once the products are big enough to pay for their temporaries and the calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..._registry import register_kernel
from ...ops import kron
from ._numba import njit

if TYPE_CHECKING:
    from torch import Tensor

_FLOATS = ("float32", "float64")
#: Multiply-adds per call from which the BLAS strategy beats the fused loops (measured on
#: 2-core Zen 3: fused 8.5 us vs BLAS 55 us at 65k MACs, 46 vs 74 us at 524k, 150 vs 89 us
#: at 2M; torch's per-call cost sets the crossover).
BLAS_MIN_MACS = 1 << 20


@njit(fastmath=True)
def _kron_linear_fused(X, A, Bt, Y):  # noqa: N803 - math names
    nb, n1, _ = X.shape
    r, m1, _ = A.shape
    m2 = Bt.shape[2]
    n2 = Bt.shape[1]
    for b in range(nb):
        T = np.empty((n1, m2), dtype=X.dtype)
        for i1 in range(m1):
            for i2 in range(m2):
                Y[b, i1, i2] = 0
        for k in range(r):
            for j1 in range(n1):
                for i2 in range(m2):
                    T[j1, i2] = 0
                for j2 in range(n2):
                    xv = X[b, j1, j2]
                    for i2 in range(m2):
                        T[j1, i2] += xv * Bt[k, j2, i2]
            for i1 in range(m1):
                for j1 in range(n1):
                    a = A[k, i1, j1]
                    for i2 in range(m2):
                        Y[b, i1, i2] += a * T[j1, i2]


@njit(fastmath=True)
def _kron_factor_grads_fused(X, G, A, Bt, gA, gB):  # noqa: N803
    nb, n1, n2 = X.shape
    r, m1, _ = A.shape
    m2 = Bt.shape[2]
    T = np.empty((n1, m2), dtype=X.dtype)
    U = np.empty((m1, n2), dtype=X.dtype)
    for b in range(nb):
        for k in range(r):
            # T = X_b B_k^T and gA_k += G_b T^T
            for j1 in range(n1):
                for i2 in range(m2):
                    T[j1, i2] = 0
                for j2 in range(n2):
                    xv = X[b, j1, j2]
                    for i2 in range(m2):
                        T[j1, i2] += xv * Bt[k, j2, i2]
            for i1 in range(m1):
                for j1 in range(n1):
                    s = 0.0
                    for i2 in range(m2):
                        s += G[b, i1, i2] * T[j1, i2]
                    gA[k, i1, j1] += s
            # U = A_k X_b and gB_k += G_b^T U
            for i1 in range(m1):
                for j2 in range(n2):
                    U[i1, j2] = 0
                for j1 in range(n1):
                    a = A[k, i1, j1]
                    for j2 in range(n2):
                        U[i1, j2] += a * X[b, j1, j2]
            for i1 in range(m1):
                for i2 in range(m2):
                    g = G[b, i1, i2]
                    for j2 in range(n2):
                        gB[k, i2, j2] += g * U[i1, j2]


def _macs(nb: int, A: np.ndarray, B: np.ndarray) -> int:
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    return nb * r * (n1 * n2 * m2 + m1 * n1 * m2)


def _kron_linear_blas(X: Tensor, A: Tensor, B: Tensor) -> Tensor:
    # One large GEMM per stage, in the cheaper of the two orders: ``(X B^T)`` first costs
    # n1 n2 m2 + m1 n1 m2 per token and term, ``(A X)`` first m1 n1 n2 + m1 n2 m2. Flat factor
    # shapes (A: out/f x f) make the two differ by 10x; batched small GEMMs were 10-50x slower.
    nb, n1, n2 = X.shape
    r, m1, _ = A.shape
    m2 = B.shape[1]
    if n1 * n2 * m2 + m1 * n1 * m2 <= m1 * n1 * n2 + m1 * n2 * m2:
        T = X.reshape(nb * n1, n2) @ B.reshape(r * m2, n2).T  # [(b, j1), (k, i2)]
        T = T.reshape(nb, n1, r, m2).permute(2, 1, 0, 3).reshape(r * n1, nb * m2)
        Y = A.permute(1, 0, 2).reshape(m1, r * n1) @ T  # [i1, (b, i2)]
        return Y.reshape(m1, nb, m2).permute(1, 0, 2)
    U = A.reshape(r * m1, n1) @ X.permute(1, 0, 2).reshape(n1, nb * n2)  # [(k, i1), (b, j2)]
    U = U.reshape(r, m1, nb, n2).permute(2, 1, 0, 3).reshape(nb * m1, r * n2)
    return (U @ B.permute(0, 2, 1).reshape(r * n2, m2)).reshape(nb, m1, m2)


def _kron_factor_grads_blas(X: Tensor, G: Tensor, A: Tensor, B: Tensor) -> tuple[Tensor, Tensor]:
    # gA[k] = sum_b G_b B_k X_b^T and gB[k] = sum_b G_b^T A_k X_b, each in its cheaper order.
    nb, n1, n2 = X.shape
    r, m1, _ = A.shape
    m2 = B.shape[1]
    G_rows = G.permute(1, 0, 2).reshape(m1, nb * m2)  # [i1, (b, i2)]
    if n1 * n2 * m2 + m1 * m2 * n1 <= m1 * m2 * n2 + m1 * n2 * n1:  # through T = X B^T
        T = X.reshape(nb * n1, n2) @ B.reshape(r * m2, n2).T  # [(b, j1), (k, i2)]
        T = T.reshape(nb, n1, r, m2).permute(2, 1, 0, 3).reshape(r * n1, nb * m2)
        gA = (G_rows @ T.T).reshape(m1, r, n1).permute(1, 0, 2)
    else:  # through P = G B
        P = G.reshape(nb * m1, m2) @ B.permute(1, 0, 2).reshape(m2, r * n2)  # [(b, i1), (k, j2)]
        P = P.reshape(nb, m1, r, n2).permute(2, 1, 0, 3).reshape(r, m1, nb * n2)
        gA = P @ X.permute(0, 2, 1).reshape(nb * n2, n1)
    if m1 * n1 * n2 + m1 * m2 * n2 <= n1 * m1 * m2 + m2 * n1 * n2:  # through U = A X
        U = A.reshape(r * m1, n1) @ X.permute(1, 0, 2).reshape(n1, nb * n2)  # [(k, i1), (b, j2)]
        U = U.reshape(r, m1, nb, n2).permute(2, 1, 0, 3).reshape(nb * m1, r * n2)
        G_cols = G.permute(2, 0, 1).reshape(m2, nb * m1)  # [i2, (b, i1)]
        gB = (G_cols @ U).reshape(m2, r, n2).permute(1, 0, 2)
    else:  # through V = A^T G
        V = A.permute(0, 2, 1).reshape(r * n1, m1) @ G_rows  # [(k, j1), (b, i2)]
        V = V.reshape(r, n1, nb, m2).permute(0, 3, 2, 1).reshape(r, m2, nb * n1)
        gB = V @ X.reshape(nb * n1, n2)
    return gA.contiguous(), gB.contiguous()


def _on_torch(fn: Callable[..., Any], *arrays: np.ndarray) -> Any:
    """Run ``fn`` on zero-copy torch views of ``arrays``; results come back as NumPy.

    The BLAS strategy runs on torch's matmul rather than NumPy's: NumPy's OpenBLAS threads
    busy-wait after each call, and interleaved with torch's OpenMP pool on a 2-core machine a
    training step slowed from 1.2 ms to 10 ms. torch is a dependency of fusekit anyway.
    """
    import torch

    views = [torch.from_numpy(a if a.flags.writeable else a.copy()) for a in arrays]
    with torch.no_grad():
        out = fn(*views)
    return tuple(o.numpy() for o in out) if isinstance(out, tuple) else out.numpy()


@register_kernel(kron.kron_linear_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def kron_linear_cpu(x: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``sum_k (A[k] kron B[k]) x`` on the CPU: fused Numba loops or two BLAS products."""
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    X = np.ascontiguousarray(x).reshape(-1, n1, n2)
    if _macs(X.shape[0], A, B) >= BLAS_MIN_MACS:
        Y = _on_torch(_kron_linear_blas, X, A, B)
    else:
        Y = np.empty((X.shape[0], m1, m2), dtype=x.dtype)
        Bt = np.ascontiguousarray(B.transpose(0, 2, 1))
        _kron_linear_fused(X, np.ascontiguousarray(A), Bt, Y)
    return Y.reshape(*x.shape[:-1], m1 * m2)


@register_kernel(kron.kron_factor_grads_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def kron_factor_grads_cpu(
    x: np.ndarray, grad_y: np.ndarray, A: np.ndarray, B: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``kron_linear`` w.r.t. ``A`` and ``B`` on the CPU."""
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    X = np.ascontiguousarray(x).reshape(-1, n1, n2)
    G = np.ascontiguousarray(grad_y).reshape(-1, m1, m2)
    if 2 * _macs(X.shape[0], A, B) >= BLAS_MIN_MACS:
        return _on_torch(_kron_factor_grads_blas, X, G, A, B)
    gA = np.zeros((r, m1, n1), dtype=x.dtype)
    gB = np.zeros((r, m2, n2), dtype=x.dtype)
    Bt = np.ascontiguousarray(B.transpose(0, 2, 1))
    _kron_factor_grads_fused(X, G, np.ascontiguousarray(A), Bt, gA, gB)
    return gA, gB
