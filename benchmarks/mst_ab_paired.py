"""Paired end-to-end timing of ``minimum_spanning_forest`` for two source trees, and SciPy.

Compares the fusekit in ``--old-src`` (e.g. an older commit unpacked with
``git archive <commit> src | tar -x -C /tmp/old``; optional) with this checkout's at 2^20
vertices. Round after round, one process per tree (then one per SciPy variant) loads the
graphs, warms up and times ``--calls`` calls per graph; each round's ratios compare runs made
moments apart, which is what a shared, loaded machine allows. Prints min and median per
variant and graph and the per-round ratios ``variant / new``. Variants: ``old``, ``new``
(fusekit from COO arrays, ``method="auto"``, validation included), ``scipy``
(``minimum_spanning_tree`` with the CSR matrix built beforehand: the issue's 3x and 4.5x
goals) and ``scipy_e2e`` (SciPy from the same COO arrays, its ``coo -> csr`` build timed
too: the issue's 3.5x end-to-end goal).

    git archive 592334f src | tar -x -C /tmp/old
    PYTHONPATH=src python benchmarks/mst_ab_paired.py --old-src /tmp/old/src --rounds 3
    PYTHONPATH=src python benchmarks/mst_ab_paired.py --threads 2 --rounds 3  # no old tree
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

GRAPHS = ("delaunay:uniform,delaunay:int255,delaunay:int1000,rgg:uniform,rgg:int255,"
          "rgg:int1000")


def worker(variant: str, specs: list[str], scale: int, calls: int, cache: str | None,
           threads: int) -> None:
    """Runs in the child: prints one JSON line, ``{graph: [ms, ...]}``."""
    import fusekit
    from fusekit.mst import graphs, minimum_spanning_forest

    fusekit.set_num_threads(threads)

    gens = {"delaunay": graphs.delaunay_graph, "rgg": graphs.random_geometric_graph}
    out: dict[str, list[float]] = {}
    for spec in specs:
        family, scheme = spec.split(":")
        path = os.path.join(cache, f"{family}_{scale}.npz") if cache else None
        if path and os.path.exists(path):
            d = np.load(path)
            u, v, n = d["u"], d["v"], int(d["n"])
        else:
            u, v, _, n = gens[family](1 << scale, seed=0, weights="uniform")
            if path:
                os.makedirs(cache, exist_ok=True)
                np.savez(path, u=u, v=v, n=n)
        w = graphs.edge_weights(u.shape[0], scheme, seed=1)
        if variant == "scipy":
            import scipy.sparse as sp
            from scipy.sparse.csgraph import minimum_spanning_tree

            csr = sp.csr_matrix((w.astype(np.float64), (u, v)), shape=(n, n))

            def run(csr=csr) -> None:
                minimum_spanning_tree(csr)
        elif variant == "scipy_e2e":
            import scipy.sparse as sp
            from scipy.sparse.csgraph import minimum_spanning_tree

            def run(u=u, v=v, w=w, n=n) -> None:
                # SciPy needs float weights and a CSR matrix: both conversions are timed
                coo = sp.coo_matrix((w.astype(np.float64), (u, v)), shape=(n, n))
                minimum_spanning_tree(coo.tocsr())
        else:
            def run(u=u, v=v, w=w, n=n) -> None:
                minimum_spanning_forest(u, v, w, n)
        run()  # warm-up: Numba's cache load, first touches
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1e3)
        out[spec] = times
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old-src", default=None,
                    help="the src folder of an older fusekit to compare with (optional)")
    ap.add_argument("--graphs", default=GRAPHS)
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=2, help="timed calls per graph and process")
    ap.add_argument("--cache", default=None, help="folder to keep generated graphs in")
    ap.add_argument("--threads", type=int, default=1, help="fusekit.set_num_threads")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    specs = args.graphs.split(",")
    if args.worker:
        worker(args.worker, specs, args.scale, args.calls, args.cache, args.threads)
        return
    here = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
    trees = {"new": here, "scipy": here, "scipy_e2e": here}
    if args.old_src:
        trees = {"old": os.path.abspath(args.old_src), **trees}
    times: dict[str, dict[str, list[float]]] = {k: {s: [] for s in specs} for k in trees}
    print(f"load average at start: {os.getloadavg()}", flush=True)
    for r in range(args.rounds):
        for variant, src in trees.items():
            env = dict(os.environ, PYTHONPATH=src)
            cmd = [sys.executable, os.path.abspath(__file__), "--graphs", args.graphs,
                   "--scale", str(args.scale), "--calls", str(args.calls), "--threads",
                   str(args.threads), "--worker", variant]
            if args.cache:
                cmd += ["--cache", args.cache]
            res = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                            text=True).stdout.strip().splitlines()[-1])
            for s in specs:
                times[variant][s].append(min(res[s]))
        print(f"round {r + 1} done, load {os.getloadavg()[0]:.1f}", flush=True)
    for s in specs:
        new = np.array(times["new"][s])
        print(s)
        for variant in trees:
            t = np.array(times[variant][s])
            print(f"  {variant:9s} min {t.min():8.1f} ms  median {np.median(t):8.1f} ms  "
                  f"{variant}/new per round: " + " ".join(f"{x:.2f}" for x in t / new))


if __name__ == "__main__":
    main()
