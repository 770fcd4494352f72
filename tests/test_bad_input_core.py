"""Core bad input: byte order, dt and counts of the membrane ops, thread counts, bench groups."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import fusekit
from fusekit import ops
from fusekit.neuro import HH_CHANNELS, ChannelSet

HH = ChannelSet(HH_CHANNELS)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_non_native_byte_order_is_refused_by_name(backend):
    big = np.ones(4, ">f8")
    with pytest.raises(fusekit.InputError, match=r"kron_linear: x is in non-native byte order"):
        ops.kron_linear(big, np.ones((1, 2, 2)), np.ones((1, 2, 2)), backend=backend)
    with pytest.raises(fusekit.InputError, match="newbyteorder"):
        ops.spike_sort(np.array([3.0, 1.0], ">f8"), backend=backend)
    native = big.astype(big.dtype.newbyteorder("="))
    assert ops.kron_linear(native, np.ones((1, 2, 2)), np.ones((1, 2, 2)),
                           backend=backend).shape == (4,)


def membrane(n=2):
    z = np.zeros(n)
    return np.full(n, -65.0), HH.initial_states(n), HH.default_params(n), z, z, z


def test_membrane_step_takes_numpy_scalar_dt_and_refuses_strings():
    v_new, _ = ops.membrane_step(*membrane(), channels=HH, dt=np.float32(0.025))
    want, _ = ops.membrane_step(*membrane(), channels=HH, dt=float(np.float32(0.025)))
    np.testing.assert_array_equal(v_new, want)
    tensors = [torch.tensor(a) for a in membrane()]
    for dt in ("0.025", None, True):
        with pytest.raises(fusekit.InputError, match="membrane_step: dt must be a positive"):
            ops.membrane_step(*tensors, channels=HH, dt=dt)


def test_synapse_deliver_refuses_a_fractional_n_out():
    args = (np.array([1.0, 0.0]), np.array([0, 2, 3]), np.array([0.5, 0.25, 1.0]),
            np.array([1, 2, 0]))
    with pytest.raises(fusekit.InputError, match="n_out must be a non-negative integer"):
        ops.synapse_deliver(*args, n_out=3.7)
    assert ops.synapse_deliver(*args, n_out=np.int64(3)).shape == (3,)


@pytest.mark.parametrize("n", [2.5, "2", True, 0])
def test_thread_counts_must_be_whole_numbers(n):
    before = fusekit.get_num_threads()
    with pytest.raises(fusekit.InputError, match="thread count must be an integer"):
        fusekit.set_num_threads(n)
    assert fusekit.get_num_threads() == before


def test_bench_names_a_group_that_matches_nothing():
    proc = subprocess.run([sys.executable, "-m", "fusekit", "bench", "no_such_group_xyz"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "no benchmark matches 'no_such_group_xyz'" in proc.stderr
    assert "fp8" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_hines_solve_names_a_singular_system(backend):
    parent = np.array([-1, 0, 1, 1])
    with pytest.raises(fusekit.InputError, match="hines_solve: the system is singular"):
        ops.hines_solve(parent, np.zeros(4), -np.ones(4), -np.ones(4), np.ones(4),
                        backend=backend)
    x = ops.hines_solve(parent, np.full(4, 3.0), -np.ones(4), -np.ones(4), np.ones(4),
                        backend=backend)
    assert np.isfinite(x).all()


def test_hines_solve_checks_shapes_while_tracing():
    meta = [torch.tensor([-1, 0, 1, 1]).to("meta"), torch.ones(3, dtype=torch.float64)]
    meta += [torch.ones(4, dtype=torch.float64)] * 3
    meta = [meta[0]] + [a.to("meta") for a in meta[1:]]
    with pytest.raises(fusekit.InputError, match=r"diag must have shape .* got \(3,\)"):
        ops.hines_solve(*meta)
    meta[1] = torch.ones(4, dtype=torch.float64, device="meta")
    assert ops.hines_solve(*meta).shape == (4,)


def test_membrane_step_checks_shapes_while_tracing():
    from fusekit.neuro import HH_CHANNELS, ChannelSet

    hh = ChannelSet(HH_CHANNELS)
    n = 5

    def meta(*shape):
        return torch.empty(shape, dtype=torch.float64, device="meta")

    args = [meta(n), meta(3, n), meta(7, n), meta(n), meta(n), meta(n)]
    v, s = ops.membrane_step(*args, channels=hh, dt=0.025)
    assert v.shape == (n,) and s.shape == (3, n) and v.is_meta
    bad = list(args)
    bad[2] = meta(6, n)
    with pytest.raises(fusekit.InputError, match=r"params must have shape \(7, 5\)"):
        ops.membrane_step(*bad, channels=hh, dt=0.025)
    bad = list(args)
    bad[3] = torch.empty(n, dtype=torch.float32, device="meta")
    with pytest.raises(fusekit.InputError, match="i_inj is float32"):
        ops.membrane_step(*bad, channels=hh, dt=0.025)
    a = ops.membrane_step_vjp(*args, meta(n), meta(3, n), channels=hh, dt=0.025)
    assert [tuple(x.shape) for x in a] == [(n,), (3, n), (7, n), (n,), (n,), (n,)]
    with pytest.raises(fusekit.InputError, match=r"a_states must have shape \(3, 5\)"):
        ops.membrane_step_vjp(*args, meta(n), meta(2, n), channels=hh, dt=0.025)
