"""One step of a network's membranes as an op, and its vector-Jacobian product.

:func:`membrane_step` is the per-step core of the point-neuron networks
(:func:`fusekit.neuro.network_simulate_torch`): each neuron's gates by Rush-Larsen, the channel
conductances at the new gates, then the backward-Euler voltage with a synaptic conductance
``g_syn`` and its reversal current ``ge_syn = sum_types g E``,

    v' = (c_m / dt v + ge_ch + ge_syn + i_inj) / (c_m / dt + g_ch + g_syn).

:func:`membrane_step_vjp` is its backward: given the adjoints of ``v'`` and the new states it
returns those of every input, ``a_x = sum_o (d o / d x) a_o``. Writing the voltage row as
``D = c_m / dt + g_ch`` and ``R = c_m / dt v + ge_ch + i_inj`` (a cable compartment's local
row), ``a_R = a_v' / (D + g_syn)`` and ``a_D = -a_R v'``, and the rest is the local adjoint
of a compartment (:func:`fusekit.ops.ion_symbolic.cable_adjoint_step_source`): ``a_g_syn =
a_D``, ``a_ge_syn = a_i_inj = a_R``. As a torch op the step is differentiable through this
backward: a network step costs two compiled calls instead of about a hundred tensor
operations, forward and backward.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._errors import InputError
from .._registry import Op, TorchBridge, array_dtype
from ._common import check_counts, check_dt, is_tensor, require_finite, torch_call
from .ion_channel import Channel, ChannelSet, channel_set, gates_and_conductances

__all__ = ["membrane_step", "membrane_step_function", "membrane_step_reference",
           "membrane_step_vjp", "membrane_step_vjp_reference", "synapse_deliver",
           "synapse_deliver_function", "synapse_deliver_reference", "synapse_deliver_vjp",
           "synapse_deliver_vjp_reference"]

_FLOATS = ("float32", "float64")


def _check_membrane(op: str, v: Any, states: Any, params: Any, i_inj: Any, g_syn: Any,
                    ge_syn: Any, *, channels: Any, dt: float, values: bool = True,
                    **adjoints: Any) -> str:
    """Shapes, dtypes and ``dt``; with ``values`` also finiteness and ``c_m > 0``.

    The fake kernels (tracing) check without ``values``: fake tensors have no data.
    """
    cs = channel_set(channels)
    v, states, params, i_inj, g_syn, ge_syn = map(
        _cpu_view, (v, states, params, i_inj, g_syn, ge_syn))
    adjoints = {k: _cpu_view(a) for k, a in adjoints.items()}
    n = v.shape[0] if v.ndim == 1 else -1
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    shapes = {"v": (v, (n,)), "states": (states, (n_states, n)),
              "params": (params, (n_params, n)), "i_inj": (i_inj, (n,)),
              "g_syn": (g_syn, (n,)), "ge_syn": (ge_syn, (n,))}
    if adjoints:
        shapes.update({"a_v": (adjoints["a_v"], (n,)),
                       "a_states": (adjoints["a_states"], (n_states, n))})
    for name, (a, shape) in shapes.items():
        if tuple(a.shape) != shape:
            raise InputError(f"{op}: {name} must have shape {shape} for {cs!r} (v is (n,), "
                             f"states (n_states, n), params (n_params, n)), got "
                             f"{tuple(a.shape)}")
    dtype = array_dtype(v)
    if dtype not in _FLOATS:
        raise InputError(f"{op}: arrays must be float32 or float64, got {dtype}")
    for name, (a, _) in shapes.items():
        if array_dtype(a) != dtype:
            raise InputError(f"{op}: all arrays must share v's dtype {dtype}, but {name} is "
                             f"{array_dtype(a)}; cast them first")
        # A network calls this op every step: one sum shows NaN or infinity (3 us on 500
        # neurons, on a NumPy view of a CPU tensor a tenth of torch's reductions); only
        # when it is not finite (or it overflowed) does the exact check look.
        if values and not (isinstance(a, np.ndarray) and math.isfinite(a.sum())):
            require_finite(op, name, a)
    check_dt(op, dt)
    if values and n and not params[0].min() > 0:
        raise InputError(f"{op}: params row 0 (c_m, membrane capacitance in uF/cm^2) must be "
                         "positive for every neuron")
    return dtype


def _cpu_view(a: Any) -> Any:
    """A NumPy view of a plain CPU tensor (no copy); anything else as it is.

    Fake tensors (tracing) are a subclass, and keep the torch path of the checks.
    """
    if type(a).__name__ == "Tensor" and is_tensor(a) and a.is_cpu and not a.is_meta:
        return a.detach().numpy()
    return a


def _check_membrane_step(v: Any, states: Any, params: Any, i_inj: Any, g_syn: Any,
                         ge_syn: Any, *, channels: Any, dt: float) -> str:
    return _check_membrane("membrane_step", v, states, params, i_inj, g_syn, ge_syn,
                           channels=channels, dt=dt)


def _check_membrane_step_vjp(v: Any, states: Any, params: Any, i_inj: Any, g_syn: Any,
                             ge_syn: Any, a_v: Any, a_states: Any, *, channels: Any,
                             dt: float) -> str:
    return _check_membrane("membrane_step_vjp", v, states, params, i_inj, g_syn, ge_syn,
                           channels=channels, dt=dt, a_v=a_v, a_states=a_states)


def _membrane_step_fake(v: Any, states: Any, params: Any, i_inj: Any, g_syn: Any, ge_syn: Any,
                        channels: str, dt: float, backend: str | None = None
                        ) -> tuple[Any, Any]:
    _check_membrane("membrane_step", v, states, params, i_inj, g_syn, ge_syn,
                    channels=channels, dt=dt, values=False)  # shapes and dtypes while tracing
    return v.new_empty(v.shape), states.new_empty(states.shape)


def _membrane_step_setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, Any]) -> None:
    *tensors, channels, dt = inputs[:8]
    ctx.channels, ctx.dt = channels, dt
    ctx.backend = inputs[8] if len(inputs) > 8 else None
    ctx.save_for_backward(*tensors)


def _step_backward(ctx: Any, g_v: Any, g_states: Any,
                   vjp: Callable[[tuple[Any, ...]], tuple[Any, ...]]) -> tuple[Any, ...]:
    """The backward of both torch forms of :func:`membrane_step`.

    ``vjp`` of the saved inputs and the incoming gradients (zeros for an unused output),
    then ``None`` for what needs none and for the three non-tensor arguments.
    """
    import torch

    v, states, *_ = tensors = ctx.saved_tensors
    a_v = torch.zeros_like(v) if g_v is None else g_v.contiguous()
    a_s = torch.zeros_like(states) if g_states is None else g_states.contiguous()
    got = vjp((*tensors, a_v, a_s))
    return (*(g if need else None for g, need in zip(got, ctx.needs_input_grad, strict=False)),
            None, None, None)


def _membrane_step_backward(ctx: Any, g_v: Any, g_states: Any) -> tuple[Any, ...]:
    return _step_backward(ctx, g_v, g_states, lambda arrays: torch_call(
        "membrane_step_vjp", dict(zip(membrane_step_vjp_op.array_args, arrays, strict=True)),
        ctx.backend, ctx.channels, ctx.dt))


membrane_step_op = Op(
    name="membrane_step",
    family="ion_membrane",
    array_args=("v", "states", "params", "i_inj", "g_syn", "ge_syn"),
    params=("channels", "dt"),
    check=_check_membrane_step,
    torch=TorchBridge(
        schema="(Tensor v, Tensor states, Tensor params, Tensor i_inj, Tensor g_syn, "
        "Tensor ge_syn, str channels, float dt, str? backend=None) -> (Tensor, Tensor)",
        fake=_membrane_step_fake,
        setup_context=_membrane_step_setup,
        backward=_membrane_step_backward,
        bf16_outputs=False,
    ),
)

def _membrane_step_vjp_fake(v: Any, states: Any, params: Any, i_inj: Any, g_syn: Any,
                            ge_syn: Any, a_v: Any, a_states: Any, channels: str, dt: float,
                            backend: str | None = None) -> tuple[Any, ...]:
    _check_membrane("membrane_step_vjp", v, states, params, i_inj, g_syn, ge_syn,
                    channels=channels, dt=dt, values=False, a_v=a_v, a_states=a_states)
    return (v.new_empty(v.shape), states.new_empty(states.shape),
            params.new_empty(params.shape), *(v.new_empty(v.shape) for _ in range(3)))


membrane_step_vjp_op = Op(
    name="membrane_step_vjp",
    family="ion_membrane",
    array_args=("v", "states", "params", "i_inj", "g_syn", "ge_syn", "a_v", "a_states"),
    params=("channels", "dt"),
    check=_check_membrane_step_vjp,
    torch=TorchBridge(
        schema="(Tensor v, Tensor states, Tensor params, Tensor i_inj, Tensor g_syn, "
        "Tensor ge_syn, Tensor a_v, Tensor a_states, str channels, float dt, "
        "str? backend=None) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
        fake=_membrane_step_vjp_fake,
        bf16_outputs=False,
    ),
)


def membrane_step(v: Any, states: Any, params: Any, i_inj: Any, g_syn: Any, ge_syn: Any, *,
                  channels: ChannelSet | Sequence[type[Channel]] | str, dt: float,
                  backend: str | None = None) -> tuple[Any, Any]:
    """One step of ``n`` point neurons with synaptic input: ``(v_new, states_new)``.

    The scheme of :func:`fusekit.ops.network_simulate` for one step: Rush-Larsen gates, the
    channel conductances at the new gates, then backward-Euler voltage with the synaptic
    conductance in the implicit part. For torch tensors it is differentiable with respect to
    every input (the backward is :func:`membrane_step_vjp`), so a network written step by
    step in torch (:func:`fusekit.neuro.network_simulate_torch`) runs each step's channels
    as one compiled call.

    Example:
        >>> import numpy as np, fusekit
        >>> from fusekit.neuro import HH_CHANNELS, ChannelSet
        >>> hh, n = ChannelSet(HH_CHANNELS), 3
        >>> v = np.full(n, -65.0)
        >>> v1, s1 = fusekit.ops.membrane_step(
        ...     v, hh.steady_states(v), hh.default_params(n), np.array([0.0, 5.0, 10.0]),
        ...     np.zeros(n), np.zeros(n), channels=hh, dt=0.025)
        >>> bool(v1[2] > v1[1] > v1[0])
        True

    Args:
        v: Potentials, mV, ``(n,)``, float32 or float64.
        states: Gating states, ``(n_states, n)``, rows as ``channels.state_names``.
        params: ``(n_params, n)``, rows as ``channels.param_names`` (row 0: ``c_m``, > 0).
        i_inj: Injected current density, uA/cm^2, ``(n,)``.
        g_syn: Synaptic conductance, mS/cm^2, ``(n,)`` (summed over the synapse types).
        ge_syn: ``sum_types g E``, uA/cm^2, ``(n,)``.
        channels: The neurons' channels.
        dt: Time step, ms.
        backend: As for every op.

    Returns:
        ``(v_new, states_new)``, the inputs' shapes and dtype.
    """
    cs = channel_set(channels)
    if is_tensor(v):
        return torch_call("membrane_step", {"v": v, "states": states, "params": params,
                                            "i_inj": i_inj, "g_syn": g_syn, "ge_syn": ge_syn},
                          backend, cs.key, check_dt("membrane_step", dt))
    return membrane_step_op.run((v, states, params, i_inj, g_syn, ge_syn),
                                {"channels": cs, "dt": dt}, backend)


def membrane_step_vjp(v: Any, states: Any, params: Any, i_inj: Any, g_syn: Any, ge_syn: Any,
                      a_v: Any, a_states: Any, *,
                      channels: ChannelSet | Sequence[type[Channel]] | str, dt: float,
                      backend: str | None = None) -> tuple[Any, ...]:
    """The vector-Jacobian product of :func:`membrane_step` at its inputs.

    Args:
        v: The step's input potentials, as for :func:`membrane_step`.
        states: Its input states.
        params: Its parameters.
        i_inj: Its injected current.
        g_syn: Its synaptic conductance.
        ge_syn: Its synaptic reversal current.
        a_v: Adjoint (incoming gradient) of ``v_new``, ``(n,)``.
        a_states: Adjoint of ``states_new``, ``(n_states, n)``.
        channels: As for :func:`membrane_step`; channel functions must be traceable
            (no branching on their arguments), as for the compiled adjoints.
        dt: ms.
        backend: As for every op.

    Returns:
        ``(a_v, a_states, a_params, a_i_inj, a_g_syn, a_ge_syn)``: the adjoints of the
        inputs (``a_params`` is zero in the rows the step does not read).
    """
    cs = channel_set(channels)
    arrays = (v, states, params, i_inj, g_syn, ge_syn, a_v, a_states)
    if is_tensor(v):
        return torch_call("membrane_step_vjp",
                          dict(zip(membrane_step_vjp_op.array_args, arrays, strict=True)),
                          backend, cs.key, check_dt("membrane_step_vjp", dt))
    return membrane_step_vjp_op.run(arrays, {"channels": cs, "dt": dt}, backend)


@functools.cache
def membrane_step_function() -> Any:
    """:func:`membrane_step` on tensors as a plain ``torch.autograd.Function``'s ``apply``.

    The same registry call (check, kernel selection) and the same backward
    (:func:`membrane_step_vjp`) as ``torch.ops.fusekit.membrane_step``, without torch.library's
    dispatch and autograd wrapper: 0.2-0.3 ms less per step and backward on our 2-core
    machines, which a network pays every step. It cannot be traced by ``torch.compile``
    (use the torch op there). Call it as ``apply(v, states, params, i_inj, g_syn, ge_syn,
    channels_key, dt, backend)``.
    """
    import torch
    from torch.autograd.function import once_differentiable

    class MembraneStep(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, v: Any, states: Any, params: Any, i_inj: Any, g_syn: Any,
                    ge_syn: Any, channels: str, dt: float, backend: str | None
                    ) -> tuple[Any, Any]:
            tensors = (v, states, params, i_inj, g_syn, ge_syn)
            ctx.channels, ctx.dt, ctx.backend = channels, dt, backend
            ctx.save_for_backward(*tensors)
            return membrane_step_op.run(tensors, {"channels": channels, "dt": dt}, backend)

        @staticmethod
        @once_differentiable  # a second derivative raises, never a silent zero
        def backward(ctx: Any, g_v: Any, g_states: Any) -> tuple[Any, ...]:
            return _step_backward(ctx, g_v, g_states, lambda arrays: membrane_step_vjp_op.run(
                arrays, {"channels": ctx.channels, "dt": ctx.dt}, ctx.backend))

    return MembraneStep.apply


# --------------------------------------------------------------------------- float64 reference


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    """``np.stack``, and a ``(0, n)`` array for channels without gates (a leak alone)."""
    return np.stack(rows) if rows else np.zeros((0, 0))


def membrane_step_reference(v: np.ndarray, states: np.ndarray, params: np.ndarray,
                            i_inj: np.ndarray, g_syn: np.ndarray, ge_syn: np.ndarray, *,
                            channels: Any, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Float64 NumPy oracle of :func:`membrane_step` (the channels' own functions)."""
    v_new, S_new, _ = _reference_step(channel_set(channels), dt, v, states, params, i_inj,
                                      g_syn, ge_syn)
    return v_new.astype(v.dtype), S_new.reshape(states.shape).astype(v.dtype)


