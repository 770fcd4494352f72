"""Check fusekit's CUDA kernels against the float64 references, then time them on the GPU.

Run on a machine with an NVIDIA GPU, CuPy and a CUDA build of torch::

    python benchmarks/gpu/run_gpu_checks.py            # checks, then the timing table
    python benchmarks/gpu/run_gpu_checks.py --no-timing

It prints ``fusekit.info()``, one PASS/FAIL line per correctness check (CuPy arrays and torch
CUDA tensors through the public API with ``backend="cuda"``, torch autograd included) of the
kron, fp8, kron_svd, spike, mst, network_simulate, cable_network_simulate and ion_sensitivity
kernels (spike, mst, the networks and ion_sensitivity with CuPy only; Borůvka on Delaunay
graphs up to 2^20 vertices against the CPU's spike-Kruskal, with one timing line each), then
four timing tables: ``kron_linear`` at LLaMA-like sizes (a 4096 x 4096 weight as 64 x 64
factors) next to the dense ``x @ W.T`` product and a cuBLAS reshape+matmul version written in
torch, ``fp8_gemv`` on DeepSeek-V3 expert shapes next to a bf16 matmul on weights dequantized
at load time and a dequantize-then-matmul in torch, ``kpsvd`` (randomized and exact) of a 4096
x 4096 weight next to ``torch.svd_lowrank`` and ``torch.linalg.svd`` of the weight (PiSSA's two
initialisations), and ``ion_sensitivity`` of 10,000 HH neurons over 100 ms next to
``ion_simulate``'s forward pass. It exits 1 when any check fails, 2 when there is no usable
GPU. About four minutes on an H200 (benchmarks/gpu/README.md); ``--only`` runs some sections.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

# Small check shapes launch few blocks; Numba would warn about low occupancy on each.
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")

import numpy as np

import fusekit
from fusekit._registry import unavailable_reason
from fusekit.ops.fp8 import (
    FP8_FORMATS,
    decode_table,
    fp8_act_quantize_reference,
    fp8_block_dequantize_reference,
    fp8_block_quantize_reference,
    fp8_decode_reference,
    fp8_encode_reference,
)
from fusekit.ops.fp8_matmul import fp8_gemv_reference, fp8_gemv_t_reference
from fusekit.ops.kron import kron_factor_grads_reference, kron_linear_reference
from fusekit.ops.kron_svd import (
    kpsvd_reference,
    kron_rearrange_inverse_reference,
    kron_rearrange_reference,
)

# numba-cuda 0.30 registers an overload of np.row_stack, which NumPy 2.5 removed, and then
# fails on every first kernel compilation. fusekit's cuda backend reports that as unavailable
# (with what to upgrade); this script restores the alias so that it can check the kernels on
# such an image all the same.
ROW_STACK_SHIM = not hasattr(np, "row_stack")
if ROW_STACK_SHIM:
    np.row_stack = np.vstack

#: (batch shape, r, m1, n1, m2, n2): odd sizes leave partial tiles on every axis.
CHECK_SHAPES = [
    ((5,), 3, 7, 9, 6, 11),
    ((2, 3), 1, 16, 16, 16, 16),
    ((33,), 4, 64, 64, 64, 64),
    ((4,), 2, 17, 33, 31, 19),
    ((1,), 1, 1, 5, 3, 1),
    ((), 2, 3, 4, 5, 6),
]
#: Largest error allowed, relative to the largest reference value.
TOL = {"float32": 1e-4, "float64": 1e-11, "bfloat16": 3e-2}
RANKS = (1, 4, 16)
BATCHES = (1, 16, 256)
FACTOR = 64  # 4096 = 64 * 64 on both sides

#: (N, K, block) of the FP8 weight checks: partial tiles on both axes, and a real expert.
FP8_WEIGHT_SHAPES = [(9, 7, 4), (300, 200, 128), (257, 129, 128), (2048, 7168, 128)]
#: Rows of x in the FP8 product checks: 100 needs two passes over the weight.
FP8_ROWS = (1, 3, 16, 64, 100)
#: DeepSeek-V3 expert weights [N, K]: gate_proj / up_proj, then down_proj.
EXPERT_SHAPES = (("gate/up", 2048, 7168), ("down", 7168, 2048))
EXPERT_ROWS = (1, 4, 16, 64)

#: (A shape, B shape, rank) of the kron_svd checks: tiny, odd, a vector factor, 512 x 512 R(W).
KPSVD_SHAPES = [((4, 3), (3, 5), 2), ((7, 9), (6, 11), 3), ((1, 5), (3, 1), 1),
                ((16, 32), (32, 16), 4)]
KPSVD_METHODS = ("exact", "randomized")
#: Rank of the kpsvd timing (a 4096 x 4096 weight as 64 x 64 factors, like kron_linear's).
KPSVD_RANK = 16


class Checks:
    """Counts checks and remembers the failed ones."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def compare(self, name: str, got: np.ndarray, ref: np.ndarray, tol: float) -> None:
        got = np.asarray(got, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if got.shape != ref.shape:
            self.fail(name, f"shape {got.shape}, expected {ref.shape}")
            return
        scale = max(float(np.abs(ref).max(initial=0.0)), 1e-30)
        err = float(np.abs(got - ref).max(initial=0.0)) / scale
        if err <= tol and np.isfinite(got).all():
            self.passed += 1
            print(f"  PASS {name}: rel. error {err:.1e} (tol {tol:.0e})")
        else:
            self.fail(name, f"rel. error {err:.1e} > tol {tol:.0e}")

    def same(self, name: str, got: np.ndarray, ref: np.ndarray, bitwise: bool = False) -> None:
        """Exact equality: of the bits with ``bitwise``, else of the values (NaN equals NaN)."""
        got, ref = np.asarray(got), np.asarray(ref)
        if got.shape != ref.shape or got.dtype != ref.dtype:
            self.fail(name, f"{got.dtype}{got.shape}, expected {ref.dtype}{ref.shape}")
            return
        if bitwise:
            uint = np.dtype(f"u{got.dtype.itemsize}")
            bad = np.flatnonzero(got.view(uint) != ref.view(uint))
        else:
            diff = got != ref
            if got.dtype.kind == "f":
                diff &= ~(np.isnan(got) & np.isnan(ref))
            bad = np.flatnonzero(diff)
        if bad.size == 0:
            self.passed += 1
            print(f"  PASS {name}: exact")
        else:
            i = int(bad[0])
            self.fail(name, f"{bad.size} of {got.size} differ, first at flat index {i}: "
                      f"{got.reshape(-1)[i]!r} vs {ref.reshape(-1)[i]!r}")

    def expect(self, name: str, ok: bool, detail: str = "") -> None:
        if ok:
            self.passed += 1
            print(f"  PASS {name}")
        else:
            self.fail(name, detail)

    def fail(self, name: str, detail: str) -> None:
        self.failed.append(name)
        print(f"  FAIL {name}: {detail}")

    def run(self, name: str, fn: Callable[..., None], *args: Any) -> None:
        """Run one group of checks; an exception fails the group and the script goes on."""
        try:
            fn(*args)
        except Exception:
            self.fail(name, "raised\n" + traceback.format_exc())


def random_inputs(
    batch: tuple[int, ...], r: int, m1: int, n1: int, m2: int, n2: int, dtype: str, seed: int
) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*batch, n1 * n2)).astype(dtype)
    # Divide first: a float32 array over a NumPy float64 scalar is float64 (NEP 50).
    A = (rng.standard_normal((r, m1, n1)) / np.sqrt(n1)).astype(dtype)
    B = (rng.standard_normal((r, m2, n2)) / np.sqrt(n2)).astype(dtype)
    g = rng.standard_normal((*batch, m1 * m2)).astype(dtype)
    return x, A, B, g


def label(shape: tuple[Any, ...], dtype: str) -> str:
    batch, r, m1, n1, m2, n2 = shape
    return f"{dtype} batch={batch} r={r} A={m1}x{n1} B={m2}x{n2}"


# ------------------------------------------------------------------------ correctness


def cupy_cases(checks: Checks, cupy: Any, name: str, dtype: str, arrays: tuple) -> None:
    """kron_linear (plain and with transposed factors) and kron_factor_grads on CuPy arrays."""
    x, A, B, g = arrays
    xc, Ac, Bc, gc = (cupy.asarray(a) for a in arrays)
    tol = TOL[dtype]

    y = fusekit.ops.kron_linear(xc, Ac, Bc, backend="cuda")
    checks.expect(f"kron_linear {name}: returns CuPy", isinstance(y, cupy.ndarray))
    checks.compare(f"kron_linear {name}", cupy.asnumpy(y), kron_linear_reference(x, A, B), tol)

    # The backward product: non-contiguous (transposed) factors.
    y = fusekit.ops.kron_linear(gc, Ac.transpose(0, 2, 1), Bc.transpose(0, 2, 1), backend="cuda")
    ref = kron_linear_reference(g, A.transpose(0, 2, 1), B.transpose(0, 2, 1))
    checks.compare(f"kron_linear A^T, B^T {name}", cupy.asnumpy(y), ref, tol)

    gA, gB = fusekit.ops.kron_factor_grads(xc, gc, Ac, Bc, backend="cuda")
    ref_A, ref_B = kron_factor_grads_reference(x, g, A, B)
    checks.compare(f"kron_factor_grads A {name}", cupy.asnumpy(gA), ref_A, tol)
    checks.compare(f"kron_factor_grads B {name}", cupy.asnumpy(gB), ref_B, tol)


def cupy_empty_batch(checks: Checks, cupy: Any) -> None:
    """An empty batch gives an empty product and zero factor gradients."""
    arrays = random_inputs((0,), 2, 3, 4, 5, 6, "float32", 0)
    xc, Ac, Bc, gc = (cupy.asarray(a) for a in arrays)
    y = fusekit.ops.kron_linear(xc, Ac, Bc, backend="cuda")
    checks.expect("kron_linear of an empty batch has shape (0, 15)", y.shape == (0, 15))
    gA, gB = fusekit.ops.kron_factor_grads(xc, gc, Ac, Bc, backend="cuda")
    checks.expect(
        "kron_factor_grads of an empty batch are zero",
        not bool(gA.any()) and not bool(gB.any()) and gA.shape == Ac.shape,
    )


def cupy_auto_picks_cuda(checks: Checks, cupy: Any) -> None:
    """With no backend requested, CuPy inputs go to the cuda kernels."""
    from fusekit._arrays import kind_of
    from fusekit.ops.kron import kron_factor_grads_op, kron_linear_op

    x = cupy.ones((2, 12), dtype=cupy.float32)
    for op in (kron_linear_op, kron_factor_grads_op):
        kernel = op.select(kind_of(x), "float32", "auto")
        checks.expect(
            f"auto picks the cuda kernel of {op.name} for CuPy arrays",
            kernel.backend == "cuda",
            f"picked {kernel.backend}",
        )


def check_cupy(checks: Checks, cupy: Any) -> None:
    print("CuPy arrays, backend='cuda':")
    for dtype in ("float32", "float64"):
        for seed, shape in enumerate(CHECK_SHAPES):
            name = label(shape, dtype)
            arrays = random_inputs(*shape, dtype, seed)
            checks.run(f"CuPy {name}", cupy_cases, checks, cupy, name, dtype, arrays)
    checks.run("CuPy empty batch", cupy_empty_batch, checks, cupy)
    checks.run("auto selection", cupy_auto_picks_cuda, checks, cupy)


def torch_forward(checks: Checks, torch: Any, name: str, dtype: str, arrays: tuple) -> None:
    """kron_linear on torch CUDA tensors returns a CUDA tensor with the reference's values."""
    x, A, B, _ = arrays
    xt, At, Bt = (torch.from_numpy(a).to("cuda") for a in (x, A, B))
    y = fusekit.ops.kron_linear(xt, At, Bt, backend="cuda")
    checks.expect(
        f"torch kron_linear {name}: CUDA tensor out", isinstance(y, torch.Tensor) and y.is_cuda
    )
    ref = kron_linear_reference(x, A, B)
    checks.compare(f"torch kron_linear {name}", y.cpu().numpy(), ref, TOL[dtype])


def torch_backward(checks: Checks, torch: Any, name: str, dtype: str, arrays: tuple) -> None:
    """torch autograd through kron_linear gives the float64 reference gradients."""
    x, A, B, g = arrays
    xt, At, Bt = (torch.from_numpy(a).to("cuda").requires_grad_(True) for a in (x, A, B))
    y = fusekit.ops.kron_linear(xt, At, Bt, backend="cuda")
    (y * torch.from_numpy(g).to("cuda")).sum().backward()
    ref_x = kron_linear_reference(g, A.transpose(0, 2, 1), B.transpose(0, 2, 1))
    ref_A, ref_B = kron_factor_grads_reference(x, g, A, B)
    tol = TOL[dtype]
    checks.compare(f"torch autograd dx {name}", xt.grad.cpu().numpy(), ref_x, tol)
    checks.compare(f"torch autograd dA {name}", At.grad.cpu().numpy(), ref_A, tol)
    checks.compare(f"torch autograd dB {name}", Bt.grad.cpu().numpy(), ref_B, tol)


def torch_bfloat16(checks: Checks, torch: Any) -> None:
    """bfloat16 tensors are computed in float32 and come back as bfloat16."""
    x, A, B, _ = random_inputs((8,), 2, 16, 16, 16, 16, "float32", 7)
    xt, At, Bt = (torch.from_numpy(a).to("cuda", torch.bfloat16) for a in (x, A, B))
    y = fusekit.ops.kron_linear(xt, At, Bt, backend="cuda")
    checks.expect("torch bfloat16 kron_linear returns bfloat16", y.dtype == torch.bfloat16)
    ref = kron_linear_reference(*(t.float().cpu().numpy() for t in (xt, At, Bt)))
    checks.compare("torch bfloat16 kron_linear", y.float().cpu().numpy(), ref, TOL["bfloat16"])


