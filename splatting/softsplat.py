"""Softmax splatting (Niklaus & Liu, CVPR 2020): differentiable forward warping.

Our own implementation (the reference code's licence is academic-only; none of it is
used here). One public function, :func:`softsplat`, with the four modes of the paper and
two backends that compute the same thing:

* ``"torch"``: pure PyTorch (``index_add_`` / ``index_select`` on flattened indices, a
  hand-written backward), runs on CPU, CUDA and MPS;
* ``"cupy"``: CUDA kernels compiled with CuPy (:mod:`splatting.cupy_kernel`), used
  automatically for CUDA tensors when CuPy is importable.

Both backends implement only the core operation, *summation splatting* of a stack of
channels; the four modes are built on top of it here, in differentiable PyTorch, so the
modes' maths is written once.
"""

from __future__ import annotations

import torch

from splatting import cupy_kernel

MODES = ("sum", "avg", "linear", "soft")
BACKENDS = ("auto", "torch", "cupy")

# The splatting target is padded by 2 pixels on every side. A source whose bilinear
# footprint misses the frame has its top-left corner clamped into the outer padding ring,
# so all four of its corners land in padding that is cropped away: no per-corner masks.
_PAD = 2

# The torch backend processes the batch in chunks of about this many values (channels x
# pixels) so that the working set stays in the CPU caches (measured: 150 frames at once
# are ~4x slower per frame than chunks of a few frames).
_CHUNK_ELEMENTS = 1 << 19


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
            importable, else PyTorch), ``"torch"`` or ``"cupy"`` (error if unavailable).
        return_weight: also return the splatted weight :math:`S[w]` (N, 1, H, W), with
            :math:`w` = 1 for ``sum`` and ``avg``, :math:`Z` for ``linear`` and
            :math:`e^{Z-m}` for ``soft`` (so in soft mode it is scaled per image by
            :math:`e^{-m}`). Pixels where :func:`hole_mask` of it is True received no
            source and are 0 in the output.

    Returns:
        (N, C, H, W) tensor, or ``(output, weight)`` when ``return_weight``.

    Raises:
        ValueError: on a bad mode/backend, mismatched shapes, dtypes or devices.
        RuntimeError: ``backend="cupy"`` when CuPy or CUDA is unavailable.
    """
    _check_arguments(input, flow, metric, mode, backend)
    splat = _select_backend(input, backend)

    if mode == "sum" and not return_weight:
        return splat(input, flow)

    if mode in ("sum", "avg"):
        weight = torch.ones_like(input[:, :1])
        values = torch.cat([input, weight], dim=1)
    elif mode == "linear":
        values = torch.cat([input * metric, metric], dim=1)
    else:  # soft
        finite_metric = torch.nan_to_num(metric, nan=-torch.inf, posinf=-torch.inf)
        z_max = finite_metric.amax(dim=(1, 2, 3), keepdim=True)
        z_max = torch.nan_to_num(z_max, neginf=0.0)  # an image without any finite Z
        weight = torch.exp(metric - z_max)
        values = torch.cat([input * weight, weight], dim=1)

    splatted = splat(values, flow)
    numerator, denominator = splatted[:, :-1], splatted[:, -1:]
    if mode == "sum":
        output = numerator
    else:
        # One reciprocal per pixel, then one multiply per channel; 0 at holes.
        holes = hole_mask(denominator)
        inverse = denominator.masked_fill(holes, 1.0).reciprocal().masked_fill(holes, 0.0)
        output = numerator * inverse
    return (output, denominator) if return_weight else output


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


def _select_backend(input: torch.Tensor, backend: str):
    """The summation-splatting function (values (N, C, H, W), flow) -> (N, C, H, W)."""
    if backend == "torch":
        return _SumSplatTorch.apply
    cupy_usable = input.is_cuda and input.dtype in (torch.float32, torch.float64)
    if backend == "cupy":
        if not cupy_kernel.is_available():
            raise RuntimeError(f"softsplat: backend='cupy' but {cupy_kernel.unavailable_reason()}")
        if not cupy_usable:
            raise RuntimeError(
                "softsplat: backend='cupy' needs CUDA float32/float64 tensors, got "
                f"{input.dtype} on {input.device}"
            )
        return cupy_kernel.sum_splat
    if cupy_usable and cupy_kernel.is_available():
        return cupy_kernel.sum_splat
    return _SumSplatTorch.apply


# --------------------------------------------------------------------------------------
# PyTorch backend: summation splatting with a hand-written backward.
#
# Layout: values of a chunk of n images are viewed channel-major, (C, n*H*W), and the
# target is a padded buffer (C, n*Hp*Wp). Corner k of every source is added with one
# index_add_ along dim 1, into a view of the buffer shifted by that corner's offset
# (0, 1, Wp, Wp+1), so all four corners share a single index tensor.
# --------------------------------------------------------------------------------------


def _chunks(n: int, channels: int, pixels: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_ELEMENTS // max(1, channels * pixels))
    return [(start, min(n, start + step)) for start in range(0, n, step)]


def _geometry(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Top-left corner index and bilinear fractions of every source pixel.

    Args:
        flow: (n, 2, H, W).

    Returns:
        base: (n*H*W,) int64 index of the top-left target corner in the padded
            (n, Hp, Wp) buffer;
        ax, ay: (n*H*W,) fractional parts of the target x and y, in [0, 1);
        Wp: padded row length.
    """
    n, _, h, w = flow.shape
    hp, wp = h + 2 * _PAD, w + 2 * _PAD
    # Target coordinates in the padded buffer. Non-finite ones become 0: a corner at
    # (0, 0) and its neighbours are all padding, so those sources contribute nothing.
    gx = torch.arange(_PAD, w + _PAD, dtype=flow.dtype, device=flow.device)
    gy = torch.arange(_PAD, h + _PAD, dtype=flow.dtype, device=flow.device).unsqueeze(1)
    x = torch.nan_to_num(flow[:, 0] + gx, nan=0.0, posinf=0.0, neginf=0.0).view(-1)
    y = torch.nan_to_num(flow[:, 1] + gy, nan=0.0, posinf=0.0, neginf=0.0).view(-1)
    x0, y0 = x.floor(), y.floor()
    ax, ay = x - x0, y - y0
    # Index arithmetic in floating point is exact below 2**24 (float32); else float64.
    if flow.dtype != torch.float64 and hp * wp >= 2**24:
        x0, y0 = x0.double(), y0.double()
    # Clamping moves a corner that misses the frame by more than a pixel to the outer
    # padding ring; it then still misses the frame, and the weights are unchanged.
    base = x0.clamp_(0, w + _PAD).add_(y0.clamp_(0, h + _PAD), alpha=wp).long()
    if n > 1:
        offsets = torch.arange(n, device=flow.device).mul_(hp * wp)
        base = base.view(n, h * w).add_(offsets.unsqueeze(1)).view(-1)
    return base, ax, ay, wp


