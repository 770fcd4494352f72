"""The op registry: ops declared once, kernels per backend, and the choice between them.

Selection order for one call: the explicit ``backend=`` argument, then the innermost
:func:`use_backend` context, then the ``FUSEKIT_BACKEND`` environment variable, then
``"auto"``, which picks the best available kernel for where the inputs live. A named backend
that cannot serve the call raises; it never falls back silently. The choice is cached per
(op, array library, device, dtype, request).

Backends are imported by name the first time a call needs them, never at import time: this
module keeps only their module names.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._arrays import ArrayKind, common_kind, dtype_name, from_native, to_native
from ._errors import BackendUnavailableError, InputError, NoKernelError, UnknownBackendError

#: Backend name -> package that holds its kernels, one module per op family.
BACKEND_MODULES: dict[str, str] = {
    "reference": "fusekit.backends.reference",
    "cpu": "fusekit.backends.cpu",
    "cuda": "fusekit.backends.cuda",
}
#: The order ``auto`` tries backends in, best first.
AUTO_ORDER: tuple[str, ...] = ("cuda", "cpu", "reference")
BACKEND_CHOICES: tuple[str, ...] = (*BACKEND_MODULES, "auto")
ENV_VAR = "FUSEKIT_BACKEND"

_context_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fusekit_backend", default=None
)


def _validate(name: str, where: str) -> str:
    if name not in BACKEND_CHOICES:
        raise UnknownBackendError(
            f"unknown backend {name!r} ({where}); choose one of {', '.join(BACKEND_CHOICES)}"
        )
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the calls inside the ``with`` block on backend ``name``.

    Args:
        name: ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Example:
        >>> import numpy as np, fusekit
        >>> with fusekit.use_backend("reference"):
        ...     y = fusekit.ops.kron_linear(np.ones(4), np.ones((1, 2, 2)), np.ones((1, 2, 2)))
    """
    token = _context_backend.set(_validate(name, "use_backend"))
    try:
        yield
    finally:
        _context_backend.reset(token)


try:  # os.environ.get costs ~1.5 us when the key is absent (a caught KeyError); its dict doesn't
    _environ_data, _env_key = os.environ._data, os.environ.encodekey(ENV_VAR)  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - not CPython's os.environ
    _environ_data = None


def _read_env() -> str | None:
    if _environ_data is None:  # pragma: no cover
        return os.environ.get(ENV_VAR)
    raw = _environ_data.get(_env_key)
    return None if raw is None else os.environ.decodevalue(raw)  # type: ignore[attr-defined]


def requested_backend(explicit: str | None = None) -> str:
    """The backend a call asks for: explicit argument, context, env var, else ``"auto"``."""
    if explicit is not None:
        return _validate(explicit, "backend= argument")
    ctx = _context_backend.get()
    if ctx is not None:
        return ctx
    env = _read_env()
    if env:
        return _validate(env.strip().lower(), f"environment variable {ENV_VAR}")
    return "auto"


# ---------------------------------------------------------------------------------- backends

_availability: dict[str, str | None] = {}


def unavailable_reason(backend: str) -> str | None:
    """Why ``backend`` cannot run here, or ``None`` when it can. Probed once, then cached."""
    if backend not in _availability:
        try:
            module = importlib.import_module(BACKEND_MODULES[backend])
            reason = module.unavailable_reason()
        except Exception as exc:  # one broken backend must not break the others
            reason = f"its availability probe failed: {exc!r}"
        _availability[backend] = reason
    return _availability[backend]


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine, in ``auto`` order."""
    return [b for b in AUTO_ORDER if unavailable_reason(b) is None]


_loaded_families: set[tuple[str, str]] = set()


def load_family(backend: str, family: str) -> None:
    """Import ``backend``'s kernels for op ``family`` if the backend is available."""
    if (backend, family) in _loaded_families:
        return
    module = f"{BACKEND_MODULES[backend]}.{family}"
    if unavailable_reason(backend) is None and importlib.util.find_spec(module) is not None:
        importlib.import_module(module)  # a backend without this family has no kernels for it
    _loaded_families.add((backend, family))


# ------------------------------------------------------------------------------- kernels, ops


@dataclass(frozen=True)
class Kernel:
    """One implementation of an op on one backend, and what inputs it accepts."""

    op: str
    backend: str
    fn: Callable[..., Any]
    arrays: frozenset[str]
    dtypes: frozenset[str]
    priority: int = 0

    def not_supported_reasons(self, kind: ArrayKind, dtype: str) -> list[str]:
        """Everything about the inputs this kernel cannot take (empty when it fits)."""
        reasons = []
        if kind.native not in self.arrays:
            reasons.append(
                f"takes {'/'.join(sorted(self.arrays))} arrays, inputs are {kind.framework} on "
                f"{kind.device}"
            )
        if dtype not in self.dtypes:
            reasons.append(f"dtype {dtype} not in {', '.join(sorted(self.dtypes))}")
        return reasons


_kernels: dict[str, list[Kernel]] = {}
_ops: dict[str, Op] = {}
_selection_cache: dict[tuple[str, str, str, str, str], Kernel] = {}


