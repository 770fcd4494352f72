"""Reference kernels of the spike family: the NumPy oracles declared with the ops."""

from ..._registry import register_kernel
from ...ops import spike

register_kernel(spike.spike_sort_op, backend="reference", arrays=["numpy"],
                dtypes=spike.KEY_DTYPES)(spike.spike_sort_reference)
register_kernel(spike.spike_sort_edges_op, backend="reference", arrays=["numpy"],
                dtypes=spike.KEY_DTYPES)(spike.spike_sort_edges_reference)
register_kernel(spike.spike_radix_sort_op, backend="reference", arrays=["numpy"],
                dtypes=spike.KEY_DTYPES)(spike.spike_radix_sort_reference)
register_kernel(spike.union_find_union_op, backend="reference", arrays=["numpy"],
                dtypes=spike.VERTEX_DTYPES)(spike.union_find_union_reference)
register_kernel(spike.union_find_find_op, backend="reference", arrays=["numpy"],
                dtypes=spike.VERTEX_DTYPES)(spike.union_find_find_reference)
register_kernel(spike.gather_endpoints_op, backend="reference", arrays=["numpy"],
                dtypes=spike.VERTEX_DTYPES)(spike.gather_endpoints_reference)
