"""cable_network_run and its vjp: networks of branched cells differentiable over a whole run."""

import numpy as np
import pytest

from fusekit import InputError
from fusekit.ops.ion_cable_network_grad import cable_network_run_op, cable_network_run_vjp_op
from test_ion_cable_network import HH, PARENT, cells, torch_network

torch = pytest.importorskip("torch")


def _losses(out, rng):
    """A random linear loss on every output that can carry a gradient."""
    outs = (out.v, out.states, out.g_syn, out.v_record, out.arrivals)
    weights = [torch.tensor(rng.normal(size=tuple(o.shape))) for o in outs]
    times = out.spike_times
    finite = torch.where(torch.isfinite(times), times, torch.zeros_like(times))
    return (sum((o * w).sum() for o, w in zip(outs, weights, strict=True))
            + (finite * torch.tensor(rng.normal(size=tuple(times.shape)))).sum())


def _run(engine, *, junction_tree=False, typed=True, per_step_current=False,
         checkpoint_every=0):
    from fusekit.neuro import cable_network_simulate_torch

    _, args, kw = torch_network(junction_tree=junction_tree)
    v, S, P, i_ext, parent, coupling, g0, indptr, indices, weights = args
    rng = np.random.default_rng(3)
    if per_step_current:
        i_ext = i_ext + rng.normal(0.0, 2.0, (kw["n_steps"], *i_ext.shape))
    if not typed:
        kw = {k: x for k, x in kw.items() if k != "synapse_type"}
        kw.update(tau_syn=3.0, e_syn=0.0)
        g0 = g0[0]
    n_types = 2 if typed else 1
    in_flight = (kw["delay_steps"], *((n_types,) if typed else ()), *v.shape)
    ins = [torch.tensor(a, requires_grad=True) for a in (
        v, S, P, i_ext, coupling, g0, weights, rng.uniform(0.0, 0.01, in_flight))]
    out = cable_network_simulate_torch(HH, *ins[:4], parent, ins[4], ins[5], indptr, indices,
                                       ins[6], arrivals0=ins[7], engine=engine,
                                       checkpoint_every=checkpoint_every, **kw)
    return out, torch.autograd.grad(_losses(out, rng), ins)


@pytest.mark.parametrize("case", [
    dict(), dict(junction_tree=True), dict(typed=False, per_step_current=True,
                                           checkpoint_every=17)])
def test_the_kernel_engine_equals_torch_on_every_output_and_gradient(case):
    kernel, g_kernel = _run("kernel", **case)
    eager, g_eager = _run("torch", **case)
    assert int(eager.spike_count.sum()) >= 4
    np.testing.assert_array_equal(kernel.spike_count.numpy(), eager.spike_count.numpy())
    for name in ("v", "states", "g_syn", "v_record", "spike_times", "arrivals"):
        np.testing.assert_allclose(getattr(kernel, name).detach().numpy(),
                                   getattr(eager, name).detach().numpy(), rtol=1e-9,
                                   atol=1e-9, err_msg=name)
    names = ("v0", "states0", "params", "i_ext", "coupling", "g_syn0", "weights", "arrivals0")
    for name, a, b in zip(names, g_kernel, g_eager, strict=True):
        assert float(b.abs().max()) > 0, name
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-7,
                                   atol=1e-9 * float(b.abs().max()), err_msg=name)