def register_kernel(
    op: str | Op,
    *,
    backend: str,
    arrays: Sequence[str],
    dtypes: Sequence[str],
    priority: int = 0,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as ``backend``'s kernel for ``op``.

    The kernel receives native arrays (``arrays``: ``"numpy"`` or ``"cupy"``) that already
    passed the op's input check, and keyword parameters of the op.
    """
    name = op if isinstance(op, str) else op.name
    if backend not in BACKEND_MODULES:
        raise UnknownBackendError(f"cannot register a kernel for unknown backend {backend!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        kernel = Kernel(name, backend, fn, frozenset(arrays), frozenset(dtypes), priority)
        _kernels.setdefault(name, []).append(kernel)
        _selection_cache.clear()
        return fn

    return deco


def kernels_for(op: str) -> list[Kernel]:
    """All kernels registered so far for ``op`` (backends load lazily)."""
    return list(_kernels.get(op, ()))


def clear_selection_cache() -> None:
    """Forget cached kernel choices (only needed after registering kernels by hand)."""
    _selection_cache.clear()


@dataclass(frozen=True)
class TorchBridge:
    """How an op appears as ``torch.ops.fusekit.<name>``.

    Args:
        schema: The argument list and result of the ``torch.library`` schema, with a trailing
            ``str? backend=None``.
        fake: Shape-only kernel for tracing (checks shapes, returns empty tensors).
        setup_context: ``torch.library.register_autograd`` context function.
        backward: Backward written with other fusekit ops, or ``None`` if not differentiable.
        bf16_outputs: For all-bfloat16 inputs (computed in float32), cast float32 results
            back to bfloat16. ``False`` for ops whose float32 results are float32 by
            definition (quantization scales).
        impl: Computes the op on tensors in place of the registry call, for ops whose torch
            form returns more than the op (what its backward needs, such as the checkpoints
            of ``ion_simulate``). It takes the schema's arguments by name.
    """

    schema: str
    fake: Callable[..., Any]
    setup_context: Callable[..., Any] | None = None
    backward: Callable[..., Any] | None = None
    bf16_outputs: bool = True
    impl: Callable[..., Any] | None = None


@dataclass
class Op:
    """An op declared once: name, family, input check and its NumPy reference.

    Args:
        name: Public name, also the ``torch.ops.fusekit`` name.
        family: Module name under ``fusekit.ops`` and each backend (``"kron"``).
        array_args: Names of the array arguments, in call order.
        params: Names of the non-array parameters, in the torch schema's order after the
            arrays (they reach checks and kernels as keyword arguments).
        check: ``check(*arrays, **params)`` raises :class:`InputError` on bad input and
            returns the dtype name the kernels will see. It runs on every call, so kernels
            never see bad input.
        torch: How the op is exposed as ``torch.ops.fusekit.<name>``, if it is.
    """

    name: str
    family: str
    array_args: tuple[str, ...]
    check: Callable[..., str]
    params: tuple[str, ...] = ()
    torch: TorchBridge | None = None

    def __post_init__(self) -> None:
        _ops[self.name] = self

    def select(self, kind: ArrayKind, dtype: str, request: str) -> Kernel:
        """The kernel for inputs of ``kind`` and ``dtype`` under ``request`` (cached)."""
        key = (self.name, kind.framework, kind.device, dtype, request)
        kernel = _selection_cache.get(key)
        if kernel is None:
            kernel = self._select_uncached(kind, dtype, request)
            _selection_cache[key] = kernel
        return kernel

    def _select_uncached(self, kind: ArrayKind, dtype: str, request: str) -> Kernel:
        backends = AUTO_ORDER if request == "auto" else (request,)
        report: list[str] = []
        for backend in backends:
            reason = unavailable_reason(backend)
            if reason is not None:
                if request != "auto":
                    raise BackendUnavailableError(
                        f"backend {backend!r} was requested for {self.name} but is not "
                        f"available: {reason}. Pick another with backend=..., "
                        f"fusekit.use_backend(...) or {ENV_VAR}; `fusekit info` shows what "
                        "this machine has"
                    )
                report.append(f"  {backend}: backend unavailable: {reason}")
                continue
            load_family(backend, self.family)
            candidates = sorted(
                (k for k in _kernels.get(self.name, ()) if k.backend == backend),
                key=lambda k: -k.priority,
            )
            if not candidates:
                report.append(f"  {backend}: no kernel registered for {self.name}")
            for k in candidates:
                why = k.not_supported_reasons(kind, dtype)
                if not why:
                    return k
                report.append(f"  {backend}.{k.fn.__name__}: {'; '.join(why)}")
        raise NoKernelError(
            f"no kernel of {self.name} fits {dtype} {kind.framework} arrays on {kind.device} "
            f"(backend request: {request!r}). Candidates:\n" + "\n".join(report)
        )

    def run(self, arrays: Sequence[Any], params: dict[str, Any], backend: str | None) -> Any:
        """Check the inputs, pick a kernel and call it; results come back as the input kind."""
        kind = common_kind(self.array_args, arrays)
        if kind.framework == "numpy":
            for name, a in zip(self.array_args, arrays, strict=False):
                if not getattr(getattr(a, "dtype", None), "isnative", True):
                    raise InputError(
                        f"{self.name}: {name} is in non-native byte order ({a.dtype.str}); "
                        f"the compiled kernels read native numbers: convert it with "
                        f"a.astype(a.dtype.newbyteorder('='))")
        dtype = self.check(*arrays, **params)
        kernel = self.select(kind, dtype, requested_backend(backend))
        if kind.framework == "numpy" or kind.framework == "cupy":
            return kernel.fn(*arrays, **params)
        out = kernel.fn(*[to_native(a, kind) for a in arrays], **params)
        if isinstance(out, tuple):
            return tuple(from_native(o, kind) for o in out)
        return from_native(out, kind)


def get_op(name: str) -> Op:
    """The declared op called ``name``."""
    if name not in _ops:
        importlib.import_module("fusekit.ops")  # declares every op
    if name not in _ops:
        raise KeyError(f"no fusekit op is called {name!r}; known: {', '.join(sorted(_ops))}")
    return _ops[name]


def all_ops() -> list[Op]:
    """Every op declared so far, in declaration order."""
    return list(_ops.values())


def array_dtype(a: Any) -> str:
    """Re-exported for op checks: the dtype name of any supported array."""
    return dtype_name(a)
