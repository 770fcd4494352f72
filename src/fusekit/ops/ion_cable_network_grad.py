"""A network of branched cells differentiable over a whole run: ``cable_network_run`` and its vjp.

:func:`fusekit.ops.cable_network_simulate`'s scheme, as :mod:`fusekit.ops.ion_network_grad`
does it for point neurons: ``cable_network_run`` runs every step and keeps a checkpoint at the
start of every ``segment`` steps (potentials, states, synaptic conductances, the spike counts
and the crossings of the ``delay_steps`` steps before it, one flag per cell and step, from
which the vjp rebuilds the arrivals in flight); ``cable_network_run_vjp`` walks the segments
last first, re-runs
one from its checkpoint and goes back through it. A step of the backward, with ``H`` the
step's Hines matrix (the compartments' local rows ``D`` plus the axial coupling) and
``A[slot]`` the adjoints of the arrivals a step sends:

    a_spikes, a_w += the synapses' adjoint at A[slot]     (one value per cell)
    a_v' += a_spikes * surrogate'(v'_soma - thr) [v_soma < thr] + record and spike-time terms
    lam = H^-T a_v'                                     (the transposed Hines solve)
    a_R = lam,  a_D = -lam v'                           (each compartment's local row)
    a_v, a_S, a_P, a_i = the compartment's local adjoint (as in ``cable_adjoint``)
    a_coupling from lam and v' (off-diagonals and the axial sums)
    a_g += a_D + a_R e_syn;  A[slot] = a_g;  a_g *= decay

A spike's derivative is SuperSpike's, as in :func:`fusekit.neuro.network_simulate_torch`. The
reference here is a float64 NumPy loop (the channels' own functions forward, the generated
local adjoint evaluated by NumPy backward); the CPU backend compiles the same scheme
(``backends/cpu/ion_cable_network_grad.py``), held to this one by the tests.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._errors import InputError
from .._registry import Op
from .ion import (
    check_junction_columns,
    hines_solve_reference,
    record_columns,
    synapse_decays,
    synapse_kinds,
)
from .ion_cable_network import _check_cable_network_simulate, synapse_targets
from .ion_channel import channel_set, gates_and_conductances
from .ion_network_grad import _check_segment, check_vjp_arrays, ring_at

__all__ = ["cable_network_run_op", "cable_network_run_vjp_op", "axial_rows"]


def _check_cable_network_run(*arrays: Any, segment: int, **kw: Any) -> str:
    _check_segment("cable_network_run", segment)
    try:
        return _check_cable_network_simulate(*arrays, **kw)
    except InputError as exc:
        raise InputError(str(exc).replace("cable_network_simulate:", "cable_network_run:",
                                          1)) from None


cable_network_run_op = Op(
    name="cable_network_run",
    family="ion_cable_network_grad",
    array_args=("v0", "states0", "params", "i_ext", "parent", "coupling", "g_syn0", "indptr",
                "indices", "weights", "arrivals0", "synapse_type", "synapse_compartment"),
    params=("channels", "dt", "n_steps", "delay_steps", "tau_syn", "e_syn", "record_every",
            "spike_threshold", "max_spikes", "record_at", "segment"),
    check=_check_cable_network_run,
)


def _check_cable_network_run_vjp(
    ck_v: Any, ck_S: Any, ck_g: Any, ck_spikes: Any, ck_count: Any, params: Any, i_ext: Any,
    parent: Any, coupling: Any, indptr: Any, indices: Any, weights: Any, arrivals0: Any,
    synapse_type: Any, synapse_compartment: Any, g_v: Any, g_states: Any, g_g_syn: Any,
    g_v_record: Any, g_spike_times: Any, g_arrivals: Any, *, channels: Any, dt: float,
    n_steps: int, delay_steps: int, tau_syn: Any, e_syn: Any, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, record_at: Any = None,
    segment: int = 1, slope: float = 1.0,
) -> str:
    op = "cable_network_run_vjp"
    cs = channel_set(channels)
    _check_segment(op, segment)
    if params.ndim != 3:
        raise InputError(f"{op}: params must be (n_params, n_cells, n_comp), got "
                         f"{tuple(params.shape)}")
    n_cells, n_comp = (int(x) for x in params.shape[1:])
    post = (n_cells, n_comp)
    n_types = len(synapse_kinds(tau_syn, e_syn)[0])
    n_seg = -(-n_steps // segment)
    n_states = len(cs.state_names)
    nnz = weights.shape[0]
    n_cols = record_columns(record_at, n_comp).shape[0]
    shapes = {
        "ck_v": (ck_v, (n_seg, *post)), "ck_S": (ck_S, (n_seg, n_states, *post)),
        "ck_g": (ck_g, (n_seg, n_types, *post)),
        "ck_spikes": (ck_spikes, (n_seg, delay_steps, n_cells)),
        "arrivals0": (arrivals0, (delay_steps, n_types, *post)),
        "ck_count": (ck_count, (n_seg, n_cells)),
        "params": (params, (len(cs.param_names), *post)), "parent": (parent, (n_comp,)),
        "coupling": (coupling, (2, *post)), "indptr": (indptr, (n_cells + 1,)),
        "indices": (indices, (nnz,)), "g_v": (g_v, post),
        "g_states": (g_states, (n_states, *post)), "g_g_syn": (g_g_syn, (n_types, *post)),
        "g_v_record": (g_v_record, (n_steps // record_every if record_every else 0,
                                    n_cells, n_cols)),
        "g_spike_times": (g_spike_times, (max_spikes, n_cells)),
        "g_arrivals": (g_arrivals, (delay_steps, n_types, *post)),
    }
    for name, (a, shape) in shapes.items():
        if tuple(a.shape) != shape:
            raise InputError(f"{op}: {name} must have shape {shape}, got {tuple(a.shape)}")
    if tuple(i_ext.shape) not in (post, (n_steps, *post)):
        raise InputError(f"{op}: i_ext must have shape {post} or {(n_steps, *post)}, got "
                         f"{tuple(i_ext.shape)}")
    for name, a in (("synapse_type", synapse_type),
                    ("synapse_compartment", synapse_compartment)):
        if tuple(a.shape) not in ((nnz,), (0,)):
            raise InputError(f"{op}: {name} must be ({nnz},) or (0,), got {tuple(a.shape)}")
    floats = {"ck_v": ck_v, "ck_S": ck_S, "ck_g": ck_g, "arrivals0": arrivals0, "i_ext": i_ext,
              "coupling": coupling, "weights": weights, "g_v": g_v, "g_states": g_states,
              "g_g_syn": g_g_syn, "g_v_record": g_v_record, "g_spike_times": g_spike_times,
              "g_arrivals": g_arrivals}
    ints = {"ck_count": ck_count, "parent": parent, "indptr": indptr, "indices": indices,
            "synapse_type": synapse_type, "synapse_compartment": synapse_compartment}
    dtype = check_vjp_arrays(op, params, ck_spikes, floats, ints, slope=slope)
    check_junction_columns(op, params)
    return dtype


cable_network_run_vjp_op = Op(
    name="cable_network_run_vjp",
    family="ion_cable_network_grad",
    array_args=("ck_v", "ck_S", "ck_g", "ck_spikes", "ck_count", "params", "i_ext", "parent",
                "coupling", "indptr", "indices", "weights", "arrivals0", "synapse_type",
                "synapse_compartment", "g_v", "g_states", "g_g_syn", "g_v_record",
                "g_spike_times", "g_arrivals"),
    params=("channels", "dt", "n_steps", "delay_steps", "tau_syn", "e_syn", "record_every",
            "spike_threshold", "max_spikes", "record_at", "segment", "slope"),
    check=_check_cable_network_run_vjp,
)


def axial_rows(parent: np.ndarray, coupling: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(upper, lower, axial)``: the cells' Hines rows from ``coupling`` ``(2, n_cells, n_comp)``.

    ``upper[i] = -coupling[1, i]`` (row ``parent[i]``, column ``i``), ``lower[i] =
    -coupling[0, i]`` (row ``i``, column ``parent[i]``), and each compartment's axial
    conductance on the diagonal (as ``cable_network_simulate``'s reference).
    """
    axial = coupling[0].copy()
    for i in range(1, parent.shape[0]):
        axial[:, parent[i]] += coupling[1, :, i]
    axial[:, 0] -= coupling[0, :, 0]  # the root has no parent
    return -coupling[1], -coupling[0], axial


