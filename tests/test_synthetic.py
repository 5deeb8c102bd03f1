"""Synthetic oscillation: exact spectra, D_0 = 0, motion on vegetation, forward warp."""

import json

import numpy as np
import pytest

from data.config import MotionConfig
from data.spectral import displacement_to_spectral, spectral_to_displacement
from data.synthetic import (
    LEGACY_VEGETATION_FALLOFF,
    VEGETATION_FALLOFF,
    allowed_bins,
    estimate_motion_regions,
    synthesize_motion,
    synthesize_oscillation,
    write_synthetic_dataset,
)

# Short clips keep the tests fast; 0.5 Hz bins: 0.5 .. 3.5 Hz with K = 8.
CONFIG = MotionConfig(num_frames=20, fps=10.0, num_freqs=8, width=64, height=48)


def green_and_blue(height=48, width=64, seed=0):
    """Flat blue sky on top, green textured foliage below."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[: height // 2] = (90, 150, 230)
    texture = rng.integers(0, 90, size=(height - height // 2, width))
    image[height // 2 :, :, 0] = 30 + texture // 3
    image[height // 2 :, :, 1] = 100 + texture
    image[height // 2 :, :, 2] = 20 + texture // 4
    return image


@pytest.fixture(scope="module")
def clip():
    return synthesize_oscillation(green_and_blue(), CONFIG, seed=3)


def test_shapes_and_types(clip):
    t, k, h, w = CONFIG.num_frames, CONFIG.num_freqs, CONFIG.height, CONFIG.width
    assert clip.frames.shape == (t, h, w, 3) and clip.frames.dtype == np.uint8
    assert clip.displacement.shape == (t, h, w, 2) and clip.displacement.dtype == np.float32
    assert clip.spectral.shape == (k, 4, h, w) and clip.spectral.dtype == np.float32
    assert clip.motion_mask.shape == (h, w) and clip.motion_mask.dtype == np.float32
    json.dumps(clip.metadata)  # serialisable as it is


def test_deterministic_with_seed(clip):
    again = synthesize_oscillation(green_and_blue(), CONFIG, seed=3)
    np.testing.assert_array_equal(again.displacement, clip.displacement)
    np.testing.assert_array_equal(again.frames, clip.frames)
    other = synthesize_oscillation(green_and_blue(), CONFIG, seed=4)
    assert np.abs(other.displacement - clip.displacement).max() > 0.1


def test_spectral_volume_is_exact(clip):
    np.testing.assert_array_equal(
        clip.spectral, displacement_to_spectral(clip.displacement, CONFIG.num_freqs)
    )
    np.testing.assert_allclose(
        spectral_to_displacement(clip.spectral, CONFIG.num_frames), clip.displacement, atol=1e-5
    )


def test_analytic_spectrum_matches_fft():
    masks = estimate_motion_regions(green_and_blue())
    disp, analytic, modes = synthesize_motion(masks, CONFIG, seed=0)
    assert modes
    np.testing.assert_allclose(
        displacement_to_spectral(disp, CONFIG.num_freqs), analytic, atol=1e-5
    )


def test_first_frame_is_the_photo_and_does_not_move(clip):
    assert np.all(clip.displacement[0] == 0.0)
    np.testing.assert_array_equal(clip.frames[0], green_and_blue())


def test_motion_sits_on_the_vegetation(clip):
    magnitude = np.linalg.norm(clip.displacement, axis=-1).mean(axis=0)  # (H, W)
    h = CONFIG.height
    sky, foliage = magnitude[: h // 2 - 6].mean(), magnitude[h // 2 + 6 :].mean()
    assert foliage > 0.3
    assert foliage > 50 * sky
    masks = estimate_motion_regions(green_and_blue())
    assert masks["vegetation"][h // 2 + 6 :].mean() > 0.5
    assert masks["sky"][: h // 2 - 6].mean() > 0.5
    assert masks["water"].max() < 0.05
    # mostly horizontal sway
    assert np.abs(clip.displacement[..., 0]).mean() > 1.5 * np.abs(clip.displacement[..., 1]).mean()


@pytest.mark.parametrize("falloff", [None, LEGACY_VEGETATION_FALLOFF])
def test_mode_amplitudes_fall_as_f_to_the_minus_falloff(falloff):
    # Vegetation modes: RMS = A * (f_ref / f) ** falloff * U(0.5, 1): 1.5 by default
    # (calibrated on tree.avi), 1 for the teacher of before issue 15.
    masks = estimate_motion_regions(green_and_blue())
    config = MotionConfig(num_frames=60, fps=30.0, num_freqs=7, width=64, height=48)
    f_ref = allowed_bins(config)[0] * config.fps / config.num_frames
    kwargs = {} if falloff is None else {"vegetation_falloff": falloff}
    exponent = VEGETATION_FALLOFF if falloff is None else falloff
    ratios, freqs = [], set()
    for seed in range(10):
        _, _, modes = synthesize_motion(masks, config, seed=seed, amplitude=1.5, **kwargs)
        ratios += [m["amplitude_px"] * (m["frequency_hz"] / f_ref) ** exponent / 1.5 for m in modes]
        freqs |= {m["frequency_hz"] for m in modes}
    assert len(ratios) == 40  # 4 vegetation modes per clip, no water
    assert len(freqs) > 2  # several bins drawn, so the exponent is really tested
    assert min(ratios) >= 0.5 - 1e-9 and max(ratios) <= 1.0 + 1e-9
    with pytest.raises(ValueError, match="vegetation_falloff"):
        synthesize_motion(masks, config, amplitude=1.5, vegetation_falloff=float("nan"))


def test_dataset_amplitudes_are_log_uniform(tmp_path):
    photos = [green_and_blue(seed=s) for s in range(2)]
    small = MotionConfig(num_frames=10, fps=10.0, num_freqs=4, width=32, height=24)
    write_synthetic_dataset(photos, tmp_path / "out", 20, seed=3, config=small)
    clips = json.loads((tmp_path / "out" / "manifest.json").read_text())["clips"]
    amplitudes = np.array([c["amplitude_px"] for c in clips])
    assert amplitudes.min() >= 0.6 and amplitudes.max() <= 3.0
    # log-uniform on [0.6, 3]: the median is sqrt(0.6 * 3) = 1.34, not the mean 1.8
    assert 1.0 < np.median(amplitudes) < 1.7
    assert (amplitudes < 1.34).mean() == pytest.approx(0.5, abs=0.2)
    with pytest.raises(ValueError, match="amplitude_distribution"):
        write_synthetic_dataset(photos, tmp_path / "x", config=small, amplitude_distribution="x")
    with pytest.raises(ValueError, match="amplitude_range"):
        write_synthetic_dataset(photos, tmp_path / "y", config=small, amplitude_range=(0, 1))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_frequencies_on_bins_within_range():
    # 1 Hz bins up to 7 Hz: only 1, 2 and 3 Hz may carry motion.
    config = MotionConfig(num_frames=30, fps=30.0, num_freqs=8, width=64, height=48)
    np.testing.assert_array_equal(allowed_bins(config), [1, 2, 3])
    clip = synthesize_oscillation(green_and_blue(), config, seed=0, render=False)
    assert clip.frames is None
    energy = np.abs(clip.spectral).max(axis=(1, 2, 3))
    assert np.all(energy[4:] < 1e-6) and energy[1:4].max() > 0.1
    for mode in clip.metadata["modes"]:
        assert 0.2 <= mode["frequency_hz"] <= 3.0
        assert mode["frequency_hz"] == pytest.approx(mode["bin"] * config.fps / config.num_frames)
    with pytest.raises(ValueError, match="no FFT bin"):
        allowed_bins(config, (3.2, 3.8))


def test_forward_warp_moves_a_bright_dot_to_p_plus_d():
    height, width = 48, 64
    image = np.full((height, width, 3), 20, dtype=np.uint8)
    py, px = 24, 30
    image[py, px] = 255
    masks = {"vegetation": np.ones((height, width), np.float32)}
    clip = synthesize_oscillation(image, CONFIG, seed=7, amplitude=1.5, masks=masks)
    moved = 0
    for t in range(CONFIG.num_frames):
        dx, dy = clip.displacement[t, py, px]
        brightness = clip.frames[t, ..., 0].astype(np.float64) - 20.0
        rows, cols = np.mgrid[0:height, 0:width]
        near = (np.abs(rows - py) <= 6) & (np.abs(cols - px) <= 6)
        weights = np.where(near, brightness, 0.0)
        cy, cx = (weights * rows).sum() / weights.sum(), (weights * cols).sum() / weights.sum()
        assert cx == pytest.approx(px + dx, abs=0.15) and cy == pytest.approx(py + dy, abs=0.15)
        moved += np.hypot(dx, dy) > 0.5
    assert moved > 5  # the dot really travelled (a backward warp would move it to p - D)


def test_clear_errors():
    with pytest.raises(ValueError, match="uint8"):
        synthesize_oscillation(np.zeros((8, 8, 3), np.float32), CONFIG)
    with pytest.raises(ValueError, match="mask 'vegetation'"):
        synthesize_oscillation(
            np.zeros((8, 8, 3), np.uint8), CONFIG, masks={"vegetation": np.ones((4, 4))}
        )


def test_still_image_gives_still_clip():
    gray = np.full((48, 64, 3), 128, dtype=np.uint8)
    clip = synthesize_oscillation(gray, CONFIG, seed=0)
    assert np.all(clip.displacement == 0) and np.all(clip.frames == gray)


def test_write_synthetic_dataset(tmp_path):
    photo_path = tmp_path / "garden.png"
    import cv2

    cv2.imwrite(str(photo_path), green_and_blue(96, 128)[..., ::-1])
    photos = [photo_path, green_and_blue(seed=1)]
    videos = write_synthetic_dataset(photos, tmp_path / "out", 2, seed=7, config=CONFIG)
    assert [v.name for v in videos] == [
        "0000_garden_0.mp4",
        "0000_garden_1.mp4",
        "0001_photo_0.mp4",
        "0001_photo_1.mp4",
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["clips"]) == 4 and manifest["motion_config"] == CONFIG.to_dict()
    data = np.load(tmp_path / "out" / "0000_garden_1.npz")
    assert data["spectral"].shape == (CONFIG.num_freqs, 4, CONFIG.height, CONFIG.width)
    assert data["first_frame"].shape == (CONFIG.height, CONFIG.width, 3)
    assert all(v.stat().st_size > 0 for v in videos)
    # same seed, same dataset
    write_synthetic_dataset(photos[:1], tmp_path / "again", 2, seed=7, config=CONFIG)
    again = np.load(tmp_path / "again" / "0000_garden_1.npz")
    np.testing.assert_array_equal(again["spectral"], data["spectral"])
    with pytest.raises(ValueError, match="not an image"):
        (tmp_path / "bad.jpg").write_text("no")
        write_synthetic_dataset([tmp_path / "bad.jpg"], tmp_path / "x", config=CONFIG)


def dry_grass_under_blue_sky(height=48, width=64, seed=0):
    """Flat blue sky on top, textured yellow dry grass below: the legacy cues, which look
    for green, miss the grass."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[: height // 2] = (90, 150, 230)
    texture = rng.integers(0, 80, size=(height - height // 2, width))
    image[height // 2 :, :, 0] = 160 + texture
    image[height // 2 :, :, 1] = 125 + texture * 3 // 4
    image[height // 2 :, :, 2] = 45 + texture // 3
    return image


def test_region_cues_move_dry_grass_and_keep_the_sky_still():
    image = dry_grass_under_blue_sky()
    h = CONFIG.height
    new = estimate_motion_regions(image)
    old = estimate_motion_regions(image, cues="legacy")
    assert new["vegetation"][h // 2 + 6 :].mean() > 0.6
    assert old["vegetation"][h // 2 + 6 :].mean() < 0.1
    assert new["vegetation"][: h // 2 - 6].max() < 0.05
    clip = synthesize_oscillation(image, CONFIG, seed=1, render=False)
    magnitude = np.linalg.norm(clip.displacement, axis=-1).mean(axis=0)
    assert magnitude[h // 2 + 6 :].mean() > 50 * magnitude[: h // 2 - 6].mean()
    assert clip.metadata["region_cues"] == "cues"
    legacy = synthesize_oscillation(image, CONFIG, seed=1, render=False, cues="legacy")
    assert legacy.metadata["region_cues"] == "legacy"
    assert np.abs(legacy.displacement).max() < 0.5 * np.abs(clip.displacement).max()
    with pytest.raises(ValueError, match="unknown region cues 'nope'"):
        estimate_motion_regions(image, cues="nope")


def test_make_default_data_leaves_out_the_held_out_photos(tmp_path):
    """scripts/make_default_data.py: scikit-learn's china/flower and the examples' names are
    never animated for training; a bad amplitude range is refused before any work."""
    import subprocess
    import sys
    from pathlib import Path

    import cv2

    root = Path(__file__).resolve().parents[1]
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("garden.png", "china.jpg", "flower.jpg", "butterfly.jpg"):
        cv2.imwrite(str(photos / name), green_and_blue(96, 128)[..., ::-1])
    script = [sys.executable, str(root / "scripts" / "make_default_data.py"), "--photos",
              str(photos), "--clips_per_photo", "1"]  # fmt: skip
    bad = subprocess.run([*script, "--output_dir", str(tmp_path / "bad"), "--amplitude_range",
                          "2", "1"], capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "--amplitude_range" in bad.stderr
    assert not (tmp_path / "bad").exists()
    done = subprocess.run([*script, "--output_dir", str(tmp_path / "out")], capture_output=True,
                          text=True, check=True)  # fmt: skip
    assert "1 photos x 1 clips" in done.stdout
    clips = json.loads((tmp_path / "out" / "manifest.json").read_text())["clips"]
    assert [c["video"] for c in clips] == ["0000_garden_0.mp4"]
    assert 0.6 <= clips[0]["amplitude_px"] <= 3.0
    assert clips[0]["region_cues"] == "cues" and clips[0]["vegetation_falloff"] == 1.5
    bad = subprocess.run([*script, "--output_dir", str(tmp_path / "bad"), "--legacy_teacher",
                          "--vegetation_falloff", "-1"], capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "--vegetation_falloff" in bad.stderr
    assert not (tmp_path / "bad").exists()
    # the teacher of before issue 15; a flag given beside --legacy_teacher wins
    subprocess.run([*script, "--output_dir", str(tmp_path / "legacy"), "--legacy_teacher",
                    "--cues", "cues", "--clips_per_photo", "3"], check=True)  # fmt: skip
    clips = json.loads((tmp_path / "legacy" / "manifest.json").read_text())["clips"]
    assert len(clips) == 3 and all(0.75 <= c["amplitude_px"] <= 2.25 for c in clips)
    assert {(c["region_cues"], c["vegetation_falloff"]) for c in clips} == {("cues", 1.0)}