def check_torch(checks: Checks, torch: Any) -> None:
    print("torch CUDA tensors, backend='cuda':")
    for dtype in ("float32", "float64"):
        for seed, shape in enumerate(CHECK_SHAPES):
            name = label(shape, dtype)
            arrays = random_inputs(*shape, dtype, 100 + seed)
            checks.run(f"torch kron_linear {name}", torch_forward, checks, torch, name, dtype,
                       arrays)
            checks.run(f"torch autograd {name}", torch_backward, checks, torch, name, dtype,
                       arrays)
    checks.run("torch bfloat16", torch_bfloat16, checks, torch)


# ---------------------------------------------------------------------- fp8 correctness


def fp8_encode_values(dtype: str, seed: int) -> np.ndarray:
    """Random bit patterns (NaN, inf, subnormals, huge, tiny), specials and every FP8 tie."""
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    else:
        bits = rng.integers(0, 2**64, 200_000, dtype=np.uint64)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 448, 464, 480, 57344,
                        61440, 2**-9, 2**-10, 2**-16, 2**-17, 3 * 2**-11], dtype=dtype)
    pieces = [bits.view(dtype), special, rng.standard_normal(10_000).astype(dtype) * 100]
    for fmt in FP8_FORMATS:
        t = decode_table(fmt)
        finite = np.sort(t[np.isfinite(t)])
        mid = ((finite[1:] + finite[:-1]) / 2).astype(dtype)  # exact ties
        pieces += [mid, np.nextafter(mid, mid.dtype.type(np.inf)),
                   np.nextafter(mid, mid.dtype.type(-np.inf)), finite.astype(dtype)]
    return np.concatenate(pieces)


def fp8_weight(n: int, k: int, dtype: str, seed: int) -> np.ndarray:
    """A weight whose rows span several orders of magnitude, with one all-zero tile."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)) * np.exp2(rng.integers(-12, 12, (n, 1)))
    w[: min(n, 4), : min(k, 4)] = 0
    return w.astype(dtype)


def fp8_cupy_codes(checks: Checks, cupy: Any) -> None:
    """Encode (both formats, both saturate modes) and decode (every code) on CuPy arrays."""
    for dtype in ("float32", "float64"):
        x = fp8_encode_values(dtype, 0)
        xc = cupy.asarray(x)
        for fmt in FP8_FORMATS:
            for saturate in (True, False):
                got = fusekit.ops.fp8_encode(xc, fmt, saturate=saturate, backend="cuda")
                checks.same(f"fp8_encode {dtype} {fmt} saturate={saturate}", cupy.asnumpy(got),
                            fp8_encode_reference(x, fmt, saturate))
    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for fmt in FP8_FORMATS:
        for dtype in ("float32", "float64"):
            got = fusekit.ops.fp8_decode(cupy.asarray(codes), fmt, dtype=dtype, backend="cuda")
            checks.same(f"fp8_decode {fmt} -> {dtype}, every code", cupy.asnumpy(got),
                        fp8_decode_reference(codes, fmt, dtype), bitwise=True)


def fp8_cupy_quantize(checks: Checks, cupy: Any, n: int, k: int, block: int) -> None:
    """Block quantize / dequantize and activation quantize, bit for bit with the references."""
    for dtype in ("float32", "float64"):
        name = f"{dtype} [{n}, {k}] block={block}"
        w = fp8_weight(n, k, dtype, n + k)
        codes, scale = fusekit.ops.fp8_block_quantize(cupy.asarray(w), block=block,
                                                      backend="cuda")
        ref_codes, ref_scale = fp8_block_quantize_reference(w, block)
        checks.same(f"fp8_block_quantize codes {name}", cupy.asnumpy(codes), ref_codes)
        checks.same(f"fp8_block_quantize scales {name}", cupy.asnumpy(scale), ref_scale,
                    bitwise=True)
        back = fusekit.ops.fp8_block_dequantize(codes, scale, dtype=dtype, block=block,
                                                backend="cuda")
        checks.same(f"fp8_block_dequantize {name}", cupy.asnumpy(back),
                    fp8_block_dequantize_reference(ref_codes, ref_scale, dtype, block))
        x = w[: min(n, 24) // 2 * 2].reshape(2, -1, k)  # (2, tokens, K)
        codes, scale = fusekit.ops.fp8_act_quantize(cupy.asarray(x), block=block,
                                                    backend="cuda")
        ref_codes, ref_scale = fp8_act_quantize_reference(x, block)
        checks.same(f"fp8_act_quantize codes {dtype} {x.shape}", cupy.asnumpy(codes), ref_codes)
        checks.same(f"fp8_act_quantize scales {dtype} {x.shape}", cupy.asnumpy(scale), ref_scale,
                    bitwise=True)


def fp8_cupy_products(checks: Checks, cupy: Any, n: int, k: int, block: int) -> None:
    """fp8_gemv and fp8_gemv_t against the float64 references for several M."""
    w_fp8, scale = fp8_block_quantize_reference(fp8_weight(n, k, "float64", 7), block)
    wc, sc = cupy.asarray(w_fp8), cupy.asarray(scale)
    rng = np.random.default_rng(n * k)
    for dtype in ("float32", "float64"):
        for m in FP8_ROWS:
            name = f"{dtype} M={m} W=[{n}, {k}] block={block}"
            x = rng.standard_normal((m, k)).astype(dtype)
            y = fusekit.ops.fp8_gemv(cupy.asarray(x), wc, sc, block=block, backend="cuda")
            checks.compare(f"fp8_gemv {name}", cupy.asnumpy(y),
                           fp8_gemv_reference(x, w_fp8, scale, block), TOL[dtype])
            g = rng.standard_normal((m, n)).astype(dtype)
            gx = fusekit.ops.fp8_gemv_t(cupy.asarray(g), wc, sc, block=block, backend="cuda")
            checks.compare(f"fp8_gemv_t {name}", cupy.asnumpy(gx),
                           fp8_gemv_t_reference(g, w_fp8, scale, block), TOL[dtype])
    x = rng.standard_normal((2, 3, k)).astype("float32")
    y = fusekit.ops.fp8_gemv(cupy.asarray(x), wc, sc, block=block, backend="cuda")
    checks.compare(f"fp8_gemv (2, 3, K) batch W=[{n}, {k}]", cupy.asnumpy(y),
                   fp8_gemv_reference(x, w_fp8, scale, block), TOL["float32"])


def fp8_cupy_auto_picks_cuda(checks: Checks, cupy: Any) -> None:
    """With no backend requested, CuPy inputs go to the cuda kernels of every fp8 op."""
    from fusekit._arrays import kind_of
    from fusekit.ops import fp8, fp8_matmul

    kind = kind_of(cupy.ones(4, dtype=cupy.float32))
    for op, dtype in ((fp8.fp8_encode_op, "float32"), (fp8.fp8_decode_op, "uint8"),
                      (fp8.fp8_block_quantize_op, "float32"),
                      (fp8.fp8_block_dequantize_op, "uint8"),
                      (fp8.fp8_act_quantize_op, "float32"),
                      (fp8_matmul.fp8_gemv_op, "float32"), (fp8_matmul.fp8_gemv_t_op, "float32")):
        kernel = op.select(kind, dtype, "auto")
        checks.expect(f"auto picks the cuda kernel of {op.name} for CuPy arrays",
                      kernel.backend == "cuda", f"picked {kernel.backend}")


def check_fp8_cupy(checks: Checks, cupy: Any) -> None:
    print("FP8, CuPy arrays, backend='cuda':")
    checks.run("CuPy fp8 encode/decode", fp8_cupy_codes, checks, cupy)
    for n, k, block in FP8_WEIGHT_SHAPES:
        checks.run(f"CuPy fp8 quantize [{n}, {k}]", fp8_cupy_quantize, checks, cupy, n, k,
                   block)
        checks.run(f"CuPy fp8 products [{n}, {k}]", fp8_cupy_products, checks, cupy, n, k,
                   block)
    checks.run("fp8 auto selection", fp8_cupy_auto_picks_cuda, checks, cupy)


def fp8_torch_codes(checks: Checks, torch: Any) -> None:
    """Encode and decode on torch CUDA tensors: float8 tensors out and in."""
    x = fp8_encode_values("float32", 1)
    xt = torch.from_numpy(x).to("cuda")
    for fmt in FP8_FORMATS:
        codes = fusekit.ops.fp8_encode(xt, fmt, backend="cuda")
        want = getattr(torch, FP8_FORMATS[fmt].torch_dtype)
        checks.expect(f"torch fp8_encode {fmt}: {want} CUDA tensor out",
                      codes.dtype == want and codes.is_cuda, f"{codes.dtype} on {codes.device}")
        got = codes.view(torch.uint8).cpu().numpy()
        checks.same(f"torch fp8_encode {fmt}", got, fp8_encode_reference(x, fmt, True))
        values = fusekit.ops.fp8_decode(codes, fmt, backend="cuda")
        checks.same(f"torch fp8_decode {fmt}", values.cpu().numpy(),
                    fp8_decode_reference(got, fmt), bitwise=True)
    # torch's CUDA cast does not saturate: beyond +-448 and infinities become NaN, which is
    # fusekit's saturate=False (seen with torch 2.11, whose CPU cast did the same; torch
    # 2.13's CPU cast saturates, as fusekit's default does).
    ours = fusekit.ops.fp8_encode(xt, "e4m3fn", saturate=False, backend="cuda")
    theirs = xt.to(torch.float8_e4m3fn).view(torch.uint8)
    checks.same("torch fp8_encode e4m3fn saturate=False equals torch's own CUDA cast",
                ours.view(torch.uint8).cpu().numpy(), theirs.cpu().numpy())
    cpu_cuda = int((xt.cpu().to(torch.float8_e4m3fn).view(torch.uint8) != theirs.cpu()).sum())
    print(f"  (torch {torch.__version__}'s CUDA and CPU casts to float8_e4m3fn differ on "
          f"{cpu_cuda} of {x.size} values)")
    xb = xt[:50_000].to(torch.bfloat16)
    got = fusekit.ops.fp8_encode(xb, backend="cuda").view(torch.uint8).cpu().numpy()
    checks.same("torch fp8_encode bfloat16 input", got,
                fp8_encode_reference(xb.float().cpu().numpy()))


def fp8_torch_quantize(checks: Checks, torch: Any) -> None:
    """Quantizers on torch CUDA tensors return float8 codes and float32 scales."""
    w = fp8_weight(300, 200, "float32", 3)
    wt = torch.from_numpy(w).to("cuda")
    codes, scale = fusekit.ops.fp8_block_quantize(wt, backend="cuda")
    ref_codes, ref_scale = fp8_block_quantize_reference(w)
    checks.expect("torch fp8_block_quantize returns float8_e4m3fn and float32",
                  codes.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32)
    checks.same("torch fp8_block_quantize codes", codes.view(torch.uint8).cpu().numpy(),
                ref_codes)
    checks.same("torch fp8_block_quantize scales", scale.cpu().numpy(), ref_scale)
    back = fusekit.ops.fp8_block_dequantize(codes, scale, backend="cuda")
    checks.same("torch fp8_block_dequantize", back.cpu().numpy(),
                fp8_block_dequantize_reference(ref_codes, ref_scale))
    back16 = fusekit.ops.fp8_block_dequantize(codes, scale, dtype="bfloat16", backend="cuda")
    checks.expect("torch fp8_block_dequantize bfloat16", back16.dtype == torch.bfloat16 and bool(
        (back16 == back.to(torch.bfloat16)).all()))
    x = w[:12].reshape(3, 4, 200)
    codes, scale = fusekit.ops.fp8_act_quantize(torch.from_numpy(x).to("cuda"), backend="cuda")
    ref_codes, ref_scale = fp8_act_quantize_reference(x)
    checks.same("torch fp8_act_quantize codes", codes.view(torch.uint8).cpu().numpy(), ref_codes)
    checks.same("torch fp8_act_quantize scales", scale.cpu().numpy(), ref_scale)


def fp8_torch_products(checks: Checks, torch: Any) -> None:
    """fp8_gemv / fp8_gemv_t on torch CUDA tensors (float32 and bfloat16), and autograd."""
    n, k = 300, 260
    w_fp8, scale = fp8_block_quantize_reference(fp8_weight(n, k, "float64", 5))
    wt = torch.from_numpy(w_fp8).to("cuda").view(torch.float8_e4m3fn)
    st = torch.from_numpy(scale).to("cuda")
    rng = np.random.default_rng(11)
    for m in (1, 5, 64):
        x = rng.standard_normal((m, k)).astype(np.float32)
        g = rng.standard_normal((m, n)).astype(np.float32)
        xt = torch.from_numpy(x).to("cuda").requires_grad_(True)
        y = fusekit.ops.fp8_gemv(xt, wt, st, backend="cuda")
        checks.expect(f"torch fp8_gemv M={m}: CUDA tensor out", y.is_cuda and y.shape == (m, n))
        checks.compare(f"torch fp8_gemv M={m}", y.detach().cpu().numpy(),
                       fp8_gemv_reference(x, w_fp8, scale), TOL["float32"])
        (y * torch.from_numpy(g).to("cuda")).sum().backward()
        ref_dx = fp8_gemv_t_reference(g, w_fp8, scale)
        checks.compare(f"torch autograd dx through fp8_gemv M={m}", xt.grad.cpu().numpy(),
                       ref_dx, TOL["float32"])
        gx = fusekit.ops.fp8_gemv_t(torch.from_numpy(g).to("cuda"), wt, st, backend="cuda")
        checks.compare(f"torch fp8_gemv_t M={m}", gx.cpu().numpy(), ref_dx, TOL["float32"])
        xb = torch.from_numpy(x).to("cuda", torch.bfloat16)
        yb = fusekit.ops.fp8_gemv(xb, wt, st, backend="cuda")
        checks.expect(f"torch bfloat16 fp8_gemv M={m} returns bfloat16", yb.dtype == torch.bfloat16)
        checks.compare(f"torch bfloat16 fp8_gemv M={m}", yb.float().cpu().numpy(),
                       fp8_gemv_reference(xb.float().cpu().numpy(), w_fp8, scale),
                       TOL["bfloat16"])


def check_fp8_torch(checks: Checks, torch: Any) -> None:
    print("FP8, torch CUDA tensors, backend='cuda':")
    checks.run("torch fp8 encode/decode", fp8_torch_codes, checks, torch)
    checks.run("torch fp8 quantize", fp8_torch_quantize, checks, torch)
    checks.run("torch fp8 products", fp8_torch_products, checks, torch)


# ------------------------------------------------------------------ kron_svd correctness


def kpsvd_weight(a_shape: tuple[int, int], b_shape: tuple[int, int], rank: int, dtype: str,
                 seed: int) -> np.ndarray:
    """``sum_k 3^-k kron(A_k, B_k)`` (unit-norm factors) plus noise far below the last term.

    The KPSVD spectrum is well separated, so the factors are determined (up to the canonical
    signs) and the randomized method must agree with the exact one.
    """
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((rank, *a_shape))
    B = rng.standard_normal((rank, *b_shape))
    A /= np.linalg.norm(A, axis=(1, 2), keepdims=True)
    B /= np.linalg.norm(B, axis=(1, 2), keepdims=True)
    w = sum(3.0**-k * np.kron(A[k], B[k]) for k in range(rank))
    w += 1e-3 * 3.0**-rank * rng.standard_normal(w.shape) / np.sqrt(min(w.shape))
    return w.astype(dtype)


def kpsvd_label(a_shape: tuple[int, int], b_shape: tuple[int, int], rank: int,
                dtype: str) -> str:
    return f"{dtype} A={a_shape[0]}x{a_shape[1]} B={b_shape[0]}x{b_shape[1]} r={rank}"


def kron_svd_cupy_cases(checks: Checks, cupy: Any, a_shape: tuple[int, int],
                        b_shape: tuple[int, int], rank: int, dtype: str, seed: int) -> None:
    """Rearrangement (plain and of a transposed view), its inverse, and kpsvd on CuPy arrays."""
    name = kpsvd_label(a_shape, b_shape, rank, dtype)
    w = kpsvd_weight(a_shape, b_shape, rank, dtype, seed)
    wc = cupy.asarray(w)
    r = fusekit.ops.kron_rearrange(wc, a_shape, b_shape, backend="cuda")
    checks.expect(f"kron_rearrange {name}: returns C-contiguous CuPy",
                  isinstance(r, cupy.ndarray) and r.flags.c_contiguous)
    ref_r = kron_rearrange_reference(w, a_shape, b_shape)
    checks.same(f"kron_rearrange {name}", cupy.asnumpy(r), ref_r)
    wt = cupy.ascontiguousarray(wc.T).T  # the same values, Fortran-ordered
    checks.same(f"kron_rearrange of a non-contiguous view {name}",
                cupy.asnumpy(fusekit.ops.kron_rearrange(wt, a_shape, b_shape, backend="cuda")),
                ref_r)
    back = fusekit.ops.kron_rearrange_inverse(r, a_shape, b_shape, backend="cuda")
    checks.same(f"kron_rearrange_inverse {name}", cupy.asnumpy(back),
                kron_rearrange_inverse_reference(ref_r, a_shape, b_shape))
    checks.same(f"kron_rearrange round trip {name}", cupy.asnumpy(back), w)
    ref = kpsvd_reference(w, a_shape, b_shape, rank)
    for method in KPSVD_METHODS:
        A, B, s = fusekit.ops.kpsvd(wc, a_shape, b_shape, rank, method, backend="cuda")
        checks.expect(f"kpsvd {method} {name}: CuPy arrays of {dtype} out", all(
            isinstance(t, cupy.ndarray) and t.dtype == np.dtype(dtype) for t in (A, B, s)))
        for part, got, want in zip("ABs", (A, B, s), ref, strict=True):
            checks.compare(f"kpsvd {method} {part} {name}", cupy.asnumpy(got), want, TOL[dtype])


def kron_svd_cupy_auto_picks_cuda(checks: Checks, cupy: Any) -> None:
    """With no backend requested, CuPy inputs go to the cuda kernels of every kron_svd op."""
    from fusekit._arrays import kind_of
    from fusekit.ops import kron_svd

    kind = kind_of(cupy.ones(4, dtype=cupy.float32))
    for op in (kron_svd.kron_rearrange_op, kron_svd.kron_rearrange_inverse_op,
               kron_svd.kpsvd_op):
        kernel = op.select(kind, "float32", "auto")
        checks.expect(f"auto picks the cuda kernel of {op.name} for CuPy arrays",
                      kernel.backend == "cuda", f"picked {kernel.backend}")


def check_kron_svd_cupy(checks: Checks, cupy: Any) -> None:
    print("kron_svd, CuPy arrays, backend='cuda':")
    for dtype in ("float32", "float64"):
        for seed, (a_shape, b_shape, rank) in enumerate(KPSVD_SHAPES):
            checks.run(f"CuPy kron_svd {kpsvd_label(a_shape, b_shape, rank, dtype)}",
                       kron_svd_cupy_cases, checks, cupy, a_shape, b_shape, rank, dtype, seed)
    checks.run("kron_svd auto selection", kron_svd_cupy_auto_picks_cuda, checks, cupy)


def kron_svd_torch_cases(checks: Checks, torch: Any, a_shape: tuple[int, int],
                         b_shape: tuple[int, int], rank: int, dtype: str, seed: int) -> None:
    """The same on torch CUDA tensors, and autograd through the rearrangement."""
    name = kpsvd_label(a_shape, b_shape, rank, dtype)
    w = kpsvd_weight(a_shape, b_shape, rank, dtype, 50 + seed)
    wt = torch.from_numpy(w).to("cuda").requires_grad_(True)
    r = fusekit.ops.kron_rearrange(wt, a_shape, b_shape, backend="cuda")
    checks.expect(f"torch kron_rearrange {name}: CUDA tensor out",
                  isinstance(r, torch.Tensor) and r.is_cuda)
    ref_r = kron_rearrange_reference(w, a_shape, b_shape)
    checks.same(f"torch kron_rearrange {name}", r.detach().cpu().numpy(), ref_r)
    g = np.random.default_rng(seed).standard_normal(ref_r.shape).astype(dtype)
    (r * torch.from_numpy(g).to("cuda")).sum().backward()
    checks.same(f"torch autograd through kron_rearrange {name}", wt.grad.cpu().numpy(),
                kron_rearrange_inverse_reference(g, a_shape, b_shape))
    back = fusekit.ops.kron_rearrange_inverse(r.detach(), a_shape, b_shape, backend="cuda")
    checks.same(f"torch kron_rearrange round trip {name}", back.cpu().numpy(), w)
    ref = kpsvd_reference(w, a_shape, b_shape, rank)
    for method in KPSVD_METHODS:
        A, B, s = fusekit.ops.kpsvd(wt.detach(), a_shape, b_shape, rank, method,
                                    backend="cuda")
        checks.expect(f"torch kpsvd {method} {name}: CUDA tensors out",
                      all(isinstance(t, torch.Tensor) and t.is_cuda for t in (A, B, s)))
        for part, got, want in zip("ABs", (A, B, s), ref, strict=True):
            checks.compare(f"torch kpsvd {method} {part} {name}", got.cpu().numpy(), want,
                           TOL[dtype])


def check_kron_svd_torch(checks: Checks, torch: Any) -> None:
    print("kron_svd, torch CUDA tensors, backend='cuda':")
    for dtype in ("float32", "float64"):
        for seed, (a_shape, b_shape, rank) in enumerate(KPSVD_SHAPES):
            checks.run(f"torch kron_svd {kpsvd_label(a_shape, b_shape, rank, dtype)}",
                       kron_svd_torch_cases, checks, torch, a_shape, b_shape, rank, dtype, seed)


# ----------------------------------------------------------------------------- timing


def reshape_matmul(x: Any, A: Any, B: Any) -> Any:
    """``sum_k (A_k kron B_k) x`` as two cuBLAS products in torch (the peer a user writes)."""
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    nb = x.shape[0]
    T = x.reshape(nb * n1, n2) @ B.reshape(r * m2, n2).T  # T[(b, j1), (k, i2)]
    T = T.view(nb, n1, r, m2).transpose(1, 2).reshape(nb, r * n1, m2)
    A_cat = A.transpose(0, 1).reshape(m1, r * n1)  # A_cat[i1, (k, j1)]
    return (A_cat @ T).reshape(nb, m1 * m2)


def median_ms(fn: Callable[[], Any], event: Any, sync: Callable[[], None], repeats: int,
              inner: int, elapsed: Callable[[Any, Any], float]) -> float:
    """Median over ``repeats`` of the mean time of ``inner`` back-to-back calls, in ms."""
    for _ in range(5):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start, end = event(), event()
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(elapsed(start, end) / inner)
    return statistics.median(times)


def time_case(
    checks: Checks, torch: Any, cupy: Any, r: int, nb: int, A: Any, B: Any, W: Any,
    repeats: int,
) -> None:
    """One row of the table: rank ``r``, ``nb`` tokens, every method on the same inputs."""
    gen = torch.Generator(device="cuda").manual_seed(1000 * r + nb)
    x = torch.randn(nb, FACTOR * FACTOR, device="cuda", generator=gen)
    xc, Ac, Bc = cupy.from_dlpack(x), cupy.from_dlpack(A), cupy.from_dlpack(B)
    y_dense = (x @ W.T).cpu().numpy()
    checks.compare(f"torch reshape+matmul baseline r={r} batch={nb}",
                   reshape_matmul(x, A, B).cpu().numpy(), y_dense, 1e-4)
    checks.compare(f"fusekit vs dense r={r} batch={nb}",
                   fusekit.ops.kron_linear(x, A, B, backend="cuda").cpu().numpy(), y_dense, 1e-4)

    inner = 20 if nb < 256 else 5

    def on_torch(fn: Callable[[], Any]) -> float:
        return median_ms(fn, lambda: torch.cuda.Event(enable_timing=True),
                         torch.cuda.synchronize, repeats, inner, lambda s, e: s.elapsed_time(e))

    def on_cupy(fn: Callable[[], Any]) -> float:
        return median_ms(fn, cupy.cuda.Event, cupy.cuda.get_current_stream().synchronize,
                         repeats, inner, cupy.cuda.get_elapsed_time)

    dense = on_torch(lambda: x @ W.T)
    reshape = on_torch(lambda: reshape_matmul(x, A, B))
    fk_torch = on_torch(lambda: fusekit.ops.kron_linear(x, A, B, backend="cuda"))
    fk_cupy = on_cupy(lambda: fusekit.ops.kron_linear(xc, Ac, Bc, backend="cuda"))
    print(
        f"{r:>4} {nb:>5} | {dense:>11.4f} {reshape:>13.4f} {fk_torch:>13.4f} "
        f"{fk_cupy:>12.4f} | {dense / fk_torch:>12.2f}x {reshape / fk_torch:>14.2f}x"
    )


def time_kron_linear(checks: Checks, torch: Any, cupy: Any, repeats: int) -> None:
    print(
        f"\nkron_linear timing, float32, weight {FACTOR * FACTOR}x{FACTOR * FACTOR} as "
        f"{FACTOR}x{FACTOR} factors; median of {repeats} repeats, ms per call "
        f"(TF32 matmul: {torch.backends.cuda.matmul.allow_tf32})"
    )
    header = (
        f"{'rank':>4} {'batch':>5} | {'dense x@W.T':>11} {'torch reshape':>13} "
        f"{'fusekit torch':>13} {'fusekit cupy':>12} | {'dense/fusekit':>13} "
        f"{'reshape/fusekit':>15}"
    )
    print(header)
    print("-" * len(header))
    for r in RANKS:
        gen = torch.Generator(device="cuda").manual_seed(r)
        A = torch.randn(r, FACTOR, FACTOR, device="cuda", generator=gen) / FACTOR
        B = torch.randn(r, FACTOR, FACTOR, device="cuda", generator=gen) / FACTOR
        W = sum(torch.kron(A[k], B[k]) for k in range(r))  # the dense weight, formed once
        for nb in BATCHES:
            checks.run(f"timing r={r} batch={nb}", time_case, checks, torch, cupy, r, nb, A, B,
                       W, repeats)
    print(
        "dense/fusekit and reshape/fusekit use the torch-tensor path; above 1 means fusekit "
        "is faster. dense x@W.T has W formed beforehand (a merged adapter)."
    )


def dequantize_matmul(x: Any, w_fp8: Any, weight_scale_inv: Any, block: int = 128) -> Any:
    """``x @ W.T`` with W dequantized on every call in torch (the peer a user writes)."""
    n, k = w_fp8.shape
    scale = weight_scale_inv.repeat_interleave(block, 0)[:n].repeat_interleave(block, 1)[:, :k]
    return x @ (w_fp8.float() * scale).to(x.dtype).T


def torch_ms(torch: Any, fn: Callable[[], Any], repeats: int, inner: int) -> float:
    """:func:`median_ms` with torch's CUDA events."""
    return median_ms(fn, lambda: torch.cuda.Event(enable_timing=True), torch.cuda.synchronize,
                     repeats, inner, lambda s, e: s.elapsed_time(e))


def cupy_ms(cupy: Any, fn: Callable[[], Any], repeats: int, inner: int) -> float:
    """:func:`median_ms` with CuPy's CUDA events."""
    return median_ms(fn, cupy.cuda.Event, cupy.cuda.get_current_stream().synchronize, repeats,
                     inner, cupy.cuda.get_elapsed_time)


