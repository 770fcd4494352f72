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

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import ops
from .._errors import InputError
from ..ops._common import is_whole
from ..ops.ion import IonSimulation
from ..ops.ion_channel import Channel, ChannelSet, channel_set, gates_and_conductances
from ..ops.ion_grad import spike_crossing, torch_step
from ._network import index_array
from ._population import check_counts, run_steps


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
    gradient: str = "backprop",
    wrt: Sequence[str] | None = None,
    backend: str | None = None,
) -> IonSimulation:
    """Simulate neurons with the compiled kernel, differentiably.

    Gradients of the recorded voltages, final state and spike times flow back to
    ``params``, ``i_ext``, ``v0`` and ``states0`` (whichever are tensors that require
    grad), in one of two ways:

    - ``gradient="backprop"``: the forward costs one kernel run; the backward re-runs the
      simulation in torch one segment of ``checkpoint_every`` steps at a time, from
      checkpoints of ``v`` and the states, keeping about ``n (n_steps / K + K)`` values
      instead of every step. Any input, any current.
    - ``gradient="forward"``: :func:`fusekit.ops.ion_sensitivity` carries the derivatives
      with respect to the parameter rows named in ``wrt`` (and ``"i_ext"``, a constant
      current) through the kernel's one pass, about 1.3-1.5x the cost of the forward alone
      and no re-run; the backward is a weighted sum of the stored tangents. Rows of
      ``params`` not in ``wrt`` get a zero gradient; ``v0`` and ``states0`` get none (they
      must not require grad). Memory: the tangents of ``v_record``, ``len(wrt)`` times its
      size.

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
        gradient: ``"backprop"`` or ``"forward"`` (see above).
        wrt: With ``gradient="forward"``: the parameter names (and ``"i_ext"``) to
            differentiate by; ``None``: every parameter row, and ``"i_ext"`` when it
            requires grad.
        backend: As for every fusekit op.

    Returns:
        :class:`IonSimulation` of torch tensors; ``spike_times`` relative to the start, ms.
    """
    import torch

    cs = channel_set(channels)
    n_steps = run_steps("simulate", duration, dt)
    check_counts("simulate", record_every=record_every, max_spikes=max_spikes)
    _require_tensors("simulate", "fusekit.ops.ion_simulate", params=params)
    if params.ndim != 2:
        raise InputError(f"simulate: params must be an (n_params, n) tensor "
                         f"(fusekit.neuro.params_tensor makes one), got {tuple(params.shape)}")
    n = params.shape[1]
    v0 = torch.as_tensor(v0, dtype=params.dtype, device=params.device).expand(n)
    if states0 is None:
        states0 = torch.as_tensor(
            cs.steady_states(v0.detach().cpu().numpy(), params.detach().cpu().numpy()),
            dtype=params.dtype, device=params.device)
    i_ext = torch.as_tensor(i_ext, dtype=params.dtype)
    wants_grad = torch.is_grad_enabled() and (params.requires_grad or i_ext.requires_grad)
    if gradient == "forward" and wants_grad:
        return _forward_mode(cs, v0.contiguous(), states0, params, i_ext, wrt, dt=dt,
                             n_steps=n_steps, record_every=record_every,
                             spike_threshold=spike_threshold, max_spikes=max_spikes,
                             backend=backend)
    if gradient not in ("backprop", "forward"):
        raise InputError(f"simulate: gradient must be 'backprop' or 'forward', got "
                         f"{gradient!r}")
    if wrt is not None and gradient == "backprop":
        raise InputError("simulate: wrt applies to gradient='forward' only (backprop "
                         "differentiates every input that requires grad)")
    return ops.ion_simulate(
        v0.contiguous(), states0, params, i_ext,
        channels=cs, dt=dt, n_steps=n_steps, record_every=record_every,
        spike_threshold=spike_threshold, max_spikes=max_spikes,
        checkpoint_every=checkpoint_every, backend=backend)


def _forward_mode(cs: ChannelSet, v0: Any, states0: Any, params: Any, i_ext: Any,
                  wrt: Sequence[str] | None, **kw: Any) -> IonSimulation:
    """``simulate`` with the gradient from forward-mode sensitivities (ion_sensitivity)."""
    for name, a in (("v0", v0), ("states0", states0)):
        if getattr(a, "requires_grad", False):
            raise InputError(
                f"simulate: gradient='forward' differentiates by parameters and a constant "
                f"i_ext only, but {name} requires grad; use gradient='backprop' for it"
            )
    if wrt is None:
        wrt = list(cs.param_names) + (["i_ext"] if i_ext.requires_grad else [])
    wrt = tuple(wrt)
    if isinstance(wrt, str) or not wrt:
        raise InputError(f"simulate: wrt must list parameter names (or 'i_ext'), got {wrt!r}")
    if i_ext.requires_grad and "i_ext" not in wrt:
        raise InputError("simulate: i_ext requires grad but 'i_ext' is not in wrt; add it, "
                         "or detach i_ext")
    fn = _forward_mode_function()
    out = fn.apply(params, i_ext, v0.detach(), states0.detach(), cs, wrt, kw)
    return IonSimulation(*out)


def _tangent_sum(grads: tuple[Any, ...], tangents: tuple[Any, ...]) -> Any:
    """Incoming gradients dotted with their tangents: ``(d, n)``, per direction and neuron.

    ``grads`` are those of (v, states, v_record, spike_times), ``None`` where unused.
    """
    import torch

    g_v, g_S, g_rec, g_times = grads
    dv, dS, dv_rec, dT = tangents
    total = torch.zeros_like(dv)
    if g_v is not None:
        total = total + g_v[None] * dv
    if g_S is not None and dS.numel():
        total = total + (g_S[None] * dS).sum(1)
    if g_rec is not None and dv_rec.numel():
        total = total + torch.einsum("rn,rdn->dn", g_rec, dv_rec)
    if g_times is not None and dT.numel():
        spiked = ~torch.isnan(dT)  # no spike: no time and no gradient
        total = total + torch.where(spiked, g_times[:, None] * dT, 0.0).sum(0)
    return total


