"""Backend selection order, caching, and the errors when nothing fits."""

import numpy as np
import pytest

import fusekit
from fusekit import _registry
from fusekit._registry import Op, register_kernel
from fusekit.ops._common import require_finite


def args():
    return np.ones((2, 4)), np.ones((1, 2, 2)), np.ones((1, 2, 2))


def chosen(request=None):
    x, _, _ = args()
    op = _registry.get_op("kron_linear")
    kind = fusekit._arrays.kind_of(x)
    return op.select(kind, "float64", _registry.requested_backend(request)).backend


def test_auto_picks_cpu_for_numpy_inputs_here():
    assert chosen() == "cpu"


def test_explicit_argument_beats_context_and_env(monkeypatch):
    monkeypatch.setenv("FUSEKIT_BACKEND", "cpu")
    with fusekit.use_backend("cpu"):
        assert chosen("reference") == "reference"


def test_context_beats_env(monkeypatch):
    monkeypatch.setenv("FUSEKIT_BACKEND", "cpu")
    with fusekit.use_backend("reference"):
        assert chosen() == "reference"
    assert chosen() == "cpu"


def test_nested_contexts_restore_the_outer_choice():
    with fusekit.use_backend("reference"):
        with fusekit.use_backend("cpu"):
            assert chosen() == "cpu"
        assert chosen() == "reference"
    assert fusekit.requested_backend() == "auto"


def test_env_var_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("FUSEKIT_BACKEND", "reference")
    assert chosen() == "reference"
    monkeypatch.setenv("FUSEKIT_BACKEND", "cpu")
    assert chosen() == "cpu"


def test_env_var_cuda_raises_not_available_here(monkeypatch):
    if "cuda" in fusekit.available_backends():
        pytest.skip("this machine has a usable CUDA backend")
    monkeypatch.setenv("FUSEKIT_BACKEND", "cuda")
    expected = "'cuda' was requested .* not available"
    with pytest.raises(fusekit.BackendUnavailableError, match=expected):
        fusekit.ops.kron_linear(*args())


def test_unknown_backend_name_lists_the_choices(monkeypatch):
    with pytest.raises(fusekit.UnknownBackendError, match="reference, cpu, cuda, auto"):
        fusekit.ops.kron_linear(*args(), backend="gpu")
    with pytest.raises(fusekit.UnknownBackendError):
        with fusekit.use_backend("numba"):
            pass
    monkeypatch.setenv("FUSEKIT_BACKEND", "fast")
    with pytest.raises(fusekit.UnknownBackendError, match="FUSEKIT_BACKEND"):
        fusekit.ops.kron_linear(*args())


def test_selection_is_cached_per_kind_dtype_and_request():
    _registry.clear_selection_cache()
    fusekit.ops.kron_linear(*args(), backend="cpu")
    fusekit.ops.kron_linear(*args(), backend="cpu")
    fusekit.ops.kron_linear(*(a.astype(np.float32) for a in args()), backend="cpu")
    keys = [k for k in _registry._selection_cache if k[0] == "kron_linear"]
    assert sorted(keys) == [("kron_linear", "numpy", "cpu", "float32", "cpu"),
                            ("kron_linear", "numpy", "cpu", "float64", "cpu")]


def test_cached_choice_is_the_same_kernel_object():
    op = _registry.get_op("kron_linear")
    kind = fusekit._arrays.kind_of(np.ones(1))
    assert op.select(kind, "float64", "cpu") is op.select(kind, "float64", "cpu")


def test_available_backends_lists_reference_and_cpu():
    assert {"reference", "cpu"} <= set(fusekit.available_backends())


# A toy op declared in the test: exercises the registry without depending on a real family.
def _check_toy(x):
    require_finite("toy_double", "x", x)
    return x.dtype.name


toy = Op(name="toy_double", family="toy", array_args=("x",), check=_check_toy)


@register_kernel(toy, backend="reference", arrays=["numpy"], dtypes=["float64"])
def toy_double_reference(x):
    return 2 * x


