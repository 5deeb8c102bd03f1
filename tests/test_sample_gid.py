"""sample.py --method gid end to end on tiny models built here (no shipped weights needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image

import sample
from data.config import MotionConfig
from data.spectral import FrequencyNormalizer
from models.frame_synthesis import FrameSynthesisModel
from models.motion_unet import MotionUNet
from models.pipeline_motion import MotionPipeline
from models.spectral_codec import ResampleSpectralCodec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = MotionConfig(num_frames=12, fps=6.0, num_freqs=4, width=32, height=16)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny motion pipeline with a tiny learned renderer in ``renderer/``."""
    torch.manual_seed(0)
    unet = MotionUNet(
        num_freqs=CONFIG.num_freqs,
        image_downsample_factor=4,
        image_embed_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=8,
    )
    pipeline = MotionPipeline(
        vae=ResampleSpectralCodec(downsample_factor=4),
        unet=unet,
        scheduler=DDIMScheduler(num_train_timesteps=100),
        motion_config=CONFIG.to_dict(),
        # small scales: the untrained model moves pixels by about one pixel, not out of the frame
        normalization=FrequencyNormalizer([0.3, 0.3, 0.2, 0.1], 95.0, 3, CONFIG).to_dict(),
    )
    path = tmp_path_factory.mktemp("model")
    pipeline.save_pretrained(path)
    FrameSynthesisModel(block_out_channels=(4, 8), grid_columns=2).save_pretrained(
        path / "renderer"
    )
    return path


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("leaf.png", (48, 40)), ("tree.jpg", (50, 50))):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / name
        )
    return folder


def _run(model_dir, image, out, *extra):
    return sample.main(
        ["--model", str(model_dir), "--image", str(image), "--output", str(out),
         "--num_frames", "8", "--fps", "6", "--num_inference_steps", "2", *extra]
    )  # fmt: skip


def _frames(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def test_gif_of_a_photo_with_the_learned_renderer(model_dir, photos, tmp_path, capsys):
    assert _run(model_dir, photos / "leaf.png", tmp_path / "out") == 0
    with Image.open(tmp_path / "out" / "leaf.gif") as gif:
        assert gif.n_frames == 8 and gif.size == (CONFIG.width, CONFIG.height)
    summary = capsys.readouterr().out
    assert "1/1 photos" in summary and "motion" in summary and "render" in summary


def test_frames_are_deterministic_for_a_seed(model_dir, photos, tmp_path, renderer="softsplat"):
    for name in ("a", "b"):
        _run(model_dir, photos / "tree.jpg", tmp_path / name, "--format", "frames",
             "--renderer", renderer, "--seed", "3")  # fmt: skip
    first, second = _frames(tmp_path / "a" / "tree"), _frames(tmp_path / "b" / "tree")
    assert first.shape == (8, CONFIG.height, CONFIG.width, 3)
    np.testing.assert_array_equal(first, second)
    _run(model_dir, photos / "tree.jpg", tmp_path / "c", "--format", "frames",
         "--renderer", renderer, "--seed", "4")  # fmt: skip
    assert not np.array_equal(first, _frames(tmp_path / "c" / "tree"))


@pytest.mark.parametrize("renderer", ["average", "remap"])
def test_baseline_renderers(model_dir, photos, tmp_path, renderer):
    _run(
        model_dir, photos / "tree.jpg", tmp_path / "o", "--format", "frames", "--renderer", renderer
    )
    frames = _frames(tmp_path / "o" / "tree")
    assert frames.shape == (8, CONFIG.height, CONFIG.width, 3) and frames.std(axis=0).max() > 0


def test_zero_amplitude_renders_the_still_photo(model_dir, photos, tmp_path):
    _run(model_dir, photos / "leaf.png", tmp_path / "o", "--format", "frames",
         "--renderer", "softsplat", "--amplitude", "0")  # fmt: skip
    frames = _frames(tmp_path / "o" / "leaf")
    assert (frames == frames[0]).all()
    assert frames.std(axis=0).max() == 0 and frames[0].std() > 10


def test_folder_batch_goes_past_a_bad_file(model_dir, photos, tmp_path, capsys):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code = _run(model_dir, photos, tmp_path / "out", "--renderer", "softsplat", "--format", "mp4")
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["leaf.mp4", "tree.mp4"]
    out = capsys.readouterr().out
    assert "2/3 photos" in out and "FAILED" in out and "broken.jpg" in out


def test_save_motion_writes_spectrum_flow_and_npz(model_dir, photos, tmp_path):
    _run(model_dir, photos / "leaf.png", tmp_path / "o", "--renderer", "softsplat",
         "--save_motion", "--speed", "2")  # fmt: skip
    motion = np.load(tmp_path / "o" / "leaf_motion.npz")
    assert motion["spectral"].shape == (CONFIG.num_freqs, 4, CONFIG.height, CONFIG.width)
    assert (tmp_path / "o" / "leaf_spectrum.png").is_file()
    assert len(list((tmp_path / "o" / "leaf_flow").glob("*.png"))) == 8


def test_overwrite_flag_replaces_outputs(model_dir, photos, tmp_path):
    args = ("--renderer", "softsplat")
    assert _run(model_dir, photos / "leaf.png", tmp_path / "o", *args) == 0
    with pytest.raises(FileExistsError):
        _run(model_dir, photos / "leaf.png", tmp_path / "o", *args)
    assert _run(model_dir, photos / "leaf.png", tmp_path / "o", *args, "--overwrite") == 0


def test_model_without_renderer_names_the_way_out(model_dir, photos, tmp_path):
    pipeline = MotionPipeline.from_pretrained(model_dir)
    pipeline.save_pretrained(tmp_path / "motion_only")
    with pytest.raises(FileNotFoundError, match="--renderer softsplat"):
        _run(tmp_path / "motion_only", photos / "leaf.png", tmp_path / "o")
    assert _run(tmp_path / "motion_only", photos / "leaf.png", tmp_path / "o",
                "--renderer", "softsplat") == 0  # fmt: skip


def test_shipped_weights_animate_the_bundled_examples(tmp_path, capsys):
    """The README's first command, shortened: the committed default weights load and run."""
    from generators.gid import DEFAULT_MODEL, EXAMPLES_DIR

    assert (DEFAULT_MODEL / "model_index.json").is_file(), "weights/default is missing"
    code = sample.main(["--output", str(tmp_path), "--num_frames", "6",
                        "--num_inference_steps", "2"])  # fmt: skip
    assert code == 0
    written = sorted(p.name for p in tmp_path.glob("*.gif"))
    assert written == sorted(f"{p.stem}.gif" for p in EXAMPLES_DIR.glob("*.jpg"))
    with Image.open(tmp_path / written[0]) as gif:
        assert gif.size == (256, 160) and gif.n_frames == 6
    assert "2/2 photos" in capsys.readouterr().out


def test_first_frame_is_the_photo(model_dir, photos, tmp_path):
    _run(model_dir, photos / "tree.jpg", tmp_path / "o", "--format", "frames",
         "--renderer", "remap", "--amplitude", "3")  # fmt: skip
    frames = _frames(tmp_path / "o" / "tree")
    _run(model_dir, photos / "tree.jpg", tmp_path / "still", "--format", "frames",
         "--renderer", "remap", "--amplitude", "0")  # fmt: skip
    np.testing.assert_array_equal(frames[0], _frames(tmp_path / "still" / "tree")[0])
    assert not np.array_equal(frames[1], frames[0])
