"""CUDA kernel of ion_adjoint: the checkpointed backward of ion_simulate, one thread per neuron.

One launch runs the whole backward, as ``cuda/ion.py``'s ``ion_kernel`` runs the whole
forward: each thread keeps its parameters, the adjoints of its state and the sums of its
parameter adjoints in registers. For each segment, last first, it re-runs the segment from
its checkpoint with the forward kernel's own step (``ops.ion_channel.step_source``, the same
device functions, so the trajectory and its spike crossings are those of the CUDA forward),
writing every step's ``v`` and states to a global scratch array ``(segment + 1, 1 + n_states,
n)`` (neuron fastest: the warp's accesses coalesce), then walks it backwards with the generated
adjoint step (:func:`fusekit.ops.ion_symbolic.adjoint_step_source`). The spike slots are not
stored: the count at the end of the forward re-run is walked back down at each crossing.

:func:`ion_adjoint_launch` takes Numba device arrays and needs no CuPy, so the simulator tests
call it; the registered kernel wraps it for CuPy arrays (and torch CUDA tensors, through the
registry) on CuPy's current stream (checked on an H200 by benchmarks/gpu/run_gpu_checks.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from ..._registry import register_kernel
from ...ops import ion_backprop as adj
from ...ops.ion_channel import ChannelSet, channel_set, step_source
from ...ops.ion_symbolic import adjoint_step_source, unless_junction_adjoint
from ._device import checked_workspace, cupy_stream, to_device
from .ion import THREADS, _generated_kernel, cable_rows_source, hines_source


def spike_time_adjoint_source(indent: str, v_old: str, v_new: str, g_t: str, av: str) -> str:
    """The adjoint of a kept spike time ``t = (k + f) dt`` in a step from ``v_old`` to ``v_new``.

    Walking backwards, ``count`` drops to the spike's slot; its gradient ``g_t`` adds
    ``-dt f / D g_t`` to ``av`` (the potential after the step) and leaves
    ``extra = -dt (1 - f) / D g_t`` for the potential before it (``D = v_new - v_old``). The
    same lines for the CUDA ion and cable adjoints (the NumPy references share
    ``ops.ion_backprop._spike_time_adjoint``).
    """
    lines = [
        "extra = ZERO",
        f"if {v_old} < thr and {v_new} >= thr:",
        "    count -= 1  # this step's spike is the count-th (0-based)",
        "    if count < max_spikes:",
        f"        den = {v_new} - {v_old}",
        f"        frac = (thr - {v_old}) / den",
        f"        g_t = {g_t}",
        f"        {av} += -dt * frac / den * g_t",
        "        extra = -dt * (ONE - frac) / den * g_t",
    ]
    return "\n".join(indent + line for line in lines)


_FLOATS = ("float32", "float64")

# Names of the generated lines to stay clear of: t<i>, K<i> (adjoint), g<i>, E<i>, a_, b_, k_
# (forward step), s<k>, p<i>, av, as<k>, ap<i>, ai.
_TEMPLATE = '''
def adjoint_kernel(CK, CNT, P, I, i_rows, GV, GS, GREC, GT, TRAJ, seg_len, n_steps,
                   record_every, thr, max_spikes, dt, OV, OS, OP, OI):
    j = cuda.grid(1)
    if j >= P.shape[1]:
        return
{param_loads}
    av = GV[j]
{adjoint_loads}
{sum_inits}
    ai_sum = ZERO
    for seg in range(CK.shape[0] - 1, -1, -1):
        k0 = seg * seg_len
        k1 = min(n_steps, k0 + seg_len)
        v = CK[seg, 0, j]
        TRAJ[0, 0, j] = v
{checkpoint_loads}
        count = CNT[seg, j]
        for step in range(k0, k1):
            i_inj = I[step * i_rows, j]
            v_old = v
{forward}
            pos = step - k0 + 1
            TRAJ[pos, 0, j] = v
{trajectory_stores}
            if v_old < thr and v >= thr:
                count += 1
        for step in range(k1 - 1, k0 - 1, -1):
            pos = step - k0
            if record_every > 0 and (step + 1) % record_every == 0:
                av += GREC[(step + 1) // record_every - 1, j]
            v = TRAJ[pos, 0, j]
            v_new = TRAJ[pos + 1, 0, j]
{spike_adjoint}
{trajectory_loads}
            i_inj = I[step * i_rows, j]
            av_n = av
{adjoint_next}
{adjoint}
            av += extra
{sum_updates}
            if i_rows:
                OI[step, j] = ai
            else:
                ai_sum += ai
    OV[j] = av
{stores}
    if not i_rows:
        OI[0, j] = ai_sum
'''


def generated_source(cs: ChannelSet) -> tuple[str, dict[str, float]]:
    """The Python source of the CUDA adjoint kernel and its constants (for reading)."""
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    forward, _ = step_source(cs, " " * 12)
    adjoint, consts, rows = adjoint_step_source(cs, " " * 12)

    def lines(fmt: str, count: int | list[int], indent: int) -> str:
        items = range(count) if isinstance(count, int) else count
        return "\n".join(" " * indent + fmt.format(i=i, row=i + 1) for i in items)

    stores = [lines("OS[{i}, j] = as{i}", n_states, 4)]
    stores += [f"    OP[{i}, j] = " + (f"gp{i}" if i in rows else "ZERO") for i in range(n_params)]
    text = _TEMPLATE.format(
        spike_adjoint=spike_time_adjoint_source(" " * 12, "v", "v_new", "GT[count, j]", "av"),
        param_loads=lines("p{i} = P[{i}, j]", n_params, 4),
        adjoint_loads=lines("as{i} = GS[{i}, j]", n_states, 4),
        sum_inits=lines("gp{i} = ZERO", rows, 4),
        checkpoint_loads=lines("s{i} = CK[seg, {row}, j]\n        TRAJ[0, {row}, j] = s{i}",
                               n_states, 8),
        forward="\n".join(forward),
        trajectory_stores=lines("TRAJ[pos, {row}, j] = s{i}", n_states, 12),
        trajectory_loads=lines("s{i} = TRAJ[pos, {row}, j]", n_states, 12),
        adjoint_next=lines("as{i}_n = as{i}", n_states, 12),
        adjoint="\n".join(adjoint),
        sum_updates=lines("gp{i} += ap{i}", rows, 12),
        stores="\n".join(s for s in stores if s),
    )
    return text, consts


def kernel_for(cs: ChannelSet, dtype: str) -> Any:
    """The CUDA adjoint kernel for ``cs`` and ``dtype`` (generated on first use)."""
    return _generated_kernel("ion_adjoint", cs, dtype, lambda: generated_source(cs),
                             "adjoint_kernel")


def ion_adjoint_launch(
    CK: Any, CNT: Any, P: Any, I_ext: Any, GV: Any, GS: Any, GREC: Any, GT: Any, OV: Any,
    OS: Any, OP: Any, OI: Any, *, channels: Any, dt: float, n_steps: int, segment: int,
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
    workspace: Any = None, stream: Any = 0,
) -> None:
    """Run :func:`fusekit.ops.ion_adjoint` on device arrays, one thread per neuron.

    The keyword arguments are :func:`fusekit.ops.ion_adjoint`'s. ``CK`` ``(n_seg, 1 +
    n_states, n)`` and ``CNT`` ``(n_seg, n)`` (int64) are the checkpoints and the spike counts
    there, ``P`` ``(n_params, n)`` the parameters, ``I_ext`` ``(1, n)`` a constant or
    ``(n_steps, n)`` a per-step current; ``GV`` ``(n,)``, ``GS`` ``(n_states or 1, n)``,
    ``GREC`` ``(n_rec, n)`` and ``GT`` ``(max_spikes, n)`` (finite) the incoming gradients of
    ``v``, the states, ``v_record`` and the spike times. The outputs ``OV``, ``OS``, ``OP``
    and ``OI``, shaped like ``GV``, ``GS``, ``P`` and ``I_ext``, get the gradients of ``v0``,
    ``states0``, ``params`` and ``i_ext`` (every element written). ``workspace`` holds one
    segment's trajectory, ``(min(segment, n_steps) + 1) (1 + n_states) n`` elements of
    ``P``'s dtype (``None``: allocated here); ``stream`` is a Numba stream (0: the default).
    """
    cs = channel_set(channels)
    n = P.shape[1]
    if n == 0:
        return
    dtype = np.dtype(P.dtype)
    scalar = dtype.type
    shape = (min(segment, n_steps) + 1, 1 + len(cs.state_names), n)
    traj = checked_workspace(workspace, shape, dtype, stream)
    # One row of I_ext is a constant current (or one step's: the same gradient); zero rows
    # (no steps) must not take the constant's path, which writes OI[0].
    i_rows = 0 if I_ext.shape[0] == 1 else 1
    kernel_for(cs, dtype.name)[-(-n // THREADS), THREADS, stream](
        CK, CNT, P, I_ext, i_rows, GV, GS, GREC, GT, traj, segment, n_steps, record_every,
        scalar(spike_threshold), max_spikes, scalar(dt), OV, OS, OP, OI,
    )


@register_kernel(adj.ion_adjoint_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def ion_adjoint_cuda(
    checkpoints: Any, counts_at: Any, params: Any, i_ext: Any, g_v: Any, g_states: Any,
    g_v_record: Any, g_spike_times: Any, *, channels: Any, dt: float, n_steps: int,
    segment: int, record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
) -> tuple[Any, ...]:
    """The whole backward in one launch, one thread per neuron, on CuPy's current stream."""
    import cupy

    cs = channel_set(channels)
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    n = params.shape[1]
    dtype = params.dtype
    with params.device, cuda.gpus[params.device.id]:
        stream = cupy_stream(cupy)
        c = cupy.ascontiguousarray
        I_ext = c(i_ext).reshape(i_ext.shape if i_ext.ndim == 2 else (1, n))
        GS = c(g_states) if n_states else cupy.zeros((1, n), dtype=dtype)
        OV = cupy.empty(n, dtype=dtype)
        OS = cupy.empty(GS.shape, dtype=dtype)
        OP = cupy.empty((n_params, n), dtype=dtype)
        OI = cupy.empty(I_ext.shape, dtype=dtype)
        # From CuPy's memory pool, which the next call reuses.
        traj = cupy.empty((min(segment, n_steps) + 1, 1 + n_states, n), dtype=dtype)
        arrays = [("checkpoints", c(checkpoints)), ("counts_at", c(counts_at)),
                  ("params", c(params)), ("i_ext", I_ext), ("g_v", c(g_v)), ("g_states", GS),
                  ("g_v_record", c(g_v_record)), ("g_spike_times", c(g_spike_times)),
                  ("OV", OV), ("OS", OS), ("OP", OP), ("OI", OI)]
        ion_adjoint_launch(
            *(to_device(name, a, stream) for name, a in arrays), channels=cs, dt=dt,
            n_steps=n_steps, segment=segment, record_every=record_every,
            spike_threshold=spike_threshold, max_spikes=max_spikes,
            workspace=to_device("workspace", traj, stream), stream=stream,
        )
    return OV, OS[:n_states], OP, OI.reshape(i_ext.shape)