def test_no_kernel_error_lists_every_candidate_and_why():
    with pytest.raises(fusekit.NoKernelError) as err:
        toy.run([np.ones(3, np.float32)], {}, None)
    msg = str(err.value)
    assert "no kernel of toy_double fits float32 numpy arrays on cpu" in msg
    assert "cpu: no kernel registered for toy_double" in msg
    assert "reference.toy_double_reference: dtype float32 not in float64" in msg
    assert "cuda:" in msg


def test_explicit_backend_without_a_fitting_kernel_raises_instead_of_falling_back():
    with pytest.raises(fusekit.NoKernelError, match="backend request: 'cpu'"):
        toy.run([np.ones(3)], {}, "cpu")


def test_nan_is_rejected_where_an_op_does_not_allow_it():
    with pytest.raises(fusekit.InputError, match="x contains NaN or infinity"):
        toy.run([np.array([1.0, np.nan])], {}, None)
    with pytest.raises(fusekit.InputError, match="NaN or infinity"):
        toy.run([np.array([np.inf])], {}, None)
    np.testing.assert_array_equal(toy.run([np.array([1.5])], {}, None), [3.0])


def test_a_backend_without_a_module_for_the_family_reports_no_kernel():
    # No backend package has a 'toy' module: the registry must say so, not crash importing it.
    with pytest.raises(fusekit.NoKernelError, match="cpu: no kernel registered for toy_double"):
        toy.run([np.ones(3)], {}, "cpu")


def test_a_failing_availability_probe_makes_only_that_backend_unavailable(monkeypatch):
    import fusekit.backends.cuda as cuda_backend

    def broken():
        raise OSError("driver exploded")

    monkeypatch.setattr(cuda_backend, "unavailable_reason", broken)
    monkeypatch.setattr(_registry, "_availability", {})
    assert "probe failed: OSError('driver exploded')" in _registry.unavailable_reason("cuda")
    assert "cpu" in fusekit.available_backends()


def test_get_op_knows_declared_ops_and_rejects_unknown_names():
    assert _registry.get_op("kron_linear").family == "kron"
    with pytest.raises(KeyError, match="no fusekit op is called 'kron'"):
        _registry.get_op("kron")


def test_every_op_refuses_an_unavailable_cuda_backend_by_name():
    # Each call goes check -> select; a request for a backend this machine lacks must say
    # which op, why and what to do, for every declared op (not a crash inside a kernel).
    if "cuda" in fusekit.available_backends():
        pytest.skip("this machine has a usable CUDA backend")
    import importlib

    from fusekit._arrays import ArrayKind

    importlib.import_module("fusekit.ops")  # declares every op

    ops = _registry.all_ops()
    assert {"fp8_gemv", "kron_linear", "ion_simulate", "cable_adjoint",
            "spike_sort"} <= {op.name for op in ops}
    reason = _registry.unavailable_reason("cuda")
    for op in ops:
        _registry._selection_cache.clear()
        with pytest.raises(fusekit.BackendUnavailableError) as err:
            op.select(ArrayKind("numpy", "cpu"), "float32", "cuda")
        text = str(err.value)
        assert f"for {op.name} but is not available" in text, text
        assert reason in text and "fusekit info" in text, text


def test_a_numba_cuda_that_cannot_compile_makes_cuda_unavailable_with_a_fix():
    # Seen on an H200 image: numba-cuda 0.30 with NumPy 2.5 found the GPU, then failed on
    # every first compilation (np.row_stack is gone). The probe compiles one kernel.
    from fusekit.backends.cuda import _compile_probe

    class NoCompile:
        @staticmethod
        def compile_ptx(fn, sig):
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")

    class Compiles:
        @staticmethod
        def compile_ptx(fn, sig):
            assert sig == "void(float32[:])"
            return "ptx", None

    reason = _compile_probe(NoCompile)
    assert reason.startswith("Numba CUDA cannot compile kernels here")
    assert "upgrade numba-cuda, or install numpy<2.5" in reason
    assert _compile_probe(Compiles) is None
