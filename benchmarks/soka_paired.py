"""SoKA against LoRA on an adapted 4096x4096 linear, forward + backward, steps interleaved.

On a shared machine the sequential groups of ``test_bench_soka.py`` drift by 10-40% between
benchmarks, more than the 1.1x the issue allows. Here every round runs one step of each
adapter, alternating the order, and the figure is the median of the per-round ratios to LoRA.

    python benchmarks/soka_paired.py [--rounds 40]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_bench_soka import adapted  # noqa: E402

KINDS = ("lora", "soka", "soka_f4", "soka_f1")


def paired(tokens: int, rounds: int) -> dict[str, tuple[float, float]]:
    """Median step time and median paired ratio to LoRA per adapter kind."""
    models = {k: adapted(k) for k in KINDS}
    x = torch.randn(tokens, 4096, requires_grad=True)

    def step(m: torch.nn.Module) -> None:
        m.zero_grad(set_to_none=True)
        x.grad = None
        m(x).square().sum().backward()

    for k in KINDS:
        for _ in range(3):
            step(models[k])
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(rounds):
        for k in KINDS if r % 2 == 0 else KINDS[::-1]:
            t0 = time.perf_counter()
            step(models[k])
            times[k].append(time.perf_counter() - t0)
    lora = np.array(times["lora"])
    return {k: (float(np.median(t)), float(np.median(np.array(t) / lora)))
            for k, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for tokens, rounds in ((16, args.rounds), (512, max(4, args.rounds // 4))):
        res = paired(tokens, rounds)
        print(f"{tokens} tokens, {rounds} rounds: " + ", ".join(
            f"{k} {1e3 * t:.1f} ms ({ratio:.2f}x LoRA)" for k, (t, ratio) in res.items()))


if __name__ == "__main__":
    main()
