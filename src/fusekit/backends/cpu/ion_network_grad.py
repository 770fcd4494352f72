"""CPU kernels of the ion_network_grad family: the whole run and its backward, compiled.

The scheme is :mod:`fusekit.ops.ion_network_grad`'s loop (the reference runs it in Python on
the NumPy steps); here the loop over the steps is compiled too, around the Numba kernels of
:mod:`.ion_membrane` (``mem_kernel``, ``vjp_kernel``), with the synapses' delivery and its
adjoint, the spike detection, the spike-time terms and the arrival ring inline. A step of the
Python loop over the compiled kernels cost about 80 us of NumPy glue forward and 190 us
backward at 500 neurons (0.10 + 0.30 ms per step against 0.02 + 0.11 ms in the kernels).

The loop functions are generated into a module of their own per channel set and dtype, with
the two step kernels as globals, so Numba's disk cache keeps them; the module's text names the
step kernels' sources by hash, so a changed step kernel compiles the loop afresh.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..._registry import register_kernel
from ...ops import ion_membrane as mem
from ...ops import ion_network_grad as grad
from ...ops.ion_channel import ChannelSet
from ._numba import configure, njit
from .ion import _FASTMATH, _generated_globals
from .ion_membrane import _csr_code, _kernel, step_source, vjp_source

_FLOATS = ("float32", "float64")

_LOOPS = '''
def net_forward(v, S, g, ring, count, P, I, i_rows, decay, e_rev, thr, dt, a, b,
                record_every, max_spikes, V_rec, times, indptr, weights, target,
                keep, TV, TS, TG, TC, vn, Sn, gs, ge):
    """Steps a .. b - 1 in place on (v, S, g, ring, count); every step's inputs into TV..TC
    when keep (row step - a)."""
    n = v.shape[0]
    nt = g.shape[0]
    delay = ring.shape[0]
    for step in range(a, b):
        slot = step % delay
        for k in range(nt):
            dk = decay[k]
            for j in range(n):
                g[k, j] = g[k, j] * dk + ring[slot, k * n + j]
        e0 = e_rev[0]
        for j in range(n):
            gs[j] = g[0, j]
            ge[j] = g[0, j] * e0
        for k in range(1, nt):
            ek = e_rev[k]
            for j in range(n):
                gs[j] += g[k, j]
                ge[j] += g[k, j] * ek
        if keep:
            r = step - a
            TV[r, :] = v
            TS[r] = S
            TG[r] = g
        mem_kernel(v, S, P, I[step * i_rows], gs, ge, dt, vn, Sn)
        ring[slot, :] = 0
        for j in range(n):
            crossed = v[j] < thr and vn[j] >= thr
            if keep:
                TC[step - a, j] = crossed
            if crossed:
                c = count[j]
                if c < max_spikes:
                    times[c, j] = (step + (thr - v[j]) / (vn[j] - v[j])) * dt
                count[j] = c + 1
                for s in range(indptr[j], indptr[j + 1]):
                    ring[slot, target[s]] += weights[s]
        if record_every > 0 and (step + 1) % record_every == 0:
            V_rec[(step + 1) // record_every - 1, :] = vn
        v[:] = vn
        S[:] = Sn


def net_backward(ck_v, ck_S, ck_g, ck_ring, ck_count, P, I, i_rows, decay, e_rev, thr, dt,
                 n_steps, segment, record_every, max_spikes, slope, indptr, weights, target,
                 g_v_record, g_spike_times, a_v, a_S, a_g, A, a_P, a_I, a_w,
                 TV, TS, TG, TC, v, S, g, ring, count, vn, Sn, gs, ge, OUT, a_vn, a_spk,
                 V_rec0, times0):
    """The segments last first: each re-run from its checkpoint, then walked back."""
    n = v.shape[0]
    nt = g.shape[0]
    n_states = S.shape[0]
    n_params = P.shape[0]
    delay = A.shape[0]
    k_i = 1 + n_states + n_params
    for seg in range(ck_v.shape[0] - 1, -1, -1):
        a = seg * segment
        b = min(a + segment, n_steps)
        v[:] = ck_v[seg]
        S[:] = ck_S[seg]
        g[:] = ck_g[seg]
        ring[:] = ck_ring[seg]
        count[:] = ck_count[seg]
        net_forward(v, S, g, ring, count, P, I, i_rows, decay, e_rev, thr, dt, a, b, 0, 0,
                    V_rec0, times0, indptr, weights, target, True, TV, TS, TG, TC, vn, Sn,
                    gs, ge)
        for t in range(b - 1, a - 1, -1):
            r = t - a
            slot = t % delay
            vt = TV[r]
            crossed = TC[r]
            if t == b - 1:
                vnext = v  # the segment's last potentials, after the re-run
            else:
                vnext = TV[r + 1]
            for i in range(n):
                acc = 0.0
                spiked = crossed[i]
                for s in range(indptr[i], indptr[i + 1]):
                    x = A[slot, target[s]]
                    acc += weights[s] * x
                    if spiked:
                        a_w[s] += x
                a_spk[i] = acc
            rec = record_every > 0 and (t + 1) % record_every == 0
            r_rec = (t + 1) // record_every - 1 if rec else 0
            for j in range(n):
                sur = 0.0
                if vt[j] < thr:
                    d = 1 + slope * abs(vnext[j] - thr)
                    sur = 1 / (d * d)
                x = a_v[j] + a_spk[j] * sur
                if rec:
                    x += g_v_record[r_rec, j]
                if crossed[j]:
                    count[j] -= 1
                    c = count[j]
                    if c < max_spikes:
                        x -= g_spike_times[c, j] * dt * (thr - vt[j]) / (vnext[j] - vt[j]) ** 2
                a_vn[j] = x
            gt = TG[r]
            e0 = e_rev[0]
            for j in range(n):
                gs[j] = gt[0, j]
                ge[j] = gt[0, j] * e0
            for k in range(1, nt):
                ek = e_rev[k]
                for j in range(n):
                    gs[j] += gt[k, j]
                    ge[j] += gt[k, j] * ek
            row = t * i_rows
            vjp_kernel(vt, TS[r], P, I[row], gs, ge, a_vn, a_S, dt, OUT)
            for j in range(n):
                if crossed[j] and count[j] < max_spikes:
                    OUT[0, j] += (g_spike_times[count[j], j] * dt * (thr - vnext[j])
                                  / (vnext[j] - vt[j]) ** 2)
            for i in range(n_params):
                for j in range(n):
                    a_P[i, j] += OUT[1 + n_states + i, j]
            for j in range(n):
                a_I[row, j] += OUT[k_i, j]
            for k in range(nt):
                ek = e_rev[k]
                dk = decay[k]
                for j in range(n):
                    y = a_g[k, j] + OUT[k_i + 1, j] + OUT[k_i + 2, j] * ek
                    A[slot, k * n + j] = y
                    a_g[k, j] = y * dk
            a_v[:] = OUT[0]
            for k in range(n_states):
                a_S[k, :] = OUT[1 + k]
'''

_loops: dict[tuple[str, str], tuple[Any, Any]] = {}


def _loop_kernels(cs: ChannelSet, dtype: str) -> tuple[Any, Any]:
    """The compiled ``(net_forward, net_backward)`` for ``cs`` and ``dtype`` (cached)."""
    key = (cs.key, dtype)
    if key in _loops:
        return _loops[key]
    configure()
    steps = {"mem_kernel": _kernel("mem", cs, dtype), "vjp_kernel": _kernel("vjp", cs, dtype)}
    # The step kernels' sources by hash: a changed step kernel gives a new module (and cache).
    stamp = hashlib.sha1((step_source(cs)[0] + vjp_source(cs)[0]).encode()).hexdigest()
    text = f"# step kernels: {stamp}\n{_LOOPS}"
    g = _generated_globals("netrun", cs, dtype, text, {"np": np, **steps})
    if not hasattr(g["net_forward"], "py_func"):  # not compiled in this process yet
        for name in ("net_forward", "net_backward"):
            g[name] = njit(fastmath=_FASTMATH[dtype], error_model="numpy")(g[name])
    _loops[key] = g["net_forward"], g["net_backward"]
    return _loops[key]


def _check_csr(indptr: np.ndarray, target: np.ndarray, n_out: int, op: str = "network_run"
               ) -> None:
    """The CSR checked once for the whole run (the steps then read it unchecked)."""
    code = _csr_code(indptr, target.shape[0])
    if not code and target.size and (int(target.min()) < 0 or int(target.max()) >= n_out):
        code = 2
    if code:
        raise mem.csr_index_error(op, code, indptr.shape[0] - 1, target.shape[0],
                                  n_out)


class _Run:
    """One run's arrays in the loops' layout, and the per-step buffers."""

    def __init__(self, params: np.ndarray, i_ext: np.ndarray, indptr: np.ndarray,
                 indices: np.ndarray, weights: np.ndarray, synapse_type: np.ndarray,
                 n_states: int, *, channels: Any, dt: float, delay_steps: int, tau_syn: Any,
                 e_syn: Any, spike_threshold: float = 0.0, **_: Any) -> None:
        from ...ops.ion import synapse_decays, synapse_kinds
        from ...ops.ion_channel import channel_set

        c = np.ascontiguousarray
        self.cs = channel_set(channels)
        dtype = params.dtype
        self.scalar = dtype.type
        n = params.shape[1]
        taus, es, _ = synapse_kinds(tau_syn, e_syn)
        self.n, self.nt, self.delay = n, len(taus), int(delay_steps)
        self.decay = np.array(synapse_decays(dt, taus), dtype=dtype)
        self.e_rev = np.array(es, dtype=dtype)
        self.P = c(params)
        self.I = c(i_ext).reshape(-1, n)
        self.i_rows = int(self.I.shape[0] > 1)
        self.indptr = c(indptr, dtype=np.int64)
        self.weights = c(weights)
        self.target = c(grad.synapse_targets_flat(c(indices), c(synapse_type), n))
        _check_csr(self.indptr, self.target, self.nt * n)
        self.thr, self.dt = self.scalar(spike_threshold), self.scalar(dt)
        self.vn = np.empty(n, dtype=dtype)
        self.Sn = np.empty((n_states, n), dtype=dtype)
        self.gs = np.empty(n, dtype=dtype)
        self.ge = np.empty(n, dtype=dtype)

    def trajectory(self, length: int, n_states: int) -> tuple[np.ndarray, ...]:
        dtype = self.P.dtype
        return (np.empty((length, self.n), dtype=dtype),
                np.empty((length, n_states, self.n), dtype=dtype),
                np.empty((length, self.nt, self.n), dtype=dtype),
                np.empty((length, self.n), dtype=np.bool_))


@register_kernel(grad.network_run_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def network_run_cpu(v0: np.ndarray, states0: np.ndarray, params: np.ndarray,
                    i_ext: np.ndarray, g_syn0: np.ndarray, indptr: np.ndarray,
                    indices: np.ndarray, weights: np.ndarray, arrivals0: np.ndarray,
                    synapse_type: np.ndarray, *, n_steps: int, record_every: int = 0,
                    max_spikes: int = 0, segment: int = 1, **kw: Any
                    ) -> tuple[np.ndarray, ...]:
    """The whole run in one compiled loop, a checkpoint at every segment's start."""
    run = _Run(params, i_ext, indptr, indices, weights, synapse_type, states0.shape[0], **kw)
    n, nt, delay, dtype = run.n, run.nt, run.delay, params.dtype
    n_seg = -(-n_steps // segment)
    n_rec = n_steps // record_every if record_every else 0
    v_record = np.zeros((n_rec, n), dtype=dtype)
    times = np.full((max_spikes, n), np.nan, dtype=dtype)
    ck_v = np.empty((n_seg, n), dtype=dtype)
    ck_S = np.empty((n_seg, *states0.shape), dtype=dtype)
    ck_g = np.empty((n_seg, nt, n), dtype=dtype)
    ck_ring = np.empty((n_seg, delay, nt * n), dtype=dtype)
    ck_count = np.empty((n_seg, n), dtype=np.int64)
    v, S = np.array(v0, dtype=dtype), np.array(states0, dtype=dtype)
    g = np.array(g_syn0, dtype=dtype).reshape(nt, n)
    ring = np.array(arrivals0, dtype=dtype).reshape(delay, nt * n)
    count = np.zeros(n, dtype=np.int64)
    forward, _ = _loop_kernels(run.cs, dtype.name)
    none = run.trajectory(0, states0.shape[0])
    for s in range(n_seg):
        ck_v[s], ck_S[s], ck_g[s], ck_ring[s], ck_count[s] = v, S, g, ring, count
        forward(v, S, g, ring, count, run.P, run.I, run.i_rows, run.decay, run.e_rev, run.thr,
                run.dt, s * segment, min((s + 1) * segment, n_steps), record_every,
                max_spikes, v_record, times, run.indptr, run.weights, run.target, False,
                *none, run.vn, run.Sn, run.gs, run.ge)
    arrivals = ring[(n_steps + np.arange(delay)) % delay]
    return (v, S, g, v_record, count, times, arrivals.reshape(delay, nt, n), ck_v, ck_S, ck_g,
            ck_ring, ck_count)


@register_kernel(grad.network_run_vjp_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def network_run_vjp_cpu(ck_v: np.ndarray, ck_S: np.ndarray, ck_g: np.ndarray,
                        ck_ring: np.ndarray, ck_count: np.ndarray, params: np.ndarray,
                        i_ext: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
                        weights: np.ndarray, synapse_type: np.ndarray, g_v: np.ndarray,
                        g_states: np.ndarray, g_g_syn: np.ndarray, g_v_record: np.ndarray,
                        g_spike_times: np.ndarray, g_arrivals: np.ndarray, *, n_steps: int,
                        record_every: int = 0, max_spikes: int = 0, segment: int = 1,
                        slope: float = 1.0, **kw: Any) -> tuple[np.ndarray, ...]:
    """The segments re-run and walked back in one compiled loop."""
    c = np.ascontiguousarray
    n_states = ck_S.shape[1]
    run = _Run(params, i_ext, indptr, indices, weights, synapse_type, n_states, **kw)
    n, nt, delay, dtype = run.n, run.nt, run.delay, params.dtype
    a_v = np.array(g_v, dtype=dtype)
    a_S = np.array(g_states, dtype=dtype).reshape(n_states, n)
    a_g = np.array(g_g_syn, dtype=dtype).reshape(nt, n)
    A = np.zeros((delay, nt * n), dtype=dtype)
    A[(n_steps + np.arange(delay)) % delay] = g_arrivals.reshape(delay, nt * n)
    a_P = np.zeros(params.shape, dtype=dtype)
    a_I = np.zeros(run.I.shape, dtype=dtype)
    a_w = np.zeros(weights.shape[0], dtype=dtype)
    OUT = np.zeros((4 + n_states + params.shape[0], n), dtype=dtype)
    _, backward = _loop_kernels(run.cs, dtype.name)
    if n_steps:
        state = (np.empty(n, dtype=dtype), np.empty((n_states, n), dtype=dtype),
                 np.empty((nt, n), dtype=dtype), np.empty((delay, nt * n), dtype=dtype),
                 np.empty(n, dtype=np.int64))
        backward(c(ck_v), c(ck_S), c(ck_g), c(ck_ring), c(ck_count, dtype=np.int64), run.P,
                 run.I, run.i_rows, run.decay, run.e_rev, run.thr, run.dt, n_steps, segment,
                 record_every, max_spikes, run.scalar(slope), run.indptr, run.weights,
                 run.target, c(g_v_record, dtype=dtype), c(g_spike_times, dtype=dtype), a_v,
                 a_S, a_g, A, a_P, a_I, a_w, *run.trajectory(min(segment, n_steps), n_states),
                 *state, run.vn, run.Sn, run.gs, run.ge, OUT, np.empty(n, dtype=dtype),
                 np.empty(n, dtype=dtype), np.empty((0, n), dtype=dtype),
                 np.empty((0, n), dtype=dtype))
    return (a_v, a_S, a_P, a_I.reshape(i_ext.shape), a_g, a_w, A.reshape(delay, nt, n))