@functools.cache
def _forward_mode_function() -> Any:
    import torch

    class ForwardModeSimulate(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, params: Any, i_ext: Any, v0: Any, states0: Any, cs: Any,
                    wrt: tuple[str, ...], kw: dict[str, Any]) -> tuple[Any, ...]:
            out = ops.ion_sensitivity(v0, states0, params.detach(), i_ext.detach(),
                                      channels=cs, wrt=wrt, **kw)
            ctx.rows = [None if w == "i_ext" else cs.param_index(w) for w in wrt]
            ctx.n_params = params.shape[0]
            ctx.save_for_backward(out.dv, out.dstates, out.dv_record, out.dspike_times)
            ctx.mark_non_differentiable(out.spike_count)
            return out.v, out.states, out.v_record, out.spike_count, out.spike_times

        @staticmethod
        def backward(ctx: Any, g_v: Any, g_S: Any, g_rec: Any, _g_count: Any,
                     g_times: Any) -> tuple[Any, ...]:
            total = _tangent_sum((g_v, g_S, g_rec, g_times), ctx.saved_tensors)
            g_P = torch.zeros((ctx.n_params, total.shape[1]), dtype=total.dtype,
                              device=total.device)
            g_I = None
            for q, row in enumerate(ctx.rows):
                if row is None:
                    g_I = total[q]
                else:
                    g_P[row] = total[q]
            return (g_P if ctx.needs_input_grad[0] else None,
                    g_I if ctx.needs_input_grad[1] else None, None, None, None, None, None)

    return ForwardModeSimulate


class _Recorder:
    """A torch simulation's spike counts, spike times and recorded ``v``, step by step.

    Keeps the first ``max_spikes`` spike times per neuron and every ``record_every``-th
    potential; shared by :func:`simulate_torch` and :func:`network_simulate_torch`.
    """

    def __init__(self, v0: Any, max_spikes: int, record_every: int,
                 row_shape: tuple[int, ...] | None = None) -> None:
        import torch

        n = v0.shape[0]
        self.n, self.record_every, self.rows = n, record_every, []
        #: The shape of a recorded row (``(n,)``; a cable network's ``(n_cells, n_cols)``).
        self.row_shape = (n,) if row_shape is None else row_shape
        self.count = torch.zeros(n, dtype=torch.int64, device=v0.device)
        self.times = [torch.full((n,), float("nan"), dtype=v0.dtype, device=v0.device)
                      for _ in range(max_spikes)]

    def step(self, v: Any, v_new: Any, threshold: float, step: int, dt: float,
             row: Any = None) -> None:
        """Record step ``step``, in which the potential went from ``v`` to ``v_new``.

        ``row``: what a recording keeps of this step (default ``v_new``).
        """
        import torch

        crossed = (v < threshold) & (v_new >= threshold)
        if self.times and bool(crossed.any()):  # times only on steps with a crossing
            _, t_cross = spike_crossing(v, v_new, threshold, step, dt)
            for slot in range(len(self.times)):
                self.times[slot] = torch.where(crossed & (self.count == slot), t_cross,
                                               self.times[slot])
        self.count = self.count + crossed.to(torch.int64)
        if self.record_every and (step + 1) % self.record_every == 0:
            self.rows.append(v_new if row is None else row)

    def continued(self, count: Any, times: list[Any]) -> _Recorder:
        """A recorder with this one's settings that goes on from ``count`` and ``times``."""
        other = object.__new__(_Recorder)
        other.n, other.record_every, other.rows = self.n, self.record_every, []
        other.row_shape = self.row_shape
        other.count, other.times = count, times
        return other

    def result(self, v: Any) -> tuple[Any, Any, Any]:
        """``(v_record, spike_count, spike_times)``."""
        import torch

        v_record = torch.stack(self.rows) if self.rows else v.new_empty((0, *self.row_shape))
        spike_times = torch.stack(self.times) if self.times else v.new_empty((0, self.n))
        return v_record, self.count, spike_times


def _checkpointed_segment(checkpoint: Any, run: Any, rec: _Recorder, a: int, b: int,
                          state: tuple[Any, ...]) -> tuple[Any, ...]:
    """Steps ``a .. b - 1`` of :func:`network_simulate_torch` under ``checkpoint``.

    The segment's function takes the state and the spike times so far and returns them
    after the segment with what it recorded, so autograd keeps only the segment's inputs and
    outputs. Each run of it (the forward, and the re-run in the backward) records into a
    recorder of its own that starts from ``rec``'s counts; ``rec`` takes the forward's.
    """
    import torch

    v, S, g_syn, ring = state
    n_ring = len(ring)
    count0 = rec.count

    def segment(v: Any, S: Any, g_syn: Any, *tensors: Any) -> tuple[Any, ...]:
        seg = rec.continued(count0, list(tensors[n_ring:]))
        v, S, g_syn, ring = run(a, b, v, S, g_syn, list(tensors[:n_ring]), seg)
        rows = torch.stack(seg.rows) if seg.rows else v.new_empty((0, *rec.row_shape))
        return (v, S, g_syn, *ring, seg.count, rows, *seg.times)

    out = checkpoint(segment, v, S, g_syn, *ring, *rec.times, use_reentrant=False)
    rec.count, rows = out[3 + n_ring], out[4 + n_ring]
    rec.times = list(out[5 + n_ring:])
    rec.rows += list(rows.unbind(0))
    return out[0], out[1], out[2], list(out[3:3 + n_ring])


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
    op = "simulate_torch"
    _require_tensors(op, "fusekit.ops.ion_simulate", v0=v0, states0=states0, params=params,
                     i_ext=i_ext)
    cs = channel_set(channels)
    _check_membranes(op, cs, v0, states0, params, i_ext, dt=dt, n_steps=n_steps,
                     record_every=record_every, spike_threshold=spike_threshold,
                     max_spikes=max_spikes)
    v, S, P = v0, states0, params
    rec = _Recorder(v0, max_spikes, record_every)
    for step in range(n_steps):
        v_new, S = torch_step(cs, v, S, P, i_ext if i_ext.ndim == 1 else i_ext[step], dt)
        rec.step(v, v_new, spike_threshold, step, dt)
        v = v_new
    v_record, count, spike_times = rec.result(v)
    return IonSimulation(v, S, v_record, count, spike_times)