# ------------------------------------------------------------ multi-compartment cells

# Workspace arrays have the cell index last, so a warp's accesses coalesce.
_CABLE_TEMPLATE = '''
def cable_adjoint_kernel(CK, CNT, P, I, i_rows, parent, CPL, GV, GS, GREC, GT, REC,
                         seg_len, n_steps, record_every, thr, max_spikes, dt, TRAJ, DIAG, DD,
                         XB, AV, AS, OV, OS, OP, OI, OC):
    c = cuda.grid(1)
    if c >= P.shape[1]:
        return
    n_comp = P.shape[2]
    for j in range(n_comp):
        AV[j, c] = GV[c, j]
{adjoint_inits}
{param_grad_inits}
        OC[0, c, j] = ZERO
        OC[1, c, j] = ZERO
        if not i_rows:
            OI[0, c, j] = ZERO
    for seg in range(CK.shape[0] - 1, -1, -1):
        k0 = seg * seg_len
        k1 = min(n_steps, k0 + seg_len)
        for j in range(n_comp):
            for k in range({x_rows}):
                TRAJ[0, k, j, c] = CK[seg, k, c, j]
        count = CNT[seg, c]
        for step in range(k0, k1):
            pos = step - k0
            irow = step * i_rows
            # The forward kernel's step (cuda.ion.cable_source), in the same order.
{forward_rows}
            for j in range(n_comp):
                DIAG[pos, j, c] = DD[j, c]
{forward_solve}
            if TRAJ[pos, 0, 0, c] < thr and TRAJ[pos + 1, 0, 0, c] >= thr:
                count += 1
        for step in range(k1 - 1, k0 - 1, -1):
            pos = step - k0
            irow = step * i_rows
            if record_every > 0 and (step + 1) % record_every == 0:
                r = (step + 1) // record_every - 1
                for q in range(REC.shape[0]):
                    AV[REC[q], c] += GREC[r, c, q]
            v_old = TRAJ[pos, 0, 0, c]
            v_new = TRAJ[pos + 1, 0, 0, c]
{spike_adjoint}
            # a_R = A^-T a_v': the elimination with the coupling's rows swapped, in place.
            for j in range(n_comp):
                DD[j, c] = DIAG[pos, j, c]
                XB[j, c] = AV[j, c]
{transposed_solve}
            for j in range(1, n_comp):
                pj = parent[j]
                OC[0, c, j] += XB[j, c] * (TRAJ[pos + 1, 0, pj, c] - TRAJ[pos + 1, 0, j, c])
                OC[1, c, j] += XB[pj, c] * (TRAJ[pos + 1, 0, j, c] - TRAJ[pos + 1, 0, pj, c])
            for j in range(n_comp):
                v = TRAJ[pos, 0, j, c]
                i_inj = I[irow, c, j]
                a_r = XB[j, c]
                a_d = -a_r * TRAJ[pos + 1, 0, j, c]
{adjoint_loads}
{adjoint}
                AV[j, c] = av
{adjoint_stores}
                if i_rows:
                    OI[step, c, j] = ai
                else:
                    OI[0, c, j] += ai
            AV[0, c] += extra
    for j in range(n_comp):
        OV[c, j] = AV[j, c]
{state_grad_stores}
'''


