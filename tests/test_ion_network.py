"""network_simulate: HH neurons with CSR synapses, event-driven, against the reference."""

import math
import shutil

import numpy as np
import pytest

import fusekit
from fusekit.neuro import HH_CHANNELS, ChannelSet, random_connectivity

HH = ChannelSet(HH_CHANNELS)
CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]


def population(n, seed=0):
    rng = np.random.default_rng(seed)
    v0 = rng.uniform(-70.0, -60.0, n)
    return v0, HH.steady_states(v0), HH.default_params(n), rng


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_without_synapses_it_is_ion_simulate(backend):
    n = 20
    v0, S, P, rng = population(n)
    i_ext = rng.uniform(0, 15, n)
    kw = dict(channels=HH, dt=0.025, n_steps=300, record_every=30, max_spikes=3,
              backend=backend)
    net = fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(n), np.zeros(n + 1, int),
                                       np.zeros(0, int), np.zeros(0), delay_steps=7, **kw)
    single = fusekit.ops.ion_simulate(v0, S, P, i_ext, **kw)
    for name in ("v", "states", "v_record", "spike_count", "spike_times"):
        np.testing.assert_allclose(getattr(net, name), getattr(single, name), rtol=1e-12)


def test_cpu_matches_reference_on_a_random_excitatory_network():
    n = 300
    v0, S, P, rng = population(n, seed=1)
    i_ext = np.where(np.arange(n) < 30, 15.0, 0.0)  # a tenth of the neurons are driven
    indptr, indices, weights = random_connectivity(n, 0.05, 0.4, rng)
    kw = dict(channels=HH, dt=0.025, n_steps=1200, delay_steps=40, tau_syn=3.0, e_syn=0.0,
              record_every=100, max_spikes=5)
    got = fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(n), indptr, indices, weights,
                                       backend="cpu", **kw)
    ref = fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(n), indptr, indices, weights,
                                       backend="reference", **kw)
    assert ref.spike_count[30:].sum() > 0  # undriven neurons fire from synaptic input
    np.testing.assert_array_equal(got.spike_count, ref.spike_count)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_spike_arrives_exactly_delay_steps_later(backend):
    dt, delay, w = 0.025, 12, 0.7
    v0, S, P, _ = population(2)
    i_ext = np.array([20.0, 0.0])
    csr = (np.array([0, 1, 1]), np.array([1]), np.array([w]))

    def run(n_steps):
        return fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(2), *csr, channels=HH,
                                            dt=dt, n_steps=n_steps, delay_steps=delay,
                                            tau_syn=2.0, max_spikes=1, backend=backend)

    k = int(run(400).spike_times[0, 0] // dt)  # the step in which neuron 0 crossed 0 mV
    assert run(k + delay).g_syn[1] == 0.0
    np.testing.assert_allclose(run(k + delay + 1).g_syn[1], w, rtol=1e-15)
    np.testing.assert_allclose(run(k + delay + 3).g_syn[1], w * math.exp(-2 * dt / 2.0),
                               rtol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(indptr=np.array([0, 2, 1, 1])), "indptr must start at 0, never decrease"),
    (dict(indices=np.array([0, 5])), r"indices \(postsynaptic neurons\) must lie in"),
    (dict(delay_steps=0), "delay_steps must be an integer >= 1"),
    (dict(tau_syn=0.0), "tau_syn must be a positive"),
    (dict(weights=np.array([0.1, -0.1])), "inhibitory with its reversal potential e_syn"),
])
def test_bad_connectivity_is_refused(kwargs, match):
    v0, S, P, _ = population(3)
    args = dict(indptr=np.array([0, 1, 2, 2]), indices=np.array([1, 2]),
                weights=np.array([0.1, 0.1]), delay_steps=4, tau_syn=3.0)
    args.update(kwargs)
    with pytest.raises(fusekit.InputError, match=match):
        fusekit.ops.network_simulate(v0, S, P, np.zeros(3), np.zeros(3), args["indptr"],
                                     args["indices"], args["weights"], channels=HH, dt=0.025,
                                     n_steps=2, delay_steps=args["delay_steps"],
                                     tau_syn=args["tau_syn"], backend="reference")


