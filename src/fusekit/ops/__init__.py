"""fusekit's ops, declared once and dispatched to a backend by the registry."""

from . import ion_cable_network_grad as ion_cable_network_grad  # cable_network_run, vjp
from . import ion_network_grad as ion_network_grad  # declares network_run and its vjp
from .fp8 import fp8_act_quantize as fp8_act_quantize
from .fp8 import fp8_block_dequantize as fp8_block_dequantize
from .fp8 import fp8_block_quantize as fp8_block_quantize
from .fp8 import fp8_decode as fp8_decode
from .fp8 import fp8_encode as fp8_encode
from .fp8_matmul import fp8_expert as fp8_expert
from .fp8_matmul import fp8_gate_up as fp8_gate_up
from .fp8_matmul import fp8_gemm as fp8_gemm
from .fp8_matmul import fp8_gemv as fp8_gemv
from .fp8_matmul import fp8_gemv_t as fp8_gemv_t
from .ion import IonSimulation as IonSimulation
from .ion import NetworkSimulation as NetworkSimulation
from .ion import cable_simulate as cable_simulate
from .ion import hines_solve as hines_solve
from .ion import ion_simulate as ion_simulate
from .ion import network_simulate as network_simulate
from .ion_backprop import cable_adjoint as cable_adjoint
from .ion_backprop import ion_adjoint as ion_adjoint
from .ion_cable_network import cable_network_simulate as cable_network_simulate
from .ion_forward import IonSensitivity as IonSensitivity
from .ion_forward import ion_sensitivity as ion_sensitivity
from .ion_membrane import membrane_step as membrane_step
from .ion_membrane import membrane_step_vjp as membrane_step_vjp
from .ion_membrane import synapse_deliver as synapse_deliver
from .ion_membrane import synapse_deliver_vjp as synapse_deliver_vjp
from .kron import kron_factor_grads as kron_factor_grads
from .kron import kron_linear as kron_linear
from .kron_svd import kpsvd as kpsvd
from .kron_svd import kron_factor_shapes as kron_factor_shapes
from .kron_svd import kron_rearrange as kron_rearrange
from .kron_svd import kron_rearrange_inverse as kron_rearrange_inverse
from .kron_svd import select_rank as select_rank
from .mst import boruvka as boruvka
from .mst import filter_kruskal as filter_kruskal
from .mst import pipelined_kruskal as pipelined_kruskal
from .spike import SpikeSortResult as SpikeSortResult
from .spike import SpikeStats as SpikeStats
from .spike import UnionFind as UnionFind
from .spike import gather_endpoints as gather_endpoints
from .spike import spike_radix_sort as spike_radix_sort
from .spike import spike_sort as spike_sort
from .spike import spike_sort_edges as spike_sort_edges
from .spike import union_find_find as union_find_find
from .spike import union_find_union as union_find_union

__all__ = [
    "fp8_act_quantize",
    "fp8_block_dequantize",
    "fp8_block_quantize",
    "fp8_decode",
    "fp8_encode",
    "fp8_expert",
    "fp8_gate_up",
    "fp8_gemm",
    "fp8_gemv",
    "fp8_gemv_t",
    "IonSimulation",
    "NetworkSimulation",
    "cable_adjoint",
    "cable_network_simulate",
    "cable_simulate",
    "hines_solve",
    "ion_simulate",
    "network_simulate",
    "IonSensitivity",
    "ion_adjoint",
    "ion_sensitivity",
    "membrane_step",
    "membrane_step_vjp",
    "synapse_deliver",
    "synapse_deliver_vjp",
    "kron_factor_grads",
    "kron_linear",
    "kpsvd",
    "kron_factor_shapes",
    "kron_rearrange",
    "kron_rearrange_inverse",
    "select_rank",
    "SpikeSortResult",
    "SpikeStats",
    "UnionFind",
    "boruvka",
    "filter_kruskal",
    "pipelined_kruskal",
    "gather_endpoints",
    "spike_radix_sort",
    "spike_sort",
    "spike_sort_edges",
    "union_find_find",
    "union_find_union",
]
