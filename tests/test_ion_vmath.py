"""The CPU kernels' vectorisable exp keeps its documented error bound."""

import numpy as np
import pytest

pytest.importorskip("numba")

from fusekit.backends.cpu import _vmath  # noqa: E402
from fusekit.backends.cpu._numba import njit  # noqa: E402


@njit(cache=False)  # a disk cache would keep a stale inlined exp after edits
def _apply32(x, y):
    for i in range(x.shape[0]):
        y[i] = _vmath.exp_f32(x[i])


@njit(cache=False)  # a disk cache would keep a stale inlined exp after edits
def _apply64(x, y):
    for i in range(x.shape[0]):
        y[i] = _vmath.exp_f64(x[i])


def test_float32_exp_relative_error_is_within_the_documented_bound():
    x = np.concatenate([np.linspace(-87.0, 88.0, 400_001, dtype=np.float32),
                        np.float32([0.0, -0.0, 1e-30, -1e-8, 0.3465736, -0.3465736])])
    y = np.empty_like(x)
    _apply32(x, y)
    ref = np.exp(x.astype(np.float64))
    assert np.max(np.abs(y - ref) / ref) < _vmath.EXP32_MAX_REL_ERR


def test_float64_exp_relative_error_is_within_the_documented_bound():
    x = np.concatenate([np.linspace(-700.0, 700.0, 400_001), [0.0, 1e-300, -1e-12]])
    y = np.empty_like(x)
    _apply64(x, y)
    ref = np.exp(x)
    assert np.max(np.abs(y - ref) / ref) < _vmath.EXP64_MAX_REL_ERR


def test_arguments_beyond_the_range_are_clamped_not_infinite():
    x = np.float32([-1000.0, 1000.0])
    y = np.empty_like(x)
    _apply32(x, y)
    assert np.isfinite(y).all() and y[0] > 0
