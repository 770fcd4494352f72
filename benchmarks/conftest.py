"""Benchmarks pin every thread pool to the same count so that peers compare fairly.

``FUSEKIT_BENCH_THREADS`` (default 2) sets torch's, Numba's and BLAS's threads.
"""

import os

import pytest

THREADS = int(os.environ.get("FUSEKIT_BENCH_THREADS", "2"))


@pytest.fixture(scope="session", autouse=True)
def _pin_threads():
    import torch
    from threadpoolctl import threadpool_limits

    import fusekit

    torch.set_num_threads(THREADS)
    fusekit.set_num_threads(min(THREADS, os.cpu_count() or 1))
    with threadpool_limits(THREADS, user_api="blas"):
        yield
