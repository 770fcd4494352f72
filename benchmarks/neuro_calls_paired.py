"""Side by side, in one process: the per-call costs of fusekit.neuro's Python paths.

Cases (each pair alternated round by round, wall-clock seconds):

* ``record``: ``Population.run(100 ms, record_every=k)`` against ``neuro.record`` of the same
  run (which runs the model in pieces of ``k`` steps to read the states), 10,000 HH neurons,
  float32, for ``k`` = 40 and 400.
* ``compile``: ``network_simulate_torch(engine="torch")`` forward and backward, eager against
  ``compile=True``, 500 HH neurons at 5% connectivity, 400 steps, float64. The first
  compiled call (the compilation) is reported apart.
* ``engine``: ``network_simulate_torch`` forward and backward, ``engine="torch"`` (each step's
  channels in torch operations) against ``engine="kernel"`` (the whole run one call of
  ``network_run``, the backward one of ``network_run_vjp``), HH neurons at 500 (5%
  connectivity) and 5,000 (0.5%), 400 steps, float64; the weights' gradients compared.
* ``memory``: the peak of NumPy's traced allocations (``tracemalloc``) of one kernel-engine
  gradient over 2,000 steps (45 checkpointed segments), for ``benchmarks/
  test_bench_network_grad.py``'s 5,000-neuron network and its network of 500 branched cells
  of 6 compartments. torch's allocations are not traced, so the torch engine has no row.
* ``cable_network``: ``CableNetwork.run`` of ``benchmarks/test_bench_cable_network.py``'s
  network (500 branched cells, two junction nodes each, 50 ms), once per round, with the
  minimum and median. No pair in one process: it times whichever fusekit is imported, so two
  trees are compared by alternating runs with ``PYTHONPATH`` set to each tree's ``src``.

* ``discretize``: ``cable_simulate`` of 100 HH cells of ``tests/test_ion_morphology.py``'s
  synthetic reconstruction (a point every 1.5 um: 1,013 compartments and 4 junction nodes)
  against the same cells after ``Morphology.discretize(d_lambda=0.1)``, 50 ms, float64, with
  the largest difference of their somata's spike times.

* ``cable_sizes``: ``cable_simulate`` of 128 HH cells of that reconstruction discretized at
  ``d_lambda`` 0.1 / 0.03 / 0.01 / 0.003 and per point (61 / 177 / 513 / 1,651 / 1,018 nodes),
  in compartment-steps per second (the best of ``--rounds`` calls of about 4e6 each): how the
  CPU kernel's rate depends on the size of the tree. Run it with ``NUMBA_NUM_THREADS=1`` for
  one thread, and with ``PYTHONPATH`` at another tree's ``src`` to compare two trees.

* ``cable_grad``: ``cable_simulate`` of 1, 8 and 64 (``--cells``) HH cells of that reconstruction at
  ``d_lambda`` 0.1, 2,000 steps, float64: the forward (NumPy arrays) and the checkpointed
  gradient of the mean somatic potential w.r.t. every parameter row (torch tensors, the
  forward and the compiled adjoint), the best of ``--rounds`` calls each and their ratio.
  Compare two trees by alternating runs with ``PYTHONPATH`` at each tree's ``src``.

* ``widths``: ``Population.run`` and ``Network.run`` (5% connectivity) of 100 ms for
  ``--cells`` HH neurons (default 100, 300, 600), float32 and float64, the kernels' blocks as
  ``cpu.ion.block_width`` narrows them for the threads against blocks of the kernels' full
  width (``neuron_width`` forced to it), alternated call by call in one process; the best
  of ``--rounds`` calls each and their ratio. The forward-mode and adjoint kernels take the
  same widths. Run with two or more threads (one thread keeps the full width).

    python benchmarks/neuro_calls_paired.py --cases record compile engine --rounds 3
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def _record_case(rounds: int) -> None:
    from fusekit.neuro import HH_CHANNELS, Population, record

    def population() -> Population:
        pop = Population(HH_CHANNELS, n=10_000, dtype=np.float32)
        pop.i_ext[:] = np.linspace(0.0, 20.0, 10_000)
        return pop

    population().run(5.0, record_every=40)  # compile
    record(population(), 5.0, record_every=40)
    for r in range(rounds):
        for every in (40, 400):
            t = time.perf_counter()
            population().run(100.0, record_every=every)
            run = time.perf_counter() - t
            t = time.perf_counter()
            record(population(), 100.0, record_every=every)
            rec = time.perf_counter() - t
            print(f"record round {r}, every {every} steps: run {run * 1e3:.0f} ms, record "
                  f"{rec * 1e3:.0f} ms ({rec / run:.2f}x)", flush=True)


def _compile_case(rounds: int) -> None:
    import torch

    from fusekit.neuro import HH_CHANNELS, ChannelSet, network_simulate_torch, random_connectivity

    cs = ChannelSet(HH_CHANNELS)
    n, steps = 500, 400
    indptr, indices, weights = random_connectivity(n, 0.05, 0.05, np.random.default_rng(0))
    v0 = torch.full((n,), -65.0, dtype=torch.float64)
    S0 = torch.as_tensor(cs.steady_states(v0.numpy()))
    P = torch.as_tensor(cs.default_params(n))
    i_ext = torch.zeros(n, dtype=torch.float64)
    i_ext[:50] = 12.0

    def go(compile: bool) -> float:
        w = torch.as_tensor(weights).clone().requires_grad_()
        t = time.perf_counter()
        out = network_simulate_torch(
            cs, v0, S0, P, i_ext, torch.zeros(n, dtype=torch.float64),
            torch.as_tensor(indptr), torch.as_tensor(indices), w, dt=0.025, n_steps=steps,
            delay_steps=40, record_every=10, max_spikes=4, compile=compile,
            engine="torch")
        out.v_record.mean().backward()
        return time.perf_counter() - t

    first = go(True)
    print(f"compile: first compiled call {first:.1f} s (the compilation)", flush=True)
    for r in range(rounds):
        eager, compiled = go(False), go(True)
        print(f"compile round {r}: eager {eager / steps * 1e3:.2f} ms per step, compiled "
              f"{compiled / steps * 1e3:.2f} ms ({eager / compiled:.2f}x)", flush=True)


def _engine_case(rounds: int) -> None:
    import torch

    from fusekit.neuro import HH_CHANNELS, ChannelSet, network_simulate_torch, random_connectivity

    cs = ChannelSet(HH_CHANNELS)
    steps = 400
    for n, p in ((500, 0.05), (5000, 0.005)):  # 25 synapses per neuron either way
        indptr, indices, weights = random_connectivity(n, p, 0.05, np.random.default_rng(0))
        v0 = torch.full((n,), -65.0, dtype=torch.float64)
        i_ext = torch.zeros(n, dtype=torch.float64)
        i_ext[: n // 10] = 12.0
        args = (cs, v0, torch.as_tensor(cs.steady_states(v0.numpy())),
                torch.as_tensor(cs.default_params(n)), i_ext,
                torch.zeros(n, dtype=torch.float64), torch.as_tensor(indptr),
                torch.as_tensor(indices))

        def go(engine: str, args: tuple = args, weights: np.ndarray = weights
               ) -> tuple[float, float, torch.Tensor, int]:
            w = torch.as_tensor(weights).clone().requires_grad_()
            t = time.perf_counter()
            out = network_simulate_torch(*args, w, dt=0.025, n_steps=steps, delay_steps=40,
                                         record_every=10, max_spikes=4, engine=engine)
            t1 = time.perf_counter()
            out.v_record.mean().backward()
            t2 = time.perf_counter()
            return (t1 - t) / steps, (t2 - t1) / steps, w.grad, int(out.spike_count.sum())

        go("kernel")  # compiles the kernels (or loads them from the disk cache)
        for r in range(rounds):
            fe, be, ge, ce = go("torch")
            fk, bk, gk, ck = go("kernel")
            diff = float((ge - gk).abs().max() / ge.abs().max())
            print(f"engine n={n} round {r}: torch {fe * 1e3:.2f} + {be * 1e3:.2f} ms per step "
                  f"(forward + backward), kernel {fk * 1e3:.2f} + {bk * 1e3:.2f} ms "
                  f"({(fe + be) / (fk + bk):.2f}x); spikes {ce} / {ck}, weight gradients "
                  f"{diff:.1e} apart", flush=True)


def _memory_case(rounds: int) -> None:
    import sys
    import tracemalloc
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import test_bench_network_grad as bench

    bench.N_STEPS = 2000
    cases = (("5,000 HH neurons", bench.network, bench.gradient, 5000),
             ("500 cells x 6 compartments", bench.cable_network, bench.cable_gradient, 500))
    for name, make, grad, n in cases:
        grad("kernel", *make(30))  # compile (or load) the kernels
        for r in range(rounds):
            x = make(n)
            tracemalloc.start()
            grad("kernel", *x)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(f"memory {name}, 2,000 steps, round {r}: peak traced {peak / 2**20:.1f} MiB",
                  flush=True)


def _cable_network_case(rounds: int) -> None:
    import statistics
    import sys
    from pathlib import Path

    import fusekit

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import test_bench_cable_network as bench

    bench.run_fusekit(bench.make_net())  # compile (or load) the kernel
    times = []
    for _ in range(rounds):
        net = bench.make_net()
        t = time.perf_counter()
        out = bench.run_fusekit(net)
        times.append(time.perf_counter() - t)
    print(f"cable_network ({fusekit.__file__}): {rounds} runs, min {min(times) * 1e3:.1f} ms, "
          f"median {statistics.median(times) * 1e3:.1f} ms; {int(out.spike_count.sum())} "
          "spikes", flush=True)


def _reconstruction() -> tuple[Any, Any, Any]:
    """``tests/test_ion_morphology.py``'s synthetic reconstruction, its cells' arrays, HH."""
    import sys
    import tempfile
    from pathlib import Path

    from fusekit.neuro import HH_CHANNELS, ChannelSet

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_ion_morphology import cell_arrays, write_cell

    with tempfile.TemporaryDirectory() as tmp:
        return write_cell(Path(tmp) / "cell.swc"), cell_arrays, ChannelSet(HH_CHANNELS)


def _discretize_case(rounds: int) -> None:
    import fusekit

    fine, cell_arrays, hh = _reconstruction()
    currents = np.linspace(100.0, 300.0, 100)

    def go(arrays: tuple) -> tuple[float, Any]:
        t = time.perf_counter()
        out = fusekit.ops.cable_simulate(*arrays, channels=hh, dt=0.025, n_steps=2000,
                                         record_every=40, record_at=[0], max_spikes=10,
                                         backend="cpu")
        return time.perf_counter() - t, out

    cases = [cell_arrays(m, currents) for m in (fine, fine.discretize(0.1))]
    nodes = [arrays[4].size for arrays in cases]
    for arrays in cases:  # compile (or load) the kernel
        go(arrays)
    for r in range(rounds):
        (t_fine, want), (t_coarse, got) = (go(arrays) for arrays in cases)
        err = float(np.nanmax(np.abs(got.spike_times - want.spike_times)))
        print(f"discretize round {r}: per point ({nodes[0]} nodes) {t_fine * 1e3:.0f} ms, "
              f"d_lambda 0.1 ({nodes[1]} nodes) {t_coarse * 1e3:.1f} ms "
              f"({t_fine / t_coarse:.1f}x); spikes {int(want.spike_count.sum())} / "
              f"{int(got.spike_count.sum())}, spike times {err:.4f} ms apart", flush=True)


def _cable_grad_case(rounds: int, cells: tuple[int, ...] = (1, 8, 64)) -> None:
    import torch

    import fusekit

    fine, cell_arrays, hh = _reconstruction()
    coarse = fine.discretize(0.1)
    for n in cells:
        arrays = cell_arrays(coarse, np.linspace(20.0, 100.0, n))
        kw = {"channels": hh, "dt": 0.025, "n_steps": 2000, "record_every": 4,
              "record_at": [0], "max_spikes": 20, "backend": "cpu"}
        tensors = [torch.tensor(a) for a in arrays]
        params = tensors[2].clone().requires_grad_()

        def forward(arrays: tuple = arrays, kw: dict = kw) -> None:
            fusekit.ops.cable_simulate(*arrays, **kw)

        def gradient(tensors: list = tensors, params: Any = params, kw: dict = kw) -> None:
            out = fusekit.ops.cable_simulate(*tensors[:2], params, *tensors[3:], **kw)
            torch.autograd.grad(out.v_record.mean(), params)

        best = []
        for fn in (forward, gradient):
            fn()  # compile (or load) the kernels
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            best.append(min(times))
        print(f"cable_grad ({fusekit.__file__}): {n} cells x {arrays[4].size} nodes: forward "
              f"{best[0] * 1e3:.1f} ms, gradient {best[1] * 1e3:.1f} ms "
              f"({best[1] / best[0]:.2f}x)", flush=True)


def _cable_sizes_case(rounds: int) -> None:
    import fusekit

    fine, cell_arrays, hh = _reconstruction()
    for d_lambda in (0.1, 0.03, 0.01, 0.003, None):
        m = fine if d_lambda is None else fine.discretize(d_lambda)
        arrays = cell_arrays(m, np.linspace(100.0, 300.0, 128))
        n, nodes = arrays[0].shape

        def run(steps: int, arrays: tuple = arrays) -> None:
            fusekit.ops.cable_simulate(*arrays, channels=hh, dt=0.025, n_steps=steps,
                                       backend="cpu")

        steps = max(20, int(4e6 / (n * nodes)))
        run(5)  # compile (or load) the kernel
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            run(steps)
            best = min(best, time.perf_counter() - t)
        label = "per point" if d_lambda is None else f"d_lambda {d_lambda}"
        print(f"cable_sizes ({fusekit.__file__}): {label}, {nodes} nodes: "
              f"{n * nodes * steps / best / 1e6:.1f} M compartment-steps/s", flush=True)


def _widths_case(rounds: int, cells: tuple[int, ...] = (100, 300, 600)) -> None:
    import scipy.sparse as sp

    import fusekit
    from fusekit.backends.cpu import ion as cpu_ion
    from fusekit.neuro import HH_CHANNELS, Network, Population

    balanced = cpu_ion.neuron_width
    for n in cells:
        for dtype in (np.float32, np.float64):
            pop = Population(HH_CHANNELS, n, dtype=dtype)
            pop.i_ext[:] = np.linspace(0.0, 20.0, n)
            W = sp.random(n, n, density=0.05, format="csr", random_state=0) * 0.3
            net = Network(HH_CHANNELS, W, dtype=dtype)
            net.i_ext[:] = np.linspace(0.0, 20.0, n)
            for label, model in (("population", pop), ("network", net)):
                best = {"balanced": float("inf"), "full width": float("inf")}
                model.run(1.0)  # compile (or load) the kernel
                for _ in range(rounds):
                    for way in best:
                        cpu_ion.neuron_width = (balanced if way == "balanced" else
                                                lambda n, block=cpu_ion.NEURON_BLOCK: block)
                        try:
                            t = time.perf_counter()
                            model.run(100.0)
                            best[way] = min(best[way], time.perf_counter() - t)
                        finally:
                            cpu_ion.neuron_width = balanced
                print(f"widths ({fusekit.get_num_threads()} threads): {label} of {n}, "
                      f"{np.dtype(dtype).name}: full width {best['full width'] * 1e3:.2f} ms, "
                      f"balanced {best['balanced'] * 1e3:.2f} ms "
                      f"({best['full width'] / best['balanced']:.2f}x)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["record", "compile", "engine"],
                        choices=["record", "compile", "engine", "memory", "cable_network",
                                 "discretize", "cable_sizes", "cable_grad", "widths"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cells", type=int, nargs="+", default=[1, 8, 64],
                        help="cable_grad and widths: the population sizes")
    args = parser.parse_args()
    cases = {"record": _record_case, "compile": _compile_case, "engine": _engine_case,
             "memory": _memory_case, "cable_network": _cable_network_case,
             "discretize": _discretize_case, "cable_sizes": _cable_sizes_case,
             "cable_grad": _cable_grad_case}
    for case in args.cases:
        if case == "cable_grad":
            _cable_grad_case(args.rounds, tuple(args.cells))
        elif case == "widths":
            _widths_case(args.rounds, tuple(args.cells) if args.cells != [1, 8, 64]
                         else (100, 300, 600))
        else:
            cases[case](args.rounds)


if __name__ == "__main__":
    main()