def _op_inputs(dtype=np.float64, n=8, seed=5):
    from fusekit.neuro import random_connectivity

    v, S, P, i_ext, coupling, rng = cells(n, seed=seed, soma_current=(5.0, 40.0), dtype=dtype)
    indptr, indices, weights = random_connectivity(n, 0.5, 1.0, rng)
    comps = rng.integers(0, PARENT.size, indices.shape[0])
    in_flight = rng.uniform(0.0, 0.05, (10, 1, *v.shape)).astype(dtype)  # sent before
    arrays = (v, S, P, i_ext, PARENT, coupling, np.zeros((1, *v.shape), dtype), indptr,
              indices, weights.astype(dtype), in_flight, np.zeros(0, np.int64), comps)
    kw = dict(channels=HH, dt=0.025, n_steps=200, delay_steps=10, tau_syn=(3.0,),
              e_syn=(0.0,), record_every=10, spike_threshold=0.0, max_spikes=3,
              record_at=(0, 4), segment=30)
    return arrays, kw, rng


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_cpu_loops_match_the_reference(dtype):
    arrays, kw, rng = _op_inputs(dtype)
    got = cable_network_run_op.run(arrays, kw, "cpu")
    ref = cable_network_run_op.run(arrays, kw, "reference")
    assert ref[4].sum() > 0 and ref[2].max() > 0  # spikes, and they arrived
    np.testing.assert_array_equal(got[4], ref[4])
    tol = 1e-9 if dtype == np.float64 else 2e-3
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    n, m = arrays[0].shape
    grads = [rng.normal(size=s).astype(dtype) for s in (
        (n, m), arrays[1].shape, (1, n, m), (20, n, 2), (3, n), (10, 1, n, m))]
    vjp_in = (*ref[7:], arrays[2], arrays[3], PARENT, arrays[5], *arrays[7:13], *grads)
    got = cable_network_run_vjp_op.run(vjp_in, {**kw, "slope": 1.0}, "cpu")
    ref = cable_network_run_vjp_op.run(vjp_in, {**kw, "slope": 1.0}, "reference")
    for a, b in zip(got, ref, strict=True):
        scale = float(np.abs(b).max())
        assert scale > 0
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


def test_a_run_is_two_op_calls_and_other_surrogates_run_in_torch(monkeypatch):
    from fusekit.neuro import cable_network_simulate_torch

    calls = []
    for op in (cable_network_run_op, cable_network_run_vjp_op):
        original = op.run
        monkeypatch.setattr(op, "run", lambda *a, _o=original, _n=op.name, **k: (
            calls.append(_n), _o(*a, **k))[1])
    _run("auto", checkpoint_every=40)
    assert calls == ["cable_network_run", "cable_network_run_vjp"]
    calls.clear()

    class Sigmoid:  # a surrogate the kernel does not know
        def __call__(self, x):
            return torch.sigmoid(4.0 * x)

    _, args, kw = torch_network()
    t = [torch.as_tensor(a) for a in args]
    w = t[9].clone().requires_grad_()
    out = cable_network_simulate_torch(HH, *t[:9], w, surrogate=Sigmoid(), **kw)
    out.v_record.sum().backward()
    assert not calls and float(w.grad.abs().max()) > 0
    with pytest.raises(InputError, match="engine='kernel' cannot run here: the kernel knows "
                                         "the SuperSpike surrogate only"):
        cable_network_simulate_torch(HH, *t[:9], w, surrogate=Sigmoid(), engine="kernel", **kw)


