"""Morphology.neuron_tree against NEURON's own Import3d of the same SWC files.

NEURON stores 3-d points in float32 (and subtracts them in float32 for the arc lengths), so
the tests round the points to float32 first; the areas then agree to 1e-7 and the voltages
to 1e-6 mV.
"""

import dataclasses
import os

import numpy as np
import pytest

import fusekit
from fusekit import InputError
from fusekit.neuro import HH_CHANNELS, ChannelSet, Morphology, NeuronTree, _cable, read_swc

neuron = pytest.importorskip("neuron")
HH = ChannelSet(HH_CHANNELS)


def as_neuron_stores(m):
    """``m`` with its points rounded to float32, as NEURON's pt3d list keeps them."""
    return dataclasses.replace(m, xyz=m.xyz.astype(np.float32).astype(np.float64),
                               diam=m.diam.astype(np.float32).astype(np.float64))


def import_into_neuron(path, d_lambda=0.1, ra=None, cm=None):
    """NEURON's Import3d of ``path``, ``nseg`` by the d_lambda rule: ``{name: section}``.

    ``ra``, ``cm``: ``Ra`` and ``cm`` by section type name (``soma``, ``dend``, ...) or section
    name (``dend[0]``, over its type's), set before the rule, as NEURON users do per section
    list."""
    h = neuron.h
    h.load_file("stdlib.hoc")
    h.load_file("import3d.hoc")

    class Cell:
        pass

    cell = Cell()
    swc = h.Import3d_SWC_read()
    swc.quiet = 1
    swc.input(str(path))
    h.Import3d_GUI(swc, False).instantiate(cell)
    secs = {sec.name().rsplit(".", 1)[-1]: sec for sec in cell.all}
    for name, sec in secs.items():
        kind = name.split("[")[0]
        sec.Ra = 100.0 if ra is None else ra.get(name, ra.get(kind))
        sec.cm = 1.0 if cm is None else cm.get(name, cm.get(kind))
        sec.nseg = int((sec.L / (d_lambda * h.lambda_f(100, sec=sec)) + 0.9) / 2) * 2 + 1
    return cell, secs


def assert_same_cell(tree, secs):
    """Sections, 3-d points, attachments, nseg and every segment's area as NEURON's."""
    assert sorted(tree.names) == sorted(secs)
    for s, name in enumerate(tree.names):
        sec = secs[name]
        pts = np.array([[sec.x3d(i), sec.y3d(i), sec.z3d(i), sec.diam3d(i)]
                        for i in range(sec.n3d())])
        np.testing.assert_allclose(tree.points[s], pts, rtol=1e-6, atol=1e-6, err_msg=name)
        up = sec.parentseg()
        if up is None:
            assert tree.section_parent[s] == -1
        else:
            assert tree.names[tree.section_parent[s]] == up.sec.name().rsplit(".", 1)[-1], name
            assert tree.parent_x[s] == up.x, name
        assert tree.nseg[s] == sec.nseg, name
        comps = np.flatnonzero(tree.section == s)
        comps = comps[np.argsort(tree.x[comps])]  # the root's: soma(0.5) first
        want = np.array([seg.area() for seg in sec])
        np.testing.assert_allclose(tree.area[tree.node[comps]] * 1e8, want, rtol=1e-6,
                                   err_msg=name)
        np.testing.assert_allclose(tree.x[comps], [seg.x for seg in sec], rtol=1e-12)
        assert tree.compartment(name, float(tree.x[comps[-1]])) == comps[-1]


def simulate_both(tree, secs, current=40.0, duration=30.0):
    """HH everywhere, ``current`` uA/cm^2 into soma(0.5): every compartment's v, both ways."""
    h = neuron.h
    h.load_file("stdrun.hoc")
    h.celsius, h.usetable_hh = 6.3, 0
    for sec in secs.values():
        sec.insert("hh")
    stim = h.IClamp(secs[tree.names[0]](0.5))
    stim.delay, stim.dur, stim.amp = 0.0, 1e9, current * tree.area[0] * 1e3  # nA
    segs = [secs[tree.names[tree.section[c]]](float(tree.x[c])) for c in range(tree.node.size)]
    recs = [h.Vector().record(seg._ref_v) for seg in segs]
    h.dt, h.steps_per_ms, h.tstop = 0.025, 40.0, duration
    h.finitialize(-65.0)
    h.run()
    n_steps = int(round(duration / 0.025))
    want = np.array([np.array(r)[1:n_steps + 1] for r in recs]).T
    nodes = tree.parent.size
    v0 = np.full((1, nodes), -65.0)
    S0 = HH.steady_states(v0.reshape(-1)).reshape(-1, 1, nodes)
    P = HH.default_params(nodes).reshape(-1, 1, nodes)
    P[0][:, tree.junction] = 0.0
    P[0][:, tree.node] = tree.compartment_c_m()  # the sections' cm, as NEURON's
    i_ext = np.zeros((1, nodes))
    i_ext[0, 0] = current
    got = fusekit.ops.cable_simulate(v0, S0, P, i_ext, tree.parent, tree.coupling[:, None].copy(),
                                     channels=HH, dt=0.025, n_steps=n_steps, record_every=1,
                                     record_at=tree.node, max_spikes=20, backend="cpu")
    return got.v_record[:, 0, :], want


