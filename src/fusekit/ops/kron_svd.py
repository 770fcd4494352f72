"""Kronecker-product SVD (KPSVD): the Van Loan-Pitsianis rearrangement, KPSVD and rank rules.

For ``W`` of shape ``(m1*m2, n1*n2)`` the rearrangement ``R(W)`` of shape ``(m1*n1, m2*n2)``
has row ``(i1, j1)`` equal to the block ``W[i1*m2:(i1+1)*m2, j1*n2:(j1+1)*n2]`` flattened, so
that ``R(A kron B) = vec(A) vec(B)^T``. The best approximation of ``W`` by a sum of ``r``
Kronecker products (in the Frobenius norm) is therefore the rank-``r`` truncated SVD of
``R(W)``: ``A[k] = sqrt(s_k) u_k`` and ``B[k] = sqrt(s_k) v_k``, reshaped. The stacks ``A``
``(r, m1, n1)`` and ``B`` ``(r, m2, n2)`` are the layout :func:`fusekit.ops.kron_linear` takes.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._errors import InputError
from .._registry import Op, TorchBridge, array_dtype
from ._common import (
    check_counts,
    is_real,
    is_tensor,
    require_finite,
    require_same_float_dtype,
    torch_call,
)
from .fp8 import no_backward

__all__ = [
    "kpsvd",
    "kpsvd_reference",
    "kron_factor_shapes",
    "kron_rearrange",
    "kron_rearrange_inverse",
    "kron_rearrange_reference",
    "kron_rearrange_inverse_reference",
    "select_rank",
    "factors_from_svd",
]


def factorization(dimension: int) -> tuple[int, int]:
    """The divisor pair ``(a, b)``, ``a <= b``, ``a * b = dimension``, nearest the square root.

    The rule peft's LoKr uses for its default factor shapes. A prime gives ``(1, dimension)``.
    """
    if dimension < 1:
        raise InputError(f"cannot factor dimension {dimension}: it must be positive")
    a = int(dimension**0.5)
    while dimension % a:
        a -= 1
    return a, dimension // a


def kron_factor_shapes(shape: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Default factor shapes for a weight ``(m, n)``: ``A`` ``(m1, n1)`` and ``B`` ``(m2, n2)``.

    ``m = m1 m2`` and ``n = n1 n2`` with each pair the divisors nearest the square root
    (:func:`factorization`), the smaller one in ``A`` (as peft's LoKr).

    Example:
        >>> kron_factor_shapes((4096, 4096))
        ((64, 64), (64, 64))
    """
    m, n = _shape_pair("kron_factor_shapes", "shape", shape, "a weight shape (m, n)")
    m1, m2 = factorization(m)
    n1, n2 = factorization(n)
    return (m1, n1), (m2, n2)


def _shape_pair(op: str, name: str, value: Any, what: str) -> list[int]:
    """``value`` as ``[a, b]`` of positive ints, or an :class:`InputError` naming ``what``.

    Floats are refused, not truncated (``(4.5, 6)`` is no shape), and so are bools.
    """
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        raise InputError(f"{op}: {name} must be {what}, two positive ints, got {value!r}")
    return [int(v) for v in value]


# ------------------------------------------------------------------- the rearrangement op


def _check_shapes(op: str, a_shape: Any, b_shape: Any) -> tuple[int, int, int, int]:
    m1, n1 = _shape_pair(op, "a_shape", a_shape, "the shape (m1, n1) of A")
    m2, n2 = _shape_pair(op, "b_shape", b_shape, "the shape (m2, n2) of B")
    return m1, n1, m2, n2


