"""Single-compartment squid HH neurons in Jaxley, run by fusekit's tests and benchmarks.

Runs inside the Jaxley environment that ``peers/setup.sh`` makes (``.venv-jaxley``, which
sees fusekit's packages but keeps JAX out of them). Reads one JSON object (the first
argument, or stdin) and prints one JSON object; fusekit is not imported here.

Input keys:
    i_ext: Current densities, uA/cm^2, one per neuron (converted to nA for the
        compartment's area).
    dt: Time step, ms. t_stop: Duration, ms.
    dtype: ``"float64"`` (``jax_enable_x64``) or ``"float32"``.
    mode: ``"trace"`` (small runs: every neuron's ``v``, spike times interpolated linearly
        within the step as fusekit does), ``"forward"`` (spike counts computed inside the
        compiled function) or ``"gradient"`` (the gradient of every neuron's mean ``v`` with
        respect to its own ``HH_gNa``, ``HH_gK`` and ``HH_gLeak``, by reverse mode).
    checkpoint_lengths: For ``jx.integrate`` (gradient mode), e.g. ``[64, 63]``.
    repeat: Timed calls (the fastest is ``run_s``; all are in ``run_s_all``).

Neurons are independent compartments vmapped over their stimulus (Jaxley's way of running
many simulations at once); one ``jax.jit`` around the whole batch. Jaxley's ``bwd_euler``
solver updates the gates by exponential Euler at the old ``v`` and then ``v`` implicitly,
the scheme of NEURON and fusekit.

Output keys: ``run_s`` (the fastest jitted call after a first call that compiled it, with
``block_until_ready``), ``compile_s`` (the first call: tracing, XLA compilation and one run),
``excluded``, ``spike_count``, ``spike_times`` (trace mode), ``grad_norm``, ``grad_finite``
and, up to 100 neurons, ``grads`` (``{"HH_gNa": [...], ...}`` per S/cm^2; gradient mode),
``devices`` and ``versions``.
"""

import json
import math
import sys
import time

import numpy as np


def setup(cfg):
    """JAX on the CPU in ``cfg``'s dtype (before jaxley is imported); ``(dtype, dt, n_steps)``.

    ``jaxley_cable.py`` uses it too.
    """
    import jax

    dtype = cfg.get("dtype", "float64")
    jax.config.update("jax_enable_x64", dtype == "float64")
    jax.config.update("jax_platforms", "cpu")
    dt = float(cfg["dt"])
    return dtype, dt, round(float(cfg["t_stop"]) / dt)


def main(cfg):
    dtype, dt, n_steps = setup(cfg)
    import jax
    import jax.numpy as jnp
    import jaxley as jx
    from jaxley.channels import HH

    mode = cfg.get("mode", "forward")
    comp = jx.Compartment()
    comp.insert(HH())
    comp.set("v", -65.0)
    comp.init_states()  # the gates at their steady state at -65 mV
    comp.record("v", verbose=False)
    node = comp.nodes.iloc[0]
    area_cm2 = 2 * math.pi * float(node["radius"]) * float(node["length"]) * 1e-8
    amps_na = jnp.asarray(np.asarray(cfg["i_ext"]) * area_cm2 * 1e3, dtype=dtype)  # uA -> nA
    checkpoints = cfg.get("checkpoint_lengths")

    def simulate(params, amp):
        stim = comp.data_stimulate(jnp.full(n_steps, amp, dtype=dtype), verbose=False)
        return jx.integrate(comp, params=params, data_stimuli=stim, delta_t=dt,
                            solver="bwd_euler", checkpoint_lengths=checkpoints)[0]

    if mode == "gradient":
        for name in ("HH_gNa", "HH_gK", "HH_gLeak"):
            comp.make_trainable(name, verbose=False)
        params = comp.get_parameters()

        def loss(p, amp):
            return jnp.mean(simulate(p, amp))

        n = amps_na.shape[0]
        batched = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n, *x.shape)), params)
        fn = jax.jit(jax.vmap(jax.grad(loss)))
        args = (batched, amps_na)
    elif mode in ("forward", "trace"):
        def run(amp):
            v = simulate([], amp)
            if mode == "trace":
                return v
            return jnp.sum((v[:-1] < 0) & (v[1:] >= 0))

        fn = jax.jit(jax.vmap(run))
        args = (amps_na,)
    else:
        raise SystemExit(f"unknown mode {mode!r}")

    out, result = timed(fn, args, int(cfg.get("repeat", 1)))
    if mode == "trace":
        v = np.asarray(out, dtype=np.float64)
        times = []
        for trace in v:
            k = np.flatnonzero((trace[:-1] < 0.0) & (trace[1:] >= 0.0))
            times.append(((k + (0.0 - trace[k]) / (trace[k + 1] - trace[k])) * dt).tolist())
        result["spike_times"] = times
        result["spike_count"] = [len(t) for t in times]
        result["v_final"] = v[:, -1].tolist()
    elif mode == "forward":
        result["spike_count"] = np.asarray(out).tolist()
    else:
        leaves = jax.tree_util.tree_leaves(out)
        if amps_na.shape[0] <= 100:  # small runs: every gradient, per S/cm^2
            result["grads"] = {name: np.asarray(g[name], np.float64).ravel().tolist()
                               for g in out for name in g}
        result["grad_norm"] = float(sum(float(jnp.sum(x.astype("float64") ** 2))
                                        for x in leaves)) ** 0.5
        result["grad_finite"] = all(bool(jnp.isfinite(x).all()) for x in leaves)
    return result


def timed(fn, args, repeat):
    """``fn(*args)`` once to compile, then ``repeat`` timed calls.

    Returns the last output and the timing fields of the result (``run_s``, ``run_s_all``,
    ``compile_s``, ``excluded``, ``devices``, ``versions``); ``jaxley_cable.py`` uses it too.
    """
    import jax
    import jaxley as jx

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return out, {"run_s": min(times), "run_s_all": times, "compile_s": compile_s,
                 "excluded": "tracing and XLA compilation (a first call of the jitted "
                             "function)",
                 "devices": [str(d) for d in jax.devices()],
                 "versions": {"jaxley": jx.__version__, "jax": jax.__version__,
                              "numpy": np.__version__}}


if __name__ == "__main__":
    cfg = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    json.dump(main(cfg), sys.stdout)
