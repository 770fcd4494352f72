"""CPU kernels of the ion_cable_network_grad family: a network of branched cells, compiled.

The scheme of :mod:`fusekit.ops.ion_cable_network_grad` as two compiled loops over the steps,
like ``network_run``'s (:mod:`.ion_network_grad`), around two generated kernels of
:mod:`.ion_membrane`: ``cmem_kernel`` (every compartment's gates and local Hines row) and
``cvjp_kernel`` (a compartment's local adjoint from the transposed solve's ``a_R``). Between
them the loops hold the Hines solve of every cell (and its transpose backward), the axial
coupling's gradient, spike detection in compartment 0, the synapses onto compartments and
their adjoint, and the ring of arrival adjoints. Inside the loops compartments are
compartment-major (``comp * n_cells + cell``; the wrappers transpose in and out), so every
step of the cells' Hines elimination is one vector loop over the cells, and a junction
(``c_m = 0``, a whole column of cells: ``ops.ion.check_junction_columns``) is a run of rows
that skips the generated kernels: no membrane, its states held, only its ``c_m`` row.

From ``PARALLEL_ROWS`` rows on, each step's generated kernels and the synapses' adjoint run
on all threads (``cmem_parts``, ``cvjp_parts``, ``synapse_adjoint_parts``: the rows or cells
cut into one part per thread, a parallel launch each); the rest of a step stays on one
thread. Every row's and cell's arithmetic is the same either way (the same bits). Two threads
on Zen 1, float64: 160 HH neurons 1.1x, 350 1.26x, 500 1.33x, 1,000 1.47x, 5,000 1.58x
faster than one; 130 about the same, 100 4% slower (the launches cost what the threads
save), hence 128.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..._registry import register_kernel
from ...ops import ion_cable_network_grad as grad
from ...ops.ion import record_columns, synapse_decays, synapse_kinds
from ...ops.ion_channel import ChannelSet, channel_set
from ._numba import configure, njit
from .ion import _FASTMATH, _generated_globals
from .ion_membrane import _csr_code, _kernel, step_source, vjp_source

_FLOATS = ("float32", "float64")

_LOOPS = '''
def synaptic_sums(g, e_rev, gs, ge):
    """gs = the conductances summed over the types, ge = their sum times the reversals."""
    e0 = e_rev[0]
    for x in range(gs.shape[0]):
        gs[x] = g[0, x]
        ge[x] = g[0, x] * e0
    for k in range(1, g.shape[0]):
        ek = e_rev[k]
        for x in range(gs.shape[0]):
            gs[x] += g[k, x]
            ge[x] += g[k, x] * ek


def cmem_parts(v, S, P, Irow, gs, ge, dt, DO, RO, Sn, lo, hi, parts):
    """cmem_kernel on rows lo .. hi - 1, cut into parts (multiples of 8 rows), in parallel."""
    size = ((hi - lo + parts - 1) // parts + 7) // 8 * 8
    for t in prange(parts):
        a = lo + t * size
        b = min(hi, a + size)
        if a < b:
            cmem_kernel(v, S, P, Irow, gs, ge, dt, DO, RO, Sn, a, b)


def cvjp_parts(vt, St, P, Irow, lam, vnext, a_S, dt, OUT, lo, hi, parts):
    """cvjp_kernel on rows lo .. hi - 1, cut into parts, in parallel (as cmem_parts)."""
    size = ((hi - lo + parts - 1) // parts + 7) // 8 * 8
    for t in prange(parts):
        a = lo + t * size
        b = min(hi, a + size)
        if a < b:
            cvjp_kernel(vt, St, P, Irow, lam, vnext, a_S, dt, OUT, a, b)


def synapse_adjoint(A_slot, crossed, indptr, weights, target, a_w, a_spk, lo, hi):
    """Cells lo .. hi - 1: a_spk[c], the adjoint of c's spike (the arrivals' adjoints its
    synapses read, weighted), and, where c spiked, each synapse's a_w."""
    for c in range(lo, hi):
        acc = 0.0
        spiked = crossed[c]
        for s in range(indptr[c], indptr[c + 1]):
            x = A_slot[target[s]]
            acc += weights[s] * x
            if spiked:
                a_w[s] += x
        a_spk[c] = acc


