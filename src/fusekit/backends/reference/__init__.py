"""The NumPy reference backend: float64-accurate, always available, the test oracle."""

from __future__ import annotations


def unavailable_reason() -> str | None:
    """The reference backend needs only NumPy, so it is always available."""
    return None
