"""Weight gradients of an HH network with surrogate spikes: fusekit's whole-run ops against torch.

One training step's worth of work, the forward over 10 ms (400 steps of 0.025 ms) and the
backward of a loss on the recorded potentials and the spike times to every synaptic weight,
parameter and current, float64, for 500 HH neurons at 5% connectivity (12,474 synapses) and
5,000 at 0.5%. The peer is what a PyTorch user writes: the same network step by step in
tensor operations with autograd (``network_simulate_torch(engine="torch")``). fusekit's
``engine="kernel"`` runs the whole run as one call of the op ``network_run`` and its backward
as one of ``network_run_vjp`` (each one compiled loop on the CPU, around generated step
kernels).

    python -m pytest benchmarks/test_bench_network_grad.py --benchmark-columns=min,median,rounds
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fusekit.neuro import (  # noqa: E402
    HH_CHANNELS,
    ChannelSet,
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
