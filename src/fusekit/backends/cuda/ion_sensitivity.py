"""CUDA kernel of ion_sensitivity: the ion kernel with the tangents in registers too.

One thread per neuron, every step of the call in one launch, like ``cuda/ion.py``'s
``ion_kernel``; the thread also keeps ``d v / d theta`` and ``d states / d theta`` for each
``wrt`` direction in registers. The step and its tangents are the generated straight-line
block of :func:`fusekit.ops.ion_symbolic.tangent_step_source`, run with ``cuda/ion.py``'s
device math (``EXP``, ``VTRAP``, ``VTRAP_DX``, ...). A kernel is compiled per
``(channel set, wrt names, dtype)`` and cached in the process (``cuda/ion.py``'s cache).

:func:`ion_sensitivity_launch` takes Numba device arrays (or host NumPy arrays) and needs no
CuPy, so the simulator tests call it; the registered kernel wraps it for CuPy arrays on
CuPy's current stream (checked on an H200 by benchmarks/gpu/run_gpu_checks.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from ..._registry import register_kernel
from ...ops import ion_forward as sens
from ...ops.ion_channel import ChannelSet, channel_set
from ...ops.ion_symbolic import tangent_step_source
from ._device import cupy_stream, output, to_device
from .ion import THREADS, _generated_kernel, kernel_text

_FLOATS = ("float32", "float64")

def generated_source(cs: ChannelSet, wrt: tuple[str, ...]) -> tuple[str, dict[str, float]]:
    """The Python source of the CUDA sensitivity kernel and its constants (for reading)."""
    n_states = len(cs.state_names)
    body, consts = tangent_step_source(cs, wrt, " " * 8)
    loads: list[str] = []
    stores: list[str] = []
    saves, spike_tangents, records = [], [], []
    for d in range(len(wrt)):
        loads.append(f"    dv_{d} = DV[{d}, j]")
        loads += [f"    ds{k}_{d} = DS[{d}, {k}, j]" for k in range(n_states)]
        stores.append(f"    DV[{d}, j] = dv_{d}")
        stores += [f"    DS[{d}, {k}, j] = ds{k}_{d}" for k in range(n_states)]
        saves.append(f"        dv_old_{d} = dv_{d}")
        # ops.ion_sensitivity's spike-time tangent: -dt ((1 - f) dv_k + f dv_{k+1}) / den.
        spike_tangents.append(f"                DTIMES[c, {d}, j] = -dt * ((ONE - f) * "
                              f"dv_old_{d} + f * dv_{d}) / den")
        records.append(f"            DV_rec[r, {d}, j] = dv_{d}")
    text = kernel_text(
        cs, body, loads, stores, tangents="DV, DS, ", tangent_records="DV_rec, ",
        tangent_times=", DTIMES", saves="\n".join(saves),
        spike_tangents="\n".join(spike_tangents), records="\n".join(records))
    return text, consts


def kernel_for(cs: ChannelSet, wrt: tuple[str, ...], dtype: str) -> Any:
    """The CUDA sensitivity kernel for ``cs``, ``wrt`` and ``dtype`` (compiled lazily)."""
    wrt = tuple(wrt)
    return _generated_kernel(f"ion_sensitivity wrt {','.join(wrt)}", cs, dtype,
                             lambda: generated_source(cs, wrt), "ion_kernel")


def ion_sensitivity_launch(
    V: Any, S: Any, P: Any, I_ext: Any, DV: Any, DS: Any, V_rec: Any, DV_rec: Any,
    counts: Any, times: Any, dtimes: Any, *, channels: Any, dt: float, n_steps: int,
    wrt: tuple[str, ...], record_every: int = 0, spike_threshold: float = 0.0,
    max_spikes: int = 0, stream: Any = 0,
) -> None:
    """Run the simulation and its tangents in place on device arrays.

    The arguments of :func:`fusekit.backends.cuda.ion.ion_simulate_launch`, and for the ``d``
    directions of ``wrt`` (parameter names and/or ``"i_ext"``): ``DV`` ``(d, n)`` and ``DS``
    ``(d, n_states or 1, n)`` tangents of the potential and states (updated in place),
    ``DV_rec`` ``(n_rec, d, n)`` and ``dtimes`` ``(max_spikes, d, n)`` outputs (``dtimes``
    NaN-filled beforehand, like ``times``).
    """
    cs = channel_set(channels)
    n = V.shape[0]
    if n == 0 or n_steps == 0:
        return
    dtype = np.dtype(V.dtype)
    scalar = dtype.type
    kernel = kernel_for(cs, tuple(wrt), dtype.name)
    kernel[-(-n // THREADS), THREADS, stream](
        V, S, P, I_ext, 1 if I_ext.shape[0] > 1 else 0, DV, DS, scalar(dt), n_steps,
        record_every, scalar(spike_threshold), max_spikes, V_rec, DV_rec, counts, times,
        dtimes,
    )


@register_kernel(sens.ion_sensitivity_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def ion_sensitivity_cuda(
    v0: Any, states0: Any, params: Any, i_ext: Any, dv0: Any, dstates0: Any, *,
    channels: Any, dt: float, n_steps: int, wrt: tuple[str, ...], record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0,
) -> tuple[Any, ...]:
    """All ``n_steps`` with their tangents in one launch, one thread per neuron."""
    import cupy

    cs = channel_set(channels)
    wrt = tuple(wrt)
    n, d = v0.shape[0], len(wrt)
    dtype = v0.dtype
    with v0.device, cuda.gpus[v0.device.id]:
        stream = cupy_stream(cupy)
        V = cupy.array(v0, dtype=dtype, order="C")
        S = cupy.array(states0, dtype=dtype, order="C")
        DV = cupy.array(dv0, dtype=dtype, order="C")
        DS = cupy.array(dstates0, dtype=dtype, order="C")
        n_rec = n_steps // record_every if record_every else 0
        V_rec = cupy.empty((n_rec, n), dtype=dtype)
        DV_rec = cupy.empty((n_rec, d, n), dtype=dtype)
        counts = cupy.zeros(n, dtype=cupy.int64)
        times = cupy.full((max_spikes, n), cupy.nan, dtype=dtype)
        dtimes = cupy.full((max_spikes, d, n), cupy.nan, dtype=dtype)
        I_ext = cupy.ascontiguousarray(i_ext).reshape(i_ext.shape if i_ext.ndim == 2 else (1, n))
        inputs = [("V", V), ("S", S if S.shape[0] else cupy.zeros((1, n), dtype=dtype)),
                  ("P", cupy.ascontiguousarray(params)), ("I_ext", I_ext), ("DV", DV),
                  ("DS", DS if DS.shape[1] else cupy.zeros((d, 1, n), dtype=dtype))]
        ion_sensitivity_launch(
            *(to_device(name, a, stream) for name, a in inputs),
            *(output(name, a, a.shape, stream)[0] for name, a in (
                ("V_rec", V_rec), ("DV_rec", DV_rec), ("counts", counts), ("times", times),
                ("dtimes", dtimes))),
            channels=cs, dt=dt, n_steps=n_steps, wrt=wrt, record_every=record_every,
            spike_threshold=spike_threshold, max_spikes=max_spikes, stream=stream,
        )
    return V, S, V_rec, counts, times, DV, DS, DV_rec, dtimes
