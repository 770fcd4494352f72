import os

import numpy as np
import pytest

from fusekit import _registry

# CUDA kernels are checked in their own pytest process under the simulator
# (tests/test_cuda_simulator.py starts it); a normal run skips that folder.
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cuda"]

@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose backends explicitly; a developer's FUSEKIT_BACKEND must not leak in."""
    monkeypatch.delenv(_registry.ENV_VAR, raising=False)
