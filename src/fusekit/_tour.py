"""``fusekit tour``: a short run of every domain on built-in data, ending in a results table.

Parts today: an FP8 DeepSeek-V3 expert (moe), the Kronecker-sum product and a SoKA-adapted
layer against LoRA (peft), an HH population, an excitatory-inhibitory HH network, a network
of multi-compartment cells against NEURON, the population's gradients, the gradient of branched HH
cells, a conductance fit and a spiking HH network trained on the digits against the same
network of LIF neurons (neuro), a minimum spanning forest against SciPy (mst); each new
domain adds its part.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ._timing import format_seconds, median_seconds, table


def _kron_part(quick: bool, out: TextIO) -> list[list[str]]:
    import numpy as np
    import torch

    from . import ops
    from .ops.kron import kron_linear_reference

    rng = np.random.default_rng(20261128)
    # (weight side, factor side, rank, tokens): LLaMA-like 4096-wide layers and a small one.
    cases = [(1024, 32, 4, 16), (4096, 64, 4, 16)]
    if quick:
        cases = [(256, 16, 2, 8), (1024, 32, 4, 16)]
    rows = []
    for side, f, r, tokens in cases:
        A = rng.standard_normal((r, f, f), dtype=np.float32) / f
        B = rng.standard_normal((r, f, f), dtype=np.float32) / f
        x = rng.standard_normal((tokens, side), dtype=np.float32)
        y_ref = kron_linear_reference(x.astype(np.float64), A.astype(np.float64),
                                      B.astype(np.float64))
        y = ops.kron_linear(x, A, B, backend="cpu")
        err = float(np.abs(y - y_ref).max() / max(np.abs(y_ref).max(), 1e-30))
        At, Bt, xt = map(torch.from_numpy, (A, B, x))
        W = sum(torch.kron(At[k], Bt[k]) for k in range(r))  # dense weight, formed once
        t_fusekit = median_seconds(lambda A=A, B=B, x=x: ops.kron_linear(x, A, B, backend="cpu"))
        t_dense = median_seconds(lambda W=W, xt=xt: xt @ W.T)
        print(f"  kron_linear {side}x{side} as {r} x ({f}x{f} kron {f}x{f}), {tokens} tokens: "
              f"fusekit {format_seconds(t_fusekit)}, dense {format_seconds(t_dense)}", file=out)
        rows.append([
            "peft/kron", f"kron_linear {side}x{side}, r={r}, {f}x{f} factors, {tokens} tokens",
            f"{err:.1e}", format_seconds(t_fusekit),
            f"torch dense x @ W.T: {format_seconds(t_dense)}",
            f"{t_dense / t_fusekit:.1f}x",
            f"{2 * r * f * f:,} vs {side * side:,}",
        ])
    return rows


def _fp8_part(quick: bool, out: TextIO) -> list[list[str]]:
    import numpy as np
    import torch

    from . import ops
    from .ops.fp8_matmul import fp8_expert_reference

    # One DeepSeek-V3 routed expert: hidden 7168, intermediate 2048 (smaller when quick).
    hidden, inter = (1024, 512) if quick else (7168, 2048)
    rng = np.random.default_rng(7)
    mats = {}
    for name, shape in (("gate", (inter, hidden)), ("up", (inter, hidden)),
                        ("down", (hidden, inter))):
        w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        mats[name] = ops.fp8_block_quantize(w, backend="cpu")
    bf16 = {k: torch.from_numpy(ops.fp8_block_dequantize(*v, backend="cpu")).bfloat16()
            for k, v in mats.items()}
    # what a bfloat16 model passes: torch tensors, the FP8 weights as float8_e4m3fn
    mats_t = {k: (torch.from_numpy(q).view(torch.float8_e4m3fn), torch.from_numpy(sc))
              for k, (q, sc) in mats.items()}
    rows = []
    for tokens in (1, 16):
        x = rng.standard_normal((tokens, hidden)).astype(np.float32)
        xb = torch.from_numpy(x).bfloat16()
        y = ops.fp8_expert(x, mats["gate"], mats["up"], mats["down"], backend="cpu")

        def torch_expert(xb=xb):
            with torch.no_grad():
                g = torch.nn.functional.linear(xb, bf16["gate"])
                u = torch.nn.functional.linear(xb, bf16["up"])
                return torch.nn.functional.linear(torch.nn.functional.silu(g) * u, bf16["down"])

        # the same call with torch's bfloat16 activations (bfloat16 in, between the passes and
        # out, as the torch expert): one bfloat16 product per weight on AVX-512 BF16 CPUs
        def fusekit_bf16(xb=xb):
            with torch.no_grad():
                return ops.fp8_expert(xb, mats_t["gate"], mats_t["up"], mats_t["down"],
                                      backend="cpu")

        # fusekit first: torch's threads keep spinning after its calls and slowed the FP8
        # kernels timed right after them (11 ms instead of 6 ms at 16 tokens)
        t_fusekit = median_seconds(lambda x=x: ops.fp8_expert(x, mats["gate"], mats["up"],
                                                              mats["down"], backend="cpu"))
        t_fusekit_bf16 = median_seconds(fusekit_bf16)
        t_torch = median_seconds(torch_expert)
        # The float64 reference after the timings: NumPy's BLAS threads keep spinning after
        # a call and took a core from the FP8 kernel timed next (5.4 ms instead of 2.7 ms).
        ref = fp8_expert_reference(x.astype(np.float64), mats["gate"], mats["up"], mats["down"])
        err = float(np.linalg.norm(y - ref) / np.linalg.norm(ref))
        ref_b = fp8_expert_reference(xb.double().numpy(), mats["gate"], mats["up"],
                                     mats["down"])
        err_b = float(np.linalg.norm(fusekit_bf16().double().numpy() - ref_b)
                      / np.linalg.norm(ref_b))
        print(f"  fp8 expert {hidden}x{inter}, {tokens} tokens: fusekit {format_seconds(t_fusekit)}"
              f" (bf16 activations {format_seconds(t_fusekit_bf16)}), torch bf16 "
              f"{format_seconds(t_torch)}", file=out)
        for kind, t, e in (("float32", t_fusekit, err), ("bf16", t_fusekit_bf16, err_b)):
            rows.append([
                "moe/fp8", f"DeepSeek-V3 expert {hidden}/{inter}, FP8 128x128 blocks, {tokens} "
                f"tokens, {kind} x", f"{e:.1e}", format_seconds(t),
                f"torch bf16 (dequantized at load): {format_seconds(t_torch)}",
                f"{t_torch / t:.1f}x", f"{3 * hidden * inter / 2**20:.0f} MiB FP8 vs "
                f"{6 * hidden * inter / 2**20:.0f} MiB bf16",
            ])
    return rows


def _soka_part(quick: bool, out: TextIO) -> list[list[str]]:
    import importlib.util

    import torch

    from . import peft as fp

    side, tokens, r = (512, 8, 4) if quick else (4096, 16, 8)

    def base() -> torch.nn.Module:
        torch.manual_seed(0)
        model = torch.nn.Sequential()
        model.add_module("proj", torch.nn.Linear(side, side))
        return model

    x = torch.randn(tokens, side)
    original = base()(x).detach()
    soka = fp.get_soka_model(base(), fp.SoKAConfig(r=r, target_modules=["proj"]))
    with torch.no_grad():  # KPSVD init keeps the output
        err = float((soka(x) - original).norm() / original.norm())

    def step(model: torch.nn.Module) -> None:
        for p in model.parameters():
            p.grad = None
        model(x).square().sum().backward()

    t_soka = median_seconds(lambda: step(soka), repeat=5)
    peer, t_peer = "dense delta weight", None
    if importlib.util.find_spec("peft") is not None:
        import peft

        lora = peft.get_peft_model(base(), peft.LoraConfig(r=r, target_modules=["proj"]))
        peer, t_peer = f"peft LoRA r={r}", median_seconds(lambda: step(lora), repeat=5)
    trainable = soka.trainable_parameters()[0]
    print(f"  SoKA {side}x{side} fwd+bwd, {tokens} tokens: fusekit {format_seconds(t_soka)}"
          + (f", {peer} {format_seconds(t_peer)}" if t_peer else ""), file=out)
    return [[
        "peft/soka", f"adapted {side}x{side} linear fwd+bwd, r={r} (KPSVD init), {tokens} tokens",
        f"{err:.1e}", format_seconds(t_soka),
        f"{peer}: {format_seconds(t_peer)}" if t_peer else "peft not installed",
        f"{t_peer / t_soka:.2f}x" if t_peer else "-", f"{trainable:,} trainable",
    ]]


def _mst_part(quick: bool, out: TextIO) -> list[list[str]]:
    import importlib.util

    if importlib.util.find_spec("scipy") is None:
        print("  mst: skipped (SciPy is not installed: pip install scipy)", file=out)
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    from .mst import graphs, minimum_spanning_forest

    log2n = 12 if quick else 16
    u, v, w, n = graphs.delaunay_graph(1 << log2n, seed=0, weights="uniform")
    a = coo_matrix((w, (u, v)), shape=(n, n)).tocsr()
    expected = float(minimum_spanning_tree(a).sum())
    r = minimum_spanning_forest(u, v, w, n)
    err = abs(r.total_weight - expected) / expected
    t_fusekit = median_seconds(lambda: minimum_spanning_forest(u, v, w, n), repeat=5)
    t_scipy = median_seconds(lambda: minimum_spanning_tree(a), repeat=5)
    steps = r.schedule(p=1)
    print(f"  MSF Delaunay 2^{log2n} uniform: fusekit ({r.method}) {format_seconds(t_fusekit)}, "
          f"SciPy {format_seconds(t_scipy)}; spiking model: pipelined "
          f"{steps.pipelined_steps:,} steps vs serial {steps.serial_steps:,}", file=out)
    return [["mst", f"min. spanning forest, Delaunay 2^{log2n}", f"{err:.1e}",
             format_seconds(t_fusekit),
             f"SciPy minimum_spanning_tree (CSR given): {format_seconds(t_scipy)}",
             f"{t_scipy / t_fusekit:.1f}x", f"{u.size:,} edges"]]


def _neuro_part(quick: bool, out: TextIO) -> list[list[str]]:
    import numpy as np

    from . import ops
    from .neuro import HH_CHANNELS, ChannelSet

    # A Hodgkin-Huxley population, 100 ms at dt = 0.025 ms, heterogeneous step currents.
    n, n_steps, dt = (200, 400, 0.025) if quick else (2000, 4000, 0.025)
    hh = ChannelSet(HH_CHANNELS)

    def inputs(dtype: Any) -> tuple[Any, ...]:
        v0 = np.full(n, -65.0, dtype)
        return (v0, hh.steady_states(v0).astype(dtype), hh.default_params(n, dtype),
                np.linspace(0.0, 20.0, n).astype(dtype))

    kw = {"channels": hh, "dt": dt, "n_steps": n_steps, "max_spikes": 64}
    ref = ops.ion_simulate(*inputs(np.float64), backend="reference", **kw)
    f64 = ops.ion_simulate(*inputs(np.float64), backend="cpu", **kw)
    t_ref = np.nan_to_num(ref.spike_times, nan=0.0)
    err = float(np.abs(np.nan_to_num(f64.spike_times, nan=0.0) - t_ref).max())
    x32 = inputs(np.float32)
    ops.ion_simulate(*x32, backend="cpu", **kw)  # compile outside the timing
    t_cpu = median_seconds(lambda: ops.ion_simulate(*x32, backend="cpu", **kw), repeat=3)
    x64 = inputs(np.float64)
    t_np = median_seconds(lambda: ops.ion_simulate(*x64, backend="reference", **kw), repeat=1)
    same = float(np.mean(f64.spike_count == ref.spike_count))
    print(f"  HH {n:,} neurons, {n_steps * dt:.0f} ms: fusekit cpu float32 "
          f"{format_seconds(t_cpu)} ({n * n_steps / t_cpu / 1e6:.0f} M neuron-steps/s), NumPy "
          f"float64 (same scheme) {format_seconds(t_np)}; spike counts equal (cpu float64 vs "
          f"reference) for {100 * same:.0f}% of neurons", file=out)
    return [["neuro", f"HH population, {n:,} neurons x {n_steps * dt:.0f} ms, float32",
             f"{err:.1e} ms (spike times, f64)", format_seconds(t_cpu),
             f"NumPy, same scheme (f64): {format_seconds(t_np)}", f"{t_np / t_cpu:.1f}x",
             f"{n * n_steps:,} neuron-steps"]]


def _network_part(quick: bool, out: TextIO) -> list[list[str]]:
    import numpy as np

    from . import ops
    from .neuro import HH_CHANNELS, ChannelSet, random_connectivity

    # An excitatory-inhibitory HH network: 80 % excitatory (0 mV, 5 ms), 20 % inhibitory
    # (-80 mV, 10 ms) synapses by Dale's law, random connectivity, a quarter of the neurons
    # driven, 1 ms delay, against the NumPy reference of the same scheme.
    n, n_steps, dt, p = (400, 1000, 0.025, 0.05) if quick else (2000, 4000, 0.025, 0.02)
    hh = ChannelSet(HH_CHANNELS)
    rng = np.random.default_rng(0)
    v0 = rng.uniform(-66.0, -64.0, n)
    indptr, indices, weights = random_connectivity(n, p, 0.05, rng)
    kind = (np.arange(n) >= int(0.8 * n)).astype(np.int64)
    driven = rng.random(n) < 0.25
    args = (v0, hh.steady_states(v0), hh.default_params(n), np.where(driven, 12.0, 0.0),
            np.zeros((2, n)), indptr, indices, weights)
    kw = {"channels": hh, "dt": dt, "n_steps": n_steps, "delay_steps": 40, "max_spikes": 64,
          "tau_syn": [5.0, 10.0], "e_syn": [0.0, -80.0],
          "synapse_type": np.repeat(kind, np.diff(indptr))}
    start = time.perf_counter()
    ref = ops.network_simulate(*args, backend="reference", **kw)
    t_np = time.perf_counter() - start
    cpu = ops.network_simulate(*args, backend="cpu", **kw)  # compiles (or loads) the kernel
    t_cpu = median_seconds(lambda: ops.network_simulate(*args, backend="cpu", **kw), repeat=3)
    err = float(np.abs(cpu.v - ref.v).max() / np.abs(ref.v).max())
    excit = ops.network_simulate(*args, backend="cpu", **{**kw, "e_syn": [0.0, 0.0]})
    print(f"  E/I HH network, {n:,} neurons, {indices.shape[0]:,} synapses (80 % excitatory, "
          f"20 % inhibitory), {n_steps * dt:.0f} ms: fusekit cpu {format_seconds(t_cpu)}, "
          f"NumPy reference {format_seconds(t_np)}; spike counts equal for "
          f"{100 * float(np.mean(cpu.spike_count == ref.spike_count)):.0f}% of neurons; the "
          f"undriven neurons fired {int(cpu.spike_count[~driven].sum()):,} spikes, "
          f"{int(excit.spike_count[~driven].sum()):,} with every synapse excitatory",
          file=out)
    return [["neuro", f"E/I HH network, {n:,} neurons x {n_steps * dt:.0f} ms, float64",
             f"{err:.1e} (final v)", format_seconds(t_cpu),
             f"NumPy, same scheme: {format_seconds(t_np)}", f"{t_np / t_cpu:.1f}x",
             f"{indices.shape[0]:,} synapses, 2 types"]]


#: The tour's branched cell: a soma, two dendrites, the first branching in two, the second
#: continued (parent of every section, lengths and diameters in um).
_BRANCHED_CELL = ((-1, 0, 0, 1, 1, 2), (20.0, 150.0, 100.0, 80.0, 60.0, 120.0),
                  (20.0, 2.0, 1.5, 1.0, 1.0, 1.2))


def _cable_network_part(quick: bool, out: TextIO) -> list[list[str]]:
    """Multi-compartment cells with synapses on their dendrites, against NEURON."""
    import numpy as np

    from .neuro import HH_CHANNELS, CableNetwork, random_connectivity

    # Cells of a soma with two dendrites, the first branching in two (six sections of one
    # compartment, joined at zero-area nodes where they branch, as in NEURON), a fifth of the
    # somata driven; excitatory synapses from somata onto random compartments, 1 ms delay.
    n, duration, dt = (40, 20.0, 0.025) if quick else (300, 50.0, 0.025)
    rng = np.random.default_rng(0)
    morph = (np.array(_BRANCHED_CELL[0]), *_BRANCHED_CELL[1:])
    csr = random_connectivity(n, 20 / n, 0.8, rng)
    comps = rng.integers(0, 6, csr[1].shape[0])

    def make() -> CableNetwork:
        # NEURON stamps a spike with the end of its step: its 1 ms is 1 ms + dt here
        net = CableNetwork(HH_CHANNELS, morph, csr, synapse_compartment=comps,
                           delay=1.0 + dt, tau_syn=2.0, e_syn=0.0)
        net.i_ext[: n // 5, 0] = np.linspace(5.0, 30.0, n // 5)
        return net

    make().run(dt * 2, dt=dt)  # compile (or load) the kernel outside the timing
    t_cpu = median_seconds(lambda: make().run(duration, dt=dt), repeat=3)
    got = make().run(duration, dt=dt, record_every=1, record_at=[0])
    t_peer, v_peer, counts, peer = _cable_peer(make, duration, dt, out)
    err = float(np.abs(got.v_record - v_peer).max())
    print(f"  HH network of {n} branched cells x 6 compartments, {csr[1].shape[0]:,} synapses on "
          f"dendrites, {duration:.0f} ms: fusekit cpu {format_seconds(t_cpu)}, {peer} "
          f"{format_seconds(t_peer)}; somatic voltages agree to {err:.1e} mV, spike counts "
          f"equal for {100 * float(np.mean(counts == got.spike_count)):.0f}% of cells; "
          f"undriven cells fired {int(got.spike_count[n // 5:].sum()):,} spikes", file=out)
    return [["neuro", f"HH network of {n} branched cells x 6 comp. x {duration:.0f} ms, float64",
             f"{err:.1e} mV (vs {peer})", format_seconds(t_cpu),
             f"{peer}: {format_seconds(t_peer)}", f"{t_peer / t_cpu:.1f}x",
             f"{csr[1].shape[0]:,} synapses on dendrites"], _discretize_row(quick, out),
            _import3d_row(quick, out)]


def _cable_peer(make: Any, duration: float, dt: float, out: TextIO) -> tuple[Any, ...]:
    """NEURON's run of the network ``make()`` builds, or the NumPy reference's.

    The reference where NEURON is not usable. Returns the seconds, the somatic voltages after
    every step, the spike counts and the peer's name.
    """
    from . import get_num_threads
    from .neuro import to_neuron

    try:
        model = to_neuron(make(), dt)
    except Exception as exc:  # NEURON missing or broken: the NumPy reference instead
        print(f"  (NEURON not usable here: {exc}; comparing with the NumPy reference)",
              file=out)
        t_peer = median_seconds(lambda: make().run(duration, dt=dt, backend="reference"),
                                repeat=1)
        ref = make().run(duration, dt=dt, record_every=1, record_at=[0], backend="reference")
        return t_peer, ref.v_record, ref.spike_count, "NumPy reference"
    # as many threads as fusekit's
    t_peer = median_seconds(lambda: model.run(duration, threads=get_num_threads()), repeat=1)
    v_peer, counts = model.run(duration, record_every=1)
    return t_peer, v_peer, counts, "NEURON"


def _discretize_row(quick: bool, out: TextIO) -> list[str]:
    """A reconstruction read from SWC, one compartment per point against NEURON's d_lambda."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from .neuro import HH_CHANNELS, CableNetwork, read_swc
    from .neuro._cable import synthetic_swc

    n, duration, dt = (8, 20.0, 0.025) if quick else (16, 50.0, 0.025)
    with tempfile.TemporaryDirectory() as tmp:  # a synthetic cell, a point every 1.5 um
        synthetic_swc(Path(tmp) / "cell.swc")
        fine = read_swc(Path(tmp) / "cell.swc")
    coarse = fine.discretize(d_lambda=0.1)

    def make(morphology: object) -> CableNetwork:  # unconnected cells, somata driven
        net = CableNetwork(HH_CHANNELS, morphology, (np.zeros(n + 1, np.int64),
                                                     np.zeros(0, np.int64), np.zeros(0)))
        net.i_ext[:, 0] = np.linspace(100.0, 300.0, n)
        return net

    results = {}
    for name, m in (("per point", fine), ("d_lambda", coarse)):
        make(m).run(dt * 2, dt=dt)  # compile (or load) the kernel
        seconds = median_seconds(lambda m=m: make(m).run(duration, dt=dt), repeat=1)
        results[name] = seconds, make(m).run(duration, dt=dt, max_spikes=20)
    (t_fine, want), (t_coarse, got) = results["per point"], results["d_lambda"]
    same = bool(np.array_equal(got.spike_count, want.spike_count))
    err = float(np.nanmax(np.abs(got.spike_times - want.spike_times))) if same else np.inf
    print(f"  {n} cells of an SWC reconstruction ({fine.parent.size:,} points), "
          f"{duration:.0f} ms: one compartment per point {format_seconds(t_fine)}, "
          f"discretized by d_lambda = 0.1 ({coarse.parent.size} compartments) "
          f"{format_seconds(t_coarse)}; spikes {'equal' if same else 'differ'}, spike times "
          f"{err:.3f} ms apart", file=out)
    return ["neuro", f"SWC cell by d_lambda: {fine.parent.size:,} points -> "
            f"{coarse.parent.size} comp., {n} cells",
            f"{err:.3f} ms spike times (vs per point)", format_seconds(t_coarse),
            f"per point: {format_seconds(t_fine)}", f"{t_fine / t_coarse:.1f}x",
            f"{int(got.spike_count.sum())} spikes"]


