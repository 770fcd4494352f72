"""A training step of an HH spiking layer: the compiled kernel against step-by-step PyTorch.

``HHLayer(engine="kernel")`` runs the whole presentation in one ``fusekit.ops.ion_simulate``
call (gradient by its compiled checkpointed adjoint); ``engine="torch"`` is the same layer as a
PyTorch user writes it, one step of tensor operations per time step with autograd keeping
every step (the peer). One training step: forward over 75 steps (15 ms at dt = 0.2 ms) of 64
samples x 48 neurons (the digits example's ``--quick`` size), loss, backward; float32. Both
give the same spikes (tested in ``tests/test_neuro_layers.py``).

    python -m pytest benchmarks/test_bench_layers.py --benchmark-columns=min,median,rounds
"""

import pytest

torch = pytest.importorskip("torch")

from fusekit.neuro import HHLayer  # noqa: E402

T, BATCH, N_IN, N_OUT = 75, 64, 64, 48
GROUP = f"HHLayer training step, {BATCH} samples x {N_OUT} neurons x {T} steps, float32"


@pytest.mark.parametrize("engine", ["kernel", "torch"])
def test_hh_layer_training_step(benchmark, engine):
    g = torch.Generator().manual_seed(0)
    layer = HHLayer(N_IN, N_OUT, dt=0.2, generator=g, engine=engine)
    x = torch.rand(T, BATCH, N_IN, generator=g)

    def step():
        layer.zero_grad()
        spikes = layer(x)
        spikes.sum().backward()
        return spikes

    step()  # compile / load the kernels outside the timing
    benchmark.group = GROUP
    spikes = benchmark.pedantic(step, rounds=5, iterations=1)
    assert float(spikes.detach().sum()) > 0 and float(layer.weight.grad.abs().max()) > 0
    if benchmark.stats is not None:
        benchmark.extra_info["neuron_steps_per_s"] = (
            T * BATCH * N_OUT / benchmark.stats.stats.median)
