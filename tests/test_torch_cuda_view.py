"""``cupy_view_of_tensor``: CUDA tensors as CuPy arrays without DLPack, checked without a GPU.

Fakes stand in for CuPy and for the CUDA tensor (a CPU tensor whose device reports an index),
to pin down the view's pointer, extent, shape, strides, owner and device, and the cases
that must fall back to DLPack. The real path is checked bit for bit against DLPack on a GPU
by ``benchmarks/gpu/run_gpu_checks.py --only diag_torch_view``.
"""

from types import SimpleNamespace

import pytest
import torch

from fusekit import _arrays


class FakeCupy:
    def __init__(self, stream_ptr=0):
        self.made = []
        stream = SimpleNamespace(ptr=stream_ptr)
        self.cuda = SimpleNamespace(
            get_current_stream=lambda: stream,
            UnownedMemory=lambda ptr, size, owner, device: SimpleNamespace(
                ptr=ptr, size=size, owner=owner, device=device),
            MemoryPointer=lambda mem, offset: SimpleNamespace(mem=mem, offset=offset),
        )

    def ndarray(self, shape, dtype, memptr, strides):
        self.made.append((shape, dtype, memptr, strides))
        return self.made[-1]


class FakeCudaTensor:
    """A CPU tensor that says it lives on cuda:1."""

    def __init__(self, t):
        self.t = t
        self.dtype = t.dtype
        self.shape = t.shape
        self.device = SimpleNamespace(index=1)

    def numel(self):
        return self.t.numel()

    def element_size(self):
        return self.t.element_size()

    def stride(self):
        return self.t.stride()

    def data_ptr(self):
        return self.t.data_ptr()


@pytest.fixture
def raw_stream(monkeypatch):
    streams = {1: 0}
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda i: streams[i],
                        raising=False)
    return streams


def test_a_strided_view_keeps_its_pointer_extent_strides_and_owner(raw_stream):
    base = torch.zeros(6, 10, dtype=torch.float64)
    t = FakeCudaTensor(base[1:, ::3])  # shape (5, 4), strides (10, 3) elements
    cp = FakeCupy()
    shape, dtype, memptr, strides = _arrays.cupy_view_of_tensor(t, cp)
    assert (shape, dtype, strides) == ((5, 4), "float64", (80, 24))
    assert memptr.offset == 0 and memptr.mem.owner is t and memptr.mem.device == 1
    assert memptr.mem.ptr == base.data_ptr() + 10 * 8
    assert memptr.mem.size == (1 + 4 * 10 + 3 * 3) * 8  # up to the last element's end


def test_a_broadcast_view_spans_one_element_per_stride_zero_axis(raw_stream):
    t = FakeCudaTensor(torch.zeros(3, dtype=torch.float32).expand(4, 3))
    shape, _, memptr, strides = _arrays.cupy_view_of_tensor(t, FakeCupy())
    assert shape == (4, 3) and strides == (0, 4) and memptr.mem.size == 12


@pytest.mark.parametrize("t", [torch.zeros(3, dtype=torch.bfloat16), torch.zeros(0, 4)])
def test_bfloat16_and_empty_tensors_go_through_dlpack(raw_stream, t):
    assert _arrays.cupy_view_of_tensor(FakeCudaTensor(t), FakeCupy()) is None


def test_a_tensor_on_another_stream_than_cupys_goes_through_dlpack(raw_stream):
    raw_stream[1] = 1234  # torch works on a side stream: DLPack orders it with an event
    assert _arrays.cupy_view_of_tensor(FakeCudaTensor(torch.zeros(3)), FakeCupy()) is None
    cp = FakeCupy(stream_ptr=1234)
    assert _arrays.cupy_view_of_tensor(FakeCudaTensor(torch.zeros(3)), cp) is not None


def test_a_torch_without_cuda_goes_through_dlpack(monkeypatch):
    monkeypatch.delattr(torch._C, "_cuda_getCurrentRawStream", raising=False)
    assert _arrays.cupy_view_of_tensor(FakeCudaTensor(torch.zeros(3)), FakeCupy()) is None
