"""A channel whose steady state branches on ``v`` (``np.where``): valid for the simulators,
but it cannot be traced into the symbolic step (forward mode, compiled adjoint)."""

import numpy as np

from fusekit.ops.ion_channel import Channel


class Branchy(Channel):
    """``x`` relaxes (tau 1 ms) to 0.9 above -50 mV and to 0.1 below; ``g = g_b x``."""

    params = {"g_b": 1.0}
    states = {"x": 0.5}
    reversal = -70.0

    def inf_x(v):
        return np.where(v > -50.0, 0.9, 0.1)

    def tau_x(v):
        return 1.0 + 0.0 * v

    def conductance(x, g_b):
        return g_b * x