class DeviceOnly:
    """An int array that, like CuPy's, refuses to become a NumPy array (only its own ops)."""

    def __init__(self, a):
        self._a = np.asarray(a)
        self.shape, self.ndim, self.dtype = self._a.shape, self._a.ndim, self._a.dtype

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")

    def __getitem__(self, key):
        return DeviceOnly(self._a[key])

    def __lt__(self, other):
        return DeviceOnly(self._a < other._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def any(self):
        return DeviceOnly(self._a.any())

    def min(self):
        return DeviceOnly(self._a.min())

    def max(self):
        return DeviceOnly(self._a.max())


@pytest.mark.parametrize("indptr, indices, types, match", [
    ([0, 1, 2, 2], [1, 2], [0, 1], None),
    ([0, 2, 1, 2], [1, 2], [0, 1], "indptr must start at 0, never decrease"),
    ([0, 1, 2, 2], [1, 3], [0, 1], r"indices \(postsynaptic neurons\) must lie in"),
    ([0, 1, 2, 2], [1, 2], [0, 2], r"synapse_type must lie in \[0, 2\)"),
])
def test_connectivity_checks_never_copy_to_the_host(indptr, indices, types, match):
    """The op's checks of the CSR arrays and synapse types run on device arrays (CuPy)."""
    from fusekit.ops.ion import _check_network_simulate

    v0, S, P, _ = population(3)
    args = (v0, S, P, np.zeros(3), np.zeros((2, 3)), DeviceOnly(np.array(indptr)),
            DeviceOnly(np.array(indices)), np.array([0.1, 0.1]), np.zeros((4, 2, 3)),
            DeviceOnly(np.array(types)))
    kw = dict(channels=HH, dt=0.025, n_steps=2, delay_steps=4, tau_syn=(3.0, 8.0),
              e_syn=(0.0, -80.0))
    if match is None:
        assert _check_network_simulate(*args, **kw) == "float64"
    else:
        with pytest.raises(fusekit.InputError, match=match):
            _check_network_simulate(*args, **kw)


def test_network_object_wraps_the_op_and_keeps_state():
    import scipy.sparse as sp

    from fusekit.neuro import Network

    n = 30
    W = sp.random(n, n, density=0.1, format="csr", random_state=3) * 0.5
    net = Network(HH_CHANNELS, W, delay=0.5, tau_syn=3.0)
    net.i_ext[:5] = 15.0
    first = net.run(10.0, backend="reference", max_spikes=4)
    assert net.t == pytest.approx(10.0) and first.spike_count[:5].min() >= 1
    second = net.run(5.0, backend="reference", max_spikes=4)
    fired = second.spike_count > 0
    assert (second.spike_times[0, fired] >= 10.0).all()
    v0 = np.full(n, -65.0)
    direct = fusekit.ops.network_simulate(
        v0, HH.steady_states(v0), HH.default_params(n), net.i_ext, np.zeros(n), W.indptr,
        W.indices, W.data, channels=HH, dt=0.025, n_steps=400, delay_steps=20, tau_syn=3.0,
        max_spikes=4, backend="reference")
    np.testing.assert_allclose(first.v, direct.v, rtol=1e-12)


# ------------------------------------------------------------------ network_simulate_torch

torch = pytest.importorskip("torch")


def _torch_run(v0, S, P, i_ext, indptr, indices, weights, **kw):
    from fusekit.neuro import network_simulate_torch

    t = torch.as_tensor
    return network_simulate_torch(HH, t(v0), t(S), t(P), t(i_ext), torch.zeros(len(v0),
                                  dtype=torch.float64), indptr, indices, weights, **kw)


def test_torch_network_matches_the_reference_forward():
    n = 40
    v0, S, P, rng = population(n, seed=3)
    i_ext = np.where(np.arange(n) < 8, 14.0, 0.0)
    indptr, indices, weights = random_connectivity(n, 0.15, 0.3, rng)
    kw = dict(dt=0.025, n_steps=600, delay_steps=40, tau_syn=3.0, e_syn=0.0, record_every=60,
              max_spikes=4)
    ref = fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(n), indptr, indices, weights,
                                       channels=HH, backend="reference", **kw)
    got = _torch_run(v0, S, P, i_ext, indptr, indices, torch.as_tensor(weights), **kw)
    assert ref.spike_count[8:].sum() > 0  # undriven neurons fire from synaptic input
    np.testing.assert_array_equal(got.spike_count.numpy(), ref.spike_count)
    for name in ("v", "states", "g_syn", "v_record", "spike_times"):
        np.testing.assert_allclose(getattr(got, name).detach().numpy(), getattr(ref, name),
                                   rtol=1e-9, atol=1e-9, err_msg=name)


