"""Spectral codecs: the resampling codec, the VAE through the same API, save/load, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers import AutoencoderKL

from data.config import MotionConfig
from data.spectral import FrequencyNormalizer
from models.spectral_codec import (
    ResampleSpectralCodec,
    codec_downsample_factor,
    codec_latent_channels,
    compute_codec_scaling_factor,
    decode_latents,
    encode_latents,
    load_spectral_codec,
    save_spectral_codec,
    set_codec_scaling_factor,
)
from models.spectral_vae import create_spectral_vae, default_block_out_channels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def smooth_field(batch: int = 2, num_freqs: int = 3, height: int = 32, width: int = 48):
    """(B, K, 4, H, W) of low-frequency sinusoids (period >> codec factor)."""
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    out = torch.empty(batch, num_freqs, 4, height, width)
    for b in range(batch):
        for k in range(num_freqs):
            for c in range(4):
                phase = 0.7 * b + 1.3 * k + 0.5 * c
                out[b, k, c] = torch.sin(2 * math.pi * x + phase) * torch.cos(math.pi * y + phase)
    return out


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    channels = default_block_out_channels(4, base_channels=8)
    return create_spectral_vae(block_out_channels=channels, norm_num_groups=8, latent_channels=4)


def motion_and_normalizer(num_freqs: int = 3):
    config = MotionConfig(num_frames=16, fps=8.0, num_freqs=num_freqs, width=48, height=32)
    return config, FrequencyNormalizer([1.0 + k for k in range(num_freqs)], config=config)


@pytest.mark.parametrize("factor", [1, 4, 8])
def test_resample_shapes_and_round_trip(factor):
    codec = ResampleSpectralCodec(downsample_factor=factor)
    spectral = smooth_field(height=64, width=96)
    latents = encode_latents(codec, spectral)
    assert latents.shape == (2, 3, 4, 64 // factor, 96 // factor)
    assert codec_downsample_factor(codec) == factor
    assert codec_latent_channels(codec) == 4
    decoded = decode_latents(codec, latents)
    assert decoded.shape == spectral.shape
    error = (decoded - spectral).abs().mean().item()
    assert error < 0.05, error
    # Encoding is the area average: the mean of each slice is kept exactly.
    assert torch.allclose(latents.mean((-1, -2)), spectral.mean((-1, -2)), atol=1e-5)


def test_scaling_factor_scales_latents_and_cancels_on_decode():
    spectral = smooth_field()
    plain = ResampleSpectralCodec(4)
    scaled = ResampleSpectralCodec(4, scaling_factor=2.5)
    assert torch.allclose(encode_latents(scaled, spectral), 2.5 * encode_latents(plain, spectral))
    round_plain = decode_latents(plain, encode_latents(plain, spectral))
    round_scaled = decode_latents(scaled, encode_latents(scaled, spectral))
    assert torch.allclose(round_plain, round_scaled, atol=1e-5)


def test_compute_scaling_factor_gives_unit_std():
    codec = ResampleSpectralCodec(4)
    data = [{"spectral": 3.0 * torch.randn(3, 4, 32, 48)} for _ in range(4)]
    factor = compute_codec_scaling_factor(codec, data, num_samples=4)
    set_codec_scaling_factor(codec, factor)
    latents = torch.cat([encode_latents(codec, item["spectral"][None]) for item in data])
    assert abs(latents.std().item() - 1.0) < 0.02
    # Computing it again with the factor set gives the same value (unscaled latents).
    assert compute_codec_scaling_factor(codec, data, num_samples=4) == pytest.approx(factor)
    with pytest.raises(ValueError, match="empty"):
        compute_codec_scaling_factor(codec, [], num_samples=4)


def test_vae_through_the_same_api():
    vae = tiny_vae()
    spectral = smooth_field()
    latents = encode_latents(vae, spectral)
    assert latents.shape == (2, 3, 4, 8, 12)
    assert codec_downsample_factor(vae) == 4
    assert decode_latents(vae, latents).shape == spectral.shape


def test_bad_shapes():
    codec = ResampleSpectralCodec(8)
    with pytest.raises(ValueError, match="multiple"):
        encode_latents(codec, torch.zeros(1, 2, 4, 30, 48))
    with pytest.raises(ValueError, match=r"\(B, K, 4, H, W\)"):
        encode_latents(codec, torch.zeros(1, 2, 3, 32, 48))
    with pytest.raises(ValueError, match="latents"):
        decode_latents(codec, torch.zeros(2, 4, 4, 6))
    with pytest.raises(ValueError, match="downsample_factor"):
        ResampleSpectralCodec(0)


@pytest.mark.parametrize("kind", ["resample", "vae"])
def test_save_load_round_trip(tmp_path, kind):
    codec = ResampleSpectralCodec(4, scaling_factor=1.7) if kind == "resample" else tiny_vae()
    config, normalizer = motion_and_normalizer()
    out = save_spectral_codec(codec, tmp_path / "codec", config, normalizer)
    loaded, loaded_config, loaded_normalizer = load_spectral_codec(out)
    assert type(loaded) is type(codec)
    assert loaded_config == config
    assert loaded_normalizer.scales.tolist() == normalizer.scales.tolist()
    spectral = smooth_field()
    assert torch.allclose(encode_latents(loaded, spectral), encode_latents(codec, spectral))
    # The normalisation may also be given as the dataset's normalization.json (copied).
    normalizer.save_json(tmp_path / "normalization.json")
    again = save_spectral_codec(codec, tmp_path / "again", config, tmp_path / "normalization.json")
    assert load_spectral_codec(again)[2].scales.tolist() == normalizer.scales.tolist()


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_vae.py"):
        load_spectral_codec(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json.*ResampleSpectralCodec"):
        load_spectral_codec(tmp_path / "empty")
    # A folder with some other model's config.
    config, normalizer = motion_and_normalizer()
    out = save_spectral_codec(ResampleSpectralCodec(4), tmp_path / "other", config, normalizer)
    raw = json.loads((out / "config.json").read_text())
    raw["_class_name"] = "UNet2DModel"
    (out / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="UNet2DModel.*not a spectral codec"):
        load_spectral_codec(out)