def _import3d_row(quick: bool, out: TextIO) -> list[str]:
    """An SWC reconstruction as NEURON's Import3d builds it, run by fusekit and by NEURON."""
    import tempfile
    from pathlib import Path

    import numpy as np

    from .neuro import HH_CHANNELS, CableNetwork, read_swc
    from .neuro._cable import synthetic_swc

    n, duration, dt = (8, 20.0, 0.025) if quick else (32, 50.0, 0.025)
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_swc(Path(tmp) / "cell.swc")
        tree = read_swc(Path(tmp) / "cell.swc").neuron_tree(d_lambda=0.1)

    def make() -> CableNetwork:  # unconnected cells, somata driven
        net = CableNetwork(HH_CHANNELS, tree, (np.zeros(n + 1, np.int64),
                                               np.zeros(0, np.int64), np.zeros(0)))
        net.i_ext[:, 0] = np.linspace(40.0, 200.0, n)
        return net

    make().run(dt * 2, dt=dt)  # compile (or load) the kernel
    t_cpu = median_seconds(lambda: make().run(duration, dt=dt), repeat=3)
    got = make().run(duration, dt=dt, record_every=1, record_at=[0])
    t_peer, v_peer, counts, peer = _cable_peer(make, duration, dt, out)
    err = float(np.abs(got.v_record - v_peer).max())
    same = float(np.mean(counts == got.spike_count))
    print(f"  {n} cells of an SWC reconstruction as NEURON imports it ({len(tree.names)} "
          f"sections, {tree.node.size} segments), {duration:.0f} ms: fusekit cpu "
          f"{format_seconds(t_cpu)}, {peer} {format_seconds(t_peer)}; somatic voltages agree "
          f"to {err:.1e} mV, spike counts equal for {100 * same:.0f}% of cells", file=out)
    return ["neuro", f"SWC cell as NEURON imports it: {tree.node.size} segments, {n} cells",
            f"{err:.1e} mV (vs {peer})", format_seconds(t_cpu),
            f"{peer}: {format_seconds(t_peer)}", f"{t_peer / t_cpu:.1f}x",
            f"{int(got.spike_count.sum())} spikes"]


