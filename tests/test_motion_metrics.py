"""Motion metrics on constructed cases, and evaluate_motion on a tiny prepared folder."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from data.config import MotionConfig
from data.motion_metrics import (
    amplitude,
    amplitude_error_per_freq,
    constant_volume,
    evaluate_motion,
    loop_statistics,
    magnitude_correlation,
    mean_spectrum,
    motion_magnitude,
    motion_metrics,
    motion_table_markdown,
)
from data.spectral import FrequencyNormalizer, displacement_to_spectral, spectral_to_displacement

CONFIG = MotionConfig(num_frames=12, fps=6.0, num_freqs=4, width=32, height=16)


def random_volume(seed: int, config: MotionConfig = CONFIG) -> np.ndarray:
    """A (K, 4, H, W) spectral volume in px whose amplitude varies over the frame."""
    rng = np.random.default_rng(seed)
    spectral = rng.normal(size=(config.num_freqs, 4, config.height, config.width))
    spectral *= np.linspace(0.1, 2.0, config.width)[None, None, None, :]
    spectral[0, 1] = spectral[0, 3] = 0.0  # imaginary DC is not a signal
    return spectral.astype(np.float32)


def test_identical_prediction_scores_perfectly():
    true = random_volume(0)
    metrics = motion_metrics(true, true, CONFIG.num_frames)
    assert metrics["amp_error_px"] == 0
    assert metrics["amp_error_per_freq"] == [0.0] * CONFIG.num_freqs
    assert metrics["magnitude_corr"] == pytest.approx(1.0)


def test_amplitude_error_is_in_pixels_per_frequency():
    true = np.zeros((4, 4, 2, 3), np.float32)
    pred = true.copy()
    pred[2, 0] = 3.0  # |S_2| = 3 px everywhere
    pred[2, 1] = 4.0  # now 5 px
    np.testing.assert_allclose(amplitude_error_per_freq(pred, true), [0, 0, 5, 0])
    # a phase change alone (same amplitude) is no amplitude error
    rotated = true.copy()
    rotated[2, 0], rotated[2, 1] = 5.0, 0.0
    np.testing.assert_allclose(amplitude_error_per_freq(pred, rotated), 0, atol=1e-6)


def test_motion_magnitude_is_rms_displacement():
    spectral = random_volume(1)
    disp = spectral_to_displacement(spectral, CONFIG.num_frames)
    rms = np.sqrt((np.linalg.norm(disp, axis=-1) ** 2).mean(axis=0))
    np.testing.assert_allclose(motion_magnitude(spectral), rms, rtol=1e-4)


def test_correlation_conventions():
    true = random_volume(2)
    assert magnitude_correlation(true * 3.0, true) == pytest.approx(1.0)  # scale-free
    assert magnitude_correlation(np.zeros_like(true), true) == 0.0  # zero motion
    constant = constant_volume(mean_spectrum([true]), CONFIG.height, CONFIG.width)
    assert magnitude_correlation(constant, true) == 0.0
    assert math.isnan(magnitude_correlation(true, np.zeros_like(true)))


def test_zero_motion_baseline():
    true = random_volume(3)
    metrics = motion_metrics(np.zeros_like(true), true, CONFIG.num_frames)
    # the amplitude error of predicting nothing is the mean true amplitude
    expected = np.sqrt((true.astype(np.float64) ** 2).sum(axis=1)).mean(axis=(1, 2))
    np.testing.assert_allclose(metrics["amp_error_per_freq"], expected, rtol=1e-6)
    assert metrics["loop_error_px"] == 0 and metrics["rms_motion_px"] == 0
    assert math.isnan(metrics["loop_ratio"])


def test_loop_statistics_of_a_known_signal():
    # one cycle of a 1 px cosine in x over T = 8 frames: exactly representable with K = 4
    config = MotionConfig(num_frames=8, fps=8.0, num_freqs=4, width=1, height=1)
    disp = np.zeros((8, 1, 1, 2), np.float32)
    disp[:, 0, 0, 0] = np.cos(2 * np.pi * np.arange(8) / 8)
    spectral = displacement_to_spectral(disp, config.num_freqs)
    stats = loop_statistics(spectral, config.num_frames)
    step = abs(np.cos(2 * np.pi * 7 / 8) - 1.0)  # |D[7] - D[0]|
    assert stats["loop_error_px"] == pytest.approx(step, rel=1e-4)
    assert stats["reference_offset_px"] == pytest.approx(1.0, rel=1e-4)
    # every step of a sampled cosine: |cos(2 pi (t+1)/8) - cos(2 pi t/8)| averaged
    steps = np.abs(np.diff(np.cos(2 * np.pi * np.arange(8) / 8))).mean()
    assert stats["mean_step_px"] == pytest.approx(steps, rel=1e-4)


def test_mean_spectrum_definition():
    a, b = random_volume(4), random_volume(5)
    spectrum = mean_spectrum([a, b])
    assert spectrum.shape == (CONFIG.num_freqs, 4)
    expected_x1 = np.mean([np.hypot(v[1, 0], v[1, 1]).mean() for v in (a, b)])
    assert spectrum[1, 1] == pytest.approx(expected_x1, rel=1e-6)
    assert spectrum[0, 0] == pytest.approx(np.mean([v[0, 0].mean() for v in (a, b)]), rel=1e-6)
    assert np.all(spectrum[1:, 0] == 0) and np.all(spectrum[1:, 2] == 0)
    assert spectrum[0, 1] == 0 and spectrum[0, 3] == 0
    # sines: at frame 0 only the DC is left
    volume = constant_volume(spectrum, 2, 3)
    d0 = spectral_to_displacement(np.ascontiguousarray(volume, np.float32), CONFIG.num_frames)[0]
    np.testing.assert_allclose(d0[..., 0], spectrum[0, 0], rtol=1e-5)


# ------------------------------------------------------------------------ evaluate_motion


def write_tiny_prepared(root, num_train: int = 3, num_val: int = 2, val_one_photo: bool = False):
    """A folder in prepare_data.py's format: manifest.json, normalization.json, clips/*.npz."""
    (root / "clips").mkdir(parents=True)
    clips, volumes = [], []
    for index in range(num_train + num_val):
        clip_id = f"clip{index:02d}"
        spectral = random_volume(10 + index)
        volumes.append(spectral)
        photo_seed = num_train if val_one_photo and index >= num_train else index
        frame = np.random.default_rng(photo_seed).integers(0, 256, (16, 32, 3), dtype=np.uint8)
        if val_one_photo and index >= num_train:  # one photo, as video coding returns it
            coding_noise = np.random.default_rng(index).integers(-1, 2, frame.shape)
            frame = np.clip(frame + coding_noise, 0, 255).astype(np.uint8)
        np.savez(
            root / "clips" / f"{clip_id}.npz",
            spectral=spectral.astype(np.float16),
            first_frame=frame,
        )
        split = "train" if index < num_train else "val"
        clips.append(
            {"clip_id": clip_id, "split": split, "status": "ok", "file": f"clips/{clip_id}.npz"}
        )
    manifest = {"format_version": 1, "config": CONFIG.to_dict(), "clips": clips}
    (root / "manifest.json").write_text(json.dumps(manifest))
    FrequencyNormalizer.fit(np.stack(volumes[:num_train]), config=CONFIG).save_json(
        root / "normalization.json"
    )
    return root