def network_simulate_torch(
    channels: ChannelSet | Sequence[type[Channel]],
    v0: Any,
    states0: Any,
    params: Any,
    i_ext: Any,
    g_syn0: Any,
    indptr: Any,
    indices: Any,
    weights: Any,
    *,
    dt: float,
    n_steps: int,
    delay_steps: int,
    tau_syn: float | Sequence[float] = 5.0,
    e_syn: float | Sequence[float] = 0.0,
    synapse_type: Any = None,
    record_every: int = 0,
    spike_threshold: float = 0.0,
    max_spikes: int = 0,
    surrogate: Any = None,
    checkpoint_every: int = 0,
    arrivals0: Any = None,
    compile: bool = False,
    engine: str = "auto",
) -> Any:
    """Differentiable :func:`fusekit.ops.network_simulate`: gradients w.r.t. synaptic weights.

    The same scheme as the op's reference (conductance synapses in CSR form, delays, the ion
    step), as torch tensor expressions with one Python iteration per step, so autograd reaches
    ``weights``, ``params``, ``i_ext``, ``v0``, ``states0`` and ``g_syn0``. A spike is
    discrete: forward it is the threshold crossing, exactly as in the op; backward its
    derivative with respect to the new potential is the ``surrogate``'s (default
    :class:`~fusekit.neuro.SuperSpike` with slope 1/mV), so gradients flow through spikes to
    the weights that caused them (surrogate gradients, as for :class:`HHLayer`). The
    surrogate acts at every step of every neuron with outgoing synapses, firing or not (how
    a silent neuron learns to fire); gradients are exact where the path from the loss to a
    parameter passes through no such neuron's spike output (e.g. the weights onto neurons
    without outgoing synapses). Memory: autograd keeps every step's intermediates, unless
    ``checkpoint_every = K > 0``: then the steps run in segments of ``K`` under
    :func:`torch.utils.checkpoint.checkpoint`, which keeps only each segment's inputs (the
    potentials, states, conductances and spikes in flight; the kernel engine keeps, for the
    spikes in flight, one flag per neuron for each of the last ``delay_steps`` steps) and
    re-runs the segment in the backward, so memory grows with ``n_steps / K + K`` steps
    instead of ``n_steps`` for about one more forward pass (the same gradients).

    Example:
        >>> import torch
        >>> from fusekit.neuro import HH_CHANNELS, ChannelSet, network_simulate_torch
        >>> hh, f64 = ChannelSet(HH_CHANNELS), torch.float64
        >>> n = 2  # neuron 0 drives neuron 1
        >>> w = torch.tensor([0.05], dtype=f64, requires_grad=True)
        >>> out = network_simulate_torch(
        ...     hh, torch.full((n,), -65.0, dtype=f64), torch.tensor(hh.initial_states(n)),
        ...     torch.tensor(hh.default_params(n)), torch.tensor([10.0, 0.0], dtype=f64),
        ...     torch.zeros(n, dtype=f64), torch.tensor([0, 1, 1]), torch.tensor([1]), w,
        ...     dt=0.025, n_steps=800, delay_steps=40, record_every=1)
        >>> out.v_record[:, 1].mean().backward()  # d(mean v of neuron 1) / d(weight)
        >>> bool(w.grad > 0)
        True

    Args:
        channels: As for :func:`fusekit.ops.network_simulate`.
        v0: Initial potentials, mV, ``(n,)``, a torch tensor (float32 or float64).
        states0: ``(n_states, n)``, torch.
        params: ``(n_params, n)``, torch.
        i_ext: uA/cm^2, ``(n,)`` or ``(n_steps, n)``, torch.
        g_syn0: Initial synaptic conductances, mS/cm^2, ``(n,)`` (``(n_types, n)`` with
            several synapse types), torch.
        indptr: CSR row pointers over presynaptic neurons, ``(n + 1,)``, integers.
        indices: Postsynaptic neuron of every synapse, ``(nnz,)``, integers.
        weights: Conductance jump per spike, mS/cm^2, ``(nnz,)``, a torch tensor of ``v0``'s
            dtype (may require grad).
        dt: ms.
        n_steps: Steps.
        delay_steps: Synaptic delay in steps, at least 1.
        tau_syn: Synaptic decay time constant, ms, or one per synapse type.
        e_syn: Synaptic reversal potential, mV, or one per synapse type.
        synapse_type: Type of every synapse, ``(nnz,)`` integers (as for
            :func:`fusekit.ops.network_simulate`); zeros when ``None``.
        record_every: Record ``v`` every this many steps (0: none).
        spike_threshold: mV.
        max_spikes: Spike times kept per neuron.
        surrogate: Callable ``x -> spike`` for ``x = v_new - threshold`` (Heaviside forward);
            default ``SuperSpike(1.0)``.
        checkpoint_every: Steps per checkpointed segment (0: no checkpoints; about
            ``sqrt(n_steps)`` bounds memory best).
        arrivals0: Spikes in flight at the start, ``(delay_steps, n)`` (``(delay_steps,
            n_types, n)``) torch (an earlier call's ``arrivals``); zeros when ``None``.
        compile: Run each step's membrane update (channels and voltage, the bulk of the
            step's tensor operations) as one ``torch.compile``d function, the same results
            to about 1e-11. The first call compiles it (20-50 s on a 2-core machine, once per
            process, channel set, dtype and size, less from torch's disk cache); then 500 HH
            neurons took 1.4 ms per step, forward and backward, against 3.6-4.4 ms. It
            needs what ``torch.compile`` needs on the CPU (a C++ compiler). Only with
            ``engine="torch"`` (``"auto"`` picks it then).
        engine: How the run goes. ``"kernel"``: with the default surrogate (or any
            :class:`~fusekit.neuro.SuperSpike`), the whole run is one call of the op
            ``network_run`` and its backward one call of ``network_run_vjp``, each one
            compiled loop on the CPU (the channels from generated kernels; checkpoints every
            ``checkpoint_every`` steps, about ``sqrt(n_steps)`` when 0); with another
            surrogate, or on CUDA tensors, one call per step of the ops
            :func:`fusekit.ops.membrane_step` and :func:`fusekit.ops.synapse_deliver`, each
            with its generated backward (on CUDA tensors their CUDA kernels; not yet timed
            on a GPU, so ``"auto"`` keeps the torch engine there). It needs channel
            functions that do not branch on their arguments (as the compiled adjoints do),
            and gives first derivatives only. ``"torch"``: torch tensor operations, one
            Python iteration per step (any device, higher-order gradients, ``compile``).
            ``"auto"`` (default): the kernel for CPU tensors where it can run, else torch.
            The two agree to rounding (the kernel's ``exp`` is its own): 500 HH neurons at
            5% connectivity took 0.12 ms per step forward and backward with the kernel
            against 3.4-3.8 ms in torch, 5,000 neurons 1.2-1.3 against 7.0-8.7 ms (2-core
            Zen 1 host).

    Returns:
        :class:`~fusekit.ops.NetworkSimulation` of torch tensors (``v``, ``states``,
        ``g_syn``, ``v_record``, ``spike_count``, ``spike_times``, ``arrivals``).
    """
    op = "network_simulate_torch"
    _require_tensors(op, "fusekit.ops.network_simulate", v0=v0, states0=states0,
                     params=params, i_ext=i_ext, g_syn0=g_syn0, weights=weights)
    indptr = index_array(op, "indptr", indptr)  # the kernel engine takes it as it is
    cs = channel_set(channels)
    _check_membranes(op, cs, v0, states0, params, i_ext, dt=dt, n_steps=n_steps,
                     record_every=record_every, spike_threshold=spike_threshold,
                     max_spikes=max_spikes)
    if not isinstance(compile, bool):
        raise InputError(f"{op}: compile must be True or False, got {compile!r}")
    kernels = _network_engine(op, engine, cs, v0, compile, gpu_steps=True) == "kernel"
    if kernels:
        from ..ops.ion_membrane import membrane_step_function

        step = membrane_step_function()

        def core(cs: ChannelSet, dt: float, v: Any, S: Any, params: Any, g: Any, ge: Any,
                 i_inj: Any) -> tuple[Any, Any]:
            return step(v, S, params, i_inj, g, ge, cs.key, dt, None)
    else:
        core = _compiled_membrane() if compile else _membrane_step

    def membrane(step: int, v: Any, S: Any, g: Any, ge: Any) -> tuple[Any, Any]:
        i_inj = i_ext if i_ext.ndim == 1 else i_ext[step]
        return core(cs, dt, v, S, params, g, ge, i_inj)

    whole_run = None
    from ._layers import SuperSpike

    if kernels and v0.device.type == "cpu" and (surrogate is None
                                                or isinstance(surrogate, SuperSpike)):
        from ._network_run import network_run_torch

        def whole_run(**pieces: Any) -> Any:
            return network_run_torch(
                cs, v0, states0, params, i_ext, weights, indptr, dt=dt, n_steps=n_steps,
                delay_steps=delay_steps, record_every=record_every,
                spike_threshold=spike_threshold, max_spikes=max_spikes,
                checkpoint_every=checkpoint_every,
                slope=1.0 if surrogate is None else surrogate.slope, **pieces)

    return _torch_network(
        op, membrane, v0, states0, g_syn0, indptr, indices, weights, None, post=tuple(v0.shape),
        probe=lambda v: v, record=lambda v: v, dt=dt, n_steps=n_steps,
        delay_steps=delay_steps, tau_syn=tau_syn, e_syn=e_syn, synapse_type=synapse_type,
        record_every=record_every, spike_threshold=spike_threshold, max_spikes=max_spikes,
        surrogate=surrogate, checkpoint_every=checkpoint_every, arrivals0=arrivals0,
        kernels=kernels, whole_run=whole_run)


