"""The motion denoiser: a 2-D latent U-Net over frequency slices, with frequency attention.

A spectral volume's latents ``(B, K, c, h, w)`` are K images, one per temporal frequency.
``MotionUNet`` denoises them as the paper does:

1. **Photo condition.** The photo ``(B, 3, H, W)`` in [-1, 1] (H = h * f) goes through a
   small learned strided-conv encoder (log2 f stride-2 convs) to ``(B, E, h, w)`` features,
   concatenated along channels to *every* frequency slice's noisy latent.
2. **2-D U-Net per slice.** The K' slices given are folded into the batch (``B*K'``) and run
   through diffusers' ``DownBlock2D`` / ``UNetMidBlock2D`` / ``UpBlock2D``. The timestep
   embedding (``Timesteps`` + ``TimestepEmbedding``) plus a learned embedding of the
   slice's *frequency index* (``nn.Embedding(num_freqs, time_embed_dim)``) conditions every
   ResNet block, so each slice knows which frequency it is.
3. **Frequency attention** (``frequency_attention=True``). After every down block, the mid
   block and every up block, a diffusers ``TransformerTemporalModel`` with
   ``num_frames=K'`` attends across the K' slices at each latent location, the way
   temporal layers do in video U-Nets. Their output projections start at zero, so adding
   them to a trained 2-D model (stage 1) leaves its output unchanged at the start of
   stage 2 (``add_frequency_attention`` or ``from_pretrained(..., frequency_attention=True,
   low_cpu_mem_usage=False)``).

4. **Mask condition** (``mask_conditioning=True``, issue 15). An optional "may move" mask
   ``(B, 1, H, W)`` at the photo's size enters the photo encoder as two more input
   channels: the mask in [0, 1] and a "mask given" flag. The null mask (no mask given:
   a value of -1, ``NULL_MASK_VALUE``) gives (0, 0), so one model serves both uses and
   classifier-free guidance drops photo and mask together. Configs saved without the
   key load as ``mask_conditioning=False``: the model of before, unchanged.
   ``add_mask_conditioning`` (or ``from_pretrained(..., mask_conditioning=True)``) adds
   the two channels to a trained model with zero weights: its output is unchanged until
   they are trained.

Shapes: sample ``(B, K', c, h, w)`` -> prediction ``(B, K', c, h, w)`` (epsilon or v, as
trained). h and w must be divisible by ``2 ** (len(block_out_channels) - 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block, get_up_block
from diffusers.utils import BaseOutput

# A motion mask item (or pixel) with this value means "no mask given" (the null mask).
NULL_MASK_VALUE = -1.0
# Channels a mask adds to the photo encoder's input: the mask, and the "given" flag.
MASK_CHANNELS = 2


def mask_to_channels(motion_mask: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` mask in [0, 1] or ``NULL_MASK_VALUE`` -> ``(B, 2, H, W)``: (mask, given).

    A pixel < 0 is "no mask given": (0, 0). A given pixel is (m, 1), so the all-black mask
    (nothing may move, given) differs from no mask at all.
    """
    given = (motion_mask >= 0).to(motion_mask.dtype)
    return torch.cat([motion_mask.clamp(0.0, 1.0) * given, given], dim=1)


@dataclass
class MotionUNetOutput(BaseOutput):
    """``sample``: the model prediction ``(B, K', c, h, w)`` (epsilon or v)."""

    sample: torch.Tensor


