"""MotionPipeline: shapes, determinism, batching, save/load, schedulers, guidance, bad input.

Every model is tiny and random, built inside the test (K=4 frequencies, T=12 frames,
32x16 frames, a resampling codec with factor 4 -> latents (B, 4, 4, 4, 8)).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
)
from PIL import Image

from data.config import MotionConfig
from data.spectral import FrequencyNormalizer, spectral_to_displacement
from models.motion_unet import MotionUNet
from models.pipeline_motion import (
    MotionPipeline,
    displacement_at_frames,
    loop_loss,
)
from models.spectral_codec import ResampleSpectralCodec, save_spectral_codec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = MotionConfig(num_frames=12, fps=6.0, num_freqs=4, width=32, height=16)
NORMALIZER = FrequencyNormalizer([2.0, 1.0, 0.5, 0.25], 95.0, 3, CONFIG)


def tiny_unet(num_freqs: int = CONFIG.num_freqs, latent_channels: int = 4) -> MotionUNet:
    torch.manual_seed(0)
    return MotionUNet(
        num_freqs=num_freqs,
        latent_channels=latent_channels,
        image_downsample_factor=4,
        image_embed_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=8,
    )


@pytest.fixture(scope="module")
def pipe() -> MotionPipeline:
    pipeline = MotionPipeline(
        vae=ResampleSpectralCodec(downsample_factor=4, scaling_factor=1.0),
        unet=tiny_unet().eval(),
        scheduler=DDIMScheduler(num_train_timesteps=100),
        motion_config=CONFIG.to_dict(),
        normalization=NORMALIZER.to_dict(),
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def photo(seed: int, size=(40, 30)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def run(pipe, image, seed=0, **kwargs):
    generator = (
        [torch.Generator().manual_seed(s) for s in seed]
        if isinstance(seed, list)
        else torch.Generator().manual_seed(seed)
    )
    kwargs.setdefault("num_inference_steps", 3)
    return pipe(image, generator=generator, **kwargs)


# ----------------------------------------------------------------------- maths helpers


def test_displacement_at_frames_matches_inverse_fft():
    spectral = torch.randn(2, 4, 4, 5, 6, dtype=torch.float64)
    full = spectral_to_displacement(spectral, 12)  # (B, T, H, W, 2)
    picked = displacement_at_frames(spectral, [0, 5, 11, 23], 12)
    torch.testing.assert_close(picked[:, :3], full[:, [0, 5, 11]])
    torch.testing.assert_close(picked[:, 3], full[:, 11])  # periodic: frame 23 = frame 11


def test_loop_loss_zero_for_equal_frames_and_counts_gradients():
    first = torch.randn(2, 5, 6, 2)
    assert torch.all(loop_loss(first, first.clone()) == 0)
    last = first.clone()
    last[0, 2, 3, 0] += 1.0  # one pixel off by 1 px: 1 + 2 (x-grad) + 2 (y-grad)
    torch.testing.assert_close(loop_loss(first, last), torch.tensor([5.0, 0.0]))


# ----------------------------------------------------------------------- the call


def test_shapes_and_units(pipe):
    out = run(pipe, photo(0))
    assert out.spectral.shape == (1, 4, 4, 16, 32)
    assert out.displacements.shape == (1, 12, 16, 32, 2)
    assert out.images.shape == (1, 16, 32, 3) and out.images.dtype == np.uint8
    # the displacements are the inverse FFT of the returned spectral volume
    expected = spectral_to_displacement(out.spectral[0], 12)
    np.testing.assert_allclose(out.displacements[0], expected, atol=1e-4)
    longer = run(pipe, photo(0), num_frames=30)
    assert longer.displacements.shape == (1, 30, 16, 32, 2)
    np.testing.assert_allclose(longer.displacements[0, 12:24], out.displacements[0], atol=1e-4)
    as_torch = run(pipe, photo(0), output_type="pt")
    assert isinstance(as_torch.spectral, torch.Tensor) and as_torch.images.shape == (1, 3, 16, 32)
    np.testing.assert_allclose(as_torch.spectral.numpy(), out.spectral, atol=1e-6)


def test_deterministic_with_generator(pipe):
    a, b = run(pipe, photo(0), seed=3), run(pipe, photo(0), seed=3)
    np.testing.assert_array_equal(a.spectral, b.spectral)
    c = run(pipe, photo(0), seed=4)
    assert not np.allclose(a.spectral, c.spectral)


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_batch_equals_single_calls(pipe, guidance_scale):
    batch = run(pipe, [photo(0), photo(1)], seed=[5, 6], guidance_scale=guidance_scale)
    one = run(pipe, photo(0), seed=5, guidance_scale=guidance_scale)
    two = run(pipe, photo(1), seed=6, guidance_scale=guidance_scale)
    np.testing.assert_allclose(batch.spectral[0], one.spectral[0], atol=1e-5)
    np.testing.assert_allclose(batch.spectral[1], two.spectral[0], atol=1e-5)


def test_classifier_free_guidance_changes_the_result(pipe):
    plain = run(pipe, photo(0), guidance_scale=1.0)
    guided = run(pipe, photo(0), guidance_scale=4.0)
    assert np.isfinite(guided.spectral).all()
    assert not np.allclose(plain.spectral, guided.spectral)


def test_ddim_and_dpm_solver_both_run():
    pipeline = MotionPipeline(
        vae=ResampleSpectralCodec(downsample_factor=4),
        unet=tiny_unet().eval(),
        scheduler=DDIMScheduler(num_train_timesteps=100),
        motion_config=CONFIG.to_dict(),
        normalization=NORMALIZER.to_dict(),
    )
    pipeline.set_progress_bar_config(disable=True)
    ddim = run(pipeline, photo(0), num_inference_steps=4)
    pipeline.set_scheduler("dpm")
    assert isinstance(pipeline.scheduler, DPMSolverMultistepScheduler)
    assert pipeline.scheduler.config.num_train_timesteps == 100  # configured like the old one
    with pytest.raises(ValueError, match="scheduler must be one of"):
        pipeline.set_scheduler("plms")
    dpm = run(pipeline, photo(0), num_inference_steps=4)
    dpm_again = run(pipeline, photo(0), num_inference_steps=4)  # multistep state is reset
    assert np.isfinite(dpm.spectral).all()
    np.testing.assert_array_equal(dpm.spectral, dpm_again.spectral)
    assert not np.allclose(ddim.spectral, dpm.spectral)
    # loop guidance works with DPM-Solver too
    looped = run(pipeline, photo(0), num_inference_steps=4, loop_guidance_scale=1.0)
    assert np.isfinite(looped.spectral).all()


def _loop_error(out) -> float:
    d = out.displacements
    return float(np.linalg.norm(d[:, -1] - d[:, 0], axis=-1).mean())


def test_loop_guidance_reduces_loop_error(pipe):
    """On an untrained model the raw sample's loop error is large; guidance must cut it."""
    errors = {
        scale: np.mean(
            [_loop_error(run(pipe, photo(s), seed=s, loop_guidance_scale=scale)) for s in range(3)]
        )
        for scale in (0.0, 1.0)
    }
    assert errors[1.0] < 0.7 * errors[0.0], errors
    assert len(pipe.loop_losses) == 3  # one loss per step was recorded


