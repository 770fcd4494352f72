"""HH against LIF on scikit-learn's digits: training and accuracy under input noise.

The study behind ``examples/digits_hh`` and the neuro part of ``fusekit tour``. The 8x8 digit
images (pixel values 0-16, :func:`sklearn.datasets.load_digits`, shipped with scikit-learn)
are scaled to [0, 1], split into train and test sets (stratified, fixed seed) and presented
as constant input currents; the same architecture (64 inputs, a hidden layer of spiking
neurons, a leaky-integrator readout over 10 classes) is trained once with Hodgkin-Huxley and
once with LIF neurons (Adam, cross-entropy, backprop through time with surrogate spike
gradients). The test images are then classified with Gaussian noise of standard deviation
``sigma`` added to the scaled pixels (not clipped), over several noise draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np
import torch

from ._layers import HHLayer, LeakyReadout, LIFLayer, SpikingClassifier

__all__ = ["DigitsConfig", "DigitsResult", "digits_noise_study", "load_digits_split",
           "train_classifier", "accuracy_under_noise"]


@dataclass(frozen=True)
class DigitsConfig:
    """Sizes of the study. ``DigitsConfig.quick()`` is the short version (tour, ``--quick``).

    Attributes:
        hidden: Spiking neurons in the hidden layer.
        window_ms: How long each image is presented, ms.
        dt: Time step, ms.
        epochs: Passes over the training set.
        batch_size: Images per gradient step.
        lr: Adam learning rate.
        train_limit: Use only this many training images (0: all).
        sigmas: Noise standard deviations (in units of the [0, 1] pixel scale).
        draws: Noise draws per sigma (mean and std over them).
        noise: ``"image"``: one noise draw per test image, held for the whole window (as the
            image is); ``"step"``: a new draw at every time step (input current noise).
    """

    hidden: int = 100
    window_ms: float = 20.0
    dt: float = 0.2
    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.01
    train_limit: int = 0
    sigmas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8)
    draws: int = 5
    noise: str = "image"

    def __post_init__(self) -> None:
        if self.noise not in ("image", "step"):
            raise ValueError(f"noise must be 'image' or 'step', got {self.noise!r}")

    @classmethod
    def quick(cls) -> DigitsConfig:
        """About 10-20 s for both models on two cores."""
        return cls(hidden=48, window_ms=15.0, dt=0.2, epochs=3, batch_size=64,
                   train_limit=600, sigmas=(0.0, 0.2, 0.4, 0.8), draws=3)

    @property
    def n_steps(self) -> int:
        """Time steps per image."""
        return max(1, round(self.window_ms / self.dt))


@dataclass
class DigitsResult:
    """Per model (``"HH"``, ``"LIF"``): accuracy per sigma (mean, std), losses, train time.

    ``firing`` is the hidden layer's mean rate on the clean test set, Hz.
    """

    config: DigitsConfig
    seed: int
    n_train: int = 0
    accuracy: dict[str, dict[float, tuple[float, float]]] = field(default_factory=dict)
    losses: dict[str, list[float]] = field(default_factory=dict)
    train_seconds: dict[str, float] = field(default_factory=dict)
    firing: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        """Markdown table: accuracy (%) against noise for both models."""
        models = list(self.accuracy)
        lines = ["| noise sigma | " + " | ".join(f"{m} accuracy (%)" for m in models) + " |",
                 "|---" * (len(models) + 1) + "|"]
        for s in self.config.sigmas:
            cells = [f"{100 * self.accuracy[m][s][0]:.1f} ± {100 * self.accuracy[m][s][1]:.1f}"
                     for m in models]
            lines.append(f"| {s:g} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def load_digits_split(seed: int = 0, test_size: float = 0.25
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits scaled to [0, 1], split stratified by ``seed``: X_train, X_test, y_train, y_test."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise ImportError("the digits study needs scikit-learn, which ships the data set: "
                          "pip install scikit-learn (or fusekit[examples])") from e

    data = load_digits()
    X = (data.data / 16.0).astype(np.float32)
    parts = train_test_split(X, data.target, test_size=test_size, random_state=seed,
                             stratify=data.target)
    X_tr, X_te, y_tr, y_te = (torch.from_numpy(np.ascontiguousarray(p)) for p in parts)
    return X_tr, X_te, y_tr.long(), y_te.long()


def build_classifier(kind: str, config: DigitsConfig, n_in: int = 64, n_classes: int = 10,
                     seed: int = 0) -> SpikingClassifier:
    """``"HH"`` or ``"LIF"`` hidden layer, leaky readout, same sizes and seeds for both."""
    g = torch.Generator().manual_seed(seed)
    if kind == "HH":
        hidden: torch.nn.Module = HHLayer(n_in, config.hidden, dt=config.dt, generator=g)
    elif kind == "LIF":
        hidden = LIFLayer(n_in, config.hidden, dt=config.dt, generator=g)
    else:
        raise ValueError(f"kind must be 'HH' or 'LIF', got {kind!r}")
    readout = LeakyReadout(config.hidden, n_classes, dt=config.dt, generator=g)
    return SpikingClassifier(hidden, readout, config.n_steps)


def train_classifier(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int,
                     batch_size: int, lr: float, seed: int = 0,
                     log: Callable[[str], None] | None = None) -> list[float]:
    """Adam on the cross-entropy, shuffled mini-batches; returns the mean loss per epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(X.shape[0], generator=g)
        total = 0.0
        for start in range(0, X.shape[0], batch_size):
            idx = order[start:start + batch_size]
            loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        losses.append(total / X.shape[0])
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {losses[-1]:.3f}")
    return losses


