"""Reference kernels of the ion family: the float64 oracle declared with the op."""

from ..._registry import register_kernel
from ...ops import ion

_FLOATS = ("float32", "float64")

register_kernel(ion.ion_simulate_op, backend="reference", arrays=["numpy"], dtypes=_FLOATS)(
    ion.ion_simulate_reference
)
register_kernel(ion.hines_solve_op, backend="reference", arrays=["numpy"], dtypes=_FLOATS)(
    ion.hines_solve_reference
)
register_kernel(ion.cable_simulate_op, backend="reference", arrays=["numpy"], dtypes=_FLOATS)(
    ion.cable_simulate_reference
)
register_kernel(ion.network_simulate_op, backend="reference", arrays=["numpy"],
                dtypes=_FLOATS)(ion.network_simulate_reference)
