"""Branched HH cells in Jaxley, run by fusekit's cable benchmarks.

Runs inside the Jaxley environment that ``peers/setup.sh`` makes (``.venv-jaxley``); reads
one JSON object (stdin) and prints one JSON object; fusekit is not imported here.

The cell: ``len(parents)`` branches of ``ncomp`` compartments each (Jaxley's
``Cell(Branch(Compartment(), ncomp), parents)``), squid HH (``jaxley.channels.HH``) in every
compartment, Jaxley's default geometry (reported back under ``geometry``, so that fusekit
can build the same compartments), a constant current into compartment 0 of branch 0 (the
"soma", where ``v`` is recorded), one cell per current, vmapped (Jaxley's way of running
many simulations at once), all under one ``jax.jit``.

Input keys:
    i_ext: Current densities into the soma compartment, uA/cm^2, one per cell.
    parents: Branch parents, e.g. ``[-1, 0, 0, 1, 1]``. ncomp: Compartments per branch.
    dt, t_stop: ms. dtype: ``"float64"`` or ``"float32"``.
    mode: ``"forward"`` (spike counts of the soma) or ``"gradient"`` (the gradient of each
        cell's mean soma ``v`` with respect to its ``HH_gNa``, ``HH_gK``, ``HH_gLeak``,
        reverse mode, one value of each per cell).
    checkpoint_lengths: For ``jx.integrate`` (gradient mode), e.g. ``[64, 63]``.
    repeat: Timed calls (the fastest is ``run_s``).

Output keys: those of ``jaxley_hh.timed`` (``run_s``, ``run_s_all``, ``compile_s``, ...),
``spike_count`` (forward), ``grad_norm`` and ``grad_finite`` (gradient), ``n_comp`` and
``geometry``.
"""

import json
import math
import sys

import numpy as np
from jaxley_hh import setup, timed  # the same directory: run as a script from peers/


def main(cfg):
    dtype, dt, n_steps = setup(cfg)
    import jax
    import jax.numpy as jnp
    import jaxley as jx
    from jaxley.channels import HH

    mode = cfg.get("mode", "forward")
    cell = jx.Cell(jx.Branch(jx.Compartment(), ncomp=int(cfg["ncomp"])),
                   parents=list(cfg["parents"]))
    cell.insert(HH())
    cell.set("v", -65.0)
    cell.init_states()
    soma = cell.branch(0).comp(0)
    soma.record("v", verbose=False)
    node = cell.nodes.iloc[0]
    radius, length = float(node["radius"]), float(node["length"])
    area_cm2 = 2 * math.pi * radius * length * 1e-8
    amps_na = jnp.asarray(np.asarray(cfg["i_ext"]) * area_cm2 * 1e3, dtype=dtype)  # uA -> nA
    checkpoints = cfg.get("checkpoint_lengths")

    def simulate(params, amp):
        stim = soma.data_stimulate(jnp.full(n_steps, amp, dtype=dtype), verbose=False)
        return jx.integrate(cell, params=params, data_stimuli=stim, delta_t=dt,
                            solver="bwd_euler", checkpoint_lengths=checkpoints)[0]

    if mode == "gradient":
        for name in ("HH_gNa", "HH_gK", "HH_gLeak"):
            cell.make_trainable(name, verbose=False)
        params = cell.get_parameters()
        n = amps_na.shape[0]
        batched = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), params)
        fn = jax.jit(jax.vmap(jax.grad(lambda p, amp: jnp.mean(simulate(p, amp)))))
        args = (batched, amps_na)
    elif mode == "forward":
        def run(amp):
            v = simulate([], amp)
            return jnp.sum((v[:-1] < 0) & (v[1:] >= 0))

        fn = jax.jit(jax.vmap(run))
        args = (amps_na,)
    else:
        raise SystemExit(f"unknown mode {mode!r}")

    out, result = timed(fn, args, int(cfg.get("repeat", 1)))
    result["n_comp"] = int(len(cell.nodes))
    result["geometry"] = {"radius_um": radius, "length_um": length,
                          "axial_resistivity": float(node["axial_resistivity"]),
                          "capacitance": float(node["capacitance"])}
    if mode == "forward":
        result["spike_count"] = np.asarray(out).tolist()
    else:
        leaves = jax.tree_util.tree_leaves(out)
        result["grad_norm"] = float(sum(float(jnp.sum(x.astype("float64") ** 2))
                                        for x in leaves)) ** 0.5
        result["grad_finite"] = all(bool(jnp.isfinite(x).all()) for x in leaves)
    return result


if __name__ == "__main__":
    json.dump(main(json.loads(sys.stdin.read())), sys.stdout)