def cable_generated_source(cs: ChannelSet) -> tuple[str, dict[str, float]]:
    """The Python source of the CUDA cable adjoint kernel and its constants (for reading).

    The forward re-run is the CUDA forward's step (``ops.ion_channel.step_source``, the same
    device functions and sums in the same order); the local adjoint of a compartment is
    :func:`fusekit.ops.ion_symbolic.cable_adjoint_step_source`.
    """
    from ...ops.ion_symbolic import cable_adjoint_step_source

    n_states, n_params = len(cs.state_names), len(cs.param_names)
    ind = " " * 16
    forward, _ = step_source(cs, ind, voltage=False)
    adjoint, consts, rows = cable_adjoint_step_source(cs, ind)

    def lines(fmt: str, count: int | list[int], indent: int) -> str:
        items = range(count) if isinstance(count, int) else count
        return "\n".join(" " * indent + fmt.format(i=i, row=i + 1) for i in items)

    text = _CABLE_TEMPLATE.format(
        spike_adjoint=spike_time_adjoint_source(" " * 12, "v_old", "v_new", "GT[count, c]",
                                                "AV[0, c]"),
        adjoint_inits=lines("AS[{i}, j, c] = GS[{i}, c, j]", n_states, 8),
        param_grad_inits=lines("OP[{i}, c, j] = ZERO", n_params, 8),
        forward_rows=cable_rows_source(
            " " * 12, "TRAJ[pos, 0, {j}, c]", "DD[{j}, c]", "XB[{j}, c]",
            "\n".join([lines("s{i} = TRAJ[pos, {row}, j, c]", n_states, 16),
                       lines("p{i} = P[{i}, c, j]", n_params, 16)]),
            "\n".join(forward),
            lines("TRAJ[pos + 1, {row}, j, c] = s{i}", n_states, 16) or ind + "pass"),
        adjoint_loads="\n".join([lines("s{i} = TRAJ[pos, {row}, j, c]", n_states, 16),
                                 lines("p{i} = P[{i}, c, j]", n_params, 16),
                                 lines("as{i}_n = AS[{i}, j, c]", n_states, 16)]),
        adjoint="\n".join(unless_junction_adjoint(adjoint, rows, n_states, ind)),
        adjoint_stores="\n".join([lines("AS[{i}, j, c] = as{i}", n_states, 16),
                                  lines("OP[{i}, c, j] += ap{i}", rows, 16)]),
        state_grad_stores=lines("OS[{i}, c, j] = AS[{i}, j, c]", n_states, 8),
        x_rows=1 + n_states,
        forward_solve=hines_source(" " * 12, "DD[{j}, c]", "XB[{j}, c]",
                                   "TRAJ[pos + 1, 0, {j}, c]"),
        transposed_solve=hines_source(" " * 12, "DD[{j}, c]", "XB[{j}, c]", "XB[{j}, c]",
                                      upper="CPL[1, c, j]", lower="CPL[0, c, j]"),
    )
    return text, consts


