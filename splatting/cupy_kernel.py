"""CUDA kernels for summation splatting, compiled at run time with CuPy.

UNVERIFIED ON A GPU SO FAR: no GPU was available while this was written; the tests that
compare it with the PyTorch backend (tests/test_splatting.py) skip without CUDA + CuPy.

This module imports cleanly without CuPy or CUDA; :func:`is_available` says whether the
kernels can run. :func:`splat_forward` and :func:`splat_backward` have the same contract
as the PyTorch backend's core: values (N, C, H, W) and flow (N, 2, H, W), both float32 or
float64 CUDA tensors, give S[v] (N, C, H, W) = sum over sources p of
bilinear(t, p + flow(p)) * v(p), and its gradients. The modes (avg/linear/soft) and the
autograd Function are in :mod:`splatting.softsplat`, shared with the PyTorch backend.

The kernels are compiled once per dtype (sizes are kernel arguments, not constants), and
launched on PyTorch's current CUDA stream.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

try:  # CuPy is optional: CPU users and CI do not have it.
    import cupy
except Exception as error:  # ImportError, or a CUDA library that fails to load
    cupy = None
    _IMPORT_ERROR = f"CuPy is not importable ({type(error).__name__}: {error})"
else:
    _IMPORT_ERROR = ""

_THREADS = 256

# One source per dtype: `scalar_t` is typedef'd in front of it. A source pixel whose
# target top-left corner (x0, y0) is outside [-1, W-1] x [-1, H-1], or whose flow is not
# finite, touches no pixel of the frame and is skipped. Indices are 64-bit.
_KERNELS = r"""
extern "C" __global__ void splat_forward(
    const scalar_t* __restrict__ values, const scalar_t* __restrict__ flow,
    scalar_t* __restrict__ output, const long long N, const long long C,
    const long long H, const long long W)
{
    const long long total = N * C * H * W;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const long long x = i % W;
        const long long y = (i / W) % H;
        const long long c = (i / (W * H)) % C;
        const long long n = i / (W * H * C);
        const scalar_t fx = flow[((n * 2 + 0) * H + y) * W + x];
        const scalar_t fy = flow[((n * 2 + 1) * H + y) * W + x];
        if (!isfinite(fx) || !isfinite(fy)) continue;
        const scalar_t tx = (scalar_t)x + fx;
        const scalar_t ty = (scalar_t)y + fy;
        const scalar_t fx0 = floor(tx);
        const scalar_t fy0 = floor(ty);
        if (!(fx0 >= -1 && fx0 <= W - 1 && fy0 >= -1 && fy0 <= H - 1)) continue;
        const long long x0 = (long long)fx0;
        const long long y0 = (long long)fy0;
        const scalar_t ax = tx - fx0;
        const scalar_t ay = ty - fy0;
        const scalar_t v = values[i];
        scalar_t* plane = output + (n * C + c) * H * W;
        if (y0 >= 0) {
            if (x0 >= 0) atomicAdd(plane + y0 * W + x0, (1 - ax) * (1 - ay) * v);
            if (x0 + 1 < W) atomicAdd(plane + y0 * W + x0 + 1, ax * (1 - ay) * v);
        }
        if (y0 + 1 < H) {
            if (x0 >= 0) atomicAdd(plane + (y0 + 1) * W + x0, (1 - ax) * ay * v);
            if (x0 + 1 < W) atomicAdd(plane + (y0 + 1) * W + x0 + 1, ax * ay * v);
        }
    }
}

// Where source (n, y, x) lands: top-left corner (x0, y0) and fractions (ax, ay).
// Returns false if the source touches no pixel of the frame.
__device__ bool source_target(
    const scalar_t* __restrict__ flow,
    const long long n, const long long y, const long long x,
    const long long H, const long long W,
    scalar_t* ax_out, scalar_t* ay_out, long long* x0_out, long long* y0_out)
{
    const scalar_t fx = flow[((n * 2 + 0) * H + y) * W + x];
    const scalar_t fy = flow[((n * 2 + 1) * H + y) * W + x];
    if (!isfinite(fx) || !isfinite(fy)) return false;
    const scalar_t tx = (scalar_t)x + fx;
    const scalar_t ty = (scalar_t)y + fy;
    const scalar_t fx0 = floor(tx);
    const scalar_t fy0 = floor(ty);
    if (!(fx0 >= -1 && fx0 <= W - 1 && fy0 >= -1 && fy0 <= H - 1)) return false;
    *ax_out = tx - fx0;
    *ay_out = ty - fy0;
    *x0_out = (long long)fx0;
    *y0_out = (long long)fy0;
    return true;
}

// The four corner values of `plane` around (x0, y0); 0 for corners outside the frame.
__device__ void load_corners(
    const scalar_t* __restrict__ plane, const long long x0, const long long y0,
    const long long H, const long long W, scalar_t* g)
{
    const bool left = x0 >= 0, right = x0 + 1 < W, top = y0 >= 0, bottom = y0 + 1 < H;
    g[0] = (top && left) ? plane[y0 * W + x0] : (scalar_t)0;
    g[1] = (top && right) ? plane[y0 * W + x0 + 1] : (scalar_t)0;
    g[2] = (bottom && left) ? plane[(y0 + 1) * W + x0] : (scalar_t)0;
    g[3] = (bottom && right) ? plane[(y0 + 1) * W + x0 + 1] : (scalar_t)0;
}

