"""Forward+backward of an adapted 4096x4096 linear (base plus adapter), 16 tokens, float32.

Equal trainable parameters: SoKA rank r with ``inner_dim=f`` (A: 4096/f x f, B: f x 4096/f;
the default f=8) and LoRA rank r both train r * (4096 + 4096) parameters; a SoKA term costs f
times a LoRA rank's multiply-adds per token (f=1 is LoRA; "square", 64x64 kron 64x64, is
LoKr's shape, f=64 in effect). LoKr (peft) with decompose_factor=64 and r=32 has one
full 64x64 kron 64x64 term (also 8,192).
"""

import functools

import pytest
import torch

import fusekit.peft as fp

SIDE, TOKENS, RANK = 4096, 16, 8


def base_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("proj", torch.nn.Linear(SIDE, SIDE))
    return model


@functools.cache
def adapted(kind):
    if kind == "soka":
        return fp.get_soka_model(base_model(), fp.SoKAConfig(r=RANK, target_modules=["proj"]))
    if kind.startswith("soka_"):
        f = kind[len("soka_"):]
        config = fp.SoKAConfig(r=RANK, target_modules=["proj"],
                               inner_dim=f if f == "square" else int(f[1:]))
        return fp.get_soka_model(base_model(), config)
    peft = pytest.importorskip("peft")
    if kind == "lora":
        config = peft.LoraConfig(r=RANK, target_modules=["proj"])
    else:
        config = peft.LoKrConfig(r=32, target_modules=["proj"], decompose_factor=64,
                                 init_weights=False)
    return peft.get_peft_model(base_model(), config)


@pytest.mark.parametrize("tokens", [TOKENS, 512])
@pytest.mark.parametrize("kind", ["soka", "soka_f1", "soka_f4", "soka_f16", "soka_square", "lora",
                                  "lokr"])
def test_adapted_linear_fwd_bwd(benchmark, kind, tokens):
    if kind == "lokr" and tokens > TOKENS:
        pytest.skip("LoKr's cost is forming the delta weight, whatever the tokens")
    model = adapted(kind)
    x = torch.randn(tokens, SIDE, requires_grad=True)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step():
        for p in trainable:
            p.grad = None
        x.grad = None
        model(x).square().sum().backward()

    benchmark.group = f"adapted {SIDE}x{SIDE} linear fwd+bwd, {tokens} tokens"
    benchmark.name = f"test_{'fusekit_' if kind.startswith('soka') else ''}{kind}"
    benchmark.extra_info["trainable"] = sum(p.numel() for p in trainable)
    benchmark(step)
