"""FP8 block-scaled GEMV/GEMM on DeepSeek-V3 expert shapes, against what a user runs instead.

Every group times, on the same weights and the same activations:
* ``fusekit_fp8_gemv``: fusekit's CPU kernel on the FP8 weight (1 byte per weight);
* ``fusekit_fp8_gemv_bf16_activations``: the same with torch_bf16's activations (bfloat16
  values), which the AVX-512 BF16 kernel multiplies in one part instead of three (likewise
  ``fusekit_fp8_gemv_t_bf16_grads`` for the transposed product ``g W``);
* ``stream_read``: ``torch.sum`` over the same FP8 bytes viewed as float32, the streaming
  read limit for any kernel that reads the weight once (the physical bound at M=1);
* ``torch_bf16``: ``F.linear`` with the weight dequantized to bfloat16 once at load time
  (2 bytes per weight; what KTransformers-style CPU backends and most users run);
* ``torch_dequant_matmul``: dequantize the FP8 weight with torch on every call, then matmul;
* ``numpy_ml_dtypes``: ml_dtypes decode + NumPy scale + NumPy matmul on every call;
* ``torch_scaled_mm``: ``torch._scaled_mm`` (FP8 x FP8, per-tensor scales only) where it runs.

Weights rotate through six copies (about 88 MB of FP8, more than twice the 32 MB last-level
cache here), so each call reads its weight from DRAM.
"""

import itertools
import time

import numpy as np
import pytest
import torch

import fusekit
from fusekit.backends.cpu.fp8_matmul import fp8_gemv_cpu
from fusekit.ops.fp8_matmul import fp8_gemv_reference

SHAPES = {"gate_up": (2048, 7168), "down": (7168, 2048)}
COPIES = 6


@pytest.fixture(scope="module", params=list(SHAPES))
def expert(request):
    """Six FP8 copies of one DeepSeek-V3 expert matrix, with their bf16 dequantizations."""
    n, k = SHAPES[request.param]
    w = (np.random.default_rng(0).standard_normal((n, k)) * 0.02).astype(np.float32)
    q, s = fusekit.ops.fp8_block_quantize(w)
    copies = 1 if request.config.getoption("benchmark_disable") else COPIES
    # Distinct memory with the same code statistics: roll the bytes of one quantized matrix.
    qs = [np.roll(q, 7 * i, axis=1).copy() for i in range(copies)]
    bf16 = [torch.from_numpy(fusekit.ops.fp8_block_dequantize(qi, s)).bfloat16() for qi in qs]
    return {"name": request.param, "n": n, "k": k, "q": qs, "s": s, "bf16": bf16}


def rotating(items):
    it = itertools.cycle(items)
    return lambda: next(it)


def activations(m, k):
    return np.random.default_rng(m).standard_normal((m, k)).astype(np.float32)


def group(expert, m, extra=""):
    return f"fp8 {expert['name']} {expert['n']}x{expert['k']} M={m}{extra}"


def time_fp8_gemv(benchmark, expert, m, x):
    """Check fusekit's product with ``x`` against float64, then time it on rotating copies."""
    s = expert["s"]
    y = fp8_gemv_cpu(x, expert["q"][0], s)
    ref = fp8_gemv_reference(x.astype(np.float64), expert["q"][0], s)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) <= 1e-6
    nxt = rotating(expert["q"])
    benchmark.group = group(expert, m)
    benchmark.extra_info["weight_bytes"] = expert["n"] * expert["k"]
    benchmark(lambda: fusekit.ops.fp8_gemv(x, nxt(), s, backend="cpu"))


@pytest.mark.parametrize("m", [1, 4, 16, 64])
def test_fusekit_fp8_gemv(benchmark, expert, m):
    time_fp8_gemv(benchmark, expert, m, activations(m, expert["k"]))


@pytest.mark.parametrize("m", [1, 4, 16, 64])
def test_fusekit_fp8_gemv_bf16_activations(benchmark, expert, m):
    # the same activations as torch_bf16 gets (bfloat16 values, passed as float32): one
    # bfloat16 part each where the CPU has AVX-512 BF16, three for general float32 above
    x = torch.from_numpy(activations(m, expert["k"])).bfloat16().float().numpy()
    time_fp8_gemv(benchmark, expert, m, x)


