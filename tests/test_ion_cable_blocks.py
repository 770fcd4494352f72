"""The CPU cable kernels' other layouts: fewer cells per block and shared spill rows.

Large trees get blocks of 8-32 cells and the stages' spill rows shared by a block's
compartments (``cpu.ion.cable_block_for``); the tests' small trees would get neither, so here
the choice is forced, on a tree with junction nodes and a cell count that leaves a partial
block, and every kernel is held to the reference.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fusekit  # noqa: E402
from fusekit.backends.cpu import ion as cpu_ion  # noqa: E402
from fusekit.backends.cpu import ion_adjoint as cpu_adj  # noqa: E402
from fusekit.backends.cpu import ion_cable_network as cpu_net  # noqa: E402
from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_tree  # noqa: E402

HH = ChannelSet(HH_CHANNELS)
TREE = cable_tree(np.array([-1, 0, 0, 1, 1, 2, 5]), [20.0, 100.0, 80.0, 60.0, 50.0, 40.0, 40.0],
                  [20.0, 2.0, 1.5, 1.0, 1.0, 1.2, 1.0])


@pytest.fixture(params=[(8, True)], ids=["8-shared"])
def layout(request, monkeypatch):
    def forced(n_comp, rows, n_spill, itemsize, n_cells=None):
        return request.param

    for module in (cpu_ion, cpu_adj, cpu_net):
        monkeypatch.setattr(module, "cable_block_for", forced)
    return request.param


def cells(n=21):
    rng = np.random.default_rng(7)
    nodes = TREE.parent.size
    v0 = rng.uniform(-70.0, -60.0, (n, nodes))
    S0 = HH.steady_states(v0.reshape(-1)).reshape(-1, n, nodes)
    P = HH.default_params(n * nodes).reshape(-1, n, nodes)
    P[0][:, TREE.junction] = 0.0
    current = np.zeros((n, nodes))
    current[:, 0] = np.linspace(5.0, 40.0, n)
    coupling = np.broadcast_to(TREE.coupling[:, None], (2, n, nodes)).copy()
    return v0, S0, P, current, coupling


def test_forward_and_gradient_in_every_layout(layout):
    v0, S0, P, current, coupling = cells()
    kw = {"channels": HH, "dt": 0.025, "n_steps": 200, "record_every": 10, "max_spikes": 3}
    got = fusekit.ops.cable_simulate(v0, S0, P, current, TREE.parent, coupling, **kw,
                                     backend="cpu")
    want = fusekit.ops.cable_simulate(v0, S0, P, current, TREE.parent, coupling, **kw,
                                      backend="reference")
    assert want.spike_count.sum() > 0
    np.testing.assert_array_equal(got.spike_count, want.spike_count)
    np.testing.assert_allclose(got.v_record, want.v_record, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.states, want.states, rtol=0, atol=1e-11)

    def grads(backend):
        p = torch.tensor(P, requires_grad=True)
        c = torch.tensor(coupling, requires_grad=True)
        out = fusekit.ops.cable_simulate(torch.tensor(v0), torch.tensor(S0), p,
                                         torch.tensor(current), TREE.parent, c, **kw,
                                         checkpoint_every=40, backend=backend)
        loss = out.v_record[..., 0].mean() + torch.nan_to_num(out.spike_times).sum()
        return torch.autograd.grad(loss, (p, c))

    for a, b in zip(grads("cpu"), grads("reference"), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9 * float(b.abs().max()))


def test_network_kernel_in_every_layout(layout):
    v0, S0, P, current, coupling = cells()
    n, nodes = v0.shape
    rng = np.random.default_rng(3)
    indptr = np.arange(0, 2 * n + 1, 2)
    indices = rng.integers(0, n, 2 * n)
    weights = rng.uniform(0.0, 0.4, 2 * n)
    comps = rng.integers(0, nodes, 2 * n)
    kw = {"channels": HH, "dt": 0.025, "n_steps": 200, "delay_steps": 8, "tau_syn": (3.0,),
          "e_syn": (0.0,), "record_every": 10, "max_spikes": 3, "synapse_compartment": comps}
    args = (v0, S0, P, current, TREE.parent, coupling, np.zeros((1, n, nodes)), indptr,
            indices, weights)
    got = fusekit.ops.cable_network_simulate(*args, **kw, backend="cpu")
    want = fusekit.ops.cable_network_simulate(*args, **kw, backend="reference")
    assert want.spike_count.sum() > 0
    np.testing.assert_array_equal(got.spike_count, want.spike_count)
    np.testing.assert_allclose(got.v_record, want.v_record, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.g_syn, want.g_syn, rtol=0, atol=1e-12)


def test_block_choice_follows_the_budget():
    """Small trees: whole blocks and each compartment's own spill rows; then shared spill
    rows and smaller blocks as the rows outgrow the budget; past it, whole blocks again."""
    budget = 3 << 20
    per_cell = 17 * 8  # rows x bytes per compartment and cell (HH, float64)

    def n_comp(fraction, block):  # compartments whose rows fill `fraction` of the budget
        return int(fraction * budget / (per_cell * (block + cpu_ion.ROW_PAD)))

    def choice(n):
        return cpu_ion.cable_block_for(n, 17, 19, 8, budget)

    assert choice(8) == (64, False)
    assert choice(n_comp(0.9, 64)) == (64, True)
    assert choice(n_comp(0.9, 16)) == (16, True)
    assert choice(n_comp(1.2, 8)) == (8, True)
    assert choice(n_comp(2.0, 8)) == (64, True)
    assert cpu_ion.cable_block_budget() > 0


@pytest.mark.parametrize(("block", "n_cells", "threads", "want"), [
    (64, 1, 1, 8), (64, 8, 2, 8), (64, 16, 2, 8), (64, 64, 1, 64), (64, 64, 2, 8),
    (64, 200, 2, 8), (64, 500, 2, 64), (16, 1000, 2, 16), (32, 20, 1, 32), (8, 3, 4, 8)])
def test_blocks_narrow_for_small_populations_and_for_every_thread(block, n_cells, threads,
                                                                  want):
    assert cpu_ion.cells_block(block, n_cells, threads) == want


def test_cells_block_keeps_the_threads_busy_on_any_population():
    from hypothesis import given
    from hypothesis import strategies as st

    @given(st.sampled_from([8, 16, 32, 64]), st.integers(1, 5000), st.integers(1, 8))
    def check(block, n, threads):
        got = cpu_ion.cells_block(block, n, threads)
        assert got in (block, 8)
        n_blocks = -(-n // got)
        busiest = min(-(-n_blocks // threads) * got, n)
        assert got == 8 or (busiest * threads <= 1.25 * n and got < 2 * n)

    check()


def test_results_do_not_depend_on_the_block_the_thread_count_picks():
    """40 cells: blocks of 64 on one thread, of 8 on two; the same bits either way."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads")
    v0, S0, P, i_ext, coupling = cells(40)
    Pt = torch.tensor(P, requires_grad=True)
    got = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            out = fusekit.ops.cable_simulate(
                torch.tensor(v0), torch.tensor(S0), Pt, torch.tensor(i_ext), TREE.parent,
                torch.tensor(coupling), channels=HH, dt=0.025, n_steps=200, record_every=2,
                max_spikes=8, backend="cpu")
            got.append((out.v_record, torch.autograd.grad(out.v_record.mean(), Pt)[0]))
    finally:
        numba.set_num_threads(before)
    assert cpu_ion.cells_block(64, 40, 1) == 64 and cpu_ion.cells_block(64, 40, 2) == 8
    assert torch.equal(got[0][0], got[1][0]) and torch.equal(got[0][1], got[1][1])
