"""Zero-area junction nodes (``c_m = 0``): no membrane, in every op, backend and gradient.

``fusekit.neuro.cable_tree`` puts NEURON's zero-area node where two or more children meet.
Such a node has no membrane: whatever its other parameters say, it carries no channel current
and its gating states are held; its row of the Hines system is its axial coupling (and any
``i_ext`` or synapse onto it). The kernels skip its channel step for the whole column of cells.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import fusekit  # noqa: E402
from branchy_channel import Branchy  # noqa: E402
from fusekit import InputError  # noqa: E402
from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_tree  # noqa: E402
from fusekit.ops.ion import cable_torch_step  # noqa: E402
from fusekit.ops.ion_cable_network_grad import cable_network_run_op  # noqa: E402

HH = ChannelSet(HH_CHANNELS)
HH_BRANCHY = ChannelSet([*HH_CHANNELS, Branchy])  # cannot be traced: the per-cell kernel
DT = 0.025
F64 = torch.float64
# A soma whose end joins two dendrites, the first of which forks again: two junctions.
TREE = cable_tree(np.array([-1, 0, 0, 1, 1]), [20.0, 100.0, 80.0, 60.0, 50.0],
                  [20.0, 2.0, 1.5, 1.0, 1.0])
JUNCTION = np.flatnonzero(TREE.junction)


def cells(cs=HH, n=3, dtype=np.float64):
    """Spiking cells whose junctions have c_m = 0 but keep default conductances and
    off-steady states (the kernels must ignore both)."""
    nodes = TREE.parent.size
    v0 = np.full((n, nodes), -65.0)
    v0[:, 0] = [-65.0, -60.0, -55.0][:n]
    S0 = cs.steady_states(v0.reshape(-1)).reshape(-1, n, nodes)
    S0[:, :, JUNCTION] = 0.3
    P = cs.default_params(n * nodes).reshape(-1, n, nodes)
    P[0][:, JUNCTION] = 0.0
    current = np.zeros((n, nodes))
    current[:, 0] = [10.0, 20.0, 30.0][:n]
    coupling = np.broadcast_to(TREE.coupling[:, None], (2, n, nodes)).copy()
    return tuple(a.astype(dtype) for a in (v0, S0, P, current, coupling))


def zero_conductances(cs, P):
    """P with every parameter the channels' conductances read set to 0 at the junctions."""
    from fusekit.ops.ion_channel import _arg_names

    P = P.copy()
    for ch in cs.channels:
        for name in _arg_names(ch.conductance_fn):
            if name in cs.param_names:
                P[cs.param_names.index(name)][:, JUNCTION] = 0.0
    return P


KW = {"dt": DT, "n_steps": 400, "record_every": 10, "max_spikes": 4}


@pytest.mark.parametrize("cs", [HH, HH_BRANCHY], ids=["traced", "untraced"])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_junctions_hold_their_states_and_carry_no_channel_current(cs, backend):
    v0, S0, P, current, coupling = cells(cs)
    out = fusekit.ops.cable_simulate(v0, S0, P, current, TREE.parent, coupling, channels=cs,
                                     **KW, backend=backend)
    assert out.spike_count.sum() > 0
    np.testing.assert_array_equal(out.states[:, :, JUNCTION], S0[:, :, JUNCTION])
    same = fusekit.ops.cable_simulate(v0, S0, zero_conductances(cs, P), current, TREE.parent,
                                      coupling, channels=cs, **KW, backend=backend)
    np.testing.assert_array_equal(out.v_record, same.v_record)
    if backend == "cpu":
        want = fusekit.ops.cable_simulate(v0, S0, P, current, TREE.parent, coupling,
                                          channels=cs, **KW, backend="reference")
        np.testing.assert_allclose(out.v_record, want.v_record, rtol=0, atol=1e-9)
        np.testing.assert_allclose(out.states, want.states, rtol=0, atol=1e-11)


