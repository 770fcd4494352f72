"""Ion channels declared in Python, and the code every backend generates from them.

A channel is a small class: its gating ``states`` with initial values, its ``params`` with
default values, for every state either ``alpha_<x>``/``beta_<x>`` (rates, 1/ms) or
``inf_<x>``/``tau_<x>`` (steady state, time constant in ms), a ``conductance`` (mS/cm^2) and a
``reversal`` potential (mV; the name of a parameter or a number). The current it carries is
``conductance * (v - reversal)`` in uA/cm^2, positive outward.

The functions are plain Python of scalars or arrays. Their arguments are looked up by name:
``v`` is the membrane potential (mV), any other name is a state of the channel or a parameter.
Write math with :func:`exp`, :func:`vtrap`, :func:`log` and :func:`sqrt` from this module:
the reference backend runs them on NumPy arrays, the compiled backends swap in their own
(a vectorisable polynomial ``exp`` on the CPU, the device's ``exp`` on CUDA) and compile the
functions into one fused kernel; float literals become the kernel's dtype.

Example:
    >>> from fusekit.ops.ion_channel import Channel, exp
    >>> class Leak(Channel):
    ...     '''Passive leak: ``g_leak`` in mS/cm^2, ``e_leak`` in mV.'''
    ...     params = {"g_leak": 0.3, "e_leak": -54.3}
    ...     states = {}
    ...     reversal = "e_leak"
    ...     def conductance(g_leak):
    ...         return g_leak
    >>> ChannelSet([Leak]).param_names
    ('c_m', 'g_leak', 'e_leak')

Parameter names are shared across the channels of a cell: two channels that name the same
parameter (``e_na``, or Pospischil's ``v_t`` in Na and K) read one value, and must declare
the same default. State names are per channel (``"HHSodium.m"``).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._errors import InputError

__all__ = ["Channel", "ChannelSet", "exp", "log", "sqrt", "vtrap", "channel_set"]

#: Default membrane capacitance, uF/cm^2 (parameter ``c_m`` of every cell).
DEFAULT_C_M = 1.0
#: Potentials (mV) over which :meth:`ChannelSet.fastest_gate` looks for the fastest gate: the
#: range a neuron's membrane spends its time in, from below rest to the peak of a spike.
GATE_WINDOW_MV = np.linspace(-80.0, 40.0, 25)
#: ``|x / y|`` below which :func:`vtrap` uses its series instead of ``x / (exp(x / y) - 1)``.
VTRAP_SERIES_BELOW = 0.1


def vtrap_series(u: Any, y: Any) -> Any:
    """``vtrap(x, y) = y B(u)`` near ``u = x / y = 0``.

    ``y (1 - u/2 + u^2/12 - u^4/720 + u^6/30240)``.
    """
    u2 = u * u
    return y * (1.0 - 0.5 * u + u2 * (1.0 / 12.0 - u2 * (1.0 / 720.0 - u2 / 30240.0)))


def vtrap_dx_series(u: Any) -> Any:
    """``B'(u)`` near 0: ``-1/2 + u/6 - u^3/180 + u^5/5040`` (``d vtrap / dx``)."""
    u2 = u * u
    return -0.5 + u * (1.0 / 6.0 - u2 * (1.0 / 180.0 - u2 / 5040.0))


# ------------------------------------------------------------------------- channel math (NumPy)