def test_evaluate_motion_baselines_only(tmp_path):
    data = write_tiny_prepared(tmp_path / "data")
    rows = evaluate_motion(data, None, out_dir=tmp_path / "out")
    by_method = {row["method"]: row for row in rows}
    assert set(by_method) == {"zero_motion", "mean_spectrum", "ground_truth"}
    assert by_method["ground_truth"]["amp_error_px"] == 0
    assert by_method["ground_truth"]["magnitude_corr"] == pytest.approx(1.0)
    assert by_method["zero_motion"]["magnitude_corr"] == 0.0
    # the mean spectrum has the right energy per frequency: closer than predicting nothing
    assert by_method["mean_spectrum"]["amp_error_px"] < by_method["zero_motion"]["amp_error_px"]
    with open(tmp_path / "out" / "motion_metrics.csv") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 2 * 3 and {line["clip_id"] for line in lines} == {"clip03", "clip04"}
    table = motion_table_markdown(rows)
    assert "| zero_motion | 2 |" in table and "n/a" in table  # loop ratio of no motion


def test_evaluate_motion_truth_resampled_pairs_clips_of_one_photo(tmp_path):
    data = write_tiny_prepared(tmp_path / "data", num_val=2, val_one_photo=True)
    by_method = {row["method"]: row for row in evaluate_motion(data, None)}
    resampled = by_method["truth_resampled"]
    assert resampled["num_clips"] == 2
    # each val clip is scored against the other one's truth (the error is symmetric)
    first, second = random_volume(13), random_volume(14)
    expected = amplitude_error_per_freq(
        first.astype(np.float16).astype(np.float64), second.astype(np.float16).astype(np.float64)
    ).mean()
    assert resampled["amp_error_px"] == pytest.approx(expected, rel=1e-4)
    assert 0 < resampled["amp_error_px"]
    # expected amplitude: clip 3 (first half) predicts clip 4's amplitude (second half)
    assert resampled["num_photos"] == 1
    assert resampled["expected_amp_error_px"] == pytest.approx(expected, rel=1e-4)
    true_amplitude = amplitude(second.astype(np.float16).astype(np.float64)).mean()
    zero = by_method["zero_motion"]
    assert zero["expected_amp_error_px"] == pytest.approx(true_amplitude, rel=1e-4)
    assert math.isnan(by_method["ground_truth"]["expected_amp_error_px"])


