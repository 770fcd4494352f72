"""kron_linear against what a user would run instead, on LLaMA-like 4096x4096 layers.

Peers, side by side per group, on the same inputs:
* ``dense_kron``: ``x @ torch.kron(A, B).T`` forming the Kronecker product on every call
  (what an adapter that never merges pays, as peft's LoKr does);
* ``dense_merged``: ``x @ W.T`` with the 4096x4096 weight formed once beforehand (a merged
  adapter: the memory-bandwidth-bound dense GEMV/GEMM);
* ``peft_lokr``: peft's LoKr adapter path (``get_delta_weight`` + ``F.linear``) at equal shapes.
"""

import functools

import numpy as np
import pytest
import torch

import fusekit
import fusekit.torch  # noqa: F401
from fusekit.ops.kron import kron_linear_reference

SIDE, FACTOR = 4096, 64
TOKENS = [1, 16, 256]
RANKS = [1, 4]


def make(r, tokens, seed=0):
    rng = np.random.default_rng(seed)
    A = (rng.standard_normal((r, FACTOR, FACTOR)) / FACTOR).astype(np.float32)
    B = (rng.standard_normal((r, FACTOR, FACTOR)) / FACTOR).astype(np.float32)
    x = rng.standard_normal((tokens, SIDE)).astype(np.float32)
    return x, A, B


def check(y, x, A, B):
    expected = kron_linear_reference(*(a.astype(np.float64) for a in (x, A, B)))
    np.testing.assert_allclose(np.asarray(y, dtype=np.float64), expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("r", RANKS)
def test_fusekit_kron_linear_numpy(benchmark, r, tokens):
    x, A, B = make(r, tokens)
    benchmark.group = f"kron {SIDE}x{SIDE} r={r} tokens={tokens}"
    y = benchmark(fusekit.ops.kron_linear, x, A, B, backend="cpu")
    check(y, x, A, B)


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("r", RANKS)
def test_fusekit_kron_linear_torch(benchmark, r, tokens):
    x, A, B = map(torch.from_numpy, make(r, tokens))
    benchmark.group = f"kron {SIDE}x{SIDE} r={r} tokens={tokens}"
    with torch.no_grad():
        y = benchmark(fusekit.ops.kron_linear, x, A, B)
    check(y.numpy(), *(t.numpy() for t in (x, A, B)))


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("r", RANKS)
def test_dense_kron(benchmark, r, tokens):
    x, A, B = map(torch.from_numpy, make(r, tokens))
    benchmark.group = f"kron {SIDE}x{SIDE} r={r} tokens={tokens}"

    def dense_kron():
        W = torch.kron(A[0], B[0])
        for k in range(1, r):
            W += torch.kron(A[k], B[k])
        return x @ W.T

    with torch.no_grad():
        y = benchmark(dense_kron)
    check(y.numpy(), *(t.numpy() for t in (x, A, B)))


@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("r", RANKS)
def test_dense_merged(benchmark, r, tokens):
    x, A, B = map(torch.from_numpy, make(r, tokens))
    benchmark.group = f"kron {SIDE}x{SIDE} r={r} tokens={tokens}"
    W = sum(torch.kron(A[k], B[k]) for k in range(r))
    with torch.no_grad():
        y = benchmark(lambda: x @ W.T)
    check(y.numpy(), *(t.numpy() for t in (x, A, B)))


# ----------------------------------------------------------------------------- peft LoKr


@functools.cache
def lokr_layer():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("proj", torch.nn.Linear(SIDE, SIDE, bias=False))
    # r >= 32 keeps w2 a full 64x64 factor: one Kronecker product of two 64x64 matrices.
    config = peft.LoKrConfig(r=32, alpha=32, target_modules=["proj"], decompose_factor=FACTOR,
                             init_weights=False)
    layer = peft.get_peft_model(model, config).base_model.model.proj
    layer.eval()
    w1 = layer.lokr_w1["default"].detach()
    w2 = layer.lokr_w2["default"].detach()
    scale = layer.scaling["default"]
    assert w1.shape == (FACTOR, FACTOR) and w2.shape == (FACTOR, FACTOR)
    return layer, (w1 * scale)[None].contiguous(), w2[None].contiguous()


@pytest.mark.parametrize("tokens", TOKENS)
def test_peft_lokr_delta(benchmark, tokens):
    layer, A, B = lokr_layer()
    x = torch.from_numpy(make(1, tokens)[0])
    benchmark.group = f"lokr adapter {SIDE}x{SIDE} tokens={tokens}"
    with torch.no_grad():
        y = benchmark(layer._get_delta_activations, "default", x)
    check(y.numpy(), x.numpy(), A.numpy(), B.numpy())


@pytest.mark.parametrize("tokens", TOKENS)
def test_fusekit_lokr_delta(benchmark, tokens):
    _, A, B = lokr_layer()
    x = torch.from_numpy(make(1, tokens)[0])
    benchmark.group = f"lokr adapter {SIDE}x{SIDE} tokens={tokens}"
    with torch.no_grad():
        y = benchmark(fusekit.ops.kron_linear, x, A, B)
    check(y.numpy(), x.numpy(), A.numpy(), B.numpy())


@pytest.mark.parametrize("tokens", [16])
def test_peft_lokr_train_step(benchmark, tokens):
    """Forward and backward of the adapter path, as in fine-tuning."""
    layer, _, _ = lokr_layer()
    x = torch.from_numpy(make(1, tokens)[0])
    benchmark.group = f"lokr adapter fwd+bwd {SIDE}x{SIDE} tokens={tokens}"
    w1, w2 = layer.lokr_w1["default"], layer.lokr_w2["default"]

    def step():
        w1.grad = w2.grad = None
        layer._get_delta_activations("default", x).square().sum().backward()

    benchmark(step)


@pytest.mark.parametrize("tokens", [16])
def test_fusekit_lokr_train_step(benchmark, tokens):
    _, A, B = lokr_layer()
    A = A.clone().requires_grad_(True)
    B = B.clone().requires_grad_(True)
    x = torch.from_numpy(make(1, tokens)[0])
    benchmark.group = f"lokr adapter fwd+bwd {SIDE}x{SIDE} tokens={tokens}"

    def step():
        A.grad = B.grad = None
        fusekit.ops.kron_linear(x, A, B).square().sum().backward()

    benchmark(step)