def _torch_module(x: Any) -> Any:
    """``torch`` when ``x`` is a tensor (without importing torch otherwise), else ``None``."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return None


def exp(x: Any) -> Any:
    """``exp(x)`` of NumPy arrays, floats or torch tensors (differentiable).

    Compiled backends use their own (see ``backends/cpu/_vmath.py``).
    """
    torch = _torch_module(x)
    return torch.exp(x) if torch is not None else np.exp(x)


def log(x: Any) -> Any:
    """Natural logarithm of NumPy arrays, floats or torch tensors."""
    torch = _torch_module(x)
    return torch.log(x) if torch is not None else np.log(x)


def sqrt(x: Any) -> Any:
    """Square root of NumPy arrays, floats or torch tensors."""
    torch = _torch_module(x)
    return torch.sqrt(x) if torch is not None else np.sqrt(x)


def vtrap(x: Any, y: Any) -> Any:
    """``x / (exp(x / y) - 1)``, finite at ``x = 0`` where it is 0/0 (limit ``y``).

    As NEURON's ``vtrap`` in ``hh.mod``. HH rates such as ``alpha_m = 0.1 * vtrap(-(v + 40),
    10)`` are 0/0 at exactly -40 mV; near it the direct formula loses digits. For
    ``|u| = |x / y| < VTRAP_SERIES_BELOW`` this uses the series ``y u / (e^u - 1) = y (1 - u/2
    + u^2/12 - u^4/720 + u^6/30240)`` (truncation error below 1e-14 relative), elsewhere the
    formula; every backend computes the same function. Torch tensors get a differentiable
    version whose gradient is finite at the singularity too.

    Args:
        x: Numerator, e.g. ``-(v + 40)`` in mV.
        y: Slope factor, e.g. ``10`` mV; nonzero.

    Returns:
        ``x / (exp(x / y) - 1)``, with the units of ``y``.
    """
    torch = _torch_module(x)
    xp = np if torch is None else torch
    u = x / y if torch is not None else np.asarray(x / y)
    small = xp.abs(u) < VTRAP_SERIES_BELOW
    series = vtrap_series(u, y)
    # Both branches are evaluated; the unused one gets a harmless argument so that neither
    # the values nor (for torch) the gradients see 0/0.
    safe_u = xp.where(small, xp.ones_like(u), u)
    denom = xp.expm1(safe_u)
    out = xp.where(small, series, x / denom)
    if torch is not None:
        return out
    return out if out.ndim else out[()]


#: The functions channel code may call; backends map each to their own implementation.
CHANNEL_MATH: dict[str, Callable[..., Any]] = {"exp": exp, "log": log, "sqrt": sqrt,
                                               "vtrap": vtrap}


# ------------------------------------------------------------------------------------- Channel


def _function(cls: type, name: str) -> Callable[..., Any] | None:
    raw = inspect.getattr_static(cls, name, None)
    if isinstance(raw, staticmethod | classmethod):
        raw = raw.__func__
    return raw if isinstance(raw, types.FunctionType) else None


@dataclass(frozen=True)
class Gate:
    """One gating state: its form (``"rates"``: alpha/beta, ``"inf_tau"``) and functions."""

    state: str
    form: str
    first: Callable[..., Any]  # alpha or inf
    second: Callable[..., Any]  # beta or tau


class Channel:
    """Base class of ion channels: subclass it and declare states, params and rate functions.

    Class attributes:
        params: ``{name: default}``; units go in the subclass docstring (mS/cm^2, mV).
        states: ``{name: initial value}`` of the gating variables (dimensionless, 0..1).
        reversal: Name of the parameter that holds the reversal potential (mV), or a number.

    Functions (plain functions in the class body, no ``self``):
        ``alpha_<x>``/``beta_<x>`` (1/ms) or ``inf_<x>``/``tau_<x>`` (ms) for each state ``x``,
        and ``conductance`` (mS/cm^2). Arguments are named ``v`` (mV), states or params.
    """

    params: ClassVar[dict[str, float]] = {}
    states: ClassVar[dict[str, float]] = {}
    reversal: ClassVar[str | float] = 0.0

    gates: ClassVar[tuple[Gate, ...]] = ()
    conductance_fn: ClassVar[Callable[..., Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls) or _function(cls, "conductance") is None:
            if cls.states or "conductance" in cls.__dict__:
                raise TypeError(f"channel {cls.__name__} must define conductance(...) "
                                "returning mS/cm^2")
            return  # an intermediate base class without a conductance
        cls._validate()

    @classmethod
    def _validate(cls) -> None:
        name = cls.__name__
        gates = []
        for x in cls.states:
            a, b = _function(cls, f"alpha_{x}"), _function(cls, f"beta_{x}")
            i, t = _function(cls, f"inf_{x}"), _function(cls, f"tau_{x}")
            if a is not None and b is not None and i is None and t is None:
                gates.append(Gate(x, "rates", a, b))
            elif i is not None and t is not None and a is None and b is None:
                gates.append(Gate(x, "inf_tau", i, t))
            else:
                raise TypeError(
                    f"channel {name}: state {x!r} needs exactly one pair of functions, "
                    f"alpha_{x}/beta_{x} (rates in 1/ms) or inf_{x}/tau_{x} (tau in ms)"
                )
        known = {"v", *cls.params}
        for g in gates:
            for fn in (g.first, g.second):
                bad = [a for a in _arg_names(fn) if a not in known]
                if bad:
                    raise TypeError(
                        f"channel {name}: {fn.__name__} takes {bad}, which is neither 'v' nor "
                        f"a parameter ({sorted(cls.params)})"
                    )
        cond = _function(cls, "conductance")
        bad = [a for a in _arg_names(cond) if a not in known | set(cls.states)]
        if bad:
            raise TypeError(
                f"channel {name}: conductance takes {bad}, which is neither 'v', a state "
                f"({sorted(cls.states)}) nor a parameter ({sorted(cls.params)})"
            )
        if isinstance(cls.reversal, str) and cls.reversal not in cls.params:
            raise TypeError(
                f"channel {name}: reversal {cls.reversal!r} is not one of its params "
                f"({sorted(cls.params)}); name a parameter or give a number in mV"
            )
        if "c_m" in cls.params or "v" in cls.params or set(cls.params) & set(cls.states):
            raise TypeError(
                f"channel {name}: 'c_m' and 'v' are reserved and parameter names must differ "
                "from state names"
            )
        cls.gates = tuple(gates)
        cls.conductance_fn = cond


def _fingerprint(fn: Callable[..., Any], h: Any, seen: set[int]) -> None:
    """Feed ``fn``'s code, and that of the helpers and constants it reads, into hash ``h``.

    Compiled kernels are cached under a hash of this, so editing a rate function, a helper
    it calls or a module-level constant it reads gives a new kernel.
    """
    if id(fn) in seen:
        return
    seen.add(id(fn))
    code = fn.__code__
    h.update(code.co_code)
    h.update(repr(code.co_consts).encode())
    h.update(repr(code.co_names).encode())
    for name in code.co_names:
        value = fn.__globals__.get(name)
        if isinstance(value, types.FunctionType) and value not in CHANNEL_MATH.values():
            _fingerprint(value, h, seen)
        elif isinstance(value, int | float):
            h.update(f"{name}={value!r}".encode())


def _arg_names(fn: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(fn).parameters)


# ---------------------------------------------------------------------------------- ChannelSet

_channel_sets: dict[str, ChannelSet] = {}


@dataclass(frozen=True)
class Arg:
    """Where a function argument comes from: ``kind`` is ``"v"``, ``"state"`` or ``"param"``."""

    kind: str
    index: int = 0


class ChannelSet:
    """The channels of one cell type, with the layout of their states and parameters.

    ``params`` arrays have shape ``(len(param_names), n_neurons)``: row 0 is the membrane
    capacitance ``c_m`` (uF/cm^2), then every channel parameter once. ``states`` arrays have
    shape ``(len(state_names), n_neurons)``, the channels' states in declaration order.

    Args:
        channels: Channel classes (subclasses of :class:`Channel`), each at most once.

    Example:
        >>> from fusekit.neuro import HHSodium, HHPotassium, HHLeak
        >>> hh = ChannelSet([HHSodium, HHPotassium, HHLeak])
        >>> hh.state_names
        ('HHSodium.m', 'HHSodium.h', 'HHPotassium.n')
    """

    def __init__(self, channels: Sequence[type[Channel]]):
        channels = tuple(channels)
        if not channels:
            raise InputError("a ChannelSet needs at least one channel")
        for ch in channels:
            if not (isinstance(ch, type) and issubclass(ch, Channel)) or not hasattr(
                ch, "conductance_fn"
            ):
                raise InputError(f"{ch!r} is not a Channel subclass with a conductance")
        if len(set(channels)) != len(channels):
            raise InputError("each channel may appear once in a ChannelSet")
        self.channels = channels
        defaults: dict[str, float] = {"c_m": DEFAULT_C_M}
        for ch in channels:
            for p, value in ch.params.items():
                if p in defaults and defaults[p] != value:
                    raise InputError(
                        f"parameter {p!r} is shared by several channels with different "
                        f"defaults ({defaults[p]} and {value} in {ch.__name__}); shared "
                        "names mean one value, so give them one default or rename one"
                    )
                defaults[p] = float(value)
        self.param_names: tuple[str, ...] = tuple(defaults)
        self.param_defaults = np.array(list(defaults.values()), dtype=np.float64)
        self.state_names: tuple[str, ...] = tuple(
            f"{ch.__name__}.{s}" for ch in channels for s in ch.states
        )
        self.state_initial = np.array(
            [float(v) for ch in channels for v in ch.states.values()], dtype=np.float64
        )
        self.key = self._make_key()
        self._arg_cache: dict[tuple[type[Channel], Callable[..., Any]], list[Arg]] = {}
        #: fastest_gate over the default window when the gates read no parameter.
        self._fastest: tuple[float, str, float] | None = None
        _channel_sets.setdefault(self.key, self)

    def _make_key(self) -> str:
        h = hashlib.sha1()
        for ch in self.channels:
            h.update(f"{ch.__module__}.{ch.__qualname__}|{ch.params}|{ch.states}|"
                     f"{ch.reversal}".encode())
            for fn in [g.first for g in ch.gates] + [g.second for g in ch.gates] + [
                ch.conductance_fn
            ]:
                _fingerprint(fn, h, set())
        names = "+".join(ch.__name__ for ch in self.channels)
        return f"{names}#{h.hexdigest()[:12]}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChannelSet) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"ChannelSet([{', '.join(ch.__name__ for ch in self.channels)}])"

    # ------------------------------------------------------------------ layout helpers

    def param_index(self, name: str) -> int:
        """Row of parameter ``name`` in a ``params`` array."""
        try:
            return self.param_names.index(name)
        except ValueError:
            raise KeyError(f"no parameter {name!r}; parameters: {self.param_names}") from None

    def state_index(self, name: str) -> int:
        """Row of state ``name`` (``"HHSodium.m"``) in a ``states`` array."""
        try:
            return self.state_names.index(name)
        except ValueError:
            raise KeyError(f"no state {name!r}; states: {self.state_names}") from None

    def default_params(self, n: int, dtype: Any = np.float64, **values: Any) -> np.ndarray:
        """``params`` array of shape ``(n_params, n)`` with defaults, overridden by ``values``.

        Example:
            >>> hh.default_params(3, g_na=100.0)[hh.param_index("g_na")]  # doctest: +SKIP
            array([100., 100., 100.])
        """
        p = np.repeat(self.param_defaults[:, None], n, axis=1)
        for name, value in values.items():
            p[self.param_index(name)] = value
        return p.astype(dtype)

    def initial_states(self, n: int, dtype: Any = np.float64) -> np.ndarray:
        """``states`` array ``(n_states, n)`` with the channels' declared initial values."""
        return np.repeat(self.state_initial[:, None], n, axis=1).astype(dtype)

    def steady_states(self, v: Any, params: np.ndarray | None = None) -> np.ndarray:
        """Steady state of every gate at membrane potential ``v`` (mV), float64.

        Args:
            v: Potentials, shape ``(n,)``.
            params: ``(n_params, n)``; defaults when ``None``.

        Returns:
            ``states`` array of shape ``(n_states, n)``.
        """
        v = np.asarray(v, dtype=np.float64)
        n = v.shape[0]
        P = self.default_params(n) if params is None else np.asarray(params, np.float64)
        out = np.empty((len(self.state_names), n))
        k = 0
        for ch in self.channels:
            for g in ch.gates:
                a = g.first(*self.args(ch, g.first, v, None, P))
                b = g.second(*self.args(ch, g.second, v, None, P))
                out[k] = a / (a + b) if g.form == "rates" else a
                k += 1
        return out

    def fastest_gate(self, params: np.ndarray,
                     v: np.ndarray = GATE_WINDOW_MV) -> tuple[float, str, float]:
        """The shortest gate time constant over potentials ``v``, for every parameter column.

        Only the parameter rows that the gate functions read matter, so each distinct
        combination of them is evaluated once (HH's gates read none: one evaluation).

        Args:
            params: ``(n_params, n)`` NumPy array, rows as :attr:`param_names`.
            v: Potentials to scan, mV (default :data:`GATE_WINDOW_MV`, -80 to 40 mV).

        Returns:
            ``(tau, state, v_at)``: the time constant in ms (``inf`` without gates), the
            state's name and the potential where it occurs.
        """
        rows = sorted({a.index for ch in self.channels for g in ch.gates
                       for fn in (g.first, g.second) for a in self.arg_sources(ch, fn)
                       if a.kind == "param"})
        default_window = v is GATE_WINDOW_MV
        if not rows and default_window and self._fastest is not None:
            return self._fastest  # gates that read no parameter: the same on every call
        P = np.asarray(params)
        read = np.asarray(P[rows], dtype=np.float64)  # only the rows the gates read
        if not rows or not P.shape[1] or (read == read[:, :1]).all():
            cols = read[:, :1]  # one combination (np.unique of 10,000 columns took 13 ms)
        else:
            cols = np.unique(read, axis=1)
        P_grid = np.zeros((len(self.param_names), cols.shape[1] * len(v)))
        if rows:
            P_grid[rows] = np.repeat(cols, len(v), axis=1)
        v_grid = np.tile(np.asarray(v, dtype=np.float64), cols.shape[1])
        best = (math.inf, "", math.nan)
        k = 0
        for ch in self.channels:
            for g in ch.gates:
                first = g.first(*self.args(ch, g.first, v_grid, None, P_grid))
                second = g.second(*self.args(ch, g.second, v_grid, None, P_grid))
                tau = (1.0 / (first + second) if g.form == "rates" else second) * np.ones_like(
                    v_grid)
                i = int(np.argmin(tau))
                if tau[i] < best[0]:
                    best = (float(tau[i]), self.state_names[k], float(v_grid[i]))
                k += 1
        if not rows and default_window:
            self._fastest = best
        return best

    # --------------------------------------------------------------- argument resolution

    def arg_sources(self, channel: type[Channel], fn: Callable[..., Any]) -> list[Arg]:
        """Where each argument of ``fn`` (a function of ``channel``) is read from."""
        key = (channel, fn)
        if key not in self._arg_cache:
            self._arg_cache[key] = self._arg_sources(channel, fn)
        return self._arg_cache[key]

    def _arg_sources(self, channel: type[Channel], fn: Callable[..., Any]) -> list[Arg]:
        first_state = 0
        for ch in self.channels:
            if ch is channel:
                break
            first_state += len(ch.states)
        out = []
        for a in _arg_names(fn):
            if a == "v":
                out.append(Arg("v"))
            elif a in channel.states:
                out.append(Arg("state", first_state + list(channel.states).index(a)))
            else:
                out.append(Arg("param", self.param_index(a)))
        return out

    def args(self, channel: type[Channel], fn: Callable[..., Any], v: Any, S: Any,
             P: Any) -> list[Any]:
        """The argument values of ``fn`` from ``v``, state rows ``S`` and param rows ``P``."""
        return [v if a.kind == "v" else (S if a.kind == "state" else P)[a.index]
                for a in self.arg_sources(channel, fn)]

    def reversal_source(self, channel: type[Channel]) -> Arg | float:
        """The reversal potential of ``channel``: a parameter row or a constant (mV)."""
        if isinstance(channel.reversal, str):
            return Arg("param", self.param_index(channel.reversal))
        return float(channel.reversal)


