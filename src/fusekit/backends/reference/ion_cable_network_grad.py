"""Reference kernels of the ion_cable_network_grad family: the float64 NumPy loops."""

from typing import Any

import numpy as np

from ..._registry import register_kernel
from ...ops import ion_cable_network_grad as grad

_FLOATS = ("float32", "float64")


@register_kernel(grad.cable_network_run_op, backend="reference", arrays=["numpy"],
                 dtypes=_FLOATS)
def cable_network_run_reference(*arrays: np.ndarray, **params: Any) -> tuple[np.ndarray, ...]:
    """The whole-run forward in float64 NumPy."""
    return grad.cable_network_run_reference(*arrays, **params)


@register_kernel(grad.cable_network_run_vjp_op, backend="reference", arrays=["numpy"],
                 dtypes=_FLOATS)
def cable_network_run_vjp_reference(*arrays: np.ndarray, **params: Any
                                    ) -> tuple[np.ndarray, ...]:
    """The whole-run backward in float64 NumPy."""
    return grad.cable_network_run_vjp_reference(*arrays, **params)
