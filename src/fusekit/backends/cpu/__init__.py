"""The CPU backend: Numba kernels (256-bit by default, 512-bit opt-in) and BLAS where it wins."""

from __future__ import annotations

import importlib.util

from ._numba import get_num_threads as get_num_threads
from ._numba import njit as njit
from ._numba import set_num_threads as set_num_threads


def unavailable_reason() -> str | None:
    """``None`` when Numba can be imported, else why not and how to fix it."""
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed (pip install numba)"
    try:
        from . import _numba

        _numba.configure()
        import numba  # noqa: F401
    except Exception as exc:  # a broken install must not break the reference backend
        return f"numba failed to import: {exc!r}"
    return None
