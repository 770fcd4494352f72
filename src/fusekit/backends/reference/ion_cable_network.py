"""Reference kernel of networks of multi-compartment cells: the op's float64 oracle."""

from ..._registry import register_kernel
from ...ops import ion_cable_network as icn

register_kernel(icn.cable_network_simulate_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(icn.cable_network_simulate_reference)
