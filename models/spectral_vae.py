"""The spectral-volume autoencoder: a diffusers ``AutoencoderKL`` over 4-channel slices.

A spectral volume ``S: (K, 4, H, W)`` (channels ``re_x, im_x, re_y, im_y``, normalised
per frequency, see ``data.spectral.FrequencyNormalizer``) is K images of 4 channels, one
per temporal frequency. As in the paper, the VAE sees each frequency slice as one image:
a batch ``(B, K, 4, H, W)`` is folded into ``(B*K, 4, H, W)``, encoded to
``(B*K, c, H/f, W/f)`` and unfolded to latents ``(B, K, c, h, w)``; the diffusion model
then denoises the K latents of a photo jointly.

The network is diffusers' ``AutoencoderKL`` unchanged, configured by
``create_spectral_vae``. Everything a *user* of the trained VAE needs (encode/decode,
the latent scaling factor in its config, save/load with the motion config and the
normalisation statistics beside the weights) is the codec API of
``models/spectral_codec.py``, shared with the parameter-free resample codec. This module
holds only the network's construction and its training loss.

Training loss (``spectral_vae_loss``): L1 reconstruction + multi-scale gradient loss (L1
of finite differences at 1x, 1/2x, 1/4x) + a small KL term (weight 1e-6 by default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from data.config import SPECTRAL_CHANNELS


def default_block_out_channels(downsample_factor: int, base_channels: int = 32) -> tuple[int, ...]:
    """Channels per resolution level: doubling from ``base_channels``, capped at 4x.

    One level per factor of 2 plus the full-resolution one: factor 8 -> 4 levels,
    e.g. (32, 64, 128, 128); factor 4 -> (32, 64, 128).
    """
    if downsample_factor < 1 or downsample_factor & (downsample_factor - 1):
        raise ValueError(f"downsample_factor must be a power of 2, got {downsample_factor}")
    levels = int(math.log2(downsample_factor)) + 1
    return tuple(min(base_channels * 2**i, base_channels * 4) for i in range(levels))


def create_spectral_vae(
    downsample_factor: int = 8,
    block_out_channels: Iterable[int] | None = None,
    latent_channels: int = 4,
    layers_per_block: int = 1,
    norm_num_groups: int = 32,
    mid_block_add_attention: bool = True,
    sample_size: int = 64,
) -> AutoencoderKL:
    """A fresh ``AutoencoderKL`` for 4-channel spectral slices.

    Args:
        downsample_factor: spatial factor f (power of 2); latents are (c, H/f, W/f).
            Ignored when ``block_out_channels`` is given (f = 2**(len - 1)).
        block_out_channels: channels per level; default ``default_block_out_channels(f)``.
        latent_channels: c, latent channels per frequency slice.
        layers_per_block: ResNet blocks per level (the decoder has one more).
        norm_num_groups: GroupNorm groups; must divide every entry of block_out_channels.
        mid_block_add_attention: self-attention in the bottleneck (diffusers' default).
        sample_size: nominal training crop size (only recorded in the config).
    """
    channels = tuple(block_out_channels or default_block_out_channels(downsample_factor))
    if any(c % norm_num_groups for c in channels):
        raise ValueError(
            f"norm_num_groups={norm_num_groups} must divide every channel count {channels}"
        )
    return AutoencoderKL(
        in_channels=len(SPECTRAL_CHANNELS),
        out_channels=len(SPECTRAL_CHANNELS),
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        scaling_factor=1.0,  # set by compute_codec_scaling_factor after training
        mid_block_add_attention=mid_block_add_attention,
    )


# ----------------------------------------------------------------------------- losses


def multiscale_gradient_loss(
    prediction: torch.Tensor, target: torch.Tensor, num_scales: int = 3
) -> torch.Tensor:
    """Mean over scales of the L1 distance between finite differences in x and y.

    Scale s compares the images average-pooled by 2**s (1x, 1/2x, 1/4x for 3 scales), so
    the loss sees both fine edges and the smooth large-scale shape of the motion.

    Args:
        prediction, target: ``(N, C, H, W)``.
    """
    total = prediction.new_zeros(())
    for scale in range(num_scales):
        if scale:
            prediction = F.avg_pool2d(prediction, 2)
            target = F.avg_pool2d(target, 2)
        for dim in (-1, -2):
            total = total + F.l1_loss(prediction.diff(dim=dim), target.diff(dim=dim))
    return total / num_scales


def spectral_vae_loss(
    reconstruction: torch.Tensor,
    target: torch.Tensor,
    posterior,
    kl_weight: float = 1e-6,
    gradient_weight: float = 1.0,
    num_scales: int = 3,
) -> dict[str, torch.Tensor]:
    """The training loss of the spectral VAE and its parts.

    ``loss = L1 + gradient_weight * multiscale_gradient + kl_weight * KL``, where KL is the
    posterior's KL divergence to N(0, I) summed over latent elements and averaged over
    slices (the latent-diffusion convention, hence the small weight).

    Args:
        reconstruction, target: ``(N, 4, H, W)`` normalised slices.
        posterior: ``DiagonalGaussianDistribution`` of the encoder (``.kl()``: ``(N,)``).

    Returns:
        ``{"loss", "l1", "gradient", "kl"}``, scalars (only ``loss`` is weighted).
    """
    l1 = F.l1_loss(reconstruction, target)
    gradient = multiscale_gradient_loss(reconstruction, target, num_scales)
    kl = posterior.kl().mean()
    loss = l1 + gradient_weight * gradient + kl_weight * kl
    return {"loss": loss, "l1": l1, "gradient": gradient, "kl": kl}


# ----------------------------------------------------------------- old import names

# The codec API (encode/decode, scaling factor, save/load) lives in models/spectral_codec.py.
# These old names are kept importable from here for code that still uses them
# (benchmarks/bench_vae.py); resolved lazily so this module never imports spectral_codec
# at import time (spectral_codec does not import this module either).
_MOVED = {
    "encode_spectral": "encode_latents",
    "decode_spectral": "decode_latents",
    "vae_downsample_factor": "codec_downsample_factor",
    "load_spectral_vae": "load_spectral_codec",
}


def __getattr__(name: str):
    if name in _MOVED:
        import models.spectral_codec as codec_module

        return getattr(codec_module, _MOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
