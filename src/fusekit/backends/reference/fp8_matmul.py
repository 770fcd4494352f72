"""Reference kernels of the fp8_matmul family: dequantize in float64, then multiply."""

from ..._registry import register_kernel
from ...ops import fp8_matmul

_X = ("float32", "float64")
register_kernel(fp8_matmul.fp8_gemv_op, backend="reference", arrays=["numpy"], dtypes=_X)(
    fp8_matmul.fp8_gemv_reference
)
register_kernel(fp8_matmul.fp8_gemv_t_op, backend="reference", arrays=["numpy"], dtypes=_X)(
    fp8_matmul.fp8_gemv_t_reference
)
register_kernel(fp8_matmul.fp8_gate_up_op, backend="reference", arrays=["numpy"], dtypes=_X)(
    fp8_matmul.fp8_gate_up_reference
)
