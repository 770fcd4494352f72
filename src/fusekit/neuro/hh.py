"""The Hodgkin-Huxley squid axon channels, in NEURON's ``hh`` conventions.

Hodgkin, A. L. & Huxley, A. F. (1952). A quantitative description of membrane current and its
application to conduction and excitation in nerve. J. Physiol. 117(4), 500-544.
doi:10.1113/jphysiol.1952.sp004764

Rates as in NEURON's ``hh.mod`` (membrane potential in mV, rest near -65 mV, at 6.3 degC so
that its temperature factor is 1), with conductances in mS/cm^2 (NEURON's ``gnabar = 0.12
S/cm2`` is ``g_na = 120``) and NEURON's default reversal potentials ``ena = 50``, ``ek = -77``.
``alpha_m`` and ``alpha_n`` are 0/0 at -40 and -55 mV; :func:`vtrap` gives their limits.
"""

from __future__ import annotations

from ..ops.ion_channel import Channel, exp, vtrap

__all__ = ["HHSodium", "HHPotassium", "HHLeak", "HH_CHANNELS"]


class HHSodium(Channel):
    """Fast sodium channel, ``g = g_na m^3 h``.

    Params:
        g_na: Maximal conductance, mS/cm^2 (120).
        e_na: Reversal potential, mV (50).
    """

    params = {"g_na": 120.0, "e_na": 50.0}
    states = {"m": 0.0529325, "h": 0.596121}  # steady state at -65 mV
    reversal = "e_na"

    def alpha_m(v):
        """Activation rate of m, 1/ms."""
        return 0.1 * vtrap(-(v + 40.0), 10.0)

    def beta_m(v):
        """Deactivation rate of m, 1/ms."""
        return 4.0 * exp(-(v + 65.0) / 18.0)

    def alpha_h(v):
        """De-inactivation rate of h, 1/ms."""
        return 0.07 * exp(-(v + 65.0) / 20.0)

    def beta_h(v):
        """Inactivation rate of h, 1/ms."""
        return 1.0 / (exp(-(v + 35.0) / 10.0) + 1.0)

    def conductance(m, h, g_na):
        """Open conductance, mS/cm^2."""
        return g_na * m * m * m * h


class HHPotassium(Channel):
    """Delayed-rectifier potassium channel, ``g = g_k n^4``.

    Params:
        g_k: Maximal conductance, mS/cm^2 (36).
        e_k: Reversal potential, mV (-77).
    """

    params = {"g_k": 36.0, "e_k": -77.0}
    states = {"n": 0.317677}  # steady state at -65 mV
    reversal = "e_k"

    def alpha_n(v):
        """Activation rate of n, 1/ms."""
        return 0.01 * vtrap(-(v + 55.0), 10.0)

    def beta_n(v):
        """Deactivation rate of n, 1/ms."""
        return 0.125 * exp(-(v + 65.0) / 80.0)

    def conductance(n, g_k):
        """Open conductance, mS/cm^2."""
        n2 = n * n
        return g_k * n2 * n2


class HHLeak(Channel):
    """Leak conductance.

    Params:
        g_leak: Conductance, mS/cm^2 (0.3).
        e_leak: Reversal potential, mV (-54.3).
    """

    params = {"g_leak": 0.3, "e_leak": -54.3}
    states = {}
    reversal = "e_leak"

    def conductance(g_leak):
        """Leak conductance, mS/cm^2."""
        return g_leak


#: The squid axon's channels, as NEURON's ``hh`` mechanism inserts them.
HH_CHANNELS = (HHSodium, HHPotassium, HHLeak)
