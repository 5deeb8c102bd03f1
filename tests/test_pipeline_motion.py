"""MotionPipeline: shapes, determinism, batching, save/load, schedulers, guidance, bad input.

Every model is tiny and random, built inside the test (K=4 frequencies, T=12 frames,
32x16 frames, a resampling codec with factor 4 -> latents (B, 4, 4, 4, 8)).
"""

from __future__ import annotations

import inspect
import json
import math
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
    DEFAULT_MASK_PROVIDER,
    MotionPipeline,
    MotionPipelineWarning,
    default_output_size,
    displacement_at_frames,
    feathered_gate,
    frames_per_loop,
    loop_advice,
    loop_loss,
    model_frame_size,
    smooth_spectral,
    steer_direction,
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
        codec=ResampleSpectralCodec(downsample_factor=4, scaling_factor=1.0),
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
    # the model's own frame and no frames: the motion tests' shapes; whole-frame, native
    # size and rendering are tested below
    kwargs.setdefault("crop", True)
    kwargs.setdefault("renderer", None)
    # the model's motion everywhere; the default automatic mask is tested on its own
    kwargs.setdefault("mask_provider", None)
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
        codec=ResampleSpectralCodec(downsample_factor=4),
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
    for name in ("codec", "unet", "scheduler"):
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
        "print(type(p.unet).__name__, type(p.codec).__name__)"
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
    save_spectral_codec(pipe.codec, out / "codec", CONFIG, NORMALIZER)
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
            codec=ResampleSpectralCodec(downsample_factor=4),
            unet=tiny_unet(num_freqs=6),
            scheduler=DDIMScheduler(num_train_timesteps=100),
            motion_config=CONFIG.to_dict(),
            normalization=NORMALIZER.to_dict(),
        )
    with pytest.raises(ValueError, match="multiple"):
        MotionPipeline(
            codec=ResampleSpectralCodec(downsample_factor=32),
            unet=tiny_unet(),
            scheduler=DDIMScheduler(num_train_timesteps=100),
            motion_config=CONFIG.to_dict(),
            normalization=NORMALIZER.to_dict(),
        )
    with pytest.raises(ValueError, match="motion_config"):
        MotionPipeline(
            codec=ResampleSpectralCodec(downsample_factor=4),
            unet=tiny_unet(),
            scheduler=DDIMScheduler(num_train_timesteps=100),
        )


# ----------------------------------------------------------------------- whole frame, any size


@pytest.mark.parametrize("size", [(64, 36), (30, 40), (33, 17)])
def test_whole_photo_at_its_own_size_and_aspect(pipe, size):
    rgb = photo(3, size)
    out = run(pipe, rgb, crop=False, num_frames=5)
    width, height = size
    assert out.images.shape == (1, height, width, 3)
    np.testing.assert_array_equal(out.images[0], rgb)  # nothing cut away, nothing resampled
    assert out.spectral.shape == (1, 4, 4, height, width)
    assert out.displacements.shape == (1, 5, height, width, 2)
    np.testing.assert_allclose(out.displacements[0, 0], 0.0, atol=1e-5)  # frame 0 = the photo


def test_model_frame_keeps_the_budget_and_the_exact_aspect():
    (width, height), padded = model_frame_size(16 / 9, (256, 160), 32)
    assert abs(width / height - 16 / 9) < 0.01 and abs(width * height / (256 * 160) - 1) < 0.02
    assert padded[0] % 32 == 0 and padded[1] % 32 == 0 and padded >= (width, height)
    assert model_frame_size(1.6, (256, 160), 32) == ((256, 160), (256, 160))


def test_default_output_size_caps_the_long_side_and_never_upscales():
    assert default_output_size((1920, 1080)) == (1024, 576)
    assert default_output_size((3000, 4000)) == (768, 1024)
    assert default_output_size((640, 480)) == (640, 480)


def test_explicit_output_size_crops_to_its_aspect_and_warns_on_upscaling(pipe):
    out = run(pipe, photo(4, (60, 30)), crop=False, output_size=(30, 30), num_frames=3)
    assert out.images.shape == (1, 30, 30, 3) and out.spectral.shape[-2:] == (30, 30)
    with pytest.warns(MotionPipelineWarning, match="upscaled"):
        run(pipe, photo(4, (40, 30)), crop=False, output_size=(80, 60), num_frames=2)


def test_motion_scales_with_the_output_size(pipe):
    """The same motion, in pixels of a frame twice as large, is twice as long."""
    small = run(pipe, photo(5, (64, 32)), crop=False, output_size=(32, 16), seed=1)
    large = run(pipe, photo(5, (64, 32)), crop=False, output_size=(64, 32), seed=1)
    ratio = np.abs(large.displacements).mean() / np.abs(small.displacements).mean()
    assert 1.8 < ratio < 2.2, ratio


