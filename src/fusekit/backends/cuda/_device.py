"""Device-array plumbing shared by every CUDA kernel module: inputs, outputs, streams.

The ``*_launch`` functions of the family modules take Numba device arrays, anything with
``__cuda_array_interface__`` (CuPy, torch), or host NumPy arrays (copied over, results copied
back), so the CUDA simulator can run them without CuPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda


def _is_device_array(a: Any) -> bool:
    return bool(getattr(a, "__cuda_ndarray__", False))


def to_device(name: str, a: Any, stream: Any) -> Any:
    """``a`` as a C-contiguous Numba device array: device arrays as they are, others copied."""
    if _is_device_array(a):
        d = a
    elif hasattr(a, "__cuda_array_interface__"):
        # The caller launches on the producer's stream, so no synchronisation is needed.
        d = cuda.as_cuda_array(a, sync=False)
    else:
        return cuda.to_device(np.ascontiguousarray(a), stream=stream)
    if not d.is_c_contiguous():
        raise ValueError(
            f"{name} must be a C-contiguous device array, got shape {d.shape} with strides "
            f"{d.strides}; copy it into a contiguous array first (cupy.ascontiguousarray)"
        )
    return d


def output(name: str, out: Any, shape: tuple[int, ...], stream: Any) -> tuple[Any, Any]:
    """A device array of ``shape`` viewing ``out``, and ``out`` if it is a host array."""
    if _is_device_array(out) or hasattr(out, "__cuda_array_interface__"):
        return to_device(name, out, stream).reshape(shape), None
    if not isinstance(out, np.ndarray) or not out.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous device or NumPy array")
    host = out.reshape(shape)
    return cuda.device_array(shape, dtype=out.dtype, stream=stream), host


def copy_back(stream: Any, *pairs: tuple[Any, Any]) -> None:
    """Copy each ``(device, host)`` pair of :func:`output` back where ``host`` is an array.

    Empty host arrays are skipped (there is nothing to copy, and the simulator refuses).
    """
    copied = False
    for device, host in pairs:
        if host is not None and host.size:
            device.copy_to_host(host, stream=stream)
            copied = True
    if copied:
        stream_sync(stream)


def checked_workspace(ws: Any, shape: tuple[int, ...], dtype: Any, stream: Any) -> Any:
    """``ws`` checked to hold exactly ``shape`` of ``dtype``, or a new device array."""
    if ws is None:
        return cuda.device_array(shape, dtype=dtype, stream=stream)
    d = to_device("workspace", ws, stream)
    if d.size != int(np.prod(shape)) or d.dtype != dtype:
        raise ValueError(
            f"a workspace must hold exactly {shape} elements of {dtype}, got {d.shape} of "
            f"{d.dtype}"
        )
    return d.reshape(shape)


def stream_sync(stream: Any) -> None:
    """Wait for ``stream`` (``0``: the whole device) to finish its work."""
    if stream == 0:
        cuda.synchronize()
    else:
        stream.synchronize()


def cupy_stream(cupy: Any) -> Any:
    """CuPy's current stream as a Numba stream (``0`` for the legacy default stream)."""
    ptr = cupy.cuda.get_current_stream().ptr
    return cuda.external_stream(ptr) if ptr else 0
