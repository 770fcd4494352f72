"""Check fusekit's CUDA kernels against the float64 references, then time them on the GPU.

Run on a machine with an NVIDIA GPU, CuPy and a CUDA build of torch::

    python benchmarks/gpu/run_gpu_checks.py            # checks, then the timing table
    python benchmarks/gpu/run_gpu_checks.py --no-timing

It prints ``fusekit.info()``, one PASS/FAIL line per correctness check (CuPy arrays and torch
CUDA tensors through the public API with ``backend="cuda"``, torch autograd included), then
``kron_linear`` at LLaMA-like sizes (a 4096 x 4096 weight as 64 x 64 factors) next to the dense
``x @ W.T`` product and a cuBLAS reshape+matmul version written in torch. It exits 1 when any
check fails, 2 when there is no usable GPU. About a minute on one GPU, most of it Numba
compiling the kernels on first use.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import traceback
from collections.abc import Callable
from typing import Any

# Small check shapes launch few blocks; Numba would warn about low occupancy on each.
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")

import numpy as np

import fusekit
from fusekit._registry import unavailable_reason
from fusekit.ops.kron import kron_factor_grads_reference, kron_linear_reference

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
    A = rng.standard_normal((r, m1, n1)).astype(dtype) / np.sqrt(n1)
    B = rng.standard_normal((r, m2, n2)).astype(dtype) / np.sqrt(n2)
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


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-timing", action="store_true", help="run the checks only")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per case")
    args = parser.parse_args(argv)

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        print("unset NUMBA_ENABLE_CUDASIM: this script needs a real GPU", file=sys.stderr)
        return 2
    fusekit.info()
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
          f"{torch.__version__}\n")

    checks = Checks()
    check_cupy(checks, cupy)
    check_torch(checks, torch)
    if not args.no_timing:
        time_kron_linear(checks, torch, cupy, args.repeats)

    print(f"\n{checks.passed} passed, {len(checks.failed)} failed")
    for name in checks.failed:
        print(f"  failed: {name}")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
