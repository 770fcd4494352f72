"""Matplotlib views of simulation results: voltage traces and spike rasters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    v_record = np.asarray(v_record)
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
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    times = np.asarray(spike_times, dtype=np.float64)
    slot, neuron = np.nonzero(~np.isnan(times))
    ax.scatter(times[slot, neuron], neuron, s=marker_size, c="k", marker="|")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("neuron")
    return ax
