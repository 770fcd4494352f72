"""simulate_torch: the same simulation in torch, and its gradients for per-neuron parameters."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fusekit  # noqa: E402
from fusekit.neuro import HH_CHANNELS, Channel, ChannelSet, exp, simulate_torch  # noqa: E402
from fusekit.ops.ion import ion_simulate_reference  # noqa: E402

HH = ChannelSet(HH_CHANNELS)


class TauGate(Channel):
    """inf/tau gate with a constant time constant and reversal."""

    params = {"g_t": 1.5}
    states = {"q": 0.2}
    reversal = -80.0

    def inf_q(v):
        return 1.0 / (1.0 + exp(-(v + 45.0) / 4.0))

    def tau_q(v):
        return 7.0

    def conductance(q, g_t):
        return g_t * q


@pytest.mark.parametrize("channels", [HH_CHANNELS, (TauGate, HH_CHANNELS[2])])
def test_torch_simulation_matches_the_numpy_reference(channels):
    cs = ChannelSet(channels)
    n = 6
    rng = np.random.default_rng(0)
    v0 = rng.uniform(-75, -50, n)
    S = cs.steady_states(v0)
    P = cs.default_params(n)
    i_ext = rng.uniform(0, 15, n)
    kw = dict(dt=0.025, n_steps=400, record_every=50, spike_threshold=0.0, max_spikes=3)
    ref = ion_simulate_reference(v0, S, P, i_ext, channels=cs, **kw)
    got = simulate_torch(cs, *map(torch.from_numpy, (v0, S, P, i_ext)), **kw)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b, rtol=1e-12, atol=1e-12)


def first_spike_and_final_v(g_na, g_k, n_steps=60):
    n = g_na.shape[0]
    P = torch.tensor(HH.default_params(n))
    P = torch.cat([P[:1], g_na[None], P[2:3], g_k[None], P[4:]])
    v0 = torch.full((n,), -65.0, dtype=torch.float64)
    out = simulate_torch(HH, v0, torch.tensor(HH.initial_states(n)), P,
                         torch.tensor([10.0, 14.0], dtype=torch.float64), dt=0.05,
                         n_steps=n_steps, max_spikes=1)
    return out.spike_times[0], out.v


def test_gradcheck_of_first_spike_time_and_final_v_for_per_neuron_conductances():
    g_na = torch.tensor([120.0, 110.0], dtype=torch.float64, requires_grad=True)
    g_k = torch.tensor([36.0, 40.0], dtype=torch.float64, requires_grad=True)
    t_first, _ = first_spike_and_final_v(g_na, g_k)
    assert torch.isfinite(t_first).all()  # both spike in the 3 ms window (at 1.9 and 1.7 ms)
    assert torch.autograd.gradcheck(first_spike_and_final_v, (g_na, g_k), eps=1e-6, fast_mode=True,
                                    atol=1e-6, rtol=1e-4)


def test_spike_time_gradient_agrees_with_finite_differences_of_the_cpu_kernel():
    g_na = torch.tensor([120.0, 110.0], dtype=torch.float64, requires_grad=True)
    g_k = torch.tensor([36.0, 40.0], dtype=torch.float64)
    t_first, _ = first_spike_and_final_v(g_na, g_k)
    t_first[0].backward()
    backend = "cpu" if "cpu" in fusekit.available_backends() else "reference"

    def t_cpu(g):
        P = HH.default_params(1, g_na=g)
        out = fusekit.ops.ion_simulate(np.full(1, -65.0), HH.initial_states(1), P,
                                       np.full(1, 10.0), channels=HH, dt=0.05, n_steps=60,
                                       max_spikes=1, backend=backend)
        return float(out.spike_times[0, 0])

    h = 1e-4
    fd = (t_cpu(120.0 + h) - t_cpu(120.0 - h)) / (2 * h)
    assert g_na.grad[0] < 0  # more sodium conductance, earlier spike
    np.testing.assert_allclose(float(g_na.grad[0]), fd, rtol=1e-5)


def test_ion_simulate_takes_tensors_and_returns_tensors():
    n = 3
    v0 = torch.full((n,), -65.0, dtype=torch.float64)
    args = (v0, torch.tensor(HH.initial_states(n)), torch.tensor(HH.default_params(n)),
            torch.full((n,), 10.0, dtype=torch.float64))
    out = fusekit.ops.ion_simulate(*args, channels=HH, dt=0.025, n_steps=100,
                                   record_every=10, max_spikes=1, backend="reference")
    assert isinstance(out.v, torch.Tensor) and out.v_record.shape == (10, n)
    ref = ion_simulate_reference(*(a.numpy() for a in args), channels=HH, dt=0.025,
                                 n_steps=100, record_every=10, max_spikes=1)
    np.testing.assert_allclose(out.v.numpy(), ref[0], rtol=1e-15)


def test_ion_simulate_with_grad_returns_differentiable_tensors():
    p = torch.tensor(HH.default_params(1), requires_grad=True)
    out = fusekit.ops.ion_simulate(torch.full((1,), -65.0, dtype=torch.float64),
                                   torch.tensor(HH.initial_states(1)), p,
                                   torch.zeros(1, dtype=torch.float64), channels=HH, dt=0.025,
                                   n_steps=1)
    out.v.sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
