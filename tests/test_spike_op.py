"""The spike family (spike_sort, spike_radix_sort, union-find) against NumPy and the oracles."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit
from fusekit.ops import spike

CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]
KEY_DTYPES = [np.int32, np.int64, np.uint8, np.uint16, np.float32, np.float64]


def random_keys(rng, dtype, n=500):
    if np.dtype(dtype).kind == "f":
        return (rng.random(n) * 3 - 1).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -50), min(info.max, 200), n).astype(dtype)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", KEY_DTYPES)
@pytest.mark.parametrize("quantum", [None, 0.37, 7])
def test_spike_sort_exact_order_equals_stable_argsort(rng, backend, dtype, quantum):
    keys = random_keys(rng, dtype)
    r = fusekit.ops.spike_sort(keys, quantum, backend=backend)
    np.testing.assert_array_equal(r.order, np.argsort(keys, kind="stable"))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", KEY_DTYPES)
def test_spike_radix_sort_equals_stable_argsort(rng, backend, dtype):
    keys = random_keys(rng, dtype)
    r = fusekit.ops.spike_radix_sort(keys, radix_bits=3, backend=backend)
    np.testing.assert_array_equal(r.order, np.argsort(keys, kind="stable"))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_inexact_spike_sort_keeps_input_order_within_a_step(rng, backend):
    keys = rng.random(300)
    r = fusekit.ops.spike_sort(keys, 0.1, exact=False, backend=backend)
    steps = np.floor((keys - keys.min()) / 0.1).astype(np.int64)
    np.testing.assert_array_equal(r.order, np.argsort(steps, kind="stable"))
    np.testing.assert_array_equal(r.firing_steps(), steps[r.order])


def test_spike_sort_stats_count_neurons_spikes_and_steps():
    keys = np.array([3, 1, 3, 0, 3, 9])
    s = fusekit.ops.spike_sort(keys).stats
    assert (s.neurons, s.synapses, s.spikes, s.time_steps) == (7, 6, 7, 10)
    assert s.max_spikes_per_step == 3
    assert s.mean_spikes_per_step == pytest.approx(6 / 4)  # 4 steps fire
    assert s.quantization_error == 0.0


def test_float_quantization_error_is_below_one_quantum(rng):
    keys = rng.random(1000)
    s = fusekit.ops.spike_sort(keys, 0.01).stats
    assert 0.0 < s.quantization_error < 0.01
    assert s.time_steps == int(np.floor((keys.max() - keys.min()) / 0.01)) + 1


def test_event_stream_is_in_time_order_and_may_stop_early():
    r = fusekit.ops.spike_sort(np.array([5, 2, 2, 9, 5, 2]))
    seen = []
    for step, ids in r.events():
        seen.append((step, ids.tolist()))
        if step >= 3:
            break
    assert seen == [(0, [1, 2, 5]), (3, [0, 4])]
    assert [t for t, _ in r.events(first_step=4)] == [7]


def test_radix_stats_count_passes_of_2_to_the_radix_bits_steps():
    keys = np.arange(1000)
    s = fusekit.ops.spike_radix_sort(keys, radix_bits=4).stats
    assert s.time_steps == 3 * 16  # 999 needs 10 bits: three 4-bit digits
    assert s.spikes == 3 * 1000 + 3
    assert s.active_steps == 16 + 16 + 4  # the top digit of 0..999 is 0..3
    assert s.mean_spikes_per_step == pytest.approx(3000 / 36)


def test_merged_stats_add_counts_and_average_over_active_steps():
    a = spike.SpikeStats(neurons=3, spikes=6, time_steps=5, active_steps=2,
                         mean_spikes_per_step=3.0, max_spikes_per_step=4)
    b = spike.SpikeStats(neurons=2, spikes=2, uf_events=7, uf_unions=1)
    c = a.merged(b)
    assert (c.neurons, c.spikes, c.time_steps, c.uf_events, c.uf_unions) == (5, 8, 5, 7, 1)
    assert c.mean_spikes_per_step == 3.0 and c.max_spikes_per_step == 4


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_keys_sort_to_nothing(backend):
    r = fusekit.ops.spike_sort(np.empty(0), backend=backend)
    assert r.order.size == 0 and r.stats.spikes == 0


@settings(max_examples=40, deadline=None)
@given(keys=st.lists(st.integers(-1000, 1000), max_size=60),
       quantum=st.one_of(st.none(), st.integers(1, 300), st.floats(0.01, 500)))
def test_property_cpu_spike_sorts_are_stable_sorts(keys, quantum):
    k = np.array(keys, dtype=np.int64)
    expected = np.argsort(k, kind="stable")
    np.testing.assert_array_equal(fusekit.ops.spike_sort(k, quantum, backend="cpu").order,
                                  expected)
    np.testing.assert_array_equal(
        fusekit.ops.spike_radix_sort(k, quantum, radix_bits=2, backend="cpu").order, expected)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", KEY_DTYPES)
@pytest.mark.parametrize("quantum", [None, 0.37, 7])
@pytest.mark.parametrize("vdtype", [np.int32, np.int64])
def test_spike_sort_edges_is_the_sort_and_the_endpoints_in_firing_order(rng, backend, dtype,
                                                                         quantum, vdtype):
    w = random_keys(rng, dtype)
    u, v = (rng.integers(0, 1000, w.size).astype(vdtype) for _ in range(2))
    r, su, sv = fusekit.ops.spike_sort_edges(w, u, v, quantum, backend=backend)
    plain = fusekit.ops.spike_sort(w, quantum, backend=backend)
    np.testing.assert_array_equal(r.order, np.argsort(w, kind="stable"))
    np.testing.assert_array_equal(r.step_offsets, plain.step_offsets)
    assert r.stats == plain.stats
    assert su.dtype == vdtype and sv.dtype == vdtype
    np.testing.assert_array_equal(su, u[r.order])
    np.testing.assert_array_equal(sv, v[r.order])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_spike_sort_edges_of_no_edges_and_bad_endpoints(backend):
    e = np.empty(0, np.int32)
    r, su, sv = fusekit.ops.spike_sort_edges(np.empty(0, np.int64), e, e, backend=backend)
    assert r.order.size == su.size == sv.size == 0
    w = np.array([3, 1, 2])
    with pytest.raises(fusekit.InputError, match="u and v must share the keys' shape"):
        fusekit.ops.spike_sort_edges(w, np.arange(2), np.arange(2), backend=backend)
    with pytest.raises(fusekit.InputError, match="one dtype of int32, int64"):
        fusekit.ops.spike_sort_edges(w, np.arange(3.0), np.arange(3.0), backend=backend)
    with pytest.raises(fusekit.InputError, match="NaN"):
        fusekit.ops.spike_sort_edges(np.array([1.0, np.nan, 2.0]), np.arange(3), np.arange(3),
                                     backend=backend)


def test_unit_grid_sort_on_two_threads_equals_one(rng, monkeypatch):
    from fusekit.backends.cpu import _numba
    from fusekit.backends.cpu import spike as cpu_spike

    if _numba.numba_max_threads() < 2:
        pytest.skip("needs two Numba threads")
    w = rng.integers(1, 256, 5001).astype(np.uint8)  # a unit grid: the lean counting sort
    u, v = rng.integers(0, 100, (2, w.size))
    before = fusekit.get_num_threads()
    try:
        _numba.set_num_threads(1)
        one = fusekit.ops.spike_sort_edges(w, u, v, backend="cpu")
        monkeypatch.setattr(cpu_spike, "UNIT_PARALLEL_MIN_KEYS", 0)
        _numba.set_num_threads(2)
        assert cpu_spike.sort_threads(w.size, 255, unit=True) == 2
        two = fusekit.ops.spike_sort_edges(w, u, v, backend="cpu")
    finally:
        _numba.set_num_threads(before)
    for a, b in zip((one[0].order, one[0].step_offsets, one[1], one[2]),
                    (two[0].order, two[0].step_offsets, two[1], two[2]), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(two[0].order, np.argsort(w, kind="stable"))


def _sort_both_ways(monkeypatch, keys, quantum, exact):
    from fusekit.backends.cpu import spike as cpu_spike

    counting = fusekit.ops.spike_sort(keys, quantum, exact=exact, backend="cpu")
    monkeypatch.setattr(cpu_spike, "LSD_MIN_STEPS", 0)  # the bucket step sort (_step_sort)
    monkeypatch.setattr(cpu_spike, "LSD_DIGIT_BITS", 3)  # several passes on small grids
    lsd = fusekit.ops.spike_sort(keys, quantum, exact=exact, backend="cpu")
    monkeypatch.undo()
    return counting, lsd


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("dtype,quantum", [(np.float64, None), (np.float32, 0.003),
                                           (np.int64, 1), (np.int32, 7), (np.uint16, None)])
def test_lsd_step_sort_equals_the_counting_sort(rng, monkeypatch, exact, dtype, quantum):
    keys = random_keys(rng, dtype, 3000)
    keys[::7] = keys[3]  # ties across the array
    counting, lsd = _sort_both_ways(monkeypatch, keys, quantum, exact)
    np.testing.assert_array_equal(lsd.order, counting.order)
    np.testing.assert_array_equal(lsd.step_offsets, counting.step_offsets)
    assert lsd.stats == counting.stats
    if exact:
        np.testing.assert_array_equal(lsd.order, np.argsort(keys, kind="stable"))


@pytest.mark.parametrize("run", [23, 24, 25, 60])
def test_lsd_step_sort_orders_runs_around_the_insertion_limit(monkeypatch, run):
    # one step holding `run` keys in falling order (with ties), between single-key steps
    from fusekit.backends.cpu import spike as cpu_spike

    assert cpu_spike.INSERTION_MAX == 24
    keys = np.concatenate([[0.0], 5.0 + np.repeat(np.linspace(0.9, 0.0, run), 2)[:run],
                           [10.0, 20.0]])
    counting, lsd = _sort_both_ways(monkeypatch, keys, 1.0, True)
    np.testing.assert_array_equal(lsd.order, np.argsort(keys, kind="stable"))
    np.testing.assert_array_equal(lsd.step_offsets, counting.step_offsets)


@pytest.mark.parametrize("fine_bits", [1, 30])
@pytest.mark.parametrize("n", [10, 30, 200])
def test_step_sort_orders_keys_closer_than_its_fine_grid(rng, monkeypatch, n, fine_bits):
    # with one fine bit most keys of a step share their fine place and the scan compares the
    # keys; n = 30 and 200 make runs longer than the insertion limit (merge-sorted afterwards)
    from fusekit.backends.cpu import spike as cpu_spike

    keys = np.concatenate([[0.0, 9.0], 5.0 + rng.integers(0, 40, n) / 41,
                           5.0 + rng.integers(0, 6, n) * np.finfo(float).eps * 4])
    monkeypatch.setattr(cpu_spike, "STEP_SORT_FINE_BITS", fine_bits)
    counting, lsd = _sort_both_ways(monkeypatch, keys, 1.0, True)
    np.testing.assert_array_equal(lsd.order, np.argsort(keys, kind="stable"))
    np.testing.assert_array_equal(lsd.step_offsets, counting.step_offsets)


@settings(max_examples=30, deadline=None)
@given(keys=st.lists(st.floats(-1e3, 1e3), max_size=80),
       quantum=st.one_of(st.none(), st.floats(0.01, 500)))
def test_property_lsd_step_sort_is_a_stable_sort(keys, quantum):
    k = np.array(keys, dtype=np.float64)
    with pytest.MonkeyPatch.context() as mp:
        counting, lsd = _sort_both_ways(mp, k, quantum, True)
    np.testing.assert_array_equal(lsd.order, np.argsort(k, kind="stable"))
    np.testing.assert_array_equal(lsd.step_offsets, counting.step_offsets)


def naive_components(n, edges):
    label = list(range(n))
    for a, b in edges:
        la, lb = label[a], label[b]
        if la != lb:
            label = [la if x == lb else x for x in label]
    return label


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_union_accepts_exactly_the_edges_that_join_components(rng, backend):
    n, m = 40, 120
    u, v = rng.integers(0, n, m), rng.integers(0, n, m)
    parent, size = np.arange(n, dtype=np.int64), np.ones(n, np.int64)
    acc, cnt = fusekit.ops.union_find_union(parent, size, u, v, backend=backend)
    label, expected = list(range(n)), []
    for a, b in zip(u, v, strict=True):
        expected.append(label[a] != label[b])
        if expected[-1]:
            la, lb = label[a], label[b]
            label = [la if x == lb else x for x in label]
    np.testing.assert_array_equal(acc, expected)
    assert cnt[2] == sum(expected) and cnt[3] == m and cnt[0] == 2 * m
    roots = fusekit.ops.union_find_find(parent, np.arange(n), backend=backend)
    lab = np.array(label)
    assert all((roots == roots[i]).tolist() == (lab == lab[i]).tolist() for i in range(n))


@pytest.mark.parametrize("with_order", [True, False])
def test_cpu_union_matches_the_reference_counters_and_parents(rng, with_order):
    n, m = 200, 900
    u, v = rng.integers(0, n, m).astype(np.int32), rng.integers(0, n, m).astype(np.int32)
    order = rng.permutation(m).astype(np.int64) if with_order else None
    p1, s1 = np.arange(n, dtype=np.int64), np.ones(n, np.int64)
    p2, s2 = p1.copy(), s1.copy()
    a1, c1 = fusekit.ops.union_find_union(p1, s1, u, v, order, max_unions=150, backend="cpu")
    ref_order = np.arange(m) if order is None else order
    a2, c2 = spike.union_find_union_reference(p2, s2, u, v, ref_order, max_unions=150)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(p1, p2)
    assert c1[2] == 150 and c1[3] < m


@pytest.mark.parametrize("by_index", [False, True])
def test_union_prefetch_distance_never_changes_the_result(rng, by_index):
    # the prefetches are hints: every distance (0: none; past the end) gives one result
    from fusekit.backends.cpu import spike as cpu_spike

    n, m = 300, 1000
    u, v = rng.integers(0, n, m).astype(np.int32), rng.integers(0, n, m).astype(np.int32)
    order = np.arange(m) if by_index else rng.permutation(m)
    results = []
    for ahead in (0, 1, 2, 3, 16, 999, 5000):
        parent, size = np.arange(n, dtype=np.int32), np.ones(n, np.int32)
        acc, cnt = np.zeros(m, np.bool_), np.zeros(5, np.int64)
        k = cpu_spike.ordered_union(parent, size, u, v, order, 0, m, 10**9, acc, cnt,
                                    by_index, ahead)
        results.append((k, acc.tolist(), cnt.tolist(), parent.tolist(), size.tolist()))
    assert all(r == results[0] for r in results)
    ref_parent, ref_size = np.arange(n, dtype=np.int32), np.ones(n, np.int32)
    ref_acc, ref_cnt = spike.union_find_union_reference(ref_parent, ref_size, u, v, order,
                                                        max_unions=10**9)
    assert results[0][1:] == (ref_acc.tolist(), ref_cnt.tolist(), ref_parent.tolist(),
                              ref_size.tolist())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_all_edges_with_an_order_is_rejected(backend):
    parent, size = np.arange(3, dtype=np.int64), np.ones(3, np.int64)
    with pytest.raises(fusekit.InputError, match="with all_edges, order must be empty"):
        spike.union_find_union_op.run(
            (parent, size, np.array([0]), np.array([1]), np.array([0], np.int64)),
            {"max_unions": 5, "all_edges": True}, backend)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_numba_endpoint_gather_equals_fancy_indexing(rng, monkeypatch, dtype):
    from fusekit.backends.cpu import spike as cpu_spike

    monkeypatch.setattr(cpu_spike, "GATHER_MIN_KEYS", 0)  # the Numba loop at any size
    u, v = rng.integers(0, 1000, 3001).astype(dtype), rng.integers(0, 1000, 3001).astype(dtype)
    for order in (rng.permutation(3001)[:2000], rng.integers(0, 3001, 5000),
                  np.array([3000, 0]), np.empty(0)):
        order = order.astype(np.int64)
        gu, gv = fusekit.ops.gather_endpoints(u, v, order, backend="cpu")
        np.testing.assert_array_equal(gu, u[order])
        np.testing.assert_array_equal(gv, v[order])
        assert gu.dtype == dtype and gv.dtype == dtype


def test_union_find_class_tracks_components_and_counters():
    uf = fusekit.ops.UnionFind(5)
    assert uf.union([0, 1, 3], [1, 0, 4]).tolist() == [True, False, True]
    assert uf.n_components == 3 and uf.unions == 2 and uf.finds == 6
    roots = uf.find([0, 1, 2, 3, 4])
    assert roots[0] == roots[1] and roots[3] == roots[4] and len(set(roots.tolist())) == 3
    assert uf.stats().uf_unions == 2


def test_keys_with_nan_are_rejected():
    with pytest.raises(fusekit.InputError, match="keys contains NaN"):
        fusekit.ops.spike_sort(np.array([1.0, np.nan]))


def test_two_dimensional_keys_are_rejected():
    with pytest.raises(fusekit.InputError, match=r"keys must have shape \(n,\)"):
        fusekit.ops.spike_sort(np.ones((2, 2)))


def test_a_quantum_that_makes_too_many_steps_suggests_the_radix_sort():
    with pytest.raises(fusekit.InputError, match="spike_radix_sort"):
        fusekit.ops.spike_sort(np.array([0.0, 1.0]), 1e-12)


def test_non_positive_quantum_is_rejected():
    with pytest.raises(fusekit.InputError, match="quantum must be a positive"):
        fusekit.ops.spike_sort(np.array([0.0, 1.0]), 0.0)


def test_union_rejects_vertex_ids_beyond_parent():
    parent, size = np.arange(3, dtype=np.int64), np.ones(3, np.int64)
    with pytest.raises(fusekit.InputError, match=r"must lie in \[0, 3\)"):
        fusekit.ops.union_find_union(parent, size, np.array([0]), np.array([3]))


def test_union_rejects_parent_pointers_outside_the_array():
    parent, size = np.array([0, 5, 2], dtype=np.int64), np.ones(3, np.int64)
    with pytest.raises(fusekit.InputError, match="parent pointers must lie in"):
        fusekit.ops.union_find_union(parent, size, np.array([0]), np.array([1]))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_int32_and_int64_parents_give_the_same_unions(rng, backend):
    u, v = rng.integers(0, 30, 80), rng.integers(0, 30, 80)
    results = []
    for dt in (np.int32, np.int64):
        parent, size = np.arange(30, dtype=dt), np.ones(30, dt)
        acc, cnt = fusekit.ops.union_find_union(parent, size, u, v, backend=backend)
        results.append((acc.tolist(), cnt.tolist(), parent.tolist()))
    assert results[0] == results[1]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_synapse_updates_count_the_smaller_side_of_each_union(backend):
    parent, size = np.arange(5, dtype=np.int64), np.ones(5, np.int64)
    _, cnt = fusekit.ops.union_find_union(parent, size, np.array([0, 2, 0, 4, 1]),
                                          np.array([1, 3, 2, 0, 3]), backend=backend)
    assert cnt[2] == 4 and cnt[4] == 1 + 1 + 2 + 1  # sides 1|1, 1|1, 2|2, 4|1; (1, 3) rejected


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("span", [2**40, 2**62])
def test_integer_keys_wider_than_the_step_limit_still_sort(rng, backend, span):
    # 2**40: the default grid coarsens to an integer quantum; 2**62: key - lo could overflow
    # int64, so the grid is a float grid. Neighbouring keys must keep their order.
    keys = rng.integers(-span, span, 500, dtype=np.int64)
    keys[:4] = [-span, span, -span + 1, span - 1]
    expected = np.argsort(keys, kind="stable")
    np.testing.assert_array_equal(fusekit.ops.spike_sort(keys, backend=backend).order, expected)
    np.testing.assert_array_equal(
        fusekit.ops.spike_radix_sort(keys, backend=backend).order, expected)
    assert fusekit.ops.spike_sort(keys, backend=backend).stats.time_steps <= 251


def test_float_keys_whose_range_overflows_are_rejected():
    with pytest.raises(fusekit.InputError, match="wider than float64 can hold"):
        fusekit.ops.spike_sort(np.array([-1.7e308, 1.7e308]))


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(-2**63, 2**63 - 1), max_size=20),
       dtype=st.sampled_from([np.int8, np.int32, np.int64, np.uint8, np.uint32]),
       n=st.integers(0, 300), step=st.integers(1, 3))
def test_one_pass_id_range_check_equals_min_and_max(values, dtype, n, step):
    from fusekit.ops._common import ids_in_range

    info = np.iinfo(dtype)
    a = np.array([min(max(x, info.min), info.max) for x in values], dtype=dtype)[::step]
    expected = a.size == 0 or (int(a.min()) >= 0 and int(a.max()) < n)
    assert ids_in_range(a, n) == expected