def _grad_part(quick: bool, out: TextIO) -> list[list[str]]:
    """Gradients of an HH population: forward mode and compiled backprop against autograd."""
    import numpy as np
    import torch

    from .neuro import HH_CHANNELS, ChannelSet, params_tensor, simulate, simulate_torch

    # d(mean recorded v) / d(g_na, g_k, g_leak) of every neuron, float64.
    n, n_steps, dt = (50, 200, 0.025) if quick else (200, 400, 0.025)
    hh = ChannelSet(HH_CHANNELS)
    wrt = ("g_na", "g_k", "g_leak")
    i_ext = torch.linspace(0.0, 20.0, n, dtype=torch.float64)
    v0 = torch.full((n,), -65.0, dtype=torch.float64)
    s0 = torch.tensor(hh.steady_states(np.full(n, -65.0)))

    def grads(how: str) -> tuple[Any, ...]:
        g = [torch.full((n,), float(hh.param_defaults[hh.param_index(w)]),
                        dtype=torch.float64, requires_grad=True) for w in wrt]
        P = params_tensor(hh, n, **dict(zip(wrt, g, strict=True)))
        if how == "autograd":
            out = simulate_torch(hh, v0, s0, P, i_ext, dt=dt, n_steps=n_steps, record_every=4)
        else:
            out = simulate(hh, P, i_ext, duration=n_steps * dt, dt=dt, record_every=4,
                           gradient=how, wrt=wrt if how == "forward" else None,
                           backend="cpu")
        return torch.autograd.grad(out.v_record.mean(0).sum(), g)

    want = grads("autograd")
    times, err = {}, 0.0
    for how in ("forward", "backprop"):
        got = grads(how)  # compile outside the timing
        err = max(err, max(float((a - b).abs().max() / b.abs().max()) for a, b in
                           zip(got, want, strict=True)))
        times[how] = median_seconds(lambda how=how: grads(how), repeat=3)
    t_torch = median_seconds(lambda: grads("autograd"), repeat=1)
    print(f"  gradient of the mean v w.r.t. g_na, g_k, g_leak, {n} HH neurons x "
          f"{n_steps * dt:.0f} ms: forward mode {format_seconds(times['forward'])}, compiled "
          f"backprop {format_seconds(times['backprop'])}, torch autograd over the full "
          f"history {format_seconds(t_torch)}; gradients agree to {err:.1e}", file=out)
    return [["neuro", f"HH gradient, {n} neurons x {n_steps * dt:.0f} ms, float64",
             f"{err:.1e} (vs autograd)",
             f"forward {format_seconds(times['forward'])}, "
             f"backprop {format_seconds(times['backprop'])}",
             f"torch autograd, full history: {format_seconds(t_torch)}",
             f"{t_torch / times['forward']:.0f}x / {t_torch / times['backprop']:.0f}x",
             f"{3 * n} conductances"]]


