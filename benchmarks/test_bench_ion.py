"""HH population, 100 ms at dt = 0.025 ms: fusekit's CPU kernel against its peers.

Peers: the same scheme (exponential-Euler gates, backward-Euler voltage) as NumPy array
expressions over neurons, one Python iteration per step; NEURON; Brian2 (C++ standalone and
Cython) and Jaxley (float32 forward, float64 gradient), which run in their own environments
(``bash peers/setup.sh``; skipped without them) and time themselves inside the subprocess.
All get the same 10,000 neurons with heterogeneous step currents; ``extra_info`` reports
neuron-steps/s.
"""

import os

import numpy as np
import pytest

import fusekit
from fusekit.neuro import HH_CHANNELS, ChannelSet
from peers import require_peer, run_peer

N_NEURONS = 10_000
DT = 0.025
N_STEPS = 4000  # 100 ms
HH = ChannelSet(HH_CHANNELS)
GROUP = f"HH {N_NEURONS} neurons, 100 ms at dt={DT}"
BENCH_THREADS = int(os.environ.get("FUSEKIT_BENCH_THREADS", "2"))  # as benchmarks/conftest.py


def make(dtype, seed=0):
    rng = np.random.default_rng(seed)
    v0 = np.full(N_NEURONS, -65.0, dtype)
    return (v0, HH.steady_states(v0).astype(dtype), HH.default_params(N_NEURONS, dtype),
            rng.uniform(0.0, 20.0, N_NEURONS).astype(dtype))


def report(benchmark, neuron_steps=N_NEURONS * N_STEPS):
    if benchmark.stats is None:  # --benchmark-disable: ran once, nothing timed
        return
    benchmark.extra_info["neuron_steps_per_s"] = neuron_steps / benchmark.stats.stats.median
    benchmark.extra_info["threads"] = fusekit.get_num_threads()


def hh_numpy(v, m, h, n, i_ext, dt, n_steps):
    """HH with NumPy, NEURON/Jaxley scheme; float32 stays float32 (scalars are Python floats)."""
    one = v.dtype.type(1.0)
    count = np.zeros(v.shape, np.int64)

    def vtrap(x, y):
        u = x / y
        small = np.abs(u) < 1e-6
        return np.where(small, y * (one - u / 2), x / np.where(small, one, np.expm1(u)))

    for _ in range(n_steps):
        am, bm = 0.1 * vtrap(-(v + 40), 10), 4 * np.exp(-(v + 65) / 18)
        ah, bh = 0.07 * np.exp(-(v + 65) / 20), one / (np.exp(-(v + 35) / 10) + one)
        an, bn = 0.01 * vtrap(-(v + 55), 10), 0.125 * np.exp(-(v + 65) / 80)
        m = am / (am + bm) + (m - am / (am + bm)) * np.exp(-dt * (am + bm))
        h = ah / (ah + bh) + (h - ah / (ah + bh)) * np.exp(-dt * (ah + bh))
        n = an / (an + bn) + (n - an / (an + bn)) * np.exp(-dt * (an + bn))
        g_na, g_k = 120 * m**3 * h, 36 * n**4
        v_new = (v + dt * (g_na * 50 + g_k * -77 + 0.3 * -54.3 + i_ext)) / (
            one + dt * (g_na + g_k + 0.3))
        count += (v < 0) & (v_new >= 0)
        v = v_new
    return v, count


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fusekit_hh_population_cpu(benchmark, dtype):
    v0, S, P, i_ext = make(dtype)
    benchmark.group = f"{GROUP} {np.dtype(dtype).name}"
    fusekit.ops.ion_simulate(v0, S, P, i_ext, channels=HH, dt=DT, n_steps=2, backend="cpu")
    out = benchmark.pedantic(
        lambda: fusekit.ops.ion_simulate(v0, S, P, i_ext, channels=HH, dt=DT, n_steps=N_STEPS,
                                         max_spikes=1, backend="cpu"),
        rounds=5, iterations=1)
    report(benchmark)
    assert out.spike_count.max() > 5 and out.v.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_hh_population(benchmark, dtype):
    v0, S, _, i_ext = make(dtype)
    benchmark.group = f"{GROUP} {np.dtype(dtype).name}"
    v, count = benchmark.pedantic(
        lambda: hh_numpy(v0, S[0], S[1], S[2], i_ext, dtype(DT), N_STEPS), rounds=2,
        iterations=1)
    report(benchmark)
    ref = fusekit.ops.ion_simulate(v0, S, HH.default_params(N_NEURONS, dtype), i_ext,
                                   channels=HH, dt=DT, n_steps=N_STEPS, backend="cpu")
    # Same scheme: float64 agrees closely; float32 spike counts may differ by one.
    assert np.abs(count - ref.spike_count).max() <= (0 if dtype == np.float64 else 1)


