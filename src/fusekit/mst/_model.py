"""The spiking-network cost model of Kruskal (serial and pipelined) and of Prim's algorithm.

Time is counted in network time steps. Edge ``e`` fires at step
``t_e = floor((w_e - min(w)) / quantum)``. The union-find stage handles at most ``p`` events
(edges) per step, one step each, in firing order; a find is one step because each vertex
neuron keeps a synapse to its component's root (union by size rewires the smaller side).

* **serial Kruskal** (neuromorphic sort, then union-find): the sort is complete when the last
  edge has fired (``sort_steps`` = the grid's length), then the ``K`` edges up to the
  heaviest tree edge take ``ceil(K / p)`` steps.
* **pipelined Kruskal**: union-find consumes the events while the sort still fires; it ends
  when event ``K`` is handled: with ``A(<t)`` events fired before step ``t``, the last event
  is handled at ``max_t (t + ceil((K - A(<t)) / p) - 1)`` over steps ``t`` that fire.
* **spiking Prim's** (our baseline): each of the ``n - c`` iterations lets every frontier
  edge of the tree fire with its delay and takes the first spike to arrive, so it costs the
  chosen edge's step plus one for the delay's first tick plus one to add the vertex and reset:
  ``sum over tree edges of (t_e + 2)``. This is a lower bound for such designs (it ignores
  the cost of maintaining the frontier), so Kruskal's advantage over it is understated.
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from ..ops._common import is_real
from ..ops.spike import time_grid


@dataclass
class SpikingSchedule:
    """Model time steps of one minimum-spanning-forest run (see the module docstring).

    Attributes:
        quantum: Weight units per time step.
        p: Union-find events handled per time step.
        sort_steps: Steps of the full firing-time grid.
        events: Edges the union-find stage examines (up to the heaviest tree edge).
        last_tree_step: Firing step of the heaviest tree edge.
        max_events_per_step: Most of those events firing in one step.
        serial_steps: Serial Kruskal: ``sort_steps + ceil(events / p)``.
        pipelined_steps: Pipelined Kruskal (union-find consumes while the sort fires).
        prim_steps: The spiking Prim's baseline.
    """

    quantum: float
    p: int
    sort_steps: int
    events: int
    last_tree_step: int
    max_events_per_step: int
    serial_steps: int
    pipelined_steps: int
    prim_steps: int

    def speedups(self) -> dict[str, float]:
        """Model-step speedups, each named by what it compares: ``"<faster> vs <baseline>"``."""
        pipe = max(self.pipelined_steps, 1)
        return {
            "pipelined vs spiking Prim's (model steps)": self.prim_steps / pipe,
            "pipelined vs serial spike Kruskal (model steps)": self.serial_steps / pipe,
            "serial spike Kruskal vs spiking Prim's (model steps)":
                self.prim_steps / max(self.serial_steps, 1),
        }

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def count(where: str, name: str, value: Any, what: str) -> int:
    """``value`` as an int ``>= 1``; :class:`InputError` for 1.5, "2", True or 0."""
    try:
        if isinstance(value, bool | np.bool_):
            raise TypeError
        n = operator.index(value)  # ints and NumPy integers; 1.5 must not be truncated
    except TypeError:
        raise InputError(f"{where}: {name} must be {what}, got {value!r} "
                         f"({type(value).__name__})") from None
    if n < 1:
        raise InputError(f"{where}: {name} must be >= 1 ({what}), got {n}")
    return n


def check_quantum(where: str, quantum: Any) -> None:
    """Refuse a ``quantum`` that is not ``None`` or a positive finite real number."""
    if quantum is None:
        return
    if not (is_real(quantum) and math.isfinite(float(quantum)) and float(quantum) > 0):
        raise InputError(f"{where}: quantum must be a positive finite number of weight units "
                         f"per time step (or None for the default), got {quantum!r}")


def pipelined_finish(counts: np.ndarray, k: int, p: int) -> int:
    """Steps until event ``k`` is handled when ``counts[t]`` events fire at step ``t``.

    Args:
        counts: Events firing per step, shape ``(T,)``, covering at least ``k`` events.
        k: Events to handle (the first ``k`` in firing order).
        p: Events handled per step.

    Returns:
        Number of steps from step 0 through the step that handles event ``k``.
    """
    if k <= 0:
        return 0
    before = np.concatenate(([0], np.cumsum(counts)[:-1]))
    t = np.flatnonzero((counts > 0) & (before < k))
    finish = t + -(-(k - before[t]) // p) - 1
    return int(finish.max()) + 1


def kruskal_schedule(w: np.ndarray, edges: np.ndarray, *, p: int = 1,
                     quantum: float | None = None) -> SpikingSchedule:
    """The spiking model's time steps for a forest ``edges`` of the graph with weights ``w``.

    Args:
        w: All edge weights, shape ``(m,)``.
        edges: Ids of the minimum spanning forest's edges.
        p: Union-find events handled per time step (``>= 1``).
        quantum: Weight units per step; default as :func:`fusekit.ops.spike_sort`.

    Returns:
        A :class:`SpikingSchedule`.

    Raises:
        InputError: ``p`` not an integer ``>= 1``, ``quantum`` not a positive finite number.
    """
    p = count("kruskal_schedule", "p", p, "an integer number of union-find events per step")
    check_quantum("kruskal_schedule", quantum)
    w = np.asarray(w)
    lo, q, n_steps = time_grid(w, quantum)
    if w.size == 0:
        return SpikingSchedule(float(q), p, 0, 0, 0, 0, 0, 0, 0)
    if isinstance(q, int):
        levels = (w.astype(np.int64) - lo) // q
    else:
        levels = np.floor((w.astype(np.float64) - lo) / q).astype(np.int64)
    np.minimum(levels, n_steps - 1, out=levels)
    edges = np.asarray(edges, dtype=np.int64)
    if edges.size == 0:
        return SpikingSchedule(float(q), p, n_steps, 0, 0, 0, n_steps, 0, 0)
    we = w[edges]
    heaviest = edges[np.lexsort((edges, we))[-1]]
    wmax = w[heaviest]
    examined = (w < wmax) | ((w == wmax) & (np.arange(w.size) <= heaviest))
    k = int(np.count_nonzero(examined))
    t_last = int(levels[heaviest])
    counts = np.bincount(levels[examined], minlength=t_last + 1)
    return SpikingSchedule(
        quantum=float(q), p=int(p), sort_steps=int(n_steps), events=k, last_tree_step=t_last,
        max_events_per_step=int(counts.max()),
        serial_steps=int(n_steps + math.ceil(k / p)),
        pipelined_steps=pipelined_finish(counts, k, p),
        prim_steps=int((levels[edges] + 2).sum()),
    )