def _network_grad_part(quick: bool, out: TextIO) -> list[list[str]]:
    """Synaptic-weight gradients of an HH network (surrogate spikes), kernel against torch."""
    import numpy as np
    import torch

    from .neuro import HH_CHANNELS, ChannelSet, network_simulate_torch, random_connectivity

    # d(mean recorded v) / d(every weight) of a recurrent HH network, float64, surrogate
    # spike derivatives (SuperSpike), engine="kernel" (the whole run and its backward as
    # two compiled op calls, network_run and network_run_vjp) against engine="torch".
    n, n_steps, dt = (100, 200, 0.025) if quick else (500, 400, 0.025)
    hh = ChannelSet(HH_CHANNELS)
    rng = np.random.default_rng(1)
    indptr, indices, weights = random_connectivity(n, 25 / n, 0.05, rng)
    v0 = torch.full((n,), -65.0, dtype=torch.float64)
    args = (hh, v0, torch.as_tensor(hh.steady_states(v0.numpy())),
            torch.as_tensor(hh.default_params(n)),
            torch.where(torch.arange(n) < n // 10, 12.0, 0.0).double(),
            torch.zeros(n, dtype=torch.float64), torch.as_tensor(indptr),
            torch.as_tensor(indices))

    def grad(engine: str) -> Any:
        w = torch.as_tensor(weights).clone().requires_grad_()
        sim = network_simulate_torch(*args, w, dt=dt, n_steps=n_steps, delay_steps=40,
                                     record_every=10, engine=engine)
        (g,) = torch.autograd.grad(sim.v_record.mean(), w)
        return g

    got, want = grad("kernel"), grad("torch")  # compiles (or loads) the kernels
    err = float((got - want).abs().max() / want.abs().max())
    t_kernel = median_seconds(lambda: grad("kernel"), repeat=3)
    t_torch = median_seconds(lambda: grad("torch"), repeat=1)
    print(f"  weight gradient of an HH network (surrogate spikes), {n} neurons, "
          f"{indices.shape[0]:,} synapses, {n_steps * dt:.0f} ms: network_simulate_torch "
          f"kernel engine {format_seconds(t_kernel)}, torch operations "
          f"{format_seconds(t_torch)}; gradients agree to {err:.1e}", file=out)
    return [["neuro", f"HH network weight gradient, {n} neurons x {n_steps * dt:.0f} ms",
             f"{err:.1e} (vs torch)", format_seconds(t_kernel),
             f"the step in torch ops: {format_seconds(t_torch)}", f"{t_torch / t_kernel:.1f}x",
             f"{indices.shape[0]:,} weights"], _cable_network_grad_row(quick, out)]


def _cable_network_grad_row(quick: bool, out: TextIO) -> list[str]:
    """The same for a network of branched cells: weights, parameters and axial coupling."""
    import numpy as np
    import torch

    from .neuro import (
        HH_CHANNELS,
        ChannelSet,
        cable_coupling,
        cable_network_simulate_torch,
        random_connectivity,
    )

    hh = ChannelSet(HH_CHANNELS)
    n, m, n_steps, dt = (20, 6, 200, 0.025) if quick else (60, 6, 400, 0.025)
    parent = np.array(_BRANCHED_CELL[0])
    cpl = cable_coupling(parent, *_BRANCHED_CELL[1:])
    rng = np.random.default_rng(2)
    indptr, indices, weights = random_connectivity(n, 10 / n, 0.3, rng)
    comps = rng.integers(0, m, indices.shape[0])
    v0 = torch.full((n, m), -65.0, dtype=torch.float64)
    i_ext = torch.zeros(n, m, dtype=torch.float64)
    i_ext[: n // 5, 0] = 20.0
    fixed = (v0, torch.as_tensor(hh.steady_states(np.full(n * m, -65.0)).reshape(-1, n, m)))

    def grad(engine: str) -> Any:
        P = torch.as_tensor(hh.default_params(n * m).reshape(-1, n, m)).requires_grad_()
        C = torch.as_tensor(np.broadcast_to(cpl[:, None], (2, n, m)).copy()).requires_grad_()
        w = torch.as_tensor(weights).requires_grad_()
        sim = cable_network_simulate_torch(
            hh, *fixed, P, i_ext, parent, C, torch.zeros(n, m, dtype=torch.float64), indptr,
            indices, w, synapse_compartment=comps, dt=dt, n_steps=n_steps, delay_steps=40,
            record_every=10, record_at=[0, 5], engine=engine)
        return torch.autograd.grad(sim.v_record.mean(), (w, P, C))

    got, want = grad("kernel"), grad("torch")  # compiles (or loads) the kernels
    err = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, want,
                                                                         strict=True))
    t_kernel = median_seconds(lambda: grad("kernel"), repeat=3)
    t_torch = median_seconds(lambda: grad("torch"), repeat=1)
    print(f"  gradient of a network of {n} branched HH cells x {m} compartments, "
          f"{indices.shape[0]:,} synapses onto dendrites, {n_steps * dt:.0f} ms, w.r.t. the "
          f"weights, parameters and axial coupling: cable_network_simulate_torch kernel engine "
          f"{format_seconds(t_kernel)}, torch operations {format_seconds(t_torch)}; gradients "
          f"agree to {err:.1e}", file=out)
    return ["neuro", f"branched-cell network gradient, {n} cells x {m} compartments x "
            f"{n_steps * dt:.0f} ms", f"{err:.1e} (vs torch)", format_seconds(t_kernel),
            f"the step in torch ops: {format_seconds(t_torch)}", f"{t_torch / t_kernel:.1f}x",
            f"{indices.shape[0]:,} weights, {(7 + 2) * n * m:,} params + coupling"]


