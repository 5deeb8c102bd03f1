"""scripts/calibrate_motion_gain.py on a tiny pipeline and a tiny prepared folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from data.spectral import FrequencyNormalizer
from models.motion_unet import MotionUNet
from models.pipeline_motion import MotionPipeline
from models.spectral_codec import ResampleSpectralCodec
from tests.conftest import TINY_CONFIG as CONFIG

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import calibrate_motion_gain  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_pipeline(prepared: Path, folder: Path) -> Path:
    torch.manual_seed(0)
    unet = MotionUNet(num_freqs=4, latent_channels=4, block_out_channels=(8, 16),
                      layers_per_block=1, norm_num_groups=8, attention_head_dim=8)  # fmt: skip
    normalizer = FrequencyNormalizer.load_json(prepared / "normalization.json")
    MotionPipeline(
        codec=ResampleSpectralCodec(downsample_factor=8, scaling_factor=1.0),
        unet=unet.eval(),
        scheduler=DDIMScheduler(num_train_timesteps=100),
        motion_config=CONFIG.to_dict(),
        normalization=normalizer.to_dict(),
    ).save_pretrained(folder)
    return folder


def test_gain_is_measured_written_and_ignores_the_current_gain(prepared, tmp_path, capsys):
    folder = tiny_pipeline(prepared, tmp_path / "pipe")
    argv = ["--model", str(folder), "--train_data_dir", str(prepared), "--num_clips", "2",
            "--min_mask_fraction", "0.01"]  # fmt: skip
    calibrate_motion_gain.main(argv)
    assert json.loads((folder / "model_index.json").read_text())["motion_gain"] == 1.0
    calibrate_motion_gain.main([*argv, "--write"])
    printed = capsys.readouterr().out
    gain = json.loads((folder / "model_index.json").read_text())["motion_gain"]
    assert gain > 0 and f"median ratio {gain:.3f}" in printed
    assert "90 % bootstrap interval of the median" in printed
    assert MotionPipeline.from_pretrained(folder).config.motion_gain == gain
    # measured again on the calibrated pipeline: the same gain, not gain squared
    calibrate_motion_gain.main(argv)
    assert f"median ratio {gain:.3f}" in capsys.readouterr().out


def test_every_moving_clip_is_used_unless_fewer_are_asked_for():
    # items 0, 3, 6, 9 move over 10 % of the frame, the others over 5 % at most
    items = []
    for index in range(10):
        mask = torch.zeros(1, 10, 10)
        mask[0, : (5 if index % 3 == 0 else 0)] = 1.0
        mask[0, 9, : (5 if index % 3 == 1 else 0)] = 1.0
        items.append({"motion_mask": mask, "index": index})
    chosen = calibrate_motion_gain.moving_clips(items, None, 0.1)
    assert [item["index"] for item in chosen] == [0, 3, 6, 9]
    assert [item["index"] for item in calibrate_motion_gain.moving_clips(items, 2, 0.1)] == [0, 6]
    assert len(calibrate_motion_gain.moving_clips(items, 50, 0.1)) == 4
    assert len(calibrate_motion_gain.moving_clips(items, None, 0.05)) == 7


def test_bad_inputs(prepared, tmp_path):
    with pytest.raises(SystemExit):
        calibrate_motion_gain.main(["--model", str(tmp_path), "--train_data_dir", str(prepared)])
    folder = tiny_pipeline(prepared, tmp_path / "pipe")
    still = [{"motion_mask": torch.zeros(1, 48, 64)} for _ in range(3)]
    with pytest.raises(ValueError, match="no training clip moves"):
        calibrate_motion_gain.moving_clips(still, 2, 0.1)
    with pytest.raises(SystemExit):
        calibrate_motion_gain.main(["--model", str(folder), "--train_data_dir", str(prepared),
                                    "--num_clips", "0"])  # fmt: skip


def test_median_interval_brackets_the_median_and_narrows_with_more_clips():
    """The bootstrap interval holds the sample median, is reproducible (seeded), narrows as
    clips are added, is a point when every ratio is equal, and refuses empty or NaN input."""
    rng = np.random.default_rng(1)
    few = rng.lognormal(0.5, 0.8, size=24)
    many = rng.lognormal(0.5, 0.8, size=400)
    low, high = calibrate_motion_gain.median_interval(few)
    assert low < np.median(few) < high
    assert (low, high) == calibrate_motion_gain.median_interval(few)
    low_many, high_many = calibrate_motion_gain.median_interval(many)
    assert high_many - low_many < (high - low) / 2
    assert calibrate_motion_gain.median_interval([1.5] * 5) == (1.5, 1.5)
    for bad in ([], [1.0, float("nan")], [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="finite ratios"):
            calibrate_motion_gain.median_interval(bad)
