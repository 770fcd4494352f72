"""Single-compartment squid HH neurons in Brian2, run by fusekit's tests and benchmarks.

Runs inside the Brian2 environment that ``peers/setup.sh`` makes (``.venv-brian2``: Brian2
2.9.0 does not import with NumPy 2.4), never in fusekit's own. Reads one JSON object (the
first argument, or stdin) and prints one JSON object; fusekit is not imported here. A JSON
list of runtime-target objects runs them one after the other in one process (one import of
Brian2) and prints the list of results.

Input keys:
    i_ext: Current densities, uA/cm^2, one per neuron.
    dt: Time step, ms. t_stop: Duration, ms.
    scheme: ``"exponential_euler"`` (Brian2's usual method for HH: every variable, ``v``
        included, by exponential Euler from the values at the start of the step) or
        ``"rush_larsen_backward_euler"`` (NEURON's, Jaxley's and fusekit's: the gates by
        Brian2's exponential Euler at the old ``v``, then ``v`` by backward Euler at the new
        gates, in a ``run_regularly`` after the state update).
    target: ``"numpy"``, ``"cython"`` (runtime) or ``"cpp_standalone"``.
    record_v: Record every neuron's ``v`` and return spike times interpolated linearly
        within the step, as fusekit does (small runs); else Brian2's threshold and refractory
        condition count upward crossings of 0 mV.
    threads: OpenMP threads of the C++ standalone device.
    repeat: Timed runs (the fastest is ``run_s``; all are in ``run_s_all``).

Output keys: ``spike_count``, ``spike_times`` (ms, per neuron; from the last run),
``run_s`` (seconds of the simulation loop alone: C++ standalone's own ``_last_run_time``, a
runtime target's ``Network.run`` after a one-step warm-up that compiled every code object and
was undone by ``restore``), ``excluded`` (what ``run_s`` leaves out) and ``versions``.
"""

import json
import sys
import tempfile
import time

import brian2 as b2
import numpy as np
from brian2 import cm, ms, msiemens, mV, uA, uF

# NEURON hh.mod rates at 6.3 degC; exprel(x) = (exp(x) - 1)/x is finite at the 0/0 points.
RATES = """
am = 1.0/exprel(-(v/mV + 40.0)/10.0)/ms : Hz
bm = 4.0*exp(-(v/mV + 65.0)/18.0)/ms : Hz
ah = 0.07*exp(-(v/mV + 65.0)/20.0)/ms : Hz
bh = 1.0/(exp(-(v/mV + 35.0)/10.0) + 1.0)/ms : Hz
an = 0.1/exprel(-(v/mV + 55.0)/10.0)/ms : Hz
bn = 0.125*exp(-(v/mV + 65.0)/80.0)/ms : Hz
dm/dt = am*(1 - m) - bm*m : 1
dh/dt = ah*(1 - h) - bh*h : 1
dn/dt = an*(1 - n) - bn*n : 1
I : amp/meter**2
"""
V_ODE = "dv/dt = (gl*(El - v) + gna*m**3*h*(ENa - v) + gk*n**4*(EK - v) + I)/Cm : volt\n"
V_BACKWARD_EULER = ("v = (v + dt/Cm*(gna*m**3*h*ENa + gk*n**4*EK + gl*El + I))"
                    " / (1 + dt/Cm*(gna*m**3*h + gk*n**4 + gl))")
NAMESPACE = dict(Cm=1 * uF / cm**2, gna=120 * msiemens / cm**2, gk=36 * msiemens / cm**2,
                 gl=0.3 * msiemens / cm**2, ENa=50 * mV, EK=-77 * mV, El=-54.3 * mV)


def steady(alpha, beta, v):
    a, b = alpha(v), beta(v)
    return a / (a + b)


def initial_gates(v):
    u_m, u_n = (v + 40.0) / 10.0, (v + 55.0) / 10.0
    m = steady(lambda _: u_m / -np.expm1(-u_m), lambda x: 4.0 * np.exp(-(x + 65.0) / 18.0), v)
    h = steady(lambda x: 0.07 * np.exp(-(x + 65.0) / 20.0),
               lambda x: 1.0 / (np.exp(-(x + 35.0) / 10.0) + 1.0), v)
    n = steady(lambda _: 0.1 * u_n / -np.expm1(-u_n),
               lambda x: 0.125 * np.exp(-(x + 65.0) / 80.0), v)
    return m, h, n


