"""Spiking sort and union-find: the primitives of the neuromorphic (pipelined) Kruskal.

A *spike sort* turns each key into a spike delay: key ``k`` fires at time step
``floor((k - lo) / quantum)`` after a start spike, so reading the neurons in firing order reads
the keys in sorted order. Keys that fall into one step fire together; the result is stable
(ties keep their input order) and, with ``exact=True``, keys inside one step are ordered by
their exact value, so the order equals ``np.argsort(keys, kind="stable")``.

A *spiking radix sort* runs the same delay trick once per digit (least significant first):
``2**radix_bits`` time steps per pass instead of one step per quantum of the key range.

The *union-find* op merges components for a batch of edges in the given order (path halving,
union by size) and says which edges joined two components; in the spiking model every find
hop is a spike along a parent synapse and every union rewires one synapse.

Every op also reports the cost of the spiking model it stands for (:class:`SpikeStats`):
neurons, synapses, spikes, time steps, spikes per step, union-find events and hops, and the
quantization error of float keys. The cost model is ours and is written out in
``docs/mst.md``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .._arrays import kind_of
from .._errors import InputError
from .._registry import Op, array_dtype
from ._common import check_counts, ids_in_range, require_finite, require_ndim

__all__ = [
    "INT_KEY_DTYPES",
    "KEY_DTYPES",
    "MAX_TIME_STEPS",
    "SpikeSortResult",
    "SpikeStats",
    "UnionFind",
    "gather_endpoints",
    "gather_endpoints_reference",
    "spike_radix_sort",
    "spike_radix_sort_reference",
    "spike_sort",
    "spike_sort_edges",
    "spike_sort_edges_reference",
    "spike_sort_reference",
    "time_grid",
    "union_find_find",
    "union_find_find_reference",
    "union_find_union",
    "union_find_union_reference",
    "vertex_dtype",
]

INT_KEY_DTYPES = ("int32", "int64", "uint8", "uint16", "uint32")
KEY_DTYPES = (*INT_KEY_DTYPES, "float32", "float64")
VERTEX_DTYPES = ("int32", "int64")
#: Most time steps a spike sort may span: the step counts array has one entry per step.
MAX_TIME_STEPS = 1 << 28
#: Integer keys whose range reaches this get a float grid: ``key - lo`` must fit in int64.
INT_GRID_MAX_SPAN = 1 << 62


def default_float_steps(n: int) -> int:
    """Time steps of the default float grid for ``n`` keys: ``ceil(n / 2)``."""
    return max(1, -(-n // 2))


@dataclass
class SpikeStats:
    """Cost of one run in the spiking-network model (counts are model quantities).

    Attributes:
        neurons: Neurons the network needs (one per key, plus control neurons).
        synapses: Synapses the network needs.
        spikes: Spikes fired in the run.
        time_steps: Model time steps from the first input spike to the last event handled.
        active_steps: Time steps in which a key neuron fired.
        max_spikes_per_step: Most spikes fired in one time step.
        mean_spikes_per_step: Key spikes per active step.
        quantization_error: Largest ``key - (lo + step * quantum)`` over the keys (in key
            units, ``0 <= error < quantum``): how far a key is from its spike time.
        uf_events: Union-find events handled (two finds each).
        uf_hops: Parent-pointer hops of those finds (spikes along parent synapses).
        uf_unions: Unions performed.
        uf_synapse_updates: Root synapses rewired by the unions (the smaller side's vertices).
    """

    neurons: int = 0
    synapses: int = 0
    spikes: int = 0
    time_steps: int = 0
    active_steps: int = 0
    max_spikes_per_step: int = 0
    mean_spikes_per_step: float = 0.0
    quantization_error: float = 0.0
    uf_events: int = 0
    uf_hops: int = 0
    uf_unions: int = 0
    uf_synapse_updates: int = 0

    def as_dict(self) -> dict[str, float]:
        """The statistics as a plain dict (for tables and JSON)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def merged(self, other: SpikeStats) -> SpikeStats:
        """Statistics of two stages of one network run back to back (time steps add up)."""
        active = self.active_steps + other.active_steps
        sort_spikes = (self.mean_spikes_per_step * self.active_steps
                       + other.mean_spikes_per_step * other.active_steps)
        return SpikeStats(
            neurons=self.neurons + other.neurons,
            synapses=self.synapses + other.synapses,
            spikes=self.spikes + other.spikes,
            time_steps=self.time_steps + other.time_steps,
            active_steps=active,
            max_spikes_per_step=max(self.max_spikes_per_step, other.max_spikes_per_step),
            mean_spikes_per_step=sort_spikes / active if active else 0.0,
            quantization_error=max(self.quantization_error, other.quantization_error),
            uf_events=self.uf_events + other.uf_events,
            uf_hops=self.uf_hops + other.uf_hops,
            uf_unions=self.uf_unions + other.uf_unions,
            uf_synapse_updates=self.uf_synapse_updates + other.uf_synapse_updates,
        )


@dataclass
class SpikeSortResult:
    """Firing order of a spike sort, its time steps, and the model's cost.

    Attributes:
        order: Key indices in firing order, shape ``(n,)``, int64 (the array library of the
            keys).
        step_offsets: ``order[step_offsets[t]:step_offsets[t + 1]]`` fire at step ``t``;
            shape ``(time_steps + 1,)``, int64. ``None`` for the radix sort.
        lo: Key that fires at step 0 (the smallest key).
        quantum: Key units per time step.
        stats: The spiking model's cost.
    """

    order: Any
    step_offsets: Any
    lo: float
    quantum: float
    stats: SpikeStats = field(default_factory=SpikeStats)

    def firing_steps(self) -> np.ndarray:
        """Firing step of each entry of :attr:`order`, shape ``(n,)``, int64, nondecreasing."""
        if self.step_offsets is None:
            raise ValueError("the radix sort keeps no per-step offsets; use spike_sort")
        offsets = _host(self.step_offsets)
        return np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))

    def events(self, first_step: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """The event stream: ``(step, ids)`` for each step in which keys fire, in time order.

        A consumer reads it lazily and may stop early (``break``); nothing after that is
        touched.

        Example:
            >>> import numpy as np, fusekit
            >>> r = fusekit.ops.spike_sort(np.array([3, 1, 3, 0]))
            >>> [(int(t), ids.tolist()) for t, ids in r.events()]
            [(0, [3]), (1, [1]), (3, [0, 2])]
        """
        if self.step_offsets is None:
            raise ValueError("the radix sort keeps no per-step offsets; use spike_sort")
        offsets = _host(self.step_offsets)
        order = _host(self.order)
        active = np.flatnonzero(np.diff(offsets))
        for t in active[np.searchsorted(active, first_step):]:
            yield int(t), order[offsets[t]:offsets[t + 1]]


def vertex_dtype(n: int) -> type:
    """int32 for fewer than 2**31 vertices (half the memory traffic of a union-find), else int64.

    Measured: Kruskal's union-find loop at 2^18 Delaunay vertices took 28 ms with int32
    parent/size arrays against 42 ms with int64.
    """
    return np.int32 if n < 2**31 else np.int64


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _is_int(dtype: str) -> bool:
    return dtype in INT_KEY_DTYPES


# ------------------------------------------------------------------------------ input checks


def _require_key_array(op: str, name: str, keys: Any) -> None:
    """Refuse plain Python data and meta tensors before the grid reads the keys' values."""
    try:
        kind = kind_of(keys)
    except InputError as e:
        raise InputError(f"{op}: {name}: {e}") from None
    if kind.device == "meta":
        raise InputError(f"{op}: {name} is a meta tensor, which holds no values, but the spike "
                         "time grid is chosen from the values; pass a cpu or cuda tensor")


def _real(op: str, name: str, value: Any, rule: str) -> float:
    """``value`` as a float, or an :class:`InputError` saying ``name`` must be ``rule``."""
    bad = isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0
    try:
        x = math.nan if bad else float(value)
    except (TypeError, ValueError):
        bad = True
    if bad:
        raise InputError(f"{op}: {name} must be {rule}, got {value!r}")
    return x


def _check_key_type(op: str, keys: Any) -> str:
    _require_key_array(op, "keys", keys)
    require_ndim(op, "keys", keys, 1, "(n,)")
    dtype = array_dtype(keys)
    if dtype not in KEY_DTYPES:
        raise InputError(
            f"{op}: keys has dtype {dtype}; supported are {', '.join(KEY_DTYPES)}; cast with "
            ".astype(np.float64) or .astype(np.int64)"
        )
    return dtype


def _check_keys(op: str, keys: Any) -> str:
    dtype = _check_key_type(op, keys)
    if not _is_int(dtype) and keys.shape[0]:
        # min and max propagate NaN and show infinities without a temporary array
        lo, hi = float(keys.min()), float(keys.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            require_finite(op, "keys", keys)
    return dtype


def _check_spike_sort(keys: Any, *, lo: Any, quantum: Any, n_steps: int, exact: bool) -> str:
    return _check_keys("spike_sort", keys)


def _check_radix(
    keys: Any, *, lo: Any, quantum: Any, n_levels: int, radix_bits: int, exact: bool
) -> str:
    return _check_keys("spike_radix_sort", keys)


def _require_parent(op: str, parent: Any) -> None:
    require_ndim(op, "parent", parent, 1, "(n,)")
    if array_dtype(parent) not in VERTEX_DTYPES:
        raise InputError(f"{op}: parent must be int32 or int64, got {array_dtype(parent)}")
    n = parent.shape[0]
    # kernels follow parent pointers unchecked: every pointer must stay inside the array
    if n and not ids_in_range(parent, n):
        raise InputError(f"{op}: parent pointers must lie in [0, {n}); start from "
                         "np.arange(n) and change parent only through the union-find ops")


def _check_union(parent: Any, size: Any, u: Any, v: Any, order: Any, *, max_unions: int,
                 all_edges: bool = False) -> str:
    op = "union_find_union"
    _require_parent(op, parent)
    if tuple(size.shape) != tuple(parent.shape) or array_dtype(size) != array_dtype(parent):
        raise InputError(f"{op}: size must have parent's shape {tuple(parent.shape)} and dtype "
                         f"{array_dtype(parent)}, got {tuple(size.shape)} {array_dtype(size)}")
    for name, a in (("parent", parent), ("size", size)):
        # the op updates both in place (the docstring promises it): a copy would lose the result
        if not getattr(getattr(a, "flags", None), "writeable", True):
            raise InputError(f"{op}: {name} is read-only, but union_find_union updates it in "
                             f"place; pass a writeable array ({name}.copy(), or np.arange(n) "
                             "and np.ones(n) to start)")
    if array_dtype(order) != "int64":
        raise InputError(f"{op}: order must be int64, got {array_dtype(order)}")
    require_ndim(op, "u", u, 1, "(m,)")
    require_ndim(op, "order", order, 1, "(k,)")
    if tuple(v.shape) != tuple(u.shape):
        raise InputError(f"{op}: v must have u's shape {tuple(u.shape)}, got {tuple(v.shape)}")
    dtype = array_dtype(u)
    if dtype not in VERTEX_DTYPES or array_dtype(v) != dtype:
        raise InputError(f"{op}: u and v must share one dtype of {', '.join(VERTEX_DTYPES)}, "
                         f"got {dtype} and {array_dtype(v)}")
    # Kernels do not bounds-check: every vertex and edge id must be valid (values checked).
    n, m = parent.shape[0], u.shape[0]
    if not (ids_in_range(u, n) and ids_in_range(v, n)):
        raise InputError(f"{op}: vertex ids in u and v must lie in [0, {n}), the length of parent")
    if all_edges and order.shape[0]:
        raise InputError(f"{op}: with all_edges, order must be empty (every edge is processed "
                         f"in index order), got {order.shape[0]} ids")
    if not ids_in_range(order, m):
        raise InputError(f"{op}: edge ids in order must lie in [0, {m}), the length of u")
    return dtype


def _check_find(parent: Any, x: Any) -> str:
    op = "union_find_find"
    _require_parent(op, parent)
    require_ndim(op, "x", x, 1, "(k,)")
    dtype = array_dtype(x)
    if dtype not in VERTEX_DTYPES:
        raise InputError(f"{op}: x must be one of {', '.join(VERTEX_DTYPES)}, got {dtype}")
    n = parent.shape[0]
    if not ids_in_range(x, n):
        raise InputError(f"{op}: vertex ids in x must lie in [0, {n})")
    return dtype


def _check_gather(u: Any, v: Any, order: Any) -> str:
    op = "gather_endpoints"
    require_ndim(op, "u", u, 1, "(m,)")
    require_ndim(op, "order", order, 1, "(k,)")
    dtype = array_dtype(u)
    if dtype not in VERTEX_DTYPES or array_dtype(v) != dtype or tuple(v.shape) != tuple(u.shape):
        raise InputError(f"{op}: u and v must share one shape (m,) and one dtype of "
                         f"{', '.join(VERTEX_DTYPES)}, got {tuple(u.shape)} {dtype} and "
                         f"{tuple(v.shape)} {array_dtype(v)}")
    if array_dtype(order) != "int64":
        raise InputError(f"{op}: order must be int64, got {array_dtype(order)}")
    m = u.shape[0]
    if not ids_in_range(order, m):
        raise InputError(f"{op}: edge ids in order must lie in [0, {m}), the length of u")
    return dtype


def _check_sort_edges(keys: Any, u: Any, v: Any, *, lo: Any, quantum: Any, n_steps: int,
                      exact: bool) -> str:
    op = "spike_sort_edges"
    dtype = _check_keys(op, keys)
    require_ndim(op, "u", u, 1, "(m,)")
    vd = array_dtype(u)
    if (vd not in VERTEX_DTYPES or array_dtype(v) != vd or tuple(v.shape) != tuple(u.shape)
            or u.shape[0] != keys.shape[0]):
        raise InputError(f"{op}: u and v must share the keys' shape ({keys.shape[0]},) and one "
                         f"dtype of {', '.join(VERTEX_DTYPES)}, got {tuple(u.shape)} {vd} and "
                         f"{tuple(v.shape)} {array_dtype(v)}")
    return dtype


spike_sort_edges_op = Op(name="spike_sort_edges", family="spike", array_args=("keys", "u", "v"),
                         check=_check_sort_edges, params=("lo", "quantum", "n_steps", "exact"))
spike_sort_op = Op(name="spike_sort", family="spike", array_args=("keys",),
                   check=_check_spike_sort, params=("lo", "quantum", "n_steps", "exact"))
spike_radix_sort_op = Op(name="spike_radix_sort", family="spike", array_args=("keys",),
                         check=_check_radix,
                         params=("lo", "quantum", "n_levels", "radix_bits", "exact"))
union_find_union_op = Op(name="union_find_union", family="spike",
                         array_args=("parent", "size", "u", "v", "order"), check=_check_union,
                         params=("max_unions", "all_edges"))
gather_endpoints_op = Op(name="gather_endpoints", family="spike",
                         array_args=("u", "v", "order"), check=_check_gather)
union_find_find_op = Op(name="union_find_find", family="spike", array_args=("parent", "x"),
                        check=_check_find)


# ------------------------------------------------------------------------------ quantization


def time_grid(keys: Any, quantum: float | None = None, origin: float | None = None, *,
              max_steps: int = MAX_TIME_STEPS, op: str = "spike_sort"
              ) -> tuple[Any, Any, int]:
    """The spike-time grid of ``keys``: ``(lo, quantum, n_steps)``.

    Key ``k`` fires at step ``floor((k - lo) / quantum)``, ``0 <= step < n_steps``.

    Args:
        keys: Keys, shape ``(n,)``.
        quantum: Key units per step; default 1 for integer keys (while that gives at most
            ``max_steps`` steps; wider integer ranges get the integer quantum that gives about
            ``n / 2`` steps), ``2 (max - min) / n`` for float keys (about ``n / 2`` steps).
            Integer keys keep an integer quantum (exact integer arithmetic) unless their
            range reaches ``2**62``, where ``key - lo`` could overflow int64: then the grid is
            a float grid.
        origin: Key that fires at step 0, at most ``min(keys)``; default ``min(keys)``.
        max_steps: Most steps (levels) the caller's kernel can take.
        op: Name of the calling op, for error messages.

    Returns:
        ``(lo, quantum, n_steps)``; ``lo`` and ``quantum`` are ints for integer keys with an
        integral quantum.

    Raises:
        InputError: A quantum that is not positive and finite, an origin above the smallest
            key, float keys whose range overflows float64, more than ``max_steps`` steps.
    """
    if quantum is not None:
        qf = _real(op, "quantum", quantum, "a positive finite number")
        if not (qf > 0 and math.isfinite(qf)):
            raise InputError(f"{op}: quantum must be a positive finite number, got {quantum}")
    if origin is not None and not math.isfinite(
            _real(op, "origin", origin, "a finite number at most min(keys)")):
        raise InputError(f"{op}: origin must be a finite number at most min(keys), got {origin}")
    dtype = array_dtype(keys)
    n_hint = keys.shape[0]
    if keys.shape[0] == 0:
        return 0, 1, 0
    lo, hi = keys.min(), keys.max()
    if not _is_int(dtype) and not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        require_finite(op, "keys", keys)  # NaN or infinite keys: say which, and where
    if origin is not None:
        if float(origin) > float(lo):
            raise InputError(f"{op}: origin {origin} must not exceed the smallest key {lo}")
        lo = origin
    if _is_int(dtype) and float(lo) == int(lo) and int(hi) - int(lo) < INT_GRID_MAX_SPAN:
        lo, hi = int(lo), int(hi)
        if quantum is None:
            # one step per integer unless the grid would be too long for the kernel
            q: Any = 1 if hi - lo < max_steps else -(-(hi - lo + 1)
                                                     // default_float_steps(n_hint))
        elif float(quantum) == int(quantum):
            q = int(quantum)
        else:
            q = float(quantum)
        n_steps = int((hi - lo) // q) + 1
    else:
        lo, hi = float(lo), float(hi)
        span = hi - lo
        if not math.isfinite(span):
            raise InputError(
                f"{op}: the key range [{lo}, {hi}] is wider than float64 can hold (max - min "
                "overflows), so no time grid fits it; scale the keys down (any positive "
                "factor keeps their order)")
        if quantum is not None:
            q = float(quantum)
        elif _is_int(dtype) and span < max_steps:
            q = 1.0
        else:
            q = span / default_float_steps(n_hint) or 1.0
        steps = span / q
        if not steps < max_steps:  # also catches an infinite step count
            raise InputError(
                f"{op}: quantum {q} spreads the key range [{lo}, {hi}] over more than "
                f"{max_steps} time steps; use a larger quantum"
                + (" or spike_radix_sort" if op == "spike_sort" else ""))
        n_steps = int(math.floor(steps)) + 1
    if n_steps > max_steps:
        raise InputError(
            f"{op}: quantum {q} spreads the key range [{lo}, {hi}] over {n_steps} time "
            f"steps, more than {max_steps}; use a larger quantum"
            + (" or spike_radix_sort" if op == "spike_sort" else ""))
    return lo, q, n_steps


def sort_stats(n: int, n_steps: int, max_per_step: int, active_steps: int,
               qerr: float) -> SpikeStats:
    """Model cost of a spike sort of ``n`` keys over ``n_steps`` steps.

    One neuron per key plus a start neuron, one delay synapse from the start neuron to each
    key neuron; each key neuron spikes once, the start neuron once.
    """
    return SpikeStats(
        neurons=n + 1, synapses=n, spikes=n + (1 if n else 0), time_steps=n_steps,
        active_steps=active_steps, max_spikes_per_step=max(max_per_step, 1 if n else 0),
        mean_spikes_per_step=n / active_steps if active_steps else 0.0,
        quantization_error=qerr,
    )


# ----------------------------------------------------------------------------- public calls


def spike_sort(keys: Any, quantum: float | None = None, *, exact: bool = True,
               origin: float | None = None, backend: str | None = None) -> SpikeSortResult:
    """Sort ``keys`` by spike time: key ``k`` fires at step ``floor((k - min) / quantum)``.

    Example:
        >>> import numpy as np, fusekit
        >>> r = fusekit.ops.spike_sort(np.array([0.3, 0.1, 0.2, 0.1]))
        >>> r.order.tolist(), r.stats.time_steps
        ([1, 3, 2, 0], 3)

    Args:
        keys: Keys, shape ``(n,)``; int32, int64, uint8/16/32, float32 or float64 (finite);
            NumPy, or CuPy for the CUDA backend.
        quantum: Key units per time step. Default: 1 for integer keys (exact: one step per
            integer), ``2 (max - min) / n`` for float keys (about ``n / 2`` steps: two keys
            a step was the fastest grid for the CPU kernel, measured at 2^18 uniform keys).
        exact: Order keys that fire in the same step by their exact value (stable), so the
            order equals ``np.argsort(keys, kind="stable")``. With ``False`` a step's keys keep
            their input order (what a spiking network reading spikes per step sees).
        origin: Key that fires at step 0 (at most ``min(keys)``); default ``min(keys)``.
            Sorting parts of one key set with one origin keeps their steps on one grid.
        backend: ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Returns:
        A :class:`SpikeSortResult`: ``order`` (int64), ``step_offsets`` per time step, the
        time grid and the spiking model's :class:`SpikeStats`.
    """
    _check_key_type("spike_sort", keys)  # time_grid checks the values
    lo, q, n_steps = time_grid(keys, quantum, origin)
    order, offsets, qerr = spike_sort_op.run(
        (keys,), {"lo": lo, "quantum": q, "n_steps": n_steps, "exact": bool(exact)}, backend)
    return _sort_result(keys, order, offsets, qerr, lo, q, n_steps)


def spike_sort_edges(w: Any, u: Any, v: Any, quantum: float | None = None, *,
                     exact: bool = True, backend: str | None = None
                     ) -> tuple[SpikeSortResult, Any, Any]:
    """:func:`spike_sort` of edge weights, with the edges' endpoints laid out in firing order.

    What Kruskal's union-find stage reads: the events and their payload. The CPU kernel
    writes the endpoints in the sort's own scatter pass when it can (integer weights on a
    unit grid) instead of gathering them afterwards (measured at 2^20 vertices, weights
    1..255, one thread: Delaunay 31 ms against 53 ms for sort then gather, RGG 58 against
    143 ms), and gathers them as :func:`gather_endpoints` does otherwise.

    Example:
        >>> import numpy as np, fusekit
        >>> r, su, sv = fusekit.ops.spike_sort_edges(np.array([5, 2, 9]), np.array([0, 1, 2]),
        ...                                         np.array([1, 2, 0]))
        >>> r.order.tolist(), su.tolist(), sv.tolist()
        ([1, 0, 2], [1, 0, 2], [2, 1, 0])

    Args:
        w: Edge weights, shape ``(m,)``; the key dtypes of :func:`spike_sort`.
        u: First endpoints, shape ``(m,)``, int32 or int64.
        v: Second endpoints, shape ``(m,)``, the dtype of ``u``.
        quantum: As for :func:`spike_sort`.
        exact: As for :func:`spike_sort`.
        backend: ``"reference"``, ``"cpu"`` or ``"auto"``.

    Returns:
        ``(result, u[result.order], v[result.order])``: the :class:`SpikeSortResult` of
        ``spike_sort(w, quantum, exact=exact)`` and the endpoints in firing order.
    """
    _check_key_type("spike_sort_edges", w)  # time_grid checks the values
    lo, q, n_steps = time_grid(w, quantum, op="spike_sort_edges")
    order, offsets, qerr, su, sv = spike_sort_edges_op.run(
        (w, u, v), {"lo": lo, "quantum": q, "n_steps": n_steps, "exact": bool(exact)}, backend)
    return _sort_result(w, order, offsets, qerr, lo, q, n_steps), su, sv


def _sort_result(keys: Any, order: Any, offsets: Any, qerr: Any, lo: Any, q: Any,
                 n_steps: int) -> SpikeSortResult:
    host_counts = np.diff(_host(offsets))
    active = int(np.count_nonzero(host_counts))
    mx = int(host_counts.max()) if host_counts.size else 0
    stats = sort_stats(keys.shape[0], n_steps, mx, active, float(_host(qerr).reshape(-1)[0]))
    return SpikeSortResult(order, offsets, float(lo), float(q), stats)


def spike_radix_sort(keys: Any, quantum: float | None = None, *, radix_bits: int = 8,
                     exact: bool = True, backend: str | None = None) -> SpikeSortResult:
    """Sort ``keys`` with a least-significant-digit spiking radix sort.

    Each key is first quantized to a level ``floor((k - min) / quantum)``; each pass is a spike
    sort of one ``radix_bits``-bit digit of the level (``2**radix_bits`` time steps), stable,
    so after the last pass the keys are in level order. With ``exact=True`` keys of one level
    are then ordered by exact value.

    Example:
        >>> import numpy as np, fusekit
        >>> r = fusekit.ops.spike_radix_sort(np.array([700, 3, 255, 3]), radix_bits=4)
        >>> r.order.tolist(), r.stats.time_steps
        ([1, 3, 2, 0], 48)

    Args:
        keys: Keys, shape ``(n,)``; as for :func:`spike_sort`.
        quantum: Key units per level; defaults as for :func:`spike_sort`.
        radix_bits: Bits per digit, 1 to 16.
        exact: Order keys of one level by their exact value.
        backend: ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Returns:
        A :class:`SpikeSortResult` with ``step_offsets=None``; ``stats.time_steps`` sums
        ``2**radix_bits`` over the passes and ``max_spikes_per_step`` is the largest over them.
    """
    _check_key_type("spike_radix_sort", keys)  # time_grid checks the values
    check_counts("spike_radix_sort", radix_bits=radix_bits)
    if not 1 <= radix_bits <= 16:
        raise InputError(f"spike_radix_sort: radix_bits must be 1 to 16, got {radix_bits}")
    lo, q, n_levels = time_grid(keys, quantum, op="spike_radix_sort")
    order, pass_stats, qerr = spike_radix_sort_op.run(
        (keys,), {"lo": lo, "quantum": q, "n_levels": n_levels, "radix_bits": int(radix_bits),
                  "exact": bool(exact)}, backend)
    n = keys.shape[0]
    pass_stats = _host(pass_stats).reshape(-1, 2)
    passes = pass_stats.shape[0]
    active = int(pass_stats[:, 1].sum())
    stats = SpikeStats(
        neurons=n + passes, synapses=n * max(passes, 1), spikes=n * passes + passes,
        time_steps=passes << int(radix_bits), active_steps=active,
        max_spikes_per_step=int(pass_stats[:, 0].max()) if passes else 0,
        mean_spikes_per_step=n * passes / active if active else 0.0,
        quantization_error=float(_host(qerr).reshape(-1)[0]),
    )
    return SpikeSortResult(order, None, float(lo), float(q), stats)


def union_find_union(parent: Any, size: Any, u: Any, v: Any, order: Any | None = None, *,
                     max_unions: int | None = None,
                     backend: str | None = None) -> tuple[Any, np.ndarray]:
    """Union the endpoints of edges ``order[0], order[1], ...`` in that order, in place.

    Edge ``e`` is *accepted* when ``u[e]`` and ``v[e]`` were in different components when its
    turn came (Kruskal's test). Finds use path halving, unions link the smaller tree under the
    larger. Processing stops once ``max_unions`` edges have been accepted.

    Example:
        >>> import numpy as np, fusekit
        >>> parent, size = np.arange(3), np.ones(3, np.int64)
        >>> acc, cnt = fusekit.ops.union_find_union(parent, size, np.array([0, 1, 0]),
        ...                                         np.array([1, 2, 2]))
        >>> acc.tolist(), int(cnt[2])
        ([True, True, False], 2)

    Args:
        parent: Parent pointers, shape ``(n,)``, int32 or int64; modified in place. Start
            from ``np.arange(n)``; the pointers must form a forest (as the ops leave them).
        size: Tree sizes (valid at roots), shape ``(n,)``, parent's dtype; modified in place.
        u: First endpoints, shape ``(m,)``, int32 or int64, in ``[0, n)``.
        v: Second endpoints, shape ``(m,)``, the dtype of ``u``.
        order: Edge ids to process, in order, shape ``(k,)``, int64; default all edges in
            index order (the kernels then read no order array: faster).
        max_unions: Stop after this many accepted edges; default no limit.
        backend: ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Returns:
        ``(accepted, counters)``: ``accepted`` bool of shape ``(k,)`` per entry of ``order``;
        ``counters`` int64 NumPy ``[finds, hops, unions, processed, synapse_updates]``:
        ``processed`` counts the edges looked at, ``synapse_updates`` the vertices of the
        smaller side of each union (in the spiking model every vertex neuron keeps a synapse
        to its root, so a union rewires those).
    """
    all_edges = order is None
    if all_edges:  # kernels then take the edges in index order and never read ``order``
        order = _empty_ids_like("union_find_union", u)
    if max_unions is not None:
        check_counts("union_find_union", max_unions=max_unions)
    limit = np.iinfo(np.int64).max if max_unions is None else max_unions
    accepted, counters = union_find_union_op.run(
        (parent, size, u, v, order), {"max_unions": limit, "all_edges": all_edges}, backend)
    return accepted, _host(counters)


def _empty_ids_like(op: str, u: Any) -> Any:
    """An empty int64 array of ``u``'s library and device (the unread ``order``)."""
    try:
        kind = kind_of(u)
    except InputError as e:
        raise InputError(f"{op}: u: {e}") from None
    if kind.framework == "torch":
        import torch

        return torch.empty(0, dtype=torch.int64, device=u.device)
    if kind.framework == "cupy":
        import cupy

        return cupy.empty(0, dtype=cupy.int64)
    return np.empty(0, dtype=np.int64)


def gather_endpoints(u: Any, v: Any, order: Any, *, backend: str | None = None
                     ) -> tuple[Any, Any]:
    """Endpoints of edges in firing order: the payload the events carry to union-find.

    Example:
        >>> import numpy as np, fusekit
        >>> gu, gv = fusekit.ops.gather_endpoints(np.array([0, 1, 2]), np.array([1, 2, 0]),
        ...                                       np.array([2, 0]))
        >>> gu.tolist(), gv.tolist()
        ([2, 0], [0, 1])

    Args:
        u: First endpoints, shape ``(m,)``, int32 or int64.
        v: Second endpoints, shape ``(m,)``, the dtype of ``u``.
        order: Edge ids, shape ``(k,)``, int64, in ``[0, m)`` (e.g. a spike sort's order).
        backend: ``"reference"``, ``"cpu"`` or ``"auto"``; the CPU kernel gathers on
            ``fusekit.get_num_threads()`` threads for large ``k``.

    Returns:
        ``(u[order], v[order])``, shape ``(k,)`` each, the dtype of ``u``.
    """
    return gather_endpoints_op.run((u, v, order), {}, backend)


def union_find_find(parent: Any, x: Any, *, backend: str | None = None) -> Any:
    """Roots of vertices ``x`` (no path compression, so ``parent`` is unchanged).

    Args:
        parent: Parent pointers, shape ``(n,)``, int32 or int64.
        x: Vertices, shape ``(k,)``, int32 or int64, in ``[0, n)``.
        backend: ``"reference"``, ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Returns:
        Roots, shape ``(k,)``, int64.

    Raises:
        InputError: ``parent`` has a cycle (a walk longer than ``n`` hops), so some vertex
            has no root; the kernels mark such vertices with -1.
    """
    roots = union_find_find_op.run((parent, x), {}, backend)
    if roots.shape[0] and int(roots.min()) < 0:
        raise InputError("union_find_find: parent has a cycle (following parent pointers from "
                         "some vertex never reaches a root), so it is no union-find forest; "
                         "start from np.arange(n) and change parent only through the "
                         "union-find ops")
    return roots


class UnionFind:
    """Disjoint sets over ``n`` vertices with batched, ordered union and event counters.

    Example:
        >>> import numpy as np, fusekit
        >>> uf = fusekit.ops.UnionFind(4)
        >>> uf.union(np.array([0, 2, 1]), np.array([1, 3, 0])).tolist()
        [True, True, False]
        >>> uf.n_components, uf.unions
        (2, 2)

    Args:
        n: Number of vertices.
        backend: Backend of the kernels (``None``: the usual selection).

    Attributes:
        finds: Finds performed so far; hops: parent hops of those finds; unions: unions
        performed; synapse_updates: root synapses rewired by those unions.
    """

    def __init__(self, n: int, *, backend: str | None = None) -> None:
        check_counts("UnionFind", n=n)
        dtype = vertex_dtype(n)
        self.parent = np.arange(n, dtype=dtype)
        self.size = np.ones(n, dtype=dtype)
        self.backend = backend
        self.finds = self.hops = self.unions = self.synapse_updates = 0

    @property
    def n_components(self) -> int:
        """Number of disjoint sets."""
        return self.parent.shape[0] - self.unions

    def union(self, us: Any, vs: Any, *, max_unions: int | None = None) -> np.ndarray:
        """Union ``us[i]`` with ``vs[i]`` for ``i = 0, 1, ...``; True where two sets merged."""
        us, vs = _vertex_ids("UnionFind.union", "us", us), _vertex_ids("UnionFind.union", "vs", vs)
        if us.dtype != vs.dtype:
            us, vs = us.astype(np.int64), vs.astype(np.int64)
        acc, cnt = union_find_union(self.parent, self.size, us, vs, max_unions=max_unions,
                                    backend=self.backend)
        self.finds += int(cnt[0])
        self.hops += int(cnt[1])
        self.unions += int(cnt[2])
        self.synapse_updates += int(cnt[4])
        return acc

    def find(self, xs: Any) -> np.ndarray:
        """Roots of ``xs``, shape of ``xs``, int64."""
        xs = _vertex_ids("UnionFind.find", "xs", xs)
        flat = xs.reshape(-1).astype(np.int64, copy=False)
        return np.asarray(union_find_find(self.parent, flat, backend=self.backend)).reshape(
            xs.shape)

    def stats(self) -> SpikeStats:
        """The union-find side of the spiking model: one neuron and parent synapse a vertex."""
        n = self.parent.shape[0]
        return SpikeStats(neurons=n, synapses=n, spikes=self.hops, uf_events=self.finds // 2,
                          uf_hops=self.hops, uf_unions=self.unions,
                          uf_synapse_updates=self.synapse_updates)


def _vertex_ids(op: str, name: str, ids: Any) -> np.ndarray:
    """``ids`` as an int32/int64 NumPy array; non-integers are refused, not truncated."""
    a = np.asarray(ids)
    if a.dtype.kind not in "iu" and a.size:  # bools, floats, strings: no vertex ids
        raise InputError(f"{op}: {name} must hold integer vertex ids, got dtype {a.dtype}; "
                         "pass whole numbers (np.int64), not floats, bools or strings")
    if a.dtype not in (np.int32, np.int64):
        a = a.astype(np.int64)
    return a


# ---------------------------------------------------------------------- float64 references


def _levels_reference(keys: np.ndarray, lo: Any, quantum: Any, n_levels: int) -> np.ndarray:
    if _is_int(keys.dtype.name) and isinstance(quantum, int):
        lv = (keys.astype(np.int64) - int(lo)) // quantum
    else:
        lv = np.floor((keys.astype(np.float64) - float(lo)) / float(quantum)).astype(np.int64)
    return np.minimum(lv, max(n_levels - 1, 0))


def _qerr_reference(keys: np.ndarray, lo: Any, quantum: Any, levels: np.ndarray) -> np.ndarray:
    if keys.size == 0:
        return np.zeros(1)
    err = (keys.astype(np.float64) - float(lo)) - levels * float(quantum)
    return np.array([float(err.max())])


def _exact(keys: np.ndarray) -> np.ndarray:
    """Keys as compared exactly: integers as they are (float64 would merge keys above 2**53)."""
    return keys if _is_int(keys.dtype.name) else keys.astype(np.float64)


def spike_sort_reference(keys: np.ndarray, *, lo: Any, quantum: Any, n_steps: int,
                         exact: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy oracle of the spike-sort kernel: ``(order, step_offsets, [quantization error])``."""
    steps = _levels_reference(keys, lo, quantum, n_steps)
    if exact:
        order = np.lexsort((np.arange(keys.size), _exact(keys), steps))
    else:
        order = np.argsort(steps, kind="stable")
    offsets = np.zeros(n_steps + 1, dtype=np.int64)
    np.cumsum(np.bincount(steps, minlength=n_steps), out=offsets[1:])
    return order.astype(np.int64), offsets, _qerr_reference(keys, lo, quantum, steps)


def spike_sort_edges_reference(keys: np.ndarray, u: np.ndarray, v: np.ndarray, *, lo: Any,
                               quantum: Any, n_steps: int, exact: bool) -> tuple[np.ndarray, ...]:
    """NumPy oracle of the edge sort: the spike sort's outputs, then ``u[order], v[order]``."""
    order, offsets, qerr = spike_sort_reference(keys, lo=lo, quantum=quantum, n_steps=n_steps,
                                                exact=exact)
    return order, offsets, qerr, u[order], v[order]


def spike_radix_sort_reference(keys: np.ndarray, *, lo: Any, quantum: Any, n_levels: int,
                               radix_bits: int, exact: bool
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy oracle of the radix kernel: ``(order, pass_stats, [err])``.

    ``pass_stats[p] = (most keys firing in one step, steps in which keys fire)`` of pass ``p``.
    """
    levels = _levels_reference(keys, lo, quantum, n_levels)
    order = np.arange(keys.size, dtype=np.int64)
    passes = radix_passes(n_levels, radix_bits)
    pass_stats = np.zeros((passes, 2), dtype=np.int64)
    mask = (1 << radix_bits) - 1
    for p in range(passes):
        digit = (levels[order] >> (p * radix_bits)) & mask
        counts = np.bincount(digit)
        pass_stats[p] = counts.max(), np.count_nonzero(counts)
        order = order[np.argsort(digit, kind="stable")]
    if exact:
        order = np.lexsort((np.arange(keys.size), _exact(keys), levels))
    return order.astype(np.int64), pass_stats, _qerr_reference(keys, lo, quantum, levels)


def radix_passes(n_levels: int, radix_bits: int) -> int:
    """Digit passes a radix sort over ``n_levels`` levels needs (at least one for any key)."""
    if n_levels <= 0:
        return 0
    return max(1, -(-max(int(n_levels - 1).bit_length(), 1) // radix_bits))


def union_find_union_reference(parent: np.ndarray, size: np.ndarray, u: np.ndarray,
                               v: np.ndarray, order: np.ndarray, *, max_unions: int,
                               all_edges: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Plain-Python oracle of the union kernel (same path halving and union by size).

    ``all_edges``: ``order`` is empty and every edge is processed in index order (what
    :func:`union_find_union` passes for ``order=None``).
    """
    if all_edges:
        order = np.arange(u.shape[0], dtype=np.int64)
    accepted = np.zeros(order.shape[0], dtype=bool)
    finds = hops = unions = processed = rewired = 0
    for k in range(order.shape[0]):
        if unions >= max_unions:
            break
        e = int(order[k])
        roots = []
        for x in (int(u[e]), int(v[e])):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = int(parent[x])
                hops += 1
            roots.append(x)
        finds += 2
        processed += 1
        a, b = roots
        if a != b:
            if size[a] < size[b]:
                a, b = b, a
            parent[b] = a
            size[a] += size[b]
            rewired += int(size[b])
            unions += 1
            accepted[k] = True
    return accepted, np.array([finds, hops, unions, processed, rewired], dtype=np.int64)


def gather_endpoints_reference(u: np.ndarray, v: np.ndarray, order: np.ndarray
                               ) -> tuple[np.ndarray, np.ndarray]:
    """NumPy oracle of the gather: fancy indexing."""
    return u[order], v[order]


def union_find_find_reference(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    """NumPy oracle of the find kernel: follow parents to the root."""
    r = x.astype(np.int64)
    for _ in range(parent.shape[0] + 1):  # a root is at most n - 1 hops away
        nxt = parent[r]
        if np.array_equal(nxt, r):
            return r
        r = nxt
    r[parent[r] != r] = -1  # on a cycle: no root (union_find_find raises)
    return r