class ImageConditionEncoder(nn.Module):
    """Photo ``(B, 3, H, W)`` -> features ``(B, E, H/f, W/f)``: a conv then log2(f) stride-2 convs."""

    def __init__(self, image_channels: int, embed_channels: int, downsample_factor: int) -> None:
        super().__init__()
        if downsample_factor < 1 or downsample_factor & (downsample_factor - 1):
            raise ValueError(
                f"image_downsample_factor must be a power of 2, got {downsample_factor}"
            )
        num_down = int(math.log2(downsample_factor))
        hidden = max(embed_channels, 16)
        layers: list[nn.Module] = [nn.Conv2d(image_channels, hidden, 3, padding=1), nn.SiLU()]
        for _ in range(num_down):
            layers += [nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(hidden, embed_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


class MotionUNet(ModelMixin, ConfigMixin):
    """Image-conditioned latent U-Net over K frequency slices (see the module docstring).

    Args:
        num_freqs: K, number of frequency indices the embedding knows.
        latent_channels: c, channels of one slice's latent (input and output).
        image_channels: channels of the photo (3).
        image_downsample_factor: f, photo size / latent size.
        image_embed_channels: E, channels of the photo features concatenated to each slice.
        block_out_channels: channels per U-Net level (one downsampling between levels).
        layers_per_block: ResNet blocks per down level (up levels have one more).
        norm_num_groups: GroupNorm groups; must divide every entry of block_out_channels.
        frequency_attention: add the frequency attention layers (stage 2); False: the
            per-slice 2-D model (stage 1).
        attention_head_dim: channels per head, in the frequency attention and the mid block.
        mid_block_add_attention: spatial self-attention in the mid block (lowest
            resolution, cheap).
        down_block_types, up_block_types: diffusers block names, one per level; None:
            ``DownBlock2D`` / ``UpBlock2D`` at every level.
        frequency_attention_layers: transformer layers in each frequency attention module.
        mask_conditioning: the photo encoder also takes a "may move" mask (module
            docstring, point 4); False: the photo alone (every model before issue 15).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        num_freqs: int = 16,
        latent_channels: int = 4,
        image_channels: int = 3,
        image_downsample_factor: int = 8,
        image_embed_channels: int = 16,
        block_out_channels: tuple[int, ...] = (64, 128, 256),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        frequency_attention: bool = True,
        attention_head_dim: int = 32,
        mid_block_add_attention: bool = True,
        down_block_types: tuple[str, ...] | None = None,
        up_block_types: tuple[str, ...] | None = None,
        frequency_attention_layers: int = 1,
        mask_conditioning: bool = False,
    ) -> None:
        super().__init__()
        channels = tuple(block_out_channels)
        if any(ch % norm_num_groups for ch in channels):
            raise ValueError(
                f"norm_num_groups={norm_num_groups} must divide every block_out_channels {channels}"
            )
        if any(ch % attention_head_dim for ch in channels):
            raise ValueError(
                f"attention_head_dim={attention_head_dim} must divide every block_out_channels "
                f"{channels}"
            )
        down_types = tuple(down_block_types or ("DownBlock2D",) * len(channels))
        up_types = tuple(up_block_types or ("UpBlock2D",) * len(channels))
        if len(down_types) != len(channels) or len(up_types) != len(channels):
            raise ValueError(
                "down_block_types/up_block_types need one entry per block_out_channels"
            )

        time_embed_dim = channels[0] * 4
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels[0], time_embed_dim)
        self.frequency_embedding = nn.Embedding(num_freqs, time_embed_dim)

        self.image_encoder = ImageConditionEncoder(
            image_channels + (MASK_CHANNELS if mask_conditioning else 0),
            image_embed_channels,
            image_downsample_factor,
        )
        self.conv_in = nn.Conv2d(latent_channels + image_embed_channels, channels[0], 3, padding=1)

        common = dict(
            temb_channels=time_embed_dim,
            resnet_eps=1e-5,
            resnet_act_fn="silu",
            resnet_groups=norm_num_groups,
        )
        self.down_blocks = nn.ModuleList()
        output_channel = channels[0]
        for i, block_type in enumerate(down_types):
            input_channel, output_channel = output_channel, channels[i]
            self.down_blocks.append(
                get_down_block(
                    block_type,
                    num_layers=layers_per_block,
                    in_channels=input_channel,
                    out_channels=output_channel,
                    add_downsample=i < len(channels) - 1,
                    attention_head_dim=attention_head_dim,
                    downsample_padding=1,
                    **common,
                )
            )
        self.mid_block = UNetMidBlock2D(
            in_channels=channels[-1],
            attention_head_dim=attention_head_dim,
            add_attention=mid_block_add_attention,
            **common,
        )
        self.up_blocks = nn.ModuleList()
        reversed_channels = channels[::-1]
        output_channel = reversed_channels[0]
        for i, block_type in enumerate(up_types):
            prev_output_channel, output_channel = output_channel, reversed_channels[i]
            input_channel = reversed_channels[min(i + 1, len(channels) - 1)]
            self.up_blocks.append(
                get_up_block(
                    block_type,
                    num_layers=layers_per_block + 1,
                    in_channels=input_channel,
                    out_channels=output_channel,
                    prev_output_channel=prev_output_channel,
                    add_upsample=i < len(channels) - 1,
                    attention_head_dim=attention_head_dim,
                    resolution_idx=i,
                    **common,
                )
            )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, channels[0], eps=1e-5)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], latent_channels, 3, padding=1)

        self.freq_attn_down: nn.ModuleList | None = None
        self.freq_attn_mid: TransformerTemporalModel | None = None
        self.freq_attn_up: nn.ModuleList | None = None
        if frequency_attention:
            self._build_frequency_attention()

    # ------------------------------------------------------------------ construction

    def _frequency_attention_layer(self, channels: int) -> TransformerTemporalModel:
        """Attention across slices at each location; output projection zeroed (identity at start)."""
        layer = TransformerTemporalModel(
            num_attention_heads=channels // self.config.attention_head_dim,
            attention_head_dim=self.config.attention_head_dim,
            in_channels=channels,
            num_layers=self.config.frequency_attention_layers,
            norm_num_groups=self.config.norm_num_groups,
        )
        nn.init.zeros_(layer.proj_out.weight)
        nn.init.zeros_(layer.proj_out.bias)
        return layer

    def _build_frequency_attention(self) -> None:
        channels = tuple(self.config.block_out_channels)
        self.freq_attn_down = nn.ModuleList(self._frequency_attention_layer(ch) for ch in channels)
        self.freq_attn_mid = self._frequency_attention_layer(channels[-1])
        self.freq_attn_up = nn.ModuleList(
            self._frequency_attention_layer(ch) for ch in channels[::-1]
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        *args,
        frequency_attention: bool | None = None,
        mask_conditioning: bool | None = None,
        **kwargs,
    ) -> MotionUNet:
        """``ModelMixin.from_pretrained``, plus stage 2 from a stage-1 folder and a
        mask-conditioned model from one saved without mask conditioning.

        Args:
            frequency_attention: True on a folder saved without frequency attention (stage 1)
                returns the stage-1 weights with fresh zero-output attention layers
                (``add_frequency_attention``); None or the saved value: load as saved.
            mask_conditioning: True on a folder saved without it adds the mask channels
                with zero weights (``add_mask_conditioning``); None or the saved value:
                load as saved.
        """
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if frequency_attention is not None and (
            frequency_attention != model.config.frequency_attention
        ):
            if not frequency_attention:
                raise ValueError(
                    f"{pretrained_model_name_or_path}: the saved U-Net has frequency attention; "
                    "it cannot be loaded as a stage-1 (frequency_attention=False) model"
                )
            model = add_frequency_attention(model)
        if mask_conditioning is not None and mask_conditioning != model.config.mask_conditioning:
            if not mask_conditioning:
                raise ValueError(
                    f"{pretrained_model_name_or_path}: the saved U-Net is mask-conditioned; "
                    "it cannot be loaded without mask conditioning"
                )
            model = add_mask_conditioning(model)
        return model

    @property
    def downsample_factor(self) -> int:
        """h and w must be multiples of this (the U-Net's total downsampling)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    # ---------------------------------------------------------------------- forward

    def _check_inputs(
        self,
        sample: torch.Tensor,
        image: torch.Tensor,
        frequency_index: torch.Tensor | None,
        motion_mask: torch.Tensor | None,
    ) -> None:
        cfg = self.config
        if sample.ndim != 5 or sample.shape[2] != cfg.latent_channels:
            raise ValueError(
                f"sample must be (B, K', {cfg.latent_channels}, h, w), got {tuple(sample.shape)}"
            )
        batch, num_slices, _, height, width = sample.shape
        if num_slices < 1 or num_slices > cfg.num_freqs:
            raise ValueError(
                f"sample has {num_slices} frequency slices; the model knows 1..{cfg.num_freqs}"
            )
        if height % self.downsample_factor or width % self.downsample_factor:
            raise ValueError(
                f"latent size {width}x{height} (wxh) must be divisible by "
                f"{self.downsample_factor} = 2 ** (len(block_out_channels) - 1)"
            )
        f = cfg.image_downsample_factor
        expected = (batch, cfg.image_channels, height * f, width * f)
        if tuple(image.shape) != expected:
            raise ValueError(
                f"image must be {expected} (B, {cfg.image_channels}, h*{f}, w*{f}) for latents "
                f"{tuple(sample.shape)}, got {tuple(image.shape)}"
            )
        if frequency_index is not None:
            if tuple(frequency_index.shape) != (batch, num_slices):
                raise ValueError(
                    f"frequency_index must be (B, K') = {(batch, num_slices)}, "
                    f"got {tuple(frequency_index.shape)}"
                )
            if frequency_index.min() < 0 or frequency_index.max() >= cfg.num_freqs:
                raise ValueError(f"frequency_index must be in [0, {cfg.num_freqs})")
        if motion_mask is not None:
            if not cfg.mask_conditioning:
                raise ValueError(
                    "this U-Net was trained without mask conditioning (mask_conditioning=False);"
                    " it takes no motion_mask"
                )
            expected = (batch, 1, *image.shape[2:])
            if tuple(motion_mask.shape) != expected:
                raise ValueError(
                    f"motion_mask must be {expected} (B, 1, H, W) like the image, "
                    f"got {tuple(motion_mask.shape)}"
                )
            if not torch.isfinite(motion_mask).all() or motion_mask.max() > 1:
                raise ValueError(
                    f"motion_mask must be in [0, 1], or {NULL_MASK_VALUE} for 'no mask given'"
                )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        image: torch.Tensor,
        frequency_index: torch.Tensor | None = None,
        return_dict: bool = True,
        motion_mask: torch.Tensor | None = None,
    ) -> MotionUNetOutput | tuple[torch.Tensor]:
        """Predict the noise (or v) of noisy latents.

        Args:
            sample: ``(B, K', c, h, w)`` noisy latents of K' <= K frequency slices.
            timestep: diffusion step: a number, a 0-d tensor or ``(B,)``.
            image: ``(B, 3, h*f, w*f)`` photo in [-1, 1]; zeros = no condition (for
                classifier-free guidance).
            frequency_index: ``(B, K')`` long, which frequency each slice is; None:
                ``arange(K')`` for every batch item.
            return_dict: return ``MotionUNetOutput`` (else a tuple).
            motion_mask: ``(B, 1, h*f, w*f)`` "may move" mask in [0, 1] (1: may move), an
                item filled with ``NULL_MASK_VALUE`` (-1) for "no mask given"; None: no mask
                for any item. Only for a ``mask_conditioning=True`` model.

        Returns:
            ``MotionUNetOutput(sample=(B, K', c, h, w))``.
        """
        self._check_inputs(sample, image, frequency_index, motion_mask)
        batch, num_slices = sample.shape[:2]
        device = sample.device
        if frequency_index is None:
            frequency_index = torch.arange(num_slices, device=device).expand(batch, num_slices)

        # 1. Embeddings: timestep + frequency index, one per slice -> (B*K', D).
        timesteps = torch.as_tensor(timestep, device=device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(batch)
        if timesteps.shape != (batch,):
            raise ValueError(
                f"timestep must be a number or (B,) = ({batch},), got {tuple(timesteps.shape)}"
            )
        t_emb = self.time_proj(timesteps.repeat_interleave(num_slices)).to(dtype=self.dtype)
        emb = self.time_embedding(t_emb) + self.frequency_embedding(
            frequency_index.reshape(-1).to(device)
        )

        # 2. Photo (+ mask) features (B, E, h, w), shared by the K' slices, concatenated to
        #    each.
        condition = image.to(dtype=self.dtype)
        if self.config.mask_conditioning:
            if motion_mask is None:
                motion_mask = torch.full_like(condition[:, :1], NULL_MASK_VALUE)
            mask_channels = mask_to_channels(motion_mask.to(device=device, dtype=self.dtype))
            condition = torch.cat([condition, mask_channels], dim=1)
        image_features = self.image_encoder(condition)
        image_features = image_features.repeat_interleave(num_slices, dim=0)
        hidden = torch.cat([sample.flatten(0, 1).to(self.dtype), image_features], dim=1)
        hidden = self.conv_in(hidden)  # (B*K', C0, h, w)

        # 3. Down, mid, up; frequency attention after each block (if present).
        residuals = (hidden,)
        for i, block in enumerate(self.down_blocks):
            hidden, block_residuals = block(hidden_states=hidden, temb=emb)
            if self.freq_attn_down is not None:
                hidden = self.freq_attn_down[i](hidden, num_frames=num_slices).sample
                # The skip connection of the block's last output carries the attended features.
                block_residuals = block_residuals[:-1] + (hidden,)
            residuals += block_residuals
        hidden = self.mid_block(hidden, emb)
        if self.freq_attn_mid is not None:
            hidden = self.freq_attn_mid(hidden, num_frames=num_slices).sample
        for i, block in enumerate(self.up_blocks):
            block_residuals = residuals[-len(block.resnets) :]
            residuals = residuals[: -len(block.resnets)]
            hidden = block(hidden, block_residuals, emb)
            if self.freq_attn_up is not None:
                hidden = self.freq_attn_up[i](hidden, num_frames=num_slices).sample

        # 4. Out: (B*K', c, h, w) -> (B, K', c, h, w).
        hidden = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        hidden = hidden.unflatten(0, (batch, num_slices))
        if not return_dict:
            return (hidden,)
        return MotionUNetOutput(sample=hidden)


def _fresh_copy(unet: MotionUNet, **changes) -> MotionUNet:
    """A freshly initialised ``MotionUNet`` of ``unet``'s config with ``changes``, on its
    device and dtype (the weights are for the caller to copy)."""
    config = dict(unet.config)
    # diffusers resets keys listed here to their defaults in from_config: drop the list
    config.pop("_use_default_values", None)
    config.update(changes)
    fresh = MotionUNet.from_config(config)
    if unet.device != fresh.device or unet.dtype != fresh.dtype:
        fresh = fresh.to(device=unet.device, dtype=unet.dtype)
    return fresh


def add_frequency_attention(unet: MotionUNet) -> MotionUNet:
    """Stage 1 -> stage 2: a copy of ``unet`` with fresh, zero-output frequency attention.

    The returned model computes exactly what ``unet`` computes until the attention layers'
    output projections are trained away from zero. ``unet`` itself is left unchanged.
    """
    if unet.config.frequency_attention:
        raise ValueError("the U-Net already has frequency attention")
    stage2 = _fresh_copy(unet, frequency_attention=True)
    missing, unexpected = stage2.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not key.startswith("freq_attn_") for key in missing):
        raise RuntimeError(
            f"stage-1 weights do not fit: missing {missing}, unexpected {unexpected}"
        )
    return stage2


def add_mask_conditioning(unet: MotionUNet) -> MotionUNet:
    """A copy of ``unet`` that also takes a motion mask, computing what ``unet`` computes.

    The photo encoder's first convolution gets ``MASK_CHANNELS`` more input channels whose
    weights are zero, so the output is unchanged (with or without a mask) until they are
    trained. ``unet`` itself is left unchanged.
    """
    if unet.config.mask_conditioning:
        raise ValueError("the U-Net already has mask conditioning")
    masked = _fresh_copy(unet, mask_conditioning=True)
    state = dict(unet.state_dict())
    key = "image_encoder.layers.0.weight"
    old = state[key]  # (hidden, image_channels, 3, 3)
    state[key] = torch.cat([old, old.new_zeros(old.shape[0], MASK_CHANNELS, *old.shape[2:])], 1)
    masked.load_state_dict(state, strict=True)
    return masked
