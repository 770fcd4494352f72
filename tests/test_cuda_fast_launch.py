"""The fast launch path of the CUDA backend (``_device.launch``), without a GPU.

The real path (cuda.core's launch of Numba's compiled kernel) runs only on a GPU, where
benchmarks/gpu/run_gpu_checks.py checks it bit for bit against Numba's own launch. Here fakes
stand in for the kernel, CuPy arrays and cuda.core, to pin down what the path does: the
first launch of each kind goes through Numba, later ones pass the arguments flattened in
Numba's order (arrays: meminfo 0, parent 0, size, itemsize, data pointer, shape, strides in
bytes; scalars as the ctypes of the compiled signature), and anything else stays on Numba.
"""

import ctypes
from types import SimpleNamespace

import pytest
from numba import types

from fusekit.backends.cuda import _device


class FakeCupyArray:
    def __init__(self, shape, dtype="float32", ptr=4096, contiguous=True):
        import numpy as np

        self.shape = tuple(shape)
        self.ndim = len(shape)
        self.dtype = np.dtype(dtype)
        self.itemsize = self.dtype.itemsize
        self.size = int(np.prod(shape))
        self.strides = tuple(int(s) for s in np.empty(shape, self.dtype).strides)
        self.data = SimpleNamespace(ptr=ptr)
        self.flags = SimpleNamespace(c_contiguous=contiguous)


class FakeKernel:
    """A Numba CUDA dispatcher with one compiled overload ``(float32[:, ::1], int64)``."""

    def __init__(self, scalar=types.int64):
        self.normal_launches = []
        handle = object()
        self.handle = handle
        overload = SimpleNamespace(
            argument_types=(types.Array(types.float32, 2, "C"), scalar),
            _codelibrary=SimpleNamespace(
                get_cufunc=lambda: SimpleNamespace(kernel=handle)),
        )
        self.overloads = {("x", "n"): overload}

    def typeof_pyval(self, value):
        return "x" if isinstance(value, FakeCupyArray) else "n"

    def __getitem__(self, config):
        def run(*args):
            self.normal_launches.append((config, args))
        return run


class Calls(list):
    views: list


@pytest.fixture
def fake_core(monkeypatch):
    calls = Calls()

    def core_launch(stream, config, kernel, *args):
        calls.append((stream, config, kernel, args))

    def config_type(**kw):
        return SimpleNamespace(**kw)

    parts = (core_launch, config_type, lambda s: ("core", s), "is_cooperative")
    monkeypatch.setattr(_device, "_parts", [parts])
    monkeypatch.setattr(_device, "_launchers", {})
    monkeypatch.setattr(_device, "_configs", {})
    monkeypatch.setattr(_device, "_core_streams", {})

    class Gpus:
        def __getitem__(self, device):
            return _Null()

    views = []

    def as_cuda_array(a, sync=True):
        views.append(sync)
        return a

    monkeypatch.setattr(_device, "cuda", SimpleNamespace(gpus=Gpus(), as_cuda_array=as_cuda_array))
    calls.views = views
    return calls


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_first_launch_goes_through_numba_and_later_ones_are_flattened(fake_core):
    kernel = FakeKernel()
    a = FakeCupyArray((3, 5), ptr=8192)
    stream = object()
    _device.launch(kernel, (2, 1), (32, 4), stream, (a, 7), device=0)
    assert len(kernel.normal_launches) == 1 and fake_core == []
    assert fake_core.views == [False]  # Numba's view of the array, without a stream sync
    _device.launch(kernel, (2, 1), (32, 4), stream, (a, 9), device=0)
    assert len(kernel.normal_launches) == 1
    (core_stream, config, handle, args), = fake_core
    assert core_stream == ("core", stream)
    assert handle is kernel.handle
    assert (config.grid, config.block, config.shmem_size, config.is_cooperative) == (
        (2, 1), (32, 4), 0, False)
    assert args[:-1] == (0, 0, 15, 4, 8192, 3, 5, 20, 4)
    assert isinstance(args[-1], ctypes.c_int64) and args[-1].value == 9


def test_a_kernel_the_fast_path_cannot_pass_stays_on_numba(fake_core):
    kernel = FakeKernel(scalar=types.complex128)  # not a scalar kind the path flattens
    a = FakeCupyArray((4,))
    for _ in range(3):
        _device.launch(kernel, (1,), (32,), 0, (a, 1), device=0)
    assert len(kernel.normal_launches) == 3 and fake_core == []


@pytest.mark.parametrize("arg", [FakeCupyArray((2, 3), contiguous=False), [1, 2], "text"])
def test_arguments_other_than_contiguous_cupy_arrays_and_numbers_stay_on_numba(fake_core, arg):
    kernel = FakeKernel()
    for _ in range(2):
        _device.launch(kernel, (1,), (32,), 0, (arg, 1), device=0)
    assert len(kernel.normal_launches) == 2 and fake_core == []
    assert _device._launchers == {}


def test_without_a_device_the_arguments_go_to_numba_as_they_are(fake_core):
    # Numba device arrays, or the simulator's host arrays: no views, no device context
    kernel = FakeKernel()
    a = FakeCupyArray((4,))
    for _ in range(2):
        _device.launch(kernel, (1,), (32,), 0, (a, 1))
    assert [args for _, args in kernel.normal_launches] == [(a, 1)] * 2
    assert fake_core == [] and fake_core.views == []


def test_the_switch_and_the_simulator_turn_the_fast_path_off(monkeypatch):
    monkeypatch.setenv("FUSEKIT_CUDA_FAST_LAUNCH", "0")
    assert _device._fast_launch_parts() is None
    monkeypatch.delenv("FUSEKIT_CUDA_FAST_LAUNCH")
    from numba.core import config

    monkeypatch.setattr(config, "ENABLE_CUDASIM", True)
    assert _device._fast_launch_parts() is None
