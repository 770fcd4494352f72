"""ion_simulate: the generated CPU kernel against the float64 reference and independent loops."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit
from fusekit.neuro import HH_CHANNELS, Channel, ChannelSet, Population, exp, vtrap

HH = ChannelSet(HH_CHANNELS)
CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]


def hh_inputs(n, dtype, seed=0, v_lo=-80.0, v_hi=-40.0):
    rng = np.random.default_rng(seed)
    v0 = rng.uniform(v_lo, v_hi, n).astype(dtype)
    S = HH.steady_states(v0).astype(dtype)
    P = HH.default_params(n, dtype, g_na=rng.uniform(100.0, 140.0, n))
    i_ext = rng.uniform(0.0, 20.0, n).astype(dtype)
    return v0, S, P, i_ext


def simulate(backend, v0, S, P, i_ext, cs=HH, **kw):
    kw = dict(dict(dt=0.025, n_steps=800, record_every=40, max_spikes=8), **kw)
    return fusekit.ops.ion_simulate(v0, S, P, i_ext, channels=cs, backend=backend, **kw)


# ------------------------------------------------------------------- against the reference


def test_cpu_float64_matches_reference_over_20_ms_of_spiking():
    args = hh_inputs(300, np.float64)
    got = simulate("cpu", *args)
    ref = simulate("reference", *args)
    assert ref.spike_count.sum() > 100  # most neurons fire repeatedly
    np.testing.assert_array_equal(got.spike_count, ref.spike_count)
    for name in ("v", "states", "v_record", "spike_times"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), rtol=1e-9,
                                   atol=1e-9, err_msg=name)


def test_cpu_float32_stays_close_to_the_float64_reference():
    args32 = hh_inputs(300, np.float32)
    got = simulate("cpu", *args32)
    ref = simulate("reference", *(a.astype(np.float64) for a in args32))
    assert got.v.dtype == np.float32 and got.spike_times.dtype == np.float32
    # Spike times move by float32 rounding accumulated over 800 steps; counts may differ by
    # one where a spike lands on the window's edge.
    assert np.abs(got.spike_count - ref.spike_count).max() <= 1
    assert ((got.spike_count > 0) != (ref.spike_count > 0)).sum() <= 3
    first = ~np.isnan(ref.spike_times[0]) & ~np.isnan(got.spike_times[0])
    assert first.sum() > 150
    np.testing.assert_allclose(got.spike_times[0, first], ref.spike_times[0, first], atol=0.02)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_per_step_current_is_read_one_row_per_step(backend):
    v0, S, P, _ = hh_inputs(4, np.float64)
    steps = 60
    i_steps = np.zeros((steps, 4))
    i_steps[20:] = 15.0  # a step current switched on at 0.5 ms
    got = simulate(backend, v0, S, P, i_steps, n_steps=steps, record_every=1)
    # The same thing as two calls: 20 steps without current, then 40 with it.
    a = simulate("reference", v0, S, P, np.zeros(4), n_steps=20, record_every=1)
    b = simulate("reference", a.v, a.states, P, np.full(4, 15.0), n_steps=40, record_every=1)
    np.testing.assert_allclose(got.v_record, np.concatenate([a.v_record, b.v_record]),
                               rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 9), n_steps=st.integers(0, 40), record_every=st.integers(0, 7),
       max_spikes=st.integers(0, 3), per_step=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_property_cpu_matches_reference_for_any_sizes(n, n_steps, record_every, max_spikes,
                                                      per_step, seed):
    rng = np.random.default_rng(seed)
    v0 = rng.uniform(-90.0, 40.0, n)
    S = rng.uniform(0.0, 1.0, (3, n))
    P = HH.default_params(n)
    i_ext = rng.uniform(-20.0, 60.0, (n_steps, n) if per_step else n)
    kw = dict(dt=0.05, n_steps=n_steps, record_every=record_every, max_spikes=max_spikes,
              spike_threshold=-20.0)
    got = simulate("cpu", v0, S, P, i_ext, **kw)
    ref = simulate("reference", v0, S, P, i_ext, **kw)
    assert got.v_record.shape == ((n_steps // record_every if record_every else 0), n)
    assert got.spike_times.shape == (max_spikes, n)
    np.testing.assert_array_equal(got.spike_count, ref.spike_count)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


# ------------------------------------------------- first spike time, from an independent loop


def hh_first_spike_time_python(i_ext, dt, t_max, v0=-65.0):
    """One HH neuron, same scheme, written out by hand in float64 Python."""

    def vtrap_(x, y):
        return y * (1 - x / y / 2) if abs(x / y) < 1e-6 else x / (math.exp(x / y) - 1)

    def rates(v):
        am, bm = 0.1 * vtrap_(-(v + 40), 10), 4 * math.exp(-(v + 65) / 18)
        ah, bh = 0.07 * math.exp(-(v + 65) / 20), 1 / (math.exp(-(v + 35) / 10) + 1)
        an, bn = 0.01 * vtrap_(-(v + 55), 10), 0.125 * math.exp(-(v + 65) / 80)
        return (am, bm), (ah, bh), (an, bn)

    (am, bm), (ah, bh), (an, bn) = rates(v0)
    m, h, n = am / (am + bm), ah / (ah + bh), an / (an + bn)
    v = v0
    for k in range(int(round(t_max / dt))):
        new = []
        for x, (a, b) in zip((m, h, n), rates(v), strict=True):
            new.append(a / (a + b) + (x - a / (a + b)) * math.exp(-dt * (a + b)))
        m, h, n = new
        g_na, g_k, g_l = 120 * m**3 * h, 36 * n**4, 0.3
        ge = g_na * 50 + g_k * -77 + g_l * -54.3
        v_new = (v + dt * (ge + i_ext)) / (1 + dt * (g_na + g_k + g_l))
        if v < 0 <= v_new:
            return (k + (0 - v) / (v_new - v)) * dt
        v = v_new
    return math.nan


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_first_spike_time_of_a_step_current_matches_a_hand_written_loop(backend):
    dt, i_ext = 0.025, 10.0
    expected = hh_first_spike_time_python(i_ext, dt, 20.0)
    assert 1.0 < expected < 10.0
    v0 = np.array([-65.0])
    out = simulate(backend, v0, HH.steady_states(v0), HH.default_params(1), np.array([i_ext]),
                   dt=dt, n_steps=800, max_spikes=1)
    assert abs(float(out.spike_times[0, 0]) - expected) < 1e-9


# ------------------------------------------------------------------ the 0/0 rate singularities


def test_vtrap_is_finite_and_continuous_at_zero():
    assert vtrap(0.0, 10.0) == 10.0
    x = np.array([-0.5, -1e-3, -1e-9, 1e-12, 1e-6, 0.99, 1.01, 3.0])
    np.testing.assert_allclose(vtrap(x, 10.0), x / np.expm1(x / 10.0), rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_neurons_exactly_at_the_hh_singularities_stay_finite(backend, dtype):
    v0 = np.array([-40.0, -55.0, -40.0, -55.0], dtype)  # alpha_m and alpha_n are 0/0 here
    S = HH.steady_states(v0).astype(dtype)
    assert np.isfinite(S).all()
    out = simulate(backend, v0, S, HH.default_params(4, dtype), np.zeros(4, dtype),
                   n_steps=1, record_every=1)
    ref = simulate("reference", *(a.astype(np.float64) for a in (
        v0, S, HH.default_params(4, dtype), np.zeros(4))), n_steps=1, record_every=1)
    assert np.isfinite(out.v).all() and np.isfinite(out.states).all()
    np.testing.assert_allclose(out.states, ref.states, rtol=1e-6 if dtype == np.float32
                               else 1e-13)


# ------------------------------------------------------------------- a user-defined channel


class SlowPotassium(Channel):
    """A made-up slow K channel: g_ks (mS/cm^2), e_ks (mV); tau-form gate w."""

    params = {"g_ks": 4.0, "e_ks": -85.0, "v_half": -35.0}
    states = {"w": 0.05}
    reversal = "e_ks"

    def inf_w(v, v_half):
        return 1.0 / (1.0 + exp(-(v - v_half) / 6.0))

    def tau_w(v):
        return 50.0 / (exp((v + 40.0) / 20.0) + exp(-(v + 40.0) / 20.0))

    def conductance(w, g_ks):
        return g_ks * w * w


class ConstantLeak(Channel):
    """A leak with a constant reversal potential (-60 mV)."""

    params = {"g_cl": 0.1}
    states = {}
    reversal = -60.0

    def conductance(g_cl):
        return g_cl


def custom_numpy(v, w, P, i_ext, dt, n_steps):
    """The two channels above, hand-written in NumPy."""
    c_m, g_ks, e_ks, v_half, g_cl = P
    for _ in range(n_steps):
        inf = 1 / (1 + np.exp(-(v - v_half) / 6))
        tau = 50 / (np.exp((v + 40) / 20) + np.exp(-(v + 40) / 20))
        w = inf + (w - inf) * np.exp(-dt / tau)
        g1, g2 = g_ks * w**2, g_cl
        v = (v + dt / c_m * (g1 * e_ks + g2 * -60.0 + i_ext)) / (1 + dt / c_m * (g1 + g2))
    return v, w


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_user_defined_channels_match_hand_written_numpy(backend):
    cs = ChannelSet([SlowPotassium, ConstantLeak])
    assert cs.param_names == ("c_m", "g_ks", "e_ks", "v_half", "g_cl")
    n = 37
    rng = np.random.default_rng(3)
    v0 = rng.uniform(-80, -20, n)
    S = cs.initial_states(n)
    P = cs.default_params(n, c_m=rng.uniform(0.5, 2.0, n), v_half=rng.uniform(-45, -25, n))
    i_ext = rng.uniform(-2, 8, n)
    out = fusekit.ops.ion_simulate(v0, S, P, i_ext, channels=cs, dt=0.1, n_steps=300,
                                   backend=backend)
    v, w = custom_numpy(v0, S[0], P, i_ext, 0.1, 300)
    np.testing.assert_allclose(out.v, v, rtol=1e-11)
    np.testing.assert_allclose(out.states[0], w, rtol=1e-11, atol=1e-14)


# ----------------------------------------------------------------------------- Population


def test_population_carries_state_and_absolute_spike_times_across_runs():
    pop = Population(HH_CHANNELS, n=2)
    pop.i_ext[:] = [0.0, 10.0]
    first = pop.run(10.0, backend="reference")
    second = pop.run(10.0, backend="reference")
    whole = Population(HH_CHANNELS, n=2)
    whole.i_ext[:] = [0.0, 10.0]
    both = whole.run(20.0, backend="reference")
    assert first.spike_count[0] == 0 and both.spike_count[1] >= 2
    np.testing.assert_allclose(second.v, both.v, rtol=1e-12)
    times = np.concatenate([first.spike_times[: first.spike_count[1], 1],
                            second.spike_times[: second.spike_count[1], 1]])
    np.testing.assert_allclose(times, both.spike_times[: both.spike_count[1], 1], rtol=1e-12)


def test_progress_bar_run_equals_one_call(capsys):
    import io

    a = Population(HH_CHANNELS, n=3, g_na=[100.0, 120.0, 140.0])
    a.i_ext[:] = 12.0
    b = Population(HH_CHANNELS, n=3, g_na=[100.0, 120.0, 140.0])
    b.i_ext[:] = 12.0
    bar = io.StringIO()
    chunked = a.run(30.0, record_every=8, max_spikes=3, progress=True, progress_file=bar,
                    backend="reference")
    whole = b.run(30.0, record_every=8, max_spikes=3, backend="reference")
    assert "100%" in bar.getvalue()
    np.testing.assert_array_equal(chunked.spike_count, whole.spike_count)
    np.testing.assert_allclose(chunked.spike_times, whole.spike_times, rtol=1e-12)
    np.testing.assert_allclose(chunked.v_record, whole.v_record, rtol=1e-12)


def test_trace_and_raster_plots_draw_the_data():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fusekit.neuro import plot_raster, plot_traces

    pop = Population(HH_CHANNELS, n=4)
    pop.i_ext[:] = [0.0, 8.0, 12.0, 20.0]
    out = pop.run(20.0, record_every=4, backend="reference")
    ax = plot_traces(out.v_record, dt=0.025, record_every=4, neurons=[1, 3])
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[1].get_ydata(), out.v_record[:, 3])
    ax = plot_raster(out.spike_times)
    assert ax.collections[0].get_offsets().shape[0] == out.spike_count.sum()
    plt.close("all")
