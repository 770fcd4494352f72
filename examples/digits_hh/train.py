"""Hodgkin-Huxley against LIF neurons on scikit-learn's digits, with noisy test inputs.

The same network (64 inputs -> a hidden layer of spiking neurons -> a leaky-integrator readout
over 10 classes) is trained twice, once with Hodgkin-Huxley neurons (fusekit's channel DSL,
squid Na/K/leak) and once with leaky integrate-and-fire neurons, by backprop through time with
SuperSpike surrogate gradients. Each 8x8 image (pixels scaled to [0, 1]) is presented as a
constant input current; the test set is then classified with Gaussian noise of growing
standard deviation added to the scaled pixels, over several noise draws.

    python examples/digits_hh/train.py --quick          # seconds: does it run
    python examples/digits_hh/train.py --seed 0         # the comparison in docs/neuro.md

Prints the accuracy table (Markdown; mean ± std over noise draws) and, with ``--out FILE``,
writes it there too. The data ship with scikit-learn (no download).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

from fusekit.neuro._digits import DigitsConfig, digits_noise_study


def main(argv: list[str] | None = None) -> int:
    """Run the study with the command line's sizes; print (and optionally write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller network, 600 training images, 3 epochs")
    parser.add_argument("--seed", type=int, default=0,
                        help="split, initial weights, batch order and noise draws")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--hidden", type=int, help="override the hidden layer's size")
    parser.add_argument("--noise", choices=("image", "step"), default="image",
                        help="test noise: one draw per image (default) or a new draw at "
                             "every time step (input current noise)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)

    config = DigitsConfig.quick() if args.quick else DigitsConfig()
    overrides = {k: v for k, v in (("epochs", args.epochs), ("hidden", args.hidden),
                                   ("noise", args.noise)) if v is not None}
    config = replace(config, **overrides)
    print(f"digits: 64 -> {config.hidden} spiking -> 10, each image {config.window_ms:g} ms "
          f"at dt = {config.dt:g} ms ({config.n_steps} steps), {config.epochs} epochs, "
          f"seed {args.seed}", flush=True)
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = digits_noise_study(config, seed=args.seed, torch_threads=args.threads,
                                out=sys.stdout)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = result.table()
    lines = [
        f"Test accuracy (%) against Gaussian noise on the [0, 1] pixels "
        f"({'a new draw every time step' if config.noise == 'step' else 'one draw per image'}"
        f"), seed {args.seed}: mean ± std over {config.draws} noise draws (one at sigma 0).",
        "",
        table,
        "",
        "| | " + " | ".join(result.accuracy) + " |",
        "|---" * (len(result.accuracy) + 1) + "|",
        "| final training loss | " + " | ".join(f"{v[-1]:.3f}" for v in result.losses.values())
        + " |",
        "| hidden firing rate on the test set (Hz) | "
        + " | ".join(f"{v:.0f}" for v in result.firing.values()) + " |",
        "| training time (s, wall) | "
        + " | ".join(f"{v:.0f}" for v in result.train_seconds.values()) + " |",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    print(f"\ntotal {wall:.0f} s wall, {cpu:.0f} s CPU, peak memory {peak:.0f} MiB")
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
