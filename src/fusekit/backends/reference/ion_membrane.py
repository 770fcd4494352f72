"""Reference kernels of the ion_membrane family: the float64 oracles declared with the ops."""

from ..._registry import register_kernel
from ...ops import ion_membrane

register_kernel(ion_membrane.membrane_step_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(ion_membrane.membrane_step_reference)
register_kernel(ion_membrane.membrane_step_vjp_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(ion_membrane.membrane_step_vjp_reference)
register_kernel(ion_membrane.synapse_deliver_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(ion_membrane.synapse_deliver_reference)
register_kernel(ion_membrane.synapse_deliver_vjp_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(ion_membrane.synapse_deliver_vjp_reference)