def time_fp8_case(
    checks: Checks, torch: Any, cupy: Any, label: str, m: int, weights: tuple[Any, ...],
    repeats: int,
) -> None:
    """One row of the fp8 table: ``m`` tokens through one expert weight, every method."""
    w_fp8, scale, w32, w_bf16 = weights
    n, k = w_fp8.shape
    gen = torch.Generator(device="cuda").manual_seed(n + m)
    x = torch.randn(m, k, device="cuda", generator=gen)
    xb = x.to(torch.bfloat16)
    xc = cupy.from_dlpack(x)
    wc, sc = cupy.from_dlpack(w_fp8.view(torch.uint8)), cupy.from_dlpack(scale)
    y_ref = (x @ w32.T).cpu().numpy()  # float32 product with the exact dequantized weight
    name = f"{label} [{n}, {k}] M={m}"
    checks.compare(f"fusekit fp8_gemv vs float32 matmul {name}",
                   fusekit.ops.fp8_gemv(x, w_fp8, scale, backend="cuda").cpu().numpy(), y_ref,
                   1e-4)
    checks.compare(f"torch dequantize+matmul baseline {name}",
                   dequantize_matmul(xb, w_fp8, scale).float().cpu().numpy(), y_ref,
                   TOL["bfloat16"])

    inner = 20
    bf16 = torch_ms(torch, lambda: xb @ w_bf16.T, repeats, inner)
    deq = torch_ms(torch, lambda: dequantize_matmul(xb, w_fp8, scale), repeats, inner)
    fk_torch = torch_ms(torch, lambda: fusekit.ops.fp8_gemv(xb, w_fp8, scale, backend="cuda"),
                        repeats, inner)
    fk_cupy = cupy_ms(cupy, lambda: fusekit.ops.fp8_gemv(xc, wc, sc, backend="cuda"), repeats,
                      inner)
    fp8_bytes = n * k  # one byte per weight; x, scales and y are small next to it

    def gb_s(ms: float) -> float:
        return fp8_bytes / (ms * 1e-3) / 1e9

    print(
        f"{label:>7} {m:>3} | {bf16:>10.4f} {deq:>11.4f} {fk_torch:>13.4f} {fk_cupy:>12.4f} | "
        f"{bf16 / fk_torch:>10.2f}x {deq / fk_torch:>11.2f}x | {gb_s(fk_torch):>10.0f} "
        f"{gb_s(fk_cupy):>9.0f}"
    )


def time_fp8_shape(checks: Checks, torch: Any, cupy: Any, label: str, n: int, k: int,
                   repeats: int) -> None:
    """Quantize one random expert weight on the GPU, then time every M on it."""
    gen = torch.Generator(device="cuda").manual_seed(n)
    w = torch.randn(n, k, device="cuda", generator=gen) * 0.02
    w_fp8, scale = fusekit.ops.fp8_block_quantize(w, backend="cuda")
    del w
    w32 = fusekit.ops.fp8_block_dequantize(w_fp8, scale, backend="cuda")
    w_bf16 = w32.to(torch.bfloat16)  # what a loader that dequantizes once keeps in memory
    for m in EXPERT_ROWS:
        checks.run(f"fp8 timing {label} M={m}", time_fp8_case, checks, torch, cupy, label, m,
                   (w_fp8, scale, w32, w_bf16), repeats)


def time_fp8_gemv(checks: Checks, torch: Any, cupy: Any, repeats: int) -> None:
    print(
        f"\nfp8_gemv timing, DeepSeek-V3 expert weights (E4M3FN, 128x128 block scales); "
        f"median of {repeats} repeats, ms per call"
    )
    header = (
        f"{'weight':>7} {'M':>3} | {'bf16 x@W.T':>10} {'torch deq+mm':>11} "
        f"{'fusekit torch':>13} {'fusekit cupy':>12} | {'bf16/fk':>11} {'deq/fk':>12} | "
        f"{'GB/s torch':>10} {'GB/s cupy':>9}"
    )
    print(header)
    print("-" * len(header))
    for label, n, k in EXPERT_SHAPES:
        checks.run(f"fp8 timing {label}", time_fp8_shape, checks, torch, cupy, label, n, k,
                   repeats)
    print(
        "bf16 x@W.T: bf16 weights dequantized at load time (2 bytes per weight in memory); "
        "torch deq+mm: W dequantized to bf16 on every call, then the matmul. Both peers and "
        "'fusekit torch' take bf16 x ('fusekit torch' computes in float32 and rounds once); "
        "'fusekit cupy' takes float32 CuPy arrays. bf16/fk and deq/fk are peer time / "
        "'fusekit torch' time: above 1, fusekit is faster. GB/s: FP8 weight bytes (N*K) per "
        "second of the fusekit column."
    )


def wall_ms(fn: Callable[[], Any], sync: Callable[[], None], repeats: int) -> float:
    """Median wall-clock time of ``fn`` over ``repeats`` synchronised calls after one warm-up.

    For calls of milliseconds to seconds that synchronise with the host anyway (cuSOLVER
    reports its status to the host), where back-to-back event timing buys nothing.
    """
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_kpsvd(checks: Checks, torch: Any, cupy: Any, repeats: int) -> None:
    """kpsvd randomized vs exact on a 4096 x 4096 weight, next to PiSSA's SVDs of the weight."""
    side, rank = FACTOR * FACTOR, KPSVD_RANK
    terms = 2 * rank
    gen = torch.Generator(device="cuda").manual_seed(4096)
    A = torch.randn(terms, FACTOR, FACTOR, device="cuda", generator=gen)
    B = torch.randn(terms, FACTOR, FACTOR, device="cuda", generator=gen)
    A /= A.norm(dim=(1, 2), keepdim=True)
    B /= B.norm(dim=(1, 2), keepdim=True)
    W = sum(0.7**k * torch.kron(A[k], B[k]) for k in range(terms))
    W += 1e-6 * torch.randn(side, side, device="cuda", generator=gen)
    Wc = cupy.from_dlpack(W)
    shapes = ((FACTOR, FACTOR), (FACTOR, FACTOR))

    def sync() -> None:
        torch.cuda.synchronize()
        cupy.cuda.runtime.deviceSynchronize()

    # The randomized spectrum must match the exact one on this well-separated spectrum.
    _, _, s_exact = fusekit.ops.kpsvd(W, *shapes, rank, "exact", backend="cuda")
    _, _, s_rand = fusekit.ops.kpsvd(W, *shapes, rank, "randomized", backend="cuda")
    checks.compare(f"kpsvd randomized vs exact singular values {side}x{side} r={rank}",
                   s_rand.cpu().numpy(), s_exact.cpu().numpy(), 1e-3)

    slow = max(1, min(repeats, 3))  # full SVDs of a 4096 x 4096 matrix take seconds each
    rows = [
        ("fusekit kpsvd randomized, torch", repeats,
         lambda: fusekit.ops.kpsvd(W, *shapes, rank, "randomized", backend="cuda")),
        ("fusekit kpsvd randomized, cupy", repeats,
         lambda: fusekit.ops.kpsvd(Wc, *shapes, rank, "randomized", backend="cuda")),
        (f"torch.svd_lowrank(W, q={2 * rank}, niter=2)", repeats,
         lambda: torch.svd_lowrank(W, q=2 * rank, niter=2)),
        ("fusekit kpsvd exact, torch", slow,
         lambda: fusekit.ops.kpsvd(W, *shapes, rank, "exact", backend="cuda")),
        ("torch.linalg.svd(W)", slow, lambda: torch.linalg.svd(W, full_matrices=False)),
    ]
    print(
        f"\nkpsvd timing, float32, weight {side}x{side} as {FACTOR}x{FACTOR} factors, rank "
        f"{rank}; median wall-clock ms per call (randomized: {rank} oversampling columns, 2 "
        "power iterations)"
    )
    header = f"{'method':<40} {'repeats':>7} | {'ms':>10} | {'x fusekit randomized':>20}"
    print(header)
    print("-" * len(header))
    base = None
    for name, n, fn in rows:
        try:
            ms = wall_ms(fn, sync, n)
        except Exception:
            checks.fail(f"kpsvd timing {name}", "raised\n" + traceback.format_exc())
            continue
        base = ms if base is None else base
        print(f"{name:<40} {n:>7} | {ms:>10.3f} | {ms / base:>19.1f}x")
    print(
        "x fusekit randomized: time / the first row's time. torch.svd_lowrank and "
        "torch.linalg.svd are PiSSA's fast and exact initialisations (a rank-r SVD of W); "
        "kpsvd factors W as sum_k kron(A_k, B_k) (the SVD of the rearranged W, same size). "
        "svd_lowrank gets kpsvd's default work: 2r columns, 2 power iterations."
    )


# ------------------------------------------------------------ network_simulate check

#: Largest error allowed in the network check (float64, 50 ms), relative to the largest
#: reference value: the device's exp and the atomic order of arrivals differ in the last bits.
NET_TOL = 1e-8


def network_cupy_check(checks: Checks, cupy: Any, backend: str = "cuda") -> None:
    """An E/I HH network through the op on CuPy arrays (its checks too) against the reference.

    300 neurons, 8% connectivity, 80% excitatory (0 mV, 3 ms) and 20% inhibitory (-80 mV,
    8 ms) by presynaptic neuron, a fifth of them driven; 50 ms at dt = 0.025 ms, 1 ms delay.
    """
    from fusekit.neuro import HH_CHANNELS
    from fusekit.ops import network_simulate
    from fusekit.ops.ion_channel import ChannelSet

    hh = ChannelSet(HH_CHANNELS)
    n = 300
    rng = np.random.default_rng(2009)
    v0 = rng.uniform(-70.0, -60.0, n)
    adjacency = rng.random((n, n)) < 0.08
    np.fill_diagonal(adjacency, False)
    indptr = np.concatenate([[0], np.cumsum(adjacency.sum(axis=1))]).astype(np.int64)
    indices = np.nonzero(adjacency)[1].astype(np.int64)
    weights = rng.uniform(0.0, 0.5, indices.size)
    types = np.repeat((np.arange(n) >= int(0.8 * n)).astype(np.int64), np.diff(indptr))
    i_ext = np.where(rng.random(n) < 0.2, 15.0, 0.0)
    arrays = (v0, hh.steady_states(v0), hh.default_params(n), i_ext, np.zeros((2, n)), indptr,
              indices, weights)
    kw = dict(channels=hh, dt=0.025, n_steps=2000, delay_steps=40, tau_syn=[3.0, 8.0],
              e_syn=[0.0, -80.0], record_every=200, max_spikes=20)
    got = network_simulate(*(cupy.asarray(a) for a in arrays),
                           synapse_type=cupy.asarray(types), backend=backend, **kw)
    ref = network_simulate(*arrays, synapse_type=types, backend="reference", **kw)
    checks.expect("network_simulate on CuPy arrays returns CuPy arrays",
                  all(isinstance(a, cupy.ndarray) for a in got))
    checks.expect("network_simulate E/I network: both types carried conductance",
                  bool((ref.g_syn > 0).any(axis=1).all()))
    compare_simulations(checks, cupy, got, ref, "network_simulate",
                        f"HH E/I network float64, {n} neurons, {indices.size} synapses, 50 ms")


def compare_simulations(checks: Checks, cupy: Any, got: Any, ref: Any, op: str,
                        name: str) -> None:
    """Every field of a network op's result against the reference's.

    Spike counts exactly, the rest to ``NET_TOL`` (NaN where the reference has NaN).
    """
    for field in ref._fields:
        want, have = getattr(ref, field), cupy.asnumpy(getattr(got, field))
        label = f"{op} {field} {name}"
        if field == "spike_count":
            checks.same(label, have, want)
            continue
        nan = np.isnan(want)
        checks.compare(label, np.where(nan, 0.0, have), np.where(nan, 0.0, want), NET_TOL)


def cable_network_cupy_check(checks: Checks, cupy: Any, backend: str = "cuda") -> None:
    """A network of branched HH cells through the op on CuPy arrays against the reference.

    60 cells of a soma, a dendrite of three compartments and a side branch, joined at a
    zero-area junction node where the two branches meet (``cable_tree``: ``c_m = 0``, no
    membrane); 10% connectivity, synapses on random nodes, 80% excitatory (0 mV, 3 ms) and
    20% inhibitory (-80 mV, 8 ms) by presynaptic cell, a fifth of the somata driven; 30 ms at
    dt = 0.025 ms, 1 ms delay. (Runs here with NumPy standing in for CuPy and
    ``backend="cpu"``.)
    """
    from fusekit.neuro import HH_CHANNELS, cable_tree, random_connectivity
    from fusekit.ops import cable_network_simulate
    from fusekit.ops.ion_channel import ChannelSet

    hh = ChannelSet(HH_CHANNELS)
    n = 60
    tree = cable_tree(np.array([-1, 0, 1, 2, 1]), [20.0, 100.0, 80.0, 60.0, 50.0],
                      [20.0, 2.0, 1.5, 1.0, 1.0])
    parent, cpl, n_comp = tree.parent, tree.coupling, tree.parent.size
    rng = np.random.default_rng(2026)
    v0 = rng.uniform(-70.0, -60.0, (n, n_comp))
    indptr, indices, weights = random_connectivity(n, 0.1, 1.5, rng)
    types = np.repeat((np.arange(n) >= int(0.8 * n)).astype(np.int64), np.diff(indptr))
    comps = rng.integers(0, n_comp, indices.size)
    i_ext = np.zeros((n, n_comp))
    i_ext[:, 0] = np.where(rng.random(n) < 0.2, 25.0, 0.0)
    params = hh.default_params(n * n_comp).reshape(-1, n, n_comp)
    params[0][:, tree.junction] = 0.0  # c_m: no membrane at the junction
    arrays = (v0, hh.steady_states(v0.reshape(-1)).reshape(-1, n, n_comp), params, i_ext, parent,
              np.ascontiguousarray(np.broadcast_to(cpl[:, None], (2, n, n_comp))),
              np.zeros((2, n, n_comp)), indptr, indices, weights)
    kw = dict(channels=hh, dt=0.025, n_steps=1200, delay_steps=40, tau_syn=[3.0, 8.0],
              e_syn=[0.0, -80.0], record_every=100, record_at=[0, 3], max_spikes=20)
    got = cable_network_simulate(*(cupy.asarray(a) for a in arrays),
                                 synapse_type=cupy.asarray(types),
                                 synapse_compartment=cupy.asarray(comps), backend=backend, **kw)
    ref = cable_network_simulate(*arrays, synapse_type=types, synapse_compartment=comps,
                                 backend="reference", **kw)
    checks.expect("cable_network_simulate on CuPy arrays returns CuPy arrays",
                  all(isinstance(a, cupy.ndarray) for a in got))
    checks.expect("cable_network_simulate: both types carried conductance, undriven cells fired",
                  bool((ref.g_syn > 0).any(axis=(1, 2)).all())
                  and int(ref.spike_count[i_ext[:, 0] == 0].sum()) > 0)
    compare_simulations(checks, cupy, got, ref, "cable_network_simulate",
                        f"HH network of branched cells float64, {n} x {n_comp}, "
                        f"{indices.size} synapses")


