"""membrane_step and membrane_step_vjp: one network step as an op, and its backward."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit
from fusekit import InputError
from fusekit.neuro import HH_CHANNELS, POSPISCHIL_RS_CHANNELS, ChannelSet, random_connectivity
from fusekit.ops import membrane_step, membrane_step_vjp

torch = pytest.importorskip("torch")

HH = ChannelSet(HH_CHANNELS)
CORTICAL = ChannelSet(POSPISCHIL_RS_CHANNELS)
CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]


def inputs(cs, n, seed=0, dtype=np.float64):
    """Potentials across the whole range (through the rate functions' 0/0 points too),
    gates off their steady state, parameters off their defaults, synaptic input."""
    rng = np.random.default_rng(seed)
    v = rng.uniform(-90.0, 40.0, n)
    v[:3] = [-40.0, -55.0, -35.0]  # HH's removable singularities
    S = np.clip(cs.steady_states(v) + rng.uniform(-0.2, 0.2, (len(cs.state_names), n)), 0, 1)
    P = cs.default_params(n) * rng.uniform(0.7, 1.3, (len(cs.param_names), n))
    g = rng.uniform(0.0, 0.5, n)
    arrays = (v, S, P, rng.uniform(-5.0, 20.0, n), g, g * rng.uniform(-80.0, 0.0, n))
    return tuple(a.astype(dtype) for a in arrays)


def torch_step(cs, dt, v, S, P, i_inj, g, ge):
    """The same step in torch tensor operations (network_simulate_torch's engine='torch')."""
    from fusekit.neuro._autograd import _membrane_step

    return _membrane_step(cs, dt, v, S, P, g, ge, i_inj)


@pytest.mark.parametrize("cs", [HH, CORTICAL], ids=["hh", "pospischil"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpu_step_matches_the_reference(cs, dtype):
    args = inputs(cs, 300, dtype=dtype)
    got = membrane_step(*args, channels=cs, dt=0.025, backend="cpu")
    ref = membrane_step(*args, channels=cs, dt=0.025, backend="reference")
    tol = 1e-11 if dtype == np.float64 else 2e-5
    for a, b in zip(got, ref, strict=True):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * 100)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("cs", [HH, CORTICAL], ids=["hh", "pospischil"])
def test_vjp_matches_torch_autograd_of_the_step(backend, cs):
    n, dt = 200, 0.025
    args = inputs(cs, n, seed=1)
    rng = np.random.default_rng(2)
    a_v, a_S = rng.normal(size=n), rng.normal(size=args[1].shape)
    t = [torch.tensor(a, requires_grad=True) for a in args]
    v_new, S_new = torch_step(cs, dt, *t)
    ((v_new * torch.tensor(a_v)).sum() + (S_new * torch.tensor(a_S)).sum()).backward()
    got = membrane_step_vjp(*args, a_v, a_S, channels=cs, dt=dt, backend=backend)
    for name, mine, theirs in zip(("v", "states", "params", "i_inj", "g_syn", "ge_syn"), got,
                                  (x.grad.numpy() for x in t), strict=True):
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-11 * scale, err_msg=name)


def test_the_torch_op_passes_gradcheck():
    args = [torch.tensor(a, requires_grad=True) for a in inputs(HH, 6, seed=3)]
    assert torch.autograd.gradcheck(
        lambda *a: membrane_step(*a, channels=HH, dt=0.025), args)


def test_the_torch_op_passes_opcheck():
    import fusekit.torch  # noqa: F401  (registers torch.ops.fusekit)

    args = [torch.tensor(a, requires_grad=True) for a in inputs(HH, 8, seed=4)]
    torch.library.opcheck(torch.ops.fusekit.membrane_step.default, (*args, HH.key, 0.025))


@settings(max_examples=25, deadline=None)
@given(v=st.floats(-100.0, 60.0), i_inj=st.floats(-50.0, 100.0))
def test_without_synapses_one_step_is_one_step_of_ion_simulate(v, i_inj):
    v0 = np.array([v])
    S, P = HH.steady_states(v0), HH.default_params(1)
    zero = np.zeros(1)
    v1, S1 = membrane_step(v0, S, P, np.array([i_inj]), zero, zero, channels=HH, dt=0.025,
                           backend="cpu")
    sim = fusekit.ops.ion_simulate(v0, S, P, np.array([i_inj]), channels=HH, dt=0.025,
                                   n_steps=1, backend="cpu")
    np.testing.assert_allclose(v1, sim.v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(S1, sim.states, rtol=1e-12, atol=1e-14)


def test_bad_input_gets_clear_errors():
    v, S, P, i_inj, g, ge = inputs(HH, 5)
    kw = dict(channels=HH, dt=0.025)
    with pytest.raises(InputError, match="membrane_step: states must have shape"):
        membrane_step(v, S[:2], P, i_inj, g, ge, **kw)
    with pytest.raises(InputError, match="share v's dtype float64, but g_syn is float32"):
        membrane_step(v, S, P, i_inj, g.astype(np.float32), ge, **kw)
    with pytest.raises(InputError, match="i_inj contains NaN or infinity"):
        membrane_step(v, S, P, np.where(np.arange(5) == 2, np.nan, i_inj), g, ge, **kw)
    with pytest.raises(InputError, match="c_m, membrane capacitance"):
        membrane_step(v, S, np.where(np.arange(5) == 1, -1.0, P), i_inj, g, ge, **kw)
    with pytest.raises(InputError, match="dt must be a positive"):
        membrane_step(v, S, P, i_inj, g, ge, channels=HH, dt=0.0)
    with pytest.raises(InputError, match="membrane_step_vjp: a_states must have shape"):
        membrane_step_vjp(v, S, P, i_inj, g, ge, v, S[:, :4], **kw)
    with pytest.raises(InputError, match="float32 or float64"):
        membrane_step(*(a.astype(np.int64) for a in (v, S, P, i_inj, g, ge)), **kw)


def test_channels_that_branch_are_refused_by_the_cpu_kernel_with_the_way_out():
    from branchy_channel import Branchy

    cs = ChannelSet([*HH_CHANNELS, Branchy])
    args = inputs(cs, 4)
    ref = membrane_step(*args, channels=cs, dt=0.025, backend="reference")
    assert np.isfinite(ref[0]).all()
    with pytest.raises(InputError, match="backend='reference'"):
        membrane_step(*args, channels=cs, dt=0.025, backend="cpu")


# ------------------------------------------------------------------ synapse_deliver


def _synapses(n=40, n_out=80, seed=6, spike_rate=0.3):
    rng = np.random.default_rng(seed)
    indptr, indices, weights = random_connectivity(n, 0.2, 0.4, rng)
    target = indices * 2 + rng.integers(0, 2, indices.shape[0])  # two targets per neuron
    spikes = (rng.random(n) < spike_rate) * rng.uniform(0.5, 1.0, n)
    return spikes, indptr, weights, target, rng


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpu_delivery_and_its_vjp_match_the_reference(dtype):
    spikes, indptr, weights, target, rng = _synapses()
    a_out = rng.normal(size=80)
    args = (spikes.astype(dtype), indptr, weights.astype(dtype), target)
    got = fusekit.ops.synapse_deliver(*args, n_out=80, backend="cpu")
    ref = fusekit.ops.synapse_deliver(*args, n_out=80, backend="reference")
    assert got.dtype == dtype and ref.sum() > 0
    np.testing.assert_allclose(got, ref, rtol=1e-6 if dtype == np.float32 else 1e-13)
    for backend in CPU_BACKENDS:
        a_s, a_w = fusekit.ops.synapse_deliver_vjp(*args, a_out.astype(dtype), n_out=80,
                                                   backend=backend)
        # torch autograd of the gather-multiply-scatter that engine='torch' runs
        pre = torch.repeat_interleave(torch.arange(40), torch.as_tensor(np.diff(indptr)))
        s_t = torch.tensor(args[0], dtype=torch.float64, requires_grad=True)
        w_t = torch.tensor(args[2], dtype=torch.float64, requires_grad=True)
        out = torch.zeros(80, dtype=torch.float64).index_add(0, torch.as_tensor(target),
                                                            w_t * s_t[pre])
        (out * torch.as_tensor(a_out.astype(dtype), dtype=torch.float64)).sum().backward()
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(a_s, s_t.grad.numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(a_w, w_t.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_delivery_refuses_a_malformed_csr_without_reading_out_of_bounds(backend):
    spikes, indptr, weights, target, _ = _synapses(spike_rate=1.0)
    deliver = fusekit.ops.synapse_deliver
    with pytest.raises(InputError, match="target .* must lie in \\[0, 80\\)"):
        deliver(spikes, indptr, weights, np.where(np.arange(target.size) == 5, 80, target),
                n_out=80, backend=backend)
    with pytest.raises(InputError, match="target .* must lie in"):
        fusekit.ops.synapse_deliver_vjp(spikes, indptr, weights, target - 1, np.ones(80),
                                        n_out=80, backend=backend)
    bad = indptr.copy()
    bad[3], bad[4] = bad[4] + 1, bad[3]  # a row that goes backwards
    with pytest.raises(InputError, match="indptr must start at 0, never decrease"):
        deliver(spikes, bad, weights, target, n_out=80, backend=backend)
    past = indptr.copy()
    past[-1] = weights.size + 3  # the last row would read past the synapses
    with pytest.raises(InputError, match="indptr must start at 0"):
        deliver(spikes, past, weights, target, n_out=80, backend=backend)
    with pytest.raises(InputError, match="spikes must be \\(n,\\), indptr \\(n \\+ 1,\\)"):
        deliver(spikes, indptr[:-1], weights, target, n_out=80, backend=backend)
    with pytest.raises(InputError, match="weights contains NaN"):
        deliver(spikes, indptr, np.where(np.arange(weights.size) == 0, np.nan, weights),
                target, n_out=80, backend=backend)


# ------------------------------------------------------ network_simulate_torch(engine=...)


def _network(n=30, seed=5):
    rng = np.random.default_rng(seed)
    v0 = rng.uniform(-70.0, -60.0, n)
    indptr, indices, weights = random_connectivity(n, 0.2, 0.3, rng)
    i_ext = np.where(np.arange(n) < 6, 14.0, 0.0)
    return v0, HH.steady_states(v0), HH.default_params(n), i_ext, indptr, indices, weights


def _run_network(engine, checkpoint_every=0, typed=False, per_step_current=False,
                 surrogate=None, in_flight=False):
    """Every input that can take a gradient, a loss on every output that can give one."""
    from fusekit.neuro import SuperSpike, network_simulate_torch

    v0, S, P, i_ext, indptr, indices, weights = _network()
    n, rng = len(v0), np.random.default_rng(8)
    if per_step_current:
        i_ext = np.tile(i_ext, (400, 1)) + rng.normal(0.0, 1.0, (400, n))
    kw = dict(tau_syn=3.0)
    n_types = 1
    if typed:  # excitatory and inhibitory synapses
        kw = dict(tau_syn=[3.0, 8.0], e_syn=[0.0, -80.0],
                  synapse_type=rng.integers(0, 2, indices.shape[0]))
        n_types = 2
    grad = [torch.tensor(a, requires_grad=True) for a in (weights, P, i_ext, v0, S)]
    g0 = torch.full((n_types, n) if typed else (n,), 0.01, dtype=torch.float64,
                    requires_grad=True)
    grad.append(g0)
    if in_flight:  # spikes on their way at the start
        shape = (20, n_types, n) if typed else (20, n)
        kw["arrivals0"] = torch.tensor(rng.uniform(0.0, 0.02, shape), requires_grad=True)
        grad.append(kw["arrivals0"])
    w, p, i, v, s = grad[:5]
    out = network_simulate_torch(
        HH, v, s, p, i, g0, indptr, indices, w, dt=0.025, n_steps=400, delay_steps=20,
        record_every=10, max_spikes=3, engine=engine, checkpoint_every=checkpoint_every,
        surrogate=None if surrogate is None else SuperSpike(surrogate), **kw)
    loss = (out.v_record.square().mean() + torch.nan_to_num(out.spike_times).sum()
            + out.v.sum() + out.states.sum() + out.g_syn.square().sum() + out.arrivals.sum())
    return out, torch.autograd.grad(loss, grad)


@pytest.mark.parametrize("case", [{}, {"checkpoint_every": 50}, {"typed": True},
                                  {"per_step_current": True, "surrogate": 0.3},
                                  {"in_flight": True, "typed": True}],
                         ids=["plain", "checkpoints", "two-types", "current-rows",
                              "in-flight"])
def test_network_kernel_engine_gives_the_torch_engines_spikes_and_gradients(case):
    kernel, g_kernel = _run_network("kernel", **case)
    eager, g_eager = _run_network("torch", **case)
    assert kernel.spike_count[6:].sum() > 0  # synaptic input fires undriven neurons
    np.testing.assert_array_equal(kernel.spike_count.numpy(), eager.spike_count.numpy())
    for name in ("v", "states", "g_syn", "v_record", "spike_times", "arrivals"):
        np.testing.assert_allclose(getattr(kernel, name).detach().numpy(),
                                   getattr(eager, name).detach().numpy(), rtol=1e-9,
                                   atol=1e-9, err_msg=name)
    names = ("weights", "params", "i_ext", "v0", "states0", "g_syn0", "arrivals0")
    for name, a, b in zip(names, g_kernel, g_eager, strict=False):
        assert float(b.abs().max()) > 0, name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-7,
                                   atol=1e-9 * float(b.abs().max()), err_msg=name)


def test_the_whole_run_is_two_op_calls_and_other_surrogates_take_the_step_path(monkeypatch):
    from fusekit.ops import ion_membrane, ion_network_grad

    calls = []
    for op in (ion_network_grad.network_run_op, ion_network_grad.network_run_vjp_op,
               ion_membrane.membrane_step_op):
        original = op.run
        monkeypatch.setattr(op, "run", lambda *a, _o=original, _n=op.name, **k: (
            calls.append(_n), _o(*a, **k))[1])
    _run_network("kernel")
    assert calls == ["network_run", "network_run_vjp"]
    calls.clear()

    class Sigmoid:  # a surrogate the whole-run kernels do not know: per-step ops
        def __call__(self, x):
            return torch.sigmoid(4.0 * x)

    from fusekit.neuro import network_simulate_torch

    v0, S, P, i_ext, indptr, indices, weights = _network()
    t = torch.as_tensor
    w = t(weights).clone().requires_grad_()
    out = network_simulate_torch(HH, t(v0), t(S), t(P), t(i_ext),
                                 torch.zeros(len(v0), dtype=torch.float64), indptr, indices,
                                 w, dt=0.025, n_steps=40, delay_steps=20, record_every=10,
                                 surrogate=Sigmoid())
    out.v_record.sum().backward()
    assert calls.count("membrane_step") == 40 and "network_run" not in calls
    assert float(w.grad.abs().max()) > 0


def test_network_engine_is_checked_and_says_why_the_kernel_cannot_run():
    from branchy_channel import Branchy
    from fusekit.neuro import network_simulate_torch

    cs = ChannelSet([*HH_CHANNELS, Branchy])
    t = torch.zeros(2, dtype=torch.float64)
    S, P = torch.tensor(cs.initial_states(2)), torch.tensor(cs.default_params(2))
    w = torch.tensor([0.1], dtype=torch.float64)
    kw = dict(dt=0.025, n_steps=2, delay_steps=1)
    with pytest.raises(InputError, match="engine must be 'auto', 'kernel' or 'torch'"):
        network_simulate_torch(cs, t, S, P, t, t, [0, 1, 1], [1], w, engine="numba", **kw)
    with pytest.raises(InputError, match="branch on their arguments"):
        network_simulate_torch(cs, t, S, P, t, t, [0, 1, 1], [1], w, engine="kernel", **kw)
    out = network_simulate_torch(cs, t, S, P, t, t, [0, 1, 1], [1], w, **kw)  # auto: torch
    assert torch.isfinite(out.v).all()
    with pytest.raises(InputError, match="compile=True compiles the torch engine"):
        network_simulate_torch(HH, t, torch.tensor(HH.initial_states(2)),
                               torch.tensor(HH.default_params(2)), t, t, [0, 1, 1], [1], w,
                               engine="kernel", compile=True, **kw)


def test_a_second_derivative_through_the_kernel_engine_raises_instead_of_a_silent_zero():
    from fusekit.ops.ion_membrane import membrane_step_function

    t = [torch.tensor(a, requires_grad=True) for a in inputs(HH, 3, seed=7)]
    v_new, _ = membrane_step_function()(*t, HH.key, 0.025, None)
    (g,) = torch.autograd.grad(v_new.sum(), t[0], create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_network_simulate_torch_refuses_unphysical_parameters_and_too_long_steps():
    from fusekit.neuro import network_simulate_torch

    n = 2
    t = torch.zeros(n, dtype=torch.float64)
    v0, S = torch.full((n,), -65.0, dtype=torch.float64), torch.tensor(HH.initial_states(n))
    P = torch.tensor(HH.default_params(n))
    csr = ([0, 1, 1], [1], torch.tensor([0.1], dtype=torch.float64))
    bad = P.clone()
    bad[1, 0] = -5.0
    with pytest.raises(InputError, match="network_simulate_torch: params row 1 .g_na"):
        network_simulate_torch(HH, v0, S, bad, t, t, *csr, dt=0.025, n_steps=2, delay_steps=1)
    with pytest.raises(InputError, match="network_simulate_torch: dt = 1.0 ms is more than"):
        network_simulate_torch(HH, v0, S, P, t, t, *csr, dt=1.0, n_steps=2, delay_steps=1)
    with pytest.raises(InputError, match="network_simulate_torch: v0 contains NaN"):
        network_simulate_torch(HH, torch.tensor([-65.0, float("nan")], dtype=torch.float64),
                               S, P, t, t, *csr, dt=0.025, n_steps=2, delay_steps=1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_network_run_and_its_vjp_on_the_cpu_match_the_reference(dtype):
    from fusekit.ops.ion_network_grad import network_run_op, network_run_vjp_op

    v0, S, P, i_ext, indptr, indices, weights = _network(n=24, seed=9)
    n, rng = len(v0), np.random.default_rng(10)
    f = [a.astype(dtype) for a in (v0, S, P, i_ext)]
    in_flight = rng.uniform(0.0, 0.02, (20, 1, n)).astype(dtype)  # spikes sent before
    arrays = (*f, np.zeros((1, n), dtype), indptr, indices, weights.astype(dtype), in_flight,
              np.zeros(0, np.int64))
    kw = dict(channels=HH, dt=0.025, n_steps=300, delay_steps=20, tau_syn=(3.0,),
              e_syn=(0.0,), record_every=10, spike_threshold=0.0, max_spikes=3, segment=40)
    got = network_run_op.run(arrays, kw, "cpu")
    ref = network_run_op.run(arrays, kw, "reference")
    assert ref[4][6:].sum() > 0
    np.testing.assert_array_equal(got[4], ref[4])  # spike counts
    tol = 1e-9 if dtype == np.float64 else 2e-3
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    grads = (rng.normal(size=n), rng.normal(size=S.shape), rng.normal(size=(1, n)),
             rng.normal(size=(30, n)), rng.normal(size=(3, n)), rng.normal(size=(20, 1, n)))
    vjp_in = (*ref[7:], f[2], f[3], indptr, indices, weights.astype(dtype), in_flight,
              np.zeros(0, np.int64), *(g.astype(dtype) for g in grads))
    got = network_run_vjp_op.run(vjp_in, {**kw, "slope": 1.0}, "cpu")
    ref = network_run_vjp_op.run(vjp_in, {**kw, "slope": 1.0}, "reference")
    for a, b in zip(got, ref, strict=True):
        scale = float(np.abs(b).max())
        assert scale > 0
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("bad", ["indptr", "target"])
def test_the_compiled_whole_run_checks_the_csr_before_it_reads_it(bad):
    # The op checks its inputs first; the kernels, called directly, still refuse a CSR that
    # would make them read out of bounds.
    from fusekit.backends.cpu.ion_network_grad import network_run_cpu, network_run_vjp_cpu

    v0, S, P, i_ext, indptr, indices, weights = _network(n=10, seed=9)
    n = len(v0)
    if bad == "indptr":
        indptr = indptr.copy()
        indptr[-1] += 1
    else:
        indices = indices.copy()
        indices[0] = n
    kw = dict(channels=HH, dt=0.025, n_steps=20, delay_steps=5, tau_syn=(3.0,), e_syn=(0.0,),
              segment=10)
    match = "indptr must start at 0" if bad == "indptr" else r"target .* must lie in \[0, 10\)"
    with pytest.raises(InputError, match="network_run: " + match):
        network_run_cpu(v0, S, P, i_ext, np.zeros((1, n)), indptr, indices, weights,
                        np.zeros((5, 1, n)), np.zeros(0, np.int64), **kw)
    ck = (np.zeros((2, n)), np.zeros((2, *S.shape)), np.zeros((2, 1, n)),
          np.zeros((2, 5, n), np.bool_), np.zeros((2, n), np.int64))
    grads = (np.zeros(n), np.zeros(S.shape), np.zeros((1, n)), np.zeros((0, n)),
             np.zeros((0, n)), np.zeros((5, 1, n)))
    with pytest.raises(InputError, match="network_run: " + match):
        network_run_vjp_cpu(*ck, P, i_ext, indptr, indices, weights, np.zeros((5, 1, n)),
                            np.zeros(0, np.int64), *grads, slope=1.0, **kw)


def test_network_run_vjp_refuses_mismatched_checkpoints():
    from fusekit.ops.ion_network_grad import network_run_op, network_run_vjp_op

    v0, S, P, i_ext, indptr, indices, weights = _network(n=10, seed=9)
    n = len(v0)
    kw = dict(channels=HH, dt=0.025, n_steps=50, delay_steps=5, tau_syn=(3.0,), e_syn=(0.0,),
              segment=10)
    out = network_run_op.run((v0, S, P, i_ext, np.zeros((1, n)), indptr, indices, weights,
                              np.zeros((5, 1, n)), np.zeros(0, np.int64)), kw, "cpu")
    args = [*out[7:], P, i_ext, indptr, indices, weights, np.zeros((5, 1, n)),
            np.zeros(0, np.int64), np.zeros(n),
            np.zeros(S.shape), np.zeros((1, n)), np.zeros((0, n)), np.zeros((0, n)),
            np.zeros((5, 1, n))]
    args[0] = args[0][:-1]  # one checkpoint short
    with pytest.raises(InputError, match="network_run_vjp: ck_v must have shape"):
        network_run_vjp_op.run(args, {**kw, "slope": 1.0}, "cpu")
    with pytest.raises(InputError, match="network_run: segment must be a positive"):
        network_run_op.run((v0, S, P, i_ext, np.zeros((1, n)), indptr, indices, weights,
                            np.zeros((5, 1, n)), np.zeros(0, np.int64)),
                           {**kw, "segment": 0}, "cpu")


def test_the_kernel_engines_memory_is_bounded_by_its_segments():
    # The whole run keeps a checkpoint per segment and re-runs one segment at a time in the
    # backward: peak memory (NumPy's allocations, traced) grows with n_steps / K + K steps.
    import tracemalloc

    from fusekit.neuro import network_simulate_torch

    v0, S, P, i_ext, indptr, indices, weights = _network(n=200, seed=11)
    t = torch.as_tensor

    def peak(checkpoint_every):
        w = t(weights).clone().requires_grad_()
        tracemalloc.start()
        out = network_simulate_torch(HH, t(v0), t(S), t(P), t(i_ext),
                                     torch.zeros(200, dtype=torch.float64), indptr, indices, w,
                                     dt=0.025, n_steps=900, delay_steps=20, record_every=10,
                                     engine="kernel", checkpoint_every=checkpoint_every)
        out.v_record.mean().backward()
        got = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return got, w.grad

    peak(30)  # compiles or loads the kernels, whose allocations are not the run's
    bounded, g_bounded = peak(30)  # about sqrt(900)
    whole, g_whole = peak(900)  # one segment: every step kept
    torch.testing.assert_close(g_bounded, g_whole, rtol=1e-10, atol=1e-14)
    # each checkpoint holds the delay's spikes in flight too (20 x 200 values): 2.4 MB
    # against 10.2 MB measured
    assert bounded < whole / 3, (bounded, whole)


@pytest.mark.parametrize("engine", ["kernel", "torch"])
def test_negative_weights_are_refused_with_how_to_keep_trained_weights_non_negative(engine):
    from fusekit.neuro import network_simulate_torch

    v0, S, P, i_ext, indptr, indices, weights = _network(n=10, seed=12)
    t = torch.as_tensor
    w = t(weights).clone()
    w[3] = -0.01  # as an optimizer step can leave it
    with pytest.raises(InputError, match=r"network_simulate_torch: synaptic weights .*"
                                         r"clamp_\(min=0\)"):
        network_simulate_torch(HH, t(v0), t(S), t(P), t(i_ext),
                               torch.zeros(10, dtype=torch.float64), indptr, indices, w,
                               dt=0.025, n_steps=10, delay_steps=5, engine=engine)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_channels_without_gates_step_and_differentiate(backend):
    from fusekit.neuro import HHLeak

    cs = ChannelSet([HHLeak])  # a passive membrane: no states
    n = 5
    v = np.linspace(-80.0, -50.0, n)
    S, P = cs.initial_states(n), cs.default_params(n)
    i_inj, g, ge = np.full(n, 2.0), np.full(n, 0.1), np.full(n, -1.0)
    v1, S1 = membrane_step(v, S, P, i_inj, g, ge, channels=cs, dt=0.025, backend=backend)
    assert S1.shape == (0, n)
    # backward Euler of c_m dv/dt = g_l (e_l - v) + ge - g v + i: solved exactly
    c, g_l, e_l = P[0] / 0.025, P[1], P[2]
    np.testing.assert_allclose(v1, (c * v + g_l * e_l + ge + i_inj) / (c + g_l + g), rtol=1e-12)
    got = membrane_step_vjp(v, S, P, i_inj, g, ge, np.ones(n), S, channels=cs, dt=0.025,
                            backend=backend)
    np.testing.assert_allclose(got[0], c / (c + g_l + g), rtol=1e-12)


@pytest.mark.parametrize("n_steps", [0, 1, 7])
def test_short_runs_give_the_torch_engines_gradients(n_steps):
    from fusekit.neuro import network_simulate_torch

    n = 3
    t = torch.as_tensor
    grads = []
    for engine in ("kernel", "torch"):
        w = torch.tensor([0.1, 0.2], dtype=torch.float64, requires_grad=True)
        v = torch.full((n,), -65.0, dtype=torch.float64, requires_grad=True)
        out = network_simulate_torch(
            HH, v, t(HH.steady_states(np.full(n, -65.0))), t(HH.default_params(n)),
            torch.full((n,), 10.0, dtype=torch.float64), torch.zeros(n, dtype=torch.float64),
            [0, 1, 2, 2], [1, 2], w, dt=0.025, n_steps=n_steps, delay_steps=5,
            record_every=1, engine=engine)
        (out.v.sum() + out.v_record.sum()).backward()
        # with no step the torch engine never reads the weights (no gradient at all)
        grads.append([torch.zeros_like(x) if x.grad is None else x.grad for x in (w, v)])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
