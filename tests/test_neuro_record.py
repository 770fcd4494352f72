"""fusekit.neuro.record: channel states (and synaptic conductances) over a run."""

import io

import numpy as np
import pytest
import scipy.sparse as sp

import fusekit
from fusekit.neuro import HH_CHANNELS, CableNetwork, Network, Population, record

DT = 0.025


def population(currents=(0.0, 10.0, 20.0)):
    pop = Population(HH_CHANNELS, n=len(currents))
    pop.i_ext[:] = currents
    return pop


def test_record_equals_one_run_and_keeps_the_states_of_every_row():
    rec = record(population(), 20.05, record_every=4)  # 802 steps: 200 rows, 2 steps after
    one = population()
    out = one.run(20.05, record_every=4)
    assert rec.states.shape == (200, 3, 3) and rec.v.shape == (200, 3)
    np.testing.assert_array_equal(rec.v, out.v_record)
    np.testing.assert_array_equal(rec.run.spike_count, out.spike_count)
    # absolute spike times: the clock is summed piece by piece
    np.testing.assert_allclose(rec.run.spike_times, out.spike_times, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(rec.run.states, one.states)
    np.testing.assert_allclose(rec.t, DT * 4 * np.arange(1, 201), rtol=1e-12)
    for k in (0, 57, 199):  # row k: the states after (k + 1) * 4 steps
        again = population()
        again.run(DT * 4 * (k + 1), record_every=4)
        np.testing.assert_array_equal(rec.states[k], again.states)


def test_recorded_gates_behave_like_hh_gates():
    rec = record(population(), 30.0, record_every=2)
    assert ((rec.states >= 0) & (rec.states <= 1)).all()
    m, h = rec.states[:, 0], rec.states[:, 1]
    spiking = rec.run.spike_count > 0
    assert not spiking[0] and spiking[1:].all()
    assert (m[:, spiking].max(axis=0) > 0.95).all()  # Na activation at the spike peaks
    assert (m[:, 0].max() < 0.1) and (h[:, spiking].min(axis=0) < 0.2).all()


def test_record_on_the_reference_backend_agrees_with_the_cpu_kernel():
    got = record(population(), 15.0, record_every=10)
    ref = record(population(), 15.0, record_every=10, backend="reference")
    np.testing.assert_allclose(got.states, ref.states, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.v, ref.v, rtol=0, atol=1e-7)


def test_record_of_a_network_keeps_its_synaptic_conductances():
    W = sp.random(20, 20, density=0.2, format="csr", random_state=0) * 0.3
    nets = [Network(HH_CHANNELS, W, tau_syn=(3.0, 8.0), e_syn=(0.0, -80.0),
                    synapse_type=np.arange(20) % 2) for _ in range(2)]
    for net in nets:
        net.i_ext[:5] = 12.0
    rec = record(nets[0], 40.0, record_every=20)
    out = nets[1].run(40.0, record_every=20)
    assert rec.g_syn.shape == (80, 2, 20) and rec.states.shape == (80, 3, 20)
    np.testing.assert_array_equal(rec.v, out.v_record)
    np.testing.assert_array_equal(rec.run.spike_count, out.spike_count)
    np.testing.assert_array_equal(rec.g_syn[-1], nets[1].g_syn)
    assert rec.g_syn[:, 0].max() > 0 and rec.g_syn[:, 1].max() > 0  # both types carried


def test_record_of_a_cable_network_takes_record_at():
    morph = (np.array([-1, 0, 1, 1]), [20.0, 100, 80, 80], [20.0, 2, 1.5, 1.5])
    W = sp.csr_matrix(np.array([[0.0, 0.5], [0.0, 0.0]]))
    net = CableNetwork(HH_CHANNELS, morph, W, synapse_compartment=2)
    net.i_ext[0, 0] = 20.0
    rec = record(net, 10.0, record_every=8, record_at=[0, 3])
    assert rec.v.shape == (50, 2, 2) and rec.states.shape == (50, 3, 2, 4)
    assert rec.g_syn.shape == (50, 2, 4)
    np.testing.assert_array_equal(rec.states[-1], net.states)
    np.testing.assert_array_equal(rec.v[-1], net.v[:, [0, 3]])


def test_record_draws_a_progress_bar():
    bar = io.StringIO()
    record(population(), 5.0, record_every=10, progress=True, progress_file=bar)
    assert "100%" in bar.getvalue() and bar.getvalue().endswith("\n")


@pytest.mark.parametrize("every", [0, -3, 1.5, True, None])
def test_record_every_must_be_a_whole_number_of_steps(every):
    with pytest.raises(fusekit.InputError, match="record_every must be a whole number"):
        record(population(), 5.0, record_every=every)


def test_record_refuses_what_it_cannot_record():
    with pytest.raises(fusekit.InputError, match="Population, Network or CableNetwork"):
        record(object(), 5.0, record_every=2)
    with pytest.raises(fusekit.InputError, match="nothing would be recorded"):
        record(population(), 0.05, record_every=4)


def test_plot_states_draws_the_chosen_gates():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fusekit.neuro import plot_states

    rec = record(population(), 10.0, record_every=4)
    assert rec.state_names == ("HHSodium.m", "HHSodium.h", "HHPotassium.n")
    ax = plot_states(rec, neurons=[2], states=["m", "HHPotassium.n"])
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[1].get_ydata(), rec.states[:, 2, 2])
    np.testing.assert_allclose(ax.lines[0].get_xdata(), rec.t)
    assert len(plot_states(rec).lines) == 3
    with pytest.raises(fusekit.InputError, match="no state named"):
        plot_states(rec, states=["q"])
    plt.close("all")


def test_plots_without_matplotlib_say_how_to_install_it(monkeypatch):
    import sys

    from fusekit.neuro import plot_raster, plot_states, plot_traces

    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)  # import fails
    rec = record(population(), 1.0, record_every=4)
    for plot, arg in ((plot_states, (rec,)), (plot_raster, (rec.run.spike_times,))):
        with pytest.raises(ImportError, match="pip install matplotlib"):
            plot(*arg)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_traces(rec.v, dt=DT, record_every=4)
