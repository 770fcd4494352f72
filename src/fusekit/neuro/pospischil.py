"""Cortical channels of Pospischil et al. (2008): Na, K delayed rectifier, M, L- and T-type Ca.

Pospischil, M., Toledo-Rodriguez, M., Monier, C., Piwkowska, Z., Bal, T., Fregnac, Y.,
Markram, H. & Destexhe, A. (2008). Minimal Hodgkin-Huxley type models for different classes of
cortical and thalamic neurons. Biol. Cybern. 99(4-5), 427-441. doi:10.1007/s00422-008-0263-8

Na and K from Traub & Miles (1991) with the threshold parameter ``v_t`` (shared by both), the
slow M current from Yamada et al. (1989), the L-type current from Reuveni et al. (1993), the
T-type current from Destexhe et al. (1996) with instantaneous activation ``s_inf(v)``.

Units: mV, ms, mS/cm^2. Defaults are those of the paper's regular-spiking (RS) cell for Na,
Kd, M and leak; the Ca conductances (0.1 and 0.4 mS/cm^2) and ``v_x = 2`` mV are starting
values to set per cell type (IB cells use the L-type, LTS cells the T-type current). Check
them against the paper's tables for your cell class.

The T-type time constant follows Destexhe et al. (1996),
``tau_u = (30.8 + (211.4 + exp((v + v_x + 113.2) / 5)) / (1 + exp((v + v_x + 84) / 3.2))) /
3.7``; Jaxley's ``CaT`` divides 30.8 by the denominator as well, so the two differ.
"""

from __future__ import annotations

from ..ops.ion_channel import Channel, exp, vtrap

__all__ = ["PospischilNa", "PospischilKd", "PospischilM", "PospischilCaL", "PospischilCaT",
           "PospischilLeak", "POSPISCHIL_RS_CHANNELS"]


class PospischilNa(Channel):
    """Fast sodium channel (Traub & Miles), ``g = g_na m^3 h``.

    Params:
        g_na: mS/cm^2 (56, RS cell).
        e_na: mV (50).
        v_t: Spike threshold adjustment, mV (-56.2, RS cell); shared with the K channel.
    """

    params = {"g_na": 56.0, "e_na": 50.0, "v_t": -56.2}
    states = {"m": 0.0, "h": 1.0}
    reversal = "e_na"

    def alpha_m(v, v_t):
        """Rate, 1/ms; 0/0 at ``v = v_t + 13`` (vtrap)."""
        return 0.32 * vtrap(-(v - v_t - 13.0), 4.0)

    def beta_m(v, v_t):
        """Rate, 1/ms; 0/0 at ``v = v_t + 40`` (vtrap)."""
        return 0.28 * vtrap(v - v_t - 40.0, 5.0)

    def alpha_h(v, v_t):
        """Rate, 1/ms."""
        return 0.128 * exp(-(v - v_t - 17.0) / 18.0)

    def beta_h(v, v_t):
        """Rate, 1/ms."""
        return 4.0 / (1.0 + exp(-(v - v_t - 40.0) / 5.0))

    def conductance(m, h, g_na):
        """Conductance, mS/cm^2."""
        return g_na * m * m * m * h


class PospischilKd(Channel):
    """Delayed-rectifier potassium channel (Traub & Miles), ``g = g_kd n^4``.

    Params:
        g_kd: mS/cm^2 (6, RS cell).
        e_k: mV (-90); shared with the M channel.
        v_t: mV (-56.2); shared with the Na channel.
    """

    params = {"g_kd": 6.0, "e_k": -90.0, "v_t": -56.2}
    states = {"n": 0.0}
    reversal = "e_k"

    def alpha_n(v, v_t):
        """Rate, 1/ms; 0/0 at ``v = v_t + 15`` (vtrap)."""
        return 0.032 * vtrap(-(v - v_t - 15.0), 5.0)

    def beta_n(v, v_t):
        """Rate, 1/ms."""
        return 0.5 * exp(-(v - v_t - 10.0) / 40.0)

    def conductance(n, g_kd):
        """Conductance, mS/cm^2."""
        n2 = n * n
        return g_kd * n2 * n2