def test_neuron_hh_population(benchmark):
    """NEURON's ``hh`` in 10,000 one-compartment sections, fixed step, float64.

    Rate tables off (as in tests/test_ion_neuron.py, where the spike times then agree to
    round-off); NEURON's threads set to the benchmark's thread count.
    """
    neuron = pytest.importorskip("neuron")
    threads = BENCH_THREADS

    h = neuron.h
    h.load_file("stdrun.hoc")
    h.celsius = 6.3
    h.usetable_hh = 0
    _, _, _, i_ext = make(np.float64)
    side = 100 / np.sqrt(np.pi)  # 1e-4 cm^2
    sections, stims, counters = [], [], []
    for i in range(N_NEURONS):
        sec = h.Section(name=f"n{i}")
        sec.L = sec.diam = side
        sec.insert("hh")
        sec.ena, sec.ek = 50.0, -77.0
        stim = h.IClamp(sec(0.5))
        stim.delay, stim.dur, stim.amp = 0.0, 1e9, float(i_ext[i]) * 0.1
        count = h.APCount(sec(0.5))
        count.thresh = 0.0
        sections.append(sec)
        stims.append(stim)
        counters.append(count)
    pc = h.ParallelContext()
    pc.nthread(threads)
    h.dt, h.steps_per_ms, h.tstop = DT, 1 / DT, N_STEPS * DT
    benchmark.group = f"{GROUP} float64"

    def run():
        h.finitialize(-65.0)
        h.run()

    benchmark.pedantic(run, rounds=2, iterations=1)
    report(benchmark)
    counts = np.array([c.n for c in counters])
    ref = fusekit.ops.ion_simulate(*make(np.float64), channels=HH, dt=DT, n_steps=N_STEPS,
                                   backend="cpu")
    assert np.abs(counts - ref.spike_count).max() <= 1
    pc.nthread(1)


# ------------------------------------------------------- Brian2 and Jaxley, in their venvs


def report_peer(benchmark, result, neuron_steps=N_NEURONS * N_STEPS):
    """Neuron-steps/s from the time the peer script took inside itself.

    The benchmark's own time (one round) is the whole subprocess: interpreter start, import,
    code generation or JIT, and the timed run. ``extra_info`` carries the inner time.
    """
    benchmark.extra_info["inner_run_s"] = result["run_s"]  # the fastest of the repeats
    benchmark.extra_info["inner_run_s_all"] = result["run_s_all"]
    benchmark.extra_info["neuron_steps_per_s"] = neuron_steps / result["run_s"]
    benchmark.extra_info["excluded"] = result["excluded"]
    if "compile_s" in result:
        benchmark.extra_info["first_call_s"] = result["compile_s"]
    benchmark.extra_info["versions"] = result["versions"]


def peer_config(benchmark, **kw):
    """The benchmark's neurons; timed 3 times inside the peer (once under --benchmark-disable)."""
    _, _, _, i_ext = make(np.float64)
    return dict(i_ext=i_ext.tolist(), dt=DT, t_stop=N_STEPS * DT,
                repeat=1 if benchmark.disabled else 3, **kw)


def fusekit_counts(dtype):
    return fusekit.ops.ion_simulate(*make(dtype), channels=HH, dt=DT, n_steps=N_STEPS,
                                    backend="cpu").spike_count


