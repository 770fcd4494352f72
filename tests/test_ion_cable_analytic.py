"""cable_simulate on passive cables against closed-form solutions of the cable equation.

A leak-only cable of diameter ``d`` (um), axial resistivity ``Ra`` (Ohm cm) and leak
conductance ``g_l`` (mS/cm^2) has the length constant ``lambda = sqrt(d R_m / (4 Ra))``
(``R_m = 1/g_l``) and axial resistance per length ``r_a = 4 Ra / (pi d^2)``. With a current
``I0`` injected at the sealed end ``x = 0`` of a sealed cable of length ``L``, the steady state
is ``V(x) - E = I0 r_a lambda cosh((L - x)/lambda) / sinh(L/lambda)``.

fusekit's compartments are a cell-centred finite-volume discretisation: compartment ``i`` of
length ``h`` stands for ``x = (i + 1/2) h`` and its error is ``O((h/lambda)^2)``; backward Euler
reaches the discrete steady state exactly (its fixed point does not depend on ``dt``).
"""

import math

import numpy as np
import pytest

import fusekit
from fusekit.neuro import ChannelSet, HHLeak, cable_coupling, cable_tree

LEAK = ChannelSet([HHLeak])
G_L, E_L, RA, C_M = 0.3, -65.0, 100.0, 1.0  # mS/cm^2, mV, Ohm cm, uF/cm^2
TAU_M = C_M / G_L  # ms


def length_constant_um(diam_um):
    r_m = 1e3 / G_L  # Ohm cm^2
    return math.sqrt(diam_um * 1e-4 * r_m / (4 * RA)) * 1e4


def steady_state(parent, length_um, diam_um, i0_ua, backend, coupling=None, junction=None):
    """Potentials after 200 ms (60 membrane time constants; dt = 0.5 ms) with ``i0_ua`` into
    compartment 0. ``junction``: zero-area nodes (no capacitance, no leak)."""
    n_comp = len(parent)
    area_cm2 = math.pi * np.asarray(diam_um) * np.asarray(length_um) * 1e-8
    if coupling is None:
        coupling = cable_coupling(parent, length_um, diam_um, RA)
    coupling = coupling[:, None]
    v0 = np.full((1, n_comp), E_L)
    i_ext = np.zeros((1, n_comp))
    i_ext[0, 0] = i0_ua / area_cm2[0]  # uA/cm^2
    params = LEAK.default_params(n_comp, g_leak=G_L, e_leak=E_L)
    if junction is not None:
        params[0, junction] = params[LEAK.param_names.index("g_leak"), junction] = 0.0
    out = fusekit.ops.cable_simulate(
        v0, np.zeros((0, 1, n_comp)), params.reshape(-1, 1, n_comp), i_ext,
        np.asarray(parent), coupling, channels=LEAK, dt=0.5, n_steps=400, backend=backend)
    return out.v[0]


def sealed_cable_v(x_over_lambda, total_over_lambda, i0_ua, diam_um):
    """The analytic steady state, mV, at electrotonic distances ``x/lambda`` from the end."""
    lam_cm = length_constant_um(diam_um) * 1e-4
    r_a = 4 * RA / (math.pi * (diam_um * 1e-4) ** 2)  # Ohm/cm
    scale = i0_ua * r_a * lam_cm * 1e-3  # uA Ohm = uV -> mV
    return E_L + scale * np.cosh(total_over_lambda - x_over_lambda) / math.sinh(
        total_over_lambda)


def unbranched_error(n_comp, backend, diam=2.0, electrotonic_length=1.0, i0=1e-4):
    lam = length_constant_um(diam)
    h = electrotonic_length * lam / n_comp
    parent = np.arange(-1, n_comp - 1)
    v = steady_state(parent, np.full(n_comp, h), np.full(n_comp, diam), i0, backend)
    exact = sealed_cable_v((np.arange(n_comp) + 0.5) * h / lam, electrotonic_length, i0, diam)
    return np.abs(v - exact).max() / np.abs(exact - E_L).max(), (h / lam) ** 2


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_sealed_cable_steady_state_matches_the_cosh_solution(backend):
    """L = lambda in 50 compartments, (h/lambda)^2 = 4e-4: the largest error relative to the
    largest depolarisation is 1.43e-5 (0.036 (h/lambda)^2), and a quarter of that with twice
    the compartments (second order). Tolerance 0.1 (h/lambda)^2."""
    err50, h2 = unbranched_error(50, backend)
    err100, _ = unbranched_error(100, backend)
    assert err50 < 0.1 * h2
    assert 3.8 < err50 / err100 < 4.2


