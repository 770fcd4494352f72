"""Reference kernels of the fp8 family: the table-search oracles declared with the ops."""

from ..._registry import register_kernel
from ...ops import fp8

register_kernel(fp8.fp8_encode_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(fp8.fp8_encode_reference)
register_kernel(fp8.fp8_decode_op, backend="reference", arrays=["numpy"], dtypes=("uint8",))(
    fp8.fp8_decode_reference
)
register_kernel(fp8.fp8_block_quantize_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(fp8.fp8_block_quantize_reference)
register_kernel(fp8.fp8_block_dequantize_op, backend="reference", arrays=["numpy"],
                dtypes=("uint8",))(fp8.fp8_block_dequantize_reference)
register_kernel(fp8.fp8_act_quantize_op, backend="reference", arrays=["numpy"],
                dtypes=("float32", "float64"))(fp8.fp8_act_quantize_reference)
