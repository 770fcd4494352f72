"""Array kinds: which library and device an input lives on, and zero-copy moves between them.

A kernel sees one *native* kind: ``"numpy"`` arrays for CPU kernels, CuPy arrays for CUDA
kernels. Torch tensors are viewed as one of those without copying (``Tensor.numpy()`` on the
CPU, DLPack on CUDA) and results are viewed back as tensors. Like einops, a framework is only
touched when the user's arrays show it is already imported.
"""

from __future__ import annotations

import os
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

        if _TORCH_CUDA_VIEW:
            view = cupy_view_of_tensor(a, cupy)
            if view is not None:
                return view
        return cupy.from_dlpack(a)
    return a


#: Whether CUDA tensors reach the CUDA kernels through :func:`cupy_view_of_tensor` instead of
#: DLPack (``FUSEKIT_TORCH_CUDA_VIEW=1``). Off until checked on a GPU: on an H200 the three
#: ``cupy.from_dlpack`` calls of a one-token ``fp8_gemv`` took about 0.19 ms under cProfile,
#: most of the torch path's extra cost over CuPy arrays (docs/benchmarks.md, session 21).
_TORCH_CUDA_VIEW = os.environ.get("FUSEKIT_TORCH_CUDA_VIEW", "0") == "1"
_CUPY_DTYPES = {
    "torch.float32": "float32", "torch.float64": "float64", "torch.float16": "float16",
    "torch.int64": "int64", "torch.int32": "int32", "torch.int16": "int16",
    "torch.int8": "int8", "torch.uint8": "uint8", "torch.bool": "bool",
}


def cupy_view_of_tensor(a: Any, cupy: Any) -> Any:
    """A CuPy array over the memory of CUDA tensor ``a`` without DLPack, or ``None``.

    The array keeps ``a`` alive (it owns the memory) and has its shape and strides. ``None``
    (the caller then uses DLPack, which orders the two streams with an event) where the
    dtype has no NumPy twin (bfloat16, FP8), the tensor is empty, or torch's current stream
    on the tensor's device is not CuPy's current stream: work queued on the one would not be
    ordered before a kernel launched on the other.
    """
    dtype = _CUPY_DTYPES.get(str(a.dtype))
    if dtype is None or a.numel() == 0:
        return None
    torch = sys.modules["torch"]
    current = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    index = a.device.index
    if current is None or current(index) != cupy.cuda.get_current_stream().ptr:
        return None
    itemsize = a.element_size()
    shape, strides = tuple(a.shape), a.stride()
    extent = 1 + sum((n - 1) * st for n, st in zip(shape, strides, strict=True))
    memory = cupy.cuda.UnownedMemory(a.data_ptr(), extent * itemsize, a, index)
    return cupy.ndarray(shape, dtype, cupy.cuda.MemoryPointer(memory, 0),
                        tuple(st * itemsize for st in strides))


def from_native(out: Any, kind: ArrayKind) -> Any:
    """View a kernel's native result as an array of ``kind`` (no copy)."""
    if kind.framework == "torch":
        torch = sys.modules["torch"]  # imported: the inputs were tensors
        if kind.device == "cpu":
            return torch.from_numpy(out)
        return torch.from_dlpack(out)
    return out
