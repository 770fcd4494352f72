"""Blocks of the single-compartment CPU kernels narrowed so that threads get equal runs.

``prange`` gives each thread an equal run of blocks; ``cpu.ion.block_width`` chooses blocks
as wide as the kernel's (or narrower) so that their count is a multiple of the thread count.
The width is a run-time argument of the kernels, so every kernel is held here to the same bits
at any width: the forward, forward mode, the adjoint and the network.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fusekit
from fusekit.backends.cpu import ion as cpu_ion
from fusekit.backends.cpu import ion_adjoint as cpu_adj
from fusekit.backends.cpu import ion_sensitivity as cpu_sens
from fusekit.neuro import HH_CHANNELS, ChannelSet

HH = ChannelSet(HH_CHANNELS)
N = 37  # a partial block at every width below


@given(n=st.integers(1, 5000), block=st.sampled_from([64, 256]), threads=st.integers(1, 16))
def test_block_width_gives_every_thread_an_equal_run(n, block, threads):
    width = cpu_ion.block_width(n, block, threads)
    assert 8 <= width <= block and (width % 8 == 0 or width == block)
    n_blocks = -(-n // width)
    full_blocks = -(-n // block)
    runs = -(-full_blocks // threads)  # blocks per thread at the full width
    assert n_blocks <= runs * threads  # no thread gets more blocks than before
    # the busiest thread is within one vector per block of an equal share
    busiest = min(-(-n_blocks // threads) * width, n)
    assert busiest <= -(-n // threads) + 8 * runs
    if threads == 1:
        assert width == block


@given(n=st.integers(0, 3))
def test_block_width_of_tiny_populations(n):
    assert cpu_ion.block_width(n, 64, 2) in (8, 64)


def at_widths(monkeypatch, run, widths=(None, 8, 24)):
    """``run()``'s outputs with the blocks' width forced to each of ``widths`` in turn
    (``None``: the kernels' own choice), all checked to be the same bits."""
    runs = []
    for w in widths:
        with monkeypatch.context() as m:
            if w is not None:
                for module in (cpu_ion, cpu_sens, cpu_adj):
                    m.setattr(module, "neuron_width", lambda n, block=64, w=w: w)
            runs.append(run())
    first = runs[0]
    assert first["spike_count"].sum() > 0
    for other in runs[1:]:
        for name, value in first.items():
            np.testing.assert_array_equal(other[name], value, err_msg=name)
    return first


def population(dtype=np.float64):
    rng = np.random.default_rng(5)
    v0 = rng.uniform(-70.0, -55.0, N).astype(dtype)
    S0 = HH.steady_states(v0.astype(np.float64)).astype(dtype)
    P = HH.default_params(N).astype(dtype)
    P[1] *= rng.uniform(0.8, 1.2, N)
    i_ext = np.linspace(2.0, 40.0, N).astype(dtype)
    return v0, S0, P, i_ext


KW = {"channels": HH, "dt": 0.025, "n_steps": 300, "record_every": 10, "max_spikes": 4}


def outputs(result):
    return {k: np.asarray(v) for k, v in result._asdict().items() if v is not None}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_the_same_bits_at_any_width(dtype, monkeypatch):
    got = at_widths(monkeypatch, lambda: outputs(
        fusekit.ops.ion_simulate(*population(dtype), **KW, backend="cpu")))
    ref = fusekit.ops.ion_simulate(*population(dtype), **KW, backend="reference")
    np.testing.assert_array_equal(got["spike_count"], ref.spike_count)


def test_forward_mode_the_same_bits_at_any_width(monkeypatch):
    at_widths(monkeypatch, lambda: outputs(fusekit.ops.ion_sensitivity(
        *population(), **KW, wrt=["g_na", "i_ext"], backend="cpu")))


def test_gradient_the_same_bits_at_any_width(monkeypatch):
    torch = pytest.importorskip("torch")

    def run():
        v0, S0, P, i_ext = (torch.tensor(a) for a in population())
        P.requires_grad_(True)
        i_ext.requires_grad_(True)
        out = fusekit.ops.ion_simulate(v0, S0, P, i_ext, **KW, checkpoint_every=40,
                                       backend="cpu")
        loss = out.v_record.square().mean() + out.spike_times.nan_to_num().sum()
        g_p, g_i = torch.autograd.grad(loss, (P, i_ext))
        return {"spike_count": out.spike_count.numpy(), "g_params": g_p.numpy(),
                "g_i_ext": g_i.numpy()}

    got = at_widths(monkeypatch, run)
    assert np.abs(got["g_params"]).sum() > 0


def test_network_the_same_bits_at_any_width(monkeypatch):
    v0, S0, P, i_ext = population()
    rng = np.random.default_rng(9)
    mask = rng.random((N, N)) < 0.2
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64)
    indices = np.nonzero(mask)[1].astype(np.int64)
    weights = rng.uniform(0.05, 0.3, indices.size)
    at_widths(monkeypatch, lambda: outputs(fusekit.ops.network_simulate(
        v0, S0, P, i_ext, np.zeros(N), indptr, indices, weights, **KW, delay_steps=20,
        backend="cpu")), widths=(None, 8, 40))