def rall_tree(n0, n1, junction_once, tree=False):
    """A 2 um parent in ``n0`` compartments forking into two daughters of 2 / 2^(2/3) um in
    ``n1`` each; every compartment 0.6/n0 length constants long; error against the
    equivalent cylinder (electrotonic length 1) relative to the largest depolarisation.

    ``junction_once``: the parent's last half-compartment resistance is counted once for both
    daughters (the two couplings are ``G_p G_i / (G_p + G_1 + G_2)`` from the half-compartment
    conductances, the elimination of a zero-area junction node as NEURON has; exact here
    because the daughters are at equal potentials); otherwise :func:`cable_coupling`'s
    convention, which puts the parent half in series with each daughter separately.
    ``tree``: the zero-area node itself, inserted by :func:`fusekit.neuro.cable_tree`.
    """
    d0 = 2.0
    d1 = d0 / 2 ** (2 / 3)
    x_step = 0.6 / n0
    parent = list(range(-1, n0 - 1))
    for _ in range(2):  # Hines order: each daughter's compartments depth-first
        parent += [n0 - 1] + list(range(len(parent), len(parent) + n1 - 1))
    parent = np.array(parent)
    length = np.array([x_step * length_constant_um(d0)] * n0
                      + [x_step * length_constant_um(d1)] * (2 * n1))
    diam = np.array([d0] * n0 + [d1] * (2 * n1))
    coupling = cable_coupling(parent, length, diam, RA)
    if junction_once:
        half_g = 1.0 / (RA * (length * 1e-4 / 2) / (math.pi * (diam * 0.5e-4) ** 2))  # S
        area = math.pi * diam * length * 1e-8
        kids = np.flatnonzero(parent == n0 - 1)
        for k in kids:
            g_ms = 1e3 * half_g[n0 - 1] * half_g[k] / (half_g[n0 - 1] + half_g[kids].sum())
            coupling[:, k] = g_ms / area[k], g_ms / area[n0 - 1]
    i0 = 1e-4
    if tree:
        nodes = cable_tree(parent, length, diam, RA)
        v = steady_state(nodes.parent, nodes.area * 1e8 / (math.pi * diam[0]), np.full(
            nodes.parent.size, diam[0]), i0, "cpu", nodes.coupling, nodes.junction)[nodes.node]
    else:
        v = steady_state(parent, length, diam, i0, "reference", coupling=coupling)
    np.testing.assert_allclose(v[n0:n0 + n1], v[n0 + n1:], rtol=0, atol=1e-12)  # symmetric
    x = (np.concatenate([np.arange(n0), n0 + np.arange(n1), n0 + np.arange(n1)]) + 0.5) * x_step
    exact = sealed_cable_v(x, 1.0, i0, d0)
    return np.abs(v - exact).max() / np.abs(exact - E_L).max(), x_step


def test_rall_equivalent_cylinder_with_the_junction_counted_once():
    """Rall's 3/2 rule (d0^(3/2) = d1^(3/2) + d2^(3/2)) with daughters of equal electrotonic
    length: the tree is the equivalent cylinder of the parent's diameter, electrotonic length
    the sum (0.6 + 0.4). With the junction's resistance counted once, the steady state along
    the tree is the cosh solution to second order: the very errors of the unbranched cable
    (1.43e-5 with 0.02 length constants per compartment)."""
    err, x_step = rall_tree(30, 20, junction_once=True)
    err2, _ = rall_tree(60, 40, junction_once=True)
    assert err < 0.1 * x_step**2
    assert 3.8 < err / err2 < 4.2


def test_junction_nodes_of_cable_tree_make_the_fork_second_order():
    """The same Rall tree through cable_tree's zero-area node (c_m = 0, no leak) on the CPU
    kernel: the errors of the coupling counted once, second order."""
    err, x_step = rall_tree(30, 20, junction_once=False, tree=True)
    err2, _ = rall_tree(60, 40, junction_once=False, tree=True)
    want, _ = rall_tree(30, 20, junction_once=True)
    assert err < 0.1 * x_step**2
    assert 3.8 < err / err2 < 4.2
    assert abs(err - want) < 1e-3 * want


def test_cable_coupling_at_a_branch_point_is_first_order():
    """cable_coupling connects each daughter's centre to the parent's through its own copy of
    the parent's half-compartment resistance: 0.75 of the series resistance of the equivalent
    cylinder at the fork. The error at the fork is then first order in the compartment
    length (measured 0.040 h/lambda relative: 8.0e-4, 3.9e-4, 2.0e-4 at h/lambda = 0.02,
    0.01, 0.005). This pins the convention; NEURON's zero-area junction node is the
    second-order one (see the test above)."""
    err, x_step = rall_tree(30, 20, junction_once=False)
    err2, _ = rall_tree(60, 40, junction_once=False)
    assert 0.03 * x_step < err < 0.05 * x_step
    assert 1.9 < err / err2 < 2.1


def test_isopotential_compartment_charges_with_the_membrane_time_constant():
    """One passive compartment under a current step: V(t) = E + (I/g)(1 - exp(-t/tau)).
    Backward Euler is first order: its largest error is about dt/(2 e tau) (I/g), and half
    that at half the step."""
    i_inj, t_stop = 3.0, 20.0  # uA/cm^2, ms
    errors = {}
    for dt in (0.05, 0.025):
        n = round(t_stop / dt)
        out = fusekit.ops.ion_simulate(
            np.array([E_L]), np.zeros((0, 1)), LEAK.default_params(1, g_leak=G_L, e_leak=E_L),
            np.array([i_inj]), channels=LEAK, dt=dt, n_steps=n, record_every=1,
            backend="reference")
        t = dt * np.arange(1, n + 1)
        exact = E_L + i_inj / G_L * (1 - np.exp(-t / TAU_M))
        errors[dt] = np.abs(out.v_record[:, 0] - exact).max() / (i_inj / G_L)
        assert errors[dt] < 1.05 * dt / (2 * math.e * TAU_M)
    assert 1.9 < errors[0.05] / errors[0.025] < 2.1
