"""The CUDA kernels of one network step (membranes, synapses) against the references.

Numba's CUDA simulator runs every thread as a Python thread: a handful of neurons, spanning a
partial block.
"""

import numpy as np
import pytest

from fusekit import InputError
from fusekit.backends.cuda import ion_membrane as cuda_mem
from fusekit.neuro import HH_CHANNELS, ChannelSet
from fusekit.ops import ion_membrane as mem

pytestmark = pytest.mark.cudasim

HH = ChannelSet(HH_CHANNELS)


def inputs(n, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.uniform(-80.0, 30.0, n)
    v[0] = -40.0  # alpha_m's removable singularity
    S = HH.steady_states(rng.uniform(-75.0, -50.0, n))
    P = HH.default_params(n)
    P[1] *= rng.uniform(0.5, 1.5, n)
    i_inj, g, ge = rng.normal(0.0, 5.0, n), rng.uniform(0.0, 0.3, n), rng.normal(0.0, 2.0, n)
    return [a.astype(dtype) for a in (v, S, P, i_inj, g, ge)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_step_and_its_vjp_match_the_reference(dtype):
    n = 5
    v, S, P, i_inj, g, ge = inputs(n, dtype)
    VO, SO = np.empty(n, dtype), np.empty(S.shape, dtype)
    cuda_mem.membrane_step_launch(v, S, P, i_inj, g, ge, VO, SO, channels=HH, dt=0.025)
    ref_v, ref_s = mem.membrane_step_reference(v, S, P, i_inj, g, ge, channels=HH, dt=0.025)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(VO, ref_v, rtol=tol, atol=tol)
    np.testing.assert_allclose(SO, ref_s, rtol=tol, atol=tol)
    rng = np.random.default_rng(1)
    a_v, a_s = rng.normal(size=n).astype(dtype), rng.normal(size=S.shape).astype(dtype)
    out = np.zeros((4 + S.shape[0] + P.shape[0], n), dtype)
    cuda_mem.membrane_step_vjp_launch(v, S, P, i_inj, g, ge, a_v, a_s, out, channels=HH,
                                      dt=0.025)
    ref = mem.membrane_step_vjp_reference(v, S, P, i_inj, g, ge, a_v, a_s, channels=HH,
                                          dt=0.025)
    k = 1 + S.shape[0] + P.shape[0]
    got = (out[0], out[1:1 + S.shape[0]], out[1 + S.shape[0]:k], out[k], out[k + 1], out[k + 2])
    for a, b in zip(got, ref, strict=True):
        scale = float(np.abs(b).max())
        np.testing.assert_allclose(a, b, rtol=tol * 100, atol=tol * 100 * scale)


def test_delivery_and_its_vjp_match_the_reference():
    rng = np.random.default_rng(2)
    indptr = np.array([0, 3, 3, 5, 8, 9])
    target = rng.integers(0, 7, 9)
    target[:2] = 4  # two synapses of one row onto one target: the atomic adds
    weights = rng.uniform(0.1, 1.0, 9)
    spikes = np.array([1.0, 0.0, 0.5, 0.0, 1.0])
    out = np.zeros(7)
    cuda_mem.synapse_deliver_launch(spikes, indptr, weights, target, out)
    ref = mem.synapse_deliver_reference(spikes, indptr, weights, target, n_out=7)
    np.testing.assert_allclose(out, ref, rtol=1e-15, atol=1e-15)
    a_out = rng.normal(size=7)
    a_spikes, a_weights = np.empty(5), np.empty(9)
    cuda_mem.synapse_deliver_vjp_launch(spikes, indptr, weights, target, a_out, a_spikes,
                                        a_weights)
    ref = mem.synapse_deliver_vjp_reference(spikes, indptr, weights, target, a_out, n_out=7)
    np.testing.assert_allclose(a_spikes, ref[0], rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(a_weights, ref[1], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("bad", ["indptr", "target"])
def test_a_bad_csr_raises_what_the_cpu_raises_and_reads_nothing_out_of_bounds(bad):
    indptr, target = np.array([0, 2, 3]), np.array([0, 1, 2])
    if bad == "indptr":
        indptr = np.array([0, 4, 3])
        match = "indptr must start at 0, never decrease"
    else:
        target = np.array([0, 1, 9])
        match = r"target .* must lie in \[0, 3\)"
    spikes, weights = np.array([1.0, 1.0]), np.ones(3)
    with pytest.raises(InputError, match="synapse_deliver: " + match):
        cuda_mem.synapse_deliver_launch(spikes, indptr, weights, target, np.zeros(3))
    with pytest.raises(InputError, match="synapse_deliver_vjp: " + match):
        cuda_mem.synapse_deliver_vjp_launch(spikes, indptr, weights, target, np.ones(3),
                                            np.empty(2), np.empty(3))
