"""Differentiable simulation of single-compartment neurons with torch autograd.

:func:`simulate` is the one to fit parameters with: the compiled kernel runs forward and the
backward re-runs segments of ``checkpoint_every`` steps in torch (backprop through time with
checkpoints, memory ``O(n (n_steps / K + K))``); :func:`params_tensor` builds its
``params`` from named, differentiable values.

:func:`simulate_torch` is the same scheme and the same channel functions as
:func:`fusekit.ops.ion_simulate` (the channel math in :mod:`fusekit.ops.ion_channel` accepts
tensors), as torch tensor expressions over neurons with one Python iteration per step.
Autograd keeps every step, so memory grows with ``n_steps`` and speed is NumPy-like: the
full-history oracle that the checkpointed gradient is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import ops
from ..ops.ion import IonSimulation
from ..ops.ion_channel import Channel, ChannelSet, channel_set
from ..ops.ion_grad import spike_crossing, torch_step


def params_tensor(channels: ChannelSet | Sequence[type[Channel]], n: int, *,
                  dtype: Any = None, device: Any = None, **values: Any) -> Any:
    """The ``(n_params, n)`` parameter tensor: defaults, with the named rows replaced.

    Values may be tensors that require grad (scalars or ``(n,)``); the result then carries
    their gradients, so an optimiser can fit them through :func:`simulate`.

    Example:
        >>> import torch
        >>> from fusekit.neuro import HH_CHANNELS, params_tensor
        >>> g_na = torch.tensor(100.0, dtype=torch.float64, requires_grad=True)
        >>> params_tensor(HH_CHANNELS, 3, g_na=g_na).shape  # rows: c_m, g_na, e_na, ...
        torch.Size([7, 3])

    Args:
        channels: Channel classes or a :class:`ChannelSet`.
        n: Number of neurons.
        dtype: torch dtype (default: float64).
        device: torch device (default: the CPU).
        **values: Parameter name -> value (number, ``(n,)`` array or tensor).
    """
    import torch

    cs = channel_set(channels)
    dtype = torch.float64 if dtype is None else dtype
    unknown = sorted(set(values) - set(cs.param_names))
    if unknown:
        raise KeyError(f"no parameter {unknown[0]!r} in {cs!r}; parameters: {cs.param_names}")
    base = torch.as_tensor(cs.default_params(n), dtype=dtype, device=device)
    rows = [torch.as_tensor(values[name], dtype=dtype, device=device).expand(n)
            if name in values else base[i] for i, name in enumerate(cs.param_names)]
    return torch.stack(rows)


def simulate(
    channels: ChannelSet | Sequence[type[Channel]],
    params: Any,
    i_ext: Any,
    *,
    duration: float,
    dt: float = 0.025,
    v0: Any = -65.0,
    states0: Any = None,
    record_every: int = 1,
    spike_threshold: float = 0.0,
    max_spikes: int = 0,
    checkpoint_every: int = 0,
    backend: str | None = None,
) -> IonSimulation:
    """Simulate neurons with the compiled kernel, differentiably (checkpointed backprop).

    Gradients of the recorded voltages, final state and spike times flow back to
    ``params``, ``i_ext``, ``v0`` and ``states0`` (whichever are tensors that require
    grad). The forward costs one kernel run; the backward re-runs the simulation in torch
    one segment of ``checkpoint_every`` steps at a time, from checkpoints of ``v`` and the
    states, keeping about ``n (n_steps / K + K)`` values instead of every step.

    Example:
        >>> import torch
        >>> from fusekit.neuro import HH_CHANNELS, params_tensor, simulate
        >>> g_na = torch.tensor(120.0, dtype=torch.float64, requires_grad=True)
        >>> P = params_tensor(HH_CHANNELS, 1, g_na=g_na)
        >>> out = simulate(HH_CHANNELS, P, torch.full((1,), 10.0, dtype=torch.float64),
        ...                duration=10.0, record_every=4, max_spikes=1)
        >>> out.spike_times[0, 0].backward()  # d(first spike time)/d(g_na) in g_na.grad

    Args:
        channels: Channel classes or a :class:`ChannelSet`.
        params: ``(n_params, n)`` tensor (see :func:`params_tensor`), float32 or float64.
        i_ext: Injected current, uA/cm^2: ``(n,)`` constant or ``(n_steps, n)`` per step.
        duration: Simulated time, ms (rounded to whole steps of ``dt``).
        dt: Time step, ms.
        v0: Initial potential, mV: a number or an ``(n,)`` tensor.
        states0: Initial states ``(n_states, n)``; ``None``: the steady state at ``v0``
            and the initial ``params`` (a constant for the gradient).
        record_every: Record ``v`` every this many steps (``v_record``).
        spike_threshold: mV.
        max_spikes: Spike times kept per neuron.
        checkpoint_every: Steps per checkpoint segment (0: about ``sqrt(n_steps)``).
        backend: As for every fusekit op.

    Returns:
        :class:`IonSimulation` of torch tensors; ``spike_times`` relative to the start, ms.
    """
    import torch

    cs = channel_set(channels)
    n = params.shape[1]
    v0 = torch.as_tensor(v0, dtype=params.dtype, device=params.device).expand(n)
    if states0 is None:
        states0 = torch.as_tensor(
            cs.steady_states(v0.detach().cpu().numpy(), params.detach().cpu().numpy()),
            dtype=params.dtype, device=params.device)
    return ops.ion_simulate(
        v0.contiguous(), states0, params, torch.as_tensor(i_ext, dtype=params.dtype),
        channels=cs, dt=dt, n_steps=int(np.round(duration / dt)), record_every=record_every,
        spike_threshold=spike_threshold, max_spikes=max_spikes,
        checkpoint_every=checkpoint_every, backend=backend)


def simulate_torch(
    channels: ChannelSet | Sequence[type[Channel]],
    v0: Any,
    states0: Any,
    params: Any,
    i_ext: Any,
    *,
    dt: float,
    n_steps: int,
    record_every: int = 0,
    spike_threshold: float = 0.0,
    max_spikes: int = 0,
) -> IonSimulation:
    """Differentiable simulation of single-compartment neurons with torch autograd.

    Arguments and results as for :func:`fusekit.ops.ion_simulate`, as torch tensors. The
    spike times are differentiable (the crossing is interpolated within its step), the spike
    counts are not.

    Example:
        >>> import torch
        >>> from fusekit.neuro import HH_CHANNELS, ChannelSet, simulate_torch
        >>> hh = ChannelSet(HH_CHANNELS)
        >>> p = torch.tensor(hh.default_params(1), requires_grad=True)
        >>> v0 = torch.full((1,), -65.0, dtype=torch.float64)
        >>> s0 = torch.tensor(hh.initial_states(1))
        >>> out = simulate_torch(hh, v0, s0, p, torch.full((1,), 10.0, dtype=torch.float64),
        ...                      dt=0.025, n_steps=400, max_spikes=1)
        >>> out.spike_times[0, 0].backward()  # d(first spike time) / d(params)
    """
    import torch

    cs = channel_set(channels)
    v, S, P = v0, states0, params
    n = v.shape[0]
    rows = []
    count = torch.zeros(n, dtype=torch.int64, device=v.device)
    times = [torch.full((n,), float("nan"), dtype=v.dtype, device=v.device)
             for _ in range(max_spikes)]
    for step in range(n_steps):
        v_new, S = torch_step(cs, v, S, P, i_ext if i_ext.ndim == 1 else i_ext[step], dt)
        crossed, t_cross = spike_crossing(v, v_new, spike_threshold, step, dt)
        if max_spikes and bool(crossed.any()):
            for slot in range(max_spikes):
                times[slot] = torch.where(crossed & (count == slot), t_cross, times[slot])
        count = count + crossed.to(torch.int64)
        v = v_new
        if record_every and (step + 1) % record_every == 0:
            rows.append(v)
    v_record = torch.stack(rows) if rows else v.new_empty((0, n))
    spike_times = torch.stack(times) if times else v.new_empty((0, n))
    return IonSimulation(v, S, v_record, count, spike_times)