def _cable_grad_part(quick: bool, out: TextIO) -> list[list[str]]:
    """Gradient of branched HH cells: the compiled cable adjoint against autograd."""
    import numpy as np
    import torch

    from . import ops as fusekit_ops
    from .neuro import HH_CHANNELS, ChannelSet, cable_coupling
    from .ops.ion import cable_torch_step

    hh = ChannelSet(HH_CHANNELS)
    n_cells, n_steps, dt, every = (4, 100, 0.025, 4) if quick else (20, 400, 0.025, 4)
    # A soma and three dendrites of 4 compartments, the third branching off the first.
    parent = np.array([-1, 0, 1, 2, 3, 0, 5, 6, 7, 2, 9, 10, 11])
    n_comp = parent.shape[0]
    length, diam = np.full(n_comp, 40.0), np.full(n_comp, 1.5)
    length[0] = diam[0] = 20.0
    coupling = torch.as_tensor(np.broadcast_to(cable_coupling(parent, length, diam)[:, None],
                                               (2, n_cells, n_comp)).copy())
    v0 = torch.full((n_cells, n_comp), -65.0, dtype=torch.float64)
    s0 = torch.as_tensor(hh.steady_states(np.full(n_cells * n_comp, -65.0))
                         .reshape(-1, n_cells, n_comp))
    i_ext = torch.zeros(n_cells, n_comp, dtype=torch.float64)
    i_ext[:, 0] = torch.linspace(5.0, 40.0, n_cells, dtype=torch.float64)
    p0 = torch.as_tensor(hh.default_params(n_cells * n_comp).reshape(-1, n_cells, n_comp))

    def grads(how: str) -> tuple[Any, ...]:
        P, C = p0.clone().requires_grad_(), coupling.clone().requires_grad_()
        if how == "autograd":
            v, S, rows = v0, s0, []
            pt = torch.as_tensor(parent)
            for step in range(n_steps):
                v, S = cable_torch_step(hh, pt, v, S, P, i_ext, C, dt)
                if (step + 1) % every == 0:
                    rows.append(v[:, 0])
            loss = torch.stack(rows).mean(0).sum()
        else:
            rec = fusekit_ops.cable_simulate(v0, s0, P, i_ext, parent, C, channels=hh, dt=dt,
                                             n_steps=n_steps, record_every=every, record_at=[0],
                                             backend="cpu").v_record
            loss = rec[:, :, 0].mean(0).sum()
        return torch.autograd.grad(loss, (P, C))

    want = grads("autograd")
    got = grads("adjoint")  # compile outside the timing
    err = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, want,
                                                                         strict=True))
    t_adj = median_seconds(lambda: grads("adjoint"), repeat=3)
    t_torch = median_seconds(lambda: grads("autograd"), repeat=1)
    print(f"  gradient of the soma's mean v w.r.t. every compartment's parameters and the "
          f"axial coupling, {n_cells} branched HH cells x {n_comp} compartments x "
          f"{n_steps * dt:.0f} ms: compiled adjoint {format_seconds(t_adj)}, torch autograd "
          f"over the full history {format_seconds(t_torch)}; gradients agree to {err:.1e}",
          file=out)
    return [["neuro", f"branched-cell gradient, {n_cells} cells x {n_comp} compartments x "
             f"{n_steps * dt:.0f} ms, float64", f"{err:.1e} (vs autograd)",
             format_seconds(t_adj), f"torch autograd, full history: {format_seconds(t_torch)}",
             f"{t_torch / t_adj:.0f}x", f"{(7 + 2) * n_comp * n_cells} parameters"]]