def flat_targets(indices: np.ndarray, synapse_type: np.ndarray,
                 synapse_compartment: np.ndarray, n_cells: int, n_comp: int, *,
                 cell_major: bool = True) -> np.ndarray:
    """Every synapse's place in the flattened ``(n_types, n_cells, n_comp)`` conductances.

    ``cell_major=False``: in ``(n_types, n_comp, n_cells)`` (the CPU loops' layout).
    """
    flat = synapse_targets(indices.astype(np.int64), synapse_compartment.astype(np.int64),
                           n_cells, n_comp, cell_major=cell_major)
    if synapse_type.shape[0]:
        flat = flat + synapse_type.astype(np.int64) * (n_cells * n_comp)
    return flat


# ------------------------------------------------------------------ the float64 reference


class _Net(NamedTuple):
    cs: Any
    n_cells: int
    n_comp: int
    n_types: int
    delay: int
    decay: np.ndarray  # (n_types, 1, 1)
    e_rev: np.ndarray
    P: np.ndarray
    I: np.ndarray  # (rows, n_cells, n_comp)  # noqa: E741 - the current density
    i_rows: int
    parent: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    axial: np.ndarray
    indptr: np.ndarray
    weights: np.ndarray
    target: np.ndarray
    pre: np.ndarray  # every synapse's presynaptic cell
    thr: float
    dt: float
    record_every: int
    cols: np.ndarray
    max_spikes: int


