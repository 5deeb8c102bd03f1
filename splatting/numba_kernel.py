"""Fused CPU kernels for softmax splatting, compiled with numba.

The PyTorch backend of :mod:`splatting.softsplat` needs ~25 tensor operations per frame
(index arithmetic, an ``index_add_`` scatter, the normalisation); at 256x160 their fixed
overhead and their passes over memory cost more than the arithmetic. Here the whole
forward pass of every mode (weights, bilinear scatter, normalisation) and the whole
backward pass are single compiled loops over the pixels, computing the same maths as the
PyTorch backend (see :func:`splatting.softsplat.softsplat` for the definitions):

* ``forward``: soft weights e = exp(Z - m) with m the per-image maximum of the finite Z
  (and its first argmax), the splatted sums S[w I] and S[w], and
  O = S[w I] * (1 / S[w]) where S[w] > tiny (|S[w]| for ``linear``), else 0;
* ``backward``: the gradients with respect to the input, the flow and the weight w (the
  last is turned into the metric's gradient by :mod:`splatting.softsplat`, shared with
  the other backends).

Parallel work is split so that no two threads write the same value: the scatter over
(image, group of channels) tasks, the gathers of the backward over (image, block of rows).
Compiled once per dtype (float32, float64) and cached on disk (``cache=True``), so only
the first call of a fresh install pays the compilation (tens of seconds).

This module imports without numba; :func:`is_available` says whether it can run.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

try:  # numba is optional: without it softsplat uses its PyTorch backend.
    import numba
    from numba import prange
except Exception as error:  # ImportError, or an llvmlite that fails to load
    numba = None
    prange = range
    _IMPORT_ERROR = f"numba is not importable ({type(error).__name__}: {error})"
else:
    _IMPORT_ERROR = ""

DTYPES = (torch.float32, torch.float64)

# Mode codes shared with the kernels.
_MODE_CODES = {"sum": 0, "avg": 1, "linear": 2, "soft": 3}


def is_available() -> bool:
    """Whether numba imports (the kernels compile at their first call)."""
    return numba is not None


def unavailable_reason() -> str:
    """Why :func:`is_available` is False ('' when it is True)."""
    return _IMPORT_ERROR


def _jit(parallel: bool = False):
    """numba.njit(cache=True, fastmath=False, parallel=...), or no-op without numba."""

    def decorate(function):
        if numba is None:
            return function
        return numba.njit(cache=True, fastmath=False, parallel=parallel)(function)

    return decorate


# --------------------------------------------------------------------------------------
# Kernels. Arrays are C-contiguous; an input or metric may hold 1 image for a batch of n
# (a broadcast photo): image i then reads image 0. Absent arrays are passed as empty
# arrays of the right rank, so each kernel compiles once per dtype.
# --------------------------------------------------------------------------------------


@_jit()
def _soft_weight_image(z, weight, argmax, i):
    """weight[i] = exp(z - m), m = max of the finite z (0 if none); argmax[i]: first
    index of m, or -1."""
    best = -np.inf
    arg = -1
    for j in range(z.shape[0]):
        if np.isfinite(z[j]) and z[j] > best:
            best = z[j]
            arg = j
    argmax[i] = arg
    shift = best if arg >= 0 else 0.0
    for j in range(z.shape[0]):
        weight[i, j] = np.exp(z[j] - z.dtype.type(shift))


@_jit(parallel=True)
def _soft_weight(metric, weight, argmax):
    """Soft weights of every image: metric (nZ, H*W), weight (n, H*W), argmax (n,) int64."""
    last = metric.shape[0] - 1
    for i in prange(weight.shape[0]):
        _soft_weight_image(metric[min(np.int64(i), last)], weight, argmax, i)


@_jit()
def _image_geometry(flow, i, first_row, last_row, row_length, offset, corner, inside, bilinear):
    """Where every source p of rows [first_row, last_row) of image i lands (arrays are
    indexed by p - first_row * W).

    corner[p] = y0 * row_length + x0 + offset, the top-left target corner (x0, y0) in a
    plane of that row length (W, or W + 2 for a padded one); inside[p]: bits 1, 2,
    4, 8 set for the corners (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1) that are in
    the frame (0: the source touches no pixel, e.g. non-finite flow); bilinear (6, H*W):
    the four corner weights, then the fractions ax, ay.
    """
    height, width = flow.shape[2], flow.shape[3]
    for y in range(first_row, last_row):
        for x in range(width):
            p = (y - first_row) * width + x
            fx = flow[i, 0, y, x]
            fy = flow[i, 1, y, x]
            inside[p] = 0
            corner[p] = 0
            if not (np.isfinite(fx) and np.isfinite(fy)):
                continue
            tx = x + fx
            ty = y + fy
            x0f = np.floor(tx)
            y0f = np.floor(ty)
            if not (x0f >= -1 and x0f <= width - 1 and y0f >= -1 and y0f <= height - 1):
                continue
            x0 = int(x0f)
            y0 = int(y0f)
            corner[p] = y0 * row_length + x0 + offset
            bits = 0
            if y0 >= 0:
                bits |= (1 if x0 >= 0 else 0) | (2 if x0 + 1 < width else 0)
            if y0 + 1 < height:
                bits |= (4 if x0 >= 0 else 0) | (8 if x0 + 1 < width else 0)
            inside[p] = bits
            ax = tx - x0f
            ay = ty - y0f
            bx = 1 - ax
            by = 1 - ay
            bilinear[0, p] = by * bx
            bilinear[1, p] = by * ax
            bilinear[2, p] = ay * bx
            bilinear[3, p] = ay * ax
            bilinear[4, p] = ax
            bilinear[5, p] = ay


@_jit()
def _splat_plane(values, scale, corner, inside, bilinear, width, target):
    """target (H*W) += bilinear splat of values * scale (each (H*W), or empty: 1)."""
    for p in range(corner.shape[0]):
        bits = inside[p]
        if bits == 0:
            continue
        if values.shape[0] > 0:
            value = values[p] * scale[p] if scale.shape[0] > 0 else values[p]
        else:
            value = scale[p] if scale.shape[0] > 0 else target.dtype.type(1)
        q = corner[p]
        if bits == 15:
            target[q] += value * bilinear[0, p]
            target[q + 1] += value * bilinear[1, p]
            target[q + width] += value * bilinear[2, p]
            target[q + width + 1] += value * bilinear[3, p]
            continue
        if bits & 1:
            target[q] += value * bilinear[0, p]
        if bits & 2:
            target[q + 1] += value * bilinear[1, p]
        if bits & 4:
            target[q + width] += value * bilinear[2, p]
        if bits & 8:
            target[q + width + 1] += value * bilinear[3, p]


@_jit(parallel=True)
def _forward(input, flow, weight, mode, want_den, groups, output, den, inverse):
    """Splat then normalise.

    input (nI, C, H*W); flow (n, 2, H, W); weight (nW, H*W) (nW = 0: w = 1); output
    (n, C, H*W) and den (n, H*W) zero-filled (den used when want_den); inverse (n, H*W)
    or empty (0, H*W).
    """
    n, _, height, width = flow.shape
    channels = input.shape[1]
    size = height * width
    per_group = (channels + groups - 1) // groups
    empty = output[0, 0, :0]
    # Pass 1: summation splatting, one task per (image, group of channels); group 0 also
    # splats the weight channel. No two tasks write the same plane.
    for task in prange(n * groups):
        i = task // groups
        group = task % groups
        first = group * per_group
        last = min(channels, first + per_group)
        image = input[min(np.int64(i), input.shape[0] - 1)]
        scale = weight[min(np.int64(i), weight.shape[0] - 1)] if weight.shape[0] > 0 else empty
        corner = np.empty(size, np.int64)
        inside = np.empty(size, np.uint8)
        bilinear = np.empty((6, size), output.dtype)
        _image_geometry(flow, i, 0, height, width, 0, corner, inside, bilinear)
        for c in range(first, last):
            _splat_plane(image[c], scale, corner, inside, bilinear, width, output[i, c])
        if group == 0 and want_den:
            _splat_plane(empty, scale, corner, inside, bilinear, width, den[i])
    if mode == 0:
        return
    # Pass 2: O = S[wI] * inv, inv = 1 / S[w] where S[w] > tiny (|S[w]| for linear),
    # else 0. inv is rounded to the dtype (as in the PyTorch backend) through a buffer.
    tiny = np.finfo(output.dtype).tiny
    for task in prange(n * height):
        i = task // height
        start = (task % height) * width
        inv = np.empty(width, output.dtype)
        for x in range(width):
            d = den[i, start + x]
            inv[x] = 1 / d if (abs(d) > tiny if mode == 2 else d > tiny) else 0
        if inverse.shape[0] > 0:
            inverse[i, start : start + width] = inv
        for c in range(channels):
            for x in range(width):
                output[i, c, start + x] *= inv[x]


@_jit(parallel=True)
def _backward(
    grad_output,
    grad_weight_sum,
    input,
    flow,
    weight,
    output,
    inverse,
    mode,
    stacked,
    blocks,
    need_input,
    need_flow,
    need_weight,
    grad_input,
    grad_flow,
    grad_weight,
    g_den,
):
    """Gradients of the forward pass for the output gradient g (see softsplat.py).

    grad_output, output (n, C, H*W); grad_weight_sum (n, H*W) the gradient of the
    returned S[w], or empty; input (nI, C, H*W); flow (n, 2, H, W); weight (nW, H*W) or
    empty (w = 1); inverse (n, H*W) (empty for sum). Writes grad_input (n, C, H*W),
    grad_flow (n, 2, H*W), grad_weight (n, H*W) (d/dw, before the soft chain rule) where
    asked; g_den (n, H*W) is scratch. Gathers only: tasks are (image, block of rows).
    """
    n, _, height, width = flow.shape
    channels = input.shape[1]
    normalised = mode != 0
    # Pass 1: d/dS[w] at every target: -sum_c g O inv (+ the returned weight's gradient).
    if stacked:
        for task in prange(n * height):
            i = task // height
            start = (task % height) * width
            for t in range(start, start + width):
                total = 0.0
                if normalised:
                    for c in range(channels):
                        total += grad_output[i, c, t] * output[i, c, t]
                    total = -(total * inverse[i, t])
                if grad_weight_sum.shape[0] > 0:
                    total += grad_weight_sum[i, t]
                g_den[i, t] = total
    # Pass 2: gather at the four corners of every source.
    rows_per_block = (height + blocks - 1) // blocks
    for task in prange(n * blocks):
        i = task // blocks
        first_row = (task % blocks) * rows_per_block
        last_row = min(height, first_row + rows_per_block)
        if first_row >= last_row:
            continue
        p0 = first_row * width
        m = (last_row - first_row) * width
        corner = np.empty(m, np.int64)
        inside = np.empty(m, np.uint8)
        bilinear = np.empty((6, m), output.dtype)
        # Indices into a plane padded by one zero pixel on every side: corners out of the
        # frame read 0, so the gathers need no per-corner tests.
        padded_width = width + 2
        _image_geometry(
            flow, i, first_row, last_row, padded_width, padded_width + 1, corner, inside, bilinear
        )
        padded = np.zeros((height + 2) * padded_width, output.dtype)
        sums = np.zeros((4, m), output.dtype)  # s_k = sum_c v_c d/dS_c at corner k
        d_weight = np.zeros(m, output.dtype)
        image = input[min(np.int64(i), input.shape[0] - 1)]
        w = weight[min(np.int64(i), weight.shape[0] - 1)] if weight.shape[0] > 0 else g_den[0, :0]
        for c in range(channels + (1 if stacked else 0)):
            is_den = c == channels
            # The plane gathered from: d/dS[w] or d/dS[wI] = g * inv (g for sum).
            for y in range(height):
                row = (y + 1) * padded_width + 1
                for x in range(width):
                    t = y * width + x
                    if is_den:
                        padded[row + x] = g_den[i, t]
                    elif normalised:
                        padded[row + x] = grad_output[i, c, t] * inverse[i, t]
                    else:
                        padded[row + x] = grad_output[i, c, t]
            for k in range(m):
                p = p0 + k
                if inside[k] == 0:
                    if need_input and not is_den:
                        grad_input[i, c, p] = 0
                    continue
                q = corner[k]
                g00 = padded[q]
                g10 = padded[q + 1]
                g01 = padded[q + padded_width]
                g11 = padded[q + padded_width + 1]
                gathered = (bilinear[0, k] * g00 + bilinear[1, k] * g10) + (
                    bilinear[2, k] * g01 + bilinear[3, k] * g11
                )
                if is_den:
                    value = w[p] if w.shape[0] > 0 else 1.0
                    d_weight[k] += gathered
                else:
                    source = image[c, p]
                    value = source * w[p] if w.shape[0] > 0 else source
                    if need_input:
                        grad_input[i, c, p] = gathered * w[p] if w.shape[0] > 0 else gathered
                    if need_weight:
                        d_weight[k] += gathered * source
                if need_flow:
                    sums[0, k] += value * g00
                    sums[1, k] += value * g10
                    sums[2, k] += value * g01
                    sums[3, k] += value * g11
        for k in range(m):
            p = p0 + k
            if need_weight:
                grad_weight[i, p] = d_weight[k]
            if need_flow:
                ax = bilinear[4, k]
                ay = bilinear[5, k]
                if inside[k] == 0:
                    grad_flow[i, 0, p] = 0
                    grad_flow[i, 1, p] = 0
                    continue
                s00, s10, s01, s11 = sums[0, k], sums[1, k], sums[2, k], sums[3, k]
                grad_flow[i, 0, p] = (s10 - s00) * (1 - ay) + (s11 - s01) * ay
                grad_flow[i, 1, p] = (s01 - s00) * (1 - ax) + (s11 - s10) * ax


# --------------------------------------------------------------------------------------
# Entry points on torch tensors (CPU, float32/float64), used by splatting.softsplat.
# --------------------------------------------------------------------------------------


def _array(tensor: torch.Tensor, rows: int) -> np.ndarray:
    """C-contiguous numpy view of a (N, C, H, W) tensor as (N', C, H*W), N' = 1 for a
    batch broadcast along dim 0 (stride 0, not copied), else N; rows: C."""
    if tensor.shape[0] > 1 and tensor.stride(0) == 0:
        tensor = tensor[:1]
    tensor = tensor.detach().contiguous()
    return tensor.numpy().reshape(tensor.shape[0], rows, tensor.shape[2] * tensor.shape[3])


def _respect_torch_threads(function):
    """Run a kernel with as many numba threads as PyTorch uses, and leave PyTorch's count as
    it was: starting numba's OpenMP pool resets the process-wide OpenMP thread count, which
    silently gave a caller who had set ``torch.set_num_threads(1)`` two threads again (and
    a many-fold slowdown on a busy machine)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        torch_threads = torch.get_num_threads()
        numba.set_num_threads(max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS)))
        try:
            return function(*args, **kwargs)
        finally:
            if torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)

    return wrapper


