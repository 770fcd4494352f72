"""Table and plot of the fine-tuning runs written by ``finetune.py``."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np


def _key(r: dict) -> str:
    return r["method"]


def chosen_runs(runs: list[dict], sweep_seed: int = 0) -> dict[str, list[dict]]:
    """Per method, the runs at its chosen learning rate, one per seed.

    The rule of ``finetune.py``: the rate with the best validation accuracy on ``sweep_seed``.
    """
    unique = {(_key(r), r["lr"], r["seed"]): r for r in runs}  # a run repeated: the last one
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in unique.values():
        by_method[_key(r)].append(r)
    chosen = {}
    for name, rs in by_method.items():
        sweep = [r for r in rs if r["seed"] == sweep_seed and r["val"]]
        if not sweep:
            continue
        lr = max(sweep, key=lambda r: r["val"]["accuracy"])["lr"]
        chosen[name] = sorted((r for r in rs if r["lr"] == lr), key=lambda r: r["seed"])
    return chosen


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


def grad_norm_cv(r: dict) -> float:
    """Coefficient of variation (std / mean) of the pre-clipping gradient norm after warmup."""
    g = np.asarray(r["grad_norms"][max(1, r["steps"] // 10):], dtype=float)
    return float(g.std() / g.mean()) if len(g) > 1 and g.mean() > 0 else float("nan")


def early_loss(r: dict, steps: int = 100) -> float:
    """Mean training loss over the first ``steps`` steps (lower: faster start)."""
    return float(np.mean(r["losses"][:steps]))


def val_at(r: dict, step: int) -> float:
    """Validation accuracy at the evaluation nearest ``step``."""
    curve = r["val_curve"]
    return min(curve, key=lambda c: abs(c["step"] - step))["accuracy"] if curve else float("nan")


def rows(chosen: dict[str, list[dict]], order: list[str]) -> list[dict]:
    """One summary per method, in ``order`` (methods without runs are left out)."""
    lora = chosen.get("LoRA")
    lora_params = lora[0]["adapter_params"] if lora else None
    out = []
    for name in order:
        rs = chosen.get(name)
        if not rs:
            continue
        acc, f1 = (_mean_std([r["test"][k] for r in rs]) for k in ("accuracy", "macro_f1"))
        out.append({
            "method": name, "lr": rs[0]["lr"], "seeds": len(rs),
            "params": rs[0]["adapter_params"],
            "params_x_lora": rs[0]["adapter_params"] / lora_params if lora_params else None,
            "acc": acc, "f1": f1,
            "val_early": _mean_std([val_at(r, 100) for r in rs]),
            "early_loss": _mean_std([early_loss(r) for r in rs]),
            "grad_cv": _mean_std([grad_norm_cv(r) for r in rs]),
            "step_ms": 1000 * float(np.median([r["step_s"] for r in rs])),
            "init_s": float(np.median([r["init_s"] for r in rs])),
        })
    return out


def _pm(ms: tuple[float, float], digits: int = 3, scale: float = 1.0) -> str:
    m, s = ms
    if math.isnan(s):
        return f"{scale * m:.{digits}f}"
    return f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def markdown(summary: list[dict], steps: int, batch: int) -> str:
    """The comparison table in Markdown (± is the standard deviation over seeds)."""
    lines = [
        f"{steps} steps of {batch} tweets; ± is the standard deviation over seeds; learning "
        "rate chosen per method by validation accuracy on seed 0.",
        "",
        "| method | adapter params | x LoRA | lr | seeds | test accuracy | test macro-F1 | "
        "val acc @100 steps | mean loss, first 100 steps | grad-norm CV | ms/step | init |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        ratio = f"{s['params_x_lora']:.2f}" if s["params_x_lora"] else "-"
        lines.append(
            f"| {s['method']} | {s['params']:,} | {ratio} | {s['lr']:.0e} | {s['seeds']} | "
            f"{_pm(s['acc'])} | {_pm(s['f1'])} | {_pm(s['val_early'])} | "
            f"{_pm(s['early_loss'])} | {_pm(s['grad_cv'], 2)} | {s['step_ms']:.0f} | "
            f"{s['init_s']:.2f} s |")
    return "\n".join(lines) + "\n"


def plot(chosen: dict[str, list[dict]], order: list[str], path: Path) -> bool:
    """Loss, validation accuracy and gradient-norm curves (mean over seeds).

    Returns False (and draws nothing) without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for name in order:
        rs = chosen.get(name)
        if not rs:
            continue
        n = min(len(r["losses"]) for r in rs)
        window = max(1, n // 30)
        kernel = np.ones(window) / window
        loss = np.mean([np.convolve(r["losses"][:n], kernel, "valid") for r in rs], axis=0)
        axes[0].plot(np.arange(len(loss)) + window, loss, label=name)
        steps = [c["step"] for c in rs[0]["val_curve"]]
        acc = np.mean([[c["accuracy"] for c in r["val_curve"]] for r in rs], axis=0)
        axes[1].plot(steps, acc, marker="o", label=name)
        g = np.mean([np.convolve(r["grad_norms"][:n], kernel, "valid") for r in rs], axis=0)
        axes[2].plot(np.arange(len(g)) + window, g, label=name)
    axes[0].set(title="training loss (moving mean, mean of seeds)", xlabel="step")
    axes[1].set(title="validation accuracy (mean of seeds)", xlabel="step")
    axes[2].set(title="gradient norm before clipping", xlabel="step", yscale="log")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def claim(summary: list[dict]) -> str:
    """The issue's claim, checked against the runs.

    SoKA at <= 0.75x LoRA's parameters matches LoRA's accuracy within the run-to-run spread
    and converges at least as fast.
    """
    by = {s["method"]: s for s in summary}
    lora = by.get("LoRA")
    if lora is None:
        return ""
    lines = ["", "SoKA against LoRA (difference of mean test accuracy, with its standard error "
             "sqrt(s1^2/n1 + s2^2/n2)):", ""]
    for s in summary:
        if not s["method"].startswith("SoKA"):
            continue
        diff = s["acc"][0] - lora["acc"][0]
        se = math.sqrt(s["acc"][1] ** 2 / s["seeds"] + lora["acc"][1] ** 2 / lora["seeds"])
        within = ("yes" if diff >= -2 * se else "no") if math.isfinite(se) else \
            "needs 2+ seeds of each"
        faster = "yes" if s["early_loss"][0] <= lora["early_loss"][0] else "no"
        se_text = f"{100 * se:.1f}" if math.isfinite(se) else "n/a"
        lines.append(f"- {s['method']}: {s['params_x_lora']:.2f}x LoRA's parameters; accuracy "
                     f"{100 * diff:+.1f} points (SE {se_text}); matches LoRA within 2 SE: "
                     f"{within}; lower mean loss over the first 100 steps: {faster}.")
    return "\n".join(lines) + "\n"


def write(out: Path, runs: list[dict], order: list[str], seeds: list[int]) -> None:
    """Write ``table.md`` and ``curves.png`` into ``out`` and print the table."""
    chosen = chosen_runs(runs)
    chosen = {k: [r for r in v if r["seed"] in seeds] for k, v in chosen.items()}
    summary = rows(chosen, order)
    if not summary:
        return
    any_run = next(iter(chosen.values()))[0]
    text = markdown(summary, any_run["steps"], any_run["batch"]) + claim(summary)
    (out / "table.md").write_text(text)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    drew = plot(chosen, order, out / "curves.png")
    print(text)
    print(f"wrote {out / 'table.md'}" + (f" and {out / 'curves.png'}" if drew else
                                        " (pip install matplotlib for curves.png)"))
