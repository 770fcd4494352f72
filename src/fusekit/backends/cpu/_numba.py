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

Numba's disk cache (``cache=True``) checks only the source file of the function it loads: a
cached kernel that calls a function of another file keeps the old code of that function after
the other file changes (seen: ``mst.py``'s ``_solve_part`` kept an old ``ordered_union`` of
``spike.py``), and so would an install upgraded in place. So every cache folder of this
package's kernels carries a stamp, a hash of all of this folder's sources
(:func:`sources_stamp`); the first cached kernel decorated in a process checks its folder's
stamp and, when it differs, drops the folder's cache files of these modules
(:func:`refresh_cache_folder`): the kernels then compile once and are cached afresh.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..._cpu import cpu_features

_configured = False

#: File in each Numba cache folder of this package's kernels naming the sources they came from.
CACHE_STAMP_FILE = "fusekit-sources.stamp"
_checked_cache_folders: set[str] = set()

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
            else:
                _check_cache_folder(fn, dispatcher)
        return dispatcher

    if args and callable(args[0]):
        return wrap(args[0])
    return wrap


def _backend_modules() -> set[str]:
    return {p.stem for p in Path(__file__).parent.glob("*.py")}


@functools.cache
def sources_stamp() -> str:
    """Hash of this folder's sources (the CPU backend's kernels and their helpers)."""
    h = hashlib.sha1()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _check_cache_folder(fn: Callable[..., Any], dispatcher: Any) -> None:
    """On the first cached kernel of a cache folder in this process, refresh that folder."""
    code = getattr(fn, "__code__", None)
    if code is None or Path(code.co_filename).resolve().parent != Path(__file__).resolve().parent:
        return  # not one of this package's kernels
    folder = getattr(getattr(dispatcher, "_cache", None), "_cache_path", None)
    if folder is None or folder in _checked_cache_folders:
        return
    _checked_cache_folders.add(folder)
    refresh_cache_folder(Path(folder), sources_stamp(), _backend_modules())


def refresh_cache_folder(folder: Path, stamp: str, modules: set[str]) -> int:
    """Drop the Numba cache files of ``modules`` in ``folder`` unless it is stamped ``stamp``.

    Numba names a kernel's cache files ``<module>.<function>-<line>.py<version>[.<n>].nbi``
    (the index) and ``....nbc`` (the code); those whose module is one of ``modules`` go, other
    files stay. Then the folder is stamped ``stamp``. Failures to read, delete or write are
    ignored (a read-only cache is used as it is).

    Returns:
        How many files were removed.
    """
    stamp_file = folder / CACHE_STAMP_FILE
    try:
        if stamp_file.read_text().strip() == stamp:
            return 0
    except OSError:
        pass
    removed = 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if entry.suffix in (".nbi", ".nbc") and entry.name.split(".", 1)[0] in modules:
            try:
                entry.unlink()
                removed += 1
            except OSError:
                pass
    try:
        tmp = folder / f"{CACHE_STAMP_FILE}.{os.getpid()}.tmp"
        tmp.write_text(stamp + "\n")
        os.replace(tmp, stamp_file)
    except OSError:
        pass
    return removed


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in the parallel CPU kernels (per Python thread, as in Numba)."""
    configure()
    import numbers

    import numba

    from ..._errors import InputError

    if (isinstance(n, bool) or not isinstance(n, numbers.Integral)
            or not 1 <= n <= numba.config.NUMBA_NUM_THREADS):
        raise InputError(
            f"thread count must be an integer between 1 and "
            f"{numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS), got {n!r}"
        )
    numba.set_num_threads(int(n))


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