def crossings(v, dt):
    """Upward crossings of 0 mV, linearly interpolated: ``v[k]`` is ``v`` at ``k dt``."""
    out = []
    for trace in v:
        k = np.flatnonzero((trace[:-1] < 0.0) & (trace[1:] >= 0.0))
        out.append(((k + (0.0 - trace[k]) / (trace[k + 1] - trace[k])) * dt).tolist())
    return out


def main(cfg):
    i_ext = np.asarray(cfg["i_ext"], dtype=np.float64)
    dt, t_stop = float(cfg["dt"]), float(cfg["t_stop"])
    target, scheme = cfg.get("target", "numpy"), cfg.get("scheme", "exponential_euler")
    record_v = bool(cfg.get("record_v", False))
    outdir = None
    if target == "cpp_standalone":
        outdir = tempfile.mkdtemp(prefix="brian2_hh_")
        b2.set_device("cpp_standalone", directory=outdir)
        b2.prefs.devices.cpp_standalone.openmp_threads = int(cfg.get("threads", 1))
    else:
        b2.prefs.codegen.target = target
    b2.defaultclock.dt = dt * ms
    n = i_ext.shape[0]
    if scheme == "exponential_euler":
        group = b2.NeuronGroup(n, V_ODE + RATES, method="exponential_euler",
                               threshold="v > 0*mV", refractory="v > 0*mV",
                               namespace=NAMESPACE)
    elif scheme == "rush_larsen_backward_euler":
        group = b2.NeuronGroup(n, RATES + "v : volt\n", method="exponential_euler",
                               threshold="v > 0*mV", refractory="v > 0*mV",
                               namespace=NAMESPACE)
        # The state updater runs in the 'groups' slot with order 0: this comes after it.
        group.run_regularly(V_BACKWARD_EULER, when="groups", order=1)
    else:
        raise SystemExit(f"unknown scheme {scheme!r}")
    m, h, n_gate = initial_gates(-65.0)
    group.v = -65.0 * mV
    group.m, group.h, group.n = m, h, n_gate
    group.I = i_ext * uA / cm**2
    spikes = b2.SpikeMonitor(group)
    objects = [group, spikes]
    if record_v:
        trace = b2.StateMonitor(group, "v", record=True, when="end")
        objects.append(trace)
    result = run_timed(b2.Network(*objects), target, dt, t_stop, int(cfg.get("repeat", 1)))
    result.update(spike_results(spikes, trace if record_v else None, np.full(n, -65.0), dt))
    return result


def run_timed(net, target, dt, t_stop, repeat):
    """Run ``net`` ``repeat`` times for ``t_stop`` ms; the timing keys of the result."""
    times = []
    if target == "cpp_standalone":
        net.run(t_stop * ms, namespace={})  # builds, compiles and runs the generated C++ project
        times.append(float(b2.device._last_run_time))
        for _ in range(repeat - 1):  # the compiled binary again, from the same initial state
            b2.device.run(with_output=False)
            times.append(float(b2.device._last_run_time))
        excluded = "code generation and the C++ compile (timed by Brian2's own main loop)"
    else:
        net.store()
        net.run(dt * ms, namespace={})  # compiles every code object (cython) once
        for _ in range(repeat):
            net.restore()
            t0 = time.perf_counter()
            net.run(t_stop * ms, namespace={})
            times.append(time.perf_counter() - t0)
        excluded = "code generation and compilation (a one-step warm-up run, then restore)"
    return {"run_s": min(times), "run_s_all": times, "excluded": excluded,
            "versions": {"brian2": b2.__version__, "numpy": np.__version__}}


def spike_results(spikes, trace, v0, dt):
    """``spike_count`` and ``spike_times`` of a run.

    Interpolated crossings of the recorded ``v`` (``trace``, which starts at ``v0``) when
    there is one, else the spike monitor's counts and step times.
    """
    if trace is not None:
        v = np.concatenate([v0[:, None], np.asarray(trace.v / mV)], axis=1)
        times = crossings(v, dt)
        return {"spike_times": times, "spike_count": [len(t) for t in times]}
    trains = spikes.spike_trains()
    return {"spike_count": np.asarray(spikes.count).tolist(),
            "spike_times": [np.asarray(trains[i] / ms).tolist() for i in range(v0.shape[0])]}


if __name__ == "__main__":
    cfg = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    if isinstance(cfg, list):
        results = []
        for one in cfg:
            b2.start_scope()
            results.append(main(one))
        json.dump(results, sys.stdout)
    else:
        json.dump(main(cfg), sys.stdout)
