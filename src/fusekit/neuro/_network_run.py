"""``network_simulate_torch``'s whole run as one autograd function (the kernel engine).

The forward is the op ``network_run`` (every step on the CPU backend's kernels, checkpoints
kept), the backward the op ``network_run_vjp`` (segments re-run and walked back with the
steps' vector-Jacobian products and the SuperSpike surrogate): two calls per run, where the
step-by-step engines pay torch operations and autograd nodes every step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..ops.ion import NetworkSimulation
from ..ops.ion_channel import ChannelSet


def network_run_torch(cs: ChannelSet, v0: Any, states0: Any, params: Any, i_ext: Any,
                      weights: Any, indptr: Any, *, indices: Any, types: Any, taus: Any,
                      es: Any, typed: bool, g_syn0: Any, arrivals0: Any, dt: float,
                      n_steps: int, delay_steps: int, record_every: int,
                      spike_threshold: float, max_spikes: int, checkpoint_every: int,
                      slope: float) -> NetworkSimulation:
    """Run a network whose inputs :func:`network_simulate_torch` has checked.

    ``g_syn0`` is ``(n_types, n)`` and ``arrivals0`` ``(delay_steps, n_types, n)``; the
    results are shaped as :func:`network_simulate_torch` returns them.
    """
    import torch
    from torch.autograd.function import once_differentiable

    from ..ops.ion_network_grad import network_run_op, network_run_vjp_op

    segment = checkpoint_every or max(1, round(math.sqrt(n_steps)))
    kw = {"channels": cs, "dt": dt, "n_steps": n_steps, "delay_steps": delay_steps,
          "tau_syn": tuple(taus), "e_syn": tuple(es), "record_every": record_every,
          "spike_threshold": spike_threshold, "max_spikes": max_spikes, "segment": segment}
    ints = [np.ascontiguousarray(torch.as_tensor(a).cpu().numpy(), dtype=np.int64)
            for a in (indptr, indices, types)]
    if len(taus) == 1:
        ints[2] = ints[2][:0]  # one type: the kernels read no type

    def host(t: Any) -> np.ndarray:
        return np.ascontiguousarray(t.detach().numpy())

    class NetworkRun(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, v0: Any, S0: Any, P: Any, I: Any, g0: Any, w: Any,  # noqa: N803, E741
                    arr0: Any) -> tuple[Any, ...]:
            out = network_run_op.run(
                (host(v0), host(S0), host(P), host(I), host(g0), ints[0], ints[1], host(w),
                 host(arr0), ints[2]), kw, None)
            ctx.checkpoints = out[7:]
            ctx.save_for_backward(P, I, w)
            res = tuple(torch.from_numpy(np.ascontiguousarray(o)) for o in out[:7])
            ctx.mark_non_differentiable(res[4])
            return res

        @staticmethod
        @once_differentiable
        def backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
            P, I, w = ctx.saved_tensors  # noqa: N806, E741
            g_v, g_S, g_g, g_rec, _, g_t, g_arr = grads
            dtype = P.detach().numpy().dtype

            def arr(g: Any, shape: tuple[int, ...]) -> np.ndarray:
                return np.zeros(shape, dtype) if g is None else host(g.contiguous())

            n = P.shape[1]
            got = network_run_vjp_op.run(
                (*ctx.checkpoints, host(P), host(I), ints[0], ints[1], host(w), ints[2],
                 arr(g_v, (n,)), arr(g_S, tuple(states0.shape)), arr(g_g, g0_shape),
                 arr(g_rec, (n_steps // record_every if record_every else 0, n)),
                 arr(g_t, (max_spikes, n)), arr(g_arr, arr_shape)),
                {**kw, "slope": slope}, None)
            return tuple(torch.from_numpy(np.ascontiguousarray(g)) for g in got)

    g0_shape, arr_shape = tuple(g_syn0.shape), tuple(arrivals0.shape)
    v, S, g, v_record, count, times, arrivals = NetworkRun.apply(
        v0, states0, params, i_ext, g_syn0, weights, arrivals0.to(v0.dtype))
    if not typed:
        g, arrivals = g[0], arrivals[:, 0]
    return NetworkSimulation(v, S, g, v_record, count, times, arrivals)
