"""The branched-cell fit (examples/fit_conductances/fit_cable.py) recovers the hidden values."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "fit_conductances"))
import fit_cable  # noqa: E402


def test_fit_cable_recovers_conductances_and_axial_resistivity():
    out = fit_cable.fit(quick=True, verbose=False)
    start_error = max(abs(fit_cable.START[k] / v - 1) for k, v in fit_cable.HIDDEN.items())
    assert start_error >= 0.35
    assert max(out["errors"].values()) < 1e-3, out["found"]
    assert out["losses"][-1] < 1e-6 * out["losses"][0]
