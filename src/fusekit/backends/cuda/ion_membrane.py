"""CUDA kernels of the ion_membrane family: one network step's membranes and synapses.

``membrane_step``: one thread per neuron, the step of ``cuda/ion.py``'s kernels (the channel
functions as device functions, ``ops.ion_channel.step_source``) and the voltage row with the
synaptic conductance. ``membrane_step_vjp``: the same forward, then the compartment's local
adjoint (:func:`fusekit.ops.ion_symbolic.cable_adjoint_step_source`, channels traced) with
``a_R = a_v' / D`` and ``a_D = -a_R v'``. ``synapse_deliver``: one thread per presynaptic
neuron; a row with a spike adds its weights to the targets atomically. ``synapse_deliver_vjp``:
one thread per presynaptic neuron, no atomics (each synapse belongs to one row). The delivery
kernels check the CSR row and the targets they read and report a bad one in a flag, which the
launch reads back (one small copy, so the call waits for the kernel) and turns into the
error the CPU kernels raise; nothing is read out of bounds.

The ``*_launch`` functions take Numba device arrays (or host NumPy arrays, copied over and
back) and need no CuPy, so the simulator tests call them; the registered kernels wrap them
for CuPy arrays (and torch CUDA tensors, through the registry) on CuPy's current stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from ..._errors import InputError
from ..._registry import register_kernel
from ...ops import ion_membrane as mem
from ...ops.ion_channel import ChannelSet, channel_set, step_source
from ...ops.ion_symbolic import UntraceableChannelError, cable_adjoint_step_source
from ._device import copy_back, cupy_stream, output, to_device
from .ion import THREADS, _generated_kernel

_FLOATS = ("float32", "float64")

_STEP = '''
def mem_kernel(V, S, P, I, G, GE, dt, VO, SO):
    j = cuda.grid(1)
    if j >= V.shape[0]:
        return
    v = V[j]
{loads}
{forward}
    c_dt = p0 / dt
    VO[j] = (c_dt * v + ge_sum + GE[j] + I[j]) / (c_dt + g_sum + G[j])
{stores}
'''

_VJP = '''
def vjp_kernel(V, S, P, I, G, GE, AVN, ASN, dt, OUT):
    j = cuda.grid(1)
    if j >= V.shape[0]:
        return
    v = V[j]
    i_inj = I[j]
{loads}
{forward}
    c_dt = p0 / dt
    d_all = c_dt + g_sum + G[j]
    a_r = AVN[j] / d_all
    a_d = -a_r * ((c_dt * v + ge_sum + GE[j] + i_inj) / d_all)
{state_loads}
{adjoint_loads}
{adjoint}
{stores}
'''


def _lines(fmt: str, items: Any) -> list[str]:
    return [fmt.format(k=k) for k in items]


def step_kernel_source(cs: ChannelSet) -> str:
    """The CUDA ``membrane_step`` kernel's source (for reading)."""
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    forward, _ = step_source(cs, "    ", voltage=False)
    return _STEP.format(
        loads="\n".join(_lines("    s{k} = S[{k}, j]", range(n_states))
                        + _lines("    p{k} = P[{k}, j]", range(n_params))),
        forward="\n".join(forward),
        stores="\n".join(_lines("    SO[{k}, j] = s{k}", range(n_states))) or "    pass")