def _check_matrix(op: str, name: str, a: Any, a_shape: Any, b_shape: Any,
                  rearranged: bool) -> tuple[int, int, int, int]:
    """Factor shapes valid, and ``a`` a float weight (or its rearrangement) that fits them."""
    m1, n1, m2, n2 = _check_shapes(op, a_shape, b_shape)
    if rearranged:
        layout, want = "(m1*n1, m2*n2)", (m1 * n1, m2 * n2)
    else:
        layout, want = "(m1*m2, n1*n2)", (m1 * m2, n1 * n2)
    if a.ndim != 2 or tuple(a.shape) != want:
        raise InputError(f"{op}: {name} must have shape {layout} = {want} for A {a_shape} and "
                         f"B {b_shape}, got {tuple(a.shape)}")
    require_same_float_dtype(op, (name,), (a,))
    return m1, n1, m2, n2


def _check_rearrange(w: Any, a_shape: Any, b_shape: Any) -> str:
    _check_matrix("kron_rearrange", "w", w, a_shape, b_shape, rearranged=False)
    return array_dtype(w)


def _check_rearrange_inverse(r: Any, a_shape: Any, b_shape: Any) -> str:
    _check_matrix("kron_rearrange_inverse", "r", r, a_shape, b_shape, rearranged=True)
    return array_dtype(r)


def _rearrange_fake(w: Any, a_shape: list[int], b_shape: list[int],
                    backend: str | None = None) -> Any:
    _check_rearrange(w, a_shape, b_shape)
    return w.new_empty((a_shape[0] * a_shape[1], b_shape[0] * b_shape[1]))


def _rearrange_inverse_fake(r: Any, a_shape: list[int], b_shape: list[int],
                            backend: str | None = None) -> Any:
    _check_rearrange_inverse(r, a_shape, b_shape)
    return r.new_empty((a_shape[0] * b_shape[0], a_shape[1] * b_shape[1]))


