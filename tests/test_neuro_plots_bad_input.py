"""The plots name wrong shapes, indices and objects instead of failing inside NumPy."""

import numpy as np
import pytest
import torch

import fusekit
from fusekit.neuro import HH_CHANNELS, Population, plot_raster, plot_states, plot_traces, record

pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def _agg(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


V = np.zeros((10, 3))


@pytest.mark.parametrize("call, match", [
    (lambda: plot_traces(V, dt=0.025, record_every=1, neurons=[5]),
     r"neurons has 5, but there are 3 neurons \(0 .. 2\)"),
    (lambda: plot_traces(V, dt=0.025, record_every=1, neurons=2), r"for one: neurons=\[2\]"),
    (lambda: plot_traces(V, dt=0.025, record_every=1, neurons=[1.5]),
     "neurons must hold integer neuron indices, got 1.5"),
    (lambda: plot_traces(np.zeros(10), dt=0.025, record_every=1),
     r"v_record must have shape \(n_rec, n\), got \(10,\)"),
    (lambda: plot_traces([["a"]], dt=0.025, record_every=1), "v_record must be an array"),
    (lambda: plot_raster(np.zeros(10)), r"spike_times must have shape \(max_spikes, n\)"),
    (lambda: plot_states(object()), "recording must be a fusekit.neuro.Recording"),
])
def test_bad_arguments_get_named_errors(call, match):
    with pytest.raises(fusekit.InputError, match=match):
        call()


def test_plot_states_checks_neurons_against_the_recording():
    rec = record(Population(HH_CHANNELS, 3), 1.0, record_every=10)
    with pytest.raises(fusekit.InputError, match="neurons has 3, but there are 3 neurons"):
        plot_states(rec, neurons=[3])
    assert len(plot_states(rec, neurons=[-1], states=["m"]).lines) == 1


def test_tensors_that_require_grad_are_plotted():
    v = torch.zeros(10, 3, requires_grad=True)
    assert len(plot_traces(v, dt=0.025, record_every=1, neurons=[0, 2]).lines) == 2
    times = torch.full((2, 3), float("nan"), requires_grad=True)
    plot_raster(times)
