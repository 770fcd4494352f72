"""Memory of the ion_simulate gradient: checkpointed backprop against full-history autograd.

    python benchmarks/ion_grad_memory.py [n_neurons] [n_steps]   # default 1000 4000

Prints the peak bytes held by tensors saved for the backward (forward and backward
together, ``saved_tensors_hooks``), the formula's prediction for the checkpoints, and the
wall time of each (one run each; on a shared machine, ratios only).
"""

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_bench_ion_grad as bench  # noqa: E402

torch = bench.torch


def main() -> None:
    """Measure both gradients on one problem and print the table."""
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    n_steps = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    torch.set_num_threads(2)
    x = bench.make(n=n, n_steps=n_steps)
    rows = []
    grads = {}
    for name, fn in (("checkpointed", bench.checkpointed_grad),
                     ("full_history", bench.full_history_grad)):
        peak = bench.SavedTensorPeak()
        t0 = time.perf_counter()
        grads[name] = peak(fn, *x, n_steps)
        rows.append((name, peak.peak, time.perf_counter() - t0))
    for a, b in zip(grads["checkpointed"], grads["full_history"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8 * float(b.abs().max()))
    k = max(1, round(math.sqrt(n_steps)))
    k = -(-k // bench.RECORD_EVERY) * bench.RECORD_EVERY
    print(f"{n} HH neurons x {n_steps} steps, float64, K = {k} steps per segment "
          f"({-(-n_steps // k)} checkpoints of {(1 + 4) * n * 8 / 1e6:.2f} MB)")
    for name, peak, seconds in rows:
        print(f"  {name:13s} peak saved tensors {peak / 1e6:9.1f} MB   {seconds:7.1f} s")
    print(f"  ratio full/checkpointed: memory {rows[1][1] / rows[0][1]:.1f}x, "
          f"time {rows[1][2] / rows[0][2]:.2f}x (gradients equal to rtol 1e-8)")


if __name__ == "__main__":
    main()
