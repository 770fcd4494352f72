"""``fusekit.info()`` / ``fusekit info``: what this machine offers each backend, and why not."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

from ._cpu import cpu_features
from ._registry import (
    AUTO_ORDER,
    ENV_VAR,
    all_ops,
    kernels_for,
    load_family,
    requested_backend,
    unavailable_reason,
)


def _version(dist: str) -> str:
    """The installed version of ``dist``; CuPy's wheels are named per CUDA (``cupy-cuda13x``)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    if dist == "cupy":
        for name in importlib.metadata.packages_distributions().get("cupy", []):
            return f"{importlib.metadata.version(name)} ({name})"
    return "not installed"


def _fusekit_version() -> str:
    """The version of fusekit, from its source tree when it is imported without being installed."""
    installed = _version("fusekit")
    if installed != "not installed":
        return installed
    import fusekit

    return f"{fusekit.__version__} (not installed: source at {Path(fusekit.__file__).parent})"


def collect() -> dict[str, Any]:
    """Everything :func:`info` prints, as a dict."""
    cpu = cpu_features()
    backends = {}
    for name in AUTO_ORDER:
        reason = unavailable_reason(name)
        backends[name] = {"available": reason is None, "reason": reason}
    numba_target = "not loaded"
    if backends["cpu"]["available"]:
        import numba

        width = "512-bit" if "-prefer-256-bit" in (numba.config.CPU_FEATURES or "") else (
            "256-bit (default; FUSEKIT_CPU_512=1 opts in to 512-bit)"
            if "avx512f" in cpu.flags
            else "256-bit (AVX2)" if "avx2" in cpu.flags else "SSE"
        )
        numba_target = (
            f"{numba.config.CPU_NAME or 'host'} ({cpu.llvm_name}), {width}, "
            f"threading layer {_threading_layer(numba)}, "
            f"{numba.get_num_threads()} threads"
        )
    fp8_cpu = "not loaded"
    if backends["cpu"]["available"]:
        from .backends.cpu import _fp8_bf16

        if _fp8_bf16.available():
            fp8_cpu = "bfloat16 dot products (AVX-512 BF16; FUSEKIT_FP8_BF16=0 turns them off)"
        elif os.environ.get("FUSEKIT_FP8_BF16", "1") == "0":
            fp8_cpu = "float32 FMAs (bfloat16 dot products turned off by FUSEKIT_FP8_BF16=0)"
        else:
            fp8_cpu = "float32 FMAs (Numba's target has no AVX-512 BF16)"
    cuda_launch = (cuda_launch_facts() if backends["cuda"]["available"]
                   else "none (the cuda backend is unavailable)")
    import importlib

    importlib.import_module("fusekit.ops")  # declares every op
    ops: dict[str, list[str]] = {}
    for op in all_ops():
        for name, b in backends.items():
            if b["available"]:
                load_family(name, op.family)
        ops[op.name] = sorted({k.backend for k in kernels_for(op.name)},
                              key=AUTO_ORDER.index)
    return {
        "fusekit": _fusekit_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu.llvm_name,
        "vector_extensions": cpu.vector_extensions,
        "numba_target": numba_target,
        "fp8_cpu": fp8_cpu,
        "cuda_launch": cuda_launch,
        "versions": {d: _version(d) for d in ("numpy", "numba", "torch", "cupy", "opt_einsum")},
        "backend_request": requested_backend(),
        "env": os.environ.get(ENV_VAR),
        "backends": backends,
        "ops": ops,
    }


def info(file: Any = None) -> dict[str, Any]:
    """Print the backends, whether each is available and why not, and the CPU's features.

    Args:
        file: Where to print (default ``sys.stdout``).

    Returns:
        The same facts as a dict.

    Example:
        >>> import fusekit
        >>> facts = fusekit.info()  # doctest: +SKIP
    """
    facts = collect()
    out = file or sys.stdout
    print(f"fusekit {facts['fusekit']} on Python {facts['python']}, {facts['platform']}", file=out)
    exts = ", ".join(facts["vector_extensions"]) or "none"
    print(f"CPU: {facts['cpu']}; vector extensions: {exts}", file=out)
    print(f"Numba CPU target: {facts['numba_target']}", file=out)
    print(f"FP8 products on the CPU: {facts['fp8_cpu']}", file=out)
    print(f"CUDA launches: {facts['cuda_launch']}", file=out)
    print(
        "Packages: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()), file=out
    )
    print(
        f"Backend request: {facts['backend_request']} ({ENV_VAR}={facts['env'] or 'unset'})",
        file=out,
    )
    print("Backends (auto order):", file=out)
    for name, b in facts["backends"].items():
        state = "available" if b["available"] else f"unavailable: {b['reason']}"
        print(f"  {name:<10} {state}", file=out)
    print("Ops and the available backends with a kernel for them:", file=out)
    width = max(len(n) for n in facts["ops"])
    for name, kernel_backends in facts["ops"].items():
        print(f"  {name:<{width}}  {', '.join(kernel_backends) or 'none'}", file=out)
    return facts


def cuda_launch_facts() -> str:
    """How the CUDA kernels are launched and how torch CUDA tensors reach them, in words."""
    from . import _arrays
    from .backends.cuda import _device

    if _device._fast_launch_parts() is not None:
        launch = ("repeated launches with CuPy arrays skip Numba's dispatcher "
                  "(FUSEKIT_CUDA_FAST_LAUNCH=0 turns that off)")
    elif os.environ.get("FUSEKIT_CUDA_FAST_LAUNCH", "1") == "0":
        launch = "Numba's dispatcher (the fast launch turned off by FUSEKIT_CUDA_FAST_LAUNCH=0)"
    else:
        launch = ("Numba's dispatcher (this numba.cuda has no cuda.core launch; numba-cuda "
                  "0.30 or later launches small kernels several times faster)")
    tensors = ("CuPy views of their memory (FUSEKIT_TORCH_CUDA_VIEW=1)" if
               _arrays._TORCH_CUDA_VIEW else "DLPack")
    return f"{launch}; torch CUDA tensors cross by {tensors}"


def _threading_layer(numba: Any) -> str:
    """The layer asked for, or the order Numba tries them in (known for sure after a launch)."""
    try:
        return str(numba.threading_layer())  # a parallel kernel has run in this process
    except ValueError:
        pass
    if numba.config.THREADING_LAYER != "default":
        return str(numba.config.THREADING_LAYER)
    return "first available of " + ", ".join(numba.config.THREADING_LAYER_PRIORITY)