def _fit_part(quick: bool, out: TextIO) -> list[list[str]]:
    """Learning task (a): recover an HH cell's conductances from its voltage traces."""
    import time

    import torch

    from .neuro import HH_CHANNELS, fit_parameters, noisy_steps, params_tensor, simulate

    # Three sweeps (hyperpolarising, subthreshold, spiking step + noise); the start is off
    # by -35%, +40% and +50%. The full-size fit is examples/fit_conductances/fit.py.
    hidden = {"g_na": 120.0, "g_k": 36.0, "g_leak": 0.3}
    start = {"g_na": 78.0, "g_k": 50.4, "g_leak": 0.45}
    dt, duration = (0.1, 8.0) if quick else (0.1, 12.0)
    n_steps = int(round(duration / dt))
    i_ext = torch.tensor(noisy_steps(n_steps, dt, [-4.0, 3.0, 10.0]))
    with torch.no_grad():
        target = simulate(HH_CHANNELS, params_tensor(HH_CHANNELS, 3, **hidden), i_ext,
                          duration=duration, dt=dt, record_every=1, max_spikes=8)
    t0 = time.perf_counter()
    fit = fit_parameters(HH_CHANNELS, target.v_record, i_ext, start, dt=dt,
                         target_spike_times=target.spike_times, adam_steps=15, adam_lr=0.08,
                         adam_decay=0.93, lbfgs_steps=12 if quick else 20)
    seconds = time.perf_counter() - t0
    err = max(abs(fit.values[k] - v) / v for k, v in hidden.items())
    print(f"  conductance fit (HH, 3 sweeps x {duration:.0f} ms): "
          + ", ".join(f"{k} {fit.values[k]:.4g} (true {v:g})" for k, v in hidden.items())
          + f"; max relative error {100 * err:.2g}% from a start 35-50% off, "
          f"{fit.n_simulations} simulations + gradients", file=out)
    return [["neuro", f"fit g_na, g_k, g_leak to HH traces (3 sweeps x {duration:.0f} ms)",
             f"{err:.1e} (conductances)", format_seconds(seconds), "start 35-50% off", "-",
             f"{fit.n_simulations} forward-mode gradients"]]


