"""The digits study behind examples/digits_hh: the split and the accuracy under input noise."""

import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from fusekit.neuro._digits import (  # noqa: E402
    DigitsConfig,
    DigitsResult,
    accuracy_under_noise,
    load_digits_split,
)


def test_digits_split_is_stratified_scaled_and_fixed_by_the_seed():
    X_tr, X_te, y_tr, y_te = load_digits_split(seed=0)
    assert X_tr.shape == (1347, 64) and X_te.shape == (450, 64)
    assert X_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    assert float(X_tr.min()) == 0.0 and float(X_tr.max()) == 1.0
    per_class = np.bincount(np.concatenate([y_tr.numpy(), y_te.numpy()]))
    assert np.abs(np.bincount(y_te.numpy()) - 0.25 * per_class).max() <= 1.0
    again = load_digits_split(seed=0)
    assert torch.equal(again[1], X_te) and not torch.equal(load_digits_split(seed=1)[1], X_te)


def test_accuracy_under_noise_is_exact_at_zero_and_falls_with_sigma():
    X_tr, X_te, y_tr, y_te = load_digits_split(seed=0)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(model(X_tr), y_tr)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = accuracy_under_noise(model, X_te, y_te, [0.0, 0.3, 3.0], draws=4, seed=0)
    with torch.no_grad():
        clean = float((model(X_te).argmax(1) == y_te).double().mean())
    assert acc[0.0] == (clean, 0.0) and clean > 0.9
    assert clean > acc[0.3][0] > acc[3.0][0] and acc[3.0][0] < 0.5
    assert acc[0.3][1] > 0.0  # the draws differ
    assert accuracy_under_noise(model, X_te, y_te, [0.3], draws=4, seed=0)[0.3] == acc[0.3]


def test_result_table_lists_mean_and_std_per_sigma():
    config = DigitsConfig(sigmas=(0.0, 0.4))
    result = DigitsResult(config, seed=0, accuracy={"HH": {0.0: (0.9, 0.0), 0.4: (0.5, 0.02)},
                                                    "LIF": {0.0: (0.95, 0.0), 0.4: (0.6, 0.01)}})
    assert result.table().splitlines() == [
        "| noise sigma | HH accuracy (%) | LIF accuracy (%) |",
        "|---|---|---|",
        "| 0 | 90.0 ± 0.0 | 95.0 ± 0.0 |",
        "| 0.4 | 50.0 ± 2.0 | 60.0 ± 1.0 |",
    ]


def test_missing_scikit_learn_gets_an_install_hint(monkeypatch):
    from fusekit.neuro._digits import load_digits_split

    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_digits_split()


def test_per_step_noise_draws_every_time_step_and_is_reproducible():
    from fusekit.neuro import LeakyReadout, LIFLayer, SpikingClassifier

    _, X_te, _, y_te = load_digits_split(seed=0)
    X, y = X_te[:40], y_te[:40]
    g = torch.Generator().manual_seed(0)
    model = SpikingClassifier(LIFLayer(64, 16, dt=0.5, generator=g),
                              LeakyReadout(16, 10, dt=0.5, generator=g), n_steps=6)
    seen = []
    forward = model.forward

    def spy(x):
        seen.append((x.shape, not torch.equal(x[0], x[1])))
        return forward(x)

    model.forward = spy
    acc = accuracy_under_noise(model, X, y, [0.0, 0.5], draws=2, seed=1, per_step=True)
    assert [s for s, _ in seen] == [(6, 40, 64)] * 3  # sigma 0 once, 0.5 twice
    assert [differ for _, differ in seen] == [False, True, True]  # a new draw every step
    assert acc == accuracy_under_noise(model, X, y, [0.0, 0.5], draws=2, seed=1, per_step=True)
    with torch.no_grad():  # sigma 0 with per-step input equals the held image
        clean = float((forward(X).argmax(1) == y).double().mean())
    assert acc[0.0] == (clean, 0.0)


def test_spiking_classifier_takes_held_or_time_varying_input():
    from fusekit import InputError
    from fusekit.neuro import LeakyReadout, LIFLayer, SpikingClassifier

    g = torch.Generator().manual_seed(0)
    model = SpikingClassifier(LIFLayer(4, 3, dt=0.5, generator=g),
                              LeakyReadout(3, 2, dt=0.5, generator=g), n_steps=5)
    x = torch.rand(7, 4, generator=g)
    held = model(x)
    assert torch.equal(model(x.expand(5, -1, -1)), held)
    with pytest.raises(InputError, match=r"\(5, batch, n_in\)"):
        model(x.expand(4, -1, -1))