def test_amplitude_scales_the_motion(pipe):
    one = run(pipe, photo(0), amplitude=1.0)
    three = run(pipe, photo(0), amplitude=3.0)
    np.testing.assert_allclose(three.displacements, 3 * one.displacements, rtol=1e-4, atol=1e-5)
    still = run(pipe, photo(0), amplitude=0.0, renderer="average")
    assert (still.frames[0] == still.images[0]).all()


def _swaying(rms_px: np.ndarray) -> torch.Tensor:
    """``(1, K, 4, H, W)`` spectral volume of an x-cosine at bin 1 whose per-pixel RMS
    displacement is ``rms_px`` (``(H, W)``): ``|S_1| = A / 2`` and RMS ``= A / sqrt(2)``."""
    spectral = torch.zeros(1, CONFIG.num_freqs, 4, *rms_px.shape)
    spectral[0, 1, 0] = torch.from_numpy(rms_px / np.sqrt(2.0)).float()
    return spectral


def test_visible_gain_lifts_the_region_that_may_move_to_the_target():
    """The gain brings the 90th-percentile RMS over mask >= 0.5, in pixels of the model's
    frame, to VISIBLE_MOTION_P90_PX; never below 1x nor above 4x (VISIBLE_GAIN_RANGE)."""
    from models.pipeline_motion import VISIBLE_GAIN_RANGE, VISIBLE_MOTION_P90_PX

    low, high = VISIBLE_GAIN_RANGE
    rms = np.full((40, 64), 0.5, np.float32)
    rms[:, 32:] = 5.0  # what may not move (mask 0) moves a lot: it must not count
    mask = np.zeros((40, 64), np.float32)
    mask[:, :32] = 1.0
    # at the output frame 4 px per model pixel: 0.5 output px = 0.125 model px -> capped
    gains = MotionPipeline.visible_gain(_swaying(rms), [mask], model_px=1.0)
    np.testing.assert_allclose(gains, [VISIBLE_MOTION_P90_PX / 0.5], rtol=1e-4)
    assert MotionPipeline.visible_gain(_swaying(rms), [mask], model_px=4.0)[0] == high
    assert MotionPipeline.visible_gain(_swaying(rms * 10), [mask], 1.0)[0] == low
    # no mask: the whole frame counts, whose 90th percentile is the strong half
    assert MotionPipeline.visible_gain(_swaying(rms), None, 1.0)[0] == low
    # still motion stays still (no division by zero)
    assert MotionPipeline.visible_gain(_swaying(rms * 0), [mask], 1.0)[0] == high


def test_visible_reference_is_the_model_motion_times_its_gain(pipe):
    """The same sample, lifted: displacements x the gain the pipeline reports."""
    model = run(pipe, photo(0), amplitude=0.5)
    assert pipe.last_visible_gains is None
    visible = run(pipe, photo(0), amplitude=0.5, amplitude_reference="visible")
    gain = pipe.last_visible_gains[0]
    assert 1.0 <= gain <= 4.0
    np.testing.assert_allclose(
        visible.displacements, gain * model.displacements, rtol=1e-4, atol=1e-5
    )
    # the gain is measured at amplitude 1, so ``amplitude`` still scales the visible motion
    doubled = run(pipe, photo(0), amplitude=1.0, amplitude_reference="visible")
    assert pipe.last_visible_gains[0] == gain
    np.testing.assert_allclose(
        visible.displacements, 0.5 * doubled.displacements, rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="amplitude_reference"):
        run(pipe, photo(0), amplitude_reference="loud")


def test_speed_and_fps_choose_the_instants(pipe):
    base = run(pipe, photo(0), num_frames=12)  # fps 6 = the model's: frame n = clip frame n
    fast = run(pipe, photo(0), num_frames=6, speed=2.0)
    np.testing.assert_allclose(fast.displacements[0], base.displacements[0, ::2], atol=1e-4)
    slow_fps = run(pipe, photo(0), num_frames=6, fps=3.0)  # 3 fps: every other clip frame
    np.testing.assert_allclose(slow_fps.displacements[0], base.displacements[0, ::2], atol=1e-4)


# ----------------------------------------------------------------------- the motion brush


def _energy(displacements: np.ndarray) -> np.ndarray:
    return np.square(displacements).sum(axis=(0, 3))  # (N, H, W, 2) -> (H, W)


