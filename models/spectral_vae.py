"""The spectral-volume autoencoder: a diffusers ``AutoencoderKL`` over 4-channel slices.

A spectral volume ``S: (K, 4, H, W)`` (channels ``re_x, im_x, re_y, im_y``, normalised
per frequency, see ``data.spectral.FrequencyNormalizer``) is K images of 4 channels, one
per temporal frequency. As in the paper, the VAE sees each frequency slice as one image:
a batch ``(B, K, 4, H, W)`` is folded into ``(B*K, 4, H, W)``, encoded to
``(B*K, c, H/f, W/f)`` and unfolded to latents ``(B, K, c, h, w)``; the diffusion model
then denoises the K latents of a photo jointly.

The network is diffusers' ``AutoencoderKL`` unchanged (saved and loaded with
``save_pretrained`` / ``AutoencoderKL.from_pretrained``), configured by
``create_spectral_vae``. The latent scaling factor (1 / std of the latents over training
data, ``compute_scaling_factor``) lives in its config as ``scaling_factor``. The motion
config (T, fps, K, size) and the normalisation statistics travel beside the weights
(``save_spectral_vae`` / ``load_spectral_vae``), so sampling never guesses them.

Training loss (``spectral_vae_loss``): L1 reconstruction + multi-scale gradient loss (L1
of finite differences at 1x, 1/2x, 1/4x) + a small KL term (weight 1e-6 by default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from data.config import SPECTRAL_CHANNELS, MotionConfig
from data.spectral import FrequencyNormalizer

MOTION_CONFIG_NAME = "motion_config.json"
NORMALIZATION_NAME = "normalization.json"


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
        scaling_factor=1.0,  # replaced by compute_scaling_factor after training
        mid_block_add_attention=mid_block_add_attention,
    )


def vae_downsample_factor(vae: AutoencoderKL) -> int:
    """Spatial factor f between a slice (H, W) and its latent (H/f, W/f)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _check_spectral(spectral: torch.Tensor, vae: AutoencoderKL) -> None:
    if spectral.ndim != 5 or spectral.shape[2] != len(SPECTRAL_CHANNELS):
        raise ValueError(f"spectral must be (B, K, 4, H, W), got shape {tuple(spectral.shape)}")
    factor = vae_downsample_factor(vae)
    if spectral.shape[-2] % factor or spectral.shape[-1] % factor:
        raise ValueError(
            f"spectral size {spectral.shape[-1]}x{spectral.shape[-2]} (WxH) must be a multiple "
            f"of the VAE's downsampling factor {factor}"
        )


def _chunks(x: torch.Tensor, chunk_size: int | None) -> list[torch.Tensor]:
    return [x] if not chunk_size else list(x.split(chunk_size))


def encode_spectral(
    vae: AutoencoderKL,
    spectral: torch.Tensor,
    sample: bool = False,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Normalised spectral volumes ``(B, K, 4, H, W)`` -> scaled latents ``(B, K, c, h, w)``.

    Each frequency slice is one image for the VAE. The latents are multiplied by
    ``vae.config.scaling_factor`` (unit variance over training data once it is set).

    Args:
        sample: draw from the posterior (with ``generator``) instead of taking its mean.
        chunk_size: at most this many slices per VAE call (memory); None: all at once.
    """
    _check_spectral(spectral, vae)
    batch, num_freqs = spectral.shape[:2]
    slices = spectral.flatten(0, 1).to(device=vae.device, dtype=vae.dtype)  # (B*K, 4, H, W)
    latents = []
    for chunk in _chunks(slices, chunk_size):
        posterior = vae.encode(chunk).latent_dist
        latents.append(posterior.sample(generator) if sample else posterior.mode())
    latents = torch.cat(latents) * vae.config.scaling_factor
    return latents.unflatten(0, (batch, num_freqs))


def decode_spectral(
    vae: AutoencoderKL, latents: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """Scaled latents ``(B, K, c, h, w)`` -> normalised spectral volumes ``(B, K, 4, H, W)``."""
    if latents.ndim != 5:
        raise ValueError(f"latents must be (B, K, c, h, w), got shape {tuple(latents.shape)}")
    batch, num_freqs = latents.shape[:2]
    flat = latents.flatten(0, 1).to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
    slices = torch.cat([vae.decode(chunk).sample for chunk in _chunks(flat, chunk_size)])
    return slices.unflatten(0, (batch, num_freqs))


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


# -------------------------------------------------------------------- scaling factor


@torch.no_grad()
def compute_scaling_factor(
    vae: AutoencoderKL, spectral_batches: Iterable[torch.Tensor], chunk_size: int | None = 64
) -> float:
    """1 / std of the (unscaled, posterior-mean) latents over ``spectral_batches``.

    Args:
        spectral_batches: normalised spectral volumes ``(B, K, 4, H, W)``, e.g. a subset of
            the training split at full resolution.
    """
    total, total_sq, count = 0.0, 0.0, 0
    for spectral in spectral_batches:
        _check_spectral(spectral, vae)
        slices = spectral.flatten(0, 1).to(device=vae.device, dtype=vae.dtype)
        for chunk in _chunks(slices, chunk_size):
            latents = vae.encode(chunk).latent_dist.mode().double()
            total += latents.sum().item()
            total_sq += latents.square().sum().item()
            count += latents.numel()
    if count == 0:
        raise ValueError("compute_scaling_factor: no data (empty spectral_batches)")
    variance = total_sq / count - (total / count) ** 2
    if not math.isfinite(variance) or variance <= 0:
        raise ValueError(
            f"compute_scaling_factor: latent variance is {variance}; is the VAE trained?"
        )
    return 1.0 / math.sqrt(variance)


def set_scaling_factor(vae: AutoencoderKL, scaling_factor: float) -> None:
    """Record ``scaling_factor`` in the VAE's config (saved by ``save_pretrained``)."""
    vae.register_to_config(scaling_factor=float(scaling_factor))


# ------------------------------------------------------------------------ save / load


def save_spectral_vae(
    vae: AutoencoderKL,
    out_dir: str | Path,
    motion_config: MotionConfig,
    normalization: str | Path | FrequencyNormalizer,
) -> Path:
    """``save_pretrained`` plus ``motion_config.json`` and ``normalization.json`` beside it
    (``models.spectral_codec.save_spectral_codec``, which saves every codec kind)."""
    from models.spectral_codec import save_spectral_codec  # it imports this module

    return save_spectral_codec(vae, out_dir, motion_config, normalization)


def load_spectral_vae(
    path: str | Path,
) -> tuple[AutoencoderKL, MotionConfig, FrequencyNormalizer]:
    """Load what ``save_spectral_vae`` wrote: the VAE, its motion config and normaliser."""
    path = Path(path)
    for name in ("config.json", MOTION_CONFIG_NAME, NORMALIZATION_NAME):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: no {name}; not a folder written by train_vae.py")
    vae = AutoencoderKL.from_pretrained(path)
    return (
        vae,
        MotionConfig.load_json(path / MOTION_CONFIG_NAME),
        FrequencyNormalizer.load_json(path / NORMALIZATION_NAME),
    )
