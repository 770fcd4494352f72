"""Paired timing of spike-Kruskal's union-find stage at 2^20 vertices: before and after.

The union-find stage of ``minimum_spanning_forest(method="spike-kruskal")`` is the endpoint
gather (``u[order], v[order]``) and Kruskal's loop over the gathered endpoints. This script
builds the graphs once, spike-sorts each weight scheme once, then runs the variants in turn,
round after round, so that each round's ratio compares runs made seconds apart (the machine
these were measured on is shared and loaded; read the per-round ratios, not the absolute
times). Variants:

* ``old``: the stage as it was: NumPy fancy indexing, then the loop without prefetch
  (``ahead=0``), reading every edge id through an ``np.arange`` order;
* ``gather``: the new gather (interleaved endpoints, prefetched), the old loop;
* ``new``: the stage as ``minimum_spanning_forest`` runs it now (``fusekit.ops``);
* ``newD``: the new stage with prefetch distance ``D`` (e.g. ``new8``, ``new32``);
* ``scipy``: SciPy's ``minimum_spanning_tree`` with the CSR matrix built beforehand (the
  issue's baseline), ``auto``: the whole ``minimum_spanning_forest`` call.

Every variant's accepted edges and counters are checked against ``old``'s.

    PYTHONPATH=src python benchmarks/mst_uf_paired.py --rounds 5 \\
        --graphs delaunay:uniform,rgg:int255 --variants old,new,scipy,auto
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from fusekit.backends.cpu import spike as cpu_spike
from fusekit.mst import graphs, minimum_spanning_forest
from fusekit.ops import spike

GENERATORS = {"delaunay": graphs.delaunay_graph, "rgg": graphs.random_geometric_graph}


def load_graph(family: str, scale: int, cache: str | None) -> tuple[Any, Any, int]:
    """``u, v, n`` of a generated graph (from ``cache`` if it holds it)."""
    path = os.path.join(cache, f"{family}_{scale}.npz") if cache else None
    if path and os.path.exists(path):
        d = np.load(path)
        return d["u"], d["v"], int(d["n"])
    u, v, _, n = GENERATORS[family](1 << scale, seed=0, weights="uniform")
    if path:
        os.makedirs(cache, exist_ok=True)
        np.savez(path, u=u, v=v, n=n)
    return u, v, n


def stage(variant: str, u: Any, v: Any, order: Any, n: int, target: int) -> Any:
    """One union-find stage: ``(accepted, counters)``."""
    parent = np.arange(n, dtype=spike.vertex_dtype(n))
    size = np.ones(n, dtype=parent.dtype)
    acc = None
    if variant in ("old", "gather"):
        if variant == "old":
            eu, ev = u[order], v[order]
        else:
            eu, ev = spike.gather_endpoints(u, v, order, backend="cpu")
        acc = np.zeros(eu.shape[0], np.bool_)
        cnt = np.zeros(5, np.int64)
        cpu_spike.ordered_union(parent, size, eu, ev, np.arange(eu.shape[0]), 0, eu.shape[0],
                                target, acc, cnt, False, 0)
        return acc, cnt
    eu, ev = spike.gather_endpoints(u, v, order, backend="cpu")
    if variant == "new":
        return spike.union_find_union(parent, size, eu, ev, max_unions=target, backend="cpu")
    ahead = int(variant[3:])
    acc = np.zeros(eu.shape[0], np.bool_)
    cnt = np.zeros(5, np.int64)
    cpu_spike.ordered_union(parent, size, eu, ev, eu, 0, eu.shape[0], target, acc, cnt, True,
                            ahead)
    return acc, cnt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=int, default=20, help="log2 of the vertex count")
    ap.add_argument("--graphs", default="delaunay:uniform,delaunay:int255,rgg:int255",
                    help="family:weights,... (families delaunay, rgg)")
    ap.add_argument("--variants", default="old,gather,new")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cache", default=None, help="folder to keep generated graphs in")
    args = ap.parse_args()
    variants = args.variants.split(",")
    print(f"load average at start: {os.getloadavg()}")
    for spec in args.graphs.split(","):
        family, scheme = spec.split(":")
        u, v, n = load_graph(family, args.scale, args.cache)
        w = graphs.edge_weights(u.shape[0], scheme, seed=1)
        order = spike.spike_sort(w, exact=True, backend="cpu").order
        touched = np.zeros(n, np.bool_)
        touched[u] = True
        touched[v] = True
        target = int(touched.sum()) - 1
        csr = None
        if "scipy" in variants:
            import scipy.sparse as sp
            from scipy.sparse.csgraph import minimum_spanning_tree

            csr = sp.csr_matrix((w.astype(np.float64), (u, v)), shape=(n, n))
        times: dict[str, list[float]] = {s: [] for s in variants}
        ref = None
        for r in range(args.rounds + 1):  # round 0 warms up (compiles, first touches)
            for s in variants:
                t = time.perf_counter()
                if s == "scipy":
                    out = minimum_spanning_tree(csr).sum()
                elif s == "auto":
                    out = minimum_spanning_forest(u, v, w, n).total_weight
                else:
                    out = stage(s, u, v, order, n, target)
                dt = time.perf_counter() - t
                if s not in ("scipy", "auto"):
                    if ref is None:
                        ref = out
                    assert np.array_equal(out[0], ref[0]) and np.array_equal(out[1], ref[1]), s
                if r:
                    times[s].append(dt * 1e3)
        print(f"{family} {scheme}: n={n} m={u.shape[0]}, counters {ref[1].tolist() if ref else ''}"
              f", load {os.getloadavg()[0]:.1f}")
        base = np.array(times[variants[0]])
        for s in variants:
            t = np.array(times[s])
            print(f"  {s:7s} min {t.min():8.1f} ms  median {np.median(t):8.1f} ms  "
                  f"{variants[0]}/{s} per round: " + " ".join(f"{x:.2f}" for x in base / t),
                  flush=True)


if __name__ == "__main__":
    main()
