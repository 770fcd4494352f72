"""Gradients of HH networks with surrogate spikes: fusekit's whole-run ops against torch.

One training step's worth of work, the forward over 10 ms (400 steps of 0.025 ms) and the
backward of a loss on the recorded potentials and the spike times to every synaptic weight,
parameter and current, float64, for 500 HH neurons at 5% connectivity (12,474 synapses) and
5,000 at 0.5%. The peer is what a PyTorch user writes: the same network step by step in
tensor operations with autograd (``network_simulate_torch(engine="torch")``). fusekit's
``engine="kernel"`` runs the whole run as one call of the op ``network_run`` and its backward
as one of ``network_run_vjp`` (each one compiled loop on the CPU, around generated step
kernels).

The second pair does the same for a network of branched cells
(``cable_network_simulate_torch``): 200 cells of 6 compartments (a soma, two dendrites and
three branches, as ``test_bench_cable_network.py``'s cells without junction nodes), 20
synapses per cell onto random compartments, gradients to the weights, parameters and axial
coupling; ``engine="kernel"`` runs ``cable_network_run`` and ``cable_network_run_vjp``.

    python -m pytest benchmarks/test_bench_network_grad.py --benchmark-columns=min,median,rounds
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fusekit.neuro import (  # noqa: E402
    HH_CHANNELS,
    ChannelSet,
    cable_coupling,
    cable_network_simulate_torch,
    network_simulate_torch,
    random_connectivity,
)

HH = ChannelSet(HH_CHANNELS)
DT, N_STEPS = 0.025, 400


def network(n):
    indptr, indices, weights = random_connectivity(n, 25 / n, 0.05, np.random.default_rng(0))
    v0 = torch.full((n,), -65.0, dtype=torch.float64)
    i_ext = torch.where(torch.arange(n) < n // 10, 12.0, 0.0).double().requires_grad_()
    P = torch.tensor(HH.default_params(n), requires_grad=True)
    w = torch.tensor(weights, requires_grad=True)
    fixed = (torch.tensor(HH.steady_states(v0.numpy())), torch.zeros(n, dtype=torch.float64),
             torch.as_tensor(indptr), torch.as_tensor(indices))
    return v0, fixed, P, i_ext, w


def gradient(engine, v0, fixed, P, i_ext, w):
    S, g0, indptr, indices = fixed
    out = network_simulate_torch(HH, v0, S, P, i_ext, g0, indptr, indices, w, dt=DT,
                                 n_steps=N_STEPS, delay_steps=40, record_every=10,
                                 max_spikes=4, engine=engine)
    loss = out.v_record.square().mean() + torch.nan_to_num(out.spike_times).sum()
    return torch.autograd.grad(loss, (w, P, i_ext))


def test_the_engines_give_the_same_gradients():
    x = network(60)
    for a, b in zip(gradient("kernel", *x), gradient("torch", *x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9 * float(b.abs().max()))


@pytest.mark.parametrize("n", [500, 5000])
@pytest.mark.parametrize("engine", ["kernel", "torch"])
def test_network_weight_gradient(benchmark, engine, n):
    x = network(n)
    if engine == "kernel":
        gradient(engine, *network(30))  # compile (or load) the kernels outside the timing
    benchmark.group = f"HH network gradient, {n} neurons x {N_STEPS * DT:.0f} ms, float64"
    g_w, g_p, g_i = benchmark.pedantic(lambda: gradient(engine, *x), rounds=2, iterations=1)
    assert bool(torch.isfinite(g_w).all()) and float(g_w.abs().max()) > 0


CABLE_PARENT = np.array([-1, 0, 0, 1, 1, 2])
CABLE_LENGTH = [20.0, 150.0, 100.0, 80.0, 60.0, 120.0]
CABLE_DIAM = [20.0, 2.0, 1.5, 1.0, 1.0, 1.2]


def cable_network(n):
    m = CABLE_PARENT.size
    rng = np.random.default_rng(0)
    indptr, indices, weights = random_connectivity(n, 20 / n, 0.3, rng)
    comps = torch.as_tensor(rng.integers(0, m, indices.shape[0]))
    v0 = torch.full((n, m), -65.0, dtype=torch.float64)
    i_ext = torch.zeros(n, m, dtype=torch.float64)
    i_ext[: n // 5, 0] = 20.0
    cpl = cable_coupling(CABLE_PARENT, CABLE_LENGTH, CABLE_DIAM)
    P = torch.tensor(HH.default_params(n * m).reshape(-1, n, m), requires_grad=True)
    C = torch.tensor(np.broadcast_to(cpl[:, None], (2, n, m)).copy(), requires_grad=True)
    w = torch.tensor(weights, requires_grad=True)
    S = torch.tensor(HH.steady_states(v0.reshape(-1).numpy()).reshape(-1, n, m))
    fixed = (S, i_ext, torch.zeros(n, m, dtype=torch.float64), torch.as_tensor(indptr),
             torch.as_tensor(indices), comps)
    return v0, fixed, P, C, w


def cable_gradient(engine, v0, fixed, P, C, w):
    S, i_ext, g0, indptr, indices, comps = fixed
    out = cable_network_simulate_torch(HH, v0, S, P, i_ext, CABLE_PARENT, C, g0, indptr,
                                       indices, w, synapse_compartment=comps, dt=DT,
                                       n_steps=N_STEPS, delay_steps=40, record_every=10,
                                       record_at=[0, 5], max_spikes=4, engine=engine)
    loss = out.v_record.square().mean() + torch.nan_to_num(out.spike_times).sum()
    return torch.autograd.grad(loss, (w, P, C))


def test_the_cable_engines_give_the_same_gradients():
    x = cable_network(30)
    for a, b in zip(cable_gradient("kernel", *x), cable_gradient("torch", *x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9 * float(b.abs().max()))


@pytest.mark.parametrize("engine", ["kernel", "torch"])
def test_cable_network_gradient(benchmark, engine):
    n = 200
    x = cable_network(n)
    if engine == "kernel":
        cable_gradient(engine, *cable_network(20))  # compile (or load) outside the timing
    benchmark.group = (f"HH network of branched cells, gradient, {n} cells x "
                       f"{CABLE_PARENT.size} compartments x {N_STEPS * DT:.0f} ms, float64")
    g_w, g_p, g_c = benchmark.pedantic(lambda: cable_gradient(engine, *x), rounds=2,
                                       iterations=1)
    assert bool(torch.isfinite(g_w).all()) and float(g_w.abs().max()) > 0
    assert float(g_c.abs().max()) > 0
