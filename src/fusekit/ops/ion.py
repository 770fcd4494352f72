"""Ion-channel ops: populations of single-compartment neurons, and the branched-cable solve.

:func:`ion_simulate` runs many time steps of single-compartment neurons per call;
:func:`hines_solve` solves the tree-structured linear system of a multi-compartment cell.

Every neuron has a membrane potential ``v`` (mV), the gating states of its channels and its
own parameters; the channels are user-declared :class:`~fusekit.ops.ion_channel.Channel`
classes that every backend compiles into one fused kernel. One step of length ``dt`` (ms):

1. every gate ``x`` by exponential Euler (Rush-Larsen) at the current ``v``:
   ``x' = x_inf + (x - x_inf) exp(-dt / tau_x)``;
2. the channel conductances ``g_c`` (mS/cm^2) at the new gates;
3. the membrane potential by backward Euler with the currents linear in ``v``:
   ``v' = (v + dt/c_m (sum_c g_c E_c + i_ext)) / (1 + dt/c_m sum_c g_c)``,

which is NEURON's and Jaxley's scheme for single compartments. Units: mV, ms, uF/cm^2,
mS/cm^2, uA/cm^2 (``i_ext`` positive inward, depolarising).

A spike is an upward crossing of ``spike_threshold``; its time is interpolated linearly
within the step, ``t = (k + (thr - v_k) / (v_{k+1} - v_k)) dt`` for step ``k`` (times start at
0 at the beginning of the call).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .._errors import InputError
from .._registry import Op, TorchBridge, array_dtype
from ._common import (
    all_finite,
    check_counts,
    check_dt,
    is_real,
    is_tensor,
    require_finite,
    require_ndim,
    torch_call,
)
from .ion_channel import Channel, ChannelSet, channel_set, gates_and_conductances
from .ion_grad import (
    adjoint_backward,
    check_checkpoint_every,
    checkpointed_backward,
    checkpointed_forward,
    segment_length,
)

__all__ = [
    "IonSimulation",
    "NetworkSimulation",
    "cable_simulate",
    "cable_simulate_reference",
    "cable_torch_step",
    "hines_solve",
    "hines_solve_reference",
    "ion_simulate",
    "ion_simulate_reference",
    "network_simulate",
    "network_simulate_reference",
    "refuse_grad",
]

_ION_DTYPES = ("float32", "float64")


class IonSimulation(NamedTuple):
    """Result of :func:`ion_simulate`; arrays of the input kind and dtype (counts int64).

    Attributes:
        v: Final membrane potentials, mV, shape ``(n,)``.
        states: Final gating states, shape ``(n_states, n)``.
        v_record: ``v`` after every ``record_every``-th step, shape
            ``(n_steps // record_every, n)`` (``(0, n)`` when ``record_every == 0``); row
            ``r`` is ``v`` at ``t = (r + 1) record_every dt``.
        spike_count: Upward threshold crossings per neuron, int64, shape ``(n,)``.
        spike_times: The first ``max_spikes`` spike times per neuron, ms from the start of
            the call, shape ``(max_spikes, n)``; NaN where a neuron spiked fewer times.
    """

    v: Any
    states: Any
    v_record: Any
    spike_count: Any
    spike_times: Any


def _check_ion_simulate(
    v0: Any, states0: Any, params: Any, i_ext: Any, *, channels: Any, dt: float,
    n_steps: int, record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
    zero_cm_ok: bool = False,
) -> str:
    # zero_cm_ok: c_m = 0 passes (the cable ops' zero-area junction nodes; they check the rest)
    op = "ion_simulate"
    cs = channel_set(channels)
    require_ndim(op, "v0", v0, 1, "(n,)")
    n = v0.shape[0]
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    if tuple(states0.shape) != (n_states, n):
        raise InputError(
            f"{op}: states0 must have shape (n_states, n) = ({n_states}, {n}) for "
            f"{cs!r} (states {cs.state_names}), got {tuple(states0.shape)}"
        )
    if tuple(params.shape) != (n_params, n):
        raise InputError(
            f"{op}: params must have shape (n_params, n) = ({n_params}, {n}) for {cs!r} "
            f"(rows {cs.param_names}; ChannelSet.default_params(n) makes one), got "
            f"{tuple(params.shape)}"
        )
    if tuple(i_ext.shape) not in ((n,), (n_steps, n)):
        raise InputError(
            f"{op}: i_ext must have shape (n,) = ({n},) (constant) or (n_steps, n) = "
            f"({n_steps}, {n}) (one row per step), got {tuple(i_ext.shape)}"
        )
    dtype = array_dtype(v0)
    for name, a in (("states0", states0), ("params", params), ("i_ext", i_ext)):
        if array_dtype(a) != dtype:
            raise InputError(
                f"{op}: all arrays must share one dtype, but v0 is {dtype} and {name} is "
                f"{array_dtype(a)}; cast them to the same dtype first"
            )
    if dtype not in _ION_DTYPES:
        raise InputError(f"{op}: arrays must be float32 or float64, got {dtype}")
    check_dt(op, dt)
    check_counts(op, n_steps=n_steps, record_every=record_every, max_spikes=max_spikes)
    if not (is_real(spike_threshold) and math.isfinite(spike_threshold)):
        raise InputError(f"{op}: spike_threshold must be a finite potential in mV, got "
                         f"{spike_threshold!r}")
    for name, a in (("v0", v0), ("states0", states0), ("params", params), ("i_ext", i_ext)):
        require_finite(op, name, a)
    if n and not bool((params[0] >= 0).all() if zero_cm_ok else (params[0] > 0).all()):
        raise InputError(f"{op}: params row 0 (c_m, membrane capacitance in uF/cm^2) must be "
                         f"{'non-negative' if zero_cm_ok else 'positive'} for every neuron")
    for row, name in enumerate(cs.param_names):
        if name.startswith("g_") and n and bool((params[row] < 0).any()):
            raise InputError(f"{op}: params row {row} ({name}, a conductance density in "
                             "mS/cm^2) must not be negative; a channel that carries current the "
                             "other way needs another reversal potential, not g < 0")
    _check_dt_resolves_gates(op, cs, params, dt)
    return dtype


#: The longest step, in units of the fastest gate time constant of the channels at their
#: parameters over -80..40 mV (:meth:`ChannelSet.fastest_gate`), that the ops accept. At
#: ``2 tau`` a step leaves ``exp(-2) = 14 %`` of that gate's distance to its steady state.
#: HH (fastest: ``m``, 0.108 ms at -80 mV; limit 0.216 ms), 0-50 uA/cm^2 for 100 ms: spike
#: counts within one of dt = 0.005 ms up to dt = 0.25 ms, up to 3 off at 0.3 ms, neurons
#: silenced from 0.35 ms, 87 % of the spikes lost at 1 ms (docs/neuro.md; a test in
#: tests/test_ion_bad_input.py).
MAX_DT_OVER_TAU = 2.0


def _host_array(a: Any) -> np.ndarray | None:
    """``a`` as a NumPy array; ``None`` for torch's fake or meta tensors (no values)."""
    if is_tensor(a):
        from torch._subclasses.fake_tensor import is_fake

        return None if a.is_meta or is_fake(a) else a.detach().cpu().numpy()
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _check_dt_resolves_gates(op: str, cs: ChannelSet, params: Any, dt: float) -> None:
    """Refuse steps much longer than the fastest gate: stable, but the dynamics are lost."""
    if not any(ch.gates for ch in cs.channels) or params.shape[-1] == 0:
        return
    P = _host_array(params)
    if P is None:
        return
    tau, state, v_at = cs.fastest_gate(P.reshape(P.shape[0], -1))
    if dt > MAX_DT_OVER_TAU * tau:
        raise InputError(
            f"{op}: dt = {dt} ms is more than {MAX_DT_OVER_TAU:g} times the fastest gate time "
            f"constant of these channels at these parameters, tau = {tau:.3g} ms ({state} at "
            f"{v_at:.0f} mV, scanning -80..40 mV). The scheme (exponential-Euler gates, "
            "backward-Euler voltage) stays stable at any dt, but steps this long skip the "
            "gates' dynamics and lose spikes (HH: wrong spike counts from dt = 0.3 ms). Use "
            f"dt <= {MAX_DT_OVER_TAU * tau:.3g} ms (NEURON's default is 0.025 ms)"
        )


def _ion_simulate_torch(
    v0: Any, states0: Any, params: Any, i_ext: Any, channels: str, dt: float, n_steps: int,
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
    checkpoint_every: int = 0, backend: str | None = None,
) -> tuple[Any, ...]:
    # The torch form: the kernel in segments, returning the checkpoints for the backward too.
    kw = {"channels": channels, "dt": dt, "n_steps": n_steps, "record_every": record_every,
          "spike_threshold": spike_threshold, "max_spikes": max_spikes}
    check_checkpoint_every(checkpoint_every)
    _check_ion_simulate(v0, states0, params, i_ext, **kw)
    return checkpointed_forward(ion_simulate_op.run, v0, states0, params, i_ext, **kw,
                                checkpoint_every=checkpoint_every, backend=backend,
                                whole=_checkpointing_kernel(ion_simulate_op, backend))


def _checkpointing_kernel(op: Op, backend: str | None, tail: tuple[Any, ...] = (),
                          **extra: Any) -> Any:
    """``checkpointed_forward``'s ``whole`` for ``op``: its kernel that keeps the checkpoints.

    The kernel the call would run, if it has a ``checkpointed`` form (all seven results in
    one call); else ``None``, and the forward runs one call per segment. ``tail``: the
    arrays after ``(v, states, params, i_ext)``; ``extra``: keyword arguments of the op.
    """

    def whole(arrays: tuple[Any, ...], params_: dict[str, Any], seg_len: int) -> Any:
        from .._arrays import common_kind
        from .._registry import requested_backend

        kernel = op.select(common_kind(("v0",), arrays[:1]), array_dtype(arrays[0]),
                           requested_backend(backend))
        fn = getattr(kernel.fn, "checkpointed", None)
        if fn is None:
            return None
        return fn(*arrays, *tail, **params_, **extra, seg_len=seg_len)

    return whole


def _ion_simulate_fake(
    v0: Any, states0: Any, params: Any, i_ext: Any, channels: str, dt: float, n_steps: int,
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
    checkpoint_every: int = 0, backend: str | None = None,
) -> tuple[Any, ...]:
    import torch

    n, n_states = v0.shape[0], states0.shape[0]
    n_rec = n_steps // record_every if record_every else 0
    n_seg = -(-n_steps // segment_length(n_steps, checkpoint_every, record_every))
    return (v0.new_empty((n,)), states0.new_empty((n_states, n)), v0.new_empty((n_rec, n)),
            v0.new_empty((n,), dtype=torch.int64), v0.new_empty((max_spikes, n)),
            v0.new_empty((n_seg, 1 + n_states, n)), v0.new_empty((n_seg, n), dtype=torch.int64))


_ION_TORCH_PARAMS = ("channels", "dt", "n_steps", "record_every", "spike_threshold",
                     "max_spikes", "checkpoint_every", "backend")


def _ion_simulate_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    _, _, params, i_ext, *rest = inputs
    ctx.kw = dict(zip(_ION_TORCH_PARAMS, rest, strict=False))
    ctx.save_for_backward(params, i_ext, output[5], output[6])
    ctx.mark_non_differentiable(output[3], output[5], output[6])


def _ion_simulate_backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
    params, i_ext, checkpoints, counts_at = ctx.saved_tensors
    kw = {"record_every": 0, "spike_threshold": 0.0, "max_spikes": 0, "checkpoint_every": 0,
          "backend": None, **ctx.kw}
    backend = kw.pop("backend")
    needs = tuple(ctx.needs_input_grad[:4])
    got = adjoint_backward(grads[:5], checkpoints, counts_at, params, i_ext, **kw,
                           needs=needs, backend=backend)
    if got is None:  # no compiled adjoint for these tensors (or tracing): torch recompute
        got = checkpointed_backward(grads[:5], checkpoints, counts_at, params, i_ext, **kw,
                                    needs=needs)
    return (*got, *(None,) * (len(ctx.needs_input_grad) - 4))


ion_simulate_op = Op(
    name="ion_simulate",
    family="ion",
    array_args=("v0", "states0", "params", "i_ext"),
    params=("channels", "dt", "n_steps", "record_every", "spike_threshold", "max_spikes"),
    check=_check_ion_simulate,
    torch=TorchBridge(
        schema="(Tensor v0, Tensor states0, Tensor params, Tensor i_ext, str channels, "
        "float dt, int n_steps, int record_every=0, float spike_threshold=0.0, "
        "int max_spikes=0, int checkpoint_every=0, str? backend=None) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
        fake=_ion_simulate_fake,
        setup_context=_ion_simulate_setup,
        backward=_ion_simulate_backward,
        impl=_ion_simulate_torch,
    ),
)


def ion_simulate(
    v0: Any,
    states0: Any,
    params: Any,
    i_ext: Any,
    *,
    channels: ChannelSet | Sequence[type[Channel]] | str,
    dt: float,
    n_steps: int,
    record_every: int = 0,
    spike_threshold: float = 0.0,
    max_spikes: int = 0,
    checkpoint_every: int = 0,
    backend: str | None = None,
) -> IonSimulation:
    """Simulate ``n_steps`` steps of ``n`` single-compartment neurons in one call.

    Example:
        >>> import numpy as np, fusekit
        >>> from fusekit.neuro import HH_CHANNELS
        >>> hh = fusekit.ops.ion_channel.ChannelSet(HH_CHANNELS)
        >>> n = 4
        >>> out = fusekit.ops.ion_simulate(
        ...     np.full(n, -65.0), hh.initial_states(n), hh.default_params(n),
        ...     np.full(n, 10.0), channels=hh, dt=0.025, n_steps=400, max_spikes=8)
        >>> int(out.spike_count[0]), round(float(out.spike_times[0, 0]), 3)  # ms
        (1, 1.92)

    Args:
        v0: Initial membrane potentials, mV, shape ``(n,)``, float32 or float64.
        states0: Initial gating states, shape ``(n_states, n)``, rows as
            ``channels.state_names``.
        params: Per-neuron parameters, shape ``(n_params, n)``, rows as
            ``channels.param_names`` (row 0: ``c_m`` in uF/cm^2).
        i_ext: Injected current density, uA/cm^2 (positive depolarises): ``(n,)`` for a
            constant current or ``(n_steps, n)`` for one value per step.
        channels: The cell's channels: a :class:`ChannelSet`, a list of channel classes, or
            the ``key`` of a set made earlier in this process.
        dt: Time step, ms.
        n_steps: Number of steps.
        record_every: Record ``v`` every this many steps (0: no recording).
        spike_threshold: Spike detection threshold, mV.
        max_spikes: Spike times kept per neuron (all spikes are counted).
        checkpoint_every: For torch tensors that require grad: steps between the checkpoints
            of the backward pass (0: about ``sqrt(n_steps)``; rounded up to a multiple of
            ``record_every``). See :mod:`fusekit.ops.ion_grad`.
        backend: ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"auto"``; ``None`` follows
            :func:`fusekit.use_backend` and ``FUSEKIT_BACKEND``.

    Returns:
        :class:`IonSimulation` ``(v, states, v_record, spike_count, spike_times)``, arrays
        of the input kind (NumPy, CuPy or torch). When a torch input requires grad, ``v``,
        ``states``, ``v_record`` and ``spike_times`` are differentiable with respect to
        ``v0``, ``states0``, ``params`` and ``i_ext`` (backprop through time with
        checkpoints: the kernel runs forward; the backward is the compiled adjoint
        :func:`fusekit.ops.ion_adjoint` where the backend has one, else it re-runs each
        segment in torch).
    """
    cs = channel_set(channels)
    check_checkpoint_every(checkpoint_every)
    # here, before int() below would truncate 2.5 into 2 on the way to torch; the op's own
    # check repeats it for calls that go through the registry directly
    check_counts("ion_simulate", n_steps=n_steps, record_every=record_every,
                 max_spikes=max_spikes)
    if is_tensor(v0) and any(getattr(a, "requires_grad", False)
                             for a in (v0, states0, params, i_ext)):
        out = torch_call(
            "ion_simulate", {"v0": v0, "states0": states0, "params": params, "i_ext": i_ext},
            backend, cs.key, float(dt), int(n_steps), int(record_every),
            float(spike_threshold), int(max_spikes), checkpoint_every)
        return IonSimulation(*out[:5])
    out = ion_simulate_op.run(
        (v0, states0, params, i_ext),
        {"channels": cs, "dt": dt, "n_steps": int(n_steps), "record_every": int(record_every),
         "spike_threshold": spike_threshold, "max_spikes": int(max_spikes)},
        backend,
    )
    return IonSimulation(*out)


# --------------------------------------------------------------------------- float64 reference


def ion_simulate_reference(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray, *,
    channels: Any, dt: float, n_steps: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Float64 NumPy oracle of :func:`ion_simulate`: a loop over steps, vectorised over neurons.

    It calls the channels' functions on NumPy arrays with ``np.exp``; the results have the
    input dtype (spike counts int64). It is the network oracle without synapses (the same
    arithmetic: a zero synaptic conductance adds exactly nothing).
    """
    n = v0.shape[0]
    no_synapses = (np.zeros((1, n), v0.dtype), np.zeros(n + 1, np.int64), np.zeros(0, np.int64),
                   np.zeros(0, v0.dtype), np.zeros((1, 1, n), v0.dtype), np.zeros(0, np.int64))
    v, S, _, v_record, spike_count, spike_times, _ = network_simulate_reference(
        v0, states0, params, i_ext, *no_synapses, channels=channels, dt=dt, n_steps=n_steps,
        delay_steps=1, tau_syn=(1.0,), e_syn=(0.0,), record_every=record_every,
        spike_threshold=spike_threshold, max_spikes=max_spikes)
    return v, S, v_record, spike_count, spike_times


# ------------------------------------------------------------------- Hines cable solve


def _check_hines_solve(parent: Any, diag: Any, upper: Any, lower: Any, rhs: Any) -> str:
    op = "hines_solve"
    require_ndim(op, "parent", parent, 1, "(n_nodes,)")
    n_nodes = parent.shape[0]
    if n_nodes < 1:
        raise InputError(f"{op}: the tree needs at least one node, got parent of shape (0,)")
    if array_dtype(parent) not in ("int32", "int64"):
        raise InputError(f"{op}: parent must be an int32 or int64 array of parent indices, "
                         f"got {array_dtype(parent)}")
    for name, a in (("diag", diag), ("upper", upper), ("lower", lower), ("rhs", rhs)):
        if a.ndim not in (1, 2) or a.shape[-1] != n_nodes:
            raise InputError(
                f"{op}: {name} must have shape (n_nodes,) or (batch, n_nodes) with "
                f"n_nodes = {n_nodes}, got {tuple(a.shape)}"
            )
        if tuple(a.shape) != tuple(diag.shape):
            raise InputError(f"{op}: {name} must have diag's shape {tuple(diag.shape)}, got "
                             f"{tuple(a.shape)}")
    dtype = array_dtype(diag)
    if dtype not in _ION_DTYPES or any(array_dtype(a) != dtype for a in (upper, lower, rhs)):
        raise InputError(f"{op}: diag, upper, lower and rhs must share one dtype, float32 or "
                         f"float64; got {[array_dtype(a) for a in (diag, upper, lower, rhs)]}")
    p = _host_array(parent)  # from the GPU too; None for fake tensors (tracing: no values)
    idx = np.arange(n_nodes)
    if p is not None and (p[0] != -1 or bool(((p[1:] < 0) | (p[1:] >= idx[1:])).any())):
        raise InputError(
            f"{op}: parent must list the nodes in Hines order: parent[0] = -1 (the root) and "
            "0 <= parent[i] < i for every other node (number the nodes depth-first from the "
            "root, as an SWC file usually does)"
        )
    for name, a in (("diag", diag), ("upper", upper), ("lower", lower), ("rhs", rhs)):
        require_finite(op, name, a)
    return dtype


def _hines_solve_fake(parent: Any, diag: Any, upper: Any, lower: Any, rhs: Any,
                      backend: str | None = None) -> Any:
    _check_hines_solve(parent, diag, upper, lower, rhs)  # shapes and dtypes while tracing
    return rhs.new_empty(rhs.shape)


def _hines_solve_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    parent, diag, upper, lower, _rhs, *rest = inputs
    ctx.backend = rest[0] if rest else None
    ctx.save_for_backward(parent, diag, upper, lower, output)


def _hines_solve_backward(ctx: Any, g_x: Any) -> tuple[Any, ...]:
    # x = A^-1 b: g_b = A^-T g_x (the same tree with upper and lower swapped) and
    # g_A[j, k] = -g_b[j] x[k] on the entries A has: diag (j = k = i), upper (j = parent[i],
    # k = i) and lower (j = i, k = parent[i]); node 0 has no off-diagonal entries.
    parent, diag, upper, lower, x = ctx.saved_tensors
    g_b = hines_solve(parent, diag, lower, upper, g_x.contiguous(), backend=ctx.backend)
    up = parent.clamp(min=0)
    off = (parent >= 0).to(x.dtype)
    g_diag = -g_b * x
    g_upper = -g_b[..., up] * x * off
    g_lower = -g_b * x[..., up] * off
    needs = ctx.needs_input_grad
    return (None, g_diag if needs[1] else None, g_upper if needs[2] else None,
            g_lower if needs[3] else None, g_b if needs[4] else None, None)


hines_solve_op = Op(
    name="hines_solve",
    family="ion",
    array_args=("parent", "diag", "upper", "lower", "rhs"),
    check=_check_hines_solve,
    torch=TorchBridge(
        schema="(Tensor parent, Tensor diag, Tensor upper, Tensor lower, Tensor rhs, "
        "str? backend=None) -> Tensor",
        fake=_hines_solve_fake,
        setup_context=_hines_solve_setup,
        backward=_hines_solve_backward,
        bf16_outputs=False,
    ),
)


def _as_index_tensor(parent: Any, like: Any) -> Any:
    """``parent`` as an int64 tensor on ``like``'s device (NumPy index arrays are accepted)."""
    import torch

    if is_tensor(parent):
        return parent
    return torch.as_tensor(np.asarray(parent, dtype=np.int64), device=like.device)


def hines_solve(parent: Any, diag: Any, upper: Any, lower: Any, rhs: Any, *,
                backend: str | None = None) -> Any:
    """Solve ``A x = rhs`` for the tree-structured matrix of a branched cable (Hines, 1984).

    ``A`` has ``A[i, i] = diag[i]`` and, for every node ``i > 0`` with parent ``p =
    parent[i]``, ``A[i, p] = lower[i]`` and ``A[p, i] = upper[i]``; every other entry is 0.
    This is the backward-Euler matrix of a multi-compartment cell; the solve is Gaussian
    elimination from the leaves to the root and back, ``O(n_nodes)``, no fill-in.

    Hines, M. (1984). Efficient computation of branched nerve equations. Int. J. Bio-Medical
    Computing 15(1), 69-76.

    Example:
        >>> import numpy as np, fusekit
        >>> parent = np.array([-1, 0, 1, 1])  # a root, then a branch point with two children
        >>> x = fusekit.ops.hines_solve(parent, np.full(4, 4.0), -np.ones(4), -np.ones(4),
        ...                             np.ones(4))
        >>> x.shape
        (4,)

    Args:
        parent: Parent index of every node, int32/int64, shape ``(n_nodes,)``, in Hines order:
            ``parent[0] = -1`` and ``0 <= parent[i] < i``.
        diag: Diagonal, ``(n_nodes,)`` or ``(batch, n_nodes)`` (cells sharing a morphology).
        upper: ``A[parent[i], i]``, same shape (entry 0 unused).
        lower: ``A[i, parent[i]]``, same shape (entry 0 unused).
        rhs: Right-hand side, same shape.
        backend: As for every op.

    Returns:
        ``x`` with ``rhs``'s shape and dtype. For torch tensors (``parent`` may stay a NumPy
        array) it is differentiable with respect to ``diag``, ``upper``, ``lower`` and
        ``rhs``; the backward solves the transposed tree system, ``O(n_nodes)`` as well.

    Raises:
        InputError: Besides bad shapes and dtypes: a singular system, one whose elimination
            meets a zero pivot (the solution would be infinite or NaN; the inputs are finite).
    """
    if is_tensor(rhs):
        x = torch_call("hines_solve", {"parent": _as_index_tensor(parent, rhs), "diag": diag,
                                       "upper": upper, "lower": lower, "rhs": rhs}, backend)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero pivot: named below
            x = hines_solve_op.run((parent, diag, upper, lower, rhs), {}, backend)
    if all_finite(x) is False:  # on x's own device; None for fake tensors
        raise InputError("hines_solve: the system is singular (the elimination met a zero "
                         "pivot, so the solution is not finite); a cable system needs a "
                         "diagonal that dominates its row (capacitance over dt plus the axial "
                         "conductances)")
    return x


def hines_solve_reference(parent: np.ndarray, diag: np.ndarray, upper: np.ndarray,
                          lower: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Float64 NumPy Hines elimination, vectorised over the batch; the input dtype out."""
    d = np.array(diag, dtype=np.float64, ndmin=2)
    b = np.array(rhs, dtype=np.float64, ndmin=2)
    u = np.array(upper, dtype=np.float64, ndmin=2)
    low = np.array(lower, dtype=np.float64, ndmin=2)
    n_nodes = d.shape[1]
    for i in range(n_nodes - 1, 0, -1):
        p = parent[i]
        f = u[:, i] / d[:, i]
        d[:, p] -= f * low[:, i]
        b[:, p] -= f * b[:, i]
    x = np.empty_like(b)
    x[:, 0] = b[:, 0] / d[:, 0]
    for i in range(1, n_nodes):
        x[:, i] = (b[:, i] - low[:, i] * x[:, parent[i]]) / d[:, i]
    return x.reshape(rhs.shape).astype(rhs.dtype)


# ------------------------------------------------------------ multi-compartment cells


def record_columns(record_at: Sequence[int] | None, n_comp: int) -> np.ndarray:
    """The recorded compartments of a cable run as an int64 array (``None``: all)."""
    if record_at is None:
        return np.arange(n_comp, dtype=np.int64)
    return np.asarray(record_at, dtype=np.int64).reshape(-1)


def check_record_at(op: str, record_at: Any, n_comp: int) -> tuple[int, ...] | None:
    """``record_at`` as a tuple of compartment indices (``None`` stays: every compartment).

    Raises :class:`InputError` unless it is a non-empty sequence of integers in
    ``[0, n_comp)``.
    """
    if record_at is None:
        return None
    values = _host_array(record_at) if hasattr(record_at, "shape") else np.asarray(record_at)
    if values is None:  # a fake tensor while tracing: no values to check
        raise InputError(f"{op}: record_at must be concrete compartment indices (a tuple of "
                         "integers), not a traced tensor")
    if values.ndim != 1 or values.size == 0 or not (
            np.issubdtype(values.dtype, np.integer) and values.dtype != np.bool_):
        raise InputError(f"{op}: record_at must be a non-empty sequence of compartment indices "
                         f"(integers), got {record_at!r}")
    if bool(((values < 0) | (values >= n_comp)).any()):
        raise InputError(f"{op}: record_at indices must lie in [0, {n_comp}) (the cell has "
                         f"{n_comp} compartments), got {values.tolist()}")
    return tuple(int(x) for x in values)


def check_junction_columns(op: str, params: Any) -> None:
    """``c_m = 0`` (``params[0]``, ``(n_cells, n_comp)``) in every cell of a column or in none.

    Such a node is a zero-area junction of the morphology the cells share: the kernels
    skip its channels for a whole column of cells at once.
    """
    zeros = (params[0] == 0).sum(0)  # NumPy, CuPy or torch
    mixed = (zeros > 0) & (zeros < params.shape[1])
    if bool(mixed.any()):
        cols = [j for j, m in enumerate(mixed.tolist()) if m][:8]
        raise InputError(f"{op}: params row 0 (c_m) is 0 in some cells but not in others at "
                         f"compartment(s) {cols}: c_m = 0 makes a node a zero-area junction "
                         "of the shared morphology (no membrane: no channel current, its "
                         "states held), so it must be 0 in every cell or in none")


def _check_cable_simulate(
    v0: Any, states0: Any, params: Any, i_ext: Any, parent: Any, coupling: Any, *,
    channels: Any, dt: float, n_steps: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, record_at: Any = None,
) -> str:
    op = "cable_simulate"
    cs = channel_set(channels)
    require_ndim(op, "v0", v0, 2, "(n_cells, n_comp)")
    n_cells, n_comp = (int(x) for x in v0.shape)
    check_record_at(op, record_at, n_comp)
    if tuple(parent.shape) != (n_comp,):
        raise InputError(f"{op}: parent must have shape (n_comp,) = ({n_comp},), got "
                         f"{tuple(parent.shape)}")
    if tuple(coupling.shape) != (2, n_cells, n_comp):
        raise InputError(
            f"{op}: coupling must have shape (2, n_cells, n_comp) = (2, {n_cells}, {n_comp}) "
            f"(row 0: compartment to parent, row 1: parent to compartment, mS/cm^2; "
            f"fusekit.neuro.cable_coupling computes them), got {tuple(coupling.shape)}"
        )
    if states0.ndim != 3 or tuple(states0.shape[1:]) != (n_cells, n_comp):
        raise InputError(f"{op}: states0 must have shape (n_states, n_cells, n_comp) = "
                         f"({len(cs.state_names)}, {n_cells}, {n_comp}), got "
                         f"{tuple(states0.shape)}")
    if params.ndim != 3 or tuple(params.shape[1:]) != (n_cells, n_comp):
        raise InputError(f"{op}: params must have shape (n_params, n_cells, n_comp) = "
                         f"({len(cs.param_names)}, {n_cells}, {n_comp}), got "
                         f"{tuple(params.shape)}")
    if tuple(i_ext.shape) not in ((n_cells, n_comp), (n_steps, n_cells, n_comp)):
        raise InputError(f"{op}: i_ext must have shape (n_cells, n_comp) or (n_steps, "
                         f"n_cells, n_comp), got {tuple(i_ext.shape)}")
    n = n_cells * n_comp
    flat = (v0.reshape(n), states0.reshape(states0.shape[0], n),
            params.reshape(params.shape[0], n))
    i_flat = i_ext.reshape(n) if i_ext.ndim == 2 else i_ext.reshape(n_steps, n)
    try:
        dtype = _check_ion_simulate(*flat, i_flat, channels=cs, dt=dt, n_steps=n_steps,
                                    record_every=record_every, spike_threshold=spike_threshold,
                                    max_spikes=max_spikes, zero_cm_ok=True)
    except InputError as exc:  # the same checks, in this op's terms
        raise InputError(str(exc).replace("ion_simulate:", f"{op}:", 1).replace(
            "every neuron", "every compartment")) from None
    if array_dtype(coupling) != dtype:
        raise InputError(f"{op}: coupling must have the dtype of v0 ({dtype}), got "
                         f"{array_dtype(coupling)}")
    require_finite(op, "coupling", coupling)
    if n and bool((coupling < 0).any()):
        raise InputError(f"{op}: coupling holds axial conductances (mS/cm^2) and must not be "
                         "negative; fusekit.neuro.cable_coupling computes them from lengths, "
                         "diameters and r_axial")
    # c_m = 0: a zero-area node (NEURON's junction at a branch point), whose row of the
    # system is only its axial coupling; it needs a parent it is coupled to.
    if n and (not bool((params[0, :, 0] > 0).all())
              or bool(((params[0] == 0) & ~(coupling[0] > 0)).any())):
        raise InputError(f"{op}: params row 0 (c_m, membrane capacitance in uF/cm^2) may be 0 "
                         "only at a zero-area junction node (fusekit.neuro.cable_tree makes "
                         "them), which must be coupled to its parent (coupling[0] > 0); "
                         "compartment 0, the root, needs c_m > 0")
    check_junction_columns(op, params)
    _check_hines_solve(parent, *(v0 for _ in range(4)))  # the parent array's Hines order
    return dtype


def _cable_simulate_torch(
    v0: Any, states0: Any, params: Any, i_ext: Any, parent: Any, coupling: Any,
    channels: str, dt: float, n_steps: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, record_at: Any = None,
    checkpoint_every: int = 0, backend: str | None = None,
) -> tuple[Any, ...]:
    # The torch form: the kernel in segments, returning the checkpoints for the backward too.
    from .._arrays import common_kind, to_native

    kw = {"channels": channels, "dt": dt, "n_steps": n_steps, "record_every": record_every,
          "spike_threshold": spike_threshold, "max_spikes": max_spikes}
    check_checkpoint_every(checkpoint_every)
    _check_cable_simulate(v0, states0, params, i_ext, parent, coupling, **kw,
                          record_at=record_at)
    kind = common_kind(("v0", "coupling"), (v0, coupling))
    tree = (to_native(parent, kind), to_native(coupling, kind))
    cols = None if record_at is None else tuple(record_at)

    def run(arrays: tuple[Any, ...], params_: dict[str, Any], backend_: str | None) -> Any:
        return cable_simulate_op.run((*arrays, *tree), {**params_, "record_at": cols}, backend_)

    return checkpointed_forward(run, v0, states0, params, i_ext, **kw,
                                checkpoint_every=checkpoint_every, backend=backend,
                                whole=_checkpointing_kernel(cable_simulate_op, backend, tree,
                                                            record_at=cols))


def _cable_simulate_fake(
    v0: Any, states0: Any, params: Any, i_ext: Any, parent: Any, coupling: Any,
    channels: str, dt: float, n_steps: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, record_at: Any = None,
    checkpoint_every: int = 0, backend: str | None = None,
) -> tuple[Any, ...]:
    import torch

    n_cells, n_comp = v0.shape
    n_states = states0.shape[0]
    n_rec = n_steps // record_every if record_every else 0
    n_seg = -(-n_steps // segment_length(n_steps, checkpoint_every, record_every))
    n_cols = n_comp if record_at is None else len(record_at)
    return (v0.new_empty((n_cells, n_comp)), states0.new_empty((n_states, n_cells, n_comp)),
            v0.new_empty((n_rec, n_cells, n_cols)),
            v0.new_empty((n_cells,), dtype=torch.int64), v0.new_empty((max_spikes, n_cells)),
            v0.new_empty((n_seg, 1 + n_states, n_cells, n_comp)),
            v0.new_empty((n_seg, n_cells), dtype=torch.int64))


_CABLE_TORCH_PARAMS = ("channels", "dt", "n_steps", "record_every", "spike_threshold",
                       "max_spikes", "record_at", "checkpoint_every", "backend")


def _cable_simulate_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    _, _, params, i_ext, parent, coupling, *rest = inputs
    ctx.kw = dict(zip(_CABLE_TORCH_PARAMS, rest, strict=False))
    ctx.save_for_backward(params, i_ext, parent, coupling, output[5], output[6])
    ctx.mark_non_differentiable(output[3], output[5], output[6])


def _cable_simulate_backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
    # The compiled adjoint (cable_adjoint) where the backend has one; else the torch
    # recompute of each segment, the tree solve differentiated by hines_solve's backward.
    params, i_ext, parent, coupling, checkpoints, counts_at = ctx.saved_tensors
    kw = {"record_every": 0, "spike_threshold": 0.0, "max_spikes": 0, "checkpoint_every": 0,
          "backend": None, "record_at": None, **ctx.kw}
    backend = kw.pop("backend")
    record_at = kw.pop("record_at")
    cols = None if record_at is None else tuple(record_at)
    needs = ctx.needs_input_grad
    wanted = (*needs[:4], needs[5])
    got = adjoint_backward(grads[:5], checkpoints, counts_at, params, i_ext, **kw,
                           needs=wanted, backend=backend, tree=(parent, coupling),
                           record_at=cols)
    if got is not None:
        return (*got[:4], None, got[4], *(None,) * (len(needs) - 6))
    cs = channel_set(kw["channels"])
    dt = kw["dt"]

    def step(v: Any, S: Any, P: Any, i_inj: Any, cpl: Any) -> tuple[Any, Any]:
        return cable_torch_step(cs, parent, v, S, P, i_inj, cpl, dt)

    g_v, g_S, g_P, g_I, g_c = checkpointed_backward(
        grads[:5], checkpoints, counts_at, params, i_ext, **kw,
        needs=wanted, step=step, extra=(coupling,), probe=lambda v: v[:, 0],
        record=None if cols is None else (lambda v: v[:, list(cols)]))
    return (g_v, g_S, g_P, g_I, None, g_c, *(None,) * (len(needs) - 6))


def cable_torch_step(cs: ChannelSet, parent: Any, v: Any, S: Any, P: Any, i_inj: Any,
                     coupling: Any, dt: float, g_syn: Any = None, ge_syn: Any = None
                     ) -> tuple[Any, Any]:
    """One step of ``cable_simulate``'s scheme on torch tensors: ``(v_new, states_new)``.

    The gates and conductances of every compartment as in :func:`~fusekit.ops.ion_grad.
    torch_step`, then the backward-Euler voltage equation with the axial currents, solved by
    the differentiable :func:`hines_solve`. Shapes as in :func:`cable_simulate`: ``v``
    ``(n_cells, n_comp)``, ``S`` and ``P`` with a leading row axis, ``coupling``
    ``(2, n_cells, n_comp)``; ``parent`` an int64 tensor. ``g_syn`` and ``ge_syn``: a
    synaptic conductance per compartment and its product with the reversal potential
    (``cable_network_simulate``'s, summed over the synapse types), added as a channel.
    """
    import torch

    def as_tensor(x: Any) -> Any:  # channel functions may return constants
        return torch.as_tensor(x, dtype=v.dtype, device=v.device)

    S, g_sum, ge_sum = gates_and_conductances(cs, v, S, P, dt, exp=torch.exp,
                                              stack=torch.stack, convert=as_tensor,
                                              where=torch.where)
    to_parent, from_child = coupling[0], coupling[1]
    # Each compartment's axial conductance: to its parent, plus from each of its children.
    axial = torch.cat([torch.zeros_like(to_parent[:, :1]), to_parent[:, 1:]], dim=1)
    axial = axial.index_add(1, parent[1:], from_child[:, 1:])
    if g_syn is not None:  # as the reference sums them: the synapses first
        g_sum, ge_sum = g_syn + g_sum, ge_syn + ge_sum
    c_dt = P[0] / dt
    v_new = hines_solve(parent, c_dt + g_sum + axial, -from_child, -to_parent,
                        c_dt * v + ge_sum + i_inj)
    return v_new, S


cable_simulate_op = Op(
    name="cable_simulate",
    family="ion",
    array_args=("v0", "states0", "params", "i_ext", "parent", "coupling"),
    params=("channels", "dt", "n_steps", "record_every", "spike_threshold", "max_spikes",
            "record_at"),
    check=_check_cable_simulate,
    torch=TorchBridge(
        schema="(Tensor v0, Tensor states0, Tensor params, Tensor i_ext, Tensor parent, "
        "Tensor coupling, str channels, float dt, int n_steps, int record_every=0, "
        "float spike_threshold=0.0, int max_spikes=0, int[]? record_at=None, "
        "int checkpoint_every=0, str? backend=None) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
        fake=_cable_simulate_fake,
        setup_context=_cable_simulate_setup,
        backward=_cable_simulate_backward,
        impl=_cable_simulate_torch,
    ),
)


def cable_simulate(
    v0: Any, states0: Any, params: Any, i_ext: Any, parent: Any, coupling: Any, *,
    channels: ChannelSet | Sequence[type[Channel]] | str, dt: float, n_steps: int,
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
    record_at: Sequence[int] | None = None, checkpoint_every: int = 0,
    backend: str | None = None,
) -> IonSimulation:
    """Simulate ``n_cells`` multi-compartment cells that share one morphology.

    Each compartment carries the channels of ``channels`` with its own parameters; the step
    is that of :func:`ion_simulate` with the axial currents in the backward-Euler voltage
    equation, solved by Hines elimination (:func:`hines_solve`):
    ``c_m (v_i' - v_i)/dt = sum_c g_c (E_c - v_i') + i_ext_i + sum_j a_ij (v_j' - v_i')``
    over the neighbours ``j`` of compartment ``i``, with ``a_ij`` in mS/cm^2 of ``i``'s area.

    Args:
        v0: Initial potentials, mV, ``(n_cells, n_comp)``.
        states0: ``(n_states, n_cells, n_comp)``.
        params: ``(n_params, n_cells, n_comp)``, rows as ``channels.param_names``. ``c_m =
            0`` (row 0) makes a node a zero-area junction (:func:`fusekit.neuro.cable_tree`):
            no membrane, so its channels are skipped, whatever its other parameters, and its
            states held; in every cell of that column or in none, and coupled to its parent.
        i_ext: uA/cm^2, ``(n_cells, n_comp)`` or ``(n_steps, n_cells, n_comp)``.
        parent: Parent compartment, ``(n_comp,)`` int, Hines order (``parent[0] = -1``).
        coupling: ``(2, n_cells, n_comp)``, mS/cm^2: ``coupling[0, :, i] = a_(i, parent)``
            and ``coupling[1, :, i] = a_(parent, i)`` (entry 0 unused); see
            :func:`fusekit.neuro.cable_coupling`.
        channels: As for :func:`ion_simulate`.
        dt: ms.
        n_steps: Steps.
        record_every: Record ``v`` every this many steps (0: none).
        record_at: The compartments recorded (indices; ``None``: every compartment). A
            loss on a few compartments then neither records nor differentiates the rest.
        spike_threshold: mV, detected in compartment 0 (the soma).
        max_spikes: Spike times kept per cell.
        checkpoint_every: For torch tensors that require grad: steps between the checkpoints
            of the backward pass (0: about ``sqrt(n_steps)``), as for :func:`ion_simulate`.
        backend: As for every op.

    Returns:
        :class:`IonSimulation`: ``v`` ``(n_cells, n_comp)``, ``states``, ``v_record``
        ``(n_rec, n_cells, n_comp)`` (``len(record_at)`` columns when given),
        ``spike_count`` ``(n_cells,)``, ``spike_times``
        ``(max_spikes, n_cells)``. When a torch input requires grad, ``v``, ``states``,
        ``v_record`` and ``spike_times`` are differentiable with respect to ``v0``,
        ``states0``, ``params``, ``i_ext`` and ``coupling`` (so, through a torch
        :func:`fusekit.neuro.cable_coupling`, to diameters, lengths and ``r_axial``): the
        kernel runs forward in segments, keeping checkpoints, and the backward re-runs each
        segment in torch (:func:`cable_torch_step`), backpropagating through it.
    """
    cs = channel_set(channels)
    check_checkpoint_every(checkpoint_every)
    # before int() below truncates (as in ion_simulate)
    check_counts("cable_simulate", n_steps=n_steps, record_every=record_every,
                 max_spikes=max_spikes)
    record_at = check_record_at("cable_simulate", record_at, int(v0.shape[-1]))
    if is_tensor(v0):
        parent = _as_index_tensor(parent, v0)  # a NumPy parent is fine with tensors
    if is_tensor(v0) and any(getattr(a, "requires_grad", False)
                             for a in (v0, states0, params, i_ext, coupling)):
        out = torch_call(
            "cable_simulate",
            {"v0": v0, "states0": states0, "params": params, "i_ext": i_ext,
             "parent": parent, "coupling": coupling},
            backend, cs.key, float(dt), int(n_steps), int(record_every),
            float(spike_threshold), int(max_spikes),
            None if record_at is None else list(record_at), checkpoint_every)
        return IonSimulation(*out[:5])
    out = cable_simulate_op.run(
        (v0, states0, params, i_ext, parent, coupling),
        {"channels": cs, "dt": dt, "n_steps": int(n_steps), "record_every": int(record_every),
         "spike_threshold": spike_threshold, "max_spikes": int(max_spikes),
         "record_at": record_at},
        backend,
    )
    return IonSimulation(*out)


def cable_simulate_reference(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    parent: np.ndarray, coupling: np.ndarray, *, channels: Any, dt: float, n_steps: int,
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
    record_at: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Float64 NumPy oracle of :func:`cable_simulate` (gates vectorised, Hines per step).

    :func:`~fusekit.ops.ion_cable_network.cable_network_simulate_reference` without synapses
    (their zero conductance adds exactly nothing).
    """
    from .ion_cable_network import cable_network_simulate_reference

    n_cells, n_comp = v0.shape
    none = np.zeros(0, dtype=np.int64)
    out = cable_network_simulate_reference(
        v0, states0, params, i_ext, parent, coupling, np.zeros((1, n_cells, n_comp), v0.dtype),
        np.zeros(n_cells + 1, np.int64), none, np.zeros(0, v0.dtype),
        np.zeros((1, 1, n_cells, n_comp), v0.dtype), none, none, channels=channels, dt=dt,
        n_steps=n_steps, delay_steps=1, tau_syn=(1.0,), e_syn=(0.0,),
        record_every=record_every, spike_threshold=spike_threshold, max_spikes=max_spikes,
        record_at=record_at)
    return out[0], out[1], out[3], out[4], out[5]


# ------------------------------------------------------- networks: CSR synapses on spikes


def kernel_outputs(xp: Any, v0: Any, states0: Any, n_steps: int, record_every: int,
                   max_spikes: int, n_cols: int | None = None) -> tuple[Any, ...]:
    """The arrays a simulation kernel fills, in ``xp`` (NumPy or CuPy).

    ``(V, S, V_rec, counts, times)``: C-ordered copies of ``v0`` and ``states0`` (the kernel
    updates them in place), ``V_rec`` ``(n_rec, n)`` (``(n_rec, n_cells, n_cols)`` for
    cells), zero spike counts and NaN spike times ``(max_spikes, n)``.
    """
    dtype = v0.dtype
    n = v0.shape[0]
    n_rec = n_steps // record_every if record_every else 0
    return (xp.array(v0, dtype=dtype, order="C"), xp.array(states0, dtype=dtype, order="C"),
            xp.empty((n_rec, n) if n_cols is None else (n_rec, n, n_cols), dtype=dtype),
            xp.zeros(n, dtype=xp.int64), xp.full((max_spikes, n), xp.nan, dtype=dtype))


def _zeros_like(a: Any) -> Any:
    """``shape -> zeros`` of ``a``'s dtype in ``a``'s array library (NumPy, torch, CuPy)."""
    module = type(a).__module__.split(".", 1)[0]
    if module == "torch":
        return lambda shape: a.new_zeros(shape)
    if module == "cupy":
        import cupy

        return lambda shape: cupy.zeros(shape, dtype=a.dtype)
    dtype = getattr(a, "dtype", np.float64)
    return lambda shape: np.zeros(shape, dtype=dtype)


class NetworkSimulation(NamedTuple):
    """Result of :func:`network_simulate`: :class:`IonSimulation`'s fields and ``g_syn``.

    Attributes:
        v: Final potentials, mV, ``(n,)``.
        states: Final gating states, ``(n_states, n)``.
        g_syn: Final synaptic conductances, mS/cm^2, ``(n,)`` (``(n_types, n)`` with
            several synapse types).
        v_record: As in :class:`IonSimulation`.
        spike_count: As in :class:`IonSimulation`.
        spike_times: As in :class:`IonSimulation`.
        arrivals: Spikes still in flight at the end, ``(delay_steps, n)`` (``(delay_steps,
            n_types, n)`` with several types): row ``x`` is the conductance that arrives at
            the start of step ``n_steps + x`` (pass it as the next call's ``arrivals0`` to
            continue the run exactly).
    """

    v: Any
    states: Any
    g_syn: Any
    v_record: Any
    spike_count: Any
    spike_times: Any
    arrivals: Any = None


def _check_network_simulate(
    v0: Any, states0: Any, params: Any, i_ext: Any, g_syn0: Any, indptr: Any, indices: Any,
    weights: Any, arrivals0: Any, synapse_type: Any, *, channels: Any, dt: float, n_steps: int,
    delay_steps: int, tau_syn: tuple[float, ...], e_syn: tuple[float, ...],
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
) -> str:
    op = "network_simulate"
    dtype = _check_ion_simulate(v0, states0, params, i_ext, channels=channels, dt=dt,
                                n_steps=n_steps, record_every=record_every,
                                spike_threshold=spike_threshold, max_spikes=max_spikes)
    n = v0.shape[0]
    check_synapses(op, dtype, (n,), g_syn0, indptr, indices, weights, arrivals0, synapse_type,
                   n_types=len(synapse_kinds(tau_syn, e_syn)[0]), delay_steps=delay_steps)
    return dtype


def check_synapses(op: str, dtype: str, post: tuple[int, ...], g_syn0: Any, indptr: Any,
                   indices: Any, weights: Any, arrivals0: Any, synapse_type: Any, *,
                   n_types: int, delay_steps: Any) -> None:
    """The CSR synapses, their types, conductances and spikes in flight of a network op.

    ``post``: the shape of one type's conductances, ``(n,)`` or ``(n_cells, n_comp)``; its
    first entry is the number of neurons (cells), which are the CSR's rows and the values of
    ``indices``. ``g_syn0`` must be ``(n_types, *post)`` and ``arrivals0`` ``(delay_steps,
    n_types, *post)``.
    """
    n = post[0]
    g_shape = (n_types, *post)
    if tuple(g_syn0.shape) != g_shape or array_dtype(g_syn0) != dtype:
        raise InputError(f"{op}: g_syn0 must be a {g_shape} {dtype} array (one row per "
                         f"synapse type), got {tuple(g_syn0.shape)} {array_dtype(g_syn0)}")
    require_finite(op, "g_syn0", g_syn0)
    if tuple(indptr.shape) != (n + 1,) or array_dtype(indptr) not in ("int32", "int64"):
        raise InputError(f"{op}: indptr must be an int ({n + 1},) array (CSR rows: the "
                         f"presynaptic neurons), got {tuple(indptr.shape)} "
                         f"{array_dtype(indptr)}")
    nnz = indices.shape[0] if indices.ndim == 1 else -1
    if (indices.ndim != 1 or array_dtype(indices) not in ("int32", "int64")
            or tuple(weights.shape) != (nnz,) or array_dtype(weights) != dtype):
        raise InputError(f"{op}: indices must be an int (nnz,) array and weights a (nnz,) "
                         f"{dtype} array, got {tuple(indices.shape)} {array_dtype(indices)} "
                         f"and {tuple(weights.shape)} {array_dtype(weights)}")
    # The structural checks use the arrays' own operations (NumPy, CuPy or torch alike): a
    # CuPy array refuses to become a NumPy one.
    if (int(indptr[0]) != 0 or int(indptr[-1]) != nnz
            or bool((indptr[1:] < indptr[:-1]).any())):
        raise InputError(f"{op}: indptr must start at 0, never decrease and end at nnz = "
                         f"{nnz} (scipy.sparse.csr_matrix(...).indptr has this form)")
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= n):
        raise InputError(f"{op}: indices (postsynaptic neurons) must lie in [0, {n})")
    # (0,): every synapse is of type 0 (what the ops pass for one type)
    if (tuple(synapse_type.shape) not in ((nnz,), (0,))
            or array_dtype(synapse_type) not in ("int32", "int64")):
        raise InputError(f"{op}: synapse_type must be an int ({nnz},) array (the type of every "
                         f"synapse), got {tuple(synapse_type.shape)} "
                         f"{array_dtype(synapse_type)}")
    if synapse_type.shape[0] and (int(synapse_type.min()) < 0
                                  or int(synapse_type.max()) >= n_types):
        raise InputError(f"{op}: synapse_type must lie in [0, {n_types}): {n_types} synapse "
                         f"types are declared by tau_syn and e_syn")
    require_finite(op, "weights", weights)
    if bool((weights < 0).any()) or bool((g_syn0 < 0).any()):
        raise InputError(f"{op}: synaptic weights and g_syn0 are conductances (mS/cm^2) and must "
                         "not be negative; make a synapse inhibitory with its reversal "
                         "potential e_syn (e.g. -80 mV), not with a negative weight")
    if not isinstance(delay_steps, int | np.integer) or delay_steps < 1:
        raise InputError(f"{op}: delay_steps must be an integer >= 1 (the synaptic delay in "
                         f"steps), got {delay_steps!r}")
    a_shape = (int(delay_steps), *g_shape)
    if tuple(arrivals0.shape) != a_shape or array_dtype(arrivals0) != dtype:
        raise InputError(f"{op}: arrivals0 must be a {a_shape} {dtype} array (the spikes in "
                         f"flight: an earlier call's arrivals, with the same delay_steps), got "
                         f"{tuple(arrivals0.shape)} {array_dtype(arrivals0)}")
    require_finite(op, "arrivals0", arrivals0)
    if bool((arrivals0 < 0).any()):
        raise InputError(f"{op}: arrivals0 are conductances (mS/cm^2) and must not be negative")


def refuse_grad(op: str, torch_form: str, *arrays: Any) -> None:
    """Raise when a torch input requires grad: the network ops are not differentiable.

    Their spikes are discrete; the torch forms in ``fusekit.neuro`` (``torch_form``) run the
    same scheme with surrogate spike gradients.
    """
    if any(getattr(a, "requires_grad", False) for a in arrays):
        raise InputError(f"{op} is not differentiable (its spikes are discrete events); for "
                         f"gradients use fusekit.neuro.{torch_form}, the same scheme in torch "
                         "with surrogate spike gradients, or pass tensors that do not require "
                         "grad (.detach())")


def synapse_kinds(tau_syn: Any, e_syn: Any) -> tuple[tuple[float, ...], tuple[float, ...],
                                                     bool]:
    """``(tau_syn, e_syn, typed)``: one value per synapse type, and whether any was a sequence.

    A number stands for one type (``typed`` False) or, beside a sequence, for every type.
    """
    op = "network_simulate"

    def values(name: str, x: Any) -> tuple[float, ...] | None:
        if isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool):
            return None
        try:
            if isinstance(x, str | bytes):
                raise TypeError
            vals = tuple(float(e) for e in x)
        except (TypeError, ValueError):
            raise InputError(f"{op}: {name} must be a number or a sequence of numbers (one per "
                             f"synapse type), got {x!r}") from None
        if not vals:
            raise InputError(f"{op}: {name} must name at least one synapse type, got {x!r}")
        return vals

    taus, es = values("tau_syn", tau_syn), values("e_syn", e_syn)
    if taus is not None and es is not None and len(taus) != len(es):
        raise InputError(f"{op}: tau_syn and e_syn must have one value per synapse type, got "
                         f"{len(taus)} and {len(es)}")
    n_types = len(taus if taus is not None else es if es is not None else (0.0,))
    taus_t = taus if taus is not None else (float(tau_syn),) * n_types
    es_t = es if es is not None else (float(e_syn),) * n_types
    for tau in taus_t:
        if not (math.isfinite(tau) and tau > 0):
            raise InputError(f"{op}: tau_syn must be a positive time constant in ms (per "
                             f"synapse type), got {tau_syn!r}")
    for e in es_t:
        if not math.isfinite(e):
            raise InputError(f"{op}: e_syn must be a finite potential in mV (per synapse "
                             f"type), got {e_syn!r}")
    return taus_t, es_t, taus is not None or es is not None


def synapse_decays(dt: float, tau_syn: Sequence[float]) -> tuple[float, ...]:
    """Each synapse type's conductance factor per step, ``exp(-dt / tau_syn)``."""
    return tuple(math.exp(-dt / tau) for tau in tau_syn)


network_simulate_op = Op(
    name="network_simulate",
    family="ion",
    array_args=("v0", "states0", "params", "i_ext", "g_syn0", "indptr", "indices", "weights",
                "arrivals0", "synapse_type"),
    params=("channels", "dt", "n_steps", "delay_steps", "tau_syn", "e_syn", "record_every",
            "spike_threshold", "max_spikes"),
    check=_check_network_simulate,
)


def network_simulate(
    v0: Any, states0: Any, params: Any, i_ext: Any, g_syn0: Any, indptr: Any, indices: Any,
    weights: Any, *, channels: ChannelSet | Sequence[type[Channel]] | str, dt: float,
    n_steps: int, delay_steps: int, tau_syn: float | Sequence[float] = 5.0,
    e_syn: float | Sequence[float] = 0.0, synapse_type: Any = None, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, arrivals0: Any = None,
    backend: str | None = None,
) -> NetworkSimulation:
    """Single-compartment neurons coupled by conductance-based synapses in CSR form.

    Each neuron has one synaptic conductance ``g_syn`` (mS/cm^2) per synapse type, with the
    type's reversal ``e_syn`` and decay time constant ``tau_syn``; it enters the
    backward-Euler voltage update like a channel. A spike of neuron ``j`` during step ``k``
    adds ``weights[e]`` to ``g_syn[synapse_type[e], indices[e]]`` for every ``e`` in
    ``indptr[j]:indptr[j+1]`` at the start of step ``k + delay_steps`` (event-driven: work per
    spike, not per synapse and step). Per step and type:
    ``g_syn' = g_syn exp(-dt / tau_syn) + arrivals``, then the step of :func:`ion_simulate`
    with every type's ``g_syn'`` added to the channels.

    One type (``tau_syn`` and ``e_syn`` numbers, the default) keeps ``g_syn0``, the result's
    ``g_syn`` and ``arrivals`` without a type axis. Several types (excitatory and
    inhibitory, AMPA and GABA-A, ...): give ``tau_syn`` and/or ``e_syn`` one value per type
    (a number beside a sequence serves every type) and ``synapse_type``; ``g_syn0`` is then
    ``(n_types, n)`` and ``arrivals`` ``(delay_steps, n_types, n)``.

    The CPU kernel runs ``delay_steps`` steps between synchronisations of its threads (the
    delay is what lets neurons run independently in between).

    Args:
        v0: Initial potentials, mV, ``(n,)``.
        states0: ``(n_states, n)``.
        params: ``(n_params, n)``.
        i_ext: uA/cm^2, ``(n,)`` or ``(n_steps, n)``.
        g_syn0: Initial synaptic conductances, mS/cm^2, ``(n,)`` (``(n_types, n)``).
        indptr: CSR row pointers over presynaptic neurons, int, ``(n + 1,)``.
        indices: Postsynaptic neuron of every synapse, int, ``(nnz,)``.
        weights: Conductance jump per spike, mS/cm^2, ``(nnz,)``, the dtype of ``v0``.
        channels: As for :func:`ion_simulate`.
        dt: ms.
        n_steps: Steps.
        delay_steps: Synaptic delay in steps, at least 1.
        tau_syn: Decay time constant, ms, or one per synapse type.
        e_syn: Synaptic reversal potential, mV (0: excitatory; -80: inhibitory), or one per
            synapse type.
        synapse_type: Type of every synapse, int ``(nnz,)`` in ``[0, n_types)`` (with
            Dale's law, ``np.repeat(neuron_type, np.diff(indptr))``); required with more
            than one type, zeros when ``None``.
        record_every: As for :func:`ion_simulate`.
        spike_threshold: mV.
        max_spikes: Spike times kept per neuron.
        arrivals0: Spikes in flight at the start, ``(delay_steps, n)`` (``(delay_steps,
            n_types, n)``): row ``x`` arrives at the start of step ``x`` (an earlier call's
            ``arrivals``); zeros when ``None``.
        backend: As for every op.

    Returns:
        :class:`NetworkSimulation`; its ``arrivals`` continue the run in a next call.
    """
    cs = channel_set(channels)
    refuse_grad("network_simulate", "network_simulate_torch", v0, states0, params, i_ext,
                g_syn0, weights, arrivals0)
    check_counts("network_simulate", n_steps=n_steps, delay_steps=delay_steps,
                 record_every=record_every, max_spikes=max_spikes)
    taus, es, typed = synapse_kinds(tau_syn, e_syn)
    n_types = len(taus)
    n = v0.shape[0] if hasattr(v0, "shape") and len(v0.shape) else 0
    delay = max(int(delay_steps), 0) if isinstance(delay_steps, int | np.integer) else 0
    if arrivals0 is None:
        arrivals0 = _zeros_like(v0)((delay, n_types, n))
    elif not typed:
        if tuple(getattr(arrivals0, "shape", ())) != (delay, n):
            raise InputError(f"network_simulate: arrivals0 must be a ({delay}, {n}) array (the "
                             f"spikes in flight: an earlier call's arrivals, with the same "
                             f"delay_steps), got {tuple(getattr(arrivals0, 'shape', ()))}")
        arrivals0 = arrivals0[:, None]
    if not typed:
        shape = tuple(getattr(g_syn0, "shape", ()))
        if shape != (n,) or array_dtype(g_syn0) != array_dtype(v0):
            raise InputError(f"network_simulate: g_syn0 must be a ({n},) {array_dtype(v0)} "
                             f"array (one synapse type), got {shape} {array_dtype(g_syn0)}")
        g_syn0 = g_syn0[None]
    if synapse_type is None:
        if n_types > 1:
            raise InputError(f"network_simulate: {n_types} synapse types are declared by "
                             f"tau_syn and e_syn; give synapse_type, the type of every synapse "
                             f"(int (nnz,) in [0, {n_types}))")
        synapse_type = _zeros_like(indices)((0,))  # empty: every synapse is of type 0
    out = network_simulate_op.run(
        (v0, states0, params, i_ext, g_syn0, indptr, indices, weights, arrivals0,
         synapse_type),
        {"channels": cs, "dt": dt, "n_steps": int(n_steps), "delay_steps": int(delay_steps),
         "tau_syn": taus, "e_syn": es, "record_every": int(record_every),
         "spike_threshold": spike_threshold, "max_spikes": int(max_spikes)},
        backend,
    )
    if not typed:
        out = (*out[:2], out[2][0], *out[3:6], out[6][:, 0])
    return NetworkSimulation(*out)


def network_simulate_reference(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    g_syn0: np.ndarray, indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray,
    arrivals0: np.ndarray, synapse_type: np.ndarray, *, channels: Any, dt: float,
    n_steps: int, delay_steps: int, tau_syn: tuple[float, ...], e_syn: tuple[float, ...],
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
) -> tuple[np.ndarray, ...]:
    """Float64 NumPy oracle of :func:`network_simulate` (a type axis on ``g_syn``)."""
    cs = channel_set(channels)
    dtype = v0.dtype
    v = v0.astype(np.float64)
    S = states0.astype(np.float64)
    P = params.astype(np.float64)
    I_ext = i_ext.astype(np.float64)
    g_syn = g_syn0.astype(np.float64)
    w = weights.astype(np.float64)
    n = v.shape[0]
    n_rec = n_steps // record_every if record_every else 0
    v_record = np.empty((n_rec, n))
    spike_count = np.zeros(n, dtype=np.int64)
    spike_times = np.full((max_spikes, n), np.nan)
    # ring[k % delay_steps]: arrivals at step k, one row per synapse type
    ring = arrivals0.astype(np.float64)
    types = np.asarray(synapse_type, dtype=np.int64)
    if types.size == 0:  # every synapse of type 0
        types = np.zeros(w.shape[0], np.int64)
    decay = np.array(synapse_decays(dt, tau_syn))[:, None]
    e_rev = np.array(e_syn)[:, None]
    for step in range(n_steps):
        slot = step % delay_steps
        g_syn = g_syn * decay + ring[slot]
        ring[slot] = 0.0
        S, g_ch, ge_ch = gates_and_conductances(cs, v, S, P, dt, exp=np.exp, stack=np.stack)
        g_sum = g_syn.sum(0) + g_ch
        ge_sum = (g_syn * e_rev).sum(0) + ge_ch
        i_inj = I_ext if I_ext.ndim == 1 else I_ext[step]
        k_ = dt / P[0]
        v_new = (v + k_ * (ge_sum + i_inj)) / (1.0 + k_ * g_sum)
        for j in np.flatnonzero((v < spike_threshold) & (v_new >= spike_threshold)):
            if spike_count[j] < max_spikes:
                frac = (spike_threshold - v[j]) / (v_new[j] - v[j])
                spike_times[spike_count[j], j] = (step + frac) * dt
            spike_count[j] += 1
            # Arrives at the start of step + delay_steps, whose slot is this step's.
            e = slice(indptr[j], indptr[j + 1])
            np.add.at(ring[slot], (types[e], indices[e]), w[e])
        v = v_new
        if record_every and (step + 1) % record_every == 0:
            v_record[(step + 1) // record_every - 1] = v
    arrivals = ring[(n_steps + np.arange(delay_steps)) % delay_steps]
    return (v.astype(dtype), S.astype(dtype), g_syn.astype(dtype), v_record.astype(dtype),
            spike_count, spike_times.astype(dtype), arrivals.astype(dtype))
