"""CPU kernel of networks of multi-compartment cells (``cable_network_simulate``).

The vectorised cable kernel (cells in SIMD blocks, ``cpu.ion``'s ``_CABLE_BLOCK_TEMPLATE``)
run in windows of ``delay_steps`` steps, as the single-compartment network kernel: the blocks
of cells in parallel for a window (no synchronisation inside it: a spike needs the delay to
reach anyone), then the window's spikes delivered, each step offset of the window in
parallel into its own row of arrivals. Per compartment and step, every synapse type's
conductance decays, takes its arrivals and joins the compartment's row of the Hines system.
Arrivals are kept as ``(delay_steps, n_types, n_comp * n_cells)``, compartment-major, so a
block reads a compartment's arrivals for its cells contiguously.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._registry import register_kernel
from ...ops import ion
from ...ops import ion_cable_network as icn
from ...ops.ion_channel import ChannelSet, channel_set, step_source
from .ion import (
    _FLOATS,
    CABLE_BLOCK,
    CABLE_STAGES,
    _cable_block_layout,
    _generated_kernel,
    _kernels,
    block_kind,
    cable_block_for,
    cable_block_text,
    cable_step_loops,
    deliver_source,
    graph_math,
)

#: Lines of the block function that load every synapse type's conductances of the block
#: (``G``: a row of ``ROW`` values per type and compartment), add them per compartment and
#: step into the Hines row, mark the cells that spiked, and store the conductances back.
_SYN_LOAD = """    n_types = GS.shape[0]
    n_cells = V.shape[0]
    G = np.empty(n_types * n_comp * ROW, dtype=DTYPE)
    for t in range(n_types):
        for j in range(n_comp):
            for i in range(w):
                G[(t * n_comp + j) * ROW + i] = GS[t, lo + i, j]
    for s in range(n_steps - w0):
        for i in range(w):
            SPIKED[s, lo + i] = 0"""

_SYN_STEP = """            s = step - w0
            for t in range(n_types):
                decay = syn_decay[t]
                e_rev = e_syn[t]
                grow = (t * n_comp + j) * ROW
                inc = j * n_cells + lo
                for i in range(w):
                    g = G[grow + i] * decay + INC[s, t, inc + i]
                    G[grow + i] = g
                    buf[base + D * ROW + i] += g
                    buf[base + B * ROW + i] += g * e_rev"""

_ON_SPIKE = "                    SPIKED[step - w0, lo + i] = 1"

_SYN_STORE = """    for t in range(n_types):
        for j in range(n_comp):
            for i in range(w):
                GS[t, lo + i, j] = G[(t * n_comp + j) * ROW + i]"""

_DRIVER = '''
def cable_net_kernel(V, S, P, I, i_rows, parent, CPL, GS, INC, SPIKED, syn_decay, e_syn,
                     indptr, indices, weights, types, dt, n_steps, delay, record_every, thr,
                     max_spikes, V_rec, counts, times, REC):
    n = V.shape[0]
    n_blocks = (n + BLOCK - 1) // BLOCK
    for w0 in range(0, n_steps, delay):
        w_len = min(delay, n_steps - w0)
        for blk in prange(n_blocks):
            cable_net_block(blk * BLOCK, V, S, P, I, i_rows, parent, CPL, GS, INC, SPIKED,
                            syn_decay, e_syn, w0, dt, w0 + w_len, record_every, thr,
                            max_spikes, V_rec, counts, times, REC)
{deliver}
'''

#: A compartment's step in one loop that calls the compiled channel functions, for channels
#: that cannot be traced (``step_source``); the traced ones get ``cable_step_loops``.
_ONE_LOOP = """            for i in range(w):
                v = buf[base + i]
                i_inj = buf[base + II * ROW + i]
{loads}
{body}
{stores}
                buf[base + D * ROW + i] = p0 / dt + g_sum + buf[base + AX * ROW + i]
                buf[base + B * ROW + i] = p0 / dt * v + ge_sum + i_inj"""


def cable_network_source(cs: ChannelSet, block: int = CABLE_BLOCK, shared: bool = False
                         ) -> tuple[str, dict[str, int], dict[str, float]]:
    """The kernel's source, its row layout and constants (the source is for reading too).

    Traceable channels get the staged vector loops of the plain cable kernel
    (:func:`cpu.ion.cable_step_loops`), the others one loop over the block's cells that
    calls their compiled functions. ``block``: cells per block; ``shared``: the spill rows
    shared by the compartments (``cpu.ion.place_spill``).
    """
    from ...ops.ion_symbolic import is_traceable

    if is_traceable(cs):
        lay = _cable_block_layout(cs, CABLE_STAGES, block=block, shared=shared)
        step, _, consts = cable_step_loops(cs, CABLE_STAGES, lay)
    else:
        lay = _cable_block_layout(cs, traced=False, block=block)
        ind = " " * 16
        body, _ = step_source(cs, ind, voltage=False)
        n_states, n_params = len(cs.state_names), len(cs.param_names)
        loads = [f"{ind}s{k} = buf[base + {lay['S0'] + k} * ROW + i]" for k in range(n_states)]
        loads += [f"{ind}p{k} = buf[base + {lay['P0'] + k} * ROW + i]"
                  for k in range(n_params)]
        stores = [f"{ind}buf[base + {lay['S0'] + k} * ROW + i] = s{k}" for k in range(n_states)]
        step = _ONE_LOOP.format(loads="\n".join(loads), body="\n".join(body),
                                stores="\n".join(stores) or f"{ind}pass")
        consts = {}
    text = cable_block_text(step, "cable_net_block", "GS, INC, SPIKED, syn_decay, e_syn, w0, ",
                            "w0", syn_load=_SYN_LOAD, syn_step=_SYN_STEP, on_spike=_ON_SPIKE,
                            syn_store=_SYN_STORE)
    return text + _DRIVER.format(deliver=deliver_source(" " * 8)), lay, consts


def kernel_for(cs: ChannelSet, dtype: str, n_comp: int = 1, n_types: int = 1,
               n_cells: int | None = None) -> Any:
    """The compiled kernel for ``cs``, ``dtype``, ``n_comp`` and ``n_cells``.

    One per process and block size (cells of ``n_comp`` compartments; the block narrowed
    for ``n_cells`` by ``cpu.ion.cells_block``), cached on disk.
    """
    from ...ops.ion_symbolic import is_traceable

    lay = _cable_block_layout(cs, CABLE_STAGES, traced=is_traceable(cs), shared=True)
    block, shared = cable_block_for(n_comp, lay["NR"] + n_types, lay["N_SPILL"],  # synapses
                                    np.dtype(dtype).itemsize, n_cells=n_cells)
    kind = block_kind("cable_network", block, shared)
    compiled = _kernels.get((kind, cs.key, dtype))
    if compiled is not None:
        return compiled
    text, lay, consts = cable_network_source(cs, block, shared)
    scalar = np.dtype(dtype).type
    extra = {**lay, **graph_math(dtype), **{k: scalar(c) for k, c in consts.items()}}
    return _generated_kernel(kind, cs, dtype, lambda: text, "cable_net_block",
                             "cable_net_kernel", extra, voltage=False)


@register_kernel(icn.cable_network_simulate_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def cable_network_simulate_cpu(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    parent: np.ndarray, coupling: np.ndarray, g_syn0: np.ndarray, indptr: np.ndarray,
    indices: np.ndarray, weights: np.ndarray, arrivals0: np.ndarray, synapse_type: np.ndarray,
    synapse_compartment: np.ndarray, *, channels: Any, dt: float, n_steps: int,
    delay_steps: int, tau_syn: tuple[float, ...], e_syn: tuple[float, ...],
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
    record_at: Any = None,
) -> tuple[np.ndarray, ...]:
    """Blocks of cells in parallel for ``delay_steps`` steps, then the spikes delivered."""
    cs = channel_set(channels)
    dtype = v0.dtype
    scalar = dtype.type
    n_cells, n_comp = v0.shape
    n_types = g_syn0.shape[0]
    cols = ion.record_columns(record_at, n_comp)
    V, S, V_rec, counts, times = ion.kernel_outputs(np, v0, states0, n_steps, record_every,
                                                    max_spikes, cols.shape[0])
    GS = np.array(g_syn0, dtype=dtype, order="C")
    I_ext = np.ascontiguousarray(i_ext).reshape(
        i_ext.shape if i_ext.ndim == 3 else (1, n_cells, n_comp))
    # arrivals compartment-major: (delay, n_types, n_comp * n_cells)
    INC = np.ascontiguousarray(np.asarray(arrivals0, dtype=dtype).transpose(0, 1, 3, 2)
                               ).reshape(delay_steps, n_types, n_comp * n_cells)
    if n_cells and n_steps:
        targets = icn.synapse_targets(np.asarray(indices, np.int64),
                                      np.asarray(synapse_compartment, np.int64), n_cells,
                                      n_comp, cell_major=False)
        kernel_for(cs, dtype.name, n_comp, n_types, n_cells)(
            V, S if S.shape[0] else np.zeros((1, n_cells, n_comp), dtype),
            np.ascontiguousarray(params), I_ext, 1 if i_ext.ndim == 3 else 0,
            np.ascontiguousarray(parent, dtype=np.int64), np.ascontiguousarray(coupling), GS,
            INC, np.zeros((delay_steps, n_cells), np.uint8),
            np.array(ion.synapse_decays(dt, tau_syn), dtype=dtype),
            np.array(e_syn, dtype=dtype), np.ascontiguousarray(indptr, np.int64),
            np.ascontiguousarray(targets), np.ascontiguousarray(weights),
            np.ascontiguousarray(synapse_type, np.int64), scalar(dt), n_steps, delay_steps,
            record_every, scalar(spike_threshold), max_spikes, V_rec, counts, times, cols,
        )
    arrivals = INC.reshape(delay_steps, n_types, n_comp, n_cells).transpose(0, 1, 3, 2)
    arrivals = np.ascontiguousarray(arrivals[(n_steps + np.arange(delay_steps)) % delay_steps])
    return V, S, GS, V_rec, counts, times, arrivals
