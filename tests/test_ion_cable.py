"""cable_simulate: multi-compartment cells against single compartments and a dense solve."""

import numpy as np
import pytest

import fusekit
from fusekit.neuro import HH_CHANNELS, ChannelSet, HHLeak, cable_coupling

HH = ChannelSet(HH_CHANNELS)
PASSIVE = ChannelSet([HHLeak])
CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]
PARENT = np.array([-1, 0, 1, 1, 3, 0, 5])  # soma, a forked dendrite, a second branch


def per_compartment(cs, n_cells, n_comp, v0):
    v = np.full((n_cells, n_comp), v0)
    S = cs.steady_states(v.reshape(-1)).reshape(-1, n_cells, n_comp)
    P = cs.default_params(n_cells * n_comp).reshape(-1, n_cells, n_comp)
    return v, S, P


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_one_compartment_cells_are_ion_simulate(backend):
    n = 5
    rng = np.random.default_rng(0)
    v0 = rng.uniform(-70, -60, n)
    S, P, i_ext = HH.steady_states(v0), HH.default_params(n), rng.uniform(0, 15, n)
    kw = dict(channels=HH, dt=0.025, n_steps=400, record_every=100, max_spikes=3,
              backend=backend)
    single = fusekit.ops.ion_simulate(v0, S, P, i_ext, **kw)
    cable = fusekit.ops.cable_simulate(v0[:, None], S[:, :, None], P[:, :, None],
                                       i_ext[:, None], np.array([-1]), np.zeros((2, n, 1)),
                                       **kw)
    np.testing.assert_allclose(cable.v[:, 0], single.v, rtol=1e-10)
    np.testing.assert_array_equal(cable.spike_count, single.spike_count)
    np.testing.assert_allclose(cable.spike_times, single.spike_times, rtol=1e-10)
    np.testing.assert_allclose(cable.v_record[..., 0], single.v_record, rtol=1e-10)


def test_passive_step_is_the_dense_backward_euler_solve():
    # The reference only: the CPU kernel's solve is checked against the reference below
    # (one more compiled channel set would cost ~6 s of test time).
    backend = "reference"
    n_cells, n_comp, dt = 3, PARENT.shape[0], 0.1
    rng = np.random.default_rng(1)
    v0 = rng.uniform(-80, -40, (n_cells, n_comp))
    _, S, P = per_compartment(PASSIVE, n_cells, n_comp, -65.0)
    P[0] = rng.uniform(0.8, 1.2, (n_cells, n_comp))  # c_m per compartment
    coupling = rng.uniform(0.5, 3.0, (2, n_cells, n_comp))
    i_ext = rng.uniform(-2, 2, (n_cells, n_comp))
    out = fusekit.ops.cable_simulate(v0, S, P, i_ext, PARENT, coupling, channels=PASSIVE,
                                     dt=dt, n_steps=1, backend=backend)
    g, e = P[1], P[2]
    for c in range(n_cells):
        A = np.diag(P[0, c] / dt + g[c])
        for i in range(1, n_comp):
            p = PARENT[i]
            A[i, i] += coupling[0, c, i]
            A[i, p] -= coupling[0, c, i]
            A[p, p] += coupling[1, c, i]
            A[p, i] -= coupling[1, c, i]
        rhs = P[0, c] / dt * v0[c] + g[c] * e[c] + i_ext[c]
        np.testing.assert_allclose(out.v[c], np.linalg.solve(A, rhs), rtol=1e-12)


def test_cpu_matches_reference_for_a_spiking_branched_hh_cell():
    n_cells, n_comp = 4, PARENT.shape[0]
    v, S, P = per_compartment(HH, n_cells, n_comp, -65.0)
    coupling = np.broadcast_to(
        cable_coupling(PARENT, np.full(n_comp, 30.0), np.linspace(20, 2, n_comp), 100.0)[:, None],
        (2, n_cells, n_comp)).copy()
    i_ext = np.zeros((n_cells, n_comp))
    i_ext[:, 0] = [0.0, 10.0, 20.0, 40.0]  # into the soma
    kw = dict(channels=HH, dt=0.025, n_steps=600, record_every=50, max_spikes=4)
    got = fusekit.ops.cable_simulate(v, S, P, i_ext, PARENT, coupling, backend="cpu", **kw)
    ref = fusekit.ops.cable_simulate(v, S, P, i_ext, PARENT, coupling, backend="reference",
                                     **kw)
    assert ref.spike_count[1:].min() >= 1 and ref.spike_count[0] == 0
    np.testing.assert_array_equal(got.spike_count, ref.spike_count)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    # The spike reaches the dendrites: every compartment of a firing cell goes above 0 mV.
    assert (ref.v_record[:, 3].max(axis=0) > 0).all()


