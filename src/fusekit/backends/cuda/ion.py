"""CUDA kernels of the ion family: one generated Numba CUDA kernel per channel set and dtype.

One thread per neuron keeps its potential, states and parameters in registers and runs every
time step of the call in one launch (no synchronisation between steps: neurons are
independent). The step is the same generated source as the CPU kernel's
(``ops.ion_channel.step_source``), with the device's ``exp``.

:func:`ion_simulate_launch` takes Numba device arrays (or host NumPy arrays, copied over) and
needs no CuPy, so the simulator tests call it; the registered kernel wraps it for CuPy arrays
on CuPy's current stream (checked on an H200 by benchmarks/gpu/run_gpu_checks.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import cuda

from ..._registry import register_kernel
from ...ops import ion
from ...ops.ion_channel import (
    VTRAP_SERIES_BELOW,
    ChannelSet,
    channel_set,
    compile_channel_function,
    reversal_constants,
    step_source,
    unless_junction_lines,
)
from ._device import cupy_stream, output, to_device

_FLOATS = ("float32", "float64")
#: Threads per block.
THREADS = 128

_TEMPLATE = '''
def ion_kernel(V, S, P, I, i_rows, {tangents}dt, n_steps, record_every, thr, max_spikes,
               V_rec, {tangent_records}counts, times{tangent_times}):
    j = cuda.grid(1)
    if j >= V.shape[0]:
        return
    v = V[j]
{loads}
    c = 0
    for step in range(n_steps):
        i_inj = I[step * i_rows, j]
        v_old = v
{saves}
{body}
        if v_old < thr and v >= thr:
            if c < max_spikes:
                den = v - v_old
                f = (thr - v_old) / den
                times[c, j] = (step + f) * dt
{spike_tangents}
            c += 1
        if record_every > 0 and (step + 1) % record_every == 0:
            r = (step + 1) // record_every - 1
            V_rec[r, j] = v
{records}
    counts[j] = c
    V[j] = v
{stores}
'''


def kernel_text(cs: ChannelSet, body: list[str], loads: tuple[str, ...] = (),
                stores: tuple[str, ...] = (), **tangent: str) -> str:
    """``ion_kernel``'s source for ``cs`` around a step ``body`` (lines indented 8).

    ``loads`` and ``stores`` add lines after the states' and parameters' loads and stores;
    ``tangent`` fills the hooks that ``backends.cuda.ion_sensitivity`` uses (extra arguments
    ``tangents``, ``tangent_records``, ``tangent_times``; lines ``saves`` before the step,
    ``spike_tangents`` at a kept spike, ``records`` at a record); empty for the plain kernel.
    """
    n_states = len(cs.state_names)
    all_loads = [f"    s{k} = S[{k}, j]" for k in range(n_states)]
    all_loads += [f"    p{k} = P[{k}, j]" for k in range(len(cs.param_names))]
    all_stores = [f"    S[{k}, j] = s{k}" for k in range(n_states)]
    hooks = {name: tangent.get(name, "") for name in (
        "tangents", "tangent_records", "tangent_times", "saves", "spike_tangents", "records")}
    return _TEMPLATE.format(loads="\n".join([*all_loads, *loads]), body="\n".join(body),
                            stores="\n".join([*all_stores, *stores]), **hooks)


def generated_source(cs: ChannelSet) -> str:
    """The Python source of the CUDA kernel for ``cs`` (before compilation; for reading)."""
    return kernel_text(cs, step_source(cs, " " * 8)[0])


def _math(dtype: str) -> tuple[dict[str, Any], Callable[[float], Any]]:
    scalar = np.float32 if dtype == "float32" else np.float64
    cut, half, c2, c4, c6, one = (scalar(c) for c in (VTRAP_SERIES_BELOW, 0.5, 1 / 12,
                                                      1 / 720, 1 / 30240, 1.0))
    d1, d3, d5, zero = (scalar(c) for c in (1 / 6, 1 / 180, 1 / 5040, 0.0))

    @cuda.jit(device=True)
    def exp(x):
        return math.exp(x)

    @cuda.jit(device=True)
    def vtrap(x, y):
        u = x / y
        if abs(u) < cut:
            u2 = u * u
            return y * (one - half * u + u2 * (c2 - u2 * (c4 - u2 * c6)))
        return x / (math.exp(u) - one)

    @cuda.jit(device=True)
    def vtrap_dx(x, y, value):
        # ops.ion_symbolic.vtrap_dx: d vtrap(x, y) / dx from value = vtrap(x, y), with the
        # same series below the cut.
        u = x / y
        if abs(u) < cut:
            u2 = u * u
            return u * (d1 - u2 * (d3 - u2 * d5)) - half
        return value * (y - value - x) / (x * y)

    @cuda.jit(device=True)
    def sign(x):
        return one if x > zero else (-one if x < zero else zero)

    @cuda.jit(device=True)
    def log(x):
        return math.log(x)

    @cuda.jit(device=True)
    def sqrt(x):
        return math.sqrt(x)

    return {"exp": exp, "vtrap": vtrap, "vtrap_dx": vtrap_dx, "sign": sign, "log": log,
            "sqrt": sqrt}, scalar


_kernels: dict[tuple[str, str, str], Any] = {}  # (kind, channel key, dtype)


def _generated_kernel(kind: str, cs: ChannelSet, dtype: str,
                      source: Callable[[], str | tuple[str, dict[str, float]]], kernel: str,
                      voltage: bool = True) -> Any:
    """Generate and cache one kernel family's CUDA kernel for ``cs`` (compiled lazily).

    The shared part of every generated CUDA kernel: the channel functions as device
    functions with ``dtype``'s ``exp``, the namespace of constants, ``source()`` executed.
    ``source()`` returns the text, or the text and the ``K<i>`` constants of lines from
    :mod:`fusekit.ops.ion_symbolic`, which also get that module's math names (``VTRAP``,
    ``VTRAP_DX``, ``LOG``, ``SQRT``, ``SIGN``, ``ABS``). ``kind`` keys the cache with ``cs.key``
    and ``dtype``.
    """
    key = (kind, cs.key, dtype)
    if key not in _kernels:
        math_fns, scalar = _math(dtype)
        _, funcs = step_source(cs, "", voltage=voltage)
        generated = source()
        text, consts = (generated, {}) if isinstance(generated, str) else generated
        ns: dict[str, Any] = {
            "cuda": cuda, "EXP": math_fns["exp"], "VTRAP": math_fns["vtrap"],
            "VTRAP_DX": math_fns["vtrap_dx"], "LOG": math_fns["log"],
            "SQRT": math_fns["sqrt"], "SIGN": math_fns["sign"], "ABS": abs,
            "ONE": scalar(1.0), "ZERO": scalar(0.0), **reversal_constants(cs, scalar),
            **{k: scalar(c) for k, c in consts.items()},
        }
        seen: dict[int, Any] = {}
        for name, fn in funcs.items():
            ns[name] = compile_channel_function(fn, math_fns, scalar,
                                                cuda.jit(device=True), seen)
        exec(compile(text, f"<fusekit {kind} cuda kernel {cs.key}>", "exec"), ns)
        _kernels[key] = cuda.jit(ns[kernel])
    return _kernels[key]


def kernel_for(cs: ChannelSet, dtype: str) -> Any:
    """The CUDA kernel for ``cs`` and ``dtype``, generated on first use (compiled lazily)."""
    return _generated_kernel("ion", cs, dtype, lambda: generated_source(cs), "ion_kernel")


def ion_simulate_launch(
    V: Any, S: Any, P: Any, I_ext: Any, V_rec: Any, counts: Any, times: Any, *,
    channels: Any, dt: float, n_steps: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, stream: Any = 0,
) -> None:
    """Run the simulation in place on device arrays.

    Args:
        V: ``(n,)`` potentials, updated in place.
        S: ``(n_states, n)`` states (``(1, n)`` when there are none), updated in place.
        P: ``(n_params, n)`` parameters.
        I_ext: ``(1, n)`` constant or ``(n_steps, n)`` per-step injected current.
        V_rec: ``(n_steps // record_every, n)`` output (``(0, n)`` for none).
        counts: ``(n,)`` int64 output, spike counts.
        times: ``(max_spikes, n)`` output, spike times (left as they are past the count:
            fill with NaN beforehand).
        channels: As for :func:`fusekit.ops.ion_simulate`.
        dt: ms.
        n_steps: Steps.
        record_every: Record period in steps (0: none).
        spike_threshold: mV.
        max_spikes: Rows of ``times``.
        stream: Numba stream (0: default).
    """
    cs = channel_set(channels)
    n = V.shape[0]
    if n == 0 or n_steps == 0:
        return
    dtype = np.dtype(V.dtype)
    scalar = dtype.type
    kernel = kernel_for(cs, dtype.name)
    blocks = -(-n // THREADS)
    kernel[blocks, THREADS, stream](
        V, S, P, I_ext, 1 if I_ext.shape[0] > 1 else 0, scalar(dt), n_steps, record_every,
        scalar(spike_threshold), max_spikes, V_rec, counts, times,
    )


@register_kernel(ion.ion_simulate_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def ion_simulate_cuda(
    v0: Any, states0: Any, params: Any, i_ext: Any, *, channels: Any, dt: float,
    n_steps: int, record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
) -> tuple[Any, ...]:
    """All ``n_steps`` in one launch, one thread per neuron, on CuPy's current stream."""
    import cupy

    cs = channel_set(channels)
    n = v0.shape[0]
    dtype = v0.dtype
    with v0.device, cuda.gpus[v0.device.id]:
        stream = cupy_stream(cupy)
        V = cupy.array(v0, dtype=dtype, order="C")
        S = cupy.array(states0, dtype=dtype, order="C")
        S_dev = S if S.shape[0] else cupy.zeros((1, n), dtype=dtype)
        n_rec = n_steps // record_every if record_every else 0
        V_rec = cupy.empty((n_rec, n), dtype=dtype)
        counts = cupy.zeros(n, dtype=cupy.int64)
        times = cupy.full((max_spikes, n), cupy.nan, dtype=dtype)
        P = cupy.ascontiguousarray(params)
        I_ext = cupy.ascontiguousarray(i_ext).reshape(i_ext.shape if i_ext.ndim == 2 else (1, n))
        ion_simulate_launch(
            *(to_device(name, a, stream) for name, a in (
                ("V", V), ("S", S_dev), ("P", P), ("I_ext", I_ext))),
            *(output(name, a, a.shape, stream)[0] for name, a in (
                ("V_rec", V_rec), ("counts", counts), ("times", times))),
            channels=cs, dt=dt, n_steps=n_steps, record_every=record_every,
            spike_threshold=spike_threshold, max_spikes=max_spikes, stream=stream,
        )
    return V, S, V_rec, counts, times



# ------------------------------------------------------------------------ Hines cable solve


@cuda.jit
def _hines_rows(parent, D, U, L, B, X):  # noqa: N803 - matrix names
    c = cuda.grid(1)
    if c >= D.shape[0]:
        return
    n_nodes = D.shape[1]
    for i in range(n_nodes - 1, 0, -1):
        p = parent[i]
        f = U[c, i] / D[c, i]
        D[c, p] -= f * L[c, i]
        B[c, p] -= f * B[c, i]
    X[c, 0] = B[c, 0] / D[c, 0]
    for i in range(1, n_nodes):
        X[c, i] = (B[c, i] - L[c, i] * X[c, parent[i]]) / D[c, i]


def hines_solve_launch(parent: Any, D: Any, U: Any, L: Any, B: Any, X: Any, *,
                       stream: Any = 0) -> None:
    """Solve every row's tree system into ``X``; ``D`` and ``B`` are overwritten.

    One thread per cell (row), nodes in sequence: the parallelism is across cells that share
    the morphology. All arrays ``(batch, n_nodes)`` on the device, ``parent`` int64.
    """
    if D.shape[0]:
        _hines_rows[-(-D.shape[0] // THREADS), THREADS, stream](parent, D, U, L, B, X)


@register_kernel(ion.hines_solve_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def hines_solve_cuda(parent: Any, diag: Any, upper: Any, lower: Any, rhs: Any) -> Any:
    """Hines elimination on the GPU, one thread per cell, on CuPy's current stream."""
    import cupy

    n_nodes = diag.shape[-1]
    with diag.device, cuda.gpus[diag.device.id]:
        stream = cupy_stream(cupy)
        D = cupy.array(diag, order="C").reshape(-1, n_nodes)  # copies: overwritten
        B = cupy.array(rhs, order="C").reshape(-1, n_nodes)
        U = cupy.ascontiguousarray(upper).reshape(-1, n_nodes)
        L = cupy.ascontiguousarray(lower).reshape(-1, n_nodes)
        X = cupy.empty(D.shape, dtype=rhs.dtype)
        hines_solve_launch(*(to_device(name, a, stream) for name, a in (
            ("parent", cupy.asarray(parent, dtype=cupy.int64)), ("D", D), ("U", U), ("L", L),
            ("B", B), ("X", X))), stream=stream)
    return X.reshape(rhs.shape)


# ------------------------------------------------------------ multi-compartment cells

#: ``{name}``, ``{args}`` (after ``CPL``) and ``{first}`` (the first step): the plain kernel
#: runs steps ``0 .. n_steps - 1``; the network's (``cuda.ion_cable_network``) a window
#: ``w0 .. n_steps - 1`` with its synapses in ``{syn_step}`` (after the Hines rows) and
#: ``{on_spike}``, continuing the spike count of earlier windows.
_CABLE_TEMPLATE = '''
def {name}(V, S, P, I, i_rows, parent, CPL, {args}dt, n_steps, record_every, thr,
           max_spikes, V_rec, counts, times, D, B, REC):
    c = cuda.grid(1)
    if c >= V.shape[0]:
        return
    n_comp = V.shape[1]
    k_spikes = counts[c]
    for step in range({first}, n_steps):
        irow = step * i_rows
{rows}
{syn_step}
        v_old = V[c, 0]
{solve}
        v = V[c, 0]
        if v_old < thr and v >= thr:
            if k_spikes < max_spikes:
                times[k_spikes, c] = (step + (thr - v_old) / (v - v_old)) * dt
            k_spikes += 1
{on_spike}
        if record_every > 0 and (step + 1) % record_every == 0:
            r = (step + 1) // record_every - 1
            for q in range(REC.shape[0]):
                V_rec[r, c, q] = V[c, REC[q]]
    counts[c] = k_spikes
'''


def cable_source(cs: ChannelSet, name: str = "cable_kernel", args: str = "",
                 first: str = "0", syn_step: str = "", on_spike: str = "") -> str:
    """The Python source of the CUDA multi-compartment kernel for ``cs`` (for reading).

    ``name``, ``args``, ``first``, ``syn_step``, ``on_spike``: the slots of
    :data:`_CABLE_TEMPLATE` that the network kernel fills.
    """
    ind = " " * 12
    body, _ = step_source(cs, ind, voltage=False)
    loads = [f"{ind}s{k} = S[{k}, c, j]" for k in range(len(cs.state_names))]
    loads += [f"{ind}p{k} = P[{k}, c, j]" for k in range(len(cs.param_names))]
    stores = [f"{ind}S[{k}, c, j] = s{k}" for k in range(len(cs.state_names))]
    rows = cable_rows_source(" " * 8, "V[c, {j}]", "D[c, {j}]", "B[c, {j}]", "\n".join(loads),
                             "\n".join(body), "\n".join(stores) or f"{ind}pass")
    return _CABLE_TEMPLATE.format(
        name=name, args=args, first=first, rows=rows, syn_step=syn_step, on_spike=on_spike,
        solve=hines_source(" " * 8, "D[c, {j}]", "B[c, {j}]", "V[c, {j}]"))


def cable_rows_source(indent: str, v: str, d: str, b: str, loads: str, body: str,
                      stores: str) -> str:
    """One cell's step of every compartment and its row of the Hines system (CUDA kernels).

    ``v``, ``d``, ``b``: compartment ``{j}``'s potential before the step, diagonal and
    right-hand side; ``loads``, ``body``, ``stores`` (indented one level deeper than
    ``indent``) load its states and parameters, step them (``step_source``) and store them.
    Then the axial coupling is added to the diagonal. The forward kernel and the adjoint's
    re-run share it (then :func:`hines_source`), so they sum in the same order.
    """
    at = [
        "for j in range(n_comp):",
        f"    v = {v.format(j='j')}",
        "    i_inj = I[irow, c, j]",
    ]
    after = [
        f"    {d.format(j='j')} = p0 / dt + g_sum",
        f"    {b.format(j='j')} = p0 / dt * v + ge_sum + i_inj",
        "for j in range(1, n_comp):",
        f"    {d.format(j='j')} += CPL[0, c, j]",
        f"    {d.format(j='parent[j]')} += CPL[1, c, j]",
    ]
    inner = indent + "    "
    body = "\n".join(unless_junction_lines(body.splitlines(), inner))  # c_m = 0: no membrane
    return "\n".join([*(indent + x for x in at), loads, body, stores,
                      *(indent + x for x in after)])


def hines_source(indent: str, d: str, b: str, out: str, upper: str = "CPL[0, c, j]",
                 lower: str = "CPL[1, c, j]") -> str:
    """One cell's Hines elimination and back-substitution, for the CUDA cable kernels.

    ``d``, ``b`` and ``out`` give the diagonal, the right-hand side and the solution of
    compartment ``{j}`` (``"D[c, {j}]"``); ``upper``/``lower`` are compartment ``j``'s
    coupling to its parent and back. The forward kernel, the adjoint's re-run of it and
    (with the coupling's rows swapped) the adjoint's transposed solve share it, so the re-run
    computes what the forward did. The CPU kernels' counterpart is
    ``backends.cpu.ion.hines_block_source``.
    """
    lines = [
        "for j in range(n_comp - 1, 0, -1):",
        f"    f = {lower} / {d.format(j='j')}",
        f"    {d.format(j='parent[j]')} -= f * {upper}",
        f"    {b.format(j='parent[j]')} += f * {b.format(j='j')}",
        f"{out.format(j=0)} = {b.format(j=0)} / {d.format(j=0)}",
        "for j in range(1, n_comp):",
        f"    {out.format(j='j')} = ({b.format(j='j')} + {upper} * {out.format(j='parent[j]')}"
        f") / {d.format(j='j')}",
    ]
    return "\n".join(indent + line for line in lines)


def cable_kernel_for(cs: ChannelSet, dtype: str) -> Any:
    """The CUDA multi-compartment kernel for ``cs`` and ``dtype`` (compiled lazily)."""
    return _generated_kernel("cable", cs, dtype, lambda: cable_source(cs), "cable_kernel",
                             voltage=False)


def cable_simulate_launch(
    V: Any, S: Any, P: Any, I_ext: Any, parent: Any, coupling: Any, V_rec: Any, counts: Any,
    times: Any, D: Any, B: Any, REC: Any = None, *, channels: Any, dt: float, n_steps: int,
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
    stream: Any = 0,
) -> None:
    """Run :func:`fusekit.ops.cable_simulate` in place on device arrays, one thread per cell.

    ``V`` ``(n_cells, n_comp)`` and ``S`` ``(n_states or 1, n_cells, n_comp)`` are updated;
    ``I_ext`` is ``(1 or n_steps, n_cells, n_comp)``; ``D`` and ``B`` are ``(n_cells,
    n_comp)`` workspaces; ``times`` must be NaN-filled and ``counts`` zero beforehand.
    ``REC``: the recorded compartments (int64 device array, one per column of ``V_rec``;
    ``None``: all).
    """
    cs = channel_set(channels)
    n_cells = V.shape[0]
    if n_cells == 0 or n_steps == 0:
        return
    scalar = np.dtype(V.dtype).type
    if REC is None:
        REC = cuda.to_device(np.arange(V.shape[1], dtype=np.int64), stream=stream)
    kernel = cable_kernel_for(cs, np.dtype(V.dtype).name)
    kernel[-(-n_cells // THREADS), THREADS, stream](
        V, S, P, I_ext, 1 if I_ext.shape[0] > 1 else 0, parent, coupling, scalar(dt), n_steps,
        record_every, scalar(spike_threshold), max_spikes, V_rec, counts, times, D, B, REC,
    )


@register_kernel(ion.cable_simulate_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def cable_simulate_cuda(
    v0: Any, states0: Any, params: Any, i_ext: Any, parent: Any, coupling: Any, *,
    channels: Any, dt: float, n_steps: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, record_at: Any = None,
) -> tuple[Any, ...]:
    """All steps in one launch, one thread per cell, on CuPy's current stream."""
    import cupy

    n_cells, n_comp = v0.shape
    cols = ion.record_columns(record_at, n_comp)
    dtype = v0.dtype
    with v0.device, cuda.gpus[v0.device.id]:
        stream = cupy_stream(cupy)
        V, S, V_rec, counts, times = ion.kernel_outputs(cupy, v0, states0, n_steps,
                                                        record_every, max_spikes, cols.shape[0])
        S_dev = S if S.shape[0] else cupy.zeros((1, n_cells, n_comp), dtype=dtype)
        I_ext = cupy.ascontiguousarray(i_ext).reshape(
            i_ext.shape if i_ext.ndim == 3 else (1, n_cells, n_comp))
        D, B = (cupy.empty((n_cells, n_comp), dtype=dtype) for _ in range(2))
        arrays = [("V", V), ("S", S_dev), ("P", cupy.ascontiguousarray(params)),
                  ("I_ext", I_ext), ("parent", cupy.asarray(parent, dtype=cupy.int64)),
                  ("coupling", cupy.ascontiguousarray(coupling)), ("V_rec", V_rec),
                  ("counts", counts), ("times", times), ("D", D), ("B", B),
                  ("REC", cupy.asarray(cols))]
        cable_simulate_launch(
            *(to_device(name, a, stream) for name, a in arrays), channels=channels, dt=dt,
            n_steps=n_steps, record_every=record_every, spike_threshold=spike_threshold,
            max_spikes=max_spikes, stream=stream,
        )
    return V, S, V_rec, counts, times


# ------------------------------------------------------- networks: CSR synapses on spikes

_NET_TEMPLATE = '''
def net_window(V, S, P, I, i_rows, GS, INC, SPIKED, w0, w_len, dt, syn_decay, e_syn,
               record_every, thr, max_spikes, V_rec, counts, times):
    j = cuda.grid(1)
    if j >= V.shape[0]:
        return
    v = V[j]
    c = counts[j]
{loads}
    for s in range(w_len):
        step = w0 + s
        i_inj = I[step * i_rows, j]
        g_syn = ZERO
        ge_syn = ZERO
        for t in range(GS.shape[0]):  # each synapse type: decay, then this step's arrivals
            g = GS[t, j] * syn_decay[t] + INC[s, t, j]
            INC[s, t, j] = 0  # read once; the delivery kernel refills it for the next window
            GS[t, j] = g
            g_syn += g
            ge_syn += g * e_syn[t]
        v_old = v
{body}
        g_sum = g_sum + g_syn
        ge_sum = ge_sum + ge_syn
        k_ = dt / p0
        v = (v + k_ * (ge_sum + i_inj)) / (ONE + k_ * g_sum)
        SPIKED[s, j] = 0
        if v_old < thr and v >= thr:
            if c < max_spikes:
                times[c, j] = (step + (thr - v_old) / (v - v_old)) * dt
            c += 1
            SPIKED[s, j] = 1
        if record_every > 0 and (step + 1) % record_every == 0:
            V_rec[(step + 1) // record_every - 1, j] = v
    counts[j] = c
    V[j] = v
{stores}
'''


@cuda.jit
def _deliver(SPIKED, w_len, indptr, indices, weights, types, INC):  # noqa: N803
    j = cuda.grid(1)
    if j >= SPIKED.shape[1]:
        return
    typed = types.shape[0] > 0  # empty: every synapse of type 0, no type to read
    for s in range(w_len):
        if SPIKED[s, j]:
            for e in range(indptr[j], indptr[j + 1]):
                cuda.atomic.add(INC, (s, types[e] if typed else 0, indices[e]), weights[e])


def network_source(cs: ChannelSet) -> str:
    """The Python source of the CUDA network window kernel for ``cs`` (for reading)."""
    body, _ = step_source(cs, " " * 8, voltage=False)
    loads = [f"    s{k} = S[{k}, j]" for k in range(len(cs.state_names))]
    loads += [f"    p{k} = P[{k}, j]" for k in range(len(cs.param_names))]
    stores = [f"    S[{k}, j] = s{k}" for k in range(len(cs.state_names))]
    return _NET_TEMPLATE.format(loads="\n".join(loads), body="\n".join(body),
                                stores="\n".join(stores))


def network_kernel_for(cs: ChannelSet, dtype: str) -> Any:
    """The CUDA window kernel for ``cs`` and ``dtype`` (compiled lazily)."""
    return _generated_kernel("network", cs, dtype, lambda: network_source(cs), "net_window",
                             voltage=False)


def network_simulate_launch(
    V: Any, S: Any, P: Any, I_ext: Any, GS: Any, indptr: Any, indices: Any, weights: Any,
    types: Any, V_rec: Any, counts: Any, times: Any, INC: Any, SPIKED: Any, SYN: Any, *,
    channels: Any, dt: float, n_steps: int, delay_steps: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, stream: Any = 0,
) -> None:
    """Run :func:`fusekit.ops.network_simulate` in place on device arrays.

    One launch per window of ``delay_steps`` steps (one thread per neuron, all steps of the
    window inside), then one delivery launch (one thread per presynaptic neuron, atomic adds
    into ``INC``). ``GS`` is ``(n_types, n)``, ``types`` the type of every synapse, ``SYN``
    ``(2, n_types)`` each type's decay factor per step and reversal potential. ``INC``
    ``(delay_steps, n_types, n)`` starts as the arrivals at steps ``0 .. delay_steps - 1``
    (zeros: none); afterwards row ``(n_steps + x) % delay_steps`` holds those at step
    ``n_steps + x`` (spikes in flight). ``SPIKED`` is a ``(delay_steps, n)`` uint8 workspace,
    ``times`` must be NaN-filled, ``counts`` zero.
    """
    cs = channel_set(channels)
    n = V.shape[0]
    if n == 0 or n_steps == 0:
        return
    dtype = np.dtype(V.dtype)
    scalar = dtype.type
    window = network_kernel_for(cs, dtype.name)
    blocks = -(-n // THREADS)
    i_rows = 1 if I_ext.shape[0] > 1 else 0
    for w0 in range(0, n_steps, delay_steps):
        w_len = min(delay_steps, n_steps - w0)
        window[blocks, THREADS, stream](
            V, S, P, I_ext, i_rows, GS, INC, SPIKED, w0, w_len, scalar(dt), SYN[0], SYN[1],
            record_every, scalar(spike_threshold), max_spikes, V_rec, counts, times,
        )
        _deliver[blocks, THREADS, stream](SPIKED, w_len, indptr, indices, weights, types, INC)


@register_kernel(ion.network_simulate_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def network_simulate_cuda(
    v0: Any, states0: Any, params: Any, i_ext: Any, g_syn0: Any, indptr: Any, indices: Any,
    weights: Any, arrivals0: Any, synapse_type: Any, *, channels: Any, dt: float, n_steps: int,
    delay_steps: int, tau_syn: tuple[float, ...], e_syn: tuple[float, ...],
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
) -> tuple[Any, ...]:
    """Windows of ``delay_steps`` steps per launch, spikes delivered between windows."""
    import cupy

    n = v0.shape[0]
    dtype = v0.dtype
    with v0.device, cuda.gpus[v0.device.id]:
        stream = cupy_stream(cupy)
        V, S, V_rec, counts, times = ion.kernel_outputs(cupy, v0, states0, n_steps,
                                                        record_every, max_spikes)
        GS = cupy.array(g_syn0, dtype=dtype, order="C")
        INC = cupy.array(arrivals0, dtype=dtype, order="C")
        arrays = [
            ("V", V), ("S", S if S.shape[0] else cupy.zeros((1, n), dtype=dtype)),
            ("P", cupy.ascontiguousarray(params)),
            ("I_ext", cupy.ascontiguousarray(i_ext).reshape(
                i_ext.shape if i_ext.ndim == 2 else (1, n))),
            ("GS", GS), ("indptr", cupy.asarray(indptr, dtype=cupy.int64)),
            ("indices", cupy.asarray(indices, dtype=cupy.int64)),
            ("weights", cupy.ascontiguousarray(weights)),
            ("types", cupy.asarray(synapse_type, dtype=cupy.int64)), ("V_rec", V_rec),
            ("counts", counts), ("times", times),
            ("INC", INC),
            ("SPIKED", cupy.zeros((delay_steps, n), dtype=cupy.uint8)),
            ("SYN", cupy.asarray([ion.synapse_decays(dt, tau_syn), e_syn], dtype=dtype)),
        ]
        network_simulate_launch(
            *(to_device(name, a, stream) for name, a in arrays), channels=channels, dt=dt,
            n_steps=n_steps, delay_steps=delay_steps,
            record_every=record_every, spike_threshold=spike_threshold,
            max_spikes=max_spikes, stream=stream,
        )
        arrivals = INC[(n_steps + cupy.arange(delay_steps)) % delay_steps]
    return V, S, GS, V_rec, counts, times, arrivals
