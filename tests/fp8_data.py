"""Test data shared by the FP8 kernel tests: quantized weights of a kind, bfloat16 rows."""

import numpy as np

import fusekit


def quantized_weight(rng, n, k, kind="realistic"):
    """``(codes, scales)`` of a random ``[n, k]`` weight; ``kind="subnormal-heavy"``: every
    code with a nonzero exponent field turned into the subnormal of its mantissa bits."""
    w = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
    q, s = fusekit.ops.fp8_block_quantize(w)
    if kind == "subnormal-heavy":
        q = np.where(q & 0x78, q & 0x87, q).astype(np.uint8)
    return q, s


def bf16_values(a):
    """Float32 ``a`` truncated to bfloat16 values (still float32): a bfloat16 model's rows."""
    return (a.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