# ------------------------------------------------------ ion_sensitivity check and timing

#: HH population of the ion_sensitivity check and timing: 100 ms at dt = 0.025 ms.
SENS_NEURONS = 10_000
SENS_DT = 0.025
SENS_STEPS = 4000
SENS_WRT = ("g_na", "g_k", "g_leak")
#: Neurons of the population checked against the float64 reference (NumPy, step by step).
SENS_CHECK_NEURONS = 32
#: Largest error allowed in the 100 ms float64 check, relative to the largest reference value:
#: the device's exp differs from NumPy's in the last bit, and spikes amplify it over 4000 steps.
SENS_TOL = 1e-8
SENS_NAMES = ("v", "states", "v_record", "spike_count", "spike_times", "dv", "dstates",
              "dv_record", "dspike_times")


def membrane_cupy_check(checks: Checks, cupy: Any, backend: str = "cuda") -> None:
    """One network step's CUDA kernels on CuPy arrays against the references (float64).

    ``membrane_step`` and its vjp for 10,000 HH neurons at potentials across -80..30 mV, and
    ``synapse_deliver`` and its vjp over 250,000 random synapses (half the neurons spiking).
    ``backend``: ``"cpu"`` where NumPy stands in for CuPy (the tests).
    """
    from fusekit import ops
    from fusekit.neuro import HH_CHANNELS, random_connectivity
    from fusekit.ops import ion_membrane as mem
    from fusekit.ops.ion_channel import ChannelSet

    hh = ChannelSet(HH_CHANNELS)
    n = 10_000
    rng = np.random.default_rng(14)
    v = rng.uniform(-80.0, 30.0, n)
    step_in = (v, hh.steady_states(rng.uniform(-75.0, -50.0, n)), hh.default_params(n),
               rng.normal(0.0, 5.0, n), rng.uniform(0.0, 0.3, n), rng.normal(0.0, 2.0, n))
    kw = dict(channels=hh, dt=0.025)
    got = ops.membrane_step(*(cupy.asarray(a) for a in step_in), backend=backend, **kw)
    ref = mem.membrane_step_reference(*step_in, **kw)
    for name, a, b in zip(("v_new", "states_new"), got, ref, strict=True):
        checks.compare(f"membrane_step {name}, {n} HH neurons", cupy.asnumpy(a), b, 1e-12)
    adj = (rng.normal(size=n), rng.normal(size=step_in[1].shape))
    got = ops.membrane_step_vjp(*(cupy.asarray(a) for a in (*step_in, *adj)), backend=backend,
                                **kw)
    ref = mem.membrane_step_vjp_reference(*step_in, *adj, **kw)
    for name, a, b in zip(("a_v", "a_states", "a_params", "a_i", "a_g", "a_ge"), got, ref,
                          strict=True):
        checks.compare(f"membrane_step_vjp {name}, {n} HH neurons", cupy.asnumpy(a), b, 1e-9)
    indptr, indices, weights = random_connectivity(n, 25 / n, 0.05, rng)
    spikes = (rng.random(n) < 0.5).astype(np.float64)
    a_out = rng.normal(size=n)
    got = ops.synapse_deliver(*(cupy.asarray(a) for a in (spikes, indptr, weights, indices)),
                              n_out=n, backend=backend)
    checks.compare(f"synapse_deliver, {indices.shape[0]:,} synapses", cupy.asnumpy(got),
                   mem.synapse_deliver_reference(spikes, indptr, weights, indices, n_out=n),
                   1e-12)
    got = ops.synapse_deliver_vjp(*(cupy.asarray(a) for a in (spikes, indptr, weights, indices,
                                                               a_out)), n_out=n,
                                  backend=backend)
    ref = mem.synapse_deliver_vjp_reference(spikes, indptr, weights, indices, a_out, n_out=n)
    for name, a, b in zip(("a_spikes", "a_weights"), got, ref, strict=True):
        checks.compare(f"synapse_deliver_vjp {name}", cupy.asnumpy(a), b, 1e-12)


def ion_sensitivity_inputs(n: int, dtype: str) -> tuple[Any, tuple[np.ndarray, ...]]:
    """HH neurons at rest with spread conductances and currents (most fire several times)."""
    from fusekit.neuro import HH_CHANNELS
    from fusekit.ops.ion_channel import ChannelSet

    hh = ChannelSet(HH_CHANNELS)
    rng = np.random.default_rng(2008)
    v0 = rng.uniform(-70.0, -60.0, n)
    params = hh.default_params(n)
    for name in SENS_WRT:
        params[hh.param_names.index(name)] *= rng.uniform(0.8, 1.2, n)
    i_ext = rng.uniform(0.0, 15.0, n)
    arrays = (v0, hh.steady_states(v0, params), params, i_ext)
    return hh, tuple(a.astype(dtype) for a in arrays)


def ion_sensitivity_check(checks: Checks, cupy: Any) -> None:
    """The 10,000-neuron float64 run on CuPy arrays; a slice of it against the reference."""
    from fusekit.ops.ion_forward import ion_sensitivity, ion_sensitivity_reference

    hh, arrays = ion_sensitivity_inputs(SENS_NEURONS, "float64")
    kw = dict(channels=hh, dt=SENS_DT, n_steps=SENS_STEPS, record_every=400,
              spike_threshold=0.0, max_spikes=12)
    out = ion_sensitivity(*(cupy.asarray(a) for a in arrays), wrt=SENS_WRT, backend="cuda",
                          **kw)
    checks.expect("ion_sensitivity on CuPy arrays returns CuPy arrays",
                  all(isinstance(a, cupy.ndarray) for a in out))
    k, d = SENS_CHECK_NEURONS, len(SENS_WRT)
    v0, S, P, i_ext = (a[..., :k] for a in arrays)
    ref = ion_sensitivity_reference(v0, S, P, i_ext, np.zeros((d, k)),
                                    np.zeros((d, S.shape[0], k)), wrt=SENS_WRT, **kw)
    name = f"HH float64, {SENS_STEPS} steps, wrt {', '.join(SENS_WRT)}, first {k} neurons"
    checks.expect(f"ion_sensitivity {name}: the slice spikes",
                  int(ref[3].sum()) > k, f"{int(ref[3].sum())} spikes")
    for field, got, want in zip(SENS_NAMES, out, ref, strict=True):
        got = cupy.asnumpy(got)[..., :k]
        label = f"ion_sensitivity {field} {name}"
        if field == "spike_count":
            checks.same(label, got, want)
            continue
        nan = np.isnan(want)  # spike times (and their tangents) past the count
        if field.endswith("spike_times"):
            checks.same(f"{label}: NaN where the reference has NaN", np.isnan(got), nan)
        checks.compare(label, np.where(nan, 0.0, got), np.where(nan, 0.0, want), SENS_TOL)


def time_ion_sensitivity_row(cupy: Any, dtype: str, repeats: int) -> None:
    """One row of the table: both ops on the same population in ``dtype``."""
    from fusekit.ops.ion_forward import ion_sensitivity

    hh, arrays = ion_sensitivity_inputs(SENS_NEURONS, dtype)
    v0, S, P, i_ext = (cupy.asarray(a) for a in arrays)
    kw = dict(channels=hh, dt=SENS_DT, n_steps=SENS_STEPS, spike_threshold=0.0,
              max_spikes=12, backend="cuda")
    sim = cupy_ms(cupy, lambda: fusekit.ops.ion_simulate(v0, S, P, i_ext, **kw), repeats, 1)
    sens = cupy_ms(cupy, lambda: ion_sensitivity(v0, S, P, i_ext, wrt=SENS_WRT, **kw),
                   repeats, 1)
    rate = SENS_NEURONS * SENS_STEPS / (sens * 1e-3)
    print(f"{dtype:>7} | {sim:>12.3f} {sens:>15.3f} | {sens / sim:>12.2f}x | {rate:>14.3g}")


def dtype_table(checks: Checks, name: str, header: str, row: Callable[[str], None]) -> None:
    """Print ``header`` and one timing row per dtype (a failed row fails its check)."""
    print(header)
    print("-" * len(header))
    for dtype in ("float32", "float64"):
        checks.run(f"{name} timing {dtype}", row, dtype)


def time_ion_sensitivity(checks: Checks, cupy: Any, repeats: int) -> None:
    """ion_sensitivity against ion_simulate's CUDA forward pass, same neurons and steps."""
    print(
        f"\nion_sensitivity timing, {SENS_NEURONS} HH neurons, {SENS_STEPS * SENS_DT:g} ms at "
        f"dt = {SENS_DT} ms, wrt {', '.join(SENS_WRT)}, CuPy arrays; median of {repeats} "
        "repeats, ms per call"
    )
    header = (f"{'dtype':>7} | {'ion_simulate':>12} {'ion_sensitivity':>15} | "
              f"{'sens/simulate':>13} | {'neuron-steps/s':>14}")
    dtype_table(checks, "ion_sensitivity", header,
                lambda dtype: time_ion_sensitivity_row(cupy, dtype, repeats))
    print(
        f"sens/simulate: the cost of the {len(SENS_WRT)} tangents (and their spike-time "
        "tangents) over the plain forward pass, both one launch of one thread per neuron; "
        "times include allocating the outputs. neuron-steps/s: of ion_sensitivity."
    )


# ------------------------------------------- ion_adjoint (compiled backprop) check and timing

#: The ion_sensitivity population (SENS_NEURONS HH neurons, SENS_STEPS steps of SENS_DT),
#: recorded every 40 steps, so the backward's segments are 80 steps (about sqrt(4000),
#: rounded up to whole recording periods).
ADJ_RECORD_EVERY = 40
ADJ_MAX_SPIKES = 12
#: Largest gradient error allowed in the float64 check, relative to the largest reference
#: value: as SENS_TOL, the device's exp against NumPy's, amplified through 4000 steps' spikes,
#: now in both the forward re-run and the adjoint walk.
ADJ_TOL = 1e-7
ADJ_NAMES = ("v0", "states0", "params", "i_ext")


def backprop_problem(torch: Any, dtype: str) -> tuple[Any, tuple[np.ndarray, ...], tuple]:
    """The population, and the weights of a loss on every result (the incoming gradients)."""
    hh, arrays = ion_sensitivity_inputs(SENS_NEURONS, dtype)
    rng = np.random.default_rng(2010)
    n, n_rec = SENS_NEURONS, SENS_STEPS // ADJ_RECORD_EVERY
    weights = tuple(rng.normal(size=shape).astype(dtype) for shape in (
        (n,), (len(hh.state_names), n), (n_rec, n), (ADJ_MAX_SPIKES, n)))
    return hh, arrays, weights


def backprop_loss(torch: Any, hh: Any, tensors: tuple, weights: tuple) -> tuple[Any, Any]:
    """``fusekit.neuro.simulate`` (gradient="backprop") and a weighted sum of its results."""
    from fusekit.neuro import simulate

    v0, S, P, i_ext = tensors
    out = simulate(hh, P, i_ext, duration=SENS_STEPS * SENS_DT, dt=SENS_DT, v0=v0,
                   states0=S, record_every=ADJ_RECORD_EVERY, max_spikes=ADJ_MAX_SPIKES,
                   gradient="backprop", backend="cuda")
    w_v, w_s, w_rec, w_t = weights
    loss = ((out.v * w_v).sum() + (out.states * w_s).sum() + (out.v_record * w_rec).sum()
            + torch.nan_to_num(out.spike_times * w_t).sum())
    return loss, out


def ion_adjoint_check(checks: Checks, torch: Any) -> None:
    """Backprop through 10,000 HH neurons on torch CUDA tensors; a slice against the oracle."""
    from fusekit.backends.cuda import ion as cuda_ion
    from fusekit.ops.ion import ion_simulate_op
    from fusekit.ops.ion_backprop import ion_adjoint_reference
    from fusekit.ops.ion_grad import checkpointed_forward, segment_length

    hh, arrays, weights = backprop_problem(torch, "float64")
    tensors = tuple(torch.from_numpy(a).to("cuda").requires_grad_(True) for a in arrays)
    loss, out = backprop_loss(torch, hh, tensors, tuple(
        torch.from_numpy(w).to("cuda") for w in weights))
    grads = torch.autograd.grad(loss, tensors)
    checks.expect("ion_simulate's torch backward ran the CUDA ion_adjoint kernel",
                  ("ion_adjoint", hh.key, "float64") in cuda_ion._kernels)
    checks.expect("backprop gradients are CUDA tensors", all(g.is_cuda for g in grads))
    k = SENS_CHECK_NEURONS
    v0, S, P, i_ext = (a[..., :k] for a in arrays)
    kw = dict(channels=hh.key, dt=SENS_DT, n_steps=SENS_STEPS, record_every=ADJ_RECORD_EVERY,
              spike_threshold=0.0, max_spikes=ADJ_MAX_SPIKES)
    fwd = checkpointed_forward(ion_simulate_op.run, v0, S, P, i_ext, **kw, checkpoint_every=0,
                               backend="reference")
    name = f"HH float64, {SENS_STEPS} steps, first {k} neurons"
    checks.same(f"backprop forward spike counts {name}",
                out.spike_count[:k].cpu().numpy(), fwd[3])
    w_v, w_s, w_rec, w_t = (w[..., :k] for w in weights)
    ref = ion_adjoint_reference(
        fwd[5], fwd[6], P, i_ext, w_v, w_s, w_rec, np.where(np.isnan(fwd[4]), 0.0, w_t),
        **kw, segment=segment_length(SENS_STEPS, 0, ADJ_RECORD_EVERY))
    for field, got, want in zip(ADJ_NAMES, grads, ref, strict=True):
        checks.compare(f"ion_adjoint d loss / d {field} {name}",
                       got.detach()[..., :k].cpu().numpy(), want, ADJ_TOL)


