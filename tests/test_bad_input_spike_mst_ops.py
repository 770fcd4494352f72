"""Bad input to the spike-sort, union-find and MST ops: a clear InputError, never a crash."""

import numpy as np
import pytest
import torch

import fusekit
from fusekit import ops

KEYS = np.array([3, 1])


def _edges(lib=np.asarray):
    return lib([0, 1]), lib([1, 2]), lib([1.0, 2.0])


# 1 -------------------------------------------------------------------- union on torch/lists


def test_union_of_torch_tensors_matches_numpy():
    parent_t, size_t = torch.arange(4), torch.ones(4, dtype=torch.int64)
    acc_t, cnt_t = ops.union_find_union(parent_t, size_t, torch.tensor([0]), torch.tensor([1]))
    parent, size = np.arange(4), np.ones(4, np.int64)
    acc, cnt = ops.union_find_union(parent, size, np.array([0]), np.array([1]))
    assert acc_t.tolist() == acc.tolist() and cnt_t.tolist() == cnt.tolist()
    assert parent_t.tolist() == parent.tolist()


def test_union_of_lists_says_to_wrap_them():
    with pytest.raises(fusekit.InputError, match="union_find_union: u: expected a NumPy array"):
        ops.union_find_union([0, 1, 2, 3], [1, 1, 1, 1], [0], [1])


# 2 ----------------------------------------------------------------------- cyclic parent


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_find_on_a_cyclic_parent_raises_instead_of_hanging(backend):
    with pytest.raises(fusekit.InputError, match="parent has a cycle"):
        ops.union_find_find(np.array([1, 0, 2]), np.array([2, 0]), backend=backend)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_find_on_a_forest_still_finds_roots(backend):
    assert ops.union_find_find(np.array([1, 1, 1]), np.array([0, 2]),
                               backend=backend).tolist() == [1, 1]


# 3 ------------------------------------------------------------------------ NaN weights


@pytest.mark.parametrize("method", [ops.boruvka, ops.filter_kruskal])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_forest_refuses_non_finite_weights(method, bad):
    w = np.array([bad, 2, 3, 0.5])
    with pytest.raises(fusekit.InputError, match="w contains NaN or infinity"):
        method(np.array([0, 1, 0, 2]), np.array([1, 2, 2, 3]), w, 4, backend="cpu")


# 4 --------------------------------------------------------------- pipelined Kruskal inputs


def test_pipelined_kruskal_of_torch_tensors_matches_numpy():
    ids_t, cnt_t, _, handed_t = ops.pipelined_kruskal(*_edges(torch.tensor), 3)
    ids, cnt, _, handed = ops.pipelined_kruskal(*_edges(), 3)
    assert ids_t.tolist() == ids.tolist() == [0, 1]
    assert cnt_t.tolist() == cnt.tolist() and handed_t == handed


def test_pipelined_kruskal_of_lists_says_to_wrap_them():
    with pytest.raises(fusekit.InputError, match="pipelined_kruskal: expected a NumPy array"):
        ops.pipelined_kruskal([0, 1], [1, 2], [1.0, 2.0], 3)


# 5 ------------------------------------------------------------------ lists and meta keys


@pytest.mark.parametrize("call", [
    lambda k: ops.spike_sort(k),
    lambda k: ops.spike_radix_sort(k),
    lambda k: ops.spike_sort_edges(k, np.array([0, 1, 2]), np.array([1, 2, 0])),
])
def test_sorts_of_lists_say_to_wrap_them(call):
    with pytest.raises(fusekit.InputError, match="keys: expected a NumPy array"):
        call([3, 1, 2])


def test_sort_of_meta_tensor_says_it_has_no_values():
    with pytest.raises(fusekit.InputError, match="meta tensor, which holds no values"):
        ops.spike_sort(torch.empty(4, device="meta"))


# 6 ------------------------------------------------------------------- read-only parent


def test_union_refuses_a_read_only_parent():
    parent = np.broadcast_to(np.arange(4), (4,))
    with pytest.raises(fusekit.InputError, match="parent is read-only.*updates it in place"):
        ops.union_find_union(parent, np.ones(4, np.int64), np.array([0]), np.array([1]),
                             backend="cpu")


# 7 and 8 ----------------------------------------------------------- scalars and counts


@pytest.mark.parametrize("quantum", ["a", np.array([0.1, 0.2])])
def test_sort_refuses_a_quantum_that_is_no_number(quantum):
    with pytest.raises(fusekit.InputError, match="quantum must be a positive finite number"):
        ops.spike_sort(KEYS, quantum)


@pytest.mark.parametrize("keys", [KEYS, KEYS.astype(np.float64)])
@pytest.mark.parametrize("origin", [float("nan"), -np.inf])
def test_sort_blames_a_non_finite_origin(keys, origin):
    with pytest.raises(fusekit.InputError, match="origin must be a finite number"):
        ops.spike_sort(keys, origin=origin)


@pytest.mark.parametrize("radix_bits", [None, 2.5])
def test_radix_sort_refuses_radix_bits_that_are_no_integer(radix_bits):
    with pytest.raises(fusekit.InputError, match="radix_bits must be a non-negative integer"):
        ops.spike_radix_sort(KEYS, radix_bits=radix_bits)


@pytest.mark.parametrize("method", [ops.boruvka, ops.filter_kruskal, ops.pipelined_kruskal])
@pytest.mark.parametrize("n", [None, 4.7])
def test_forest_refuses_a_vertex_count_that_is_no_integer(method, n):
    with pytest.raises(fusekit.InputError, match="n must be a non-negative integer"):
        method(*_edges(), n)


def test_pipelined_kruskal_refuses_fractional_batches():
    with pytest.raises(fusekit.InputError, match="batches must be a non-negative integer"):
        ops.pipelined_kruskal(*_edges(), 3, batches=2.5)


@pytest.mark.parametrize("max_unions", ["x", 1.7])
def test_union_refuses_max_unions_that_is_no_integer(max_unions):
    with pytest.raises(fusekit.InputError, match="max_unions must be a non-negative integer"):
        ops.union_find_union(np.arange(2), np.ones(2, np.int64), np.array([0]), np.array([1]),
                             max_unions=max_unions)


@pytest.mark.parametrize("n", [2.5, "3"])
def test_union_find_refuses_a_size_that_is_no_integer(n):
    with pytest.raises(fusekit.InputError, match="UnionFind: n must be a non-negative integer"):
        ops.UnionFind(n)


@pytest.mark.parametrize("ids", [[0.9], [True], ["1"]])
def test_union_find_refuses_ids_that_are_no_integers(ids):
    uf = ops.UnionFind(3)
    with pytest.raises(fusekit.InputError, match="us must hold integer vertex ids"):
        uf.union(ids, [1])
    with pytest.raises(fusekit.InputError, match="xs must hold integer vertex ids"):
        uf.find(ids)
    assert uf.n_components == 3  # nothing merged