def brian2_swc():
    from test_ion_morphology import _brian2_swc

    return _brian2_swc()


@pytest.mark.parametrize("which", ["synthetic", "brian2"])
def test_the_cell_is_neurons_import3d(tmp_path, which):
    if which == "synthetic":
        path = tmp_path / "cell.swc"
        _cable.synthetic_swc(path)
    else:
        path = brian2_swc()
    m = read_swc(path)
    tree = as_neuron_stores(m).neuron_tree(0.1)
    assert isinstance(tree, NeuronTree) and tree.names[0] == "soma[0]"
    assert (tree.parent[1:] < np.arange(1, tree.parent.size)).all() and tree.parent[0] == -1
    assert tree.section[0] == 0 and tree.x[0] == 0.5  # compartment 0 is soma(0.5)
    cell, secs = import_into_neuron(path)
    assert_same_cell(tree, secs)
    got, want = simulate_both(tree, secs)
    assert want[:, 0].max() > 0  # the soma fired
    np.testing.assert_allclose(got, want, atol=1e-6)
    # without the rounding the cell differs from NEURON's only by float32 points
    close = m.neuron_tree(0.1)
    np.testing.assert_allclose(close.area, tree.area, rtol=1e-6)


def random_swc(path, rng, soma):
    """A random reconstruction: a soma of one point, NeuroMorpho's three points, a chain or a
    branched chain, and branches of random SWC types, written depth-first or interleaved."""
    rows = []

    def add(kind, xyz, r, pid):
        rows.append((len(rows) + 1, kind, *np.round(xyz, 3), round(float(r), 3), pid))
        return len(rows), np.asarray(xyz, float)

    root, _ = add(1, (0.0, 0.0, 0.0), rng.uniform(4, 9), -1)
    places = [(root, np.zeros(3))]
    if soma == "three":
        r = rows[0][5]
        add(1, (0.0, -r, 0.0), r, root)
        add(1, (0.0, r, 0.0), r, root)
    elif soma in ("chain", "branched"):
        for arm in range(1 if soma == "chain" else 3):
            pid, at = places[int(rng.integers(len(places)))] if arm else places[0]
            for _ in range(int(rng.integers(2, 6))):
                pid, at = add(1, at + (rng.uniform(1, 4), arm, 0), rng.uniform(2, 7), pid)
                places.append((pid, at))
    branches = []
    for _ in range(int(rng.integers(1, 7))):
        pid, at = places[int(rng.integers(len(places)))]
        kind = int(rng.choice([2, 3, 4]))
        steps = int(rng.integers(1, 10))
        branches.append([pid, at, kind, steps])
        if rng.random() < 0.5:  # grow it now (depth-first), so later ones may fork from it
            while branches[-1][3] > 0:
                grow(branches[-1], add, rng, places)
    while any(b[3] > 0 for b in branches):  # the rest interleaved: non-contiguous children
        for b in branches:
            if b[3] > 0:
                grow(b, add, rng, places)
    with open(path, "w") as f:
        for row in rows:
            f.write(" ".join(str(x) for x in row) + "\n")


def grow(branch, add, rng, places):
    pid, at, kind, steps = branch
    if rng.random() < 0.1:
        kind = int(rng.choice([2, 3, 4]))  # a type change mid-branch
    d = rng.normal(size=3)
    pid, at = add(kind, at + rng.uniform(1, 12) * d / np.linalg.norm(d), rng.uniform(0.2, 2),
                  pid)
    places.append((pid, at))
    branch[:] = [pid, at, kind, steps - 1]


def test_random_reconstructions_match_neuron(tmp_path):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None)
    @given(st.integers(0, 2**31), st.sampled_from(["point", "three", "chain", "branched"]),
           st.sampled_from([0.3, 0.1, 0.02]))
    def check(seed, soma, d_lambda):
        path = tmp_path / f"random_{seed}_{soma}.swc"
        random_swc(path, np.random.default_rng(seed), soma)
        tree = as_neuron_stores(read_swc(path)).neuron_tree(d_lambda)
        cell, secs = import_into_neuron(path, d_lambda)
        assert_same_cell(tree, secs)
        got, want = simulate_both(tree, secs, duration=5.0)
        np.testing.assert_allclose(got, want, atol=1e-4)  # mV; 1e-8 geometry near spikes
        os.remove(path)

    check()


