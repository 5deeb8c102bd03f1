"""evaluate.py end to end on tiny generated videos (CPU, seconds), and its bad inputs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

import evaluate
from data.video import write_mp4
from models.frame_synthesis import FrameSynthesisModel

WIDTH, HEIGHT = 64, 48


def _texture(seed: int = 0, width: int = WIDTH + 16) -> np.ndarray:
    """A smooth random RGB texture (H, width, 3) uint8 (flow needs structure to lock on)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (HEIGHT // 4, width // 4, 3)).astype(np.float32)
    import cv2

    return cv2.resize(coarse, (width, HEIGHT), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)  # fmt: skip


def _static_video(folder: Path, frames: int = 6) -> Path:
    photo = _texture()[:, :WIDTH]
    return write_mp4(np.repeat(photo[None], frames, axis=0), folder / "static.mp4", 10, quality=10)


def _panning_video(folder: Path, frames: int = 6) -> Path:
    """The texture moving 1 px right per frame (a camera pan)."""
    wide = _texture(1)
    clip = np.stack([wide[:, 8 - t : 8 - t + WIDTH] for t in range(frames)])
    return write_mp4(clip, folder / "pan.mp4", 10, quality=10)


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = evaluate.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(out: Path) -> dict[tuple[str, str], dict]:
    with open(out / "per_clip.csv") as f:
        return {(r["clip"], r["method"]): r for r in csv.DictReader(f)}


def test_static_and_panning_videos_end_to_end(tmp_path, capsys, one_torch_thread):
    videos = tmp_path / "videos"
    videos.mkdir()
    _static_video(videos)
    _panning_video(videos)
    out = tmp_path / "out"
    size = f"{WIDTH}x{HEIGHT}"
    code, stdout, _ = _run(
        ["--videos", str(videos), "--out", str(out), "--frames", "6", "--size", size,
         "--no_model", "--keep_duplicate_frames"],
        capsys,
    )  # fmt: skip
    assert code == 0
    for name in evaluate.OUTPUT_FILES:
        assert (out / name).is_file(), name
    assert "| copy frame 0 |" in stdout and "| LPIPS (AlexNet) |" in stdout
    rows = _rows(out)
    # Static video: copying frame 0 is exact (lossless H.264 of identical frames).
    static = rows[("static.mp4@0", "copy frame 0")]
    assert float(static["psnr_pooled"]) == math.inf and float(static["ssim"]) == pytest.approx(1.0)
    for method in ("average splatting", "softmax splatting", "OpenCV remap (bicubic)"):
        assert float(rows[("static.mp4@0", method)]["psnr_pooled"]) > 40
    # A 1 px/frame pan: every warping baseline beats copying frame 0 by a margin.
    copy = float(rows[("pan.mp4@0", "copy frame 0")]["psnr_pooled"])
    for method in ("average splatting", "softmax splatting", "OpenCV remap (bicubic)"):
        assert float(rows[("pan.mp4@0", method)]["psnr_pooled"]) > copy + 3, method
    # Per-frame PSNR: 5 predicted frames per clip and method; copy decays along the pan.
    with open(out / "per_frame.csv") as f:
        pan_copy = [float(r["psnr"]) for r in csv.DictReader(f)
                    if r["clip"] == "pan.mp4@0" and r["method"] == "copy frame 0"]  # fmt: skip
    assert len(pan_copy) == 5 and pan_copy[0] > pan_copy[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"] == ["pan.mp4@0", "static.mp4@0"]
    # Existing outputs are not replaced without --overwrite ...
    code, _, err = _run(
        ["--videos", str(videos), "--out", str(out), "--frames", "6", "--size", size,
         "--no_model", "--keep_duplicate_frames"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "--overwrite" in err


def test_model_row_untrained_is_close_to_softsplat(tmp_path, capsys, one_torch_thread):
    videos = tmp_path / "videos"
    videos.mkdir()
    _panning_video(videos)
    model_dir = tmp_path / "model"
    FrameSynthesisModel(block_out_channels=(4, 4), grid_columns=2).save_pretrained(model_dir)
    out = tmp_path / "out"
    code, stdout, _ = _run(
        ["--videos", str(videos), "--out", str(out), "--frames", "6",
         "--size", f"{WIDTH}x{HEIGHT}", "--model", str(model_dir)],
        capsys,
    )  # fmt: skip
    assert code == 0 and f"| {evaluate.MODEL_ROW} |" in stdout
    rows = _rows(out)
    model = float(rows[("pan.mp4@0", evaluate.MODEL_ROW)]["psnr_pooled"])
    soft = float(rows[("pan.mp4@0", "softmax splatting")]["psnr_pooled"])
    assert abs(model - soft) < 1.0  # near-zero last layer: ~ the softsplat baseline


def test_duplicates_dropped_by_default(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    _static_video(videos)  # 6 identical frames = 1 distinct frame
    code, _, err = _run(
        ["--videos", str(videos), "--out", str(tmp_path / "out"), "--frames", "6",
         "--size", f"{WIDTH}x{HEIGHT}", "--no_model"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "static.mp4: 1 distinct frames, fewer than --frames 6" in err


@pytest.mark.parametrize(
    "case", ["short", "missing_model", "other_model", "not_a_model", "no_videos", "out_unwritable"]
)
def test_bad_inputs(tmp_path, capsys, case):
    videos = tmp_path / "videos"
    videos.mkdir()
    _panning_video(videos, frames=4)
    args = ["--videos", str(videos), "--out", str(tmp_path / "out"), "--frames", "4",
            "--size", f"{WIDTH}x{HEIGHT}", "--keep_duplicate_frames"]  # fmt: skip
    expected = {
        "short": "pan.mp4: 4 frames, fewer than --frames 5",
        "missing_model": "model folder not found",
        "other_model": "holds a 'AutoencoderKL', not a FrameSynthesisModel",
        "not_a_model": "not a saved model (no config.json)",
        "no_videos": "no videos",
        "out_unwritable": "not writable",
    }[case]
    if case == "short":
        args[args.index("--frames") + 1] = "5"
    elif case == "missing_model":
        args += ["--model", str(tmp_path / "nothing")]
    elif case == "other_model":
        (tmp_path / "vae").mkdir()
        (tmp_path / "vae" / "config.json").write_text('{"_class_name": "AutoencoderKL"}')
        args += ["--model", str(tmp_path / "vae")]
    elif case == "not_a_model":
        (tmp_path / "empty").mkdir()
        args += ["--model", str(tmp_path / "empty")]
    elif case == "no_videos":
        args[1] = str(tmp_path / "empty_videos")
        (tmp_path / "empty_videos").mkdir()
    elif case == "out_unwritable":
        (tmp_path / "a_file").write_text("x")
        args[3] = str(tmp_path / "a_file" / "out")  # a folder under a regular file
    code, _, err = _run(args, capsys)
    assert code == 2 and expected in err, err


def test_metrics_known_values():
    real = np.full((2, 4, 4, 3), 100, np.uint8)
    pred = real.copy()
    pred[1] += 10  # MSE 100 on frame 1 only
    per_frame = evaluate.psnr_per_frame(pred, real)
    assert per_frame[0] == math.inf
    assert per_frame[1] == pytest.approx(10 * math.log10(255**2 / 100))
    assert evaluate.psnr_pooled(pred, real) == pytest.approx(10 * math.log10(255**2 / 50))


def test_motion_metrics_baselines_through_the_cli(tmp_path, capsys):
    from tests.test_motion_metrics import write_tiny_prepared

    data = write_tiny_prepared(tmp_path / "data")
    out = tmp_path / "out"
    code, stdout, _ = _run(["--motion_data", str(data), "--out", str(out)], capsys)
    assert code == 0
    assert "| zero_motion | 2 |" in stdout and (out / "motion.md").is_file()
    assert (out / "motion_metrics.csv").is_file()
    code, _, err = _run(["--motion_data", str(data), "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err
    code, _, err = _run(
        ["--motion_data", str(data), "--motion_model", str(tmp_path / "none"), "--out", str(out)],
        capsys,
    )
    assert code == 2 and "motion model folder not found" in err


def test_a_corrupt_motion_model_file_is_a_clear_error(tmp_path, capsys, one_torch_thread):
    from diffusers import DDIMScheduler

    from data.spectral import FrequencyNormalizer
    from models.motion_unet import MotionUNet
    from models.pipeline_motion import MotionPipeline
    from models.spectral_codec import ResampleSpectralCodec
    from tests.test_motion_metrics import CONFIG, write_tiny_prepared

    data = write_tiny_prepared(tmp_path / "data")
    unet = MotionUNet(num_freqs=4, image_downsample_factor=4, image_embed_channels=4,
                      block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                      attention_head_dim=8)  # fmt: skip
    # Positional components: the codec's keyword is being renamed (vae -> codec).
    MotionPipeline(
        ResampleSpectralCodec(downsample_factor=4), unet, DDIMScheduler(num_train_timesteps=100),
        motion_config=CONFIG.to_dict(),
        normalization=FrequencyNormalizer.load_json(data / "normalization.json").to_dict(),
    ).save_pretrained(tmp_path / "model")  # fmt: skip
    weights = tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100] + b"\0garbage" * 10)
    code, _, err = _run(["--motion_data", str(data), "--motion_model", str(tmp_path / "model"),
                         "--out", str(tmp_path / "out")], capsys)  # fmt: skip
    assert code == 2, err
    assert "cannot load the motion model" in err and str(tmp_path / "model") in err
    assert "Traceback" not in err
