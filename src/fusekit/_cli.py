"""The ``fusekit`` command: ``info``, ``tour``, ``bench`` and ``mst``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ._timing import format_seconds, table


def _find_benchmarks(path: str | None) -> Path:
    candidates = [Path(path)] if path else [
        Path.cwd() / "benchmarks",
        Path(__file__).resolve().parents[2] / "benchmarks",  # source checkout: src/fusekit/..
    ]
    for c in candidates:
        if c.is_dir():
            return c
    tried = ", ".join(str(c) for c in candidates)
    raise SystemExit(
        f"fusekit bench: no benchmarks/ folder found (looked in {tried}); run it from a clone "
        "of the fusekit repository or pass --path"
    )


def comparison_rows(report: dict) -> list[list[str]]:
    """Rows of ``group, benchmark, median, ratio to fusekit`` from a pytest-benchmark JSON."""
    groups: dict[str, list[dict]] = {}
    for b in report.get("benchmarks", []):
        groups.setdefault(b.get("group") or "(no group)", []).append(b)
    rows = []
    for group, benches in sorted(groups.items()):
        ours = [b for b in benches if "fusekit" in b["name"]]
        base = min((b["stats"]["median"] for b in ours), default=None)
        for b in sorted(benches, key=lambda b: b["stats"]["median"]):
            med = b["stats"]["median"]
            ratio = f"{med / base:.2f}x" if base else "-"
            rows.append([group, b["name"].removeprefix("test_"), format_seconds(med), ratio])
    return rows


def paired_rows(report: dict) -> list[list[str]]:
    """Rows of ``benchmark, measure, value`` for the ratios a benchmark measured in pairs.

    (``extra_info`` keys ending in ``_ratio_min`` or ``_ratio_median``: e.g. the FP8 product
    against a stream read of the same bytes, each pair timed moments apart.)
    """
    rows = []
    for b in report.get("benchmarks", []):
        for key, value in sorted(b.get("extra_info", {}).items()):
            if key.endswith(("_ratio_min", "_ratio_median")) and isinstance(value, float):
                rows.append([b["name"].removeprefix("test_"), key, f"{value:.3f}"])
    return rows


def _bench(args: argparse.Namespace) -> int:
    bench_dir = _find_benchmarks(args.path)
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "bench.json"
        cmd = [sys.executable, "-m", "pytest", str(bench_dir), "-q", "-p", "no:cacheprovider",
               "--benchmark-only", f"--benchmark-json={report_path}",
               "--benchmark-group-by=group", "--benchmark-columns=min,median,mean,rounds"]
        if args.group:
            cmd += ["-k", args.group]
        cmd += args.pytest_args
        # A pytest-xdist worker's variables (a test calling this) would make pytest-benchmark
        # in the child think it runs under xdist and refuse to time anything.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
        env["FUSEKIT_BENCH"] = "1"
        if args.group:  # a group that matches nothing: say so, not a pytest traceback
            probe = subprocess.run([sys.executable, "-m", "pytest", str(bench_dir), "-q",
                                    "-p", "no:cacheprovider", "--collect-only", "-k",
                                    args.group], env=env, capture_output=True, text=True)
            if probe.returncode in (4, 5):  # pytest: usage error, no tests collected
                said = [line for line in (probe.stdout + probe.stderr).splitlines()
                        if "ERROR" in line or "rror:" in line]
                why = said[-1].strip() if probe.returncode == 4 and said else (
                    f"no benchmark matches {args.group!r}")
                files = sorted(f.stem.removeprefix("test_bench_")
                               for f in bench_dir.glob("test_bench_*.py"))
                print(f"fusekit bench: {why}; groups select benchmarks by name (pytest -k), "
                      f"for example: {', '.join(files)}", file=sys.stderr)
                return 2
        print("$ " + " ".join(cmd), flush=True)
        rc = subprocess.call(cmd, env=env)
        if report_path.exists() and report_path.stat().st_size:
            report = json.loads(report_path.read_text())
            rows = comparison_rows(report)
            if rows:
                print("\nComparison (time relative to the fastest fusekit entry of each group)")
                print(table(["group", "benchmark", "median", "vs fusekit"], rows))
            pairs = paired_rows(report)
            if pairs:
                print("\nRatios measured in pairs (the other side's time over fusekit's)")
                print(table(["benchmark", "measure", "ratio"], pairs))
    return rc


def _mst(args: argparse.Namespace) -> int:
    from .mst._command import CommandError, run

    try:
        run(args.file, method=args.method, fmt=args.fmt, p=args.p, out=sys.stdout)
    except CommandError as exc:
        print(f"fusekit mst: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fusekit`` command."""
    parser = argparse.ArgumentParser(prog="fusekit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="backends, their availability and why not, CPU features")
    tour = sub.add_parser("tour", help="a short run of every domain, ending in a results table")
    tour.add_argument("--quick", action="store_true", help="smaller sizes, for smoke tests")
    bench = sub.add_parser("bench", help="run the benchmark suite (or one group of it); "
                           "other arguments go to pytest")
    bench.add_argument("group", nargs="?", help="only benchmarks matching this pytest -k "
                       "expression, e.g. kron or dispatch")
    bench.add_argument("--path", help="the benchmarks/ folder (default: ./benchmarks or the "
                       "checkout's)")
    mst = sub.add_parser("mst", help="minimum spanning forest of a graph file: weight, "
                         "components, time per stage, spiking-model steps")
    mst.add_argument("file", help="a METIS .graph, DIMACS .gr or Matrix Market .mtx file")
    mst.add_argument("--method", default="auto", help="auto (default), pipelined, "
                     "spike-kruskal, radix-kruskal, filter-kruskal or boruvka")
    mst.add_argument("--format", dest="fmt", choices=["metis", "gr", "mtx"],
                     help="file format (default: by extension: .graph/.metis, .gr, .mtx)")
    mst.add_argument("--p", type=int, default=1, help="union-find events per time step in "
                     "the spiking model's schedule (default 1)")
    given = sys.argv[1:] if argv is None else argv
    if given and given[0].startswith("-") and given[0] not in ("-h", "--help"):
        parser.error(f"unrecognized option {given[0]}: the command comes first "
                     f"({', '.join(sub.choices)}), e.g. fusekit tour --quick")
    args, extra = parser.parse_known_args(argv)
    if args.command != "bench" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "info":
        from ._info import info

        info()
        return 0
    if args.command == "tour":
        from ._tour import run_tour

        run_tour(quick=args.quick)
        return 0
    if args.command == "mst":
        return _mst(args)
    args.pytest_args = [a for a in extra if a != "--"]
    return _bench(args)


if __name__ == "__main__":
    raise SystemExit(main())
