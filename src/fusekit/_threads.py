"""Thread counts of the CPU backend: Numba's parallel kernels and the BLAS that numpy uses."""

from __future__ import annotations


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in fusekit's CPU kernels (Numba, and BLAS via threadpoolctl).

    Like ``numba.set_num_threads`` the Numba part applies to the calling Python thread.

    Args:
        n: Thread count, at least 1 and at most the number of CPUs Numba sees.
    """
    from .backends.cpu import _numba

    _numba.set_num_threads(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(n, user_api="blas")


def get_num_threads() -> int:
    """Threads the CPU backend's Numba kernels use in this Python thread."""
    from .backends.cpu import _numba

    return _numba.get_num_threads()
