"""Reference kernel of the ion_adjoint family: the float64 oracle declared with the op."""

from ..._registry import register_kernel
from ...ops import ion_adjoint

register_kernel(ion_adjoint.ion_adjoint_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(ion_adjoint.ion_adjoint_reference)
