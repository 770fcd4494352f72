"""A population of identical-channel, single-compartment neurons and its simulation state."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import numpy as np

from .. import ops
from .._errors import InputError
from ..ops._common import check_counts, check_dt, is_real
from ..ops.ion import IonSimulation
from ..ops.ion_channel import Channel, ChannelSet, channel_set
from ..ops.ion_grad import merge_spike_times

#: Chunks a run with ``progress=True`` is split into (one kernel call each).
PROGRESS_CHUNKS = 50


def run_steps(owner: str, duration: Any, dt: Any) -> int:
    """The whole steps of ``dt`` in ``duration`` (both ms), after checking both.

    Every run of the neuro models counts its steps here, so that a zero, negative, NaN or
    infinite time, or one given as a string, is refused by name before it is divided.

    Raises:
        InputError: ``dt`` is not a positive finite number, ``duration`` not a finite
            number >= 0, or their ratio too large to count.
    """
    for name, value, least in (("dt", dt, "> 0"), ("duration", duration, ">= 0")):
        if not is_real(value):
            raise InputError(f"{owner}: {name} must be a number of ms {least}, got "
                             f"{type(value).__name__} {value!r}")
    check_dt(owner, dt)
    if not (math.isfinite(duration) and duration >= 0):
        raise InputError(f"{owner}: duration must be a finite time >= 0 in ms, got "
                         f"{duration!r}")
    steps = float(duration) / float(dt)
    if not math.isfinite(steps):
        raise InputError(f"{owner}: {duration} ms at dt = {dt} ms is too many steps to count; "
                         "use a larger dt")
    return int(round(steps))


def absolute_spike_times(times: np.ndarray, count: np.ndarray, t: float) -> np.ndarray:
    """Add the model's clock ``t`` to a run's spike times, in place.

    Only the rows that hold a spike are touched: adding to the whole ``(max_spikes, n)``
    array took 1.3 ms per call for 10,000 neurons, more than a 40-step kernel call's
    arithmetic half of the time.
    """
    if t:
        rows = min(times.shape[0], int(count.max(initial=0)))
        times[:rows] += times.dtype.type(t)
    return times


def run_in_pieces(advance: Callable[[int], Any], n_steps: int, chunk: int,
                  after_piece: Callable[[int, int], None] | None = None) -> Any:
    """``advance(n_steps)`` as calls of ``chunk`` steps (the last may be shorter), joined.

    ``advance(k)`` runs ``k`` steps of a model whose state carries over between calls and
    returns its result (an :class:`IonSimulation` or a ``NetworkSimulation``) with absolute
    spike times. The pieces' recordings, spike counts and spike times are joined; the other
    fields are the last piece's, so a run in pieces equals one run (with ``chunk`` a multiple
    of the recording period). ``after_piece(done, steps)`` runs after each piece.
    """
    records: list[Any] = []
    count = times = part = None
    done = 0
    while done < n_steps:
        steps = min(chunk, n_steps - done)
        part = advance(steps)
        if count is None:
            count = np.zeros_like(part.spike_count)
            times = np.full_like(part.spike_times, np.nan)
        records.append(part.v_record)
        merge_spike_times(times, count, part.spike_times, part.spike_count, 0.0)
        done += steps
        if after_piece is not None:
            after_piece(done, steps)
    return part._replace(v_record=np.concatenate(records), spike_count=count,
                         spike_times=times)


def progress_bar(progress_file: TextIO | None, n_steps: int,
                 clock: Callable[[], float]) -> Callable[[int], None]:
    """A function that draws a text progress bar at ``done`` of ``n_steps`` steps."""
    out = sys.stderr if progress_file is None else progress_file

    def draw(done: int) -> None:
        filled = int(30 * done / n_steps)
        out.write(f"\r[{'#' * filled}{' ' * (30 - filled)}] {100 * done // n_steps:3d}% "
                  f"t = {clock():.1f} ms")
        if done >= n_steps:
            out.write("\n")
        out.flush()

    return draw


def run_with_progress(advance: Callable[[int], Any], n_steps: int, record_every: int,
                      progress: bool, progress_file: TextIO | None,
                      clock: Callable[[], float]) -> Any:
    """``advance(n_steps)`` in about ``PROGRESS_CHUNKS`` calls with a text progress bar.

    As :func:`run_in_pieces`; ``clock()`` is the model's time after a piece. Without
    ``progress`` (or with fewer than 2 steps): one call.
    """
    if not progress or n_steps < 2:
        return advance(n_steps)
    chunk = max(1, n_steps // PROGRESS_CHUNKS)
    if record_every:
        chunk = max(record_every, chunk // record_every * record_every)
    draw = progress_bar(progress_file, n_steps, clock)
    return run_in_pieces(advance, n_steps, chunk, lambda done, _: draw(done))


class Population:
    """``n`` single-compartment neurons with the same channels and per-neuron parameters.

    The state (``v``, ``states``, time ``t``) carries over between :meth:`run` calls.

    Args:
        channels: Channel classes or a :class:`ChannelSet`.
        n: Number of neurons.
        v0: Initial membrane potential, mV; gates start at their steady state there.
        dtype: ``np.float32`` or ``np.float64``.
        **params: Parameter values (scalars or ``(n,)`` arrays) overriding the defaults.

    Attributes:
        params: ``(n_params, n)`` array, rows named by ``channel_set.param_names``.
        i_ext: Constant injected current per neuron, uA/cm^2, shape ``(n,)``.
    """

    def __init__(self, channels: ChannelSet | Sequence[type[Channel]], n: int, *,
                 v0: float = -65.0, dtype: Any = np.float64, **params: Any):
        self.channel_set = channel_set(channels)
        self.dtype = np.dtype(dtype)
        self.params = self.channel_set.default_params(n, self.dtype, **params)
        self.v = np.full(n, v0, dtype=self.dtype)
        self.states = self.channel_set.steady_states(self.v, self.params).astype(self.dtype)
        self.i_ext = np.zeros(n, dtype=self.dtype)
        self.t = 0.0

    def run(self, duration: float, *, dt: float = 0.025, record_every: int = 0,
            spike_threshold: float = 0.0, max_spikes: int = 64, progress: bool = False,
            progress_file: TextIO | None = None, backend: str | None = None) -> IonSimulation:
        """Advance by ``duration`` ms; spike times in the result are absolute (ms).

        Args:
            duration: Simulated time, ms (rounded to whole steps).
            dt: Time step, ms.
            record_every: Record ``v`` every this many steps (0: none).
            spike_threshold: mV.
            max_spikes: Spike times kept per neuron.
            progress: Show a progress bar (on ``progress_file``, default stderr); the run
                is then split into about ``PROGRESS_CHUNKS`` kernel calls.
            progress_file: Where the bar goes.
            backend: As for every fusekit op.

        Returns:
            The :class:`IonSimulation` of this run.
        """
        n_steps = run_steps("Population.run", duration, dt)
        check_counts("Population.run", record_every=record_every, max_spikes=max_spikes)

        def advance(steps: int) -> IonSimulation:
            return self._advance(steps, dt, record_every, spike_threshold, max_spikes, backend)

        return run_with_progress(advance, n_steps, record_every, progress, progress_file,
                                 lambda: self.t)

    def _advance(self, n_steps: int, dt: float, record_every: int, spike_threshold: float,
                 max_spikes: int, backend: str | None) -> IonSimulation:
        out = ops.ion_simulate(
            self.v, self.states, self.params, self.i_ext, channels=self.channel_set, dt=dt,
            n_steps=n_steps, record_every=record_every, spike_threshold=spike_threshold,
            max_spikes=max_spikes, backend=backend,
        )
        absolute_spike_times(out.spike_times, out.spike_count, self.t)
        self.v, self.states = out.v, out.states
        self.t += n_steps * dt
        return out
