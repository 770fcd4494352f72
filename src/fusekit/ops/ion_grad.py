"""Gradients of :func:`~fusekit.ops.ion_simulate`: backprop through time with checkpoints.

The forward runs the compiled kernel in segments of ``K = checkpoint_every`` steps and keeps
only ``v``, the states and the spike counts at the start of every segment. The backward walks
the segments in reverse order: it re-runs one segment from its checkpoint with the torch step
(:func:`torch_step`, the scheme of the kernels written with torch tensors), and
backpropagates the incoming gradient through it. Memory is ``O(n (n_steps / K + K))``
values instead of ``O(n n_steps)``; the default ``K ~ sqrt(n_steps)`` minimises it.

The recompute decides spike crossings from its own values. In float64 the compiled forward
and the torch recompute follow the same trajectory to about 1e-12 mV, so they agree on every
crossing that is not within that distance of the threshold; in float32 the kernels' polynomial
``exp`` and fast-math make the two differ by a few ulp per step (restarted at every
checkpoint).

:func:`torch_step` and :func:`spike_crossing` are also the step of
:func:`fusekit.neuro.simulate_torch`, so the scheme is written once for torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._arrays import common_kind, from_native, to_native
from .._errors import InputError
from ._common import is_whole
from .ion_channel import ChannelSet, channel_set, gates_and_conductances


def torch_step(cs: ChannelSet, v: Any, S: Any, P: Any, i_inj: Any, dt: float) -> tuple[Any, Any]:
    """One step of the ion scheme on torch tensors: ``(v_new, states_new)``.

    Rush-Larsen gates at ``v``, conductances at the new gates, backward-Euler ``v``
    (see :mod:`fusekit.ops.ion`). Differentiable in every tensor argument.

    Args:
        cs: The channel set.
        v: Membrane potentials, mV, ``(n,)``.
        S: States, ``(n_states, n)``.
        P: Parameters, ``(n_params, n)`` (row 0: ``c_m``).
        i_inj: Injected current this step, uA/cm^2, ``(n,)``.
        dt: ms.
    """
    import torch

    def as_tensor(x: Any) -> Any:  # channel functions may return constants
        return torch.as_tensor(x, dtype=v.dtype, device=v.device)

    S, g_sum, ge_sum = gates_and_conductances(cs, v, S, P, dt, exp=torch.exp,
                                              stack=torch.stack, convert=as_tensor)
    k_ = dt / P[0]
    return (v + k_ * (ge_sum + i_inj)) / (1.0 + k_ * g_sum), S


def spike_crossing(v: Any, v_new: Any, threshold: float, step: int,
                   dt: float) -> tuple[Any, Any]:
    """Upward threshold crossings during ``step`` and their interpolated times (ms).

    Returns ``(crossed, t_cross)``: a bool mask and ``(step + (thr - v) / (v_new - v)) dt``,
    finite and differentiable everywhere (a safe denominator where nothing crossed keeps
    0/0 out of the gradients); only entries where ``crossed`` is true mean anything.
    """
    import torch

    crossed = (v < threshold) & (v_new >= threshold)
    den = torch.where(crossed, v_new - v, torch.ones_like(v))
    return crossed, (step + (threshold - v) / den) * dt


def segment_length(n_steps: int, checkpoint_every: int, record_every: int) -> int:
    """Steps per checkpoint segment, ``checkpoint_every`` or (0) about ``sqrt(n_steps)``.

    Rounded up to a multiple of ``record_every``, so that recordings stay on their steps.
    """
    k = checkpoint_every or max(1, round(math.sqrt(n_steps)))
    if record_every:
        k = -(-k // record_every) * record_every
    return max(1, k)


def check_checkpoint_every(checkpoint_every: Any) -> None:
    """Raise :class:`InputError` unless ``checkpoint_every`` is a non-negative integer."""
    if not is_whole(checkpoint_every) or checkpoint_every < 0:
        raise InputError(
            "ion_simulate: checkpoint_every must be a non-negative integer (steps between the "
            f"checkpoints of the backward pass; 0 picks about sqrt(n_steps)), got "
            f"{checkpoint_every!r}"
        )


def merge_spike_times(times: Any, count: Any, part_times: Any, part_count: Any,
                      offset: float) -> None:
    """Append the spikes of a later run to ``times``/``count`` in place (NumPy or CuPy).

    ``part_times`` are relative to that run's start, ``offset`` ms after the start of
    ``times``; spikes beyond ``times.shape[0]`` per neuron are counted, not kept.
    """
    max_spikes = times.shape[0]
    for r in range(min(max_spikes, int(part_count.max()) if part_count.size else 0)):
        slot = count + r
        put = ((r < part_count) & (slot < max_spikes)).nonzero()[0]
        times[slot[put], put] = part_times[r, put] + times.dtype.type(offset)
    count += part_count


def checkpointed_forward(
    run: Callable[..., tuple[Any, ...]], v0: Any, states0: Any, params: Any, i_ext: Any, *,
    channels: str, dt: float, n_steps: int, record_every: int, spike_threshold: float,
    max_spikes: int, checkpoint_every: int, backend: str | None,
    whole: Callable[..., tuple[Any, ...] | None] | None = None,
) -> tuple[Any, ...]:
    """The forward of the differentiable ``ion_simulate`` / ``cable_simulate``: in segments.

    ``run(arrays, params, backend)`` is the op's checked, dispatched call on ``(v, states,
    params, i_ext)`` (``cable_simulate``'s adds its morphology itself). ``v`` has shape
    ``(n,)`` or ``(n_cells, n_comp)``; a constant ``i_ext`` has ``v``'s. Returns the five
    results of the op and the checkpoints: ``(n_seg, 1 + n_states, *v.shape)`` (``v`` and
    the states at the start of every segment) and ``(n_seg, n)`` int64 spike counts there.
    ``whole(arrays, params, seg_len)``, where given, is tried first: the kernel that keeps
    the checkpoints itself, all seven results from one call (``None`` where the backend that
    would run has no such kernel); one call per segment cost about a millisecond each.
    """
    kind = common_kind(("v0", "states0", "params", "i_ext"), (v0, states0, params, i_ext))
    v, S, P, I_ext = (to_native(a, kind) for a in (v0, states0, params, i_ext))
    xp = __import__("cupy") if kind.device_type == "cuda" else np
    n = v.shape[0]
    k = segment_length(n_steps, checkpoint_every, record_every)
    n_seg = -(-n_steps // k)
    kw_all = {"channels": channels, "dt": dt, "n_steps": n_steps, "record_every": record_every,
              "spike_threshold": spike_threshold, "max_spikes": max_spikes}
    got = whole((v, S, P, I_ext), kw_all, k) if whole is not None and n_seg else None
    if got is not None:
        return tuple(from_native(o, kind) for o in got)
    checkpoints = xp.empty((n_seg, 1 + S.shape[0], *v.shape), dtype=v.dtype)
    counts_at = xp.empty((n_seg, n), dtype=np.int64)
    count = xp.zeros(n, dtype=np.int64)
    times = xp.full((max_spikes, n), np.nan, dtype=v.dtype)
    records = []
    kw = {"channels": channels, "dt": dt, "record_every": record_every,
          "spike_threshold": spike_threshold, "max_spikes": max_spikes}
    for s in range(n_seg):
        k0, k1 = s * k, min(n_steps, (s + 1) * k)
        checkpoints[s, 0], checkpoints[s, 1:], counts_at[s] = v, S, count
        i_seg = I_ext if I_ext.ndim == v.ndim else I_ext[k0:k1]
        v, S, v_rec, part_count, part_times = run((v, S, P, i_seg),
                                                  {**kw, "n_steps": k1 - k0}, backend)
        merge_spike_times(times, count, part_times, part_count, k0 * dt)
        records.append(v_rec)
    if n_seg == 0:  # still checked, and copies as the kernels make them
        v, S, v_rec, _, _ = run((v, S, P, I_ext), {**kw, "n_steps": 0}, backend)
        records.append(v_rec)
    v_record = xp.concatenate(records) if len(records) > 1 else records[0]
    out = (v, S, v_record, count, times, checkpoints, counts_at)
    return tuple(from_native(o, kind) for o in out)


def adjoint_backward(
    grads: tuple[Any, ...], checkpoints: Any, counts_at: Any, params: Any, i_ext: Any, *,
    channels: str, dt: float, n_steps: int, record_every: int, spike_threshold: float,
    max_spikes: int, checkpoint_every: int, needs: tuple[bool, ...], backend: str | None,
    tree: tuple[Any, Any] | None = None, record_at: tuple[int, ...] | None = None,
) -> tuple[Any, ...] | None:
    """:func:`checkpointed_backward`'s result from the compiled adjoint op, or ``None``.

    ``tree``: ``(parent, coupling)`` for ``cable_simulate`` (then ``cable_adjoint``, whose
    extra result is the coupling's gradient; ``record_at`` its recorded compartments);
    ``None`` for ``ion_simulate`` (``ion_adjoint``). ``None`` is returned when no backend
    has such a kernel for these tensors, while torch traces with fake tensors, or for
    channels whose functions cannot be traced (they branch on their arguments); the caller
    then uses the torch recompute.
    Gradients of spike-time slots that hold no spike (NaN times) are ignored, as in the torch
    recompute: non-finite entries of that gradient are taken as 0.
    """
    import torch
    from torch._subclasses.fake_tensor import is_fake

    from .._arrays import dtype_name, kind_of
    from .._errors import NoKernelError
    from .._registry import requested_backend
    from .ion_backprop import cable_adjoint, cable_adjoint_op, ion_adjoint, ion_adjoint_op
    from .ion_symbolic import is_traceable

    if is_fake(params) or params.is_meta:
        return None
    op, fn = (ion_adjoint_op, ion_adjoint) if tree is None else (cable_adjoint_op, cable_adjoint)
    try:
        op.select(kind_of(params), dtype_name(params), requested_backend(backend))
    except NoKernelError:
        return None
    if not is_traceable(channel_set(channels)):  # channels that branch: no generated adjoint
        return None
    g_v, g_S, g_rec, _, g_times = grads
    shape = tuple(checkpoints.shape[2:])  # v's: (n,) or (n_cells, n_comp)
    n_states = checkpoints.shape[1] - 1
    n_rec = n_steps // record_every if record_every else 0

    def given(g: Any, want: tuple[int, ...]) -> Any:
        return params.new_zeros(want) if g is None else g.detach().contiguous()

    g_times = given(g_times, (max_spikes, shape[0]))
    g_times = torch.where(torch.isfinite(g_times), g_times, 0.0)
    rec_shape = shape if record_at is None else (*shape[:-1], len(record_at))
    cable = {} if tree is None else {"record_at": record_at}
    out = fn(
        checkpoints.detach(), counts_at.detach(), params.detach(), i_ext.detach(),
        *(() if tree is None else (tree[0], tree[1].detach())),
        given(g_v, shape), given(g_S, (n_states, *shape)), given(g_rec, (n_rec, *rec_shape)),
        g_times, **cable, channels=channels, dt=dt, n_steps=n_steps,
        segment=segment_length(n_steps, checkpoint_every, record_every),
        record_every=record_every, spike_threshold=spike_threshold, max_spikes=max_spikes,
        backend=backend)
    return tuple(g if need else None for g, need in zip(out, needs, strict=True))


def checkpointed_backward(
    grads: tuple[Any, ...], checkpoints: Any, counts_at: Any, params: Any, i_ext: Any, *,
    channels: str, dt: float, n_steps: int, record_every: int, spike_threshold: float,
    max_spikes: int, checkpoint_every: int, needs: tuple[bool, ...],
    step: Callable[..., tuple[Any, Any]] | None = None, extra: tuple[Any, ...] = (),
    probe: Callable[[Any], Any] | None = None, record: Callable[[Any], Any] | None = None,
) -> tuple[Any, ...]:
    """Gradients w.r.t. ``(v0, states0, params, i_ext, *extra)`` from those of the results.

    ``grads`` are the incoming gradients of ``(v, states, v_record, spike_count,
    spike_times)`` (``None`` where unused); ``needs`` says which inputs want one.
    ``step(v, S, P, i_inj, *extra)`` is the torch step (default :func:`torch_step` of the
    channels), ``extra`` the further differentiable inputs it takes (a cable's coupling), and
    ``probe(v)`` the potential that spikes are detected in (default ``v`` itself; a cable's
    soma, ``v[:, 0]``), ``record(v)`` what is recorded of ``v`` (default all of it).
    """
    import torch
    from torch._subclasses.fake_tensor import is_fake

    cs = channel_set(channels)
    if step is None:
        def step(v: Any, S: Any, P: Any, i_inj: Any) -> tuple[Any, Any]:
            return torch_step(cs, v, S, P, i_inj, dt)
    if probe is None:
        def probe(v: Any) -> Any:
            return v
    if record is None:
        def record(v: Any) -> Any:
            return v
    g_v, g_S, g_rec, _, g_times = grads
    k = segment_length(n_steps, checkpoint_every, record_every)
    n_seg = checkpoints.shape[0]
    constant_current = i_ext.ndim == checkpoints.ndim - 2
    g_v = torch.zeros_like(checkpoints[0, 0]) if g_v is None else g_v
    g_S = torch.zeros_like(checkpoints[0, 1:]) if g_S is None else g_S
    g_extra = [torch.zeros_like(x) for x in extra]
    if n_seg == 0:
        return g_v, g_S, torch.zeros_like(params), torch.zeros_like(i_ext), *g_extra
    use_times = max_spikes > 0 and g_times is not None
    use_rec = record_every > 0 and g_rec is not None and g_rec.shape[0] > 0
    g_P = torch.zeros_like(params)
    g_I = torch.zeros_like(i_ext)
    P = params.detach()
    for s in range(n_seg - 1, -1, -1):
        k0, k1 = s * k, min(n_steps, (s + 1) * k)
        with torch.enable_grad():
            v0 = checkpoints[s, 0].detach().requires_grad_()
            S0 = checkpoints[s, 1:].detach().requires_grad_()
            Ps = P.clone().requires_grad_()
            I_seg = (i_ext if constant_current else i_ext[k0:k1]).detach().requires_grad_()
            X = tuple(x.detach().requires_grad_() for x in extra)
            v, S = v0, S0
            count = counts_at[s].clone()
            loss = v.new_zeros(())
            for t in range(k0, k1):
                i_inj = I_seg if constant_current else I_seg[t - k0]
                v_new, S = step(v, S, Ps, i_inj, *X)
                if use_times:
                    crossed, t_cross = spike_crossing(probe(v), probe(v_new), spike_threshold,
                                                      t, dt)
                    # Steps without a crossing are skipped, except while tracing (no values).
                    if is_fake(crossed) or bool(crossed.any()):
                        kept = crossed & (count < max_spikes)
                        slot = count.clamp(max=max_spikes - 1)
                        g_t = torch.where(kept, g_times.gather(0, slot[None])[0], 0.0)
                        loss = loss + (g_t * t_cross).sum()
                        count = count + crossed.to(torch.int64)
                v = v_new
                if use_rec and (t + 1) % record_every == 0:
                    loss = loss + (g_rec[(t + 1) // record_every - 1] * record(v)).sum()
            loss = loss + (g_v * v).sum() + (g_S * S).sum()
            inputs = (v0, S0, Ps, I_seg, *X)
            got = torch.autograd.grad(loss, inputs, allow_unused=True)
        got = [torch.zeros_like(x) if g is None else g for g, x in zip(got, inputs, strict=True)]
        g_v, g_S = got[0], got[1]
        g_P += got[2]
        if constant_current:
            g_I += got[3]
        else:
            g_I[k0:k1] = got[3]
        for acc, g in zip(g_extra, got[4:], strict=True):
            acc += g
    out = (g_v, g_S, g_P, g_I, *g_extra)
    return tuple(g if need else None for g, need in zip(out, needs, strict=True))