def _tasks(n: int) -> int:
    """Tasks per image so that a small batch still gives every thread work."""
    return max(1, -(-numba.get_num_threads() // n))


@_respect_torch_threads
def forward(
    input: torch.Tensor,
    flow: torch.Tensor,
    metric: torch.Tensor | None,
    mode: str,
    return_weight: bool,
    keep_inverse: bool,
    need_argmax: bool,
):
    """The forward pass of :func:`splatting.softsplat.softsplat` in one compiled kernel.

    Args:
        input: (N, C, H, W); flow: (N, 2, H, W); metric: (N, 1, H, W) or None; all CPU,
            one dtype of :data:`DTYPES` (the caller checks).
        mode: "sum" | "avg" | "linear" | "soft".
        return_weight: also compute S[w] (N, 1, H, W).
        keep_inverse: also return 1/S[w] (0 at holes), (N, 1, H, W), for the backward.
        need_argmax: soft only: return the argmax of the finite Z per image.

    Returns:
        output (N, C, H, W), S[w] or None, inverse or None, the weight w (N, 1, H, W)
        (Z for linear, exp(Z - m) for soft, None for sum/avg), argmax (N,) int64 or None.
    """
    n, c, h, w = input.shape
    dtype = input.dtype
    flow_array = flow.detach().contiguous().numpy()
    weight = argmax = None
    if mode == "linear":
        weight = metric
    elif mode == "soft":
        weight = torch.empty(n, 1, h, w, dtype=dtype)
        argmax_out = torch.empty(n, dtype=torch.int64)
        _soft_weight(_array(metric, 1)[:, 0], weight.numpy().reshape(n, h * w), argmax_out.numpy())
        argmax = argmax_out if need_argmax else None
    want_den = mode != "sum" or return_weight
    output = torch.zeros(n, c, h, w, dtype=dtype)
    den = torch.zeros(n, 1, h, w, dtype=dtype) if want_den else torch.empty(0, 1, h, w, dtype=dtype)
    inverse = torch.empty((n if keep_inverse else 0), 1, h, w, dtype=dtype)
    weight_array = (
        _array(weight, 1)[:, 0] if weight is not None else np.empty((0, h * w), flow_array.dtype)
    )
    _forward(
        _array(input, c),
        flow_array,
        weight_array,
        _MODE_CODES[mode],
        want_den,
        min(c, _tasks(n)),
        output.numpy().reshape(n, c, h * w),
        den.numpy().reshape(den.shape[0], h * w),
        inverse.numpy().reshape(inverse.shape[0], h * w),
    )
    return (
        output,
        den if return_weight else None,
        inverse if keep_inverse else None,
        weight,
        argmax,
    )


@_respect_torch_threads
def backward(
    grad_output: torch.Tensor,
    grad_weight_sum: torch.Tensor | None,
    input: torch.Tensor,
    flow: torch.Tensor,
    weight: torch.Tensor | None,
    output: torch.Tensor,
    inverse: torch.Tensor | None,
    mode: str,
    stacked: bool,
    need_input: bool,
    need_flow: bool,
    need_weight: bool,
):
    """Gradients for input (N, C, H, W), flow (N, 2, H, W) and the weight w (N, 1, H, W)
    (d/dw: the caller applies the soft chain rule), None where not needed.

    grad_weight_sum: gradient of the returned S[w] (None if not returned or unused);
    stacked: whether S[w] was splatted (mode != sum or it was returned).
    """
    n, c, h, w = input.shape
    dtype = input.dtype
    empty = np.empty((0, h * w), dtype=flow.detach().numpy().dtype)
    grad_input = torch.empty(n, c, h, w, dtype=dtype) if need_input else None
    grad_flow = torch.empty(n, 2, h, w, dtype=dtype) if need_flow else None
    grad_weight = torch.empty(n, 1, h, w, dtype=dtype) if need_weight else None
    g_den = np.empty((n if stacked else 0, h * w), dtype=empty.dtype)
    _backward(
        grad_output.detach().contiguous().numpy().reshape(n, c, h * w),
        grad_weight_sum.detach().contiguous().numpy().reshape(n, h * w)
        if grad_weight_sum is not None
        else empty,
        _array(input, c),
        flow.detach().contiguous().numpy(),
        _array(weight, 1)[:, 0] if weight is not None else empty,
        output.detach().numpy().reshape(n, c, h * w),
        inverse.numpy().reshape(n, h * w) if inverse is not None else empty,
        _MODE_CODES[mode],
        stacked,
        _tasks(n),
        need_input,
        need_flow,
        need_weight,
        grad_input.numpy().reshape(n, c, h * w)
        if need_input
        else np.empty((0, c, h * w), empty.dtype),
        grad_flow.numpy().reshape(n, 2, h * w)
        if need_flow
        else np.empty((0, 2, h * w), empty.dtype),
        grad_weight.numpy().reshape(n, h * w) if need_weight else empty,
        g_den,
    )
    return grad_input, grad_flow, grad_weight