#: Branched cells for the cable_adjoint check: a soma and three dendrites of 4 compartments
#: (the tour's tree), CABLE_CELLS cells with soma currents of 5-40 uA/cm^2, 100 ms.
CABLE_PARENT = np.array([-1, 0, 1, 2, 3, 0, 5, 6, 7, 2, 9, 10, 11])
CABLE_CELLS = 1000


def cable_backprop(torch: Any, device: str, n_cells: int, backend: str,
                   junctions: bool = False) -> tuple[Any, Any]:
    """The gradient of branched HH cells' loss w.r.t. parameters and coupling; spike counts.

    The loss: every soma's mean v plus its first spike time. ``junctions``: the branch points
    joined at zero-area nodes (``cable_tree``, ``c_m = 0`` there), else pairwise coupling.
    """
    import fusekit
    from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_coupling, cable_tree

    hh = ChannelSet(HH_CHANNELS)
    length, diam = np.full(CABLE_PARENT.size, 40.0), np.full(CABLE_PARENT.size, 1.5)
    length[0] = diam[0] = 20.0
    if junctions:
        tree = cable_tree(CABLE_PARENT, length, diam)
        parent, cpl, hollow = tree.parent, tree.coupling, tree.junction
    else:
        parent, cpl = CABLE_PARENT, cable_coupling(CABLE_PARENT, length, diam)
        hollow = np.zeros(parent.size, dtype=bool)
    n_comp = parent.size
    cpl = np.broadcast_to(cpl[:, None], (2, n_cells, n_comp)).copy()
    v0 = np.full((n_cells, n_comp), -65.0)
    S0 = hh.steady_states(v0.reshape(-1)).reshape(-1, n_cells, n_comp)
    P = hh.default_params(n_cells * n_comp).reshape(-1, n_cells, n_comp)
    P[0][:, hollow] = 0.0  # c_m: no membrane at a junction
    i_ext = np.zeros((n_cells, n_comp))
    i_ext[:, 0] = np.linspace(5.0, 40.0, n_cells)
    t = [torch.from_numpy(a).to(device) for a in (v0, S0, P, i_ext, cpl)]
    t[2].requires_grad_(True)
    t[4].requires_grad_(True)
    out = fusekit.ops.cable_simulate(t[0], t[1], t[2], t[3], parent, t[4], channels=hh,
                                     dt=SENS_DT, n_steps=SENS_STEPS, record_every=4,
                                     max_spikes=1, backend=backend)
    loss = out.v_record[:, :, 0].mean(0).sum() + torch.nan_to_num(out.spike_times).sum()
    return torch.autograd.grad(loss, (t[2], t[4])), out.spike_count


def cable_adjoint_check(checks: Checks, torch: Any) -> None:
    """Backprop through branched cells on CUDA tensors against the CPU kernels' gradient."""
    from fusekit.backends.cuda import ion as cuda_ion
    from fusekit.neuro import HH_CHANNELS, ChannelSet

    n = 64
    for junctions in (False, True):
        got, counts = cable_backprop(torch, "cuda", n, "cuda", junctions)
        checks.expect("cable_simulate's torch backward ran the CUDA cable_adjoint kernel",
                      ("cable_adjoint", ChannelSet(HH_CHANNELS).key, "float64")
                      in cuda_ion._kernels)
        want, want_counts = cable_backprop(torch, "cpu", n, "cpu", junctions)
        label = f"{n} cells{' with junction nodes' if junctions else ''}"
        checks.same(f"cable forward spike counts, {label}", counts.cpu().numpy(),
                    want_counts.numpy())
        for field, a, b in zip(("params", "coupling"), got, want, strict=True):
            checks.compare(f"cable_adjoint d loss / d {field}, {label} x {SENS_STEPS} steps",
                           a.cpu().numpy(), b.numpy(), ADJ_TOL)
    sync = torch.cuda.synchronize
    t_cpu = wall_ms(lambda: cable_backprop(torch, "cpu", CABLE_CELLS, "cpu"), sync, 1)
    t_gpu = wall_ms(lambda: cable_backprop(torch, "cuda", CABLE_CELLS, "cuda"), sync, 1)
    print(f"cable gradient, {CABLE_CELLS} cells x {CABLE_PARENT.shape[0]} compartments x "
          f"{SENS_STEPS} steps, float64 (forward + backward): cuda {t_gpu:.1f} ms, cpu "
          f"{t_cpu:.1f} ms ({t_cpu / t_gpu:.1f}x)")


def time_ion_adjoint_row(torch: Any, dtype: str, repeats: int, *, recompute: bool) -> None:
    """One row: the forward alone, forward and backward, and the torch recompute (float64)."""
    import fusekit.ops.ion as ion_ops

    hh, arrays, weights = backprop_problem(torch, dtype)
    tensors = tuple(torch.from_numpy(a).to("cuda").requires_grad_(True) for a in arrays)
    weights = tuple(torch.from_numpy(w).to("cuda") for w in weights)

    def forward() -> None:
        backprop_loss(torch, hh, tensors, weights)

    loss = backprop_loss(torch, hh, tensors, weights)[0]

    def backward() -> None:  # the same graph each time: the backward alone
        torch.autograd.grad(loss, tensors, retain_graph=True)

    fwd = wall_ms(forward, torch.cuda.synchronize, repeats)
    bwd = wall_ms(backward, torch.cuda.synchronize, repeats)
    old = float("nan")
    if recompute:
        # The route CUDA tensors took before this kernel: no compiled adjoint, torch re-runs
        # each segment step by step and backpropagates through it.
        compiled = ion_ops.adjoint_backward
        ion_ops.adjoint_backward = lambda *a, **k: None
        try:
            old = wall_ms(backward, torch.cuda.synchronize, 1)
        finally:
            ion_ops.adjoint_backward = compiled
    print(f"{dtype:>7} | {fwd:>9.2f} {bwd:>10.2f} {old:>16.1f} | {bwd / fwd:>12.2f}x "
          f"{old / bwd:>15.1f}x")


def time_ion_adjoint(checks: Checks, torch: Any, repeats: int) -> None:
    """Backprop (compiled ion_adjoint) against the CUDA forward, same neurons and steps."""
    from fusekit.ops.ion_grad import segment_length

    print(
        f"\nion_adjoint timing (backprop through fusekit.neuro.simulate), {SENS_NEURONS} HH "
        f"neurons, {SENS_STEPS * SENS_DT:g} ms at dt = {SENS_DT} ms, torch CUDA tensors; median "
        f"of {repeats} repeats, ms per call"
    )
    header = (f"{'dtype':>7} | {'forward':>9} {'backward':>10} {'torch recompute':>16} | "
              f"{'bwd/forward':>13} {'recompute/bwd':>16}")
    dtype_table(checks, "ion_adjoint", header, lambda dtype: time_ion_adjoint_row(
        torch, dtype, repeats, recompute=dtype == "float64"))
    print(
        "forward: simulate with inputs that require grad (the kernel in segments of "
        f"{segment_length(SENS_STEPS, 0, ADJ_RECORD_EVERY)} steps, keeping checkpoints), "
        "loss included; backward: "
        "torch.autograd.grad of the loss (ion_adjoint: one launch re-running each segment "
        "and walking it back); torch recompute: the backward without the compiled adjoint "
        "(one timed run, float64 only)."
    )


#: The most repeats of the network gradient timings (each a whole forward and backward).
NETWORK_GRAD_REPEATS = 3


def time_network_grad(checks: Checks, torch: Any, repeats: int, device: str = "cuda") -> None:
    """network_simulate_torch forward and backward: torch CUDA tensors against the CPU kernel.

    On CUDA tensors ``engine="auto"`` is the torch engine (one Python iteration of tensor
    operations per step) and ``engine="kernel"`` one call per step of the CUDA kernels of
    ``membrane_step`` and ``synapse_deliver`` (and their vjps backward); on the host's CPU the
    kernel engine is the whole run and its backward as two op calls. The weight gradients
    are compared. ``device`` names the GPU's torch device (the tests run it with ``"cpu"``
    on every side).
    """
    from fusekit.neuro import HH_CHANNELS, ChannelSet, network_simulate_torch, random_connectivity

    # Each repeat is a whole forward and backward (seconds with the per-step engines on a
    # GPU); the script's default of 15 repeats kept this section from finishing in two runs.
    repeats = min(repeats, NETWORK_GRAD_REPEATS)
    hh = ChannelSet(HH_CHANNELS)
    n, steps = 500, 400
    indptr, indices, weights = random_connectivity(n, 0.05, 0.05, np.random.default_rng(0))
    i_ext = np.where(np.arange(n) < n // 10, 12.0, 0.0)
    v0 = np.full(n, -65.0)
    grads = {}

    def run(device: str, engine: str = "auto") -> Callable[[], Any]:
        def call() -> Any:
            t = [torch.as_tensor(a, device=device) for a in (
                v0, hh.steady_states(v0), hh.default_params(n), i_ext, np.zeros(n))]
            w = torch.as_tensor(weights, device=device).requires_grad_()
            out = network_simulate_torch(hh, *t, indptr, indices, w, dt=0.025, n_steps=steps,
                                         delay_steps=40, record_every=10, max_spikes=4,
                                         engine=engine)
            out.v_record.mean().backward()
            grads[device, engine] = w.grad.detach().cpu().numpy()
        return call

    print(f"\nnetwork_simulate_torch forward + backward, {n} HH neurons at 5% connectivity, "
          f"{steps} steps, float64; median of {repeats} repeats, ms per step")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    gpu = wall_ms(run(device), sync, repeats) / steps
    gpu_kernel = wall_ms(run(device, "kernel"), sync, repeats) / steps
    cpu = wall_ms(run("cpu"), lambda: None, repeats) / steps
    print(f"  torch tensors on {device}: torch engine {gpu:.3f} ms, kernel engine (per-step "
          f"CUDA kernels) {gpu_kernel:.3f} ms; CPU tensors (kernel engine) {cpu:.3f} ms")
    checks.compare(f"network_simulate_torch weight gradient, {device} vs CPU kernel engine",
                   grads[device, "auto"], grads["cpu", "auto"], 1e-8)
    checks.compare(f"network_simulate_torch weight gradient, {device} kernel engine vs CPU "
                   "kernel engine", grads[device, "kernel"], grads["cpu", "auto"], 1e-8)
    time_cable_network_grad(checks, torch, repeats, device)


def time_cable_network_grad(checks: Checks, torch: Any, repeats: int, device: str) -> None:
    """cable_network_simulate_torch forward and backward: CUDA tensors against the CPU kernel.

    200 branched HH cells of 6 compartments (``benchmarks/test_bench_network_grad.py``'s
    network), 400 steps, float64; on CUDA tensors the torch engine, on the host's CPU the
    kernel engine (``cable_network_run`` and its vjp). The gradients of the weights,
    parameters and axial coupling are compared.
    """
    from fusekit.neuro import (
        HH_CHANNELS,
        ChannelSet,
        cable_coupling,
        cable_network_simulate_torch,
        random_connectivity,
    )

    hh = ChannelSet(HH_CHANNELS)
    n, m, steps = 200, 6, 400
    parent = np.array([-1, 0, 0, 1, 1, 2])
    cpl = cable_coupling(parent, [20.0, 150.0, 100.0, 80.0, 60.0, 120.0],
                         [20.0, 2.0, 1.5, 1.0, 1.0, 1.2])
    rng = np.random.default_rng(0)
    indptr, indices, weights = random_connectivity(n, 20 / n, 0.3, rng)
    comps = rng.integers(0, m, indices.shape[0])
    i_ext = np.zeros((n, m))
    i_ext[: n // 5, 0] = 20.0
    v0 = np.full((n, m), -65.0)
    grads = {}

    def run(device: str) -> Callable[[], Any]:
        def call() -> Any:
            t = [torch.as_tensor(a, device=device) for a in (
                v0, hh.steady_states(v0.reshape(-1)).reshape(-1, n, m), i_ext, np.zeros((n, m)))]
            P = torch.as_tensor(hh.default_params(n * m).reshape(-1, n, m),
                                device=device).requires_grad_()
            C = torch.as_tensor(np.broadcast_to(cpl[:, None], (2, n, m)).copy(),
                                device=device).requires_grad_()
            w = torch.as_tensor(weights, device=device).requires_grad_()
            out = cable_network_simulate_torch(hh, t[0], t[1], P, t[2], parent, C, t[3], indptr,
                                               indices, w, synapse_compartment=comps, dt=0.025,
                                               n_steps=steps, delay_steps=40, record_every=10,
                                               record_at=[0, 5], max_spikes=4)
            out.v_record.square().mean().backward()
            grads[device] = np.concatenate([x.grad.detach().cpu().numpy().ravel()
                                            for x in (w, P, C)])
        return call

    print(f"\ncable_network_simulate_torch forward + backward, {n} HH cells x {m} compartments, "
          f"{indices.shape[0]:,} synapses, {steps} steps, float64; median of {repeats} repeats, "
          f"ms per step")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    gpu = wall_ms(run(device), sync, repeats) / steps
    cpu = wall_ms(run("cpu"), lambda: None, repeats) / steps
    print(f"  torch tensors on {device} (torch engine) {gpu:.3f} ms; CPU tensors (kernel "
          f"engine) {cpu:.3f} ms")
    checks.compare(f"cable_network_simulate_torch gradients, {device} vs CPU kernel engine",
                   grads[device], grads["cpu"], 1e-8)


# ------------------------------------------------------------------------------- main


def spike_cupy_sorts(checks: Checks, cupy: Any) -> None:
    rng = np.random.default_rng(6)
    for dtype, n, quantum in (("int32", 1000, None), ("int64", 100_000, 3),
                              ("float32", 1000, None), ("float64", 100_000, 0.01)):
        keys = (rng.integers(-500, 500, n) if dtype.startswith("int") else rng.random(n))
        keys = keys.astype(dtype)
        expected = np.argsort(keys, kind="stable").astype(np.int64)
        got = fusekit.ops.spike_sort(cupy.asarray(keys), quantum, backend="cuda")
        checks.same(f"CuPy spike_sort {dtype} n={n} quantum={quantum}", cupy.asnumpy(got.order),
                    expected)
        got = fusekit.ops.spike_radix_sort(cupy.asarray(keys), quantum, radix_bits=6,
                                           backend="cuda")
        checks.same(f"CuPy spike_radix_sort {dtype} n={n}", cupy.asnumpy(got.order), expected)


def spike_cupy_union_find(checks: Checks, cupy: Any) -> None:
    from fusekit.ops.spike import union_find_union_reference

    rng = np.random.default_rng(7)
    n, m = 5000, 20000
    u, v = rng.integers(0, n, m), rng.integers(0, n, m)
    order = rng.permutation(m).astype(np.int64)
    parent, size = np.arange(n, dtype=np.int64), np.ones(n, np.int64)
    ref_acc, ref_cnt = union_find_union_reference(parent.copy(), size.copy(), u, v, order,
                                                  max_unions=4000)
    dp, ds = cupy.asarray(parent), cupy.asarray(size)
    acc, cnt = fusekit.ops.union_find_union(dp, ds, cupy.asarray(u), cupy.asarray(v),
                                            cupy.asarray(order), max_unions=4000,
                                            backend="cuda")
    checks.same("CuPy union_find_union accepted", cupy.asnumpy(acc), ref_acc)
    checks.same("CuPy union_find_union counters", np.asarray(cnt), ref_cnt)


def mst_cuda_boruvka(checks: Checks, cupy: Any, timing: bool) -> None:
    from fusekit.mst import graphs, minimum_spanning_forest

    for log2n, scheme in ((12, "int255"), (16, "uniform"), (20, "uniform")):
        u, v, w, n = graphs.delaunay_graph(1 << log2n, seed=0, weights=scheme)
        cpu = minimum_spanning_forest(u, v, w, n, method="spike-kruskal")
        gpu = minimum_spanning_forest(u, v, w, n, backend="cuda")
        checks.same(f"Boruvka cuda = spike-Kruskal cpu, Delaunay 2^{log2n} {scheme}",
                    np.sort(gpu.edges), np.sort(cpu.edges))
        if timing:
            t_gpu = min(minimum_spanning_forest(u, v, w, n, backend="cuda").timings["total"]
                        for _ in range(3))
            t_cpu = min(minimum_spanning_forest(u, v, w, n, method="spike-kruskal")
                        .timings["total"] for _ in range(3))
            print(f"  Delaunay 2^{log2n} {scheme}: Boruvka cuda (with copies) "
                  f"{t_gpu * 1e3:.1f} ms, spike-Kruskal cpu {t_cpu * 1e3:.1f} ms (min of 3)")


def check_spike_mst_cupy(checks: Checks, cupy: Any, timing: bool) -> None:
    print("spike and mst, CuPy arrays, backend='cuda':")
    checks.run("CuPy spike sorts", spike_cupy_sorts, checks, cupy)
    checks.run("CuPy union-find", spike_cupy_union_find, checks, cupy)
    checks.run("CUDA Boruvka", mst_cuda_boruvka, checks, cupy, timing)


# ------------------------------------------------- where the time of one small call goes


def launch_us(fn: Callable[[], Any], sync: Callable[[], None], n: int = 200) -> float:
    """Mean wall-clock microseconds per call of ``n`` back-to-back calls, synchronised once."""
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - start) / n * 1e6


def profiled(torch: Any, fn: Callable[[], Any], calls: int = 10) -> tuple[float, list[Any]]:
    """GPU kernel time per call of ``fn`` (us) and the kernels, by torch.profiler.

    CUPTI sees every kernel of the process: Numba's and CuPy's as well as torch's.
    """
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages() if getattr(e, "device_time_total", 0) > 0]
    rows.sort(key=lambda e: -e.device_time_total)
    return sum(e.device_time_total for e in rows) / calls, rows


