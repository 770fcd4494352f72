"""The same HH neuron in NEURON (when it is installed): first spike times agree to round-off.

NEURON's ``hh`` interpolates its rates in 1 mV tables by default (``usetable_hh = 1``); with
the tables off it computes the same rates, and its fixed-step scheme (backward-Euler voltage,
then the gates by exponential Euler at the new voltage) produces the same voltages as ours
when the gates start at their steady state.
"""

import math

import numpy as np
import pytest

neuron = pytest.importorskip("neuron")

import fusekit  # noqa: E402
from fusekit.neuro import HH_CHANNELS, ChannelSet  # noqa: E402

HH = ChannelSet(HH_CHANNELS)


def first_crossing(t, v, dt):
    k = np.flatnonzero((v[:-1] < 0) & (v[1:] >= 0))[0]
    return t[k] + (0 - v[k]) / (v[k + 1] - v[k]) * dt


@pytest.mark.parametrize("i_ext", [7.0, 10.0, 30.0])
def test_first_spike_time_agrees_with_neuron_hh(i_ext):
    h = neuron.h
    h.load_file("stdrun.hoc")
    h.celsius = 6.3
    h.usetable_hh = 0
    side = 100 / math.sqrt(math.pi)  # area 10,000 um^2 = 1e-4 cm^2
    soma = h.Section(name="soma")
    soma.L = soma.diam = side
    soma.insert("hh")
    soma.ena, soma.ek = 50.0, -77.0
    stim = h.IClamp(soma(0.5))
    stim.delay, stim.dur = 0.0, 1e9
    stim.amp = i_ext * 1e-4 * 1e3  # uA/cm^2 * cm^2 -> uA -> nA
    v_rec, t_rec = h.Vector().record(soma(0.5)._ref_v), h.Vector().record(h._ref_t)
    h.dt, h.steps_per_ms, h.tstop = 0.025, 40, 20.0
    h.finitialize(-65.0)
    h.run()
    t_neuron = first_crossing(np.array(t_rec), np.array(v_rec), 0.025)

    v0 = np.array([-65.0])
    out = fusekit.ops.ion_simulate(v0, HH.steady_states(v0), HH.default_params(1),
                                   np.array([i_ext]), channels=HH, dt=0.025, n_steps=800,
                                   max_spikes=1, backend="reference")
    assert abs(float(out.spike_times[0, 0]) - t_neuron) < 1e-10
