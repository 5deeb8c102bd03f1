"""train_unet.py end to end on a tiny prepared dataset: both stages, resume, kill, DDP, errors."""

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

import train_unet
from data.config import MotionConfig
from data.spectral import FrequencyNormalizer
from models.motion_unet import MotionUNet
from models.spectral_codec import ResampleSpectralCodec, load_spectral_codec, save_spectral_codec
from models.training_utils import list_checkpoints
from tests.conftest import TINY_CONFIG as CONFIG
from tests.test_prepare import textured_photo

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--codec", "resample:8", "--block_out_channels", "8", "16", "--layers_per_block", "1",
        "--norm_num_groups", "8", "--attention_head_dim", "8", "--train_batch_size", "2",
        "--report_to", "none", "--validation_steps", "0", "--lr_warmup_steps", "0",
        "--learning_rate", "1e-3"]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train(data: Path, out: Path, *extra: str) -> None:
    """Run train_unet.main in this process (the CLI's code path)."""
    train_unet.main(["--train_data_dir", str(data), "--output_dir", str(out), *TINY, *extra])


def checkpoint_steps(out: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in list_checkpoints(out)]


def test_stage1_then_stage2(prepared, tmp_path):
    stage1 = tmp_path / "stage1"
    train(prepared, stage1, "--stage", "1", "--max_train_steps", "3", "--checkpointing_steps", "2",
          "--use_ema", "--validation_steps", "2", "--random_flip")  # fmt: skip
    assert checkpoint_steps(stage1) == [2]
    unet = MotionUNet.from_pretrained(stage1 / "unet")
    assert not unet.config.frequency_attention and unet.config.num_freqs == CONFIG.num_freqs
    codec, config, normalizer = load_spectral_codec(stage1 / "codec")
    assert isinstance(codec, ResampleSpectralCodec) and config == CONFIG
    assert codec.config.scaling_factor != 1.0  # 1/std from the data
    assert (stage1 / "codec" / "normalization.json").read_bytes() == (
        prepared / "normalization.json"
    ).read_bytes()
    scheduler_config = json.loads((stage1 / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["num_train_timesteps"] == 1000
    assert scheduler_config["clip_sample"] is False  # unit-variance latents are not in [-1, 1]
    records = [json.loads(line) for line in (stage1 / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 3] and all(
        np.isfinite(r["val_loss"]) for r in records
    )
    assert len(list((stage1 / "validation").glob("*.png"))) == 2

    # Stage 2 from the stage-1 output (the codec folder it wrote), v-prediction, min-SNR.
    stage2 = tmp_path / "stage2"
    train(prepared, stage2, "--stage", "2", "--pretrained_unet", str(stage1), "--max_train_steps",
          "2", "--checkpointing_steps", "5", "--codec", str(stage1 / "codec"),
          "--prediction_type", "v_prediction", "--snr_gamma", "5")  # fmt: skip
    unet2 = MotionUNet.from_pretrained(stage2 / "unet")
    assert unet2.config.frequency_attention
    # The attention layers were trained away from their zero start.
    assert unet2.freq_attn_mid.proj_out.weight.abs().sum() > 0


def test_codec_of_a_model_folder_keeps_its_latent_scale(prepared, tmp_path):
    """--codec MODEL_DIR (a sample.py model folder) reuses its codec, latent scale and all."""
    first = tmp_path / "first"
    train(prepared, first, "--stage", "2", "--max_train_steps", "1", "--checkpointing_steps", "5")
    # As assemble_default.py writes it: the motion config and statistics in model_index only.
    model = tmp_path / "model"
    shutil.copytree(first, model)
    for name in ("motion_config.json", "normalization.json"):
        (model / "codec" / name).unlink()
    codec_config = json.loads((model / "codec" / "config.json").read_text())
    codec_config["scaling_factor"] *= 2.5  # a scale this data would not give
    (model / "codec" / "config.json").write_text(json.dumps(codec_config))
    again = tmp_path / "again"
    train(prepared, again, "--stage", "2", "--pretrained_unet", str(model), "--max_train_steps",
          "1", "--checkpointing_steps", "5", "--codec", str(model))  # fmt: skip
    kept = load_spectral_codec(again / "codec")[0].config.scaling_factor
    assert kept == pytest.approx(codec_config["scaling_factor"])
    # A model folder whose index lacks the statistics is refused, naming what is missing.
    index = json.loads((model / "model_index.json").read_text())
    del index["normalization"]
    (model / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(SystemExit, match="normalization"):
        train(prepared, tmp_path / "refused", "--stage", "2", "--max_train_steps", "1",
              "--codec", str(model))  # fmt: skip
    assert not (tmp_path / "refused" / "unet").exists()


def test_stage2_from_scratch_and_resume_rotates(prepared, tmp_path):
    out = tmp_path / "run"
    train(prepared, out, "--stage", "2", "--max_train_steps", "2", "--checkpointing_steps", "2")
    assert checkpoint_steps(out) == [2]
    train(prepared, out, "--stage", "2", "--max_train_steps", "4", "--checkpointing_steps", "1",
          "--resume_from_checkpoint", "latest", "--checkpoints_total_limit", "2")  # fmt: skip
    assert checkpoint_steps(out) == [3, 4]
    state = json.loads((out / "checkpoint-4" / "training_state.json").read_text())
    assert state["global_step"] == 4 and state["stage"] == 2


@pytest.mark.slow
def test_resume_continues_exactly(prepared, tmp_path):
    """2 steps + resume to 4 gives the weights of 4 steps straight (all draws are per step)."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ("--stage", "2", "--gradient_accumulation_steps", "2", "--use_ema")
    train(prepared, straight, *common, "--max_train_steps", "4", "--checkpointing_steps", "4")
    train(prepared, split, *common, "--max_train_steps", "2", "--checkpointing_steps", "2")
    train(prepared, split, *common, "--max_train_steps", "4", "--checkpointing_steps", "4",
          "--resume_from_checkpoint", "latest")  # fmt: skip
    a = MotionUNet.from_pretrained(straight / "unet").state_dict()
    b = MotionUNet.from_pretrained(split / "unet").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_batch_indices_cover_each_epoch_once():
    seen = [
        i
        for step in range(3)
        for p in range(2)
        for i in train_unet.batch_indices(step, 12, 2, 2, p, 0)
    ]
    assert sorted(seen) == list(range(12))
    assert train_unet.batch_indices(0, 3, 4, 1, 0, 0)  # fewer items than a batch: wraps
    assert train_unet.batch_indices(5, 12, 2, 2, 1, 0) == train_unet.batch_indices(
        5, 12, 2, 2, 1, 0
    )


def test_flip_negates_x_motion():
    image = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4)
    spectral = torch.randn(2, 3, 4, 2, 4)
    out_image, out_spectral = train_unet.flip_left_right(
        image, spectral, torch.tensor([True, False])
    )
    assert torch.equal(out_image[0], image[0].flip(-1)) and torch.equal(out_image[1], image[1])
    assert torch.equal(out_spectral[0, :, :2], -spectral[0, :, :2].flip(-1))
    assert torch.equal(out_spectral[0, :, 2:], spectral[0, :, 2:].flip(-1))
    assert torch.equal(out_spectral[1], spectral[1])


def test_bad_inputs(prepared, tmp_path):
    no_stats = tmp_path / "no_stats"
    shutil.copytree(prepared, no_stats)
    (no_stats / "normalization.json").unlink()
    with pytest.raises(SystemExit, match="normalization.json"):
        train(no_stats, tmp_path / "a", "--max_train_steps", "1")
    with pytest.raises(SystemExit, match="not found"):
        train(prepared, tmp_path / "b", "--max_train_steps", "1",
              "--resume_from_checkpoint", "checkpoint-7")  # fmt: skip
    # A codec made for other data (K = 8) is refused.
    other = MotionConfig(num_frames=20, fps=10.0, num_freqs=8, width=64, height=48)
    codec_dir = save_spectral_codec(ResampleSpectralCodec(8), tmp_path / "codec", other,
                                    FrequencyNormalizer(np.ones(8), config=other))  # fmt: skip
    with pytest.raises(SystemExit, match="num_freqs"):
        train(prepared, tmp_path / "c", "--max_train_steps", "1", "--codec", str(codec_dir))
    with pytest.raises(SystemExit, match="train_vae.py"):
        train(prepared, tmp_path / "c", "--max_train_steps", "1", "--codec", str(tmp_path))
    # A U-Net whose config disagrees with the data (K) is refused.
    MotionUNet(num_freqs=8, block_out_channels=(8, 16), norm_num_groups=8, attention_head_dim=8,
               layers_per_block=1).save_pretrained(tmp_path / "unet8")  # fmt: skip
    with pytest.raises(SystemExit, match="num_freqs=8"):
        train(prepared, tmp_path / "d", "--max_train_steps", "1", "--pretrained_unet",
              str(tmp_path / "unet8"))  # fmt: skip
    # A frame size the U-Net cannot halve enough times.
    with pytest.raises(SystemExit, match="multiple of"):
        train(prepared, tmp_path / "e", "--max_train_steps", "1",
              "--block_out_channels", "8", "8", "8", "8")  # fmt: skip
    # A checkpoint of another stage is refused on resume.
    out = tmp_path / "f"
    train(prepared, out, "--stage", "1", "--max_train_steps", "1", "--checkpointing_steps", "1")
    with pytest.raises(SystemExit, match="frequency_attention"):
        train(prepared, out, "--stage", "2", "--max_train_steps", "2",
              "--resume_from_checkpoint", "latest")  # fmt: skip


def test_nan_loss_stops_and_keeps_last_checkpoint(prepared, tmp_path):
    out = tmp_path / "nan"
    train(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "1")
    bad = tmp_path / "bad_data"
    shutil.copytree(prepared, bad)
    for path in (bad / "clips").glob("*.npz"):
        with np.load(path) as data:
            arrays = dict(data)
        arrays["spectral"][:] = np.nan
        np.savez(path, **arrays)
    shutil.rmtree(out / "unet")
    # The codec the first run saved (a resample codec would refuse NaN data for its scale).
    with pytest.raises(SystemExit, match="loss is nan.*checkpoint-1"):
        train(bad, out, "--max_train_steps", "3", "--checkpointing_steps", "1",
              "--resume_from_checkpoint", "latest", "--codec", str(out / "codec"))  # fmt: skip
    assert checkpoint_steps(out) == [1]
    assert not (out / "unet").exists()


def run_cli(*args: str, launcher: list[str] | None = None, **env_extra: str) -> subprocess.Popen:
    command = [*(launcher or [sys.executable]), str(ROOT / "train_unet.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env_extra}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_kill_then_resume_loses_nothing(prepared, tmp_path):
    """SIGKILL after the first checkpoint; the resumed run ends with the weights of a run
    that was never killed."""
    out, straight = tmp_path / "killed", tmp_path / "straight"
    base = ["--train_data_dir", str(prepared), *TINY, "--stage", "2"]
    process = run_cli(*base, "--output_dir", str(out), "--max_train_steps", str(10**6),
                      "--checkpointing_steps", "3", "--lr_scheduler", "constant")  # fmt: skip
    deadline = time.monotonic() + 120
    while not checkpoint_steps(out) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    steps = checkpoint_steps(out)
    assert steps, "no checkpoint appeared before the kill"
    total = steps[-1] + 2
    resumed = run_cli(*base, "--output_dir", str(out), "--max_train_steps", str(total),
                      "--checkpointing_steps", "1000", "--lr_scheduler", "constant",
                      "--resume_from_checkpoint", "latest")  # fmt: skip
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log
    assert f"resuming from {out / f'checkpoint-{steps[-1]}'} (step {steps[-1]})" in log
    # The reference run in a subprocess too: Adam turns float differences between this
    # process and a fresh interpreter in near-zero gradients into lr-sized steps.
    reference = run_cli(*base, "--output_dir", str(straight), "--max_train_steps", str(total),
                        "--checkpointing_steps", "1000", "--lr_scheduler", "constant")  # fmt: skip
    log, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, log
    a = MotionUNet.from_pretrained(out / "unet").state_dict()
    b = MotionUNet.from_pretrained(straight / "unet").state_dict()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, (worst, steps)


@pytest.mark.slow
def test_two_process_data_parallel_on_cpu(prepared, tmp_path):
    """Two CPU processes (gloo): see tests/test_train_vae.py for the launcher flags."""
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    process = run_cli("--train_data_dir", str(prepared), "--output_dir", str(out), *TINY,
                      "--stage", "2", "--max_train_steps", "3", "--checkpointing_steps", "2",
                      "--train_batch_size", "1", launcher=launcher, ACCELERATE_USE_CPU="1")  # fmt: skip
    log, _ = process.communicate(timeout=300)
    assert process.returncode == 0, log
    assert "2 process(es)" in log
    assert checkpoint_steps(out) == [2]
    assert MotionUNet.from_pretrained(out / "unet").config.frequency_attention


def test_output_dir_is_a_pipeline_that_sample_py_loads(prepared, tmp_path):
    """train_unet.py ends with model_index.json: sample.py --model <output_dir> animates."""
    import sample
    from models.pipeline_motion import MotionPipeline
    from tests.test_prepare import textured_photo as photo

    out = tmp_path / "run"
    train(prepared, out, "--stage", "2", "--max_train_steps", "1", "--checkpointing_steps", "0")
    assert (out / "model_index.json").is_file()
    pipeline = MotionPipeline.from_pretrained(out)
    assert pipeline.motion_config == CONFIG
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(photo(9)).save(image)
    code = sample.main(["--model", str(out), "--image", str(image), "--output",
                        str(tmp_path / "gif"), "--renderer", "softsplat", "--num_frames", "4",
                        "--num_inference_steps", "2", "--device", "cpu"])  # fmt: skip
    assert code == 0
    assert list((tmp_path / "gif").glob("*.gif"))


def test_zero_intervals_mean_never(prepared, tmp_path):
    out = tmp_path / "never"
    train(prepared, out, "--max_train_steps", "2", "--checkpointing_steps", "0",
          "--validation_steps", "0")  # fmt: skip
    assert checkpoint_steps(out) == [] and not (out / "validation").exists()
    assert (out / "unet" / "config.json").is_file()


def test_a_crafted_pickle_in_a_checkpoint_is_refused_not_run(prepared, tmp_path):
    out = tmp_path / "pickle"
    train(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "1", "--use_ema")
    assert (out / "checkpoint-1" / "ema.safetensors").is_file()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"x": Payload()}, out / "checkpoint-1" / "custom_checkpoint_0.pkl")
    with pytest.raises(SystemExit, match="custom_checkpoint_0.pkl.*refused"):
        train(prepared, out, "--max_train_steps", "2", "--use_ema",
              "--resume_from_checkpoint", "latest")  # fmt: skip
    assert not marker.exists()


def test_resume_with_other_use_ema_is_a_clear_error(prepared, tmp_path):
    out = tmp_path / "ema"
    train(prepared, out, "--max_train_steps", "1", "--checkpointing_steps", "1")
    with pytest.raises(SystemExit, match="saved without --use_ema"):
        train(prepared, out, "--max_train_steps", "2", "--use_ema",
              "--resume_from_checkpoint", "latest")  # fmt: skip


KILL_DURING_SECOND_SAVE = """
import os, signal, sys
sys.path.insert(0, {root!r})
import accelerate
import train_unet

real, saves = accelerate.Accelerator.save_state, []

def save_then_die(self, output_dir=None, **kwargs):
    saves.append(output_dir)
    result = real(self, output_dir, **kwargs)
    if len(saves) == 2:  # the files of checkpoint-2 are written, the save is not complete
        os.kill(os.getpid(), signal.SIGKILL)
    return result

accelerate.Accelerator.save_state = save_then_die
train_unet.main(sys.argv[1:])
"""


def test_sigkill_during_a_save_with_limit_1_keeps_the_previous_checkpoint(prepared, tmp_path):
    """The issue's reproduction: --checkpoints_total_limit 1 and kill -9 while checkpoint-2
    is being saved. checkpoint-1 must survive and `latest` must resume from it (it used
    to be deleted first, and the resume silently started again at step 0)."""
    script = tmp_path / "kill_during_save.py"
    script.write_text(KILL_DURING_SECOND_SAVE.format(root=str(ROOT)))
    out = tmp_path / "killed"
    args = ["--train_data_dir", str(prepared), "--output_dir", str(out), *TINY,
            "--checkpointing_steps", "1", "--checkpoints_total_limit", "1"]  # fmt: skip
    killed = subprocess.run(
        [sys.executable, str(script), *args, "--max_train_steps", "3"], cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert checkpoint_steps(out) == [1], sorted(p.name for p in out.iterdir())
    assert (out / ".partial-checkpoint-2").is_dir()  # the interrupted save, never listed
    resumed = run_cli(*args, "--max_train_steps", "2", "--resume_from_checkpoint", "latest")
    log, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, log
    assert "(step 1)" in log and checkpoint_steps(out) == [2]
    assert not (out / ".partial-checkpoint-2").exists()


def test_mask_conditioning_from_a_model_without_it(prepared, tmp_path):
    """--mask_conditioning on a --pretrained_unet without masks: the mask channels are added,
    trained (away from their zero start) and saved; validation also runs with masks."""
    plain = tmp_path / "plain"
    train(prepared, plain, "--stage", "1", "--max_train_steps", "1", "--checkpointing_steps", "5")
    masked = tmp_path / "masked"
    train(prepared, masked, "--stage", "1", "--pretrained_unet", str(plain), "--mask_conditioning",
          "--mask_probability", "1", "--conditioning_dropout_prob", "0", "--max_train_steps", "2",
          "--checkpointing_steps", "2", "--validation_steps", "2")  # fmt: skip
    unet = MotionUNet.from_pretrained(masked / "unet")
    assert unet.config.mask_conditioning
    assert unet.image_encoder.layers[0].weight[:, 3:].abs().sum() > 0  # trained from zero
    (record,) = [
        json.loads(line) for line in (masked / "validation.jsonl").read_text().splitlines()
    ]
    assert np.isfinite(record["val_loss"]) and np.isfinite(record["val_loss_masked"])
    state = json.loads((masked / "checkpoint-2" / "training_state.json").read_text())
    assert state["unet_config"]["mask_conditioning"] is True
    # A mask-conditioned folder stays mask-conditioned without the flag.
    again = tmp_path / "again"
    train(prepared, again, "--stage", "1", "--pretrained_unet", str(masked), "--max_train_steps",
          "1", "--checkpointing_steps", "5")  # fmt: skip
    assert MotionUNet.from_pretrained(again / "unet").config.mask_conditioning


def test_mask_lr_scale_moves_only_the_mask_weights_further(prepared, tmp_path):
    """--mask_lr_scale 10: one step moves the mask's input weights 10x as far as the same step
    at scale 1, and every other weight exactly as far."""
    plain = tmp_path / "plain"
    train(prepared, plain, "--stage", "1", "--max_train_steps", "1", "--checkpointing_steps", "5")
    steps = {}
    for scale in ("1", "10"):
        out = tmp_path / f"scale{scale}"
        train(prepared, out, "--stage", "1", "--pretrained_unet", str(plain), "--mask_conditioning",
              "--mask_probability", "1", "--conditioning_dropout_prob", "0", "--max_train_steps",
              "1", "--checkpointing_steps", "5", "--mask_lr_scale", scale)  # fmt: skip
        steps[scale] = MotionUNet.from_pretrained(out / "unet").image_encoder.layers[0].weight
    base, scaled = steps["1"].detach(), steps["10"].detach()
    assert base[:, 3:].abs().max() > 0  # the mask weights start at zero and moved
    torch.testing.assert_close(scaled[:, 3:], 10 * base[:, 3:], rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(scaled[:, :3], base[:, :3], rtol=0, atol=0)


def test_assemble_default_can_take_the_renderer_from_the_folder_it_replaces(prepared, tmp_path):
    """scripts/assemble_default.py --overwrite with --renderer inside --output_dir (how the
    shipped folder is rebuilt around its renderer): loaded before the folder is replaced; the
    training output's calibrated motion_gain and motion_smoothing are kept unless
    --motion_smoothing is given."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import assemble_default

    from models.frame_synthesis import FrameSynthesisModel
    from models.pipeline_motion import MotionPipeline

    out = tmp_path / "unet"
    train(prepared, out, "--stage", "1", "--max_train_steps", "1", "--checkpointing_steps", "5")
    index = json.loads((out / "model_index.json").read_text())
    calibrated = {**index, "motion_gain": 2.5, "motion_smoothing": 1.5}
    (out / "model_index.json").write_text(json.dumps(calibrated))
    folder = tmp_path / "model"
    FrameSynthesisModel(block_out_channels=(4, 4), grid_columns=2).save_pretrained(
        folder / "renderer"
    )
    (folder / "stale.txt").write_text("from before")
    with pytest.raises(SystemExit, match="not empty"):
        assemble_default.main(["--unet_output", str(out), "--output_dir", str(folder)])
    with pytest.raises(SystemExit):  # refused before the folder is touched
        assemble_default.main(["--unet_output", str(out), "--output_dir", str(folder),
                               "--overwrite", "--motion_smoothing", "nan"])  # fmt: skip
    assert (folder / "stale.txt").exists()
    assemble_default.main(["--unet_output", str(out), "--renderer", str(folder / "renderer"),
                           "--output_dir", str(folder), "--overwrite",
                           "--motion_smoothing", "2"])  # fmt: skip
    assert not (folder / "stale.txt").exists()
    for config in folder.glob("*/config.json"):  # no path of the building machine ships
        assert "_name_or_path" not in json.loads(config.read_text()), config
    pipe = MotionPipeline.from_pretrained(folder)
    assert pipe.renderer is not None and pipe.config.motion_gain == 2.5  # the gain carried over
    assert pipe.config.motion_smoothing == 2.0  # the flag wins
    assemble_default.main(["--unet_output", str(out), "--output_dir", str(folder), "--overwrite"])
    assert MotionPipeline.from_pretrained(folder).config.motion_smoothing == 1.5  # carried over


def test_average_unets_is_the_mean_of_the_runs_and_refuses_what_cannot_be_averaged(
    prepared, tmp_path
):
    """scripts/average_unets.py: the soup's U-Net is the tensor-wise mean of the runs', the
    rest is the first run's, the gain is reset; runs of another U-Net config are refused."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(ROOT / "scripts"))
    import average_unets

    from models.pipeline_motion import MotionPipeline

    runs = [tmp_path / "a", tmp_path / "b"]
    for seed, run in enumerate(runs):
        train(prepared, run, "--stage", "1", "--max_train_steps", "2", "--seed", str(seed))
    soup = tmp_path / "soup"
    assert average_unets.main(["--inputs", *map(str, runs), "--output_dir", str(soup)]) == 0
    weights = [load_file(str(r / average_unets.UNET_WEIGHTS)) for r in [*runs, soup]]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    for name, tensor in weights[2].items():
        torch.testing.assert_close(tensor, (weights[0][name] + weights[1][name]) / 2)
    pipe = MotionPipeline.from_pretrained(soup)
    assert pipe.config.motion_gain == 1.0 and not list(soup.glob("checkpoint-*"))
    with pytest.raises(SystemExit, match="not empty"):
        average_unets.main(["--inputs", *map(str, runs), "--output_dir", str(soup)])
    with pytest.raises(SystemExit, match="at least two"):
        average_unets.main(["--inputs", str(runs[0]), "--output_dir", str(tmp_path / "x")])
    other = tmp_path / "other"
    train(prepared, other, "--stage", "1", "--max_train_steps", "1", "--layers_per_block", "2")
    with pytest.raises(SystemExit, match="U-Net config differs"):
        average_unets.main(
            ["--inputs", str(runs[0]), str(other), "--output_dir", str(tmp_path / "y")]
        )
    assert not (tmp_path / "y").exists()


def test_min_moving_fraction_leaves_still_clips_out(prepared, tmp_path, caplog, monkeypatch):
    """--min_moving_fraction: only clips whose own mask covers that share train; a value no
    clip reaches is a clear error; the value is part of what a resume must match."""
    load_split = train_unet.load_split
    still = []  # indices of the training clips made still (their masks emptied)

    def with_still_clips(dataset):
        images, spectral, masks = load_split(dataset)
        masks[still] = 0.0
        return images, spectral, masks

    monkeypatch.setattr(train_unet, "load_split", with_still_clips)
    still[:] = [0]
    out = tmp_path / "moving"
    with caplog.at_level("INFO"):
        train(prepared, out, "--stage", "1", "--max_train_steps", "1", "--checkpointing_steps",
              "1", "--min_moving_fraction", "0.05")  # fmt: skip
    assert "--min_moving_fraction 0.05: 2 of 3 training clips move enough" in caplog.text
    assert "2 training volumes" in caplog.text
    state = json.loads((out / "checkpoint-1" / "training_state.json").read_text())
    assert state["min_moving_fraction"] == 0.05
    still[:] = [0, 1, 2]
    with pytest.raises(SystemExit, match="lower --min_moving_fraction"):
        train(prepared, tmp_path / "none", "--stage", "1", "--max_train_steps", "1",
              "--min_moving_fraction", "0.05")  # fmt: skip
    with pytest.raises(SystemExit):
        train_unet.parse_args(["--train_data_dir", "x", "--codec", "resample:8",
                               "--min_moving_fraction", "1"])  # fmt: skip


def test_make_batch_masks_follow_probability_and_dropout(prepared):
    """Own masks with --mask_probability, the null mask otherwise and wherever the photo is
    dropped; flipped with the photo."""
    from types import SimpleNamespace

    from data.dataset import SpectralVolumeDataset
    from models.motion_unet import NULL_MASK_VALUE

    images, spectral, masks = train_unet.load_split(SpectralVolumeDataset(prepared, "train"))
    assert masks.shape == (len(images), 1, CONFIG.height, CONFIG.width)
    assert 0 <= masks.min() and masks.max() <= 1 and masks.max() > 0.5
    codec = ResampleSpectralCodec(downsample_factor=8)
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler()
    accelerator = SimpleNamespace(device=torch.device("cpu"), process_index=0, num_processes=1)
    given = dropped = 0
    for step in range(20):
        args = SimpleNamespace(seed=0, train_batch_size=2, random_flip=True, stage=1,
                               conditioning_dropout_prob=0.3, mask_conditioning=True,
                               mask_probability=0.5)  # fmt: skip
        *_, image, _, _, mask = train_unet.make_batch(
            args, step, images, spectral, codec, scheduler, torch.Generator(), accelerator, masks
        )
        for i in range(2):
            if (mask[i] == NULL_MASK_VALUE).all():
                dropped += 1
            else:
                given += 1
                assert image[i].abs().sum() > 0  # a mask is never given without the photo
                assert 0 <= mask[i].min() and mask[i].max() <= 1
        args.mask_conditioning = False
        assert (
            train_unet.make_batch(
                args,
                step,
                images,
                spectral,
                codec,
                scheduler,
                torch.Generator(),
                accelerator,
                masks,
            )[-1]
            is None
        )
    # P(given) = 0.5 * 0.7 = 0.35 of 40 items
    assert 5 <= given <= 25 and given + dropped == 40


def test_motion_energy_mask_marks_where_the_clip_moves():
    """The training mask of a clip: where its own motion is, feathered; still clips: zeros."""
    from data.dataset import motion_energy_mask
    from data.spectral import displacement_to_spectral
    from data.synthetic import synthesize_oscillation

    spectral = np.zeros((4, 4, 48, 64), np.float32)
    spectral[1, 0, :, :24] = 0.8  # bin 1, x: the left part oscillates (0.8 * 2 ** 0.5 px RMS)
    mask = motion_energy_mask(spectral)
    assert mask.shape == (48, 64) and mask.dtype == np.float32
    assert mask[:, :20].min() == 1.0 and mask[:, 32:].max() == 0.0
    assert 0 < mask[24, 26] < 1  # a feathered edge
    spectral[0] = 5.0  # the DC bin is an offset, not motion: ignored
    np.testing.assert_array_equal(motion_energy_mask(spectral), mask)
    assert not motion_energy_mask(spectral * 0.01).any()  # 0.01 px: a still clip
    with pytest.raises(ValueError, match=r"\(K, 4, H, W\)"):
        motion_energy_mask(spectral[0])
    # a synthetic clip: the energy mask covers the region the generator let move
    photo = textured_photo(0)
    clip = synthesize_oscillation(photo, CONFIG, seed=0, render=False)
    truth = clip.motion_mask > 0.5
    energy = motion_energy_mask(displacement_to_spectral(clip.displacement, CONFIG.num_freqs)) > 0.5
    assert truth.mean() > 0.3  # the photo has a moving region (70 %) and a still one
    assert (truth & energy).sum() / (truth | energy).sum() > 0.8  # IoU, measured 0.96


def test_brush_augmentation_makes_the_mask_decide_where_motion_is():
    """--mask_augmentation: a random stroke inside the own mask; the motion outside it goes."""
    generator = torch.Generator().manual_seed(0)
    brush = train_unet.random_brush(6, (48, 64), generator)
    assert brush.shape == (6, 1, 48, 64) and brush.min() == 0 and brush.max() == 1
    covered = (brush > 0.5).float().mean(dim=(1, 2, 3))
    assert covered.min() > 0.2 and covered.max() < 0.8  # 30-70 % drawn, feathered edge
    spectral = torch.randn(2, 4, 4, 48, 64)
    mask = torch.ones(2, 1, 48, 64)
    augment = torch.tensor([True, False])
    out, out_mask = train_unet.brush_augment(spectral, mask, augment, generator)
    assert torch.equal(out[1], spectral[1]) and torch.equal(out_mask[1], mask[1])  # untouched
    assert (out_mask[0] < 1).any() and (out_mask[0] > 0.99).any()
    outside = out_mask[0, 0] == 0
    assert outside.any() and (out[0][:, :, outside] == 0).all()  # no motion outside
    # through make_batch: only drawn when asked, so runs without it are unchanged
    from types import SimpleNamespace

    from diffusers import DDPMScheduler

    images, volumes = torch.zeros(4, 3, 48, 64), torch.randn(4, 4, 4, 48, 64).half()
    masks = torch.ones(4, 1, 48, 64)
    accelerator = SimpleNamespace(device=torch.device("cpu"), process_index=0, num_processes=1)
    codec, scheduler = ResampleSpectralCodec(downsample_factor=8), DDPMScheduler()

    def batch(augmentation: float):
        args = SimpleNamespace(seed=0, train_batch_size=4, random_flip=False, stage=2,
                               conditioning_dropout_prob=0.0, mask_conditioning=True,
                               mask_probability=1.0, mask_augmentation=augmentation)  # fmt: skip
        return train_unet.make_batch(args, 0, images, volumes, codec, scheduler,
                                     torch.Generator(), accelerator, masks)  # fmt: skip

    assert (batch(0.0)[-1] == 1).all()
    assert (batch(1.0)[-1] < 1).any()


def test_mask_slack_widens_the_mask_and_keeps_the_motion():
    """--mask_slack: the given mask also covers a random still region (``widen_mask`` never
    sees the motion: the mask says "may move"); items with a brush stroke are left alone."""
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(2, 1, 48, 64)
    mask[..., :16] = 1.0
    widened = train_unet.widen_mask(mask, torch.tensor([True, False]), generator)
    assert torch.equal(widened[1], mask[1])
    assert (widened[0] >= mask[0]).all() and (widened[0, :, :, 16:] > 0.5).any()
    from types import SimpleNamespace

    from diffusers import DDPMScheduler

    images, volumes = torch.zeros(4, 3, 48, 64), torch.randn(4, 4, 4, 48, 64).half()
    masks = mask[:1].expand(4, -1, -1, -1).clone()
    accelerator = SimpleNamespace(device=torch.device("cpu"), process_index=0, num_processes=1)
    codec, scheduler = ResampleSpectralCodec(downsample_factor=8), DDPMScheduler()

    def batch(slack: float, augmentation: float = 0.0):
        args = SimpleNamespace(seed=0, train_batch_size=4, random_flip=False, stage=2,
                               conditioning_dropout_prob=0.0, mask_conditioning=True,
                               mask_probability=1.0, mask_augmentation=augmentation,
                               mask_slack=slack)  # fmt: skip
        return train_unet.make_batch(args, 0, images, volumes, codec, scheduler,
                                     torch.Generator(), accelerator, masks)  # fmt: skip

    plain, slack = batch(0.0), batch(1.0)
    assert torch.equal(plain[-1], masks)
    assert (slack[-1] >= masks).all() and (slack[-1][..., 16:] > 0.5).any()
    # with every item brushed, none is widened: a stroke stays inside the own mask
    brushed = batch(1.0, augmentation=1.0)[-1]
    assert (brushed[..., 16:] == 0).all()


def test_mask_slack_out_of_range_is_refused(capsys):
    with pytest.raises(SystemExit):
        train_unet.parse_args(
            ["--train_data_dir", "x", "--codec", "resample:8", "--mask_slack", "1.5"]
        )
    assert "--mask_slack must be in [0, 1], got 1.5" in capsys.readouterr().err


def test_average_unets_base_moves_the_mean_towards_the_init(prepared, tmp_path):
    """--base INIT --base_weight w: w * init + (1 - w) * mean(runs), the init loaded as the
    fine-tunes loaded it (a mask-conditioned run's mask channels count as zero in an init
    without them); bad flags and an init of another U-Net are refused, nothing written."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(ROOT / "scripts"))
    import average_unets

    plain = tmp_path / "plain"
    train(prepared, plain, "--stage", "1", "--max_train_steps", "1", "--checkpointing_steps", "5")
    masked = tmp_path / "masked"
    train(prepared, masked, "--stage", "1", "--pretrained_unet", str(plain), "--mask_conditioning",
          "--mask_probability", "1", "--max_train_steps", "2", "--checkpointing_steps", "5")  # fmt: skip
    out = tmp_path / "wise"
    assert average_unets.main(["--inputs", str(masked), "--base", str(plain), "--base_weight",
                               "0.75", "--output_dir", str(out)]) == 0  # fmt: skip
    init, run, mixed = (
        load_file(str(p / average_unets.UNET_WEIGHTS)) for p in (plain, masked, out)
    )
    first = "image_encoder.layers.0.weight"
    assert run[first][:, 3:].abs().sum() > 0 and init[first].shape[1] == 3
    torch.testing.assert_close(mixed[first][:, :3], 0.75 * init[first] + 0.25 * run[first][:, :3])
    torch.testing.assert_close(mixed[first][:, 3:], 0.25 * run[first][:, 3:])
    for name in run.keys() - {first}:
        torch.testing.assert_close(mixed[name], 0.75 * init[name] + 0.25 * run[name])
    assert MotionUNet.from_pretrained(out / "unet").config.mask_conditioning

    def refused(match: str, *flags: str) -> None:
        target = tmp_path / "refused"
        with pytest.raises(SystemExit, match=match):
            average_unets.main(["--inputs", str(masked), *flags, "--output_dir", str(target)])
        assert not target.exists()

    refused("go together", "--base", str(plain))
    refused("in \\[0, 1\\]", "--base", str(plain), "--base_weight", "1.5")
    refused("at least two")  # one run alone is no soup
    refused("no unet/config.json", "--base", str(tmp_path / "missing"), "--base_weight", "0.5")
    other = tmp_path / "other"
    train(prepared, other, "--stage", "1", "--max_train_steps", "1", "--layers_per_block", "2")
    refused("differs from the runs'", "--base", str(other), "--base_weight", "0.5")
