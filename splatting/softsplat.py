"""Softmax splatting (Niklaus & Liu, CVPR 2020): differentiable forward warping.

Our own implementation (the reference code's licence is academic-only; none of it is
used here). One public function, :func:`softsplat`, with the four modes of the paper and
two backends that compute the same thing:

* ``"torch"``: pure PyTorch (``index_add_`` / ``index_select`` on flattened indices, a
  hand-written backward), runs on CPU, CUDA and MPS;
* ``"cupy"``: CUDA kernels compiled with CuPy (:mod:`splatting.cupy_kernel`), used
  automatically for CUDA tensors when CuPy is importable;
* ``"numba"``: fused CPU kernels compiled with numba (:mod:`splatting.numba_kernel`),
  used automatically for CPU float32/float64 tensors when numba is importable.

The torch and CuPy backends implement only the core operation, *summation splatting* of
a stack of channels, forward and backward; the four modes, their normalisation and its
gradient are written once, here, in one ``torch.autograd.Function`` (:class:`_Softsplat`):
a hand-written backward makes far fewer passes over memory than composed autograd ops.
The numba backend fuses the modes into its kernels (the per-call overhead of tensor
operations is what it removes) and plugs into the same Function; it is tested against
the torch backend, forward and every gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch

from splatting import cupy_kernel, numba_kernel

MODES = ("sum", "avg", "linear", "soft")
BACKENDS = ("auto", "torch", "cupy", "numba")

# The splatting target is padded by 2 pixels on every side. A source whose bilinear
# footprint misses the frame has its top-left corner clamped into the outer padding ring,
# so all four of its corners land in padding that is cropped away: no per-corner masks.
_PAD = 2

# The torch backend processes the batch in chunks of about this many values (channels x
# pixels, at least one image per chunk) so that the working set stays in the CPU caches:
# in development, a whole 150-frame clip at once was several times slower per frame, and
# one 256x160 frame per chunk was the fastest setting.
_CHUNK_ELEMENTS = 1 << 18


def softsplat(
    input: torch.Tensor,
    flow: torch.Tensor,
    metric: torch.Tensor | None = None,
    mode: str = "soft",
    *,
    backend: str = "auto",
    return_weight: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Forward-warp ``input`` by ``flow`` with bilinear splatting.

    Every source pixel :math:`p` (integer coordinates) is moved to :math:`q = p + F(p)`
    and its value is distributed to the four integer pixels :math:`t` around :math:`q`
    with the bilinear weights :math:`b(t, q) = \max(0, 1-|t_x-q_x|)\,\max(0, 1-|t_y-q_y|)`.
    With a per-pixel weight :math:`w(p)` the splatted sums are

    .. math::
        S[v](t) = \sum_p b(t, p + F(p))\, v(p),

    and the modes are

    * ``sum``:    :math:`O = S[I]` (no normalisation; holes are 0);
    * ``avg``:    :math:`O = S[I] / S[1]`;
    * ``linear``: :math:`O = S[Z I] / S[Z]` (weights :math:`w = Z`, the metric);
    * ``soft``:   :math:`O = S[e^{Z} I] / S[e^{Z}]` (softmax weights: where several
      sources land on one pixel, the larger :math:`Z` wins).

    Targets outside the frame are dropped. Source pixels with a non-finite flow
    (NaN/inf in either component) contribute nothing.

    Numerical safety:

    * ``soft`` computes :math:`e^{Z - m}` with :math:`m` the maximum of the finite
      :math:`Z` of each image. :math:`e^{-m}` cancels exactly between numerator and
      denominator, so the result is unchanged and :math:`e^{Z}` cannot overflow for any
      :math:`Z` (1e4 is fine). Trade-off: a source whose :math:`Z` is far below the image's
      maximum (more than ~87 in float32, ~708 in float64) gets weight 0 by underflow; if it
      was the only source of a pixel, that pixel becomes a hole. A per-target maximum would
      avoid this but costs another scatter pass. :math:`m` is not detached, so the
      gradient of the returned weight (below) is exact; through the output it cancels.
      ``metric = -inf`` in soft mode means weight 0.
    * The division is done only where :math:`|S[w]| >` ``torch.finfo(dtype).tiny``
      (smallest normal number); elsewhere the output is 0. Legitimately small weights
      (a bilinear weight of 1e-6) are divided exactly, not swamped by an epsilon.
    * ``linear`` expects a non-negative metric; with mixed signs the denominator can
      cancel and the ratio is then ill-conditioned (as it is mathematically).

    Args:
        input: (N, C, H, W) floating tensor, any C >= 1.
        flow: (N, 2, H, W) forward displacement in pixels; channel 0 = x (right),
            channel 1 = y (down). Same dtype and device as ``input``.
        metric: (N, 1, H, W) the :math:`Z` of ``linear`` and ``soft``; must be None for
            ``sum`` and ``avg``.
        mode: one of ``"sum"``, ``"avg"``, ``"linear"``, ``"soft"``.
        backend: ``"auto"`` (CuPy kernels for CUDA float32/float64 tensors when CuPy is
            importable, numba kernels for CPU float32/float64 tensors when numba is
            importable, else PyTorch), ``"torch"``, ``"cupy"`` or ``"numba"`` (error if
            unavailable).
        return_weight: also return the splatted weight :math:`S[w]` (N, 1, H, W), with
            :math:`w` = 1 for ``sum`` and ``avg``, :math:`Z` for ``linear`` and
            :math:`e^{Z-m}` for ``soft`` (so in soft mode it is scaled per image by
            :math:`e^{-m}`). Pixels where :func:`hole_mask` of it is True received no
            source and are 0 in the output.

    Returns:
        (N, C, H, W) tensor, or ``(output, weight)`` when ``return_weight``.

    Raises:
        ValueError: on a bad mode/backend, mismatched shapes, dtypes or devices.
        RuntimeError: ``backend="cupy"`` when CuPy or CUDA is unavailable,
            ``backend="numba"`` when numba is not importable or the tensors are not CPU
            float32/float64.
    """
    _check_arguments(input, flow, metric, mode, backend)
    implementation = _select_backend(input, backend)
    result = _Softsplat.apply(input, flow, metric, mode, return_weight, implementation)
    return tuple(result) if return_weight else result


