"""Reference kernels of the ion_network_grad family: the whole-run loop on the NumPy steps."""

from typing import Any

import numpy as np

from ..._registry import register_kernel
from ...ops import ion_membrane as mem
from ...ops import ion_network_grad as grad

_FLOATS = ("float32", "float64")


def reference_steps(cs: Any, dt: float, indptr: np.ndarray, weights: np.ndarray,
                    target: np.ndarray, n_out: int) -> grad.StepKernels:
    """The float64 oracles of the four per-step ops, bound to one network."""
    kw = {"channels": cs, "dt": dt}
    return grad.StepKernels(
        lambda *a: mem.membrane_step_reference(*a, **kw),
        lambda *a: mem.membrane_step_vjp_reference(*a, **kw),
        lambda s: mem.synapse_deliver_reference(s, indptr, weights, target, n_out=n_out),
        lambda s, a: mem.synapse_deliver_vjp_reference(s, indptr, weights, target, a,
                                                       n_out=n_out))


@register_kernel(grad.network_run_op, backend="reference", arrays=["numpy"], dtypes=_FLOATS)
def network_run_reference(*arrays: np.ndarray, **params: Any) -> tuple[np.ndarray, ...]:
    """The whole-run forward on the reference steps."""
    return grad.network_run_with(reference_steps, *arrays, **params)


@register_kernel(grad.network_run_vjp_op, backend="reference", arrays=["numpy"],
                 dtypes=_FLOATS)
def network_run_vjp_reference(*arrays: np.ndarray, **params: Any) -> tuple[np.ndarray, ...]:
    """The whole-run backward on the reference steps."""
    return grad.network_run_vjp_with(reference_steps, *arrays, **params)
