"""What the registry costs per call: fusekit's public call against the kernel called directly.

Tiny inputs (2x2 factors) so that the call overhead, not the arithmetic, is what is timed.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

import fusekit
import fusekit.torch  # noqa: F401
from fusekit.backends.cpu.kron import kron_linear_cpu

GROUP = "dispatch overhead (kron_linear, 2x2 factors, 1 token)"


def tiny():
    return np.ones((1, 4)), np.ones((1, 2, 2)), np.ones((1, 2, 2))


def test_direct_cpu_kernel_call(benchmark):
    benchmark.group = GROUP
    benchmark(kron_linear_cpu, *tiny())


def test_fusekit_dispatch_auto(benchmark):
    benchmark.group = GROUP
    benchmark(fusekit.ops.kron_linear, *tiny())


def test_fusekit_dispatch_explicit_backend(benchmark):
    benchmark.group = GROUP
    x, A, B = tiny()
    benchmark(lambda: fusekit.ops.kron_linear(x, A, B, backend="cpu"))


def test_fusekit_dispatch_torch_op(benchmark):
    benchmark.group = GROUP
    x, A, B = map(torch.from_numpy, tiny())
    with torch.no_grad():
        benchmark(fusekit.ops.kron_linear, x, A, B)


def test_fusekit_dispatch_torch_op_with_autograd(benchmark):
    benchmark.group = GROUP
    x, A, B = map(torch.from_numpy, tiny())
    A.requires_grad_(True)
    benchmark(fusekit.ops.kron_linear, x, A, B)


@pytest.mark.parametrize("what", ["python -c pass", "import numpy", "import fusekit"])
def test_import_time(benchmark, what):
    """``import fusekit`` must stay cheap: it imports neither torch nor Numba."""
    benchmark.group = "import time (subprocess)"
    code = "pass" if what == "python -c pass" else what
    benchmark.pedantic(subprocess.run, args=([sys.executable, "-c", code],),
                       kwargs={"check": True}, rounds=5, iterations=1)
