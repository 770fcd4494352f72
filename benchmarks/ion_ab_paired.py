"""Paired timing of the HH population kernels for two source trees, one process per call set.

Compares the fusekit in ``--old-src`` (an older commit unpacked with
``git archive <commit> src | tar -x -C /tmp/old``) with the one in ``--new-src`` (default:
this checkout's ``src``). Round after round, one process per tree and case warms the kernel
up, then times ``--calls`` calls and prints their minimum; alternating processes moments
apart is what a shared, noisy machine allows. Cases: ``fwd`` (``ops.ion_simulate``), ``fm``
(``neuro.simulate(gradient="forward")`` w.r.t. g_na, g_k, g_leak, then the backward) and
``bp`` (``neuro.simulate(gradient="backprop")``, the compiled checkpointed adjoint), on
squid-HH neurons with currents spread over 2..20 uA/cm^2, dt = 0.025 ms. One thread by
default (two-thread runs varied far more than one-thread runs on our 2-core machines).

    git archive 30a483f src | tar -x -C /tmp/old
    python benchmarks/ion_ab_paired.py --old-src /tmp/old/src --cases fwd:float32,fwd:float64
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def worker(case: str, dtype: str, n: int, steps: int, calls: int) -> float:
    """Runs in the child: the minimum over ``calls`` timed calls, in seconds."""
    import torch

    import fusekit
    from fusekit.neuro import HH_CHANNELS, ChannelSet, params_tensor, simulate

    hh = ChannelSet(HH_CHANNELS)
    rng = np.random.default_rng(0)
    v0 = np.full(n, -65.0, dtype)
    s0 = hh.initial_states(n).astype(dtype)
    p = hh.default_params(n).astype(dtype)
    i_ext = rng.uniform(2, 20, n).astype(dtype)
    wrt = ("g_na", "g_k", "g_leak")

    def run() -> object:
        if case == "fwd":
            return fusekit.ops.ion_simulate(v0, s0, p, i_ext, channels=hh, dt=0.025,
                                            n_steps=steps, record_every=40, max_spikes=64,
                                            backend="cpu")
        g = [torch.tensor(hh.default_params(1)[hh.param_index(w), 0], dtype=getattr(torch, dtype))
             .expand(n).clone().requires_grad_() for w in wrt]
        P = params_tensor(hh, n, dtype=getattr(torch, dtype), **dict(zip(wrt, g, strict=True)))
        mode = {"gradient": "forward", "wrt": wrt} if case == "fm" else {"gradient": "backprop"}
        out = simulate(hh, P, torch.tensor(i_ext), duration=steps * 0.025, dt=0.025,
                       record_every=40, backend="cpu", **mode)
        return torch.autograd.grad(out.v_record.mean(0).sum(), g)

    run()  # compile (or load from the disk cache) outside the timing
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-src", required=True)
    ap.add_argument("--new-src", default=str(HERE.parent / "src"))
    ap.add_argument("--cases", default="fwd:float32,fwd:float64,fm:float64,bp:float64",
                    help="case:dtype pairs, case in fwd, fm, bp")
    ap.add_argument("--neurons", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(worker(*args.worker, args.neurons, args.steps, args.calls))
        return
    trees = {"old": args.old_src, "new": args.new_src}
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for spec in args.cases.split(","):
            case, dtype = spec.split(":")
            for name, src in trees.items():
                env = {**os.environ, "PYTHONPATH": src, "NUMBA_NUM_THREADS": str(args.threads)}
                out = subprocess.run(
                    [sys.executable, __file__, "--old-src", args.old_src, "--worker", case,
                     dtype, "--neurons", str(args.neurons), "--steps", str(args.steps),
                     "--calls", str(args.calls)],
                    env=env, capture_output=True, text=True, check=True)
                ms = float(out.stdout.strip().splitlines()[-1]) * 1e3
                results.setdefault((spec, name), []).append(ms)
                print(f"round {r + 1} {spec:14s} {name}: {ms:9.1f} ms", flush=True)
    print(f"\n{args.neurons} neurons x {args.steps} steps, {args.threads} thread(s), "
          f"min of {args.calls} calls per process")
    for spec in args.cases.split(","):
        old, new = results[(spec, "old")], results[(spec, "new")]
        ratios = ", ".join(f"{o / n:.3f}" for o, n in zip(old, new, strict=True))
        print(f"{spec:14s} old {min(old):9.1f}-{max(old):9.1f} ms  new {min(new):9.1f}-"
              f"{max(new):9.1f} ms  old/new per round: {ratios}")


if __name__ == "__main__":
    main()
