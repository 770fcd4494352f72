"""Input checks shared by op declarations. They raise :class:`InputError` with a fix."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from .._arrays import common_kind
from .._errors import InputError
from .._registry import array_dtype

FLOAT_DTYPES = frozenset({"float32", "float64", "bfloat16"})


def ids_in_range(a: Any, n: int) -> bool:
    """Whether every value of the integer array ``a`` lies in ``[0, n)``, in one pass.

    A signed array is read as unsigned (a negative value becomes one above ``2**31`` or
    ``2**63``), so its largest value alone decides: one reduction instead of a min and a max.
    Arrays of other libraries than NumPy and CuPy take the two reductions.
    """
    if a.shape[0] == 0:
        return True
    if type(a).__module__.split(".", 1)[0] in ("numpy", "cupy") and a.dtype.kind == "i":
        top = (1 << (8 * a.dtype.itemsize - 1)) - 1  # the dtype's largest value
        if n > top:  # every value is below n: only a negative one is out of range
            return int(a.min()) >= 0
        # a negative value, read as unsigned, is above top, so above n - 1
        return int(a.view(a.dtype.str.replace("i", "u")).max()) < n
    return int(a.min()) >= 0 and int(a.max()) < n


def require_ndim(op: str, name: str, a: Any, ndim: int, layout: str) -> None:
    """Raise unless ``a`` has exactly ``ndim`` dimensions (``layout`` names them)."""
    if a.ndim != ndim:
        raise InputError(
            f"{op}: {name} must have shape {layout} ({ndim} dimensions), got shape "
            f"{tuple(a.shape)}"
        )


def require_same_float_dtype(op: str, names: Sequence[str], arrays: Sequence[Any]) -> str:
    """Return the one floating dtype all ``arrays`` share, or raise naming the odd one."""
    first = array_dtype(arrays[0])
    if first in FLOAT_DTYPES and all(array_dtype(a) == first for a in arrays[1:]):
        return first
    dtypes = {name: array_dtype(a) for name, a in zip(names, arrays, strict=True)}
    first_name = names[0]
    if first not in FLOAT_DTYPES:
        raise InputError(
            f"{op}: {first_name} has dtype {first}; supported are "
            f"{', '.join(sorted(FLOAT_DTYPES))} (bfloat16 for torch tensors); cast it with "
            ".astype(np.float32) or .float()"
        )
    for name, dt in dtypes.items():
        if dt != first:
            raise InputError(
                f"{op}: all inputs must share one dtype, but {first_name} is {first} and "
                f"{name} is {dt}; cast them to the same dtype first"
            )
    return first


def require_shapes(op: str, shapes: dict[str, tuple[Any, tuple[int, ...]]], i_ext: Any,
                   n_steps: int) -> None:
    """Raise unless every ``name: (array, shape)`` has its shape and ``i_ext`` fits.

    ``i_ext`` must be ``(n,)`` (constant) or ``(n_steps, n)``, ``n`` the last entry of the
    first shape.
    """
    for name, (a, shape) in shapes.items():
        if tuple(a.shape) != shape:
            raise InputError(f"{op}: {name} must have shape {shape}, got {tuple(a.shape)}")
    n = next(iter(shapes.values()))[1][-1]
    if tuple(i_ext.shape) not in ((n,), (n_steps, n)):
        raise InputError(f"{op}: i_ext must have shape ({n},) or ({n_steps}, {n}), got "
                         f"{tuple(i_ext.shape)}")


def is_real(v: Any) -> bool:
    """A real number (int, float or NumPy scalar), not a bool, a string or an array."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and type(v).__name__ != "bool_"


def is_whole(v: Any) -> bool:
    """An integer (Python or NumPy), not a bool: a count that ``int()`` would not truncate."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_counts(owner: str, **counts: Any) -> None:
    """Refuse counts (``n_steps``, ``record_every``, ``max_spikes``, ...) that are not ints >= 0.

    A float such as 2.5 is refused, not truncated: the ops take whole numbers of steps and
    spikes, and ``record_every=0.5`` would otherwise record nothing.
    """
    for name, value in counts.items():
        if not is_whole(value) or value < 0:
            raise InputError(f"{owner}: {name} must be a non-negative integer (a whole "
                             f"number >= 0), got {value!r}")


def check_dt(op: str, dt: Any) -> float:
    """``dt`` as a float, refused unless a positive finite number (NumPy scalars too)."""
    if not (is_real(dt) and math.isfinite(dt) and dt > 0):
        raise InputError(f"{op}: dt must be a positive finite time step in ms, got {dt!r}")
    return float(dt)


def require_finite(op: str, name: str, a: Any) -> None:
    """Raise when ``a`` holds NaN or infinity (for ops where they are not allowed)."""
    if all_finite(a) is False:
        raise InputError(
            f"{op}: {name} contains NaN or infinity, which this op does not accept; "
            "clean the input (np.nan_to_num) or find where it came from"
        )


def all_finite(a: Any) -> bool | None:
    """Whether ``a`` (NumPy, CuPy or torch, on its own device) holds no NaN or infinity.

    ``None`` for fake or meta tensors (tracing: no values). One min/max pass for floats.
    """
    xp = type(a).__module__.split(".", 1)[0]
    if xp == "torch":
        import torch
        from torch._subclasses.fake_tensor import is_fake

        if a.is_meta or is_fake(a):
            return None  # tracing: no values to look at; the real call checks them
        if a.numel() == 0 or not a.is_floating_point():
            return True
        # min and max propagate NaN and show an infinity: one pass and no boolean temporary
        # (27x faster than isfinite(a).all() on a 45M-element weight here).
        lo, hi = torch.aminmax(a)
        return bool(torch.isfinite(lo) & torch.isfinite(hi))
    import sys  # NumPy or CuPy: the array's own module

    xp = sys.modules[type(a).__module__.split(".", 1)[0]]
    if a.size == 0:
        return True
    if a.dtype.kind == "f":
        return bool(xp.isfinite(xp.min(a)) & xp.isfinite(xp.max(a)))
    return bool(xp.isfinite(a).all())


def is_tensor(a: Any) -> bool:
    """True for torch tensors, without importing torch (and traceable by torch.compile)."""
    return type(a).__module__.startswith("torch")


_torch_ops: dict[str, Any] = {}


def torch_op(name: str) -> Any:
    """``torch.ops.fusekit.<name>``, registering fusekit's torch bridge on first use."""
    op = _torch_ops.get(name)
    if op is None:
        import torch

        from .. import torch as _bridge  # noqa: F401  (registers torch.ops.fusekit)

        op = _torch_ops[name] = getattr(torch.ops.fusekit, name)
    return op


def torch_call(name: str, arrays: dict[str, Any], backend: str | None, *params: Any) -> Any:
    """Call ``torch.ops.fusekit.<name>(*arrays, *params, backend)``; all arrays must be tensors."""
    if not all(is_tensor(a) for a in arrays.values()):
        common_kind(list(arrays), list(arrays.values()))  # raises MixedArraysError
    return torch_op(name)(*arrays.values(), *params, backend)