def warm_gpu(torch: Any, ms: float = 30.0) -> None:
    """Keep the GPU busy with bf16 matrix products for ``ms`` milliseconds.

    An idle H200 runs its SMs at a few hundred MHz and raises the clock only under load, so
    a kernel timed right after idle Python work runs slow; this brings the clock up first.
    """
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    start = time.perf_counter()
    while (time.perf_counter() - start) * 1e3 < ms:
        for _ in range(8):
            a @ a
        torch.cuda.synchronize()


def kernel_table(torch: Any, label: str, fn: Callable[[], Any], calls: int = 10) -> None:
    """Print the GPU kernels of ``calls`` calls of ``fn`` and their device time."""
    total, rows = profiled(torch, fn, calls)
    print(f"  {label}: {total:.1f} us of GPU kernels per call")
    for e in rows[:6]:
        print(f"    {e.device_time_total / calls:9.1f} us  x{e.count / calls:4.1f}  "
              f"{e.key[:90]}")


#: (weight rows per block, warps per row, wide kernel, words unrolled) of the sweep.
TUNE_BLOCKS = ((1, 4, False, 1), (2, 4, False, 1), (4, 4, False, 1), (1, 8, False, 1),
               (2, 8, False, 1), (4, 2, False, 1),
               (2, 4, True, 1), (2, 4, True, 2), (2, 4, True, 4), (1, 8, True, 2),
               (2, 8, True, 1), (8, 1, True, 2))
#: (rows of x, rows of W, K chunk, rows and columns per thread) of the tiled kernel's rows.
TUNE_TILED = ((16, 128, 32, 4, 4), (16, 64, 32, 4, 2), (32, 128, 32, 4, 4),
              (16, 128, 64, 4, 4), (64, 128, 32, 8, 4), (32, 64, 32, 4, 4))
#: The (M, m_tile) columns of the sweep.
TUNE_COLUMNS = ((1, 1), (4, 4), (16, 8), (16, 16), (64, 8), (64, 16))
#: The weight of the sweep: gate/up of a DeepSeek-V3 expert.
TUNE_SHAPE = (2048, 7168)


def tune_fp8(checks: Checks, torch: Any, cupy: Any) -> None:
    """fp8_gemv's kernel time on the gate/up weight for each block shape and M tile.

    The byte and wide kernels (:data:`TUNE_BLOCKS`), then the tiled kernel
    (:data:`TUNE_TILED`, whose rows of x per block replace the M tile: its two columns per M
    are the same configuration twice). Each configuration is first checked against a float32
    product with the dequantized weight (1e-4 of the largest value); a wrong one prints
    ``wrong`` and fails a check.
    """
    from fusekit.backends.cuda.fp8 import device_table
    from fusekit.backends.cuda.fp8_matmul import fp8_gemm_tiled_launch, fp8_gemv_launch

    n, k = TUNE_SHAPE
    w = cupy.asarray(fp8_weight(n, k, "float32", 11))
    q, sc = fusekit.ops.fp8_block_quantize(w, backend="cuda")
    wd = fusekit.ops.fp8_block_dequantize(q, sc, backend="cuda")
    table = device_table(cupy, "e4m3fn", "float32")
    print(f"  fp8_gemv kernel [{n}, {k}], float32, us per call (torch.profiler, 50 calls "
          "back to back through the fast launch, after 30 ms of bf16 matmuls):")
    header = f"  {'rows x warps':>22} | " + " ".join(f"{f'M={m} t{t}':>10}"
                                                    for m, t in TUNE_COLUMNS)
    print(header)
    configs = [(f"{rows} x {splits}" + (f" wide u{unroll}" if wide else ""),
                lambda x, out, tile, rows=rows, splits=splits, wide=wide, unroll=unroll:
                fp8_gemv_launch(x, q, sc, out, table=table, rows_per_block=rows,
                                splits=splits, m_tile=tile, wide=wide, unroll=unroll,
                                device=0))
               for rows, splits, wide, unroll in TUNE_BLOCKS]
    configs += [(f"tiled {'x'.join(map(str, shape))}",
                 lambda x, out, tile, shape=shape: fp8_gemm_tiled_launch(
                     x, q, sc, out, table=table, shape=shape, device=0))
                for shape in TUNE_TILED]
    for name, launch_one in configs:
        cells = []
        for m, tile in TUNE_COLUMNS:
            x = cupy.asarray(np.random.default_rng(m).standard_normal((m, k), np.float32))
            out = cupy.empty((m, n), cupy.float32)

            def call(x=x, out=out, tile=tile, launch_one=launch_one) -> None:
                launch_one(x, out, tile)

            try:
                call()
            except Exception as exc:  # e.g. too many registers for the block: one cell
                print(f"    {name} M={m} tile={tile}: {type(exc).__name__}: {str(exc)[:80]}")
                cells.append(f"{'error':>10}")
                continue
            ref = x @ wd.T
            err = float(cupy.abs(out - ref).max() / cupy.abs(ref).max())
            if err > 1e-4:
                checks.fail(f"tune_fp8 {name} M={m} tile={tile}", f"error {err:.1e}")
                cells.append(f"{'wrong':>10}")
                continue
            warm_gpu(torch)
            cells.append(f"{profiled(torch, call, calls=50)[0]:>10.1f}")
        print(f"  {name:>22} | " + " ".join(cells), flush=True)
    checks.expect("fp8_gemv tuning sweep ran", True)


def diag_overhead(checks: Checks, torch: Any, cupy: Any) -> None:
    """Launch costs, and the kernels (with their device time) of small fusekit calls."""
    from numba import cuda

    from fusekit.backends.cuda.fp8 import device_table
    from fusekit.backends.cuda.fp8_matmul import fp8_gemv_launch

    @cuda.jit
    def empty(a, b, c, d, e, f):  # pragma: no cover - runs on the GPU
        pass

    small = [cupy.zeros(256, cupy.float32) for _ in range(6)]
    numba_arrays = [cuda.as_cuda_array(a) for a in small]
    sync = cupy.cuda.get_current_stream().synchronize
    print("  launch cost, us per call (200 back-to-back, one sync):")
    print(f"    empty Numba kernel, 6 Numba device arrays: "
          f"{launch_us(lambda: empty[1, 32](*numba_arrays), sync):8.1f}")
    print(f"    empty Numba kernel, 6 CuPy arrays:         "
          f"{launch_us(lambda: empty[1, 32](*small), sync):8.1f}")
    print(f"    CuPy elementwise a + 1:                    "
          f"{launch_us(lambda: small[0] + 1, sync):8.1f}")
    n, k = 2048, 7168
    w = cupy.asarray(fp8_weight(n, k, "float32", 11))
    q, sc = fusekit.ops.fp8_block_quantize(w, backend="cuda")
    table = device_table(cupy, "e4m3fn", "float32")
    for m in (1, 16, 64):
        x = cupy.asarray(np.random.default_rng(m).standard_normal((m, k), np.float32))
        out = cupy.empty((m, n), cupy.float32)
        op_us = launch_us(lambda x=x: fusekit.ops.fp8_gemv(x, q, sc, backend="cuda"), sync)
        raw_us = launch_us(lambda x=x, out=out: fp8_gemv_launch(x, q, sc, out, table=table),
                           sync)
        print(f"  fp8_gemv [{n}, {k}] M={m}: op {op_us:.1f} us per call, the launch function "
              f"alone {raw_us:.1f} us")
        kernel_table(torch, f"fp8_gemv M={m} op",
                     lambda x=x: fusekit.ops.fp8_gemv(x, q, sc, backend="cuda"))
    rng = np.random.default_rng(3)
    A = cupy.asarray(rng.standard_normal((4, 64, 64), np.float32))
    B = cupy.asarray(rng.standard_normal((4, 64, 64), np.float32))
    x = cupy.asarray(rng.standard_normal((16, 4096), np.float32))
    op_us = launch_us(lambda: fusekit.ops.kron_linear(x, A, B, backend="cuda"), sync)
    print(f"  kron_linear r=4 batch=16 (CuPy): op {op_us:.1f} us per call")
    kernel_table(torch, "kron_linear r=4 batch=16 op",
                 lambda: fusekit.ops.kron_linear(x, A, B, backend="cuda"))
    checks.expect("overhead diagnostics ran", True)


