"""Fine-tune all-MiniLM-L6-v2 on tweet sentiment with SoKA, LoRA, PiSSA and LoKr, offline.

Every method adapts the same 36 linears (query, key, value, attention output, intermediate and
output of the 6 layers) and trains a new 3-class head on mean-pooled token states. All runs of a
seed see the same batches in the same order and the same head initialisation.

    python examples/sentiment_finetune/finetune.py --quick          # a minute: does it run
    python examples/sentiment_finetune/finetune.py --out results/   # the comparison

Writes ``runs.jsonl`` (one line per run, with its loss and gradient-norm curves), ``table.md``
and ``curves.png`` (when matplotlib is installed) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402
import report  # noqa: E402

#: The encoder's linears, as a regex over module names (peft and fusekit.peft both full-match).
TARGETS = (r".*\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
           r"|intermediate\.dense|output\.dense)")


class SentimentModel(nn.Module):
    """Encoder, masked mean pooling (as sentence-transformers does for MiniLM), linear head."""

    def __init__(self, encoder: nn.Module, n_classes: int, seed: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(encoder.config.hidden_size, n_classes)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.classifier.weight.normal_(0.0, 0.02, generator=gen)
            self.classifier.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits ``(batch, n_classes)``."""
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.classifier(self.dropout(pooled))


@dataclass
class Method:
    """One way to fine-tune: a name, how to wrap the model, and its learning rates to sweep."""

    name: str
    kind: str  # "soka", "lora", "pissa", "lokr", "full"
    options: dict
    lrs: tuple[float, ...] | str  # rates to sweep, or the key of the method whose rate to take


def methods(lora_r: int = 8, soka_r: int = 6) -> dict[str, Method]:
    """The compared methods at the parameter budget of LoRA rank ``lora_r``.

    SoKA with ``inner_dim=f`` has ``out + in`` parameters per term, as one LoRA rank, so
    ``soka_r = 6`` is 0.75x LoRA rank 8. LoKr's rank is set so it stays within LoRA's budget.
    """
    # Swept: LoRA and SoKA. PiSSA takes SoKA's rate (both train the principal part of the
    # weight, with scale 1) and LoKr LoRA's (both start from a zero update).
    return {
        "lora": Method("LoRA", "lora", {"r": lora_r, "lora_alpha": 2 * lora_r}, (3e-4, 1e-3, 3e-3)),
        "pissa": Method("PiSSA", "pissa", {"r": lora_r, "lora_alpha": lora_r}, "soka"),
        "lokr": Method("LoKr", "lokr", {"r": 16, "alpha": 16}, "lora"),
        "soka": Method(f"SoKA f=8, r={soka_r}", "soka",
                       {"r": soka_r, "inner_dim": 8, "init": "kpsvd"}, (3e-4, 1e-3, 3e-3)),
        # Variants at SoKA's chosen learning rate (no sweep of their own): factor shapes, init.
        "soka_sq": Method(f"SoKA f=24 (near-square), r={soka_r}", "soka",
                          {"r": soka_r, "inner_dim": 24, "init": "kpsvd"}, "soka"),
        "soka_f4": Method(f"SoKA f=4, r={soka_r}", "soka",
                          {"r": soka_r, "inner_dim": 4, "init": "kpsvd"}, "soka"),
        "soka_f1": Method(f"SoKA f=1 (= SVD), r={soka_r}", "soka",
                          {"r": soka_r, "inner_dim": 1, "init": "kpsvd"}, "soka"),
        "soka_grad": Method(f"SoKA f=8, r={soka_r}, gradient init", "soka",
                            {"r": soka_r, "inner_dim": 8, "init": "gradient"}, "soka"),
        "full": Method("full fine-tuning", "full", {}, (3e-5, 1e-4)),
    }


