"""The codec between spectral volumes and the diffusion model's latents: a VAE or resampling.

The latent diffusion U-Net denoises latents ``(B, K, c, h, w)``; a *codec* maps normalised
spectral volumes ``(B, K, 4, H, W)`` to those latents and back. Two kinds are supported:

- ``AutoencoderKL``: the spectral VAE of ``models/spectral_vae.py`` (trained by
  ``train_vae.py``); each frequency slice is one image for it, latents are the posterior
  mean (or a draw, ``sample=True``) times ``scaling_factor``.
- ``ResampleSpectralCodec``: no learned parameters. Encode = area-average downsampling by
  ``downsample_factor``, decode = bicubic upsampling. At the same compression it is the
  baseline the VAE must beat (docs/VAE.md); until it does, the motion model can train on it.

Both are saved the same way (``save_spectral_codec``): ``save_pretrained`` (``config.json``
whose ``_class_name`` says which kind) plus ``motion_config.json`` and
``normalization.json`` beside it, so sampling never guesses K, T, fps, size or the
normalisation. ``load_spectral_codec`` reads either kind back.

This module owns the codec API (encode/decode, factor and channels, scaling factor,
save/load); ``models/spectral_vae.py`` only builds and trains the VAE network.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from data.config import SPECTRAL_CHANNELS, MotionConfig
from data.spectral import FrequencyNormalizer

MOTION_CONFIG_NAME = "motion_config.json"
NORMALIZATION_NAME = "normalization.json"

_HOW_TO_MAKE = (
    "make one with train_vae.py (a spectral VAE), or with "
    "models.spectral_codec.save_spectral_codec(ResampleSpectralCodec(downsample_factor=8), "
    "out_dir, motion_config, normalization) (train_unet.py --codec resample:8 does this), "
    "or give a sample.py model folder (model_index.json and codec/, e.g. weights/default)"
)


class ResampleSpectralCodec(ModelMixin, ConfigMixin):
    """Area-average downsampling (encode) and bicubic upsampling (decode); nothing to learn.

    Latents are the downsampled normalised slices times ``scaling_factor``, so
    ``num_channels`` is both the slice channels (4: re_x, im_x, re_y, im_y) and the latent
    channels c.

    Args:
        downsample_factor: spatial factor f (a positive integer); latents are (H/f, W/f).
        num_channels: channels of a slice and of its latent (4 for spectral volumes).
        scaling_factor: multiplies latents after encoding (divides before decoding); set
            it to 1 / std of the latents (``compute_codec_scaling_factor``) for unit variance.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self, downsample_factor: int = 8, num_channels: int = 4, scaling_factor: float = 1.0
    ) -> None:
        super().__init__()
        if int(downsample_factor) != downsample_factor or downsample_factor < 1:
            raise ValueError(
                f"downsample_factor must be a positive integer, got {downsample_factor}"
            )
        if num_channels < 1:
            raise ValueError(f"num_channels must be positive, got {num_channels}")
        if not (math.isfinite(scaling_factor) and scaling_factor > 0):
            raise ValueError(f"scaling_factor must be a positive number, got {scaling_factor}")
        # One buffer so the module has a device/dtype and save_pretrained writes a weights
        # file (diffusers expects one); it holds nothing learned.
        self.register_buffer("_device_anchor", torch.zeros(1), persistent=True)

    @property
    def latent_channels(self) -> int:
        return int(self.config.num_channels)

    def _check(self, x: torch.Tensor, name: str) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.num_channels:
            raise ValueError(
                f"{name} must be (N, {self.config.num_channels}, H, W), got {tuple(x.shape)}"
            )

    def encode(self, slices: torch.Tensor) -> torch.Tensor:
        """Slices ``(N, C, H, W)`` -> scaled latents ``(N, C, H/f, W/f)``."""
        self._check(slices, "slices")
        f = int(self.config.downsample_factor)
        if slices.shape[-2] % f or slices.shape[-1] % f:
            raise ValueError(
                f"slice size {slices.shape[-1]}x{slices.shape[-2]} (WxH) must be a multiple of "
                f"the codec's downsample_factor {f}"
            )
        return F.avg_pool2d(slices, f) * self.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(N, C, h, w)`` -> slices ``(N, C, h*f, w*f)`` (bicubic)."""
        self._check(latents, "latents")
        f = int(self.config.downsample_factor)
        latents = latents / self.config.scaling_factor
        if f == 1:
            return latents
        return F.interpolate(latents, scale_factor=f, mode="bicubic", align_corners=False)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(encode(slices))``, ``(N, C, H, W)``."""
        return self.decode(self.encode(slices))


# --------------------------------------------------------------------------- helpers

SpectralCodec = AutoencoderKL | ResampleSpectralCodec


