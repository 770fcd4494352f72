"""Array kinds: which library and device an input lives on, and zero-copy moves between them.

A kernel sees one *native* kind: ``"numpy"`` arrays for CPU kernels, CuPy arrays for CUDA
kernels. Torch tensors are viewed as one of those without copying (``Tensor.numpy()`` on the
CPU, DLPack on CUDA) and results are viewed back as tensors. Like einops, a framework is only
touched when the user's arrays show it is already imported.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

from ._errors import InputError, MixedArraysError


class ArrayKind(NamedTuple):
    """Where an array lives: ``framework`` (numpy, torch, cupy), ``device`` (cpu, cuda:N)."""

    framework: str
    device: str

    @property
    def device_type(self) -> str:
        """``"cpu"`` or ``"cuda"``, without the device index."""
        return self.device.split(":", 1)[0]

    @property
    def native(self) -> str:
        """The array library a kernel receives for this kind: ``numpy`` or ``cupy``."""
        return "numpy" if self.device == "cpu" else "cupy"


_NUMPY_CPU = ArrayKind("numpy", "cpu")
_TORCH_CPU = ArrayKind("torch", "cpu")


def kind_of(a: Any) -> ArrayKind:
    """Return the :class:`ArrayKind` of ``a``; raise :class:`InputError` for non-arrays."""
    np = sys.modules.get("numpy")
    if np is not None and type(a) is np.ndarray:
        return _NUMPY_CPU
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        dev = a.device
        if dev.type == "cpu":
            return _TORCH_CPU
        if dev.type == "cuda":
            return ArrayKind("torch", f"cuda:{dev.index or 0}")
        if dev.type == "meta":
            return ArrayKind("torch", "meta")
        raise InputError(
            f"torch tensors on device {dev} are not supported; move them to 'cpu' or 'cuda' first"
        )
    if type(a).__module__.startswith("cupy"):
        return ArrayKind("cupy", f"cuda:{a.device.id}")
    if np is not None and isinstance(a, np.ndarray):  # subclasses such as np.memmap
        return _NUMPY_CPU
    raise InputError(
        f"expected a NumPy array, torch tensor or CuPy array, got {type(a).__name__}; "
        "wrap plain Python data with numpy.asarray(...) first"
    )


def common_kind(names: Sequence[str], arrays: Sequence[Any]) -> ArrayKind:
    """The one kind shared by all ``arrays``; else :class:`MixedArraysError` naming two."""
    np = sys.modules.get("numpy")
    if np is not None:
        nd = np.ndarray
        for a in arrays:
            if type(a) is not nd:
                break
        else:
            return _NUMPY_CPU  # the common cases, without a kind per array
    torch = sys.modules.get("torch")
    if torch is not None and all(isinstance(a, torch.Tensor) and a.is_cpu for a in arrays):
        return _TORCH_CPU
    kinds = {name: kind_of(a) for name, a in zip(names, arrays, strict=True)}
    first_name, first = next(iter(kinds.items()))
    for name, k in kinds.items():
        if k != first:
            raise MixedArraysError(
                f"inputs live in different places: {first_name} is a {first.framework} array on "
                f"{first.device} but {name} is a {k.framework} array on {k.device}; move all "
                "inputs of one call to the same library and device (for example "
                "torch.from_numpy(...).to(device) or cupy.asarray(...))"
            )
    return first


_dtype_names: dict[Any, str] = {}


def dtype_name(a: Any) -> str:
    """Dtype of a NumPy/CuPy array or torch tensor as a plain name: ``"float32"``."""
    dt = a.dtype
    name = _dtype_names.get(dt)
    if name is None:  # numpy's dtype.name is a slow Python property: look each up once
        name = getattr(dt, "name", None) or str(dt).removeprefix("torch.")
        _dtype_names[dt] = name
    return name


def to_native(a: Any, kind: ArrayKind) -> Any:
    """View ``a`` as the native array a kernel takes (no copy)."""
    if kind is _TORCH_CPU:
        try:
            return a.numpy()
        except RuntimeError:  # requires grad, or a lazily negated/conjugated view
            return a.detach().resolve_conj().resolve_neg().numpy()
    if kind.framework == "torch":
        a = a.detach()
        import cupy

        return cupy.from_dlpack(a)
    return a


def from_native(out: Any, kind: ArrayKind) -> Any:
    """View a kernel's native result as an array of ``kind`` (no copy)."""
    if kind.framework == "torch":
        torch = sys.modules["torch"]  # imported: the inputs were tensors
        if kind.device == "cpu":
            return torch.from_numpy(out)
        return torch.from_dlpack(out)
    return out
