"""Tests of splatting.softsplat: maths against a loop reference, gradients, edge cases."""

from __future__ import annotations

import ctypes
import importlib
import math
import shutil
import subprocess

import pytest
import torch

from splatting import cupy_kernel, hole_mask, softsplat

# The module (the package attribute `splatting.softsplat` is the function).
softsplat_module = importlib.import_module("splatting.softsplat")

MODES = ("sum", "avg", "linear", "soft")


def reference_softsplat(input, flow, metric, mode):
    """Pixel-by-pixel loops over the definition (float64, tiny tensors only)."""
    n, c, h, w = input.shape
    numerator = torch.zeros(n, c, h, w, dtype=torch.float64)
    denominator = torch.zeros(n, 1, h, w, dtype=torch.float64)
    for b in range(n):
        z_max = metric[b].max().item() if mode == "soft" else 0.0
        for y in range(h):
            for x in range(w):
                fx, fy = flow[b, 0, y, x].item(), flow[b, 1, y, x].item()
                if not (math.isfinite(fx) and math.isfinite(fy)):
                    continue
                weight = {
                    "sum": 1.0,
                    "avg": 1.0,
                    "linear": metric[b, 0, y, x].item() if metric is not None else 1.0,
                    "soft": math.exp(metric[b, 0, y, x].item() - z_max) if mode == "soft" else 1.0,
                }[mode]
                tx, ty = x + fx, y + fy
                x0, y0 = math.floor(tx), math.floor(ty)
                for cx, cy in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                    if 0 <= cx < w and 0 <= cy < h:
                        bilinear = (1 - abs(cx - tx)) * (1 - abs(cy - ty))
                        numerator[b, :, cy, cx] += bilinear * weight * input[b, :, y, x].double()
                        denominator[b, 0, cy, cx] += bilinear * weight
    if mode == "sum":
        return numerator
    inverse = torch.where(denominator > 0, 1.0 / denominator.clamp_min(1e-300), 0.0)
    return numerator * inverse


def random_case(n=1, c=2, h=5, w=6, spread=3.0, seed=0, dtype=torch.float64):
    """Input, flow with fractional parts in [0.2, 0.8] (away from the kinks), metric."""
    generator = torch.Generator().manual_seed(seed)
    input = torch.rand(n, c, h, w, generator=generator, dtype=dtype)
    whole = torch.randint(-int(spread), int(spread) + 1, (n, 2, h, w), generator=generator)
    fraction = 0.2 + 0.6 * torch.rand(n, 2, h, w, generator=generator, dtype=dtype)
    flow = whole.to(dtype) + fraction
    metric = 0.1 + torch.rand(n, 1, h, w, generator=generator, dtype=dtype)
    return input, flow, metric


def metric_for(mode, metric):
    return metric if mode in ("linear", "soft") else None


@pytest.mark.parametrize("mode", MODES)
def test_matches_loop_reference(mode):
    input, flow, metric = random_case(n=2, c=3, h=6, w=7, seed=1)
    flow[0, :, 2, 3] = float("nan")  # non-finite flow is ignored
    flow[1, 0, 4, 1] = float("inf")
    expected = reference_softsplat(input, flow, metric_for(mode, metric), mode)
    actual = softsplat(input, flow, metric_for(mode, metric), mode)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_every_input(mode):
    input, flow, metric = random_case(n=2, c=2, h=5, w=6, spread=2.0, seed=2)
    leaves = [input.requires_grad_(), flow.requires_grad_()]
    if mode in ("linear", "soft"):
        leaves.append(metric.requires_grad_())

    def function(*tensors):
        return softsplat(tensors[0], tensors[1], tensors[2] if len(tensors) > 2 else None, mode)

    assert torch.autograd.gradcheck(function, leaves, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ("avg", "linear", "soft"))
