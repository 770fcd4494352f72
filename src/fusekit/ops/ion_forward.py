"""Forward-mode parameter sensitivities of single-compartment neurons.

:func:`ion_sensitivity` runs :func:`~fusekit.ops.ion_simulate`'s scheme and, in the same pass,
the derivatives of every neuron's potential, states and spike times with respect to chosen
per-neuron parameters (conductances, reversal potentials, ``c_m``, a channel's own
parameters) or a constant injected current. Each neuron's parameters act on that neuron only,
so one tangent per parameter *name* gives the derivative for all neurons at once: the cost is
one forward pass plus a few multiply-adds per state and direction, and no history is stored
(a gradient through backprop keeps checkpoints and re-runs the simulation backwards).

The tangent step is generated from the channel functions by symbolic differentiation
(:mod:`fusekit.ops.ion_symbolic`), so user-defined channels get it without extra code.

A spike time ``t = (k + f) dt`` with ``f = (thr - v_k) / (v_{k+1} - v_k)`` has the tangent
``dt_spike = -dt ((1 - f) dv_k + f dv_{k+1}) / (v_{k+1} - v_k)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .._errors import InputError
from .._registry import Op, array_dtype
from ._common import check_counts, require_finite
from .ion import _check_ion_simulate, _zeros_like
from .ion_channel import Channel, ChannelSet, channel_set, vtrap
from .ion_symbolic import tangent_step_source, vtrap_dx, wrt_directions

__all__ = ["IonSensitivity", "ion_sensitivity", "ion_sensitivity_reference", "step_function"]


class IonSensitivity(NamedTuple):
    """Result of :func:`ion_sensitivity`: the simulation and its tangents.

    The first five fields are those of :class:`~fusekit.ops.IonSimulation`. For ``d`` the
    number of ``wrt`` names, in their order:

    Attributes:
        dv: ``d v / d theta``, shape ``(d, n)`` (mV per unit of the parameter).
        dstates: ``d states / d theta``, shape ``(d, n_states, n)``.
        dv_record: ``d v_record / d theta``, shape ``(n_rec, d, n)``.
        dspike_times: ``d spike_times / d theta``, ms per unit, shape ``(max_spikes, d, n)``;
            NaN where ``spike_times`` is NaN.
    """

    v: Any
    states: Any
    v_record: Any
    spike_count: Any
    spike_times: Any
    dv: Any
    dstates: Any
    dv_record: Any
    dspike_times: Any


def _check_ion_sensitivity(
    v0: Any, states0: Any, params: Any, i_ext: Any, dv0: Any, dstates0: Any, *,
    channels: Any, dt: float, n_steps: int, wrt: tuple[str, ...], record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0,
) -> str:
    op = "ion_sensitivity"
    try:
        dtype = _check_ion_simulate(v0, states0, params, i_ext, channels=channels, dt=dt,
                                    n_steps=n_steps, record_every=record_every,
                                    spike_threshold=spike_threshold, max_spikes=max_spikes)
    except InputError as err:
        raise InputError(str(err).replace("ion_simulate:", f"{op}:", 1)) from None
    cs = channel_set(channels)
    if isinstance(wrt, str) or not isinstance(wrt, Sequence) or not wrt:
        raise InputError(f"{op}: wrt must be a non-empty list of parameter names (of "
                         f"{', '.join(cs.param_names)}) or 'i_ext', got {wrt!r}")
    wrt_directions(cs, wrt)
    if "i_ext" in wrt and i_ext.ndim != 1:
        raise InputError(f"{op}: wrt 'i_ext' needs a constant current of shape (n,); a "
                         "current per step has one parameter per step (use the backprop "
                         "gradient of ion_simulate for it)")
    n, n_states, d = v0.shape[0], len(cs.state_names), len(wrt)
    for name, a, shape in (("dv0", dv0, (d, n)), ("dstates0", dstates0, (d, n_states, n))):
        if tuple(a.shape) != shape:
            raise InputError(f"{op}: {name} must have shape {shape} (one row per wrt name), "
                             f"got {tuple(a.shape)}")
        if array_dtype(a) != dtype:
            raise InputError(f"{op}: {name} must be {dtype} like v0, got {array_dtype(a)}")
        require_finite(op, name, a)
    return dtype


ion_sensitivity_op = Op(
    name="ion_sensitivity",
    family="ion_sensitivity",
    array_args=("v0", "states0", "params", "i_ext", "dv0", "dstates0"),
    params=("channels", "dt", "n_steps", "wrt", "record_every", "spike_threshold",
            "max_spikes"),
    check=_check_ion_sensitivity,
)


def ion_sensitivity(
    v0: Any,
    states0: Any,
    params: Any,
    i_ext: Any,
    *,
    channels: ChannelSet | Sequence[type[Channel]] | str,
    dt: float,
    n_steps: int,
    wrt: Sequence[str],
    dv0: Any = None,
    dstates0: Any = None,
    record_every: int = 0,
    spike_threshold: float = 0.0,
    max_spikes: int = 0,
    backend: str | None = None,
) -> IonSensitivity:
    """Simulate like :func:`~fusekit.ops.ion_simulate` and carry forward-mode sensitivities.

    Example:
        >>> import numpy as np, fusekit
        >>> from fusekit.neuro import HH_CHANNELS
        >>> hh = fusekit.ops.ion_channel.ChannelSet(HH_CHANNELS)
        >>> out = fusekit.ops.ion_sensitivity(
        ...     np.full(2, -65.0), hh.initial_states(2), hh.default_params(2),
        ...     np.full(2, 10.0), channels=hh, dt=0.025, n_steps=400, max_spikes=1,
        ...     wrt=["g_na", "i_ext"])
        >>> out.dspike_times.shape  # (max_spikes, len(wrt), n): ms per mS/cm^2, per uA/cm^2
        (1, 2, 2)

    Args:
        v0: Initial potentials, mV, ``(n,)``, float32 or float64.
        states0: Initial states, ``(n_states, n)``.
        params: Per-neuron parameters, ``(n_params, n)`` (row 0: ``c_m``).
        i_ext: Injected current, uA/cm^2: ``(n,)`` or ``(n_steps, n)``.
        channels: The cell's channels (a :class:`ChannelSet`, classes or a set's key).
        dt: Time step, ms.
        n_steps: Number of steps.
        wrt: Directions: names of parameter rows (``channels.param_names``) and/or
            ``"i_ext"`` (a constant current only). The tangent of a name is the derivative
            with respect to that parameter of each neuron, for every neuron at once.
        dv0: Initial tangents of ``v``, ``(len(wrt), n)``; zeros when ``None`` (to continue
            an earlier call, pass its ``dv`` and ``dstates``).
        dstates0: Initial tangents of the states, ``(len(wrt), n_states, n)``; zeros.
        record_every: Record ``v`` (and its tangents) every this many steps (0: none).
        spike_threshold: Spike detection threshold, mV.
        max_spikes: Spike times (and their tangents) kept per neuron.
        backend: ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"auto"``; ``None`` follows
            :func:`fusekit.use_backend` and ``FUSEKIT_BACKEND``.

    Returns:
        :class:`IonSensitivity`: the five results of ``ion_simulate`` and their tangents.
    """
    cs = channel_set(channels)
    check_counts("ion_sensitivity", n_steps=n_steps, record_every=record_every,
                 max_spikes=max_spikes)
    wrt = tuple(wrt) if not isinstance(wrt, str) else wrt
    n = v0.shape[0] if hasattr(v0, "shape") and len(v0.shape) else 0
    d = len(wrt) if not isinstance(wrt, str) else 0
    zeros = _zeros_like(v0)
    dv0 = zeros((d, n)) if dv0 is None else dv0
    dstates0 = zeros((d, len(cs.state_names), n)) if dstates0 is None else dstates0
    out = ion_sensitivity_op.run(
        (v0, states0, params, i_ext, dv0, dstates0),
        {"channels": cs, "dt": dt, "n_steps": int(n_steps), "wrt": wrt,
         "record_every": int(record_every), "spike_threshold": spike_threshold,
         "max_spikes": int(max_spikes)},
        backend,
    )
    return IonSensitivity(*out)


# --------------------------------------------------------------------------- float64 reference


def step_function(cs: ChannelSet, wrt: Sequence[str], math: dict[str, Any],
                  scalar: Any = float, jit: Any = None) -> Any:
    """The generated tangent step as a Python function of flat arguments.

    ``step(v, s..., p..., i_inj, dt, dv_0, ds0_0, ..., dv_1, ...)`` returns the same names
    after one step, in the same order. ``math`` maps ``EXP``, ``LOG``, ``SQRT``, ``ABS``,
    ``SIGN``, ``VTRAP`` and ``VTRAP_DX`` to the array library's functions.
    """
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    lines, consts = tangent_step_source(cs, wrt, "    ")
    tangents = [name for j in range(len(wrt))
                for name in (f"dv_{j}", *(f"ds{k}_{j}" for k in range(n_states)))]
    state = ["v", *(f"s{k}" for k in range(n_states))]
    args = [*state, *(f"p{i}" for i in range(n_params)), "i_inj", "dt", *tangents]
    src = (f"def step({', '.join(args)}):\n" + "\n".join(lines)
           + f"\n    return ({', '.join(state + tangents)},)\n")
    ns = {**math, "ONE": scalar(1.0), **{k: scalar(c) for k, c in consts.items()}}
    exec(compile(src, f"<fusekit tangent step {cs.key}>", "exec"), ns)
    return ns["step"] if jit is None else jit(ns["step"])


NUMPY_MATH: dict[str, Any] = {
    "EXP": np.exp, "LOG": np.log, "SQRT": np.sqrt, "ABS": np.abs, "SIGN": np.sign,
    "VTRAP": vtrap, "VTRAP_DX": lambda x, y, f: vtrap_dx(x, y, f, np.where, np.abs),
}


def ion_sensitivity_reference(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    dv0: np.ndarray, dstates0: np.ndarray, *, channels: Any, dt: float, n_steps: int,
    wrt: Sequence[str], record_every: int = 0, spike_threshold: float = 0.0,
    max_spikes: int = 0,
) -> tuple[np.ndarray, ...]:
    """Float64 NumPy oracle of :func:`ion_sensitivity`: steps in Python, neurons as arrays."""
    cs = channel_set(channels)
    dtype = v0.dtype
    step = step_function(cs, wrt, NUMPY_MATH)
    n_states, d = len(cs.state_names), len(wrt)
    n = v0.shape[0]
    v = v0.astype(np.float64)
    S = [row for row in states0.astype(np.float64)]
    P = [row for row in params.astype(np.float64)]
    I_ext = i_ext.astype(np.float64)
    T = [row for j in range(d) for row in (dv0[j].astype(np.float64),
                                           *dstates0[j].astype(np.float64))]
    n_rec = n_steps // record_every if record_every else 0
    v_record = np.empty((n_rec, n))
    dv_record = np.empty((n_rec, d, n))
    spike_count = np.zeros(n, dtype=np.int64)
    spike_times = np.full((max_spikes, n), np.nan)
    dspike_times = np.full((max_spikes, d, n), np.nan)
    thr = spike_threshold
    for k in range(n_steps):
        i_inj = I_ext if I_ext.ndim == 1 else I_ext[k]
        dv_old = [T[q * (1 + n_states)] for q in range(d)]
        out = step(v, *S, *P, i_inj, dt, *T)
        v_new, S, T = out[0], list(out[1:1 + n_states]), list(out[1 + n_states:])
        for j in np.flatnonzero((v < thr) & (v_new >= thr)):
            c = spike_count[j]
            if c < max_spikes:
                den = v_new[j] - v[j]
                f = (thr - v[j]) / den
                spike_times[c, j] = (k + f) * dt
                for q in range(d):
                    dspike_times[c, q, j] = -dt * ((1.0 - f) * dv_old[q][j]
                                                   + f * T[q * (1 + n_states)][j]) / den
            spike_count[j] = c + 1
        v = v_new
        if record_every and (k + 1) % record_every == 0:
            r = (k + 1) // record_every - 1
            v_record[r] = v
            dv_record[r] = [T[q * (1 + n_states)] for q in range(d)]
    dv = np.array([T[q * (1 + n_states)] for q in range(d)]).reshape(d, n)
    dS = np.array([T[q * (1 + n_states) + 1 + k] for q in range(d)
                   for k in range(n_states)]).reshape(d, n_states, n)
    S_out = np.array(S).reshape(n_states, n)
    return (v.astype(dtype), S_out.astype(dtype), v_record.astype(dtype), spike_count,
            spike_times.astype(dtype), dv.astype(dtype), dS.astype(dtype),
            dv_record.astype(dtype), dspike_times.astype(dtype))
