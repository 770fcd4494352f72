"""Reference kernel of the ion_adjoint family: the float64 oracle declared with the op."""

from ..._registry import register_kernel
from ...ops import ion_backprop

register_kernel(ion_backprop.ion_adjoint_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(ion_backprop.ion_adjoint_reference)
register_kernel(ion_backprop.cable_adjoint_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(ion_backprop.cable_adjoint_reference)
