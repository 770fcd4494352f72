"""A network of multi-compartment cells: synapses from somata onto chosen compartments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

from .. import ops
from .._errors import InputError
from ..ops.ion import NetworkSimulation, check_record_at, synapse_kinds
from ..ops.ion_channel import Channel, ChannelSet, channel_set
from ._cable import (
    CableTree,
    Morphology,
    _hines_parent,
    cable_coupling,
    cable_tree,
    numpy_geometry,
)
from ._network import (
    carry_state,
    check_connectivity,
    check_delay,
    csr_arrays,
    delay_and_arrivals,
    index_array,
    per_synapse_types,
)
from ._population import check_counts, run_steps, run_with_progress


class CableNetwork:
    """``n_cells`` cells of one morphology, connected by CSR synapses (rows: presynaptic cells).

    A spike (a threshold crossing in a cell's compartment 0, the soma) reaches each of the
    cell's synapses ``delay`` ms later; synapse ``e`` is a conductance on compartment
    ``synapse_compartment[e]`` of cell ``indices[e]`` (:func:`fusekit.ops.cable_network_simulate`).
    State (``v``, ``states``, ``g_syn``, the spikes in flight ``arrivals``, time ``t``)
    carries over between :meth:`run` calls.

    Compartments join as NEURON joins sections of one segment at their ``1`` ends: where a
    compartment has two or more children, a zero-area node at its end couples them all at
    once (:func:`cable_tree`; ``junctions=False``: every child coupled to its parent in
    series, :func:`cable_coupling`). The junction nodes stay out of sight: every array here
    has one column per compartment. NEURON's ``NetCon`` with ``delay = d`` onto an
    ``ExpSyn`` of weight ``w`` (uS) is ``delay = d + dt`` here (NEURON stamps a spike with the
    end of its step) and a weight of ``w * 1e-3 / area`` mS/cm^2 of the target compartment
    (``net.area``, cm^2); :func:`to_neuron` builds the same network in NEURON.

    Args:
        channels: Channel classes or a :class:`ChannelSet` (in every compartment).
        morphology: A :class:`Morphology` (:func:`read_swc`), ``(parent, length, diam)``
            (Hines order, um), or a :class:`CableTree` taken as it is, such as
            :meth:`Morphology.neuron_tree`'s (the cell NEURON's Import3d builds: compartment
            ``c`` is NEURON's ``tree.names[tree.section[c]](tree.x[c])``).
        connectivity: A square ``scipy.sparse`` matrix ``W[pre, post]`` (mS/cm^2 per spike;
            any format, taken as CSR) or a tuple ``(indptr, indices, weights)`` of CSR arrays;
            its rows are the cells. Weights must be finite and non-negative.
        synapse_compartment: The compartment every synapse sits on, ``(nnz,)`` int, or one
            compartment for all (default 0, the soma).
        r_axial: Axial resistivity, Ohm cm (a :class:`CableTree` brings its coupling; a
            :class:`NeuronTree` its sections' ``Ra``, kept here).
        junctions: NEURON's zero-area nodes at branch points (default), or ``False`` for
            pairwise coupling (as :func:`cable_coupling`, ``cable_simulate``'s usual input).
        delay: Synaptic delay, ms, at least one step ``dt`` of :meth:`run` (rounded to a
            whole number of steps).
        tau_syn: Synaptic decay time constant, ms, or one per synapse type.
        e_syn: Synaptic reversal potential, mV, or one per synapse type.
        synapse_type: With several types, the type of every synapse ``(nnz,)`` or of every
            presynaptic cell ``(n_cells,)``.
        v0: Initial potential, mV; gates start at their steady state there.
        dtype: ``np.float32`` or ``np.float64``.
        **params: Parameter overrides: scalars, one value per compartment ``(n_comp,)`` (the
            same in every cell) or ``(n_cells, n_comp)``. A :class:`NeuronTree` morphology
            sets ``c_m`` to its sections' (``tree.compartment_c_m()``) unless given.

    Example:
        >>> import numpy as np, scipy.sparse as sp
        >>> from fusekit.neuro import HH_CHANNELS, CableNetwork
        >>> ball_and_stick = (np.array([-1, 0, 1, 2]), [20.0, 100, 100, 100], [20.0, 2, 2, 2])
        >>> W = sp.random(50, 50, density=0.1, format="csr", random_state=0) * 0.5
        >>> net = CableNetwork(HH_CHANNELS, ball_and_stick, W, synapse_compartment=3)
        >>> net.i_ext[:10, 0] = 20.0       # drive ten somata
        >>> out = net.run(20.0)            # doctest: +SKIP
    """

    def __init__(self, channels: ChannelSet | Sequence[type[Channel]], morphology: Any,
                 connectivity: Any, *, synapse_compartment: Any = 0, r_axial: float = 100.0,
                 junctions: bool = True, delay: float = 1.0, tau_syn: float | Sequence[float] = 5.0,
                 e_syn: float | Sequence[float] = 0.0, synapse_type: Any = None,
                 v0: float = -65.0, dtype: Any = np.float64, **params: Any):
        self.dtype = np.dtype(dtype)
        if isinstance(morphology, CableTree):
            if not junctions:
                raise InputError("CableNetwork: junctions=False applies to a Morphology or "
                                 "(parent, length, diam); a CableTree brings its own junctions")
            self.tree: CableTree | None = morphology
            nodes, cpl = morphology.parent, morphology.coupling
            self.parent = _compartment_parents(morphology)
            #: Every compartment's length and diameter (um; ``None`` for a CableTree),
            #: the axial resistivity (Ohm cm).
            self.length: np.ndarray | None = None
            self.diam: np.ndarray | None = None
            ra = getattr(morphology, "r_axial", r_axial)  # a NeuronTree's: one per section
            self.r_axial = float(ra) if np.ndim(ra) == 0 else np.asarray(ra, np.float64)
            #: Lateral area of every compartment, cm^2 (to convert NEURON weights in uS).
            self.area = np.asarray(morphology.area, np.float64)[morphology.node]
        else:
            if isinstance(morphology, Morphology):
                parent, length, diam = morphology.parent, morphology.length, morphology.diam
            else:
                try:
                    parent, length, diam = morphology
                except (TypeError, ValueError):
                    raise InputError(
                        "CableNetwork: morphology must be a Morphology (read_swc), a CableTree "
                        "(Morphology.neuron_tree, cable_tree) or a tuple (parent, length, diam) "
                        f"of per-compartment arrays (um), got {type(morphology).__name__}"
                    ) from None
            self.parent = _hines_parent("CableNetwork", parent)
            length, diam, r_axial = numpy_geometry("CableNetwork", length=length, diam=diam,
                                                   r_axial=r_axial)
            if junctions:
                self.tree = cable_tree(self.parent, length, diam, r_axial)
                nodes, cpl = self.tree.parent, self.tree.coupling
            else:
                self.tree = None
                nodes, cpl = self.parent, cable_coupling(self.parent, length, diam, r_axial)
            self.length = np.asarray(length, np.float64)
            self.diam = np.asarray(diam, np.float64)
            self.r_axial = float(r_axial)
            self.area = np.pi * self.diam * self.length * 1e-8
        self.indptr, self.indices, self.weights = csr_arrays(connectivity, self.dtype,
                                                             "CableNetwork")
        check_connectivity("CableNetwork", self.indptr, self.indices, self.weights)
        delay = check_delay("CableNetwork", delay)
        n_cells, n_comp = self.indptr.shape[0] - 1, self.parent.shape[0]
        nnz = self.indices.shape[0]
        #: The kernel's tree: parents and coupling ``(2, n_cells, n_nodes)`` of the
        #: compartments and junction nodes (the compartments alone without junctions).
        self.node_parent = nodes
        self.coupling = np.ascontiguousarray(
            np.broadcast_to(cpl[:, None], (2, n_cells, nodes.shape[0])), dtype=self.dtype)
        comps = np.asarray(synapse_compartment)
        if comps.shape != (nnz,) and comps.ndim != 0:
            raise InputError(f"CableNetwork: synapse_compartment must be one compartment index "
                             f"or one per synapse, int ({nnz},), got {comps.shape} {comps.dtype}")
        comps = index_array("CableNetwork", "synapse_compartment", comps)
        if comps.ndim == 0:
            comps = np.full(nnz, int(comps), dtype=np.int64)
        if nnz and (int(comps.min()) < 0 or int(comps.max()) >= n_comp):
            raise InputError(f"CableNetwork: synapse_compartment must lie in [0, {n_comp}) (the "
                             f"morphology has {n_comp} compartments), got values from "
                             f"{int(comps.min())} to {int(comps.max())}")
        self.synapse_compartment = comps.astype(np.int64)
        self.channel_set = channel_set(channels)
        if hasattr(morphology, "compartment_c_m") and "c_m" not in params:
            params = {**params, "c_m": morphology.compartment_c_m()}  # a NeuronTree's cm
        flat = {}
        for name, value in params.items():
            try:
                flat[name] = np.broadcast_to(np.asarray(value, dtype=self.dtype),
                                             (n_cells, n_comp)).reshape(-1)
            except ValueError:
                raise InputError(f"CableNetwork: parameter {name} must be a number, one value "
                                 f"per compartment ({n_comp},) or ({n_cells}, {n_comp}), got "
                                 f"shape {np.shape(value)}") from None
        cells = (n_cells, n_comp)
        self.params = self.channel_set.default_params(
            n_cells * n_comp, self.dtype, **flat).reshape(-1, *cells)
        self.v = np.full(cells, v0, dtype=self.dtype)
        self.states = self.channel_set.steady_states(
            self.v.reshape(-1), self.params.reshape(self.params.shape[0], -1)
        ).astype(self.dtype).reshape(-1, *cells)
        taus, _, typed = synapse_kinds(tau_syn, e_syn)
        self.synapse_type = per_synapse_types("CableNetwork", synapse_type, self.indptr, nnz,
                                              len(taus))
        self.g_syn = np.zeros((len(taus), *cells) if typed else cells, dtype=self.dtype)
        #: Injected current per compartment, uA/cm^2, ``(n_cells, n_comp)``.
        self.i_ext = np.zeros(cells, dtype=self.dtype)
        self.delay, self.tau_syn, self.e_syn = delay, tau_syn, e_syn
        self.arrivals: np.ndarray | None = None
        self.t = 0.0

    def run(self, duration: float, *, dt: float = 0.025, record_every: int = 0,
            record_at: Sequence[int] | None = None, spike_threshold: float = 0.0,
            max_spikes: int = 64, progress: bool = False, progress_file: TextIO | None = None,
            backend: str | None = None) -> NetworkSimulation:
        """Advance by ``duration`` ms; spike times in the result are absolute (ms).

        Args:
            duration: ms (rounded to whole steps).
            dt: Time step, ms.
            record_every: Record ``v`` every this many steps (0: none).
            record_at: The compartments recorded (``None``: all).
            spike_threshold: mV, in compartment 0.
            max_spikes: Spike times kept per cell.
            progress: Show a progress bar (on ``progress_file``, default stderr); the run
                is then split into about 50 kernel calls (the same results).
            progress_file: Where the bar goes.
            backend: As for every fusekit op.

        Returns:
            The :class:`~fusekit.ops.NetworkSimulation` of this run (``v_record``
            ``(n_rec, n_cells, n_recorded)``).
        """

        def advance(steps: int) -> NetworkSimulation:
            return self._advance(steps, dt, record_every, record_at, spike_threshold,
                                 max_spikes, backend)

        n_steps = run_steps("CableNetwork.run", duration, dt)
        check_counts("CableNetwork.run", record_every=record_every, max_spikes=max_spikes)
        return run_with_progress(advance, n_steps, record_every, progress, progress_file,
                                 lambda: self.t)

    def _advance(self, n_steps: int, dt: float, record_every: int,
                 record_at: Sequence[int] | None, spike_threshold: float, max_spikes: int,
                 backend: str | None) -> NetworkSimulation:
        delay_steps, arrivals = delay_and_arrivals("CableNetwork.run", self.delay, dt,
                                                   self.arrivals)
        cells = tuple(self.v.shape)
        if tuple(np.shape(self.i_ext)) not in (cells, (n_steps, *cells)):
            raise InputError(f"CableNetwork.run: i_ext must have shape (n_cells, n_comp) = "
                             f"{cells} (uA/cm^2 per compartment), got {np.shape(self.i_ext)}; "
                             f"set values in place (net.i_ext[:, 0] = 10.0) rather than "
                             f"assigning a new array")
        arrays = (self.v, self.states, self.params, self.i_ext, self.g_syn, arrivals)
        comps, cols = self.synapse_compartment, record_at
        if self.tree is not None:  # the kernel's columns: compartments and junctions
            arrays = self._with_junctions(*arrays)
            node = self.tree.node
            comps = node[comps]
            record_at = check_record_at("CableNetwork.run", record_at, node.shape[0])
            cols = node if record_at is None else node[list(record_at)]
        v, states, params, i_ext, g_syn, arrivals = arrays
        out = ops.cable_network_simulate(
            v, states, params, i_ext, self.node_parent, self.coupling, g_syn, self.indptr,
            self.indices, self.weights, channels=self.channel_set, dt=dt, n_steps=n_steps,
            delay_steps=delay_steps, tau_syn=self.tau_syn, e_syn=self.e_syn,
            synapse_type=self.synapse_type, synapse_compartment=comps,
            record_every=record_every, record_at=None if cols is None else list(cols),
            spike_threshold=spike_threshold, max_spikes=max_spikes, arrivals0=arrivals,
            backend=backend,
        )
        if self.tree is not None:  # back to one column per compartment
            node = self.tree.node
            out = out._replace(v=out.v[:, node], states=out.states[..., node],
                               g_syn=out.g_syn[..., node], arrivals=out.arrivals[..., node])
        return carry_state(self, out, n_steps, dt)

    def _with_junctions(self, v: np.ndarray, states: np.ndarray, params: np.ndarray,
                        i_ext: np.ndarray, g_syn: np.ndarray, arrivals: np.ndarray | None
                        ) -> tuple[Any, ...]:
        """The arrays with the junction nodes' columns added.

        A junction has ``c_m = 0``, so no membrane: the ops skip its channels and hold its
        states, whatever its other parameters. It has no current or synapse; its potential,
        states and parameters are copied from the compartment it ends (they enter nothing:
        its row of the system is its axial currents alone).
        """
        tree = self.tree
        assert tree is not None
        n_nodes = tree.parent.shape[0]
        junction = np.flatnonzero(tree.junction)
        ends = tree.parent[junction]  # node index of the compartment each junction ends

        def widen(a: np.ndarray, fill: float | None) -> np.ndarray:
            out = np.empty((*a.shape[:-1], n_nodes), dtype=a.dtype)
            out[..., tree.node] = a
            out[..., junction] = out[..., ends] if fill is None else fill
            return out

        params = widen(params, None)
        params[0][:, junction] = 0.0  # c_m
        return (widen(v, None), widen(states, None), params, widen(i_ext, 0.0),
                widen(g_syn, 0.0), None if arrivals is None else widen(arrivals, 0.0))


def _compartment_parents(tree: CableTree) -> np.ndarray:
    """Every compartment's nearest ancestor compartment (past junctions), ``-1`` at the root."""
    of_node = np.full(tree.parent.shape[0], -1, dtype=np.int64)
    of_node[tree.node] = np.arange(tree.node.shape[0])
    out = np.empty(tree.node.shape[0], dtype=np.int64)
    for c, v in enumerate(tree.node):
        p = int(tree.parent[v])
        while p >= 0 and of_node[p] < 0:
            p = int(tree.parent[p])
        out[c] = of_node[p] if p >= 0 else -1
    return out
