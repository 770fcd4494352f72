"""CPU kernel of ion_adjoint: the checkpointed backward of ion_simulate in one Numba call.

Threads own blocks of ``NEURON_BLOCK`` neurons for the whole backward, as in the forward
kernel. For each segment, last first, a block re-runs the segment from its checkpoint with the
forward kernel's own step lines (``cpu.ion.step_body``, so the trajectory
and its spike crossings are those of the forward) keeping every step's ``v`` and states in a
scratch array, then walks it backwards with the generated adjoint step
(:func:`fusekit.ops.ion_symbolic.adjoint_step_source`): straight-line arithmetic over the
block's neurons, which LLVM vectorises. Spike-time and recording gradients enter in small
scalar loops between the steps. Scratch per block: ``(segment + 1) (1 + n_states)`` rows.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..._registry import register_kernel
from ...ops import ion_backprop as adj
from ...ops.ion_channel import (
    ChannelSet,
    channel_set,
    compile_channel_function,
    reversal_constants,
)
from ...ops.ion_symbolic import adjoint_step_source, junction_adjoint_lines
from ._numba import configure
from .ion import (
    _FASTMATH,
    CABLE_BLOCK,
    CABLE_STAGES,
    NEURON_BLOCK,
    ROW_PAD,
    _compile_generated,
    _math,
    block_kind,
    cable_block_for,
    cable_spill_rows,
    cable_step_loops,
    graph_math,
    hines_block_source,
    neuron_width,
    place_spill,
    staged_loops,
    step_body,
    unless_junction,
)

_FLOATS = ("float32", "float64")

_TEMPLATE = '''
def adj_block(lo, width, CK, CNT, P, I, i_rows, GV, GS, GREC, GT, seg_len, n_steps,
              record_every, thr, max_spikes, dt, OV, OS, OP, OI):
    w = min(width, P.shape[1] - lo)
    # Rows of ROW values (BLOCK and a pad): params, then the adjoints of v and the states,
    # of the params, of a constant i_ext, the spike-time term of the step before, the
    # state (v, states) the vector loops work on, this step's i_ext, then the values
    # carried between the stages of the re-run forward step (cpu.ion.staged_loops).
    buf = np.zeros({n_rows} * ROW, dtype=DTYPE)
    traj = np.empty((seg_len + 1) * X_ROWS * BLOCK, dtype=DTYPE)
    slot = np.empty(seg_len * BLOCK, dtype=np.int64)
    count = np.empty(BLOCK, dtype=np.int64)
    for k in range(N_PARAMS):
        for j in range(w):
            buf[k * ROW + j] = P[k, lo + j]
    for j in range(w):
        buf[AV * ROW + j] = GV[lo + j]
    for k in range(N_STATES):
        for j in range(w):
            buf[(AV + 1 + k) * ROW + j] = GS[k, lo + j]
    n_seg = CK.shape[0]
    for seg in range(n_seg - 1, -1, -1):
        k0 = seg * seg_len
        k1 = min(n_steps, k0 + seg_len)
        for k in range(X_ROWS):
            for j in range(w):
                traj[k * BLOCK + j] = CK[seg, k, lo + j]
        for j in range(w):
            count[j] = CNT[seg, lo + j]
        for k in range(X_ROWS):
            for j in range(w):
                buf[(X + k) * ROW + j] = traj[k * BLOCK + j]
        for step in range(k0, k1):
            t = step - k0
            x0 = t * X_ROWS * BLOCK
            x1 = x0 + X_ROWS * BLOCK
            # The vector loops read and write only buf at constant offsets (as in the
            # forward kernel): with traj or I in them LLVM could not prove them alias-free.
            for j in range(w):
                buf[II * ROW + j] = I[step * i_rows, lo + j]
{fwd_step}
            for k in range(X_ROWS):
                for j in range(w):
                    traj[x1 + k * BLOCK + j] = buf[(X + k) * ROW + j]
            for j in range(w):
                if traj[x0 + j] < thr and traj[x1 + j] >= thr:
                    slot[t * BLOCK + j] = count[j]
                    count[j] += 1
                else:
                    slot[t * BLOCK + j] = -1
        for step in range(k1 - 1, k0 - 1, -1):
            t = step - k0
            x0 = t * X_ROWS * BLOCK
            x1 = x0 + X_ROWS * BLOCK
            if record_every > 0 and (step + 1) % record_every == 0:
                r = (step + 1) // record_every - 1
                for j in range(w):
                    buf[AV * ROW + j] += GREC[r, lo + j]
            for j in range(w):
                c = slot[t * BLOCK + j]
                extra = ZERO
                if c >= 0 and c < max_spikes:
                    den = traj[x1 + j] - traj[x0 + j]
                    f = (thr - traj[x0 + j]) / den
                    g = GT[c, lo + j]
                    buf[AV * ROW + j] += -dt * f / den * g
                    extra = -dt * (ONE - f) / den * g
                buf[EX * ROW + j] = extra
            for k in range(X_ROWS):
                for j in range(w):
                    buf[(X + k) * ROW + j] = traj[x0 + k * BLOCK + j]
            for j in range(w):
                buf[II * ROW + j] = I[step * i_rows, lo + j]
            for j in range(w):
                v = buf[X * ROW + j]
                i_inj = buf[II * ROW + j]
{adj_loads}
{adj_body}
{adj_stores}
            if i_rows:
                for j in range(w):
                    OI[step, lo + j] = buf[AI * ROW + j]
            else:
                for j in range(w):
                    buf[AI_SUM * ROW + j] += buf[AI * ROW + j]
    for j in range(w):
        OV[lo + j] = buf[AV * ROW + j]
    for k in range(N_STATES):
        for j in range(w):
            OS[k, lo + j] = buf[(AV + 1 + k) * ROW + j]
    for k in range(N_PARAMS):
        for j in range(w):
            OP[k, lo + j] = buf[(AP + k) * ROW + j]
    if not i_rows:
        for j in range(w):
            OI[0, lo + j] = buf[AI_SUM * ROW + j]


def adj_kernel(CK, CNT, P, I, i_rows, GV, GS, GREC, GT, seg_len, n_steps, record_every, thr,
               max_spikes, dt, OV, OS, OP, OI, width):
    n_blocks = (P.shape[1] + width - 1) // width
    for blk in prange(n_blocks):
        adj_block(blk * width, width, CK, CNT, P, I, i_rows, GV, GS, GREC, GT, seg_len,
                  n_steps, record_every, thr, max_spikes, dt, OV, OS, OP, OI)
'''


def _layout(cs: ChannelSet) -> dict[str, int]:
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    av = n_params
    ap = av + 1 + n_states
    ai = ap + n_params
    return {"BLOCK": NEURON_BLOCK, "ROW": NEURON_BLOCK + ROW_PAD, "N_STATES": n_states,
            "N_PARAMS": n_params,
            "X_ROWS": 1 + n_states, "AV": av, "AP": ap, "AI": ai, "AI_SUM": ai + 1,
            "EX": ai + 2, "X": ai + 3, "II": ai + 4 + n_states, "N_ROWS": ai + 5 + n_states}


def generated_source(cs: ChannelSet) -> tuple[str, dict[str, float], dict[str, Any]]:
    """The adjoint kernel's source, its constants and the channel functions it calls."""
    lay = _layout(cs)
    n_states, n_params = lay["N_STATES"], lay["N_PARAMS"]
    ind = " " * 16
    fwd_body, fwd_consts, funcs = step_body(cs, "", prefix="f", const_prefix="KF")
    x_names = ["v", *(f"s{k}" for k in range(n_states))]  # the state the loops work on
    fwd_rows = {name: lay["X"] + k for k, name in enumerate(x_names)}
    fwd_rows.update({"i_inj": lay["II"], **{f"p{i}": i for i in range(n_params)}})
    # the forward kernel's own stage cut (one loop where it calls channel functions)
    fwd_step, n_spill = staged_loops(
        fwd_body, fwd_rows, lay["N_ROWS"], 1 if funcs else None, " " * 12, (),
        [f"buf[{fwd_rows[name]} * ROW + j] = {name}" for name in x_names])
    adj_body, consts, rows = adjoint_step_source(cs, ind, share_exp=True)
    params = [f"{ind}p{i} = buf[{i} * ROW + j]" for i in range(n_params)]
    states = [f"{ind}s{k} = buf[{lay['X'] + 1 + k} * ROW + j]" for k in range(n_states)]
    adj_loads = states + params + [f"{ind}av_n = buf[{lay['AV']} * ROW + j]"]
    adj_loads += [f"{ind}as{k}_n = buf[{lay['AV'] + 1 + k} * ROW + j]" for k in range(n_states)]
    adj_stores = [f"{ind}buf[{lay['AV']} * ROW + j] = av + buf[{lay['EX']} * ROW + j]"]
    adj_stores += [f"{ind}buf[{lay['AV'] + 1 + k} * ROW + j] = as{k}" for k in range(n_states)]
    adj_stores += [f"{ind}buf[{lay['AP'] + i} * ROW + j] += ap{i}" for i in rows]
    adj_stores.append(f"{ind}buf[{lay['AI']} * ROW + j] = ai")
    text = _TEMPLATE.format(
        fwd_step=fwd_step, adj_loads="\n".join(adj_loads), adj_body="\n".join(adj_body),
        adj_stores="\n".join(adj_stores), n_rows=lay["N_ROWS"] + n_spill)
    return text, {**consts, **fwd_consts}, funcs


