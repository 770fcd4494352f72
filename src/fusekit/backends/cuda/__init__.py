"""The CUDA backend: Numba CUDA kernels on CuPy arrays (torch CUDA tensors via DLPack)."""

from __future__ import annotations

import importlib.util
import os


def unavailable_reason() -> str | None:
    """``None`` when CuPy and a CUDA device are usable, else why not and what to do."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return (
            "NUMBA_ENABLE_CUDASIM=1 runs CUDA kernels in the simulator, which serves only "
            "fusekit's own kernel tests; unset it to use a real GPU"
        )
    if importlib.util.find_spec("cupy") is None:
        return (
            "CuPy is not installed (on a machine with an NVIDIA GPU: pip install -e '.[cuda]' "
            "in a clone, or pip install 'fusekit[cuda]')"
        )
    try:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"no usable CUDA device: {exc}"
    if n == 0:
        return "no CUDA device found"
    try:
        from numba import cuda

        if not cuda.is_available():
            return "Numba cannot use the CUDA driver (numba.cuda.is_available() is False)"
    except Exception as exc:
        return f"numba.cuda failed to import: {exc!r}"
    return _compile_probe(cuda)


def _compile_probe(cuda) -> str | None:
    """Compile one trivial kernel to PTX: a Numba CUDA that imports may still not compile.

    numba-cuda 0.30 with NumPy 2.5, for one, imports and finds the GPU, then fails on every
    first compilation (it overloads ``np.row_stack``, which NumPy 2.5 removed).
    """

    def _probe(x):  # pragma: no cover - compiled, never run
        x[0] = 1.0

    try:
        cuda.compile_ptx(_probe, "void(float32[:])")
    except Exception as exc:
        hint = ""
        if "row_stack" in str(exc):
            hint = (" (this numba-cuda uses np.row_stack, which NumPy 2.5 removed: upgrade "
                    "numba-cuda, or install numpy<2.5)")
        return f"Numba CUDA cannot compile kernels here: {exc!r}{hint}"
    return None