def vjp_kernel_source(cs: ChannelSet) -> tuple[str, dict[str, float]]:
    """The CUDA ``membrane_step_vjp`` kernel's source and its constants (for reading)."""
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    forward, _ = step_source(cs, "    ", voltage=False)
    try:
        adjoint, consts, rows = cable_adjoint_step_source(cs, "    ")
    except UntraceableChannelError as exc:
        raise InputError(f"membrane_step_vjp: the CUDA kernel is generated from traced channel "
                         f"functions, and {exc} Use backend='reference' (or, in "
                         "network_simulate_torch, engine='torch')") from None
    k_i = 1 + n_states + n_params
    stores = ["    OUT[0, j] = av", *_lines("    OUT[{k} + 1, j] = as{k}", range(n_states)),
              *[f"    OUT[{1 + n_states + i}, j] = ap{i}" for i in rows],
              f"    OUT[{k_i}, j] = ai", f"    OUT[{k_i + 1}, j] = a_d",
              f"    OUT[{k_i + 2}, j] = a_r"]
    text = _VJP.format(
        loads="\n".join(_lines("    s{k} = S[{k}, j]", range(n_states))
                        + _lines("    p{k} = P[{k}, j]", range(n_params))),
        forward="\n".join(forward),
        # the forward lines updated the states in place: the adjoint reads the old ones
        state_loads="\n".join(_lines("    s{k} = S[{k}, j]", range(n_states))),
        adjoint_loads="\n".join(_lines("    as{k}_n = ASN[{k}, j]", range(n_states))),
        adjoint="\n".join(adjoint), stores="\n".join(stores))
    return text, consts