@pytest.mark.parametrize("m", [1, 4, 16, 64])
def test_torch_bf16(benchmark, expert, m):
    x = torch.from_numpy(activations(m, expert["k"])).bfloat16()
    nxt = rotating(expert["bf16"])
    benchmark.group = group(expert, m)
    with torch.no_grad():
        benchmark(lambda: torch.nn.functional.linear(x, nxt()))


def time_fp8_gemv_t(benchmark, expert, m, g):
    """Check fusekit's ``g W`` against float64, then time it on rotating copies."""
    s = expert["s"]
    got = fusekit.ops.fp8_gemv_t(g, expert["q"][0], s, backend="cpu")
    deq = fusekit.ops.fp8_block_dequantize(expert["q"][0], s).astype(np.float64)
    ref = g.astype(np.float64) @ deq
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) <= 1e-5
    nxt = rotating(expert["q"])
    benchmark.group = group(expert, m, " transposed (g W)")
    benchmark(lambda: fusekit.ops.fp8_gemv_t(g, nxt(), s, backend="cpu"))


@pytest.mark.parametrize("m", [1, 16, 64])
def test_fusekit_fp8_gemv_t(benchmark, expert, m):
    # the gradient w.r.t. x: g W, the transposed product
    time_fp8_gemv_t(benchmark, expert, m, activations(m, expert["n"]))


@pytest.mark.parametrize("m", [1, 16, 64])
def test_fusekit_fp8_gemv_t_bf16_grads(benchmark, expert, m):
    # the gradients torch_bf16_t gets (bfloat16 values, passed as float32), as a bfloat16
    # model's backward passes them: from 12 rows the bfloat16 kernel on AVX-512 BF16 CPUs
    g = torch.from_numpy(activations(m, expert["n"])).bfloat16().float().numpy()
    time_fp8_gemv_t(benchmark, expert, m, g)


@pytest.mark.parametrize("m", [1, 16, 64])
def test_torch_bf16_t(benchmark, expert, m):
    g = torch.from_numpy(activations(m, expert["n"])).bfloat16()
    nxt = rotating(expert["bf16"])
    benchmark.group = group(expert, m, " transposed (g W)")
    with torch.no_grad():
        benchmark(lambda: g @ nxt())


@pytest.mark.parametrize("m", [1])
def test_stream_read(benchmark, expert, m):
    views = [torch.from_numpy(q.reshape(-1).view(np.float32)) for q in expert["q"]]
    nxt = rotating(views)
    benchmark.group = group(expert, m)
    benchmark.extra_info["weight_bytes"] = expert["n"] * expert["k"]
    benchmark(lambda: nxt().sum())


def time_pairs(benchmark, ours, other, name: str) -> None:
    """Time ``ours(i)`` and then ``other(i)`` for i = 0, 1, ... in pairs, moments apart.

    This host's DRAM bandwidth drifts up to 2x between minutes, so a ratio of two tests run
    apart is noisy; ``extra_info`` gets both sides' min and median and ``<name>_ratio_min``
    and ``<name>_ratio_median`` (other's time over ours). The benchmark's own time is a pair's.
    """
    times: dict[str, list[float]] = {"fusekit": [], name: []}
    calls = itertools.count()

    def pair():
        i = next(calls)
        t0 = time.perf_counter()
        ours(i)
        t1 = time.perf_counter()
        other(i)
        times["fusekit"].append(t1 - t0)
        times[name].append(time.perf_counter() - t1)

    disabled = benchmark.disabled
    benchmark.pedantic(pair, rounds=1 if disabled else 600, warmup_rounds=0 if disabled else 12)
    a, b = np.array(times["fusekit"]), np.array(times[name])
    assert a.size and b.size and (a > 0).all()
    for key, t in (("fusekit", a), (name, b)):
        benchmark.extra_info[f"{key}_min_us"] = float(t.min() * 1e6)
        benchmark.extra_info[f"{key}_median_us"] = float(np.median(t) * 1e6)
    benchmark.extra_info[f"{name}_ratio_min"] = float(b.min() / a.min())
    benchmark.extra_info[f"{name}_ratio_median"] = float(np.median(b) / np.median(a))


