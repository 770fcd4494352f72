"""Spiking layers with surrogate gradients: HHLayer, LIFLayer, LeakyReadout, SuperSpike."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.func import functional_call  # noqa: E402

from fusekit import InputError  # noqa: E402
from fusekit.neuro import (  # noqa: E402
    ChannelSet,
    HHLayer,
    LeakyReadout,
    LIFLayer,
    SpikingClassifier,
    SuperSpike,
)
from fusekit.ops.ion import ion_simulate_reference  # noqa: E402

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Per-step ops on a few neurons: a second thread only adds synchronisation (and on a
    loaded machine costs 2-10x)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ SuperSpike


def test_superspike_is_heaviside_forward_and_the_fast_sigmoid_derivative_backward():
    slope = 0.7
    x = torch.tensor([-30.0, -1.5, -1e-9, 0.0, 2.0, 40.0], dtype=F64, requires_grad=True)
    s = SuperSpike(slope)(x)
    assert s.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    s.backward(torch.arange(1.0, 7.0, dtype=F64))
    expected = [k / (1 + slope * abs(v)) ** 2 for k, v in zip(range(1, 7), x.tolist(),
                                                                  strict=True)]
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-15)


def test_superspike_surrogate_is_the_derivative_of_its_smooth_form():
    spike = SuperSpike(0.3)
    x = torch.linspace(-20, 20, 41, dtype=F64, requires_grad=True)
    (g_smooth,) = torch.autograd.grad(spike.smooth(x).sum(), x)
    (g_surrogate,) = torch.autograd.grad(spike(x).sum(), x)
    np.testing.assert_allclose(g_surrogate.numpy(), g_smooth.numpy(), rtol=1e-14)
    assert torch.autograd.gradcheck(spike.smooth, (x[x != 0].detach().requires_grad_(),))


# ------------------------------------------------------------------------------ HHLayer


def ion_simulate_of_layer(layer, x):
    """The layer's currents run through the float64 NumPy oracle of ion_simulate."""
    T, batch = x.shape[:2]
    n = batch * layer.n_out
    with torch.no_grad():
        i_ext = layer.currents("test", x).reshape(T, n).numpy()
    cs = layer.channels
    v0 = np.full(n, float(layer.v_rest))
    P = np.repeat(layer.cell_params.numpy()[:, None], n, axis=1)
    S = np.repeat(layer.states_rest.numpy()[:, None], n, axis=1)
    _, _, v_record, count, times = ion_simulate_reference(
        v0, S, P, i_ext, channels=cs, dt=layer.dt, n_steps=T, record_every=1,
        spike_threshold=layer.spike_threshold, max_spikes=T)
    return v0, v_record.reshape(T, batch, -1), count.reshape(batch, -1), times


