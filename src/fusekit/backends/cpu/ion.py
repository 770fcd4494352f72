"""CPU kernels of the ion family: one fused, generated Numba kernel per channel set and dtype.

The kernel source is generated from the channels (``ops.ion_channel.step_source``) and
compiled once per process for each ``(channel set, dtype)``. Its structure is what made the
prototype fast (see DESIGN.md):

* neurons in blocks of up to ``NEURON_BLOCK`` (:func:`block_width`: narrower where that gives
  every thread an equal run); ``prange`` over blocks, and every time step inside, so threads
  never synchronise between steps;
* a block's potentials, states and parameters live in small contiguous scratch arrays, and the
  loop over the neurons of a block is plain arithmetic that LLVM vectorises: the channel
  functions are inlined and ``exp`` is the polynomial of ``_vmath`` (``math.exp`` would stay a
  scalar call);
* one step of a block is cut into a few vector loops (``staged_loops``): a whole HH step in
  one loop body is a dependency chain longer than the core's out-of-order window, so it ran
  at its latency; short loops whose iterations overlap ran 1.4-1.5x faster;
* spike detection has loops of its own after each step (an integer reduction inside the
  step's loops kept them scalar): a vector count of crossings, then a scalar loop over the
  block only on steps with one.

The generated source is written to a file (``_generated_dir``, by a hash of everything it
depends on) so that Numba's disk cache keeps the compiled kernel for later processes; where
no folder is writable, it is compiled in every process (seconds per channel set and dtype).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import textwrap
import types
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numba import prange

from ..._registry import register_kernel
from ...ops import ion
from ...ops.ion_channel import (
    VTRAP_SERIES_BELOW,
    ChannelSet,
    channel_set,
    compile_channel_function,
    reversal_constants,
    step_source,
    unless_junction_lines,
)
from ._numba import configure, njit
from ._vmath import exp_f32, exp_f64

_FLOATS = ("float32", "float64")
#: Neurons per block at most: one thread's unit of work (:func:`block_width` narrows it so
#: that every thread gets an equal run). 64 keeps squid HH's float64 scratch (about 29 rows)
#: in a 32 KiB L1: 2-3.5% faster than 256 in interleaved runs (forward float32 and float64,
#: forward mode, backprop; 32 and 128 measured like 64).
NEURON_BLOCK = 64
#: Neurons per block (at most) of the network kernel, which starts its blocks anew every
#: delay window (their scratch allocated and loaded each time): 64 measured 1-2% slower than
#: 256 there.
NETWORK_BLOCK = 256
#: Values between two rows of a block's scratch array beyond the block's: rows a multiple of
#: 4 KiB apart made loads wait on unrelated stores (4K aliasing); 16 values measured 1.05-1.1x
#: faster than none for the staged step.
ROW_PAD = 16
#: LLVM fast-math flags per dtype: FMA contraction and reciprocal approximations (``x / 18``
#: as ``x * (1/18)``, within an ulp). In float32 measured 17% faster (80 -> 94 M
#: neuron-steps per CPU-second, one thread, Zen 3). In float64 no gain on Zen 3, so it was
#: left exact until session 19: on Zen 1 (a slower divider) forward 1.04-1.07x, backprop
#: 1.06-1.07x, forward mode 1.0-1.02x (``benchmarks/ion_ab_paired.py``, one thread).
_FASTMATH = {"float32": {"contract", "nsz", "arcp"}, "float64": {"contract", "nsz", "arcp"}}

#: Spike detection after a step of a block (rows 0 and 1 of ``buf``: ``v`` after and before
#: the step), in loops of its own: a crossing count inside the step's loops (an integer
#: reduction) kept LLVM from vectorising them. A vector count first, then the scalar loop
#: only on the (rare) steps with a crossing: 1.04-1.06x faster. ``{in_slot}``: lines more
#: per kept spike time (forward mode: its tangents), ``{on_spike}``: per crossing (the
#: network marks the neuron as spiked); ``spikes_source`` fills both.
_SPIKES = """        crossed = 0
        for j in range(w):
            crossed += (buf[ROW + j] < thr) & (buf[j] >= thr)
        if crossed:
            for j in range(w):
                v_old = buf[ROW + j]
                v = buf[j]
                if v_old < thr and v >= thr:
                    c = counts[lo + j]
                    if c < max_spikes:
                        f = (thr - v_old) / (v - v_old)
                        times[c, lo + j] = (step + f) * dt{in_slot}
                    counts[lo + j] = c + 1{on_spike}"""


def spikes_source(in_slot: Sequence[str] = (), on_spike: Sequence[str] = ()) -> str:
    """The spike-detection loops of a block kernel (:data:`_SPIKES`) with extra lines."""
    return _SPIKES.format(in_slot="".join("\n" + " " * 24 + x for x in in_slot),
                          on_spike="".join("\n" + " " * 20 + x for x in on_spike))

_TEMPLATE = '''
def ion_block(lo, width, V, S, P, I, i_rows, dt, n_steps, record_every, thr, max_spikes,
              V_rec, counts, times, CK, CNT, seg_len):
    w = min(width, V.shape[0] - lo)
    # One flat scratch array, rows of ROW values (BLOCK and a pad): v, v before the step,
    # i_ext, states, params, then the values carried between the stages of a step.
    # A single array with constant row offsets lets LLVM prove the vector loop free of
    # aliasing (separate arrays needed more run-time checks than it allows, so it stayed
    # scalar).
    buf = np.empty({n_rows} * ROW, dtype=DTYPE)
    for j in range(w):
        buf[j] = V[lo + j]
        buf[2 * ROW + j] = I[0, lo + j]
    for k in range(N_STATES):
        for j in range(w):
            buf[(3 + k) * ROW + j] = S[k, lo + j]
    for k in range(N_PARAMS):
        for j in range(w):
            buf[(3 + N_STATES + k) * ROW + j] = P[k, lo + j]
{prelude}
    for step in range(n_steps):
        if seg_len > 0 and step % seg_len == 0:
            # the backward's checkpoints (ops.ion_grad.checkpointed_forward): v, the states
            # and the spike counts at the start of every segment of seg_len steps
            sg = step // seg_len
            for j in range(w):
                CNT[sg, lo + j] = counts[lo + j]
                CK[sg, 0, lo + j] = buf[j]
            for k in range(N_STATES):
                for j in range(w):
                    CK[sg, 1 + k, lo + j] = buf[(3 + k) * ROW + j]
        if i_rows:
            for j in range(w):
                buf[2 * ROW + j] = I[step, lo + j]
{step}
{spikes}
        if record_every > 0 and (step + 1) % record_every == 0:
            r = (step + 1) // record_every - 1
            for j in range(w):
                V_rec[r, lo + j] = buf[j]
    for j in range(w):
        V[lo + j] = buf[j]
    for k in range(N_STATES):
        for j in range(w):
            S[k, lo + j] = buf[(3 + k) * ROW + j]
'''

_DRIVER = '''
def ion_kernel(V, S, P, I, i_rows, dt, n_steps, record_every, thr, max_spikes,
               V_rec, counts, times, CK, CNT, seg_len, width):
    n_blocks = (V.shape[0] + width - 1) // width
    for blk in prange(n_blocks):
        ion_block(blk * width, width, V, S, P, I, i_rows, dt, n_steps, record_every, thr,
                  max_spikes, V_rec, counts, times, CK, CNT, seg_len)
'''


def _vtrap_fns(exp: Callable[..., Any], scalar: Callable[[float], Any],
               fastmath: set[str]) -> dict[str, Any]:
    """The ``vtrap`` family for one dtype, on top of ``exp`` (same series and cut-off).

    ``vtrap`` (``ion_channel.vtrap``), ``vtrap_e`` given ``e = exp(x / y)``, ``vtrap_dx``
    (its derivative in x), and ``vtrap_r``, ``vtrap_er``, ``vtrap_dxr``: vtrap and its
    derivative around one reciprocal (``ion_symbolic``). Near ``x = 0`` (``|x / y|`` below
    the cut-off) every one takes its Taylor series, written once here.
    """
    cut, half, one = scalar(VTRAP_SERIES_BELOW), scalar(0.5), scalar(1.0)
    c1, c2, c3, c4, c5, c6 = (scalar(c) for c in (1 / 6, 1 / 12, 1 / 180, 1 / 720,
                                                  1 / 5040, 1 / 30240))
    jit = njit(cache=False, fastmath=fastmath, error_model="numpy")
    inline = njit(cache=False, fastmath=fastmath, error_model="numpy", inline="always")

    @inline
    def series(y, u, u2):  # vtrap(x, y) near x = 0, u = x / y
        return y * (one - half * u + u2 * (c2 - u2 * (c4 - u2 * c6)))

    @inline
    def dseries(u, u2):  # its derivative in x
        return u * (c1 - u2 * (c3 - u2 * c5)) - half

    @jit
    def vtrap(x, y):
        u = x / y
        small = abs(u) < cut
        denom = one if small else exp(u) - one
        direct = x / denom
        return series(y, u, u * u) if small else direct

    @jit
    def vtrap_e(x, y, e):
        u = x / y
        small = abs(u) < cut
        denom = one if small else e - one
        direct = x / denom
        return series(y, u, u * u) if small else direct

    @jit
    def vtrap_dx(x, y, value):
        u = x / y
        small = abs(u) < cut
        xs = y if small else x
        direct = value * (y - value - xs) / (xs * y)
        return dseries(u, u * u) if small else direct

    @jit
    def vtrap_r(x, y, e):
        u = x * (one / y)
        return one / (one if abs(u) < cut else e - one)

    @jit
    def vtrap_er(x, y, r):
        u = x * (one / y)
        return series(y, u, u * u) if abs(u) < cut else x * r

    @jit
    def vtrap_dxr(x, y, value, r):
        u = x * (one / y)
        return dseries(u, u * u) if abs(u) < cut else (y - value - x) * r * (one / y)

    return {"vtrap": vtrap, "vtrap_e": vtrap_e, "vtrap_dx": vtrap_dx, "vtrap_r": vtrap_r,
            "vtrap_er": vtrap_er, "vtrap_dxr": vtrap_dxr}


def _scalar_exp(dtype: str) -> tuple[Callable[[float], Any], Any]:
    """The scalar type and the vectorisable ``exp`` of ``dtype``."""
    return (np.float32, exp_f32) if dtype == "float32" else (np.float64, exp_f64)


@functools.cache
def _vtraps(dtype: str) -> dict[str, Any]:
    """:func:`_vtrap_fns` for ``dtype``, made once a process."""
    scalar, exp = _scalar_exp(dtype)
    return _vtrap_fns(exp, scalar, _FASTMATH[dtype])


def _math(dtype: str) -> tuple[dict[str, Any], Callable[[float], Any]]:
    import math

    scalar, exp = _scalar_exp(dtype)
    return {"exp": exp, "vtrap": _vtraps(dtype)["vtrap"], "log": math.log,
            "sqrt": math.sqrt}, scalar


def _sign(scalar: Callable[[float], Any]) -> Any:
    one, zero = scalar(1.0), scalar(0.0)

    @njit(cache=False)
    def sign(x):
        return one if x > zero else (-one if x < zero else zero)

    return sign


def graph_math(dtype: str) -> dict[str, Any]:
    """The names that code emitted from a traced step graph calls (``ops.ion_symbolic``).

    ``EXP``, ``VTRAP``, ``VTRAP_E``, ``VTRAP_DX``, ``VTRAP_R``, ``VTRAP_ER``, ``VTRAP_DXR``,
    ``LOG``, ``SQRT``, ``ABS``, ``SIGN``, ``ONE`` and ``ZERO`` for ``dtype``; the emitted
    ``K<i>`` constants come with the code.
    """
    import math

    math_fns, scalar = _math(dtype)
    v = _vtraps(dtype)
    return {"EXP": math_fns["exp"], "VTRAP": v["vtrap"], "VTRAP_E": v["vtrap_e"],
            "VTRAP_DX": v["vtrap_dx"], "VTRAP_R": v["vtrap_r"], "VTRAP_ER": v["vtrap_er"],
            "VTRAP_DXR": v["vtrap_dxr"], "LOG": math.log, "SQRT": math.sqrt, "ABS": abs,
            "SIGN": _sign(scalar), "ONE": scalar(1.0), "ZERO": scalar(0.0)}


_kernels: dict[tuple[str, str, str], Any] = {}  # (family, channel key, dtype)


def _generated_dir() -> Path | None:
    """Where generated kernel sources are written so Numba can cache them on disk.

    ``FUSEKIT_KERNEL_CACHE`` names the folder (``0`` turns the disk cache off); else
    ``$NUMBA_CACHE_DIR/fusekit_generated`` or ``~/.cache/fusekit/generated``. ``None`` when
    none is writable: kernels are then compiled in every process.
    """
    env = os.environ.get("FUSEKIT_KERNEL_CACHE", "")
    if env == "0":
        return None
    if env:
        directory = Path(env)
    elif os.environ.get("NUMBA_CACHE_DIR"):
        directory = Path(os.environ["NUMBA_CACHE_DIR"]) / "fusekit_generated"
    else:
        directory = Path.home() / ".cache" / "fusekit" / "generated"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return directory if os.access(directory, os.W_OK) else None


@functools.cache
def _code_version() -> str:
    """Hash of the code that generated kernels depend on (a new one invalidates them)."""
    import numba

    from ...ops import ion_channel

    h = hashlib.sha1(numba.__version__.encode())
    for module_file in (__file__, _vmath_file(), ion_channel.__file__):
        h.update(Path(module_file).read_bytes())
    return h.hexdigest()


def _vmath_file() -> str:
    from . import _vmath

    return str(_vmath.__file__)


def _generated_globals(tag: str, cs: ChannelSet, dtype: str, text: str,
                       ns: dict[str, Any]) -> dict[str, Any]:
    """Run the generated ``text`` with globals ``ns``; from a file when one can be written.

    A file (named by a hash of the text, the channel code, the dtype and fusekit's code)
    lets Numba's ``cache=True`` keep the compiled kernel on disk for the next process.
    """
    directory = _generated_dir()
    if directory is None:
        g = dict(ns)
        exec(compile(text, f"<fusekit {tag} kernel {cs.key}>", "exec"), g)
        return g
    simple = sorted((k, repr(v)) for k, v in ns.items()
                    if isinstance(v, int | float | np.generic | np.dtype))
    digest = hashlib.sha1(
        f"{text}|{cs.key}|{dtype}|{simple}|{_code_version()}".encode()
    ).hexdigest()[:20]
    name = f"fusekit_{tag}_{digest}"
    path = directory / f"{name}.py"
    if not path.exists():
        tmp = path.with_name(f"{name}.{os.getpid()}.tmp")
        tmp.write_text(f"# Generated by fusekit for {cs!r}, {dtype}; safe to delete.\n{text}")
        os.replace(tmp, path)
    module = sys.modules.get(name)
    if module is None:
        # A real, registered module: Numba's cache finds its globals by module name.
        module = types.ModuleType(name)
        module.__file__ = str(path)
        module.__dict__.update(ns)
        exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
        sys.modules[name] = module
    return module.__dict__


def _compile_generated(tag: str, cs: ChannelSet, dtype: str, text: str, ns: dict[str, Any],
                       block: str, driver: str) -> Any:
    """Compile the generated ``block`` function, then the parallel ``driver`` that calls it."""
    g = _generated_globals(tag, cs, dtype, text, ns)
    if hasattr(g[driver], "py_func"):
        return g[driver]  # compiled already in this process (its module is registered)
    # The block function holds all the arithmetic and compiles without the parallel
    # machinery; the parallel driver around it is tiny (compiling one big parfor was slow).
    g[block] = njit(fastmath=_FASTMATH[dtype], error_model="numpy")(g[block])
    g[driver] = njit(parallel=True)(g[driver])
    return g[driver]


def generated_source(cs: ChannelSet, stages: int | None = None) -> str:
    """The Python source of the CPU kernel for ``cs`` (before compilation; for reading).

    ``stages``: vector loops per step (:func:`staged_loops`); by default one per
    ``STAGE_DEPTH`` cycles of the step's dependency chain (5 for squid HH).
    """
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    body, _, funcs = step_body(cs, "")
    if funcs:  # calls of the channels' own functions re-use names: not cut into stages
        stages = 1
    rows = {"v": 0, "i_inj": 2}
    rows.update({f"s{k}": 3 + k for k in range(n_states)})
    rows.update({f"p{k}": 3 + n_states + k for k in range(n_params)})
    states = [f"s{k}" for k in range(n_states)]
    prelude, body, rows = hoist_invariants(body, rows, [f"p{k}" for k in range(n_params)],
                                           3 + n_states + n_params, " " * 4)
    fixed = len(rows) + 1  # and row 1, v before the step
    step, n_spill = staged_loops(
        body, rows, fixed, stages, " " * 8, ["v_old = buf[j]"],
        [*(f"buf[{rows[s]} * ROW + j] = {s}" for s in states), "buf[ROW + j] = v_old",
         "buf[j] = v"])
    return _TEMPLATE.format(prelude=prelude, step=step, n_rows=fixed + n_spill,
                            spikes=spikes_source())


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Rough latencies (cycles) used to cut a step into stages: exp, a division, anything else.
_COST = {"EXP": 40, "VTRAP_E": 16, "VTRAP_R": 16, "VTRAP": 50, "/": 11}
#: Cycles of dependency chain per stage when the stage count is automatic. Squid HH (a chain
#: of about 200) in 3 stages ran 1.4-1.5x faster than in 1 on Zen 3, float32 and float64
#: alike, and 4-5 stages about the same as 3 there; on Zen 1 (a smaller out-of-order window,
#: 256-bit operations split in two) 5 stages (40) ran 10% faster than 3 (65) in float32 and
#: 5% in float64, forward mode 6%, the network 5% (docs/benchmarks.md).
STAGE_DEPTH = 40


def _line_cost(expr: str) -> int:
    for key in ("VTRAP_E(", "VTRAP_R(", "VTRAP(", "EXP("):
        if key in expr:
            return _COST[key[:-1]]
    return _COST["/"] if "/" in expr else 4


def _parse_lines(body: Sequence[str]) -> list[tuple[str, str, list[str]]]:
    """``(target, expression, names it reads)`` of each ``name = expr`` line of a step."""
    parsed = []
    for line in body:
        target, expr = (x.strip() for x in line.split("=", 1))
        parsed.append((target, expr, [n for n in _NAME.findall(expr) if n != target]))
    return parsed


def hoist_invariants(body: list[str], rows: dict[str, int], invariant: Collection[str],
                     first_row: int, indent: str) -> tuple[str, list[str], dict[str, int]]:
    """Take the lines of a step that read only ``invariant`` inputs out of the step loop.

    ``body`` and ``rows`` as :func:`staged_loops` takes them; ``invariant``: the inputs that
    do not change over a call (the parameter rows; ``dt`` and the ``K`` constants never
    change). A line is hoisted when every name it reads is invariant, a hoisted line's
    target or a constant, and it reads at least one invariant row (``dt / p0`` for squid
    HH: a division per step fewer). Returns a vector loop over the block that computes the
    hoisted values into rows from ``first_row`` on (to run once per call, before the step
    loop), the remaining body, and ``rows`` with the hoisted values' rows added (the step's
    loops load them from there). The same expression is evaluated, so results are
    bit-identical to the step computing it every time.
    """
    parsed = _parse_lines(body)
    targets = Counter(t for t, _, _ in parsed)
    hoisted: list[tuple[str, str, list[str]]] = []
    kept: list[str] = []
    stable = set(invariant)
    for line, (target, expr, deps) in zip(body, parsed, strict=True):
        varying = [d for d in deps if (d in rows or d in targets) and d not in stable]
        # a name assigned more than once (the untraced step re-uses a_, b_, ...) stays
        if (not varying and target.isidentifier() and targets[target] == 1
                and target not in rows and any(d in stable for d in deps)):
            hoisted.append((target, expr, deps))
            stable.add(target)
        else:
            kept.append(line)
    new_rows = dict(rows)
    for i, (target, _, _) in enumerate(hoisted):
        new_rows[target] = first_row + i
    if not hoisted:
        return "", kept, new_rows
    inner = indent + "    "
    loads = dict.fromkeys(d for _, _, deps in hoisted for d in deps if d in rows)
    out = [f"{indent}for j in range(w):"]
    out += [f"{inner}{d} = buf[{rows[d]} * ROW + j]" for d in loads]
    out += [f"{inner}{t} = {e}" for t, e, _ in hoisted]
    out += [f"{inner}buf[{new_rows[t]} * ROW + j] = {t}" for t, _, _ in hoisted]
    return "\n".join(out), kept, new_rows


def staged_loops(body: list[str], rows: dict[str, int], spill_row: int, stages: int | None,
                 indent: str, last_loads: Sequence[str] = (), last_stores: Sequence[str] = (),
                 last: Collection[str] = (), var: str = "j", base: str = "",
                 spill_base: str | None = None) -> tuple[str, int]:
    """One step over a block as ``stages`` vector loops over its neurons, and the spill rows.

    ``body``: the step's lines (``name = expr``), ending with the re-assignment of the
    inputs they update; ``rows``: the scratch row (of ``BLOCK`` values in ``buf``) of each
    input; rows from ``spill_row`` on carry values between stages. The last stage runs
    ``last_loads`` first and ``last_stores`` at its end; the lines assigning a name in
    ``last`` go into the last stage (they do not count towards the cut). ``stages=None``
    picks one stage per ``STAGE_DEPTH`` cycles of dependency chain. ``var`` names the loop's
    index and ``base`` is put before every row offset (``buf[{base}{row} * ROW + {var}]``),
    ``spill_base`` (default ``base``) before the spill rows'. Returns the loops' source and
    the number of spill rows.

    A whole HH step in one loop iteration is one long dependency chain (two exps, three
    divisions deep) of about 300 instructions: more than the out-of-order window, so the
    core ran it at its latency. Cut by start time along that chain, each stage is a short
    loop whose iterations overlap; the values a later stage needs travel through the spill
    rows (L1-resident).
    """
    parsed = _parse_lines(body)
    final = {t for t, _, _ in parsed if t in rows or t.endswith("_n")} | set(last)
    start: dict[str, int] = {}
    end: dict[str, int] = {}
    for target, expr, deps in parsed:
        t0 = max((end.get(d, 0) for d in deps), default=0)
        start[target], end[target] = t0, t0 + _line_cost(expr)
    depth = max((end[t] for t, _, _ in parsed if t not in last), default=1)
    if stages is None:
        stages = max(1, round(depth / STAGE_DEPTH))
    stage_of: dict[str, int] = {}
    for target, _, deps in parsed:
        st = stages - 1 if target in final else min(stages - 1, start[target] * stages // depth)
        stage_of[target] = max([st, *(stage_of.get(d, 0) for d in deps)])
    # values defined in one stage and read in a later one get a spill row
    spill: dict[str, int] = {}
    for target, _, deps in parsed:
        for d in deps:
            if d not in final and stage_of.get(d, stage_of[target]) < stage_of[target]:
                spill.setdefault(d, len(spill))
    def at(i: int) -> str:
        return f"{base if spill_base is None else spill_base}{spill_row + i} * ROW"

    inner = indent + "    "
    out = []
    for st in range(stages):
        is_last = st == stages - 1
        lines = [(t, e, d) for t, e, d in parsed if stage_of[t] == st]
        if not lines and not is_last:
            continue
        # read before (re)defined in this stage: loaded from the scratch rows
        defined: set[str] = set()
        needed: list[str] = []
        for target, _, deps in lines:
            needed += [d for d in deps if d not in defined]
            defined.add(target)
        out.append(f"{indent}for {var} in range(w):")
        out += [inner + x for x in (last_loads if is_last else ())]
        for name in dict.fromkeys(needed):
            if name in spill:
                out.append(f"{inner}{name} = buf[{at(spill[name])} + {var}]")
            elif name in rows:
                out.append(f"{inner}{name} = buf[{base}{rows[name]} * ROW + {var}]")
        out += [f"{inner}{t} = {e}" for t, e, _ in lines]
        out += [f"{inner}buf[{at(spill[t])} + {var}] = {t}" for t, _, _ in lines
                if t in spill]
        out += [inner + x for x in (last_stores if is_last else ())]
    return "\n".join(out), len(spill)


def _generated_kernel(kind: str, cs: ChannelSet, dtype: str, source: Callable[[], str],
                      block: str, kernel: str, extra: dict[str, Any],
                      voltage: bool = True) -> Any:
    """Generate, compile and cache (per process) one kernel family's kernel for ``cs``.

    The shared part of every generated CPU kernel: Numba set up, the channel functions
    compiled for ``dtype`` with its ``exp``, the namespace of constants, then
    :func:`_compile_generated` on ``source()``. ``extra`` adds the family's constants.
    """
    key = (kind, cs.key, dtype)
    compiled = _kernels.get(key)
    if compiled is not None:
        return compiled
    configure()
    import numba

    math_fns, scalar = _math(dtype)
    _, funcs = step_source(cs, "", voltage=voltage)

    def jit(fn: Callable[..., Any]) -> Any:
        return numba.njit(fastmath=_FASTMATH[dtype], error_model="numpy")(fn)

    ns: dict[str, Any] = {"np": np, "prange": numba.prange, "DTYPE": np.dtype(dtype),
                          "EXP": math_fns["exp"], "ONE": scalar(1.0), "ZERO": scalar(0.0),
                          **reversal_constants(cs, scalar), **extra}
    seen: dict[int, Any] = {}
    for name, fn in funcs.items():
        ns[name] = compile_channel_function(fn, math_fns, scalar, jit, seen)
    _kernels[key] = compiled = _compile_generated(kind, cs, dtype, source(), ns, block, kernel)
    return compiled


def _block_constants(cs: ChannelSet, fixed_rows: int, block: int | None = None
                     ) -> dict[str, Any]:
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    block = NEURON_BLOCK if block is None else block
    return {"BLOCK": block, "ROW": block + ROW_PAD, "N_STATES": n_states,
            "N_PARAMS": n_params,
            "N_ROWS": fixed_rows + n_states + n_params}


def step_body(cs: ChannelSet, indent: str, prefix: str = "t", const_prefix: str = "K"
              ) -> tuple[list[str], dict[str, float], dict[str, Callable[..., Any]]]:
    """One step's lines for the single-compartment kernel, their constants and functions.

    Emitted from the traced step graph with shared exponentials
    (:func:`fusekit.ops.ion_symbolic.value_step_source`: squid HH needs 6 ``exp`` per step
    instead of 9, 1.2-1.3x faster); channels whose functions cannot be traced (they branch
    on their arguments) get ``step_source``'s calls of the compiled channel functions (the
    returned functions, to compile into the kernel's namespace). The adjoint kernel re-runs
    segments with the same lines, so that it follows the forward's trajectory exactly.
    """
    from ...ops.ion_symbolic import UntraceableChannelError, value_step_source

    try:
        lines, consts = value_step_source(cs, indent, prefix=prefix, const_prefix=const_prefix)
        return lines, consts, {}
    except UntraceableChannelError:
        lines, funcs = step_source(cs, indent)
        return lines, {}, funcs


def kernel_for(cs: ChannelSet, dtype: str) -> Any:
    """The compiled kernel for ``cs`` and ``dtype``, generated and compiled on first use."""
    compiled = _kernels.get(("ion", cs.key, dtype))
    if compiled is not None:  # the per-call path: no tracing of the channels
        return compiled
    scalar = np.dtype(dtype).type
    consts = {k: scalar(c) for k, c in step_body(cs, "")[1].items()}
    return _generated_kernel("ion", cs, dtype, lambda: generated_source(cs) + _DRIVER,
                             "ion_block", "ion_kernel",
                             {**_block_constants(cs, 3), **graph_math(dtype), **consts})


@register_kernel(ion.ion_simulate_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def ion_simulate_cpu(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray, *,
    channels: Any, dt: float, n_steps: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0,
) -> tuple[np.ndarray, ...]:
    """All ``n_steps`` in one parallel Numba call, neurons in SIMD blocks."""
    return ion_simulate_checkpointed_cpu(
        v0, states0, params, i_ext, channels=channels, dt=dt, n_steps=n_steps,
        record_every=record_every, spike_threshold=spike_threshold, max_spikes=max_spikes,
        seg_len=0)[:5]


def ion_simulate_checkpointed_cpu(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray, *,
    channels: Any, dt: float, n_steps: int, record_every: int = 0,
    spike_threshold: float = 0.0, max_spikes: int = 0, seg_len: int = 0,
) -> tuple[np.ndarray, ...]:
    """:func:`ion_simulate_cpu` that also keeps the backward's checkpoints, in one call.

    With ``seg_len > 0``: the five results, then ``(n_seg, 1 + n_states, n)`` (v and the
    states at the start of every segment of ``seg_len`` steps) and ``(n_seg, n)`` int64
    spike counts there (``ops.ion_grad.checkpointed_forward``'s ``whole``).
    """
    cs = channel_set(channels)
    dtype = v0.dtype
    scalar = dtype.type
    n = v0.shape[0]
    V = np.array(v0, dtype=dtype, order="C")  # copies: the kernel updates them in place
    S = np.array(states0, dtype=dtype, order="C")
    P = np.ascontiguousarray(params)
    I_ext = np.ascontiguousarray(i_ext).reshape(i_ext.shape if i_ext.ndim == 2 else (1, n))
    n_rec = n_steps // record_every if record_every else 0
    V_rec = np.empty((n_rec, n), dtype=dtype)
    counts = np.zeros(n, dtype=np.int64)
    times = np.full((max_spikes, n), np.nan, dtype=dtype)
    n_seg = -(-n_steps // seg_len) if seg_len > 0 else 0
    CK = np.empty((n_seg, 1 + states0.shape[0], n), dtype=dtype)
    CNT = np.zeros((n_seg, n), dtype=np.int64)
    if n and n_steps:
        kernel_for(cs, dtype.name)(
            V, S if S.shape[0] else np.zeros((1, n), dtype), P, I_ext,
            1 if I_ext.shape[0] > 1 else 0, scalar(dt), n_steps, record_every,
            scalar(spike_threshold), max_spikes, V_rec, counts, times, CK, CNT, seg_len,
            neuron_width(n),
        )
    return V, S, V_rec, counts, times, CK, CNT


ion_simulate_cpu.checkpointed = ion_simulate_checkpointed_cpu  # type: ignore[attr-defined]


# ------------------------------------------------------------------------ Hines cable solve


@njit(parallel=True, error_model="numpy")
def _hines_rows(parent, D, U, L, B, X):  # noqa: N803 - matrix names
    n_nodes = D.shape[1]
    for c in prange(D.shape[0]):
        d = D[c].copy()
        b = B[c].copy()
        for i in range(n_nodes - 1, 0, -1):
            p = parent[i]
            f = U[c, i] / d[i]
            d[p] -= f * L[c, i]
            b[p] -= f * b[i]
        X[c, 0] = b[0] / d[0]
        for i in range(1, n_nodes):
            X[c, i] = (b[i] - L[c, i] * X[c, parent[i]]) / d[i]


@register_kernel(ion.hines_solve_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def hines_solve_cpu(parent: np.ndarray, diag: np.ndarray, upper: np.ndarray,
                    lower: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Hines elimination per cell, cells in parallel (``prange`` over the batch)."""
    n_nodes = diag.shape[-1]
    rows = [np.ascontiguousarray(a).reshape(-1, n_nodes) for a in (diag, upper, lower, rhs)]
    X = np.empty(rows[0].shape, dtype=rhs.dtype)
    _hines_rows(np.ascontiguousarray(parent, dtype=np.int64), *rows, X)
    return X.reshape(rhs.shape)


# ------------------------------------------------------------ multi-compartment cells

_CABLE_TEMPLATE = '''
def cable_cell(c, V, S, P, I, i_rows, parent, CPL, dt, n_steps, record_every, thr,
               max_spikes, V_rec, counts, times, REC, CK, CNT, seg_len):
    n_comp = V.shape[1]
    d = np.empty(n_comp, dtype=DTYPE)
    b = np.empty(n_comp, dtype=DTYPE)
    for step in range(n_steps):
        if seg_len > 0 and step % seg_len == 0:  # the backward's checkpoints
            sg = step // seg_len
            CNT[sg, c] = counts[c]
            for j in range(n_comp):
                CK[sg, 0, c, j] = V[c, j]
                for k in range(CK.shape[1] - 1):
                    CK[sg, 1 + k, c, j] = S[k, c, j]
        irow = step * i_rows
        for j in range(n_comp):
            v = V[c, j]
            i_inj = I[irow, c, j]
{loads}
{body}
{stores}
            d[j] = p0 / dt + g_sum
            b[j] = p0 / dt * v + ge_sum + i_inj
        for j in range(1, n_comp):
            d[j] += CPL[0, c, j]
            d[parent[j]] += CPL[1, c, j]
        for j in range(n_comp - 1, 0, -1):
            f = CPL[1, c, j] / d[j]
            d[parent[j]] -= f * CPL[0, c, j]
            b[parent[j]] += f * b[j]
        v_old = V[c, 0]
        V[c, 0] = b[0] / d[0]
        for j in range(1, n_comp):
            V[c, j] = (b[j] + CPL[0, c, j] * V[c, parent[j]]) / d[j]
        v = V[c, 0]
        if v_old < thr and v >= thr:
            k = counts[c]
            if k < max_spikes:
                times[k, c] = (step + (thr - v_old) / (v - v_old)) * dt
            counts[c] = k + 1
        if record_every > 0 and (step + 1) % record_every == 0:
            r = (step + 1) // record_every - 1
            for q in range(REC.shape[0]):
                V_rec[r, c, q] = V[c, REC[q]]
'''

_CABLE_DRIVER = '''
def cable_kernel(V, S, P, I, i_rows, parent, CPL, dt, n_steps, record_every, thr,
                 max_spikes, V_rec, counts, times, REC, CK, CNT, seg_len):
    for c in prange(V.shape[0]):
        cable_cell(c, V, S, P, I, i_rows, parent, CPL, dt, n_steps, record_every, thr,
                   max_spikes, V_rec, counts, times, REC, CK, CNT, seg_len)
'''

#: ``{name}``, ``{args}`` (arguments after ``CPL``) and ``{first}`` (the first step): the
#: plain kernel runs steps ``0 .. n_steps - 1``, the network's (``ion_cable_network``) a
#: window ``w0 .. n_steps - 1`` of them with its synapse lines in ``{syn_load}`` (after the
#: block is loaded), ``{syn_step}`` (per compartment, after its row of the Hines system),
#: ``{on_spike}`` and ``{syn_store}``.
_CABLE_BLOCK_TEMPLATE = '''
def {name}(lo, V, S, P, I, i_rows, parent, CPL, {args}dt, n_steps, record_every, thr,
           max_spikes, V_rec, counts, times, REC{ck_args}):
    # Cells in SIMD blocks, as the single-compartment kernel's neurons: each compartment
    # has NR rows of ROW values (one per cell of the block) in one flat array, so that in
    # every vector loop over cells the rows sit at constant offsets from one base and LLVM
    # proves the loop free of aliasing. Rows: v, i_ext, states, params, the diagonal D and
    # right-hand side B of the Hines system, the coupling rows C0 and C1, and the axial sum.
    w = min(BLOCK, V.shape[0] - lo)
    n_comp = V.shape[1]
    RS = NR * ROW
    SB = n_comp * RS  # the stages' spill rows, shared by the compartments
    buf = np.zeros(SB + N_SPILL * ROW, dtype=DTYPE)
    v_old = np.empty(BLOCK, dtype=DTYPE)
    for j in range(n_comp):
        base = j * NR * ROW
        for i in range(w):
            buf[base + i] = V[lo + i, j]
            buf[base + II * ROW + i] = I[0, lo + i, j]
            buf[base + C0 * ROW + i] = CPL[0, lo + i, j]
            buf[base + C1 * ROW + i] = CPL[1, lo + i, j]
        for k in range(N_STATES):
            for i in range(w):
                buf[base + (S0 + k) * ROW + i] = S[k, lo + i, j]
        for k in range(N_PARAMS):
            for i in range(w):
                buf[base + (P0 + k) * ROW + i] = P[k, lo + i, j]
    # The axial conductance of every compartment: to its parent, and from its children
    # (the reference's order of sums).
    for j in range(1, n_comp):
        base = j * NR * ROW
        for i in range(w):
            buf[base + AX * ROW + i] += buf[base + C0 * ROW + i]
    for j in range(1, n_comp):
        base = j * NR * ROW
        pb = parent[j] * NR * ROW
        for i in range(w):
            buf[pb + AX * ROW + i] += buf[base + C1 * ROW + i]
{syn_load}
    for step in range({first}, n_steps):
{checkpoint}        for i in range(w):
            v_old[i] = buf[i]
        for j in range(n_comp):
            base = j * NR * ROW
            if i_rows:
                for i in range(w):
                    buf[base + II * ROW + i] = I[step, lo + i, j]
{step}
{syn_step}
{solve}
        crossed = 0
        for i in range(w):
            crossed += (v_old[i] < thr) & (buf[i] >= thr)
        if crossed:
            for i in range(w):
                vo = v_old[i]
                vn = buf[i]
                if vo < thr and vn >= thr:
                    c = counts[lo + i]
                    if c < max_spikes:
                        times[c, lo + i] = (step + (thr - vo) / (vn - vo)) * dt
                    counts[lo + i] = c + 1
{on_spike}
        if record_every > 0 and (step + 1) % record_every == 0:
            r = (step + 1) // record_every - 1
            for q in range(REC.shape[0]):
                base = REC[q] * NR * ROW
                for i in range(w):
                    V_rec[r, lo + i, q] = buf[base + i]
    for j in range(n_comp):
        base = j * NR * ROW
        for i in range(w):
            V[lo + i, j] = buf[base + i]
        for k in range(N_STATES):
            for i in range(w):
                S[k, lo + i, j] = buf[base + (S0 + k) * ROW + i]
{syn_store}
'''

_CABLE_BLOCK_DRIVER = '''
def cable_block_kernel(V, S, P, I, i_rows, parent, CPL, dt, n_steps, record_every, thr,
                       max_spikes, V_rec, counts, times, REC, CK, CNT, seg_len):
    n_blocks = (V.shape[0] + BLOCK - 1) // BLOCK
    for blk in prange(n_blocks):
        cable_block(blk * BLOCK, V, S, P, I, i_rows, parent, CPL, dt, n_steps, record_every,
                    thr, max_spikes, V_rec, counts, times, REC, CK, CNT, seg_len)
'''

#: The plain block kernel's checkpoints for the backward (``seg_len > 0``): at the start
#: of every segment of ``seg_len`` steps, v and the states into ``CK[segment]`` and the
#: spike counts so far into ``CNT[segment]`` (what ``ops.ion_grad.checkpointed_forward``
#: collects from one call per segment).
_CABLE_BLOCK_CHECKPOINT = '''        if seg_len > 0 and step % seg_len == 0:
            sg = step // seg_len
            for i in range(w):
                CNT[sg, lo + i] = counts[lo + i]
            for j in range(n_comp):
                base = j * NR * ROW
                for i in range(w):
                    CK[sg, 0, lo + i, j] = buf[base + i]
                for k in range(N_STATES):
                    for i in range(w):
                        CK[sg, 1 + k, lo + i, j] = buf[base + (S0 + k) * ROW + i]
'''

#: Cells per block of the vectorised cable kernels, at most (a block's scratch is n_comp * NR
#: * (block + pad) values).
CABLE_BLOCK = 64


def cable_block_budget() -> int:
    """Bytes of a block's compartment rows the cable kernels keep within.

    3/8 of the last-level cache for one or two threads (two threads' blocks fit in it), less
    for more threads, which share it. Each step sweeps all of a block's rows; past the caches
    the sweep waits on memory: on Zen 1 (8 MiB L3), 513 to 1,018 compartments ran 1.7-2.0x
    faster in blocks chosen so than in blocks of 64 (docs/benchmarks.md, "Branched cells: the
    CPU kernel's rate against the size of the tree").
    """
    import numba

    from ..._cpu import last_level_cache_bytes

    return last_level_cache_bytes() * 3 // (8 * max(1, numba.get_num_threads() // 2))


def cable_block_for(n_comp: int, rows: int, n_spill: int, itemsize: int,
                    budget: int | None = None, n_cells: int | None = None
                    ) -> tuple[int, bool]:
    """Cells per block, and whether the spill rows are shared, for ``n_comp`` compartments.

    ``rows``: a compartment's rows; ``n_spill``: the stages' spill rows; ``budget``: bytes
    (:func:`cable_block_budget`). Where every compartment's rows and its own spill rows fit in
    the budget with ``CABLE_BLOCK`` cells, that layout (one base for all of a compartment's
    rows: 1-2% faster than shared spill rows on 61 compartments). Else the spill rows are
    shared (after all compartments' rows, written and read by one compartment's stages at a
    time) and the block the largest of ``CABLE_BLOCK``, its half, quarter and eighth whose rows
    fit; if none does, the eighth while its rows fit in 4/3 of the budget, else
    ``CABLE_BLOCK`` (when every block sweeps from memory, longer vector loops win). With
    ``n_cells``, the block is then fitted to the population (:func:`cells_block`).
    """
    budget = cable_block_budget() if budget is None else budget
    block, shared = _tree_block(n_comp, rows, n_spill, itemsize, budget)
    return (block if n_cells is None else cells_block(block, n_cells)), shared


def _tree_block(n_comp: int, rows: int, n_spill: int, itemsize: int,
                budget: int) -> tuple[int, bool]:
    """:func:`cable_block_for` from the tree's size alone."""

    def size(block: int, per_comp: int = rows) -> int:
        return n_comp * per_comp * (block + ROW_PAD) * itemsize

    if size(CABLE_BLOCK, rows + n_spill) <= budget:
        return CABLE_BLOCK, False
    sizes = [CABLE_BLOCK >> k for k in range(4)]
    for block in sizes:
        if size(block) <= budget:
            return block, True
    return (sizes[-1] if 3 * size(sizes[-1]) <= 4 * budget else CABLE_BLOCK), True


def cells_block(block: int, n_cells: int, threads: int | None = None) -> int:
    """``block`` (from :func:`cable_block_for`), or 8 where ``n_cells`` cells ask for it.

    Blocks of 8 where ``block`` is at least twice the population (its rows' unused lanes
    cost cache) or would give the busiest thread more than 1.25 times its share of cells
    (``prange`` gives each thread a run of blocks: 64 cells on two threads were one block on
    one thread). Two sizes only, so that a process compiles at most two variants of a
    kernel. On Zen 1, 61 compartments, float64: 8 cells' gradient 1.2-1.3x faster; two
    threads, 64 cells about 2x and 200 cells 1.2-1.3x faster (docs/benchmarks.md, "Cable
    kernels: blocks by population").
    """
    if threads is None:
        import numba

        threads = numba.get_num_threads()
    n_blocks = -(-n_cells // block)
    busiest = min(-(-n_blocks // threads) * block, n_cells)  # the thread with the most blocks
    if block > 8 and (block >= 2 * n_cells or busiest * threads > 1.25 * n_cells):
        return 8
    return block


def block_width(n: int, block: int, threads: int) -> int:
    """Neurons per block for ``n`` neurons on ``threads`` threads: at most ``block``.

    ``prange`` gives each thread an equal run of blocks, so a population that is not a
    multiple of ``threads`` blocks left one thread most of the work: 300 neurons in blocks
    of 256 were 256 on one thread and 44 on the other. Here the blocks are as many as the
    ``block``-wide ones, rounded up to a multiple of ``threads``, and all about equal (a
    multiple of 8, one AVX vector of float32): 300 neurons are two blocks of 152 and 148.
    One thread keeps ``block``.
    The width is a run-time value, so no kernel variant is compiled for it; each neuron's
    arithmetic is the same at any width (the same bits).
    """
    if n <= 0 or threads <= 1:
        return block
    n_blocks = (n + block - 1) // block
    runs = (n_blocks + threads - 1) // threads  # blocks per thread
    width = (n + runs * threads - 1) // (runs * threads)
    return min(block, (width + 7) // 8 * 8)


def neuron_width(n: int, block: int = NEURON_BLOCK) -> int:
    """:func:`block_width` for ``n`` neurons on this process's Numba threads."""
    import numba

    return block_width(n, block, numba.get_num_threads())


def block_kind(kind: str, block: int, shared: bool) -> str:
    """A kernel family's name for blocks of ``block`` cells and shared spill rows or not."""
    return kind if (block, shared) == (CABLE_BLOCK, False) else f"{kind}{block}{'s' * shared}"


def place_spill(lay: dict[str, int], n_spill: int, shared: bool) -> dict[str, int]:
    """``lay`` with the stages' ``n_spill`` spill rows placed.

    ``shared``: ``N_SPILL`` rows at ``SB``, after all compartments' rows; else each
    compartment's own from its row ``SPILL`` (``NR`` grows by ``n_spill``).
    """
    lay = dict(lay)
    if shared:
        lay.update(SHARED_SPILL=1, SPILL=0, N_SPILL=n_spill)
    else:
        lay.update(SHARED_SPILL=0, SPILL=lay["NR"], N_SPILL=0, NR=lay["NR"] + n_spill)
    return lay


#: Vector loops per compartment and step in the vectorised cable kernel (``None``: by the
#: dependency chain, as the single-compartment kernel: 3 for squid HH until session 10,
#: 1.2-1.5x faster than one loop on 200 cells of 20 compartments; 5 since, 0-3% faster than 3
#: on 256 cells of 20 compartments, one thread, Zen 1).
CABLE_STAGES: int | None = None


def _cable_block_layout(cs: ChannelSet, stages: int | None = 1, traced: bool = True,
                        block: int = CABLE_BLOCK, shared: bool = False) -> dict[str, int]:
    """Rows of a compartment (``NR``) in the vectorised cable kernel and the spill rows.

    The stages' spill rows go where :func:`place_spill` puts them (``shared``: after all
    compartments' rows, once per block). ``traced=False``: no spill rows (a step in one loop,
    for channels that cannot be traced). ``block``: cells per block.
    """
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    p0 = 2 + n_states
    d = p0 + n_params
    lay = {"BLOCK": block, "ROW": block + ROW_PAD, "N_STATES": n_states,
           "N_PARAMS": n_params, "II": 1, "S0": 2, "P0": p0, "D": d, "B": d + 1,
           "C0": d + 2, "C1": d + 3, "AX": d + 4, "NR": d + 5}
    return place_spill(lay, cable_spill_rows(cs, stages, lay) if traced else 0, shared)


_spill_rows: dict[tuple[str, int | None], int] = {}


def cable_spill_rows(cs: ChannelSet, stages: int | None, lay: dict[str, int]) -> int:
    """The number of spill rows of :func:`cable_step_loops`, cached per channel set.

    Every call's kernel lookup needs it, and generating the loops takes about 3 ms.
    """
    key = (cs.key, stages)
    if key not in _spill_rows:
        _spill_rows[key] = cable_step_loops(cs, stages, lay)[1]
    return _spill_rows[key]


def cable_step_loops(cs: ChannelSet, stages: int | None, lay: dict[str, int],
                     prefix: str = "t", const_prefix: str = "K", indent: str = " " * 12
                     ) -> tuple[str, int, dict[str, float]]:
    """A cable compartment's step over a block's cells as vector loops, for both kernels.

    The lines of :func:`fusekit.ops.ion_symbolic.cable_value_step_source` cut into
    ``stages`` loops (:func:`staged_loops`) on the rows of ``lay`` (``"II"``, ``"P0"``,
    ``"D"``, ``"B"``, ``"AX"``; ``v`` in row 0, the states from row 1 + ...
    as ``"S0"`` says), storing the new states and the Hines row ``D``, ``B``; the values
    that pass between stages go through the spill rows (:func:`place_spill`). The forward
    kernel and the adjoint's re-run use the same cut, so they compute the same values.
    Returns the source, the number of spill rows and the constants.
    """
    from ...ops.ion_symbolic import cable_value_step_source

    n_states, n_params = len(cs.state_names), len(cs.param_names)
    body, consts = cable_value_step_source(cs, "", prefix=prefix, const_prefix=const_prefix)
    rows = {"v": 0, "i_inj": lay["II"], **{f"s{k}": lay["S0"] + k for k in range(n_states)},
            **{f"p{k}": lay["P0"] + k for k in range(n_params)}}
    row = {name: f"buf[base + {r} * ROW + i]" for name, r in rows.items()}
    stores = [f"{row[f's{k}']} = s{k}_n" for k in range(n_states)]
    stores += [f"buf[base + {lay['D']} * ROW + i] = p0 / dt + g_sum + "
               f"buf[base + {lay['AX']} * ROW + i]",
               f"buf[base + {lay['B']} * ROW + i] = p0 / dt * v + ge_sum + i_inj"]
    shared = lay.get("SHARED_SPILL", 1)
    source, n_spill = staged_loops(body, rows, 0 if shared else lay["SPILL"], stages, indent,
                                   [f"{name} = {row[name]}" for name in ("v", "i_inj", "p0")],
                                   stores, ("g_sum", "ge_sum"), var="i", base="base + ",
                                   spill_base="SB + " if shared else None)
    return source, n_spill, consts


def cable_block_source(cs: ChannelSet, block: int = CABLE_BLOCK, shared: bool = False
                       ) -> tuple[str, dict[str, float]]:
    """The vectorised multi-compartment kernel's source and constants (traceable channels).

    The step's lines are :func:`fusekit.ops.ion_symbolic.cable_value_step_source` (shared
    exponentials, no channel function calls) in :func:`cable_step_loops`; the adjoint kernel
    re-runs the same loops.
    """
    lay = _cable_block_layout(cs, CABLE_STAGES, block=block, shared=shared)
    step, _, consts = cable_step_loops(cs, CABLE_STAGES, lay)
    return cable_block_text(step, "cable_block", ck_args=", CK, CNT, seg_len",
                            checkpoint=_CABLE_BLOCK_CHECKPOINT), consts


def cable_block_text(step: str, name: str, args: str = "", first: str = "0",
                     **synapses: str) -> str:
    """:data:`_CABLE_BLOCK_TEMPLATE` with ``step`` (a compartment's loops) and the solve.

    ``synapses``: the network kernel's ``syn_load``, ``syn_step``, ``on_spike`` and
    ``syn_store`` lines (none for the plain kernel); the plain kernel's ``ck_args`` and
    ``checkpoint`` (:data:`_CABLE_BLOCK_CHECKPOINT`) instead.
    """
    slots = {"syn_load": "", "syn_step": "", "on_spike": "", "syn_store": "", "ck_args": "",
             "checkpoint": "", **synapses}
    return _CABLE_BLOCK_TEMPLATE.format(
        name=name, args=args, first=first, step=unless_junction(step, " " * 12),
        solve=hines_block_source(" " * 8, "C1", "C0", "0"), **slots)


def unless_junction(step: str, indent: str) -> str:
    """A compartment's ``step`` (vector loops over a block's cells), or a junction's row.

    At a junction the row of the Hines system is ``D = AX``, ``B = II``. A column with
    ``c_m = 0`` in every cell (:func:`fusekit.ops.ion.check_junction_columns`) is a zero-area
    junction without membrane: no channel current, its states held (as
    ``gates_and_conductances(where=)``). Uses ``buf``, ``base``, ``w`` and the rows ``P0``,
    ``D``, ``B``, ``AX`` and ``II`` of the cable kernels' layouts.
    """
    lines = [
        "if buf[base + P0 * ROW] == ZERO:",
        "    for i in range(w):",
        "        buf[base + D * ROW + i] = buf[base + AX * ROW + i]",
        "        buf[base + B * ROW + i] = buf[base + II * ROW + i]",
        "else:",
    ]
    return "\n".join(indent + line for line in lines) + "\n" + textwrap.indent(step, "    ")


def hines_block_source(indent: str, upper: str, lower: str, out: str) -> str:
    """Source of a Hines solve over a block's cells, on the rows of the cable kernels.

    Eliminates from the leaves to the root with ``f = upper / D``, ``D[p] -= f lower``,
    ``B[p] += f B``, then substitutes back into row ``out``: ``(B + lower out[p]) / D``.
    The rows hold the coupling with its sign flipped (``A[p, j] = -C1[j]``,
    ``A[j, p] = -C0[j]``): ``("C1", "C0")`` solves ``A``, ``("C0", "C1")`` its transpose.
    Uses ``buf``, ``n_comp``, ``parent``, ``w`` and the layout's ``RS`` (values per
    compartment) and rows ``D`` and ``B``.
    """
    lines = [
        "for j in range(n_comp - 1, 0, -1):",
        "    base = j * RS",
        "    pb = parent[j] * RS",
        "    for i in range(w):",
        f"        f = buf[base + {upper} * ROW + i] / buf[base + D * ROW + i]",
        f"        buf[pb + D * ROW + i] -= f * buf[base + {lower} * ROW + i]",
        "        buf[pb + B * ROW + i] += f * buf[base + B * ROW + i]",
        "for i in range(w):",
        f"    buf[{out} * ROW + i] = buf[B * ROW + i] / buf[D * ROW + i]",
        "for j in range(1, n_comp):",
        "    base = j * RS",
        "    pb = parent[j] * RS",
        "    for i in range(w):",
        f"        buf[base + {out} * ROW + i] = (buf[base + B * ROW + i] + buf[base + {lower} "
        f"* ROW + i] * buf[pb + {out} * ROW + i]) / buf[base + D * ROW + i]",
    ]
    return "\n".join(indent + line for line in lines)


_cable_kernels: dict[tuple[str, str, str], Any] = {}  # (family, channel key, dtype)


def cable_source(cs: ChannelSet) -> str:
    """The Python source of the CPU multi-compartment kernel for ``cs`` (for reading)."""
    ind = " " * 12
    body, _ = step_source(cs, ind, voltage=False)
    loads = [f"{ind}s{k} = S[{k}, c, j]" for k in range(len(cs.state_names))]
    loads += [f"{ind}p{k} = P[{k}, c, j]" for k in range(len(cs.param_names))]
    stores = [f"{ind}S[{k}, c, j] = s{k}" for k in range(len(cs.state_names))]
    return _CABLE_TEMPLATE.format(loads="\n".join(loads),
                                  body="\n".join(unless_junction_lines(body, ind)),
                                  stores="\n".join(stores) or f"{ind}pass")


def cable_kernel_for(cs: ChannelSet, dtype: str, n_comp: int = 1,
                     n_cells: int | None = None) -> Any:
    """The compiled multi-compartment kernel for ``cs``, ``dtype``, ``n_comp`` and ``n_cells``.

    One per process and block size (cells of ``n_comp`` compartments). Channels that can
    be traced get the vectorised kernel (cells in SIMD blocks of :func:`cable_block_for`
    cells, narrowed for ``n_cells`` by :func:`cells_block`; :func:`cable_block_source`); the
    others the per-cell kernel that calls their compiled functions (:func:`cable_source`).
    """
    from ...ops.ion_symbolic import is_traceable

    if not is_traceable(cs):
        return _generated_kernel("cable", cs, dtype, lambda: cable_source(cs) + _CABLE_DRIVER,
                                 "cable_cell", "cable_kernel", {}, voltage=False)
    lay = _cable_block_layout(cs, CABLE_STAGES, shared=True)
    block, shared = cable_block_for(n_comp, lay["NR"], lay["N_SPILL"], np.dtype(dtype).itemsize,
                                    n_cells=n_cells)
    kind = block_kind("cable_block", block, shared)
    compiled = _kernels.get((kind, cs.key, dtype))
    if compiled is not None:
        return compiled
    text, consts = cable_block_source(cs, block, shared)
    scalar = np.dtype(dtype).type
    extra = {**_cable_block_layout(cs, CABLE_STAGES, block=block, shared=shared),
             **graph_math(dtype),
             **{k: scalar(c) for k, c in consts.items()}}
    return _generated_kernel(kind, cs, dtype, lambda: text + _CABLE_BLOCK_DRIVER,
                             "cable_block", "cable_block_kernel", extra, voltage=False)


@register_kernel(ion.cable_simulate_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def cable_simulate_cpu(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    parent: np.ndarray, coupling: np.ndarray, *, channels: Any, dt: float, n_steps: int,
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
    record_at: Sequence[int] | None = None,
) -> tuple[np.ndarray, ...]:
    """Cells in parallel (``prange``), all steps inside: channels, then the Hines solve."""
    return cable_simulate_checkpointed_cpu(
        v0, states0, params, i_ext, parent, coupling, channels=channels, dt=dt,
        n_steps=n_steps, record_every=record_every, spike_threshold=spike_threshold,
        max_spikes=max_spikes, record_at=record_at, seg_len=0)[:5]


def cable_simulate_checkpointed_cpu(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    parent: np.ndarray, coupling: np.ndarray, *, channels: Any, dt: float, n_steps: int,
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
    record_at: Sequence[int] | None = None, seg_len: int = 0,
) -> tuple[np.ndarray, ...]:
    """:func:`cable_simulate_cpu` that also keeps the backward's checkpoints, in one call.

    With ``seg_len > 0``: the five results, then ``(n_seg, 1 + n_states, n_cells, n_comp)``
    (v and the states at the start of every segment of ``seg_len`` steps) and
    ``(n_seg, n_cells)`` int64 spike counts there, as ``ops.ion_grad.checkpointed_forward``
    gathers them from one call per segment (it takes this instead: one kernel call, not one
    per segment).
    """
    cs = channel_set(channels)
    dtype = v0.dtype
    scalar = dtype.type
    n_cells, n_comp = v0.shape
    I_ext = np.ascontiguousarray(i_ext).reshape(
        i_ext.shape if i_ext.ndim == 3 else (1, n_cells, n_comp))
    cols = ion.record_columns(record_at, n_comp)
    V, S, V_rec, counts, times = ion.kernel_outputs(np, v0, states0, n_steps, record_every,
                                                    max_spikes, cols.shape[0])
    n_seg = -(-n_steps // seg_len) if seg_len > 0 else 0
    CK = np.empty((n_seg, 1 + states0.shape[0], n_cells, n_comp), dtype=dtype)
    CNT = np.zeros((n_seg, n_cells), dtype=np.int64)
    if n_cells and n_steps:
        cable_kernel_for(cs, dtype.name, n_comp, n_cells)(
            V, S if S.shape[0] else np.zeros((1, n_cells, n_comp), dtype),
            np.ascontiguousarray(params), I_ext, 1 if i_ext.ndim == 3 else 0,
            np.ascontiguousarray(parent, dtype=np.int64), np.ascontiguousarray(coupling),
            scalar(dt), n_steps, record_every, scalar(spike_threshold), max_spikes, V_rec,
            counts, times, cols, CK, CNT, seg_len,
        )
    return V, S, V_rec, counts, times, CK, CNT


cable_simulate_cpu.checkpointed = cable_simulate_checkpointed_cpu  # type: ignore[attr-defined]


# ------------------------------------------------------- networks: CSR synapses on spikes

#: A network's spike detection also marks the neurons that spiked, for the delivery.
_NET_SPIKES = spikes_source(on_spike=["SPIKED[s, lo + j] = 1"])

_NET_TEMPLATE = '''
def net_block(lo, width, w0, w_len, V, S, P, I, i_rows, GS, INC, SPIKED, dt, syn_decay,
              e_syn, record_every, thr, max_spikes, V_rec, counts, times):
    w = min(width, V.shape[0] - lo)
    # Rows of ROW values: v, v before the step, i_ext, the first synapse type's conductance
    # and its arrivals, states, params, the other types' summed conductance and its product
    # with their reversal potentials, the values carried between the stages of a step (as
    # in ion_block), then one row per further synapse type (its conductance).
    n_types = GS.shape[0]
    syn_decay0 = syn_decay[0]
    e_syn0 = e_syn[0]
    buf = np.empty(({n_rows} + n_types - 1) * ROW, dtype=DTYPE)
    for j in range(w):
        buf[j] = V[lo + j]
        buf[2 * ROW + j] = I[0, lo + j]
        buf[3 * ROW + j] = GS[0, lo + j]
        buf[{g_rest} * ROW + j] = 0.0
        buf[{ge_rest} * ROW + j] = 0.0
    for t in range(1, n_types):
        for j in range(w):
            buf[({n_rows} + t - 1) * ROW + j] = GS[t, lo + j]
    for k in range(N_STATES):
        for j in range(w):
            buf[(5 + k) * ROW + j] = S[k, lo + j]
    for k in range(N_PARAMS):
        for j in range(w):
            buf[(5 + N_STATES + k) * ROW + j] = P[k, lo + j]
{prelude}
    for s in range(w_len):
        step = w0 + s
        if i_rows:
            for j in range(w):
                buf[2 * ROW + j] = I[step, lo + j]
        for j in range(w):
            buf[4 * ROW + j] = INC[s, 0, lo + j]
            SPIKED[s, lo + j] = 0
        # further synapse types: each decays and takes its arrivals, then into the sums
        if n_types > 1:
            for j in range(w):
                buf[{g_rest} * ROW + j] = 0.0
                buf[{ge_rest} * ROW + j] = 0.0
        for t in range(1, n_types):
            decay = syn_decay[t]
            e_rev = e_syn[t]
            row = ({n_rows} + t - 1) * ROW
            for j in range(w):
                g = buf[row + j] * decay + INC[s, t, lo + j]
                buf[row + j] = g
                buf[{g_rest} * ROW + j] += g
                buf[{ge_rest} * ROW + j] += g * e_rev
{step}
{spikes}
        if record_every > 0 and (step + 1) % record_every == 0:
            r = (step + 1) // record_every - 1
            for j in range(w):
                V_rec[r, lo + j] = buf[j]
    for j in range(w):
        V[lo + j] = buf[j]
        GS[0, lo + j] = buf[3 * ROW + j]
    for t in range(1, n_types):
        for j in range(w):
            GS[t, lo + j] = buf[({n_rows} + t - 1) * ROW + j]
    for k in range(N_STATES):
        for j in range(w):
            S[k, lo + j] = buf[(5 + k) * ROW + j]
'''

#: The synaptic lines of a network step (both kernels): the first type's conductance decays
#: and takes its arrivals (``inc``); the other types' sums ``g_rest``, ``ge_rest`` (zero with
#: one type) come from the block's loop over them.
_NET_SYNAPSE = ["gs = g_syn * syn_decay0 + inc", "g_tot = g_sum + gs + g_rest",
                "ge_tot = ge_sum + gs * e_syn0 + ge_rest"]


def _net_rows(cs: ChannelSet) -> dict[str, int]:
    """The network block's fixed rows by name (the staged step's spill rows follow)."""
    n_states, n_params = len(cs.state_names), len(cs.param_names)
    rows = {"v": 0, "i_inj": 2, "g_syn": 3, "inc": 4}
    rows.update({f"s{k}": 5 + k for k in range(n_states)})
    rows.update({f"p{k}": 5 + n_states + k for k in range(n_params)})
    rows.update({"g_rest": 5 + n_states + n_params, "ge_rest": 6 + n_states + n_params})
    return rows


def network_staged_source(cs: ChannelSet) -> tuple[str, int, dict[str, float]]:
    """The vectorised network block kernel for traceable channels, its spill rows, constants.

    A neuron's step is :func:`fusekit.ops.ion_symbolic.cable_value_step_source` (new states
    and conductance sums from the traced graph, exponentials shared) plus the synaptic
    conductances and the backward-Euler potential, cut into vector loops by
    :func:`staged_loops` as in ``ion_block``.
    """
    from ...ops.ion_symbolic import cable_value_step_source

    n_states = len(cs.state_names)
    body, consts = cable_value_step_source(cs, "")
    body += [*_NET_SYNAPSE, "k_ = dt / p0",
             "v_n = (v + k_ * (ge_tot + i_inj)) / (ONE + k_ * g_tot)"]
    rows = _net_rows(cs)
    stores = [f"buf[{5 + k} * ROW + j] = s{k}_n" for k in range(n_states)]
    stores += ["buf[3 * ROW + j] = gs", "buf[ROW + j] = v_old", "buf[j] = v_n"]
    prelude, body, rows = hoist_invariants(body, rows, [p for p in rows if p[0] == "p"],
                                           len(rows) + 1, " " * 4)
    fixed = len(rows) + 1  # and row 1, v before the step
    step, n_spill = staged_loops(body, rows, fixed, None, " " * 8, ["v_old = buf[j]"], stores)
    text = _NET_TEMPLATE.format(prelude=prelude, step=step, n_rows=fixed + n_spill,
                                spikes=_NET_SPIKES, g_rest=rows["g_rest"],
                                ge_rest=rows["ge_rest"])
    return text, n_spill, consts


_NET_DRIVER = '''
def net_kernel(V, S, P, I, i_rows, GS, indptr, indices, weights, types, dt, n_steps, delay,
               syn_decay, e_syn, record_every, thr, max_spikes, V_rec, counts, times, INC,
               SPIKED, width):
    n = V.shape[0]
    n_blocks = (n + width - 1) // width
    for w0 in range(0, n_steps, delay):
        w_len = min(delay, n_steps - w0)
        for blk in prange(n_blocks):
            net_block(blk * width, width, w0, w_len, V, S, P, I, i_rows, GS, INC, SPIKED, dt,
                      syn_decay, e_syn, record_every, thr, max_spikes, V_rec, counts, times)
{deliver}
'''

#: The delivery of a window's spikes (both network kernels): a spike of ``j`` at offset ``s``
#: adds each of its synapses' weights to row ``s`` of ``INC`` at the synapse's type and
#: target (``indices``: a neuron, or a flat compartment index), arriving ``delay`` steps
#: later, in the next window at the same offset. Each offset has its own row of ``INC``, so
#: the offsets are delivered in parallel.
_DELIVER = """for s in prange(w_len):
    for t in range(INC.shape[1]):
        for k in range(INC.shape[2]):
            INC[s, t, k] = 0
    typed = types.shape[0] > 0  # empty: every synapse of type 0, no type to read
    for j in range(n):
        if SPIKED[s, j]:
            for e in range(indptr[j], indptr[j + 1]):
                INC[s, types[e] if typed else 0, indices[e]] += weights[e]"""


def deliver_source(indent: str) -> str:
    """:data:`_DELIVER` indented for a network kernel's driver (``n``: presynaptic rows)."""
    return "\n".join(indent + line for line in _DELIVER.splitlines())


def _net_driver() -> str:
    return _NET_DRIVER.format(deliver=deliver_source(" " * 8))


_net_kernels: dict[tuple[str, str, str], Any] = {}  # (family, channel key, dtype)


_NET_ONE_LOOP = """        for j in range(w):
            v = buf[j]
            v_old = v
            i_inj = buf[2 * ROW + j]
{loads}
{body}
{synapse}
            g_sum = g_tot
            ge_sum = ge_tot
            k_ = dt / p0
            v = (v + k_ * (ge_sum + i_inj)) / (ONE + k_ * g_sum)
{stores}
            buf[3 * ROW + j] = gs
            buf[ROW + j] = v_old
            buf[j] = v"""


def network_source(cs: ChannelSet) -> str:
    """The network block kernel for channels that cannot be traced (for reading).

    The template of :func:`network_staged_source` with the step in one loop that calls the
    compiled channel functions (``step_source``).
    """
    n_states = len(cs.state_names)
    ind = " " * 12
    body, _ = step_source(cs, ind, voltage=False)
    rows = _net_rows(cs)
    loads = [f"{ind}{name} = buf[{r} * ROW + j]" for name, r in rows.items()
             if name not in ("v", "i_inj")]  # the template reads those two itself
    stores = [f"{ind}buf[{5 + k} * ROW + j] = s{k}" for k in range(n_states)]
    step = _NET_ONE_LOOP.format(
        loads="\n".join(loads), body="\n".join(body),
        synapse="\n".join(ind + line for line in _NET_SYNAPSE),
        stores="\n".join(stores) or f"{ind}pass")
    return _NET_TEMPLATE.format(prelude="", step=step, n_rows=len(rows) + 1, spikes=_NET_SPIKES,
                                g_rest=rows["g_rest"], ge_rest=rows["ge_rest"])


def network_kernel_for(cs: ChannelSet, dtype: str) -> Any:
    """The compiled network kernel for ``cs`` and ``dtype`` (one per process).

    Traceable channels get the staged vector kernel (:func:`network_staged_source`), the
    others the one-loop kernel that calls their compiled functions (:func:`network_source`).
    """
    from ...ops.ion_symbolic import is_traceable

    if not is_traceable(cs):
        return _generated_kernel("network", cs, dtype,
                                 lambda: network_source(cs) + _net_driver(), "net_block",
                                 "net_kernel", _block_constants(cs, 5, NETWORK_BLOCK),
                                 voltage=False)
    compiled = _kernels.get(("network_staged", cs.key, dtype))
    if compiled is not None:
        return compiled
    text, _, consts = network_staged_source(cs)
    scalar = np.dtype(dtype).type
    extra = {**_block_constants(cs, 5, NETWORK_BLOCK), **graph_math(dtype),
             **{k: scalar(c) for k, c in consts.items()}}
    return _generated_kernel("network_staged", cs, dtype, lambda: text + _net_driver(),
                             "net_block", "net_kernel", extra, voltage=False)


@register_kernel(ion.network_simulate_op, backend="cpu", arrays=["numpy"], dtypes=_FLOATS)
def network_simulate_cpu(
    v0: np.ndarray, states0: np.ndarray, params: np.ndarray, i_ext: np.ndarray,
    g_syn0: np.ndarray, indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray,
    arrivals0: np.ndarray, synapse_type: np.ndarray, *, channels: Any, dt: float, n_steps: int,
    delay_steps: int, tau_syn: tuple[float, ...], e_syn: tuple[float, ...],
    record_every: int = 0, spike_threshold: float = 0.0, max_spikes: int = 0,
) -> tuple[np.ndarray, ...]:
    """Blocks of neurons in parallel for ``delay_steps`` steps, then the spikes delivered.

    ``INC[s]`` (one row per synapse type) holds the arrivals at the ``s``-th step of the
    window to come; it starts as
    ``arrivals0``, and after the last window the rows that no window read are those in
    flight: the arrivals at step ``n_steps + x`` are in row ``(n_steps + x) % delay_steps``.
    """
    cs = channel_set(channels)
    dtype = v0.dtype
    scalar = dtype.type
    n = v0.shape[0]
    V, S, V_rec, counts, times = ion.kernel_outputs(np, v0, states0, n_steps, record_every,
                                                    max_spikes)
    GS = np.array(g_syn0, dtype=dtype, order="C")
    I_ext = np.ascontiguousarray(i_ext).reshape(i_ext.shape if i_ext.ndim == 2 else (1, n))
    INC = np.array(arrivals0, dtype=dtype, order="C")
    if n and n_steps:
        network_kernel_for(cs, dtype.name)(
            V, S if S.shape[0] else np.zeros((1, n), dtype), np.ascontiguousarray(params),
            I_ext, 1 if i_ext.ndim == 2 else 0, GS, np.ascontiguousarray(indptr, np.int64),
            np.ascontiguousarray(indices, np.int64), np.ascontiguousarray(weights),
            np.ascontiguousarray(synapse_type, np.int64), scalar(dt), n_steps, delay_steps,
            np.array(ion.synapse_decays(dt, tau_syn), dtype=dtype),
            np.array(e_syn, dtype=dtype), record_every, scalar(spike_threshold), max_spikes,
            V_rec, counts, times, INC,
            np.zeros((delay_steps, n), np.uint8), neuron_width(n, NETWORK_BLOCK),
        )
    arrivals = INC[(n_steps + np.arange(delay_steps)) % delay_steps]
    return V, S, GS, V_rec, counts, times, arrivals