def test_per_type_ra_and_cm_as_neuron_users_set_them(tmp_path):
    """``Ra`` and ``cm`` per section type (``forsec``), set before the d_lambda rule in NEURON:
    the same ``nseg``, areas, axial coupling and voltages."""
    path = tmp_path / "cell.swc"
    _cable.synthetic_swc(path)
    ra = {"soma": 80.0, "axon": 150.0, "dend": 250.0, "apic": 60.0, "dend[1]": 400.0}
    cm = {"soma": 1.0, "axon": 0.5, "dend": 2.0, "apic": 1.5, "axon[0]": 0.8}
    # keys by SWC type too, one for a type the cell lacks (type 7), and a section's own
    tree = as_neuron_stores(read_swc(path)).neuron_tree(
        0.1, r_axial={1: 80.0, 2: 150.0, "dend": 250.0, "apic": 60.0, 7: 1.0, "dend[1]": 400.0},
        c_m=cm)
    uniform = as_neuron_stores(read_swc(path)).neuron_tree(0.1)
    assert tree.nseg.tolist() != uniform.nseg.tolist()  # the rule saw other Ra and cm
    def want(values, name):
        return values.get(name, values[name.split("[")[0]])

    np.testing.assert_array_equal(tree.r_axial, [want(ra, n) for n in tree.names])
    np.testing.assert_array_equal(tree.compartment_c_m(),
                                  [want(cm, tree.names[s]) for s in tree.section])
    assert tree.r_axial[tree.names.index("dend[1]")] == 400.0
    cell, secs = import_into_neuron(path, ra=ra, cm=cm)
    assert_same_cell(tree, secs)
    got, want = simulate_both(tree, secs)
    assert want[:, 0].max() > 0
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_per_type_values_a_network_takes(tmp_path):
    """CableNetwork takes the tree's cm unless given one; to_neuron sets every section's Ra."""
    import scipy.sparse as sp

    from fusekit.neuro import CableNetwork, to_neuron

    path = tmp_path / "cell.swc"
    _cable.synthetic_swc(path)
    tree = read_swc(path).neuron_tree(0.1, r_axial={"soma": 80, "axon": 150, "dend": 250,
                                                    "apic": 60}, c_m={"soma": 1, "axon": 1,
                                                                      "dend": 2, "apic": 2})
    W = sp.csr_matrix((2, 2))
    net = CableNetwork(HH_CHANNELS, tree, W)
    np.testing.assert_array_equal(net.params[0], np.broadcast_to(tree.compartment_c_m(),
                                                                 net.v.shape))
    np.testing.assert_array_equal(CableNetwork(HH_CHANNELS, tree, W, c_m=1.0).params[0], 1.0)
    model = to_neuron(net)
    for s, sec in enumerate(model.sections[0]):
        assert sec.Ra == tree.r_axial[s]
    assert {seg.cm for seg in model.segments[0]} == {1.0, 2.0}


