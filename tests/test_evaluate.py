"""evaluate.py end to end on tiny generated videos (CPU, seconds), and its bad inputs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

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
    "case",
    ["short", "missing_model", "other_model", "pipeline_folder", "not_a_model", "no_videos",
     "out_unwritable", "lpips_missing", "lpips_not_alexnet", "lpips_pickle"],
)  # fmt: skip
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
        "pipeline_folder": "a pipeline folder, not a FrameSynthesisModel; give its renderer",
        "not_a_model": "not a saved model (no config.json)",
        "lpips_missing": "no such file (--lpips_weights",
        "lpips_not_alexnet": "not torchvision's AlexNet weights",
        "lpips_pickle": "cannot read AlexNet weights",
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
    elif case == "pipeline_folder":  # weights/default given instead of weights/default/renderer
        (tmp_path / "pipe" / "renderer").mkdir(parents=True)
        (tmp_path / "pipe" / "model_index.json").write_text('{"_class_name": "MotionPipeline"}')
        args += ["--model", str(tmp_path / "pipe")]
    elif case == "lpips_missing":
        args += ["--no_model", "--lpips_weights", str(tmp_path / "alexnet.pth")]
    elif case == "lpips_not_alexnet":
        torch.save({"conv.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
        args += ["--no_model", "--lpips_weights", str(tmp_path / "other.pth")]
    elif case == "lpips_pickle":  # a file that only unpickling arbitrary objects could read
        torch.save({"features.0.weight": _Pickled()}, tmp_path / "pickled.pth")
        args += ["--no_model", "--lpips_weights", str(tmp_path / "pickled.pth")]
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


class _Pickled:
    """An object ``torch.load(weights_only=True)`` refuses to unpickle."""


def _alexnet_features_file(path: Path) -> Path:
    """A random torchvision AlexNet ``features.*`` state dict (the part LPIPS uses, ~10 MB)."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.alexnet().features.state_dict()
    torch.save({f"features.{k}": v for k, v in features.items()}, path)
    return path


