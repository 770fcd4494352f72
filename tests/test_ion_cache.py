"""Generated CPU kernels go through Numba's disk cache: a second process loads, not compiles."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")

SCRIPT = """
import json, numpy as np, fusekit
from fusekit.neuro import HHLeak, ChannelSet
from fusekit.backends.cpu import ion as cion
cs = ChannelSet([HHLeak])
out = fusekit.ops.ion_simulate(np.full(3, -60.0), np.zeros((0, 3)), cs.default_params(3),
                               np.ones(3), channels=cs, dt=0.1, n_steps=50, backend="cpu")
kernel = cion.kernel_for(cs, "float64")  # the one the call above compiled
print(json.dumps({"hits": sum(kernel.stats.cache_hits.values()),
                  "v": out.v.tolist(), "file": kernel.py_func.__code__.co_filename}))
"""


def run_in_fresh_process(cache_dir):
    env = {**os.environ, "FUSEKIT_KERNEL_CACHE": str(cache_dir)}
    env.pop("FUSEKIT_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_kernel_from_the_disk_cache(tmp_path):
    first = run_in_fresh_process(tmp_path)
    second = run_in_fresh_process(tmp_path)
    assert first["hits"] == 0 and second["hits"] >= 1
    assert first["v"] == second["v"]
    assert os.path.dirname(second["file"]) == str(tmp_path)