@pytest.mark.parametrize("m", [1])
def test_fusekit_fp8_gemv_paired_with_stream_read(benchmark, expert, m):
    # each call (bfloat16-valued x) followed by a stream read of another copy of the weight
    x = torch.from_numpy(activations(m, expert["k"])).bfloat16().float().numpy()
    s, qs = expert["s"], expert["q"]
    ref = fp8_gemv_reference(x.astype(np.float64), qs[0], s)
    y = fusekit.ops.fp8_gemv(x, qs[0], s, backend="cpu")
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) <= 1e-6
    views = [torch.from_numpy(q.reshape(-1).view(np.float32)) for q in qs]
    benchmark.group = group(expert, m, " paired with the stream read")
    benchmark.extra_info["weight_bytes"] = expert["n"] * expert["k"]
    time_pairs(benchmark, lambda i: fusekit.ops.fp8_gemv(x, qs[i % len(qs)], s, backend="cpu"),
               lambda i: views[(i + len(qs) // 2) % len(qs)].sum(), "stream")


@pytest.mark.parametrize("m", [1])
def test_fusekit_fp8_gemv_paired_one_thread(benchmark, expert, m):
    # each call on every thread (float32 x, as one_thread below) followed by one on one thread
    x = activations(m, expert["k"])
    s, qs = expert["s"], expert["q"]
    before = fusekit.get_num_threads()

    def one_thread(i):
        fusekit.set_num_threads(1)
        try:
            fp8_gemv_cpu(x, qs[(i + len(qs) // 2) % len(qs)], s)
        finally:
            fusekit.set_num_threads(before)

    benchmark.group = group(expert, m, f" paired on {before} threads and one")
    time_pairs(benchmark, lambda i: fp8_gemv_cpu(x, qs[i % len(qs)], s), one_thread, "one_thread")


@pytest.mark.parametrize("m", [1])
def test_fusekit_fp8_gemv_one_thread(benchmark, expert, m):
    x = activations(m, expert["k"])
    nxt = rotating(expert["q"])
    benchmark.group = group(expert, m)
    before = fusekit.get_num_threads()
    fusekit.set_num_threads(1)
    try:
        benchmark(lambda: fp8_gemv_cpu(x, nxt(), expert["s"]))
    finally:
        fusekit.set_num_threads(before)


@pytest.mark.parametrize("m", [1])
def test_fusekit_fp8_gemv_subnormal_heavy(benchmark, expert, m):
    """Weights whose codes are all E4M3 subnormals or zero (exponent field 0)."""
    rng = np.random.default_rng(1)
    subnormal = [(q & 0x87) | (rng.integers(0, 8, q.shape, dtype=np.uint8) & 0x07)
                 for q in expert["q"]]
    x = activations(m, expert["k"])
    nxt = rotating(subnormal)
    benchmark.group = group(expert, m)
    benchmark(lambda: fp8_gemv_cpu(x, nxt(), expert["s"]))


@pytest.mark.parametrize("m", [1])
def test_torch_dequant_matmul(benchmark, expert, m):
    x = torch.from_numpy(activations(m, expert["k"]))
    qs = [torch.from_numpy(q).view(torch.float8_e4m3fn) for q in expert["q"]]
    s = torch.from_numpy(expert["s"])
    n, k = expert["n"], expert["k"]
    nxt = rotating(qs)

    def dequant_matmul():
        full = s.repeat_interleave(128, 0)[:n].repeat_interleave(128, 1)[:, :k]
        return torch.nn.functional.linear(x, nxt().to(torch.float32) * full)

    benchmark.group = group(expert, m)
    with torch.no_grad():
        benchmark(dequant_matmul)


@pytest.mark.parametrize("m", [1])
def test_numpy_ml_dtypes(benchmark, expert, m):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = activations(m, expert["k"])
    n, k, s = expert["n"], expert["k"], expert["s"]
    full = np.repeat(np.repeat(s, 128, 0), 128, 1)[:n, :k]
    nxt = rotating(expert["q"])
    benchmark.group = group(expert, m)
    benchmark(lambda: x @ (nxt().view(ml_dtypes.float8_e4m3fn).astype(np.float32) * full).T)


@pytest.mark.parametrize("m", [1])
def test_torch_scaled_mm(benchmark, expert, m):
    """FP8 x FP8 with per-tensor scales: the closest torch has to block-scaled FP8 on CPU."""
    x = torch.from_numpy(activations(m, expert["k"]))
    x_scale = x.abs().max() / 448
    x8 = (x / x_scale).to(torch.float8_e4m3fn)
    w8 = torch.from_numpy(expert["q"][0]).view(torch.float8_e4m3fn)
    one = torch.tensor(1.0)
    try:
        torch._scaled_mm(x8, w8.t(), scale_a=x_scale, scale_b=one, out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError) as exc:
        pytest.skip(f"torch._scaled_mm does not run here: {exc}")
    benchmark.group = group(expert, m)
    benchmark.pedantic(torch._scaled_mm, args=(x8, w8.t()),
                       kwargs={"scale_a": x_scale, "scale_b": one, "out_dtype": torch.float32},
                       rounds=3, iterations=1)


@pytest.fixture(scope="module")
def experts(request):
    """Two DeepSeek-V3 experts (hidden 7168, intermediate 2048): 88 MB of FP8 in all."""
    hidden, inter = 7168, 2048
    rng = np.random.default_rng(3)

    def quantize(n, k):
        return fusekit.ops.fp8_block_quantize((rng.standard_normal((n, k)) * 0.02)
                                              .astype(np.float32))

    copies = 1 if request.config.getoption("benchmark_disable") else 2
    out = []
    for _ in range(copies):
        mats = {"gate": quantize(inter, hidden), "up": quantize(inter, hidden),
                "down": quantize(hidden, inter)}
        bf16 = {k: torch.from_numpy(fusekit.ops.fp8_block_dequantize(*v)).bfloat16()
                for k, v in mats.items()}
        out.append((mats, bf16))
    return out


@pytest.mark.parametrize("m", [1, 16])
def test_fusekit_fp8_expert(benchmark, experts, m):
    x = activations(m, 7168)
    nxt = rotating([mats for mats, _ in experts])
    benchmark.group = f"fp8 expert 7168/2048 M={m}"
    benchmark(lambda: (lambda e: fusekit.ops.fp8_expert(x, e["gate"], e["up"], e["down"],
                                                         backend="cpu"))(nxt()))


@pytest.mark.parametrize("m", [1, 16])
def test_fusekit_fp8_expert_bf16(benchmark, experts, m):
    # a bfloat16 model's call: torch bfloat16 activations in and out, the SiLU product
    # rounded to bfloat16 between the two passes (as the torch bf16 expert rounds it)
    x = torch.from_numpy(activations(m, 7168)).bfloat16()

    def as_torch(mats):
        return {k: (torch.from_numpy(q).view(torch.float8_e4m3fn), torch.from_numpy(sc))
                for k, (q, sc) in mats.items()}

    weights = [as_torch(mats) for mats, _ in experts]
    with torch.no_grad():
        want = torch_expert(x, experts[0][1]).double()
        e = weights[0]
        got = fusekit.ops.fp8_expert(x, e["gate"], e["up"], e["down"], backend="cpu")
    assert got.dtype == torch.bfloat16
    assert ((got.double() - want).norm() / want.norm()).item() <= 2e-2
    nxt = rotating(weights)
    benchmark.group = f"fp8 expert 7168/2048 M={m}"
    with torch.no_grad():
        benchmark(lambda: (lambda e: fusekit.ops.fp8_expert(x, e["gate"], e["up"], e["down"],
                                                             backend="cpu"))(nxt()))


def torch_expert(x, w):
    """The torch bf16 expert: weights dequantized to bfloat16 at load time."""
    F = torch.nn.functional
    return F.linear(F.silu(F.linear(x, w["gate"])) * F.linear(x, w["up"]), w["down"])


@pytest.mark.parametrize("m", [1, 16])
def test_torch_bf16_expert(benchmark, experts, m):
    x = torch.from_numpy(activations(m, 7168)).bfloat16()
    nxt = rotating([bf16 for _, bf16 in experts])
    benchmark.group = f"fp8 expert 7168/2048 M={m}"
    with torch.no_grad():
        benchmark(lambda: torch_expert(x, nxt()))
