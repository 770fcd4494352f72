"""CPU kernels of the ion_network_grad family: the whole-run loop on the Numba steps.

The loop (:mod:`fusekit.ops.ion_network_grad`) calls the per-step kernels of
:mod:`.ion_membrane` directly: the op checked the whole run once, so no step pays the per-call
checks and torch's autograd bookkeeping that a step-by-step torch network does.
"""

from typing import Any

import numpy as np

from ..._registry import register_kernel
from ...ops import ion_network_grad as grad
from .ion_membrane import cpu_steps

_FLOATS = ("float32", "float64")


@register_kernel(grad.network_run_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def network_run_cpu(*arrays: np.ndarray, **params: Any) -> tuple[np.ndarray, ...]:
    """The whole-run forward on the Numba steps."""
    return grad.network_run_with(cpu_steps, *arrays, **params)


@register_kernel(grad.network_run_vjp_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def network_run_vjp_cpu(*arrays: np.ndarray, **params: Any) -> tuple[np.ndarray, ...]:
    """The whole-run backward on the Numba steps."""
    return grad.network_run_vjp_with(cpu_steps, *arrays, **params)
