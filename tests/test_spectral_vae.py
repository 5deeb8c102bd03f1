"""The spectral VAE: shapes, round trips, gradients, losses, scaling factor, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL

from data.config import MotionConfig
from data.spectral import FrequencyNormalizer
from models.spectral_codec import (
    codec_downsample_factor,
    compute_codec_scaling_factor,
    decode_latents,
    encode_latents,
    load_spectral_codec,
    save_spectral_codec,
    set_codec_scaling_factor,
)
from models.spectral_vae import (
    create_spectral_vae,
    default_block_out_channels,
    multiscale_gradient_loss,
    spectral_vae_loss,
)

# Tiny models: one torch thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_vae(factor: int = 4) -> AutoencoderKL:
    torch.manual_seed(0)
    channels = default_block_out_channels(factor, base_channels=8)
    return create_spectral_vae(block_out_channels=channels, norm_num_groups=8, latent_channels=4)


def test_default_channels_and_factor():
    assert default_block_out_channels(8) == (32, 64, 128, 128)
    assert default_block_out_channels(4) == (32, 64, 128)
    assert codec_downsample_factor(create_spectral_vae(8)) == 8
    with pytest.raises(ValueError, match="power of 2"):
        default_block_out_channels(6)
    with pytest.raises(ValueError, match="norm_num_groups"):
        create_spectral_vae(block_out_channels=(8, 16), norm_num_groups=32)


@pytest.mark.parametrize("factor", [4, 8])
def test_encode_decode_shapes(factor):
    vae = tiny_vae(factor)
    spectral = torch.randn(2, 3, 4, 32, 48)  # (B, K, 4, H, W)
    latents = encode_latents(vae, spectral)
    assert latents.shape == (2, 3, 4, 32 // factor, 48 // factor)
    assert decode_latents(vae, latents).shape == spectral.shape
    # Chunked calls give the same result as one call.
    assert torch.allclose(encode_latents(vae, spectral, chunk_size=2), latents, atol=1e-5)
    # Each frequency is encoded on its own: slice k of the batch equals slice k alone.
    alone = encode_latents(vae, spectral[:, 1:2])
    assert torch.allclose(alone, latents[:, 1:2], atol=1e-5)


def test_bad_shapes_are_explained():
    vae = tiny_vae(4)
    with pytest.raises(ValueError, match=r"\(B, K, 4, H, W\)"):
        encode_latents(vae, torch.randn(2, 4, 32, 32))
    with pytest.raises(ValueError, match="multiple"):
        encode_latents(vae, torch.randn(1, 2, 4, 30, 32))


def test_sampled_latents_are_seeded():
    vae = tiny_vae(4)
    spectral = torch.randn(1, 2, 4, 16, 16)
    a = encode_latents(vae, spectral, sample=True, generator=torch.Generator().manual_seed(1))
    b = encode_latents(vae, spectral, sample=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_loss_parts_and_gradients():
    vae = tiny_vae(4)
    slices = torch.randn(4, 4, 32, 32)
    posterior = vae.encode(slices).latent_dist
    reconstruction = vae.decode(posterior.sample()).sample
    losses = spectral_vae_loss(reconstruction, slices, posterior, kl_weight=1e-6)
    expected = losses["l1"] + losses["gradient"] + 1e-6 * losses["kl"]
    assert torch.allclose(losses["loss"], expected)
    losses["loss"].backward()
    grads = [p.grad for p in vae.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_multiscale_gradient_loss():
    x = torch.randn(2, 4, 16, 16)
    assert multiscale_gradient_loss(x, x) == 0
    # A constant offset has no gradient; a ramp has one at every scale.
    assert multiscale_gradient_loss(x + 3.0, x) < 1e-6
    ramp = torch.arange(16.0).expand(2, 4, 16, 16)
    assert multiscale_gradient_loss(x + ramp, x) > 0.5


@torch.no_grad()
def test_scaling_factor_gives_unit_std_and_is_saved(tmp_path):
    vae = tiny_vae(4)
    data = [torch.randn(2, 3, 4, 16, 16) * 0.5 for _ in range(2)]
    factor = compute_codec_scaling_factor(vae, data)
    set_codec_scaling_factor(vae, factor)
    latents = torch.cat([encode_latents(vae, x) for x in data])
    assert abs(float(latents.std()) - 1.0) < 0.02
    # Decoding the scaled latents undoes the scale.
    unscaled = decode_latents(vae, latents[:1])
    set_codec_scaling_factor(vae, 1.0)
    direct = vae.decode(vae.encode(data[0][0]).latent_dist.mode()).sample
    assert torch.allclose(unscaled[0], direct, atol=1e-4)
    set_codec_scaling_factor(vae, factor)

    normalizer = FrequencyNormalizer(scales=[1.0, 2.0, 3.0])
    config = MotionConfig(num_frames=20, fps=10, num_freqs=3, width=16, height=16)
    save_spectral_codec(vae, tmp_path, config, normalizer)
    assert json.loads((tmp_path / "config.json").read_text())["scaling_factor"] == pytest.approx(
        factor
    )
    loaded, loaded_config, loaded_normalizer = load_spectral_codec(tmp_path)
    assert loaded.config.scaling_factor == pytest.approx(factor)
    assert loaded_config == config
    assert loaded_normalizer.to_dict() == normalizer.to_dict()
    for a, b in zip(vae.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = data[1]
    assert torch.equal(encode_latents(vae, x), encode_latents(loaded, x))


def test_load_explains_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_vae.py"):
        load_spectral_codec(tmp_path)


def test_old_import_names_still_resolve_to_the_codec_api():
    """bench_vae.py imports these from models.spectral_vae; they are the codec API's."""
    import models.spectral_codec as codec_module
    import models.spectral_vae as vae_module

    assert vae_module.encode_spectral is codec_module.encode_latents
    assert vae_module.load_spectral_vae is codec_module.load_spectral_codec
    with pytest.raises(AttributeError):
        vae_module.save_spectral_vae  # noqa: B018  (removed: save_spectral_codec saves every codec)


def test_the_vae_module_does_not_import_the_codec_module():
    """No import cycle: models.spectral_vae alone loads without models.spectral_codec."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; import models.spectral_vae; "
        "assert 'models.spectral_codec' not in sys.modules, 'cycle'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