def test_weight_gradients_pass_gradcheck_where_no_spike_depends_on_them():
    # neurons 0-2 are driven and receive nothing, so their spikes do not depend on the
    # weights; neurons 3-5 only receive weak synapses and stay below threshold: the mean
    # potential of 3-5 is a smooth function of the weights
    n = 6
    v0 = np.full(n, -65.0)
    S, P = HH.steady_states(v0), HH.default_params(n)
    i_ext = np.array([12.0, 14.0, 16.0, 0.0, 0.0, 0.0])
    indptr = np.array([0, 2, 4, 6, 6, 6, 6])
    indices = np.array([3, 4, 4, 5, 3, 5])
    w0 = torch.tensor([0.02, 0.03, 0.01, 0.02, 0.015, 0.025], dtype=torch.float64)

    def mean_post_v(w):
        out = _torch_run(v0, S, P, i_ext, indptr, indices, w, dt=0.05, n_steps=240,
                         delay_steps=10, tau_syn=2.0, record_every=1)
        return out.v_record[:, 3:].mean()

    out = _torch_run(v0, S, P, i_ext, indptr, indices, w0, dt=0.05, n_steps=240,
                     delay_steps=10, tau_syn=2.0, record_every=1)
    assert out.spike_count[:3].min() >= 1 and out.spike_count[3:].sum() == 0
    assert torch.autograd.gradcheck(mean_post_v, (w0.clone().requires_grad_(),), eps=1e-6,
                                    atol=1e-7)


def test_surrogate_gradients_reach_the_weights_onto_a_firing_neuron():
    n = 2  # 0 drives 1 strongly enough to fire it; d(spike count of 1)/dw is 0 exactly, but
    # the spike time of neuron 1 moves with w, and the surrogate carries the rest
    v0 = np.full(n, -65.0)
    S, P = HH.steady_states(v0), HH.default_params(n)
    w = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    out = _torch_run(v0, S, P, np.array([15.0, 0.0]), np.array([0, 1, 1]), np.array([1]), w,
                     dt=0.025, n_steps=800, delay_steps=20, max_spikes=1, record_every=1)
    assert int(out.spike_count[1]) >= 1
    out.spike_times[0, 1].backward()  # an earlier spike for a stronger synapse
    assert torch.isfinite(w.grad).all() and float(w.grad) < 0


def test_torch_network_rejects_numpy_weights_and_mismatched_csr():
    from fusekit.neuro import network_simulate_torch

    t = torch.zeros(2, dtype=torch.float64)
    S, P = torch.tensor(HH.initial_states(2)), torch.tensor(HH.default_params(2))
    with pytest.raises(fusekit.InputError, match="weights must be a torch tensor"):
        network_simulate_torch(HH, t, S, P, t, t, [0, 1, 1], [1], np.array([0.1]), dt=0.025,
                               n_steps=2, delay_steps=1)
    with pytest.raises(fusekit.InputError, match="indptr must be"):
        network_simulate_torch(HH, t, S, P, t, t, [0, 1], [1], torch.tensor([0.1],
                               dtype=torch.float64), dt=0.025, n_steps=2, delay_steps=1)
    with pytest.raises(fusekit.InputError, match="indices lie in"):
        network_simulate_torch(HH, t, S, P, t, t, [0, 1, 1], [2], torch.tensor([0.1],
                               dtype=torch.float64), dt=0.025, n_steps=2, delay_steps=1)


def test_channels_that_branch_take_the_one_loop_network_kernel():
    # The staged network kernel runs the traced step; a channel that branches on v cannot be
    # traced, so its network runs the kernel that calls the compiled channel functions.
    from branchy_channel import Branchy
    from fusekit.backends.cpu import ion as cpu_ion

    cs = ChannelSet([*HH_CHANNELS, Branchy])
    n = 40
    rng = np.random.default_rng(3)
    v0 = rng.uniform(-70.0, -60.0, n)
    indptr, indices, weights = random_connectivity(n, 0.2, 0.3, rng)
    i_ext = np.where(np.arange(n) < 8, 15.0, 0.0)
    kw = dict(channels=cs, dt=0.025, n_steps=600, delay_steps=20, tau_syn=3.0, e_syn=0.0,
              record_every=50, max_spikes=4)
    args = (v0, cs.steady_states(v0), cs.default_params(n), i_ext, np.zeros(n), indptr,
            indices, weights)
    got = fusekit.ops.network_simulate(*args, backend="cpu", **kw)
    ref = fusekit.ops.network_simulate(*args, backend="reference", **kw)
    assert ref.spike_count[8:].sum() > 0
    np.testing.assert_array_equal(got.spike_count, ref.spike_count)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    assert ("network", cs.key, "float64") in cpu_ion._kernels
    assert ("network_staged", cs.key, "float64") not in cpu_ion._kernels


