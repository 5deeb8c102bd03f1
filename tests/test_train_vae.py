"""train_vae.py end to end on a tiny prepared dataset: train, checkpoints, resume, kill, DDP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train_vae
from models.spectral_codec import load_spectral_codec
from models.training_utils import list_checkpoints
from tests.conftest import TINY_CONFIG as CONFIG

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--resolution", "32", "--base_channels", "8", "--downsample_factor", "4",
        "--train_batch_size", "2", "--report_to", "none", "--validation_steps", "0"]  # fmt: skip


# Tiny models: one torch thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train(data: Path, out: Path, *extra: str) -> None:
    """Run train_vae.main in this process (the CLI's code path, without interpreter start-up)."""
    train_vae.main(["--train_data_dir", str(data), "--output_dir", str(out), *TINY, *extra])


def checkpoint_steps(out: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in list_checkpoints(out)]


def test_trains_saves_and_resumes(prepared, tmp_path):
    out = tmp_path / "run"
    train(prepared, out, "--max_train_steps", "3", "--checkpointing_steps", "2",
          "--use_ema", "--validation_steps", "2")  # fmt: skip
    assert checkpoint_steps(out) == [2]
    state = json.loads((out / "checkpoint-2" / "training_state.json").read_text())
    assert state["global_step"] == 2 and state["data_config"] == CONFIG.to_dict()
    assert list((out / "validation").glob("*.png"))
    vae, config, normalizer = load_spectral_codec(out / "vae")
    assert config == CONFIG
    copied = (out / "vae" / "normalization.json").read_bytes()
    assert copied == (prepared / "normalization.json").read_bytes()
    assert normalizer.num_freqs == CONFIG.num_freqs
    assert vae.config.scaling_factor != 1.0  # computed from data
    assert vae.config.in_channels == vae.config.out_channels == 4

    # Resume from the latest checkpoint (step 2) and go on to step 4, rotating to 2 kept.
    train(prepared, out, "--max_train_steps", "4", "--checkpointing_steps", "1",
          "--use_ema", "--resume_from_checkpoint", "latest", "--checkpoints_total_limit", "2")  # fmt: skip
    assert checkpoint_steps(out) == [3, 4]
    assert (
        json.loads((out / "checkpoint-4" / "training_state.json").read_text())["global_step"] == 4
    )


@pytest.mark.slow
def test_resume_continues_where_it_stopped(prepared, tmp_path):
    """2 steps + resume to 4 gives the same weights as 4 steps straight."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(prepared, straight, "--max_train_steps", "4", "--checkpointing_steps", "4")
    train(prepared, split, "--max_train_steps", "2", "--checkpointing_steps", "2")
    train(prepared, split, "--max_train_steps", "4", "--checkpointing_steps", "4",
          "--resume_from_checkpoint", "latest")  # fmt: skip
    a = load_spectral_codec(straight / "vae")[0].state_dict()
    b = load_spectral_codec(split / "vae")[0].state_dict()
    # Posterior sampling draws from the global RNG, restored by accelerate: close, not bitwise.
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_clear_errors(prepared, tmp_path):
    no_stats = tmp_path / "no_stats"
    shutil.copytree(prepared, no_stats)
    (no_stats / "normalization.json").unlink()
    with pytest.raises(SystemExit, match="normalization.json"):
        train(no_stats, tmp_path / "a", "--max_train_steps", "1")
    with pytest.raises(SystemExit, match="not found"):
        train(
            prepared,
            tmp_path / "b",
            "--max_train_steps",
            "1",
            "--resume_from_checkpoint",
            "checkpoint-7",
        )

    # A checkpoint trained on other data (K, size) is refused.
    out = tmp_path / "c"
    train(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "1")
    state_path = out / "checkpoint-1" / "training_state.json"
    state = json.loads(state_path.read_text())
    state["data_config"]["num_freqs"] = 16
    state_path.write_text(json.dumps(state))
    with pytest.raises(SystemExit, match="num_freqs"):
        train(prepared, out, "--max_train_steps", "2", "--resume_from_checkpoint", "latest")


def test_nan_loss_stops_and_keeps_last_checkpoint(prepared, tmp_path):
    out = tmp_path / "nan"
    train(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "1")
    # Corrupt the clips (same config): the loss becomes NaN at the next step.
    bad = tmp_path / "bad_data"
    shutil.copytree(prepared, bad)
    for path in (bad / "clips").glob("*.npz"):
        with np.load(path) as data:
            arrays = dict(data)
        arrays["spectral"][:] = np.nan
        np.savez(path, **arrays)
    shutil.rmtree(out / "vae")
    with pytest.raises(SystemExit, match="loss is nan.*checkpoint-1"):
        train(bad, out, "--max_train_steps", "3", "--checkpointing_steps", "1",
              "--resume_from_checkpoint", "latest")  # fmt: skip
    assert checkpoint_steps(out) == [1]
    assert not (out / "vae").exists()


def run_cli(*args: str, launcher: list[str] | None = None, **env_extra: str) -> subprocess.Popen:
    command = [*(launcher or [sys.executable]), str(ROOT / "train_vae.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env_extra}
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_kill_then_resume_loses_nothing(prepared, tmp_path):
    """SIGKILL after the first checkpoint; the resumed run goes on from that step."""
    out = tmp_path / "killed"
    args = ["--train_data_dir", str(prepared), "--output_dir", str(out), *TINY,
            "--max_train_steps", str(10**6), "--checkpointing_steps", "3"]  # fmt: skip
    process = run_cli(*args)
    deadline = time.monotonic() + 120
    while not checkpoint_steps(out) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    steps = checkpoint_steps(out)
    assert steps, "no checkpoint appeared before the kill"
    resumed = run_cli(*args[:-4], "--max_train_steps", str(steps[-1] + 2), "--checkpointing_steps", "1",
                      "--resume_from_checkpoint", "latest")  # fmt: skip
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log
    assert f"resuming from {out / f'checkpoint-{steps[-1]}'} (step {steps[-1]})" in log
    assert checkpoint_steps(out)[-1] == steps[-1] + 2
    assert (out / "vae" / "config.json").is_file()


@pytest.mark.slow
def test_two_process_data_parallel_on_cpu(prepared, tmp_path):
    """Two CPU processes (gloo) train, checkpoint and save once.

    With accelerate 1.15, ``accelerate launch --cpu --num_processes 2`` starts ONE process
    (its simple launcher), and ``--multi_gpu`` alone on a machine without GPUs starts two
    unconnected rank-0 copies; ``--multi_gpu`` with ACCELERATE_USE_CPU=1 is what works.
    """
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    process = run_cli("--train_data_dir", str(prepared), "--output_dir", str(out), *TINY,
                      "--max_train_steps", "3", "--checkpointing_steps", "2", launcher=launcher,
                      ACCELERATE_USE_CPU="1")  # fmt: skip
    log, _ = process.communicate(timeout=300)
    assert process.returncode == 0, log
    assert "2 process(es)" in log
    assert checkpoint_steps(out) == [2]
    vae, config, _ = load_spectral_codec(out / "vae")
    assert config == CONFIG


def test_zero_intervals_mean_never(prepared, tmp_path):
    out = tmp_path / "never"
    train(prepared, out, "--max_train_steps", "2", "--checkpointing_steps", "0",
          "--validation_steps", "0")  # fmt: skip
    assert checkpoint_steps(out) == [] and not (out / "validation").exists()
    assert (out / "vae" / "config.json").is_file()


def test_resume_with_other_use_ema_is_a_clear_error(prepared, tmp_path):
    out = tmp_path / "ema"
    train(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "1", "--use_ema")
    with pytest.raises(SystemExit, match="saved with --use_ema; resume with --use_ema"):
        train(prepared, out, "--max_train_steps", "2", "--resume_from_checkpoint", "latest")
