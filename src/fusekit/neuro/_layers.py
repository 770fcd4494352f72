"""Spiking layers for torch with surrogate spike gradients: Hodgkin-Huxley and LIF neurons.

A layer takes input per time step, ``(T, batch, n_in)``, turns it into membrane currents
through a learnable dense weight (uA/cm^2 per unit of input) and bias (uA/cm^2), runs one
neuron per output unit and sample, and returns the spikes ``(T, batch, n_out)`` (and, on
request, the membrane potentials in mV). Time steps are ``dt`` ms.

Spikes are exact threshold crossings in the forward pass (0 or 1); the backward pass replaces
the Heaviside step's derivative (zero almost everywhere) by a surrogate, the SuperSpike /
fast-sigmoid derivative of Zenke & Ganguli (2018)::

    d spike / d v  =  1 / (1 + slope * |v - threshold|)^2        (slope in 1/mV)

:class:`HHLayer` runs any :class:`~fusekit.neuro.ChannelSet` (default: the squid HH channels)
with the torch step that :func:`~fusekit.neuro.simulate_torch` and the gradient of
:func:`fusekit.ops.ion_simulate` use (``fusekit.ops.ion_grad.torch_step``), so its voltages
are those of :func:`fusekit.ops.ion_simulate` for the same currents. :class:`LIFLayer` is the leaky
integrate-and-fire neuron with the same units. :class:`LeakyReadout` turns spikes into class
logits through a non-spiking leaky integrator.

Zenke, F. & Ganguli, S. (2018). SuperSpike: Supervised learning in multilayer spiking neural
networks. Neural Computation 30(6), 1514-1541. doi:10.1162/neco_a_01086
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .._errors import InputError
from ..ops._common import is_real, is_whole, require_finite
from ..ops.ion import _check_ion_simulate
from ..ops.ion_channel import Channel, ChannelSet, channel_set
from ..ops.ion_grad import torch_step
from .hh import HH_CHANNELS

__all__ = ["SuperSpike", "HHLayer", "LIFLayer", "LeakyReadout", "SpikingClassifier"]


class _HeavisideFastSigmoid(torch.autograd.Function):
    """Heaviside step forward, fast-sigmoid derivative backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad / (1.0 + ctx.slope * x.abs()) ** 2, None


class SuperSpike:
    """The spike nonlinearity: Heaviside forward, SuperSpike surrogate derivative backward.

    ``spike(x) = 1 if x >= 0 else 0`` for ``x = v - threshold`` in mV; its gradient is taken as
    ``1 / (1 + slope |x|)^2``, the derivative of the fast sigmoid ``x / (1 + slope |x|)``
    (:meth:`smooth`). Larger ``slope`` makes the surrogate narrower (``1 / slope`` mV is the
    distance where it has fallen to a quarter).

    Args:
        slope: Steepness, 1/mV, positive.

    Example:
        >>> import torch
        >>> x = torch.tensor([-2.0, 0.5], requires_grad=True)
        >>> s = SuperSpike(slope=1.0)(x)
        >>> s.tolist()
        [0.0, 1.0]
        >>> s.sum().backward(); [round(g, 4) for g in x.grad.tolist()]  # 1/(1+2)^2, 1/1.5^2
        [0.1111, 0.4444]
    """

    def __init__(self, slope: float = 1.0) -> None:
        if not (math.isfinite(slope) and slope > 0):
            raise InputError(f"SuperSpike: slope must be a positive number (1/mV), got {slope}")
        self.slope = float(slope)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _HeavisideFastSigmoid.apply(x, self.slope)

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        """The fast sigmoid ``x / (1 + slope |x|)``, whose derivative is the surrogate."""
        return x / (1.0 + self.slope * x.abs())

    def __repr__(self) -> str:
        return f"SuperSpike(slope={self.slope})"


SpikeFunction = Callable[[torch.Tensor], torch.Tensor]


def _check_input(layer: str, x: Any, n_in: int, weight: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{layer}: input must be a torch tensor (T, batch, {n_in}), "
                         f"got {type(x).__name__}")
    if x.ndim != 3 or x.shape[2] != n_in:
        raise InputError(f"{layer}: input must have shape (T, batch, n_in) = (T, batch, {n_in}), "
                         f"got {tuple(x.shape)}; add a time axis with x.expand(T, -1, -1)")
    if x.dtype != weight.dtype:
        raise InputError(f"{layer}: input dtype {x.dtype} differs from the layer's "
                         f"{weight.dtype}; cast the input (x.to({weight.dtype})) or the layer "
                         f"(layer.to({weight.dtype}))")
    if x.shape[0] < 1:
        raise InputError(f"{layer}: input has no time steps (T = 0); give at least one")
    require_finite(layer, "input", x)  # one min/max pass; skipped for fake tensors


