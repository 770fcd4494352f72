"""The network checks of ``benchmarks/gpu/run_gpu_checks.py`` run here, NumPy for CuPy.

On a GPU machine the script runs them on CuPy arrays with ``backend="cuda"``; here NumPy
stands in for CuPy and the CPU kernels for the CUDA ones, so a broken check (its inputs, its
reference, its comparisons) shows before a GPU session is spent on it. It says nothing about
the CUDA kernels (tests/cuda runs those in the Numba simulator).
"""

import sys
import types
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"))
import run_gpu_checks  # noqa: E402

NUMPY_AS_CUPY = types.SimpleNamespace(asarray=np.asarray, ndarray=np.ndarray, asnumpy=np.asarray)


@pytest.mark.parametrize("check", ["network_cupy_check", "cable_network_cupy_check",
                                   "membrane_cupy_check"])
def test_network_check_passes_on_the_cpu_backend(check):
    checks = run_gpu_checks.Checks()
    getattr(run_gpu_checks, check)(checks, NUMPY_AS_CUPY, backend="cpu")
    assert checks.passed >= 9 and not checks.failed


def test_network_gradient_timing_runs_with_the_cpu_standing_in_for_the_gpu(capsys):
    torch = pytest.importorskip("torch")
    checks = run_gpu_checks.Checks()
    run_gpu_checks.time_network_grad(checks, torch, repeats=1, device="cpu")
    assert checks.passed == 3 and not checks.failed
    assert "ms per step" in capsys.readouterr().out
