"""The torch networks' whole run as one autograd function (their kernel engine).

The forward is the op ``network_run`` (point neurons) or ``cable_network_run`` (branched
cells): every step on the CPU backend's compiled loop, checkpoints kept. The backward is the
op's vjp (``network_run_vjp``, ``cable_network_run_vjp``): segments re-run and walked back
with the steps' vector-Jacobian products and the SuperSpike surrogate. Two calls per run,
where the step-by-step engines pay torch operations and autograd nodes every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..ops.ion import NetworkSimulation
from ..ops.ion_channel import ChannelSet


def _host(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().numpy())


def _ints(*arrays: Any) -> list[np.ndarray]:
    import torch

    return [np.ascontiguousarray(torch.as_tensor(a).cpu().numpy(), dtype=np.int64)
            for a in arrays]


def _whole_run(fwd_op: Any, vjp_op: Any, kw: dict[str, Any], slope: float,
               forward_arrays: Callable[[list[np.ndarray]], tuple[np.ndarray, ...]],
               vjp_arrays: Callable[[list[np.ndarray], tuple[np.ndarray, ...],
                                     list[np.ndarray]], tuple[np.ndarray, ...]],
               tensors: Sequence[Any]) -> tuple[Any, ...]:
    """The op pair as a ``torch.autograd.Function`` applied to ``tensors``.

    ``tensors`` are the differentiable inputs in the order of the vjp op's outputs;
    ``forward_arrays(hosts)`` builds the forward op's arrays from their NumPy views and
    ``vjp_arrays(hosts, checkpoints, grads)`` the vjp op's (``grads``: the seven outputs'
    incoming gradients but the spike counts', zeros where none came). The forward's first
    seven outputs are returned (the spike counts not differentiable); the rest are the
    checkpoints, kept on the autograd node.
    """
    import torch
    from torch.autograd.function import once_differentiable

    class WholeRun(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, *tensors: Any) -> tuple[Any, ...]:
            out = fwd_op.run(forward_arrays([_host(t) for t in tensors]), kw, None)
            ctx.checkpoints = out[7:]
            ctx.save_for_backward(*tensors)
            res = tuple(torch.from_numpy(np.ascontiguousarray(o)) for o in out[:7])
            ctx.shapes = [tuple(r.shape) for r in res]
            ctx.mark_non_differentiable(res[4])
            return res

        @staticmethod
        @once_differentiable  # a second derivative raises, never a silent zero
        def backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
            hosts = [_host(t) for t in ctx.saved_tensors]
            dtype = hosts[0].dtype
            g = [np.zeros(shape, dtype) if x is None else _host(x.contiguous())
                 for i, (x, shape) in enumerate(zip(grads, ctx.shapes, strict=True)) if i != 4]
            got = vjp_op.run(vjp_arrays(hosts, ctx.checkpoints, g), {**kw, "slope": slope},
                             None)
            return tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in got)

    return WholeRun.apply(*tensors)


def _run_kw(cs: ChannelSet, *, taus: Any, es: Any, dt: float, n_steps: int,
            delay_steps: int, record_every: int, spike_threshold: float, max_spikes: int,
            checkpoint_every: int) -> dict[str, Any]:
    return {"channels": cs, "dt": dt, "n_steps": n_steps, "delay_steps": delay_steps,
            "tau_syn": tuple(taus), "e_syn": tuple(es), "record_every": record_every,
            "spike_threshold": spike_threshold, "max_spikes": max_spikes,
            "segment": checkpoint_every or max(1, round(math.sqrt(n_steps)))}


def network_run_torch(cs: ChannelSet, v0: Any, states0: Any, params: Any, i_ext: Any,
                      weights: Any, indptr: Any, *, indices: Any, types: Any, taus: Any,
                      es: Any, typed: bool, g_syn0: Any, arrivals0: Any, slope: float,
                      **run: Any) -> NetworkSimulation:
    """Run a network whose inputs :func:`network_simulate_torch` has checked.

    ``g_syn0`` is ``(n_types, n)`` and ``arrivals0`` ``(delay_steps, n_types, n)``; the
    results are shaped as :func:`network_simulate_torch` returns them. ``run``: ``dt``,
    ``n_steps``, ``delay_steps``, ``record_every``, ``spike_threshold``, ``max_spikes``,
    ``checkpoint_every``.
    """
    from ..ops.ion_network_grad import network_run_op, network_run_vjp_op

    ptr, idx, kinds = _ints(indptr, indices, types)
    if len(taus) == 1:
        kinds = kinds[:0]  # one type: the kernels read no type

    def forward_arrays(h: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        v, S, P, I, g, w, arr = h  # noqa: E741 - the current density, as in the ops
        return (v, S, P, I, g, ptr, idx, w, arr, kinds)

    def vjp_arrays(h: list[np.ndarray], ck: tuple[np.ndarray, ...], g: list[np.ndarray]
                   ) -> tuple[np.ndarray, ...]:
        return (*ck, h[2], h[3], ptr, idx, h[5], h[6], kinds, *g)

    v, S, g, v_record, count, times, arrivals = _whole_run(
        network_run_op, network_run_vjp_op, _run_kw(cs, taus=taus, es=es, **run), slope,
        forward_arrays, vjp_arrays,
        (v0, states0, params, i_ext, g_syn0, weights, arrivals0.to(v0.dtype)))
    if not typed:
        g, arrivals = g[0], arrivals[:, 0]
    return NetworkSimulation(v, S, g, v_record, count, times, arrivals)


def cable_network_run_torch(cs: ChannelSet, v0: Any, states0: Any, params: Any, i_ext: Any,
                            parent: Any, coupling: Any, weights: Any, indptr: Any, *,
                            indices: Any, types: Any, compartments: Any, record_at: Any,
                            taus: Any, es: Any, typed: bool, g_syn0: Any, arrivals0: Any,
                            slope: float, **run: Any) -> NetworkSimulation:
    """Run a network of branched cells that :func:`cable_network_simulate_torch` has checked.

    ``g_syn0`` is ``(n_types, n_cells, n_comp)`` and ``arrivals0`` ``(delay_steps, n_types,
    n_cells, n_comp)``; ``run`` as for :func:`network_run_torch`.
    """
    from ..ops.ion_cable_network_grad import cable_network_run_op, cable_network_run_vjp_op

    ptr, idx, kinds, comps, par = _ints(indptr, indices, types, compartments, parent)
    if len(taus) == 1:
        kinds = kinds[:0]
    kw = {**_run_kw(cs, taus=taus, es=es, **run), "record_at": record_at}

    def forward_arrays(h: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        v, S, P, I, C, g, w, arr = h  # noqa: E741, N806 - the ops' names
        return (v, S, P, I, par, C, g, ptr, idx, w, arr, kinds, comps)

    def vjp_arrays(h: list[np.ndarray], ck: tuple[np.ndarray, ...], g: list[np.ndarray]
                   ) -> tuple[np.ndarray, ...]:
        return (*ck, h[2], h[3], par, h[4], ptr, idx, h[6], h[7], kinds, comps, *g)

    v, S, g, v_record, count, times, arrivals = _whole_run(
        cable_network_run_op, cable_network_run_vjp_op, kw, slope, forward_arrays,
        vjp_arrays,
        (v0, states0, params, i_ext, coupling, g_syn0, weights, arrivals0.to(v0.dtype)))
    if not typed:
        g, arrivals = g[0], arrivals[:, 0]
    return NetworkSimulation(v, S, g, v_record, count, times, arrivals)
