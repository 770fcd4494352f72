"""The ion-channel simulation in torch, differentiable end to end by autograd.

The same scheme and the same channel functions as :func:`fusekit.ops.ion_simulate` (the
channel math in :mod:`fusekit.ops.ion_channel` accepts tensors), as torch tensor expressions
over neurons with one Python iteration per step. Autograd keeps every step, so memory grows
with ``n_steps`` and speed is NumPy-like: use it for gradients of per-neuron parameters on
small populations and short windows; the compiled kernels are for forward runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..ops.ion import IonSimulation
from ..ops.ion_channel import Channel, ChannelSet, channel_set, gates_and_conductances


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

    def as_tensor(x: Any) -> Any:  # channel functions may return constants
        return torch.as_tensor(x, dtype=v.dtype, device=v.device)

    for step in range(n_steps):
        S, g_sum, ge_sum = gates_and_conductances(cs, v, S, P, dt, exp=torch.exp,
                                                  stack=torch.stack, convert=as_tensor)
        i_inj = i_ext if i_ext.ndim == 1 else i_ext[step]
        k_ = dt / P[0]
        v_new = (v + k_ * (ge_sum + i_inj)) / (1.0 + k_ * g_sum)
        crossed = (v < spike_threshold) & (v_new >= spike_threshold)
        if max_spikes and bool(crossed.any()):
            # A safe denominator where nothing crossed keeps 0/0 out of the gradients.
            den = torch.where(crossed, v_new - v, torch.ones_like(v))
            t_cross = (step + (spike_threshold - v) / den) * dt
            for slot in range(max_spikes):
                times[slot] = torch.where(crossed & (count == slot), t_cross, times[slot])
        count = count + crossed.to(torch.int64)
        v = v_new
        if record_every and (step + 1) % record_every == 0:
            rows.append(v)
    v_record = torch.stack(rows) if rows else v.new_empty((0, n))
    spike_times = torch.stack(times) if times else v.new_empty((0, n))
    return IonSimulation(v, S, v_record, count, spike_times)
