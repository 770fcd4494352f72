"""Numba set-up shared by every CPU kernel: vector target, threading layer, cached ``njit``.

Settings that Numba reads when it is imported are applied here, before the first import:

* ``FUSEKIT_CPU_512=1`` opts in to 512-bit (zmm) code. Numba's LLVM emits 256-bit AVX-512VL
  code by default; 512-bit code needs the CPU's name together with the host features and
  ``-prefer-256-bit``. It only takes effect when set before Numba compiles its first function
  in the process, and only on CPUs with AVX-512F.
* The threading layer: OpenMP first, then TBB, then ``workqueue`` (Numba's own order puts TBB
  first). Measured on a quiet 2-core machine, a parallel launch costs 4-8 us with OpenMP and
  150-200 us with ``workqueue`` (futex wake-ups), which made an FP8 expert at one token 1.6x
  slower; see docs/backends.md. ``NUMBA_THREADING_LAYER`` (one layer) or
  ``NUMBA_THREADING_LAYER_PRIORITY`` overrides it.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

from ..._cpu import cpu_features

_configured = False

#: Numba threading layers in fusekit's order of preference (the first one available is used).
THREADING_LAYER_PRIORITY = ("omp", "tbb", "workqueue")


def configure() -> None:
    """Apply fusekit's Numba settings; a no-op after the first call."""
    global _configured
    if _configured:
        return
    _configured = True
    if not {"NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"} & set(os.environ):
        os.environ["NUMBA_THREADING_LAYER_PRIORITY"] = " ".join(THREADING_LAYER_PRIORITY)
        if "numba" in sys.modules:  # imported before us: its config has read the environment
            import numba

            # both read at the first parallel launch
            numba.config.THREADING_LAYER_PRIORITY = list(THREADING_LAYER_PRIORITY)
    if os.environ.get("FUSEKIT_CPU_512", "") not in ("", "0"):
        _enable_512_bit()


def _enable_512_bit() -> None:
    cpu = cpu_features()
    if "avx512f" not in cpu.flags:
        warnings.warn(
            f"FUSEKIT_CPU_512 is set but this CPU ({cpu.llvm_name}) has no AVX-512F; "
            "keeping Numba's default vector width",
            RuntimeWarning,
            stacklevel=3,
        )
        return
    features = cpu.llvm_features + ",-prefer-256-bit"
    os.environ["NUMBA_CPU_NAME"] = cpu.llvm_name
    os.environ["NUMBA_CPU_FEATURES"] = features
    if "numba" in sys.modules:  # imported before us: patch its config before any compile
        import numba

        numba.config.CPU_NAME = cpu.llvm_name
        numba.config.CPU_FEATURES = features


def njit(*args: Any, cache: bool = True, **options: Any) -> Any:
    """``numba.njit`` that caches compiled code where it can and compiles fresh where not.

    With ``cache=True`` Numba raises when no cache location is writable (read-only install,
    no ``NUMBA_CACHE_DIR``); this wrapper then keeps the function uncached instead.

    Example:
        >>> @njit(fastmath=True)
        ... def total(a):
        ...     return a.sum()
    """
    configure()
    import numba

    def wrap(fn: Callable[..., Any]) -> Any:
        dispatcher = numba.njit(**options)(fn)
        if cache:
            try:
                dispatcher.enable_caching()
            except RuntimeError:
                pass  # no writable cache location: compile at first call in every process
        return dispatcher

    if args and callable(args[0]):
        return wrap(args[0])
    return wrap


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in the parallel CPU kernels (per Python thread, as in Numba)."""
    configure()
    import numba

    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"thread count must be between 1 and {numba.config.NUMBA_NUM_THREADS} "
            f"(NUMBA_NUM_THREADS), got {n}"
        )
    numba.set_num_threads(n)


def numba_max_threads() -> int:
    """Most threads a parallel kernel can use (``NUMBA_NUM_THREADS``)."""
    configure()
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def get_num_threads() -> int:
    """Threads the parallel CPU kernels use in this Python thread."""
    configure()
    import numba

    return int(numba.get_num_threads())
