"""The ion ops refuse fractional counts (they were truncated by int()) and a bool dt."""

import numpy as np
import pytest

import fusekit
from fusekit.neuro import HH_CHANNELS, ChannelSet

HH = ChannelSet(HH_CHANNELS)


def arrays(n=2):
    return (np.full(n, -65.0), HH.initial_states(n), HH.default_params(n), np.full(n, 10.0))


@pytest.mark.parametrize("kwargs, name", [
    ({"n_steps": 4.5}, "n_steps"), ({"n_steps": 4, "record_every": 0.5}, "record_every"),
    ({"n_steps": 4, "max_spikes": 2.7}, "max_spikes"), ({"n_steps": True}, "n_steps"),
    ({"n_steps": -3}, "n_steps"),
])
@pytest.mark.parametrize("op", ["ion_simulate", "ion_sensitivity"])
def test_fractional_or_negative_counts_are_refused(op, kwargs, name):
    extra = {"wrt": ["g_na"]} if op == "ion_sensitivity" else {}
    with pytest.raises(fusekit.InputError, match=f"{op}: {name} must be a non-negative integer"):
        getattr(fusekit.ops, op)(*arrays(), channels=HH, dt=0.025, **kwargs, **extra)


def test_network_and_cable_ops_refuse_fractional_counts():
    v0, S, P, i_ext = arrays(3)
    with pytest.raises(fusekit.InputError, match="delay_steps must be a non-negative"):
        fusekit.ops.network_simulate(v0, S, P, i_ext, np.zeros(3), np.array([0, 1, 1, 1]),
                                     np.array([1]), np.array([0.1]), channels=HH, dt=0.025,
                                     n_steps=4, delay_steps=1.5)
    parent = np.array([-1, 0])
    cpl = np.zeros((2, 1, 2))
    with pytest.raises(fusekit.InputError, match="cable_simulate: record_every must be a non-neg"):
        fusekit.ops.cable_simulate(np.full((1, 2), -65.0), HH.initial_states(2)[:, None, :],
                                   HH.default_params(2)[:, None, :], np.zeros((1, 2)), parent,
                                   cpl, channels=HH, dt=0.025, n_steps=4, record_every=1.5)


def test_a_bool_dt_is_refused():
    with pytest.raises(fusekit.InputError, match="dt must be a positive finite time step"):
        fusekit.ops.ion_simulate(*arrays(), channels=HH, dt=True, n_steps=4)


def test_numpy_integer_counts_still_work():
    out = fusekit.ops.ion_simulate(*arrays(), channels=HH, dt=0.025, n_steps=np.int64(4),
                                   record_every=np.int32(2))
    assert out.v_record.shape == (2, 2)
