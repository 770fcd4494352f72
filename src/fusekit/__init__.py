"""fusekit: fast, differentiable kernels behind one op registry.

Four domains: FP8 GEMV for MoE experts, Kronecker adapters, ion channels and spiking sort, each
op with a float64 NumPy reference, a Numba CPU kernel and a CUDA kernel.

Example:
    >>> import numpy as np, fusekit
    >>> A, B = np.random.rand(1, 2, 3), np.random.rand(1, 4, 5)
    >>> fusekit.ops.kron_linear(np.random.rand(15), A, B).shape
    (8,)

``import fusekit`` imports neither torch, Numba nor CuPy: each is loaded when a call needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._errors import BackendUnavailableError as BackendUnavailableError
from ._errors import FusekitError as FusekitError
from ._errors import InputError as InputError
from ._errors import MixedArraysError as MixedArraysError
from ._errors import NoKernelError as NoKernelError
from ._errors import UnknownBackendError as UnknownBackendError
from ._info import info as info
from ._registry import available_backends as available_backends
from ._registry import requested_backend as requested_backend
from ._registry import use_backend as use_backend
from ._threads import get_num_threads as get_num_threads
from ._threads import set_num_threads as set_num_threads

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "FusekitError",
    "InputError",
    "MixedArraysError",
    "NoKernelError",
    "UnknownBackendError",
    "available_backends",
    "get_num_threads",
    "info",
    "ops",
    "requested_backend",
    "set_num_threads",
    "use_backend",
]

_LAZY_SUBMODULES = ("ops", "torch", "backends", "peft", "mst", "neuro")


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'fusekit' has no attribute {name!r}")
