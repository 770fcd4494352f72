"""The Numba CPU backend's shared pieces: cached njit, threads, the 512-bit opt-in."""

import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import fusekit
from fusekit._cpu import cpu_features
from fusekit.backends.cpu import _numba


def test_njit_compiles_and_runs():
    @_numba.njit
    def add(a, b):
        return a + b

    assert add(2, 3) == 5


def test_njit_falls_back_to_no_cache_when_no_location_is_writable(monkeypatch):
    def refuse(self):
        raise RuntimeError("cannot cache function: no locator available for file")

    monkeypatch.setattr(numba.core.dispatcher.Dispatcher, "enable_caching", refuse)

    @_numba.njit(fastmath=True)
    def total(a):
        return a.sum()

    assert total(np.arange(4.0)) == 6.0


def test_set_num_threads_round_trips_and_validates():
    before = fusekit.get_num_threads()
    try:
        fusekit.set_num_threads(1)
        assert fusekit.get_num_threads() == 1
    finally:
        fusekit.set_num_threads(before)
    with pytest.raises(ValueError, match="thread count must be an integer between 1 and"):
        fusekit.set_num_threads(0)


@pytest.mark.parametrize("numba_first", [False, True])
def test_threading_layer_prefers_openmp(numba_first):
    # The priority is set whether Numba was imported before fusekit or not; the layer in use
    # after a parallel launch is the first available one of that order.
    code = ("import numba\n" if numba_first else "") + (
        "import numpy as np, fusekit, numba\n"
        "from fusekit.backends.cpu._numba import THREADING_LAYER_PRIORITY as P\n"
        "fusekit.ops.fp8_gemv(np.ones((1, 128), np.float32), np.zeros((128, 128), np.uint8),\n"
        "                     np.ones((1, 1), np.float32), backend='cpu')\n"
        "print(numba.config.THREADING_LAYER_PRIORITY == list(P), numba.threading_layer())\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    same, layer = out.stdout.split()
    assert same == "True"
    from fusekit.backends.cpu._numba import THREADING_LAYER_PRIORITY

    assert layer in THREADING_LAYER_PRIORITY


def test_threading_layer_env_wins():
    code = ("import numpy as np, fusekit, numba\n"
            "fusekit.ops.fp8_gemv(np.ones((1, 128), np.float32), np.zeros((128, 128), np.uint8),\n"
            "                     np.ones((1, 1), np.float32), backend='cpu')\n"
            "print(numba.threading_layer())\n")
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "workqueue"


def test_512_bit_opt_in_sets_the_numba_target_or_warns_without_avx512():
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import fusekit.backends.cpu._numba as n; n.configure(); import numba\n"
            "print(numba.config.CPU_NAME, numba.config.CPU_FEATURES)")
    env = {**os.environ, "FUSEKIT_CPU_512": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    cpu = cpu_features()
    if "avx512f" in cpu.flags:
        assert out.stdout.split()[0] == cpu.llvm_name
        assert out.stdout.strip().endswith("-prefer-256-bit")
    else:
        assert "has no AVX-512F" in out.stderr
        assert out.stdout.split()[0] == "None"


def test_refresh_cache_folder_drops_stale_kernel_caches(tmp_path):
    (tmp_path / _numba.CACHE_STAMP_FILE).write_text("old sources\n")
    stale = ["spike.ordered_union-10.py311.nbi", "spike.ordered_union-10.py311.1.nbc",
             "mst._solve_part-25.py311.nbi"]
    kept = ["other.f-3.py311.nbi", "notes.txt"]  # not one of the modules: stays
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    assert _numba.refresh_cache_folder(tmp_path, "new sources", {"spike", "mst"}) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*kept, _numba.CACHE_STAMP_FILE])
    assert (tmp_path / _numba.CACHE_STAMP_FILE).read_text().strip() == "new sources"
    # stamped now: what is compiled from these sources afterwards stays
    (tmp_path / stale[0]).write_bytes(b"y")
    assert _numba.refresh_cache_folder(tmp_path, "new sources", {"spike", "mst"}) == 0
    assert (tmp_path / stale[0]).exists()
    # a folder never stamped (caches from before the stamp existed) is refreshed too
    (tmp_path / _numba.CACHE_STAMP_FILE).unlink()
    assert _numba.refresh_cache_folder(tmp_path, "new sources", {"spike"}) == 1


def test_sources_stamp_hashes_every_backend_source():
    import hashlib

    folder = Path(_numba.__file__).parent
    h = hashlib.sha1()
    for path in sorted(folder.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    assert _numba.sources_stamp() == h.hexdigest()
    assert {"spike", "mst", "_numba", "_vmath"} <= _numba._backend_modules()


def test_first_cached_kernel_of_a_folder_checks_its_stamp(monkeypatch, tmp_path):
    from fusekit.backends.cpu import spike as cpu_spike

    calls = []
    monkeypatch.setattr(_numba, "refresh_cache_folder",
                        lambda folder, stamp, modules: calls.append((folder, stamp, modules)))
    monkeypatch.setattr(_numba, "_checked_cache_folders", set())
    kernel = cpu_spike.firing_step
    if getattr(kernel, "_cache", None) is None or not hasattr(kernel._cache, "_cache_path"):
        pytest.skip("no writable Numba cache location here")
    _numba._check_cache_folder(kernel.py_func, kernel)
    _numba._check_cache_folder(cpu_spike.ordered_union.py_func, cpu_spike.ordered_union)
    assert calls == [(Path(kernel._cache._cache_path), _numba.sources_stamp(),
                      _numba._backend_modules())]  # once per folder and process

    @_numba.njit
    def outside(a):  # a kernel of another folder (this test's): its cache is left alone
        return a

    assert len(calls) == 1


def _vm_flags(address):
    """The ``VmFlags`` of the mapping of this process that holds ``address``."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "VmFlags:":
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise is Linux's")
def test_huge_scratch_arrays_are_advised_for_huge_pages():
    from fusekit.backends.cpu._memory import ADVISE_MIN_BYTES, huge_empty, huge_zeros

    @_numba.njit
    def make(n):
        return huge_empty(n, np.int64), huge_zeros(n, np.float64), huge_empty(4, np.float32)

    n = 4 * ADVISE_MIN_BYTES // 8  # 16 MiB of int64, well past the 2 MiB alignment
    a, z, small = make(n)
    assert a.shape == (n,) and a.dtype == np.int64 and small.shape == (4,)
    assert z.dtype == np.float64 and not z.any()
    a[:] = 1  # touched after the advice, as the kernels do
    # "hg": the range was advised MADV_HUGEPAGE (what lets the kernel back it by 2 MiB pages)
    assert "hg" in _vm_flags(a.ctypes.data + a.nbytes // 2)
    assert "hg" in _vm_flags(z.ctypes.data + z.nbytes // 2)
