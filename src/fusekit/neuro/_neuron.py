"""The same network in NEURON: to cross-check fusekit, or to time it against NEURON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import InputError
from ..ops.ion_channel import ChannelSet
from ._cable_network import CableNetwork
from .hh import HH_CHANNELS


@dataclass
class NeuronModel:
    """A :class:`CableNetwork` built in NEURON by :func:`to_neuron`.

    Attributes:
        h: NEURON's ``h``.
        sections: ``sections[cell]``: one section (nseg = 1) per compartment, or, for a
            network of :meth:`~fusekit.neuro.Morphology.neuron_tree` cells, the tree's
            sections in the order of ``tree.names``.
        segments: ``segments[cell][compartment]``: every compartment's NEURON segment.
        synapses: ``(cell, compartment, type) -> ExpSyn`` for every target of a synapse.
        netcons: One ``NetCon`` per synapse, in CSR order.
        counters: One ``APCount`` per cell, in compartment 0.
        dt: The step the delays were set for, ms.
        v0: The initial potential, mV.
    """

    h: Any
    sections: list[list[Any]]
    segments: list[list[Any]]
    synapses: dict[tuple[int, int, int], Any]
    netcons: list[Any]
    counters: list[Any]
    dt: float
    v0: float
    _keep: list[Any] = field(default_factory=list, repr=False)

    def run(self, duration: float, *, record_every: int = 0, record_at: Any = (0,),
            threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Run ``duration`` ms from the initial state with fixed steps of ``dt``.

        Args:
            duration: ms.
            record_every: Record ``v`` every this many steps (0: none).
            record_at: The compartments recorded.
            threads: NEURON's threads (``ParallelContext.nthread``).

        Returns:
            ``v_record`` ``(n_steps // record_every, n_cells, len(record_at))`` (mV, as
            fusekit records: after every ``record_every``-th step) and every cell's spike
            count (threshold crossings in compartment 0).
        """
        h = self.h
        cols = [int(c) for c in record_at] if record_every else []
        recs = [[h.Vector().record(cell[c]._ref_v) for c in cols] for cell in self.segments]
        pc = h.ParallelContext()
        pc.nthread(threads)
        h.dt, h.steps_per_ms = self.dt, 1.0 / self.dt
        h.tstop = duration
        h.finitialize(self.v0)
        h.run()
        pc.nthread(1)
        n_steps = int(round(duration / self.dt))
        counts = np.array([c.n for c in self.counters], dtype=np.int64)
        if not record_every:
            return np.empty((0, len(self.sections), 0)), counts
        v = np.array([[np.array(r)[1:n_steps + 1] for r in cell] for cell in recs])
        return v.transpose(2, 0, 1)[record_every - 1::record_every], counts


def _neuron_tree_cell(h: Any, tree: Any, c: int) -> tuple[list[Any], list[Any]]:
    """A :class:`~fusekit.neuro.NeuronTree`'s sections, and every compartment's segment."""
    secs = [h.Section(name=f"fusekit_c{c}_{name}") for name in tree.names]
    for s, sec in enumerate(secs):
        for x, y, z, d in tree.points[s]:
            h.pt3dadd(float(x), float(y), float(z), float(d), sec=sec)
        if tree.section_parent[s] >= 0:
            sec.connect(secs[int(tree.section_parent[s])](float(tree.parent_x[s])), 0)
        sec.nseg = int(tree.nseg[s])
        sec.Ra = float(tree.r_axial[s])
    return secs, [secs[int(tree.section[k])](float(tree.x[k])) for k in range(tree.node.size)]