def test_float32_kernel_holds_junction_states():
    v0, S0, P, current, coupling = cells(dtype=np.float32)
    out = fusekit.ops.cable_simulate(v0, S0, P, current, TREE.parent, coupling, channels=HH,
                                     **KW, backend="cpu")
    np.testing.assert_array_equal(out.states[:, :, JUNCTION], S0[:, :, JUNCTION])
    want = fusekit.ops.cable_simulate(*(a.astype(np.float64) for a in (v0, S0, P, current)),
                                      TREE.parent, coupling.astype(np.float64), channels=HH,
                                      **KW, backend="reference")
    np.testing.assert_array_equal(out.spike_count, want.spike_count)
    np.testing.assert_allclose(out.spike_times, want.spike_times, atol=2e-3)  # ms


@pytest.mark.parametrize(("cs", "backend"), [(HH, "reference"), (HH, "cpu"),
                                             (HH_BRANCHY, "cpu")])
def test_network_of_cells_with_junctions(cs, backend):
    v0, S0, P, current, coupling = cells(cs)
    n, nodes = v0.shape
    # every cell excites the next one's second dendrite (node 4) and, wrongly but allowed,
    # the first junction: a synapse onto a junction still adds its conductance to the row
    indptr = np.array([0, 2, 4, 6])
    indices = np.array([1, 1, 2, 2, 0, 0])
    weights = np.full(6, 0.05)
    compartment = np.array([4, JUNCTION[0]] * 3)
    args = (v0, S0, P, current, TREE.parent, coupling, np.zeros((1, n, nodes)), indptr,
            indices, weights, np.zeros((8, 1, n, nodes)), np.zeros(0, np.int64), compartment)
    kw = {"channels": cs, "dt": DT, "n_steps": 300, "delay_steps": 8, "tau_syn": (5.0,),
          "e_syn": (0.0,), "record_every": 10, "max_spikes": 4, "backend": backend}
    out = fusekit.ops.cable_network_simulate(*args[:10], **kw, arrivals0=args[10],
                                             synapse_compartment=compartment)
    assert out.spike_count.sum() > 0
    np.testing.assert_array_equal(out.states[:, :, JUNCTION], S0[:, :, JUNCTION])
    if cs is HH:  # cable_network_run's kernels are generated from the traced step
        run_kw = {k: x for k, x in kw.items() if k != "backend"}
        run = cable_network_run_op.run(args, {**run_kw, "segment": 64}, backend)
        np.testing.assert_array_equal(run[1][:, :, JUNCTION], S0[:, :, JUNCTION])
        np.testing.assert_allclose(run[0], out.v, rtol=0, atol=1e-9)
    if backend == "cpu":
        want = fusekit.ops.cable_network_simulate(*args[:10], **{**kw, "backend": "reference"},
                                                  arrivals0=args[10],
                                                  synapse_compartment=compartment)
        np.testing.assert_allclose(out.v_record, want.v_record, rtol=0, atol=1e-9)


def _torch_loss(cs, v0, S0, P, current, coupling, n_steps):
    """Autograd through every step of the torch scheme (cable_torch_step): the oracle."""
    parent = torch.as_tensor(TREE.parent)
    v, S, total = v0, S0, 0.0
    for step in range(n_steps):
        v, S = cable_torch_step(cs, parent, v, S, P, current, coupling, DT)
        if (step + 1) % 10 == 0:
            total = total + v[:, [0, 3]].sum()
    return total + S.sum()


@pytest.mark.parametrize(("cs", "backend"), [(HH, "reference"), (HH, "cpu"),
                                             (HH_BRANCHY, "cpu")])
def test_gradients_at_junctions_only_through_c_m_row(cs, backend):
    """The compiled adjoint (for untraceable channels: the torch re-run of each segment)
    against autograd through every torch step: conductances and states at junctions get
    nothing, c_m its row's derivative."""
    v0, S0, P, current, coupling = (torch.as_tensor(a) for a in cells(cs))
    n_steps = 200

    def leaves():
        return [a.clone().requires_grad_() for a in (S0, P, current, coupling)]

    s, p, i, c = leaves()
    want = torch.autograd.grad(_torch_loss(cs, v0, s, p, i, c, n_steps), (s, p, i, c))
    s, p, i, c = leaves()
    out = fusekit.ops.cable_simulate(v0, s, p, i, TREE.parent, c, channels=cs, dt=DT,
                                     n_steps=n_steps, record_every=10, record_at=[0, 3],
                                     checkpoint_every=30, backend=backend)
    got = torch.autograd.grad(out.v_record.sum() + out.states.sum(), (s, p, i, c))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-10)
    g_p = got[1][:, :, JUNCTION]
    assert torch.all(g_p[1:] == 0) and torch.all(g_p[0] != 0)
    torch.testing.assert_close(got[0][:, :, JUNCTION], torch.ones_like(S0[:, :, JUNCTION]))


