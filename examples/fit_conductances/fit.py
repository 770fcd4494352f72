"""Fit the conductances of a Hodgkin-Huxley cell to voltage traces of a hidden cell.

A cell with hidden g_na, g_k and g_leak is simulated under several stimulus sweeps (current
steps of different amplitudes plus noise); its voltage traces are the recording. A second
cell starts from perturbed conductances (+-30-50%) and is fitted to the recording by gradient
descent (Adam, then L-BFGS) through fusekit's checkpointed gradient: the compiled kernel runs
forward, the backward re-runs segments in torch.

    python examples/fit_conductances/fit.py           # 4 sweeps x 40 ms
    python examples/fit_conductances/fit.py --quick   # 3 sweeps x 10 ms
"""

from __future__ import annotations

import argparse
import time
from typing import Any

HIDDEN = {"g_na": 120.0, "g_k": 36.0, "g_leak": 0.3}  # mS/cm^2, the squid axon's values
START = {"g_na": 120.0 * 0.65, "g_k": 36.0 * 1.4, "g_leak": 0.3 * 1.5}  # -35%, +40%, +50%
FIRST_WINDOW = 10.0  # ms
RECORD_EVERY = 2  # steps between recorded samples


def setup(quick: bool, *, duration: float | None = None, dt: float = 0.05,
          noise_mv: float = 0.0) -> dict[str, Any]:
    """The problem: stimuli and the hidden cell's recorded traces (+ recording noise, mV)."""
    import torch

    from fusekit.neuro import HH_CHANNELS, noisy_steps, params_tensor, simulate

    amplitudes = [-4.0, 3.0, 10.0] if quick else [-4.0, 2.0, 5.0, 10.0]
    duration = (10.0 if quick else 30.0) if duration is None else duration
    n_steps = int(round(duration / dt))
    i_ext = torch.tensor(noisy_steps(n_steps, dt, amplitudes))
    P = params_tensor(HH_CHANNELS, len(amplitudes), **HIDDEN)
    with torch.no_grad():
        target = simulate(HH_CHANNELS, P, i_ext, duration=duration, dt=dt,
                          record_every=RECORD_EVERY,
                          max_spikes=8)
    if noise_mv:
        g = torch.Generator().manual_seed(1)
        noise = noise_mv * torch.randn(target.v_record.shape, generator=g, dtype=torch.float64)
        target = target._replace(v_record=target.v_record + noise)
    return {"channels": HH_CHANNELS, "i_ext": i_ext, "target": target, "dt": dt,
            "duration": duration, "amplitudes": amplitudes}


def fit(quick: bool = False, *, adam_steps: int | None = None, lbfgs_steps: int | None = None,
        duration: float | None = None, dt: float = 0.05, noise_mv: float = 0.0,
        verbose: bool = True) -> dict[str, Any]:
    """Run the fit; returns the recovered values, relative errors, loss curve and time."""
    import torch

    from fusekit.neuro import fit_parameters

    problem = setup(quick, duration=duration, dt=dt, noise_mv=noise_mv)
    adam_steps = (20 if quick else 30) if adam_steps is None else adam_steps
    lbfgs_steps = (15 if quick else 40) if lbfgs_steps is None else lbfgs_steps
    spikes = problem["target"].spike_count.tolist()
    if verbose:
        print(f"recording: {len(spikes)} sweeps x {problem['duration']:.0f} ms at "
              f"{problem['amplitudes']} uA/cm^2 (+ noise); spikes per sweep {spikes}")
        print("hidden: " + ", ".join(f"{k} = {v:g}" for k, v in HIDDEN.items()))
        print("start:  " + ", ".join(f"{k} = {v:g}" for k, v in START.items()))
        if noise_mv:
            print(f"recording noise: {noise_mv:g} mV sd (Gaussian, every sample)")

    def show(step: int, loss: float, values: dict[str, float]) -> None:
        if verbose and (step % 5 == 0 or step >= adam_steps or step == 0):
            print(f"  step {step:3d}  loss {loss:10.4g} mV^2  " +
                  "  ".join(f"{k} {v:8.4f}" for k, v in values.items()))

    # A curriculum over time: the first 10 ms (one spike per spiking sweep at most) from
    # the far start, then the whole recording from there. On the whole 30 ms at once the
    # loss has local minima where spikes of the model and the recording pair up wrongly.
    dt, target = problem["dt"], problem["target"]
    windows = sorted({min(FIRST_WINDOW, problem["duration"]), problem["duration"]})
    values, losses, n_sim = dict(START), [], 0
    t0 = time.perf_counter()
    for w, window in enumerate(windows):
        n_w = int(round(window / dt))
        in_window = torch.where(target.spike_times < window, target.spike_times, float("nan"))
        if verbose:
            print(f"window 0-{window:g} ms:")
        result = fit_parameters(problem["channels"], target.v_record[:n_w // RECORD_EVERY],
                                problem["i_ext"][:n_w], values, dt=dt,
                                record_every=RECORD_EVERY, target_spike_times=in_window,
                                adam_steps=adam_steps if w == 0 else 0, adam_lr=0.08,
                                adam_decay=0.93, lbfgs_steps=lbfgs_steps, callback=show)
        values = result.values
        losses += result.loss_history
        n_sim += result.n_simulations
    seconds = time.perf_counter() - t0
    rel = {k: abs(values[k] - HIDDEN[k]) / HIDDEN[k] for k in HIDDEN}
    if verbose:
        print("recovered: " + ", ".join(
            f"{k} = {values[k]:.5g} (error {100 * rel[k]:.3g}%)" for k in HIDDEN))
        print(f"max relative error {100 * max(rel.values()):.3g}%, final loss "
              f"{losses[-1]:.3g} mV^2, {n_sim} simulations + "
              f"gradients in {seconds:.1f} s")
    return {"values": values, "relative_error": rel, "loss": losses, "seconds": seconds,
            "n_simulations": n_sim}


def main() -> None:
    """Command line: run the fit, print it, optionally plot the loss curve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 sweeps x 10 ms, fewer steps")
    parser.add_argument("--adam-steps", type=int, default=None)
    parser.add_argument("--lbfgs-steps", type=int, default=None)
    parser.add_argument("--noise-mv", type=float, default=0.0,
                        help="add Gaussian recording noise of this sd (mV) to the traces")
    parser.add_argument("--plot", metavar="PNG", help="save the loss curve to this file")
    args = parser.parse_args()
    out = fit(args.quick, adam_steps=args.adam_steps, lbfgs_steps=args.lbfgs_steps,
              noise_mv=args.noise_mv)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.semilogy(out["loss"])
        ax.set_xlabel("optimiser step (Adam, then L-BFGS)")
        ax.set_ylabel("trace MSE (mV$^2$)")
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"loss curve: {args.plot}")


if __name__ == "__main__":
    main()