def _check_membranes(op: str, cs: ChannelSet, v0: Any, states0: Any, params: Any, i_ext: Any,
                     **kw: Any) -> None:
    """Run the op ``ion_simulate``'s checks under ``op``'s name.

    Shapes, dtypes, finite values, unphysical parameters, a step too long for the gates.
    """
    import torch

    from ..ops.ion import _check_ion_simulate

    try:
        with torch.no_grad():
            _check_ion_simulate(v0, states0, params, i_ext, channels=cs, **kw)
    except InputError as exc:
        raise InputError(str(exc).replace("ion_simulate:", f"{op}:", 1)) from None


def _network_engine(op: str, engine: Any, cs: ChannelSet, v0: Any, compile: bool,
                    why_not: str | None = None, gpu_steps: bool = False) -> str:
    """``"kernel"`` or ``"torch"`` for the torch networks' ``engine``.

    ``why_not``: one more reason the kernel cannot run, from the caller. ``gpu_steps``: the
    caller can run its steps on the CUDA backend's per-step kernels, which ``engine="kernel"``
    then takes for CUDA tensors (``"auto"`` keeps the torch engine there).
    """
    import torch

    from .._registry import unavailable_reason
    from ..ops.ion_symbolic import is_traceable

    if engine not in ("auto", "kernel", "torch"):
        raise InputError(f"{op}: engine must be 'auto', 'kernel' or 'torch', got {engine!r}")
    why = [why_not] if why_not else []
    if compile:
        why.append("compile=True compiles the torch engine")
    if v0.device.type == "cuda" and gpu_steps and engine == "kernel":
        reason = unavailable_reason("cuda")
        if reason:
            why.append(f"the tensors are on {v0.device} and the CUDA backend is unavailable "
                       f"({reason})")
    elif v0.device.type != "cpu":
        why.append(f"the tensors are on {v0.device}, the kernel runs on the CPU")
    if v0.dtype not in (torch.float32, torch.float64):
        why.append(f"the kernel takes float32 or float64, not {v0.dtype}")
    if not is_traceable(cs):
        why.append(f"{cs!r} has channel functions that branch on their arguments (the "
                   "kernel is generated from traced functions)")
    if engine == "kernel" and why:
        raise InputError(f"{op}: engine='kernel' cannot run here: {'; '.join(why)}. Use "
                         "engine='torch' (or 'auto')")
    return "torch" if why or engine == "torch" else "kernel"


