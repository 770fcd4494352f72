"""The torch bridge: every differentiable fusekit op as ``torch.ops.fusekit.<name>``.

Importing this module registers the ops with ``torch.library`` (a fake kernel for tracing
and ``torch.compile``, CPU and CUDA kernels that dispatch through fusekit's registry, and
autograd). The functions in :mod:`fusekit.ops` import it on their own the first time they
see a tensor; import it yourself to call ``torch.ops.fusekit.*`` directly.

The ops are defined with ``Library.define`` + ``impl`` rather than ``torch.library.custom_op``:
on our machines that path had about half the per-call cost.

Example:
    >>> import torch, fusekit.torch
    >>> x, A, B = torch.ones(3, 4), torch.ones(1, 2, 2), torch.ones(1, 2, 2)
    >>> torch.ops.fusekit.kron_linear(x, A, B).shape
    torch.Size([3, 4])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import ops as _ops  # noqa: F401  (declares every op)
from ._registry import Op, all_ops

_lib = torch.library.Library("fusekit", "DEF")


def _to_bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16) if t.dtype == torch.float32 else t


def _make_impl(op: Op) -> Callable[..., Any]:
    n = len(op.array_args)
    trailing = (*op.params, "backend")  # schema order after the tensors

    def impl(*args: Any, **kwargs: Any) -> Any:
        # torch may pass trailing arguments by keyword or drop those equal to their default.
        tensors = args[:n]
        params = dict(zip(trailing, args[n:], strict=False), **kwargs)
        backend = params.pop("backend", None)
        if all(t.dtype == torch.bfloat16 for t in tensors):
            # No kernel takes bfloat16 directly: compute in float32 (exact for bfloat16 inputs)
            # and round floating results back once at the end.
            out = op.run([t.float() for t in tensors], params, backend)
            if not op.torch.bf16_outputs:
                return out
            if isinstance(out, tuple):
                return tuple(_to_bf16(o) for o in out)
            return _to_bf16(out)
        return op.run(tensors, params, backend)

    impl.__name__ = f"{op.name}_impl"
    return impl


def _register(op: Op) -> None:
    bridge = op.torch
    _lib.define(op.name + bridge.schema)
    impl = _make_impl(op) if bridge.impl is None else bridge.impl
    _lib.impl(op.name, impl, "CPU")
    _lib.impl(op.name, impl, "CUDA")
    qualname = f"fusekit::{op.name}"
    torch.library.register_fake(qualname, bridge.fake, lib=_lib)
    if bridge.backward is not None:
        torch.library.register_autograd(
            qualname, bridge.backward, setup_context=bridge.setup_context, lib=_lib
        )


for _op in all_ops():
    if _op.torch is not None:
        _register(_op)
