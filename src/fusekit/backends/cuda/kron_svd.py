"""CUDA kernels of the kron_svd family, on CuPy (cuBLAS, cuSOLVER and cuRAND).

The rearrangement and its inverse are one strided copy each (a CuPy transpose made
contiguous): memory-bound, nothing for a hand-written kernel to win. KPSVD mirrors the CPU
kernel in :mod:`fusekit.backends.cpu.kron_svd`, in the input's precision: the exact method is
``cupy.linalg.svd`` of the rearranged matrix, the randomized method the same
Halko-Martinsson-Tropp range finder (a seeded Gaussian test matrix, QR re-orthonormalisation
at each half step of the power iterations, then a small SVD). The factors get the canonical
signs of :func:`fusekit.ops.kron_svd.factors_from_svd`, so every backend returns the same
``A`` and ``B``. The randomized method's test matrix comes from CuPy's generator, so its
result agrees with the CPU kernel's to the accuracy of the range finder, not bit for bit.

CuPy is imported inside the kernels, never at import time.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..._registry import register_kernel
from ...ops import kron_svd

_FLOATS = ("float32", "float64")


def _on_device_of(a: Any) -> Any:
    """A context that makes ``a``'s GPU current (a CuPy array's ``device``), else a no-op."""
    device = getattr(a, "device", None)
    return device if hasattr(device, "__enter__") else contextlib.nullcontext()


def _rearrange(cupy: Any, w: Any, a_shape: Any, b_shape: Any) -> Any:
    (m1, n1), (m2, n2) = a_shape, b_shape
    return cupy.ascontiguousarray(
        w.reshape(m1, m2, n1, n2).transpose(0, 2, 1, 3)).reshape(m1 * n1, m2 * n2)


@register_kernel(kron_svd.kron_rearrange_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def kron_rearrange_cuda(w: Any, a_shape: Any, b_shape: Any) -> Any:
    """Van Loan-Pitsianis rearrangement ``R(W)`` of a CuPy array, as a contiguous copy.

    Args:
        w: ``(m1*m2, n1*n2)`` CuPy array.
        a_shape: ``(m1, n1)``.
        b_shape: ``(m2, n2)``.

    Returns:
        ``(m1*n1, m2*n2)`` C-contiguous CuPy array on ``w``'s device.
    """
    import cupy

    with _on_device_of(w):
        return _rearrange(cupy, w, a_shape, b_shape)


@register_kernel(kron_svd.kron_rearrange_inverse_op, backend="cuda", arrays=["cupy"],
                 dtypes=_FLOATS)
def kron_rearrange_inverse_cuda(r: Any, a_shape: Any, b_shape: Any) -> Any:
    """Inverse of :func:`kron_rearrange_cuda`, as a contiguous copy.

    Args:
        r: ``(m1*n1, m2*n2)`` CuPy array.
        a_shape: ``(m1, n1)``.
        b_shape: ``(m2, n2)``.

    Returns:
        ``(m1*m2, n1*n2)`` C-contiguous CuPy array on ``r``'s device.
    """
    import cupy

    (m1, n1), (m2, n2) = a_shape, b_shape
    with _on_device_of(r):
        return cupy.ascontiguousarray(
            r.reshape(m1, n1, m2, n2).transpose(0, 2, 1, 3)).reshape(m1 * m2, n1 * n2)


def _randomized_svd(cupy: Any, r: Any, rank: int, oversample: int, power_iters: int,
                    seed: int) -> tuple[Any, Any, Any]:
    """Halko-Martinsson-Tropp truncated SVD of ``r``: ``u (m, k)``, ``s (k,)``, ``vt (k, n)``.

    ``k = min(rank + oversample, *r.shape)`` columns; the range of ``(R R^T)^q R Omega`` is
    re-orthonormalised by QR after every product, as in the CPU kernel.
    """
    k = min(rank + max(oversample, 0), *r.shape)
    omega = cupy.random.default_rng(seed).standard_normal((r.shape[1], k), dtype=r.dtype)
    q, _ = cupy.linalg.qr(r @ omega)
    for _ in range(power_iters):
        q, _ = cupy.linalg.qr(r.T @ q)
        q, _ = cupy.linalg.qr(r @ q)
    u_small, s, vt = cupy.linalg.svd(q.T @ r, full_matrices=False)
    return q @ u_small, s, vt


@register_kernel(kron_svd.kpsvd_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def kpsvd_cuda(w: Any, a_shape: Any, b_shape: Any, rank: int, method: str = "exact",
               oversample: int = -1, power_iters: int = 2, seed: int = 0
               ) -> tuple[Any, Any, Any]:
    """KPSVD on the GPU, exact (cuSOLVER SVD) or randomized, in the input's precision.

    Args:
        w: ``(m1*m2, n1*n2)`` CuPy array, float32 or float64, finite (the op checked it).
        a_shape: ``(m1, n1)``.
        b_shape: ``(m2, n2)``.
        rank: Terms to keep.
        method: ``"exact"`` or ``"randomized"``.
        oversample: Extra columns of the randomized test matrix; negative means ``rank``.
        power_iters: Power iterations of the randomized method.
        seed: Seed of the randomized method's test matrix (``cupy.random.default_rng``).

    Returns:
        ``(A, B, s)`` as CuPy arrays of ``w``'s dtype: ``A`` ``(rank, m1, n1)``, ``B``
        ``(rank, m2, n2)`` with canonical signs, and the ``rank`` leading singular values.
    """
    import cupy

    with _on_device_of(w):
        r = _rearrange(cupy, w, a_shape, b_shape)
        if method == "exact":
            u, s, vt = cupy.linalg.svd(r, full_matrices=False)
        else:
            u, s, vt = _randomized_svd(cupy, r, rank, rank if oversample < 0 else oversample,
                                       power_iters, seed)
        return kron_svd.factors_from_svd(u, s, vt, a_shape, b_shape, rank, w.dtype, xp=cupy)
