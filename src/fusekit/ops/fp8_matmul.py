"""FP8 block-scaled matrix products: ``y = x W^T`` with W in the DeepSeek-V3 FP8 layout.

W is ``[N, K]`` float8_e4m3fn codes with float32 ``weight_scale_inv`` per 128x128 tile; x has
M rows (M = 1 is the GEMV of single-token decoding; up to 64 and beyond for prefill). Products
accumulate in float32 (float64 for float64 input); the transposed product ``g W`` is the
gradient with respect to x. The fused MoE expert computes ``down(silu(gate(x)) * up(x))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InputError
from .._registry import Op, TorchBridge, array_dtype
from ._common import is_tensor, torch_call
from .fp8 import (
    FP8_BLOCK,
    _as_code_bytes,
    _require_block,
    check_weight_and_scales,
    fp8_block_dequantize_reference,
)

__all__ = [
    "fp8_expert",
    "fp8_gate_up",
    "fp8_gate_up_reference",
    "fp8_expert_reference",
    "fp8_gemm",
    "fp8_gemv",
    "fp8_gemv_reference",
    "fp8_gemv_t",
    "fp8_gemv_t_reference",
]

_X_DTYPES = ("float32", "float64", "bfloat16")


def _check_x(op: str, name: str, x: Any, k: int, what: str) -> str:
    if x.ndim < 1 or x.shape[-1] != k:
        raise InputError(
            f"{op}: {name} must have shape (..., {what}) = (..., {k}) to match the weight, got "
            f"{tuple(x.shape)}"
        )
    dtype = array_dtype(x)
    if dtype not in _X_DTYPES:
        raise InputError(f"{op}: {name} has dtype {dtype}; use float32 or bfloat16 "
                         "activations (float64 for checks)")
    return dtype


def _check_gemv(x: Any, w_fp8: Any, weight_scale_inv: Any, block: int = FP8_BLOCK) -> str:
    check_weight_and_scales("fp8_gemv", w_fp8, weight_scale_inv, block)
    return _check_x("fp8_gemv", "x", x, w_fp8.shape[1], "K")


def _check_gemv_t(grad_y: Any, w_fp8: Any, weight_scale_inv: Any,
                  block: int = FP8_BLOCK) -> str:
    check_weight_and_scales("fp8_gemv_t", w_fp8, weight_scale_inv, block)
    return _check_x("fp8_gemv_t", "grad_y", grad_y, w_fp8.shape[0], "N")


def _gemv_fake(x: Any, w_fp8: Any, weight_scale_inv: Any, block: int = FP8_BLOCK,
               backend: str | None = None) -> Any:
    _check_gemv(x, w_fp8, weight_scale_inv, block)
    return x.new_empty((*x.shape[:-1], w_fp8.shape[0]))


def _gemv_t_fake(grad_y: Any, w_fp8: Any, weight_scale_inv: Any, block: int = FP8_BLOCK,
                 backend: str | None = None) -> Any:
    _check_gemv_t(grad_y, w_fp8, weight_scale_inv, block)
    return grad_y.new_empty((*grad_y.shape[:-1], w_fp8.shape[1]))


def _gemv_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, w_fp8, weight_scale_inv, block, backend = inputs
    ctx.save_for_backward(w_fp8, weight_scale_inv)
    ctx.block, ctx.backend = block, backend


def _gemv_backward(ctx: Any, grad_y: Any) -> tuple[Any, None, None, None, None]:
    # y = x W^T  =>  dx = g W: the transposed product over the same FP8 weight.
    w_fp8, weight_scale_inv = ctx.saved_tensors
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = fp8_gemv_t(grad_y.contiguous(), w_fp8, weight_scale_inv, block=ctx.block,
                            backend=ctx.backend)
    return grad_x, None, None, None, None


def _gemv_t_backward(ctx: Any, grad_x: Any) -> tuple[Any, None, None, None, None]:
    w_fp8, weight_scale_inv = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[0]:
        grad = fp8_gemv(grad_x.contiguous(), w_fp8, weight_scale_inv, block=ctx.block,
                        backend=ctx.backend)
    return grad, None, None, None, None


fp8_gemv_op = Op(
    name="fp8_gemv",
    family="fp8_matmul",
    array_args=("x", "w_fp8", "weight_scale_inv"),
    params=("block",),
    check=_check_gemv,
    torch=TorchBridge(
        schema="(Tensor x, Tensor w_fp8, Tensor weight_scale_inv, int block=128, "
        "str? backend=None) -> Tensor",
        fake=_gemv_fake,
        setup_context=_gemv_setup,
        backward=_gemv_backward,
    ),
)
fp8_gemv_t_op = Op(
    name="fp8_gemv_t",
    family="fp8_matmul",
    array_args=("grad_y", "w_fp8", "weight_scale_inv"),
    params=("block",),
    check=_check_gemv_t,
    torch=TorchBridge(
        schema="(Tensor grad_y, Tensor w_fp8, Tensor weight_scale_inv, int block=128, "
        "str? backend=None) -> Tensor",
        fake=_gemv_t_fake,
        setup_context=_gemv_setup,  # same saved state: the weight, its scales, block, backend
        backward=_gemv_t_backward,
    ),
)


def _weight_pair(op: str, name: str, pair: Any) -> tuple[Any, Any]:
    """``(w_fp8, weight_scale_inv)`` from ``pair``, or an :class:`InputError` saying so."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        got = f"a {type(pair).__name__}" + (f" of length {len(pair)}"
                                            if isinstance(pair, (tuple, list)) else "")
        raise InputError(
            f"{op}: {name} must be a pair (w_fp8, weight_scale_inv), as fp8_block_quantize "
            f"returns it, got {got}"
        )
    return pair[0], pair[1]