def test_a_second_derivative_through_the_kernel_raises_instead_of_a_silent_zero():
    from fusekit.neuro import cable_network_simulate_torch

    _, args, kw = torch_network()
    t = [torch.as_tensor(a) for a in args]
    w = t[9].clone().requires_grad_()
    out = cable_network_simulate_torch(HH, *t[:9], w, engine="kernel", **kw)
    (g,) = torch.autograd.grad(out.v_record.mean(), w, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_the_vjp_refuses_mismatched_checkpoints_and_segments():
    arrays, kw, _ = _op_inputs(n=4)
    out = cable_network_run_op.run(arrays, kw, "cpu")
    n, m = arrays[0].shape
    grads = [np.zeros(s) for s in ((n, m), arrays[1].shape, (1, n, m), (20, n, 2), (3, n),
                                   (10, 1, n, m))]
    vjp_in = [*out[7:], arrays[2], arrays[3], PARENT, arrays[5], *arrays[7:13], *grads]
    good = list(vjp_in)
    vjp_in[0] = vjp_in[0][:-1]  # one checkpoint short
    with pytest.raises(InputError, match=r"cable_network_run_vjp: ck_v must have shape \(7, 4"):
        cable_network_run_vjp_op.run(vjp_in, {**kw, "slope": 1.0}, "cpu")
    with pytest.raises(InputError, match="cable_network_run_vjp: slope .* must be positive"):
        cable_network_run_vjp_op.run(good, {**kw, "slope": 0.0}, "cpu")
    good[3] = good[3].astype(np.float64)  # spike flags as numbers
    with pytest.raises(InputError, match="cable_network_run_vjp: ck_spikes must be a bool"):
        cable_network_run_vjp_op.run(good, {**kw, "slope": 1.0}, "cpu")
    with pytest.raises(InputError, match="cable_network_run: segment must be a positive"):
        cable_network_run_op.run(arrays, {**kw, "segment": 0}, "cpu")
    with pytest.raises(InputError, match="cable_network_run: synapse_compartment must lie in"):
        cable_network_run_op.run((*arrays[:12], arrays[12] + m), kw, "cpu")


def test_the_compiled_loops_check_the_csr_before_they_read_it():
    # The op checks its inputs first; the kernels, called directly, still refuse a CSR that
    # would make them read out of bounds.
    from fusekit.backends.cpu.ion_cable_network_grad import cable_network_run_cpu

    arrays, kw, _ = _op_inputs(n=4)
    comps = arrays[12].copy()
    comps[0] = PARENT.size  # past the cell's last compartment, past the array's end too
    kw = {k: x for k, x in kw.items() if k != "channels"}
    with pytest.raises(InputError, match=r"cable_network_run: target .* must lie in"):
        cable_network_run_cpu(*arrays[:3], arrays[3], arrays[4], arrays[5], arrays[6],
                              arrays[7], arrays[8] + 3, *arrays[9:12], comps, channels=HH,
                              **kw)


def test_engine_kernel_on_cuda_tensors_says_when_the_cuda_backend_is_unavailable(monkeypatch):
    # No GPU here: a stand-in for a CUDA tensor reaches the engine's choice, which must name
    # the missing backend and what to use instead, not fail later inside a kernel.
    import types

    from fusekit import _registry
    from fusekit.neuro._autograd import _network_engine

    monkeypatch.setattr(_registry, "unavailable_reason", lambda b: "CuPy is not installed")
    v0 = types.SimpleNamespace(device=types.SimpleNamespace(type="cuda"), dtype=torch.float64)
    with pytest.raises(InputError, match="the CUDA backend is unavailable "
                                         r"\(CuPy is not installed\)\. Use engine='torch'"):
        _network_engine("network_simulate_torch", "kernel", HH, v0, False, gpu_steps=True)
    assert _network_engine("network_simulate_torch", "auto", HH, v0, False,
                           gpu_steps=True) == "torch"


@pytest.mark.parametrize("case", [dict(), dict(junction_tree=True),
                                  dict(typed=False, per_step_current=True,
                                       checkpoint_every=17)])
def test_the_loops_give_the_same_bits_on_several_threads(case, monkeypatch):
    """Rows cut into parts for the threads (large networks): the same outputs and gradients,
    bit for bit, as the loops on one thread; forced here on the small test networks."""
    from fusekit.backends.cpu import ion_cable_network_grad as loops

    runs = []
    for parts in (1, 3):
        monkeypatch.setattr(loops, "parallel_parts", lambda n_rows, parts=parts: parts)
        out, grads = _run("kernel", **case)
        runs.append((out, grads))
    (one, g_one), (three, g_three) = runs
    assert int(one.spike_count.sum()) >= 4
    for name in ("v", "states", "g_syn", "v_record", "spike_times", "arrivals"):
        np.testing.assert_array_equal(getattr(three, name).detach().numpy(),
                                      getattr(one, name).detach().numpy(), err_msg=name)
    for a, b in zip(g_three, g_one, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
