"""A network of squid HH neurons with conductance synapses in Brian2, for fusekit's comparisons.

Runs inside ``.venv-brian2`` (see ``peers/brian2_hh.py``); reads one JSON object (first
argument or stdin), prints one JSON object; fusekit is not imported here.

The scheme is fusekit's ``network_simulate``, step for step: the gates by exponential Euler at
the old ``v`` (Brian2's state updater), then in a ``run_regularly`` right after it each synapse
type's conductance ``g_t = g_t exp(-dt / tau_t) + a_t`` takes the arrivals ``a_t`` and ``v``
goes by backward Euler with the channels and ``sum_t g_t (e_t - v)``. A spike (``v`` crossing
0 mV upwards, Brian2's threshold with ``refractory="v > 0*mV"``) fires the synapses' ``on_pre``
``a_t_post += w`` in the ``synapses`` slot after ``delay`` ms, and the next step's update takes
it: fusekit's ``delay_steps`` is Brian2's delay plus one step.

Input keys:
    v0, i_ext: Per neuron, mV and uA/cm^2 (the gates start at their steady state at ``v0``).
    indptr, indices, weights: CSR over presynaptic neurons, weights in mS/cm^2.
    synapse_type: Type of every synapse; tau_syn, e_syn: one value per type (ms, mV).
    dt, t_stop: ms. delay_steps: fusekit's delay in steps (at least 2 here).
    target: ``"numpy"``, ``"cython"`` or ``"cpp_standalone"``; threads: OpenMP threads of
        the standalone device; repeat: timed runs (the fastest is ``run_s``).
    record_v: Record ``v`` and return spike times interpolated within the step, as fusekit
        does (small runs); else the spike monitor's counts and step times.

Output keys: ``spike_count``, ``spike_times``, ``run_s``, ``run_s_all``, ``excluded``,
``n_synapses``, ``versions``.
"""

import json
import sys
import tempfile

import brian2 as b2
import numpy as np
from brian2 import cm, ms, msiemens, mV, uA
from brian2_hh import NAMESPACE, RATES, initial_gates, run_timed, spike_results


def main(cfg):
    v0 = np.asarray(cfg["v0"], dtype=np.float64)
    i_ext = np.asarray(cfg["i_ext"], dtype=np.float64)
    indptr = np.asarray(cfg["indptr"], dtype=np.int64)
    indices = np.asarray(cfg["indices"], dtype=np.int64)
    weights = np.asarray(cfg["weights"], dtype=np.float64)
    types = np.asarray(cfg["synapse_type"], dtype=np.int64)
    taus, es = [float(t) for t in cfg["tau_syn"]], [float(e) for e in cfg["e_syn"]]
    dt, t_stop = float(cfg["dt"]), float(cfg["t_stop"])
    delay_steps = int(cfg["delay_steps"])
    if delay_steps < 2:
        raise SystemExit("delay_steps must be at least 2 (Brian2's delay is one step less)")
    target = cfg.get("target", "numpy")
    record_v = bool(cfg.get("record_v", False))
    if target == "cpp_standalone":
        b2.set_device("cpp_standalone", directory=tempfile.mkdtemp(prefix="brian2_net_"))
        b2.prefs.devices.cpp_standalone.openmp_threads = int(cfg.get("threads", 1))
    else:
        b2.prefs.codegen.target = target
    b2.defaultclock.dt = dt * ms
    n, n_types = v0.shape[0], len(taus)
    syn_vars = "".join(f"g{t} : siemens/meter**2\na{t} : siemens/meter**2\n"
                       for t in range(n_types))
    decay = {f"decay{t}": float(np.exp(-dt / taus[t])) for t in range(n_types)}
    e_rev = {f"Esyn{t}": es[t] * mV for t in range(n_types)}
    group = b2.NeuronGroup(n, RATES + "v : volt\n" + syn_vars, method="exponential_euler",
                           threshold="v > 0*mV", refractory="v > 0*mV",
                           namespace={**NAMESPACE, **decay, **e_rev})
    update = "".join(f"g{t} = g{t} * decay{t} + a{t}\na{t} = 0*siemens/meter**2\n"
                     for t in range(n_types))
    g_tot = " + ".join(f"g{t}" for t in range(n_types))
    ge_tot = " + ".join(f"g{t}*Esyn{t}" for t in range(n_types))
    update += (f"v = (v + dt/Cm*(gna*m**3*h*ENa + gk*n**4*EK + gl*El + {ge_tot} + I))"
               f" / (1 + dt/Cm*(gna*m**3*h + gk*n**4 + gl + {g_tot}))")
    # the state updater runs in the 'groups' slot with order 0: this comes after it
    group.run_regularly(update, when="groups", order=1)
    m, h, n_gate = initial_gates(v0)
    group.v = v0 * mV
    group.m, group.h, group.n = m, h, n_gate
    group.I = i_ext * uA / cm**2
    pre = np.repeat(np.arange(n), np.diff(indptr))
    objects = [group]
    for t in range(n_types):
        mine = types == t
        syn = b2.Synapses(group, group, model="w : siemens/meter**2",
                          on_pre=f"a{t}_post += w", delay=(delay_steps - 1) * dt * ms)
        syn.connect(i=pre[mine], j=indices[mine])
        syn.w = weights[mine] * msiemens / cm**2
        objects.append(syn)
    spikes = b2.SpikeMonitor(group)
    objects.append(spikes)
    if record_v:
        trace = b2.StateMonitor(group, "v", record=True, when="end")
        objects.append(trace)
    result = run_timed(b2.Network(*objects), target, dt, t_stop, int(cfg.get("repeat", 1)))
    result["n_synapses"] = int(indices.shape[0])
    result.update(spike_results(spikes, trace if record_v else None, v0, dt))
    return result


if __name__ == "__main__":
    json.dump(main(json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())),
              sys.stdout)