@torch.no_grad()
def accuracy_under_noise(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor,
                         sigmas: Sequence[float], *, draws: int, seed: int = 0,
                         per_step: bool = False) -> dict[float, tuple[float, float]]:
    """Accuracy (mean, std over ``draws``) with ``N(0, sigma^2)`` added to every input value.

    The noise draws depend only on ``seed``, ``sigma`` and the draw index, so two models are
    tested on the same noisy images. ``sigma = 0`` is evaluated once (std 0). With
    ``per_step`` (a :class:`SpikingClassifier`) every time step of the presentation gets its
    own draw (noise in the input current) instead of one per image.
    """
    out = {}
    for sigma in sigmas:
        accs = []
        for d in range(draws if sigma > 0 else 1):
            g = torch.Generator().manual_seed(
                (seed * 1_000_003 + round(float(sigma) * 10_000)) * 1_009 + d
                + (7_919 if per_step else 0))
            shape = (model.n_steps, *X.shape) if per_step else X.shape
            noisy = X + sigma * torch.randn(shape, generator=g, dtype=X.dtype)
            pred = torch.cat([model(noisy[..., i:i + 256, :]).argmax(1)  # batches of images
                              for i in range(0, X.shape[0], 256)])
            accs.append(float((pred == y).double().mean()))
        out[float(sigma)] = (float(np.mean(accs)), float(np.std(accs)))
    return out


@torch.no_grad()
def mean_spike_rate(model: SpikingClassifier, X: torch.Tensor) -> float:
    """Mean firing rate of the hidden layer, Hz (spikes per neuron per second)."""
    spikes = model.hidden(X.expand(model.n_steps, -1, -1))
    return float(spikes.sum(0).mean()) / (model.n_steps * model.hidden.dt) * 1000.0


def digits_noise_study(config: DigitsConfig | None = None, *, seed: int = 0,
                       models: Sequence[str] = ("HH", "LIF"), torch_threads: int | None = 1,
                       out: TextIO | None = None) -> DigitsResult:
    """Train each model on the digits and measure test accuracy against input noise.

    Args:
        config: Sizes (default: the full study, a few minutes on two cores).
        seed: Split, initial weights, batch order and noise draws.
        models: Which hidden neurons to compare.
        torch_threads: torch's intra-op threads during the study (restored after; ``None``:
            leave as is). One by default: the layers run many small elementwise ops per time
            step, where more threads only add synchronisation (2 threads on our loaded 2-core
            machine were 10-100x slower than one).
        out: Progress lines go here (``None``: silent).

    Returns:
        A :class:`DigitsResult`; ``result.table()`` is the Markdown table.
    """
    config = config or DigitsConfig()
    threads_before = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        return _study(config, seed, models, out)
    finally:
        torch.set_num_threads(threads_before)


def _study(config: DigitsConfig, seed: int, models: Sequence[str], out: TextIO | None
           ) -> DigitsResult:
    X_tr, X_te, y_tr, y_te = load_digits_split(seed)
    if config.train_limit:
        X_tr, y_tr = X_tr[:config.train_limit], y_tr[:config.train_limit]
    result = DigitsResult(config, seed, n_train=X_tr.shape[0])

    def log(msg: str) -> None:
        if out is not None:
            print(msg, file=out, flush=True)

    for kind in models:
        model = build_classifier(kind, config, seed=seed)
        t0 = time.perf_counter()
        result.losses[kind] = train_classifier(
            model, X_tr, y_tr, epochs=config.epochs, batch_size=config.batch_size,
            lr=config.lr, seed=seed, log=lambda m, k=kind: log(f"  {k} {m}"))
        result.train_seconds[kind] = time.perf_counter() - t0
        model.eval()
        result.firing[kind] = mean_spike_rate(model, X_te)
        result.accuracy[kind] = accuracy_under_noise(model, X_te, y_te, config.sigmas,
                                                     draws=config.draws, seed=seed,
                                                     per_step=config.noise == "step")
        clean = result.accuracy[kind][config.sigmas[0]][0]
        log(f"  {kind}: trained in {result.train_seconds[kind]:.1f} s, test accuracy "
            f"{100 * clean:.1f}% at sigma {config.sigmas[0]:g}, hidden rate "
            f"{result.firing[kind]:.0f} Hz")
    return result
