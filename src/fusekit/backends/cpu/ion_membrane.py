"""CPU kernels of membrane_step and membrane_step_vjp: one network step's channels in Numba.

Generated per channel set from the traced step (:mod:`fusekit.ops.ion_symbolic`): the
forward is a compartment's local half (:func:`~fusekit.ops.ion_symbolic.cable_value_step_source`,
exponentials shared) and the voltage row with the synaptic conductance; the backward
recomputes that forward for each neuron (nothing but the inputs is kept between the two
calls) and runs the compartment's local adjoint
(:func:`~fusekit.ops.ion_symbolic.cable_adjoint_step_source`). Straight-line code over a
loop of neurons, which LLVM vectorises; chunks of ``CHUNK`` neurons run in parallel when
there are several (one chunk runs without the thread pool, which costs more than a small
network's step).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._errors import InputError
from ..._registry import register_kernel
from ...ops import ion_membrane as mem
from ...ops.ion_channel import ChannelSet, channel_set, reversal_constants
from ...ops.ion_symbolic import (
    UntraceableChannelError,
    cable_adjoint_step_source,
    cable_value_step_source,
)
from ._numba import configure
from .ion import _compile_generated, graph_math

_FLOATS = ("float32", "float64")

#: Neurons per parallel chunk (one chunk: no thread pool).
CHUNK = 4096

_DRIVER = '''
def {name}(lo_hi, {args}):
    n_chunks = (lo_hi + CHUNK - 1) // CHUNK
    if n_chunks <= 1:
        {block}(0, lo_hi, {args})
    else:
        for c in prange(n_chunks):
            {block}(c * CHUNK, min(lo_hi, (c + 1) * CHUNK), {args})
'''

_STEP = '''
def mem_block(lo, hi, V, S, P, I, G, GE, dt, VO, SO):
    for j in range(lo, hi):
        v = V[j]
{loads}
{forward}
        c_dt = p0 / dt
        VO[j] = (c_dt * v + ge_sum + GE[j] + I[j]) / (c_dt + g_sum + G[j])
{stores}
'''

_VJP = '''
def vjp_block(lo, hi, V, S, P, I, G, GE, AVN, ASN, dt, AV, AS, AP, AI, AG, AGE):
    for j in range(lo, hi):
        v = V[j]
        i_inj = I[j]
{loads}
{forward}
        c_dt = p0 / dt
        d_all = c_dt + g_sum + G[j]
        v_n = (c_dt * v + ge_sum + GE[j] + i_inj) / d_all
        a_r = AVN[j] / d_all
        a_d = -a_r * v_n
{adj_loads}
{adjoint}
        AV[j] = av
{stores}
        AI[j] = ai
        AG[j] = a_d
        AGE[j] = a_r
'''

_STEP_ARGS = "V, S, P, I, G, GE, dt, VO, SO"
_VJP_ARGS = "V, S, P, I, G, GE, AVN, ASN, dt, AV, AS, AP, AI, AG, AGE"


def _traced(op: str, cs: ChannelSet, fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(cs, *args, **kw)
    except UntraceableChannelError as exc:
        raise InputError(f"{op}: the CPU kernel is generated from traced channel functions, "
                         f"and {exc} Use backend='reference' (or, in network_simulate_torch, "
                         "engine='torch')") from None


def step_source(cs: ChannelSet) -> tuple[str, dict[str, float]]:
    """The forward kernel's source and its constants."""
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    ind = " " * 8
    forward, consts = _traced("membrane_step", cs, cable_value_step_source, ind,
                              prefix="f", const_prefix="KF")
    loads = [f"{ind}s{k} = S[{k}, j]" for k in range(n_states)]
    loads += [f"{ind}p{i} = P[{i}, j]" for i in range(n_params)]
    stores = [f"{ind}SO[{k}, j] = s{k}_n" for k in range(n_states)]
    text = _STEP.format(loads="\n".join(loads), forward="\n".join(forward),
                        stores="\n".join(stores) or f"{ind}pass")
    text += _DRIVER.format(name="mem_kernel", block="mem_block", args=_STEP_ARGS)
    return text, consts


