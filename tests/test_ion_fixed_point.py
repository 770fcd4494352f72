"""The fixed-point HH step against fusekit's float64 reference (ion_simulate, reference)."""

import numpy as np
import pytest

import fusekit
from fusekit.neuro import (
    HH_CHANNELS,
    ChannelSet,
    FixedPointHH,
    FixedPointRangeError,
    fixed_point_error,
)

WIDE = {"word_bits": 32, "v_frac_bits": 20, "gate_frac_bits": 28, "table_step": 1 / 16}
NARROW = {"word_bits": 16, "v_frac_bits": 8, "gate_frac_bits": 14, "table_step": 0.25}


def test_wide_format_trace_stays_within_a_millivolt_of_float64_over_20_ms():
    err = fixed_point_error(FixedPointHH(**WIDE), [0.0, 10.0], duration=20.0)
    # measured: 1e-4 mV at rest, 1.4e-2 mV through two spikes
    assert err.v_rms.max() < 0.1
    assert np.array_equal(err.count_fixed, err.count_ref)
    assert np.nanmax(err.max_spike_shift) < 0.01  # ms


def test_wide_format_spike_counts_equal_float64_for_several_currents():
    err = fixed_point_error(FixedPointHH(**WIDE), [3.0, 8.0, 20.0, 40.0], duration=50.0)
    assert err.count_ref.tolist() == err.count_fixed.tolist()
    assert err.count_ref.min() >= 1  # every current makes the neurons fire


def test_sixteen_bit_format_first_spike_within_a_tenth_of_a_millisecond():
    err = fixed_point_error(FixedPointHH(**NARROW), [10.0], duration=5.0)
    assert err.count_ref[0] == err.count_fixed[0] == 1
    assert err.max_spike_shift[0] < 0.1
    assert err.v_rms[0] < 2.0


def test_first_spike_time_matches_ion_simulate_doc_example():
    out = FixedPointHH(**WIDE).simulate(np.array([10.0]), n_steps=400, max_spikes=4)
    hh = ChannelSet(HH_CHANNELS)
    v0 = np.full(1, -65.0)
    ref = fusekit.ops.ion_simulate(v0, hh.steady_states(v0), hh.default_params(1),
                                   np.full(1, 10.0), channels=hh, dt=0.025, n_steps=400,
                                   max_spikes=4, backend="reference")
    assert out.spike_count[0] == ref.spike_count[0] == 1
    assert abs(out.spike_times[0, 0] - ref.spike_times[0, 0]) < 1e-3  # ms; 1.92 ms both


def test_rest_stays_at_rest_and_gates_stay_in_unit_interval():
    out = FixedPointHH(**NARROW).simulate(np.zeros(2), n_steps=200, record_every=1)
    assert np.abs(out.v_record + 65.0).max() < 0.5
    assert out.spike_count.tolist() == [0, 0]
    assert ((out.states >= 0) & (out.states <= 1)).all()


def test_format_that_cannot_hold_the_voltage_range_is_refused():
    with pytest.raises(fusekit.InputError, match="v_range.*needs 15.64 bits"):
        FixedPointHH(word_bits=16, v_frac_bits=9, gate_frac_bits=14, table_step=0.25)


def test_gate_bits_that_cannot_hold_one_are_refused():
    with pytest.raises(fusekit.InputError, match="gate value of 1"):
        FixedPointHH(word_bits=16, v_frac_bits=8, gate_frac_bits=15, table_step=0.25)


def test_too_large_input_current_is_refused_before_it_can_overflow():
    chip = FixedPointHH(**NARROW)
    with pytest.raises(fusekit.InputError, match="input increment"):
        chip.simulate(np.array([20000.0]), n_steps=1)


def test_voltage_leaving_the_table_range_raises_instead_of_wrapping():
    chip = FixedPointHH(**WIDE | {"v_range": (-100.0, 20.0)})
    with pytest.raises(FixedPointRangeError, match="outside v_range"):
        chip.simulate(np.array([20.0]), n_steps=400)


def test_table_step_must_be_a_power_of_two():
    with pytest.raises(fusekit.InputError, match="power of two"):
        FixedPointHH(**WIDE | {"table_step": 0.3})


def test_unknown_parameter_is_refused():
    with pytest.raises(fusekit.InputError, match="unknown HH parameters"):
        FixedPointHH(g_naa=100.0)


def test_parameters_reach_both_runs():
    err = fixed_point_error(FixedPointHH(**WIDE, g_k=30.0, e_leak=-50.0), [5.0], duration=20.0)
    assert err.v_rms[0] < 0.1


def test_accumulator_too_narrow_for_the_voltage_numerator_is_refused():
    # e_na = 120 mV makes dt g_na e_na / c_m = 360 mV per step at full sodium conductance:
    # shifted for the division it needs 31.05 bits of a 16-bit format's 32-bit accumulator
    with pytest.raises(fusekit.InputError, match="division needs 31.05 bits.*accumulator"):
        FixedPointHH(**NARROW | {"e_na": 120.0})