def gates_and_conductances(cs: ChannelSet, v: Any, S: Any, P: Any, dt: float, *,
                           exp: Callable[[Any], Any], stack: Callable[[list], Any],
                           convert: Callable[[Any], Any] = lambda x: x,
                           where: Callable[..., Any] | None = None) -> tuple[Any, Any, Any]:
    """One Rush-Larsen gate update, then the channel conductance sums, in any array library.

    The oracle's half of a step (the references and ``simulate_torch`` share it; the compiled
    kernels are generated from the same channel functions by :func:`step_source`).

    Args:
        cs: The channel set.
        v: Membrane potentials, mV (any shape the channel functions broadcast over).
        S: Gating states, ``(n_states, *v.shape)``, rows as ``cs.state_names``.
        P: Parameters, ``(n_params, *v.shape)``, rows as ``cs.param_names``.
        dt: Time step, ms.
        exp: The array library's exponential.
        stack: Stacks a list of state arrays into ``S``'s layout.
        convert: Applied to every channel-function result (e.g. constants to tensors).
        where: The array library's ``where``, for cable compartments: a node with ``c_m = 0``
            (``P[0] == 0``, a zero-area junction) has no membrane, so its states are held
            and both sums are 0 there (:func:`fusekit.ops.cable_simulate`).

    Returns:
        ``(S_new, g_sum, ge_sum)``: the states after the step, ``sum_c g_c`` and
        ``sum_c g_c E_c`` at the new states (mS/cm^2 and uA/cm^2).
    """
    new_states = []
    for ch in cs.channels:
        for g in ch.gates:
            k = len(new_states)
            first = convert(g.first(*cs.args(ch, g.first, v, S, P)))
            second = convert(g.second(*cs.args(ch, g.second, v, S, P)))
            if g.form == "rates":
                inf, decay = first / (first + second), exp(-dt * (first + second))
            else:
                inf, decay = first, exp(-dt / second)
            new_states.append(inf + (S[k] - inf) * decay)
    S_new = stack(new_states) if new_states else S
    g_sum = v * 0.0
    ge_sum = v * 0.0
    for ch in cs.channels:
        g = convert(ch.conductance_fn(*cs.args(ch, ch.conductance_fn, v, S_new, P)))
        rev = cs.reversal_source(ch)
        g_sum = g_sum + g
        ge_sum = ge_sum + g * (P[rev.index] if isinstance(rev, Arg) else rev)
    if where is not None:
        hollow = P[0] == 0
        S_new = where(hollow, S, S_new)
        g_sum = where(hollow, 0.0, g_sum)
        ge_sum = where(hollow, 0.0, ge_sum)
    return S_new, g_sum, ge_sum