def _run_mixed(op: Op, x: Any, w_fp8: Any, weight_scale_inv: Any, block: int,
               backend: str | None) -> Any:
    """Run a product whose activations may be bfloat16 while the weight is FP8 bytes."""
    if is_tensor(x):
        import torch

        _require_block(op.name, block)  # before torch's schema sees it

        w = _as_code_bytes(w_fp8, "e4m3fn")
        if x.dtype == torch.bfloat16:  # float32 accumulation, one rounding at the end
            return torch_call(op.name, {"x": x.float(), "w_fp8": w,
                              "weight_scale_inv": weight_scale_inv}, backend, block
                              ).to(torch.bfloat16)
        return torch_call(op.name, {"x": x, "w_fp8": w, "weight_scale_inv": weight_scale_inv},
                          backend, block)
    return op.run((x, _as_code_bytes(w_fp8, "e4m3fn"), weight_scale_inv), {"block": block},
                  backend)


def fp8_gemv(x: Any, w_fp8: Any, weight_scale_inv: Any, *, block: int = FP8_BLOCK,
             backend: str | None = None) -> Any:
    """``y = x W^T`` with W block-scaled FP8, without dequantizing W in memory.

    Example:
        >>> import numpy as np, fusekit
        >>> w = np.random.default_rng(0).standard_normal((256, 384)).astype(np.float32)
        >>> w_fp8, s = fusekit.ops.fp8_block_quantize(w)
        >>> x = np.ones((1, 384), np.float32)
        >>> fusekit.ops.fp8_gemv(x, w_fp8, s).shape
        (1, 256)

    Args:
        x: Activations ``(..., K)``: float32 (float64 for checks); torch also bfloat16
            (accumulated in float32, rounded once). NaN/Inf propagate as in a matmul.
        w_fp8: Weight codes ``[N, K]``, float8_e4m3fn (uint8 bytes, a ``torch.float8_e4m3fn``
            tensor or an ``ml_dtypes`` array). The NaN codes ``0x7F`` and ``0xFF`` are not
            checked for by the CPU kernels, which read them as +-480 (the reference and CUDA
            kernels give NaN): :func:`fp8_block_quantize` never writes them (it refuses NaN),
            and a check would read all of W a second time on every call.
        weight_scale_inv: float32 ``[ceil(N/block), ceil(K/block)]``.
        block: Scale tile side (128 in DeepSeek-V3).
        backend: As for every op.

    Returns:
        ``y`` of shape ``(..., N)`` in ``x``'s dtype; differentiable in ``x`` for tensors.

    Non-contiguous views (of ``x`` or the weight) give the same result; the CPU and CUDA
    kernels copy them to contiguous memory first, which costs a pass over the data.

    Accuracy: every product is exact and the sums are float32, so each output is within
    ``1e-6 * sum_k |x_k w_k|`` of the float64 product (tested). Bfloat16 activations get the
    same bound for their values, then one rounding of the output to bfloat16 (``2^-9``
    relative). On CPUs with AVX-512 BF16 the products run as bfloat16 dot products
    (``vdpbf16ps``) with float32 activations split exactly into up to three bfloat16 parts;
    bfloat16 activations need one, so they run about 2-3x faster there at M >= 4.
    """
    return _run_mixed(fp8_gemv_op, x, w_fp8, weight_scale_inv, block, backend)


