"""The fine-tuning example's loaders and report (examples/sentiment_finetune), on small files."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "sentiment_finetune"))
import data  # noqa: E402
import report  # noqa: E402


def write_csv(path, rows, header="sentiment,confidence,text"):
    path.write_bytes((header + "\n" + "\n".join(rows) + "\n").encode("utf-8", "surrogateescape"))
    return path


def test_load_tweets_reads_labels_and_skips_unusable_rows(tmp_path):
    path = write_csv(tmp_path / "t.csv", [
        "negative,0.7,I just don't trust it",
        "positive,0.9,\"love it, really\"",
        "neutral,0.5,it is a car",
        "angry,0.9,not one of the three labels",
        "positive,0.8,",
    ])
    tweets = data.load_tweets(path)
    assert tweets.texts == ["I just don't trust it", "love it, really", "it is a car"]
    assert tweets.labels.tolist() == [0, 2, 1]
    assert tweets.labels.dtype == np.int64


def test_load_tweets_replaces_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"sentiment,confidence,text\nnegative,0.7,cars_\xe5_ no\n")
    assert data.load_tweets(path).texts == ["cars_\ufffd_ no"]


def test_load_tweets_rejects_other_layouts(tmp_path):
    with pytest.raises(ValueError, match="'sentiment' and 'text' columns"):
        data.load_tweets(write_csv(tmp_path / "a.csv", ["1,2"], header="label,body"))
    with pytest.raises(ValueError, match="no row with a sentiment"):
        data.load_tweets(write_csv(tmp_path / "b.csv", ["happy,1,text"]))


def test_split_is_disjoint_fixed_and_complete():
    tweets = data.Tweets([f"t{i}" for i in range(50)], np.arange(50) % 3)
    train, val, test = data.split(tweets, 5, 10, seed=3)
    assert (len(train.texts), len(val.texts), len(test.texts)) == (35, 5, 10)
    assert sorted(train.texts + val.texts + test.texts) == sorted(tweets.texts)
    assert data.split(tweets, 5, 10, seed=3)[1].texts == val.texts
    with pytest.raises(ValueError, match="cannot hold out"):
        data.split(tweets, 25, 25)


def test_macro_f1_is_the_mean_of_per_class_f1():
    pytest.importorskip("torch")
    import finetune

    gold = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    # class 0: tp 1 fp 1 fn 1 -> 0.5; class 1: tp 2 fp 1 fn 0 -> 0.8; class 2: tp 1 fn 1 -> 2/3
    assert finetune.macro_f1(gold, pred, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def fake_run(method, lr, seed, acc, params, losses):
    return {"method": method, "lr": lr, "seed": seed, "steps": len(losses), "batch": 4,
            "adapter_params": params, "init_s": 0.1, "step_s": 0.01, "losses": losses,
            "grad_norms": [1.0 + 0.1 * (i % 2) for i in range(len(losses))],
            "val_curve": [{"step": len(losses), "accuracy": acc + lr}],
            "val": {"accuracy": acc + lr}, "test": {"accuracy": acc, "macro_f1": acc - 0.1}}


def test_report_picks_the_sweep_lr_and_checks_the_claim(tmp_path):
    runs = [fake_run("LoRA", 0.01, s, 0.60 + 0.01 * s, 800, [1.0] * 20) for s in range(3)]
    runs += [fake_run("LoRA", 0.001, 0, 0.50, 800, [1.0] * 20)]  # loses the sweep
    runs += [fake_run("LoRA", 0.01, 2, 0.62, 800, [1.0] * 20)]  # seed 2 again (two processes)
    runs += [fake_run("SoKA f=8, r=6", 0.01, s, 0.61 + 0.01 * s, 600, [0.9] * 20)
             for s in range(3)]
    report.write(tmp_path, runs, ["LoRA", "SoKA f=8, r=6"], [0, 1, 2])
    table = (tmp_path / "table.md").read_text()
    assert "| LoRA | 800 | 1.00 | 1e-02 | 3 | 0.610 ± 0.010 |" in table
    assert "0.75x LoRA's parameters; accuracy +1.0 points" in table
    assert "matches LoRA within 2 SE: yes; lower mean loss over the first 100 steps: yes" in table