def test_evaluate_motion_expected_amplitude_of_a_model(tmp_path):
    """The model's first-half samples are scored against the second-half truth."""
    data = write_tiny_prepared(tmp_path / "data", num_val=4, val_one_photo=True)

    class Constant:  # a stand-in pipeline: the same volume for every photo
        motion_config = CONFIG
        providers = []

        def __call__(self, image, **kwargs):
            self.providers.append(kwargs["mask_provider"])
            return type("Out", (), {"spectral": [random_volume(13).astype(np.float64)]})()

    constant = Constant()
    by_method = {row["method"]: row for row in evaluate_motion(data, constant)}
    assert set(constant.providers) == {"cues"}  # what sample.py does by default
    evaluate_motion(data, constant, mask_provider=None)
    assert constant.providers[-1] is None
    targets = [random_volume(i).astype(np.float16).astype(np.float64) for i in (15, 16)]
    target = np.mean([amplitude(t) for t in targets], axis=0)
    expected = np.abs(amplitude(random_volume(13)) - target).mean()
    assert by_method["model"]["expected_amp_error_px"] == pytest.approx(expected, rel=1e-3)


def test_evaluate_motion_with_a_pipeline(tmp_path, one_torch_thread):
    from models.motion_unet import MotionUNet
    from models.pipeline_motion import MotionPipeline
    from models.spectral_codec import ResampleSpectralCodec

    data = write_tiny_prepared(tmp_path / "data")
    torch.manual_seed(0)
    unet = MotionUNet(
        num_freqs=4,
        image_downsample_factor=4,
        image_embed_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=8,
    )
    pipe = MotionPipeline(
        codec=ResampleSpectralCodec(downsample_factor=4),
        unet=unet.eval(),
        scheduler=DDIMScheduler(num_train_timesteps=100),
        motion_config=CONFIG.to_dict(),
        normalization=FrequencyNormalizer.load_json(data / "normalization.json").to_dict(),
    )
    pipe.set_progress_bar_config(disable=True)
    rows = evaluate_motion(data, pipe, num_inference_steps=2, max_clips=1)
    model = next(row for row in rows if row["method"] == "model")
    assert model["num_clips"] == 1 and np.isfinite(model["amp_error_px"])
    assert len(model["amp_error_per_freq"]) == 4
    again = evaluate_motion(data, pipe, num_inference_steps=2, max_clips=1)
    assert math.isnan(model.pop("expected_amp_error_px"))  # one clip per photo: undefined
    again[0].pop("expected_amp_error_px")
    assert again[0] == model  # seeded: the same numbers

    # the same model through evaluate.py, with another scheduler and guidance
    import evaluate

    pipe.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    argv = ["--motion_data", str(data), "--motion_model", str(tmp_path / "model"),
            "--out", str(out), "--scheduler", "dpm", "--guidance_scale", "2",
            "--num_inference_steps", "2", "--max_clips", "1"]  # fmt: skip
    assert evaluate.main(argv) == 0
    assert "| model | 1 |" in (out / "motion.md").read_text()

    other = MotionConfig(num_frames=12, fps=6.0, num_freqs=4, width=64, height=16)
    wider = MotionPipeline(
        codec=pipe.codec,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        motion_config=other.to_dict(),
        normalization=pipe.config.normalization,
    )
    with pytest.raises(ValueError, match="prepare_data.py"):
        evaluate_motion(data, wider, max_clips=1)
