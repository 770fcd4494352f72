"""Reference kernels of the kron family: the float64 oracles declared with the ops."""

from ..._registry import register_kernel
from ...ops import kron

_FLOATS = ("float32", "float64")

register_kernel(kron.kron_linear_op, backend="reference", arrays=["numpy"], dtypes=_FLOATS)(
    kron.kron_linear_reference
)
register_kernel(kron.kron_factor_grads_op, backend="reference", arrays=["numpy"], dtypes=_FLOATS)(
    kron.kron_factor_grads_reference
)