def codec_downsample_factor(codec: SpectralCodec) -> int:
    """Spatial factor f between a slice (H, W) and its latent (H/f, W/f)."""
    if isinstance(codec, ResampleSpectralCodec):
        return int(codec.config.downsample_factor)
    if isinstance(codec, AutoencoderKL):
        return 2 ** (len(codec.config.block_out_channels) - 1)
    raise TypeError(f"not a spectral codec: {type(codec).__name__}")


def codec_latent_channels(codec: SpectralCodec) -> int:
    """Latent channels c per frequency slice."""
    if isinstance(codec, ResampleSpectralCodec):
        return int(codec.config.num_channels)
    if isinstance(codec, AutoencoderKL):
        return int(codec.config.latent_channels)
    raise TypeError(f"not a spectral codec: {type(codec).__name__}")


def _check_spectral(codec: SpectralCodec, spectral: torch.Tensor) -> None:
    if spectral.ndim != 5 or spectral.shape[2] != len(SPECTRAL_CHANNELS):
        raise ValueError(f"spectral must be (B, K, 4, H, W), got shape {tuple(spectral.shape)}")
    factor = codec_downsample_factor(codec)
    if spectral.shape[-2] % factor or spectral.shape[-1] % factor:
        raise ValueError(
            f"spectral size {spectral.shape[-1]}x{spectral.shape[-2]} (WxH) must be a multiple "
            f"of the codec's downsampling factor {factor}"
        )


def _chunks(x: torch.Tensor, chunk_size: int | None) -> list[torch.Tensor]:
    return [x] if not chunk_size else list(x.split(chunk_size))


