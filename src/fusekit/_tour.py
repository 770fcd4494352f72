"""``fusekit tour``: a short run of every domain on built-in data, ending in a results table.

Today fusekit has one op family, the Kronecker-sum product; each new domain adds its part.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ._timing import format_seconds, median_seconds, table


def _kron_part(quick: bool, out: TextIO) -> list[list[str]]:
    import numpy as np
    import torch

    from . import ops
    from .ops.kron import kron_linear_reference

    rng = np.random.default_rng(20261128)
    # (weight side, factor side, rank, tokens): LLaMA-like 4096-wide layers and a small one.
    cases = [(1024, 32, 4, 16), (4096, 64, 4, 16)]
    if quick:
        cases = [(256, 16, 2, 8), (1024, 32, 4, 16)]
    rows = []
    for side, f, r, tokens in cases:
        A = rng.standard_normal((r, f, f), dtype=np.float32) / f
        B = rng.standard_normal((r, f, f), dtype=np.float32) / f
        x = rng.standard_normal((tokens, side), dtype=np.float32)
        y_ref = kron_linear_reference(x.astype(np.float64), A.astype(np.float64),
                                      B.astype(np.float64))
        y = ops.kron_linear(x, A, B, backend="cpu")
        err = float(np.abs(y - y_ref).max() / max(np.abs(y_ref).max(), 1e-30))
        At, Bt, xt = map(torch.from_numpy, (A, B, x))
        W = sum(torch.kron(At[k], Bt[k]) for k in range(r))  # dense weight, formed once
        t_fusekit = median_seconds(lambda A=A, B=B, x=x: ops.kron_linear(x, A, B, backend="cpu"))
        t_dense = median_seconds(lambda W=W, xt=xt: xt @ W.T)
        print(f"  kron_linear {side}x{side} as {r} x ({f}x{f} kron {f}x{f}), {tokens} tokens: "
              f"fusekit {format_seconds(t_fusekit)}, dense {format_seconds(t_dense)}", file=out)
        rows.append([
            "peft/kron", f"kron_linear {side}x{side}, r={r}, {f}x{f} factors, {tokens} tokens",
            f"{err:.1e}", format_seconds(t_fusekit),
            f"torch dense x @ W.T: {format_seconds(t_dense)}",
            f"{t_dense / t_fusekit:.1f}x",
            f"{2 * r * f * f:,} vs {side * side:,}",
        ])
    return rows


def run_tour(quick: bool = False, out: TextIO | None = None) -> list[list[str]]:
    """Run every domain's part of the tour and print the results table.

    Args:
        quick: Smaller problem sizes (used by the tests).
        out: Where to print (default ``sys.stdout``).

    Returns:
        The table rows.
    """
    out = out or sys.stdout
    from ._info import info

    info(file=out)
    print("\nTour:", file=out)
    rows: list[list[str]] = []
    parts: list[Any] = [_kron_part]
    for part in parts:
        rows += part(quick, out)
    headers = ["domain", "case", "max rel err vs f64", "fusekit (cpu)", "peer", "speed-up",
               "parameters"]
    print("\nResults\n" + table(headers, rows), file=out)
    return rows
