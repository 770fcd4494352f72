"""Fitting channel parameters to recorded voltage traces through the checkpointed gradient."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import InputError
from ..ops._common import require_finite
from ..ops.ion_channel import Channel, ChannelSet, channel_set
from ._autograd import params_tensor, simulate


@dataclass
class ParameterFit:
    """Result of :func:`fit_parameters`.

    Attributes:
        values: Fitted value of every fitted parameter (its units).
        loss_history: Loss of every evaluation: at the start of each Adam step, then at
            every L-BFGS evaluation (line-search trials included), then at the result.
        n_simulations: Forward + backward simulations run.
    """

    values: dict[str, float]
    loss_history: list[float] = field(default_factory=list)
    n_simulations: int = 0


def noisy_steps(n_steps: int, dt: float, amplitudes: Sequence[float], *, onset: float = 1.0,
                noise_sd: float = 1.0, noise_tau: float = 2.0, seed: int = 0) -> np.ndarray:
    """Stimulus sweeps for fitting: current steps plus Ornstein-Uhlenbeck noise, uA/cm^2.

    Example:
        >>> noisy_steps(400, 0.05, [-4.0, 3.0, 10.0]).shape  # (n_steps, n_sweeps)
        (400, 3)

    Args:
        n_steps: Steps of ``dt`` ms.
        dt: ms.
        amplitudes: One sweep per step amplitude, uA/cm^2 (the step starts at ``onset``).
        onset: Start of the steps, ms.
        noise_sd: Standard deviation of the noise, uA/cm^2.
        noise_tau: Correlation time of the noise, ms.
        seed: Seed of the noise.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_steps) * dt
    i_ext = np.where(t[:, None] >= onset, np.asarray(amplitudes, float)[None, :], 0.0)
    decay = math.exp(-dt / noise_tau)
    noise = np.zeros(len(amplitudes))
    for k in range(n_steps):
        noise = noise * decay + noise_sd * math.sqrt(1 - decay**2) * rng.standard_normal(
            len(amplitudes))
        i_ext[k] += noise
    return i_ext


def trace_loss(v_record: Any, target: Any, spike_times: Any = None, target_spike_times: Any = None,
               *, v_clip: float = -40.0, spike_weight: float = 10.0) -> Any:
    """Distance of a simulated recording from a target one, mV^2.

    The mean squared difference of the traces clipped at ``v_clip`` (the subthreshold part:
    a spike shifted in time would otherwise dominate with its 100 mV amplitude and make the
    loss rough), plus ``spike_weight`` times the mean squared difference of the spike times
    (ms^2) of the spikes present in both.
    """
    import torch

    if tuple(v_record.shape) != tuple(target.shape):
        raise InputError(f"trace_loss: v_record and target must have one shape (n_samples, "
                         f"n_sweeps), got {tuple(v_record.shape)} and {tuple(target.shape)}; "
                         "record the simulation with the target's record_every and stimuli")
    if (spike_times is not None and target_spike_times is not None
            and tuple(spike_times.shape) != tuple(target_spike_times.shape)):
        raise InputError(f"trace_loss: spike_times and target_spike_times must have one shape "
                         f"(max_spikes, n_sweeps), got {tuple(spike_times.shape)} and "
                         f"{tuple(target_spike_times.shape)}; simulate with max_spikes = "
                         "target_spike_times.shape[0]")
    loss = (v_record.clamp(max=v_clip) - target.clamp(max=v_clip)).square().mean()
    if spike_times is not None and target_spike_times is not None and spike_times.numel():
        both = torch.isfinite(spike_times) & torch.isfinite(target_spike_times)
        diff = torch.where(both, spike_times - torch.nan_to_num(target_spike_times), 0.0)
        loss = loss + spike_weight * diff.square().sum() / both.sum().clamp(min=1)
    return loss