def _encode_unscaled(
    codec: SpectralCodec,
    slices: torch.Tensor,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Slices ``(N, 4, H, W)`` -> latents ``(N, c, h, w)`` before ``scaling_factor``."""
    if isinstance(codec, AutoencoderKL):
        posterior = codec.encode(slices).latent_dist
        return posterior.sample(generator) if sample else posterior.mode()
    return codec.encode(slices) / codec.config.scaling_factor


def encode_latents(
    codec: SpectralCodec,
    spectral: torch.Tensor,
    sample: bool = False,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Normalised spectral volumes ``(B, K, 4, H, W)`` -> scaled latents ``(B, K, c, h, w)``.

    Each frequency slice is one image for the codec; latents are multiplied by the codec's
    ``scaling_factor`` (unit variance over training data once it is set).

    Args:
        sample: a VAE draws from its posterior (with ``generator``) instead of taking the
            mean; the resample codec is deterministic either way.
        chunk_size: at most this many slices per codec call (memory); None: all at once.
    """
    _check_spectral(codec, spectral)
    batch, num_freqs = spectral.shape[:2]
    slices = spectral.flatten(0, 1).to(device=codec.device, dtype=codec.dtype)  # (B*K, 4, H, W)
    latents = torch.cat(
        [_encode_unscaled(codec, c, sample, generator) for c in _chunks(slices, chunk_size)]
    )
    return (latents * codec.config.scaling_factor).unflatten(0, (batch, num_freqs))


def decode_latents(
    codec: SpectralCodec, latents: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """Scaled latents ``(B, K, c, h, w)`` -> normalised spectral volumes ``(B, K, 4, H, W)``."""
    if latents.ndim != 5:
        raise ValueError(f"latents must be (B, K, c, h, w), got shape {tuple(latents.shape)}")
    batch, num_freqs = latents.shape[:2]
    flat = latents.flatten(0, 1).to(device=codec.device, dtype=codec.dtype)
    if isinstance(codec, AutoencoderKL):
        flat = flat / codec.config.scaling_factor
        slices = torch.cat([codec.decode(chunk).sample for chunk in _chunks(flat, chunk_size)])
    else:
        slices = torch.cat([codec.decode(chunk) for chunk in _chunks(flat, chunk_size)])
    return slices.unflatten(0, (batch, num_freqs))


@torch.no_grad()
def compute_codec_scaling_factor(
    codec: SpectralCodec, dataset: Iterable, num_samples: int = 16, chunk_size: int | None = 64
) -> float:
    """1 / std of the *unscaled* latents (posterior mean) of the first ``num_samples`` items.

    Args:
        dataset: items with a ``"spectral"`` tensor ``(K, 4, H, W)`` (a
            ``SpectralVolumeDataset``), tensors ``(K, 4, H, W)`` or batches
            ``(B, K, 4, H, W)``; H and W multiples of the codec's factor.
    """
    total, total_sq, count = 0.0, 0.0, 0
    for index, item in enumerate(dataset):
        if index >= num_samples:
            break
        spectral = item["spectral"] if isinstance(item, dict) else item
        spectral = spectral[None] if spectral.ndim == 4 else spectral
        _check_spectral(codec, spectral)
        slices = spectral.flatten(0, 1).to(device=codec.device, dtype=codec.dtype)
        for chunk in _chunks(slices, chunk_size):
            latents = _encode_unscaled(codec, chunk).double()
            total += latents.sum().item()
            total_sq += latents.square().sum().item()
            count += latents.numel()
    if count == 0:
        raise ValueError("compute_codec_scaling_factor: the dataset is empty")
    variance = total_sq / count - (total / count) ** 2
    if not math.isfinite(variance) or variance <= 0:
        raise ValueError(
            f"compute_codec_scaling_factor: latent variance is {variance}; is the codec trained "
            "and the data finite?"
        )
    return 1.0 / math.sqrt(variance)


def set_codec_scaling_factor(codec: SpectralCodec, value: float) -> None:
    """Record ``scaling_factor`` in the codec's config (saved by ``save_pretrained``)."""
    codec.register_to_config(scaling_factor=float(value))


# ------------------------------------------------------------------------ save / load


def save_spectral_codec(
    codec: SpectralCodec,
    out_dir: str | Path,
    motion_config: MotionConfig,
    normalization: str | Path | FrequencyNormalizer,
) -> Path:
    """``save_pretrained`` plus ``motion_config.json`` and ``normalization.json`` beside it.

    Args:
        normalization: the dataset's ``normalization.json`` (copied) or a normaliser.
    """
    out_dir = Path(out_dir)
    codec.save_pretrained(out_dir)
    motion_config.save_json(out_dir / MOTION_CONFIG_NAME)
    if isinstance(normalization, FrequencyNormalizer):
        normalization.save_json(out_dir / NORMALIZATION_NAME)
    elif Path(normalization).resolve() != (out_dir / NORMALIZATION_NAME).resolve():
        shutil.copyfile(normalization, out_dir / NORMALIZATION_NAME)
    return out_dir


_CODEC_CLASSES = {"AutoencoderKL": AutoencoderKL, "ResampleSpectralCodec": ResampleSpectralCodec}


def load_spectral_codec(
    path: str | Path,
) -> tuple[AutoencoderKL | ResampleSpectralCodec, MotionConfig, FrequencyNormalizer]:
    """Load what ``save_spectral_codec`` (or ``train_vae.py``) wrote, or a model folder's codec.

    ``path`` is a codec folder, or a ``MotionPipeline`` folder (``sample.py --model``:
    ``model_index.json`` beside ``codec/``), whose motion config and normalisation live in
    its ``model_index.json``; so a shipped model's codec, latent scale included, can be
    reused as it is (``train_unet.py --codec weights/default``).

    Returns:
        ``(codec, motion_config, normalizer)``; the codec's class comes from the
        ``_class_name`` in its ``config.json``.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such codec folder; {_HOW_TO_MAKE}")
    if (path / "model_index.json").is_file():
        return _load_pipeline_codec(path)
    for name in ("config.json", MOTION_CONFIG_NAME, NORMALIZATION_NAME):
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{path}: no {name}, not a spectral codec folder; {_HOW_TO_MAKE}"
            )
    return (
        _load_codec_weights(path),
        MotionConfig.load_json(path / MOTION_CONFIG_NAME),
        FrequencyNormalizer.load_json(path / NORMALIZATION_NAME),
    )


def _load_pipeline_codec(
    path: Path,
) -> tuple[AutoencoderKL | ResampleSpectralCodec, MotionConfig, FrequencyNormalizer]:
    """The codec of a ``MotionPipeline`` folder, with the config and statistics of its index."""
    index_path = path / "model_index.json"
    try:
        index = json.loads(index_path.read_text())
        motion_config = MotionConfig.from_dict(index["motion_config"])
        normalizer = FrequencyNormalizer.from_dict(index["normalization"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{index_path}: not the index of a motion model folder (it needs motion_config "
            f"and normalization; {type(error).__name__}: {error})"
        ) from error
    if not (path / "codec" / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no codec/config.json; {_HOW_TO_MAKE}")
    return _load_codec_weights(path / "codec"), motion_config, normalizer


def _load_codec_weights(path: Path) -> AutoencoderKL | ResampleSpectralCodec:
    """The codec saved in ``path`` (``config.json`` names its class), checked to be one."""
    try:
        class_name = json.loads((path / "config.json").read_text()).get("_class_name")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{path / 'config.json'}: not a valid JSON config ({error})") from error
    if class_name not in _CODEC_CLASSES:
        raise ValueError(
            f"{path / 'config.json'}: _class_name {class_name!r} is not a spectral codec "
            f"(expected one of {sorted(_CODEC_CLASSES)}); {_HOW_TO_MAKE}"
        )
    return _CODEC_CLASSES[class_name].from_pretrained(path)


__all__ = [
    "MOTION_CONFIG_NAME",
    "NORMALIZATION_NAME",
    "ResampleSpectralCodec",
    "SpectralCodec",
    "codec_downsample_factor",
    "codec_latent_channels",
    "compute_codec_scaling_factor",
    "decode_latents",
    "encode_latents",
    "load_spectral_codec",
    "save_spectral_codec",
    "set_codec_scaling_factor",
]
