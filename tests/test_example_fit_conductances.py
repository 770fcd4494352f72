"""The conductance-fitting example (examples/fit_conductances) recovers hidden conductances."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "fit_conductances"))
import fit  # noqa: E402


def test_fit_recovers_hidden_conductances_from_a_perturbed_start_on_a_tiny_problem():
    out = fit.fit(quick=True, duration=5.0, dt=0.1, adam_steps=10, lbfgs_steps=15,
                  verbose=False)
    start_error = max(abs(fit.START[k] - v) / v for k, v in fit.HIDDEN.items())
    assert start_error >= 0.35
    assert max(out["relative_error"].values()) < 0.02, out["values"]
    assert out["loss"][-1] < 1e-2 * out["loss"][0]