def _membrane_step(cs: ChannelSet, dt: float, v: Any, S: Any, params: Any, g: Any, ge: Any,
                   i_inj: Any) -> tuple[Any, Any]:
    """One step of the network's membranes in torch: gates, then the implicit voltage update.

    ``g``, ``ge``: the synaptic conductance summed over the types, and its product with their
    reversal potentials.
    """
    import torch

    def as_tensor(x: Any) -> Any:  # channel functions may return constants
        return torch.as_tensor(x, dtype=v.dtype, device=v.device)

    S, g_ch, ge_ch = gates_and_conductances(cs, v, S, params, dt, exp=torch.exp,
                                            stack=torch.stack, convert=as_tensor)
    k_ = dt / params[0]
    return (v + k_ * (ge + ge_ch + i_inj)) / (1.0 + k_ * (g + g_ch)), S


@functools.cache
def _compiled_membrane() -> Any:
    """:func:`_membrane_step` under ``torch.compile``, made once per process.

    torch keeps one compiled graph per channel set, dtype and size under the one wrapper.
    """
    import warnings

    import torch

    step = torch.compile(_membrane_step, dynamic=False)

    def call(*args: Any) -> Any:
        with warnings.catch_warnings():
            # dynamo reads .grad of the non-leaf inputs while it traces (torch 2.13), which
            # warns; where warnings are errors, that would stop the compilation
            warnings.filterwarnings("ignore", category=UserWarning,
                                    message="The .grad attribute of a Tensor that is not")
            return step(*args)

    return call


def _require_tensors(op: str, numpy_op: str, **tensors: Any) -> None:
    import torch

    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise InputError(f"{op}: {name} must be a torch tensor, got {type(t).__name__}; the "
                             f"op {numpy_op} takes NumPy arrays")


