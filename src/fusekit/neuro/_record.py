"""Recordings of a model's channel states (and synaptic conductances) over a run."""

from __future__ import annotations

from typing import Any, NamedTuple, TextIO

import numpy as np

from .._errors import InputError
from ..ops._common import is_whole
from ._cable_network import CableNetwork
from ._network import Network
from ._population import Population, progress_bar, run_in_pieces, run_steps


class Recording(NamedTuple):
    """What :func:`record` returns.

    Attributes:
        t: ``(n_rec,)`` absolute times of the rows, ms (every ``record_every`` steps).
        v: ``(n_rec, ...)`` membrane potential, as the run's ``v_record``.
        states: ``(n_rec, n_states, ...)`` channel states, rows named by
            ``model.channel_set.state_names`` (every compartment for a cable network).
        g_syn: ``(n_rec, ...)`` synaptic conductance as the model's ``g_syn`` (networks), or
            ``None`` (a population).
        run: The run's result (spikes, final state), as ``model.run`` returns it.
        state_names: The names of the rows of ``states`` (``model.channel_set``'s).
    """

    t: np.ndarray
    v: np.ndarray
    states: np.ndarray
    g_syn: np.ndarray | None
    run: Any
    state_names: tuple[str, ...]


def record(model: Population | Network | CableNetwork, duration: float, *, record_every: int,
           dt: float = 0.025, progress: bool = False, progress_file: TextIO | None = None,
           **run_kwargs: Any) -> Recording:
    """Run ``model`` for ``duration`` ms and record its states every ``record_every`` steps.

    ``model.run`` records only the membrane potential; this records the channel states (the
    gates: ``m``, ``h``, ``n`` of HH) and, for networks, the synaptic conductances as well.
    The model runs in pieces of ``record_every`` steps, one kernel call each, and its state
    is read after each piece: a run in pieces equals one run, so ``v``, the spikes and the
    final state are those of ``model.run(duration, record_every=record_every)``. Each piece
    costs a call's overhead (tens of microseconds on the CPU), so record every few dozen
    steps or more where that matters.

    Args:
        model: A :class:`Population`, :class:`Network` or :class:`CableNetwork`; its state
            carries on from where it is and ends where the run ends.
        duration: ms (rounded to whole steps); steps after the last whole ``record_every``
            run but are not recorded.
        record_every: Steps between rows (at least 1).
        dt: Time step, ms.
        progress: Show a progress bar (on ``progress_file``, default stderr).
        progress_file: Where the bar goes.
        **run_kwargs: Passed to ``model.run`` (``max_spikes``, ``spike_threshold``,
            ``backend``, and ``record_at`` for a cable network).

    Returns:
        A :class:`Recording`.

    Example:
        >>> from fusekit.neuro import HH_CHANNELS, Population, record
        >>> pop = Population(HH_CHANNELS, n=3)
        >>> pop.i_ext[:] = 10.0
        >>> rec = record(pop, 20.0, record_every=4)  # doctest: +SKIP
        >>> rec.states.shape  # doctest: +SKIP
        (200, 3, 3)
    """
    if not isinstance(model, Population | Network | CableNetwork):
        raise InputError(f"record: model must be a fusekit.neuro Population, Network or "
                         f"CableNetwork, got {type(model).__name__}")
    if not is_whole(record_every) or record_every < 1:
        raise InputError(f"record: record_every must be a whole number of steps >= 1, got "
                         f"{record_every!r}")
    n_steps = run_steps("record", duration, dt)
    if n_steps < record_every:
        raise InputError(f"record: {duration} ms is {n_steps} steps of {dt} ms, fewer than "
                         f"record_every = {record_every}: nothing would be recorded")
    t, states, g_syn = [], [], []
    draw = progress_bar(progress_file, n_steps, lambda: model.t) if progress else None

    def advance(steps: int) -> Any:
        return model.run(steps * dt, dt=dt, record_every=record_every, **run_kwargs)

    def after(done: int, steps: int) -> None:
        if steps == record_every:  # a whole piece: one row
            t.append(model.t)
            states.append(np.array(model.states, copy=True))
            if not isinstance(model, Population):
                g_syn.append(np.array(model.g_syn, copy=True))
        if draw is not None:
            draw(done)

    run = run_in_pieces(advance, n_steps, int(record_every), after)
    return Recording(t=np.asarray(t), v=run.v_record, states=np.stack(states),
                     g_syn=np.stack(g_syn) if g_syn else None, run=run,
                     state_names=tuple(model.channel_set.state_names))
