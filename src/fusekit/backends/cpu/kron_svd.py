"""CPU kernels of the kron_svd family.

The rearrangement is one strided copy (NumPy's transpose copy is memory-bound already). KPSVD
runs its matrix work on torch's BLAS/LAPACK (zero-copy views), like the kron product: the exact
method is a full SVD of the rearranged matrix in the input precision, the randomized method a
Halko-Martinsson-Tropp range finder with power iterations, which for a 4096x4096 weight is
orders of magnitude cheaper than the full SVD.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._registry import register_kernel
from ...ops import kron_svd

_F = ("float32", "float64")

register_kernel(kron_svd.kron_rearrange_op, backend="cpu", arrays=["numpy"], dtypes=_F)(
    kron_svd.kron_rearrange_reference
)
register_kernel(kron_svd.kron_rearrange_inverse_op, backend="cpu", arrays=["numpy"], dtypes=_F)(
    kron_svd.kron_rearrange_inverse_reference
)


def _randomized_svd(r: Any, rank: int, oversample: int, power_iters: int, seed: int) -> tuple:
    import torch

    k = min(rank + max(oversample, 0), *r.shape)
    gen = torch.Generator().manual_seed(seed)
    omega = torch.randn(r.shape[1], k, generator=gen, dtype=r.dtype)
    q, _ = torch.linalg.qr(r @ omega)
    for _ in range(power_iters):  # (R R^T)^q R Omega, re-orthonormalised at each half step
        q, _ = torch.linalg.qr(r.T @ q)
        q, _ = torch.linalg.qr(r @ q)
    u_small, s, vt = torch.linalg.svd(q.T @ r, full_matrices=False)
    return q @ u_small, s, vt


@register_kernel(kron_svd.kpsvd_op, backend="cpu", arrays=["numpy"], dtypes=_F)
def kpsvd_cpu(w: np.ndarray, a_shape: Any, b_shape: Any, rank: int, method: str = "exact",
              oversample: int = -1, power_iters: int = 2, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KPSVD on the CPU: exact (full SVD) or randomized, in the input's precision."""
    import torch

    r = torch.from_numpy(kron_svd.kron_rearrange_reference(w, a_shape, b_shape))
    with torch.no_grad():
        if method == "exact":
            u, s, vt = torch.linalg.svd(r, full_matrices=False)
        else:
            u, s, vt = _randomized_svd(r, rank, rank if oversample < 0 else oversample,
                                       power_iters, seed)
    return kron_svd.factors_from_svd(u.numpy(), s.numpy(), vt.numpy(), a_shape, b_shape, rank,
                                     w.dtype)
