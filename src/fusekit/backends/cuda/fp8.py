"""CUDA kernels of the fp8 family, written with Numba CUDA so the simulator can check them.

* Encoding is the CPU kernel's bit-level algorithm (:mod:`fusekit.backends.cpu.fp8`), one
  thread per element, with the same constants (:func:`~fusekit.ops.fp8.encode_constants`
  is imported, not copied): the input's bits (read through a signed integer view) get the
  exponent re-bias and a round-to-nearest-even increment and are shifted; results in FP8's
  subnormal range are scaled by a power of two (exact) and rounded half to even. So the codes
  are bit-identical with the CPU kernel and the reference for every input.
* Decoding and block dequantization copy the 256-entry decode table into shared memory once
  per thread block and look every code up there.
* Block and activation quantization run one thread block per tile: a shared-memory ``amax``
  reduction in float64, the scale ``amax / 448`` rounded to float32 (1 for an all-zero tile),
  then the tile divided by that scale in float64 into a float64 workspace, which the encode
  kernel turns into codes. The float64 quotient is encoded without rounding it to float32
  first, as in the reference, which is what makes the codes bit-identical.

The ``*_launch`` functions take Numba device arrays (or host NumPy arrays, copied over) and
run without CuPy, so the simulator tests call them directly. The registered kernels take
CuPy arrays, make them contiguous, allocate outputs and workspaces with CuPy and launch on
CuPy's current stream. CuPy is imported inside them, never at import time.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
from numba import cuda

from ..._registry import register_kernel
from ...ops import fp8
from ._device import checked_workspace, copy_back, cupy_stream, output, to_device

_FLOATS = ("float32", "float64")
#: Signed integer view of each float input: the encode kernel reads the input's bits
#: through it (signed, so that Numba never mixes uint64 with int64 into float64).
_BITS_VIEW = {"float32": np.int32, "float64": np.int64}
#: Threads per block of the element-wise and tile kernels (a power of two, at most 256).
THREADS = 256
_MAX_THREADS = 256
#: Largest grid of the element-wise kernels; longer arrays are grid-strided.
_MAX_BLOCKS = 65535
_E4M3_MAX = 448.0


def _grid(n: int, threads: int) -> int:
    return max(1, min(-(-n // threads), _MAX_BLOCKS))


def _check_threads(threads: int) -> None:
    if not (1 <= threads <= _MAX_THREADS and threads & (threads - 1) == 0):
        raise ValueError(f"threads must be a power of two from 1 to {_MAX_THREADS}, got "
                         f"{threads}")


def host_table(fmt: str, dtype: str) -> np.ndarray:
    """The decode table of ``fmt`` as ``dtype`` (float32: NaN codes keep their sign)."""
    return fp8.decode_table_f32(fmt) if dtype == "float32" else fp8.decode_table(fmt)


_device_tables: dict[tuple[str, str, int], Any] = {}


#: id(table) -> (table, its Numba device view) for the tables of :func:`device_table`, which
#: live as long as the process.
_table_views: dict[int, tuple[Any, Any]] = {}


def device_table(cupy: Any, fmt: str, dtype: str) -> Any:
    """:func:`host_table` as a CuPy array on the current device, copied there once."""
    key = (fmt, dtype, int(cupy.cuda.runtime.getDevice()))
    table = _device_tables.get(key)
    if table is None:
        table = cupy.asarray(host_table(fmt, dtype))
        cupy.cuda.get_current_stream().synchronize()  # later calls may run on other streams
        _device_tables[key] = table
        # Its Numba view, made once: a view costs 15-20 us per launch on an H200.
        _table_views[id(table)] = (table, to_device("table", table, 0))
    return table


def _table_on_device(table: Any, fmt: str, dtype: str, stream: Any) -> Any:
    if table is None:
        return cuda.to_device(host_table(fmt, dtype), stream=stream)
    known = _table_views.get(id(table))
    if known is not None and known[0] is table:
        return known[1]
    return to_device("table", table, stream)


# ------------------------------------------------------------------------------- kernels
# No builtin min/max in the kernels: Numba's built-in CUDA target fails to compile their
# varargs overload for two scalars (numba 0.68), so comparisons are written out.


@cuda.jit
def _encode(x, bits, out, shift, rebias, round_bias, min_normal_bits, subnormal_scale,
            clamp_bits, inf_bits, sign_shift, max_code, over_code, inf_code, nan_code,
            abs_mask):
    # The CPU kernel's algorithm (backends/cpu/fp8.py), one element per thread.
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, x.size, stride):
        u = np.int64(bits[i])  # sign-extended: the sign is bit 63 as well as bit sign_shift
        a = u & abs_mask
        if a > inf_bits:
            code = nan_code
        elif a == inf_bits:
            code = inf_code
        elif a < min_normal_bits:
            # Exact power-of-two scaling, then round half to even (no rint on the device).
            v = abs(x[i]) * subnormal_scale
            f = math.floor(v)
            rem = v - f
            code = np.int64(f)
            if rem > 0.5 or (rem == 0.5 and (code & 1) == 1):
                code += 1
        else:
            if a > clamp_bits:
                a = clamp_bits
            code = (a + rebias + round_bias + ((a >> shift) & 1)) >> shift
            if code > max_code:
                code = over_code
        sign = (u >> sign_shift) & 1
        out[i] = np.uint8(code | (sign << 7))


@cuda.jit(device=True)
def stage_table(table, table_in, first, stride):
    """Copy the 256-entry decode table into shared memory, then wait for the whole block.

    Thread ``first`` of ``stride`` threads copies entries ``first, first + stride, ...``;
    every thread of the block must call it (it ends in a barrier).
    """
    for t in range(first, 256, stride):
        table[t] = table_in[t]
    cuda.syncthreads()


@functools.cache
def _lookup_kernels(dtype: str) -> tuple[Any, Any]:
    """Table decode and block dequantize kernels whose shared table holds ``dtype``."""
    scalar = np.dtype(dtype).type

    @cuda.jit
    def decode(codes, table_in, out):
        table = cuda.shared.array(256, scalar)
        stage_table(table, table_in, cuda.threadIdx.x, cuda.blockDim.x)
        for i in range(cuda.grid(1), codes.size, cuda.gridsize(1)):
            out[i] = table[codes[i]]

    @cuda.jit
    def dequantize(w, table_in, scale, block, out):
        table = cuda.shared.array(256, scalar)
        stage_table(table, table_in, cuda.threadIdx.x, cuda.blockDim.x)
        k = w.shape[1]
        for e in range(cuda.grid(1), w.size, cuda.gridsize(1)):
            i = e // k
            j = e - i * k
            # One rounding of the exact product, as the reference (FP8 values have 4 bits).
            out[i, j] = table[w[i, j]] * scalar(scale[i // block, j // block])

    return decode, dequantize


@cuda.jit
def _tile_scale_divide(w, rows, block, scale, q):
    # One thread block per rows x block tile of w [N, K] (grid-strided over tiles):
    # amax in float64, scale = float32(amax / 448) (1 if all zero), q = w / scale in float64.
    amax_of = cuda.shared.array(_MAX_THREADS, np.float64)
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    n, k = w.shape
    kb = scale.shape[1]
    for tile in range(cuda.blockIdx.x, scale.size, cuda.gridDim.x):
        ti = tile // kb
        tj = tile - ti * kb
        r0 = ti * rows
        c0 = tj * block
        height = rows if r0 + rows <= n else n - r0
        width = block if c0 + block <= k else k - c0
        amax = 0.0
        for e in range(tid, height * width, nthreads):
            r = e // width
            v = abs(np.float64(w[r0 + r, c0 + e - r * width]))
            if v > amax:
                amax = v
        amax_of[tid] = amax
        cuda.syncthreads()
        half = nthreads // 2
        while half > 0:
            if tid < half and amax_of[tid + half] > amax_of[tid]:
                amax_of[tid] = amax_of[tid + half]
            cuda.syncthreads()
            half //= 2
        top = amax_of[0]
        s = np.float32(top / _E4M3_MAX) if top > 0.0 else np.float32(1.0)
        if tid == 0:
            scale[ti, tj] = s
        s64 = np.float64(s)
        for e in range(tid, height * width, nthreads):
            r = e // width
            c = c0 + e - r * width
            q[r0 + r, c] = np.float64(w[r0 + r, c]) / s64
        cuda.syncthreads()  # everyone has read amax_of[0] before the next tile writes it


# ----------------------------------------------------------------------- launch functions


def fp8_encode_launch(
    x: Any,
    out: Any,
    *,
    fmt: str = "e4m3fn",
    saturate: bool = True,
    stream: Any = 0,
    threads: int = THREADS,
) -> None:
    """Write the FP8 codes of ``x`` into ``out`` on the GPU (or the simulator).

    Args:
        x: float32 or float64 values, any shape (C-contiguous if on the device).
        out: uint8 codes, as many elements as ``x`` (any shape).
        fmt: ``"e4m3fn"`` or ``"e5m2"``.
        saturate: Out-of-range values and infinities become ``+-max`` (else NaN / inf).
        stream: Numba stream to launch on (``0``: the default stream).
        threads: Threads per block, a power of two up to 256.

    Device arrays (Numba's, or any ``__cuda_array_interface__`` array) must be C-contiguous
    and are used in place; host NumPy arrays are copied to the device, and a host ``out`` is
    filled when the call returns. Inputs are not checked beyond that: the op checks them.

    Example:
        >>> import numpy as np
        >>> out = np.empty(3, np.uint8)
        >>> fp8_encode_launch(np.array([1.0, -0.5, 1000.0], np.float32), out)  # doctest: +SKIP
        >>> out  # doctest: +SKIP
        array([ 56, 176, 126], dtype=uint8)
    """
    _check_threads(threads)
    dtype = np.dtype(x.dtype).name
    n = int(np.prod(x.shape, dtype=np.int64))
    xd = to_device("x", x, stream).reshape(n)
    od, host = output("out", out, (n,), stream)
    if n > 0:
        _encode_device(xd, od, dtype, fp8.FP8_FORMATS[fmt], saturate, stream, threads)
    copy_back(stream, (od, host))


def _encode_device(xd: Any, od: Any, dtype: str, f: fp8.Fp8Format, saturate: bool,
                   stream: Any, threads: int) -> None:
    consts = fp8.encode_constants(dtype, f, saturate)
    sign_shift = consts[7]
    abs_mask = (1 << sign_shift) - 1
    _encode[_grid(xd.size, threads), threads, stream](
        xd, xd.view(_BITS_VIEW[dtype]), od, *consts, abs_mask)


def fp8_decode_launch(
    codes: Any,
    out: Any,
    *,
    fmt: str = "e4m3fn",
    table: Any = None,
    stream: Any = 0,
    threads: int = THREADS,
) -> None:
    """Write the exact values of FP8 ``codes`` into ``out`` (float32 or float64).

    Args:
        codes: uint8 codes, any shape.
        out: float32 or float64 output with as many elements; its dtype picks the table.
        fmt: ``"e4m3fn"`` or ``"e5m2"``.
        table: Optional device copy of :func:`host_table` ``(fmt, out.dtype)``; copied per
            call when ``None``.
        stream: Numba stream to launch on (``0``: the default stream).
        threads: Threads per block, a power of two up to 256.

    Arrays are taken as by :func:`fp8_encode_launch`.
    """
    _check_threads(threads)
    dtype = np.dtype(out.dtype).name
    n = int(np.prod(codes.shape, dtype=np.int64))
    cd = to_device("codes", codes, stream).reshape(n)
    od, host = output("out", out, (n,), stream)
    if n > 0:
        decode, _ = _lookup_kernels(dtype)
        decode[_grid(n, threads), threads, stream](
            cd, _table_on_device(table, fmt, dtype, stream), od)
    copy_back(stream, (od, host))


def fp8_block_dequantize_launch(
    w_fp8: Any,
    weight_scale_inv: Any,
    out: Any,
    *,
    block: int = fp8.FP8_BLOCK,
    table: Any = None,
    stream: Any = 0,
    threads: int = THREADS,
) -> None:
    """Write ``decode(w_fp8) * weight_scale_inv`` (tile by tile) into ``out``.

    Args:
        w_fp8: E4M3FN codes ``[N, K]``, uint8.
        weight_scale_inv: float32 ``[ceil(N/block), ceil(K/block)]``.
        out: ``[N, K]`` float32 or float64; each element is the exact product rounded once.
        block: Tile side.
        table: Optional device copy of :func:`host_table` ``("e4m3fn", out.dtype)``.
        stream: Numba stream to launch on (``0``: the default stream).
        threads: Threads per block.

    Arrays are taken as by :func:`fp8_encode_launch`.
    """
    _check_threads(threads)
    dtype = np.dtype(out.dtype).name
    n, k = w_fp8.shape
    wd = to_device("w_fp8", w_fp8, stream)
    sd = to_device("weight_scale_inv", weight_scale_inv, stream)
    od, host = output("out", out, (n, k), stream)
    if n * k > 0:
        _, dequantize = _lookup_kernels(dtype)
        dequantize[_grid(n * k, threads), threads, stream](
            wd, _table_on_device(table, "e4m3fn", dtype, stream), sd, block, od)
    copy_back(stream, (od, host))


def _tile_quantize(name: str, w2: Any, codes: Any, scale: Any, rows: int, block: int,
                   workspace: Any, stream: Any, threads: int) -> None:
    """Scales of ``rows x block`` tiles of ``w2`` [N, K], then the codes of ``w2 / scale``."""
    _check_threads(threads)
    n, k = w2.shape
    nb, kb = -(-n // rows), -(-k // block)
    wd = to_device(name, w2, stream)
    cd, host_codes = output("codes", codes, (n, k), stream)
    sd, host_scale = output("scale", scale, (nb, kb), stream)
    if n * k > 0:
        q = checked_workspace(workspace, (n, k), np.float64, stream)
        _tile_scale_divide[min(nb * kb, _MAX_BLOCKS), threads, stream](wd, rows, block, sd, q)
        _encode_device(q.reshape(n * k), cd.reshape(n * k), "float64",
                       fp8.FP8_FORMATS["e4m3fn"], True, stream, threads)
    copy_back(stream, (cd, host_codes), (sd, host_scale))


def fp8_block_quantize_launch(
    w: Any,
    codes: Any,
    weight_scale_inv: Any,
    *,
    block: int = fp8.FP8_BLOCK,
    workspace: Any = None,
    stream: Any = 0,
    threads: int = THREADS,
) -> None:
    """Quantize ``w`` [N, K] to E4M3FN with one float32 scale per ``block x block`` tile.

    Args:
        w: float32 or float64 weight ``[N, K]``, finite.
        codes: uint8 output ``[N, K]``.
        weight_scale_inv: float32 output ``[ceil(N/block), ceil(K/block)]``: ``amax / 448``
            of each tile, 1 for an all-zero tile.
        block: Tile side.
        workspace: Optional float64 device buffer of exactly ``N * K`` elements for the
            quotient ``w / scale``; allocated per call when ``None``.
        stream: Numba stream to launch on (``0``: the default stream).
        threads: Threads per block, a power of two up to 256.

    Arrays are taken as by :func:`fp8_encode_launch`.
    """
    _tile_quantize("w", w, codes, weight_scale_inv, block, block, workspace, stream, threads)


def fp8_act_quantize_launch(
    x: Any,
    codes: Any,
    scale: Any,
    *,
    block: int = fp8.FP8_BLOCK,
    workspace: Any = None,
    stream: Any = 0,
    threads: int = THREADS,
) -> None:
    """Quantize activations ``(..., K)`` to E4M3FN, one scale per token and ``block`` channels.

    Args:
        x: float32 or float64 activations ``(..., K)``, finite.
        codes: uint8 output with as many elements as ``x``.
        scale: float32 output with ``prod(x.shape[:-1]) * ceil(K/block)`` elements.
        block: Channels per scale.
        workspace: Optional float64 device buffer of exactly ``x.size`` elements.
        stream: Numba stream to launch on (``0``: the default stream).
        threads: Threads per block, a power of two up to 256.

    Arrays are taken as by :func:`fp8_encode_launch`.
    """
    k = x.shape[-1]
    tokens = int(np.prod(x.shape[:-1], dtype=np.int64))
    xd = to_device("x", x, stream).reshape(tokens, k)
    _tile_quantize("x", xd, codes, scale, 1, block, workspace, stream, threads)


# ------------------------------------------------------------------ registered kernels


@register_kernel(fp8.fp8_encode_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def fp8_encode_cuda(x: Any, fmt: str = "e4m3fn", saturate: bool = True) -> Any:
    """Round float32/float64 to FP8 codes on the GPU, on CuPy's current stream."""
    import cupy

    with x.device, cuda.gpus[x.device.id]:
        if x.size == 0:
            return cupy.empty(x.shape, dtype=cupy.uint8)
        flat = cupy.ascontiguousarray(x).reshape(-1)
        out = cupy.empty(flat.size, dtype=cupy.uint8)
        fp8_encode_launch(flat, out, fmt=fmt, saturate=saturate, stream=cupy_stream(cupy))
    return out.reshape(x.shape)


@register_kernel(fp8.fp8_decode_op, backend="cuda", arrays=["cupy"], dtypes=("uint8",))
def fp8_decode_cuda(codes: Any, fmt: str = "e4m3fn", dtype: str = "float32") -> Any:
    """Decode FP8 codes on the GPU by table lookup."""
    import cupy

    with codes.device, cuda.gpus[codes.device.id]:
        if codes.size == 0:
            return cupy.empty(codes.shape, dtype=dtype)
        flat = cupy.ascontiguousarray(codes).reshape(-1)
        out = cupy.empty(flat.size, dtype=dtype)
        fp8_decode_launch(flat, out, fmt=fmt, table=device_table(cupy, fmt, dtype),
                          stream=cupy_stream(cupy))
    return out.reshape(codes.shape)


@register_kernel(fp8.fp8_block_dequantize_op, backend="cuda", arrays=["cupy"],
                 dtypes=("uint8",))
def fp8_block_dequantize_cuda(w_fp8: Any, weight_scale_inv: Any, dtype: str = "float32",
                              block: int = fp8.FP8_BLOCK) -> Any:
    """Dequantize a block-scaled weight on the GPU; each product is rounded once."""
    import cupy

    with w_fp8.device, cuda.gpus[w_fp8.device.id]:
        out = cupy.empty(w_fp8.shape, dtype=dtype)
        if out.size == 0:
            return out
        fp8_block_dequantize_launch(
            cupy.ascontiguousarray(w_fp8), cupy.ascontiguousarray(weight_scale_inv), out,
            block=block, table=device_table(cupy, "e4m3fn", dtype),
            stream=cupy_stream(cupy),
        )
    return out


@register_kernel(fp8.fp8_block_quantize_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def fp8_block_quantize_cuda(w: Any, block: int = fp8.FP8_BLOCK) -> tuple[Any, Any]:
    """Block-quantize a weight on the GPU (codes and scales bit-identical with the reference)."""
    import cupy

    n, k = w.shape
    with w.device, cuda.gpus[w.device.id]:
        codes = cupy.empty((n, k), dtype=cupy.uint8)
        scale = cupy.empty((-(-n // block), -(-k // block)), dtype=cupy.float32)
        if w.size == 0:  # then there are no tiles either
            return codes, scale
        fp8_block_quantize_launch(
            cupy.ascontiguousarray(w), codes, scale, block=block,
            workspace=cupy.empty((n, k), dtype=cupy.float64), stream=cupy_stream(cupy),
        )
    return codes, scale


@register_kernel(fp8.fp8_act_quantize_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def fp8_act_quantize_cuda(x: Any, block: int = fp8.FP8_BLOCK) -> tuple[Any, Any]:
    """Per-token, per-``block``-channel activation quantization on the GPU."""
    import cupy

    kb = -(-x.shape[-1] // block)
    with x.device, cuda.gpus[x.device.id]:
        codes = cupy.empty(x.shape, dtype=cupy.uint8)
        scale = cupy.empty((*x.shape[:-1], kb), dtype=cupy.float32)
        if x.size == 0:
            return codes, scale
        fp8_act_quantize_launch(
            cupy.ascontiguousarray(x), codes, scale, block=block,
            workspace=cupy.empty(x.shape, dtype=cupy.float64), stream=cupy_stream(cupy),
        )
    return codes, scale