_kernels: dict[tuple[str, str], Any] = {}


def kernel_for(cs: ChannelSet, dtype: str) -> Any:
    """The compiled adjoint kernel for ``cs`` and ``dtype`` (generated on first use)."""
    key = (cs.key, dtype)
    compiled = _kernels.get(key)
    if compiled is not None:
        return compiled
    configure()
    import numba

    math_fns, scalar = _math(dtype)
    text, consts, funcs = generated_source(cs)

    def jit(fn: Any) -> Any:
        return numba.njit(fastmath=_FASTMATH[dtype], error_model="numpy")(fn)

    ns: dict[str, Any] = {
        "np": np, "prange": numba.prange, "DTYPE": np.dtype(dtype), **graph_math(dtype),
        **{k: scalar(c) for k, c in consts.items()}, **reversal_constants(cs, scalar),
        **_layout(cs),
    }
    seen: dict[int, Any] = {}
    for name, fn in funcs.items():
        ns[name] = compile_channel_function(fn, math_fns, scalar, jit, seen)
    _kernels[key] = compiled = _compile_generated("adj", cs, dtype, text, ns, "adj_block",
                                                  "adj_kernel")
    return compiled


@register_kernel(adj.ion_adjoint_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def ion_adjoint_cpu(
    checkpoints: np.ndarray, counts_at: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    g_v: np.ndarray, g_states: np.ndarray, g_v_record: np.ndarray, g_spike_times: np.ndarray,
    *, channels: Any, dt: float, n_steps: int, segment: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0,
) -> tuple[np.ndarray, ...]:
    """The whole backward in one parallel Numba call, neurons in blocks."""
    cs = channel_set(channels)
    dtype = params.dtype
    scalar = dtype.type
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    n = params.shape[1]
    c = np.ascontiguousarray
    I_ext = c(i_ext).reshape(i_ext.shape if i_ext.ndim == 2 else (1, n))
    OV = np.array(g_v, dtype=dtype)
    OS = np.array(g_states, dtype=dtype).reshape(n_states, n)
    OP = np.zeros((n_params, n), dtype=dtype)
    OI = np.zeros(I_ext.shape, dtype=dtype)
    if n and checkpoints.shape[0]:
        kernel_for(cs, dtype.name)(
            c(checkpoints), c(counts_at), c(params), I_ext, 1 if i_ext.ndim == 2 else 0,
            c(g_v), c(g_states), c(g_v_record), c(g_spike_times), int(segment), int(n_steps),
            int(record_every), scalar(spike_threshold), int(max_spikes), scalar(dt),
            OV, OS, OP, OI, neuron_width(n))
    return OV, OS, OP, OI.reshape(i_ext.shape)


# ------------------------------------------------------------ multi-compartment cells

_CABLE_TEMPLATE = '''
def cadj_block(lo, CK, CNT, P, I, i_rows, parent, CPL, GV, GS, GREC, GT, REC, seg_len,
               n_steps, record_every, thr, max_spikes, dt, OV, OS, OP, OI, OC):
    # Cells in SIMD blocks as in the forward kernel (cpu.ion.cable_block_source): every
    # compartment has NR rows of ROW values in buf, at constant offsets from its base, so
    # the vector loops over cells read and write buf only. Rows: v and the states (X_ROWS,
    # the state the loops work on), i_ext, params, the Hines row D and B, the coupling C0
    # and C1, the axial sum AX, the transposed solve's result XR (a_R), the potential
    # after the step V1, the adjoints AV and AS<k> of v and the states, the accumulated
    # parameter gradients AP<i>, the step's i_ext adjoint AI and its sum AIS, and the
    # coupling's gradients G0 and G1. traj keeps a segment's v and states per step and
    # compartment, diag its D rows before elimination.
    w = min(BLOCK, P.shape[1] - lo)
    n_comp = P.shape[2]
    RS = NR * ROW
    TS = X_ROWS * ROW
    SB = n_comp * RS  # the re-run stages' spill rows, shared by the compartments
    buf = np.zeros(SB + N_SPILL * ROW, dtype=DTYPE)
    traj = np.empty((seg_len + 1) * n_comp * TS, dtype=DTYPE)
    diag = np.empty(seg_len * n_comp * ROW, dtype=DTYPE)
    slot = np.empty(seg_len * BLOCK, dtype=np.int64)
    count = np.empty(BLOCK, dtype=np.int64)
    extra = np.zeros(BLOCK, dtype=DTYPE)
    for j in range(n_comp):
        base = j * RS
        for i in range(w):
            buf[base + C0 * ROW + i] = CPL[0, lo + i, j]
            buf[base + C1 * ROW + i] = CPL[1, lo + i, j]
            buf[base + AV * ROW + i] = GV[lo + i, j]
            buf[base + II * ROW + i] = I[0, lo + i, j]
        for k in range(N_STATES):
            for i in range(w):
                buf[base + (AS + k) * ROW + i] = GS[k, lo + i, j]
        for k in range(N_PARAMS):
            for i in range(w):
                buf[base + (P0 + k) * ROW + i] = P[k, lo + i, j]
    for j in range(1, n_comp):
        base = j * RS
        for i in range(w):
            buf[base + AX * ROW + i] += buf[base + C0 * ROW + i]
    for j in range(1, n_comp):
        base = j * RS
        pb = parent[j] * RS
        for i in range(w):
            buf[pb + AX * ROW + i] += buf[base + C1 * ROW + i]
    for seg in range(CK.shape[0] - 1, -1, -1):
        k0 = seg * seg_len
        k1 = min(n_steps, k0 + seg_len)
        for j in range(n_comp):
            for k in range(X_ROWS):
                for i in range(w):
                    traj[j * TS + k * ROW + i] = CK[seg, k, lo + i, j]
        for i in range(w):
            count[i] = CNT[seg, lo + i]
        for step in range(k0, k1):
            t = step - k0
            for j in range(n_comp):
                base = j * RS
                tb = (t * n_comp + j) * TS
                for k in range(X_ROWS):
                    for i in range(w):
                        buf[base + k * ROW + i] = traj[tb + k * ROW + i]
                if i_rows:
                    for i in range(w):
                        buf[base + II * ROW + i] = I[step, lo + i, j]
{fwd_step}
                db = (t * n_comp + j) * ROW
                for i in range(w):
                    diag[db + i] = buf[base + D * ROW + i]
{solve}
            for j in range(n_comp):
                base = j * RS
                tb = ((t + 1) * n_comp + j) * TS
                for k in range(X_ROWS):
                    for i in range(w):
                        traj[tb + k * ROW + i] = buf[base + k * ROW + i]
            tb0 = t * n_comp * TS
            tb1 = (t + 1) * n_comp * TS
            for i in range(w):
                if traj[tb0 + i] < thr and traj[tb1 + i] >= thr:
                    slot[t * BLOCK + i] = count[i]
                    count[i] += 1
                else:
                    slot[t * BLOCK + i] = -1
        for step in range(k1 - 1, k0 - 1, -1):
            t = step - k0
            if record_every > 0 and (step + 1) % record_every == 0:
                r = (step + 1) // record_every - 1
                for q in range(REC.shape[0]):
                    base = REC[q] * RS
                    for i in range(w):
                        buf[base + AV * ROW + i] += GREC[r, lo + i, q]
            tb0 = t * n_comp * TS
            tb1 = (t + 1) * n_comp * TS
            for i in range(w):
                extra[i] = ZERO
                sl = slot[t * BLOCK + i]
                if sl >= 0 and sl < max_spikes:
                    den = traj[tb1 + i] - traj[tb0 + i]
                    f = (thr - traj[tb0 + i]) / den
                    g = GT[sl, lo + i]
                    buf[AV * ROW + i] += -dt * f / den * g
                    extra[i] = -dt * (ONE - f) / den * g
            # a_R = A^-T a_v': the same elimination with the coupling's rows swapped.
            for j in range(n_comp):
                base = j * RS
                db = (t * n_comp + j) * ROW
                for i in range(w):
                    buf[base + D * ROW + i] = diag[db + i]
                for i in range(w):
                    buf[base + B * ROW + i] = buf[base + AV * ROW + i]
{solve_t}
            for j in range(n_comp):
                base = j * RS
                tb = (t * n_comp + j) * TS
                for k in range(X_ROWS):
                    for i in range(w):
                        buf[base + k * ROW + i] = traj[tb + k * ROW + i]
                tb = ((t + 1) * n_comp + j) * TS
                for i in range(w):
                    buf[base + V1 * ROW + i] = traj[tb + i]
                if i_rows:
                    for i in range(w):
                        buf[base + II * ROW + i] = I[step, lo + i, j]
            for j in range(1, n_comp):
                base = j * RS
                pb = parent[j] * RS
                for i in range(w):
                    buf[base + G0 * ROW + i] += buf[base + XR * ROW + i] * (
                        buf[pb + V1 * ROW + i] - buf[base + V1 * ROW + i])
                for i in range(w):
                    buf[base + G1 * ROW + i] += buf[pb + XR * ROW + i] * (
                        buf[base + V1 * ROW + i] - buf[pb + V1 * ROW + i])
            for j in range(n_comp):
                base = j * RS
                if buf[base + P0 * ROW] == ZERO:
                    # a junction (cpu.ion.unless_junction): states held, only c_m's row
                    for i in range(w):
                        v = buf[base + i]
                        a_r = buf[base + XR * ROW + i]
                        a_d = -a_r * buf[base + V1 * ROW + i]
{adj_loads}
{junction_adj}
{adj_stores}
                else:
                    for i in range(w):
                        v = buf[base + i]
                        i_inj = buf[base + II * ROW + i]
                        a_r = buf[base + XR * ROW + i]
                        a_d = -a_r * buf[base + V1 * ROW + i]
{adj_loads}
{adj_body}
{adj_stores}
                if i_rows:
                    for i in range(w):
                        OI[step, lo + i, j] = buf[base + AI * ROW + i]
                else:
                    for i in range(w):
                        buf[base + AIS * ROW + i] += buf[base + AI * ROW + i]
            for i in range(w):
                buf[AV * ROW + i] += extra[i]
    for j in range(n_comp):
        base = j * RS
        for i in range(w):
            OV[lo + i, j] = buf[base + AV * ROW + i]
            OC[0, lo + i, j] = buf[base + G0 * ROW + i]
            OC[1, lo + i, j] = buf[base + G1 * ROW + i]
            if not i_rows:
                OI[0, lo + i, j] = buf[base + AIS * ROW + i]
        for k in range(N_STATES):
            for i in range(w):
                OS[k, lo + i, j] = buf[base + (AS + k) * ROW + i]
        for k in range(N_PARAMS):
            for i in range(w):
                OP[k, lo + i, j] = buf[base + (AP + k) * ROW + i]


def cadj_kernel(CK, CNT, P, I, i_rows, parent, CPL, GV, GS, GREC, GT, REC, seg_len,
                n_steps, record_every, thr, max_spikes, dt, OV, OS, OP, OI, OC):
    n_blocks = (P.shape[1] + BLOCK - 1) // BLOCK
    for blk in prange(n_blocks):
        cadj_block(blk * BLOCK, CK, CNT, P, I, i_rows, parent, CPL, GV, GS, GREC, GT, REC,
                   seg_len, n_steps, record_every, thr, max_spikes, dt, OV, OS, OP, OI, OC)
'''


def _cable_layout(cs: ChannelSet, block: int = CABLE_BLOCK, shared: bool = False
                  ) -> dict[str, int]:
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    lay = {"BLOCK": block, "ROW": block + ROW_PAD, "N_STATES": n_states,
           "N_PARAMS": n_params, "X_ROWS": 1 + n_states}
    names = ["II", "P0", "D", "B", "C0", "C1", "AX", "XR", "V1", "AV", "AS", "AP", "AI",
             "AIS", "G0", "G1"]
    sizes = {"P0": n_params, "AS": n_states, "AP": n_params}
    row = 1 + n_states  # rows 0 .. n_states: v and the states
    lay["S0"] = 1
    for name in names:
        lay[name] = row
        row += sizes.get(name, 1)
    lay["NR"] = row  # then the forward re-run's spill rows (place_spill)
    return place_spill(lay, cable_spill_rows(cs, CABLE_STAGES, lay), shared)


def cable_generated_source(cs: ChannelSet, block: int = CABLE_BLOCK, shared: bool = False
                           ) -> tuple[str, dict[str, float]]:
    """The cable adjoint kernel's source and its constants.

    Its forward re-run is the forward kernel's step (:func:`cpu.ion.cable_step_loops`, the
    same loops, so it follows the forward's trajectory); the local adjoint of a compartment is
    :func:`fusekit.ops.ion_symbolic.cable_adjoint_step_source`.
    """
    from ...ops.ion_symbolic import cable_adjoint_step_source

    lay = _cable_layout(cs, block, shared)
    n_states, n_params = lay["N_STATES"], lay["N_PARAMS"]
    ind = " " * 24

    def row(r: int) -> str:
        return f"buf[base + {r} * ROW + i]"

    fwd_step, _, fwd_consts = cable_step_loops(cs, CABLE_STAGES, lay, prefix="f",
                                               const_prefix="KF", indent=" " * 16)
    state_loads = [f"{ind}s{k} = {row(1 + k)}" for k in range(n_states)]
    param_loads = [f"{ind}p{i} = {row(lay['P0'] + i)}" for i in range(n_params)]
    adj_body, consts, rows = cable_adjoint_step_source(cs, ind)
    adj_loads = state_loads + param_loads
    adj_loads += [f"{ind}as{k}_n = {row(lay['AS'] + k)}" for k in range(n_states)]
    # ``av`` is the adjoint row's name in the template: the emitted local av becomes av_.
    adj_body = [re.sub(r"^(\s*)av = ", r"\1av_ = ", line) for line in adj_body]
    junction_adj = [ind + re.sub(r"^av = ", "av_ = ", line)
                    for line in junction_adjoint_lines(rows, n_states)]
    adj_stores = [f"{ind}{row(lay['AV'])} = av_"]
    adj_stores += [f"{ind}{row(lay['AS'] + k)} = as{k}" for k in range(n_states)]
    adj_stores += [f"{ind}{row(lay['AP'] + i)} += ap{i}" for i in rows]
    adj_stores.append(f"{ind}{row(lay['AI'])} = ai")
    text = _CABLE_TEMPLATE.format(
        fwd_step=unless_junction(fwd_step, " " * 16), adj_loads="\n".join(adj_loads),
        adj_body="\n".join(adj_body), adj_stores="\n".join(adj_stores),
        junction_adj="\n".join(junction_adj),
        solve=hines_block_source(" " * 12, "C1", "C0", "0"),
        solve_t=hines_block_source(" " * 12, "C0", "C1", "XR"))
    return text, {**consts, **fwd_consts}


_cable_kernels: dict[tuple[str, str, int, bool], Any] = {}


def cable_kernel_for(cs: ChannelSet, dtype: str, n_comp: int = 1,
                     n_cells: int | None = None) -> Any:
    """The compiled cable adjoint kernel for ``cs``, ``dtype``, ``n_comp`` and ``n_cells``.

    Cells of ``n_comp`` compartments in blocks of ``cpu.ion.cable_block_for`` cells,
    narrowed for ``n_cells`` by ``cpu.ion.cells_block`` as the forward's (generated on first
    use).
    """
    lay = _cable_layout(cs, shared=True)
    block, shared = cable_block_for(n_comp, lay["NR"], lay["N_SPILL"], np.dtype(dtype).itemsize,
                                    n_cells=n_cells)
    key = (cs.key, dtype, block, shared)
    compiled = _cable_kernels.get(key)
    if compiled is None:
        text, consts = cable_generated_source(cs, block, shared)
        scalar = np.dtype(dtype).type
        extra = {**graph_math(dtype), **{k: scalar(v) for k, v in consts.items()},
                 **_cable_layout(cs, block, shared)}
        configure()
        import numba

        compiled = _compile_generated(block_kind("cadj", block, shared), cs, dtype, text,
                                      {"np": np, "prange": numba.prange,
                                       "DTYPE": np.dtype(dtype), **extra},
                                      "cadj_block", "cadj_kernel")
        _cable_kernels[key] = compiled
    return compiled


@register_kernel(adj.cable_adjoint_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def cable_adjoint_cpu(
    checkpoints: np.ndarray, counts_at: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    parent: np.ndarray, coupling: np.ndarray, g_v: np.ndarray, g_states: np.ndarray,
    g_v_record: np.ndarray, g_spike_times: np.ndarray, *, channels: Any, dt: float,
    n_steps: int, segment: int, record_every: int = 0, spike_threshold: float = 0.0,
    max_spikes: int = 0, record_at: Any = None,
) -> tuple[np.ndarray, ...]:
    """The whole cable backward in one parallel Numba call, cells in SIMD blocks."""
    from ...ops.ion import record_columns

    cs = channel_set(channels)
    dtype = params.dtype
    scalar = dtype.type
    n_states = len(cs.state_names)
    n_cells, n_comp = params.shape[1:]
    c = np.ascontiguousarray
    constant = i_ext.ndim == 2
    I_ext = c(i_ext).reshape((1, n_cells, n_comp) if constant else i_ext.shape)
    OV = np.array(g_v, dtype=dtype)
    OS = np.array(g_states, dtype=dtype).reshape(n_states, n_cells, n_comp)
    OP = np.zeros(params.shape, dtype=dtype)
    OI = np.zeros(I_ext.shape, dtype=dtype)
    OC = np.zeros(coupling.shape, dtype=dtype)
    if n_cells and checkpoints.shape[0]:
        cable_kernel_for(cs, dtype.name, n_comp, n_cells)(
            c(checkpoints), c(counts_at), c(params), I_ext, 0 if constant else 1,
            c(parent, dtype=np.int64), c(coupling), c(g_v), c(g_states), c(g_v_record),
            c(g_spike_times), record_columns(record_at, n_comp), int(segment), int(n_steps),
            int(record_every),
            scalar(spike_threshold), int(max_spikes), scalar(dt), OV, OS, OP, OI, OC)
    return OV, OS, OP, OI.reshape(i_ext.shape), OC
