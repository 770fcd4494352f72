"""Runs the CUDA kernel tests (tests/cuda) in their own process under the Numba simulator."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

CUDA_TESTS = Path(__file__).parent / "cuda"


@pytest.mark.skipif(not CUDA_TESTS.is_dir(), reason="no CUDA kernel tests")
def test_cuda_kernels_pass_under_the_simulator():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    env.pop("FUSEKIT_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(CUDA_TESTS), "-q", "-p", "no:cacheprovider"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