@pytest.mark.parametrize("target, threads", [("cpp_standalone", 1),
                                             ("cpp_standalone", BENCH_THREADS),
                                             ("cython", 1)])
def test_brian2_hh_population(benchmark, target, threads):
    """Brian2 2.9.0, float64, its usual HH method (exponential Euler on every variable).

    C++ standalone, 1 thread and OpenMP with the benchmark's threads: the time is Brian2's own
    measure of the generated main loop (the C++ compile excluded). Its OpenMP threads meet at
    barriers every step: 3 neurons took 1.5 s for 4000 steps with 2 threads on our loaded
    machine, against milliseconds with one. Cython runtime (one thread): a one-step warm-up
    run compiles the code objects (cached in ~/.cython between processes), then the 100 ms
    run is timed. Spikes: threshold and refractory ``v > 0 mV`` (upward crossings).
    """
    require_peer("brian2")
    if benchmark.disabled and threads > 1:
        pytest.skip("timing only: the same generated code as the 1-thread run")
    benchmark.group = f"{GROUP} float64"
    result = benchmark.pedantic(
        lambda: run_peer("brian2", peer_config(benchmark, target=target, scheme="exponential_euler",
                                               threads=threads)),
        rounds=1, iterations=1)
    report_peer(benchmark, result)
    # Another first-order scheme: spike times drift by up to about 1 ms over 100 ms (see
    # tests/test_ion_peers.py), so a spike near the end of the run falls on the other side of
    # it for about 5 % of the neurons (measured 5.1 %; 1 ms of a 12-15 ms period).
    diff = np.abs(np.array(result["spike_count"]) - fusekit_counts(np.float64))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.1


def test_jaxley_hh_population_forward_float32(benchmark):
    """Jaxley 0.14.0, CPU, float32: 10,000 vmapped single compartments in one jitted call.

    The JIT compile is excluded (a first call); spike counts are computed inside the call.
    """
    require_peer("jaxley")
    benchmark.group = f"{GROUP} float32"
    result = benchmark.pedantic(
        lambda: run_peer("jaxley", peer_config(benchmark, dtype="float32", mode="forward")),
        rounds=1, iterations=1)
    report_peer(benchmark, result)
    # Same scheme; float32 rounding moves a few counts by one. Jaxley's vtrap has no guard
    # at the 0/0 points (-40, -55 mV), where a float32 neuron turns NaN and stops counting.
    diff = np.abs(np.array(result["spike_count"]) - fusekit_counts(np.float32))
    assert (diff > 1).mean() < 0.01


def test_jaxley_hh_population_gradient_float64(benchmark):
    """Jaxley's reverse-mode gradient of every neuron's mean v w.r.t. its gNa, gK, gLeak.

    float64, checkpointing in two levels of 64 x 63 steps (Jaxley's ``checkpoint_lengths``;
    the run is padded to 4032 steps), vmapped over the 10,000 neurons; JIT excluded.
    neuron-steps/s counts the 4000 simulated steps.
    """
    require_peer("jaxley")
    benchmark.group = f"{GROUP} gradient float64"
    result = benchmark.pedantic(
        lambda: run_peer("jaxley", peer_config(benchmark, dtype="float64", mode="gradient",
                                               checkpoint_lengths=[64, 63])),
        rounds=1, iterations=1)
    report_peer(benchmark, result)
    assert result["grad_finite"] and result["grad_norm"] > 0