def hole_mask(weight: torch.Tensor) -> torch.Tensor:
    """Where no source landed: ``|weight| <= finfo.tiny``, for the weight of :func:`softsplat`.

    Args:
        weight: (N, 1, H, W) splatted weight from ``softsplat(..., return_weight=True)``.

    Returns:
        Boolean tensor of the same shape, True at holes (output there is 0).
    """
    return weight.abs() <= torch.finfo(weight.dtype).tiny


def _check_arguments(
    input: torch.Tensor,
    flow: torch.Tensor,
    metric: torch.Tensor | None,
    mode: str,
    backend: str,
) -> None:
    if mode not in MODES:
        raise ValueError(f"softsplat: mode must be one of {MODES}, got {mode!r}")
    if backend not in BACKENDS:
        raise ValueError(f"softsplat: backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(input, torch.Tensor) or input.dim() != 4:
        raise ValueError(f"softsplat: input must be a (N, C, H, W) tensor, got {_describe(input)}")
    n, _, h, w = input.shape
    if not isinstance(flow, torch.Tensor) or tuple(flow.shape) != (n, 2, h, w):
        raise ValueError(
            f"softsplat: flow must have shape (N, 2, H, W) = {(n, 2, h, w)} to match input, "
            f"got {_describe(flow)}"
        )
    if not input.is_floating_point():
        raise ValueError(f"softsplat: input must be a floating tensor, got {input.dtype}")
    tensors = [("flow", flow)]
    if mode in ("linear", "soft"):
        if metric is None:
            raise ValueError(f"softsplat: mode {mode!r} needs a metric of shape (N, 1, H, W)")
        if not isinstance(metric, torch.Tensor) or tuple(metric.shape) != (n, 1, h, w):
            raise ValueError(
                f"softsplat: metric must have shape (N, 1, H, W) = {(n, 1, h, w)}, "
                f"got {_describe(metric)}"
            )
        tensors.append(("metric", metric))
    elif metric is not None:
        raise ValueError(f"softsplat: mode {mode!r} takes no metric (only 'linear' and 'soft' do)")
    for name, tensor in tensors:
        if tensor.dtype != input.dtype or tensor.device != input.device:
            raise ValueError(
                f"softsplat: {name} must have the dtype and device of input "
                f"({input.dtype}, {input.device}), got ({tensor.dtype}, {tensor.device})"
            )


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"


class _Backend(NamedTuple):
    """Summation splatting S[v] of values (n, C, H, W) by flow (n, 2, H, W), both ways.

    forward(values, flow) -> S (n, C, H, W), possibly a strided view;
    backward(grad_S, values, flow, need_values, need_flow) -> (grad_values | None,
    grad_flow | None); chunked: whether to feed the batch a few images at a time;
    fused: the modes are computed by the backend itself (numba_kernel.forward/backward
    replace the generic code of _Softsplat).
    """

    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    backward: Callable[..., tuple[torch.Tensor | None, torch.Tensor | None]] | None
    chunked: bool
    fused: bool = False


def _select_backend(input: torch.Tensor, backend: str) -> _Backend:
    torch_backend = _Backend(_torch_splat_forward, _torch_splat_backward, chunked=True)
    if backend == "torch":
        return torch_backend
    numba_backend = _Backend(None, None, chunked=False, fused=True)
    numba_usable = input.device.type == "cpu" and input.dtype in numba_kernel.DTYPES
    if input.numel() == 0 and backend == "auto":
        numba_usable = False  # nothing to compute; the torch path handles empty batches
    if backend == "numba":
        if not numba_kernel.is_available():
            raise RuntimeError(
                f"softsplat: backend='numba' but {numba_kernel.unavailable_reason()}; "
                "install it (pip install numba) or use backend='torch'"
            )
        if not numba_usable:
            raise RuntimeError(
                "softsplat: backend='numba' needs CPU float32/float64 tensors, got "
                f"{input.dtype} on {input.device}"
            )
        return numba_backend
    cupy_backend = _Backend(cupy_kernel.splat_forward, cupy_kernel.splat_backward, chunked=False)
    cupy_usable = input.is_cuda and input.dtype in (torch.float32, torch.float64)
    if backend == "cupy":
        if not cupy_kernel.is_available():
            raise RuntimeError(f"softsplat: backend='cupy' but {cupy_kernel.unavailable_reason()}")
        if not cupy_usable:
            raise RuntimeError(
                "softsplat: backend='cupy' needs CUDA float32/float64 tensors, got "
                f"{input.dtype} on {input.device}"
            )
        return cupy_backend
    if cupy_usable and cupy_kernel.is_available():
        return cupy_backend
    if numba_usable and numba_kernel.is_available():
        return numba_backend
    return torch_backend


# --------------------------------------------------------------------------------------
# The modes on top of summation splatting, with their gradient.
#
# With weight w (1 for sum/avg, Z for linear, e = exp(Z - m) for soft) the splatted stack
# is S = [S[w I], S[w]] = [num, den]; the output is num * inv with inv = 1/den where
# |den| > tiny, else 0 (sum: num). Backward, for the output gradient g:
#   d/d num = g * inv,   d/d den = -sum_c(g * out) * inv   (= -num / den^2, dotted with g)
#   then through S (backend.backward) to d/d[w I] and d/d w, and
#   d/d I = w * d/d[w I],   d/d w = sum_c I * d/d[w I] + d/d w|direct,
#   linear: d/dZ = d/dw;    soft: d/dZ = e * d/dw, and m = max Z adds -sum(d/dZ) at the
#   argmax (zero for the output, which does not depend on m; not for the weight).
# --------------------------------------------------------------------------------------


def _chunks(backend: _Backend, n: int, elements_per_image: int) -> list[tuple[int, int]]:
    if not backend.chunked:
        return [(0, n)]
    step = max(1, _CHUNK_ELEMENTS // max(1, elements_per_image))
    return [(start, min(n, start + step)) for start in range(0, n, step)]


def _stack_values(input: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """[w * I, w] as (n, C+1, H, W); w = 1 where weight is None."""
    n, c, h, w = input.shape
    values = input.new_empty(n, c + 1, h, w)
    if weight is None:
        values[:, :c] = input
        values[:, c] = 1.0
    else:
        torch.mul(input, weight, out=values[:, :c])
        values[:, c:] = weight
    return values


class _Softsplat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, flow, metric, mode, return_weight, backend):
        n, c, h, w = input.shape
        flow = flow.contiguous()  # input may stay strided (an expanded photo is not copied)
        if backend.fused:
            keep_inverse = mode != "sum" and any(ctx.needs_input_grad[:3])
            output, denominator, inverse, weight, argmax = numba_kernel.forward(
                input, flow, metric, mode, return_weight, keep_inverse, ctx.needs_input_grad[2]
            )
            ctx.mode, ctx.return_weight, ctx.backend = mode, return_weight, backend
            ctx.save_for_backward(input, flow, weight, argmax, output, inverse)
            return (output, denominator) if return_weight else output
        # Per-image weight w (None: all ones); for soft, m = max of the finite Z and, if
        # the metric's gradient is wanted, its argmax (-1 for an image without finite Z).
        weight = argmax = None
        if mode == "linear":
            weight = metric
        elif mode == "soft":
            finite = torch.nan_to_num(metric, nan=-torch.inf, posinf=-torch.inf).view(n, -1)
            z_max = finite.amax(dim=1)
            if ctx.needs_input_grad[2]:
                argmax = torch.where(torch.isinf(z_max), -1, finite.argmax(dim=1))
            z_max = torch.nan_to_num(z_max, neginf=0.0)
            weight = torch.exp(metric - z_max.view(n, 1, 1, 1))

        stacked = mode != "sum" or return_weight  # is the weight channel splatted?
        keep_inverse = mode != "sum" and any(ctx.needs_input_grad[:3])
        output = torch.empty_like(input)
        denominator = input.new_empty(n, 1, h, w) if return_weight else None
        inverse = input.new_empty(n, 1, h, w) if keep_inverse else None
        for start, stop in _chunks(backend, n, (c + 1) * h * w):
            chunk = slice(start, stop)
            if not stacked:
                output[chunk] = backend.forward(input[chunk], flow[chunk])
                continue
            values = _stack_values(input[chunk], None if weight is None else weight[chunk])
            splatted = backend.forward(values, flow[chunk])
            den = splatted[:, c:]
            if return_weight:
                denominator[chunk] = den
            if mode == "sum":
                output[chunk] = splatted[:, :c]
                continue
            inv = torch.reciprocal(den, out=inverse[chunk] if keep_inverse else None)
            # avg and soft weights are positive: no need for |den| there.
            holes = hole_mask(den) if mode == "linear" else den <= torch.finfo(den.dtype).tiny
            torch.mul(splatted[:, :c], inv.masked_fill_(holes, 0.0), out=output[chunk])

        ctx.mode, ctx.return_weight, ctx.backend = mode, return_weight, backend
        ctx.save_for_backward(input, flow, weight, argmax, output, inverse)
        return (output, denominator) if return_weight else output

    @staticmethod
    def backward(ctx, grad_output, grad_denominator=None):
        input, flow, weight, argmax, output, inverse = ctx.saved_tensors
        mode, backend = ctx.mode, ctx.backend
        need_input, need_flow, need_metric = ctx.needs_input_grad[:3]
        n, c, h, w = input.shape
        stacked = mode != "sum" or ctx.return_weight
        if backend.fused:
            grad_input, grad_flow, grad_weight = numba_kernel.backward(
                grad_output,
                grad_denominator if ctx.return_weight else None,
                input,
                flow,
                weight,
                output,
                inverse,
                mode,
                stacked,
                need_input,
                need_flow,
                need_metric,
            )
        else:
            grad_input = torch.empty_like(input) if need_input else None
            grad_flow = torch.empty_like(flow) if need_flow else None
            grad_weight = input.new_empty(n, 1, h, w) if need_metric else None
            for start, stop in _chunks(backend, n, (c + 1) * h * w):
                chunk = slice(start, stop)
                g_out = grad_output[chunk]
                if not stacked:
                    g_values, g_flow = backend.backward(
                        g_out, input[chunk], flow[chunk], need_input, need_flow
                    )
                else:
                    g_stack = g_out.new_empty(stop - start, c + 1, h, w)
                    if mode == "sum":
                        g_stack[:, :c] = g_out
                        g_stack[:, c:] = grad_denominator[chunk]
                    else:
                        inv = inverse[chunk]
                        torch.mul(g_out, inv, out=g_stack[:, :c])
                        g_den = (
                            torch.sum(g_out * output[chunk], dim=1, keepdim=True).mul_(inv).neg_()
                        )
                        if ctx.return_weight:
                            g_den += grad_denominator[chunk]
                        g_stack[:, c:] = g_den
                    chunk_weight = None if weight is None else weight[chunk]
                    values = _stack_values(input[chunk], chunk_weight) if need_flow else None
                    g_values, g_flow = backend.backward(
                        g_stack, values, flow[chunk], need_input or need_metric, need_flow
                    )
                    if need_metric:  # d/dw = sum_c I * d/d[wI] + d/dw|direct
                        g_scaled = g_values[:, :c]
                        grad_weight[chunk] = (g_scaled * input[chunk]).sum(1, keepdim=True)
                        grad_weight[chunk] += g_values[:, c:]
                    g_values = g_values[:, :c] if need_input else None
                    if need_input and chunk_weight is not None:
                        g_values = g_values * chunk_weight
                if need_input:
                    grad_input[chunk] = g_values
                if need_flow:
                    grad_flow[chunk] = g_flow

        grad_metric = None
        if need_metric:
            grad_metric = grad_weight
            if mode == "soft":
                grad_metric = grad_weight.mul_(weight)
                # m = max Z: d/dm = -sum(d/dZ), added at the argmax of images that have one.
                has_max = argmax >= 0
                total = grad_metric.view(n, -1).sum(dim=1)
                flat = grad_metric.view(n, -1)
                rows = torch.arange(n, device=flat.device)[has_max]
                flat[rows, argmax[has_max]] -= total[has_max]
        return grad_input, grad_flow, grad_metric, None, None, None


# --------------------------------------------------------------------------------------
# PyTorch backend: summation splatting, forward and backward.
#
# Layout: values of a chunk of n images are viewed channel-major, (C, n*H*W), and the
# target is a padded buffer (C, n*Hp*Wp). The four corners of every source sit at index
# offsets 0, 1, Wp, Wp+1 from its top-left corner; forward is one index_add_ along dim 1
# of the weighted values (C, 4*n*H*W), backward gathers the output gradient at the same
# indices (index_select) and recombines it with the weights and their derivatives.
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _padded_grid(h: int, w: int, dtype: torch.dtype, device: torch.device):
    """(2, H, W) pixel coordinates x, y in the padded buffer; (2, 1, 1) largest corner."""
    gy, gx = torch.meshgrid(
        torch.arange(_PAD, h + _PAD, dtype=dtype, device=device),
        torch.arange(_PAD, w + _PAD, dtype=dtype, device=device),
        indexing="ij",
    )
    limit = torch.tensor([w + _PAD, h + _PAD], dtype=dtype, device=device).view(2, 1, 1)
    return torch.stack([gx, gy]), limit


def _geometry(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Top-left corner index, bilinear fractions and corner weights of every source pixel.

    Written with few, stacked operations: at 256x160 a PyTorch call's fixed overhead is
    about as large as its arithmetic.

    Args:
        flow: (n, 2, H, W), contiguous.

    Returns:
        base: (n*H*W,) int64 index of the top-left target corner in the padded
            (n, Hp, Wp) buffer;
        fraction: (n, 2, H, W) fractional parts of the target x and y, in [0, 1);
        weights: (4, n*H*W) bilinear weights of the corners (x0, y0), (x0+1, y0),
            (x0, y0+1), (x0+1, y0+1), at index offsets 0, 1, Wp, Wp+1 from base;
        Wp: padded row length.
    """
    n, _, h, w = flow.shape
    hp, wp = h + 2 * _PAD, w + 2 * _PAD
    grid, limit = _padded_grid(h, w, flow.dtype, flow.device)
    # Target coordinates in the padded buffer. Non-finite ones become 0: a corner at
    # (0, 0) and its neighbours are all padding, so those sources contribute nothing.
    target = torch.add(flow, grid).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    corner = target.floor()
    fraction = target.sub_(corner)
    # Clamping moves a corner that misses the frame by more than a pixel to the outer
    # padding ring; it then still misses the frame, and the weights are unchanged.
    corner = torch.minimum(corner.clamp_(min=0), limit)
    # Index arithmetic in floating point is exact below 2**24 (float32); else float64.
    if flow.dtype != torch.float64 and hp * wp >= 2**24:
        corner = corner.double()
    base = torch.add(corner[:, 0], corner[:, 1], alpha=wp).long().view(-1)
    if n > 1:
        offsets = torch.arange(n, device=flow.device).mul_(hp * wp)
        base = base.view(n, h * w).add_(offsets.unsqueeze(1)).view(-1)
    ax, ay = fraction[:, 0], fraction[:, 1]
    bx, by = 1.0 - ax, 1.0 - ay
    weights = flow.new_empty(4, n, h, w)
    for k, (wy, wx) in enumerate(((by, bx), (by, ax), (ay, bx), (ay, ax))):
        torch.mul(wy, wx, out=weights[k])
    return base, fraction, weights.view(4, -1), wp


@functools.lru_cache(maxsize=8)
def _corner_offsets(wp: int, device: torch.device) -> torch.Tensor:
    """(4, 1) index offsets of the corners (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1)."""
    return torch.tensor([[0], [1], [wp], [wp + 1]], device=device)


def _channel_major(values: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) -> (C, n*H*W), a view when n == 1."""
    n, c = values.shape[:2]
    return values.transpose(0, 1).reshape(c, -1) if n > 1 else values.reshape(c, -1)


def _torch_splat_forward(values: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """S[v]: (n, C, H, W) values, (n, 2, H, W) flow -> (n, C, H, W), a strided view."""
    n, c, h, w = values.shape
    base, _, weights, wp = _geometry(flow.contiguous())
    hp = h + 2 * _PAD
    # One index_add_ for all four corners: index (4*n*H*W,), values (C, 4*n*H*W).
    index = (base + _corner_offsets(wp, base.device)).view(-1)
    contributions = _channel_major(values).unsqueeze(1) * weights  # (C, 4, n*H*W)
    target = values.new_zeros(c, n * hp * wp)
    target.index_add_(1, index, contributions.view(c, -1))
    padded = target.view(c, n, hp, wp)
    return padded[:, :, _PAD : _PAD + h, _PAD : _PAD + w].transpose(0, 1)


def _torch_splat_backward(
    grad: torch.Tensor,
    values: torch.Tensor | None,
    flow: torch.Tensor,
    need_values: bool,
    need_flow: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of S[v] w.r.t. values (n, C, H, W) and flow (n, 2, H, W), given dL/dS."""
    n, c, h, w = grad.shape
    hp, wp = h + 2 * _PAD, w + 2 * _PAD
    base, fraction, weights, _ = _geometry(flow.contiguous())
    # The gradient arriving at each corner of each source: (C, 4, n*H*W).
    padded = grad.new_zeros(c, n, hp, wp)
    padded[:, :, _PAD : _PAD + h, _PAD : _PAD + w] = grad.transpose(0, 1)
    index = (base + _corner_offsets(wp, base.device)).view(-1)
    corner_grads = padded.view(c, -1).index_select(1, index).view(c, 4, -1)
    grad_values = grad_flow = None
    if need_values:  # sum over corners of weight * gradient
        grad_values = (corner_grads * weights).sum(1).view(c, n, h, w).transpose(0, 1)
    if need_flow:
        # s_k = sum_c v_c g_k,c per corner k; the x-derivatives of the corner weights give
        # d/dx = (1-ay)(s10 - s00) + ay(s11 - s01), and likewise for y.
        s00, s10, s01, s11 = (corner_grads * _channel_major(values).unsqueeze(1)).sum(0)
        ax, ay = fraction.transpose(0, 1).reshape(2, -1)  # views when n == 1
        dx = (s10 - s00).mul_(1.0 - ay).addcmul_(s11 - s01, ay)
        dy = (s01 - s00).mul_(1.0 - ax).addcmul_(s11 - s10, ax)
        grad_flow = torch.stack([dx, dy]).view(2, n, h, w).transpose(0, 1)
    return grad_values, grad_flow