def test_network_run_gradient_at_junctions():
    """cable_network_simulate_torch's kernel engine (the compiled loops) against its torch
    engine, on cells with junctions."""
    from fusekit.neuro import cable_network_simulate_torch

    v0, S0, P, current, coupling = (torch.as_tensor(a) for a in cells())
    n, nodes = v0.shape
    indptr = torch.tensor([0, 1, 2, 3])
    indices = torch.tensor([1, 2, 0])
    compartment = torch.tensor([4, 2, 4])
    out = {}
    for engine in ("kernel", "torch"):
        p = P.clone().requires_grad_()
        w = torch.full((3,), 0.05, dtype=F64, requires_grad=True)
        res = cable_network_simulate_torch(
            HH, v0, S0, p, current, TREE.parent, coupling, torch.zeros(n, nodes, dtype=F64),
            indptr, indices, w, dt=DT, n_steps=200, delay_steps=8, tau_syn=5.0, e_syn=0.0,
            record_every=10, synapse_compartment=compartment, engine=engine)
        loss = res.v_record[..., 0].sum() + res.states.sum()
        out[engine] = (res.states.detach(), *torch.autograd.grad(loss, (p, w)))
    for a, b in zip(out["kernel"], out["torch"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10)
    np.testing.assert_array_equal(out["kernel"][0][:, :, JUNCTION], S0[:, :, JUNCTION])
    assert torch.all(out["kernel"][1][1:, :, JUNCTION] == 0)


def test_c_m_zero_in_some_cells_of_a_column_is_refused():
    v0, S0, P, current, coupling = cells()
    P[0, 1, JUNCTION[0]] = 1.0
    with pytest.raises(InputError, match=r"0 in some cells but not in others at compartment"):
        fusekit.ops.cable_simulate(v0, S0, P, current, TREE.parent, coupling, channels=HH,
                                   dt=DT, n_steps=10)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=9), st.integers(0, 2**31))
def test_random_trees_cpu_equals_reference_and_junctions_hold(picks, seed):
    """Random morphologies through cable_tree (any number of junctions, anywhere in the
    compartment order): the CPU kernel's block skips match the reference's per-node rule."""
    parent = np.array([-1] + [p % (i + 1) for i, p in enumerate(picks)])  # Hines order
    rng = np.random.default_rng(seed)
    tree = cable_tree(parent, rng.uniform(10, 200, parent.size), rng.uniform(0.5, 5, parent.size))
    n, nodes = 2, tree.parent.size
    hollow = np.flatnonzero(tree.junction)
    v0 = rng.uniform(-70.0, -55.0, (n, nodes))
    S0 = rng.uniform(0.05, 0.95, (3, n, nodes))
    P = HH.default_params(n * nodes).reshape(-1, n, nodes)
    P[0][:, hollow] = 0.0
    current = np.zeros((n, nodes))
    current[:, 0] = [8.0, 25.0]
    coupling = np.broadcast_to(tree.coupling[:, None], (2, n, nodes)).copy()
    kw = {"channels": HH, "dt": DT, "n_steps": 120, "record_every": 20, "max_spikes": 2}
    got = fusekit.ops.cable_simulate(v0, S0, P, current, tree.parent, coupling, **kw,
                                     backend="cpu")
    want = fusekit.ops.cable_simulate(v0, S0, P, current, tree.parent, coupling, **kw,
                                      backend="reference")
    np.testing.assert_array_equal(got.states[:, :, hollow], S0[:, :, hollow])
    np.testing.assert_allclose(got.v_record, want.v_record, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.states, want.states, rtol=0, atol=1e-11)