ENGINES = ["kernel", "torch"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("params", [None, {"g_na": 100.0, "g_k": 30.0}])
def test_hh_layer_voltages_and_spikes_equal_ion_simulate(params, engine):
    layer = HHLayer(3, 4, dt=0.1, current_mean=8.0, generator=gen(1), dtype=F64, params=params,
                    engine=engine)
    x = torch.rand(150, 2, 3, generator=gen(2), dtype=F64) * 2.0
    spikes, v = layer(x, return_v=True)
    v0, v_ref, count_ref, times = ion_simulate_of_layer(layer, x)
    np.testing.assert_allclose(v.detach().numpy(), v_ref, rtol=1e-13, atol=1e-11)
    np.testing.assert_array_equal(spikes.sum(0).detach().numpy(), count_ref)
    assert count_ref.sum() >= 4  # the comparison covers spikes
    # Spikes at the steps within which ion_simulate interpolated its crossings.
    got = spikes.detach().numpy().reshape(x.shape[0], -1)
    for neuron in range(got.shape[1]):
        t_cross = times[:, neuron][np.isfinite(times[:, neuron])]
        np.testing.assert_array_equal(np.nonzero(got[:, neuron])[0],
                                      np.floor(t_cross / layer.dt).astype(int))


def test_hh_layer_fires_once_per_upward_crossing():
    layer = HHLayer(1, 1, dt=0.05, dtype=F64, current_mean=0.0)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    x = torch.full((600, 1, 1), 0.5, dtype=F64)  # 10 uA/cm^2 for 30 ms
    with torch.no_grad():
        spikes, v = layer(x, return_v=True)
    v = v[:, 0, 0]
    prev = torch.cat([torch.tensor([-65.0], dtype=F64), v[:-1]])
    crossings = (prev < 0) & (v >= 0)
    np.testing.assert_array_equal(spikes[:, 0, 0].numpy(), crossings.double().numpy())
    assert 2 <= int(crossings.sum()) <= 4 and set(spikes.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("engine", ENGINES)
def test_hh_layer_gradients_pass_gradcheck_with_a_smooth_spike_function(engine):
    layer = HHLayer(2, 2, dt=0.1, spike=SuperSpike(0.1).smooth, generator=gen(3), dtype=F64,
                    engine=engine)
    x = torch.rand(8, 1, 2, generator=gen(4), dtype=F64, requires_grad=True)

    def run(weight, bias, x):
        spikes, v = functional_call(layer, {"weight": weight, "bias": bias}, (x,),
                                    {"return_v": True})
        return spikes, v

    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(run, (w, b, x), atol=1e-6, rtol=1e-5)


def hh_rest_conductance(v):
    """sum_c g_c at steady-state gates, HH written out by hand (NEURON's hh.mod), mS/cm^2."""
    def rates(a, b):
        return a / (a + b)

    am = 0.1 * -(v + 40) / (math.exp(-(v + 40) / 10) - 1)
    bm = 4 * math.exp(-(v + 65) / 18)
    ah = 0.07 * math.exp(-(v + 65) / 20)
    bh = 1 / (math.exp(-(v + 35) / 10) + 1)
    an = 0.01 * -(v + 55) / (math.exp(-(v + 55) / 10) - 1)
    bn = 0.125 * math.exp(-(v + 65) / 80)
    m, h, n = rates(am, bm), rates(ah, bh), rates(an, bn)
    g = (120 * m ** 3 * h, 36 * n ** 4, 0.3)
    return sum(g), g[0] * 50 + g[1] * -77 + g[2] * -54.3


def test_hh_surrogate_gradient_of_one_neuron_equals_the_chain_rule_by_hand():
    slope, dt, scale, x_in, w, b = 0.2, 0.1, 20.0, 0.8, 0.6, 0.1
    layer = HHLayer(1, 1, dt=dt, current_scale=scale, spike=SuperSpike(slope), dtype=F64)
    with torch.no_grad():
        layer.weight.fill_(w)
        layer.bias.fill_(b)
    spikes = layer(torch.full((1, 1, 1), x_in, dtype=F64))
    spikes.sum().backward()
    # By hand: I = scale (x w + b); v1 = (v0 + k (sum g E + I)) / (1 + k sum g), k = dt / c_m;
    # the gates start at their steady state at v0, where one Rush-Larsen step leaves them.
    g_sum, ge_sum = hh_rest_conductance(-65.0)
    k = dt / 1.0
    current = scale * (x_in * w + b)
    v1 = (-65.0 + k * (ge_sum + current)) / (1 + k * g_sum)
    dv1_dcurrent = k / (1 + k * g_sum)
    surrogate = 1 / (1 + slope * abs(v1 - 0.0)) ** 2
    assert spikes.item() == 0.0
    np.testing.assert_allclose(layer.weight.grad.item(), surrogate * dv1_dcurrent * scale * x_in,
                               rtol=1e-9)
    np.testing.assert_allclose(layer.bias.grad.item(), surrogate * dv1_dcurrent * scale,
                               rtol=1e-9)


def test_hh_layer_runs_any_channel_set():
    from fusekit.neuro import POSPISCHIL_RS_CHANNELS

    cs = ChannelSet(POSPISCHIL_RS_CHANNELS)
    layer = HHLayer(2, 3, channels=cs, v_rest=-70.0, dt=0.05, generator=gen(5), dtype=F64)
    x = torch.rand(100, 2, 2, generator=gen(6), dtype=F64)
    spikes, v = layer(x, return_v=True)
    _, v_ref, count_ref, _ = ion_simulate_of_layer(layer, x)
    np.testing.assert_allclose(v.detach().numpy(), v_ref, rtol=1e-13, atol=1e-11)
    np.testing.assert_array_equal(spikes.sum(0).detach().numpy(), count_ref)


# ------------------------------------------------------------------------------ LIFLayer


def lif_by_hand(x, weight, bias, scale, dt, c_m, g_leak, e_leak, v_th, v_reset):
    """A float64 loop over time, samples and neurons."""
    T, batch, n_in = x.shape
    n_out = weight.shape[1]
    beta = math.exp(-dt * g_leak / c_m)
    v = np.full((batch, n_out), e_leak)
    spikes, vs = np.zeros((T, batch, n_out)), np.zeros((T, batch, n_out))
    for t in range(T):
        for b in range(batch):
            for j in range(n_out):
                current = scale * (sum(x[t, b, i] * weight[i, j] for i in range(n_in)) + bias[j])
                u = e_leak + (v[b, j] - e_leak) * beta + (1 - beta) * current / g_leak
                if u >= v_th:
                    spikes[t, b, j], u = 1.0, v_reset
                v[b, j] = vs[t, b, j] = u
    return spikes, vs


def test_lif_layer_equals_a_hand_written_loop():
    kw = dict(dt=0.5, c_m=1.2, g_leak=0.15, e_leak=-60.0, v_threshold=-52.0, v_reset=-63.0)
    layer = LIFLayer(3, 4, current_scale=5.0, current_mean=2.0, generator=gen(7), dtype=F64,
                     **kw)
    x = torch.rand(60, 2, 3, generator=gen(8), dtype=F64)
    spikes, v = layer(x, return_v=True)
    ref_spikes, ref_v = lif_by_hand(x.numpy(), layer.weight.detach().numpy(),
                                    layer.bias.detach().numpy(), 5.0, kw["dt"], kw["c_m"],
                                    kw["g_leak"], kw["e_leak"], kw["v_threshold"], kw["v_reset"])
    np.testing.assert_array_equal(spikes.detach().numpy(), ref_spikes)
    np.testing.assert_allclose(v.detach().numpy(), ref_v, rtol=1e-13, atol=1e-12)
    assert 5 <= ref_spikes.sum() < ref_spikes.size / 2


def test_lif_surrogate_gradient_of_one_neuron_equals_the_chain_rule_by_hand():
    slope, dt, g_leak, scale, x_in = 0.5, 0.25, 0.1, 4.0, 0.9
    layer = LIFLayer(1, 1, dt=dt, g_leak=g_leak, current_scale=scale, spike=SuperSpike(slope),
                     dtype=F64)
    with torch.no_grad():
        layer.weight.fill_(1.5)
        layer.bias.fill_(0.0)
    layer(torch.full((1, 1, 1), x_in, dtype=F64)).sum().backward()
    beta = math.exp(-dt * g_leak)
    u1 = -65.0 + (1 - beta) * scale * 1.5 * x_in / g_leak
    expected = 1 / (1 + slope * abs(u1 + 50.0)) ** 2 * (1 - beta) / g_leak * scale * x_in
    np.testing.assert_allclose(layer.weight.grad.item(), expected, rtol=1e-12)


def test_lif_gradients_pass_gradcheck_with_a_smooth_spike_and_differentiated_reset():
    layer = LIFLayer(2, 2, dt=1.0, spike=SuperSpike(0.5).smooth, detach_reset=False,
                     current_scale=30.0, generator=gen(9), dtype=F64)
    x = torch.rand(8, 2, 2, generator=gen(10), dtype=F64, requires_grad=True)

    def run(weight, bias, x):
        return functional_call(layer, {"weight": weight, "bias": bias}, (x,), {"return_v": True})

    params = [p.detach().clone().requires_grad_() for p in (layer.weight, layer.bias)]
    assert torch.autograd.gradcheck(run, (*params, x))


def test_lif_detached_reset_lets_no_gradient_through_the_reset():
    layer = LIFLayer(1, 1, dtype=F64, current_mean=0.0)
    with torch.no_grad():
        layer.weight.fill_(10.0)  # fires within a few steps
    x = torch.ones(40, 1, 1, dtype=F64)
    spikes, v = layer(x, return_v=True)
    t_first = int(spikes[:, 0, 0].nonzero()[0])
    (g,) = torch.autograd.grad(v[t_first, 0, 0], layer.weight)
    assert v[t_first, 0, 0].item() == -65.0 and g.item() == 0.0


# ------------------------------------------------------------------------------ readout, network


def test_leaky_readout_sums_the_leaky_integral_of_the_spikes():
    readout = LeakyReadout(3, 2, dt=0.5, tau=4.0, generator=gen(11), dtype=F64)
    spikes = (torch.rand(30, 2, 3, generator=gen(12), dtype=F64) < 0.2).double()
    logits = readout(spikes)
    beta = math.exp(-0.5 / 4.0)
    w, b = readout.weight.detach().numpy(), readout.bias.detach().numpy()
    u, total = np.zeros((2, 2)), np.zeros((2, 2))
    for t in range(30):
        u = beta * u + (1 - beta) * spikes[t].numpy() @ w
        total += u
    np.testing.assert_allclose(logits.detach().numpy(), total + b, rtol=1e-13)
    params = [p.detach().clone().requires_grad_() for p in (readout.weight, readout.bias)]
    spikes.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda w, b, s: functional_call(readout, {"weight": w, "bias": b}, (s,)),
        (*params, spikes))


@pytest.mark.parametrize("kind", [HHLayer, LIFLayer])
def test_a_tiny_spiking_classifier_learns(kind):
    torch.manual_seed(0)
    g = gen(13)
    X = torch.rand(24, 4, generator=g)
    y = (X[:, 0] + X[:, 1] > X[:, 2] + X[:, 3]).long()
    net = SpikingClassifier(kind(4, 8, dt=0.2, generator=g), LeakyReadout(8, 2, dt=0.2,
                                                                          generator=g), 50)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(net(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert losses[-1] < 0.8 * losses[0]


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("kind", [HHLayer, LIFLayer])
@pytest.mark.parametrize(("x", "match"), [
    (torch.zeros(5, 3), "shape \\(T, batch, n_in\\)"),
    (torch.zeros(5, 2, 4), "shape \\(T, batch, n_in\\) = \\(T, batch, 3\\)"),
    (torch.zeros(5, 2, 3, dtype=F64), "dtype torch.float64 differs"),
    (np.zeros((5, 2, 3), np.float32), "must be a torch tensor"),
])
def test_layers_refuse_malformed_input(kind, x, match):
    with pytest.raises(InputError, match=match):
        kind(3, 2)(x)


def test_bad_layer_settings_get_clear_errors():
    with pytest.raises(InputError, match="slope must be a positive"):
        SuperSpike(0.0)
    with pytest.raises(InputError, match="dt must be a positive finite number"):
        HHLayer(2, 2, dt=0.0)
    with pytest.raises(InputError, match="HHLayer: dt = 0.5 ms is more than 2 times the fastest"):
        HHLayer(2, 2, dt=0.5)  # the ops' limit: HH loses spikes at such steps
    with pytest.raises(InputError, match="HHLayer: current_scale must be a positive"):
        HHLayer(2, 2, current_scale=-1.0)
    with pytest.raises(InputError, match="v_reset .* must lie below v_threshold"):
        LIFLayer(2, 2, v_reset=-40.0, v_threshold=-50.0)
    with pytest.raises(InputError, match="g_leak must be a positive"):
        LIFLayer(2, 2, g_leak=0.0)
    with pytest.raises(InputError, match="n_steps must be a positive integer"):
        SpikingClassifier(LIFLayer(2, 2), LeakyReadout(2, 2), 0)
    with pytest.raises(InputError, match=r"input must be a tensor \(batch, n_in\)"):
        SpikingClassifier(LIFLayer(2, 2), LeakyReadout(2, 2), 3)(torch.zeros(4, 1, 2))


@pytest.mark.parametrize("make, match", [
    (lambda: HHLayer(4, 3, v_rest=float("nan")), "v_rest must be a finite number"),
    (lambda: HHLayer(4, 3, params={"c_m": 0.0}), "HHLayer: params row 0 .c_m"),
    (lambda: HHLayer(4, 3, params={"g_na": -10.0}), "HHLayer: params row 1 .g_na"),
    (lambda: HHLayer(4, 3, spike_threshold=float("nan")), "spike_threshold must be a finite"),
    (lambda: HHLayer(4, 3, current_mean=float("nan")), "current_mean must be a finite"),
    (lambda: HHLayer(-1, 3), "n_in must be a positive integer"),
    (lambda: HHLayer(2.5, 3), "n_in must be a positive integer"),
    (lambda: LIFLayer(4, 3, e_leak=float("nan")), "e_leak must be a finite number"),
    (lambda: LIFLayer(4, 3, dt=float("inf")), "dt must be a positive finite number"),
    (lambda: LeakyReadout(3, 2, tau=float("inf")), "tau must be a positive finite number"),
    (lambda: SpikingClassifier(LIFLayer(2, 2), LeakyReadout(2, 2), 2.7),
     "n_steps must be a positive integer, got 2.7"),
])
def test_bad_layer_numbers_are_refused(make, match):
    with pytest.raises(InputError, match=match):
        make()


@pytest.mark.parametrize("engine", ["kernel", "torch"])
def test_layers_refuse_nan_input_and_zero_steps(engine):
    hh = HHLayer(4, 3, engine=engine)
    for layer, name in ((hh, "HHLayer"), (LIFLayer(4, 3), "LIFLayer")):
        with pytest.raises(InputError, match=f"{name}: input contains NaN or infinity"):
            layer(torch.full((5, 2, 4), float("nan")))
        with pytest.raises(InputError, match=f"{name}: input has no time steps"):
            layer(torch.rand(0, 2, 4))


@pytest.mark.parametrize("dtype,rtol", [(F64, 1e-9), (torch.float32, 2e-3)])
def test_hh_layer_engines_give_the_same_spikes_voltages_and_gradients(dtype, rtol):
    # The compiled kernel with its adjoint against the step-by-step torch graph, on a layer
    # that spikes, surrogate gradients through the spikes into the weights and the input.
    x = torch.rand(120, 3, 5, generator=gen(7), dtype=dtype)
    results = {}
    for engine in ENGINES:
        layer = HHLayer(5, 6, dt=0.1, current_mean=6.0, generator=gen(8), dtype=dtype,
                        engine=engine)
        xi = x.clone().requires_grad_()
        spikes, v = layer(xi, return_v=True)
        loss = (spikes * torch.linspace(0.5, 1.5, 120, dtype=dtype)[:, None, None]).sum() \
            + 1e-3 * v.square().mean()
        loss.backward()
        results[engine] = (spikes.detach(), v.detach(), layer.weight.grad, layer.bias.grad,
                           xi.grad)
    k, t = results["kernel"], results["torch"]
    assert float(k[0].sum()) >= 10  # spikes, so the surrogate path is exercised
    np.testing.assert_array_equal(k[0].numpy(), t[0].numpy())
    np.testing.assert_allclose(k[1].numpy(), t[1].numpy(), rtol=rtol, atol=rtol * 1e-2)
    for a, b in zip(k[2:], t[2:], strict=True):
        scale = float(b.abs().max())
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=rtol, atol=rtol * scale)


def test_hh_layer_engine_is_checked_and_shown():
    with pytest.raises(InputError, match="engine"):
        HHLayer(2, 2, engine="numba")
    assert "engine='auto'" in repr(HHLayer(2, 2))
