"""A network differentiable over a whole run: ``network_run`` and its backward, ``network_run_vjp``.

``network_run`` is :func:`fusekit.ops.network_simulate`'s scheme step by step (the membranes by
:func:`~fusekit.ops.membrane_step`'s kernel, the spikes by
:func:`~fusekit.ops.synapse_deliver`'s), keeping a checkpoint at the start of every
``segment`` steps: the potentials, states, synaptic conductances, the spike counts, and for the
spikes in flight the crossings of the ``delay_steps`` steps before it (``ck_spikes``, one flag
per neuron and step; the vjp rebuilds their deliveries, :func:`ring_at`, and takes
``arrivals0`` for the slots no step has filled yet). ``network_run_vjp`` walks the segments
last first: it re-runs one from its checkpoint keeping every step, then goes back through it
with the steps' vector-Jacobian products, in one call. A
spike is discrete: forward it is the threshold crossing; backward its derivative with respect
to the new potential is SuperSpike's, ``1 / (1 + slope |v' - threshold|)^2``, at every step of
every neuron (times ``[v < threshold]``), as in :func:`fusekit.neuro.network_simulate_torch`.

Per step of the backward, with ``g`` the synaptic conductances after the step's decay and
arrivals and ``A[slot]`` the adjoint of the arrivals a step sends (read when the step that
receives them was walked):

    a_spikes, a_w += synapse_deliver_vjp(spikes, A[slot])
    a_v' += a_spikes * surrogate'(v' - thr) * [v < thr] + recorded and spike-time terms
    a_v, a_S, a_P, a_i, a_gs, a_ge = membrane_step_vjp(..., a_v', a_S')
    a_g += a_gs + a_ge * e_syn;  A[slot] = a_g;  a_g *= decay

The loops here take the per-step kernels as arguments; the reference runs them on its NumPy
steps as the float64 oracle. The CPU backend runs the compiled loops of
:mod:`fusekit.ops.ion_cable_network_grad` on cells of one compartment
(``backends/cpu/ion_network_grad.py``), which the tests hold to these loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .._errors import InputError
from .._registry import Op, array_dtype
from ._common import is_whole, require_shapes
from .ion import _check_network_simulate, synapse_decays, synapse_kinds

__all__ = ["StepKernels", "network_run_loop", "network_run_vjp_loop"]


class StepKernels(NamedTuple):
    """A backend's per-step functions on NumPy arrays (inputs checked by the caller).

    ``membrane(v, S, P, i, g, ge) -> (v', S')``; ``membrane_vjp(v, S, P, i, g, ge, a_v',
    a_S') -> (a_v, a_S, a_P, a_i, a_g, a_ge)``; ``deliver(spikes) -> arrivals (n_out,)``;
    ``deliver_vjp(spikes, a_out) -> (a_spikes, a_weights)`` (the CSR bound in).
    """

    membrane: Callable[..., tuple[np.ndarray, np.ndarray]]
    membrane_vjp: Callable[..., tuple[np.ndarray, ...]]
    deliver: Callable[[np.ndarray], np.ndarray]
    deliver_vjp: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class _Net(NamedTuple):
    n: int
    n_types: int
    delay: int
    decay: np.ndarray  # (n_types, 1)
    e_rev: np.ndarray  # (n_types, 1)
    P: np.ndarray
    I: np.ndarray  # (rows, n)  # noqa: E741 - the current density, as in the ops
    i_rows: int
    thr: float
    dt: float
    record_every: int
    max_spikes: int


def _net(params: np.ndarray, i_ext: np.ndarray, *, dt: float, n_steps: int, delay_steps: int,
         tau_syn: Any, e_syn: Any, record_every: int, spike_threshold: float,
         max_spikes: int) -> _Net:
    taus, es, _ = synapse_kinds(tau_syn, e_syn)
    dtype = params.dtype
    n = params.shape[1]
    I = i_ext.reshape(-1, n)  # noqa: E741 - the current density, as in the ops
    return _Net(n, len(taus), int(delay_steps),
                np.array(synapse_decays(dt, taus), dtype=dtype).reshape(-1, 1),
                np.array(es, dtype=dtype).reshape(-1, 1), params, I, int(I.shape[0] > 1),
                float(spike_threshold), float(dt), int(record_every), int(max_spikes))


def ring_at(a: int, delay: int, spikes: np.ndarray, arrivals0: np.ndarray,
            deliver: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The arrivals in flight at the start of step ``a``, ``(delay, n_out)`` by slot.

    A checkpoint keeps the spikes of the ``delay`` steps before it (``spikes[slot]``, the
    crossings of the step whose deliveries sit in ``slot``) instead of their deliveries:
    ``n`` flags a slot instead of ``n_types x n`` (a cable network: ``x n_comp``) values.
    The slot read at step ``a + x`` holds ``arrivals0[a + x]`` while ``a + x < delay``, else
    the delivery of the spikes of step ``a + x - delay``, the same sums as the run made.
    """
    ring = np.zeros((delay, arrivals0[0].size), dtype=arrivals0.dtype)
    for x in range(delay):
        step = a + x
        slot = step % delay
        if step < delay:
            ring[slot] = arrivals0[step].reshape(-1)
        elif spikes[slot].any():
            ring[slot] = deliver(spikes[slot].astype(arrivals0.dtype))
    return ring


def _run(net: _Net, k: StepKernels, state: list[Any], a: int, b: int,
         out: tuple[np.ndarray, np.ndarray] | None, keep: bool) -> list[tuple[Any, ...]]:
    """Steps ``a .. b - 1`` from ``state = [v, S, g, ring, count, spikes]`` (updated in place).

    ``spikes[slot]``: the crossings whose deliveries sit in ``ring[slot]``. ``out``: the
    forward's ``(v_record, spike_times)`` to fill, or ``None`` (a re-run). ``keep``: return
    every step's ``(v, S, g, g_sum, ge_sum, crossed)``.
    """
    v, S, g, ring, count, spikes = state
    dtype = v.dtype
    thr, n = net.thr, net.n
    traj = []
    for step in range(a, b):
        slot = step % net.delay
        g = g * net.decay + ring[slot].reshape(net.n_types, n)
        if net.n_types == 1:
            gs, ge = g[0], g[0] * net.e_rev[0, 0]
        else:
            gs, ge = g.sum(0), (g * net.e_rev).sum(0)
        v_new, S_new = k.membrane(v, S, net.P, net.I[step * net.i_rows], gs, ge)
        crossed = (v < thr) & (v_new >= thr)
        any_spike = bool(crossed.any())
        if keep:
            traj.append((v, S, g, gs, ge, crossed))
        if out is not None:
            v_record, times = out
            if any_spike and net.max_spikes:
                idx = np.nonzero(crossed & (count < net.max_spikes))[0]
                den = v_new[idx] - v[idx]
                times[count[idx], idx] = (step + (thr - v[idx]) / den) * net.dt
            if net.record_every and (step + 1) % net.record_every == 0:
                v_record[(step + 1) // net.record_every - 1] = v_new
        count += crossed
        ring[slot] = k.deliver(crossed.astype(dtype)) if any_spike else 0
        spikes[slot] = crossed
        v, S = v_new, S_new
    state[:] = [v, S, g, ring, count, spikes]
    return traj


def network_run_loop(k: StepKernels, v0: np.ndarray, states0: np.ndarray, params: np.ndarray,
                     i_ext: np.ndarray, g_syn0: np.ndarray, arrivals0: np.ndarray, *,
                     n_steps: int, segment: int, **kw: Any) -> tuple[np.ndarray, ...]:
    """The forward of ``network_run`` on backend ``k``'s steps (see the module docstring)."""
    net = _net(params, i_ext, n_steps=n_steps, **kw)
    n, dtype = net.n, v0.dtype
    n_seg = -(-n_steps // segment)
    n_rec = n_steps // net.record_every if net.record_every else 0
    v_record = np.zeros((n_rec, n), dtype=dtype)
    times = np.full((net.max_spikes, n), np.nan, dtype=dtype)
    ck_v = np.empty((n_seg, n), dtype=dtype)
    ck_S = np.empty((n_seg, *states0.shape), dtype=dtype)
    ck_g = np.empty((n_seg, net.n_types, n), dtype=dtype)
    ck_spikes = np.empty((n_seg, net.delay, n), dtype=np.bool_)
    ck_count = np.empty((n_seg, n), dtype=np.int64)
    state = [v0.copy(), states0.copy(), g_syn0.reshape(net.n_types, n).copy(),
             arrivals0.reshape(net.delay, -1).copy(), np.zeros(n, dtype=np.int64),
             np.zeros((net.delay, n), dtype=np.bool_)]
    for s in range(n_seg):
        ck_v[s], ck_S[s], ck_g[s], _, ck_count[s], ck_spikes[s] = state
        _run(net, k, state, s * segment, min((s + 1) * segment, n_steps), (v_record, times),
             keep=False)
    v, S, g, ring, count, _ = state
    arrivals = np.stack([ring[(n_steps + x) % net.delay] for x in range(net.delay)])
    return (v, S, g, v_record, count, times, arrivals.reshape(net.delay, net.n_types, n),
            ck_v, ck_S, ck_g, ck_spikes, ck_count)


def network_run_vjp_loop(k: StepKernels, ck_v: np.ndarray, ck_S: np.ndarray, ck_g: np.ndarray,
                         ck_spikes: np.ndarray, ck_count: np.ndarray, params: np.ndarray,
                         i_ext: np.ndarray, arrivals0: np.ndarray, g_v: np.ndarray,
                         g_states: np.ndarray,
                         g_g_syn: np.ndarray, g_v_record: np.ndarray, g_spike_times: np.ndarray,
                         g_arrivals: np.ndarray, *, n_steps: int, segment: int, slope: float,
                         nnz: int, **kw: Any) -> tuple[np.ndarray, ...]:
    """The backward of ``network_run`` on backend ``k``'s steps (see the module docstring)."""
    net = _net(params, i_ext, n_steps=n_steps, **kw)
    n, thr, dt, delay = net.n, net.thr, net.dt, net.delay
    dtype = params.dtype
    a_v, a_S = g_v.astype(dtype), g_states.astype(dtype)
    a_g = g_g_syn.reshape(net.n_types, n).astype(dtype)
    A = np.zeros((delay, net.n_types * n), dtype=dtype)
    for x in range(delay):
        A[(n_steps + x) % delay] = g_arrivals[x].reshape(-1)
    a_P = np.zeros(params.shape, dtype=dtype)
    a_I = np.zeros(net.I.shape, dtype=dtype)
    a_w: np.ndarray | None = None
    n_seg = ck_v.shape[0]
    for s in range(n_seg - 1, -1, -1):
        a, b = s * segment, min((s + 1) * segment, n_steps)
        state = [ck_v[s].copy(), ck_S[s].copy(), ck_g[s].copy(),
                 ring_at(a, delay, ck_spikes[s], arrivals0.reshape(delay, -1), k.deliver),
                 ck_count[s].copy(), ck_spikes[s].copy()]
        traj = _run(net, k, state, a, b, None, keep=True)
        v_next, count = state[0], state[4]
        for t in range(b - 1, a - 1, -1):
            v, S, g, gs, ge, crossed = traj[t - a]
            slot = t % delay
            vn = v_next
            a_spikes, a_w_t = k.deliver_vjp(crossed.astype(dtype), A[slot])
            a_w = a_w_t if a_w is None else a_w + a_w_t
            surrogate = (v < thr) / np.square(1 + slope * np.abs(vn - thr))
            a_vn = a_v + (a_spikes * surrogate).astype(dtype)
            if net.record_every and (t + 1) % net.record_every == 0:
                a_vn += g_v_record[(t + 1) // net.record_every - 1]
            count -= crossed
            idx = None
            if net.max_spikes and crossed.any():
                idx = np.nonzero(crossed & (count < net.max_spikes))[0]
                g_t = g_spike_times[count[idx], idx]
                den2 = np.square(vn[idx] - v[idx])
                a_vn[idx] -= g_t * dt * (thr - v[idx]) / den2
            row = t * net.i_rows
            av, aS, aP, ai, ag, age = k.membrane_vjp(v, S, net.P, net.I[row], gs, ge, a_vn,
                                                     a_S)
            if idx is not None:
                av[idx] += g_t * dt * (thr - vn[idx]) / den2
            a_P += aP
            a_I[row] += ai
            a_g = a_g + ag + age * net.e_rev
            A[slot] = a_g.reshape(-1)
            a_g = a_g * net.decay
            a_v, a_S, v_next = av, aS, v
    if a_w is None:  # no step: the weights did nothing
        a_w = np.zeros(nnz, dtype=dtype)
    return (a_v, a_S, a_P, a_I.reshape(i_ext.shape), a_g,
            a_w, A.reshape(delay, net.n_types, n))


# ----------------------------------------------------------------------------- the ops


def _check_segment(op: str, segment: Any) -> None:
    if not is_whole(segment) or segment < 1:
        raise InputError(f"{op}: segment must be a positive number of steps, got {segment!r}")


def _check_network_run(v0: Any, states0: Any, params: Any, i_ext: Any, g_syn0: Any,
                       indptr: Any, indices: Any, weights: Any, arrivals0: Any,
                       synapse_type: Any, *, segment: int, **kw: Any) -> str:
    _check_segment("network_run", segment)
    return _check_network_simulate(v0, states0, params, i_ext, g_syn0, indptr, indices, weights,
                                   arrivals0, synapse_type, **kw)


network_run_op = Op(
    name="network_run",
    family="ion_network_grad",
    array_args=("v0", "states0", "params", "i_ext", "g_syn0", "indptr", "indices", "weights",
                "arrivals0", "synapse_type"),
    params=("channels", "dt", "n_steps", "delay_steps", "tau_syn", "e_syn", "record_every",
            "spike_threshold", "max_spikes", "segment"),
    check=_check_network_run,
)


def check_vjp_arrays(op: str, params: Any, ck_spikes: Any, floats: dict[str, Any],
                     ints: dict[str, Any], *, slope: Any) -> str:
    """The checks both whole-run vjps share after their shapes'; returns the dtype.

    The surrogate's slope, ``params`` float32 or float64, ``ck_spikes`` bool, every array of
    ``floats`` of ``params``' dtype, every one of ``ints`` integers.
    """
    if not (isinstance(slope, int | float) and math.isfinite(slope) and slope > 0):
        raise InputError(f"{op}: slope (the SuperSpike surrogate's, 1/mV) must be positive, "
                         f"got {slope!r}")
    dtype = array_dtype(params)
    if dtype not in ("float32", "float64"):
        raise InputError(f"{op}: arrays must be float32 or float64, got {dtype}")
    if array_dtype(ck_spikes) != "bool":
        raise InputError(f"{op}: ck_spikes must be a bool array (the forward's checkpoints), "
                         f"got {array_dtype(ck_spikes)}")
    for name, a in floats.items():
        if array_dtype(a) != dtype:
            raise InputError(f"{op}: {name} must be {dtype} like params, got {array_dtype(a)}")
    for name, a in ints.items():
        if array_dtype(a) not in ("int32", "int64"):
            raise InputError(f"{op}: {name} must be an integer array, got {array_dtype(a)}")
    return dtype


def _check_network_run_vjp(ck_v: Any, ck_S: Any, ck_g: Any, ck_spikes: Any, ck_count: Any,
                           params: Any, i_ext: Any, indptr: Any, indices: Any, weights: Any,
                           arrivals0: Any, synapse_type: Any, g_v: Any, g_states: Any, g_g_syn: Any,
                           g_v_record: Any, g_spike_times: Any, g_arrivals: Any, *,
                           channels: Any, dt: float, n_steps: int, delay_steps: int,
                           tau_syn: Any, e_syn: Any, record_every: int = 0,
                           spike_threshold: float = 0.0, max_spikes: int = 0,
                           segment: int = 1, slope: float = 1.0) -> str:
    op = "network_run_vjp"
    from .ion_channel import channel_set

    cs = channel_set(channels)
    _check_segment(op, segment)
    n = params.shape[-1]
    n_types = len(synapse_kinds(tau_syn, e_syn)[0])
    n_seg = -(-n_steps // segment)
    n_states = len(cs.state_names)
    nnz = weights.shape[0]
    shapes = {
        "ck_v": (ck_v, (n_seg, n)), "ck_S": (ck_S, (n_seg, n_states, n)),
        "ck_g": (ck_g, (n_seg, n_types, n)),
        "ck_spikes": (ck_spikes, (n_seg, delay_steps, n)),
        "ck_count": (ck_count, (n_seg, n)), "params": (params, (len(cs.param_names), n)),
        "indptr": (indptr, (n + 1,)), "indices": (indices, (nnz,)),
        "arrivals0": (arrivals0, (delay_steps, n_types, n)),
        "g_v": (g_v, (n,)), "g_states": (g_states, (n_states, n)),
        "g_g_syn": (g_g_syn, (n_types, n)),
        "g_v_record": (g_v_record, (n_steps // record_every if record_every else 0, n)),
        "g_spike_times": (g_spike_times, (max_spikes, n)),
        "g_arrivals": (g_arrivals, (delay_steps, n_types, n)),
    }
    require_shapes(op, shapes, i_ext, n_steps)
    if tuple(synapse_type.shape) not in ((nnz,), (0,)):
        raise InputError(f"{op}: synapse_type must be ({nnz},) or (0,), got "
                         f"{tuple(synapse_type.shape)}")
    floats = {"ck_v": ck_v, "ck_S": ck_S, "ck_g": ck_g, "arrivals0": arrivals0, "i_ext": i_ext,
              "weights": weights, "g_v": g_v, "g_states": g_states, "g_g_syn": g_g_syn,
              "g_v_record": g_v_record, "g_spike_times": g_spike_times,
              "g_arrivals": g_arrivals}
    ints = {"ck_count": ck_count, "indptr": indptr, "indices": indices,
            "synapse_type": synapse_type}
    return check_vjp_arrays(op, params, ck_spikes, floats, ints, slope=slope)


network_run_vjp_op = Op(
    name="network_run_vjp",
    family="ion_network_grad",
    array_args=("ck_v", "ck_S", "ck_g", "ck_spikes", "ck_count", "params", "i_ext", "indptr",
                "indices", "weights", "arrivals0", "synapse_type", "g_v", "g_states", "g_g_syn",
                "g_v_record", "g_spike_times", "g_arrivals"),
    params=("channels", "dt", "n_steps", "delay_steps", "tau_syn", "e_syn", "record_every",
            "spike_threshold", "max_spikes", "segment", "slope"),
    check=_check_network_run_vjp,
)


def synapse_targets_flat(indices: np.ndarray, synapse_type: np.ndarray, n: int) -> np.ndarray:
    """Every synapse's place in the flattened ``(n_types, n)`` conductances."""
    if synapse_type.shape[0] == 0:
        return indices.astype(np.int64)
    return synapse_type.astype(np.int64) * n + indices


def _bind(make: Callable[..., StepKernels], channels: Any, dt: float, indptr: np.ndarray,
          indices: np.ndarray, weights: np.ndarray, synapse_type: np.ndarray, tau_syn: Any,
          e_syn: Any) -> StepKernels:
    """``make``'s per-step kernels bound to this network's synapses."""
    from .ion_channel import channel_set

    n = indptr.shape[0] - 1
    n_types = len(synapse_kinds(tau_syn, e_syn)[0])
    return make(channel_set(channels), dt, indptr, weights,
                synapse_targets_flat(indices, synapse_type, n), n_types * n)


def network_run_with(make: Callable[..., StepKernels], v0: np.ndarray, states0: np.ndarray,
                     params: np.ndarray, i_ext: np.ndarray, g_syn0: np.ndarray,
                     indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray,
                     arrivals0: np.ndarray, synapse_type: np.ndarray, *, channels: Any,
                     dt: float, n_steps: int, delay_steps: int, tau_syn: Any, e_syn: Any,
                     record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
                     segment: int = 1) -> tuple[np.ndarray, ...]:
    """``network_run`` on the steps ``make(channels, dt, indptr, weights, target, n_out)``."""
    k = _bind(make, channels, dt, indptr, indices, weights, synapse_type, tau_syn, e_syn)
    return network_run_loop(k, v0, states0, params, i_ext, g_syn0, arrivals0, dt=dt,
                            n_steps=n_steps, delay_steps=delay_steps, tau_syn=tau_syn,
                            e_syn=e_syn, record_every=record_every,
                            spike_threshold=spike_threshold, max_spikes=max_spikes,
                            segment=segment)


def network_run_vjp_with(make: Callable[..., StepKernels], ck_v: np.ndarray, ck_S: np.ndarray,
                         ck_g: np.ndarray, ck_spikes: np.ndarray, ck_count: np.ndarray,
                         params: np.ndarray, i_ext: np.ndarray, indptr: np.ndarray,
                         indices: np.ndarray, weights: np.ndarray, arrivals0: np.ndarray,
                         synapse_type: np.ndarray, g_v: np.ndarray, g_states: np.ndarray,
                         g_g_syn: np.ndarray,
                         g_v_record: np.ndarray, g_spike_times: np.ndarray,
                         g_arrivals: np.ndarray, *, channels: Any, dt: float, n_steps: int,
                         delay_steps: int, tau_syn: Any, e_syn: Any, record_every: int = 0,
                         spike_threshold: float = 0.0, max_spikes: int = 0, segment: int = 1,
                         slope: float = 1.0) -> tuple[np.ndarray, ...]:
    """``network_run_vjp`` on the steps ``make(...)`` makes (as :func:`network_run_with`)."""
    k = _bind(make, channels, dt, indptr, indices, weights, synapse_type, tau_syn, e_syn)
    return network_run_vjp_loop(
        k, ck_v, ck_S, ck_g, ck_spikes, ck_count, params, i_ext, arrivals0, g_v, g_states,
        g_g_syn,
        g_v_record, g_spike_times, g_arrivals, dt=dt, n_steps=n_steps,
        delay_steps=delay_steps, tau_syn=tau_syn, e_syn=e_syn, record_every=record_every,
        spike_threshold=spike_threshold, max_spikes=max_spikes, segment=segment, slope=slope,
        nnz=weights.shape[0])