def cable_kernel_for(cs: ChannelSet, dtype: str) -> Any:
    """The CUDA cable adjoint kernel for ``cs`` and ``dtype`` (generated on first use)."""
    return _generated_kernel("cable_adjoint", cs, dtype, lambda: cable_generated_source(cs),
                             "cable_adjoint_kernel", voltage=False)


def cable_adjoint_launch(
    CK: Any, CNT: Any, P: Any, I_ext: Any, parent: Any, CPL: Any, GV: Any, GS: Any,
    GREC: Any, GT: Any, OV: Any, OS: Any, OP: Any, OI: Any, OC: Any, REC: Any = None, *,
    channels: Any, dt: float, n_steps: int, segment: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, stream: Any = 0,
) -> None:
    """Run :func:`fusekit.ops.cable_adjoint` on device arrays, one thread per cell.

    The keyword arguments are :func:`fusekit.ops.cable_adjoint`'s; the arrays are its inputs
    (``I_ext`` with a leading axis of 1 for a constant current, ``GS`` with at least one row)
    and its five outputs, every element of which is written; ``REC`` the recorded
    compartments (int64, one per column of ``GREC``; ``None``: all). The workspaces (one segment's
    trajectory and diagonals, and the per-compartment rows of the solves and adjoints) are
    allocated here on ``stream``.
    """
    cs = channel_set(channels)
    n_cells, n_comp = P.shape[1], P.shape[2]
    if n_cells == 0:
        return
    dtype = np.dtype(P.dtype)
    scalar = dtype.type
    seg = min(segment, n_steps)
    x_rows = 1 + len(cs.state_names)
    work = [cuda.device_array(shape, dtype=dtype, stream=stream) for shape in (
        (seg + 1, x_rows, n_comp, n_cells), (max(seg, 1), n_comp, n_cells),
        (n_comp, n_cells), (n_comp, n_cells), (n_comp, n_cells),
        (max(x_rows - 1, 1), n_comp, n_cells))]
    i_rows = 0 if I_ext.shape[0] == 1 else 1
    if REC is None:
        REC = cuda.to_device(np.arange(n_comp, dtype=np.int64), stream=stream)
    cable_kernel_for(cs, dtype.name)[-(-n_cells // THREADS), THREADS, stream](
        CK, CNT, P, I_ext, i_rows, parent, CPL, GV, GS, GREC, GT, REC, segment, n_steps,
        record_every, scalar(spike_threshold), max_spikes, scalar(dt), *work, OV, OS, OP, OI,
        OC,
    )


@register_kernel(adj.cable_adjoint_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def cable_adjoint_cuda(
    checkpoints: Any, counts_at: Any, params: Any, i_ext: Any, parent: Any, coupling: Any,
    g_v: Any, g_states: Any, g_v_record: Any, g_spike_times: Any, *, channels: Any,
    dt: float, n_steps: int, segment: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, record_at: Any = None,
) -> tuple[Any, ...]:
    """The whole cable backward in one launch, one thread per cell, on CuPy's stream."""
    import cupy

    from ...ops.ion import record_columns

    cs = channel_set(channels)
    n_states = len(cs.state_names)
    n_cells, n_comp = params.shape[1], params.shape[2]
    dtype = params.dtype
    with params.device, cuda.gpus[params.device.id]:
        stream = cupy_stream(cupy)
        c = cupy.ascontiguousarray
        I_ext = c(i_ext).reshape(i_ext.shape if i_ext.ndim == 3 else (1, n_cells, n_comp))
        GS = c(g_states) if n_states else cupy.zeros((1, n_cells, n_comp), dtype=dtype)
        outs = [cupy.empty(shape, dtype=dtype) for shape in (
            (n_cells, n_comp), GS.shape, params.shape, I_ext.shape, coupling.shape)]
        arrays = [("checkpoints", c(checkpoints)), ("counts_at", c(counts_at)),
                  ("params", c(params)), ("i_ext", I_ext),
                  ("parent", cupy.asarray(parent, dtype=cupy.int64)), ("coupling", c(coupling)),
                  ("g_v", c(g_v)), ("g_states", GS), ("g_v_record", c(g_v_record)),
                  ("g_spike_times", c(g_spike_times)),
                  *zip(("OV", "OS", "OP", "OI", "OC"), outs, strict=True),
                  ("REC", cupy.asarray(record_columns(record_at, n_comp)))]
        cable_adjoint_launch(
            *(to_device(name, a, stream) for name, a in arrays), channels=cs, dt=dt,
            n_steps=n_steps, segment=segment, record_every=record_every,
            spike_threshold=spike_threshold, max_spikes=max_spikes, stream=stream)
    OV, OS, OP, OI, OC = outs
    return OV, OS[:n_states], OP, OI.reshape(i_ext.shape), OC