def test_gradcheck_with_weight_output(mode):
    input, flow, metric = random_case(n=1, c=1, h=4, w=5, spread=1.0, seed=3)
    leaves = [input.requires_grad_(), flow.requires_grad_(), metric.requires_grad_()]

    def function(input, flow, metric):
        return softsplat(input, flow, metric_for(mode, metric), mode, return_weight=True)

    if mode == "avg":  # metric unused: gradcheck needs every input to matter
        leaves = leaves[:2]

        def function(input, flow):  # noqa: F811
            return softsplat(input, flow, None, mode, return_weight=True)

    assert torch.autograd.gradcheck(function, leaves, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_zero_flow_is_identity(mode):
    input, _, metric = random_case(n=2, c=4, h=7, w=9, seed=4, dtype=torch.float32)
    output = softsplat(input, torch.zeros(2, 2, 7, 9), metric_for(mode, metric), mode)
    torch.testing.assert_close(output, input, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_integer_shift_is_exact_translation(mode):
    input, _, metric = random_case(n=1, c=3, h=8, w=10, seed=5, dtype=torch.float32)
    dx, dy = 3, -2
    flow = torch.empty(1, 2, 8, 10)
    flow[:, 0], flow[:, 1] = dx, dy
    output, weight = softsplat(input, flow, metric_for(mode, metric), mode, return_weight=True)
    # Target (y, x) receives source (y - dy, x - dx); targets without a source are holes.
    torch.testing.assert_close(output[..., : 8 + dy, dx:], input[..., -dy:, : 10 - dx])
    holes = torch.ones(1, 1, 8, 10, dtype=torch.bool)
    holes[..., : 8 + dy, dx:] = False
    assert torch.equal(hole_mask(weight), holes)
    assert torch.all(output[holes.expand_as(output)] == 0)


def test_sum_conserves_mass_that_stays_in_frame():
    input, flow, _ = random_case(n=2, c=3, h=9, w=11, spread=1.0, seed=6)
    # Sources near the border stay put so that every bilinear footprint is in the frame.
    flow[..., :2, :] = flow[..., -2:, :] = flow[..., :, :2] = flow[..., :, -2:] = 0.0
    output = softsplat(input, flow, None, "sum")
    torch.testing.assert_close(output.sum(dim=(2, 3)), input.sum(dim=(2, 3)))
    # Moving mass partly out of the frame keeps exactly the in-frame part.
    flow[..., 0, :, :] += 3.5
    output = softsplat(input, flow, None, "sum")
    expected = reference_softsplat(input, flow, None, "sum")
    torch.testing.assert_close(output.sum(dim=(2, 3)), expected.sum(dim=(2, 3)))
    assert torch.all(output.sum(dim=(2, 3)) < input.sum(dim=(2, 3)))


@pytest.mark.parametrize("z", (1e4, -1e4))
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_large_metric_is_finite_and_shift_invariant(z, dtype):
    input, flow, metric = random_case(n=2, c=3, h=6, w=8, seed=7, dtype=dtype)
    output = softsplat(input, flow, metric + z, "soft")
    assert torch.isfinite(output).all()
    # float32 rounds metric + 1e4 to ~1e-3, which changes the weights by ~1e-3.
    tolerance = dict(rtol=3e-3, atol=3e-3) if dtype == torch.float32 else {}
    torch.testing.assert_close(output, softsplat(input, flow, metric, "soft"), **tolerance)
    leaves = [t.clone().requires_grad_() for t in (input, flow, metric + z)]
    softsplat(*leaves, "soft").square().sum().backward()
    assert all(torch.isfinite(leaf.grad).all() for leaf in leaves)


def test_softmax_prefers_larger_metric():
    input = torch.tensor([[[[0.0, 1.0, 0.0]]]])  # (1, 1, 1, 3)
    flow = torch.zeros(1, 2, 1, 3)
    flow[0, 0, 0, 1] = 1.0  # the middle pixel moves onto the right one
    metric = torch.tensor([[[[0.0, 10.0, 0.0]]]])
    soft = softsplat(input, flow, metric, "soft")
    average = softsplat(input, flow, None, "avg")
    assert soft[0, 0, 0, 2] > 0.999
    assert average[0, 0, 0, 2] == pytest.approx(0.5)


def test_small_weights_are_not_swamped():
    # A lone source lands almost exactly on pixel 1: pixel 0 gets bilinear weight ~1e-6.
    input = torch.tensor([[[[0.25, 0.0, 0.0, 0.0]]]])
    flow = torch.zeros(1, 2, 1, 4)
    flow[0, 0, 0, 0] = 1.0 - 1e-6
    flow[0, 0, 0, 1:] = float("nan")
    for mode, metric in (("avg", None), ("linear", torch.full((1, 1, 1, 4), 1e-3))):
        output, weight = softsplat(input, flow, metric, mode, return_weight=True)
        assert 0 < weight[0, 0, 0, 0] < 1e-8 if mode == "linear" else weight[0, 0, 0, 0] < 1e-5
        assert output[0, 0, 0, 0].item() == pytest.approx(0.25, rel=1e-3)


@pytest.mark.parametrize("channels", (1, 5, 64))
@pytest.mark.parametrize("mode", ("sum", "soft"))
def test_batch_and_channels_match_single_images(channels, mode):
    input, flow, metric = random_case(n=3, c=channels, h=6, w=7, seed=8, dtype=torch.float32)
    batched = softsplat(input, flow, metric_for(mode, metric), mode)
    for b in range(3):
        single = softsplat(
            input[b : b + 1], flow[b : b + 1], metric_for(mode, metric[b : b + 1]), mode
        )
        torch.testing.assert_close(batched[b : b + 1], single)
        for c in (0, channels - 1):  # channels are independent
            one = softsplat(
                input[b : b + 1, c : c + 1],
                flow[b : b + 1],
                metric_for(mode, metric[b : b + 1]),
                mode,
            )
            torch.testing.assert_close(batched[b : b + 1, c : c + 1], one)


def test_chunked_batches_match(monkeypatch):
    input, flow, metric = random_case(n=5, c=3, h=6, w=7, seed=9)
    leaves = [t.clone().requires_grad_() for t in (input, flow, metric)]
    expected = softsplat(*leaves, "soft")
    expected_grads = torch.autograd.grad(expected.square().sum(), leaves)
    monkeypatch.setattr(softsplat_module, "_CHUNK_ELEMENTS", 1)  # one image per chunk
    actual = softsplat(*leaves, "soft")
    actual_grads = torch.autograd.grad(actual.square().sum(), leaves)
    torch.testing.assert_close(actual, expected)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("bad", (float("nan"), float("inf"), -float("inf"), 1e30))
def test_non_finite_flow_contributes_nothing(bad):
    input, flow, metric = random_case(n=1, c=2, h=5, w=6, seed=10)
    flow[0, 1, 2, 2] = bad
    expected_input = input.clone()
    expected_input[0, :, 2, 2] = 0.0
    expected_flow = flow.clone()
    expected_flow[0, :, 2, 2] = 0.0
    output = softsplat(input, flow, None, "sum")
    torch.testing.assert_close(output, softsplat(expected_input, expected_flow, None, "sum"))
    leaves = [t.clone().requires_grad_() for t in (input, flow, metric)]
    softsplat(*leaves, "soft").sum().backward()
    assert all(torch.isfinite(leaf.grad).all() for leaf in leaves)
    assert torch.all(leaves[1].grad[0, :, 2, 2] == 0)


def test_out_of_frame_targets_are_dropped():
    input, _, metric = random_case(n=2, c=2, h=5, w=6, seed=11)
    for dx, dy in ((6.0, 0.0), (-6.5, 0.0), (0.0, 5.0), (0.3, -100.0), (1e6, 1e6)):
        flow = torch.empty(2, 2, 5, 6, dtype=torch.float64)
        flow[:, 0], flow[:, 1] = dx, dy
        for mode in MODES:
            output, weight = softsplat(
                input, flow, metric_for(mode, metric), mode, return_weight=True
            )
            assert torch.all(output == 0) and torch.all(hole_mask(weight))


def test_float32_matches_float64():
    input, flow, metric = random_case(n=2, c=3, h=12, w=16, spread=4.0, seed=12)
    output64 = softsplat(input, flow, metric, "soft")
    output32 = softsplat(input.float(), flow.float(), metric.float(), "soft")
    torch.testing.assert_close(output32.double(), output64, rtol=1e-5, atol=1e-5)


def test_bad_arguments_raise_value_error():
    input, flow, metric = random_case(n=2, c=3, h=5, w=6)
    cases = [
        (dict(input=input[0], flow=flow), "input must be a \\(N, C, H, W\\)"),
        (dict(input=input, flow=flow[:, :1]), "flow must have shape"),
        (dict(input=input, flow=flow[:1]), "flow must have shape"),
        (dict(input=input, flow=flow, mode="max"), "mode must be one of"),
        (dict(input=input, flow=flow, mode="soft"), "needs a metric"),
        (dict(input=input, flow=flow, metric=metric[:, :, :4], mode="soft"), "metric must have"),
        (dict(input=input, flow=flow, metric=metric, mode="avg"), "takes no metric"),
        (dict(input=input, flow=flow.float(), mode="sum"), "dtype and device"),
        (dict(input=input.long(), flow=flow.long(), mode="sum"), "floating"),
        (dict(input=input, flow=flow, mode="sum", backend="triton"), "backend must be"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            softsplat(**kwargs)


@pytest.mark.skipif(cupy_kernel.is_available(), reason="CuPy and CUDA are available here")
def test_forcing_cupy_without_it_raises():
    input, flow, _ = random_case()
    with pytest.raises(RuntimeError, match="backend='cupy'"):
        softsplat(input, flow, None, "sum", backend="cupy")


def test_cupy_module_imports_without_cupy():
    assert isinstance(cupy_kernel.is_available(), bool)
    assert cupy_kernel.is_available() or cupy_kernel.unavailable_reason()


def _compare_devices(backend_a, device_a, backend_b, device_b, dtype):
    input, flow, metric = random_case(n=3, c=5, h=32, w=40, spread=6.0, seed=13, dtype=dtype)
    flow[0, 0, 3, 4] = float("nan")
    results = []
    for backend, device in ((backend_a, device_a), (backend_b, device_b)):
        for mode in MODES:
            leaves = [t.to(device).requires_grad_() for t in (input, flow, metric)]
            output = softsplat(
                leaves[0], leaves[1], metric_for(mode, leaves[2]), mode, backend=backend
            )
            used = leaves if mode in ("linear", "soft") else leaves[:2]
            grads = torch.autograd.grad(output.square().sum(), used)
            results.append([output.cpu(), *(g.cpu() for g in grads)])
    half = len(results) // 2
    tolerance = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else {}
    for mine, theirs in zip(results[:half], results[half:], strict=True):
        for a, b in zip(mine, theirs, strict=True):
            torch.testing.assert_close(a, b, **tolerance)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_torch_backend_cpu_equals_cuda(dtype):
    _compare_devices("torch", "cpu", "torch", "cuda", dtype)


@pytest.mark.gpu
@pytest.mark.skipif(
    not cupy_kernel.is_available(),
    reason=f"needs CUDA and CuPy ({cupy_kernel.unavailable_reason() or 'available'})",
)
@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_cupy_backend_equals_torch_backend(dtype):
    _compare_devices("torch", "cpu", "cupy", "cuda", dtype)


@pytest.mark.gpu
@pytest.mark.skipif(
    not cupy_kernel.is_available(),
    reason=f"needs CUDA and CuPy ({cupy_kernel.unavailable_reason() or 'available'})",
)
@pytest.mark.parametrize("mode", MODES)
def test_cupy_gradcheck(mode):
    input, flow, metric = random_case(n=2, c=2, h=5, w=6, spread=2.0, seed=2)
    leaves = [t.cuda().requires_grad_() for t in (input, flow, metric)]
    if mode not in ("linear", "soft"):
        leaves = leaves[:2]

    def function(*tensors):
        metric = tensors[2] if len(tensors) > 2 else None
        return softsplat(tensors[0], tensors[1], metric, mode, backend="cupy")

    assert torch.autograd.gradcheck(function, leaves, eps=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.backends.mps.is_available(), reason="needs an Apple MPS device")
def test_mps_matches_cpu():
    input, flow, metric = random_case(n=2, c=3, h=16, w=20, seed=14, dtype=torch.float32)
    expected = softsplat(input, flow, metric, "soft")
    actual = softsplat(input.to("mps"), flow.to("mps"), metric.to("mps"), "soft")
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-4, atol=1e-4)


# The CUDA kernels' C++ source, compiled for the CPU with stand-ins for the CUDA built-ins
# (one block per element, atomicAdd as a plain add): checks their indexing and maths
# against the torch backend where no GPU exists. Not a test of CUDA itself (NVRTC, atomics,
# streams), which only the GPU tests above cover.
_EMULATION_PRELUDE = r"""
#include <cmath>
using std::floor;
using std::isfinite;
#define __global__
#define __device__
#define __restrict__
struct Dim { long long x; };
static Dim blockIdx, blockDim, threadIdx, gridDim;
template <typename T> T atomicAdd(T* address, T value) { T old = *address; *address += value; return old; }
typedef double scalar_t;
"""
_EMULATION_LAUNCHERS = r"""
#define LAUNCH(total, call) \
    blockDim.x = 1; threadIdx.x = 0; gridDim.x = (total); \
    for (long long b = 0; b < (total); ++b) { blockIdx.x = b; call; }
extern "C" void forward(const double* v, const double* f, double* o,
                        long long N, long long C, long long H, long long W) {
    LAUNCH(N * C * H * W, splat_forward(v, f, o, N, C, H, W));
}
extern "C" void backward_values(const double* g, const double* f, double* gv,
                                long long N, long long C, long long H, long long W) {
    LAUNCH(N * C * H * W, splat_backward_values(g, f, gv, N, C, H, W));
}
extern "C" void backward_flow(const double* g, const double* v, const double* f, double* gf,
                              long long N, long long C, long long H, long long W) {
    LAUNCH(N * H * W, splat_backward_flow(g, v, f, gf, N, C, H, W));
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ to emulate the CUDA kernels")
def test_cuda_kernel_source_matches_torch_backend_on_cpu(tmp_path):
    source = tmp_path / "kernels.cpp"
    source.write_text(_EMULATION_PRELUDE + cupy_kernel._KERNELS + _EMULATION_LAUNCHERS)
    library = tmp_path / "kernels.so"
    subprocess.run(
        ["g++", "-std=c++14", "-O1", "-shared", "-fPIC", str(source), "-o", str(library)],
        check=True,
    )
    kernels = ctypes.CDLL(str(library))

    input, flow, _ = random_case(n=2, c=3, h=7, w=9, spread=4.0, seed=15)
    flow[0, 0, 1, 2] = float("nan")
    flow[1, 1, 3, 3] = float("inf")
    grad = torch.rand_like(input)
    sizes = [ctypes.c_longlong(s) for s in input.shape]

    def pointer(tensor):
        return ctypes.c_void_p(tensor.data_ptr())

    output = torch.zeros_like(input)
    kernels.forward(pointer(input), pointer(flow), pointer(output), *sizes)
    grad_values = torch.zeros_like(input)
    kernels.backward_values(pointer(grad), pointer(flow), pointer(grad_values), *sizes)
    grad_flow = torch.zeros_like(flow)
    kernels.backward_flow(pointer(grad), pointer(input), pointer(flow), pointer(grad_flow), *sizes)

    expected = softsplat_module._torch_splat_forward(input, flow)
    expected_values, expected_flow = softsplat_module._torch_splat_backward(
        grad, input, flow, True, True
    )
    torch.testing.assert_close(output, expected.contiguous())
    torch.testing.assert_close(grad_values, expected_values.contiguous())
    torch.testing.assert_close(grad_flow, expected_flow.contiguous())