def test_broken_and_short_videos_are_skipped(tmp_path, capsys, one_torch_thread):
    videos = tmp_path / "videos"
    videos.mkdir()
    _panning_video(videos)
    (videos / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4000))  # not a video
    write_mp4(_texture()[None, :, :WIDTH].repeat(3, axis=0), videos / "short.mp4", 10, quality=10)
    out = tmp_path / "out"
    code, stdout, err = _run(
        ["--videos", str(videos), "--out", str(out), "--frames", "6",
         "--size", f"{WIDTH}x{HEIGHT}", "--no_model", "--keep_duplicate_frames"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "skipped" in err and "broken.mp4: not a video file" in err
    assert "short.mp4: 3 frames, fewer than --frames 6" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"] == ["pan.mp4@0"] and len(summary["skipped"]) == 2
    assert "Skipped videos:" in stdout and "broken.mp4" in (out / "table.md").read_text()
    assert {clip for clip, _ in _rows(out)} == {"pan.mp4@0"}


def test_magnitude_breakdown_bins_and_pools():
    rows = [
        {"method": "m", "median_disp": 0.2, "mse": 1.0, "ssim": 0.9},
        {"method": "m", "median_disp": 0.9, "mse": 3.0, "ssim": 0.7},
        {"method": "m", "median_disp": 1.0, "mse": 10.0, "ssim": 0.5},  # 1 px: the 1-5 bin
        {"method": "m", "median_disp": 40.0, "mse": 100.0, "ssim": 0.1},
        {"method": "n", "median_disp": 0.5, "mse": 0.0, "ssim": 1.0},
    ]
    table = {
        (r["method"], r["magnitude"]): r for r in evaluate.magnitude_breakdown(rows, ["m", "n"])
    }
    small = table[("m", "< 1 px")]
    assert small["frames"] == 2 and small["psnr_pooled"] == pytest.approx(
        10 * math.log10(255**2 / 2.0)
    )
    assert small["ssim"] == pytest.approx(0.8)
    assert table[("m", "1-5 px")]["frames"] == 1 and table[("m", "> 5 px")]["ssim"] == 0.1
    assert table[("n", "< 1 px")]["psnr_pooled"] == math.inf
    assert table[("n", "> 5 px")]["frames"] == 0 and math.isnan(table[("n", "> 5 px")]["ssim"])
    text = evaluate.magnitude_markdown(list(table.values()))
    assert (
        "| m | 45.12 / 0.8000 | 38.13 / 0.5000 | 28.13 / 0.1000 |" in text
        and "| n | inf / 1.0000 | - | - |" in text
    )
    assert "< 1 px (2 frames)" in text


def test_per_magnitude_outputs_and_flow_preset(tmp_path, capsys, one_torch_thread):
    videos = tmp_path / "videos"
    videos.mkdir()
    _panning_video(videos)
    out = tmp_path / "out"
    code, stdout, _ = _run(
        ["--videos", str(videos), "--out", str(out), "--frames", "6",
         "--size", f"{WIDTH}x{HEIGHT}", "--no_model", "--keep_duplicate_frames"],
        capsys,
    )  # fmt: skip
    assert code == 0 and "By motion magnitude" in stdout
    with open(out / "per_magnitude.csv") as f:
        parts = [r for r in csv.DictReader(f) if r["method"] == "copy frame 0"]
    # The pan moves 1 px per frame: frames 1..5 have median |D| ~ 1..5 px, 5 frames in all.
    assert [r["magnitude"] for r in parts] == [label for label, _, _ in evaluate.MAGNITUDE_BINS]
    assert sum(int(r["frames"]) for r in parts) == 5 and int(parts[1]["frames"]) >= 3
    with open(out / "per_frame.csv") as f:
        medians = [
            float(r["median_disp"]) for r in csv.DictReader(f) if r["method"] == "copy frame 0"
        ]
    assert medians == sorted(medians) and 3.5 < medians[-1] < 6.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["flow_preset"] == "fine"


def test_flow_preset_is_the_training_one_and_the_documented_one():
    from data.frame_pairs import FLOW_OPTIONS

    assert evaluate.parse_args(["--videos", "v", "--out", "o"]).flow_preset == evaluate.FLOW_PRESET
    assert evaluate.flow_options("dis") == FLOW_OPTIONS  # the pairs the renderer learns from
    assert evaluate.flow_options("farneback") == {"method": "farneback"}
    docs = (Path(__file__).parents[1] / "docs" / "EVALUATION.md").read_text()
    assert f"DIS `{evaluate.FLOW_PRESET}` by default" in docs


def test_lpips_from_a_local_alexnet_file(tmp_path, capsys, one_torch_thread):
    weights = _alexnet_features_file(tmp_path / "alexnet.pth")
    lpips = evaluate.LPIPS(weights)
    assert lpips.available
    a = _texture()[None, :, :WIDTH].repeat(2, axis=0)
    b = _texture(5)[None, :, :WIDTH].repeat(2, axis=0)
    assert lpips(a, a) == pytest.approx(0.0, abs=1e-6) and lpips(a, b) > 0.01
    videos = tmp_path / "videos"
    videos.mkdir()
    _panning_video(videos, frames=4)
    out = tmp_path / "out"
    code, stdout, _ = _run(
        ["--videos", str(videos), "--out", str(out), "--frames", "4", "--size",
         f"{WIDTH}x{HEIGHT}", "--no_model", "--keep_duplicate_frames", "--lpips_weights", str(weights)],
        capsys,
    )  # fmt: skip
    assert code == 0 and evaluate.LPIPS_MISSING not in stdout
    assert float(_rows(out)[("pan.mp4@0", "copy frame 0")]["lpips"]) > 0
    assert json.loads((out / "summary.json").read_text())["lpips"] == str(weights)


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
