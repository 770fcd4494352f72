"""``fusekit mst FILE``: the minimum spanning forest of a graph file, its cost and timings.

Reads a METIS ``.graph``, DIMACS ``.gr`` or Matrix Market ``.mtx`` file with the readers of
:mod:`fusekit.mst.graphs`, runs :func:`~fusekit.mst.minimum_spanning_forest` and prints the
forest's total weight, component count and edge count, the wall time of each stage and the
spiking model's figures (:meth:`~fusekit.mst.MSTResult.schedule` for ``p`` events per step).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from .._errors import FusekitError
from .._timing import format_seconds

#: File formats: name -> (reader name in fusekit.mst.graphs, what it is called in messages).
FORMATS = {
    "metis": ("read_metis", "METIS"),
    "gr": ("read_dimacs_gr", "DIMACS .gr"),
    "mtx": ("read_matrix_market", "Matrix Market"),
}
#: File name extensions of each format.
EXTENSIONS = {".graph": "metis", ".metis": "metis", ".gr": "gr", ".mtx": "mtx"}
#: Edges of the warm-up call that compiles or loads the kernels before the timed run: enough
#: for the kernels that run only on large inputs (the parallel spike sort from 2^15 keys).
WARMUP_EDGES = 1 << 16


class CommandError(FusekitError):
    """A problem with the command's arguments or its file; the message says what to do."""


def format_of(path: str, fmt: str | None) -> str:
    """The format to read ``path`` with: ``fmt`` if given, else by the file's extension."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise CommandError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    ext = Path(path).suffix.lower()
    if ext not in EXTENSIONS:
        known = ", ".join(f"{e} ({f})" for e, f in EXTENSIONS.items())
        raise CommandError(f"cannot tell the format of {path} from its extension "
                           f"{ext or '(none)'!r}; known are {known}; pass --format "
                           f"{'|'.join(FORMATS)}")
    return EXTENSIONS[ext]


def _read(path: str, fmt: str) -> tuple[tuple, float]:
    from . import graphs

    reader_name, label = FORMATS[fmt]
    if not os.path.exists(path):
        raise CommandError(f"no such file: {path}")
    if os.path.isdir(path):
        raise CommandError(f"{path} is a directory, not a graph file")
    reader: Callable[[str], tuple] = getattr(graphs, reader_name)
    t = time.perf_counter()
    try:
        graph = reader(path)
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    except (ValueError, IndexError, OSError) as exc:  # InputError is a ValueError
        raise CommandError(f"cannot read {path} as a {label} file: {exc}") from None
    return graph, time.perf_counter() - t


def run(path: str, *, method: str = "auto", fmt: str | None = None, p: int = 1,
        out: TextIO) -> None:
    """Compute the forest of the graph in ``path`` and print the report to ``out``.

    Args:
        path: The graph file.
        method: A method of :func:`~fusekit.mst.minimum_spanning_forest`.
        fmt: ``"metis"``, ``"gr"`` or ``"mtx"``; default by the file's extension.
        p: Union-find events per time step in the spiking model's schedule.
        out: Where the report goes.

    Raises:
        CommandError: A missing or unreadable file, an unknown format or method, ``p < 1``.
    """
    from ._forest import METHODS, choose_method, minimum_spanning_forest
    from ._input import EdgeList, edge_list

    if method not in METHODS:
        raise CommandError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if p < 1:
        raise CommandError(f"--p must be at least 1 event per time step, got {p}")
    fmt = format_of(path, fmt)
    (u, v, w, n), t_read = _read(path, fmt)
    try:
        t = time.perf_counter()
        g = edge_list(u, v, w, n)
        t_check = time.perf_counter() - t
        if method == "auto":
            method = choose_method(g)
        # A first call in a process compiles the Numba kernels or loads them from the cache;
        # a call on a few edges of the same dtypes does that before the timed run.
        k = min(g.u.shape[0], WARMUP_EDGES)
        minimum_spanning_forest(EdgeList(g.u[:k], g.v[:k], g.w[:k], g.n), method=method)
        r = minimum_spanning_forest(g, method=method)
    except FusekitError as exc:
        raise CommandError(f"{path}: {exc}") from None
    rows: list[tuple[str, str]] = [
        ("graph", f"{path} ({FORMATS[fmt][1]}): {n:,} vertices, {u.shape[0]:,} edges, "
                  f"{g.w.dtype} weights"),
        ("method", r.method),
        ("total weight", str(r.total_weight)),
        ("components", f"{r.n_components:,}"),
        ("edges in the forest", f"{r.edges.size:,}"),
    ]
    print(_lines(rows), file=out)
    print(f"wall time per stage (after a warm-up call on {k:,} edges):", file=out)
    stages = [("read file", t_read), ("check input", t_check), *r.timings.items()]
    print(_lines([(name, format_seconds(s)) for name, s in stages], indent="  "), file=out)
    print(f"spiking model, p = {p} union-find event(s) per time step:", file=out)
    try:
        s = r.schedule(p)
    except FusekitError as exc:
        print(f"  not available: {exc}", file=out)
        return
    st = r.stats
    model = [
        ("quantum", f"{s.quantum:g} weight units per step"),
        ("sort grid", f"{s.sort_steps:,} steps"),
        ("events examined", f"{s.events:,} (up to the heaviest tree edge, which fires at "
                            f"step {s.last_tree_step:,}; at most {s.max_events_per_step:,} "
                            "in one step)"),
        ("serial Kruskal", f"{s.serial_steps:,} steps"),
        ("pipelined Kruskal", f"{s.pipelined_steps:,} steps"),
        ("spiking Prim's", f"{s.prim_steps:,} steps (a lower bound; see docs/mst.md)"),
        *((name, f"{ratio:,.2f}x") for name, ratio in s.speedups().items()),
        ("network", f"{st.neurons:,} neurons, {st.synapses:,} synapses, {st.spikes:,} spikes"
                    f" in this run, {st.uf_unions:,} unions, {st.uf_hops:,} find hops"),
    ]
    print(_lines(model, indent="  "), file=out)


def _lines(rows: list[tuple[str, str]], indent: str = "") -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{indent}{k.ljust(width)}  {val}" for k, val in rows)