class PospischilM(Channel):
    """Slow non-inactivating potassium (M) channel (Yamada et al.), ``g = g_m p``.

    Params:
        g_m: mS/cm^2 (0.075, RS cell).
        tau_max: Maximal time constant, ms (608, RS cell).
        e_k: mV (-90).
    """

    params = {"g_m": 0.075, "tau_max": 608.0, "e_k": -90.0}
    states = {"p": 0.0}
    reversal = "e_k"

    def inf_p(v):
        """Steady state."""
        return 1.0 / (1.0 + exp(-(v + 35.0) / 10.0))

    def tau_p(v, tau_max):
        """Time constant, ms."""
        return tau_max / (3.3 * exp((v + 35.0) / 20.0) + exp(-(v + 35.0) / 20.0))

    def conductance(p, g_m):
        """Conductance, mS/cm^2."""
        return g_m * p


class PospischilCaL(Channel):
    """High-threshold L-type calcium channel (Reuveni et al.), ``g = g_cal q^2 r``.

    Params:
        g_cal: mS/cm^2 (0.1).
        e_ca: mV (120).
    """

    params = {"g_cal": 0.1, "e_ca": 120.0}
    states = {"q": 0.0, "r": 1.0}
    reversal = "e_ca"

    def alpha_q(v):
        """Rate, 1/ms; 0/0 at -27 mV (vtrap)."""
        return 0.055 * vtrap(-27.0 - v, 3.8)

    def beta_q(v):
        """Rate, 1/ms."""
        return 0.94 * exp((-75.0 - v) / 17.0)

    def alpha_r(v):
        """Rate, 1/ms."""
        return 0.000457 * exp((-13.0 - v) / 50.0)

    def beta_r(v):
        """Rate, 1/ms."""
        return 0.0065 / (exp((-15.0 - v) / 28.0) + 1.0)

    def conductance(q, r, g_cal):
        """Conductance, mS/cm^2."""
        return g_cal * q * q * r


def s_inf(v, v_x):
    """Instantaneous activation of the T-type channel."""
    return 1.0 / (1.0 + exp(-(v + v_x + 57.0) / 6.2))


class PospischilCaT(Channel):
    """Low-threshold T-type calcium channel (Destexhe et al.), ``g = g_cat s_inf(v)^2 u``.

    Params:
        g_cat: mS/cm^2 (0.4).
        v_x: Voltage shift, mV (2).
        e_ca: mV (120).
    """

    params = {"g_cat": 0.4, "v_x": 2.0, "e_ca": 120.0}
    states = {"u": 1.0}
    reversal = "e_ca"

    def inf_u(v, v_x):
        """Steady state of inactivation."""
        return 1.0 / (1.0 + exp((v + v_x + 81.0) / 4.0))

    def tau_u(v, v_x):
        """Time constant, ms."""
        return (30.8 + (211.4 + exp((v + v_x + 113.2) / 5.0))
                / (1.0 + exp((v + v_x + 84.0) / 3.2))) / 3.7

    def conductance(v, u, g_cat, v_x):
        """Conductance, mS/cm^2."""
        s = s_inf(v, v_x)
        return g_cat * s * s * u


class PospischilLeak(Channel):
    """Leak conductance.

    Params:
        g_leak: mS/cm^2 (0.0205, RS cell).
        e_leak: mV (-70.3, RS cell).
    """

    params = {"g_leak": 0.0205, "e_leak": -70.3}
    states = {}
    reversal = "e_leak"

    def conductance(g_leak):
        """Conductance, mS/cm^2."""
        return g_leak


#: The regular-spiking cell: Na, Kd, M and leak.
POSPISCHIL_RS_CHANNELS = (PospischilNa, PospischilKd, PospischilM, PospischilLeak)
