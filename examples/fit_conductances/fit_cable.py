"""Fit a branched cell's conductances and axial resistivity to recordings of a hidden cell.

The cell: a soma with squid HH channels and two passive dendrites (leak only), each of six
compartments, one of them branching in two near its end. The hidden cell has its own soma
``g_na`` and ``g_k``, membrane leak ``g_leak`` (every compartment) and axial resistivity
``r_axial``; it is stimulated by current steps into the soma (one sweep per cell of a small
population sharing the morphology), and the potential is recorded at the soma and at one
dendritic tip, as with a dual patch. A second cell starts from perturbed values (+-30-50%)
and is fitted to the recordings by gradient descent (Adam on the logarithms, then L-BFGS) through
``fusekit.ops.cable_simulate``'s checkpointed gradient: the compiled kernel runs forward and
the compiled adjoint (``cable_adjoint``) runs backward; ``r_axial`` reaches the simulation
through a differentiable ``cable_coupling``.

    python examples/fit_conductances/fit_cable.py           # 3 sweeps x 20 ms
    python examples/fit_conductances/fit_cable.py --quick   # 3 sweeps x 8 ms
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

HIDDEN = {"g_na": 120.0, "g_k": 36.0, "g_leak": 0.3, "r_axial": 150.0}
START = {"g_na": 120.0 * 0.65, "g_k": 36.0 * 1.4, "g_leak": 0.3 * 1.5, "r_axial": 150.0 * 0.7}
DT = 0.025
RECORD_EVERY = 4
# Soma (0), dendrite A (1-6) whose last two compartments fork (6 and 7 both hang on 5),
# dendrite B (8-13).
PARENT = np.array([-1, 0, 1, 2, 3, 4, 5, 5, 0, 8, 9, 10, 11, 12])
LENGTH = np.array([20.0] + [50.0] * 13)  # um
DIAM = np.array([20.0] + [2.0] * 5 + [1.2, 1.2] + [1.5] * 6)  # um
TIP = 13  # the recorded dendritic compartment (end of dendrite B)


def model(values: dict[str, Any], i_ext: Any, n_steps: int) -> Any:
    """Simulate the cell with ``values`` (tensors), one sweep per cell: ``v_record``."""
    import torch

    import fusekit
    from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_coupling

    hh = ChannelSet(HH_CHANNELS)
    n_cells, n_comp = i_ext.shape[-2], PARENT.shape[0]
    soma = torch.zeros(n_comp, dtype=torch.float64)
    soma[0] = 1.0
    base = torch.as_tensor(hh.default_params(n_comp))  # rows: c_m, g_na, e_na, g_k, e_k, ...
    rows = list(base)
    rows[hh.param_index("g_na")] = values["g_na"] * soma  # the dendrites are passive
    rows[hh.param_index("g_k")] = values["g_k"] * soma
    rows[hh.param_index("g_leak")] = values["g_leak"] * torch.ones(n_comp, dtype=torch.float64)
    P = torch.stack(rows)[:, None].expand(-1, n_cells, -1).contiguous()
    coupling = cable_coupling(PARENT, torch.as_tensor(LENGTH), torch.as_tensor(DIAM),
                              values["r_axial"])[:, None].expand(-1, n_cells, -1).contiguous()
    v0 = torch.full((n_cells, n_comp), -65.0, dtype=torch.float64)
    S0 = torch.as_tensor(hh.steady_states(np.full(n_cells * n_comp, -65.0))
                         .reshape(-1, n_cells, n_comp))
    out = fusekit.ops.cable_simulate(v0, S0, P, i_ext, PARENT, coupling, channels=hh, dt=DT,
                                     n_steps=n_steps, record_every=RECORD_EVERY,
                                     record_at=[0, TIP])
    return out.v_record  # (n_rec, n_cells, 2): soma and dendritic tip


def setup(quick: bool) -> dict[str, Any]:
    """Stimuli (current steps into the soma, uA/cm^2) and the hidden cell's recordings."""
    import torch

    duration = 8.0 if quick else 20.0
    n_steps = int(round(duration / DT))
    amplitudes = [-3.0, 6.0, 15.0]
    i_ext = torch.zeros(n_steps, len(amplitudes), PARENT.shape[0], dtype=torch.float64)
    on = int(round(1.0 / DT))  # the step starts at 1 ms
    for c, amp in enumerate(amplitudes):
        i_ext[on:, c, 0] = amp
    hidden = {k: torch.tensor(v, dtype=torch.float64) for k, v in HIDDEN.items()}
    with torch.no_grad():
        target = model(hidden, i_ext, n_steps)
    return {"i_ext": i_ext, "n_steps": n_steps, "target": target, "duration": duration,
            "amplitudes": amplitudes}


def fit(quick: bool = False, *, steps: int | None = None, lbfgs_steps: int | None = None,
        verbose: bool = True) -> dict[str, Any]:
    """Fit the four values; returns them, their relative errors, the loss curve and time."""
    import torch

    problem = setup(quick)
    steps = (60 if quick else 100) if steps is None else steps
    lbfgs_steps = (30 if quick else 60) if lbfgs_steps is None else lbfgs_steps
    log_values = {k: torch.tensor(np.log(v), dtype=torch.float64, requires_grad=True)
                  for k, v in START.items()}
    opt = torch.optim.Adam(log_values.values(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        opt.zero_grad()
        values = {k: v.exp() for k, v in log_values.items()}
        loss = (model(values, problem["i_ext"], problem["n_steps"])
                - problem["target"]).pow(2).mean()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if verbose and (step % 25 == 0 or step == steps - 1):
            shown = ", ".join(f"{k} {float(v.detach().exp()):.4g}" for k, v in log_values.items())
            print(f"step {step:3d}: loss {losses[-1]:.3e} mV^2; {shown}")
    # Then L-BFGS from where Adam stopped: it finishes the last digits quickly.
    lbfgs = torch.optim.LBFGS(log_values.values(), lr=1.0, max_iter=lbfgs_steps,
                              line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                              tolerance_change=1e-14)

    def closure() -> Any:
        lbfgs.zero_grad()
        values = {k: v.exp() for k, v in log_values.items()}
        loss = (model(values, problem["i_ext"], problem["n_steps"])
                - problem["target"]).pow(2).mean()
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    lbfgs.step(closure)
    if verbose:
        shown = ", ".join(f"{k} {float(v.detach().exp()):.4g}" for k, v in log_values.items())
        print(f"L-BFGS ({len(losses) - steps} evaluations): loss {losses[-1]:.3e} mV^2; {shown}")
    seconds = time.perf_counter() - t0
    found = {k: float(v.detach().exp()) for k, v in log_values.items()}
    errors = {k: abs(found[k] / HIDDEN[k] - 1.0) for k in HIDDEN}
    if verbose:
        print(f"\n{len(problem['amplitudes'])} sweeps x {problem['duration']:.0f} ms, "
              f"{PARENT.shape[0]} compartments, {steps} Adam steps and {len(losses) - steps} "
              f"L-BFGS evaluations in {seconds:.1f} s")
        for k in HIDDEN:
            print(f"  {k:8s} hidden {HIDDEN[k]:8.4g}  start {START[k]:8.4g}  "
                  f"fitted {found[k]:8.4g}  relative error {errors[k]:.1e}")
    return {"found": found, "errors": errors, "losses": losses, "seconds": seconds}


def main() -> None:
    """Command-line entry: ``--quick`` for the small problem."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 sweeps x 8 ms, 60 steps")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps")
    args = parser.parse_args()
    fit(args.quick, steps=args.steps)


if __name__ == "__main__":
    main()