# ----------------------------------------------------------------------- save / load


def test_save_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["motion_config"] == CONFIG.to_dict()
    for name in ("vae", "unet", "scheduler"):
        assert (tmp_path / "pipe" / name).is_dir()
    loaded = MotionPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.motion_config == CONFIG
    with pytest.raises(AttributeError):  # one source of truth: the saved config
        loaded.motion_config = MotionConfig(num_freqs=2)
    np.testing.assert_array_equal(loaded.normalizer.scales, NORMALIZER.scales)
    np.testing.assert_array_equal(
        run(loaded, photo(2), loop_guidance_scale=0.5).spectral,
        run(pipe, photo(2), loop_guidance_scale=0.5).spectral,
    )


@pytest.mark.slow
def test_from_pretrained_in_a_fresh_process(pipe, tmp_path):
    """diffusers only loads classes of modules already imported: from_pretrained must do it."""
    pipe.save_pretrained(tmp_path / "pipe")
    code = (
        "import sys; sys.path.insert(0, '.');"
        "from models.pipeline_motion import MotionPipeline;"
        f"p = MotionPipeline.from_pretrained({str(tmp_path / 'pipe')!r});"
        "print(type(p.unet).__name__, type(p.vae).__name__)"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["MotionUNet", "ResampleSpectralCodec"]


def test_from_training_output(pipe, tmp_path):
    out = tmp_path / "train_out"
    pipe.unet.save_pretrained(out / "unet")
    DDPMScheduler(num_train_timesteps=100).save_pretrained(out / "scheduler")
    save_spectral_codec(pipe.vae, out / "codec", CONFIG, NORMALIZER)
    loaded = MotionPipeline.from_training_output(out)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, DDIMScheduler)
    np.testing.assert_allclose(run(loaded, photo(0)).spectral, run(pipe, photo(0)).spectral)
    with pytest.raises(FileNotFoundError, match="from_training_output"):
        MotionPipeline.from_pretrained(out)
    with pytest.raises(FileNotFoundError, match="train_unet.py"):
        MotionPipeline.from_training_output(tmp_path / "nothing")


