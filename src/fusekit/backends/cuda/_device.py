"""Device-array plumbing shared by every CUDA kernel module: inputs, outputs, streams.

The ``*_launch`` functions of the family modules take Numba device arrays, anything with
``__cuda_array_interface__`` (CuPy, torch), or host NumPy arrays (copied over, results copied
back), so the CUDA simulator can run them without CuPy.
"""

from __future__ import annotations

import ctypes
import os
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


_external_streams: dict[int, Any] = {}


def cupy_stream(cupy: Any) -> Any:
    """CuPy's current stream as a Numba stream (``0`` for the legacy default stream).

    One Numba stream per CuPy stream pointer, made on first use (a new one costs several
    microseconds per launch and the fast launch below keys its stream cache on it).
    """
    ptr = cupy.cuda.get_current_stream().ptr
    if not ptr:
        return 0
    stream = _external_streams.get(ptr)
    if stream is None:
        stream = _external_streams[ptr] = cuda.external_stream(ptr)
    return stream


# ------------------------------------------------------------------------- fast launches
# Numba's dispatcher costs about 150 us per launch of a kernel with six CuPy arrays on an
# H200 (it types and wraps every array, then flattens it into the kernel's parameters). A
# kernel launched again with arguments of the same kinds can skip that: the compiled
# overload is looked up once, and later calls flatten the arrays themselves and call
# cuda.core's launch, as Numba's own _Kernel.launch does (numba-cuda 0.30). On an H200
# this launched fp8_gemv in 33.5 us a call (the kernel's own time) against 184 us, with
# results equal bit for bit (benchmarks/gpu/run_gpu_checks.py, diag_launch).
#
# Only CuPy arrays (C-contiguous) and Python int/float/bool scalars take this path; the
# first launch of each (kernel, argument kinds, device) goes through Numba, which compiles
# it. Any other argument, the simulator, a numba-cuda without cuda.core, or
# FUSEKIT_CUDA_FAST_LAUNCH=0 keep Numba's launch.


def _fast_launch_parts() -> Any:
    """``(launch, LaunchConfig, to_core_stream, cooperative flag name)`` or ``None``."""
    from numba.core import config

    if config.ENABLE_CUDASIM or os.environ.get("FUSEKIT_CUDA_FAST_LAUNCH", "1") == "0":
        return None
    try:
        from cuda.core import LaunchConfig, launch
        from numba.cuda._compat import CUDA_CORE_GE_1_0
        from numba.cuda.cudadrv.driver import _to_core_stream
    except ImportError:  # Numba's own numba.cuda, or an older numba-cuda
        return None
    flag = "is_cooperative" if CUDA_CORE_GE_1_0 else "cooperative_launch"
    return launch, LaunchConfig, _to_core_stream, flag


_parts: list[Any] = []  # [parts or None], filled on the first launch
_launchers: dict[tuple[Any, ...], Any] = {}
_configs: dict[tuple[Any, ...], Any] = {}
_core_streams: dict[int, tuple[Any, Any]] = {}
_SCALARS = {"float64": ctypes.c_double, "float32": ctypes.c_float}


def _scalar_converter(ty: Any) -> Any:
    """How Numba passes a scalar argument of Numba type ``ty``, or ``None`` if not handled."""
    from numba import types

    if isinstance(ty, types.Boolean):
        return bool
    if isinstance(ty, types.Integer):
        return getattr(ctypes, f"c_{ty}")
    return _SCALARS.get(str(ty))


def _resolve(kernel: Any, args: tuple[Any, ...]) -> Any:
    """``(cuda.core kernel, per-argument converter)`` of the overload ``args`` select, or None.

    A converter of ``None`` marks an array argument.
    """
    from numba import types

    argtypes = tuple(kernel.typeof_pyval(a) for a in args)
    overload = kernel.overloads.get(argtypes)
    if overload is None or getattr(overload, "debug", False) or getattr(
            overload, "cooperative", False):
        return None
    converters = []
    for ty in overload.argument_types:
        if isinstance(ty, types.Array):
            if ty.layout != "C":
                return None
            converters.append(None)
        else:
            conv = _scalar_converter(ty)
            if conv is None:
                return None
            converters.append(conv)
    return overload._codelibrary.get_cufunc().kernel, tuple(converters)


def launch(kernel: Any, grid: tuple[int, ...], block: tuple[int, ...], stream: Any,
           args: tuple[Any, ...], device: int | None = None) -> None:
    """Launch the Numba CUDA ``kernel`` on ``grid`` x ``block`` on ``stream``.

    With ``device`` None, ``args`` go to Numba as they are (Numba device arrays, host arrays
    the simulator takes, scalars). With ``device`` set (the CUDA device, CuPy's current one),
    ``args`` are C-contiguous CuPy arrays and scalars: Numba gets views of the arrays made
    without a stream sync, inside that device's context, and repeated launches skip Numba's
    dispatcher (see above).
    """
    if not _parts:
        _parts.append(_fast_launch_parts())
    parts = _parts[0]
    if device is None:
        kernel[grid, block, stream](*args)
        return
    key = None
    if parts is not None:
        kinds = []
        for a in args:
            if isinstance(a, (int, float)):
                kinds.append(type(a))
            elif getattr(a, "data", None) is not None and hasattr(a.data, "ptr") and \
                    a.flags.c_contiguous:
                kinds.append((a.dtype.str, a.ndim))
            else:
                break
        else:
            key = (kernel, device, tuple(kinds))
    launcher = _launchers.get(key) if key is not None else None
    if not launcher:  # first launch of its kind, or one the fast path cannot make
        # Numba's views of the CuPy arrays, made without synchronising their stream (Numba
        # would, given the CuPy arrays): the launch goes to that stream anyway.
        views = tuple(a if isinstance(a, (int, float)) or _is_device_array(a)
                      else cuda.as_cuda_array(a, sync=False) for a in args)
        with cuda.gpus[device]:
            kernel[grid, block, stream](*views)
            if key is not None and launcher is None:
                _launchers[key] = _resolve(kernel, views) or False
        return
    core_launch, config_type, to_core_stream, flag = parts
    cu_kernel, converters = launcher
    flat: list[Any] = []
    for a, conv in zip(args, converters, strict=True):
        if conv is None:
            flat += (0, 0, a.size, a.itemsize, a.data.ptr, *a.shape, *a.strides)
        else:
            flat.append(conv(a))
    config = _configs.get((grid, block))
    if config is None:
        if len(_configs) > 4096:  # grids follow the batch size: keep the cache bounded
            _configs.clear()
        config = _configs[(grid, block)] = config_type(
            grid=grid, block=block, shmem_size=0, **{flag: False})
    known = _core_streams.get(id(stream))
    if known is None or known[0] is not stream:
        known = _core_streams[id(stream)] = (stream, to_core_stream(stream))
    core_launch(known[1], config, cu_kernel, *flat)
