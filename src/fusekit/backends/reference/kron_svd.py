"""Reference kernels of the kron_svd family: reshapes and a float64 full SVD."""

from ..._registry import register_kernel
from ...ops import kron_svd

_F = ("float32", "float64")
register_kernel(kron_svd.kron_rearrange_op, backend="reference", arrays=["numpy"], dtypes=_F)(
    kron_svd.kron_rearrange_reference
)
register_kernel(kron_svd.kron_rearrange_inverse_op, backend="reference", arrays=["numpy"],
                dtypes=_F)(kron_svd.kron_rearrange_inverse_reference)
register_kernel(kron_svd.kpsvd_op, backend="reference", arrays=["numpy"], dtypes=_F)(
    kron_svd.kpsvd_reference
)