def test_traced_channels_run_the_staged_network_kernel():
    from fusekit.backends.cpu import ion as cpu_ion

    text, n_spill, _ = cpu_ion.network_staged_source(HH)
    assert n_spill > 0 and text.count("for j in range(w):") >= 3 + 4  # stages + the rest
    assert "EXP(" in text and "c0_alpha_m(" not in text  # traced lines, no channel calls
    v0, S, P, rng = population(30, seed=4)
    indptr, indices, weights = random_connectivity(30, 0.1, 0.3, rng)
    fusekit.ops.network_simulate(v0, S, P, np.full(30, 10.0), np.zeros(30), indptr, indices,
                                 weights, channels=HH, dt=0.025, n_steps=20, delay_steps=5,
                                 backend="cpu")
    assert ("network_staged", HH.key, "float64") in cpu_ion._kernels


def _saved_bytes(fn):
    """Peak bytes of the tensors autograd saves (outside checkpointed segments) while fn runs."""
    live, peak, seen = [0], [0], set()

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            live[0] += t.untyped_storage().nbytes()
            peak[0] = max(peak[0], live[0])
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, peak[0]


def test_checkpointed_network_gives_the_same_results_and_gradients_in_less_memory():
    n = 30
    v0, S, P, rng = population(n, seed=5)
    i_ext = np.where(np.arange(n) < 6, 14.0, 0.0)
    indptr, indices, weights = random_connectivity(n, 0.2, 0.3, rng)
    kw = dict(dt=0.025, n_steps=400, delay_steps=20, tau_syn=3.0, record_every=10,
              max_spikes=3)

    def run(checkpoint_every):
        w = torch.tensor(weights, requires_grad=True)
        g = torch.tensor(P, requires_grad=True)

        def forward():
            return _torch_run(v0, S, g, i_ext, indptr, indices, w,
                              checkpoint_every=checkpoint_every, engine="torch", **kw)

        out, saved = _saved_bytes(forward)
        loss = out.v_record.square().mean() + torch.nan_to_num(out.spike_times).sum()
        return out, torch.autograd.grad(loss, (w, g)), saved

    full, grads_full, saved_full = run(0)
    assert full.spike_count[6:].sum() > 0  # spikes cross segment boundaries too
    for k in (7, 20, 400):
        seg, grads_seg, saved_seg = run(k)
        np.testing.assert_array_equal(seg.spike_count.numpy(), full.spike_count.numpy())
        for name in ("v", "states", "g_syn", "v_record", "spike_times"):
            np.testing.assert_allclose(getattr(seg, name).detach().numpy(),
                                       getattr(full, name).detach().numpy(), rtol=1e-12,
                                       err_msg=name)
        for a, b in zip(grads_seg, grads_full, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-14)
        if k == 20:  # about sqrt(400): a small fraction of the full history's memory
            assert saved_seg < saved_full / 5, (saved_seg, saved_full)


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "clang++", "c++")),
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_membrane_gives_the_eager_results_and_gradients():
    # torch.compile of each step's channels and voltage update (about 20 s to compile the
    # first time in a process on 2 cores); inductor may reorder float operations.
    n = 20
    v0, S, P, rng = population(n, seed=9)
    i_ext = np.where(np.arange(n) < 5, 14.0, 0.0)
    indptr, indices, weights = random_connectivity(n, 0.2, 0.3, rng)
    kw = dict(dt=0.025, n_steps=300, delay_steps=20, record_every=10, max_spikes=3)

    def run(compile):
        w = torch.tensor(weights, requires_grad=True)
        out = _torch_run(v0, S, P, i_ext, indptr, indices, w, compile=compile, **kw)
        loss = out.v_record.square().mean() + torch.nan_to_num(out.spike_times).sum()
        return out, torch.autograd.grad(loss, w)[0]

    eager, g_eager = run(False)
    compiled, g_compiled = run(True)
    assert eager.spike_count[5:].sum() > 0
    np.testing.assert_array_equal(compiled.spike_count.numpy(), eager.spike_count.numpy())
    for name in ("v", "states", "g_syn", "v_record", "spike_times"):
        np.testing.assert_allclose(getattr(compiled, name).detach().numpy(),
                                   getattr(eager, name).detach().numpy(), rtol=1e-10,
                                   atol=1e-10, err_msg=name)
    np.testing.assert_allclose(g_compiled.numpy(), g_eager.numpy(), rtol=1e-8, atol=1e-12)
    with pytest.raises(fusekit.InputError, match="compile must be True or False"):
        _torch_run(v0, S, P, i_ext, indptr, indices, torch.tensor(weights), compile="yes",
                   **kw)


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_checkpoint_every_must_be_a_non_negative_int(bad):
    v0, S, P, _ = population(2)
    args = (v0, S, P, np.zeros(2), np.array([0, 1, 1]), np.array([1]),
            torch.tensor([0.1], dtype=torch.float64))
    kw = dict(dt=0.025, n_steps=10, delay_steps=2)
    with pytest.raises(fusekit.InputError, match="checkpoint_every"):
        _torch_run(*args, **kw, checkpoint_every=bad)
    # NumPy integers are whole numbers too (np.int64(4) was refused before session 22)
    out = _torch_run(*args, **kw, checkpoint_every=np.int64(4))
    ref = _torch_run(*args, **kw, checkpoint_every=4)
    np.testing.assert_array_equal(out.v.detach().numpy(), ref.v.detach().numpy())


