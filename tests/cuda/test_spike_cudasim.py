"""The CUDA spike kernels against the NumPy oracles, in Numba's CUDA simulator."""

import numpy as np
import pytest

from fusekit.backends.cuda import spike as cuda_spike
from fusekit.ops import spike

pytestmark = pytest.mark.cudasim


def grid(keys, quantum=None):
    lo, q, n_steps = spike.time_grid(keys, quantum)
    return lo, q, n_steps


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("keys", [
    np.array([5, 3, 5, 0, 3, 9, 5], dtype=np.int64),
    np.array([0.7, 0.1, 0.7, 0.25, 0.2, 0.9, 0.15, 0.05]),
])
def test_spike_sort_matches_reference(keys, exact):
    lo, q, n_steps = grid(keys, 0.2 if keys.dtype.kind == "f" else 2)
    order, offsets, err = cuda_spike.spike_sort_launch(keys, lo=lo, quantum=q, n_steps=n_steps,
                                                       exact=exact)
    ref_order, ref_offsets, ref_err = spike.spike_sort_reference(
        keys, lo=lo, quantum=q, n_steps=n_steps, exact=exact)
    np.testing.assert_array_equal(order.copy_to_host(), ref_order)
    np.testing.assert_array_equal(offsets.copy_to_host(), ref_offsets)
    assert err.copy_to_host().max() == pytest.approx(ref_err[0])


@pytest.mark.parametrize("keys", [
    np.array([700, 3, 255, 3, 64, 1000, 0, 255], dtype=np.int64),
    np.array([0.5, 0.125, 0.5, 0.875, 0.25, 0.0]),
])
def test_spike_radix_sort_matches_reference(keys):
    lo, q, n_levels = grid(keys, 0.125 if keys.dtype.kind == "f" else None)
    order, pass_stats, _ = cuda_spike.spike_radix_sort_launch(
        keys, lo=lo, quantum=q, n_levels=n_levels, radix_bits=3, exact=True)
    ref_order, ref_stats, _ = spike.spike_radix_sort_reference(
        keys, lo=lo, quantum=q, n_levels=n_levels, radix_bits=3, exact=True)
    np.testing.assert_array_equal(order.copy_to_host(), ref_order)
    np.testing.assert_array_equal(pass_stats, ref_stats)


def test_ordered_union_and_find_match_reference():
    rng = np.random.default_rng(3)
    n, m = 12, 30
    u, v = rng.integers(0, n, m), rng.integers(0, n, m)
    order = rng.permutation(m).astype(np.int64)
    from numba import cuda

    parent = cuda.to_device(np.arange(n, dtype=np.int64))
    size = cuda.to_device(np.ones(n, np.int64))
    acc, cnt = cuda_spike.union_find_union_launch(parent, size, u, v, order, max_unions=8)
    p_ref, s_ref = np.arange(n, dtype=np.int64), np.ones(n, np.int64)
    ref_acc, ref_cnt = spike.union_find_union_reference(p_ref, s_ref, u, v, order, max_unions=8)
    np.testing.assert_array_equal(acc.copy_to_host(), ref_acc)
    np.testing.assert_array_equal(cnt.copy_to_host(), ref_cnt)
    np.testing.assert_array_equal(parent.copy_to_host(), p_ref)
    roots = cuda_spike.union_find_find_launch(parent, np.arange(n, dtype=np.int64))
    np.testing.assert_array_equal(roots.copy_to_host(),
                                  spike.union_find_find_reference(p_ref, np.arange(n)))


def test_find_marks_a_cycle_instead_of_hanging():
    parent = np.array([1, 0, 2, 2], dtype=np.int64)  # 0 <-> 1 is a cycle; 2 a root
    roots = cuda_spike.union_find_find_launch(parent, np.arange(4, dtype=np.int64))
    np.testing.assert_array_equal(roots.copy_to_host(), [-1, -1, 2, 2])