def _net(params: np.ndarray, i_ext: np.ndarray, parent: np.ndarray, coupling: np.ndarray,
         indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray,
         synapse_type: np.ndarray, synapse_compartment: np.ndarray, *, channels: Any,
         dt: float, delay_steps: int, tau_syn: Any, e_syn: Any, record_every: int = 0,
         spike_threshold: float = 0.0, max_spikes: int = 0, record_at: Any = None,
         **_: Any) -> _Net:
    taus, es, _ = synapse_kinds(tau_syn, e_syn)
    n_cells, n_comp = params.shape[1:]
    f64 = np.float64
    parent = np.asarray(parent, dtype=np.int64)
    upper, lower, axial = axial_rows(parent, coupling.astype(f64))
    indptr = np.asarray(indptr, dtype=np.int64)
    return _Net(channel_set(channels), n_cells, n_comp, len(taus), int(delay_steps),
                np.array(synapse_decays(dt, taus)).reshape(-1, 1, 1),
                np.array(es, dtype=f64).reshape(-1, 1, 1), params.astype(f64),
                i_ext.astype(f64).reshape(-1, n_cells, n_comp), int(i_ext.ndim == 3),
                parent, upper, lower, axial, indptr, weights.astype(f64),
                flat_targets(indices, synapse_type, synapse_compartment, n_cells, n_comp),
                np.repeat(np.arange(n_cells), np.diff(indptr)), float(spike_threshold),
                float(dt), int(record_every), record_columns(record_at, n_comp),
                int(max_spikes))


def _stack(rows: list[np.ndarray]) -> Any:
    return np.stack(rows) if rows else np.zeros((0,))


def _deliver(net: _Net, spiking: np.ndarray) -> np.ndarray:
    """The arrivals a step's crossings (bool per cell) send, flattened over the types."""
    out = np.zeros(net.n_types * net.n_cells * net.n_comp)
    on = spiking[net.pre]
    np.add.at(out, net.target[on], net.weights[on])
    return out