# ------------------------------------------------------------------- spikes in flight


def _chain_network(n=12, seed=7):
    # neurons 0-2 driven; every neuron excites the next three, so spikes are in flight at
    # most times
    v0, S, P, rng = population(n, seed=seed)
    rows = [[(j + d) % n for d in (1, 2, 3)] for j in range(n)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    indices = np.concatenate(rows)
    weights = rng.uniform(0.2, 0.5, indices.shape[0])
    i_ext = np.where(np.arange(n) < 3, 15.0, 0.0)
    return (v0, S, P, i_ext, np.zeros(n), indptr, indices, weights)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("first", [5, 40, 113])  # below, at and off a multiple of the delay
def test_a_run_in_two_calls_equals_one_call(backend, first):
    args = _chain_network()
    kw = dict(channels=HH, dt=0.025, delay_steps=40, tau_syn=3.0, max_spikes=8,
              backend=backend)
    whole = fusekit.ops.network_simulate(*args, n_steps=400, **kw)
    a = fusekit.ops.network_simulate(*args, n_steps=first, **kw)
    assert a.arrivals.shape == (40, 12)
    b = fusekit.ops.network_simulate(a.v, a.states, args[2], args[3], a.g_syn, *args[5:],
                                     n_steps=400 - first, arrivals0=a.arrivals, **kw)
    assert whole.spike_count[3:].sum() > 0
    np.testing.assert_array_equal(a.spike_count + b.spike_count, whole.spike_count)
    for name in ("v", "states", "g_syn", "arrivals"):
        np.testing.assert_allclose(getattr(b, name), getattr(whole, name), rtol=1e-12,
                                   atol=1e-15, err_msg=name)


def test_cpu_arrivals_equal_the_reference_and_spikes_were_in_flight():
    args = _chain_network(seed=8)
    kw = dict(channels=HH, dt=0.025, n_steps=333, delay_steps=40, tau_syn=3.0)
    got = fusekit.ops.network_simulate(*args, backend="cpu", **kw)
    ref = fusekit.ops.network_simulate(*args, backend="reference", **kw)
    assert ref.arrivals.max() > 0  # the test needs spikes in flight at the end
    np.testing.assert_allclose(got.arrivals, ref.arrivals, rtol=1e-12)


def test_network_object_runs_in_pieces_like_one_run():
    from fusekit.neuro import Network

    v0, S, P, i_ext, _, indptr, indices, weights = _chain_network()

    def net():
        n = Network(HH, (indptr, indices, weights), delay=1.0, tau_syn=3.0)
        n.v, n.states, n.i_ext = v0.copy(), S.copy(), i_ext
        return n

    one, pieces = net(), net()
    whole = one.run(10.0)
    counts = sum(pieces.run(d).spike_count for d in (0.125, 3.0, 6.875))
    assert whole.spike_count[3:].sum() > 0
    np.testing.assert_array_equal(counts, whole.spike_count)
    np.testing.assert_allclose(pieces.v, one.v, rtol=1e-12)
    with pytest.raises(fusekit.InputError, match="spikes in flight"):
        if pieces.arrivals.any():
            pieces.run(1.0, dt=0.05)
        else:  # pragma: no cover - the chain keeps spikes in flight
            raise fusekit.InputError("spikes in flight")


@pytest.mark.parametrize("bad,match", [
    (np.zeros((39, 12)), r"arrivals0 must be a \(40, 12\)"),
    (np.full((40, 12), -1.0), "must not be negative"),
    (np.full((40, 12), np.nan), "arrivals0"),
])
def test_bad_arrivals_are_refused(bad, match):
    with pytest.raises(fusekit.InputError, match=match):
        fusekit.ops.network_simulate(*_chain_network(), channels=HH, dt=0.025, n_steps=10,
                                     delay_steps=40, arrivals0=bad, backend="cpu")


def test_torch_network_carries_spikes_in_flight_like_the_op():
    args = _chain_network(seed=9)
    kw = dict(dt=0.025, delay_steps=40, tau_syn=3.0, e_syn=0.0)
    ref = fusekit.ops.network_simulate(*args, channels=HH, n_steps=300, backend="reference",
                                       **kw)
    from fusekit.neuro import network_simulate_torch

    t = torch.as_tensor
    w = t(args[7])
    a = _torch_run(*args[:4], *args[5:7], w, n_steps=170, **kw)
    b = network_simulate_torch(HH, a.v, a.states, t(args[2]), t(args[3]), a.g_syn, *args[5:7],
                               w, n_steps=130, arrivals0=a.arrivals, **kw)
    assert ref.arrivals.max() > 0
    np.testing.assert_allclose(b.arrivals.detach().numpy(), ref.arrivals, rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(b.v.detach().numpy(), ref.v, rtol=1e-9)


# ------------------------------------------------------------------- synapse types


def _ei_network(n=200, seed=11):
    # 80 % excitatory (type 0: 0 mV, 3 ms), 20 % inhibitory (type 1: -80 mV, 8 ms), Dale's
    # law: a neuron's synapses share its type; a fifth of the neurons are driven
    v0, S, P, rng = population(n, seed=seed)
    indptr, indices, weights = random_connectivity(n, 0.08, 0.5, rng)
    kind = (np.arange(n) >= int(0.8 * n)).astype(np.int64)
    types = np.repeat(kind, np.diff(indptr))
    i_ext = np.where(rng.random(n) < 0.2, 15.0, 0.0)
    return (v0, S, P, i_ext, np.zeros((2, n)), indptr, indices, weights), types


EI = dict(tau_syn=[3.0, 8.0], e_syn=[0.0, -80.0])


def test_two_synapse_types_cpu_match_the_reference():
    args, types = _ei_network()
    kw = dict(channels=HH, dt=0.025, n_steps=800, delay_steps=40, record_every=100,
              max_spikes=6, synapse_type=types, **EI)
    got = fusekit.ops.network_simulate(*args, backend="cpu", **kw)
    ref = fusekit.ops.network_simulate(*args, backend="reference", **kw)
    assert ref.g_syn.shape == (2, 200) and ref.arrivals.shape == (40, 2, 200)
    assert (ref.g_syn > 0).any(axis=1).all()  # both types carried conductance
    np.testing.assert_array_equal(got.spike_count, ref.spike_count)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_float32_two_types_follow_the_float64_reference():
    args, types = _ei_network(n=120, seed=12)
    kw = dict(channels=HH, dt=0.025, n_steps=600, delay_steps=40, synapse_type=types, **EI)
    ref = fusekit.ops.network_simulate(*args, backend="reference", **kw)
    got = fusekit.ops.network_simulate(*(a.astype(np.float32) if a.dtype == np.float64 else a
                                         for a in args), backend="cpu", **kw)
    assert got.g_syn.dtype == np.float32
    # float32 rounding moves a spike by a step now and then: counts within one
    assert np.abs(got.spike_count - ref.spike_count).max() <= 1


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_each_type_has_its_own_conductance(backend):
    # two identical types equal one type; with E and I types, a neuron's conductance of a
    # type is nonzero exactly when a spike over a synapse of that type has reached it
    args, types = _ei_network(n=100, seed=13)
    v0, S, P, i_ext, g2, indptr, indices, weights = args
    kw = dict(channels=HH, dt=0.025, n_steps=800, delay_steps=40, backend=backend)
    one = fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(100), indptr, indices,
                                       weights, tau_syn=3.0, e_syn=0.0, **kw)
    same = fusekit.ops.network_simulate(*args, tau_syn=[3.0, 3.0], e_syn=0.0,
                                        synapse_type=types, **kw)
    ei = fusekit.ops.network_simulate(*args, synapse_type=types, max_spikes=16, **EI, **kw)
    np.testing.assert_array_equal(same.spike_count, one.spike_count)
    np.testing.assert_allclose(same.v, one.v, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(same.g_syn.sum(0), one.g_syn, rtol=1e-10, atol=1e-12)
    # a spike in step k arrives at the start of step k + 40, inside the run if k + 40 < 800
    steps = np.floor(ei.spike_times / 0.025)
    arrived = np.nan_to_num(steps, nan=1e9).min(0) + 40 < 800
    pre = np.repeat(np.arange(100), np.diff(indptr))
    for k in (0, 1):
        reached = np.zeros(100, bool)
        reached[indices[(types == k) & arrived[pre]]] = True
        assert reached.any()
        np.testing.assert_array_equal(ei.g_syn[k] > 0, reached)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_typed_run_in_two_calls_equals_one_call(backend):
    args, types = _ei_network(n=60, seed=14)
    kw = dict(channels=HH, dt=0.025, delay_steps=40, synapse_type=types, max_spikes=8,
              backend=backend, **EI)
    whole = fusekit.ops.network_simulate(*args, n_steps=400, **kw)
    a = fusekit.ops.network_simulate(*args, n_steps=113, **kw)
    b = fusekit.ops.network_simulate(a.v, a.states, args[2], args[3], a.g_syn, *args[5:],
                                     n_steps=287, arrivals0=a.arrivals, **kw)
    np.testing.assert_array_equal(a.spike_count + b.spike_count, whole.spike_count)
    for name in ("v", "g_syn", "arrivals"):
        np.testing.assert_allclose(getattr(b, name), getattr(whole, name), rtol=1e-12,
                                   atol=1e-15, err_msg=name)


@pytest.mark.parametrize("kwargs, match", [
    (dict(tau_syn=[3.0, 8.0]), "give synapse_type"),
    (dict(tau_syn=[3.0, 8.0], e_syn=[0.0, -80.0, -70.0]), "one value per synapse type"),
    (dict(tau_syn=[3.0, -1.0], synapse_type="types"), "tau_syn must be a positive"),
    (dict(tau_syn=[], e_syn=0.0), "at least one synapse type"),
    (dict(tau_syn="3.0"), "tau_syn must be a number or a sequence of numbers"),
    (dict(e_syn=None), "e_syn must be a number or a sequence of numbers"),
    (dict(e_syn=[0.0, float("nan")], synapse_type="types"), "e_syn must be a finite"),
    (dict(tau_syn=[3.0, 8.0], synapse_type="types+2"), r"synapse_type must lie in \[0, 2\)"),
    (dict(tau_syn=[3.0, 8.0], synapse_type="short"), "synapse_type must be an int"),
    (dict(tau_syn=[3.0, 8.0], synapse_type="types", g_syn0="flat"), r"g_syn0 must be a \(2, "),
    (dict(g_syn0="typed"), r"g_syn0 must be a \(60,\) float64 array \(one synapse type\)"),
])
def test_bad_synapse_types_are_refused(kwargs, match):
    args, types = _ei_network(n=60, seed=15)
    args = list(args)
    resolve = {"types": types, "types+2": types + 2, "short": types[:-1],
               "flat": np.zeros(60), "typed": np.zeros((2, 60))}
    kwargs = {k: resolve.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    args[4] = kwargs.pop("g_syn0", args[4] if "tau_syn" in kwargs and
                         isinstance(kwargs["tau_syn"], list) and kwargs["tau_syn"] else
                         np.zeros(60))
    with pytest.raises(fusekit.InputError, match=match):
        fusekit.ops.network_simulate(*args, channels=HH, dt=0.025, n_steps=10,
                                     delay_steps=4, backend="cpu", **kwargs)


def test_network_object_takes_a_type_per_neuron():
    from fusekit.neuro import Network

    args, types = _ei_network(n=80, seed=16)
    v0, S, P, i_ext, _, indptr, indices, weights = args
    kind = (np.arange(80) >= 64).astype(int)
    net = Network(HH, (indptr, indices, weights), delay=1.0, synapse_type=kind, **EI)
    net.v, net.states, net.i_ext = v0.copy(), S.copy(), i_ext
    assert net.g_syn.shape == (2, 80)
    out = net.run(20.0)
    ref = fusekit.ops.network_simulate(*args, channels=HH, dt=0.025, n_steps=800,
                                       delay_steps=40, synapse_type=types, max_spikes=64, **EI)
    np.testing.assert_array_equal(out.spike_count, ref.spike_count)
    np.testing.assert_allclose(net.g_syn, ref.g_syn, rtol=1e-12, atol=1e-15)
    with pytest.raises(fusekit.InputError, match="type of every synapse"):
        Network(HH, (indptr, indices, weights), synapse_type=kind[:-1], **EI)


def test_torch_network_with_two_types_matches_the_reference_and_trains_both():
    from fusekit.neuro import network_simulate_torch

    args, types = _ei_network(n=40, seed=17)
    v0, S, P, i_ext, g0, indptr, indices, weights = args
    kw = dict(dt=0.025, n_steps=400, delay_steps=40, record_every=40, max_spikes=4, **EI)
    ref = fusekit.ops.network_simulate(*args, channels=HH, backend="reference",
                                       synapse_type=types, **kw)
    t = torch.as_tensor
    w = t(weights).clone().requires_grad_()
    got = network_simulate_torch(HH, t(v0), t(S), t(P), t(i_ext), t(g0), indptr, indices, w,
                                 synapse_type=types, **kw)
    assert ref.spike_count.sum() > 0
    np.testing.assert_array_equal(got.spike_count.numpy(), ref.spike_count)
    for name in ("v", "g_syn", "v_record", "arrivals"):
        np.testing.assert_allclose(getattr(got, name).detach().numpy(), getattr(ref, name),
                                   rtol=1e-9, atol=1e-9, err_msg=name)
    got.v_record.mean().backward()
    fired = np.repeat(ref.spike_count > 0, np.diff(indptr))
    for k in (0, 1):  # gradients reach the weights of both types from neurons that fired
        assert float(w.grad[t((types == k) & fired)].abs().sum()) > 0


def test_numpy_scalars_serve_as_one_synapse_type():
    args, _ = _ei_network(n=30, seed=18)
    args = (*args[:4], np.zeros(30), *args[5:])
    kw = dict(channels=HH, dt=0.025, n_steps=200, delay_steps=20, backend="reference")
    a = fusekit.ops.network_simulate(*args, tau_syn=np.float32(4.0), e_syn=np.int64(0), **kw)
    b = fusekit.ops.network_simulate(*args, tau_syn=4.0, e_syn=0.0, **kw)
    assert a.g_syn.shape == (30,)
    np.testing.assert_array_equal(a.v, b.v)
    # the types given explicitly (all 0) take the typed delivery: the same run
    for backend in CPU_BACKENDS:
        c = fusekit.ops.network_simulate(*args, tau_syn=4.0, e_syn=0.0,
                                         synapse_type=np.zeros(args[6].shape[0], np.int64),
                                         **{**kw, "backend": backend})
        np.testing.assert_allclose(c.v, b.v, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(c.arrivals, b.arrivals, rtol=1e-12, atol=1e-15)


def test_random_connectivity_is_a_csr_without_self_connections():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=25, deadline=None)
    @given(n=st.integers(0, 60), p=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1),
           self_connections=st.booleans())
    def check(n, p, seed, self_connections):
        indptr, indices, weights = random_connectivity(n, p, 0.3, seed,
                                                       self_connections=self_connections)
        assert indptr.shape == (n + 1,) and indptr[0] == 0 and (np.diff(indptr) >= 0).all()
        assert indices.shape == weights.shape == (indptr[-1],)
        assert ((indices >= 0) & (indices < n)).all()
        assert ((weights >= 0) & (weights < 0.3)).all()
        pre = np.repeat(np.arange(n), np.diff(indptr))
        if not self_connections:
            assert (pre != indices).all()
        if p == 1.0:
            assert indptr[-1] == n * n - (0 if self_connections else n)

    check()
    big = random_connectivity(400, 0.05, 1.0, 1)
    assert abs(big[0][-1] / (400 * 399) - 0.05) < 0.005  # about p of the pairs
    for bad, match in (((-1, 0.1, 1.0), "n must be"), ((10, 1.5, 1.0), "p is a probability"),
                       ((10, 0.1, float("nan")), "w_max must be")):
        with pytest.raises(fusekit.InputError, match=match):
            random_connectivity(*bad)