def fit_parameters(
    channels: ChannelSet | Sequence[type[Channel]],
    target_v: Any,
    i_ext: Any,
    initial: dict[str, float],
    *,
    dt: float,
    target_spike_times: Any = None,
    record_every: int = 1,
    v0: float = -65.0,
    fixed: dict[str, float] | None = None,
    adam_steps: int = 100,
    adam_lr: float = 0.05,
    adam_decay: float = 1.0,
    lbfgs_steps: int = 20,
    checkpoint_every: int = 0,
    gradient: str = "forward",
    backend: str | None = None,
    callback: Callable[[int, float, dict[str, float]], None] | None = None,
) -> ParameterFit:
    """Fit named parameters so that simulated traces match ``target_v`` (see :func:`trace_loss`).

    Every column of ``target_v`` is one sweep (one stimulus, ``i_ext[:, k]``); the sweeps run
    side by side as a population with shared parameters. The parameters are optimised in
    log space (they must be positive, like conductances): Adam for ``adam_steps``, then
    L-BFGS with a strong-Wolfe line search for ``lbfgs_steps``; the gradient comes from
    :func:`simulate`: by default forward-mode sensitivities of the fitted parameters (one
    kernel pass with their tangents), or checkpointed backprop (``gradient="backprop"``).

    Args:
        channels: The cell's channels.
        target_v: Recorded potentials, mV, ``(n_steps // record_every, n_sweeps)`` float32
            or float64 tensor or NumPy array (its dtype and device are the simulation's),
            finite.
        i_ext: Stimuli, uA/cm^2, ``(n_steps, n_sweeps)`` tensor or NumPy array, finite
            (moved to ``target_v``'s device once).
        initial: Start value of every parameter to fit (positive).
        target_spike_times: Recorded spike times, ms, ``(max_spikes, n_sweeps)`` with NaN
            after a sweep's last spike (the ``spike_times`` of a simulation), or ``None``
            to fit the traces alone. See :func:`trace_loss`.
        dt: Time step of the recording and the simulation, ms.
        record_every: Steps between the samples of ``target_v``.
        v0: Initial potential, mV (gates start at steady state there).
        fixed: Other parameters that differ from the channels' defaults.
        adam_steps: Adam iterations.
        adam_lr: Adam learning rate (in log units: 0.05 is about 5% per step).
        adam_decay: The learning rate is multiplied by this after every Adam step.
        lbfgs_steps: L-BFGS iterations after Adam (0: none), at most twice as many
            evaluations.
        checkpoint_every: As for :func:`simulate` (backprop only).
        gradient: ``"forward"`` (default) or ``"backprop"``, as for :func:`simulate`; the
            same gradient up to rounding, forward mode is cheaper for a few parameters.
        backend: As for every fusekit op.
        callback: Called as ``callback(step, loss, values)`` after every step.

    Returns:
        :class:`ParameterFit`.

    Raises:
        InputError: ``target_v`` or ``i_ext`` not a tensor or NumPy array of floats, of the
            wrong shapes, or holding NaN or infinity; ``initial`` empty, naming an unknown
            parameter or a value that is not positive and finite; ``dt`` not positive and
            finite; ``record_every`` not an integer >= 1.
    """
    import torch

    cs = channel_set(channels)
    target_v, i_ext, target_spike_times = _check_fit_inputs(
        cs, target_v, i_ext, initial, fixed, target_spike_times, dt=dt,
        record_every=record_every, adam_steps=adam_steps, lbfgs_steps=lbfgs_steps)
    names = list(initial)
    log_p = torch.tensor([math.log(initial[k]) for k in names], dtype=target_v.dtype,
                         device=target_v.device, requires_grad=True)
    n_steps, n_sweeps = i_ext.shape
    max_spikes = 0 if target_spike_times is None else target_spike_times.shape[0]
    result = ParameterFit(values=dict(initial))

    def loss_fn() -> Any:
        values = dict(zip(names, log_p.exp(), strict=True))
        P = params_tensor(cs, n_sweeps, dtype=target_v.dtype, device=target_v.device,
                          **(fixed or {}), **values)
        out = simulate(cs, P, i_ext, duration=n_steps * dt, dt=dt, v0=v0,
                       record_every=record_every, max_spikes=max_spikes,
                       checkpoint_every=checkpoint_every, backend=backend, gradient=gradient,
                       wrt=names if gradient == "forward" else None)
        result.n_simulations += 1
        return trace_loss(out.v_record, target_v, out.spike_times, target_spike_times)

    def closure() -> Any:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss.detach()

    def record(step: int, loss: Any) -> None:
        result.values = {k: float(v) for k, v in zip(names, log_p.detach().exp(), strict=True)}
        result.loss_history.append(float(loss))
        if callback is not None:
            callback(step, float(loss), result.values)

    opt: Any = torch.optim.Adam([log_p], lr=adam_lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=adam_decay)
    for step in range(adam_steps):
        loss = opt.step(closure)
        schedule.step()
        record(step, loss)
    if lbfgs_steps:
        # One call: L-BFGS keeps its curvature pairs across iterations only within a step.
        opt = torch.optim.LBFGS([log_p], lr=1.0, max_iter=lbfgs_steps,
                                max_eval=2 * lbfgs_steps, tolerance_change=1e-12,
                                line_search_fn="strong_wolfe")

        def lbfgs_closure() -> Any:
            loss = closure()
            record(len(result.loss_history), loss)
            return loss

        opt.step(lbfgs_closure)
        with torch.no_grad():
            record(len(result.loss_history), loss_fn())
    return result


