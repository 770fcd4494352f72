"""ion_simulate and the channel DSL reject bad input with messages that say what to do."""

import numpy as np
import pytest

import fusekit
from fusekit.neuro import HH_CHANNELS, Channel, ChannelSet, exp
from fusekit.ops.ion_channel import channel_set

HH = ChannelSet(HH_CHANNELS)


def good(n=3, dtype=np.float64):
    return dict(v0=np.full(n, -65.0, dtype), states0=HH.initial_states(n, dtype),
                params=HH.default_params(n, dtype), i_ext=np.zeros(n, dtype))


def call(overrides=None, **kw):
    arrays = good()
    arrays.update(overrides or {})
    kw = dict(dict(channels=HH, dt=0.025, n_steps=4, backend="reference"), **kw)
    return fusekit.ops.ion_simulate(arrays["v0"], arrays["states0"], arrays["params"],
                                    arrays["i_ext"], **kw)


@pytest.mark.parametrize("name, value, match", [
    ("v0", np.zeros((3, 1)), r"v0 must have shape \(n,\)"),
    ("states0", np.zeros((2, 3)), r"states0 must have shape \(n_states, n\) = \(3, 3\)"),
    ("params", np.zeros((7, 4)), r"params must have shape \(n_params, n\) = \(7, 3\)"),
    ("i_ext", np.zeros((5, 3)), r"i_ext must have shape \(n,\) = \(3,\) \(constant\) or"),
    ("i_ext", np.zeros(3, np.float32), r"v0 is float64 and i_ext is float32"),
    ("v0", np.full(3, -65, np.int64), r"all arrays must share one dtype"),
    ("v0", np.array([-65.0, np.nan, 0.0]), r"v0 contains NaN or infinity"),
    ("i_ext", np.array([0.0, np.inf, 0.0]), r"i_ext contains NaN or infinity"),
])
def test_bad_arrays_name_the_argument_and_the_expected_shape(name, value, match):
    with pytest.raises(fusekit.InputError, match=match):
        call({name: value})


def test_integer_arrays_are_refused_with_the_supported_dtypes():
    arrays = {k: v.astype(np.int32) for k, v in good().items()}
    with pytest.raises(fusekit.InputError, match="must be float32 or float64"):
        call(arrays)


@pytest.mark.parametrize("dt", [0.0, -0.025, float("nan"), float("inf")])
def test_time_step_must_be_positive_and_finite(dt):
    with pytest.raises(fusekit.InputError, match="dt must be a positive finite time step"):
        call(dt=dt)


@pytest.mark.parametrize("name", ["n_steps", "record_every", "max_spikes"])
def test_counts_must_be_non_negative_integers(name):
    with pytest.raises(fusekit.InputError, match=f"{name} must be a non-negative integer"):
        call(**{name: -1})


def test_capacitance_must_be_positive():
    params = HH.default_params(3)
    params[0, 1] = 0.0
    with pytest.raises(fusekit.InputError, match="c_m, membrane capacitance"):
        call({"params": params})


@pytest.mark.parametrize("name", ["g_na", "g_k", "g_leak"])
def test_conductances_must_not_be_negative(name):
    params = HH.default_params(3)
    params[HH.param_names.index(name), 2] = -1.0
    with pytest.raises(fusekit.InputError, match=f"{name}, a conductance density in mS/cm"):
        call({"params": params})


def test_unknown_channel_set_key():
    with pytest.raises(fusekit.InputError, match="no ChannelSet with key 'nope'"):
        call(channels="nope")


def test_channel_set_key_finds_the_set():
    assert channel_set(HH.key) == HH
    assert channel_set(list(HH_CHANNELS)) == HH


# ----------------------------------------------------------------------- channel definitions


def test_state_without_rates_is_refused_at_class_definition():
    with pytest.raises(TypeError, match="state 'x' needs exactly one pair"):
        class Broken(Channel):
            params = {"g": 1.0, "e": 0.0}
            states = {"x": 0.0}
            reversal = "e"

            def alpha_x(v):
                return 1.0

            def conductance(x, g):
                return g * x


def test_unknown_argument_names_are_refused():
    with pytest.raises(TypeError, match=r"conductance takes \['gbar'\]"):
        class Broken(Channel):
            params = {"g": 1.0}
            states = {}
            reversal = 0.0

            def conductance(gbar):
                return gbar


def test_reversal_must_name_a_parameter():
    with pytest.raises(TypeError, match="reversal 'e_x' is not one of its params"):
        class Broken(Channel):
            params = {"g": 1.0}
            states = {}
            reversal = "e_x"

            def conductance(g):
                return g


def test_shared_parameter_with_two_defaults_is_refused():
    class A(Channel):
        params = {"g": 1.0, "v_t": -56.0}
        states = {}
        reversal = 0.0

        def conductance(g, v_t):
            return g * exp(v_t * 0.0)

    class B(Channel):
        params = {"g2": 1.0, "v_t": -50.0}
        states = {}
        reversal = 0.0

        def conductance(g2):
            return g2

    with pytest.raises(fusekit.InputError, match="'v_t' is shared by several channels"):
        ChannelSet([A, B])


def test_channel_set_needs_channel_classes():
    with pytest.raises(fusekit.InputError, match="is not a Channel subclass"):
        ChannelSet([object])


def test_channel_set_key_follows_the_code_of_helpers():
    import types

    from fusekit.neuro import pospischil

    before = ChannelSet([pospischil.PospischilCaT]).key
    original = pospischil.s_inf
    try:
        pospischil.s_inf = types.FunctionType(
            (lambda v, v_x: 0.5).__code__, pospischil.__dict__, "s_inf")
        assert ChannelSet([pospischil.PospischilCaT]).key != before
    finally:
        pospischil.s_inf = original
    assert ChannelSet([pospischil.PospischilCaT]).key == before
