"""The CUDA kernels of networks of branched cells under the simulator: tiny sizes only."""

import numpy as np
from numba import cuda

from fusekit.backends.cuda import ion_cable_network as cuda_icn
from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_coupling
from fusekit.ops.ion_cable_network import cable_network_simulate_reference, synapse_targets

HH = ChannelSet(HH_CHANNELS)
PARENT = np.array([-1, 0, 1])


def test_window_and_delivery_kernels_match_the_reference():
    # cell 0 (driven) excites cell 1's distal dendrite and inhibits cell 2's soma
    n_cells, n_comp, steps, delay = 3, 3, 48, 8
    cpl = cable_coupling(PARENT, [20.0, 100.0, 100.0], [20.0, 2.0, 1.0])
    coupling = np.ascontiguousarray(np.broadcast_to(cpl[:, None], (2, n_cells, n_comp)))
    v0 = np.full((n_cells, n_comp), -65.0)
    S = HH.steady_states(v0.reshape(-1)).reshape(-1, n_cells, n_comp)
    P = HH.default_params(n_cells * n_comp).reshape(-1, n_cells, n_comp)
    i_ext = np.zeros((n_cells, n_comp))
    i_ext[0, 0] = 400.0  # uA/cm^2: cell 0 fires within 1 ms
    indptr = np.array([0, 2, 2, 2])
    indices, comps, types = np.array([1, 2]), np.array([2, 0]), np.array([0, 1])
    weights = np.array([3.0, 2.0])
    kw = dict(dt=0.05, n_steps=steps, delay_steps=delay, record_every=16, spike_threshold=0.0,
              max_spikes=2)
    ref = cable_network_simulate_reference(
        v0, S, P, i_ext, PARENT, coupling, np.zeros((2, n_cells, n_comp)), indptr, indices,
        weights, np.zeros((delay, 2, n_cells, n_comp)), types, comps, channels=HH,
        tau_syn=(2.0, 5.0), e_syn=(0.0, -80.0), **kw)
    dev = [cuda.to_device(a) for a in (
        v0.copy(), S.copy(), P, i_ext[None], PARENT, coupling, np.zeros((2, n_cells, n_comp)),
        indptr, synapse_targets(indices, comps, n_cells, n_comp), weights, types)]
    V_rec = cuda.device_array((3, n_cells, n_comp))
    counts = cuda.to_device(np.zeros(n_cells, np.int64))
    times = cuda.to_device(np.full((2, n_cells), np.nan))
    INC = cuda.to_device(np.zeros((delay, 2, n_cells * n_comp)))
    syn = cuda.to_device(np.array([[np.exp(-0.05 / 2.0), np.exp(-0.05 / 5.0)], [0.0, -80.0]]))
    cuda_icn.cable_network_simulate_launch(
        *dev, V_rec, counts, times, INC, cuda.to_device(np.zeros((delay, n_cells), np.uint8)),
        syn, cuda.device_array((n_cells, n_comp)), cuda.device_array((n_cells, n_comp)),
        cuda.to_device(np.arange(n_comp)), channels=HH, **kw)
    in_flight = INC.copy_to_host().reshape(delay, 2, n_cells, n_comp)[
        (steps + np.arange(delay)) % delay]
    got = (dev[0].copy_to_host(), dev[1].copy_to_host(), dev[6].copy_to_host(),
           V_rec.copy_to_host(), counts.copy_to_host(), times.copy_to_host(), in_flight)
    # cell 0 fired; its spike reached cell 1's compartment 2 (type 0) and cell 2's soma (type 1)
    assert ref[4][0] >= 1 and ref[2][0, 1, 2] > 0 and ref[2][1, 2, 0] > 0
    assert ref[2][0, 1, :2].max() == 0 and ref[2][1, 2, 1:].max() == 0
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