#: ``fp8_gemm`` is the same op: M (the rows of x) may be anything from 1 up.
fp8_gemm = fp8_gemv


def fp8_gemv_t(grad_y: Any, w_fp8: Any, weight_scale_inv: Any, *, block: int = FP8_BLOCK,
               backend: str | None = None) -> Any:
    """The transposed product ``g W`` (the gradient of :func:`fp8_gemv` w.r.t. x).

    Args:
        grad_y: ``(..., N)`` float32 (torch: also bfloat16).
        w_fp8: Weight codes ``[N, K]``.
        weight_scale_inv: float32 ``[ceil(N/block), ceil(K/block)]``.
        block: Scale tile side.
        backend: As for every op.

    Returns:
        ``(..., K)`` in ``grad_y``'s dtype.

    Accuracy as for :func:`fp8_gemv` (float32 sums of exact products). On CPUs with AVX-512
    BF16, from 12 rows of ``grad_y`` whose values are all bfloat16 (the gradients of a
    bfloat16 model) the products run as bfloat16 dot products, 2x faster at 64 rows.
    """
    return _run_mixed(fp8_gemv_t_op, grad_y, w_fp8, weight_scale_inv, block, backend)


def fp8_gemv_reference(x: np.ndarray, w_fp8: np.ndarray, weight_scale_inv: np.ndarray,
                       block: int = FP8_BLOCK) -> np.ndarray:
    """Float64 oracle of :func:`fp8_gemv`."""
    w = fp8_block_dequantize_reference(w_fp8, weight_scale_inv, "float64", block)
    return (x.astype(np.float64) @ w.T).astype(x.dtype)


def fp8_gemv_t_reference(grad_y: np.ndarray, w_fp8: np.ndarray, weight_scale_inv: np.ndarray,
                         block: int = FP8_BLOCK) -> np.ndarray:
    """Float64 oracle of :func:`fp8_gemv_t`."""
    w = fp8_block_dequantize_reference(w_fp8, weight_scale_inv, "float64", block)
    return (grad_y.astype(np.float64) @ w).astype(grad_y.dtype)


# --------------------------------------------------------------------- fused MoE expert


def _check_gate_up(x: Any, w_gate: Any, s_gate: Any, w_up: Any, s_up: Any,
                   block: int = FP8_BLOCK) -> str:
    op = "fp8_gate_up"
    check_weight_and_scales(op, w_gate, s_gate, block)
    check_weight_and_scales(op, w_up, s_up, block)
    if tuple(w_gate.shape) != tuple(w_up.shape):
        raise InputError(f"{op}: gate and up projections must have the same shape [I, H], got "
                         f"{list(w_gate.shape)} and {list(w_up.shape)}")
    return _check_x(op, "x", x, w_gate.shape[1], "H")


def _gate_up_fake(x: Any, w_gate: Any, s_gate: Any, w_up: Any, s_up: Any,
                  block: int = FP8_BLOCK, backend: str | None = None) -> Any:
    _check_gate_up(x, w_gate, s_gate, w_up, s_up, block)
    return x.new_empty((*x.shape[:-1], w_gate.shape[0]))


def _gate_up_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    x, w_gate, s_gate, w_up, s_up, block, backend = inputs
    ctx.save_for_backward(x, w_gate, s_gate, w_up, s_up)
    ctx.block, ctx.backend = block, backend


def _gate_up_backward(ctx: Any, grad_h: Any) -> tuple[Any, ...]:
    # h = silu(g) u with g = x Wg^T, u = x Wu^T; g and u are recomputed (two more passes).
    import torch

    x, w_gate, s_gate, w_up, s_up = ctx.saved_tensors
    grad_x = None
    if ctx.needs_input_grad[0]:
        kw = {"block": ctx.block, "backend": ctx.backend}
        g = fp8_gemv(x, w_gate, s_gate, **kw)
        u = fp8_gemv(x, w_up, s_up, **kw)
        sig = torch.sigmoid(g)
        grad_g = grad_h * u * sig * (1 + g * (1 - sig))
        grad_u = grad_h * g * sig
        grad_x = (fp8_gemv_t(grad_g.contiguous(), w_gate, s_gate, **kw)
                  + fp8_gemv_t(grad_u.contiguous(), w_up, s_up, **kw))
    return grad_x, None, None, None, None, None, None


fp8_gate_up_op = Op(
    name="fp8_gate_up",
    family="fp8_matmul",
    array_args=("x", "w_gate", "s_gate", "w_up", "s_up"),
    params=("block",),
    check=_check_gate_up,
    torch=TorchBridge(
        schema="(Tensor x, Tensor w_gate, Tensor s_gate, Tensor w_up, Tensor s_up, "
        "int block=128, str? backend=None) -> Tensor",
        fake=_gate_up_fake,
        setup_context=_gate_up_setup,
        backward=_gate_up_backward,
    ),
)