def diag_launch(checks: Checks, torch: Any, cupy: Any) -> None:
    """A cheaper launch of a Numba-compiled kernel, tried on fp8_gemv (numba-cuda >= 0.2x).

    Numba's dispatcher wraps every array argument (15-20 us each with CuPy arrays). This
    launches the same compiled kernel through ``cuda.core.launch`` with the arguments
    flattened as Numba's ``_Kernel.launch`` flattens them (arrays: meminfo 0, parent 0,
    size, itemsize, data pointer, shape, strides in bytes), checks that the result equals
    the normal launch's bit for bit, and times both. Internals of numba-cuda: a diagnostic
    for deciding whether fusekit should launch this way, not a path the library uses.
    """
    import ctypes

    from numba.cuda import dispatcher as numba_dispatcher
    from numba.cuda._compat import CUDA_CORE_GE_1_0
    from numba.cuda.cudadrv import driver

    from fusekit.backends.cuda import fp8_matmul as mm
    from fusekit.backends.cuda.fp8 import device_table

    n, k = 2048, 7168
    w = cupy.asarray(fp8_weight(n, k, "float32", 11))
    q, sc = fusekit.ops.fp8_block_quantize(w, backend="cuda")
    table = device_table(cupy, "e4m3fn", "float32")
    x = cupy.asarray(np.random.default_rng(1).standard_normal((1, k), np.float32))
    want = cupy.empty((1, n), cupy.float32)
    mm.fp8_gemv_launch(x, q, sc, want, table=table, wide=False)  # compiles the byte kernel
    dispatcher = mm._gemv_kernel("float32", 1, mm.ROWS_PER_BLOCK, mm.ROW_SPLITS, mm._vec(128))
    overloads = list(dispatcher.overloads.values())
    kernel = overloads[0]._codelibrary.get_cufunc().kernel
    flag = {"is_cooperative": False} if CUDA_CORE_GE_1_0 else {"cooperative_launch": False}
    config = numba_dispatcher.LaunchConfig(
        grid=(-(-n // mm.ROWS_PER_BLOCK), 1, 1),
        block=(mm.WARP, mm.ROWS_PER_BLOCK * mm.ROW_SPLITS, 1), shmem_size=0, **flag)
    stream = driver._to_core_stream(0)

    def flat(a: Any) -> list[Any]:
        return [0, 0, a.size, a.itemsize, a.data.ptr, *a.shape, *a.strides]

    got = cupy.zeros((1, n), cupy.float32)

    def fast() -> None:
        args = [*flat(x), *flat(q), *flat(sc), *flat(table), *flat(got), ctypes.c_int64(128)]
        numba_dispatcher.launch(stream, config, kernel, *args)

    fast()
    cupy.cuda.get_current_stream().synchronize()
    checks.same(f"fast launch equals Numba's launch ({len(overloads)} overload(s))",
                cupy.asnumpy(got), cupy.asnumpy(want), bitwise=True)
    sync = cupy.cuda.get_current_stream().synchronize
    normal = launch_us(lambda: mm.fp8_gemv_launch(x, q, sc, want, table=table, wide=False),
                       sync)
    print(f"  fp8_gemv M=1, us per call: Numba's launch {normal:.1f}, cuda.core.launch with "
          f"flattened arguments {launch_us(fast, sync):.1f}")

    # The library's own fast path (_device.launch), through the public ops, against Numba's.
    from fusekit.backends.cuda import _device

    cases = {
        "fp8_gemv M=1": lambda: fusekit.ops.fp8_gemv(x, q, sc, backend="cuda"),
        "fp8_gemv M=16": lambda: fusekit.ops.fp8_gemv(x16, q, sc, backend="cuda"),
        "fp8_gemv_t M=4": lambda: fusekit.ops.fp8_gemv_t(g4, q, sc, backend="cuda"),
        "kron_linear r=4, 16 tokens": lambda: fusekit.ops.kron_linear(xk, ak, bk,
                                                                       backend="cuda"),
        "kron_factor_grads r=4, 16 tokens": lambda: fusekit.ops.kron_factor_grads(
            xk, gk, ak, bk, backend="cuda"),
    }
    rng = np.random.default_rng(2)
    x16 = cupy.asarray(rng.standard_normal((16, k), np.float32))
    g4 = cupy.asarray(rng.standard_normal((4, n), np.float32))
    xk = cupy.asarray(rng.standard_normal((16, 4096), np.float32))
    gk = cupy.asarray(rng.standard_normal((16, 4096), np.float32))
    ak = cupy.asarray(rng.standard_normal((4, 64, 64), np.float32))
    bk = cupy.asarray(rng.standard_normal((4, 64, 64), np.float32))
    parts = _device._parts[0] if _device._parts else _device._fast_launch_parts()
    checks.expect("the library's fast launch is available (cuda.core, numba-cuda)",
                  parts is not None)
    print("  op on CuPy arrays, us per call (200 back to back): Numba's launch -> fast launch")
    for label, fn in cases.items():
        _device._parts[:] = [None]
        slow_out = fn()
        slow = launch_us(fn, sync)
        _device._parts[:] = [parts]
        fast_out = fn()
        fast_us = launch_us(fn, sync)
        for i, (a, b) in enumerate(zip(
                slow_out if isinstance(slow_out, tuple) else (slow_out,),
                fast_out if isinstance(fast_out, tuple) else (fast_out,), strict=True)):
            checks.same(f"{label} output {i}: fast launch equals Numba's launch",
                        cupy.asnumpy(b), cupy.asnumpy(a), bitwise=True)
        print(f"    {label:34s} {slow:8.1f} -> {fast_us:8.1f}")


def diag_profile(checks: Checks, torch: Any, cupy: Any) -> None:
    """Where the host time of a small fp8_gemv call goes: cProfile of 200 calls.

    M = 1 on the gate/up weight, through the public op, on bfloat16 and float32 torch CUDA
    tensors and on float32 CuPy arrays: the time per call without the profiler, then the
    35 functions with the most time of their own and the 35 with the most cumulative time.
    """
    import cProfile
    import io
    import pstats

    n, k = 2048, 7168
    w = cupy.asarray(fp8_weight(n, k, "float32", 11))
    q, sc = fusekit.ops.fp8_block_quantize(w, backend="cuda")
    x = cupy.asarray(np.random.default_rng(1).standard_normal((1, k), np.float32))
    qt, st = torch.from_dlpack(q), torch.from_dlpack(sc)
    xf = torch.from_dlpack(x)
    xt = xf.to(torch.bfloat16)
    sync = cupy.cuda.get_current_stream().synchronize

    def sync_both() -> None:
        sync()
        torch.cuda.synchronize()

    cases = {
        "torch bf16": lambda: fusekit.ops.fp8_gemv(xt, qt, st),
        "torch float32": lambda: fusekit.ops.fp8_gemv(xf, qt, st),
        "cupy float32": lambda: fusekit.ops.fp8_gemv(x, q, sc),
    }
    for name, fn in cases.items():
        print(f"  fp8_gemv M=1, {name}: {launch_us(fn, sync_both):.1f} us per call without "
              "the profiler (200 back to back)")
    for name, fn in cases.items():
        fn()
        sync_both()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(200):
            fn()
        prof.disable()
        sync()
        torch.cuda.synchronize()
        for order in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats(order).print_stats(35)
            lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
            print(f"  fp8_gemv M=1, {name}, 200 calls, by {order}:")
            for line in lines[2:]:
                print("    " + line[:150])
    checks.expect("fp8_gemv profile ran", True)


def diag_torch_view(checks: Checks, torch: Any, cupy: Any) -> None:
    """Torch CUDA tensors as CuPy arrays without DLPack (``FUSEKIT_TORCH_CUDA_VIEW``).

    Each op runs on torch CUDA tensors through DLPack (the default) and through
    ``_arrays.cupy_view_of_tensor``; the outputs must be equal bit for bit, and the time per
    call of both is printed. A transposed (non-contiguous) factor and a call on a side stream
    (where the view must step aside for DLPack's event) are among the cases.
    """
    from fusekit import _arrays

    n, k = 2048, 7168
    rng = np.random.default_rng(3)
    w = torch.as_tensor(fp8_weight(n, k, "float32", 11), device="cuda")
    q, sc = fusekit.ops.fp8_block_quantize(w, backend="cuda")
    x32 = torch.as_tensor(rng.standard_normal((1, k), np.float32), device="cuda")
    xb = x32.to(torch.bfloat16)
    xk = torch.as_tensor(rng.standard_normal((16, 4096), np.float32), device="cuda")
    ak = torch.as_tensor(rng.standard_normal((4, 64, 64), np.float32), device="cuda")
    bk = torch.as_tensor(rng.standard_normal((4, 64, 64), np.float32), device="cuda")
    side = torch.cuda.Stream()

    def on_side_stream() -> Any:
        with torch.cuda.stream(side):
            y = fusekit.ops.fp8_gemv(x32, q, sc, backend="cuda")
        torch.cuda.current_stream().wait_stream(side)
        return y

    cases = {
        "fp8_gemv M=1, float32": lambda: fusekit.ops.fp8_gemv(x32, q, sc, backend="cuda"),
        "fp8_gemv M=1, bfloat16": lambda: fusekit.ops.fp8_gemv(xb, q, sc, backend="cuda"),
        "kron_linear r=4, 16 tokens": lambda: fusekit.ops.kron_linear(xk, ak, bk,
                                                                       backend="cuda"),
        "kron_linear, transposed A": lambda: fusekit.ops.kron_linear(
            xk, ak.transpose(1, 2), bk, backend="cuda"),
        "fp8_gemv on a side stream": on_side_stream,
    }
    sync = torch.cuda.synchronize
    print("  op on torch CUDA tensors, us per call (200 back to back): DLPack -> view")
    try:
        for label, fn in cases.items():
            _arrays._TORCH_CUDA_VIEW = False
            want = fn()
            slow = launch_us(fn, sync)
            _arrays._TORCH_CUDA_VIEW = True
            got = fn()
            fast = launch_us(fn, sync)
            checks.same(f"{label}: the view equals DLPack", got.cpu().numpy() if
                        got.dtype != torch.bfloat16 else got.float().cpu().numpy(),
                        want.cpu().numpy() if want.dtype != torch.bfloat16
                        else want.float().cpu().numpy(), bitwise=True)
            print(f"    {label:30s} {slow:8.1f} -> {fast:8.1f}")
    finally:
        _arrays._TORCH_CUDA_VIEW = os.environ.get("FUSEKIT_TORCH_CUDA_VIEW", "0") == "1"


def numba_versions() -> str:
    """Numba's version, and numba-cuda's where that package provides ``numba.cuda``."""
    import numba

    try:
        from importlib.metadata import version

        return f"Numba {numba.__version__}, numba-cuda {version('numba-cuda')}"
    except Exception:  # numba.cuda from Numba itself
        return f"Numba {numba.__version__} (its own numba.cuda)"


def gpu_sections(checks: Checks, torch: Any, cupy: Any,
                 args: argparse.Namespace) -> dict[str, tuple[str, Callable[[], None]]]:
    """The script's sections in order: name -> (kind, what it runs).

    Kinds: ``check``; ``timing`` (skipped by ``--no-timing``); ``extra`` (run only when
    ``--only`` names it).
    """
    timing = not args.no_timing
    n = args.repeats

    def networks() -> None:
        checks.run("network_simulate E/I float64", network_cupy_check, checks, cupy)
        checks.run("cable_network_simulate float64", cable_network_cupy_check, checks, cupy)

    return {
        "kron": ("check", lambda: (check_cupy(checks, cupy), check_torch(checks, torch))),
        "fp8": ("check", lambda: (check_fp8_cupy(checks, cupy), check_fp8_torch(checks, torch))),
        "kron_svd": ("check", lambda: (check_kron_svd_cupy(checks, cupy),
                                       check_kron_svd_torch(checks, torch))),
        "spike_mst": ("check", lambda: check_spike_mst_cupy(checks, cupy, timing)),
        "networks": ("check", networks),
        "membrane": ("check", lambda: membrane_cupy_check(checks, cupy)),
        "ion_sensitivity": ("check", lambda: ion_sensitivity_check(checks, cupy)),
        "ion_adjoint": ("check", lambda: ion_adjoint_check(checks, torch)),
        "cable_adjoint": ("check", lambda: cable_adjoint_check(checks, torch)),
        "diag_overhead": ("timing", lambda: diag_overhead(checks, torch, cupy)),
        "time_kron": ("timing", lambda: time_kron_linear(checks, torch, cupy, n)),
        "time_fp8": ("timing", lambda: time_fp8_gemv(checks, torch, cupy, n)),
        "time_kpsvd": ("timing", lambda: time_kpsvd(checks, torch, cupy, n)),
        "time_ion_sensitivity": ("timing", lambda: time_ion_sensitivity(checks, cupy, n)),
        "time_ion_adjoint": ("timing", lambda: time_ion_adjoint(checks, torch, n)),
        "time_network_grad": ("timing", lambda: time_network_grad(checks, torch, n)),
        "tune_fp8": ("extra", lambda: tune_fp8(checks, torch, cupy)),
        "diag_launch": ("extra", lambda: diag_launch(checks, torch, cupy)),
        "diag_profile": ("extra", lambda: diag_profile(checks, torch, cupy)),
        "diag_torch_view": ("extra", lambda: diag_torch_view(checks, torch, cupy)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-timing", action="store_true", help="run the checks only")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per case")
    parser.add_argument("--only", nargs="+", metavar="SECTION",
                        help="run only these sections (names as in the '[section ...]' lines)")
    args = parser.parse_args(argv)

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("unset NUMBA_ENABLE_CUDASIM: this script needs a real GPU", file=sys.stderr)
        return 2
    fusekit.info()
    if ROW_STACK_SHIM:
        print("NumPy has no row_stack: aliased to vstack for numba-cuda (see the top of this "
              "script)")
    print()
    try:
        import cupy
        import torch
    except ImportError as exc:
        print(f"needs CuPy and torch: {exc}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("torch sees no CUDA device", file=sys.stderr)
        return 2
    reason = unavailable_reason("cuda")
    if reason is not None:
        print(f"fusekit's cuda backend is unavailable: {reason}", file=sys.stderr)
        return 1
    print(f"GPU: {torch.cuda.get_device_name()}, CuPy {cupy.__version__}, torch "
          f"{torch.__version__}, {numba_versions()}\n")

    checks = Checks()
    sections = gpu_sections(checks, torch, cupy, args)
    unknown = set(args.only or ()) - set(sections)
    if unknown:
        print(f"unknown sections {sorted(unknown)}; known: {', '.join(sections)}",
              file=sys.stderr)
        return 2
    for name, (kind, run) in sections.items():
        if args.only and name not in args.only:
            continue
        if (kind == "timing" and args.no_timing) or (kind == "extra" and not args.only):
            continue
        print(f"[{name}]", flush=True)
        start = time.perf_counter()
        checks.run(f"section {name}", run)
        print(f"[section {name}: {time.perf_counter() - start:.1f} s]", flush=True)

    print(f"\n{checks.passed} passed, {len(checks.failed)} failed")
    for name in checks.failed:
        print(f"  failed: {name}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
