"""Paired timing of fp8_gemv against torch bf16 and the stream read, call by call.

pytest-benchmark times one contender for a few seconds, then the next: on a shared machine
whose speed drifts by tens of percent within a minute, the ratios of such blocks drift too.
Here each round calls every contender once, in a shuffled order, on the next of six weight
copies (more than twice the last-level cache, as in ``test_bench_fp8.py``), and the report is
the median over rounds of each contender's time divided by the reference's in the same round,
with the contenders' minima beside it. Every call reads the copy after the previous call's,
so the five calls in between have pushed it out of the cache. Contenders:

* ``stream``: ``torch.sum`` over the FP8 bytes viewed as float32 (the reference at M=1);
* ``fusekit``: ``fusekit.ops.fp8_gemv`` on float32 activations;
* ``fusekit_bf16x``: the same on the activations ``torch_bf16`` gets (bfloat16 values);
* ``torch_bf16``: ``F.linear`` with the weight dequantized to bfloat16 at load time (the
  reference at M > 1);
* ``fusekit_1t``: ``fusekit`` with one thread (M=1 only);
* ``fusekit_subn``: ``fusekit`` on weights whose codes are all subnormal or zero (M=1 only).

    python benchmarks/fp8_paired.py --rounds 200
    FUSEKIT_FP8_BF16=0 python benchmarks/fp8_paired.py   # the FMA kernels, for comparison
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch

import fusekit

SHAPES = {"gate_up": (2048, 7168), "down": (7168, 2048)}
COPIES = 6


def run_case(label: str, m: int, weights: dict, rounds: int, threads: int) -> None:
    """Time every contender at ``m`` rows, ``rounds`` rounds, and print one line each."""
    qs, s, bf, views, subn = (weights[k] for k in ("q", "s", "bf16", "views", "subnormal"))
    k = qs[0].shape[1]
    x = np.random.default_rng(m).standard_normal((m, k)).astype(np.float32)
    xt = torch.from_numpy(x).bfloat16()
    xbf = xt.float().numpy()

    def gemv(xx: np.ndarray, w: np.ndarray) -> None:
        fusekit.ops.fp8_gemv(xx, w, s, backend="cpu")

    def one_thread(i: int) -> None:
        fusekit.set_num_threads(1)
        try:
            gemv(x, qs[i])
        finally:
            fusekit.set_num_threads(threads)

    calls = {
        "fusekit": lambda i: gemv(x, qs[i]),
        "fusekit_bf16x": lambda i: gemv(xbf, qs[i]),
        "torch_bf16": lambda i: torch.nn.functional.linear(xt, bf[i]),
    }
    if m == 1:
        calls["stream"] = lambda i: views[i].sum()
        calls["fusekit_1t"] = one_thread
        calls["fusekit_subn"] = lambda i: gemv(x, subn[i])
    reference = "stream" if m == 1 else "torch_bf16"
    times = {c: [] for c in calls}
    with torch.no_grad():
        for c in calls.values():
            c(0)
        order = list(calls)
        turn = 0
        for _ in range(rounds):
            random.shuffle(order)
            for c in order:  # each call on the next copy: none is in cache
                t0 = time.perf_counter()
                calls[c](turn % COPIES)
                times[c].append(time.perf_counter() - t0)
                turn += 1
    ref = np.array(times[reference])
    for c, ts in times.items():
        ratio = np.median(np.array(ts) / ref)
        print(f"{label + ' M=' + str(m):<22}{c:<15}{min(ts) * 1e6:>10.0f}{ratio:>14.2f}  "
              f"{reference}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--m", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    fusekit.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"{'case':<22}{'contender':<15}{'min (us)':>10}{'median ratio':>14}  reference")
    for name, (n, k) in SHAPES.items():
        rng = np.random.default_rng(0)
        w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
        q, s = fusekit.ops.fp8_block_quantize(w)
        qs = [np.roll(q, 7 * i, axis=1).copy() for i in range(COPIES)]
        sub_rng = np.random.default_rng(1)  # every code subnormal or zero, as test_bench_fp8
        weights = {
            "q": qs, "s": s,
            "bf16": [torch.from_numpy(fusekit.ops.fp8_block_dequantize(qi, s)).bfloat16()
                     for qi in qs],
            "views": [torch.from_numpy(qi.reshape(-1).view(np.float32)) for qi in qs],
            "subnormal": [(qi & 0x87) | (sub_rng.integers(0, 8, qi.shape, dtype=np.uint8) & 7)
                          for qi in qs],
        }
        for m in args.m:
            run_case(name, m, weights, args.rounds, args.threads)


if __name__ == "__main__":
    main()
