"""Matplotlib views of simulation results: voltage traces and spike rasters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._errors import InputError
from ..ops._common import is_whole


def _values(fn: str, name: str, a: Any, ndim: int, shape: str) -> np.ndarray:
    """``a`` (NumPy or torch, with or without grad) as a float64 array of ``ndim`` axes."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    try:
        out = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{fn}: {name} must be an array of numbers {shape}, got "
                         f"{type(a).__name__}") from None
    if out.ndim != ndim:
        raise InputError(f"{fn}: {name} must have shape {shape}, got {out.shape}")
    return out


def _indices(fn: str, name: str, idx: Any, size: int, what: str) -> list[int]:
    """``idx`` (a sequence of ints) checked against ``size``."""
    if isinstance(idx, int | np.integer) or not isinstance(idx, Sequence | np.ndarray):
        raise InputError(f"{fn}: {name} must be a sequence of {what} indices, for one: "
                         f"{name}=[{idx!r}]")
    out = []
    for i in idx:
        if not is_whole(i):
            raise InputError(f"{fn}: {name} must hold integer {what} indices, got {i!r}")
        if not -size <= i < size:
            raise InputError(f"{fn}: {name} has {i!r}, but there are {size} {what}s "
                             f"(0 .. {size - 1})")
        out.append(int(i))
    return out


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("fusekit's plots need matplotlib: pip install matplotlib (or "
                          "pip install 'fusekit[test]')") from err
    return plt


def plot_traces(v_record: Any, *, dt: float, record_every: int, neurons: Sequence[int] = (0,),
                t0: float = 0.0, ax: Any = None) -> Any:
    """Plot recorded membrane potentials against time.

    Args:
        v_record: ``(n_rec, n)`` recorded potentials (``IonSimulation.v_record``), mV.
        dt: Time step of the run, ms.
        record_every: Steps between recorded rows.
        neurons: Which columns to draw.
        t0: Time of the run's start, ms.
        ax: Matplotlib axes; a new figure's when ``None``.

    Returns:
        The axes.
    """
    plt = _pyplot()

    v_record = _values("plot_traces", "v_record", v_record, 2, "(n_rec, n)")
    neurons = _indices("plot_traces", "neurons", neurons, v_record.shape[1], "neuron")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    t = t0 + dt * record_every * np.arange(1, v_record.shape[0] + 1)
    for j in neurons:
        ax.plot(t, v_record[:, j], lw=0.8, label=f"neuron {j}")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("v (mV)")
    if len(neurons) <= 10:
        ax.legend(loc="upper right", fontsize="small")
    return ax


def plot_raster(spike_times: Any, *, ax: Any = None, marker_size: float = 2.0) -> Any:
    """Raster plot of spike times (``IonSimulation.spike_times``, NaN where none).

    Args:
        spike_times: ``(max_spikes, n)`` spike times, ms.
        ax: Matplotlib axes; a new figure's when ``None``.
        marker_size: Dot size.

    Returns:
        The axes.
    """
    plt = _pyplot()

    times = _values("plot_raster", "spike_times", spike_times, 2, "(max_spikes, n)")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    slot, neuron = np.nonzero(~np.isnan(times))
    ax.scatter(times[slot, neuron], neuron, s=marker_size, c="k", marker="|")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("neuron")
    return ax


def plot_states(recording: Any, *, neurons: Sequence[int] = (0,),
                states: Sequence[str] | None = None, compartment: int = 0,
                ax: Any = None) -> Any:
    """Plot recorded channel states (gates) against time, from :func:`fusekit.neuro.record`.

    Args:
        recording: A :class:`~fusekit.neuro.Recording`.
        neurons: Which neurons (cells) to draw.
        states: Which states, by full name (``"HHSodium.m"``) or the part after the dot
            (``"m"``); all of them when ``None``.
        compartment: The compartment, for a cable network's recording.
        ax: Matplotlib axes; a new figure's when ``None``.

    Returns:
        The axes.
    """
    plt = _pyplot()

    if not all(hasattr(recording, a) for a in ("states", "state_names", "t")):
        raise InputError(f"plot_states: recording must be a fusekit.neuro.Recording (from "
                         f"fusekit.neuro.record), got {type(recording).__name__}")
    values = np.asarray(recording.states)
    if values.ndim == 4:  # (n_rec, n_states, n_cells, n_comp): one compartment
        compartment = _indices("plot_states", "compartment", [compartment], values.shape[3],
                               "compartment")[0]
        values = values[..., compartment]
    neurons = _indices("plot_states", "neurons", neurons, values.shape[2], "neuron")
    names = list(recording.state_names)
    wanted = list(range(len(names))) if states is None else [
        next((k for k, name in enumerate(names) if s in (name, name.rsplit(".", 1)[-1])), -1)
        for s in states]
    missing = [s for s, k in zip(states or [], wanted, strict=False) if k < 0]
    if missing:
        raise InputError(f"plot_states: no state named {missing}; the recording has {names}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    for j in neurons:
        for k in wanted:
            ax.plot(recording.t, values[:, k, j], lw=0.8, label=f"{names[k]}, neuron {j}")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("state")
    if len(neurons) * len(wanted) <= 12:
        ax.legend(loc="upper right", fontsize="small")
    return ax
