"""The parallel CPU spike sort (two threads) gives exactly the serial kernel's result."""

import numpy as np
import pytest

import fusekit
from fusekit.backends.cpu import _numba
from fusekit.backends.cpu import spike as cpu_spike

pytestmark = pytest.mark.skipif(
    "cpu" not in fusekit.available_backends() or _numba.numba_max_threads() < 2,
    reason="needs the CPU backend and at least two Numba threads")


@pytest.fixture
def two_threads(monkeypatch):
    """Two Numba threads and the parallel kernel for any input size; restored afterwards."""
    before = fusekit.get_num_threads()
    monkeypatch.setattr(cpu_spike, "PARALLEL_MIN_KEYS", 0)
    monkeypatch.setattr(cpu_spike, "UNIT_PARALLEL_MIN_KEYS", 0)
    monkeypatch.setattr(cpu_spike, "GATHER_MIN_KEYS", 0)
    monkeypatch.setattr(cpu_spike, "GATHER_PARALLEL_MIN_KEYS", 0)
    _numba.set_num_threads(2)
    yield
    _numba.set_num_threads(before)


def sort_both(keys, quantum=None, exact=True):
    serial = fusekit.ops.spike_sort(keys, quantum, exact=exact, backend="cpu")
    _numba.set_num_threads(2)
    lo, q, n_steps = fusekit.ops.spike.time_grid(keys, quantum)
    unit = cpu_spike.unit_grid(keys, lo, q, n_steps)
    assert cpu_spike.sort_threads(keys.size, n_steps, unit) == 2
    parallel = fusekit.ops.spike_sort(keys, quantum, exact=exact, backend="cpu")
    return serial, parallel


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("kind", ["float", "int ties", "uint8 ties", "int quantum 3",
                                  "float ties", "one step"])
def test_parallel_spike_sort_equals_the_serial_kernel(two_threads, rng, exact, kind):
    n = 5001  # odd: chunks of unequal length
    if kind == "float":
        keys = rng.random(n)
    elif kind == "int ties":  # a unit grid: the lean counting sort
        keys = rng.integers(-50, 50, n)
    elif kind == "uint8 ties":
        keys = rng.integers(0, 256, n).astype(np.uint8)
    elif kind == "int quantum 3":  # an integer grid that is not a unit grid
        keys = rng.integers(-50, 50, n).astype(np.int32)
    elif kind == "float ties":
        keys = rng.integers(0, 30, n) / 7.0  # several keys per step, equal keys in a step
    else:
        keys = np.full(n, 2.5)
    _numba.set_num_threads(1)
    serial, parallel = sort_both(keys, 3 if kind == "int quantum 3" else None, exact=exact)
    np.testing.assert_array_equal(parallel.order, serial.order)
    np.testing.assert_array_equal(parallel.step_offsets, serial.step_offsets)
    assert parallel.stats == serial.stats
    if exact:
        np.testing.assert_array_equal(parallel.order, np.argsort(keys, kind="stable"))


def test_parallel_sort_is_stable_within_a_step_across_chunks(two_threads):
    keys = np.zeros(1000)  # one step: the input order must survive the chunked scatter
    _numba.set_num_threads(2)
    r = fusekit.ops.spike_sort(keys, exact=False, backend="cpu")
    np.testing.assert_array_equal(r.order, np.arange(1000))


@pytest.mark.parametrize("method", ["spike-kruskal", "pipelined"])
def test_minimum_spanning_forest_is_the_same_with_two_threads(two_threads, rng, method):
    from fusekit.mst import minimum_spanning_forest

    n, m = 500, 4000
    u, v, w = rng.integers(0, n, m), rng.integers(0, n, m), rng.random(m)
    _numba.set_num_threads(1)
    one = minimum_spanning_forest(u, v, w, n, method=method)
    _numba.set_num_threads(2)
    two = minimum_spanning_forest(u, v, w, n, method=method)
    np.testing.assert_array_equal(two.edges, one.edges)
    if method == "spike-kruskal":  # the pipeline's sort stage may run ahead by a few slices
        assert two.stats == one.stats


@pytest.mark.parametrize("batches", [1, 7, 300, None])
@pytest.mark.parametrize("kind", ["float", "float32", "int wide", "light ring"])
def test_pipelined_kruskal_on_two_threads_equals_the_reference(monkeypatch, rng, batches, kind):
    monkeypatch.setattr(cpu_spike, "LSD_MIN_STEPS", 0)  # every grid takes the two-stage kernel
    n, m = 400, 3000
    u, v = rng.integers(0, n, m), rng.integers(0, n, m)
    w = {"float": rng.random(m), "float32": rng.random(m).astype(np.float32),
         "int wide": rng.integers(-10**6, 10**6, m), "light ring": 1 + rng.random(m)}[kind]
    if kind == "light ring":  # the forest is complete after the first steps: the sort stops
        u[:n], v[:n], w[:n] = np.arange(n), (np.arange(n) + 1) % n, 0.0
    before = fusekit.get_num_threads()
    try:
        _numba.set_num_threads(2)
        cpu = fusekit.ops.pipelined_kruskal(u, v, w, n, batches=batches, backend="cpu")
    finally:
        _numba.set_num_threads(before)
    ref = fusekit.ops.pipelined_kruskal(u, v, w, n, batches=batches, backend="reference")
    np.testing.assert_array_equal(cpu[0], ref[0])
    np.testing.assert_array_equal(cpu[1], ref[1])
    assert cpu[2] == ref[2]
    if kind == "light ring":
        assert cpu[1][3] < m and cpu[2].time_steps == 1


