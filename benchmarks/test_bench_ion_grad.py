"""Gradient of an HH population simulation: checkpointed backprop against full-history autograd.

Four ways to get the same numbers for 2,000 HH neurons over 20 ms (800 steps at 0.025 ms),
float64: the forward alone (the compiled kernel, the floor), the gradient of a loss on the
recorded trace and spike times through ``fusekit.ops.ion_simulate`` with checkpoints
(kernel forward in segments, then the compiled adjoint ``fusekit.ops.ion_adjoint``), the same
gradient by forward mode (``fusekit.neuro.simulate(gradient="forward")``: the kernel carries
the tangents of all 7 parameter rows and ``i_ext``, no re-run), and the same gradient from
:func:`fusekit.neuro.simulate_torch` (torch autograd keeping every step).
``extra_info`` holds the peak bytes held by tensors saved for the backward
(``saved_tensor_peak_bytes``), measured with ``torch.autograd.graph.saved_tensors_hooks``.
"""

import weakref

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fusekit  # noqa: E402
from fusekit.neuro import HH_CHANNELS, ChannelSet, simulate, simulate_torch  # noqa: E402

HH = ChannelSet(HH_CHANNELS)
N_NEURONS, DT, N_STEPS, RECORD_EVERY = 2000, 0.025, 800, 4
GROUP = f"HH gradient, {N_NEURONS} neurons x {N_STEPS * DT:.0f} ms, float64"


def make(n=N_NEURONS, n_steps=N_STEPS, grad=True, seed=0):
    rng = np.random.default_rng(seed)
    v0 = np.full(n, -65.0)
    arrays = (v0, HH.steady_states(v0), HH.default_params(n), rng.uniform(0.0, 20.0, n))
    return tuple(torch.tensor(a, requires_grad=grad) for a in arrays)


def loss_of(out):
    return out.v_record.square().mean() + torch.nan_to_num(out.spike_times).sum()


def checkpointed_grad(v0, S, P, i_ext, n_steps=N_STEPS):
    out = fusekit.ops.ion_simulate(v0, S, P, i_ext, channels=HH, dt=DT, n_steps=n_steps,
                                   record_every=RECORD_EVERY, max_spikes=4, backend="cpu")
    return torch.autograd.grad(loss_of(out), (P, i_ext))


def forward_mode_grad(v0, S, P, i_ext, n_steps=N_STEPS):
    out = simulate(HH, P, i_ext, duration=n_steps * DT, dt=DT, v0=v0.detach(),
                   states0=S.detach(), record_every=RECORD_EVERY, max_spikes=4,
                   gradient="forward", backend="cpu")
    return torch.autograd.grad(loss_of(out), (P, i_ext))


def full_history_grad(v0, S, P, i_ext, n_steps=N_STEPS):
    out = simulate_torch(HH, v0, S, P, i_ext, dt=DT, n_steps=n_steps,
                         record_every=RECORD_EVERY, max_spikes=4)
    return torch.autograd.grad(loss_of(out), (P, i_ext))


class SavedTensorPeak:
    """Peak of the bytes held by live tensors saved for backward (forward and backward)."""

    def __init__(self):
        self.live = self.peak = 0
        self._seen = {}

    def pack(self, t):
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in self._seen and t.device.type == "cpu":
            size = t.untyped_storage().nbytes()
            self._seen[key] = size
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(t.untyped_storage(), self._release, key)
        return t

    def _release(self, key):
        self.live -= self._seen.pop(key, 0)

    def __call__(self, fn, *args):
        with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t):
            return fn(*args)


def test_checkpointed_gradient_equals_full_history_on_a_slice():
    x = make(n=40, n_steps=N_STEPS)
    want = full_history_grad(*x)
    for got in (checkpointed_grad(*x), forward_mode_grad(*x)):
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8 * float(b.abs().max()))


def test_forward_only_kernel(benchmark):
    v0, S, P, i_ext = (a.detach().numpy() for a in make(grad=False))
    benchmark.group = GROUP
    run = lambda: fusekit.ops.ion_simulate(v0, S, P, i_ext, channels=HH, dt=DT,  # noqa: E731
                                           n_steps=N_STEPS, record_every=RECORD_EVERY,
                                           max_spikes=4, backend="cpu")
    run()  # compile outside the timing
    out = benchmark.pedantic(run, rounds=3, iterations=1)
    assert out.spike_count.max() > 0


@pytest.mark.parametrize("name", ["checkpointed", "forward_mode", "full_history"])
def test_gradient(benchmark, name):
    fn = {"checkpointed": checkpointed_grad, "forward_mode": forward_mode_grad,
          "full_history": full_history_grad}[name]
    x = make()
    if name == "forward_mode":
        fn(*make(n=4, n_steps=4))  # compile outside the timing
    benchmark.group = GROUP
    peak = SavedTensorPeak()
    grads = benchmark.pedantic(lambda: peak(fn, *x), rounds=1, iterations=1)
    benchmark.extra_info["saved_tensor_peak_bytes"] = peak.peak
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert float(grads[0][1].abs().max()) > 0  # d loss / d g_na