def _neuro_deploy_part(quick: bool, out: TextIO) -> list[list[str]]:
    import numpy as np

    from .neuro import FixedPointHH, fit_lif, fixed_point_error

    # The HH step in 16- and 32-bit fixed point against float64, and the LIF stand-in
    # that the NIR export writes, fitted to the HH f-I curve.
    currents, duration = [5.0, 10.0, 20.0, 40.0], (20.0 if quick else 50.0)
    rows = []
    for bits, v_frac, gate_frac, step in ((16, 8, 14, 0.25), (32, 20, 28, 1 / 16)):
        chip = FixedPointHH(word_bits=bits, v_frac_bits=v_frac, gate_frac_bits=gate_frac,
                            table_step=step)
        err = fixed_point_error(chip, currents, duration=duration)
        same = int((err.count_fixed == err.count_ref).sum())
        print(f"  HH step in {bits}-bit fixed point (v {v_frac}, gates {gate_frac} fraction "
              f"bits, {step} mV rate tables), {duration:.0f} ms: voltage RMS error up to "
              f"{err.v_rms.max():.2g} mV, spike counts equal for {same} of {len(currents)} "
              f"currents, spike times within {np.nanmax(err.max_spike_shift):.2g} ms", file=out)
        rows.append(["neuro", f"HH step, {bits}-bit fixed point, {duration:.0f} ms",
                     f"{err.v_rms.max():.1e} mV rms (v)", "-", "float64 reference", "-",
                     f"counts equal {same}/{len(currents)}"])
    fit = fit_lif(currents=np.linspace(0.0, 40.0, 6 if quick else 11),
                  duration=duration if quick else 200.0)
    print(f"  NIR LIF stand-in fitted to HH (tau {fit.tau:.2f} ms): firing rates within "
          f"{100 * fit.rate_rel_rms:.1f}% relative RMS, first spikes {fit.first_spike_mae:.2f} "
          "ms apart on average", file=out)
    rows.append(["neuro", "NIR export: LIF stand-in for HH (f-I fit)",
                 f"{fit.rate_rel_rms:.1e} (rates, rel RMS)", "-", "HH float64", "-",
                 f"{fit.currents.size} currents"])
    rows.append(_cable_nir_row(quick, out))
    return rows


