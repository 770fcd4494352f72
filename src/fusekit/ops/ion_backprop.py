"""The backward of :func:`~fusekit.ops.ion_simulate` as a compiled op: checkpointed adjoint.

:func:`ion_adjoint` takes the checkpoints that the differentiable ``ion_simulate`` keeps (``v``
and the states at the start of every segment of ``segment`` steps, and the spike counts
there) and the incoming gradients of its results, and returns the gradients with respect to
``v0``, ``states0``, ``params`` and ``i_ext``. For each segment, last first, it re-runs the
segment forward from its checkpoint keeping every step's state, then walks it backwards
with the adjoint of the step,

    a_x = sum_o (d o / d x) a_o,     o = (v', states'),  x = (v, states, params, i_ext),

generated from the channel functions by symbolic differentiation
(:func:`fusekit.ops.ion_symbolic.adjoint_step_source`). Recorded potentials add their
gradient to ``a_v`` at their step; a spike time ``t = (k + f) dt`` adds
``-dt f / D`` times its gradient to ``a_v`` after the step and ``-dt (1 - f) / D`` before it
(``D = v_{k+1} - v_k``). Memory: the checkpoints plus one segment's states per neuron.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._errors import InputError
from .._registry import Op, array_dtype
from ._common import check_counts, require_finite, require_shapes
from .ion_channel import channel_set, gates_and_conductances
from .ion_symbolic import adjoint_step_source, cable_adjoint_step_source

__all__ = ["cable_adjoint", "cable_adjoint_reference", "ion_adjoint", "ion_adjoint_reference"]


def _segments(op: str, segment: Any, n_steps: int, record_every: int) -> tuple[int, int]:
    """Check ``segment`` and return the numbers of segments and of recorded steps."""
    if not (isinstance(segment, int | np.integer) and segment >= 1):
        raise InputError(f"{op}: segment must be a positive number of steps, got {segment!r}")
    if record_every and segment % record_every:
        raise InputError(f"{op}: segment ({segment}) must be a multiple of record_every "
                         f"({record_every})")
    return -(-n_steps // segment), (n_steps // record_every if record_every else 0)


def _check_ion_adjoint(
    checkpoints: Any, counts_at: Any, params: Any, i_ext: Any, g_v: Any, g_states: Any,
    g_v_record: Any, g_spike_times: Any, *, channels: Any, dt: float, n_steps: int,
    segment: int, record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
) -> str:
    op = "ion_adjoint"
    cs = channel_set(channels)
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    n = params.shape[-1]
    n_seg, n_rec = _segments(op, segment, n_steps, record_every)
    shapes = {
        "checkpoints": (checkpoints, (n_seg, 1 + n_states, n)),
        "counts_at": (counts_at, (n_seg, n)),
        "params": (params, (n_params, n)),
        "g_v": (g_v, (n,)),
        "g_states": (g_states, (n_states, n)),
        "g_v_record": (g_v_record, (n_rec, n)),
        "g_spike_times": (g_spike_times, (max_spikes, n)),
    }
    require_shapes(op, shapes, i_ext, n_steps)
    dtype = array_dtype(params)
    if dtype not in ("float32", "float64"):
        raise InputError(f"{op}: arrays must be float32 or float64, got {dtype}")
    for name, a in (("checkpoints", checkpoints), ("i_ext", i_ext), ("g_v", g_v),
                    ("g_states", g_states), ("g_v_record", g_v_record),
                    ("g_spike_times", g_spike_times)):
        if array_dtype(a) != dtype:
            raise InputError(f"{op}: {name} must be {dtype} like params, got "
                             f"{array_dtype(a)}")
    if array_dtype(counts_at) != "int64":
        raise InputError(f"{op}: counts_at must be int64, got {array_dtype(counts_at)}")
    for name, a in (("checkpoints", checkpoints), ("params", params), ("i_ext", i_ext),
                    ("g_v", g_v), ("g_states", g_states), ("g_v_record", g_v_record),
                    ("g_spike_times", g_spike_times)):
        require_finite(op, name, a)
    return dtype


ion_adjoint_op = Op(
    name="ion_adjoint",
    family="ion_adjoint",
    array_args=("checkpoints", "counts_at", "params", "i_ext", "g_v", "g_states",
                "g_v_record", "g_spike_times"),
    params=("channels", "dt", "n_steps", "segment", "record_every", "spike_threshold",
            "max_spikes"),
    check=_check_ion_adjoint,
)


def ion_adjoint(checkpoints: Any, counts_at: Any, params: Any, i_ext: Any, g_v: Any,
                g_states: Any, g_v_record: Any, g_spike_times: Any, *, channels: Any,
                dt: float, n_steps: int, segment: int, record_every: int = 0,
                spike_threshold: float = 0.0, max_spikes: int = 0,
                backend: str | None = None) -> tuple[Any, Any, Any, Any]:
    """Gradients of ``ion_simulate`` w.r.t. ``(v0, states0, params, i_ext)``.

    Args:
        checkpoints: ``(n_seg, 1 + n_states, n)``: ``v`` and the states at the start of
            every segment (``ion_simulate``'s torch form returns them).
        counts_at: ``(n_seg, n)`` int64 spike counts at the start of every segment.
        params: ``(n_params, n)``, as for ``ion_simulate``.
        i_ext: ``(n,)`` or ``(n_steps, n)``, as for ``ion_simulate``.
        g_v: Gradient of the final ``v``, ``(n,)`` (zeros when unused).
        g_states: Gradient of the final states, ``(n_states, n)``.
        g_v_record: Gradient of ``v_record``, ``(n_steps // record_every, n)``.
        g_spike_times: Gradient of ``spike_times``, ``(max_spikes, n)`` (zeros where no
            spike; NaN is refused).
        channels: The channel set.
        dt: ms.
        n_steps: Steps simulated.
        segment: Steps per checkpoint segment (a multiple of ``record_every``).
        record_every: As for ``ion_simulate``.
        spike_threshold: mV.
        max_spikes: As for ``ion_simulate``.
        backend: ``"reference"``, ``"cpu"`` or ``"auto"``.

    Returns:
        ``(g_v0, g_states0, g_params, g_i_ext)`` with the shapes of those inputs.
    """
    check_counts("ion_adjoint", n_steps=n_steps, segment=segment, record_every=record_every,
                 max_spikes=max_spikes)
    return ion_adjoint_op.run(
        (checkpoints, counts_at, params, i_ext, g_v, g_states, g_v_record, g_spike_times),
        {"channels": channel_set(channels), "dt": dt, "n_steps": int(n_steps),
         "segment": int(segment), "record_every": int(record_every),
         "spike_threshold": spike_threshold, "max_spikes": int(max_spikes)},
        backend,
    )


# --------------------------------------------------------------------------- float64 reference


def _adjoint_function(cs: Any, cable: bool = False) -> tuple[Any, list[int]]:
    """The adjoint step of one neuron (or, ``cable``, one compartment's local half) in NumPy.

    Its arguments: the state before the step, the parameters, ``i_inj``, ``dt``, then the
    adjoints it takes (``av_n``, or ``a_d`` and ``a_r`` for a cable) and ``as<k>_n``; it
    returns ``av``, ``as<k>``, ``ap<i>`` for the rows returned, and ``ai``.
    """
    from .ion_forward import NUMPY_MATH

    n_states, n_params = len(cs.state_names), len(cs.param_names)
    source = cable_adjoint_step_source if cable else adjoint_step_source
    lines, consts, rows = source(cs, "    ")
    args = ["v", *(f"s{k}" for k in range(n_states)), *(f"p{i}" for i in range(n_params)),
            "i_inj", "dt", *(("a_d", "a_r") if cable else ("av_n",)),
            *(f"as{k}_n" for k in range(n_states))]
    outs = ["av", *(f"as{k}" for k in range(n_states)), *(f"ap{i}" for i in rows), "ai"]
    src = (f"def adjoint({', '.join(args)}):\n" + "\n".join(lines)
           + f"\n    return ({', '.join(outs)},)\n")
    ns = {**NUMPY_MATH, "ONE": 1.0, **consts}
    exec(compile(src, f"<fusekit adjoint step {cs.key}>", "exec"), ns)
    if not cable:
        return ns["adjoint"], rows
    return functools.partial(_junction_adjoint, ns["adjoint"], rows, n_states, n_params), rows


def _junction_adjoint(adjoint: Any, rows: list[int], n_states: int, n_params: int,
                      v: Any, *args: Any) -> tuple[Any, ...]:
    """A compartment's local adjoint where ``c_m = 0`` (a zero-area junction) is hollow.

    Such a node has no membrane (``gates_and_conductances(where=)``): its states are held and
    its row is ``D = c_m / dt + axial``, ``R = c_m / dt v + i_inj``. So there ``a_v = c_m /
    dt a_R`` (0), the states' adjoints pass through, ``a_c_m = (a_D + a_R v) / dt``, every
    other parameter's is 0 and ``a_i_inj = a_R``.
    """
    out = adjoint(v, *args)
    P = args[n_states:n_states + n_params]
    hollow = np.asarray(P[0]) == 0
    if not hollow.any():
        return out
    dt, a_d, a_r = args[n_states + n_params + 1:n_states + n_params + 4]
    a_s = args[n_states + n_params + 4:]
    c_m = P[0]
    held = [c_m / dt * a_r, *a_s,
            *((a_d + a_r * v) / dt if r == 0 else 0.0 for r in rows), a_r]
    return tuple(np.where(hollow, h, o) for h, o in zip(held, out, strict=True))


def _spike_slots(probes: list[np.ndarray], count: np.ndarray, thr: float) -> list[np.ndarray]:
    """Per step of a re-run segment, the spike slot of each neuron's crossing (-1: none).

    ``probes`` are the potentials spikes are detected in, one array per step boundary;
    ``count`` the spike counts at the segment's start.
    """
    slots = []
    for before, after in zip(probes[:-1], probes[1:], strict=True):
        crossed = (before < thr) & (after >= thr)
        slots.append(np.where(crossed, count, -1))
        count = count + crossed
    return slots


def _spike_time_adjoint(v0: np.ndarray, v1: np.ndarray, slot: np.ndarray,
                        g_spike_times: np.ndarray, thr: float, dt: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The terms a kept spike time ``t = (k + f) dt`` adds to ``a_v`` after and before a step.

    ``-dt f / D g`` after it and ``-dt (1 - f) / D g`` before it (``D = v1 - v0``, ``g`` the
    time's incoming gradient); zeros where no kept spike.
    """
    max_spikes = g_spike_times.shape[0]
    kept = (slot >= 0) & (slot < max_spikes)
    if not kept.any():
        return np.zeros_like(v0), np.zeros_like(v0)
    den = np.where(kept, v1 - v0, 1.0)
    f = (thr - v0) / den
    g_t = np.where(kept, g_spike_times[np.clip(slot, 0, max(max_spikes - 1, 0)),
                                       np.arange(v0.shape[0])], 0.0)
    return -dt * f / den * g_t, -dt * (1.0 - f) / den * g_t


def ion_adjoint_reference(
    checkpoints: np.ndarray, counts_at: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    g_v: np.ndarray, g_states: np.ndarray, g_v_record: np.ndarray, g_spike_times: np.ndarray,
    *, channels: Any, dt: float, n_steps: int, segment: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0,
) -> tuple[np.ndarray, ...]:
    """Float64 NumPy oracle of :func:`ion_adjoint` (steps in Python, neurons as arrays)."""
    cs = channel_set(channels)
    dtype = params.dtype
    adjoint, rows = _adjoint_function(cs)
    n_states = len(cs.state_names)
    P = params.astype(np.float64)
    I_ext = i_ext.astype(np.float64)
    thr = spike_threshold
    av = g_v.astype(np.float64).copy()
    a_s = [row.copy() for row in g_states.astype(np.float64)]
    g_P = np.zeros_like(P)
    g_I = np.zeros_like(I_ext)
    for seg in range(checkpoints.shape[0] - 1, -1, -1):
        k0, k1 = seg * segment, min(n_steps, (seg + 1) * segment)
        v = checkpoints[seg, 0].astype(np.float64)
        S = checkpoints[seg, 1:].astype(np.float64)
        traj = [(v, S)]
        for step in range(k0, k1):
            i_inj = I_ext if I_ext.ndim == 1 else I_ext[step]
            S, g_sum, ge_sum = gates_and_conductances(cs, v, S, P, dt, exp=np.exp,
                                                      stack=np.stack)
            k_ = dt / P[0]
            v = (v + k_ * (ge_sum + i_inj)) / (1.0 + k_ * g_sum)
            traj.append((v, S))
        slots = _spike_slots([x[0] for x in traj], counts_at[seg], thr)
        for step in range(k1 - 1, k0 - 1, -1):
            t = step - k0
            if record_every and (step + 1) % record_every == 0:
                av = av + g_v_record[(step + 1) // record_every - 1]
            (v0, S0), v1 = traj[t], traj[t + 1][0]
            after, extra = _spike_time_adjoint(v0, v1, slots[t], g_spike_times, thr, dt)
            av = av + after
            i_inj = I_ext if I_ext.ndim == 1 else I_ext[step]
            out = adjoint(v0, *S0, *P, i_inj, dt, av, *a_s)
            av = out[0] + extra
            a_s = list(out[1:1 + n_states])
            for i, contrib in zip(rows, out[1 + n_states:-1], strict=True):
                g_P[i] += contrib
            if I_ext.ndim == 1:
                g_I += out[-1]
            else:
                g_I[step] = out[-1]
    g_S = np.array(a_s).reshape(n_states, av.shape[0])
    return (av.astype(dtype), g_S.astype(dtype), g_P.astype(dtype), g_I.astype(dtype))


# ------------------------------------------------------------ multi-compartment cells


def _check_cable_adjoint(
    checkpoints: Any, counts_at: Any, params: Any, i_ext: Any, parent: Any, coupling: Any,
    g_v: Any, g_states: Any, g_v_record: Any, g_spike_times: Any, *, channels: Any,
    dt: float, n_steps: int, segment: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, record_at: Any = None,
) -> str:
    from .ion import check_junction_columns, check_record_at

    op = "cable_adjoint"
    cs = channel_set(channels)
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    if params.ndim != 3:
        raise InputError(f"{op}: params must have shape (n_params, n_cells, n_comp), got "
                         f"{tuple(params.shape)}")
    n_cells, n_comp = (int(x) for x in params.shape[1:])
    n_seg, n_rec = _segments(op, segment, n_steps, record_every)
    cells = (n_cells, n_comp)
    record_at = check_record_at(op, record_at, n_comp)
    recorded = (n_cells, n_comp if record_at is None else len(record_at))
    shapes = {
        "checkpoints": (checkpoints, (n_seg, 1 + n_states, *cells)),
        "counts_at": (counts_at, (n_seg, n_cells)),
        "params": (params, (n_params, *cells)),
        "parent": (parent, (n_comp,)),
        "coupling": (coupling, (2, *cells)),
        "g_v": (g_v, cells),
        "g_states": (g_states, (n_states, *cells)),
        "g_v_record": (g_v_record, (n_rec, *recorded)),
        "g_spike_times": (g_spike_times, (max_spikes, n_cells)),
    }
    for name, (a, shape) in shapes.items():
        if tuple(a.shape) != shape:
            raise InputError(f"{op}: {name} must have shape {shape}, got {tuple(a.shape)}")
    if tuple(i_ext.shape) not in (cells, (n_steps, *cells)):
        raise InputError(f"{op}: i_ext must have shape {cells} or {(n_steps, *cells)}, got "
                         f"{tuple(i_ext.shape)}")
    dtype = array_dtype(params)
    if dtype not in ("float32", "float64"):
        raise InputError(f"{op}: arrays must be float32 or float64, got {dtype}")
    floats = {"checkpoints": checkpoints, "params": params, "i_ext": i_ext,
              "coupling": coupling, "g_v": g_v, "g_states": g_states,
              "g_v_record": g_v_record, "g_spike_times": g_spike_times}
    for name, a in floats.items():
        if array_dtype(a) != dtype:
            raise InputError(f"{op}: {name} must be {dtype} like params, got "
                             f"{array_dtype(a)}")
        require_finite(op, name, a)
    check_junction_columns(op, params)
    for name, a in (("counts_at", counts_at), ("parent", parent)):
        if array_dtype(a) != "int64":
            raise InputError(f"{op}: {name} must be int64, got {array_dtype(a)}")
    return dtype


cable_adjoint_op = Op(
    name="cable_adjoint",
    family="ion_adjoint",
    array_args=("checkpoints", "counts_at", "params", "i_ext", "parent", "coupling", "g_v",
                "g_states", "g_v_record", "g_spike_times"),
    params=("channels", "dt", "n_steps", "segment", "record_every", "spike_threshold",
            "max_spikes", "record_at"),
    check=_check_cable_adjoint,
)


def cable_adjoint(checkpoints: Any, counts_at: Any, params: Any, i_ext: Any, parent: Any,
                  coupling: Any, g_v: Any, g_states: Any, g_v_record: Any,
                  g_spike_times: Any, *, channels: Any, dt: float, n_steps: int,
                  segment: int, record_every: int = 0, spike_threshold: float = 0.0,
                  max_spikes: int = 0, record_at: Sequence[int] | None = None,
                  backend: str | None = None) -> tuple[Any, ...]:
    """Gradients of ``cable_simulate`` w.r.t. ``(v0, states0, params, i_ext, coupling)``.

    As :func:`ion_adjoint`, for cells sharing a morphology: each step's adjoint is the
    transposed tree solve (``a_R = A^-T a_v'``, the Hines elimination with the coupling's
    two rows swapped), then every compartment's local adjoint through its row of the
    system, ``D = c_m / dt + g_sum + axial`` and ``R = c_m / dt v + ge_sum + i_inj``, with
    ``a_D = -a_R v'`` (:func:`fusekit.ops.ion_symbolic.cable_adjoint_step_source`); the
    coupling's gradient collects ``-a_R[j] v'[k]`` over the matrix entries it sits in.
    Spikes are those of compartment 0.

    Args:
        checkpoints: ``(n_seg, 1 + n_states, n_cells, n_comp)`` (``cable_simulate``'s torch
            form returns them).
        counts_at: ``(n_seg, n_cells)`` int64.
        params: ``(n_params, n_cells, n_comp)``.
        i_ext: ``(n_cells, n_comp)`` or ``(n_steps, n_cells, n_comp)``.
        parent: ``(n_comp,)`` int64, Hines order.
        coupling: ``(2, n_cells, n_comp)``.
        g_v: Gradient of the final ``v``, ``(n_cells, n_comp)`` (zeros when unused).
        g_states: Gradient of the final states, ``(n_states, n_cells, n_comp)``.
        g_v_record: Gradient of ``v_record``, ``(n_rec, n_cells, n_comp)`` (or
            ``len(record_at)`` columns).
        g_spike_times: Gradient of ``spike_times``, ``(max_spikes, n_cells)`` (zeros where no
            spike; NaN is refused).
        channels: The channel set.
        dt: ms.
        n_steps: Steps simulated.
        segment: Steps per checkpoint segment (a multiple of ``record_every``).
        record_every: As for ``cable_simulate``.
        spike_threshold: mV, in compartment 0.
        max_spikes: As for ``cable_simulate``.
        record_at: As for ``cable_simulate``: the recorded compartments (``None``: all).
        backend: ``"reference"``, ``"cpu"`` or ``"auto"``.

    Returns:
        ``(g_v0, g_states0, g_params, g_i_ext, g_coupling)`` with those inputs' shapes
        (``g_coupling[:, :, 0]`` is 0: the root has no parent).
    """
    check_counts("cable_adjoint", n_steps=n_steps, segment=segment, record_every=record_every,
                 max_spikes=max_spikes)
    return cable_adjoint_op.run(
        (checkpoints, counts_at, params, i_ext, parent, coupling, g_v, g_states, g_v_record,
         g_spike_times),
        {"channels": channel_set(channels), "dt": dt, "n_steps": int(n_steps),
         "segment": int(segment), "record_every": int(record_every),
         "spike_threshold": spike_threshold, "max_spikes": int(max_spikes),
         "record_at": None if record_at is None else tuple(int(x) for x in record_at)},
        backend,
    )


def cable_adjoint_reference(
    checkpoints: np.ndarray, counts_at: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    parent: np.ndarray, coupling: np.ndarray, g_v: np.ndarray, g_states: np.ndarray,
    g_v_record: np.ndarray, g_spike_times: np.ndarray, *, channels: Any, dt: float,
    n_steps: int, segment: int, record_every: int = 0, spike_threshold: float = 0.0,
    max_spikes: int = 0, record_at: Sequence[int] | None = None,
) -> tuple[np.ndarray, ...]:
    """Float64 NumPy oracle of :func:`cable_adjoint` (steps in Python, cells as arrays)."""
    from .ion import hines_solve_reference, record_columns

    cs = channel_set(channels)
    dtype = params.dtype
    adjoint, rows = _adjoint_function(cs, cable=True)
    n_states = len(cs.state_names)
    P = params.astype(np.float64)
    I_ext = i_ext.astype(np.float64)
    C = coupling.astype(np.float64)
    n_cells, n_comp = P.shape[1:]
    cols = record_columns(record_at, n_comp)
    constant = I_ext.ndim == 2
    thr = spike_threshold
    axial = np.zeros((n_cells, n_comp))
    axial[:, 1:] = C[0, :, 1:]
    for i in range(1, n_comp):
        axial[:, parent[i]] += C[1, :, i]
    av = g_v.astype(np.float64).copy()
    a_s = [row.copy() for row in g_states.astype(np.float64)]
    g_P = np.zeros_like(P)
    g_I = np.zeros_like(I_ext)
    g_C = np.zeros_like(C)
    for seg in range(checkpoints.shape[0] - 1, -1, -1):
        k0, k1 = seg * segment, min(n_steps, (seg + 1) * segment)
        v = checkpoints[seg, 0].astype(np.float64)
        S = checkpoints[seg, 1:].astype(np.float64)
        traj, diags = [(v, S)], []
        for step in range(k0, k1):
            i_inj = I_ext if constant else I_ext[step]
            S, g_sum, ge_sum = gates_and_conductances(cs, v, S, P, dt, exp=np.exp,
                                                      stack=np.stack, where=np.where)
            diags.append(P[0] / dt + g_sum + axial)
            v = hines_solve_reference(parent, diags[-1], -C[1], -C[0],
                                      P[0] / dt * v + ge_sum + i_inj)
            traj.append((v, S))
        slots = _spike_slots([x[0][:, 0] for x in traj], counts_at[seg], thr)  # the soma's
        for step in range(k1 - 1, k0 - 1, -1):
            t = step - k0
            if record_every and (step + 1) % record_every == 0:
                av = av.copy()
                np.add.at(av, (slice(None), cols), g_v_record[(step + 1) // record_every - 1])
            (v0, S0), v1 = traj[t], traj[t + 1][0]
            after, extra = _spike_time_adjoint(v0[:, 0], v1[:, 0], slots[t], g_spike_times,
                                               thr, dt)
            av = av.copy()
            av[:, 0] += after
            # The transposed tree solve: A^T has A's diagonal and its off-diagonals swapped.
            a_r = hines_solve_reference(parent, diags[t], -C[0], -C[1], av)
            a_d = -a_r * v1
            par = parent[1:]
            g_C[0, :, 1:] += a_d[:, 1:] + a_r[:, 1:] * v1[:, par]
            g_C[1, :, 1:] += a_d[:, par] + a_r[:, par] * v1[:, 1:]
            i_inj = I_ext if constant else I_ext[step]
            out = adjoint(v0, *S0, *P, i_inj, dt, a_d, a_r, *a_s)
            av = out[0].copy()
            av[:, 0] += extra
            a_s = list(out[1:1 + n_states])
            for i, contrib in zip(rows, out[1 + n_states:-1], strict=True):
                g_P[i] += contrib
            if constant:
                g_I += out[-1]
            else:
                g_I[step] = out[-1]
    g_S = np.array(a_s).reshape(n_states, n_cells, n_comp)
    return tuple(a.astype(dtype) for a in (av, g_S, g_P, g_I, g_C))
