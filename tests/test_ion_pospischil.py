"""The Pospischil et al. (2008) channels: compiled like any user channel, cortical behaviour."""

import numpy as np

import fusekit
from fusekit.neuro import (
    POSPISCHIL_RS_CHANNELS,
    ChannelSet,
    Population,
    PospischilCaL,
    PospischilCaT,
    PospischilKd,
    PospischilLeak,
    PospischilM,
    PospischilNa,
)

ALL = ChannelSet([PospischilNa, PospischilKd, PospischilM, PospischilCaL, PospischilCaT,
                  PospischilLeak])
BACKEND = "cpu" if "cpu" in fusekit.available_backends() else "reference"


def test_shared_parameters_appear_once():
    assert ALL.param_names.count("v_t") == 1 and ALL.param_names.count("e_k") == 1
    assert ALL.param_names.count("e_ca") == 1


def test_all_six_channels_compiled_match_the_reference():
    n = 40
    rng = np.random.default_rng(5)
    v0 = rng.uniform(-75.0, -55.0, n)
    S = ALL.steady_states(v0)
    P = ALL.default_params(n, g_cal=rng.uniform(0, 0.3, n), g_cat=rng.uniform(0, 1.0, n))
    i_ext = rng.uniform(-0.5, 3.0, n)
    kw = dict(channels=ALL, dt=0.025, n_steps=600, record_every=100, max_spikes=4)
    got = fusekit.ops.ion_simulate(v0, S, P, i_ext, backend=BACKEND, **kw)
    ref = fusekit.ops.ion_simulate(v0, S, P, i_ext, backend="reference", **kw)
    assert ref.spike_count.sum() > 10
    np.testing.assert_array_equal(got.spike_count, ref.spike_count)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_regular_spiking_cell_rests_without_input_and_adapts_under_a_step_current():
    pop = Population(POSPISCHIL_RS_CHANNELS, n=2, v0=-70.3)
    pop.i_ext[:] = [0.0, 1.0]
    out = pop.run(400.0, dt=0.05, backend="reference", max_spikes=50)
    assert out.spike_count[0] == 0 and -75.0 < out.v[0] < -65.0
    isi = np.diff(out.spike_times[: out.spike_count[1], 1])
    assert len(isi) >= 3 and isi[-1] > isi[0]  # the M current slows firing down
