"""Gradients of multi-compartment cells: hines_solve's backward and cable_simulate's.

``cable_simulate`` on torch tensors keeps checkpoints; its backward is the compiled
``cable_adjoint`` (reference and cpu kernels), or, for channels that cannot be traced, a
torch re-run of each segment (``cable_torch_step``, with ``hines_solve`` differentiated by
its own backward). Checked against finite differences (``gradcheck``) and against autograd
through every step of the same torch scheme (the full-history oracle).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fusekit  # noqa: E402
from fusekit import InputError  # noqa: E402
from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_coupling  # noqa: E402
from fusekit.ops.ion import cable_torch_step  # noqa: E402

HH = ChannelSet(HH_CHANNELS)
DT = 0.025
# A soma, a dendrite that branches in two, and an axon stub: a branch point and two leaves.
PARENT = np.array([-1, 0, 1, 1, 0])
LENGTH = np.array([20.0, 50.0, 40.0, 40.0, 60.0])
DIAM = np.array([20.0, 2.0, 1.5, 1.5, 1.0])
F64 = torch.float64


def cell(n_cells=2, soma_current=(15.0, 25.0), dtype=F64):
    n_comp = PARENT.shape[0]
    v0 = torch.full((n_cells, n_comp), -65.0, dtype=dtype)
    S0 = torch.as_tensor(HH.steady_states(v0.double().numpy().reshape(-1))
                         .reshape(-1, n_cells, n_comp), dtype=dtype)
    P = torch.as_tensor(HH.default_params(n_cells * n_comp).reshape(-1, n_cells, n_comp),
                        dtype=dtype)
    current = torch.zeros(n_cells, n_comp, dtype=dtype)
    current[:, 0] = torch.tensor(soma_current[:n_cells], dtype=dtype)
    coupling = torch.as_tensor(np.broadcast_to(cable_coupling(PARENT, LENGTH, DIAM)[:, None],
                                               (2, n_cells, n_comp)).copy(), dtype=dtype)
    return v0, S0, P, current, coupling


def full_history(v0, S0, P, current, coupling, n_steps, record_every, threshold=0.0):
    """Autograd through every step of the torch scheme: v, states, recording, spike times."""
    parent = torch.as_tensor(PARENT)
    v, S = v0, S0
    rows, first = [], {}
    for step in range(n_steps):
        i_inj = current if current.ndim == 2 else current[step]
        v_new, S = cable_torch_step(HH, parent, v, S, P, i_inj, coupling, DT)
        if record_every and (step + 1) % record_every == 0:
            rows.append(v_new)
        crossed = (v[:, 0] < threshold) & (v_new[:, 0] >= threshold)
        for c in torch.nonzero(crossed)[:, 0].tolist():
            if c not in first:
                first[c] = (step + (threshold - v[c, 0]) / (v_new[c, 0] - v[c, 0])) * DT
        v = v_new
    return v, S, torch.stack(rows), first


# ---------------------------------------------------------------------------- hines_solve


def random_tree_system(batch, n_nodes, seed):
    rng = np.random.default_rng(seed)
    parent = np.array([-1] + [int(rng.integers(0, i)) for i in range(1, n_nodes)])
    shape = (batch, n_nodes) if batch else (n_nodes,)
    diag = torch.tensor(rng.uniform(3.0, 5.0, shape), dtype=F64, requires_grad=True)
    upper, lower = (torch.tensor(-rng.uniform(0.1, 1.0, shape), dtype=F64, requires_grad=True)
                    for _ in range(2))
    rhs = torch.tensor(rng.normal(size=shape), dtype=F64, requires_grad=True)
    return parent, diag, upper, lower, rhs


@pytest.mark.parametrize("batch", [0, 3])
def test_hines_solve_gradcheck(batch):
    parent, *args = random_tree_system(batch, 7, seed=batch)
    assert torch.autograd.gradcheck(
        lambda d, u, low, b: fusekit.ops.hines_solve(parent, d, u, low, b), tuple(args))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_hines_solve_gradient_against_dense_solve(backend):
    parent, diag, upper, lower, rhs = random_tree_system(2, 9, seed=5)
    weights = torch.randn(2, 9, dtype=F64)
    x = fusekit.ops.hines_solve(parent, diag, upper, lower, rhs, backend=backend)
    got = torch.autograd.grad((weights * x).sum(), (diag, upper, lower, rhs))
    cells, idx, par = torch.arange(2)[:, None], torch.arange(1, 9), torch.as_tensor(parent)[1:]
    A = torch.diag_embed(diag).index_put((cells, idx, par), lower[:, 1:])
    A = A.index_put((cells, par, idx), upper[:, 1:])
    dense = torch.linalg.solve(A, rhs[..., None])[..., 0]
    want = torch.autograd.grad((weights * dense).sum(), (diag, upper, lower, rhs))
    torch.testing.assert_close(x, dense, rtol=1e-12, atol=1e-12)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_hines_solve_tensor_parent_and_no_grad():
    parent, diag, upper, lower, rhs = random_tree_system(0, 4, seed=1)
    with torch.no_grad():
        a = fusekit.ops.hines_solve(torch.as_tensor(parent), diag, upper, lower, rhs)
    b = fusekit.ops.hines_solve(parent, diag.detach().numpy(), upper.detach().numpy(),
                                lower.detach().numpy(), rhs.detach().numpy())
    np.testing.assert_allclose(a.numpy(), b, rtol=1e-14)


# ------------------------------------------------------------------------- cable_simulate


@pytest.mark.parametrize(("backend", "checkpoint_every"), [("cpu", 37), ("cpu", 0),
                                                           ("reference", 100)])
def test_cable_gradient_equals_full_history(backend, checkpoint_every):
    v0, S0, P, current, coupling = cell()
    n_steps, record_every = 400, 10
    for x in (v0, S0, P, current, coupling):
        x.requires_grad_()
    out = fusekit.ops.cable_simulate(v0, S0, P, current, PARENT, coupling, channels=HH, dt=DT,
                                     n_steps=n_steps, record_every=record_every, max_spikes=3,
                                     checkpoint_every=checkpoint_every, backend=backend)
    assert out.spike_count.tolist() == [1, 1]  # both somas fire once: spike times in the loss
    weights = torch.linspace(0.5, 1.5, out.v_record.numel(), dtype=F64).reshape(
        out.v_record.shape)
    loss = ((weights * out.v_record).sum() + out.spike_times[0].sum() + out.states.sum()
            + out.v.pow(2).sum())
    inputs = (v0, S0, P, current, coupling)
    got = torch.autograd.grad(loss, inputs)
    v, S, rec, first = full_history(*inputs, n_steps, record_every)
    assert sorted(first) == [0, 1]
    torch.testing.assert_close(rec.detach(), out.v_record.detach(), rtol=0, atol=1e-9)
    oracle = (weights * rec).sum() + sum(first.values()) + S.sum() + v.pow(2).sum()
    want = torch.autograd.grad(oracle, inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9 * float(w.abs().max()))
    assert float(got[4].abs().max()) > 0  # the coupling matters


def test_cable_gradcheck_subthreshold():
    """Finite differences of a sub-threshold run with a per-step current."""
    v0, S0, P, _, coupling = cell(n_cells=1)
    n_steps = 24
    current = torch.zeros(n_steps, 1, PARENT.shape[0], dtype=F64)
    current[:, 0, 0] = torch.linspace(0.0, 3.0, n_steps, dtype=F64)
    g_rows = P[1:3].clone()  # g_na, g_k of every compartment
    coupling[:, :, 0] = 1.0  # unused (the root has no parent); positive under perturbation

    def run(g, cur, cpl):
        params = torch.cat([P[:1], g, P[3:]])
        out = fusekit.ops.cable_simulate(v0, S0, params, cur, PARENT, cpl, channels=HH, dt=DT,
                                         n_steps=n_steps, record_every=4, checkpoint_every=7)
        return out.v_record, out.states

    args = (g_rows.requires_grad_(), current.requires_grad_(), coupling.requires_grad_())
    assert torch.autograd.gradcheck(run, args, atol=1e-7)


def test_cable_gradient_through_diameters():
    """Diameters -> torch cable_coupling -> cable_simulate: gradient = finite difference."""
    v0, S0, P, current, _ = cell(n_cells=1)

    def mean_soma_v(diam):
        cpl = cable_coupling(PARENT, torch.as_tensor(LENGTH), diam)[:, None]
        out = fusekit.ops.cable_simulate(v0, S0, P, current, PARENT, cpl, channels=HH, dt=DT,
                                         n_steps=120, record_every=4)
        return out.v_record[:, 0, 0].mean()

    diam = torch.tensor(DIAM, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(mean_soma_v(diam), diam)
    h = 1e-6
    for k in (0, 1, 4):
        up, down = DIAM.copy(), DIAM.copy()
        up[k] += h
        down[k] -= h
        with torch.no_grad():
            fd = (mean_soma_v(torch.tensor(up)) - mean_soma_v(torch.tensor(down))) / (2 * h)
        assert float(grad[k]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)


def test_cable_coupling_torch_equals_numpy():
    a = cable_coupling(PARENT, LENGTH, DIAM, 150.0)
    t = cable_coupling(PARENT, torch.tensor(LENGTH), torch.tensor(DIAM), torch.tensor(150.0))
    assert isinstance(t, torch.Tensor) and t.dtype == F64
    np.testing.assert_allclose(t.numpy(), a, rtol=1e-14)


def test_cable_float32_gradient_runs_and_is_close_to_float64():
    v0, S0, P, current, coupling = cell(dtype=torch.float32)
    P.requires_grad_()
    out = fusekit.ops.cable_simulate(v0, S0, P, current, PARENT, coupling, channels=HH, dt=DT,
                                     n_steps=120, record_every=4)
    (g32,) = torch.autograd.grad(out.v_record.mean(), P)
    v0, S0, P64, current, coupling = cell()
    P64.requires_grad_()
    out = fusekit.ops.cable_simulate(v0, S0, P64, current, PARENT, coupling, channels=HH,
                                     dt=DT, n_steps=120, record_every=4)
    (g64,) = torch.autograd.grad(out.v_record.mean(), P64)
    assert g32.dtype == torch.float32
    torch.testing.assert_close(g32.double(), g64, rtol=2e-3, atol=2e-3 * float(g64.abs().max()))


def test_cable_gradient_bad_input():
    v0, S0, P, current, coupling = cell()
    P.requires_grad_()
    kw = {"channels": HH, "dt": DT, "n_steps": 10}
    with pytest.raises(InputError, match="checkpoint_every"):
        fusekit.ops.cable_simulate(v0, S0, P, current, PARENT, coupling, checkpoint_every=-1,
                                   **kw)
    with pytest.raises(InputError, match="parent must have shape"):
        fusekit.ops.cable_simulate(v0, S0, P, current, PARENT[:3], coupling, **kw)
    with pytest.raises(InputError, match="coupling must have shape"):
        fusekit.ops.cable_simulate(v0, S0, P, current, PARENT, coupling[:, :1], **kw)
    with pytest.raises(InputError, match="diam must have parent's shape"):
        cable_coupling(PARENT, LENGTH, DIAM[:3])
    with pytest.raises(InputError, match="must be positive"):
        cable_coupling(PARENT, LENGTH, torch.tensor(-DIAM))


def test_opcheck_hines_solve():
    import fusekit.torch  # noqa: F401  (registers torch.ops.fusekit)

    parent, *args = random_tree_system(2, 6, seed=3)
    torch.library.opcheck(torch.ops.fusekit.hines_solve.default,
                          (torch.as_tensor(parent), *args))


def test_opcheck_cable_simulate():
    import fusekit.torch  # noqa: F401  (registers torch.ops.fusekit)

    v0, S0, P, current, coupling = cell()
    P.requires_grad_()
    args = (v0, S0, P, current, torch.as_tensor(PARENT), coupling, HH.key, DT, 400, 10, 0.0,
            1, [0, 3], 100, "cpu")
    # Both cells spike once: no NaN spike times (opcheck compares without equal_nan).
    assert not torch.isnan(torch.ops.fusekit.cable_simulate.default(*args)[4]).any()
    torch.library.opcheck(torch.ops.fusekit.cable_simulate.default, args,
                          test_utils=("test_schema", "test_autograd_registration",
                                      "test_faketensor"))


def test_cable_gradient_torch_recompute(monkeypatch):
    """The backward without a compiled adjoint (CUDA tensors, tracing): torch re-runs."""
    import fusekit.ops.ion as ion_ops

    monkeypatch.setattr(ion_ops, "adjoint_backward", lambda *args, **kwargs: None)
    v0, S0, P, current, coupling = cell()
    for x in (v0, P, current, coupling):
        x.requires_grad_()
    out = fusekit.ops.cable_simulate(v0, S0, P, current, PARENT, coupling, channels=HH, dt=DT,
                                     n_steps=300, record_every=10, max_spikes=2,
                                     checkpoint_every=40)
    loss = out.v_record.mean() + out.spike_times[0].sum() + out.v.sum()
    inputs = (v0, P, current, coupling)
    got = torch.autograd.grad(loss, inputs)
    v, S, rec, first = full_history(v0, S0, P, current, coupling, 300, 10)
    want = torch.autograd.grad(rec.mean() + sum(first.values()) + v.sum(), inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9 * float(w.abs().max()))


def adjoint_inputs(dtype=F64, per_step=False, n_steps=300, segment=50, max_spikes=2):
    """Checkpoints of a spiking run (the torch form of the op) and random incoming grads."""
    import fusekit.torch  # noqa: F401  (registers torch.ops.fusekit)

    v0, S0, P, current, coupling = cell(dtype=dtype)
    if per_step:
        ramp = torch.linspace(0.5, 1.5, n_steps, dtype=dtype)
        current = current[None] * ramp[:, None, None]
    out = torch.ops.fusekit.cable_simulate.default(
        v0, S0, P, current, torch.as_tensor(PARENT), coupling, HH.key, DT, n_steps, 10, 0.0,
        max_spikes, None, segment, "cpu")
    assert int(out[3].sum()) >= 2  # spikes: their times carry gradients
    rng = np.random.default_rng(7)

    def noise(like):
        return torch.as_tensor(rng.normal(size=tuple(like.shape)), dtype=dtype)

    g_times = torch.where(torch.isnan(out[4]), 0.0, noise(out[4]))
    return ((out[5], out[6], P, current, torch.as_tensor(PARENT), coupling, noise(out[0]),
             noise(out[1]), noise(out[2]), g_times),
            {"channels": HH, "dt": DT, "n_steps": n_steps, "segment": segment,
             "record_every": 10, "max_spikes": max_spikes})


@pytest.mark.parametrize("per_step", [False, True])
def test_cable_adjoint_cpu_equals_reference(per_step):
    args, kw = adjoint_inputs(per_step=per_step)
    got = fusekit.ops.cable_adjoint(*args, **kw, backend="cpu")
    want = fusekit.ops.cable_adjoint(*args, **kw, backend="reference")
    assert len(got) == 5
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9 * float(w.abs().max()))


def test_cable_adjoint_float32_close_to_float64():
    args, kw = adjoint_inputs(dtype=torch.float32, n_steps=120, segment=40, max_spikes=0)
    got = fusekit.ops.cable_adjoint(*args, **kw, backend="cpu")
    args64 = [a.double() if a.is_floating_point() else a for a in args]
    want = fusekit.ops.cable_adjoint(*args64, **kw, backend="reference")
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), w, rtol=1e-3, atol=1e-3 * float(w.abs().max()))


def test_cable_adjoint_bad_input():
    args, kw = adjoint_inputs(n_steps=100, segment=50, max_spikes=1)
    bad = list(args)
    bad[0] = args[0][:1]
    with pytest.raises(InputError, match="checkpoints must have shape"):
        fusekit.ops.cable_adjoint(*bad, **kw)
    bad = list(args)
    bad[1] = args[1].to(torch.int32)
    with pytest.raises(InputError, match="counts_at must be int64"):
        fusekit.ops.cable_adjoint(*bad, **kw)
    bad = list(args)
    bad[6] = torch.full_like(args[6], float("nan"))
    with pytest.raises(InputError, match="g_v"):
        fusekit.ops.cable_adjoint(*bad, **kw)
    with pytest.raises(InputError, match="segment"):
        fusekit.ops.cable_adjoint(*args, **{**kw, "segment": 15})


def test_one_compartment_cable_gradient_equals_ion_simulate_gradient():
    n = 3
    v0 = torch.full((n, 1), -65.0, dtype=F64)
    S0 = torch.as_tensor(HH.steady_states(np.full(n, -65.0)).reshape(-1, n, 1))
    P = torch.as_tensor(HH.default_params(n).reshape(-1, n, 1)).clone().requires_grad_()
    current = torch.tensor([[5.0], [10.0], [20.0]], dtype=F64, requires_grad=True)
    coupling = torch.zeros(2, n, 1, dtype=F64)
    out = fusekit.ops.cable_simulate(v0, S0, P, current, np.array([-1]), coupling, channels=HH,
                                     dt=DT, n_steps=400, max_spikes=1)
    got = torch.autograd.grad(out.v.sum() + out.states.sum() + out.spike_times.nansum(),
                              (P, current))
    P1 = P.detach()[:, :, 0].clone().requires_grad_()
    current1 = current.detach()[:, 0].clone().requires_grad_()
    one = fusekit.ops.ion_simulate(v0[:, 0].contiguous(), S0[:, :, 0].contiguous(), P1,
                                   current1, channels=HH, dt=DT, n_steps=400, max_spikes=1)
    want = torch.autograd.grad(one.v.sum() + one.states.sum() + one.spike_times.nansum(),
                               (P1, current1))
    assert int(one.spike_count.sum()) >= 2
    torch.testing.assert_close(got[0][:, :, 0], want[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got[1][:, 0], want[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_record_at_records_those_compartments_and_differentiates_them(backend):
    v0, S0, P, current, coupling = cell()
    kw = {"channels": HH, "dt": DT, "n_steps": 200, "record_every": 5, "max_spikes": 1,
          "backend": backend}
    full = fusekit.ops.cable_simulate(*(a.numpy() for a in (v0, S0, P, current)), PARENT,
                                      coupling.numpy(), **kw)
    some = fusekit.ops.cable_simulate(*(a.numpy() for a in (v0, S0, P, current)), PARENT,
                                      coupling.numpy(), **kw, record_at=[4, 0, 4])
    np.testing.assert_array_equal(some.v_record, full.v_record[:, :, [4, 0, 4]])
    np.testing.assert_array_equal(some.v, full.v)
    weights = torch.linspace(0.5, 1.5, 40 * 2 * 3, dtype=F64).reshape(40, 2, 3)
    grads = []
    for record_at in ([4, 0, 4], None):
        params, cpl = P.clone().requires_grad_(), coupling.clone().requires_grad_()
        out = fusekit.ops.cable_simulate(v0, S0, params, current, PARENT, cpl, **kw,
                                         record_at=record_at, checkpoint_every=50)
        rec = out.v_record if record_at is not None else out.v_record[:, :, [4, 0, 4]]
        grads.append(torch.autograd.grad((weights * rec).sum(), (params, cpl)))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_record_at_through_the_torch_recompute(monkeypatch):
    import fusekit.ops.ion as ion_ops

    v0, S0, P, current, coupling = cell()
    P.requires_grad_()
    out = fusekit.ops.cable_simulate(v0, S0, P, current, PARENT, coupling, channels=HH, dt=DT,
                                     n_steps=100, record_every=5, record_at=[2],
                                     checkpoint_every=25)
    want = torch.autograd.grad(out.v_record.sum(), P)[0]
    monkeypatch.setattr(ion_ops, "adjoint_backward", lambda *args, **kwargs: None)
    out = fusekit.ops.cable_simulate(v0, S0, P, current, PARENT, coupling, channels=HH, dt=DT,
                                     n_steps=100, record_every=5, record_at=[2],
                                     checkpoint_every=25)
    got = torch.autograd.grad(out.v_record.sum(), P)[0]
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("record_at", [[], [5], [-1], [0.5], [[0]]])
def test_record_at_bad_input(record_at):
    v0, S0, P, current, coupling = cell()
    with pytest.raises(InputError, match="record_at"):
        fusekit.ops.cable_simulate(v0.numpy(), S0.numpy(), P.numpy(), current.numpy(), PARENT,
                                   coupling.numpy(), channels=HH, dt=DT, n_steps=10,
                                   record_every=5, record_at=record_at)


def test_cable_gradient_through_junction_nodes_matches_finite_differences():
    """Cells with branch points joined at zero-area nodes (cable_tree: c_m = 0 there): the
    compiled adjoint's gradients w.r.t. parameters and coupling, against central differences."""
    from fusekit.neuro import cable_tree

    tree = cable_tree(np.array([-1, 0, 0, 1, 1]), [20.0, 100.0, 80.0, 60.0, 50.0],
                      [20.0, 2.0, 1.5, 1.0, 1.0])
    n, nodes = 3, tree.parent.size
    v0 = torch.full((n, nodes), -65.0, dtype=F64)
    S0 = torch.as_tensor(HH.steady_states(np.full(n * nodes, -65.0)).reshape(3, n, nodes))
    P = HH.default_params(n * nodes).reshape(-1, n, nodes)
    for name in ("c_m", "g_na", "g_k", "g_leak"):
        P[HH.param_names.index(name)][:, tree.junction] = 0.0
    P = torch.as_tensor(P)
    current = torch.zeros(n, nodes, dtype=F64)
    current[:, 0] = torch.tensor([5.0, 15.0, 30.0], dtype=F64)
    coupling = torch.as_tensor(np.broadcast_to(tree.coupling[:, None], (2, n, nodes)).copy())

    def loss(p, c):
        return fusekit.ops.cable_simulate(v0, S0, p, current, tree.parent, c, channels=HH,
                                          dt=DT, n_steps=200, record_every=5, record_at=[0, 3],
                                          backend="cpu").v_record.mean()

    p, c = P.clone().requires_grad_(), coupling.clone().requires_grad_()
    g_p, g_c = torch.autograd.grad(loss(p, c), (p, c))
    junction = int(np.flatnonzero(tree.junction)[1])
    for grad, base, idx in ((g_p, P, (1, 2, int(tree.node[3]))), (g_c, coupling, (0, 2, junction)),
                            (g_c, coupling, (1, 1, int(tree.node[4])))):
        eps = 1e-6
        up, down = base.clone(), base.clone()
        up[idx] += eps
        down[idx] -= eps
        if base is P:
            fd = (loss(up, coupling) - loss(down, coupling)) / (2 * eps)
        else:
            fd = (loss(P, up) - loss(P, down)) / (2 * eps)
        assert abs(float(grad[idx]) - float(fd)) < 1e-4 * abs(float(fd)) + 1e-9


def test_parent_and_record_at_may_be_tensors():
    # On a GPU they arrive as CUDA tensors, which NumPy cannot read in place (seen on an
    # H200); the checks copy them to the host.
    v0, S0, P, current, coupling = cell()
    kw = {"channels": HH, "dt": DT, "n_steps": 120, "record_every": 4, "max_spikes": 1}
    want = fusekit.ops.cable_simulate(v0, S0, P, current, PARENT, coupling, **kw,
                                      record_at=[4, 0])
    params = P.clone().requires_grad_()
    got = fusekit.ops.cable_simulate(v0, S0, params, current, torch.as_tensor(PARENT),
                                     coupling, **kw, record_at=torch.tensor([4, 0]))
    torch.testing.assert_close(got.v_record, want.v_record, rtol=0, atol=0)
    torch.testing.assert_close(got.v, want.v, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(got.v_record.sum(), params)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
