"""The backward's checkpoints kept by the CPU kernels themselves, in one call.

The differentiable forward of ``ion_simulate`` and ``cable_simulate`` (torch tensors that
require grad) needs the state at the start of every checkpoint segment. The CPU kernels
write it from inside one call (``checkpointed_forward``'s ``whole``); the other backends, and
the fallback, run one call per segment. Both must give the same checkpoints, counts and
results.
"""

import numpy as np
import pytest

import fusekit
from branchy_channel import Branchy
from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_tree
from fusekit.ops import ion
from fusekit.ops.ion_grad import checkpointed_forward, segment_length

HH = ChannelSet(HH_CHANNELS)
TREE = cable_tree(np.array([-1, 0, 0, 1, 1]), [20.0, 100.0, 80.0, 60.0, 50.0],
                  [20.0, 2.0, 1.5, 1.0, 1.0])


def both_ways(run, whole, arrays, n_steps, every, record_every=4, max_spikes=6):
    kw = {"channels": arrays[-1], "dt": 0.025, "n_steps": n_steps, "record_every": record_every,
          "spike_threshold": 0.0, "max_spikes": max_spikes}
    segs = checkpointed_forward(run, *arrays[:4], **kw, checkpoint_every=every, backend="cpu")
    one = checkpointed_forward(run, *arrays[:4], **kw, checkpoint_every=every, backend="cpu",
                               whole=whole)
    return segs, one


def assert_same(segs, one):
    names = ("v", "states", "v_record", "count", "times", "checkpoints", "counts_at")
    for name, a, b in zip(names, segs, one, strict=True):
        assert a.shape == b.shape, name
        if name == "times":  # the segments add their offset: one rounding apart
            np.testing.assert_allclose(a, b, rtol=4 * np.finfo(a.dtype).eps, err_msg=name)
        else:
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize(("every", "i_rows", "dtype"), [(0, False, np.float64),
                                                        (7, True, np.float64),
                                                        (13, False, np.float32)])
def test_ion_simulate_keeps_the_same_checkpoints_in_one_call(every, i_rows, dtype):
    n, n_steps = 70, 120
    rng = np.random.default_rng(2)
    v0 = rng.uniform(-70, -50, n).astype(dtype)
    S0 = HH.steady_states(v0.astype(np.float64)).astype(dtype)
    P = HH.default_params(n).astype(dtype)
    shape = (n_steps, n) if i_rows else (n,)
    i_ext = rng.uniform(5, 40, shape).astype(dtype)

    def run(arrays, params, backend):
        return ion.ion_simulate_op.run(arrays, params, backend)

    segs, one = both_ways(run, ion._checkpointing_kernel(ion.ion_simulate_op, "cpu"),
                          (v0, S0, P, i_ext, HH), n_steps, every)
    assert one[5].shape[0] == -(-n_steps // segment_length(n_steps, every, 4))
    assert one[3].sum() > 0
    assert_same(segs, one)


@pytest.mark.parametrize("cs", [HH, ChannelSet([*HH_CHANNELS, Branchy])],
                         ids=["vector kernel", "per-cell kernel"])
@pytest.mark.parametrize("every", [0, 9])
def test_cable_simulate_keeps_the_same_checkpoints_in_one_call(cs, every):
    n, n_steps = 5, 90
    nodes = TREE.parent.size
    v0 = np.full((n, nodes), -65.0)
    S0 = cs.steady_states(v0.reshape(-1)).reshape(-1, n, nodes)
    P = cs.default_params(n * nodes).reshape(-1, n, nodes)
    P[0][:, TREE.junction] = 0.0
    i_ext = np.zeros((n, nodes))
    i_ext[:, 0] = np.linspace(20.0, 60.0, n)
    coupling = np.broadcast_to(TREE.coupling[:, None], (2, n, nodes)).copy()
    tree = (TREE.parent, coupling)

    def run(arrays, params, backend):
        return ion.cable_simulate_op.run((*arrays, *tree), {**params, "record_at": (0, 3)},
                                         backend)

    whole = ion._checkpointing_kernel(ion.cable_simulate_op, "cpu", tree, record_at=(0, 3))
    segs, one = both_ways(run, whole, (v0, S0, P, i_ext, cs), n_steps, every)
    n_seg = -(-n_steps // segment_length(n_steps, every, 4))
    assert one[5].shape == (n_seg, 1 + len(cs.state_names), n, nodes)
    assert one[3].sum() > 0
    assert_same(segs, one)


def test_backends_without_the_one_call_kernel_run_in_segments():
    torch = pytest.importorskip("torch")
    n = 4
    v0 = torch.full((n,), -65.0, dtype=torch.float64)
    S0 = torch.tensor(HH.steady_states(v0.numpy()))
    P = torch.tensor(HH.default_params(n), requires_grad=True)
    i_ext = torch.full((n,), 20.0, dtype=torch.float64)
    grads = []
    for backend in ("reference", "cpu"):
        out = fusekit.ops.ion_simulate(v0, S0, P, i_ext, channels=HH, dt=0.025, n_steps=60,
                                       record_every=2, max_spikes=4, backend=backend)
        grads.append(torch.autograd.grad(out.v_record.mean(), P)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-9, atol=1e-12)
