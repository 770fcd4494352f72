"""CUDA kernels of networks of multi-compartment cells (``cable_network_simulate``).

One thread per cell runs a window of ``delay_steps`` steps of the cable kernel
(``cuda.ion``'s ``_CABLE_TEMPLATE``) with every compartment's synaptic conductances added to
its row of the Hines system; then the network's delivery kernel (``cuda.ion._deliver``, one
thread per presynaptic cell, atomic adds) puts the window's spikes into the arrivals, which
here are indexed by ``cell * n_comp + compartment``. Tested in the Numba CUDA simulator; not
yet run on a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from ..._registry import register_kernel
from ...ops import ion
from ...ops import ion_cable_network as icn
from ...ops.ion_channel import ChannelSet, channel_set
from ._device import cupy_stream, to_device
from .ion import _FLOATS, THREADS, _deliver, _generated_kernel, cable_source

#: Per step, before the solve: each compartment's conductance of each synapse type decays
#: and takes the step's arrivals (read once, zeroed for the delivery of the next window).
_SYN_STEP = """        s = step - w0
        SPIKED[s, c] = 0
        for j in range(n_comp):
            for t in range(GS.shape[0]):
                g = GS[t, c, j] * SYN[0, t] + INC[s, t, c * n_comp + j]
                INC[s, t, c * n_comp + j] = 0
                GS[t, c, j] = g
                D[c, j] += g
                B[c, j] += g * SYN[1, t]"""

_ON_SPIKE = "            SPIKED[step - w0, c] = 1"


def cable_network_source(cs: ChannelSet) -> str:
    """The Python source of the CUDA window kernel for ``cs`` (for reading)."""
    return cable_source(cs, "cable_net_window", "GS, INC, SPIKED, SYN, w0, ", "w0",
                        _SYN_STEP, _ON_SPIKE)


def kernel_for(cs: ChannelSet, dtype: str) -> Any:
    """The CUDA window kernel for ``cs`` and ``dtype`` (compiled lazily)."""
    return _generated_kernel("cable_network", cs, dtype, lambda: cable_network_source(cs),
                             "cable_net_window", voltage=False)


def cable_network_simulate_launch(
    V: Any, S: Any, P: Any, I_ext: Any, parent: Any, coupling: Any, GS: Any, indptr: Any,
    targets: Any, weights: Any, types: Any, V_rec: Any, counts: Any, times: Any, INC: Any,
    SPIKED: Any, SYN: Any, D: Any, B: Any, REC: Any, *, channels: Any, dt: float,
    n_steps: int, delay_steps: int, record_every: int = 0, spike_threshold: float = 0.0,
    max_spikes: int = 0, stream: Any = 0,
) -> None:
    """Run :func:`fusekit.ops.cable_network_simulate` in place on device arrays.

    One launch per window of ``delay_steps`` steps (one thread per cell), then one delivery
    launch. ``GS`` ``(n_types, n_cells, n_comp)``; ``targets`` every synapse's
    ``cell * n_comp + compartment``; ``INC`` ``(delay_steps, n_types, n_cells * n_comp)``
    the arrivals at steps ``0 .. delay_steps - 1`` (afterwards row ``(n_steps + x) %
    delay_steps`` holds those at step ``n_steps + x``); ``SYN`` ``(2, n_types)`` each
    type's decay per step and reversal; ``SPIKED`` a ``(delay_steps, n_cells)`` uint8
    workspace; ``D``, ``B`` ``(n_cells, n_comp)`` workspaces; ``REC`` the recorded
    compartments; ``times`` NaN-filled, ``counts`` zero.
    """
    cs = channel_set(channels)
    n_cells = V.shape[0]
    if n_cells == 0 or n_steps == 0:
        return
    scalar = np.dtype(V.dtype).type
    window = kernel_for(cs, np.dtype(V.dtype).name)
    blocks = -(-n_cells // THREADS)
    i_rows = 1 if I_ext.shape[0] > 1 else 0
    for w0 in range(0, n_steps, delay_steps):
        w_end = min(w0 + delay_steps, n_steps)
        window[blocks, THREADS, stream](
            V, S, P, I_ext, i_rows, parent, coupling, GS, INC, SPIKED, SYN, w0, scalar(dt),
            w_end, record_every, scalar(spike_threshold), max_spikes, V_rec, counts, times,
            D, B, REC,
        )
        _deliver[blocks, THREADS, stream](SPIKED, w_end - w0, indptr, targets, weights,
                                          types, INC)


@register_kernel(icn.cable_network_simulate_op, backend="cuda", arrays=["cupy"],
                 dtypes=_FLOATS)
def cable_network_simulate_cuda(
    v0: Any, states0: Any, params: Any, i_ext: Any, parent: Any, coupling: Any, g_syn0: Any,
    indptr: Any, indices: Any, weights: Any, arrivals0: Any, synapse_type: Any,
    synapse_compartment: Any, *, channels: Any, dt: float, n_steps: int, delay_steps: int,
    tau_syn: tuple[float, ...], e_syn: tuple[float, ...], record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, record_at: Any = None,
) -> tuple[Any, ...]:
    """Windows of ``delay_steps`` steps per launch, spikes delivered between windows."""
    import cupy

    n_cells, n_comp = v0.shape
    n_types = g_syn0.shape[0]
    dtype = v0.dtype
    cols = ion.record_columns(record_at, n_comp)
    with v0.device, cuda.gpus[v0.device.id]:
        stream = cupy_stream(cupy)
        V, S, V_rec, counts, times = ion.kernel_outputs(cupy, v0, states0, n_steps,
                                                        record_every, max_spikes, cols.shape[0])
        GS = cupy.array(g_syn0, dtype=dtype, order="C")
        INC = cupy.array(arrivals0, dtype=dtype, order="C").reshape(
            delay_steps, n_types, n_cells * n_comp)
        targets = icn.synapse_targets(cupy.asarray(indices, dtype=cupy.int64),
                                      cupy.asarray(synapse_compartment, dtype=cupy.int64),
                                      n_cells, n_comp)
        arrays = [
            ("V", V), ("S", S if S.shape[0] else cupy.zeros((1, n_cells, n_comp), dtype)),
            ("P", cupy.ascontiguousarray(params)),
            ("I_ext", cupy.ascontiguousarray(i_ext).reshape(
                i_ext.shape if i_ext.ndim == 3 else (1, n_cells, n_comp))),
            ("parent", cupy.asarray(parent, dtype=cupy.int64)),
            ("coupling", cupy.ascontiguousarray(coupling)), ("GS", GS),
            ("indptr", cupy.asarray(indptr, dtype=cupy.int64)), ("targets", targets),
            ("weights", cupy.ascontiguousarray(weights)),
            ("types", cupy.asarray(synapse_type, dtype=cupy.int64)), ("V_rec", V_rec),
            ("counts", counts), ("times", times), ("INC", INC),
            ("SPIKED", cupy.zeros((delay_steps, n_cells), dtype=cupy.uint8)),
            ("SYN", cupy.asarray([ion.synapse_decays(dt, tau_syn), e_syn], dtype=dtype)),
            ("D", cupy.empty((n_cells, n_comp), dtype=dtype)),
            ("B", cupy.empty((n_cells, n_comp), dtype=dtype)), ("REC", cupy.asarray(cols)),
        ]
        cable_network_simulate_launch(
            *(to_device(name, a, stream) for name, a in arrays), channels=channels, dt=dt,
            n_steps=n_steps, delay_steps=delay_steps, record_every=record_every,
            spike_threshold=spike_threshold, max_spikes=max_spikes, stream=stream,
        )
        arrivals = INC.reshape(delay_steps, n_types, n_cells, n_comp)[
            (n_steps + cupy.arange(delay_steps)) % delay_steps]
    return V, S, GS, V_rec, counts, times, arrivals
