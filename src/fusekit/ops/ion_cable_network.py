"""Networks of multi-compartment cells: CSR synapses from a cell's soma onto compartments.

:func:`cable_network_simulate` joins :func:`~fusekit.ops.cable_simulate` (branched cells,
Hines solve) and :func:`~fusekit.ops.network_simulate` (event-driven conductance synapses
with a delay): a spike of cell ``j`` (an upward threshold crossing in its compartment 0, the
soma) reaches, ``delay_steps`` steps later, every synapse ``e`` of CSR row ``j``, each on
compartment ``synapse_compartment[e]`` of cell ``indices[e]``. This is NEURON's
``NetCon`` from ``soma(0.5)._ref_v`` onto an ``ExpSyn`` in a dendrite, and Jaxley's
synapse from one cell's location onto another's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._errors import InputError
from .._registry import Op, array_dtype
from ._common import check_counts, is_tensor
from .ion import (
    NetworkSimulation,
    _as_index_tensor,
    _check_cable_simulate,
    _zeros_like,
    check_record_at,
    check_synapses,
    hines_solve_reference,
    record_columns,
    refuse_grad,
    synapse_decays,
    synapse_kinds,
)
from .ion_channel import Channel, ChannelSet, channel_set, gates_and_conductances

__all__ = ["cable_network_simulate", "cable_network_simulate_reference", "synapse_targets"]


def _check_cable_network_simulate(
    v0: Any, states0: Any, params: Any, i_ext: Any, parent: Any, coupling: Any, g_syn0: Any,
    indptr: Any, indices: Any, weights: Any, arrivals0: Any, synapse_type: Any,
    synapse_compartment: Any, *, channels: Any, dt: float, n_steps: int, delay_steps: int,
    tau_syn: tuple[float, ...], e_syn: tuple[float, ...], record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, record_at: Any = None,
) -> str:
    op = "cable_network_simulate"
    try:
        dtype = _check_cable_simulate(v0, states0, params, i_ext, parent, coupling,
                                      channels=channels, dt=dt, n_steps=n_steps,
                                      record_every=record_every,
                                      spike_threshold=spike_threshold, max_spikes=max_spikes,
                                      record_at=record_at)
    except InputError as exc:  # the same checks, under this op's name
        raise InputError(str(exc).replace("cable_simulate:", f"{op}:", 1)) from None
    n_cells, n_comp = (int(x) for x in v0.shape)
    check_synapses(op, dtype, (n_cells, n_comp), g_syn0, indptr, indices, weights, arrivals0,
                   synapse_type, n_types=len(synapse_kinds(tau_syn, e_syn)[0]),
                   delay_steps=delay_steps)
    nnz = indices.shape[0]
    if (tuple(synapse_compartment.shape) not in ((nnz,), (0,))
            or array_dtype(synapse_compartment) not in ("int32", "int64")):
        raise InputError(f"{op}: synapse_compartment must be an int ({nnz},) array (the "
                         f"compartment of the postsynaptic cell every synapse sits on), got "
                         f"{tuple(synapse_compartment.shape)} {array_dtype(synapse_compartment)}")
    if synapse_compartment.shape[0] and (int(synapse_compartment.min()) < 0
                                         or int(synapse_compartment.max()) >= n_comp):
        raise InputError(f"{op}: synapse_compartment must lie in [0, {n_comp}) (the cells have "
                         f"{n_comp} compartments)")
    return dtype


cable_network_simulate_op = Op(
    name="cable_network_simulate",
    family="ion_cable_network",
    array_args=("v0", "states0", "params", "i_ext", "parent", "coupling", "g_syn0", "indptr",
                "indices", "weights", "arrivals0", "synapse_type", "synapse_compartment"),
    params=("channels", "dt", "n_steps", "delay_steps", "tau_syn", "e_syn", "record_every",
            "spike_threshold", "max_spikes", "record_at"),
    check=_check_cable_network_simulate,
)


def synapse_targets(indices: Any, synapse_compartment: Any, n_cells: int, n_comp: int, *,
                    cell_major: bool = True) -> Any:
    """Every synapse's postsynaptic compartment as one flat index (the kernels' form).

    ``cell * n_comp + comp`` (``cell_major``: the layout of ``(n_cells, n_comp)``) or
    ``comp * n_cells + cell`` (compartment rows of all cells, as the CPU block kernel keeps
    its arrivals). An empty ``synapse_compartment`` puts every synapse on compartment 0.
    """
    if synapse_compartment.shape[0] == 0:
        return indices * n_comp if cell_major else indices + 0
    if cell_major:
        return indices * n_comp + synapse_compartment
    return synapse_compartment * n_cells + indices


def cable_network_simulate(
    v0: Any, states0: Any, params: Any, i_ext: Any, parent: Any, coupling: Any, g_syn0: Any,
    indptr: Any, indices: Any, weights: Any, *,
    channels: ChannelSet | Sequence[type[Channel]] | str, dt: float, n_steps: int,
    delay_steps: int, tau_syn: float | Sequence[float] = 5.0,
    e_syn: float | Sequence[float] = 0.0, synapse_type: Any = None,
    synapse_compartment: Any = None, record_every: int = 0, record_at: Sequence[int] | None = None,
    spike_threshold: float = 0.0, max_spikes: int = 0, arrivals0: Any = None,
    backend: str | None = None,
) -> NetworkSimulation:
    """Multi-compartment cells of one morphology, coupled by conductance synapses in CSR form.

    Every cell is the branched cable of :func:`~fusekit.ops.cable_simulate` (``parent``,
    ``coupling``; the channels in every compartment, Hines elimination per step); every
    compartment has one synaptic conductance ``g_syn`` (mS/cm^2 of its area) per synapse
    type, which decays by ``exp(-dt / tau_syn)`` per step and enters the compartment's
    backward-Euler row like a channel with reversal ``e_syn``. A spike of cell ``j`` (an
    upward crossing of ``spike_threshold`` in compartment 0) during step ``k`` adds
    ``weights[e]`` to ``g_syn[synapse_type[e], indices[e], synapse_compartment[e]]`` at the
    start of step ``k + delay_steps`` for every ``e`` in ``indptr[j]:indptr[j+1]`` (as
    :func:`~fusekit.ops.network_simulate`, whose single-compartment networks this equals
    with ``n_comp = 1``).

    NEURON's ``NetCon(soma(0.5)._ref_v, ExpSyn, threshold, delay, weight)`` with fixed steps
    is this op with ``delay_steps = delay / dt + 1`` (NEURON stamps a spike with the end of
    its step) and ``weights = weight_uS * 1e-3 / area_cm2`` (the conductance per area of
    the target compartment); ``tests/test_ion_cable_network.py`` compares the two.

    Args:
        v0: Initial potentials, mV, ``(n_cells, n_comp)``.
        states0: ``(n_states, n_cells, n_comp)``.
        params: ``(n_params, n_cells, n_comp)``, rows as ``channels.param_names``.
        i_ext: uA/cm^2, ``(n_cells, n_comp)`` or ``(n_steps, n_cells, n_comp)``.
        parent: Parent compartment, ``(n_comp,)`` int, Hines order (``parent[0] = -1``).
        coupling: ``(2, n_cells, n_comp)``, mS/cm^2, as for ``cable_simulate``
            (:func:`fusekit.neuro.cable_coupling`).
        g_syn0: Initial synaptic conductances, mS/cm^2, ``(n_cells, n_comp)``
            (``(n_types, n_cells, n_comp)`` with several types).
        indptr: CSR row pointers over presynaptic cells, int, ``(n_cells + 1,)``.
        indices: Postsynaptic cell of every synapse, int, ``(nnz,)``.
        weights: Conductance jump per spike, mS/cm^2 of the target compartment, ``(nnz,)``.
        channels: As for :func:`~fusekit.ops.ion_simulate`.
        dt: ms.
        n_steps: Steps.
        delay_steps: Synaptic delay in steps, at least 1.
        tau_syn: Decay time constant, ms, or one per synapse type.
        e_syn: Reversal potential, mV, or one per synapse type.
        synapse_type: Type of every synapse, int ``(nnz,)``; required with several types.
        synapse_compartment: Compartment of the postsynaptic cell every synapse sits on, int
            ``(nnz,)`` in ``[0, n_comp)``; ``None``: compartment 0 (the soma).
        record_every: Record ``v`` every this many steps (0: none).
        record_at: The compartments recorded (``None``: all).
        spike_threshold: mV, detected in compartment 0.
        max_spikes: Spike times kept per cell.
        arrivals0: Spikes in flight at the start, ``(delay_steps, n_cells, n_comp)``
            (``(delay_steps, n_types, n_cells, n_comp)``), an earlier call's ``arrivals``.
        backend: As for every op.

    Returns:
        :class:`~fusekit.ops.NetworkSimulation` with ``v`` ``(n_cells, n_comp)``, ``states``,
        ``g_syn`` (the shape of ``g_syn0``), ``v_record`` ``(n_rec, n_cells, n_cols)``,
        ``spike_count`` and ``spike_times`` per cell, and ``arrivals`` to continue the run.

    Example:
        >>> import numpy as np
        >>> from fusekit import ops
        >>> from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_coupling
        >>> hh = ChannelSet(HH_CHANNELS)
        >>> parent = np.array([-1, 0, 1])                  # soma, two dendrite compartments
        >>> cpl = cable_coupling(parent, [20.0, 100.0, 100.0], [20.0, 2.0, 1.0])
        >>> n_cells, n_comp = 2, 3
        >>> v = np.full((n_cells, n_comp), -65.0)
        >>> S = hh.steady_states(v.reshape(-1)).reshape(-1, n_cells, n_comp)
        >>> P = hh.default_params(n_cells * n_comp).reshape(-1, n_cells, n_comp)
        >>> i_ext = np.zeros((n_cells, n_comp)); i_ext[0, 0] = 20.0   # drive cell 0's soma
        >>> out = ops.cable_network_simulate(
        ...     v, S, P, i_ext, parent, np.broadcast_to(cpl[:, None], (2, n_cells, n_comp)),
        ...     np.zeros((n_cells, n_comp)), np.array([0, 1, 1]), np.array([1]),
        ...     np.array([0.5]), synapse_compartment=np.array([2]), channels=hh, dt=0.025,
        ...     n_steps=800, delay_steps=40, max_spikes=8)   # cell 0 -> cell 1's dendrite tip
        >>> out.spike_count.tolist()
        [2, 1]
    """
    cs = channel_set(channels)
    refuse_grad("cable_network_simulate", "cable_network_simulate_torch", v0, states0, params,
                i_ext, coupling, g_syn0, weights, arrivals0)
    check_counts("cable_network_simulate", n_steps=n_steps, delay_steps=delay_steps,
                 record_every=record_every, max_spikes=max_spikes)
    if is_tensor(v0):
        parent = _as_index_tensor(parent, v0)  # a NumPy parent is fine with tensors
    taus, es, typed = synapse_kinds(tau_syn, e_syn)
    n_types = len(taus)
    shape = tuple(int(x) for x in getattr(v0, "shape", ()))
    if len(shape) != 2:
        raise InputError(f"cable_network_simulate: v0 must have shape (n_cells, n_comp) (2 "
                         f"dimensions), got shape {shape}")
    post = shape
    record_at = check_record_at("cable_network_simulate", record_at, shape[1])
    delay = max(int(delay_steps), 0) if isinstance(delay_steps, int | np.integer) else 0
    if arrivals0 is None:
        arrivals0 = _zeros_like(v0)((delay, n_types, *post))
    elif not typed:
        if tuple(getattr(arrivals0, "shape", ())) != (delay, *post):
            raise InputError(f"cable_network_simulate: arrivals0 must be a {(delay, *post)} "
                             f"array (the spikes in flight: an earlier call's arrivals, with "
                             f"the same delay_steps), got "
                             f"{tuple(getattr(arrivals0, 'shape', ()))}")
        arrivals0 = arrivals0[:, None]
    if not typed:
        g_shape = tuple(getattr(g_syn0, "shape", ()))
        if g_shape != post or array_dtype(g_syn0) != array_dtype(v0):
            raise InputError(f"cable_network_simulate: g_syn0 must be a {post} "
                             f"{array_dtype(v0)} array (one synapse type), got {g_shape} "
                             f"{array_dtype(g_syn0)}")
        g_syn0 = g_syn0[None]
    if synapse_type is None:
        if n_types > 1:
            raise InputError(f"cable_network_simulate: {n_types} synapse types are declared by "
                             f"tau_syn and e_syn; give synapse_type, the type of every synapse "
                             f"(int (nnz,) in [0, {n_types}))")
        synapse_type = _zeros_like(indices)((0,))
    if synapse_compartment is None:
        synapse_compartment = _zeros_like(indices)((0,))  # every synapse on the soma
    out = cable_network_simulate_op.run(
        (v0, states0, params, i_ext, parent, coupling, g_syn0, indptr, indices, weights,
         arrivals0, synapse_type, synapse_compartment),
        {"channels": cs, "dt": dt, "n_steps": int(n_steps), "delay_steps": int(delay_steps),
         "tau_syn": taus, "e_syn": es, "record_every": int(record_every),
         "spike_threshold": spike_threshold, "max_spikes": int(max_spikes),
         "record_at": record_at},
        backend,
    )
    if not typed:
        out = (*out[:2], out[2][0], *out[3:6], out[6][:, 0])
    return NetworkSimulation(*out)


def cable_network_simulate_reference(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    parent: np.ndarray, coupling: np.ndarray, g_syn0: np.ndarray, indptr: np.ndarray,
    indices: np.ndarray, weights: np.ndarray, arrivals0: np.ndarray, synapse_type: np.ndarray,
    synapse_compartment: np.ndarray, *, channels: Any, dt: float, n_steps: int,
    delay_steps: int, tau_syn: tuple[float, ...], e_syn: tuple[float, ...],
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
    record_at: Sequence[int] | None = None,
) -> tuple[np.ndarray, ...]:
    """Float64 NumPy oracle of :func:`cable_network_simulate` (a type axis on ``g_syn``)."""
    cs = channel_set(channels)
    dtype = v0.dtype
    v = v0.astype(np.float64)
    S = states0.astype(np.float64)
    P = params.astype(np.float64)
    I_ext = i_ext.astype(np.float64)
    A = coupling.astype(np.float64)
    g_syn = g_syn0.astype(np.float64)
    w = weights.astype(np.float64)
    n_cells, n_comp = v.shape
    n_rec = n_steps // record_every if record_every else 0
    cols = record_columns(record_at, n_comp)
    v_record = np.empty((n_rec, n_cells, cols.shape[0]))
    spike_count = np.zeros(n_cells, dtype=np.int64)
    spike_times = np.full((max_spikes, n_cells), np.nan)
    lower, upper = -A[0], -A[1]
    axial = A[0].copy()
    for i in range(1, n_comp):
        axial[:, parent[i]] += A[1, :, i]
    axial[:, 0] -= A[0, :, 0]  # the root has no parent
    # ring[k % delay_steps]: arrivals at step k, (n_types, n_cells, n_comp)
    ring = arrivals0.astype(np.float64)
    types = np.asarray(synapse_type, dtype=np.int64)
    if types.size == 0:
        types = np.zeros(w.shape[0], np.int64)
    comps = np.asarray(synapse_compartment, dtype=np.int64)
    if comps.size == 0:
        comps = np.zeros(w.shape[0], np.int64)
    decay = np.array(synapse_decays(dt, tau_syn))[:, None, None]
    e_rev = np.array(e_syn)[:, None, None]
    for step in range(n_steps):
        slot = step % delay_steps
        g_syn = g_syn * decay + ring[slot]
        ring[slot] = 0.0
        S, g_ch, ge_ch = gates_and_conductances(cs, v, S, P, dt, exp=np.exp, stack=np.stack,
                                                where=np.where)
        g_sum = g_syn.sum(0) + g_ch
        ge_sum = (g_syn * e_rev).sum(0) + ge_ch
        i_inj = I_ext if I_ext.ndim == 2 else I_ext[step]
        c_dt = P[0] / dt
        v_new = hines_solve_reference(parent, c_dt + g_sum + axial, upper, lower,
                                      c_dt * v + ge_sum + i_inj)
        for c in np.flatnonzero((v[:, 0] < spike_threshold) & (v_new[:, 0] >= spike_threshold)):
            if spike_count[c] < max_spikes:
                frac = (spike_threshold - v[c, 0]) / (v_new[c, 0] - v[c, 0])
                spike_times[spike_count[c], c] = (step + frac) * dt
            spike_count[c] += 1
            # Arrives at the start of step + delay_steps, whose slot is this step's.
            e = slice(indptr[c], indptr[c + 1])
            np.add.at(ring[slot], (types[e], indices[e], comps[e]), w[e])
        v = v_new
        if record_every and (step + 1) % record_every == 0:
            v_record[(step + 1) // record_every - 1] = v[:, cols]
    arrivals = ring[(n_steps + np.arange(delay_steps)) % delay_steps]
    return (v.astype(dtype), S.astype(dtype), g_syn.astype(dtype), v_record.astype(dtype),
            spike_count, spike_times.astype(dtype), arrivals.astype(dtype))
