"""Reference kernel of the ion_sensitivity family: the float64 oracle declared with the op."""

from ..._registry import register_kernel
from ...ops import ion_forward

register_kernel(ion_forward.ion_sensitivity_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(ion_forward.ion_sensitivity_reference)