def _cable_nir_row(quick: bool, out: TextIO) -> list[str]:
    import numpy as np
    import scipy.sparse as sp

    from .neuro import HH_CHANNELS, CableNetwork, simulate_nir, to_nir

    # 20 ball-and-stick cells with synapses on random compartments, every soma driven above
    # rheobase: the NIR graph's CubaLIF stand-ins against the cells.
    morph = (np.array([-1, 0, 1, 2, 1]), [20.0, 100, 100, 100, 80], [20.0, 2, 1.5, 1.0, 1.0])
    W = sp.random(20, 20, density=0.2, format="csr", random_state=0) * 0.2
    comps = np.random.default_rng(1).integers(0, 5, W.nnz)
    net = CableNetwork(HH_CHANNELS, morph, W, synapse_compartment=comps)
    net.i_ext[:, 0] = np.linspace(15.0, 35.0, 20)
    duration = 100.0 if quick else 200.0
    graph = to_nir(net, duration=duration, backend=None)
    lif = simulate_nir(graph, net.i_ext[:, 0], duration)
    hh = net.run(duration, max_spikes=1)
    apart = float(np.abs(lif.spike_count - hh.spike_count).mean())
    atten = graph.metadata["soma_attenuation"][0]
    print(f"  NIR export of 20 branched cells (synapses on dendrites at {atten[3]:.2f} of their "
          f"somatic effect at the tip): {hh.spike_count.mean():.2f} HH spikes per cell in "
          f"{duration:.0f} ms, stand-ins {lif.spike_count.mean():.2f}, {apart:.2f} apart per "
          "cell", file=out)
    return ["neuro", "NIR export: branched cells as CubaLIF stand-ins",
            f"{apart:.2f} spikes/cell apart", "-", "HH cable network", "-",
            f"{hh.spike_count.mean():.1f} spikes/cell"]


def _digits_part(quick: bool, out: TextIO) -> list[list[str]]:
    from dataclasses import replace

    from .neuro._digits import DigitsConfig, digits_noise_study

    # The quick study of examples/digits_hh (about 10-20 s); smaller still for the tests.
    config = DigitsConfig.quick()
    if quick:
        config = replace(config, hidden=16, window_ms=10.0, epochs=2, batch_size=32,
                         train_limit=300, lr=0.02, sigmas=(0.0, 0.4), draws=1)
    noisy = config.sigmas[-2] if len(config.sigmas) > 2 else config.sigmas[-1]
    print(f"  digits, 64-{config.hidden}-10 spiking network, {config.epochs} epochs "
          "(examples/digits_hh --quick):", file=out)
    result = digits_noise_study(config, seed=0, out=out)

    def cell(kind: str) -> str:
        acc = result.accuracy[kind]
        return (f"{kind}: {100 * acc[config.sigmas[0]][0]:.0f}% clean, "
                f"{100 * acc[noisy][0]:.0f}% at sigma {noisy:g}")

    t_hh, t_lif = result.train_seconds["HH"], result.train_seconds["LIF"]
    return [["neuro/train", f"digits HH vs LIF net 64-{config.hidden}-10, test accuracy",
             "-", f"{cell('HH')} (train {format_seconds(t_hh)})",
             f"{cell('LIF')} (train {format_seconds(t_lif)})", f"{t_lif / t_hh:.2f}x",
             f"{result.n_train} images x {config.epochs} epochs"]]


def run_tour(quick: bool = False, out: TextIO | None = None) -> list[list[str]]:
    """Run every domain's part of the tour and print the results table.

    Args:
        quick: Smaller problem sizes (used by the tests).
        out: Where to print (default ``sys.stdout``).

    Returns:
        The table rows.
    """
    out = out or sys.stdout
    from ._info import info

    info(file=out)
    print("\nTour:", file=out)
    rows: list[list[str]] = []
    parts: list[Any] = [_fp8_part, _kron_part, _soka_part, _neuro_part, _network_part,
                        _cable_network_part, _grad_part, _network_grad_part, _cable_grad_part,
                        _fit_part,
                        _neuro_deploy_part, _digits_part, _mst_part]
    for part in parts:
        rows += part(quick, out)
    headers = ["domain", "case", "max rel err vs f64", "fusekit (cpu)", "peer", "speed-up",
               "parameters"]
    print("\nResults (one quick timing each on a shared machine; the side-by-side benchmark "
          "figures are in docs/benchmarks.md)\n" + table(headers, rows), file=out)
    return rows
