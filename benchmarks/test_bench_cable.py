"""Branched HH cells, forward and gradient: fusekit's cable kernels against Jaxley.

200 cells of one morphology: 5 branches of 4 compartments (Jaxley's
``Cell(Branch(Compartment(), 4), parents=[-1, 0, 0, 1, 1])``, 20 compartments), squid HH in
every compartment, Jaxley's default geometry (10 um long, 1 um radius, 5,000 Ohm cm, 1 uF/cm^2),
a constant current into compartment 0 (5 to 40 uA/cm^2 across the cells), 100 ms at
dt = 0.025 ms, float64. Gradient: of every cell's mean potential in compartment 0 with
respect to the HH conductances (fusekit: every compartment's parameter rows, by
``cable_simulate``'s checkpointed backward, ``cable_adjoint``, recording compartment 0 only
as Jaxley does; Jaxley: ``HH_gNa``, ``HH_gK``,
``HH_gLeak`` per cell, its checkpointed reverse mode). Jaxley runs in its own environment
(``bash peers/setup.sh``; skipped without it) and times itself inside the subprocess, JIT
excluded. ``extra_info`` reports compartment-steps/s.
"""

import numpy as np

import fusekit
from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_coupling
from peers import require_peer, run_peer

HH = ChannelSet(HH_CHANNELS)
N_CELLS = 200
BRANCH_PARENTS = [-1, 0, 0, 1, 1]
NCOMP = 4
DT = 0.025
N_STEPS = 4000  # 100 ms
LENGTH_UM, RADIUS_UM, R_AXIAL = 10.0, 1.0, 5000.0  # Jaxley's defaults (its script reports them)
GROUP = f"{N_CELLS} branched HH cells (20 compartments), 100 ms at dt={DT}, float64"
COMP_STEPS = N_CELLS * len(BRANCH_PARENTS) * NCOMP * N_STEPS


def parent_array():
    """Compartment parents in Hines order: branch b's compartments b*NCOMP .. b*NCOMP+3,
    each branch hanging from the last compartment of its parent branch."""
    parent = []
    for b, pb in enumerate(BRANCH_PARENTS):
        for k in range(NCOMP):
            i = b * NCOMP + k
            parent.append(-1 if i == 0 else (i - 1 if k else pb * NCOMP + NCOMP - 1))
    return np.array(parent)


def currents():
    return np.linspace(5.0, 40.0, N_CELLS)


def make():
    parent = parent_array()
    n_comp = parent.shape[0]
    v0 = np.full((N_CELLS, n_comp), -65.0)
    S = HH.steady_states(v0.reshape(-1)).reshape(-1, N_CELLS, n_comp)
    P = HH.default_params(N_CELLS * n_comp).reshape(-1, N_CELLS, n_comp)
    i_ext = np.zeros((N_CELLS, n_comp))
    i_ext[:, 0] = currents()
    coupling = cable_coupling(parent, np.full(n_comp, LENGTH_UM), np.full(n_comp, 2 * RADIUS_UM),
                              R_AXIAL)
    return v0, S, P, i_ext, parent, np.broadcast_to(coupling[:, None], (2, N_CELLS, n_comp)).copy()


def report(benchmark, seconds=None):
    if seconds is None:
        if benchmark.stats is None:  # --benchmark-disable
            return
        seconds = benchmark.stats.stats.median
    benchmark.extra_info["compartment_steps_per_s"] = COMP_STEPS / seconds


def test_fusekit_cable_forward(benchmark):
    args = make()
    benchmark.group = f"{GROUP}: forward"
    kw = {"channels": HH, "dt": DT, "max_spikes": 1, "backend": "cpu"}
    fusekit.ops.cable_simulate(*args, n_steps=2, **kw)
    out = benchmark.pedantic(lambda: fusekit.ops.cable_simulate(*args, n_steps=N_STEPS, **kw),
                             rounds=3, iterations=1)
    report(benchmark)
    benchmark.extra_info["spikes"] = int(out.spike_count.sum())
    assert out.spike_count.sum() > 0 and np.isfinite(out.v).all()


def test_fusekit_cable_gradient(benchmark):
    import torch

    v0, S, P, i_ext, parent, coupling = (torch.as_tensor(a) for a in make())
    benchmark.group = f"{GROUP}: gradient"

    def gradient():
        params = P.clone().requires_grad_()
        out = fusekit.ops.cable_simulate(v0, S, params, i_ext, parent, coupling, channels=HH,
                                         dt=DT, n_steps=N_STEPS, record_every=1, record_at=[0],
                                         backend="cpu")
        out.v_record[:, :, 0].mean(0).sum().backward()
        return params.grad

    grad = benchmark.pedantic(gradient, rounds=3, iterations=1)
    report(benchmark)
    assert torch.isfinite(grad).all() and grad[1:4].abs().sum() > 0


def jaxley(benchmark, mode, **kw):
    require_peer("jaxley")
    config = dict(i_ext=currents().tolist(), parents=BRANCH_PARENTS, ncomp=NCOMP, dt=DT,
                  t_stop=N_STEPS * DT, mode=mode, repeat=1 if benchmark.disabled else 3, **kw)
    result = benchmark.pedantic(lambda: run_peer("jaxley", config, script="jaxley_cable.py"),
                                rounds=1, iterations=1)
    assert result["geometry"] == {"radius_um": RADIUS_UM, "length_um": LENGTH_UM,
                                  "axial_resistivity": R_AXIAL, "capacitance": 1.0}
    report(benchmark, result["run_s"])
    benchmark.extra_info.update(inner_run_s=result["run_s"], inner_run_s_all=result["run_s_all"],
                                first_call_s=result["compile_s"], excluded=result["excluded"],
                                versions=result["versions"])
    return result


def test_jaxley_cable_forward(benchmark):
    benchmark.group = f"{GROUP}: forward"
    result = jaxley(benchmark, "forward")
    benchmark.extra_info["spikes"] = int(sum(result["spike_count"]))
    assert sum(result["spike_count"]) > 0


def test_jaxley_cable_gradient(benchmark):
    """Checkpointing in two levels of 64 x 63 steps (padded to 4032), as for the population."""
    benchmark.group = f"{GROUP}: gradient"
    result = jaxley(benchmark, "gradient", checkpoint_lengths=[64, 63])
    assert result["grad_finite"] and result["grad_norm"] > 0