def encode(tokenizer, tweets: data.Tweets, max_len: int) -> tuple[torch.Tensor, ...]:  # noqa: ANN001
    """Token ids, attention masks and labels as tensors, padded to ``max_len``."""
    enc = tokenizer(tweets.texts, padding="max_length", truncation=True, max_length=max_len,
                    return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"], torch.from_numpy(tweets.labels)


def batch_at(tensors: tuple[torch.Tensor, ...], index: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rows ``index``, trimmed to the longest sequence among them."""
    ids, mask, labels = (t[index] for t in tensors)
    length = int(mask.sum(1).max())
    return ids[:, :length], mask[:, :length], labels


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on ``batch`` (ids, mask, labels)."""
    ids, mask, labels = batch
    return nn.functional.cross_entropy(model(ids, mask), labels)


def wrap(method: Method, model: nn.Module, init_batches: list) -> nn.Module:
    """The model with ``method``'s adapters; only adapters and the head train."""
    if method.kind == "full":
        return model
    if method.kind == "soka":
        import fusekit.peft as fp

        config = fp.SoKAConfig(target_modules=TARGETS, modules_to_save=["classifier"],
                               seed=0, **method.options)
        return fp.get_soka_model(model, config, init_batches=init_batches, loss_fn=loss_of)
    import peft

    if method.kind in ("lora", "pissa"):
        config = peft.LoraConfig(target_modules=TARGETS, modules_to_save=["classifier"],
                                 lora_dropout=0.0,
                                 init_lora_weights="pissa" if method.kind == "pissa" else True,
                                 **method.options)
    else:
        config = peft.LoKrConfig(target_modules=TARGETS, modules_to_save=["classifier"],
                                 **method.options)
    return peft.get_peft_model(model, config)


def adapter_parameters(model: nn.Module) -> int:
    """Trainable parameters outside the classification head."""
    return sum(p.numel() for n, p in model.named_parameters()
               if p.requires_grad and "classifier" not in n)


@torch.no_grad()
def evaluate(model: nn.Module, tensors: tuple[torch.Tensor, ...], batch: int = 256
             ) -> dict[str, float]:
    """Accuracy, macro-F1 and mean cross-entropy on ``tensors``."""
    model.eval()
    preds, losses = [], []
    n = len(tensors[2])
    for start in range(0, n, batch):
        b = batch_at(tensors, torch.arange(start, min(start + batch, n)))
        logits = model(b[0], b[1])
        losses.append(float(nn.functional.cross_entropy(logits, b[2], reduction="sum")))
        preds.append(logits.argmax(1))
    model.train()
    pred, gold = torch.cat(preds).numpy(), tensors[2].numpy()
    return {"accuracy": float((pred == gold).mean()), "macro_f1": macro_f1(gold, pred, 3),
            "loss": sum(losses) / n}


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of the per-class F1 scores (a class never seen nor predicted scores 0)."""
    scores = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (gold == c))
        fp_, fn = np.sum((pred == c) & (gold != c)), np.sum((pred != c) & (gold == c))
        scores.append(2 * tp / (2 * tp + fp_ + fn) if tp else 0.0)
    return float(np.mean(scores))


def run(method: Method, lr: float, seed: int, steps: int, batch: int, train, val, test,  # noqa: ANN001
        encoder_state: dict, make_encoder, eval_every: int) -> dict:  # noqa: ANN001
    """Train one (method, learning rate, seed); return its figures and curves."""
    torch.manual_seed(seed)
    encoder = make_encoder()
    encoder.load_state_dict(encoder_state)
    model = SentimentModel(encoder, 3, seed)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(train[2]))[:steps * batch]
                             .reshape(steps, batch))
    init_batches = [batch_at(train, order[i]) for i in range(min(4, steps))]
    t0 = time.perf_counter()
    model = wrap(method, model, init_batches)
    init_s = time.perf_counter() - t0
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup))))
    model.train()
    losses, grad_norms, curve = [], [], []
    step_s = 0.0
    for step in range(steps):
        b = batch_at(train, order[step])
        t = time.perf_counter()
        loss = loss_of(model, b)
        loss.backward()
        norm = float(nn.utils.clip_grad_norm_(trainable, 1.0))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step_s += time.perf_counter() - t
        losses.append(loss.item())
        grad_norms.append(norm)
        if not math.isfinite(losses[-1]):
            break
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            curve.append({"step": step + 1, **evaluate(model, val)})
    result = {"method": method.name, "key": method.kind, "options": method.options, "lr": lr,
              "seed": seed, "steps": steps, "batch": batch,
              "adapter_params": adapter_parameters(model), "init_s": init_s,
              "step_s": step_s / max(1, len(losses)), "losses": losses,
              "grad_norms": grad_norms, "val_curve": curve, "val": curve[-1] if curve else None,
              "test": evaluate(model, test)}
    return result


def main(argv: list[str] | None = None) -> None:
    """Run the sweep and the seeds of every method asked for, then write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods",
                        default="lora,soka,pissa,lokr,soka_grad,soka_sq,soka_f1,full")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sweep-seed", type=int, default=0,
                        help="the seed on which each method's learning rate is chosen")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=48)
    parser.add_argument("--n-val", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny run: 2 methods, 20 steps")
    parser.add_argument("--out", default="sentiment_results")
    parser.add_argument("--report-only", action="store_true",
                        help="write table.md and curves.png from the runs in --out, train nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.methods, args.seeds, args.steps, args.eval_every = "lora,soka", "0", 20, 10
        args.n_val, args.n_test = 200, 200
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = methods()
    chosen = [table[k] for k in args.methods.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    if args.report_only:
        runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
        report.write(out, runs, [m.name for m in table.values()], seeds)
        return
    tokenizer, encoder = data.load_minilm()
    encoder_state = {k: v.clone() for k, v in encoder.state_dict().items()}
    config = encoder.config

    def make_encoder() -> nn.Module:
        from transformers import AutoModel

        return AutoModel.from_config(config, add_pooling_layer=False)

    train_t, val_t, test_t = data.split(data.load_tweets(), args.n_val, args.n_test, seed=1234)
    train_t = train_t.subset(np.arange(min(len(train_t.texts), args.steps * args.batch * 2)))
    train, val, test = (encode(tokenizer, t, args.max_len) for t in (train_t, val_t, test_t))
    print(f"train pool {len(train[2])}, val {len(val[2])}, test {len(test[2])} tweets; "
          f"{args.steps} steps of {args.batch}", flush=True)

    runs_path = out / "runs.jsonl"
    done: dict[tuple, dict] = {}

    def reload() -> None:
        """Runs already written (by this or another process on the same --out): skipped."""
        if runs_path.exists():
            for line in runs_path.read_text().splitlines():
                r = json.loads(line)
                done[(r["key"], json.dumps(r["options"], sort_keys=True), r["lr"], r["seed"],
                      r["steps"])] = r

    def run_cached(method: Method, lr: float, seed: int) -> dict:
        key = (method.kind, json.dumps(method.options, sort_keys=True), lr, seed, args.steps)
        reload()
        if key not in done:
            r = run(method, lr, seed, args.steps, args.batch, train, val, test, encoder_state,
                    make_encoder, args.eval_every)
            with open(runs_path, "a") as f:
                f.write(json.dumps(r) + "\n")
            done[key] = r
            print(f"{method.name:38s} lr {lr:7.0e} seed {seed}: test acc "
                  f"{r['test']['accuracy']:.3f} F1 {r['test']['macro_f1']:.3f}, "
                  f"{r['adapter_params']:,} params, {1000 * r['step_s']:.0f} ms/step, "
                  f"init {r['init_s']:.2f} s", flush=True)
        return done[key]

    def best_lr(method: Method) -> float:
        """The swept rate with the best validation accuracy on the sweep seed."""
        if isinstance(method.lrs, str):
            return best_lr(table[method.lrs])
        sweep = [run_cached(method, lr, args.sweep_seed) for lr in method.lrs]
        return max(sweep, key=lambda r: r["val"]["accuracy"] if r["val"] else -1)["lr"]

    for method in chosen:  # several processes may share one --out, each with its methods
        lr = best_lr(method)
        for seed in seeds:
            run_cached(method, lr, seed)
    reload()
    report.write(out, [done[k] for k in done], [m.name for m in table.values()], seeds)


if __name__ == "__main__":
    main()
