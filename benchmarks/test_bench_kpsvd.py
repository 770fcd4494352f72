"""Initialising an adapter from the pretrained weight: KPSVD (SoKA) against PiSSA's SVD.

At equal trainable parameters: rank r of 64x64 kron 64x64 factors on a 4096x4096 weight has
2 * 4096 * r parameters, as LoRA/PiSSA rank r. PiSSA initialises from the SVD of W: the full
``torch.linalg.svd`` or, with ``init_lora_weights="pissa_niter_n"``, ``torch.svd_lowrank``.
"""

import os

import numpy as np
import pytest
import torch

import fusekit

RANK = 16


@pytest.fixture(scope="module")
def weights():
    rng = np.random.default_rng(0)
    return {side: (rng.standard_normal((side, side)) / np.sqrt(side)).astype(np.float32)
            for side in (1024, 4096)}


def factor_side(side):
    return int(np.sqrt(side))


@pytest.mark.parametrize("side", [1024, 4096])
def test_fusekit_kpsvd_randomized(benchmark, weights, side):
    w = weights[side]
    f = factor_side(side)
    benchmark.group = f"adapter init {side}x{side}, rank {RANK}"
    A, B, s = benchmark(fusekit.ops.kpsvd, w, (f, f), (f, f), RANK, "randomized")
    exact = fusekit.ops.kpsvd(w, (f, f), (f, f), RANK, "exact") if side <= 1024 else None
    if exact is not None:  # randomized error within 1% of the optimal one
        def err(a, b):
            return np.linalg.norm(sum(np.kron(a[k], b[k]) for k in range(RANK)) - w)

        assert err(A, B) <= 1.01 * err(*exact[:2])


@pytest.mark.parametrize("side", [1024])
def test_fusekit_kpsvd_exact(benchmark, weights, side):
    w = weights[side]
    f = factor_side(side)
    benchmark.group = f"adapter init {side}x{side}, rank {RANK}"
    benchmark.pedantic(fusekit.ops.kpsvd, args=(w, (f, f), (f, f), RANK, "exact"), rounds=3)


@pytest.mark.parametrize("side", [1024, 4096])
def test_pissa_svd_lowrank(benchmark, weights, side):
    w = torch.from_numpy(weights[side])
    benchmark.group = f"adapter init {side}x{side}, rank {RANK}"
    benchmark(torch.svd_lowrank, w, q=RANK, niter=4)


@pytest.mark.parametrize("side", [1024])
def test_pissa_full_svd(benchmark, weights, side):
    w = torch.from_numpy(weights[side])
    benchmark.group = f"adapter init {side}x{side}, rank {RANK}"
    benchmark.pedantic(torch.linalg.svd, args=(w,), kwargs={"full_matrices": False}, rounds=3)


#: One LLaMA-7B decoder layer: q, k, v, o (4096x4096), gate and up (11008x4096), down.
LLAMA_7B_LAYER = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]


@pytest.fixture(scope="module")
def llama_layer():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(shape, generator=gen) / shape[1] ** 0.5 for shape in LLAMA_7B_LAYER]


def test_fusekit_kpsvd_llama7b_layer(benchmark, llama_layer):
    benchmark.group = f"adapter init, one LLaMA-7B decoder layer (7 weights), rank {RANK}"
    benchmark.extra_info["layers_in_model"] = 32

    def init_all():
        return [fusekit.ops.kpsvd(w, *fusekit.ops.kron_factor_shapes(tuple(w.shape)), RANK,
                                  "randomized") for w in llama_layer]

    benchmark.pedantic(init_all, rounds=3, iterations=1)


def test_pissa_svd_lowrank_llama7b_layer(benchmark, llama_layer):
    benchmark.group = f"adapter init, one LLaMA-7B decoder layer (7 weights), rank {RANK}"
    benchmark.extra_info["layers_in_model"] = 32

    def init_all():
        return [torch.svd_lowrank(w, q=RANK, niter=4) for w in llama_layer]

    benchmark.pedantic(init_all, rounds=3, iterations=1)


@pytest.mark.skipif(os.environ.get("FUSEKIT_BENCH_FULL_SVD", "") in ("", "0"),
                    reason="minutes per round: set FUSEKIT_BENCH_FULL_SVD=1")
def test_pissa_full_svd_llama7b_layer(benchmark, llama_layer):
    """PiSSA's default initialisation (``init_lora_weights="pissa"``): full SVDs, one round."""
    benchmark.group = f"adapter init, one LLaMA-7B decoder layer (7 weights), rank {RANK}"
    benchmark.extra_info["layers_in_model"] = 32

    def init_all():
        return [torch.linalg.svd(w, full_matrices=False) for w in llama_layer]

    benchmark.pedantic(init_all, rounds=1, iterations=1)