def fp8_gate_up(x: Any, gate: tuple[Any, Any], up: tuple[Any, Any], *,
                block: int = FP8_BLOCK, backend: str | None = None) -> Any:
    """``silu(x W_gate^T) * (x W_up^T)``: the first half of a MoE expert, in one pass.

    Args:
        x: ``(..., H)`` activations (float32; torch also bfloat16, accumulated in float32).
        gate: ``(w_fp8 [I, H], weight_scale_inv)`` of ``gate_proj``.
        up: ``(w_fp8 [I, H], weight_scale_inv)`` of ``up_proj``.
        block: Scale tile side.
        backend: As for every op.

    Returns:
        ``(..., I)`` in ``x``'s dtype; differentiable in ``x`` for tensors.
    """
    wg, sg = _weight_pair("fp8_gate_up", "gate", gate)
    wu, su = _weight_pair("fp8_gate_up", "up", up)
    wg, wu = _as_code_bytes(wg, "e4m3fn"), _as_code_bytes(wu, "e4m3fn")
    arrays = {"x": x, "w_gate": wg, "s_gate": sg, "w_up": wu, "s_up": su}
    if is_tensor(x):
        import torch

        _require_block("fp8_gate_up", block)  # before torch's schema sees it
        if x.dtype == torch.bfloat16:
            return torch_call("fp8_gate_up", {**arrays, "x": x.float()}, backend, block
                              ).to(torch.bfloat16)
        return torch_call("fp8_gate_up", arrays, backend, block)
    return fp8_gate_up_op.run(tuple(arrays.values()), {"block": block}, backend)


def fp8_expert(x: Any, gate: tuple[Any, Any], up: tuple[Any, Any], down: tuple[Any, Any], *,
               block: int = FP8_BLOCK, backend: str | None = None) -> Any:
    """A DeepSeek-V3 MoE expert on FP8 weights: ``down(silu(gate(x)) * up(x))``.

    Two passes: :func:`fp8_gate_up` (both projections and the SiLU product in one launch) and
    :func:`fp8_gemv` for ``down``; every weight byte is read once per call.

    Example:
        >>> import numpy as np, fusekit
        >>> rng = np.random.default_rng(0)
        >>> q = lambda *s: fusekit.ops.fp8_block_quantize(rng.standard_normal(s, np.float32))
        >>> y = fusekit.ops.fp8_expert(np.ones((1, 256), np.float32), q(128, 256), q(128, 256),
        ...                            q(256, 128))
        >>> y.shape
        (1, 256)

    Args:
        x: ``(..., H)`` activations.
        gate: ``(w_fp8 [I, H], weight_scale_inv)`` of ``gate_proj``.
        up: ``(w_fp8 [I, H], weight_scale_inv)`` of ``up_proj``.
        down: ``(w_fp8 [H, I], weight_scale_inv)`` of ``down_proj``.
        block: Scale tile side.
        backend: As for every op.

    Returns:
        ``(..., H)`` in ``x``'s dtype.
    """
    w_down, s_down = _weight_pair("fp8_expert", "down", down)
    h = fp8_gate_up(x, gate, up, block=block, backend=backend)
    return fp8_gemv(h, w_down, s_down, block=block, backend=backend)


def fp8_gate_up_reference(x: np.ndarray, w_gate: np.ndarray, s_gate: np.ndarray,
                          w_up: np.ndarray, s_up: np.ndarray, block: int = FP8_BLOCK
                          ) -> np.ndarray:
    """Float64 oracle of :func:`fp8_gate_up`."""
    x64 = x.astype(np.float64)
    g = fp8_gemv_reference(x64, w_gate, s_gate, block)
    u = fp8_gemv_reference(x64, w_up, s_up, block)
    return (g / (1 + np.exp(-g)) * u).astype(x.dtype)


def fp8_expert_reference(x: np.ndarray, gate: tuple[np.ndarray, np.ndarray],
                         up: tuple[np.ndarray, np.ndarray], down: tuple[np.ndarray, np.ndarray],
                         block: int = FP8_BLOCK) -> np.ndarray:
    """Float64 oracle of :func:`fp8_expert`."""
    h = fp8_gate_up_reference(x.astype(np.float64), *gate, *up, block)
    return fp8_gemv_reference(h, *down, block).astype(x.dtype)
