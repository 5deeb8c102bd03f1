"""The numba backend of softsplat against the PyTorch backend: forward and gradients."""

from __future__ import annotations

import pytest
import torch

from splatting import numba_kernel, softsplat
from splatting.softsplat import _select_backend

pytestmark = pytest.mark.skipif(
    not numba_kernel.is_available(), reason=f"needs numba ({numba_kernel.unavailable_reason()})"
)

TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def make_case(mode: str, dtype: torch.dtype, n: int = 2, c: int = 3, h: int = 9, w: int = 13):
    """Random input, a flow with NaN/inf/out-of-frame sources, and a metric for the mode."""
    generator = torch.Generator().manual_seed(0)
    input = torch.randn(n, c, h, w, generator=generator, dtype=dtype)
    flow = torch.randn(n, 2, h, w, generator=generator, dtype=dtype) * 3
    flow[0, 0, 1, 1] = float("nan")
    flow[-1, 1, 2, 2] = float("inf")
    flow[0, 0, 3, 3] = 40.0  # lands out of frame
    flow[-1, 1, 0, 1] = -0.5  # straddles the top border: half of it out of frame
    metric = None
    if mode in ("linear", "soft"):
        metric = torch.rand(n, 1, h, w, generator=generator, dtype=dtype) * 3
    return input, flow, metric


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["sum", "avg", "linear", "soft"])
@pytest.mark.parametrize("return_weight", [False, True])
def test_forward_and_gradients_match_torch(mode, dtype, return_weight):
    tensors = make_case(mode, dtype)
    torch.manual_seed(1)
    results = {}
    for backend in ("numba", "torch"):
        leaves = [None if t is None else t.clone().requires_grad_() for t in tensors]
        result = softsplat(*leaves, mode, backend=backend, return_weight=return_weight)
        output, weight = result if return_weight else (result, None)
        ramp = torch.linspace(-1, 1, output.numel(), dtype=dtype).view_as(output)
        loss = (output * ramp).sum() + (0.3 * weight.sum() if return_weight else 0)
        loss.backward()
        grads = [t.grad for t in leaves if t is not None]
        results[backend] = ([output] + ([weight] if return_weight else []), grads)
    for a, b in zip(results["numba"][0], results["torch"][0], strict=True):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype])
    for a, b in zip(results["numba"][1], results["torch"][1], strict=True):
        scale = b.abs().max().clamp(min=1)  # flow gradients sum many terms: relative check
        torch.testing.assert_close(a / scale, b / scale, **TOLERANCE[dtype])


def test_large_metric_odd_sizes_broadcast_input_and_many_channels():
    input, flow, _ = make_case("soft", torch.float32, n=3, c=7, h=5, w=11)
    metric = torch.full((3, 1, 5, 11), 1e4)
    metric[1] = -1e4
    photo = input[:1].expand(3, -1, -1, -1)  # broadcast batch, not copied by the kernel
    a, wa = softsplat(photo, flow, metric, "soft", backend="numba", return_weight=True)
    b, wb = softsplat(photo, flow, metric, "soft", backend="torch", return_weight=True)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(wa, wb, rtol=1e-4, atol=1e-4)


def test_gradcheck_soft_float64():
    input, flow, metric = make_case("soft", torch.float64, n=1, c=2, h=5, w=5)
    flow = flow.nan_to_num(0.0, 0.0, 0.0).clamp(-2, 2) + 0.37  # away from integer crossings
    leaves = [t.clone().requires_grad_() for t in (input, flow, metric)]
    assert torch.autograd.gradcheck(
        lambda i, f, z: softsplat(i, f, z, "soft", backend="numba"), leaves
    )


def test_auto_selects_numba_on_cpu_and_errors():
    x = torch.zeros(1, 1, 2, 2)
    assert _select_backend(x, "auto").fused
    assert not _select_backend(x.half(), "auto").fused  # other dtypes: torch backend
    with pytest.raises(RuntimeError, match="float32/float64"):
        softsplat(x.half(), torch.zeros(1, 2, 2, 2).half(), None, "sum", backend="numba")


def test_empty_batch_uses_torch_path():
    out = softsplat(torch.zeros(0, 2, 3, 4), torch.zeros(0, 2, 3, 4), None, "avg")
    assert out.shape == (0, 2, 3, 4)


def test_kernel_keeps_torch_thread_count():
    """numba's OpenMP pool must not reset PyTorch's thread count (it did: 1 -> 2)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        image, flow = torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8)
        softsplat(image, flow, mode="avg", backend="numba")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