def vjp_source(cs: ChannelSet) -> tuple[str, dict[str, float]]:
    """The backward kernel's source and its constants."""
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    ind = " " * 8
    forward, fwd_consts = _traced("membrane_step_vjp", cs, cable_value_step_source, ind,
                                  prefix="f", const_prefix="KF")
    adjoint, consts, rows = _traced("membrane_step_vjp", cs, cable_adjoint_step_source, ind,
                                   share_exp=True)
    loads = [f"{ind}s{k} = S[{k}, j]" for k in range(n_states)]
    loads += [f"{ind}p{i} = P[{i}, j]" for i in range(n_params)]
    adj_loads = [f"{ind}as{k}_n = ASN[{k}, j]" for k in range(n_states)]
    stores = [f"{ind}AS[{k}, j] = as{k}" for k in range(n_states)]
    stores += [f"{ind}AP[{i}, j] = ap{i}" for i in rows]
    text = _VJP.format(loads="\n".join(loads), forward="\n".join(forward),
                       adj_loads="\n".join(adj_loads) or f"{ind}pass",
                       adjoint="\n".join(adjoint), stores="\n".join(stores))
    text += _DRIVER.format(name="vjp_kernel", block="vjp_block", args=_VJP_ARGS)
    return text, {**consts, **fwd_consts}


_kernels: dict[tuple[str, str, str], Any] = {}


def _kernel(kind: str, cs: ChannelSet, dtype: str) -> Any:
    key = (kind, cs.key, dtype)
    compiled = _kernels.get(key)
    if compiled is not None:
        return compiled
    configure()
    import numba

    text, consts = (step_source if kind == "mem" else vjp_source)(cs)
    scalar = np.dtype(dtype).type
    ns: dict[str, Any] = {"np": np, "prange": numba.prange, "CHUNK": CHUNK,
                          **graph_math(dtype), **{k: scalar(c) for k, c in consts.items()},
                          **reversal_constants(cs, scalar)}
    _kernels[key] = compiled = _compile_generated(kind, cs, dtype, text, ns, f"{kind}_block",
                                                  f"{kind}_kernel")
    return compiled


@register_kernel(mem.membrane_step_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def membrane_step_cpu(v: np.ndarray, states: np.ndarray, params: np.ndarray, i_inj: np.ndarray,
                      g_syn: np.ndarray, ge_syn: np.ndarray, *, channels: Any, dt: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One call over the neurons (parallel chunks for large ``n``)."""
    cs = channel_set(channels)
    c = np.ascontiguousarray
    n = v.shape[0]
    VO = np.empty_like(v)
    SO = np.empty(states.shape, dtype=v.dtype)
    if n:
        _kernel("mem", cs, v.dtype.name)(n, c(v), c(states), c(params), c(i_inj), c(g_syn),
                                         c(ge_syn), v.dtype.type(dt), VO, SO)
    return VO, SO


@register_kernel(mem.membrane_step_vjp_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def membrane_step_vjp_cpu(v: np.ndarray, states: np.ndarray, params: np.ndarray,
                          i_inj: np.ndarray, g_syn: np.ndarray, ge_syn: np.ndarray,
                          a_v: np.ndarray, a_states: np.ndarray, *, channels: Any, dt: float
                          ) -> tuple[np.ndarray, ...]:
    """The forward recomputed per neuron, then its local adjoint, in one call."""
    cs = channel_set(channels)
    c = np.ascontiguousarray
    n = v.shape[0]
    dtype = v.dtype
    AV, AI, AG, AGE = (np.empty(n, dtype=dtype) for _ in range(4))
    AS = np.empty(states.shape, dtype=dtype)
    AP = np.zeros(params.shape, dtype=dtype)
    if n:
        _kernel("vjp", cs, dtype.name)(n, c(v), c(states), c(params), c(i_inj), c(g_syn),
                                       c(ge_syn), c(a_v), c(a_states), dtype.type(dt), AV, AS,
                                       AP, AI, AG, AGE)
    return AV, AS, AP, AI, AG, AGE