def _torch_network(
    op: str, membrane: Callable[..., tuple[Any, Any]], v0: Any, states0: Any, g_syn0: Any,
    indptr: Any, indices: Any, weights: Any, synapse_compartment: Any, *,
    post: tuple[int, ...], probe: Callable[[Any], Any], record: Callable[[Any], Any],
    dt: float, n_steps: int, delay_steps: int, tau_syn: Any, e_syn: Any, synapse_type: Any,
    record_every: int, spike_threshold: float, max_spikes: int, surrogate: Any,
    checkpoint_every: int, arrivals0: Any, kernels: bool = False,
    whole_run: Callable[..., Any] | None = None,
) -> Any:
    """The torch network of :func:`network_simulate_torch` and :func:`cable_network_simulate_torch`.

    ``post``: the shape of one synapse type's conductances, ``(n,)`` or ``(n_cells,
    n_comp)``; its first entry is the neurons (cells) the CSR's rows and ``indices`` count.
    ``membrane(step, v, S, g, ge) -> (v_new, S_new)`` takes the synaptic conductance summed
    over the types and its product with their reversal potentials; ``probe(v)`` is where
    spikes are detected (``(n,)``), ``record(v)`` what a recording keeps. ``kernels``: the
    spikes reach their targets through the op :func:`fusekit.ops.synapse_deliver` (CPU
    tensors), which reads only the rows of neurons that spiked, in place of torch's
    gather-multiply-scatter over every synapse. ``whole_run``: once the inputs are checked,
    the run is ``whole_run(indices=, types=, taus=, es=, typed=, g_syn0=, arrivals0=)``
    (``g_syn0`` ``(n_types, n)``, ``arrivals0`` ``(delay_steps, n_types, n)``) instead.
    """
    import torch

    from ..ops.ion import NetworkSimulation, check_synapses, synapse_decays, synapse_kinds

    n = post[0]
    n_post = int(np.prod(post))
    indptr_h, indices_h = index_array(op, "indptr", indptr), index_array(op, "indices", indices)
    indptr = torch.from_numpy(indptr_h).to(v0.device)
    indices = torch.from_numpy(indices_h).to(v0.device)
    if indptr.shape != (n + 1,) or indices.shape != weights.shape or weights.ndim != 1:
        raise InputError(f"{op}: indptr must be ({n + 1},) and indices and weights one (nnz,) "
                         f"shape, got {tuple(indptr.shape)}, {tuple(indices.shape)} and "
                         f"{tuple(weights.shape)}")
    if int(indptr[-1]) != weights.shape[0] or (indices.numel() and (
            int(indices.min()) < 0 or int(indices.max()) >= n)):
        raise InputError(f"{op}: indptr[-1] must equal the {weights.shape[0]} synapses and "
                         f"indices lie in [0, {n})")
    if weights.dtype != v0.dtype:
        raise InputError(f"{op}: weights must have v0's dtype {v0.dtype}, got {weights.dtype}")
    if weights.numel() and not bool(weights.detach().min() >= 0):
        raise InputError(f"{op}: synaptic weights are conductance jumps (mS/cm^2) and must not "
                         "be negative or NaN (make a synapse inhibitory with e_syn). When "
                         "training them, keep them non-negative: weights.data.clamp_(min=0) "
                         "after each optimizer step, or weights = softplus(raw)")
    if not is_whole(delay_steps) or delay_steps < 1:
        raise InputError(f"{op}: delay_steps must be an integer >= 1 (the synaptic delay in "
                         f"steps), got {delay_steps!r}")
    delay_steps = int(delay_steps)
    if surrogate is not None and not callable(surrogate):
        raise InputError(f"{op}: surrogate must be a callable x -> spike (such as "
                         f"fusekit.neuro.SuperSpike(1.0)) or None for the default, got "
                         f"{surrogate!r}")
    if not is_whole(checkpoint_every) or checkpoint_every < 0:
        raise InputError(f"{op}: checkpoint_every must be an int >= 0 (0: no checkpoints), got "
                         f"{checkpoint_every!r}")
    taus, es, typed = synapse_kinds(tau_syn, e_syn)
    n_types = len(taus)
    if tuple(g_syn0.shape) != ((n_types, *post) if typed else post) \
            or g_syn0.dtype != v0.dtype:
        raise InputError(f"{op}: g_syn0 must be {(n_types, *post) if typed else post} (one row "
                         f"per synapse type when tau_syn or e_syn name several) of v0's dtype "
                         f"{v0.dtype}, got {tuple(g_syn0.shape)} {g_syn0.dtype}")
    if synapse_type is None:
        if n_types > 1:
            raise InputError(f"{op}: {n_types} synapse types are declared by tau_syn and e_syn; "
                             f"give synapse_type, the type of every synapse")
        synapse_type = indices_h * 0
    types_h = index_array(op, "synapse_type", synapse_type)
    types = torch.from_numpy(types_h).to(v0.device)
    if types.shape != indices.shape or (types.numel() and (
            int(types.min()) < 0 or int(types.max()) >= n_types)):
        raise InputError(f"{op}: synapse_type must be ({indices.shape[0]},) integers in [0, "
                         f"{n_types}), got {tuple(types.shape)}")
    flat = indices  # a synapse's postsynaptic column of the flattened post shape
    if len(post) == 2:  # cells of n_comp compartments: compartment 0 unless given
        n_comp = post[1]
        flat = indices * n_comp
        if synapse_compartment is not None:
            comps = torch.from_numpy(index_array(op, "synapse_compartment",
                                                 synapse_compartment)).to(v0.device)
            if comps.shape != indices.shape or (comps.numel() and (
                    int(comps.min()) < 0 or int(comps.max()) >= n_comp)):
                raise InputError(f"{op}: synapse_compartment must be ({indices.shape[0]},) "
                                 f"integers in [0, {n_comp}), got {tuple(comps.shape)}")
            flat = flat + comps
    in_flight = (delay_steps, n_types, *post) if typed else (delay_steps, *post)
    if arrivals0 is not None and (not isinstance(arrivals0, torch.Tensor)
                                  or tuple(arrivals0.shape) != in_flight):
        raise InputError(f"{op}: arrivals0 must be a {in_flight} torch tensor (an earlier "
                         f"call's arrivals), got {tuple(getattr(arrivals0, 'shape', ()))} "
                         f"{type(arrivals0).__name__}")
    # the op's synapse checks on host copies, for either engine: a malformed indptr, NaN or
    # infinite weights, negative or NaN g_syn0 and arrivals0
    g_h = g_syn0.detach().cpu().numpy().reshape(n_types, *post)
    a_h = (np.zeros((delay_steps, *g_h.shape), g_h.dtype) if arrivals0 is None else
           arrivals0.detach().to(v0.dtype).cpu().numpy().reshape(delay_steps, *g_h.shape))
    check_synapses(op, str(g_h.dtype), post, g_h, indptr_h, indices_h,
                   weights.detach().cpu().numpy(), a_h, types_h, n_types=n_types,
                   delay_steps=delay_steps)
    if surrogate is None:
        from ._layers import SuperSpike
        surrogate = SuperSpike(1.0)
    deliver = pre = None
    if kernels:
        from ..ops.ion_membrane import synapse_deliver_function

        deliver = synapse_deliver_function()
    else:  # each synapse's presynaptic neuron, for the gather-multiply-scatter
        pre = torch.repeat_interleave(torch.arange(n, device=v0.device), indptr.diff())
    target = types * n_post + flat  # a synapse's place in the flattened (n_types, *post)
    zeros = v0.new_zeros(n_types * n_post)
    shape = (1,) * len(post)
    decay = torch.tensor(synapse_decays(dt, taus), dtype=v0.dtype,
                         device=v0.device).view(-1, *shape)
    e_rev = torch.tensor(es, dtype=v0.dtype, device=v0.device).view(-1, *shape)
    rec = _Recorder(probe(v0), max_spikes, record_every, tuple(record(v0).shape))

    def run(a: int, b: int, v: Any, S: Any, g_syn: Any, ring: list[Any],
            rec: _Recorder) -> tuple[Any, ...]:
        # steps a .. b - 1; ring[k % delay_steps]: arrivals at the start of step k
        for step in range(a, b):
            slot = step % delay_steps
            g_syn = g_syn * decay + ring[slot]
            v_new, S = membrane(step, v, S, g_syn.sum(0), (g_syn * e_rev).sum(0))
            soma, soma_new = probe(v), probe(v_new)
            rec.step(soma, soma_new, spike_threshold, step, dt, record(v_new))
            # forward exactly the crossing; backward the surrogate's derivative in v_new
            spikes = (surrogate(soma_new - spike_threshold)
                      * (soma < spike_threshold).to(v.dtype))
            # arrives at the start of step + delay_steps, whose slot is this step's (every
            # step, so that the surrogate reaches neurons near threshold that did not fire)
            if deliver is None:
                arrived = zeros.index_add(0, target, weights * spikes[pre])
            else:
                arrived = deliver(spikes, indptr, weights, target, n_types * n_post, None)
            arrived = arrived.view(n_types, *post)
            ring = [*ring[:slot], arrived, *ring[slot + 1:]]
            v = v_new
        return v, S, g_syn, ring

    if arrivals0 is None:
        ring0 = [zeros.view(n_types, *post)] * delay_steps
    else:
        ring0 = list(arrivals0.to(v0.dtype).reshape(delay_steps, n_types, *post).unbind(0))
    state = (v0, states0, g_syn0.reshape(n_types, *post), ring0)
    if whole_run is not None:
        return whole_run(indices=indices, types=types, taus=taus, es=es, typed=typed,
                         g_syn0=state[2], arrivals0=torch.stack(ring0))
    if not checkpoint_every:
        state = run(0, n_steps, *state, rec)
    else:
        from torch.utils.checkpoint import checkpoint

        for a in range(0, n_steps, checkpoint_every):
            b = min(a + checkpoint_every, n_steps)
            state = _checkpointed_segment(checkpoint, run, rec, a, b, state)
    v, S, g_syn, ring = state
    arrivals = torch.stack([ring[(n_steps + x) % delay_steps] for x in range(delay_steps)])
    if not typed:
        g_syn, arrivals = g_syn[0], arrivals[:, 0]
    v_record, count, spike_times = rec.result(v)
    return NetworkSimulation(v, S, g_syn, v_record, count, spike_times, arrivals)