def _positive_int(layer: str, name: str, value: Any) -> int:
    if not is_whole(value) or value < 1:
        raise InputError(f"{layer}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _finite(layer: str, name: str, value: Any, unit: str, positive: bool = False) -> float:
    ok = is_real(value) and math.isfinite(value) and (value > 0 or not positive)
    if not ok:
        raise InputError(f"{layer}: {name} must be a {'positive ' * positive}finite number "
                         f"({unit}), got {value!r}")
    return float(value)


class _DenseCurrent(torch.nn.Module):
    """Input to membrane current: ``current_scale * (x @ weight + bias)``, uA/cm^2.

    ``weight`` and ``bias`` are dimensionless (in units of ``current_scale``), so that one
    optimiser learning rate means the same relative change for neurons whose currents live on
    different scales (HH needs several uA/cm^2 to fire, the default LIF neuron 1.5). Initial
    ``weight ~ N(0, 1 / n_in)``: an input of unit norm brings currents of standard deviation
    ``current_scale``; initial ``bias = current_mean / current_scale``.
    """

    def __init__(self, n_in: int, n_out: int, current_scale: float, current_mean: float,
                 generator: torch.Generator | None, dtype: torch.dtype) -> None:
        super().__init__()
        layer = type(self).__name__
        n_in, n_out = _positive_int(layer, "n_in", n_in), _positive_int(layer, "n_out", n_out)
        current_scale = _finite(layer, "current_scale", current_scale, "uA/cm^2", positive=True)
        current_mean = _finite(layer, "current_mean", current_mean, "uA/cm^2")
        self.n_in, self.n_out, self.current_scale = n_in, n_out, current_scale
        w = torch.randn(n_in, n_out, generator=generator, dtype=dtype) / n_in ** 0.5
        self.weight = torch.nn.Parameter(w)
        self.bias = torch.nn.Parameter(
            torch.full((n_out,), current_mean / current_scale, dtype=dtype))

    def currents(self, layer: str, x: torch.Tensor) -> torch.Tensor:
        """Currents ``(T, batch, n_out)``, uA/cm^2, after checking ``x``."""
        _check_input(layer, x, self.n_in, self.weight)
        return (x @ self.weight + self.bias) * self.current_scale


class HHLayer(_DenseCurrent):
    """A layer of single-compartment Hodgkin-Huxley-type neurons with surrogate spike gradients.

    Every output unit of every sample is one neuron with its own voltage and gates. Per time
    step ``t``: the current ``i_t = x_t @ weight + bias`` (uA/cm^2), one step of the channel
    scheme of :func:`fusekit.ops.ion_simulate` (Rush-Larsen gates, backward-Euler voltage;
    ``fusekit.ops.ion_grad.torch_step``, as in :func:`~fusekit.neuro.simulate_torch`), and the spike
    ``s_t = spike(v_t - spike_threshold) * [v_{t-1} < spike_threshold]``: an upward crossing
    (forward exact; the crossing mask is not differentiated, the surrogate flows through
    ``v_t`` into the whole HH dynamics by backprop through time).

    Args:
        n_in: Inputs per step.
        n_out: Neurons.
        channels: The cell's channels (default: squid HH, :data:`~fusekit.neuro.HH_CHANNELS`).
        dt: Time step, ms, at most ``MAX_DT_OVER_TAU`` (2) times the channels' fastest gate
            time constant (squid HH: 0.216 ms), the limit of :func:`fusekit.ops.ion_simulate`:
            the scheme stays stable beyond it, but HH neurons lose spikes (0.35 ms silences
            some). Longer steps raise :class:`~fusekit.InputError`.
        v_rest: Initial voltage, mV; gates start at their steady state there.
        spike_threshold: mV.
        spike: The spike function of ``v - spike_threshold`` (default ``SuperSpike(0.2)``).
        current_scale: Currents are ``current_scale * (x @ weight + bias)``, uA/cm^2; initially
            an input of unit norm brings currents of this standard deviation.
        current_mean: Initial bias current, uA/cm^2.
        params: Channel parameter overrides (``g_na=...``), the same for every neuron.
        generator: Random generator for the initial weights.
        dtype: Parameter dtype.
        engine: ``"kernel"``: the whole window in one call of :func:`fusekit.ops.ion_simulate`
            (the CPU kernel, every step's ``v`` recorded), whose checkpointed compiled
            adjoint gives the gradient of the recorded voltages, hence of the currents, the
            spikes' surrogate applied to them in torch (measured: 64 samples x 48 neurons x
            75 steps, forward and backward, 12-14 ms against 166-205 ms step by step);
            ``"torch"``: the step in torch tensor operations, one Python iteration per step
            (any device, higher-order gradients); ``"auto"`` (default): the kernel for CPU
            tensors, else torch. Both give the same spikes, voltages (to rounding: the kernel's
            ``exp`` is its own) and gradients.

    Example:
        >>> import torch
        >>> layer = HHLayer(64, 100, dt=0.2)
        >>> spikes = layer(torch.rand(100, 8, 64))  # 20 ms, 8 samples
        >>> spikes.shape
        torch.Size([100, 8, 100])
    """

    def __init__(self, n_in: int, n_out: int, *,
                 channels: ChannelSet | Sequence[type[Channel]] = HH_CHANNELS,
                 dt: float = 0.2, v_rest: float = -65.0, spike_threshold: float = 0.0,
                 spike: SpikeFunction | None = None, current_scale: float = 20.0,
                 current_mean: float = 5.0, params: dict[str, float] | None = None,
                 generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, engine: str = "auto") -> None:
        super().__init__(n_in, n_out, current_scale, current_mean, generator, dtype)
        dt = _finite("HHLayer", "dt", dt, "ms", positive=True)
        v_rest = _finite("HHLayer", "v_rest", v_rest, "mV")
        spike_threshold = _finite("HHLayer", "spike_threshold", spike_threshold, "mV")
        if engine not in ("auto", "kernel", "torch"):
            raise InputError(f"HHLayer: engine must be 'auto', 'kernel' or 'torch', got "
                             f"{engine!r}")
        self.engine = engine
        self.channels = channel_set(channels)
        self.dt = float(dt)
        self.spike_threshold = float(spike_threshold)
        self.spike = spike if spike is not None else SuperSpike(0.2)
        v0 = np.full(1, float(v_rest))
        p = self.channels.default_params(1, np.float64, **(params or {}))
        # the cell as the ops check it: finite parameters, c_m > 0, no negative conductance,
        # and a dt that resolves the fastest gate
        try:
            _check_ion_simulate(v0, self.channels.steady_states(v0), p, np.zeros(1),
                                channels=self.channels, dt=self.dt, n_steps=1,
                                spike_threshold=self.spike_threshold)
        except InputError as exc:
            raise InputError(f"HHLayer: {str(exc).removeprefix('ion_simulate: ')}") from None
        self.register_buffer("cell_params", torch.tensor(p[:, 0], dtype=dtype))
        self.register_buffer("v_rest", torch.tensor(float(v_rest), dtype=dtype))
        self.register_buffer("states_rest",
                             torch.tensor(self.channels.steady_states(v0)[:, 0], dtype=dtype))

    def forward(self, x: torch.Tensor, *, return_v: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Spikes ``(T, batch, n_out)`` (and voltages in mV, same shape) for input ``x``.

        Args:
            x: ``(T, batch, n_in)``, the layer's dtype.
            return_v: Also return the membrane potential after every step.
        """
        currents = self.currents("HHLayer", x)
        T, batch = x.shape[0], x.shape[1]
        n = batch * self.n_out
        currents = currents.reshape(T, n)
        v = self.v_rest.expand(n)
        S = self.states_rest[:, None].expand(-1, n)
        P = self.cell_params[:, None].expand(-1, n)
        engine = self.engine
        if engine == "auto":
            engine = "kernel" if x.device.type == "cpu" else "torch"
        if engine == "kernel" and T:
            from ..ops.ion import ion_simulate

            v0 = v.contiguous()
            trace = ion_simulate(v0, S.contiguous(), P.contiguous(), currents.contiguous(),
                                 channels=self.channels, dt=self.dt, n_steps=T,
                                 record_every=1).v_record
            before = torch.cat([v0[None], trace[:-1]])
            below = (before < self.spike_threshold).to(x.dtype)
            out = (self.spike(trace - self.spike_threshold) * below).reshape(T, batch,
                                                                             self.n_out)
            if return_v:
                return out, trace.reshape(T, batch, self.n_out)
            return out
        spikes, voltages = [], []
        for t in range(T):
            v_new, S = torch_step(self.channels, v, S, P, currents[t], self.dt)
            below = (v < self.spike_threshold).to(x.dtype)
            spikes.append(self.spike(v_new - self.spike_threshold) * below)
            v = v_new
            voltages.append(v)
        out = torch.stack(spikes).reshape(T, batch, self.n_out)
        if return_v:
            return out, torch.stack(voltages).reshape(T, batch, self.n_out)
        return out

    def extra_repr(self) -> str:
        names = "+".join(ch.__name__ for ch in self.channels.channels)
        return (f"n_in={self.n_in}, n_out={self.n_out}, channels={names}, dt={self.dt}, "
                f"spike_threshold={self.spike_threshold}, spike={self.spike!r}, "
                f"engine={self.engine!r}")


class LIFLayer(_DenseCurrent):
    """A layer of leaky integrate-and-fire neurons with surrogate spike gradients.

    Per time step, with ``i_t = x_t @ weight + bias`` (uA/cm^2) held constant over the step
    (exact integration), ``beta = exp(-dt g_leak / c_m)``::

        u_t = e_leak + (v_{t-1} - e_leak) beta + (1 - beta) i_t / g_leak
        s_t = spike(u_t - v_threshold)
        v_t = u_t - r_t (u_t - v_reset),   r_t = s_t (detached when detach_reset)

    Args:
        n_in: Inputs per step.
        n_out: Neurons.
        dt: Time step, ms.
        c_m: Membrane capacitance, uF/cm^2.
        g_leak: Leak conductance, mS/cm^2 (``tau_m = c_m / g_leak`` ms; default 10 ms).
        e_leak: Resting potential, mV (also the initial voltage).
        v_threshold: mV.
        v_reset: mV.
        detach_reset: Let no gradient flow through the reset (as Zenke & Vogels 2021
            recommend); ``False`` differentiates it with the surrogate.
        spike: The spike function of ``u - v_threshold`` (default ``SuperSpike(1.0)``).
        current_scale: Current per unit of weight (see :class:`HHLayer`), uA/cm^2.
        current_mean: Initial bias current, uA/cm^2.
        generator: Random generator for the initial weights.
        dtype: Parameter dtype.

    Example:
        >>> import torch
        >>> spikes, v = LIFLayer(64, 100)(torch.rand(100, 8, 64), return_v=True)
        >>> spikes.shape, v.shape
        (torch.Size([100, 8, 100]), torch.Size([100, 8, 100]))
    """

    def __init__(self, n_in: int, n_out: int, *, dt: float = 0.25, c_m: float = 1.0,
                 g_leak: float = 0.1, e_leak: float = -65.0, v_threshold: float = -50.0,
                 v_reset: float = -65.0, detach_reset: bool = True,
                 spike: SpikeFunction | None = None, current_scale: float = 4.0,
                 current_mean: float = 1.5, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__(n_in, n_out, current_scale, current_mean, generator, dtype)
        dt = _finite("LIFLayer", "dt", dt, "ms", positive=True)
        c_m = _finite("LIFLayer", "c_m", c_m, "uF/cm^2", positive=True)
        g_leak = _finite("LIFLayer", "g_leak", g_leak, "mS/cm^2", positive=True)
        for name, value in (("e_leak", e_leak), ("v_threshold", v_threshold),
                            ("v_reset", v_reset)):
            _finite("LIFLayer", name, value, "mV")
        if not v_reset < v_threshold:
            raise InputError(f"LIFLayer: v_reset ({v_reset} mV) must lie below v_threshold "
                             f"({v_threshold} mV)")
        self.dt = float(dt)
        self.c_m, self.g_leak, self.e_leak = float(c_m), float(g_leak), float(e_leak)
        self.v_threshold, self.v_reset = float(v_threshold), float(v_reset)
        self.detach_reset = detach_reset
        self.beta = math.exp(-self.dt * self.g_leak / self.c_m)
        self.spike = spike if spike is not None else SuperSpike(1.0)

    def forward(self, x: torch.Tensor, *, return_v: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Spikes ``(T, batch, n_out)`` (and voltages after reset, mV) for input ``x``."""
        drive = self.currents("LIFLayer", x) * ((1.0 - self.beta) / self.g_leak)
        v = torch.full(drive.shape[1:], self.e_leak, dtype=x.dtype, device=x.device)
        spikes, voltages = [], []
        for t in range(x.shape[0]):
            u = self.e_leak + (v - self.e_leak) * self.beta + drive[t]
            s = self.spike(u - self.v_threshold)
            r = s.detach() if self.detach_reset else s
            v = u - r * (u - self.v_reset)
            spikes.append(s)
            voltages.append(v)
        if return_v:
            return torch.stack(spikes), torch.stack(voltages)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return (f"n_in={self.n_in}, n_out={self.n_out}, dt={self.dt}, "
                f"tau_m={self.c_m / self.g_leak} ms, v_threshold={self.v_threshold}, "
                f"spike={self.spike!r}")


class LeakyReadout(torch.nn.Module):
    """Class logits from spikes: a non-spiking leaky integrator, summed over time.

    ``u_t = beta u_{t-1} + (1 - beta) (s_t @ weight)`` with ``beta = exp(-dt / tau)`` and
    ``u_0 = 0``; the logits are ``sum_t u_t + bias`` (dimensionless). A spike adds
    ``weight`` to the sum once it has decayed fully, so the logits are spike counts times
    ``weight`` with spikes near the end of the window discounted (by ``beta^(T - t)``).

    Args:
        n_in: Spiking inputs.
        n_out: Classes.
        dt: Time step, ms.
        tau: Time constant, ms.
        generator: Random generator for the initial weights.
        dtype: Parameter dtype.
    """

    def __init__(self, n_in: int, n_out: int, *, dt: float = 0.25, tau: float = 5.0,
                 generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        dt = _finite("LeakyReadout", "dt", dt, "ms", positive=True)
        tau = _finite("LeakyReadout", "tau", tau, "ms", positive=True)
        n_in = _positive_int("LeakyReadout", "n_in", n_in)
        self.n_in, self.n_out = n_in, _positive_int("LeakyReadout", "n_out", n_out)
        self.beta = math.exp(-dt / tau)
        bound = 1.0 / n_in ** 0.5
        w = (torch.rand(n_in, n_out, generator=generator, dtype=dtype) * 2 - 1) * bound
        self.weight = torch.nn.Parameter(w)
        self.bias = torch.nn.Parameter(torch.zeros(n_out, dtype=dtype))

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_out)`` for spikes ``(T, batch, n_in)``."""
        _check_input("LeakyReadout", spikes, self.n_in, self.weight)
        drive = (spikes @ self.weight) * (1.0 - self.beta)
        u = torch.zeros_like(drive[0])
        total = torch.zeros_like(u)
        for t in range(drive.shape[0]):
            u = self.beta * u + drive[t]
            total = total + u
        return total + self.bias


class SpikingClassifier(torch.nn.Module):
    """A static input held as a constant current for ``n_steps``, a spiking layer, a readout.

    Args:
        hidden: A spiking layer (:class:`HHLayer` or :class:`LIFLayer`).
        readout: Spikes to logits (:class:`LeakyReadout`).
        n_steps: Time steps each input is presented for (``n_steps * hidden.dt`` ms).

    Example:
        >>> import torch
        >>> net = SpikingClassifier(HHLayer(64, 32), LeakyReadout(32, 10, dt=0.2), n_steps=40)
        >>> net(torch.rand(5, 64)).shape
        torch.Size([5, 10])
    """

    def __init__(self, hidden: torch.nn.Module, readout: torch.nn.Module, n_steps: int) -> None:
        super().__init__()
        n_steps = _positive_int("SpikingClassifier", "n_steps", n_steps)
        self.hidden, self.readout, self.n_steps = hidden, readout, n_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, n_classes)``.

        ``x``: inputs ``(batch, n_in)``, each held for ``n_steps``, or a time-varying input
        ``(n_steps, batch, n_in)``.
        """
        if not isinstance(x, torch.Tensor) or not (
                x.ndim == 2 or (x.ndim == 3 and x.shape[0] == self.n_steps)):
            raise InputError(f"SpikingClassifier: input must be a tensor (batch, n_in) or "
                             f"({self.n_steps}, batch, n_in), got "
                             f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}")
        seq = x if x.ndim == 3 else x.expand(self.n_steps, -1, -1)
        return self.readout(self.hidden(seq))