# ----------------------------------------------------------------------- bad input


def test_photos_of_any_mode(pipe, tmp_path):
    rgb = photo(7, (48, 24))
    base = run(pipe, Image.fromarray(rgb)).images[0]
    np.testing.assert_array_equal(run(pipe, rgb).images[0], base)
    rgba = Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA")
    np.testing.assert_array_equal(run(pipe, rgba).images[0], base)
    gray = Image.fromarray(rgb[..., 0])
    assert run(pipe, gray).images.shape == (1, 16, 32, 3)
    deep = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)  # 16-bit grayscale
    np.testing.assert_array_equal(run(pipe, deep).images[0], run(pipe, gray).images[0])
    # EXIF orientation 6 (rotate 90 degrees clockwise to view): a 24x48 file shows as 48x24
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1)))
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.png", exif=exif)
    rotated = run(pipe, Image.open(tmp_path / "rotated.png")).images[0]
    np.testing.assert_array_equal(rotated, base)  # upright again
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1
    np.testing.assert_array_equal(run(pipe, tensor).images[0], base)
    with pytest.raises(TypeError, match="PIL image"):
        run(pipe, 3.0)
    with pytest.raises(ValueError, match="uint8"):
        run(pipe, rgb.astype(np.int64))


def test_not_a_pipeline_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train_unet.py"):
        MotionPipeline.from_pretrained(tmp_path / "empty")


def test_config_disagreement_is_refused():
    with pytest.raises(ValueError, match="num_freqs"):
        MotionPipeline(
            vae=ResampleSpectralCodec(downsample_factor=4),
            unet=tiny_unet(num_freqs=6),
            scheduler=DDIMScheduler(num_train_timesteps=100),
            motion_config=CONFIG.to_dict(),
            normalization=NORMALIZER.to_dict(),
        )
    with pytest.raises(ValueError, match="multiple"):
        MotionPipeline(
            vae=ResampleSpectralCodec(downsample_factor=32),
            unet=tiny_unet(),
            scheduler=DDIMScheduler(num_train_timesteps=100),
            motion_config=CONFIG.to_dict(),
            normalization=NORMALIZER.to_dict(),
        )
    with pytest.raises(ValueError, match="motion_config"):
        MotionPipeline(
            vae=ResampleSpectralCodec(downsample_factor=4),
            unet=tiny_unet(),
            scheduler=DDIMScheduler(num_train_timesteps=100),
        )