def _reference_step(cs: ChannelSet, dt: float, *arrays: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The step in float64: ``(v_new, S_new, D)``, ``D`` the voltage row's diagonal."""
    v, S, P, i_inj, g, ge = (np.asarray(a, dtype=np.float64) for a in arrays)
    S_new, g_ch, ge_ch = gates_and_conductances(cs, v, S, P, dt, exp=np.exp, stack=_stack)
    c_dt = P[0] / dt
    d = c_dt + g_ch + g
    return (c_dt * v + ge_ch + ge + i_inj) / d, np.asarray(S_new, dtype=np.float64), d


def membrane_step_vjp_reference(v: np.ndarray, states: np.ndarray, params: np.ndarray,
                                i_inj: np.ndarray, g_syn: np.ndarray, ge_syn: np.ndarray,
                                a_v: np.ndarray, a_states: np.ndarray, *, channels: Any,
                                dt: float) -> tuple[np.ndarray, ...]:
    """Float64 NumPy :func:`membrane_step_vjp`: the generated local adjoint of a compartment.

    The local adjoint is the symbolic derivative of the traced step (the compiled adjoints'
    source, evaluated by NumPy); the tests hold it against torch autograd of the same step.
    """
    from .ion_backprop import _adjoint_function

    cs = channel_set(channels)
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    f64 = [np.asarray(a, dtype=np.float64)
           for a in (v, states, params, i_inj, g_syn, ge_syn, a_v, a_states)]
    v_, S, P, i_, g, ge, av_n, as_n = f64
    v_new, _, d = _reference_step(cs, dt, v_, S, P, i_, g, ge)
    a_r = av_n / d
    a_d = -a_r * v_new
    adjoint, rows = _adjoint_function(cs, cable=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # VTRAP's removable singularity
        got = adjoint(v_, *S, *P, i_, dt, a_d, a_r, *as_n)
    a_P = np.zeros((n_params, v.shape[0]))
    for k, row in enumerate(rows):
        a_P[row] = got[1 + n_states + k]
    dtype = v.dtype
    ones = np.ones_like(v_)
    return (np.asarray(got[0] * ones).astype(dtype),
            _stack([got[1 + k] * ones for k in range(n_states)]).reshape(
                states.shape).astype(dtype),
            a_P.astype(dtype), np.asarray(got[-1] * ones).astype(dtype),
            a_d.astype(dtype), a_r.astype(dtype))


# ------------------------------------------------------------------ synaptic delivery


def _check_synapse_deliver(spikes: Any, indptr: Any, weights: Any, target: Any, *extra: Any,
                           n_out: int) -> str:
    op = "synapse_deliver_vjp" if extra else "synapse_deliver"
    spikes, indptr, weights, target, *extra = map(_cpu_view, (spikes, indptr, weights,
                                                              target, *extra))
    n = spikes.shape[0] if spikes.ndim == 1 else -1
    nnz = weights.shape[0] if weights.ndim == 1 else -1
    if spikes.ndim != 1 or weights.ndim != 1 or tuple(target.shape) != (nnz,) \
            or tuple(indptr.shape) != (n + 1,):
        raise InputError(f"{op}: spikes must be (n,), indptr (n + 1,) and weights and target "
                         f"one (nnz,) shape, got {tuple(spikes.shape)}, {tuple(indptr.shape)}, "
                         f"{tuple(weights.shape)} and {tuple(target.shape)}")
    if not (isinstance(n_out, int | np.integer) and n_out >= 0):
        raise InputError(f"{op}: n_out must be a non-negative integer, got {n_out!r}")
    if extra and tuple(extra[0].shape) != (n_out,):
        raise InputError(f"{op}: a_out must have shape ({n_out},), got {tuple(extra[0].shape)}")
    dtype = array_dtype(spikes)
    if dtype not in _FLOATS:
        raise InputError(f"{op}: spikes and weights must be float32 or float64, got {dtype}")
    for name, a in (("weights", weights), *(("a_out", e) for e in extra)):
        if array_dtype(a) != dtype:
            raise InputError(f"{op}: {name} must be {dtype} like spikes, got {array_dtype(a)}")
    for name, a in (("indptr", indptr), ("target", target)):
        if array_dtype(a) not in ("int32", "int64"):
            raise InputError(f"{op}: {name} must be an integer array, got {array_dtype(a)}")
    for name, a in (("spikes", spikes), ("weights", weights), *(("a_out", e) for e in extra)):
        if not (isinstance(a, np.ndarray) and math.isfinite(a.sum())):
            require_finite(op, name, a)
    # The CSR structure and the targets' range are checked by the kernels as they read them
    # (every step of a network calls this op; a separate pass over nnz indices would cost
    # as much as the delivery): a bad index raises InputError and nothing is read out of
    # bounds.
    return dtype


def csr_index_error(op: str, code: int, n: int, nnz: int, n_out: int) -> InputError:
    """The error for a kernel's report on a malformed CSR (``code`` 1: indptr, 2: target)."""
    if code == 1:
        return InputError(f"{op}: indptr must start at 0, never decrease and end at nnz = {nnz} "
                          f"(CSR rows of the {n} presynaptic neurons)")
    return InputError(f"{op}: target (each synapse's postsynaptic index) must lie in "
                      f"[0, {n_out})")


synapse_deliver_op = Op(
    name="synapse_deliver",
    family="ion_membrane",
    array_args=("spikes", "indptr", "weights", "target"),
    params=("n_out",),
    check=_check_synapse_deliver,
)

synapse_deliver_vjp_op = Op(
    name="synapse_deliver_vjp",
    family="ion_membrane",
    array_args=("spikes", "indptr", "weights", "target", "a_out"),
    params=("n_out",),
    check=_check_synapse_deliver,
)


def synapse_deliver(spikes: Any, indptr: Any, weights: Any, target: Any, *, n_out: int,
                    backend: str | None = None) -> Any:
    """Conductance jumps arriving from this step's spikes: ``out[target[s]] += w[s] spikes[i]``.

    For every synapse ``s`` of presynaptic neuron ``i`` (CSR row ``indptr[i]:indptr[i + 1]``).
    Only rows with a nonzero spike are read, so a step with few spikes costs little.

    Example:
        >>> import numpy as np, fusekit
        >>> out = fusekit.ops.synapse_deliver(np.array([1.0, 0.0]), np.array([0, 2, 3]),
        ...                                   np.array([0.5, 0.25, 1.0]), np.array([1, 2, 0]),
        ...                                   n_out=3)
        >>> out.tolist()
        [0.0, 0.5, 0.25]

    Args:
        spikes: ``(n,)`` float32/float64, the presynaptic neurons' spikes (0 or 1, or any
            weight).
        indptr: ``(n + 1,)`` integers, CSR row pointers.
        weights: ``(nnz,)`` conductance jumps, ``spikes``' dtype.
        target: ``(nnz,)`` integers in ``[0, n_out)``: where each synapse delivers.
        n_out: Length of the result.
        backend: As for every op.

    Returns:
        ``(n_out,)`` in ``spikes``' dtype.
    """
    check_counts("synapse_deliver", n_out=n_out)
    return synapse_deliver_op.run((spikes, indptr, weights, target), {"n_out": int(n_out)},
                                  backend)


def synapse_deliver_vjp(spikes: Any, indptr: Any, weights: Any, target: Any, a_out: Any, *,
                        n_out: int, backend: str | None = None) -> tuple[Any, Any]:
    """The vector-Jacobian product of :func:`synapse_deliver`: ``(a_spikes, a_weights)``.

    ``a_spikes[i] = sum_s w[s] a_out[target[s]]`` over row ``i`` (every row: a surrogate
    spike gradient reaches neurons that did not fire) and ``a_weights[s] =
    a_out[target[s]] spikes[i]``.

    Args:
        spikes: As for :func:`synapse_deliver`.
        indptr: As there.
        weights: As there.
        target: As there.
        a_out: ``(n_out,)``, the adjoint of the result.
        n_out: As there.
        backend: As for every op.

    Returns:
        ``(a_spikes (n,), a_weights (nnz,))``.
    """
    check_counts("synapse_deliver_vjp", n_out=n_out)
    return synapse_deliver_vjp_op.run((spikes, indptr, weights, target, a_out),
                                      {"n_out": int(n_out)}, backend)


@functools.cache
def synapse_deliver_function() -> Any:
    """:func:`synapse_deliver` on tensors as a ``torch.autograd.Function``'s ``apply``.

    Differentiable with respect to ``spikes`` and ``weights`` through
    :func:`synapse_deliver_vjp`. Call it as ``apply(spikes, indptr, weights, target, n_out,
    backend)``.
    """
    import torch
    from torch.autograd.function import once_differentiable

    class SynapseDeliver(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, spikes: Any, indptr: Any, weights: Any, target: Any, n_out: int,
                    backend: str | None) -> Any:
            ctx.n_out, ctx.backend = n_out, backend
            ctx.save_for_backward(spikes, indptr, weights, target)
            return synapse_deliver_op.run((spikes, indptr, weights, target), {"n_out": n_out},
                                          backend)

        @staticmethod
        @once_differentiable  # a second derivative raises, never a silent zero
        def backward(ctx: Any, a_out: Any) -> tuple[Any, ...]:
            spikes, indptr, weights, target = ctx.saved_tensors
            a_spikes, a_weights = synapse_deliver_vjp_op.run(
                (spikes, indptr, weights, target, a_out.contiguous()), {"n_out": ctx.n_out},
                ctx.backend)
            needs = ctx.needs_input_grad
            return (a_spikes if needs[0] else None, None, a_weights if needs[2] else None,
                    None, None, None)

    return SynapseDeliver.apply


def _csr_rows(indptr: np.ndarray, nnz: int, op: str, n_out: int, target: np.ndarray
              ) -> np.ndarray:
    n = indptr.shape[0] - 1
    if int(indptr[0]) != 0 or int(indptr[-1]) != nnz or bool((np.diff(indptr) < 0).any()):
        raise csr_index_error(op, 1, n, nnz, n_out)
    if nnz and (int(target.min()) < 0 or int(target.max()) >= n_out):
        raise csr_index_error(op, 2, n, nnz, n_out)
    return np.repeat(np.arange(n), np.diff(indptr))


def synapse_deliver_reference(spikes: np.ndarray, indptr: np.ndarray, weights: np.ndarray,
                              target: np.ndarray, *, n_out: int) -> np.ndarray:
    """Float64 NumPy :func:`synapse_deliver` (``np.add.at``)."""
    pre = _csr_rows(indptr, weights.shape[0], "synapse_deliver", n_out, target)
    out = np.zeros(n_out)
    np.add.at(out, target, weights.astype(np.float64) * spikes.astype(np.float64)[pre])
    return out.astype(spikes.dtype)


def synapse_deliver_vjp_reference(spikes: np.ndarray, indptr: np.ndarray, weights: np.ndarray,
                                  target: np.ndarray, a_out: np.ndarray, *, n_out: int
                                  ) -> tuple[np.ndarray, np.ndarray]:
    """Float64 NumPy :func:`synapse_deliver_vjp`."""
    pre = _csr_rows(indptr, weights.shape[0], "synapse_deliver_vjp", n_out, target)
    a_t = a_out.astype(np.float64)[target]
    a_spikes = np.zeros(spikes.shape[0])
    np.add.at(a_spikes, pre, weights.astype(np.float64) * a_t)
    return (a_spikes.astype(spikes.dtype),
            (a_t * spikes.astype(np.float64)[pre]).astype(spikes.dtype))