def _setup_shapes(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.a_shape, ctx.b_shape, ctx.backend = inputs[1], inputs[2], inputs[3]


def _rearrange_backward(ctx: Any, grad: Any) -> tuple[Any, None, None, None]:
    # A permutation of entries: its gradient is the inverse permutation.
    return kron_rearrange_inverse(grad.contiguous(), ctx.a_shape, ctx.b_shape,
                                  backend=ctx.backend), None, None, None


def _rearrange_inverse_backward(ctx: Any, grad: Any) -> tuple[Any, None, None, None]:
    return kron_rearrange(grad.contiguous(), ctx.a_shape, ctx.b_shape,
                          backend=ctx.backend), None, None, None


kron_rearrange_op = Op(
    name="kron_rearrange",
    family="kron_svd",
    array_args=("w",),
    params=("a_shape", "b_shape"),
    check=_check_rearrange,
    torch=TorchBridge(
        schema="(Tensor w, int[] a_shape, int[] b_shape, str? backend=None) -> Tensor",
        fake=_rearrange_fake,
        setup_context=_setup_shapes,
        backward=_rearrange_backward,
    ),
)
kron_rearrange_inverse_op = Op(
    name="kron_rearrange_inverse",
    family="kron_svd",
    array_args=("r",),
    params=("a_shape", "b_shape"),
    check=_check_rearrange_inverse,
    torch=TorchBridge(
        schema="(Tensor r, int[] a_shape, int[] b_shape, str? backend=None) -> Tensor",
        fake=_rearrange_inverse_fake,
        setup_context=_setup_shapes,
        backward=_rearrange_inverse_backward,
    ),
)


def kron_rearrange(w: Any, a_shape: tuple[int, int], b_shape: tuple[int, int], *,
                   backend: str | None = None) -> Any:
    """Van Loan-Pitsianis rearrangement ``R(W)``, which maps ``A kron B`` to ``vec(A) vec(B)^T``.

    Example:
        >>> import numpy as np, fusekit
        >>> A, B = np.random.rand(2, 3), np.random.rand(4, 5)
        >>> r = fusekit.ops.kron_rearrange(np.kron(A, B), (2, 3), (4, 5))
        >>> bool(np.allclose(r, np.outer(A.ravel(), B.ravel())))
        True

    Args:
        w: ``(m1*m2, n1*n2)`` weight.
        a_shape: ``(m1, n1)``.
        b_shape: ``(m2, n2)``.
        backend: As for every op.

    Returns:
        ``(m1*n1, m2*n2)``; differentiable for tensors.
    """
    m1, n1, m2, n2 = _check_shapes("kron_rearrange", a_shape, b_shape)  # before torch's schema
    a_shape, b_shape = [m1, n1], [m2, n2]
    if is_tensor(w):
        return torch_call("kron_rearrange", {"w": w}, backend, a_shape, b_shape)
    return kron_rearrange_op.run((w,), {"a_shape": a_shape, "b_shape": b_shape}, backend)


def kron_rearrange_inverse(r: Any, a_shape: tuple[int, int], b_shape: tuple[int, int], *,
                           backend: str | None = None) -> Any:
    """Inverse of :func:`kron_rearrange`: ``(m1*n1, m2*n2) -> (m1*m2, n1*n2)``."""
    m1, n1, m2, n2 = _check_shapes("kron_rearrange_inverse", a_shape, b_shape)
    a_shape, b_shape = [m1, n1], [m2, n2]
    if is_tensor(r):
        return torch_call("kron_rearrange_inverse", {"r": r}, backend, a_shape, b_shape)
    return kron_rearrange_inverse_op.run((r,), {"a_shape": a_shape, "b_shape": b_shape},
                                         backend)


def kron_rearrange_reference(w: np.ndarray, a_shape: Any, b_shape: Any) -> np.ndarray:
    """Oracle of :func:`kron_rearrange`: ``W[i1 m2+i2, j1 n2+j2] -> R[i1 n1+j1, i2 n2+j2]``."""
    (m1, n1), (m2, n2) = a_shape, b_shape
    return np.ascontiguousarray(
        w.reshape(m1, m2, n1, n2).transpose(0, 2, 1, 3).reshape(m1 * n1, m2 * n2))


def kron_rearrange_inverse_reference(r: np.ndarray, a_shape: Any, b_shape: Any) -> np.ndarray:
    """Oracle of :func:`kron_rearrange_inverse`."""
    (m1, n1), (m2, n2) = a_shape, b_shape
    return np.ascontiguousarray(
        r.reshape(m1, n1, m2, n2).transpose(0, 2, 1, 3).reshape(m1 * m2, n1 * n2))


# ------------------------------------------------------------------------- rank selection


def select_rank(singular_values: Any, *, energy: float | None = 0.9, elbow: bool = False,
                min_elbow_gap: float = 0.05, total_energy: float | None = None) -> int:
    """Number of Kronecker terms to keep, from the KPSVD spectrum ``s_1 >= s_2 >= ...``.

    * Energy threshold ``tau`` (``energy=tau``): the smallest ``r`` with
      ``sum_{k<=r} s_k^2 >= tau * sum_k s_k^2``.
    * Elbow (``elbow=True``): on the curve ``(k, s_k)``, both axes scaled to [0, 1], the ``k``
      farthest below the chord from the first to the last point (the "kneedle" point). Guard:
      when that largest distance is under ``min_elbow_gap`` the spectrum has no elbow (a flat
      or straight spectrum, where the naive rule returns meaningless ranks) and the elbow rule
      abstains.
    * Both: ``min(r_energy, r_elbow)``, each rule having said the rest is negligible; if the
      elbow abstains, ``r_energy``.

    Example:
        >>> select_rank([10, 5, 1, 0.1], energy=0.99)
        2

    Args:
        singular_values: Non-increasing, non-negative 1-D values.
        energy: Threshold ``tau`` in (0, 1], or ``None`` to use the elbow alone.
        elbow: Apply the elbow rule.
        min_elbow_gap: Smallest chord distance that counts as an elbow.
        total_energy: ``sum_k s_k^2`` over the *whole* spectrum when only its leading values
            are given (from a randomized KPSVD): it equals ``||W||_F^2``. Default: the sum
            over the values given.

    Returns:
        The rank, at least 1 (0 for an all-zero spectrum).
    """
    if is_tensor(singular_values):
        singular_values = singular_values.detach().cpu().numpy()
    try:
        s = np.asarray(singular_values, dtype=np.float64)
    except (TypeError, ValueError):
        s = np.empty((0, 0))  # not numbers: refused below
    if s.ndim != 1 or s.size == 0 or not np.isfinite(s).all() or (s < 0).any() or (
            np.diff(s) > 1e-12 * (abs(s[0]) + 1)).any():
        raise InputError("select_rank: singular values must be a non-empty, finite, "
                         "non-negative, non-increasing 1-D sequence, got "
                         f"{type(singular_values).__name__} of shape {s.shape}")
    if energy is None and not elbow:
        raise InputError("select_rank: choose at least one rule (energy=... and/or elbow=True)")
    if energy is not None and not (is_real(energy) and 0 < energy <= 1):
        raise InputError(f"select_rank: energy must be a number in (0, 1], got {energy!r}")
    if not isinstance(elbow, bool):
        raise InputError(f"select_rank: elbow must be True or False, got {elbow!r}")
    if not (is_real(min_elbow_gap) and min_elbow_gap >= 0):
        raise InputError(f"select_rank: min_elbow_gap must be a number >= 0, got "
                         f"{min_elbow_gap!r}")
    given = float((s**2).sum())
    if total_energy is None:
        total = given
    # at least the spectrum's own energy, up to rounding (a float32 spectrum against the
    # weight's float64 norm differs in the 7th digit)
    elif is_real(total_energy) and total_energy >= given * (1 - 1e-3) and (
            total_energy > 0 or given == 0) and np.isfinite(total_energy):
        total = float(total_energy)
    else:
        raise InputError(
            f"select_rank: total_energy must be a finite number >= sum(s**2) = {given:.6g} "
            f"(the energy of the whole spectrum, ||W||_F**2), got {total_energy!r}"
        )
    if total == 0:
        return 0
    ranks = []
    if energy is not None:
        cumulative = np.cumsum(s**2) / total
        ranks.append(min(s.size, int(np.searchsorted(cumulative, energy * (1 - 1e-12)) + 1)))
    if elbow and s.size >= 3:
        k = np.linspace(0.0, 1.0, s.size)
        y = (s - s[-1]) / (s[0] - s[-1]) if s[0] > s[-1] else np.zeros_like(s)
        gap = (1.0 - k) - y  # distance below the chord from (0, 1) to (1, 0), up to sqrt(2)
        best = int(np.argmax(gap))
        if gap[best] >= min_elbow_gap:
            ranks.append(best + 1)
    if not ranks:  # the elbow alone abstained
        return int(s.size)
    return max(1, min(ranks))


# ---------------------------------------------------------------------------- the KPSVD op


def _check_kpsvd(w: Any, a_shape: Any, b_shape: Any, rank: int, method: str = "exact",
                 oversample: int = -1, power_iters: int = 2, seed: int = 0) -> str:
    op = "kpsvd"
    m1, n1, m2, n2 = _check_matrix(op, "w", w, a_shape, b_shape, rearranged=False)
    _check_kpsvd_params(min(m1 * n1, m2 * n2), rank, method, oversample, power_iters, seed)
    require_finite(op, "w", w)
    return array_dtype(w)


def _check_kpsvd_params(full: int, rank: Any, method: Any, oversample: Any, power_iters: Any,
                        seed: Any) -> None:
    """The non-array parameters of :func:`kpsvd` (``oversample=-1``: the default, ``rank``)."""
    op = "kpsvd"
    if type(rank) is not int or not 1 <= rank <= full:
        raise InputError(
            f"{op}: rank must be an int between 1 and min(m1*n1, m2*n2) = {full} for these "
            f"factor shapes, got {rank!r}"
        )
    if method not in ("exact", "randomized"):
        raise InputError(f"{op}: method must be 'exact' or 'randomized', got {method!r}")
    if oversample != -1:
        check_counts(op, oversample=oversample)
    check_counts(op, power_iters=power_iters, seed=seed)


def _kpsvd_fake(w: Any, a_shape: list[int], b_shape: list[int], rank: int,
                method: str = "exact", oversample: int = -1, power_iters: int = 2,
                seed: int = 0, backend: str | None = None) -> tuple[Any, Any, Any]:
    _check_kpsvd(w, a_shape, b_shape, rank, method, oversample, power_iters, seed)
    return (w.new_empty((rank, *a_shape)), w.new_empty((rank, *b_shape)), w.new_empty((rank,)))


#: An SVD's factors are not a smooth function of w where singular values repeat, and fusekit
#: does not implement its backward: refuse it rather than leave w.grad None.
_kpsvd_no_backward = no_backward("kpsvd")

kpsvd_op = Op(
    name="kpsvd",
    family="kron_svd",
    array_args=("w",),
    params=("a_shape", "b_shape", "rank", "method", "oversample", "power_iters", "seed"),
    check=_check_kpsvd,
    torch=TorchBridge(
        schema="(Tensor w, int[] a_shape, int[] b_shape, int rank, str method='exact', "
        "int oversample=-1, int power_iters=2, int seed=0, str? backend=None) "
        "-> (Tensor, Tensor, Tensor)",
        fake=_kpsvd_fake,
        setup_context=_kpsvd_no_backward[0],
        backward=_kpsvd_no_backward[1],
    ),
)


def kpsvd(w: Any, a_shape: tuple[int, int] | None = None, b_shape: tuple[int, int] | None = None,
          rank: int | None = None, method: str = "exact", *, energy: float = 0.9,
          elbow: bool = False, oversample: int | None = None, power_iters: int = 2,
          seed: int = 0, backend: str | None = None) -> tuple[Any, Any, Any]:
    """Best sum of ``rank`` Kronecker products ``w ~= sum_k kron(A[k], B[k])``.

    Example:
        >>> import numpy as np, fusekit
        >>> rng = np.random.default_rng(0)
        >>> A0, B0 = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 5, 6))
        >>> w = np.kron(A0[0], B0[0]) + np.kron(A0[1], B0[1])
        >>> A, B, s = fusekit.ops.kpsvd(w, (4, 3), (5, 6), rank=2)
        >>> bool(np.allclose(np.kron(A[0], B[0]) + np.kron(A[1], B[1]), w))
        True

    Args:
        w: Weight ``(m, n)``, float32 or float64, finite.
        a_shape: ``(m1, n1)``; with ``b_shape`` ``None``, both come from
            :func:`kron_factor_shapes`.
        b_shape: ``(m2, n2)`` with ``m1 m2 = m`` and ``n1 n2 = n``.
        rank: Terms to keep; ``None`` picks it with :func:`select_rank` (``energy``, ``elbow``)
            from the exact spectrum (so ``method="exact"`` is implied).
        method: ``"exact"`` (full SVD of the rearranged matrix) or ``"randomized"`` (Halko et
            al. range finder with ``oversample`` extra columns, default ``rank``, and
            ``power_iters`` power iterations; far cheaper for large weights).
        energy: Energy threshold for the automatic rank.
        elbow: Also apply the elbow rule for the automatic rank.
        oversample: Extra random columns of the randomized method (default: ``rank``).
        power_iters: Power iterations of the randomized method.
        seed: Seed of the randomized method's test matrix.
        backend: As for every op.

    Returns:
        ``(A, B, s)``: ``A`` ``(r, m1, n1)``, ``B`` ``(r, m2, n2)`` with the singular value
        split evenly (``A[k] = sqrt(s_k) u_k``), and the ``r`` leading singular values ``s``.
    """
    if (a_shape is None) != (b_shape is None):
        raise InputError("kpsvd: give both a_shape and b_shape, or neither")
    if a_shape is None:
        if getattr(w, "ndim", None) != 2:
            raise InputError(f"kpsvd: w must be a 2-D weight (m, n), got shape "
                             f"{tuple(getattr(w, 'shape', ()))}")
        a_shape, b_shape = kron_factor_shapes(tuple(w.shape))
    m1, n1, m2, n2 = _check_shapes("kpsvd", a_shape, b_shape)
    a_shape, b_shape = [m1, n1], [m2, n2]
    full = min(m1 * n1, m2 * n2)
    if oversample is not None:
        check_counts("kpsvd", oversample=oversample)
    if rank is None:
        if is_tensor(w):
            from torch._subclasses.fake_tensor import is_fake

            if w.is_meta or is_fake(w):
                raise InputError(
                    "kpsvd: rank=None picks the rank from the singular values, which a meta "
                    "or fake tensor (tracing, torch.compile) does not have; pass rank=..."
                )
        _, _, s = kpsvd(w, a_shape, b_shape, full, "exact", backend=backend)
        s_np = s.detach().cpu().numpy() if is_tensor(s) else np.asarray(s)
        rank = select_rank(s_np, energy=energy, elbow=elbow) or 1
        method = "exact"
    over = rank if oversample is None else int(oversample)
    params = [a_shape, b_shape, rank, method, over, power_iters, seed]
    if is_tensor(w):
        _check_kpsvd_params(full, rank, method, over, power_iters, seed)  # before torch's schema
        return torch_call("kpsvd", {"w": w}, backend, *params)
    names = ("a_shape", "b_shape", "rank", "method", "oversample", "power_iters", "seed")
    return kpsvd_op.run((w,), dict(zip(names, params, strict=True)), backend)


def factors_from_svd(u: Any, s: Any, vt: Any, a_shape: Any, b_shape: Any, rank: int,
                     dtype: Any, *, xp: Any = np) -> tuple[Any, Any, Any]:
    """KPSVD factors from the SVD ``u, s, vt`` of the rearranged weight (signs made canonical).

    Each term's sign is fixed (``u_k, v_k -> -u_k, -v_k`` leaves the product alone): the entry
    of largest magnitude of ``u_k`` is made positive, so every backend returns the same factors.

    Args:
        u: Left singular vectors, ``(m1*n1, >= rank)``.
        s: Singular values, non-increasing, ``(>= rank,)``.
        vt: Right singular vectors as rows, ``(>= rank, m2*n2)``.
        a_shape: ``(m1, n1)``.
        b_shape: ``(m2, n2)``.
        rank: Terms to keep.
        dtype: dtype of the results.
        xp: Array module of ``u``, ``s`` and ``vt`` (``numpy``, or ``cupy`` for device arrays).

    Returns:
        ``(A, B, s)``: ``A`` ``(rank, m1, n1)`` and ``B`` ``(rank, m2, n2)`` C-contiguous with
        ``A[k] = sqrt(s_k) u_k``, ``B[k] = sqrt(s_k) v_k``, and ``s[:rank]``, all in ``dtype``
        and in ``xp`` arrays.
    """
    u, vt = u[:, :rank].copy(), vt[:rank].copy()
    flip = xp.sign(u[xp.argmax(xp.abs(u), axis=0), xp.arange(rank)])
    flip[flip == 0] = 1
    u *= flip
    vt *= flip[:, None]
    root = xp.sqrt(s[:rank])
    A = (u * root).T.reshape(rank, *a_shape)
    B = (vt.T * root).T.reshape(rank, *b_shape)
    return (xp.ascontiguousarray(A, dtype=dtype), xp.ascontiguousarray(B, dtype=dtype),
            s[:rank].astype(dtype))


def kpsvd_reference(w: np.ndarray, a_shape: Any, b_shape: Any, rank: int,
                    method: str = "exact", oversample: int = -1, power_iters: int = 2,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 oracle of :func:`kpsvd`: the full SVD of the rearranged matrix (any method)."""
    r = kron_rearrange_reference(w.astype(np.float64), a_shape, b_shape)
    u, s, vt = np.linalg.svd(r, full_matrices=False)
    return factors_from_svd(u, s, vt, a_shape, b_shape, rank, w.dtype)