def synapse_adjoint_parts(A_slot, crossed, indptr, weights, target, a_w, a_spk, parts):
    """synapse_adjoint on all cells, cut into parts, in parallel."""
    n_cells = a_spk.shape[0]
    size = (n_cells + parts - 1) // parts
    for t in prange(parts):
        synapse_adjoint(A_slot, crossed, indptr, weights, target, a_w, a_spk, t * size,
                        min(n_cells, (t + 1) * size))


def cnet_forward(v, S, g, ring, count, hist, P, I, i_rows, decay, e_rev, thr, dt, runs, a, b,
                 record_every, cols, max_spikes, V_rec, times, indptr, weights, target,
                 parent, up, low, axial, keep, TV, TS, TG, TD, TC, vn, Sn, gs, ge, DO, RO,
                 dd, bb, parts):
    """Steps a .. b - 1 in place on (v, S, g, ring, count, hist); hist[slot] holds the
    spikes whose deliveries sit in ring[slot]. With keep, every step's inputs and Hines
    diagonal into TV..TC (row step - a). runs: (lo, hi, junction) row ranges."""
    N = v.shape[0]
    nc = parent.shape[0]
    n_cells = N // nc
    nt = g.shape[0]
    delay = ring.shape[0]
    for step in range(a, b):
        slot = step % delay
        for k in range(nt):
            dk = decay[k]
            for x in range(N):
                g[k, x] = g[k, x] * dk + ring[slot, k * N + x]
        synaptic_sums(g, e_rev, gs, ge)
        r = step - a
        if keep:
            TV[r, :] = v
            TS[r] = S
            TG[r] = g
        row = step * i_rows
        for q in range(runs.shape[0]):
            lo = runs[q, 0]
            hi = runs[q, 1]
            if runs[q, 2]:  # junctions: c_m's row, states held
                for x in range(lo, hi):
                    c_dt = P[0, x] / dt
                    DO[x] = c_dt + gs[x]
                    RO[x] = c_dt * v[x] + ge[x] + I[row, x]
                    for k in range(Sn.shape[0]):
                        Sn[k, x] = S[k, x]
            elif parts > 1:
                cmem_parts(v, S, P, I[row], gs, ge, dt, DO, RO, Sn, lo, hi, parts)
            else:
                cmem_kernel(v, S, P, I[row], gs, ge, dt, DO, RO, Sn, lo, hi)
        for x in range(N):
            DO[x] += axial[x]
        if keep:
            TD[r, :] = DO
#SOLVE vn DO RO up low 8
        ring[slot, :] = 0
        for c in range(n_cells):
            o = c  # compartment 0 of cell c
            crossed = v[o] < thr and vn[o] >= thr
            hist[slot, c] = crossed
            if keep:
                TC[r, c] = crossed
            if crossed:
                cnt = count[c]
                if cnt < max_spikes:
                    times[cnt, c] = (step + (thr - v[o]) / (vn[o] - v[o])) * dt
                count[c] = cnt + 1
                for s in range(indptr[c], indptr[c + 1]):
                    ring[slot, target[s]] += weights[s]
        if record_every > 0 and (step + 1) % record_every == 0:
            rr = (step + 1) // record_every - 1
            for c in range(n_cells):
                for q in range(cols.shape[0]):
                    V_rec[rr, c, q] = vn[cols[q] * n_cells + c]
        v[:] = vn
        S[:] = Sn