@pytest.mark.parametrize("gradient", ["forward", "backprop"])
def test_fusekit_hh_population_gradient_float64(benchmark, gradient):
    """fusekit's gradient of every neuron's mean v w.r.t. its gNa, gK, gLeak.

    float64, the same 10,000 neurons and 4000 steps as Jaxley's gradient. ``forward``:
    ``simulate(gradient="forward")``, one kernel pass carrying the three tangents
    (:func:`fusekit.ops.ion_sensitivity`), then the backward contracts them. ``backprop``:
    the kernel forward in checkpoint segments, then the compiled adjoint
    (:func:`fusekit.ops.ion_adjoint`), which gives every parameter row's gradient. The mean
    is over ``v`` sampled every 1 ms (Jaxley's over every step); the kernels do the same
    work per step either way.
    """
    import torch

    from fusekit.neuro import params_tensor, simulate

    v0, _, _, i_ext = make(np.float64)
    i_t = torch.tensor(i_ext)
    wrt = ("g_na", "g_k", "g_leak")
    benchmark.group = f"{GROUP} gradient float64"
    mode = {"gradient": gradient, "wrt": wrt if gradient == "forward" else None}

    def grad():
        g = [torch.tensor(HH.default_params(1)[HH.param_index(w), 0], dtype=torch.float64)
             .expand(N_NEURONS).clone().requires_grad_() for w in wrt]
        P = params_tensor(HH, N_NEURONS, **dict(zip(wrt, g, strict=True)))
        out = simulate(HH, P, i_t, duration=N_STEPS * DT, dt=DT, record_every=40, **mode,
                       backend="cpu")
        return torch.autograd.grad(out.v_record.mean(0).sum(), g)

    grad()  # compile outside the timing
    grads = benchmark.pedantic(grad, rounds=3, iterations=1)
    report(benchmark)
    assert all(bool(torch.isfinite(x).all()) for x in grads)
    assert float(grads[0].abs().max()) > 0


# ------------------------------------------------------------------------------- network

NET_N, NET_STEPS, NET_DELAY, NET_P = 4000, 2000, 40, 0.01
NET_GROUP = (f"HH network {NET_N} neurons, p={NET_P}, 50 ms at dt={DT}, delay "
             f"{NET_DELAY * DT} ms, float64")


