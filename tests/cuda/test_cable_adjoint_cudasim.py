"""The generated CUDA cable_adjoint kernel against the float64 oracle, in the CUDA simulator.

The checkpoints come from the CPU forward (``checkpointed_forward`` with ``cable_simulate``),
as the torch backward gets them. The simulator runs every GPU thread as a Python thread, so
the cells and step counts are tiny.
"""

import numpy as np
import pytest
from numba import cuda

from fusekit.backends.cuda import ion_adjoint as cuda_adj
from fusekit.neuro import HH_CHANNELS, ChannelSet, cable_coupling
from fusekit.ops.ion import cable_simulate_op
from fusekit.ops.ion_backprop import cable_adjoint_reference
from fusekit.ops.ion_grad import checkpointed_forward

pytestmark = pytest.mark.cudasim

HH = ChannelSet(HH_CHANNELS)
PARENT = np.array([-1, 0, 1, 1])


def branched_cells(soma_currents=(300.0, 400.0), junction=False):
    """Two 4-compartment HH cells with strong soma currents: ``v0, S0, P, coupling, i_ext``.

    ``junction``: compartment 1, where the two leaves meet, a zero-area junction (``c_m = 0``;
    its conductances and off-steady states then count for nothing).
    """
    n_cells, n_comp = 2, PARENT.shape[0]
    v0 = np.full((n_cells, n_comp), -65.0)
    S0 = HH.steady_states(v0.reshape(-1)).reshape(3, n_cells, n_comp)
    P = HH.default_params(n_cells * n_comp).reshape(-1, n_cells, n_comp)
    coupling = np.broadcast_to(cable_coupling(PARENT, np.full(4, 30.0), np.full(4, 4.0))
                               [:, None], (2, n_cells, n_comp)).copy()
    i_ext = np.zeros((n_cells, n_comp))
    i_ext[:, 0] = soma_currents  # enough to fire within 0.75 ms
    if junction:
        P[0, :, 1] = 0.0
        S0[:, :, 1] = 0.3
    return v0, S0, P, coupling, i_ext


def problem(n_steps, segment, *, per_step, dtype, record_every=5, max_spikes=2, seed=0,
            record_at=None, junction=False):
    """Two branched cells that fire, their checkpoints and random incoming gradients."""
    rng = np.random.default_rng(seed)
    v0, S0, P, coupling, i_ext = branched_cells(junction=junction)
    n_cells, n_comp = v0.shape
    if per_step:
        i_ext = i_ext[None] * np.linspace(0.8, 1.2, n_steps)[:, None, None]
    v0, S0, P, i_ext, coupling = (a.astype(dtype) for a in (v0, S0, P, i_ext, coupling))
    kw = dict(channels=HH.key, dt=0.025, n_steps=n_steps, record_every=record_every,
              spike_threshold=0.0, max_spikes=max_spikes)

    def run(arrays, params, backend):
        return cable_simulate_op.run((*arrays, PARENT, coupling),
                                     {**params, "record_at": record_at}, backend)

    out = checkpointed_forward(run, v0, S0, P, i_ext, **kw, checkpoint_every=segment,
                               backend="cpu")
    assert out[3].sum() >= 2  # both cells fire: spike times carry gradients
    n_rec = n_steps // record_every
    n_cols = n_comp if record_at is None else len(record_at)
    grads = (rng.normal(size=v0.shape), rng.normal(size=S0.shape),
             rng.normal(size=(n_rec, n_cells, n_cols)),
             np.where(np.isnan(out[4]), 0.0, rng.normal(size=(max_spikes, n_cells))))
    arrays = (out[5], out[6], P, i_ext, PARENT, coupling, *(g.astype(dtype) for g in grads))
    return arrays, {**kw, "segment": segment, "record_at": record_at}


def launch(arrays, kw):
    """The kernel on Numba device arrays (no CuPy); the five gradients copied back."""
    CK, CNT, P, i_ext, parent, coupling, g_v, g_S, g_rec, g_t = arrays
    I_ext = i_ext if i_ext.ndim == 3 else i_ext[None]
    outs = [cuda.device_array(a.shape, dtype=a.dtype) for a in (g_v, g_S, P, I_ext, coupling)]
    dev = [cuda.to_device(np.ascontiguousarray(a))
           for a in (CK, CNT, P, I_ext, parent, coupling, g_v, g_S, g_rec, g_t)]
    kw = dict(kw)
    record_at = kw.pop("record_at")
    rec = None if record_at is None else cuda.to_device(np.asarray(record_at, np.int64))
    cuda_adj.cable_adjoint_launch(*dev, *outs, rec, **kw)
    got = [o.copy_to_host() for o in outs]
    got[3] = got[3].reshape(i_ext.shape)
    return got


@pytest.mark.parametrize(("per_step", "record_at", "junction"),
                         [(False, None, False), (True, None, False), (False, [3, 0], False),
                          (False, None, True)])
def test_cable_adjoint_matches_the_reference_in_float64(per_step, record_at, junction):
    arrays, kw = problem(30, 10, per_step=per_step, dtype=np.float64, record_at=record_at,
                         junction=junction)
    got = launch(arrays, kw)
    want = cable_adjoint_reference(*arrays, **kw)
    for name, a, b in zip(("v0", "states0", "params", "i_ext", "coupling"), got, want,
                          strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8 * np.abs(b).max(), err_msg=name)


def test_cable_forward_records_the_compartments_of_record_at():
    from fusekit.backends.cuda import ion as cuda_ion
    from fusekit.ops.ion import cable_simulate_reference

    v, S, P, coupling, i_ext = branched_cells()
    (n_cells, n_comp), steps = v.shape, 20
    kw = dict(dt=0.025, n_steps=steps, record_every=5, spike_threshold=0.0, max_spikes=1)
    ref = cable_simulate_reference(v, S, P, i_ext, PARENT, coupling, channels=HH, **kw,
                                   record_at=[3, 0])
    V, S_d = cuda.to_device(v.copy()), cuda.to_device(S.copy())
    V_rec = cuda.device_array((4, n_cells, 2))
    counts = cuda.to_device(np.zeros(n_cells, np.int64))
    times = cuda.to_device(np.full((1, n_cells), np.nan))
    D, B = cuda.device_array((n_cells, n_comp)), cuda.device_array((n_cells, n_comp))
    cuda_ion.cable_simulate_launch(
        V, S_d, cuda.to_device(P), cuda.to_device(i_ext[None]), cuda.to_device(PARENT),
        cuda.to_device(coupling), V_rec, counts, times, D, B,
        cuda.to_device(np.array([3, 0], np.int64)), channels=HH, **kw)
    np.testing.assert_allclose(V_rec.copy_to_host(), ref[2], rtol=1e-10, atol=1e-10)
