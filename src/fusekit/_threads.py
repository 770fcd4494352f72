"""Thread counts of the CPU backend: Numba's parallel kernels and torch's BLAS pool."""

from __future__ import annotations


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in fusekit's CPU kernels.

    Sets Numba's thread count (per Python thread, as ``numba.set_num_threads``) and torch's
    intra-op thread count (process-wide, as ``torch.set_num_threads``), which the CPU kernels'
    large matrix products run on.

    Args:
        n: Thread count, at least 1 and at most the number of CPUs Numba sees.
    """
    from .backends.cpu import _numba

    _numba.set_num_threads(n)
    import torch

    torch.set_num_threads(n)


def get_num_threads() -> int:
    """Threads the CPU backend's Numba kernels use in this Python thread."""
    from .backends.cpu import _numba

    return _numba.get_num_threads()


def set_kernel_threads(n: int) -> None:
    """Use ``n`` threads in the Numba kernels launched from this Python thread only.

    Unlike :func:`set_num_threads` this leaves torch alone; a no-op when Numba is not
    installed (the reference backend needs no threads).
    """
    import importlib.util

    if importlib.util.find_spec("numba") is None:
        return
    from .backends.cpu import _numba

    _numba.set_num_threads(min(n, _numba.numba_max_threads()))
