"""kron ops as torch.ops.fusekit: autograd, opcheck, torch.compile, dtypes."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fusekit  # noqa: E402
import fusekit.torch  # noqa: E402,F401  (registers torch.ops.fusekit)
from fusekit.ops.kron import kron_factor_grads_reference, kron_linear_reference  # noqa: E402

CPU_BACKENDS = [b for b in fusekit.available_backends() if b in ("cpu", "reference")]


def tensors(dtype=torch.float64, batch=(3,), r=2, m1=3, n1=2, m2=2, n2=4, grad=True):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(*batch, n1 * n2, generator=g, dtype=dtype)
    A = torch.randn(r, m1, n1, generator=g, dtype=dtype)
    B = torch.randn(r, m2, n2, generator=g, dtype=dtype)
    return tuple(t.requires_grad_(grad) for t in (x, A, B))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_passes(backend):
    x, A, B = tensors()
    assert torch.autograd.gradcheck(
        lambda x, A, B: fusekit.ops.kron_linear(x, A, B, backend=backend), (x, A, B))


def test_second_derivative_through_x_passes_gradgradcheck():
    x, A, B = tensors()
    A.requires_grad_(False)
    B.requires_grad_(False)
    assert torch.autograd.gradgradcheck(lambda x: fusekit.ops.kron_linear(x, A, B), (x,))


def test_second_derivative_wrt_factors_raises_a_clear_error():
    x, A, B = tensors()
    (gA,) = torch.autograd.grad(fusekit.ops.kron_linear(x, A, B).sum(), A, create_graph=True)
    with pytest.raises(NotImplementedError, match="second derivatives"):
        gA.sum().backward()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backward_matches_float64_reference(backend):
    x, A, B = tensors(dtype=torch.float32, batch=(2, 5))
    y = fusekit.ops.kron_linear(x, A, B, backend=backend)
    G = torch.randn_like(y)
    y.backward(G)
    xn, An, Bn, Gn = (t.detach().double().numpy() for t in (x, A, B, G))
    gA, gB = kron_factor_grads_reference(xn, Gn, An, Bn)
    gx = kron_linear_reference(Gn, An.transpose(0, 2, 1), Bn.transpose(0, 2, 1))
    np.testing.assert_allclose(x.grad.numpy(), gx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(A.grad.numpy(), gA, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(B.grad.numpy(), gB, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_kron_linear(dtype):
    torch.library.opcheck(torch.ops.fusekit.kron_linear.default, tensors(dtype))


def test_opcheck_kron_factor_grads():
    x, A, B = tensors(grad=False)
    G = torch.randn(3, 6, dtype=torch.float64)
    torch.library.opcheck(torch.ops.fusekit.kron_factor_grads.default, (x, G, A, B))


def test_torch_compile_fullgraph_matches_eager():
    x, A, B = tensors(dtype=torch.float32, grad=False)

    def layer(x, A, B):
        return torch.nn.functional.gelu(fusekit.ops.kron_linear(x, A, B)) + 1.0

    compiled = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(compiled(x, A, B), layer(x, A, B))


def test_torch_compile_fullgraph_backward_matches_eager():
    x, A, B = tensors(dtype=torch.float32)
    compiled = torch.compile(lambda x, A, B: fusekit.ops.kron_linear(x, A, B).square().sum(),
                             fullgraph=True)
    grads = torch.autograd.grad(compiled(x, A, B), (x, A, B))
    eager = torch.autograd.grad(fusekit.ops.kron_linear(x, A, B).square().sum(), (x, A, B))
    for g, e in zip(grads, eager, strict=True):
        torch.testing.assert_close(g, e)


def test_bfloat16_tensors_compute_in_float32_and_return_bfloat16():
    x, A, B = tensors(dtype=torch.float32, grad=False)
    y = fusekit.ops.kron_linear(x.bfloat16(), A.bfloat16(), B.bfloat16())
    assert y.dtype == torch.bfloat16
    expected = kron_linear_reference(*(t.bfloat16().double().numpy() for t in (x, A, B)))
    np.testing.assert_allclose(y.float().numpy(), expected, rtol=1e-2, atol=1e-2)


def test_tensor_result_is_a_tensor_on_the_input_device():
    x, A, B = tensors(grad=False)
    y = fusekit.ops.kron_linear(x, A, B)
    assert isinstance(y, torch.Tensor) and y.device == x.device and y.shape == (3, 6)


def test_bad_shape_raises_input_error_under_torch_compile():
    x, A, B = tensors(dtype=torch.float32, grad=False)
    compiled = torch.compile(lambda x, A, B: fusekit.ops.kron_linear(x, A, B), fullgraph=True)
    with pytest.raises(Exception, match=r"x must have shape \(\.\.\., n1\*n2\)"):
        compiled(x[:, :-1], A, B)


def test_bfloat16_mixed_with_float64_is_rejected():
    x, A, B = tensors(grad=False)
    with pytest.raises(fusekit.InputError, match="x is bfloat16 and A is float64"):
        fusekit.ops.kron_linear(x.bfloat16(), A, B)


def test_backend_argument_reaches_the_registry_through_torch_ops():
    x, A, B = tensors(grad=False)
    with pytest.raises(fusekit.UnknownBackendError, match="'nope'"):
        torch.ops.fusekit.kron_linear(x, A, B, "nope")
    with pytest.raises(fusekit.UnknownBackendError, match="'nope'"):
        torch.ops.fusekit.kron_linear(x, A, B, backend="nope")