def cable_network_simulate_torch(
    channels: ChannelSet | Sequence[type[Channel]],
    v0: Any,
    states0: Any,
    params: Any,
    i_ext: Any,
    parent: Any,
    coupling: Any,
    g_syn0: Any,
    indptr: Any,
    indices: Any,
    weights: Any,
    *,
    dt: float,
    n_steps: int,
    delay_steps: int,
    tau_syn: float | Sequence[float] = 5.0,
    e_syn: float | Sequence[float] = 0.0,
    synapse_type: Any = None,
    synapse_compartment: Any = None,
    record_every: int = 0,
    record_at: Sequence[int] | None = None,
    spike_threshold: float = 0.0,
    max_spikes: int = 0,
    surrogate: Any = None,
    checkpoint_every: int = 0,
    arrivals0: Any = None,
    engine: str = "auto",
) -> Any:
    """Differentiable :func:`fusekit.ops.cable_network_simulate` (networks of branched cells).

    Gradients w.r.t. synaptic weights, parameters, currents, the axial coupling and the
    initial state. The op's scheme with the spikes of :func:`network_simulate_torch`: forward
    exactly the threshold crossing in compartment 0, backward the ``surrogate``'s derivative
    (default ``SuperSpike(1.0)``) at every step of every cell with outgoing synapses.
    Gradients are exact where the path from the loss to a parameter passes through no such
    spike output. ``checkpoint_every = K`` bounds memory as there. Zero-area junction nodes
    (``fusekit.neuro.cable_tree``, ``c_m = 0``) work as in the op. On CPU tensors the run
    and its backward are two compiled op calls (``engine``); elsewhere the step is torch
    operations (the cable step of :func:`fusekit.ops.cable_torch_step`, its Hines solve
    differentiable), one Python iteration per step.

    Example:
        >>> import numpy as np, torch
        >>> from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_coupling
        >>> hh, f64 = ChannelSet(HH_CHANNELS), torch.float64
        >>> parent = np.array([-1, 0, 1])
        >>> cpl = cable_coupling(parent, [20.0, 100.0, 100.0], [20.0, 2.0, 1.0])
        >>> v = torch.full((2, 3), -65.0, dtype=f64)
        >>> S = torch.tensor(hh.steady_states(np.full(6, -65.0)).reshape(3, 2, 3))
        >>> P = torch.tensor(hh.default_params(6).reshape(-1, 2, 3))
        >>> i_ext = torch.zeros(2, 3, dtype=f64); i_ext[0, 0] = 20.0   # drive cell 0
        >>> w = torch.tensor([0.05], dtype=f64, requires_grad=True)     # onto cell 1's tip
        >>> out = cable_network_simulate_torch(
        ...     hh, v, S, P, i_ext, parent, torch.tensor(np.stack([cpl, cpl], 1)),
        ...     torch.zeros(2, 3, dtype=f64), [0, 1, 1], [1], w, synapse_compartment=[2],
        ...     dt=0.025, n_steps=400, delay_steps=40, record_every=1)
        >>> out.v_record[:, 1, 2].mean().backward()   # d(mean v of the tip) / d(weight)
        >>> bool(w.grad > 0)  # a larger EPSP (at 0.5, cell 1 fires and its AHP wins)
        True

    Args:
        channels: As for the op.
        v0: Initial potentials, mV, ``(n_cells, n_comp)``, a torch tensor.
        states0: ``(n_states, n_cells, n_comp)``, torch.
        params: ``(n_params, n_cells, n_comp)``, torch.
        i_ext: uA/cm^2, ``(n_cells, n_comp)`` or ``(n_steps, n_cells, n_comp)``, torch.
        parent: Parent compartments, ``(n_comp,)`` integers (any array).
        coupling: ``(2, n_cells, n_comp)`` mS/cm^2, torch (may require grad).
        g_syn0: ``(n_cells, n_comp)`` (``(n_types, n_cells, n_comp)``), torch.
        indptr: CSR row pointers over presynaptic cells, integers.
        indices: Postsynaptic cell of every synapse, integers.
        weights: ``(nnz,)`` mS/cm^2 of the target compartment, torch (may require grad).
        dt: ms.
        n_steps: Steps.
        delay_steps: Synaptic delay in steps, at least 1.
        tau_syn: As for the op.
        e_syn: As for the op.
        synapse_type: As for the op.
        synapse_compartment: As for the op (``None``: compartment 0).
        record_every: Record ``v`` every this many steps (0: none).
        record_at: The compartments recorded (``None``: all).
        spike_threshold: mV, in compartment 0.
        max_spikes: Spike times kept per cell.
        surrogate: As for :func:`network_simulate_torch`.
        checkpoint_every: As for :func:`network_simulate_torch`.
        arrivals0: Spikes in flight, as for the op (torch).
        engine: ``"kernel"``: the whole run is one call of the op ``cable_network_run`` and
            its backward one call of ``cable_network_run_vjp``, each one compiled loop on
            the CPU (the compartments' channels from generated kernels, every cell's Hines
            solve and its transpose, the synapses and their adjoint; checkpoints every
            ``checkpoint_every`` steps, about ``sqrt(n_steps)`` when 0). It needs CPU
            tensors, the SuperSpike surrogate (the default) and channel functions that do
            not branch on their arguments, and gives first derivatives only. ``"torch"``:
            torch tensor operations, one Python iteration per step (any device, any
            surrogate, higher-order gradients). ``"auto"`` (default): the kernel where it can
            run, else torch. The two agree to rounding (the kernel's ``exp`` is its own).

    Returns:
        :class:`~fusekit.ops.NetworkSimulation` of torch tensors.
    """
    import torch

    from ..ops.ion import _check_cable_simulate, cable_torch_step, check_record_at

    op = "cable_network_simulate_torch"
    _require_tensors(op, "fusekit.ops.cable_network_simulate", v0=v0, states0=states0,
                     params=params, i_ext=i_ext, coupling=coupling, g_syn0=g_syn0,
                     weights=weights)
    cs = channel_set(channels)
    indptr = index_array(op, "indptr", indptr)  # the kernel engine takes these as they are
    if synapse_compartment is not None:
        synapse_compartment = index_array(op, "synapse_compartment", synapse_compartment)
    parent_t = torch.as_tensor(np.asarray(parent), dtype=torch.int64, device=v0.device)
    if v0.ndim != 2:
        raise InputError(f"{op}: v0 must have shape (n_cells, n_comp), got {tuple(v0.shape)}")
    try:
        with torch.no_grad():
            _check_cable_simulate(v0, states0, params, i_ext, parent_t, coupling, channels=cs,
                                  dt=dt, n_steps=n_steps, record_every=record_every,
                                  spike_threshold=spike_threshold, max_spikes=max_spikes,
                                  record_at=record_at)
    except InputError as exc:
        raise InputError(str(exc).replace("cable_simulate:", f"{op}:", 1)) from None
    cols = check_record_at(op, record_at, int(v0.shape[1]))
    from ._layers import SuperSpike

    why = None if surrogate is None or isinstance(surrogate, SuperSpike) else (
        f"the kernel knows the SuperSpike surrogate only, not {surrogate!r}")
    whole_run = None
    if _network_engine(op, engine, cs, v0, False, why) == "kernel":
        from ._network_run import cable_network_run_torch

        def whole_run(**pieces: Any) -> Any:
            return cable_network_run_torch(
                cs, v0, states0, params, i_ext, parent_t, coupling, weights, indptr,
                compartments=[] if synapse_compartment is None else synapse_compartment,
                record_at=cols, dt=dt, n_steps=n_steps, delay_steps=delay_steps,
                record_every=record_every, spike_threshold=spike_threshold,
                max_spikes=max_spikes, checkpoint_every=checkpoint_every,
                slope=1.0 if surrogate is None else surrogate.slope, **pieces)

    def membrane(step: int, v: Any, S: Any, g: Any, ge: Any) -> tuple[Any, Any]:
        i_inj = i_ext if i_ext.ndim == 2 else i_ext[step]
        return cable_torch_step(cs, parent_t, v, S, params, i_inj, coupling, dt, g, ge)

    return _torch_network(
        op, membrane, v0, states0, g_syn0, indptr, indices, weights, synapse_compartment,
        post=tuple(v0.shape), probe=lambda v: v[:, 0],
        record=(lambda v: v) if cols is None else (lambda v: v[:, list(cols)]), dt=dt,
        n_steps=n_steps, delay_steps=delay_steps, tau_syn=tau_syn, e_syn=e_syn,
        synapse_type=synapse_type, record_every=record_every,
        spike_threshold=spike_threshold, max_spikes=max_spikes, surrogate=surrogate,
        checkpoint_every=checkpoint_every, arrivals0=arrivals0, whole_run=whole_run)