def _run(net: _Net, state: list[Any], a: int, b: int, out: tuple[np.ndarray, ...] | None,
         keep: bool) -> list[tuple[Any, ...]]:
    """Steps ``a .. b - 1`` from ``state = [v, S, g, ring, count, spikes]`` (float64; updated).

    ``spikes[slot]``: the crossings whose deliveries sit in ``ring[slot]``.
    """
    v, S, g, ring, count, spikes = state
    thr, dt = net.thr, net.dt
    shape = (net.n_types, net.n_cells, net.n_comp)
    traj = []
    for step in range(a, b):
        slot = step % net.delay
        g = g * net.decay + ring[slot].reshape(shape)
        S_new, g_ch, ge_ch = gates_and_conductances(net.cs, v, S, net.P, dt, exp=np.exp,
                                                    stack=_stack, where=np.where)
        c_dt = net.P[0] / dt
        diag = c_dt + g_ch + g.sum(0) + net.axial
        rhs = c_dt * v + ge_ch + (g * net.e_rev).sum(0) + net.I[step * net.i_rows]
        v_new = hines_solve_reference(net.parent, diag, net.upper, net.lower, rhs)
        crossed = (v[:, 0] < thr) & (v_new[:, 0] >= thr)
        if keep:
            traj.append((v, S, g, diag, crossed))
        if out is not None:
            v_record, times = out
            for c in np.flatnonzero(crossed & (count < net.max_spikes)):
                frac = (thr - v[c, 0]) / (v_new[c, 0] - v[c, 0])
                times[count[c], c] = (step + frac) * dt
            if net.record_every and (step + 1) % net.record_every == 0:
                v_record[(step + 1) // net.record_every - 1] = v_new[:, net.cols]
        count += crossed
        ring[slot] = _deliver(net, crossed)
        spikes[slot] = crossed
        v, S = v_new, np.asarray(S_new).reshape(S.shape)
    state[:] = [v, S, g, ring, count, spikes]
    return traj


def cable_network_run_reference(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    parent: np.ndarray, coupling: np.ndarray, g_syn0: np.ndarray, indptr: np.ndarray,
    indices: np.ndarray, weights: np.ndarray, arrivals0: np.ndarray, synapse_type: np.ndarray,
    synapse_compartment: np.ndarray, *, n_steps: int, segment: int = 1, **kw: Any,
) -> tuple[np.ndarray, ...]:
    """Float64 NumPy oracle of ``cable_network_run`` (checkpoints in the inputs' dtype)."""
    net = _net(params, i_ext, parent, coupling, indptr, indices, weights, synapse_type,
               synapse_compartment, **kw)
    dtype = v0.dtype
    post = (net.n_cells, net.n_comp)
    n_seg = -(-n_steps // segment)
    n_rec = n_steps // net.record_every if net.record_every else 0
    v_record = np.zeros((n_rec, net.n_cells, net.cols.shape[0]))
    times = np.full((net.max_spikes, net.n_cells), np.nan)
    cks: list[list[np.ndarray]] = [[], [], [], [], []]
    f64 = np.float64
    state = [v0.astype(f64), states0.astype(f64), g_syn0.astype(f64).reshape(-1, *post),
             arrivals0.astype(f64).reshape(net.delay, -1), np.zeros(net.n_cells, np.int64),
             np.zeros((net.delay, net.n_cells), dtype=np.bool_)]
    for s in range(n_seg):
        v, S, g, _, count, spikes = state
        for ck, x in zip(cks, (v, S, g, spikes, count), strict=True):
            ck.append(x.astype(dtype) if x.dtype.kind == "f" else x.copy())
        _run(net, state, s * segment, min((s + 1) * segment, n_steps), (v_record, times),
             keep=False)
    v, S, g, ring, count, _ = state
    arrivals = ring[(n_steps + np.arange(net.delay)) % net.delay]
    return (v.astype(dtype), S.astype(dtype), g.astype(dtype), v_record.astype(dtype), count,
            times.astype(dtype), arrivals.reshape(net.delay, net.n_types, *post).astype(dtype),
            *(np.stack(ck) if ck else np.zeros((0,)) for ck in cks))


def cable_network_run_vjp_reference(
    ck_v: np.ndarray, ck_S: np.ndarray, ck_g: np.ndarray, ck_spikes: np.ndarray,
    ck_count: np.ndarray, params: np.ndarray, i_ext: np.ndarray, parent: np.ndarray,
    coupling: np.ndarray, indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray,
    arrivals0: np.ndarray, synapse_type: np.ndarray, synapse_compartment: np.ndarray,
    g_v: np.ndarray,
    g_states: np.ndarray, g_g_syn: np.ndarray, g_v_record: np.ndarray,
    g_spike_times: np.ndarray, g_arrivals: np.ndarray, *, n_steps: int, segment: int = 1,
    slope: float = 1.0, **kw: Any,
) -> tuple[np.ndarray, ...]:
    """Float64 NumPy oracle of ``cable_network_run_vjp`` (see the module docstring)."""
    from .ion_backprop import _adjoint_function

    net = _net(params, i_ext, parent, coupling, indptr, indices, weights, synapse_type,
               synapse_compartment, **kw)
    cs, thr, dt, delay = net.cs, net.thr, net.dt, net.delay
    n_states = len(cs.state_names)
    post = (net.n_cells, net.n_comp)
    adjoint, rows = _adjoint_function(cs, cable=True)
    f64 = np.float64
    a_v, a_S = g_v.astype(f64), g_states.astype(f64).reshape(n_states, *post)
    a_g = g_g_syn.astype(f64).reshape(net.n_types, *post)
    A = np.zeros((delay, net.n_types * net.n_cells * net.n_comp))
    A[(n_steps + np.arange(delay)) % delay] = g_arrivals.astype(f64).reshape(delay, -1)
    a_P = np.zeros(params.shape)
    a_I = np.zeros(net.I.shape)
    a_C = np.zeros(coupling.shape)
    a_w = np.zeros(weights.shape[0])
    ones = np.ones(post)

    for s in range(ck_v.shape[0] - 1, -1, -1):
        a, b = s * segment, min((s + 1) * segment, n_steps)
        state = [ck_v[s].astype(f64), ck_S[s].astype(f64), ck_g[s].astype(f64),
                 ring_at(a, delay, ck_spikes[s], arrivals0.astype(f64).reshape(delay, -1),
                         lambda spikes: _deliver(net, spikes != 0)),
                 ck_count[s].astype(np.int64), ck_spikes[s].copy()]
        traj = _run(net, state, a, b, None, keep=True)
        v_next, count = state[0], state[4]
        for t in range(b - 1, a - 1, -1):
            v, S, g, diag, crossed = traj[t - a]
            vn = v_next
            slot = t % delay
            g_a = A[slot][net.target]
            a_spikes = np.bincount(net.pre, weights=net.weights * g_a, minlength=net.n_cells)
            a_w += g_a * crossed[net.pre]
            a_vn = a_v.copy()
            a_vn[:, 0] += a_spikes * (v[:, 0] < thr) / np.square(1 + slope * np.abs(
                vn[:, 0] - thr))
            if net.record_every and (t + 1) % net.record_every == 0:
                np.add.at(a_vn, (slice(None), net.cols),
                          g_v_record[(t + 1) // net.record_every - 1])
            count -= crossed
            idx = np.flatnonzero(crossed & (count < net.max_spikes))
            g_t = g_spike_times[count[idx], idx].astype(f64)
            den2 = np.square(vn[idx, 0] - v[idx, 0])
            a_vn[idx, 0] -= g_t * dt * (thr - v[idx, 0]) / den2
            lam = hines_solve_reference(net.parent, diag, net.lower, net.upper, a_vn)
            a_d = -lam * vn
            row = t * net.i_rows
            with np.errstate(divide="ignore", invalid="ignore"):  # VTRAP's 0/0 points
                got = adjoint(v, *S, *net.P, net.I[row], dt, a_d, lam, *a_S)
            av = got[0] * ones
            av[idx, 0] += g_t * dt * (thr - vn[idx, 0]) / den2
            for k, r in enumerate(rows):
                a_P[r] += got[1 + n_states + k] * ones
            a_I[row] += got[-1] * ones
            for i in range(1, net.n_comp):
                p = net.parent[i]
                a_C[0, :, i] += lam[:, i] * (vn[:, p] - vn[:, i])
                a_C[1, :, i] += lam[:, p] * (vn[:, i] - vn[:, p])
            a_g = a_g + a_d + lam * net.e_rev
            A[slot] = a_g.reshape(-1)
            a_g = a_g * net.decay
            a_v = av
            a_S = np.stack([got[1 + k] * ones for k in range(n_states)]) if n_states else a_S
            v_next = v
    dtype = params.dtype
    return tuple(x.astype(dtype) for x in (
        a_v, a_S, a_P, a_I.reshape(i_ext.shape), a_C, a_g, a_w,
        A.reshape(delay, net.n_types, *post)))