def test_bad_input_says_what_to_do(tmp_path):
    m = read_swc(_write(tmp_path / "a.swc", ["1 1 0 0 0 5 -1", "2 3 10 0 0 1 1"]))
    with pytest.raises(InputError, match="d_lambda"):
        m.neuron_tree(0.0)
    with pytest.raises(InputError, match="r_axial"):
        m.neuron_tree(r_axial=float("nan"))
    with pytest.raises(InputError, match="no value for the cell's section types 3 \\(dend\\)"):
        m.neuron_tree(r_axial={"soma": 100.0})
    with pytest.raises(InputError, match="the key 'dendrite'"):
        m.neuron_tree(c_m={"soma": 1.0, "dendrite": 2.0})
    with pytest.raises(InputError, match="gives type 3 \\(dend\\) twice"):
        m.neuron_tree(c_m={"soma": 1.0, "dend": 2.0, 3: 2.0})
    with pytest.raises(InputError, match="c_m must be a positive number"):
        m.neuron_tree(c_m={"soma": 1.0, "dend": -2.0})
    with pytest.raises(InputError, match="r_axial must be a positive number.*got '150'"):
        m.neuron_tree(r_axial={"soma": 100.0, "dend": "150"})
    with pytest.raises(InputError, match="names the section 'dend\\[4\\]', which the cell lacks"):
        m.neuron_tree(c_m={"soma": 1.0, "dend": 2.0, "dend[4]": 3.0})
    # a section's own value stands in for its type's
    assert m.neuron_tree(r_axial={"soma": 100.0, "dend[0]": 50.0}).r_axial.tolist() == [100.0,
                                                                                      50.0]
    twice = dataclasses.replace(m, swc_id=np.array([1, 1]))
    with pytest.raises(InputError, match="swc_id values repeat"):
        twice.neuron_tree()
    late = read_swc(_write(tmp_path / "b.swc", ["2 1 0 0 0 5 -1", "1 3 10 0 0 1 2"]))
    with pytest.raises(InputError, match="parent id is below"):
        late.neuron_tree()
    with pytest.raises(InputError, match="no section 'dend\\[9\\]'"):
        m.neuron_tree().compartment("dend[9]")
    with pytest.raises(InputError, match="x must lie"):
        m.neuron_tree().compartment("dend[0]", 1.5)


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_uniform_dendrite_gets_the_formulas_segments():
    n = 200
    xyz = np.zeros((n + 1, 3))
    xyz[:, 0] = np.arange(n + 1.0)
    m = Morphology(np.arange(-1, n), np.r_[10.0, np.ones(n)], np.r_[10.0, np.full(n, 2.0)],
                   xyz, np.r_[1, np.full(n, 3)], np.arange(1, n + 2))
    tree = m.neuron_tree()
    # the dendrite is wired to soma(0.5) and starts at its own first point: 199 um
    lam = 1e5 * np.sqrt(2.0 / (4 * np.pi * 100 * 100 * 1.0))
    assert tree.nseg.tolist() == [1, int((199 / lam / 0.1 + 0.9) / 2) * 2 + 1]
    np.testing.assert_allclose(tree.area[0], np.pi * 10.0**2 * 1e-8)  # the sphere's area
    np.testing.assert_allclose(tree.area[1:], np.pi * 2.0 * 199 / 5 * 1e-8)
    # soma(0.5) to the first segment's centre: the dendrite's half segment alone
    g = tree.coupling[0, 1] * tree.area[1]  # mS
    np.testing.assert_allclose(1e-3 / g, 100 * (199 / 10) * 1e-4 / (np.pi * 1e-8) * 1e-6)


def test_a_network_of_imported_cells_runs_as_neuron_runs_it(tmp_path):
    """CableNetwork on the tree, synapses on dendritic segments, against to_neuron's build
    of the same sections from their 3-d points: the same spikes and voltages."""
    import scipy.sparse as sp

    from fusekit.neuro import CableNetwork, to_neuron

    path = tmp_path / "cell.swc"
    _cable.synthetic_swc(path)
    tree = read_swc(path).neuron_tree(0.1)
    n = 6
    W = sp.random(n, n, density=0.5, format="csr", random_state=3) * 20.0
    far = tree.compartment("dend[3]", 0.9)  # a distal basal segment
    net = CableNetwork(HH_CHANNELS, tree, W, synapse_compartment=far, delay=1.0)
    assert net.v.shape == (n, tree.node.size) and net.parent[0] == -1
    np.testing.assert_allclose(net.area, tree.area[tree.node])
    net.i_ext[:2, 0] = 100.0
    model = to_neuron(net)
    assert [s.name().split("_", 2)[-1] for s in model.sections[0]] == list(tree.names)
    for k in (0, far):
        np.testing.assert_allclose(model.segments[0][k].area(), tree.area[tree.node[k]] * 1e8,
                                   rtol=1e-6)
    v_neuron, counts = model.run(30.0, record_every=4, record_at=[0, far])
    out = net.run(30.0, record_every=4, record_at=[0, far])
    assert counts[:2].min() >= 2 and counts[2:].min() >= 1  # driven cells fire, others follow
    np.testing.assert_array_equal(out.spike_count, counts)
    np.testing.assert_allclose(out.v_record, v_neuron, atol=1e-3)  # float32 points in NEURON


def test_a_cable_tree_needs_its_own_junctions_and_neuron_sections():
    import scipy.sparse as sp

    from fusekit.neuro import CableNetwork, cable_tree, to_neuron

    tree = cable_tree(np.array([-1, 0, 0]), np.full(3, 50.0), np.full(3, 2.0))
    W = sp.csr_matrix((2, 2))
    with pytest.raises(InputError, match="brings its own junctions"):
        CableNetwork(HH_CHANNELS, tree, W, junctions=False)
    net = CableNetwork(HH_CHANNELS, tree, W)
    assert net.v.shape == (2, 3) and net.parent.tolist() == [-1, 0, 0]
    with pytest.raises(InputError, match="without NEURON sections"):
        to_neuron(net)
