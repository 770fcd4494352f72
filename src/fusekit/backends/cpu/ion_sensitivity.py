"""CPU kernel of ion_sensitivity: the ion kernel's structure with tangent rows per neuron.

The same blocks of ``NEURON_BLOCK`` neurons as ``cpu/ion.py`` (threads own blocks for all
steps; one flat scratch array per block, so LLVM vectorises the loop over its neurons), with
the potential's and states' tangents in more rows of the scratch array. The step and its
tangents are one generated, straight-line block of arithmetic
(:func:`fusekit.ops.ion_symbolic.tangent_step_source`); a kernel is compiled per
``(channel set, wrt names, dtype)`` and cached on disk like the ion kernels.

The step divides by each gate's rate sum twice (its steady state, then that state's
derivative): with ``share_recip`` each such denominator is divided once, as a reciprocal
(HH: 5 divisions a step in place of 10; 1.06-1.10x faster on Zen 1, float64, one thread).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..._registry import register_kernel
from ...ops import ion_forward as sens
from ...ops.ion_channel import ChannelSet, channel_set
from ...ops.ion_symbolic import tangent_step_source
from ._numba import configure
from .ion import (
    NEURON_BLOCK,
    ROW_PAD,
    _compile_generated,
    _parse_lines,
    graph_math,
    hoist_invariants,
    neuron_width,
    spikes_source,
    staged_loops,
)

_FLOATS = ("float32", "float64")

_TEMPLATE = '''
def sens_block(lo, width, V, S, P, I, i_rows, DV, DS, dt, n_steps, record_every, thr,
               max_spikes, V_rec, DV_rec, counts, times, DTIMES):
    w = min(width, V.shape[0] - lo)
    # Rows of ROW values (BLOCK and a pad): v, v before the step, i_ext, states, params,
    # then per direction d: dv_d, dv_d before the step, and the states' tangents; then the
    # values carried between the stages of a step.
    buf = np.empty({n_rows} * ROW, dtype=DTYPE)
    for j in range(w):
        buf[j] = V[lo + j]
        buf[2 * ROW + j] = I[0, lo + j]
    for k in range(N_STATES):
        for j in range(w):
            buf[(3 + k) * ROW + j] = S[k, lo + j]
    for k in range(N_PARAMS):
        for j in range(w):
            buf[(3 + N_STATES + k) * ROW + j] = P[k, lo + j]
    for d in range(N_DIR):
        for j in range(w):
            buf[(T0 + d * T_ROWS) * ROW + j] = DV[d, lo + j]
        for k in range(N_STATES):
            for j in range(w):
                buf[(T0 + d * T_ROWS + 2 + k) * ROW + j] = DS[d, k, lo + j]
{prelude}
    for step in range(n_steps):
        if i_rows:
            for j in range(w):
                buf[2 * ROW + j] = I[step, lo + j]
{step}
{spikes}
        if record_every > 0 and (step + 1) % record_every == 0:
            r = (step + 1) // record_every - 1
            for j in range(w):
                V_rec[r, lo + j] = buf[j]
            for d in range(N_DIR):
                for j in range(w):
                    DV_rec[r, d, lo + j] = buf[(T0 + d * T_ROWS) * ROW + j]
    for j in range(w):
        V[lo + j] = buf[j]
    for k in range(N_STATES):
        for j in range(w):
            S[k, lo + j] = buf[(3 + k) * ROW + j]
    for d in range(N_DIR):
        for j in range(w):
            DV[d, lo + j] = buf[(T0 + d * T_ROWS) * ROW + j]
        for k in range(N_STATES):
            for j in range(w):
                DS[d, k, lo + j] = buf[(T0 + d * T_ROWS + 2 + k) * ROW + j]


def sens_kernel(V, S, P, I, i_rows, DV, DS, dt, n_steps, record_every, thr, max_spikes,
                V_rec, DV_rec, counts, times, DTIMES, width):
    n_blocks = (V.shape[0] + width - 1) // width
    for blk in prange(n_blocks):
        sens_block(blk * width, width, V, S, P, I, i_rows, DV, DS, dt, n_steps, record_every,
                   thr, max_spikes, V_rec, DV_rec, counts, times, DTIMES)
'''


def _layout(cs: ChannelSet, n_dir: int) -> dict[str, int]:
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    t0 = 3 + n_states + n_params
    t_rows = 2 + n_states
    return {"BLOCK": NEURON_BLOCK, "ROW": NEURON_BLOCK + ROW_PAD, "N_STATES": n_states,
            "N_PARAMS": n_params,
            "N_DIR": n_dir, "T0": t0, "T_ROWS": t_rows, "N_ROWS": t0 + n_dir * t_rows}


def _primal_names(body: list[str], n_states: int) -> set[str]:
    """The names that the new potential and states need (the rest are tangent lines)."""
    deps = {target: d for target, _, d in _parse_lines(body)
            if target.endswith("_n") or target[:1] == "t"}  # not the closing ``v = v_n``
    todo = ["v_n", *(f"s{k}_n" for k in range(n_states))]
    out: set[str] = set()
    while todo:
        name = todo.pop()
        if name in out or name not in deps:
            continue
        out.add(name)
        todo += deps[name]
    return out


def generated_source(cs: ChannelSet, wrt: tuple[str, ...]) -> tuple[str, dict[str, float]]:
    """The Python source of the sensitivity kernel and its constants (before compilation).

    The step's own lines are cut into stages as in the ion kernel
    (:func:`fusekit.backends.cpu.ion.staged_loops`); the tangent lines all go into the last
    stage, where they give the core independent work (cut by start time like the step, they
    ran slower).
    """
    lay = _layout(cs, len(wrt))
    body, consts = tangent_step_source(cs, wrt, "", share_exp=True, share_recip=True)
    primal = _primal_names(body, lay["N_STATES"])
    rows = {"v": 0, "i_inj": 2}
    rows.update({f"s{k}": 3 + k for k in range(lay["N_STATES"])})
    rows.update({f"p{k}": 3 + lay["N_STATES"] + k for k in range(lay["N_PARAMS"])})
    stores = [f"buf[{3 + k} * ROW + j] = s{k}" for k in range(lay["N_STATES"])]
    for d in range(len(wrt)):
        base = lay["T0"] + d * lay["T_ROWS"]
        rows[f"dv_{d}"] = base
        stores.append(f"buf[{base + 1} * ROW + j] = buf[{base} * ROW + j]")
        stores.append(f"buf[{base} * ROW + j] = dv_{d}")
        for k in range(lay["N_STATES"]):
            rows[f"ds{k}_{d}"] = base + 2 + k
            stores.append(f"buf[{base + 2 + k} * ROW + j] = ds{k}_{d}")
    stores += ["buf[ROW + j] = v_old", "buf[j] = v"]
    last = {line.split("=", 1)[0].strip() for line in body} - primal
    n_rows = len(rows)
    prelude, body, rows = hoist_invariants(body, rows, [f"p{k}" for k in range(lay["N_PARAMS"])],
                                           lay["N_ROWS"], " " * 4)
    fixed = lay["N_ROWS"] + len(rows) - n_rows
    step, n_spill = staged_loops(body, rows, fixed, None, " " * 8, ["v_old = buf[j]"],
                                 stores, last=last)
    spikes = spikes_source(in_slot=[
        "for d in range(N_DIR):",
        "    row = (T0 + d * T_ROWS) * ROW + j",
        "    dv_row = (ONE - f) * buf[row + ROW] + f * buf[row]",
        "    DTIMES[c, d, lo + j] = -dt * dv_row / (v - v_old)",
    ])
    text = _TEMPLATE.format(prelude=prelude, step=step, n_rows=fixed + n_spill, spikes=spikes)
    return text, consts


#: Neurons per block by dtype: float64 in blocks of 32 (the scratch rows of a block, about 80
#: with three directions, then fit L1 as float32's 64 do): 1.04x faster in float64 on Zen 1
#: (one thread, 4,096 neurons x 2,000 steps: 378-380 against 392-396 ms); float32 at 32 was
#: no faster (172-200 against 172-183 ms).
SENS_BLOCK = {"float32": NEURON_BLOCK, "float64": NEURON_BLOCK // 2}

_kernels: dict[tuple[str, tuple[str, ...], str], Any] = {}


def kernel_for(cs: ChannelSet, wrt: tuple[str, ...], dtype: str) -> Any:
    """The compiled sensitivity kernel for ``cs``, ``wrt`` and ``dtype`` (cached)."""
    key = (cs.key, wrt, dtype)
    compiled = _kernels.get(key)
    if compiled is not None:
        return compiled
    configure()
    import numba

    scalar = np.dtype(dtype).type
    text, consts = generated_source(cs, wrt)
    ns: dict[str, Any] = {
        "np": np, "prange": numba.prange, "DTYPE": np.dtype(dtype), **graph_math(dtype),
        **{k: scalar(c) for k, c in consts.items()}, **_layout(cs, len(wrt)),
    }
    tag = "sens_" + hashlib.sha1("|".join(wrt).encode()).hexdigest()[:8]  # one file per wrt
    _kernels[key] = compiled = _compile_generated(tag, cs, dtype, text, ns, "sens_block",
                                                  "sens_kernel")
    return compiled


@register_kernel(sens.ion_sensitivity_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def ion_sensitivity_cpu(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    dv0: np.ndarray, dstates0: np.ndarray, *, channels: Any, dt: float, n_steps: int,
    wrt: tuple[str, ...], record_every: int = 0, spike_threshold: float = 0.0,
    max_spikes: int = 0,
) -> tuple[np.ndarray, ...]:
    """All ``n_steps`` with their tangents in one parallel Numba call, neurons in blocks."""
    cs = channel_set(channels)
    wrt = tuple(wrt)
    dtype = v0.dtype
    scalar = dtype.type
    n, n_states, d = v0.shape[0], len(cs.state_names), len(wrt)
    V = np.array(v0, dtype=dtype, order="C")
    S = np.array(states0, dtype=dtype, order="C")
    DV = np.array(dv0, dtype=dtype, order="C")
    DS = np.array(dstates0, dtype=dtype, order="C")
    P = np.ascontiguousarray(params)
    I_ext = np.ascontiguousarray(i_ext).reshape(i_ext.shape if i_ext.ndim == 2 else (1, n))
    n_rec = n_steps // record_every if record_every else 0
    V_rec = np.empty((n_rec, n), dtype=dtype)
    DV_rec = np.empty((n_rec, d, n), dtype=dtype)
    counts = np.zeros(n, dtype=np.int64)
    times = np.full((max_spikes, n), np.nan, dtype=dtype)
    dtimes = np.full((max_spikes, d, n), np.nan, dtype=dtype)
    if n and n_steps:
        kernel_for(cs, wrt, dtype.name)(
            V, S if n_states else np.zeros((1, n), dtype), P, I_ext,
            1 if I_ext.shape[0] > 1 else 0, DV,
            DS if n_states else np.zeros((d, 1, n), dtype), scalar(dt), n_steps, record_every,
            scalar(spike_threshold), max_spikes, V_rec, DV_rec, counts, times, dtimes,
            neuron_width(n, SENS_BLOCK[dtype.name]),
        )
    return V, S, V_rec, counts, times, DV, DS, DV_rec, dtimes