def test_coupling_from_geometry_is_symmetric_in_conductance():
    length, diam = np.array([20.0, 50.0, 10.0]), np.array([20.0, 2.0, 1.0])
    a = cable_coupling(np.array([-1, 0, 1]), length, diam, 150.0)
    area = np.pi * diam * length * 1e-8
    g_child, g_parent = a[0, 1:] * area[1:], a[1, 1:] * area[:-1]
    np.testing.assert_allclose(g_child, g_parent)
    r = 150.0 * (length * 1e-4 / 2) / (np.pi * (diam * 0.5e-4) ** 2)
    np.testing.assert_allclose(g_child[0], 1e3 / (r[0] + r[1]))


def test_coupling_of_the_wrong_shape_is_refused():
    v, S, P = per_compartment(PASSIVE, 2, 3, -65.0)
    with pytest.raises(fusekit.InputError, match=r"coupling must have shape \(2, n_cells"):
        fusekit.ops.cable_simulate(v, S, P, np.zeros((2, 3)), np.array([-1, 0, 1]),
                                   np.zeros((2, 3)), channels=PASSIVE, dt=0.1, n_steps=1)


SWC = """# a soma, a forked dendrite, listed out of order
1 1 0 0 0 10 -1
3 3 0 30 0 1 2
2 3 0 10 0 1.5 1
4 3 20 30 0 0.5 3
5 3 -20 30 0 0.5 3
6 2 0 -20 0 0.5 1
"""


def test_read_swc_puts_compartments_in_hines_order(tmp_path):
    from fusekit.neuro import read_swc

    path = tmp_path / "cell.swc"
    path.write_text(SWC)
    m = read_swc(path)
    np.testing.assert_array_equal(m.swc_id, [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(m.parent, [-1, 0, 1, 2, 2, 0])
    assert all(m.parent[i] < i for i in range(1, 6))
    np.testing.assert_allclose(m.length, [20.0, 10.0, 20.0, 20.0, 20.0, 20.0])
    np.testing.assert_allclose(m.diam, [20.0, 3.0, 2.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(m.area[0], 4 * np.pi * (10e-4) ** 2)  # the soma sphere's area
    assert m.coupling(100.0).shape == (2, 6)


def test_read_swc_refuses_two_roots(tmp_path):
    from fusekit.neuro import read_swc

    path = tmp_path / "two.swc"
    path.write_text("1 1 0 0 0 5 -1\n2 1 10 0 0 5 -1\n")
    with pytest.raises(fusekit.InputError, match="exactly one root"):
        read_swc(path)


def test_swc_cell_fires_from_a_somatic_current(tmp_path):
    from fusekit.neuro import read_swc

    path = tmp_path / "cell.swc"
    path.write_text(SWC)
    m = read_swc(path)
    n_comp = m.parent.shape[0]
    v, S, P = per_compartment(HH, 1, n_comp, -65.0)
    i_ext = np.zeros((1, n_comp))
    i_ext[0, 0] = 20.0
    out = fusekit.ops.cable_simulate(v, S, P, i_ext, m.parent, m.coupling(100.0)[:, None],
                                     channels=HH, dt=0.025, n_steps=400, max_spikes=2,
                                     backend="reference")
    assert out.spike_count[0] >= 1


def test_cable_tree_adds_a_junction_where_two_or_more_children_meet():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from fusekit.neuro import cable_tree

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.integers(0, 1000), min_size=0, max_size=12), st.integers(0, 2**31))
    def check(picks, seed):
        parent = np.array([-1] + [p % (i + 1) for i, p in enumerate(picks)])  # Hines order
        rng = np.random.default_rng(seed)
        length, diam = rng.uniform(5, 200, parent.size), rng.uniform(0.5, 20, parent.size)
        tree = cable_tree(parent, length, diam)
        kids = np.bincount(parent[1:], minlength=parent.size)
        assert tree.junction.sum() == (kids >= 2).sum()
        assert (tree.parent[1:] < np.arange(1, tree.parent.size)).all()  # Hines order
        assert (tree.coupling[:, 1:] > 0).all() and (tree.coupling[:, 0] == 0).all()
        # every compartment hangs from its parent, directly or through the parent's junction
        for i in range(1, parent.size):
            up = tree.parent[tree.node[i]]
            assert up == tree.node[parent[i]] or (tree.junction[up]
                                                  and tree.parent[up] == tree.node[parent[i]])
        if (kids < 2).all():  # no branch point: exactly the pairwise coupling
            np.testing.assert_allclose(tree.coupling, cable_coupling(parent, length, diam))

    check()