def make_network(seed=0):
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    v0 = rng.uniform(-70.0, -60.0, NET_N)
    csr = sp.random(NET_N, NET_N, density=NET_P, format="csr", random_state=seed,
                    data_rvs=lambda k: rng.uniform(0.0, 0.3, k))
    i_ext = np.where(np.arange(NET_N) < NET_N // 10, 12.0, 0.0)
    return v0, HH.steady_states(v0), HH.default_params(NET_N), i_ext, csr


def test_fusekit_hh_network_cpu(benchmark):
    v0, S, P, i_ext, csr = make_network()
    benchmark.group = NET_GROUP
    args = (v0, S, P, i_ext, np.zeros(NET_N), csr.indptr, csr.indices, csr.data)
    kw = dict(channels=HH, dt=DT, delay_steps=NET_DELAY, tau_syn=3.0, e_syn=0.0,
              backend="cpu")
    fusekit.ops.network_simulate(*args, n_steps=2, **kw)
    out = benchmark.pedantic(
        lambda: fusekit.ops.network_simulate(*args, n_steps=NET_STEPS, **kw), rounds=3,
        iterations=1)
    report(benchmark, NET_N * NET_STEPS)
    assert out.spike_count[NET_N // 10:].sum() > 0


def test_numpy_scipy_hh_network(benchmark):
    """The same network as a user would write it: NumPy HH, scipy CSR for the spikes."""
    v0, S, _, i_ext, csr = make_network()
    benchmark.group = NET_GROUP
    csr_t = csr.T.tocsr()  # rows: postsynaptic neurons
    decay = np.exp(-DT / 3.0)

    def run():
        v, m, h, n = v0.copy(), S[0].copy(), S[1].copy(), S[2].copy()
        g_syn = np.zeros(NET_N)
        ring = np.zeros((NET_DELAY, NET_N))
        count = np.zeros(NET_N, np.int64)
        for step in range(NET_STEPS):
            slot = step % NET_DELAY
            g_syn = g_syn * decay + ring[slot]
            ring[slot] = 0.0
            am = 0.1 * (v + 40) / (1 - np.exp(-(v + 40) / 10))
            bm = 4 * np.exp(-(v + 65) / 18)
            ah, bh = 0.07 * np.exp(-(v + 65) / 20), 1 / (np.exp(-(v + 35) / 10) + 1)
            an = 0.01 * (v + 55) / (1 - np.exp(-(v + 55) / 10))
            bn = 0.125 * np.exp(-(v + 65) / 80)
            m = am / (am + bm) + (m - am / (am + bm)) * np.exp(-DT * (am + bm))
            h = ah / (ah + bh) + (h - ah / (ah + bh)) * np.exp(-DT * (ah + bh))
            n = an / (an + bn) + (n - an / (an + bn)) * np.exp(-DT * (an + bn))
            g_na, g_k = 120 * m**3 * h, 36 * n**4
            v_new = (v + DT * (g_na * 50 + g_k * -77 + 0.3 * -54.3 + g_syn * 0.0 + i_ext)) / (
                1 + DT * (g_na + g_k + 0.3 + g_syn))
            spiked = (v < 0) & (v_new >= 0)
            count += spiked
            if spiked.any():
                ring[slot] += csr_t @ spiked.astype(np.float64)
            v = v_new
        return count

    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 exactly at -40 or -55 mV
        count = benchmark.pedantic(run, rounds=1, iterations=1)
    report(benchmark, NET_N * NET_STEPS)
    ref = fusekit.ops.network_simulate(
        v0, S, HH.default_params(NET_N), i_ext, np.zeros(NET_N), csr.indptr, csr.indices,
        csr.data, channels=HH, dt=DT, n_steps=NET_STEPS, delay_steps=NET_DELAY, tau_syn=3.0,
        backend="cpu")
    assert np.abs(count - ref.spike_count).max() <= 1


@pytest.mark.parametrize("threads", [1, BENCH_THREADS])
def test_brian2_hh_network(benchmark, threads):
    """Brian2 2.9.0 C++ standalone, the same network in fusekit's scheme (the gates by
    exponential Euler, the synaptic conductance decayed and given its arrivals, ``v`` by
    backward Euler; ``peers/brian2_network.py``; its delay is fusekit's minus one step).

    The time is Brian2's own measure of the generated main loop (the C++ compile excluded).
    """
    require_peer("brian2")
    if benchmark.disabled and threads > 1:
        pytest.skip("timing only: the same generated code as the 1-thread run")
    v0, _, _, i_ext, csr = make_network()
    benchmark.group = NET_GROUP
    config = dict(v0=v0.tolist(), i_ext=i_ext.tolist(), indptr=csr.indptr.tolist(),
                  indices=csr.indices.tolist(), weights=csr.data.tolist(),
                  synapse_type=[0] * csr.nnz, tau_syn=[3.0], e_syn=[0.0], dt=DT,
                  t_stop=NET_STEPS * DT, delay_steps=NET_DELAY, target="cpp_standalone",
                  threads=threads, repeat=1 if benchmark.disabled else 3)
    result = benchmark.pedantic(lambda: run_peer("brian2", config, script="brian2_network.py"),
                                rounds=1, iterations=1)
    report_peer(benchmark, result, NET_N * NET_STEPS)
    v0, S, P, i_ext, csr = make_network()
    ref = fusekit.ops.network_simulate(
        v0, S, P, i_ext, np.zeros(NET_N), csr.indptr, csr.indices, csr.data, channels=HH,
        dt=DT, n_steps=NET_STEPS, delay_steps=NET_DELAY, tau_syn=3.0, backend="cpu")
    diff = np.abs(np.array(result["spike_count"]) - ref.spike_count)
    assert ref.spike_count[NET_N // 10:].sum() > 0 and diff.max() <= 1


# ----------------------------------------------------------------- large (opt-in) runs

LARGE = os.environ.get("FUSEKIT_BENCH_ION_LARGE", "") not in ("", "0")
large_only = pytest.mark.skipif(not LARGE, reason="tens of seconds per round and GBs of "
                                "memory: set FUSEKIT_BENCH_ION_LARGE=1")
LARGE_N = 100_000


def large_currents():
    """The 100,000 neurons' constant currents, uA/cm^2 (float64; fusekit casts them)."""
    return np.random.default_rng(0).uniform(0.0, 20.0, LARGE_N)


@large_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fusekit_hh_population_100k(benchmark, dtype):
    """100,000 HH neurons, 100 ms at dt = 0.025 ms (4e8 neuron-steps)."""
    v0 = np.full(LARGE_N, -65.0, dtype)
    S, P = HH.steady_states(v0).astype(dtype), HH.default_params(LARGE_N, dtype)
    i_ext = large_currents().astype(dtype)
    benchmark.group = f"HH {LARGE_N} neurons, 100 ms at dt={DT} {np.dtype(dtype).name}"
    fusekit.ops.ion_simulate(v0, S, P, i_ext, channels=HH, dt=DT, n_steps=2, backend="cpu")
    out = benchmark.pedantic(
        lambda: fusekit.ops.ion_simulate(v0, S, P, i_ext, channels=HH, dt=DT, n_steps=N_STEPS,
                                         backend="cpu"), rounds=2, iterations=1)
    report(benchmark, LARGE_N * N_STEPS)
    assert out.spike_count.max() > 5


@large_only
def test_jaxley_hh_population_100k_float32(benchmark):
    """Jaxley at the 100,000 neurons of the row above, float32, JIT excluded (as at 10,000)."""
    require_peer("jaxley")
    benchmark.group = f"HH {LARGE_N} neurons, 100 ms at dt={DT} float32"
    cfg = dict(i_ext=large_currents().tolist(), dt=DT, t_stop=N_STEPS * DT,
               repeat=1 if benchmark.disabled else 2, dtype="float32", mode="forward")
    result = benchmark.pedantic(lambda: run_peer("jaxley", cfg), rounds=1, iterations=1)
    report_peer(benchmark, result, LARGE_N * N_STEPS)
    assert max(result["spike_count"]) > 5


@large_only
def test_brian2_hh_population_100k(benchmark):
    """Brian2 C++ standalone with the benchmark's threads at 100,000 neurons, float64."""
    require_peer("brian2")
    benchmark.group = f"HH {LARGE_N} neurons, 100 ms at dt={DT} float64"
    cfg = dict(i_ext=large_currents().tolist(), dt=DT, t_stop=N_STEPS * DT,
               repeat=1 if benchmark.disabled else 2, target="cpp_standalone",
               scheme="exponential_euler", threads=BENCH_THREADS)
    result = benchmark.pedantic(lambda: run_peer("brian2", cfg), rounds=1, iterations=1)
    report_peer(benchmark, result, LARGE_N * N_STEPS)
    assert max(result["spike_count"]) > 5


BIG_NET_N, BIG_NET_P = 10_000, 0.1  # 10 million synapses, 1,000 per neuron


@large_only
def test_fusekit_hh_network_10m_synapses(benchmark):
    """10,000 HH neurons with 1,000 synapses each (10 M), 50 ms, float64, 10% driven."""
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    n = BIG_NET_N
    v0 = rng.uniform(-70.0, -60.0, n)
    csr = sp.random(n, n, density=BIG_NET_P, format="csr", random_state=1,
                    data_rvs=lambda k: rng.uniform(0.0, 0.0004, k))
    i_ext = np.where(np.arange(n) < n // 10, 12.0, 0.0)
    args = (v0, HH.steady_states(v0), HH.default_params(n), i_ext, np.zeros(n), csr.indptr,
            csr.indices, csr.data)
    kw = dict(channels=HH, dt=DT, delay_steps=NET_DELAY, tau_syn=3.0, e_syn=0.0, backend="cpu")
    benchmark.group = f"HH network {n} neurons, {csr.nnz:,} synapses, 50 ms, float64"
    fusekit.ops.network_simulate(*args, n_steps=2, **kw)
    out = benchmark.pedantic(lambda: fusekit.ops.network_simulate(*args, n_steps=NET_STEPS, **kw),
                             rounds=2, iterations=1)
    report(benchmark, n * NET_STEPS)
    spikes = int(out.spike_count.sum())
    benchmark.extra_info["synapses"] = int(csr.nnz)
    benchmark.extra_info["spikes"] = spikes
    if benchmark.stats is not None:
        benchmark.extra_info["synaptic_events_per_s"] = (
            spikes * csr.nnz / n / benchmark.stats.stats.median)
    # driven neurons fire 4 times; the recurrent input recruits about 28% of the others once
    assert out.spike_count[: n // 10].min() > 0