def test_motion_mask_confines_the_motion(pipe):
    rgb = photo(6, (64, 32))
    mask = np.zeros((32, 64), np.uint8)
    mask[:, 32:] = 255  # right half may move
    free = run(pipe, rgb, crop=False, amplitude=5.0)
    masked = run(pipe, rgb, crop=False, amplitude=5.0, motion_mask=mask)
    energy = _energy(masked.displacements[0])
    assert energy[:, :32].sum() == 0.0  # black never moves, even right at the edge
    assert energy[:, :32].sum() <= 0.02 * energy.sum()
    # far from the edge the motion inside is the unmasked motion (the gate only feathers)
    np.testing.assert_allclose(
        masked.displacements[0, :, :, 48:], free.displacements[0, :, :, 48:], rtol=0.05, atol=1e-3
    )
    # feathered: no step from still to full motion at the edge
    kept = energy.mean(axis=0) / _energy(free.displacements[0]).mean(axis=0)  # (W,)
    assert kept[32] < 0.5 and kept[34] < kept[35] < kept[36] and kept[48:].min() > 0.9


def test_feathered_gate_is_smooth_and_exactly_zero_on_black():
    mask = np.zeros((40, 80), np.float32)
    mask[:, 40:] = 1.0
    gate = feathered_gate(mask, 8.0)
    assert (gate[:, :40] == 0).all() and gate[:, 60:].min() > 0.99
    assert np.abs(np.diff(gate, axis=1)).max() < 0.3  # rises over several pixels