def _bilinear_weights(ax: torch.Tensor, ay: torch.Tensor) -> list[torch.Tensor]:
    """Weights of the corners (x0, y0), (x0+1, y0), (x0, y0+1), (x0+1, y0+1)."""
    bx, by = 1.0 - ax, 1.0 - ay
    return [bx * by, ax * by, bx * ay, ax * ay]


def _channel_major(values: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) -> (C, n*H*W), a view when n == 1."""
    n, c = values.shape[:2]
    return values.transpose(0, 1).reshape(c, -1) if n > 1 else values.reshape(c, -1)


def _splat_chunk(values: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Summation splatting of one chunk: (n, C, H, W) -> padded (C, n, Hp, Wp)."""
    n, c, h, w = values.shape
    base, ax, ay, wp = _geometry(flow)
    hp = h + 2 * _PAD
    flat_values = _channel_major(values)
    target = values.new_zeros(c, n * hp * wp)
    for offset, weight in zip((0, 1, wp, wp + 1), _bilinear_weights(ax, ay), strict=True):
        target[:, offset:].index_add_(1, base, flat_values * weight)
    return target.view(c, n, hp, wp)


class _SumSplatTorch(torch.autograd.Function):
    """Summation splatting S[v] of (N, C, H, W) values by (N, 2, H, W) flow."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        n, c, h, w = values.shape
        values, flow = values.contiguous(), flow.contiguous()
        output = values.new_empty(values.shape)
        inner = (slice(None), slice(None), slice(_PAD, _PAD + h), slice(_PAD, _PAD + w))
        for start, stop in _chunks(n, c, h * w):
            padded = _splat_chunk(values[start:stop], flow[start:stop])
            output[start:stop] = padded[inner].transpose(0, 1)
        ctx.save_for_backward(values, flow)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        values, flow = ctx.saved_tensors
        need_values, need_flow = ctx.needs_input_grad[:2]
        n, c, h, w = values.shape
        hp, wp = h + 2 * _PAD, w + 2 * _PAD
        grad_values = torch.empty_like(values) if need_values else None
        grad_flow = torch.empty_like(flow) if need_flow else None
        for start, stop in _chunks(n, c, h * w):
            m = stop - start
            base, ax, ay, _ = _geometry(flow[start:stop])
            # The gradient arriving at each corner of each source: (C, m*H*W) per corner.
            padded = grad_output.new_zeros(c, m, hp, wp)
            padded[:, :, _PAD : _PAD + h, _PAD : _PAD + w] = grad_output[start:stop].transpose(0, 1)
            flat = padded.view(c, -1)
            g00, g10, g01, g11 = (
                flat[:, offset:].index_select(1, base) for offset in (0, 1, wp, wp + 1)
            )
            if need_values:
                w00, w10, w01, w11 = _bilinear_weights(ax, ay)
                grad = g00 * w00
                grad.addcmul_(g10, w10).addcmul_(g01, w01).addcmul_(g11, w11)
                grad_values[start:stop] = grad.view(c, m, h, w).transpose(0, 1)
            if need_flow:
                # d/dx of the weights: (1-ay)(g10 - g00) + ay(g11 - g01), dotted with v.
                v = _channel_major(values[start:stop])
                by = 1.0 - ay
                bx = 1.0 - ax
                dx = (g10 - g00).mul_(by).addcmul_(g11 - g01, ay)
                dy = (g01 - g00).mul_(bx).addcmul_(g11 - g10, ax)
                grad_flow[start:stop, 0] = (dx.mul_(v)).sum(0).view(m, h, w)
                grad_flow[start:stop, 1] = (dy.mul_(v)).sum(0).view(m, h, w)
        return grad_values, grad_flow
