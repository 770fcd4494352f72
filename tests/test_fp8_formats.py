"""FP8 encode/decode: bit-exact against the format definition, ml_dtypes and torch."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusekit
from fusekit.ops.fp8 import FP8_FORMATS, decode_table, fp8_decode_reference, fp8_encode_reference

ml_dtypes = pytest.importorskip("ml_dtypes")

CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]
FORMATS = ["e4m3fn", "e5m2"]
ML = {"e4m3fn": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
ALL_CODES = np.arange(256, dtype=np.uint8)


def ml_encode(x, fmt):
    with np.errstate(invalid="ignore", over="ignore"):  # ml_dtypes warns on overflow to NaN
        return x.astype(ML[fmt]).view(np.uint8)


def every_float32_kind(n=200_000, seed=0):
    """Random bit patterns (NaN, inf, subnormal, huge, tiny) plus values near FP8 ties."""
    rng = np.random.default_rng(seed)
    random_bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 448, 464, 480, 57344,
                        61440, 2**-9, 2**-10, 2**-16, 2**-17, 3 * 2**-11], dtype=np.float32)
    pieces = [random_bits, special, rng.standard_normal(n).astype(np.float32) * 100]
    for fmt in FORMATS:
        t = decode_table(fmt)
        finite = np.sort(t[np.isfinite(t)])
        mid = ((finite[1:] + finite[:-1]) / 2).astype(np.float32)  # exact ties
        pieces += [mid, np.nextafter(mid, np.float32(np.inf)),
                   np.nextafter(mid, np.float32(-np.inf)), finite.astype(np.float32)]
    return np.concatenate(pieces)


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_table_matches_ml_dtypes_bit_for_bit(fmt):
    expected = ALL_CODES.view(ML[fmt]).astype(np.float32)
    got = fusekit.ops.fp8_decode(ALL_CODES, fmt)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("fmt", FORMATS)
def test_decode_matches_torch_values_and_nan_signs(fmt):
    torch = pytest.importorskip("torch")
    ref = torch.from_numpy(ALL_CODES).view(getattr(torch, FP8_FORMATS[fmt].torch_dtype))
    expected = ref.float().numpy()
    got = fusekit.ops.fp8_decode(ref).numpy() if fmt == "e4m3fn" else fusekit.ops.fp8_decode(
        ref, fmt).numpy()
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))
    np.testing.assert_array_equal(got[~nan].view(np.uint32), expected[~nan].view(np.uint32))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("saturate", [True, False])
def test_every_non_nan_code_round_trips(backend, fmt, saturate):
    values = fp8_decode_reference(ALL_CODES, fmt)
    keep = ~np.isnan(values)
    if saturate:
        keep &= np.isfinite(values)  # saturation maps infinity to max by design
    codes = fusekit.ops.fp8_encode(values[keep], fmt, saturate=saturate, backend=backend)
    np.testing.assert_array_equal(codes, ALL_CODES[keep])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_unsaturated_encode_is_bit_exact_with_ml_dtypes(backend, fmt):
    x = every_float32_kind()
    expected = ml_encode(x, fmt)
    got = fusekit.ops.fp8_encode(x, fmt, saturate=False, backend=backend)
    bad = np.nonzero(got != expected)[0]
    assert bad.size == 0, [(float(x[i]), hex(got[i]), hex(expected[i])) for i in bad[:5]]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_saturated_e4m3fn_encode_is_bit_exact_with_torch(backend):
    torch = pytest.importorskip("torch")
    x = every_float32_kind()
    expected = torch.from_numpy(x).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    got = fusekit.ops.fp8_encode(x, "e4m3fn", backend=backend)
    bad = np.nonzero(got != expected)[0]
    assert bad.size == 0, [(float(x[i]), hex(got[i]), hex(expected[i])) for i in bad[:5]]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_unsaturated_e5m2_matches_torch_except_the_nan_code(backend):
    torch = pytest.importorskip("torch")
    x = every_float32_kind()
    expected = torch.from_numpy(x).to(torch.float8_e5m2).view(torch.uint8).numpy()
    got = fusekit.ops.fp8_encode(x, "e5m2", saturate=False, backend=backend)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], expected[~nan])
    np.testing.assert_array_equal(got[nan] & 0x7F, np.full(nan.sum(), 0x7E, np.uint8))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_saturation_maps_overflow_and_infinity_to_max_with_sign(backend, fmt):
    f = FP8_FORMATS[fmt]
    x = np.array([np.inf, -np.inf, 1e30, -1e30, 2 * f.max_value], dtype=np.float32)
    got = fusekit.ops.fp8_encode(x, fmt, backend=backend)
    np.testing.assert_array_equal(got, [f.max_code, f.max_code | 0x80, f.max_code,
                                        f.max_code | 0x80, f.max_code])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_float64_input_is_rounded_once_not_through_float32(backend, fmt):
    # Just off a tie in float64, exactly the tie after rounding to float32. (ml_dtypes goes
    # through float32 here, so it rounds these to even instead.)
    t = np.sort(decode_table(fmt)[np.isfinite(decode_table(fmt))])
    ties = (t[1:] + t[:-1]) / 2
    x = np.nextafter(ties, np.inf)
    x = x[np.abs(x) < 1e4]
    got = fusekit.ops.fp8_encode(x, fmt, backend=backend)
    np.testing.assert_array_equal(got, fp8_encode_reference(x, fmt))


@settings(max_examples=200, deadline=None)
@given(x=st.floats(width=32, allow_nan=True, allow_infinity=True),
       fmt=st.sampled_from(FORMATS), saturate=st.booleans())
def test_property_cpu_encode_equals_reference(x, fmt, saturate):
    a = np.array([x], dtype=np.float32)
    np.testing.assert_array_equal(
        fusekit.ops.fp8_encode(a, fmt, saturate=saturate, backend="cpu"),
        fp8_encode_reference(a, fmt, saturate))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_shapes_and_non_contiguous_inputs_are_kept(backend):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)[:, ::2, ::-1] / 7
    codes = fusekit.ops.fp8_encode(x, backend=backend)
    assert codes.shape == x.shape and codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, fp8_encode_reference(np.ascontiguousarray(x)))
    back = fusekit.ops.fp8_decode(codes.T, backend=backend)
    assert back.shape == x.T.shape
    np.testing.assert_array_equal(back, fp8_decode_reference(np.ascontiguousarray(codes.T)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_arrays_pass_through(backend):
    assert fusekit.ops.fp8_encode(np.zeros((0, 3), np.float32), backend=backend).shape == (0, 3)
    assert fusekit.ops.fp8_decode(np.zeros(0, np.uint8), backend=backend).shape == (0,)


def test_decode_accepts_ml_dtypes_arrays_and_float64_output():
    codes = np.array([0x38, 0xB0, 0x7E], np.uint8).view(ml_dtypes.float8_e4m3fn)
    np.testing.assert_array_equal(fusekit.ops.fp8_decode(codes, dtype="float64"),
                                  [1.0, -0.5, 448.0])


def test_torch_encode_returns_float8_tensors_and_decodes_back():
    torch = pytest.importorskip("torch")
    x = torch.tensor([1.0, -0.5, 1000.0, 0.1])
    codes = fusekit.ops.fp8_encode(x)
    assert codes.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(codes.view(torch.uint8), x.to(torch.float8_e4m3fn).view(torch.uint8))
    back = fusekit.ops.fp8_decode(codes)
    torch.testing.assert_close(back, codes.float())
    assert fusekit.ops.fp8_decode(codes, dtype="bfloat16").dtype == torch.bfloat16
    e5 = fusekit.ops.fp8_encode(x.bfloat16(), "e5m2")
    assert e5.dtype == torch.float8_e5m2


def test_torch_ops_pass_opcheck():
    torch = pytest.importorskip("torch")
    import fusekit.torch  # noqa: F401

    x = torch.randn(4, 5)
    torch.library.opcheck(torch.ops.fusekit.fp8_encode.default, (x, "e5m2"), {"saturate": False})
    finite_codes = torch.arange(0x7E, dtype=torch.int32).to(torch.uint8)  # NaN != NaN
    torch.library.opcheck(torch.ops.fusekit.fp8_decode.default, (finite_codes, "e4m3fn"))


def test_unknown_format_lists_the_choices():
    with pytest.raises(fusekit.InputError, match="unknown FP8 format 'e4m3'; choose one of "
                                                 "e4m3fn, e5m2"):
        fusekit.ops.fp8_encode(np.ones(2, np.float32), "e4m3")


def test_integer_input_to_encode_is_rejected():
    with pytest.raises(fusekit.InputError, match="fp8_encode: x has dtype int32"):
        fusekit.ops.fp8_encode(np.ones(2, np.int32))


def test_float_input_to_decode_is_rejected():
    with pytest.raises(fusekit.InputError, match="codes must be uint8 bytes"):
        fusekit.ops.fp8_decode(np.ones(2, np.float32))


def test_decoding_with_the_wrong_format_is_rejected():
    torch = pytest.importorskip("torch")
    codes = torch.zeros(3, dtype=torch.float8_e5m2)
    with pytest.raises(fusekit.InputError, match="codes are float8_e5m2 but fmt='e4m3fn'"):
        fusekit.ops.fp8_decode(codes, "e4m3fn")


def test_non_bool_saturate_is_rejected():
    with pytest.raises(fusekit.InputError, match="saturate must be True or False"):
        fusekit.ops.fp8_encode(np.ones(2, np.float32), saturate="yes")