def test_motion_mask_inputs(pipe, tmp_path):
    rgb = photo(6, (64, 32))
    half = np.zeros((32, 64), np.uint8)
    half[:, 32:] = 255
    from_array = run(pipe, rgb, crop=False, motion_mask=half).spectral
    Image.fromarray(half).resize((128, 64), Image.NEAREST).save(tmp_path / "mask.png")
    from_file = run(pipe, rgb, crop=False, motion_mask=tmp_path / "mask.png").spectral
    np.testing.assert_allclose(from_file, from_array, atol=1e-3)
    floats = run(pipe, rgb, crop=False, motion_mask=half.astype(np.float32) / 255).spectral
    np.testing.assert_allclose(floats, from_array, atol=1e-6)
    with pytest.raises(ValueError, match="all black"):
        run(pipe, rgb, crop=False, motion_mask=np.zeros((32, 64), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        run(pipe, rgb, crop=False, motion_mask=np.full((32, 64), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        run(pipe, rgb, crop=False, motion_mask=np.full((32, 64), 3.0, np.float32))
    with pytest.warns(MotionPipelineWarning, match="stretched"):
        run(pipe, rgb, crop=False, motion_mask=np.full((50, 50), 255, np.uint8))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="notes.png"):
        run(pipe, rgb, crop=False, motion_mask=tmp_path / "notes.png")


# ----------------------------------------------------------------------- frames


def test_frames_from_one_call(pipe):
    rgb = photo(8, (40, 24))
    out = run(pipe, rgb, crop=False, num_frames=6, renderer="average", amplitude=3.0)
    assert out.frames.shape == (1, 6, 24, 40, 3) and out.frames.dtype == np.uint8
    np.testing.assert_array_equal(out.frames[0, 0], rgb)  # frame 0 is the photo
    assert out.frames[0].std(axis=0).max() > 0  # and the others move
    again = pipe.render(out.images[0], out.displacements[0], "average")
    np.testing.assert_array_equal(again, out.frames[0])
    with pytest.raises(ValueError, match="no learned renderer"):
        run(pipe, rgb, renderer="synthesis")
    with pytest.raises(ValueError, match="renderer must be one of"):
        run(pipe, rgb, renderer="magic")


def test_renderer_component_round_trip(tmp_path):
    from models.frame_synthesis import FrameSynthesisModel

    torch.manual_seed(0)
    pipeline = MotionPipeline(
        codec=ResampleSpectralCodec(downsample_factor=4),
        unet=tiny_unet().eval(),
        scheduler=DDIMScheduler(num_train_timesteps=100),
        renderer=FrameSynthesisModel(block_out_channels=(4, 8), grid_columns=2).eval(),
        motion_config=CONFIG.to_dict(),
        normalization=NORMALIZER.to_dict(),
    )
    pipeline.set_progress_bar_config(disable=True)
    pipeline.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["renderer"] == ["models.frame_synthesis", "FrameSynthesisModel"]
    loaded = MotionPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    a = run(pipeline, photo(1), renderer="auto", num_frames=4).frames
    b = run(loaded, photo(1), renderer="synthesis", num_frames=4).frames
    assert a.shape == (1, 4, 16, 32, 3)
    np.testing.assert_array_equal(a, b)


def test_older_folders_still_load(pipe, tmp_path):
    """A codec saved as ``vae/`` and a renderer in an undeclared ``renderer/`` folder."""
    from models.frame_synthesis import FrameSynthesisModel

    folder = tmp_path / "old"
    pipe.save_pretrained(folder)
    (folder / "codec").rename(folder / "vae")
    index = json.loads((folder / "model_index.json").read_text())
    index["vae"] = index.pop("codec")
    index.pop("renderer", None)
    (folder / "model_index.json").write_text(json.dumps(index))
    FrameSynthesisModel(block_out_channels=(4, 8), grid_columns=2).save_pretrained(
        folder / "renderer"
    )
    loaded = MotionPipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.codec, ResampleSpectralCodec)
    assert isinstance(loaded.renderer, FrameSynthesisModel)
    np.testing.assert_array_equal(run(loaded, photo(2)).spectral, run(pipe, photo(2)).spectral)


@pytest.mark.parametrize(
    ("name", "value"),
    [("guidance_scale", float("inf")), ("guidance_scale", float("nan")), ("guidance_scale", -3.0),
     ("speed", float("inf")), ("speed", 0.0), ("fps", float("inf")), ("amplitude", -1.0),
     ("loop_guidance_scale", float("nan"))],
)  # fmt: skip
def test_non_finite_or_negative_numbers_are_refused(pipe, name, value):
    with pytest.raises(ValueError, match=name):
        run(pipe, photo(0), **{name: value})


def test_auto_renderer_is_the_learned_one_up_to_a_size(pipe):
    from models.frame_synthesis import FrameSynthesisModel
    from models.pipeline_motion import AUTO_SYNTHESIS_MAX_PIXELS

    assert pipe.resolve_renderer("auto", (32, 16)) == "average"  # no learned renderer
    with_renderer = MotionPipeline(
        codec=pipe.codec, unet=pipe.unet, scheduler=pipe.scheduler,
        renderer=FrameSynthesisModel(block_out_channels=(4, 8), grid_columns=2),
        motion_config=CONFIG.to_dict(), normalization=NORMALIZER.to_dict(),
    )  # fmt: skip
    assert with_renderer.resolve_renderer("auto", (512, 320)) == "synthesis"
    assert AUTO_SYNTHESIS_MAX_PIXELS < 1024 * 576
    assert with_renderer.resolve_renderer("auto", (1024, 576)) == "average"
    assert with_renderer.resolve_renderer("softsplat", (1024, 576)) == "softsplat"


# ------------------------------------------------------------ mask-conditioned U-Net


@pytest.fixture(scope="module")
def mask_pipe() -> MotionPipeline:
    """``pipe`` with a U-Net that takes a mask (its mask weights off zero, as trained)."""
    from models.motion_unet import add_mask_conditioning

    unet = add_mask_conditioning(tiny_unet())
    with torch.no_grad():
        weight = unet.image_encoder.layers[0].weight
        weight[:, 3:] = torch.randn(weight[:, 3:].shape, generator=torch.Generator().manual_seed(1))
    pipeline = MotionPipeline(
        codec=ResampleSpectralCodec(downsample_factor=4, scaling_factor=1.0),
        unet=unet.eval(),
        scheduler=DDIMScheduler(num_train_timesteps=100),
        motion_config=CONFIG.to_dict(),
        normalization=NORMALIZER.to_dict(),
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _spy_unet_masks(pipeline: MotionPipeline, monkeypatch) -> list:
    """Record (image, motion_mask) of every U-Net call."""
    calls = []
    forward = pipeline.unet.forward

    def spy(sample, timestep, image, *args, motion_mask=None, **kwargs):
        calls.append((image.clone(), None if motion_mask is None else motion_mask.clone()))
        return forward(sample, timestep, image, *args, motion_mask=motion_mask, **kwargs)

    monkeypatch.setattr(pipeline.unet, "forward", spy)
    return calls


@pytest.mark.parametrize("guidance_scale", [1.0, 2.0])
def test_mask_conditions_the_unet_with_cfg_batches(mask_pipe, monkeypatch, guidance_scale):
    from models.motion_unet import NULL_MASK_VALUE

    calls = _spy_unet_masks(mask_pipe, monkeypatch)
    rgb = photo(6, (64, 32))  # 2:1 -> model frame 32x16, no padding
    mask = np.zeros((32, 64), np.uint8)
    mask[:, 32:] = 255
    run(mask_pipe, [rgb, rgb], crop=False, motion_mask=mask, guidance_scale=guidance_scale)
    image, given = calls[0]
    rows = 4 if guidance_scale > 1 else 2  # CFG: conditional and unconditional in one batch
    assert image.shape == (rows, 3, 16, 32) and given.shape == (rows, 1, 16, 32)
    assert given[:2, :, :, :14].max() == 0 and given[:2, :, :, 18:].min() == 1  # resized mask
    if guidance_scale > 1:  # the unconditional half: zero photo and the null mask
        assert (image[2:] == 0).all() and (given[2:] == NULL_MASK_VALUE).all()
    calls.clear()
    run(mask_pipe, rgb, crop=False)  # no mask given: the null mask
    assert (calls[0][1] == NULL_MASK_VALUE).all()


def test_mask_is_padded_like_the_photo(mask_pipe, monkeypatch):
    calls = _spy_unet_masks(mask_pipe, monkeypatch)
    rgb = photo(7, (45, 30))  # 3:2 -> a model frame that needs padding
    mask = np.zeros((30, 45), np.uint8)
    mask[:15] = 255  # top half
    run(mask_pipe, rgb, crop=False, motion_mask=mask)
    image, given = calls[0]
    assert given.shape[-2:] == image.shape[-2:]
    (model_w, model_h), padded = model_frame_size(1.5, CONFIG.size, mask_pipe.size_multiple)
    assert padded != (model_w, model_h)
    inner = given[0, 0, :model_h, :model_w]
    assert inner[: model_h // 2 - 1].min() == 1 and inner[model_h // 2 + 1 :].max() == 0


def test_mask_changes_the_motion_and_the_gate_stays(mask_pipe):
    rgb = photo(6, (64, 32))
    mask = np.zeros((32, 64), np.uint8)
    mask[:, 32:] = 255
    free = run(mask_pipe, rgb, crop=False, amplitude=5.0)
    masked = run(mask_pipe, rgb, crop=False, amplitude=5.0, motion_mask=mask)
    # the mask is a condition: the motion inside differs from the motion without a mask
    assert not np.allclose(masked.displacements[0, :, :, 48:], free.displacements[0, :, :, 48:])
    assert _energy(masked.displacements[0])[:, :32].sum() == 0.0  # and black never moves


def test_mask_for_a_unet_without_mask_conditioning_is_refused(pipe):
    images, frame = pipe.model_input([photo(1, (32, 16))])
    with pytest.raises(ValueError, match="takes no motion mask"):
        pipe.sample_spectral(images, frame, 2, motion_mask=torch.ones(1, 1, 16, 32))


def test_mask_of_the_wrong_shape_is_refused(mask_pipe):
    images, frame = mask_pipe.model_input([photo(1, (32, 16))])
    with pytest.raises(ValueError, match=r"motion_mask must be \(1, 1, 16, 32\)"):
        mask_pipe.sample_spectral(images, frame, 2, motion_mask=torch.ones(1, 1, 8, 32))


def test_mask_conditioned_pipeline_round_trip(mask_pipe, tmp_path):
    mask_pipe.save_pretrained(tmp_path / "p")
    loaded = MotionPipeline.from_pretrained(tmp_path / "p")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.unet.config.mask_conditioning
    rgb = photo(3, (64, 32))
    mask = np.zeros((32, 64), np.uint8)
    mask[8:] = 255
    a = run(mask_pipe, rgb, crop=False, motion_mask=mask).spectral
    b = run(loaded, rgb, crop=False, motion_mask=mask).spectral
    np.testing.assert_allclose(a, b, atol=1e-6)


# ----------------------------------------------------------- motion gain, default mask


def test_motion_gain_scales_round_trips_and_defaults_to_one(pipe, tmp_path):
    image = photo(3)
    plain = run(pipe, image, seed=2)
    gained = MotionPipeline(**pipe.components, motion_config=CONFIG.to_dict(),
                            normalization=NORMALIZER.to_dict(), motion_gain=2.5)  # fmt: skip
    gained.set_progress_bar_config(disable=True)
    out = run(gained, image, seed=2)
    np.testing.assert_allclose(out.spectral, 2.5 * plain.spectral, rtol=1e-5, atol=1e-6)
    gained.save_pretrained(tmp_path / "gained")
    index = json.loads((tmp_path / "gained" / "model_index.json").read_text())
    assert index["motion_gain"] == 2.5
    assert MotionPipeline.from_pretrained(tmp_path / "gained").config.motion_gain == 2.5
    del index["motion_gain"]  # a folder written before the gain existed
    (tmp_path / "gained" / "model_index.json").write_text(json.dumps(index))
    assert MotionPipeline.from_pretrained(tmp_path / "gained").config.motion_gain == 1.0
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="motion_gain"):
            MotionPipeline(**pipe.components, motion_config=CONFIG.to_dict(),
                           normalization=NORMALIZER.to_dict(), motion_gain=bad)  # fmt: skip


def test_smooth_spectral_removes_cell_scale_ripple_and_keeps_broad_motion():
    """A sway that ripples every 2 px (the kinks of a stem) is flattened, a uniform sway and
    a slow ramp keep their amplitude, edges included; 0 leaves the volume untouched."""
    height, width = 24, 40
    ramp = torch.linspace(0.0, 1.0, width).expand(height, width)
    ripple = torch.tensor([1.0, -1.0]).repeat(width // 2).expand(height, width)
    spectral = torch.zeros(1, CONFIG.num_freqs, 4, height, width)
    spectral[0, 1, 0] = 2.0  # uniform
    spectral[0, 2, 1] = ramp
    spectral[0, 3, 2] = ripple
    smooth = smooth_spectral(spectral, 2.0)
    assert smooth.shape == spectral.shape
    torch.testing.assert_close(smooth[0, 1, 0], spectral[0, 1, 0])
    # a linear ramp is kept away from the edges (a symmetric kernel), stays in range at them
    torch.testing.assert_close(smooth[0, 2, 1, :, 8:-8], ramp[:, 8:-8], atol=1e-5, rtol=0)
    assert smooth[0, 2, 1].min() >= 0.0 and smooth[0, 2, 1].max() <= 1.0
    assert smooth[0, 3, 2].abs().max() < 0.01  # the ripple is gone
    assert smooth_spectral(spectral, 0.0) is spectral
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="motion_smoothing"):
            smooth_spectral(spectral, bad)


def test_motion_smoothing_blurs_before_the_mask_round_trips_and_defaults_to_none(pipe, tmp_path):
    """The pipeline's ``motion_smoothing`` blurs every sample (the call's argument overrides
    it), before the gate: a black brush stays perfectly still. Saved and loaded with the
    folder; a folder written before it has none."""
    image = photo(5, size=(64, 32))
    plain = run(pipe, image, seed=3)
    smoothed = MotionPipeline(**pipe.components, motion_config=CONFIG.to_dict(),
                              normalization=NORMALIZER.to_dict(), motion_smoothing=1.5)  # fmt: skip
    smoothed.set_progress_bar_config(disable=True)
    out = run(smoothed, image, seed=3)
    expected = smooth_spectral(torch.from_numpy(plain.spectral), 1.5).numpy()
    # frame 0 stays the photo: D[0] = 0 is enforced after the blur
    np.testing.assert_allclose(out.displacements[:, 0], 0.0, atol=1e-5)
    first = displacement_at_frames(torch.from_numpy(expected), [0], CONFIG.num_frames)
    expected[:, 0, 0] -= first[:, 0, ..., 0].numpy()
    expected[:, 0, 2] -= first[:, 0, ..., 1].numpy()
    np.testing.assert_allclose(out.spectral, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        run(smoothed, image, seed=3, motion_smoothing=0.0).spectral, plain.spectral, atol=1e-6
    )
    mask = np.ones((32, 64), np.float32)
    mask[:, :20] = 0.0
    brushed = run(smoothed, image, seed=3, motion_mask=mask, crop=False, output_size=(64, 32))
    assert np.abs(brushed.displacements[0][:, :, :20]).max() == 0.0
    assert np.abs(brushed.displacements[0][:, :, 40:]).max() > 0.0
    smoothed.save_pretrained(tmp_path / "smoothed")
    index_path = tmp_path / "smoothed" / "model_index.json"
    index = json.loads(index_path.read_text())
    assert index["motion_smoothing"] == 1.5
    assert MotionPipeline.from_pretrained(tmp_path / "smoothed").config.motion_smoothing == 1.5
    del index["motion_smoothing"]  # a folder written before it
    index_path.write_text(json.dumps(index))
    assert MotionPipeline.from_pretrained(tmp_path / "smoothed").config.motion_smoothing == 0.0
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="motion_smoothing"):
            MotionPipeline(**pipe.components, motion_config=CONFIG.to_dict(),
                           normalization=NORMALIZER.to_dict(), motion_smoothing=bad)  # fmt: skip
        with pytest.raises(ValueError, match="motion_smoothing"):
            run(pipe, image, motion_smoothing=bad)


def _energy_along(spectral: torch.Tensor, degrees: float) -> float:
    """Share of the energy (bins >= 1) of ``(B, K, 4, H, W)`` along the axis ``degrees``
    (counter-clockwise as seen: y points down in the picture)."""
    radians = math.radians(degrees)
    along = spectral[:, 1:, 0:2] * math.cos(radians) - spectral[:, 1:, 2:4] * math.sin(radians)
    return float(along.square().sum() / spectral[:, 1:].square().sum())


def test_steer_direction_sways_along_the_axis_and_keeps_the_energy():
    """Random (isotropic) motion: at full strength none is left across the axis, at 0.8 a
    fifth of the across part (a 25th of its energy); each volume keeps its energy over the
    bins k >= 1; 180 degrees is 0, 90 is up-down, 45 lower left to upper right."""
    spectral = torch.randn(
        2, CONFIG.num_freqs, 4, 12, 16, generator=torch.Generator().manual_seed(0)
    )
    spectral[1] *= 3.0  # a second photo with more motion keeps its own energy
    for degrees in (0.0, 90.0, 45.0, -30.0):
        steered = steer_direction(spectral, degrees, 1.0)
        assert _energy_along(steered, degrees) == pytest.approx(1.0, abs=1e-5)
        energy = spectral[:, 1:].square().sum(dim=(1, 2, 3, 4))
        torch.testing.assert_close(steered[:, 1:].square().sum(dim=(1, 2, 3, 4)), energy)
    torch.testing.assert_close(
        steer_direction(spectral, 180.0, 1.0), steer_direction(spectral, 0.0, 1.0)
    )
    vertical = steer_direction(spectral, 90.0, 1.0)
    assert vertical[:, :, 0:2].abs().max() < 1e-5  # no x motion left
    upward_right = steer_direction(spectral, 45.0, 1.0)  # x and -y move together
    torch.testing.assert_close(upward_right[:, :, 0:2], -upward_right[:, :, 2:4])
    before = _energy_along(spectral, 0.0)
    partial = _energy_along(steer_direction(spectral, 0.0, 0.8), 0.0)
    assert partial == pytest.approx(before / (before + 0.04 * (1.0 - before)), abs=1e-4)
    assert steer_direction(spectral, 30.0, 0.0) is spectral
    still = torch.zeros_like(spectral)
    assert steer_direction(still, 0.0, 1.0).abs().max() == 0.0  # no motion: none made
    for bad in (
        (float("nan"), 0.8),
        (float("inf"), 0.8),
        (0.0, 1.5),
        (0.0, -0.1),
        (0.0, float("nan")),
    ):
        with pytest.raises(ValueError, match="motion_direction|direction_strength"):
            steer_direction(spectral, *bad)


def test_motion_direction_steers_the_sampled_motion_before_the_mask(pipe):
    """The call's ``motion_direction`` makes the sample sway along the axis (the same seed
    otherwise unchanged in energy), a black brush still never moves, bad values fail before
    sampling."""
    image = photo(5, size=(64, 32))
    plain = run(pipe, image, seed=3, crop=False, output_size=(64, 32))
    steered = run(pipe, image, seed=3, crop=False, output_size=(64, 32), motion_direction=90.0,
                  direction_strength=1.0)  # fmt: skip
    assert _energy_along(torch.from_numpy(plain.spectral), 90.0) < 0.9
    assert _energy_along(torch.from_numpy(steered.spectral), 90.0) > 0.999
    assert np.abs(steered.displacements[..., 0]).max() < 1e-4  # no x motion in any frame
    mask = np.ones((32, 64), np.float32)
    mask[:, :20] = 0.0
    brushed = run(pipe, image, seed=3, motion_mask=mask, crop=False, output_size=(64, 32),
                  motion_direction=0.0)  # fmt: skip
    assert np.abs(brushed.displacements[0][:, :, :20]).max() == 0.0
    for bad in (
        {"motion_direction": float("nan")},
        {"motion_direction": 0.0, "direction_strength": 2.0},
    ):
        with pytest.raises(ValueError, match="motion_direction|direction_strength"):
            run(pipe, image, **bad)


def test_loop_advice_says_when_an_animation_jumps_where_it_wraps():
    """sample.py's defaults (T 150 at 30 fps): 150 frames are one period, 300 two; 60 jump and
    150 is suggested; speed and fps change the period; half a frame is tolerated."""
    config = MotionConfig()  # the shipped model's T and fps
    assert frames_per_loop(config, 30.0) == 150.0
    assert frames_per_loop(config, 30.0, speed=2.0) == 75.0
    assert frames_per_loop(config, 15.0) == 75.0
    assert loop_advice(150, config, 30.0) is None and loop_advice(300, config, 30.0) is None
    assert loop_advice(75, config, 30.0, speed=2.0) is None
    advice = loop_advice(60, config, 30.0)
    assert "0.40 periods" in advice and "150 frames loop seamlessly" in advice
    assert "300 frames loop seamlessly" in loop_advice(280, config, 30.0)
    assert loop_advice(214, config, 30.0, speed=0.7) is None  # 214.29 frames: within half a frame


def sky_over_grass(width=128, height=96) -> np.ndarray:
    """Flat blue sky above textured green grass."""
    rng = np.random.default_rng(0)
    image = np.empty((height, width, 3), np.uint8)
    image[: height // 2] = (110, 160, 225)
    grass = rng.integers(0, 90, (height - height // 2, width, 1))
    image[height // 2 :] = np.clip(np.array([40, 120, 30]) + grass - 45, 0, 255)
    return image


def test_default_mask_keeps_the_sky_still_and_moves_the_grass(pipe):
    image = sky_over_grass()
    common = dict(seed=4, crop=False, output_size=(128, 96))
    default = run(pipe, image, mask_provider=DEFAULT_MASK_PROVIDER, **common)
    ungated = run(pipe, image, mask_provider=None, **common)
    energy, whole = _energy(default.displacements[0]), _energy(ungated.displacements[0])
    sky, grass = slice(0, 40), slice(56, 96)
    assert energy[sky].max() == 0.0  # gated: black never moves
    assert whole[sky].mean() > 0.0  # the model alone moves the sky too
    np.testing.assert_allclose(energy[grass].mean(), whole[grass].mean(), rtol=0.2)
    # the pipeline's default is the automatic mask
    assert (
        inspect.signature(MotionPipeline.__call__).parameters["mask_provider"].default
        == DEFAULT_MASK_PROVIDER
        == "cues"
    )


def test_a_photo_with_nothing_that_may_move_is_animated_whole_with_a_warning(pipe):
    grey = np.full((96, 128, 3), 128, np.uint8)
    common = dict(seed=4, crop=False, output_size=(128, 96))
    with pytest.warns(MotionPipelineWarning, match="finds nothing that may move"):
        default = run(pipe, grey, mask_provider=DEFAULT_MASK_PROVIDER, **common)
    ungated = run(pipe, grey, mask_provider=None, **common)
    np.testing.assert_allclose(default.displacements, ungated.displacements, atol=1e-6)


def test_band_fractions_put_each_wavelength_in_its_band_and_the_blur_moves_energy_up():
    """benchmarks/bench_motion_smoothness.py's measure: a uniform sway is all "> 64 px", a
    4 px ripple "< 8 px", a 20 px wave "16-32 px"; a still volume has no shares; the
    pipeline's blur moves a mix's energy towards the long wavelengths."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_motion_smoothness import BAND_NAMES, band_fractions

    assert BAND_NAMES == (">64", "32-64", "16-32", "8-16", "<8")
    height, width = 40, 80
    x = np.arange(width, dtype=np.float64)
    volume = np.zeros((CONFIG.num_freqs, 4, height, width))
    volume[0, 0] = 5.0  # the DC term (frequency 0 in time) does not count
    volume[1, 0] = 1.0
    np.testing.assert_allclose(band_fractions(volume), [1, 0, 0, 0, 0], atol=1e-12)
    ripple = np.zeros_like(volume)
    ripple[2, 1] = np.cos(2 * np.pi * x / 4.0)
    np.testing.assert_allclose(band_fractions(ripple), [0, 0, 0, 0, 1], atol=1e-12)
    wave = np.zeros_like(volume)
    wave[3, 3] = np.sin(2 * np.pi * x / 20.0)
    np.testing.assert_allclose(band_fractions(wave), [0, 0, 1, 0, 0], atol=1e-12)
    assert not band_fractions(np.zeros_like(volume)).any()
    mix = volume + ripple + wave
    blurred = smooth_spectral(torch.from_numpy(mix)[None], 2.0)[0].numpy()
    before, after = band_fractions(mix), band_fractions(blurred)
    assert after[4] < 0.05 * before[4]  # the ripple is gone (what is left: the edges)
    assert after[2] / after[0] < before[2] / before[0]  # the wave loses more than the sway


def test_stem_curvature_is_zero_for_a_rigid_tilt_and_large_for_a_kink():
    """bench_motion_smoothness.py --saved_motion: a stem that tilts as a line has no
    curvature, one whose displacement zigzags down its rows has; a box off the frame fails."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_motion_smoothness import stem_curvature

    height, width = 30, 12
    rows = np.arange(height, dtype=np.float32)[:, None].repeat(width, axis=1)
    tilt = np.zeros((CONFIG.num_freqs, 4, height, width), np.float32)
    tilt[1, 1] = 0.1 * rows  # x sways as sin, proportional to the row: a straight line
    rms, largest, p99, most = stem_curvature(tilt, (4, 8, 0, height))
    assert rms > 0.5 and largest > 2.0 and most < 1e-5
    kink = tilt.copy()
    kink[1, 1, ::2] += 0.5
    assert stem_curvature(kink, (4, 8, 0, height))[2] > 0.5
    with pytest.raises(ValueError, match="--box"):
        stem_curvature(tilt, (4, 20, 0, height))
