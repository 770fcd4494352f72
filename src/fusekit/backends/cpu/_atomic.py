"""Atomic operations on int64 array elements for Numba kernels whose threads hand work over.

Numba has no atomics of its own; these intrinsics emit LLVM's (acquire loads, release stores,
acquire-release read-modify-writes), which compile to plain ``mov`` and ``lock``-prefixed
instructions on x86. Numba does not see the writes they make: read an element that another
thread (or one of these) writes with :func:`atomic_load`, never with plain indexing, which
Numba may answer from what it knows of the array (measured: ``sync[0]`` after a parallel loop
read the zero it was created with).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _element(context, builder, aryty, ary, idx, idxty):  # noqa: ANN001, ANN202
    a = context.make_array(aryty)(context, builder, ary)
    i = context.cast(builder, idx, idxty, types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, a, [i])


def _int64_array(arr: types.Type, i: types.Type) -> bool:
    return (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.int64
            and isinstance(i, types.Integer))


@intrinsic
def atomic_load(typingctx, arr, i):  # noqa: ARG001 - Numba's intrinsic signature
    """``arr[i]`` as an acquire load (sees every write released before it)."""
    if not _int64_array(arr, i):
        return None

    def codegen(context, builder, signature, args):
        p = _element(context, builder, signature.args[0], args[0], args[1], signature.args[1])
        return builder.load_atomic(p, "acquire", 8)

    return types.int64(arr, i), codegen


@intrinsic
def atomic_store(typingctx, arr, i, value):  # noqa: ARG001
    """``arr[i] = value`` as a release store (publishes every write made before it)."""
    if not (_int64_array(arr, i) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        p = _element(context, builder, signature.args[0], args[0], args[1], signature.args[1])
        x = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(x, p, "release", 8)
        return context.get_dummy_value()

    return types.void(arr, i, value), codegen


@intrinsic
def atomic_fetch_add(typingctx, arr, i, value):  # noqa: ARG001
    """Add ``value`` to ``arr[i]`` atomically; returns the old value."""
    if not (_int64_array(arr, i) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        p = _element(context, builder, signature.args[0], args[0], args[1], signature.args[1])
        x = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", p, x, "acq_rel")

    return types.int64(arr, i, value), codegen


@intrinsic
def atomic_cas(typingctx, arr, i, expected, new):  # noqa: ARG001
    """Set ``arr[i] = new`` if it equals ``expected``, atomically; returns the old value."""
    if not (_int64_array(arr, i) and isinstance(expected, types.Integer)
            and isinstance(new, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        p = _element(context, builder, signature.args[0], args[0], args[1], signature.args[1])
        e = context.cast(builder, args[2], signature.args[2], types.int64)
        n = context.cast(builder, args[3], signature.args[3], types.int64)
        return builder.extract_value(builder.cmpxchg(p, e, n, "acq_rel", "acquire"), 0)

    return types.int64(arr, i, expected, new), codegen


@intrinsic
def spin_pause(typingctx):  # noqa: ARG001
    """The x86 ``pause`` hint for a spin-wait loop."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen
