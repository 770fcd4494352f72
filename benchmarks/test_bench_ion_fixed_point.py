"""The fixed-point HH step (NumPy int64, vectorised over neurons) against float64 NumPy.

Both emulate one step per Python iteration over the same 1,000 neurons with currents
0..40 uA/cm^2 for 20 ms at dt = 0.025 ms: the fixed-point model as a chip's arithmetic on
the host (a check of the format's error, not a fast simulator), the peer fusekit's float64
reference of the same scheme. Spike counts are checked before timing.
"""

import numpy as np
import pytest

from fusekit import ops
from fusekit.neuro import HH_CHANNELS, ChannelSet, FixedPointHH

N_NEURONS = 1000
N_STEPS = 800  # 20 ms
GROUP = f"HH {N_NEURONS} neurons, 20 ms: fixed point vs float64 (host emulation)"
CURRENTS = np.linspace(0.0, 40.0, N_NEURONS)


def float64_reference():
    hh = ChannelSet(HH_CHANNELS)
    v0 = np.full(N_NEURONS, -65.0)
    return ops.ion_simulate(v0, hh.steady_states(v0), hh.default_params(N_NEURONS), CURRENTS,
                            channels=hh, dt=0.025, n_steps=N_STEPS, backend="reference")


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("bits", [16, 32])
def test_fixed_point_hh(benchmark, bits):
    chip = (FixedPointHH(word_bits=16, v_frac_bits=8, gate_frac_bits=14, table_step=0.25)
            if bits == 16 else FixedPointHH())
    out = benchmark(chip.simulate, CURRENTS, N_STEPS)
    ref = float64_reference()
    assert np.abs(out.spike_count - ref.spike_count).max() <= 1
    if benchmark.stats is not None:
        benchmark.extra_info["neuron_steps_per_s"] = (
            N_NEURONS * N_STEPS / benchmark.stats.stats.median)


@pytest.mark.benchmark(group=GROUP)
def test_float64_reference(benchmark):
    out = benchmark(float64_reference)
    assert out.spike_count.max() >= 1