// d loss / d values[n, c, y, x] = sum over corners of weight * grad_output[corner].
extern "C" __global__ void splat_backward_values(
    const scalar_t* __restrict__ grad_output, const scalar_t* __restrict__ flow,
    scalar_t* __restrict__ grad_values, const long long N, const long long C,
    const long long H, const long long W)
{
    const long long total = N * C * H * W;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const long long x = i % W;
        const long long y = (i / W) % H;
        const long long c = (i / (W * H)) % C;
        const long long n = i / (W * H * C);
        scalar_t ax, ay, g[4];
        long long x0, y0;
        if (!source_target(flow, n, y, x, H, W, &ax, &ay, &x0, &y0)) {
            grad_values[i] = 0;
            continue;
        }
        load_corners(grad_output + (n * C + c) * H * W, x0, y0, H, W, g);
        grad_values[i] = (1 - ax) * (1 - ay) * g[0] + ax * (1 - ay) * g[1]
                       + (1 - ax) * ay * g[2] + ax * ay * g[3];
    }
}

// d loss / d flow[n, :, y, x] = sum over channels of v * d(weights)/d(x, y) . g.
extern "C" __global__ void splat_backward_flow(
    const scalar_t* __restrict__ grad_output, const scalar_t* __restrict__ values,
    const scalar_t* __restrict__ flow, scalar_t* __restrict__ grad_flow,
    const long long N, const long long C, const long long H, const long long W)
{
    const long long total = N * H * W;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)blockDim.x * gridDim.x) {
        const long long x = i % W;
        const long long y = (i / W) % H;
        const long long n = i / (W * H);
        scalar_t ax, ay, g[4];
        long long x0, y0;
        scalar_t gx = 0, gy = 0;
        if (source_target(flow, n, y, x, H, W, &ax, &ay, &x0, &y0)) {
            for (long long c = 0; c < C; ++c) {
                load_corners(grad_output + (n * C + c) * H * W, x0, y0, H, W, g);
                const scalar_t v = values[((n * C + c) * H + y) * W + x];
                gx += v * ((1 - ay) * (g[1] - g[0]) + ay * (g[3] - g[2]));
                gy += v * ((1 - ax) * (g[2] - g[0]) + ax * (g[3] - g[1]));
            }
        }
        grad_flow[((n * 2 + 0) * H + y) * W + x] = gx;
        grad_flow[((n * 2 + 1) * H + y) * W + x] = gy;
    }
}
"""

_CTYPES = {torch.float32: "float", torch.float64: "double"}


def is_available() -> bool:
    """True when CuPy imports and PyTorch sees a CUDA device."""
    return cupy is not None and torch.cuda.is_available()


def unavailable_reason() -> str:
    """Why :func:`is_available` is False (empty string when it is True)."""
    if cupy is None:
        return _IMPORT_ERROR
    if not torch.cuda.is_available():
        return "PyTorch sees no CUDA device"
    return ""


@functools.cache
def _module(dtype: torch.dtype):
    """The compiled kernels for one dtype (CuPy compiles lazily, once per device)."""
    source = f"typedef {_CTYPES[dtype]} scalar_t;\n" + _KERNELS
    return cupy.RawModule(code=source, options=("--std=c++14",))


def _launch(name: str, work_items: int, tensors: list[torch.Tensor], sizes: tuple) -> None:
    """Run kernel `name` over `work_items` threads on PyTorch's current stream."""
    if work_items == 0:
        return
    device = tensors[0].device
    kernel = _module(tensors[0].dtype).get_function(name)
    blocks = min((work_items + _THREADS - 1) // _THREADS, 65535 * 32)
    stream = torch.cuda.current_stream(device)
    with cupy.cuda.Device(device.index), cupy.cuda.ExternalStream(stream.cuda_stream):
        arrays = [cupy.from_dlpack(t.detach()) for t in tensors]
        kernel((blocks,), (_THREADS,), (*arrays, *(np.int64(s) for s in sizes)))


def _check() -> None:
    if not is_available():
        raise RuntimeError(f"splatting.cupy_kernel: {unavailable_reason()}")


def splat_forward(values: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """S[v]: values (N, C, H, W), flow (N, 2, H, W), CUDA float32/64 -> (N, C, H, W)."""
    _check()
    values, flow = values.contiguous(), flow.contiguous()
    output = torch.zeros_like(values)
    _launch("splat_forward", values.numel(), [values, flow, output], values.shape)
    return output


def splat_backward(
    grad: torch.Tensor,
    values: torch.Tensor | None,
    flow: torch.Tensor,
    need_values: bool,
    need_flow: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of S[v] w.r.t. values and flow given dL/dS (N, C, H, W).

    ``values`` is only read (and may be None) when ``need_flow`` is False.
    """
    _check()
    grad, flow = grad.contiguous(), flow.contiguous()
    n, _, h, w = grad.shape
    grad_values = grad_flow = None
    if need_values:
        grad_values = torch.empty_like(grad)
        _launch("splat_backward_values", grad.numel(), [grad, flow, grad_values], grad.shape)
    if need_flow:
        grad_flow = torch.empty_like(flow)
        _launch(
            "splat_backward_flow",
            n * h * w,
            [grad, values.contiguous(), flow, grad_flow],
            grad.shape,
        )
    return grad_values, grad_flow