def cnet_backward(ck_v, ck_S, ck_g, ck_spikes, ck_count, arr0, P, I, i_rows, decay, e_rev,
                  thr, dt, runs, n_steps, segment, record_every, cols, max_spikes, slope, indptr,
                  weights, target, parent, up, low, axial, g_v_record, g_spike_times, a_v,
                  a_S, a_g, A, a_P, a_I, a_C, a_w, TV, TS, TG, TD, TC, v, S, g, ring, count,
                  hist, vn, Sn, gs, ge, DO, RO, dd, bb, OUT, a_vn, lam, a_spk, V_rec0,
                  times0, parts):
    """The segments last first: each re-run from its checkpoint, then walked back."""
    N = v.shape[0]
    nc = parent.shape[0]
    n_cells = N // nc
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
        count[:] = ck_count[seg]
        hist[:] = ck_spikes[seg]
        # the arrivals in flight at step a: arr0's while a + x < delay, else the deliveries
        # of the spikes of step a + x - delay, summed in the forward's order
        for x in range(delay):
            slot = (a + x) % delay
            if a + x < delay:
                ring[slot, :] = arr0[a + x]
            else:
                ring[slot, :] = 0
                for c in range(n_cells):
                    if hist[slot, c]:
                        for s in range(indptr[c], indptr[c + 1]):
                            ring[slot, target[s]] += weights[s]
        cnet_forward(v, S, g, ring, count, hist, P, I, i_rows, decay, e_rev, thr, dt, runs, a,
                     b, 0, cols, 0, V_rec0, times0, indptr, weights, target, parent, up, low,
                     axial, True, TV, TS, TG, TD, TC, vn, Sn, gs, ge, DO, RO, dd, bb, parts)
        for t in range(b - 1, a - 1, -1):
            r = t - a
            slot = t % delay
            vt = TV[r]
            crossed = TC[r]
            if t == b - 1:
                vnext = v  # the segment's last potentials, after the re-run
            else:
                vnext = TV[r + 1]
            if parts > 1:
                synapse_adjoint_parts(A[slot], crossed, indptr, weights, target, a_w, a_spk,
                                      parts)
            else:
                synapse_adjoint(A[slot], crossed, indptr, weights, target, a_w, a_spk, 0,
                                n_cells)
            a_vn[:] = a_v
            if record_every > 0 and (t + 1) % record_every == 0:
                rr = (t + 1) // record_every - 1
                for c in range(n_cells):
                    for q in range(cols.shape[0]):
                        a_vn[cols[q] * n_cells + c] += g_v_record[rr, c, q]
            for c in range(n_cells):
                o = c  # compartment 0 of cell c
                if vt[o] < thr:
                    d = 1 + slope * abs(vnext[o] - thr)
                    a_vn[o] += a_spk[c] / (d * d)
                if crossed[c]:
                    count[c] -= 1
                    cnt = count[c]
                    if cnt < max_spikes:
                        a_vn[o] -= (g_spike_times[cnt, c] * dt * (thr - vt[o])
                                    / (vnext[o] - vt[o]) ** 2)
            # the transposed Hines solve (lower and upper swap roles) on copies of the rows
            dd[:] = TD[r]
            bb[:] = a_vn
#SOLVE lam dd bb low up 12
            for i in range(1, nc):
                oi = i * n_cells
                op = parent[i] * n_cells
                for c in range(n_cells):
                    a_C[0, oi + c] += lam[oi + c] * (vnext[op + c] - vnext[oi + c])
                    a_C[1, oi + c] += lam[op + c] * (vnext[oi + c] - vnext[op + c])
            row = t * i_rows
            for q in range(runs.shape[0]):
                lo = runs[q, 0]
                hi = runs[q, 1]
                if runs[q, 2]:  # junctions (cnet_forward)
                    for x in range(lo, hi):
                        a_r = lam[x]
                        a_d = -a_r * vnext[x]
                        OUT[0, x] = P[0, x] / dt * a_r
                        for k in range(n_states):
                            OUT[1 + k, x] = a_S[k, x]
                        for i in range(n_params):
                            OUT[1 + n_states + i, x] = 0.0
                        OUT[1 + n_states, x] = (a_d + a_r * vt[x]) / dt
                        OUT[k_i, x] = a_r
                elif parts > 1:
                    cvjp_parts(vt, TS[r], P, I[row], lam, vnext, a_S, dt, OUT, lo, hi, parts)
                else:
                    cvjp_kernel(vt, TS[r], P, I[row], lam, vnext, a_S, dt, OUT, lo, hi)
            for c in range(n_cells):
                if crossed[c] and count[c] < max_spikes:
                    OUT[0, c] += (g_spike_times[count[c], c] * dt * (thr - vnext[c])
                                  / (vnext[c] - vt[c]) ** 2)
            for i in range(n_params):
                for x in range(N):
                    a_P[i, x] += OUT[1 + n_states + i, x]
            for x in range(N):
                a_I[row, x] += OUT[k_i, x]
            for k in range(nt):
                ek = e_rev[k]
                dk = decay[k]
                for x in range(N):
                    y = a_g[k, x] - lam[x] * vnext[x] + lam[x] * ek
                    A[slot, k * N + x] = y
                    a_g[k, x] = y * dk
            a_v[:] = OUT[0]
            for k in range(n_states):
                a_S[k, :] = OUT[1 + k]
