"""Morphology.discretize: SWC points joined into sections, cut by NEURON's d_lambda rule."""

import doctest

import numpy as np
import pytest

import fusekit
from fusekit import InputError
from fusekit.neuro import HH_CHANNELS, ChannelSet, Morphology, _cable, cable_tree, read_swc

HH = ChannelSet(HH_CHANNELS)


def write_cell(path, step=1.5, seed=0):
    """The synthetic reconstruction (``_cable.synthetic_swc``), written and read back."""
    _cable.synthetic_swc(path, step, seed)
    return read_swc(path)


def straight(length=200.0, diam=2.0, step=1.0):
    n = int(length / step)
    xyz = np.zeros((n + 1, 3))
    xyz[1:, 0] = np.arange(1, n + 1) * step
    return Morphology(np.arange(-1, n), np.r_[10.0, np.full(n, step)],
                      np.r_[10.0, np.full(n, diam)], xyz, np.r_[1, np.full(n, 3)],
                      np.arange(1, n + 2))


def lambda_um(diam, f=100.0, ra=100.0, cm=1.0):
    return 1e5 * np.sqrt(diam / (4 * np.pi * f * ra * cm))


@pytest.mark.parametrize(("length", "diam", "d_lambda"), [(200.0, 2.0, 0.1), (1000.0, 0.5, 0.1),
                                                          (30.0, 4.0, 0.1), (500.0, 1.0, 0.3)])
def test_a_uniform_dendrite_gets_neurons_nseg(length, diam, d_lambda):
    coarse = straight(length, diam).discretize(d_lambda)
    nseg = int((length / lambda_um(diam) / d_lambda + 0.9) / 2) * 2 + 1  # fixnseg.hoc
    assert coarse.parent.size == 1 + nseg
    np.testing.assert_allclose(coarse.length[1:], length / nseg, rtol=1e-12)
    np.testing.assert_allclose(coarse.diam[1:], diam, rtol=1e-12)
    assert coarse.parent.tolist() == [-1, *range(nseg)]
    np.testing.assert_allclose(coarse.xyz[1:, 0], (np.arange(nseg) + 0.5) * length / nseg)


def test_max_length_caps_the_segments():
    coarse = straight(200.0, 2.0).discretize(0.1, max_length=15.0)
    assert coarse.parent.size == 1 + 14 and coarse.length[1:].max() <= 15.0


def test_area_and_every_sections_resistance_are_kept(tmp_path):
    fine = write_cell(tmp_path / "cell.swc")
    coarse = fine.discretize(0.1)
    assert coarse.parent.size * 8 < fine.parent.size  # far fewer compartments
    np.testing.assert_allclose(coarse.area.sum(), fine.area.sum(), rtol=1e-12)

    def resistance(m, kind):  # sum over the compartments of one SWC type, per unit r_axial
        sel = m.kind == kind
        return float((4 * m.length[sel] / (np.pi * m.diam[sel] ** 2)).sum())

    for kind in (2, 3, 4):
        np.testing.assert_allclose(resistance(coarse, kind), resistance(fine, kind), rtol=1e-12)
    assert (coarse.parent[1:] < np.arange(1, coarse.parent.size)).all()  # Hines order
    kids = np.bincount(coarse.parent[1:], minlength=coarse.parent.size)
    assert kids[0] == 3 and (kids >= 2).sum() == 1 + 4  # the soma and four forks
    # a segment's middle lies on its section's path: within a step of a point of its type
    for point, kind in zip(coarse.xyz[1:], coarse.kind[1:], strict=True):
        near = np.linalg.norm(fine.xyz[fine.kind == kind] - point, axis=1).min()
        assert near < 1.5


def test_sections_break_where_the_swc_type_changes():
    m = straight(100.0, 1.0)
    kind = m.kind.copy()
    kind[51:] = 4  # the last 50 points apical
    coarse = Morphology(m.parent, m.length, m.diam, m.xyz, kind, m.swc_id).discretize(0.1)
    assert coarse.kind.tolist() == [1, 3, 3, 3, 4, 4, 4]  # 50 um of 1 um: 3 segments each
    np.testing.assert_allclose(coarse.length[1:], 50.0 / 3)


def cell_arrays(m, currents):
    """``cable_simulate``'s arrays for HH cells of morphology ``m`` at rest, junction nodes at
    its forks (``cable_tree``), ``currents`` (one per cell, uA/cm^2) into the soma."""
    tree = cable_tree(m.parent, m.length, m.diam)
    n, nodes = len(currents), tree.parent.size
    v0 = np.full((n, nodes), -65.0)
    S0 = HH.steady_states(v0.reshape(-1)).reshape(-1, n, nodes)
    P = HH.default_params(n * nodes).reshape(-1, n, nodes)
    P[0][:, tree.junction] = 0.0
    i_ext = np.zeros((n, nodes))
    i_ext[:, 0] = currents
    coupling = np.broadcast_to(tree.coupling[:, None], (2, n, nodes)).copy()
    return v0, S0, P, i_ext, tree.parent, coupling