def to_neuron(net: CableNetwork, dt: float = 0.025, *, spike_threshold: float = 0.0,
              h: Any = None) -> NeuronModel:
    """Build ``net`` in NEURON: its sections, ``ExpSyn`` targets and ``NetCon``s.

    The squid HH channels become NEURON's ``hh`` (rate tables off, 6.3 degC) with every
    compartment's conductances and reversal potentials; ``i_ext`` becomes ``IClamp``s; every
    synapse a ``NetCon`` from its cell's soma onto an ``ExpSyn`` of its compartment and type
    (one ``ExpSyn`` per compartment and type: it is linear, so its ``NetCon``s sum as
    fusekit's conductance does), with the weight in uS (``w * area * 1e3``) and NEURON's delay
    ``(delay_steps - 1) dt`` (NEURON stamps a spike with the end of its step); every
    compartment's section is attached to its parent's ``1`` end. The two then agree to
    round-off (``tests/test_ion_cable_network.py``: chains and branched cells, whose branch
    points NEURON joins at a zero-area node, as :class:`CableNetwork` does by default; a
    network made with ``junctions=False`` differs there). A network of
    :meth:`~fusekit.neuro.Morphology.neuron_tree` cells gets the tree's sections instead,
    from their 3-d points with their ``nseg`` and attachments, each segment with its
    compartment's parameters (``tests/test_ion_import3d.py``).

    Args:
        net: A network that has not run yet (``net.t == 0``), of HH channels, with one
            initial potential everywhere.
        dt: The time step NEURON will use, ms.
        spike_threshold: mV, for the ``NetCon``s (and :meth:`NeuronModel.run`'s counts).
        h: NEURON's ``h`` (default: ``neuron.h``).

    Returns:
        The :class:`NeuronModel`; :meth:`NeuronModel.run` runs it.
    """
    if h is None:
        import os

        # no GUI: NEURON otherwise warns on import about a missing X display
        os.environ.setdefault("NEURON_MODULE_OPTIONS", "-nogui")
        try:
            from neuron import h
        except ImportError:
            raise InputError("to_neuron: NEURON is not installed (pip install neuron)") from None
    cs = net.channel_set
    if cs.key != ChannelSet(HH_CHANNELS).key:
        raise InputError(f"to_neuron: only the squid HH channels (HH_CHANNELS, NEURON's hh) "
                         f"can be built in NEURON without mod files, got {cs!r}")
    if net.t != 0 or not (net.v == net.v.flat[0]).all() or (net.g_syn != 0).any():
        raise InputError("to_neuron: build the network before it runs (one initial potential "
                         "everywhere, no synaptic conductance): NEURON starts from finitialize")
    h.load_file("stdrun.hoc")
    h.celsius = 6.3
    h.usetable_hh = 0
    n_cells, n_comp = net.v.shape
    names = dict(zip(cs.param_names, range(len(cs.param_names)), strict=True))
    P = np.asarray(net.params, dtype=np.float64)
    from ._import3d import NeuronTree

    if net.length is None and not isinstance(net.tree, NeuronTree):
        raise InputError("to_neuron: the network's morphology is a CableTree without NEURON "
                         "sections; build it from a Morphology, (parent, length, diam) or "
                         "Morphology.neuron_tree")
    keep: list[Any] = []
    sections, segments = [], []
    for c in range(n_cells):
        if isinstance(net.tree, NeuronTree):
            cell, segs = _neuron_tree_cell(h, net.tree, c)
        else:
            cell = [h.Section(name=f"fusekit_c{c}_{j}") for j in range(n_comp)]
            for j, sec in enumerate(cell):
                sec.L, sec.diam, sec.nseg = float(net.length[j]), float(net.diam[j]), 1
                sec.Ra = float(net.r_axial)
                if net.parent[j] >= 0:
                    sec.connect(cell[net.parent[j]](1))
            segs = [sec(0.5) for sec in cell]
        for j, seg in enumerate(segs):
            seg.cm = float(P[names["c_m"], c, j])
            seg.sec.insert("hh")
            seg.hh.gnabar = P[names["g_na"], c, j] * 1e-3  # mS/cm^2 -> S/cm^2
            seg.hh.gkbar = P[names["g_k"], c, j] * 1e-3
            seg.hh.gl = P[names["g_leak"], c, j] * 1e-3
            seg.hh.el = P[names["e_leak"], c, j]
            seg.ena, seg.ek = P[names["e_na"], c, j], P[names["e_k"], c, j]
            if net.i_ext[c, j]:
                stim = h.IClamp(seg)
                stim.delay, stim.dur = 0.0, 1e9
                stim.amp = float(net.i_ext[c, j]) * net.area[j] * 1e3  # uA/cm^2 -> nA
                keep.append(stim)
        sections.append(cell)
        segments.append(segs)
    n_types = net.g_syn.shape[0] if net.g_syn.ndim == 3 else 1
    taus = np.broadcast_to(np.asarray(net.tau_syn, np.float64), (n_types,))
    es = np.broadcast_to(np.asarray(net.e_syn, np.float64), (n_types,))
    kinds = net.synapse_type if net.synapse_type is not None else np.zeros(
        net.indices.shape[0], np.int64)
    delay_steps = max(1, int(round(net.delay / dt)))
    synapses: dict[tuple[int, int, int], Any] = {}
    netcons = []
    for pre in range(n_cells):
        soma = segments[pre][0]
        for e in range(net.indptr[pre], net.indptr[pre + 1]):
            post, comp, kind = int(net.indices[e]), int(net.synapse_compartment[e]), int(kinds[e])
            syn = synapses.get((post, comp, kind))
            if syn is None:
                syn = h.ExpSyn(segments[post][comp])
                syn.tau, syn.e = float(taus[kind]), float(es[kind])
                synapses[(post, comp, kind)] = syn
            nc = h.NetCon(soma._ref_v, syn, sec=soma.sec)
            nc.threshold, nc.delay = spike_threshold, (delay_steps - 1) * dt
            nc.weight[0] = float(net.weights[e]) * net.area[comp] * 1e3  # mS/cm^2 -> uS
            netcons.append(nc)
    counters = []
    for segs in segments:
        count = h.APCount(segs[0])
        count.thresh = spike_threshold
        counters.append(count)
    return NeuronModel(h, sections, segments, synapses, netcons, counters, dt,
                       float(net.v.flat[0]), keep)