def _blocks(n: int) -> int:
    return -(-n // THREADS)


def _states(S: Any, n: int, dtype: Any, stream: Any) -> Any:
    """``S``, or a ``(1, n)`` stand-in for channels without states (never read)."""
    if S.shape[0]:
        return to_device("states", S, stream)
    return cuda.device_array((1, n), dtype=dtype, stream=stream)


def membrane_step_launch(V: Any, S: Any, P: Any, I: Any, G: Any, GE: Any, VO: Any,  # noqa: E741, N803
                         SO: Any, *, channels: Any, dt: float, stream: Any = 0) -> None:
    """One step on device arrays into ``VO`` and ``SO`` (host arrays: copied back)."""
    cs = channel_set(channels)
    n = V.shape[0]
    if n == 0:
        return
    dtype = np.dtype(V.dtype)
    kernel = _generated_kernel("membrane_step", cs, dtype.name,
                               lambda: step_kernel_source(cs), "mem_kernel", voltage=False)
    vo, vo_host = output("v_new", VO, (n,), stream)
    so, so_host = output("states_new", SO, SO.shape, stream)
    kernel[_blocks(n), THREADS, stream](
        to_device("v", V, stream), _states(S, n, dtype, stream),
        *(to_device(name, a, stream) for name, a in (
            ("params", P), ("i_inj", I), ("g_syn", G), ("ge_syn", GE))),
        dtype.type(dt), vo, so if SO.shape[0] else cuda.device_array((1, n), dtype=dtype))
    copy_back(stream, (vo, vo_host), (so, so_host))


def membrane_step_vjp_launch(V: Any, S: Any, P: Any, I: Any, G: Any, GE: Any, AVN: Any,  # noqa: E741, N803
                             ASN: Any, OUT: Any, *, channels: Any, dt: float,
                             stream: Any = 0) -> None:
    """The step's vjp on device arrays into ``OUT`` ``(4 + n_states + n_params, n)``.

    ``OUT`` is zeroed beforehand (rows: ``a_v``, the states', the parameters', ``a_i``,
    ``a_g``, ``a_ge``; the rows of parameters the step does not read stay zero).
    """
    cs = channel_set(channels)
    n = V.shape[0]
    if n == 0:
        return
    dtype = np.dtype(V.dtype)
    kernel = _generated_kernel("membrane_step_vjp", cs, dtype.name,
                               lambda: vjp_kernel_source(cs), "vjp_kernel", voltage=False)
    out, out_host = output("out", OUT, OUT.shape, stream)
    if out_host is not None:  # a fresh device array: zero it as the caller zeroed the host's
        out.copy_to_device(out_host, stream=stream)
    kernel[_blocks(n), THREADS, stream](
        to_device("v", V, stream), _states(S, n, dtype, stream),
        *(to_device(name, a, stream) for name, a in (
            ("params", P), ("i_inj", I), ("g_syn", G), ("ge_syn", GE), ("a_v", AVN))),
        _states(ASN, n, dtype, stream), dtype.type(dt), out)
    copy_back(stream, (out, out_host))


# ------------------------------------------------------------------ synaptic delivery


#: Flag values, worst last (``atomic.max`` keeps the worst): a target out of range, a
#: malformed row pointer; :func:`_raise` maps them to ``csr_index_error``'s codes 2 and 1.
_BAD_TARGET, _BAD_INDPTR = 1, 2


@cuda.jit(device=True)
def _row(indptr, i, nnz, flag):  # pragma: no cover - compiled
    """Row ``i``'s synapse range; ``(0, 0)`` and the flag raised when the CSR is malformed."""
    lo = indptr[i]
    hi = indptr[i + 1]
    n = indptr.shape[0] - 1
    if lo < 0 or hi < lo or hi > nnz or (i == 0 and lo != 0) or (i == n - 1 and hi != nnz):
        cuda.atomic.max(flag, 0, _BAD_INDPTR)
        return 0, 0
    return lo, hi


@cuda.jit
def _deliver(spikes, indptr, weights, target, out, flag):  # pragma: no cover - compiled
    i = cuda.grid(1)
    if i >= spikes.shape[0]:
        return
    lo, hi = _row(indptr, i, weights.shape[0], flag)
    x = spikes[i]
    if x != 0:
        for s in range(lo, hi):
            t = target[s]
            if t < 0 or t >= out.shape[0]:
                cuda.atomic.max(flag, 0, _BAD_TARGET)
            else:
                cuda.atomic.add(out, t, weights[s] * x)


@cuda.jit
def _deliver_vjp(spikes, indptr, weights, target, a_out, a_spikes, a_weights,
                 flag):  # pragma: no cover - compiled
    i = cuda.grid(1)
    if i >= spikes.shape[0]:
        return
    lo, hi = _row(indptr, i, weights.shape[0], flag)
    x = spikes[i]
    acc = 0.0
    for s in range(lo, hi):
        t = target[s]
        if t < 0 or t >= a_out.shape[0]:
            cuda.atomic.max(flag, 0, _BAD_TARGET)
            a_weights[s] = 0
        else:
            g = a_out[t]
            acc += weights[s] * g
            a_weights[s] = g * x
    a_spikes[i] = acc


def _raise(op: str, flag: Any, stream: Any, n: int, nnz: int, n_out: int) -> None:
    code = int(flag.copy_to_host(stream=stream)[0])
    if code:
        raise mem.csr_index_error(op, 1 if code == _BAD_INDPTR else 2, n, nnz, n_out)


def synapse_deliver_launch(spikes: Any, indptr: Any, weights: Any, target: Any, out: Any, *,
                           stream: Any = 0) -> None:
    """Add the spikes' weights into ``out`` ``(n_out,)`` (zeroed beforehand)."""
    n, nnz = spikes.shape[0], weights.shape[0]
    dev, host = output("out", out, out.shape, stream)
    if host is not None:
        dev.copy_to_device(host, stream=stream)
    flag = cuda.to_device(np.zeros(1, np.int64), stream=stream)
    if n:
        _deliver[_blocks(n), THREADS, stream](
            *(to_device(name, a, stream) for name, a in (
                ("spikes", spikes), ("indptr", indptr), ("weights", weights),
                ("target", target))), dev, flag)
    _raise("synapse_deliver", flag, stream, n, nnz, out.shape[0])
    copy_back(stream, (dev, host))


def synapse_deliver_vjp_launch(spikes: Any, indptr: Any, weights: Any, target: Any,
                               a_out: Any, a_spikes: Any, a_weights: Any, *,
                               stream: Any = 0) -> None:
    """Both adjoints of a delivery into ``a_spikes`` ``(n,)`` and ``a_weights`` ``(nnz,)``."""
    n, nnz = spikes.shape[0], weights.shape[0]
    d_spikes, h_spikes = output("a_spikes", a_spikes, (n,), stream)
    d_weights, h_weights = output("a_weights", a_weights, (nnz,), stream)
    flag = cuda.to_device(np.zeros(1, np.int64), stream=stream)
    if n:
        _deliver_vjp[_blocks(n), THREADS, stream](
            *(to_device(name, a, stream) for name, a in (
                ("spikes", spikes), ("indptr", indptr), ("weights", weights),
                ("target", target), ("a_out", a_out))), d_spikes, d_weights, flag)
    _raise("synapse_deliver_vjp", flag, stream, n, nnz, a_out.shape[0])
    copy_back(stream, (d_spikes, h_spikes), (d_weights, h_weights))


# ------------------------------------------------------------ the registered kernels


@register_kernel(mem.membrane_step_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def membrane_step_cuda(v: Any, states: Any, params: Any, i_inj: Any, g_syn: Any, ge_syn: Any,
                       *, channels: Any, dt: float) -> tuple[Any, Any]:
    """One launch, one thread per neuron, on CuPy's current stream."""
    import cupy

    c = cupy.ascontiguousarray
    with v.device, cuda.gpus[v.device.id]:
        stream = cupy_stream(cupy)
        VO = cupy.empty_like(v)
        SO = cupy.empty(states.shape, dtype=v.dtype)
        membrane_step_launch(c(v), c(states), c(params), c(i_inj), c(g_syn), c(ge_syn), VO, SO,
                             channels=channels, dt=dt, stream=stream)
    return VO, SO


@register_kernel(mem.membrane_step_vjp_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def membrane_step_vjp_cuda(v: Any, states: Any, params: Any, i_inj: Any, g_syn: Any,
                           ge_syn: Any, a_v: Any, a_states: Any, *, channels: Any,
                           dt: float) -> tuple[Any, ...]:
    """The forward recomputed per neuron, then its local adjoint, in one launch."""
    import cupy

    c = cupy.ascontiguousarray
    n_states, n_params = states.shape[0], params.shape[0]
    with v.device, cuda.gpus[v.device.id]:
        stream = cupy_stream(cupy)
        out = cupy.zeros((4 + n_states + n_params, v.shape[0]), dtype=v.dtype)
        membrane_step_vjp_launch(c(v), c(states), c(params), c(i_inj), c(g_syn), c(ge_syn),
                                 c(a_v), c(a_states), out, channels=channels, dt=dt,
                                 stream=stream)
    k = 1 + n_states + n_params
    return out[0], out[1:1 + n_states], out[1 + n_states:k], out[k], out[k + 1], out[k + 2]


@register_kernel(mem.synapse_deliver_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def synapse_deliver_cuda(spikes: Any, indptr: Any, weights: Any, target: Any, *,
                         n_out: int) -> Any:
    """One thread per presynaptic neuron, atomic adds into the targets."""
    import cupy

    c = cupy.ascontiguousarray
    with spikes.device, cuda.gpus[spikes.device.id]:
        stream = cupy_stream(cupy)
        out = cupy.zeros(n_out, dtype=spikes.dtype)
        synapse_deliver_launch(c(spikes), c(indptr), c(weights), c(target), out,
                               stream=stream)
    return out


@register_kernel(mem.synapse_deliver_vjp_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def synapse_deliver_vjp_cuda(spikes: Any, indptr: Any, weights: Any, target: Any, a_out: Any,
                             *, n_out: int) -> tuple[Any, Any]:
    """One thread per presynaptic neuron, one pass over its synapses."""
    import cupy

    c = cupy.ascontiguousarray
    with spikes.device, cuda.gpus[spikes.device.id]:
        stream = cupy_stream(cupy)
        a_spikes = cupy.empty(spikes.shape[0], dtype=spikes.dtype)
        a_weights = cupy.empty(weights.shape[0], dtype=spikes.dtype)
        synapse_deliver_vjp_launch(c(spikes), c(indptr), c(weights), c(target), c(a_out),
                                   a_spikes, a_weights, stream=stream)
    return a_spikes, a_weights