'''



def _solve(x: str, diag: str, rhs: str, up: str, low: str, indent: int) -> str:
    """Lines solving every cell's ``H x = rhs`` in place on ``diag`` and ``rhs``.

    Compartment-major rows (``comp * n_cells + cell``), so each elimination step is a vector
    loop over the cells. ``H`` has ``diag`` on its diagonal, ``low`` at (i, parent) and
    ``up`` at (parent, i); swap ``up`` and ``low`` for the transposed system. Text, so both
    loops have the solve inline (as a called function per cell it cost the cable loops about
    10%).
    """
    return "\n".join(" " * indent + line for line in f"""for i in range(nc - 1, 0, -1):
    oi = i * n_cells
    op = parent[i] * n_cells
    for c in range(n_cells):
        f = {up}[oi + c] / {diag}[oi + c]
        {diag}[op + c] -= f * {low}[oi + c]
        {rhs}[op + c] -= f * {rhs}[oi + c]
for c in range(n_cells):
    {x}[c] = {rhs}[c] / {diag}[c]
for i in range(1, nc):
    oi = i * n_cells
    op = parent[i] * n_cells
    for c in range(n_cells):
        {x}[oi + c] = ({rhs}[oi + c] - {low}[oi + c] * {x}[op + c]) / {diag}[oi + c]"""
                                                      .splitlines())


def loops_source() -> str:
    """The two loops' source, the Hines solves written in."""
    lines = []
    for line in _LOOPS.splitlines():
        if line.startswith("#SOLVE "):
            *names, indent = line.split()[1:]
            lines.append(_solve(*names, int(indent)))
        else:
            lines.append(line)
    return "\n".join(lines)


_loops: dict[tuple[str, str], tuple[Any, Any]] = {}


def _loop_kernels(cs: ChannelSet, dtype: str) -> tuple[Any, Any]:
    """The compiled ``(cnet_forward, cnet_backward)`` for ``cs`` and ``dtype`` (cached)."""
    key = (cs.key, dtype)
    if key in _loops:
        return _loops[key]
    configure()
    import numba

    steps = {"cmem_kernel": _kernel("cmem", cs, dtype), "cvjp_kernel": _kernel("cvjp", cs, dtype)}
    # The step kernels' sources by hash: a changed step kernel gives a new module (and cache).
    stamp = hashlib.sha1((step_source(cs, cable=True)[0]
                          + vjp_source(cs, cable=True)[0]).encode()).hexdigest()
    g = _generated_globals("cnetrun", cs, dtype, f"# step kernels: {stamp}\n{loops_source()}",
                           {"np": np, "prange": numba.prange, **steps})
    if not hasattr(g["cnet_forward"], "py_func"):  # not compiled in this process yet
        for name in ("cmem_parts", "cvjp_parts", "synapse_adjoint_parts"):
            g[name] = njit(parallel=True)(g[name])
        for name in ("synaptic_sums", "synapse_adjoint", "cnet_forward", "cnet_backward"):
            g[name] = njit(fastmath=_FASTMATH[dtype], error_model="numpy")(g[name])
    _loops[key] = g["cnet_forward"], g["cnet_backward"]
    return _loops[key]


def _check_csr(op: str, indptr: np.ndarray, target: np.ndarray, n_out: int) -> None:
    """The CSR checked once for the whole run (the loops then read it unchecked)."""
    from ...ops.ion_membrane import csr_index_error

    code = _csr_code(indptr, target.shape[0])
    if not code and target.size and (int(target.min()) < 0 or int(target.max()) >= n_out):
        code = 2
    if code:
        raise csr_index_error(op, code, indptr.shape[0] - 1, target.shape[0], n_out)


#: Rows (compartments of all cells) from which the loops run their step kernels on all
#: threads, each step's rows cut into one part per thread.
PARALLEL_ROWS = 128


def parallel_parts(n_rows: int) -> int:
    """Parts (threads) to cut each step's rows into: 1 below ``PARALLEL_ROWS``."""
    import numba

    return numba.get_num_threads() if n_rows >= PARALLEL_ROWS else 1


def junction_runs(params: np.ndarray, n_cells: int) -> np.ndarray:
    """``(n_runs, 3)`` int64: the loops' rows ``lo .. hi - 1`` and whether they are junctions.

    Consecutive compartments of one kind (``c_m = 0`` in every cell, or in none) make a run.
    """
    if not params.shape[1] or not params.shape[2]:
        return np.array([[0, params.shape[1] * params.shape[2], 0]], dtype=np.int64)
    hollow = (params[0] == 0).all(axis=0)
    edges = np.flatnonzero(np.diff(hollow.astype(np.int8))) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [hollow.shape[0]]])
    return np.stack([starts * n_cells, ends * n_cells, hollow[starts]], axis=1).astype(np.int64)


def to_loops(a: np.ndarray, copy: bool = True) -> np.ndarray:
    """``(..., n_cells, n_comp)`` as the loops' compartment-major ``(..., n_comp * n_cells)``.

    ``copy``: always a new array (the loops update some in place); else no copy where ``a``
    is :func:`from_loops`'s view (the checkpoints, which the backward only reads).
    """
    flat = np.swapaxes(a, -1, -2)
    flat = np.array(flat, order="C") if copy else np.ascontiguousarray(flat)
    return flat.reshape(*a.shape[:-2], -1)


def from_loops(a: np.ndarray, n_cells: int, n_comp: int, copy: bool = True) -> np.ndarray:
    """The loops' ``(..., n_comp * n_cells)`` as ``(..., n_cells, n_comp)``.

    ``copy=False``: a strided view of ``a``, not a copy.
    """
    grid = np.swapaxes(a.reshape(*a.shape[:-1], n_comp, n_cells), -1, -2)
    return np.ascontiguousarray(grid) if copy else grid


class _Run:
    """One run's arrays in the loops' flat, compartment-major layout, and per-step buffers."""

    def __init__(self, params: np.ndarray, i_ext: np.ndarray, parent: np.ndarray,
                 coupling: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
                 weights: np.ndarray, synapse_type: np.ndarray, synapse_compartment: np.ndarray,
                 n_states: int, op: str, *, channels: Any, dt: float, delay_steps: int,
                 tau_syn: Any, e_syn: Any, spike_threshold: float = 0.0, record_at: Any = None,
                 **_: Any) -> None:
        c = np.ascontiguousarray
        self.cs = channel_set(channels)
        dtype = params.dtype
        self.scalar = dtype.type
        n_cells, n_comp = params.shape[1:]
        N = n_cells * n_comp  # noqa: N806 - compartments, as in the loops
        taus, es, _ = synapse_kinds(tau_syn, e_syn)
        self.n_cells, self.n_comp, self.N = n_cells, n_comp, N
        self.nt, self.delay = len(taus), int(delay_steps)
        self.decay = np.array(synapse_decays(dt, taus), dtype=dtype)
        self.e_rev = np.array(es, dtype=dtype)
        self.P = to_loops(params)
        self.runs = junction_runs(params, n_cells)
        self.I = to_loops(i_ext.reshape(-1, n_cells, n_comp))
        self.i_rows = int(i_ext.ndim == 3)
        self.parent = c(parent, dtype=np.int64)
        up, low, axial = grad.axial_rows(self.parent, coupling)
        self.up, self.low, self.axial = (to_loops(x.astype(dtype)) for x in (up, low, axial))
        self.indptr = c(indptr, dtype=np.int64)
        self.weights = c(weights)
        self.target = c(grad.flat_targets(c(indices), c(synapse_type), c(synapse_compartment),
                                          n_cells, n_comp, cell_major=False))
        _check_csr(op, self.indptr, self.target, self.nt * N)
        self.cols = record_columns(record_at, n_comp)
        self.thr, self.dt = self.scalar(spike_threshold), self.scalar(dt)
        self.parts = parallel_parts(N)
        self.buffers = (np.empty(N, dtype=dtype), np.empty((n_states, N), dtype=dtype),
                        np.empty(N, dtype=dtype), np.empty(N, dtype=dtype),
                        np.empty(N, dtype=dtype), np.empty(N, dtype=dtype),
                        np.empty(N, dtype=dtype), np.empty(N, dtype=dtype))

    def trajectory(self, length: int, n_states: int) -> tuple[np.ndarray, ...]:
        dtype, N = self.P.dtype, self.N  # noqa: N806
        return (np.empty((length, N), dtype=dtype), np.empty((length, n_states, N), dtype=dtype),
                np.empty((length, self.nt, N), dtype=dtype), np.empty((length, N), dtype=dtype),
                np.empty((length, self.n_cells), dtype=np.bool_))

    def shared(self) -> tuple[Any, ...]:
        """The parameters, currents and synaptic constants, in both loops' argument order."""
        return (self.P, self.I, self.i_rows, self.decay, self.e_rev, self.thr, self.dt,
                self.runs)

    def synapses(self) -> tuple[Any, ...]:
        """The CSR, the targets and the Hines rows, in both loops' argument order."""
        return (self.indptr, self.weights, self.target, self.parent, self.up, self.low,
                self.axial)


@register_kernel(grad.cable_network_run_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def cable_network_run_cpu(*arrays: np.ndarray, **kw: Any) -> tuple[np.ndarray, ...]:
    """The whole run in one compiled loop, a checkpoint at every segment's start."""
    return run_loops("cable_network_run", *arrays, **kw)


@register_kernel(grad.cable_network_run_vjp_op, backend="cpu", arrays=["numpy"],
                 dtypes=_FLOATS)
def cable_network_run_vjp_cpu(*arrays: np.ndarray, **kw: Any) -> tuple[np.ndarray, ...]:
    """The segments re-run and walked back in one compiled loop."""
    return run_vjp_loops("cable_network_run", *arrays, **kw)


def run_loops(op: str, v0: np.ndarray, states0: np.ndarray, params: np.ndarray,
              i_ext: np.ndarray, parent: np.ndarray, coupling: np.ndarray, g_syn0: np.ndarray,
              indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray,
              arrivals0: np.ndarray, synapse_type: np.ndarray, synapse_compartment: np.ndarray,
              *, n_steps: int, record_every: int = 0, max_spikes: int = 0, segment: int = 1,
              **kw: Any) -> tuple[np.ndarray, ...]:
    """``cable_network_run``'s forward (``op`` names it in errors)."""
    n_states = states0.shape[0]
    run = _Run(params, i_ext, parent, coupling, indptr, indices, weights, synapse_type,
               synapse_compartment, n_states, op, **kw)
    n_cells, n_comp, N, nt, delay = run.n_cells, run.n_comp, run.N, run.nt, run.delay  # noqa: N806
    dtype = params.dtype
    post = (n_cells, n_comp)
    n_seg = -(-n_steps // segment)
    n_rec = n_steps // record_every if record_every else 0
    v_record = np.zeros((n_rec, n_cells, run.cols.shape[0]), dtype=dtype)
    times = np.full((max_spikes, n_cells), np.nan, dtype=dtype)
    ck_v = np.empty((n_seg, N), dtype=dtype)
    ck_S = np.empty((n_seg, n_states, N), dtype=dtype)
    ck_g = np.empty((n_seg, nt, N), dtype=dtype)
    ck_spikes = np.empty((n_seg, delay, n_cells), dtype=np.bool_)
    ck_count = np.empty((n_seg, n_cells), dtype=np.int64)
    v = to_loops(v0.astype(dtype, copy=False))
    S = to_loops(states0.astype(dtype, copy=False))
    g = to_loops(g_syn0.astype(dtype, copy=False))
    ring = to_loops(arrivals0.astype(dtype, copy=False)).reshape(delay, nt * N)
    count = np.zeros(n_cells, dtype=np.int64)
    hist = np.zeros((delay, n_cells), dtype=np.bool_)
    forward, _ = _loop_kernels(run.cs, dtype.name)
    none = run.trajectory(0, n_states)
    for s in range(n_seg):
        ck_v[s], ck_S[s], ck_g[s], ck_spikes[s], ck_count[s] = v, S, g, hist, count
        forward(v, S, g, ring, count, hist, *run.shared(), s * segment,
                min((s + 1) * segment, n_steps),
                record_every, run.cols, max_spikes, v_record, times, *run.synapses(), False,
                *none, *run.buffers, run.parts)
    arrivals = ring[(n_steps + np.arange(delay)) % delay].reshape(delay, nt, N)
    out = (from_loops(x, *post) for x in (v, S, g))
    cks = (from_loops(x, *post, copy=False) for x in (ck_v, ck_S, ck_g))  # kept, not copied
    return (*out, v_record, count, times, from_loops(arrivals, *post), *cks, ck_spikes,
            ck_count)


def run_vjp_loops(
    op: str, ck_v: np.ndarray, ck_S: np.ndarray, ck_g: np.ndarray, ck_spikes: np.ndarray,
    ck_count: np.ndarray, params: np.ndarray, i_ext: np.ndarray, parent: np.ndarray,
    coupling: np.ndarray, indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray,
    arrivals0: np.ndarray, synapse_type: np.ndarray, synapse_compartment: np.ndarray,
    g_v: np.ndarray,
    g_states: np.ndarray, g_g_syn: np.ndarray, g_v_record: np.ndarray,
    g_spike_times: np.ndarray, g_arrivals: np.ndarray, *, n_steps: int, record_every: int = 0,
    max_spikes: int = 0, segment: int = 1, slope: float = 1.0, **kw: Any,
) -> tuple[np.ndarray, ...]:
    """``cable_network_run_vjp``'s backward (``op`` names the forward in errors)."""
    c = np.ascontiguousarray
    n_states = ck_S.shape[1]
    run = _Run(params, i_ext, parent, coupling, indptr, indices, weights, synapse_type,
               synapse_compartment, n_states, op, **kw)
    n_cells, n_comp, N, nt, delay = run.n_cells, run.n_comp, run.N, run.nt, run.delay  # noqa: N806
    dtype = params.dtype
    post = (n_cells, n_comp)
    a_v, a_S, a_g = (to_loops(x.astype(dtype, copy=False)) for x in (g_v, g_states, g_g_syn))
    A = np.zeros((delay, nt * N), dtype=dtype)
    A[(n_steps + np.arange(delay)) % delay] = to_loops(g_arrivals).reshape(delay, nt * N)
    a_P = np.zeros((params.shape[0], N), dtype=dtype)
    a_I = np.zeros(run.I.shape, dtype=dtype)
    a_C = np.zeros((2, N), dtype=dtype)
    a_w = np.zeros(weights.shape[0], dtype=dtype)
    OUT = np.zeros((2 + n_states + params.shape[0], N), dtype=dtype)
    _, backward = _loop_kernels(run.cs, dtype.name)
    if n_steps:
        state = (np.empty(N, dtype=dtype), np.empty((n_states, N), dtype=dtype),
                 np.empty((nt, N), dtype=dtype), np.empty((delay, nt * N), dtype=dtype),
                 np.empty(n_cells, dtype=np.int64), np.empty((delay, n_cells), dtype=np.bool_))
        backward(*(to_loops(x, copy=False) for x in (ck_v, ck_S, ck_g)), c(ck_spikes),
                 c(ck_count, dtype=np.int64),
                 to_loops(arrivals0.astype(dtype, copy=False)).reshape(delay, nt * N),
                 *run.shared(), n_steps,
                 segment, record_every, run.cols, max_spikes,
                 run.scalar(slope), *run.synapses(), c(g_v_record, dtype=dtype),
                 c(g_spike_times, dtype=dtype), a_v, a_S, a_g, A, a_P, a_I, a_C, a_w,
                 *run.trajectory(min(segment, n_steps), n_states), *state, *run.buffers, OUT,
                 np.empty(N, dtype=dtype), np.empty(N, dtype=dtype),
                 np.empty(n_cells, dtype=dtype), np.empty((0, n_cells, 0), dtype=dtype),
                 np.empty((0, n_cells), dtype=dtype), run.parts)
    a_v, a_S, a_P, a_I, a_C, a_g = (from_loops(x, *post) for x in (a_v, a_S, a_P, a_I, a_C,
                                                                     a_g))
    return (a_v, a_S, a_P, a_I.reshape(i_ext.shape), a_C, a_g, a_w,
            from_loops(A.reshape(delay, nt, N), *post))
