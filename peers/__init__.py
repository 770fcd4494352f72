"""Run Brian2 and Jaxley in their own environments, for fusekit's tests and benchmarks.

``peers/setup.sh`` makes ``.venv-brian2`` and ``.venv-jaxley`` at the repository root (the
README's test command and ``.ci/run`` call it). Each peer script (``peers/brian2_hh.py``,
``peers/brian2_network.py``, ``peers/jaxley_hh.py``, ``peers/jaxley_cable.py``) runs in its
environment through
:func:`run_peer`, reads a JSON configuration and prints a JSON result; timings are taken
inside the script.

``FUSEKIT_BRIAN2_PYTHON`` / ``FUSEKIT_JAXLEY_PYTHON`` point at another interpreter;
``FUSEKIT_REQUIRE_PEERS=1`` (set by ``.ci/run``) turns a missing environment from a skip into
a failure, so that CI cannot pass without the comparisons.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEERS = {
    # name: (default environment, the module that must import, the script)
    "brian2": (".venv-brian2", "brian2", "brian2_hh.py"),
    "jaxley": (".venv-jaxley", "jaxley", "jaxley_hh.py"),
}


def peer_python(name: str) -> Path:
    """The interpreter of peer ``name``'s environment (it may not exist)."""
    override = os.environ.get(f"FUSEKIT_{name.upper()}_PYTHON")
    return Path(override) if override else ROOT / PEERS[name][0] / "bin" / "python"


@functools.cache
def peer_missing(name: str) -> str | None:
    """Why peer ``name`` cannot run here, or ``None`` when it can."""
    python = peer_python(name)
    if not python.exists():
        return (f"{name}: no environment at {python.parent.parent} (make it with "
                f"`bash peers/setup.sh`, or set FUSEKIT_{name.upper()}_PYTHON)")
    # Installed, without importing it (JAX or Brian2 take 2-30 s to import here); setup.sh
    # checked the import, and a broken one fails the run with its traceback.
    module = PEERS[name][1]
    probe = subprocess.run([str(python), "-c", f"import importlib.metadata as m; "
                            f"print(m.version({module!r}))"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode:
        return f"{name}: {module} is not installed in {python}: {probe.stderr[-500:]}"
    return None


def require_peer(name: str) -> None:
    """Skip the calling test when peer ``name`` is missing (fail under FUSEKIT_REQUIRE_PEERS)."""
    import pytest

    why = peer_missing(name)
    if why is None:
        return
    if os.environ.get("FUSEKIT_REQUIRE_PEERS") == "1":
        pytest.fail(f"FUSEKIT_REQUIRE_PEERS=1 but {why}")
    pytest.skip(why)


def run_peer(name: str, config: Any, timeout: float = 1800, script: str | None = None) -> Any:
    """Run peer ``name``'s script on ``config`` (a dict; a list for Brian2) in its environment.

    ``script``: another script of that peer in ``peers/`` (``"jaxley_cable.py"``,
    ``"brian2_network.py"``); default
    its population script. Returns the script's JSON result. Call :func:`require_peer`
    first. Raises ``RuntimeError`` with the script's stderr when it fails.
    """
    script = Path(__file__).with_name(script or PEERS[name][2])
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the peer must not import this checkout's packages
    proc = subprocess.run([str(peer_python(name)), str(script)], input=json.dumps(config),
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)  # stdin: 10,000 currents exceed one argument's limit
    if proc.returncode:
        raise RuntimeError(f"{script.name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)
