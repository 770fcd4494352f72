"""CUDA kernels of the kron family, written with Numba CUDA so the simulator can check them.

Every product here is one of five small contractions, each a batched matrix product whose
operands are read through index maps (so no transposes or copies are needed between them):

* forward, ``y = sum_k (A[k] kron B[k]) x`` with ``X_b = x_b`` as ``n1 x n2``:

  1. ``T[b, k, j1, i2] = sum_j2 X[b, j1, j2] B[k, i2, j2]``  (rows ``(b, j1)``, columns
     ``(k, i2)``: one product over the whole batch);
  2. ``Y[b, i1, i2] = sum_{k, j1} A[k, i1, j1] T[b, k, j1, i2]``  (one product per row).

* factor gradients, with ``G_b = grad_y_b`` as ``m1 x m2``:

  1. ``T`` as above, then ``gA[k, i1, j1] = sum_{b, i2} G[b, i1, i2] T[b, k, j1, i2]``;
  2. ``U[b, k, i1, j2] = sum_j1 A[k, i1, j1] X[b, j1, j2]``, then
     ``gB[k, i2, j2] = sum_{b, i1} G[b, i1, i2] U[b, k, i1, j2]``.

One template kernel (:func:`_contraction`) computes ``C[z, i, j] = sum_q P(z, i, q) Q(z, q, j)``
with one thread per output element and ``TILE x TILE`` shared-memory tiles of ``P`` and ``Q``;
the batch ``z`` runs over ``gridDim.z`` (grid-strided past 65535). The factor gradients sum
over the batch inside each thread, so they need no atomics. Accumulation is in the input dtype.

The ``*_launch`` functions take Numba device arrays (or host NumPy arrays, copied over) and
run without CuPy, so the simulator tests call them directly. The registered kernels take
CuPy arrays, make them contiguous, allocate outputs and workspaces with CuPy and launch on
CuPy's current stream. CuPy is imported inside them, never at import time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numba import cuda

from ..._registry import register_kernel
from ...ops import kron
from ._device import checked_workspace, copy_back, cupy_stream, launch, output, to_device

_FLOATS = ("float32", "float64")
#: Side of the square thread block and of the shared-memory tiles.
TILE = 16
#: Largest ``gridDim.z``; longer batches are grid-strided.
_MAX_GRID_Z = 65535

# --------------------------------------------------------------------------- index maps
# Device functions that read P(z, i, q) and Q(z, q, j) and write C(z, i, j). Sizes the maps
# need come from the arrays' shapes, so every contraction has the same kernel signature.


@cuda.jit(device=True)
def _rows_by_cols(M, z, row, col):  # noqa: N803 - math names
    return M[row, col]


@cuda.jit(device=True)
def _cols_by_rows(M, z, row, col):  # noqa: N803
    return M[col, row]


@cuda.jit(device=True)
def _batched(M, z, row, col):  # noqa: N803
    return M[z, row, col]


@cuda.jit(device=True)
def _store_batched(C, z, i, j, value):  # noqa: N803
    C[z, i, j] = value


@cuda.jit(device=True)
def _store_t(T, z, i, j, value):  # noqa: N803
    # T[b, k, j1, i2] for row i = (b, j1) and column j = (k, i2).
    n1 = T.shape[2]
    m2 = T.shape[3]
    T[i // n1, j // m2, i % n1, j % m2] = value


@cuda.jit(device=True)
def _a_by_kj1(A, z, i1, q):  # noqa: N803
    # A[k, i1, j1] with q = (k, j1).
    n1 = A.shape[2]
    return A[q // n1, i1, q % n1]


@cuda.jit(device=True)
def _g_by_b_i2(G, z, i1, q):  # noqa: N803
    # G[b, i1, i2] with q = (b, i2).
    m2 = G.shape[2]
    return G[q // m2, i1, q % m2]


@cuda.jit(device=True)
def _t_by_b_i2(T, k, q, j1):  # noqa: N803
    # T[b, k, j1, i2] with q = (b, i2).
    m2 = T.shape[3]
    return T[q // m2, k, j1, q % m2]


@cuda.jit(device=True)
def _g_by_b_i1(G, z, i2, q):  # noqa: N803
    # G[b, i1, i2] with q = (b, i1).
    m1 = G.shape[1]
    return G[q // m1, q % m1, i2]


@cuda.jit(device=True)
def _u_by_b_i1(U, k, q, j2):  # noqa: N803
    # U[b, k, i1, j2] with q = (b, i1).
    m1 = U.shape[2]
    return U[q // m1, k, q % m1, j2]


# ----------------------------------------------------------------------- template kernel


def _contraction(
    load_p: Callable[..., Any],
    load_q: Callable[..., Any],
    store_c: Callable[..., Any],
    scalar: type,
    tile: int,
) -> Any:
    """A kernel computing ``C(z, i, j) = sum_q P(z, i, q) Q(z, q, j)``, tiled in shared memory.

    Launch it with ``grid = (ceil(n_i/tile) * ceil(n_j/tile), 1, min(n_z, 65535))`` and
    ``block = (tile, tile)``: thread ``(tx, ty)`` of a block owns ``C(z, i0 + ty, j0 + tx)``.
    """

    @cuda.jit
    def contraction(P, Q, C, n_z, n_i, n_j, n_q):  # noqa: N803
        p_tile = cuda.shared.array((tile, tile), scalar)  # p_tile[ty, t] = P(z, i, q0 + t)
        q_tile = cuda.shared.array((tile, tile), scalar)  # q_tile[t, tx] = Q(z, q0 + t, j)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        n_jtiles = (n_j + tile - 1) // tile
        i = (cuda.blockIdx.x // n_jtiles) * tile + ty
        j = (cuda.blockIdx.x % n_jtiles) * tile + tx
        for z in range(cuda.blockIdx.z, n_z, cuda.gridDim.z):
            acc = scalar(0)
            for q0 in range(0, n_q, tile):
                # Threads outside C still load (zeros) and reach every barrier.
                if i < n_i and q0 + tx < n_q:
                    p_tile[ty, tx] = load_p(P, z, i, q0 + tx)
                else:
                    p_tile[ty, tx] = scalar(0)
                if q0 + ty < n_q and j < n_j:
                    q_tile[ty, tx] = load_q(Q, z, q0 + ty, j)
                else:
                    q_tile[ty, tx] = scalar(0)
                cuda.syncthreads()
                for t in range(tile):
                    acc += p_tile[ty, t] * q_tile[t, tx]
                cuda.syncthreads()
            if i < n_i and j < n_j:
                store_c(C, z, i, j, acc)

    return contraction


class _Kernels(NamedTuple):
    x_bt: Any  # T = X B^T over the whole batch
    a_t: Any  # Y_b = sum_k A_k T_bk
    g_tt: Any  # gA_k = sum_b G_b T_bk^T
    a_x: Any  # U_b = A X_b for all k at once
    gt_u: Any  # gB_k = sum_b G_b^T U_bk


@functools.cache
def _kernels(dtype: str, tile: int) -> _Kernels:
    scalar = np.dtype(dtype).type
    return _Kernels(
        x_bt=_contraction(_rows_by_cols, _cols_by_rows, _store_t, scalar, tile),
        a_t=_contraction(_a_by_kj1, _batched, _store_batched, scalar, tile),
        g_tt=_contraction(_g_by_b_i2, _t_by_b_i2, _store_batched, scalar, tile),
        a_x=_contraction(_rows_by_cols, _batched, _store_batched, scalar, tile),
        gt_u=_contraction(_g_by_b_i1, _u_by_b_i1, _store_batched, scalar, tile),
    )


def _launch(
    kernel: Any, P: Any, Q: Any, C: Any, n_z: int, n_i: int, n_j: int, n_q: int,  # noqa: N803
    tile: int, stream: Any, device: int | None,
) -> None:
    blocks = ((n_i + tile - 1) // tile) * ((n_j + tile - 1) // tile)
    if blocks == 0 or n_z == 0:
        return
    grid = (blocks, 1, min(n_z, _MAX_GRID_Z))
    launch(kernel, grid, (tile, tile), stream, (P, Q, C, n_z, n_i, n_j, n_q), device)


def _arrays(stream: Any, device: int | None) -> tuple[Any, Any, Any]:
    """The ``(input, output, workspace)`` wrappers of a launch function.

    With ``device`` set the arrays are C-contiguous CuPy arrays on it and go to the kernels
    as they are (``_device.launch``); else they become Numba device arrays.
    """
    if device is None:
        return (lambda name, a: to_device(name, a, stream),
                lambda name, a, shape: output(name, a, shape, stream),
                lambda ws, shape, dtype: checked_workspace(ws, shape, dtype, stream))
    def workspace(ws: Any, shape: tuple[int, ...], dtype: Any) -> Any:
        if ws is None:
            import cupy

            return cupy.empty(shape, dtype=dtype)
        return ws.reshape(shape)

    return lambda name, a: a, lambda name, a, shape: (a.reshape(shape), None), workspace


# ------------------------------------------------------------------------ device arrays


def kron_linear_launch(
    x: Any,
    A: Any,  # noqa: N803 - math names
    B: Any,  # noqa: N803
    out: Any,
    *,
    workspace: Any = None,
    stream: Any = 0,
    tile: int = TILE,
    device: int | None = None,
) -> None:
    """Write ``y = sum_k (A[k] kron B[k]) x`` into ``out`` on the GPU (or the simulator).

    Args:
        x: Input of shape ``(..., n1*n2)``, float32 or float64.
        A: Left factors, shape ``(r, m1, n1)``, same dtype.
        B: Right factors, shape ``(r, m2, n2)``, same dtype.
        out: Output of shape ``(..., m1*m2)`` (the batch shape of ``x``), same dtype.
        workspace: Optional device buffer of exactly ``batch * r * n1 * m2`` elements of the
            dtype for the intermediate ``T``; allocated per call when ``None``.
        stream: Numba stream to launch on (``0``: the default stream).
        tile: Side of the thread block and shared-memory tiles.
        device: Set (to the CUDA device) only when every array (and the workspace, if
            given; else one is made with CuPy) is a C-contiguous CuPy array on it: they then
            go to the kernels as they are, and repeated launches skip Numba's dispatcher
            (``_device.launch``).

    Device arrays (Numba's, or any ``__cuda_array_interface__`` array) must be C-contiguous
    and are used in place; host NumPy arrays are copied to the device, and a host ``out`` is
    filled when the call returns. Inputs are not checked beyond that: the op checks them.

    Example:
        >>> import numpy as np
        >>> from numba import cuda
        >>> x, A, B = np.ones((2, 6)), np.ones((1, 2, 2)), np.ones((1, 2, 3))
        >>> y = np.empty((2, 4))
        >>> kron_linear_launch(x, A, B, y)  # doctest: +SKIP
        >>> y[0]  # doctest: +SKIP
        array([6., 6., 6., 6.])
    """
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    nb = int(np.prod(x.shape[:-1], dtype=np.int64))
    dtype = np.dtype(x.dtype)
    dev, out_view, ws_view = _arrays(stream, device)
    Xd = dev("x", x).reshape(nb, n1, n2)
    Ad = dev("A", A)
    Bd = dev("B", B)
    Yd, host = out_view("out", out, (nb, m1, m2))
    T = ws_view(workspace, (nb, r, n1, m2), dtype)
    k = _kernels(dtype.name, tile)
    _launch(k.x_bt, Xd.reshape(nb * n1, n2), Bd.reshape(r * m2, n2), T,
            1, nb * n1, r * m2, n2, tile, stream, device)
    _launch(k.a_t, Ad, T.reshape(nb, r * n1, m2), Yd, nb, m1, m2, r * n1, tile, stream,
            device)
    copy_back(stream, (Yd, host))


def kron_factor_grads_launch(
    x: Any,
    grad_y: Any,
    A: Any,  # noqa: N803 - math names
    B: Any,  # noqa: N803
    grad_A: Any,  # noqa: N803
    grad_B: Any,  # noqa: N803
    *,
    workspace_t: Any = None,
    workspace_u: Any = None,
    stream: Any = 0,
    tile: int = TILE,
    device: int | None = None,
) -> None:
    """Write the gradients of ``kron_linear(x, A, B)`` w.r.t. ``A`` and ``B`` into the outputs.

    ``grad_A[k] = sum_b G_b B[k] X_b^T`` and ``grad_B[k] = sum_b G_b^T A[k] X_b``. Each output
    element is one thread that sums over the whole batch, so no atomics and no zeroing are
    needed; an empty batch gives zeros.

    Args:
        x: Input of the forward product, shape ``(..., n1*n2)``.
        grad_y: Gradient of the output, shape ``(..., m1*m2)``.
        A: Left factors, shape ``(r, m1, n1)``.
        B: Right factors, shape ``(r, m2, n2)``.
        grad_A: Output, shape ``(r, m1, n1)``.
        grad_B: Output, shape ``(r, m2, n2)``.
        workspace_t: Optional buffer of ``batch * r * n1 * m2`` elements for ``X B^T``.
        workspace_u: Optional buffer of ``batch * r * m1 * n2`` elements for ``A X``.
        stream: Numba stream to launch on (``0``: the default stream).
        tile: Side of the thread block and shared-memory tiles.
        device: As for :func:`kron_linear_launch`.

    Arrays are taken as by :func:`kron_linear_launch`.
    """
    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    nb = int(np.prod(x.shape[:-1], dtype=np.int64))
    dtype = np.dtype(x.dtype)
    dev, out_view, ws_view = _arrays(stream, device)
    Xd = dev("x", x).reshape(nb, n1, n2)
    Gd = dev("grad_y", grad_y).reshape(nb, m1, m2)
    Ad = dev("A", A)
    Bd = dev("B", B)
    gAd, host_a = out_view("grad_A", grad_A, (r, m1, n1))
    gBd, host_b = out_view("grad_B", grad_B, (r, m2, n2))
    T = ws_view(workspace_t, (nb, r, n1, m2), dtype)
    U = ws_view(workspace_u, (nb, r, m1, n2), dtype)
    k = _kernels(dtype.name, tile)
    _launch(k.x_bt, Xd.reshape(nb * n1, n2), Bd.reshape(r * m2, n2), T,
            1, nb * n1, r * m2, n2, tile, stream, device)
    _launch(k.g_tt, Gd, T, gAd, r, m1, n1, nb * m2, tile, stream, device)
    _launch(k.a_x, Ad.reshape(r * m1, n1), Xd, U.reshape(nb, r * m1, n2),
            nb, r * m1, n2, n1, tile, stream, device)
    _launch(k.gt_u, Gd, U, gBd, r, m2, n2, nb * m1, tile, stream, device)
    copy_back(stream, (gAd, host_a), (gBd, host_b))


@register_kernel(kron.kron_linear_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def kron_linear_cuda(x: Any, A: Any, B: Any) -> Any:  # noqa: N803
    """``sum_k (A[k] kron B[k]) x`` on the GPU, on CuPy's current stream."""
    import cupy

    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    with x.device:
        X = cupy.ascontiguousarray(x).reshape(-1, n1 * n2)
        nb = X.shape[0]
        Y = cupy.empty((nb, m1 * m2), dtype=x.dtype)
        if nb > 0:
            T = cupy.empty((nb, r, n1, m2), dtype=x.dtype)
            kron_linear_launch(
                X, cupy.ascontiguousarray(A), cupy.ascontiguousarray(B), Y,
                workspace=T, stream=cupy_stream(cupy), device=x.device.id,
            )
    return Y.reshape(*x.shape[:-1], m1 * m2)


@register_kernel(kron.kron_factor_grads_op, backend="cuda", arrays=["cupy"], dtypes=_FLOATS)
def kron_factor_grads_cuda(x: Any, grad_y: Any, A: Any, B: Any) -> tuple[Any, Any]:  # noqa: N803
    """Gradients of ``kron_linear`` w.r.t. ``A`` and ``B`` on the GPU."""
    import cupy

    r, m1, n1 = A.shape
    _, m2, n2 = B.shape
    with x.device:
        X = cupy.ascontiguousarray(x).reshape(-1, n1 * n2)
        G = cupy.ascontiguousarray(grad_y).reshape(-1, m1 * m2)
        nb = X.shape[0]
        if nb == 0:
            return cupy.zeros(A.shape, A.dtype), cupy.zeros(B.shape, B.dtype)
        gA = cupy.empty((r, m1, n1), dtype=x.dtype)
        gB = cupy.empty((r, m2, n2), dtype=x.dtype)
        kron_factor_grads_launch(
            X, G, cupy.ascontiguousarray(A), cupy.ascontiguousarray(B), gA, gB,
            workspace_t=cupy.empty((nb, r, n1, m2), dtype=x.dtype),
            workspace_u=cupy.empty((nb, r, m1, n2), dtype=x.dtype),
            stream=cupy_stream(cupy), device=x.device.id,
        )
    return gA, gB
