"""CPU kernels of membrane_step and membrane_step_vjp: one network step's channels in Numba.

Generated per channel set from the traced step (:mod:`fusekit.ops.ion_symbolic`): the
forward is a compartment's local half (:func:`~fusekit.ops.ion_symbolic.cable_value_step_source`,
exponentials shared) and the voltage row with the synaptic conductance; the backward
recomputes that forward for each neuron (nothing but the inputs is kept between the two
calls) and runs the compartment's local adjoint
(:func:`~fusekit.ops.ion_symbolic.cable_adjoint_step_source`). Straight-line code over a
loop of neurons, which LLVM vectorises, on one thread: a parallel launch per step cost more
than it saved on our 2-core machines (a step of 4,097 neurons on two threads 430 us, 4,096 on
one 157 us; 8,192 on two 458 us).
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
from ._numba import configure, njit
from .ion import _FASTMATH, ROW_PAD, _generated_globals, graph_math, staged_loops

_FLOATS = ("float32", "float64")

_STEP = '''
def mem_kernel(V, S, P, I, G, GE, dt, VO, SO):
    for j in range(V.shape[0]):
        v = V[j]
{loads}
{forward}
        c_dt = p0 / dt
        VO[j] = (c_dt * v + ge_sum + GE[j] + I[j]) / (c_dt + g_sum + G[j])
{stores}
'''

_STAGED = '''
def {name}({args}):
{span}
    buf = np.empty(N_ROWS * ROW, dtype=DTYPE)
    for lo in range(j0, j1, BLOCK):
        w = min(BLOCK, j1 - lo)
{loads}
{staged}
'''

#: Neurons per block of the kernels' staged loops (64-256 measured alike).
BLOCK = 256


def _traced(op: str, cs: ChannelSet, fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(cs, *args, **kw)
    except UntraceableChannelError as exc:
        raise InputError(f"{op}: the CPU kernel is generated from traced channel functions, "
                         f"and {exc} Use backend='reference' (or, in network_simulate_torch, "
                         "engine='torch')") from None


def _staged(name: str, args: str, sources: dict[str, str], body: list[str],
            stores: dict[str, str], last: list[str], given_rows: bool = False
            ) -> tuple[str, dict[str, int]]:
    """A kernel over blocks of neurons: inputs, ``body`` as short loops, then ``stores``.

    The inputs go into scratch rows, and ``body`` runs as short vector loops
    (``cpu.ion.staged_loops``, as in the adjoint kernels). ``sources``: each input's name and
    where it is read (``"S[0, lo + j]"``); ``stores``: each output's name and where it goes.
    ``given_rows``: over the rows ``j0 .. j1 - 1`` of ``args`` (else every row).
    A step's 100-300 lines in one loop body ran as a scalar loop (the backward: 166 ns a
    neuron, against 110 staged).
    """
    row_of = {x: r for r, x in enumerate(sources)}
    ind = " " * 8
    staged, n_spill = staged_loops(body, row_of, len(sources), None, ind, (),
                                   [f"{dst} = {x}" for x, dst in stores.items()], last=last)
    loads = "\n".join(f"{ind}for j in range(w):\n{ind}    buf[{r} * ROW + j] = {src}"
                      for r, src in enumerate(sources.values()))
    span = "" if given_rows else "    j0, j1 = 0, V.shape[0]"
    text = _STAGED.format(name=name, args=args, span=span, loads=loads, staged=staged)
    return text, {"N_ROWS": len(sources) + n_spill, "BLOCK": BLOCK, "ROW": BLOCK + ROW_PAD}


def _state_sources(cs: ChannelSet) -> dict[str, str]:
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    return {"v": "V[lo + j]", **{f"s{k}": f"S[{k}, lo + j]" for k in range(n_states)},
            **{f"p{i}": f"P[{i}, lo + j]" for i in range(n_params)}, "i_inj": "I[lo + j]",
            "g_syn": "G[lo + j]", "ge_syn": "GE[lo + j]"}


def step_source(cs: ChannelSet, cable: bool = False) -> tuple[str, dict[str, float]]:
    """The forward kernel's source and its constants (``cable``: the local row's form).

    One loop over the neurons, which LLVM vectorises as it is (38-41 ns a neuron for squid
    HH; staged like the backward, 5% slower). The cable form runs over the rows ``j0 .. j1 -
    1`` its caller gives (the compartments with a membrane), staged: its one loop (three
    output arrays beside the inputs) stayed scalar, 107 ns a neuron against 46 staged
    (float64, Zen 1).
    """
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    ind = " " * 8
    forward, consts = _traced("membrane_step", cs, cable_value_step_source, ind,
                              prefix="f", const_prefix="KF")
    if cable:  # a compartment's local row, D = c_m / dt + g_ch + g_syn and
        # R = c_m / dt v + ge_ch + ge_syn + i_inj, for the caller's Hines solve
        body = [line.strip() for line in forward]
        body += ["c_dt = p0 / dt", "d_o = c_dt + g_sum + g_syn",
                 "r_o = c_dt * v + ge_sum + ge_syn + i_inj"]
        stores = {"d_o": "DO[lo + j]", "r_o": "RO[lo + j]",
                  **{f"s{k}_n": f"SO[{k}, lo + j]" for k in range(n_states)}}
        text, sizes = _staged("cmem_kernel", "V, S, P, I, G, GE, dt, DO, RO, SO, j0, j1",
                              _state_sources(cs), body, stores, list(stores), given_rows=True)
        return text, {**consts, **sizes}
    loads = [f"{ind}s{k} = S[{k}, j]" for k in range(n_states)]
    loads += [f"{ind}p{i} = P[{i}, j]" for i in range(n_params)]
    stores = [f"{ind}SO[{k}, j] = s{k}_n" for k in range(n_states)]
    text = _STEP.format(
        loads="\n".join(loads), forward="\n".join(forward),
        stores="\n".join(stores) or f"{ind}pass")
    return text, consts


def vjp_source(cs: ChannelSet, cable: bool = False) -> tuple[str, dict[str, Any]]:
    """The backward kernel's source and its constants.

    ``cable``: the local adjoint of a compartment whose row a Hines solve couples, given the
    adjoint of its right-hand side ``a_R`` (``AR``, the transposed solve's) and its new
    potential (``VN``); ``a_D = -a_R v'``. Its outputs are ``a_v``, the states', the
    parameters' and ``a_i``; ``a_g_syn = a_D`` and ``a_ge_syn = a_R`` are the caller's. It
    runs over the rows ``j0 .. j1 - 1`` its caller gives.
    """
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    op = "cable_network_run_vjp" if cable else "membrane_step_vjp"
    adjoint, consts, rows = _traced(op, cs, cable_adjoint_step_source, "", share_exp=True)
    n_out = 1 + n_states + n_params + 1
    outputs = ["av", *(f"as{k}" for k in range(n_states)), *(f"ap{i}" for i in rows), "ai"]
    out_rows = [0, *(1 + k for k in range(n_states)), *(1 + n_states + i for i in rows),
                n_out - 1]
    states = {k: src for k, src in _state_sources(cs).items() if k not in ("g_syn", "ge_syn")}
    adj_in = {f"as{k}_n": f"ASN[{k}, lo + j]" for k in range(n_states)}
    if cable:
        sources = {**states, "ar_in": "AR[lo + j]", "vn_in": "VN[lo + j]", **adj_in}
        body = ["a_r = ar_in", "a_d = -a_r * vn_in"]
        fwd_consts: dict[str, float] = {}
        name, args = "cvjp_kernel", "V, S, P, I, AR, VN, ASN, dt, OUT, j0, j1"
    else:
        forward, fwd_consts = _traced(op, cs, cable_value_step_source, "", prefix="f",
                                      const_prefix="KF")
        sources = {**_state_sources(cs), "av_n": "AVN[lo + j]", **adj_in}
        body = [line.strip() for line in forward]
        body += ["c_dt = p0 / dt", "d_all = c_dt + g_sum + g_syn",
                 "v_n = (c_dt * v + ge_sum + ge_syn + i_inj) / d_all", "a_r = av_n / d_all",
                 "a_d = -a_r * v_n"]
        outputs += ["a_d", "a_r"]
        out_rows += [n_out, n_out + 1]
        name, args = "vjp_kernel", "V, S, P, I, G, GE, AVN, ASN, dt, OUT"
    body += [line.strip() for line in adjoint]
    stores = {x: f"OUT[{r}, lo + j]" for x, r in zip(outputs, out_rows, strict=True)}
    text, sizes = _staged(name, args, sources, body, stores,
                          [o for o in outputs if o not in ("a_d", "a_r")], given_rows=cable)
    return text, {**consts, **fwd_consts, **sizes}


_kernels: dict[tuple[str, str, str], Any] = {}


def _kernel(kind: str, cs: ChannelSet, dtype: str) -> Any:
    key = (kind, cs.key, dtype)
    compiled = _kernels.get(key)
    if compiled is not None:
        return compiled
    configure()
    source = step_source if kind in ("mem", "cmem") else vjp_source
    text, consts = source(cs, cable=kind.startswith("c"))
    scalar = np.dtype(dtype).type
    ns: dict[str, Any] = {"np": np, **graph_math(dtype),
                          **{k: c if isinstance(c, int) else scalar(c)
                             for k, c in consts.items()},
                          "DTYPE": np.dtype(dtype),
                          **reversal_constants(cs, scalar)}
    g = _generated_globals(kind, cs, dtype, text, ns)
    fn = g[f"{kind}_kernel"]
    if not hasattr(fn, "py_func"):  # not compiled in this process yet
        fn = g[f"{kind}_kernel"] = njit(fastmath=_FASTMATH[dtype], error_model="numpy")(fn)
    _kernels[key] = fn
    return fn


@register_kernel(mem.membrane_step_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def membrane_step_cpu(v: np.ndarray, states: np.ndarray, params: np.ndarray, i_inj: np.ndarray,
                      g_syn: np.ndarray, ge_syn: np.ndarray, *, channels: Any, dt: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One call over the neurons."""
    cs = channel_set(channels)
    c = np.ascontiguousarray
    n = v.shape[0]
    VO = np.empty_like(v)
    SO = np.empty(states.shape, dtype=v.dtype)
    if n:
        _kernel("mem", cs, v.dtype.name)(c(v), c(states), c(params), c(i_inj), c(g_syn),
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
    n, n_states, n_params = v.shape[0], states.shape[0], params.shape[0]
    out = np.zeros((4 + n_states + n_params, n), dtype=v.dtype)
    if n:
        _kernel("vjp", cs, v.dtype.name)(c(v), c(states), c(params), c(i_inj), c(g_syn),
                                         c(ge_syn), c(a_v), c(a_states), v.dtype.type(dt),
                                         out)
    k = 1 + n_states + n_params
    return out[0], out[1:1 + n_states], out[1 + n_states:k], out[k], out[k + 1], out[k + 2]


# ------------------------------------------------------------------ synaptic delivery


@njit(nogil=True)
def _csr_code(indptr, nnz):  # pragma: no cover - compiled
    """0 when ``indptr`` is a CSR row pointer over ``nnz`` entries, else 1 (a pass over n)."""
    n = indptr.shape[0] - 1
    if indptr[0] != 0 or indptr[n] != nnz:
        return 1
    for i in range(n):
        if indptr[i + 1] < indptr[i]:
            return 1
    return 0


@njit(nogil=True)
def _deliver(spikes, indptr, weights, target, out):  # pragma: no cover - compiled
    """``out[target[s]] += w[s] spikes[i]`` over the rows with a spike; 0, or an error code."""
    code = _csr_code(indptr, weights.shape[0])
    if code:
        return code
    n_out = out.shape[0]
    for i in range(spikes.shape[0]):
        x = spikes[i]
        if x != 0:
            for s in range(indptr[i], indptr[i + 1]):
                t = target[s]
                if t < 0 or t >= n_out:
                    return 2
                out[t] += weights[s] * x
    return 0


@njit(nogil=True)
def _deliver_vjp(spikes, indptr, weights, target, a_out, a_spikes, a_weights
                 ):  # pragma: no cover - compiled
    """Both adjoints in one pass over the synapses; 0, or an error code."""
    code = _csr_code(indptr, weights.shape[0])
    if code:
        return code
    n_out = a_out.shape[0]
    for i in range(spikes.shape[0]):
        x = spikes[i]
        acc = 0.0
        for s in range(indptr[i], indptr[i + 1]):
            t = target[s]
            if t < 0 or t >= n_out:
                return 2
            g = a_out[t]
            acc += weights[s] * g
            a_weights[s] = g * x
        a_spikes[i] = acc
    return 0


@register_kernel(mem.synapse_deliver_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def synapse_deliver_cpu(spikes: np.ndarray, indptr: np.ndarray, weights: np.ndarray,
                        target: np.ndarray, *, n_out: int) -> np.ndarray:
    """Rows without a spike are skipped; the CSR is checked as it is read."""
    c = np.ascontiguousarray
    out = np.zeros(n_out, dtype=spikes.dtype)
    code = _deliver(c(spikes), c(indptr), c(weights), c(target), out)
    if code:
        raise mem.csr_index_error("synapse_deliver", code, spikes.shape[0], weights.shape[0],
                                  n_out)
    return out


@register_kernel(mem.synapse_deliver_vjp_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def synapse_deliver_vjp_cpu(spikes: np.ndarray, indptr: np.ndarray, weights: np.ndarray,
                            target: np.ndarray, a_out: np.ndarray, *, n_out: int
                            ) -> tuple[np.ndarray, np.ndarray]:
    """One pass over the synapses."""
    c = np.ascontiguousarray
    a_spikes = np.empty(spikes.shape[0], dtype=spikes.dtype)
    a_weights = np.empty(weights.shape[0], dtype=spikes.dtype)
    code = _deliver_vjp(c(spikes), c(indptr), c(weights), c(target), c(a_out), a_spikes,
                        a_weights)
    if code:
        raise mem.csr_index_error("synapse_deliver_vjp", code, spikes.shape[0],
                                  weights.shape[0], n_out)
    return a_spikes, a_weights