def channel_set(channels: ChannelSet | Sequence[type[Channel]] | str) -> ChannelSet:
    """A :class:`ChannelSet` from a set, a list of channel classes or a set's ``key``."""
    if isinstance(channels, ChannelSet):
        return channels
    if isinstance(channels, str):
        if channels not in _channel_sets:
            raise InputError(
                f"no ChannelSet with key {channels!r} was created in this process; pass the "
                "ChannelSet or its channel classes"
            )
        return _channel_sets[channels]
    if isinstance(channels, type):
        channels = [channels]
    cs = ChannelSet(channels)
    return _channel_sets.get(cs.key, cs)


# ------------------------------------------------------------------------ code generation


def compile_channel_function(
    fn: Callable[..., Any],
    math: dict[str, Any],
    scalar: Callable[[float], Any],
    jit: Callable[[Callable[..., Any]], Any],
    _seen: dict[int, Any] | None = None,
) -> Any:
    """``fn`` rebuilt for a backend and compiled with ``jit``.

    The channel math functions among ``fn``'s globals are replaced by ``math`` (by name), other
    plain Python functions it calls are compiled the same way, and float constants become
    ``scalar(c)`` (the kernel's dtype, so that float32 kernels stay float32).
    """
    seen = {} if _seen is None else _seen
    if id(fn) in seen:
        return seen[id(fn)]
    code = fn.__code__
    consts = tuple(scalar(c) if isinstance(c, float) else c for c in code.co_consts)
    glb = dict(fn.__globals__)
    by_identity = {id(f): name for name, f in CHANNEL_MATH.items()}
    for name in code.co_names:
        value = glb.get(name)
        if value is None:
            continue
        if id(value) in by_identity:
            glb[name] = math[by_identity[id(value)]]
        elif isinstance(value, types.FunctionType):
            glb[name] = compile_channel_function(value, math, scalar, jit, seen)
        elif isinstance(value, float):
            glb[name] = scalar(value)
    rebuilt = types.FunctionType(code.replace(co_consts=consts), glb, fn.__name__,
                                 fn.__defaults__, fn.__closure__)
    seen[id(fn)] = out = jit(rebuilt)
    return out