def _check_fit_inputs(cs: ChannelSet, target_v: Any, i_ext: Any, initial: Any, fixed: Any,
                      target_spike_times: Any, *, dt: Any, record_every: Any, adam_steps: Any,
                      lbfgs_steps: Any) -> tuple[Any, Any, Any]:
    """Check :func:`fit_parameters`' inputs; return the traces as torch tensors of one dtype."""
    import torch

    op = "fit_parameters"
    known = ", ".join(cs.param_names)
    if not isinstance(initial, Mapping) or not initial:
        raise InputError(f"{op}: initial must be a non-empty dict of the parameters to fit and "
                         f"their start values, e.g. {{'g_na': 100.0}}, got {initial!r}; "
                         f"parameters of this cell: {known}")
    for where, values in (("initial", initial), ("fixed", fixed or {})):
        if not isinstance(values, Mapping):
            raise InputError(f"{op}: {where} must be a dict of parameter name -> value, got "
                             f"{type(values).__name__}")
        unknown = [k for k in values if k not in cs.param_names]
        if unknown:
            raise InputError(f"{op}: {where} names {unknown[0]!r}, which is no parameter of "
                             f"{cs!r}; parameters: {known}")
    both = sorted(set(initial) & set(fixed or {}))
    if both:
        raise InputError(f"{op}: {both[0]!r} is in both initial (fitted) and fixed; keep it in "
                         "one of them")
    for name, value in initial.items():
        if not _real(value) > 0 or math.isinf(_real(value)):
            raise InputError(f"{op}: initial {name} must be positive and finite (it is fitted "
                             f"in log space), got {value!r}")
    if not (isinstance(dt, numbers.Real) and not isinstance(dt, bool) and _real(dt) > 0
            and math.isfinite(dt)):
        raise InputError(f"{op}: dt must be a positive finite time step in ms, got {dt!r}")
    counts = {}
    for name, value, least in (("record_every", record_every, 1), ("adam_steps", adam_steps, 0),
                               ("lbfgs_steps", lbfgs_steps, 0)):
        try:
            if isinstance(value, bool):
                raise TypeError
            counts[name] = operator.index(value)
        except TypeError:
            raise InputError(f"{op}: {name} must be an integer, got {value!r}") from None
        if counts[name] < least:
            raise InputError(f"{op}: {name} must be >= {least}, got {value!r}")
    target_v = _as_tensor(op, "target_v", target_v, "(n_steps // record_every, n_sweeps)")
    if target_v.dtype not in (torch.float32, torch.float64):
        raise InputError(f"{op}: target_v must be float32 or float64 (it sets the simulation's "
                         f"dtype), got {str(target_v.dtype).removeprefix('torch.')}; cast it "
                         "with .double() or .astype(np.float64)")
    i_ext = _as_tensor(op, "i_ext", i_ext, "(n_steps, n_sweeps)")
    if not i_ext.is_floating_point():
        raise InputError(f"{op}: i_ext must hold float currents (uA/cm^2), got "
                         f"{str(i_ext.dtype).removeprefix('torch.')}")
    i_ext = i_ext.to(device=target_v.device, dtype=target_v.dtype)  # the fit runs there
    if i_ext.ndim != 2 or 0 in i_ext.shape:
        raise InputError(f"{op}: i_ext must have shape (n_steps, n_sweeps) (one column per "
                         f"sweep, one row per step of dt), got {tuple(i_ext.shape)}")
    n_steps, n_sweeps = (int(x) for x in i_ext.shape)
    every = counts["record_every"]
    n_rec = n_steps // every
    if n_rec == 0:
        raise InputError(f"{op}: i_ext has {n_steps} steps, fewer than record_every={every}, so "
                         "nothing would be recorded; give more steps or a smaller record_every")
    if tuple(target_v.shape) != (n_rec, n_sweeps):
        raise InputError(
            f"{op}: target_v must have shape (n_steps // record_every, n_sweeps) = ({n_rec}, "
            f"{n_sweeps}) to match i_ext {tuple(i_ext.shape)} and record_every={every} (one "
            f"row per recorded sample, one column per sweep), got {tuple(target_v.shape)}")
    require_finite(op, "target_v", target_v)
    require_finite(op, "i_ext", i_ext)
    if target_spike_times is not None:
        target_spike_times = _as_tensor(op, "target_spike_times", target_spike_times,
                                        "(max_spikes, n_sweeps)")
        if (target_spike_times.ndim != 2 or target_spike_times.shape[1] != n_sweeps
                or not target_spike_times.is_floating_point()):
            raise InputError(
                f"{op}: target_spike_times must be float spike times, ms, of shape "
                f"(max_spikes, n_sweeps) = (max_spikes, {n_sweeps}), NaN after a sweep's last "
                f"spike, got {tuple(target_spike_times.shape)} "
                f"{str(target_spike_times.dtype).removeprefix('torch.')}")
        target_spike_times = target_spike_times.to(device=target_v.device,
                                                   dtype=target_v.dtype)
        if bool(torch.isinf(target_spike_times).any()):
            raise InputError(f"{op}: target_spike_times holds infinity; mark a missing spike "
                             "with NaN")
    return target_v, i_ext, target_spike_times


def _real(value: Any) -> float:
    """``value`` as a float; NaN for what is not one real number (strings, bools, arrays)."""
    if isinstance(value, str | bytes | bool | np.bool_):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _as_tensor(op: str, name: str, a: Any, layout: str) -> Any:
    """``a`` as a torch tensor: tensors as they are, NumPy arrays without a copy."""
    import torch

    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "iuf":
            raise InputError(f"{op}: {name} must hold real numbers, got dtype {a.dtype}")
        return torch.as_tensor(a)
    raise InputError(f"{op}: {name} must be a torch tensor or NumPy array {layout}, got "
                     f"{type(a).__name__}; wrap lists with numpy.asarray(...)")