def test_large_grids_per_key_stay_serial(monkeypatch):
    monkeypatch.setattr(cpu_spike, "PARALLEL_MIN_KEYS", 0)
    # the counting sort keeps one histogram per thread: too big for 5 steps per key
    assert cpu_spike.sort_threads(1000, 5000) == 1
    assert cpu_spike.sort_threads(100, 1 << 28) == 1  # too few keys to start threads for


def test_step_sort_grids_take_threads_from_their_own_threshold():
    before = fusekit.get_num_threads()
    _numba.set_num_threads(2)
    try:
        n = cpu_spike.PARALLEL_STEP_SORT_MIN_KEYS
        assert cpu_spike.sort_threads(n, cpu_spike.LSD_MIN_STEPS) == 2
        assert cpu_spike.sort_threads(n - 1, cpu_spike.LSD_MIN_STEPS) == 1
        # below LSD_MIN_STEPS the chunked counting sort's larger threshold applies
        assert cpu_spike.sort_threads(n, cpu_spike.LSD_MIN_STEPS - 1) == 1
    finally:
        _numba.set_num_threads(before)


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("digit_bits", [3, 11])
@pytest.mark.parametrize("kind", ["float", "float32", "int wide", "float ties", "one step",
                                  "ulps"])
def test_parallel_step_sort_equals_the_serial_kernel(monkeypatch, rng, exact, digit_bits, kind):
    # the bucket step sort on two threads: order, offsets and statistics as on one
    monkeypatch.setattr(cpu_spike, "LSD_MIN_STEPS", 0)
    monkeypatch.setattr(cpu_spike, "PARALLEL_STEP_SORT_MIN_KEYS", 0)
    monkeypatch.setattr(cpu_spike, "LSD_DIGIT_BITS", digit_bits)
    monkeypatch.setattr(cpu_spike, "STEP_SORT_FINE_BITS", 2)  # keys of a step often compared
    n, quantum = 4001, None
    if kind == "float":
        keys = rng.random(n)
    elif kind == "float32":
        keys, quantum = rng.random(n).astype(np.float32), 1e-3
    elif kind == "int wide":
        keys, quantum = rng.integers(-(10**9), 10**9, n), 977
    elif kind == "float ties":
        keys = rng.integers(0, 300, n) / 7.0
    elif kind == "one step":
        keys = np.full(n, 2.5)
    else:  # keys an ulp apart in one step: equal fine places, ordered by the keys
        keys, quantum = 1.0 + rng.integers(0, 40, n) * np.finfo(np.float64).eps, 1.0
    before = fusekit.get_num_threads()
    try:
        _numba.set_num_threads(1)
        serial, parallel = sort_both(keys, quantum, exact)
    finally:
        _numba.set_num_threads(before)
    assert cpu_spike.uses_step_sort(n, serial.stats.time_steps)
    np.testing.assert_array_equal(parallel.order, serial.order)
    np.testing.assert_array_equal(parallel.step_offsets, serial.step_offsets)
    assert parallel.stats == serial.stats
    ref = fusekit.ops.spike_sort(keys, quantum, exact=exact, backend="reference")
    np.testing.assert_array_equal(serial.order, ref.order)
    np.testing.assert_array_equal(serial.step_offsets, ref.step_offsets)
    assert serial.stats == ref.stats


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_parallel_endpoint_gather_equals_fancy_indexing(two_threads, rng, dtype):
    # 0 under the fixture: always the Numba gather, parallel with two threads
    assert cpu_spike.GATHER_PARALLEL_MIN_KEYS == 0 and cpu_spike.GATHER_MIN_KEYS == 0
    u, v = rng.integers(0, 1000, 3001).astype(dtype), rng.integers(0, 1000, 3001).astype(dtype)
    order = rng.permutation(3001)[:2000].astype(np.int64)
    for threads in (1, 2):
        _numba.set_num_threads(threads)
        gu, gv = fusekit.ops.gather_endpoints(u, v, order, backend="cpu")
        np.testing.assert_array_equal(gu, u[order])
        np.testing.assert_array_equal(gv, v[order])
        assert gu.dtype == dtype
    ref = fusekit.ops.gather_endpoints(u, v, order, backend="reference")
    np.testing.assert_array_equal(ref[0], u[order])


def test_gather_rejects_edge_ids_outside_the_edge_list():
    u = v = np.arange(3)
    with pytest.raises(fusekit.InputError, match=r"must lie in \[0, 3\)"):
        fusekit.ops.gather_endpoints(u, v, np.array([0, 3]))
    with pytest.raises(fusekit.InputError, match="order must be int64"):
        fusekit.ops.gather_endpoints(u, v, np.array([0, 1], np.int32))