def unless_junction_lines(body: list[str], indent: str) -> list[str]:
    """A compartment's ``step_source(voltage=False)`` lines, run only where ``c_m != 0``.

    At ``p0 == ZERO`` (a zero-area junction, as ``gates_and_conductances(where=)``) the
    states stay as loaded and ``g_sum = ge_sum = ZERO``: the row the caller then builds is
    only the axial coupling. For the kernels that step one compartment at a time.
    """
    return [f"{indent}if p0 != ZERO:", *("    " + line for line in body),
            f"{indent}else:", f"{indent}    g_sum = ZERO", f"{indent}    ge_sum = ZERO"]


def step_source(
    cs: ChannelSet, indent: str, *, voltage: bool = True
) -> tuple[list[str], dict[str, Callable[..., Any]]]:
    """Source lines of one time step for one neuron, and the functions they call.

    With ``voltage=False`` the lines stop after the gates and leave ``g_sum`` (sum of the
    conductances, mS/cm^2) and ``ge_sum`` (sum of ``g E``, uA/cm^2) for a caller that solves
    for ``v`` itself (the multi-compartment cable).

    The lines read locals ``v`` (mV), ``s0, s1, ...`` (states), ``p0, p1, ...`` (parameters),
    ``i_inj`` (uA/cm^2) and ``dt`` (ms), and leave the new ``v`` and states in the same names.
    They call ``EXP`` and the channel functions named in the returned dict (by
    ``c<channel>_<function>``), and use ``ONE`` (1 in the kernel's dtype).

    The scheme is NEURON's and Jaxley's: every gate by exponential Euler (Rush-Larsen) at the
    current ``v``; then the conductances at the new gates; then the membrane potential by
    backward Euler with the currents linear in ``v``:
    ``v' = (v + dt/c_m (sum_c g_c E_c + i_inj)) / (1 + dt/c_m sum_c g_c)``.
    """
    lines: list[str] = []
    funcs: dict[str, Callable[..., Any]] = {}

    def call(ci: int, ch: type[Channel], fn: Callable[..., Any]) -> str:
        name = f"c{ci}_{fn.__name__}"
        funcs[name] = fn
        args = ", ".join("v" if a.kind == "v" else f"{a.kind[0]}{a.index}"
                         for a in cs.arg_sources(ch, fn))
        return f"{name}({args})"

    k = 0
    for ci, ch in enumerate(cs.channels):
        for g in ch.gates:
            if g.form == "rates":
                lines += [f"a_ = {call(ci, ch, g.first)}", f"b_ = {call(ci, ch, g.second)}",
                          "ab_ = a_ + b_", "inf_ = a_ / ab_", "decay_ = EXP(-dt * ab_)"]
            else:
                lines += [f"inf_ = {call(ci, ch, g.first)}",
                          f"decay_ = EXP(-dt / {call(ci, ch, g.second)})"]
            lines.append(f"s{k}_new = inf_ + (s{k} - inf_) * decay_")
            k += 1
    lines += [f"s{j} = s{j}_new" for j in range(k)]
    g_terms, ge_terms = [], []
    for ci, ch in enumerate(cs.channels):
        lines.append(f"g{ci} = {call(ci, ch, ch.conductance_fn)}")
        rev = cs.reversal_source(ch)
        g_terms.append(f"g{ci}")
        ge_terms.append(f"g{ci} * p{rev.index}" if isinstance(rev, Arg) else f"g{ci} * E{ci}")
    lines += [
        f"g_sum = {' + '.join(g_terms)}",
        f"ge_sum = {' + '.join(ge_terms)}",
    ]
    if voltage:
        lines += ["k_ = dt / p0", "v = (v + k_ * (ge_sum + i_inj)) / (ONE + k_ * g_sum)"]
    return [indent + line for line in lines], funcs


def reversal_constants(cs: ChannelSet, scalar: Callable[[float], Any]) -> dict[str, Any]:
    """``E<channel>`` globals for channels with a constant reversal potential."""
    return {f"E{ci}": scalar(rev) for ci, ch in enumerate(cs.channels)
            if not isinstance(rev := cs.reversal_source(ch), Arg)}