def simulate_soma(m, currents=(150.0, 300.0), n_steps=2000):
    """HH cells of morphology ``m``, ``currents`` into the soma: spikes and somatic v."""
    return fusekit.ops.cable_simulate(*cell_arrays(m, currents), channels=HH, dt=0.025,
                                      n_steps=n_steps, record_every=4, record_at=[0],
                                      max_spikes=10, backend="cpu")


def test_the_coarse_cell_fires_as_the_fine_one(tmp_path):
    fine = write_cell(tmp_path / "cell.swc")
    want = simulate_soma(fine)
    assert want.spike_count.min() >= 2
    errors = {}
    for d_lambda in (0.3, 0.1, 0.03):
        got = simulate_soma(fine.discretize(d_lambda))
        np.testing.assert_array_equal(got.spike_count, want.spike_count)
        errors[d_lambda] = float(np.nanmax(np.abs(got.spike_times - want.spike_times)))
    assert errors[0.1] < 0.05  # ms, over 50 ms
    assert errors[0.03] <= errors[0.3]


@pytest.mark.parametrize(("kw", "name"), [({"d_lambda": 0.0}, "d_lambda"),
                                          ({"frequency": -1.0}, "frequency"),
                                          ({"r_axial": float("nan")}, "r_axial"),
                                          ({"c_m": 0.0}, "c_m"), ({"max_length": 0.0}, "max")])
def test_bad_discretization_arguments(kw, name):
    with pytest.raises(InputError, match=name):
        straight().discretize(**kw)


def test_docstring_examples():
    assert doctest.testmod(_cable, raise_on_error=False).failed == 0


def _brian2_swc():
    """The reconstruction Brian2 ships (a dentate granule cell from NeuroMorpho.org,
    mp_ma_40984_gc2.CNG.swc), found through the Brian2 environment of ``peers/setup.sh``."""
    import subprocess

    from peers import peer_python, require_peer

    require_peer("brian2")
    where = subprocess.run(
        [str(peer_python("brian2")), "-c", "import importlib.util as u, os; "
         "print(os.path.dirname(u.find_spec('brian2').origin))"],
        capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    return f"{where}/spatialneuron/mp_ma_40984_gc2.CNG.swc"


def test_a_real_reconstruction_discretized_fires_as_per_point():
    """Brian2's granule cell (353 points, dendrites down to 0.1 um): 145 compartments at
    d_lambda 0.1, the same spikes as one compartment per point, within 0.02 ms."""
    fine = read_swc(_brian2_swc())
    assert fine.parent.size == 353 and (fine.parent[1:] < np.arange(1, 353)).all()
    coarse = fine.discretize(0.1)
    assert coarse.parent.size == 145
    np.testing.assert_allclose(coarse.area.sum(), fine.area.sum(), rtol=1e-12)
    currents = [5.0, 10.0, 20.0, 40.0]
    want = simulate_soma(fine, currents)
    got = simulate_soma(coarse, currents)
    assert want.spike_count.tolist() == [1, 1, 4, 5]
    np.testing.assert_array_equal(got.spike_count, want.spike_count)
    np.testing.assert_allclose(got.spike_times, want.spike_times, atol=0.02)


def test_discretize_keeps_area_resistance_and_hines_order_on_random_trees():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.integers(0, 1000), min_size=0, max_size=40), st.integers(0, 2**31),
           st.sampled_from([0.3, 0.1, 0.03]), st.sampled_from([None, 5.0, 40.0]))
    def check(picks, seed, d_lambda, max_length):
        rng = np.random.default_rng(seed)
        n = len(picks) + 1
        parent = np.array([-1] + [p % (i + 1) for i, p in enumerate(picks)])  # Hines order
        kind = np.r_[1, rng.choice([2, 3, 4], n - 1)]
        fine = Morphology(parent, rng.uniform(0.5, 60.0, n), rng.uniform(0.2, 8.0, n),
                          rng.normal(size=(n, 3)), kind, np.arange(1, n + 1))
        coarse = fine.discretize(d_lambda, max_length=max_length)
        assert (coarse.parent[1:] < np.arange(1, coarse.parent.size)).all()
        assert coarse.parent[0] == -1 and coarse.kind[0] == 1
        np.testing.assert_allclose(coarse.area.sum(), fine.area.sum(), rtol=1e-11)
        for k in (2, 3, 4):
            sel_f, sel_c = fine.kind == k, coarse.kind == k
            r_f = (4 * fine.length[sel_f] / (np.pi * fine.diam[sel_f] ** 2)).sum()
            r_c = (4 * coarse.length[sel_c] / (np.pi * coarse.diam[sel_c] ** 2)).sum()
            np.testing.assert_allclose(r_c, r_f, rtol=1e-11)
        if max_length is not None:  # segments of at most max_length um of path each
            assert coarse.parent.size - 1 >= fine.length[1:].sum() / max_length - 1e-9
        assert set(coarse.swc_id.tolist()) <= set(fine.swc_id.tolist())

    check()
