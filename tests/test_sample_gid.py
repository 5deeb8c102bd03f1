"""sample.py --method gid end to end on tiny models built here (no shipped weights needed)."""

from __future__ import annotations

import warnings

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
    """A tiny motion pipeline with a tiny learned renderer."""
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
        codec=ResampleSpectralCodec(downsample_factor=4),
        unet=unet,
        scheduler=DDIMScheduler(num_train_timesteps=100),
        renderer=FrameSynthesisModel(block_out_channels=(4, 8), grid_columns=2),
        motion_config=CONFIG.to_dict(),
        # small scales: the untrained model moves pixels by about one pixel, not out of the frame
        normalization=FrequencyNormalizer([0.3, 0.3, 0.2, 0.1], 95.0, 3, CONFIG).to_dict(),
    )
    path = tmp_path_factory.mktemp("model")
    pipeline.save_pretrained(path)
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
    with Image.open(tmp_path / "out" / "leaf.gif") as gif:  # the whole photo, its own size
        assert gif.n_frames == 8 and gif.size == (48, 40)
    summary = capsys.readouterr().out
    assert "1/1 photos" in summary and "motion" in summary and "render" in summary


def test_frames_are_deterministic_for_a_seed(model_dir, photos, tmp_path, renderer="softsplat"):
    for name in ("a", "b"):
        _run(model_dir, photos / "tree.jpg", tmp_path / name, "--format", "frames",
             "--renderer", renderer, "--seed", "3")  # fmt: skip
    first, second = _frames(tmp_path / "a" / "tree"), _frames(tmp_path / "b" / "tree")
    assert first.shape == (8, 50, 50, 3)
    np.testing.assert_array_equal(first, second)
    _run(model_dir, photos / "tree.jpg", tmp_path / "c", "--format", "frames",
         "--renderer", renderer, "--seed", "4")  # fmt: skip
    assert not np.array_equal(first, _frames(tmp_path / "c" / "tree"))


@pytest.mark.parametrize("renderer", ["average", "remap"])
def test_baseline_renderers(model_dir, photos, tmp_path, renderer):
    _run(model_dir, photos / "tree.jpg", tmp_path / "o", "--format", "frames",
         "--renderer", renderer, "--size", "32x16")  # fmt: skip
    frames = _frames(tmp_path / "o" / "tree")
    assert frames.shape == (8, 16, 32, 3) and frames.std(axis=0).max() > 0


def test_zero_amplitude_renders_the_still_photo(model_dir, photos, tmp_path):
    _run(model_dir, photos / "leaf.png", tmp_path / "o", "--format", "frames",
         "--renderer", "softsplat", "--amplitude", "0")  # fmt: skip
    frames = _frames(tmp_path / "o" / "leaf")
    assert (frames == frames[0]).all()
    assert frames.std(axis=0).max() == 0 and frames[0].std() > 10


def test_the_visible_default_lifts_the_model_motion_and_says_so(model_dir, photos, tmp_path,
                                                                 capsys):  # fmt: skip
    """By default the motion is the model's times the printed visible gain (1-4x); with
    --amplitude_reference model it is the model's own: the same sample, scaled."""
    from generators.gid import DEFAULT_AMPLITUDE_REFERENCE

    assert DEFAULT_AMPLITUDE_REFERENCE == "visible"
    flags = ("--format", "frames", "--renderer", "remap", "--save_motion")
    _run(model_dir, photos / "leaf.png", tmp_path / "v", *flags)
    printed = capsys.readouterr().out
    gain = float(printed.split("motion x")[1].split()[0])
    assert 1.0 <= gain <= 4.0 and "to be visible" in printed
    _run(model_dir, photos / "leaf.png", tmp_path / "m", *flags, "--amplitude_reference", "model")
    assert "to be visible" not in capsys.readouterr().out
    visible, model = (np.load(next((tmp_path / d).rglob("*.npz")))["spectral"] for d in "vm")
    np.testing.assert_allclose(visible, gain * model, rtol=0.01, atol=1e-6)


def test_motion_smoothing_flag_blurs_the_sampled_motion(model_dir, photos, tmp_path):
    """--motion_smoothing 0 is the model's raw sample, a sigma blurs it (the same seed):
    the saved volume loses spatial detail and keeps its shape."""
    flags = ("--format", "frames", "--renderer", "remap", "--save_motion", "--amplitude_reference",
             "model", "--motion_mask", "none")  # fmt: skip
    _run(model_dir, photos / "leaf.png", tmp_path / "raw", *flags, "--motion_smoothing", "0")
    _run(model_dir, photos / "leaf.png", tmp_path / "blur", *flags, "--motion_smoothing", "2")
    raw, blurred = (
        np.load(next((tmp_path / d).rglob("*.npz")))["spectral"] for d in ("raw", "blur")
    )
    assert raw.shape == blurred.shape
    detail = [np.abs(np.diff(s[1:], axis=-1)).mean() for s in (raw, blurred)]
    assert detail[1] < 0.5 * detail[0]


def test_direction_flag_makes_the_motion_sway_along_its_axis(model_dir, photos, tmp_path):
    """--direction 90 --direction_strength 1: the saved volume moves up and down only."""
    flags = ("--format", "frames", "--renderer", "remap", "--save_motion", "--motion_mask", "none")
    _run(model_dir, photos / "leaf.png", tmp_path / "free", *flags)
    _run(model_dir, photos / "leaf.png", tmp_path / "up", *flags, "--direction", "90",
         "--direction_strength", "1")  # fmt: skip
    free, vertical = (
        np.load(next((tmp_path / d).rglob("*.npz")))["spectral"][1:] for d in ("free", "up")
    )
    assert np.square(free[:, 0:2]).sum() > 0.05 * np.square(free).sum()  # x motion before
    assert np.square(vertical[:, 0:2]).sum() < 1e-8 * np.square(vertical).sum()


def test_a_clip_that_is_not_a_whole_loop_is_warned_about(model_dir, photos, tmp_path):
    """The tiny model loops every 12 frames at 6 fps: 8 frames jump where they wrap (the
    warning says 12 would not), 12 and 24 do not warn, nor does a poke's ring-down."""
    flags = ("--format", "frames", "--renderer", "remap")
    with pytest.warns(UserWarning, match="--num_frames 8 .*12 frames loop seamlessly"):
        _run(model_dir, photos / "leaf.png", tmp_path / "a", *flags)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for count in ("12", "24"):
            _run(model_dir, photos / "leaf.png", tmp_path / count, *flags, "--num_frames", count)
        _run(model_dir, photos / "leaf.png", tmp_path / "p", *flags, "--poke", "10,10,2,0")


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
    assert motion["spectral"].shape == (CONFIG.num_freqs, 4, 40, 48)
    assert (tmp_path / "o" / "leaf_spectrum.png").is_file()
    assert len(list((tmp_path / "o" / "leaf_flow").glob("*.png"))) == 8


def test_overwrite_flag_replaces_outputs(model_dir, photos, tmp_path):
    args = ("--renderer", "softsplat")
    assert _run(model_dir, photos / "leaf.png", tmp_path / "o", *args) == 0
    with pytest.raises(FileExistsError):
        _run(model_dir, photos / "leaf.png", tmp_path / "o", *args)
    assert _run(model_dir, photos / "leaf.png", tmp_path / "o", *args, "--overwrite") == 0


def test_model_without_renderer_falls_back_to_splatting(model_dir, photos, tmp_path, capsys):
    pipeline = MotionPipeline.from_pretrained(model_dir)
    pipeline.renderer = None
    pipeline.register_modules(renderer=None)
    pipeline.save_pretrained(tmp_path / "motion_only")
    with pytest.raises(ValueError, match="softsplat"):
        _run(tmp_path / "motion_only", photos / "leaf.png", tmp_path / "o", "--renderer",
             "synthesis")  # fmt: skip
    assert _run(tmp_path / "motion_only", photos / "leaf.png", tmp_path / "o") == 0
    assert "rendering with average splatting" in capsys.readouterr().out


def test_shipped_weights_animate_the_bundled_examples(tmp_path, capsys):
    """The README's first command, shortened: the committed default weights load and run."""
    from generators.gid import DEFAULT_MODEL, EXAMPLES_DIR

    assert (DEFAULT_MODEL / "model_index.json").is_file(), "weights/default is missing"
    code = sample.main(["--output", str(tmp_path), "--num_frames", "6",
                        "--num_inference_steps", "2"])  # fmt: skip
    assert code == 0
    written = sorted(p.name for p in tmp_path.glob("*.gif"))
    assert written == sorted(f"{p.stem}.gif" for p in EXAMPLES_DIR.glob("*.jpg"))
    for name in written:  # each photo whole, at its own size
        with (
            Image.open(tmp_path / name) as gif,
            Image.open(EXAMPLES_DIR / f"{name[:-4]}.jpg") as jpg,
        ):
            # (GIF merges identical frames: the sub-pixel motion of 2 steps may repeat some)
            assert gif.size == jpg.size and 1 < gif.n_frames <= 6
    out = capsys.readouterr().out
    assert "2/2 photos" in out and "6 frames of 535x426, from a 535x426 photo" in out


def test_first_frame_is_the_photo(model_dir, photos, tmp_path):
    _run(model_dir, photos / "tree.jpg", tmp_path / "o", "--format", "frames",
         "--renderer", "remap", "--amplitude", "3")  # fmt: skip
    frames = _frames(tmp_path / "o" / "tree")
    _run(model_dir, photos / "tree.jpg", tmp_path / "still", "--format", "frames",
         "--renderer", "remap", "--amplitude", "0")  # fmt: skip
    np.testing.assert_array_equal(frames[0], _frames(tmp_path / "still" / "tree")[0])
    assert not np.array_equal(frames[1], frames[0])


# ----------------------------------------------------------------------- sizes, masks, files


def test_size_and_crop_flags(model_dir, photos, tmp_path):
    _run(model_dir, photos / "leaf.png", tmp_path / "a", "--size", "32x16")
    _run(model_dir, photos / "leaf.png", tmp_path / "b", "--crop")  # the model's frame
    for name in ("a", "b"):
        with Image.open(tmp_path / name / "leaf.gif") as gif:
            assert gif.size == (CONFIG.width, CONFIG.height)
    with pytest.raises(ValueError, match="WxH"):
        _run(model_dir, photos / "leaf.png", tmp_path / "c", "--size", "big")


def test_output_file_for_one_photo(model_dir, photos, tmp_path):
    target = tmp_path / "deep" / "clip.mp4"
    assert _run(model_dir, photos / "leaf.png", target) == 0
    assert target.is_file() and not (target / "leaf.mp4").exists()
    with pytest.raises(FileExistsError):
        _run(model_dir, photos / "leaf.png", target)
    with pytest.raises(ValueError, match="2 photos"):
        _run(model_dir, photos, tmp_path / "all.gif")
    with pytest.raises(ValueError, match="--format"):
        _run(model_dir, photos / "leaf.png", tmp_path / "x.gif", "--format", "mp4")


def _masks(tmp_path):
    left_black = np.zeros((40, 48), np.uint8)
    left_black[:, 24:] = 255
    Image.fromarray(left_black).save(tmp_path / "move_right.png")
    Image.fromarray(255 - left_black).save(tmp_path / "still_right.png")
    Image.fromarray(np.zeros((40, 48), np.uint8)).save(tmp_path / "black.png")
    Image.fromarray(np.full((40, 48), 255, np.uint8)).save(tmp_path / "white.png")


def test_motion_and_still_masks_keep_the_black_side_still(model_dir, photos, tmp_path):
    _masks(tmp_path)
    for flag, mask, out in (("--motion_mask", "move_right.png", "m"),
                            ("--still_mask", "still_right.png", "s")):  # fmt: skip
        _run(model_dir, photos / "leaf.png", tmp_path / out, "--format", "frames",
             "--renderer", "remap", "--amplitude", "3", flag, str(tmp_path / mask),
             "--save_motion")  # fmt: skip
        spectral = np.load(tmp_path / out / "leaf_motion.npz")["spectral"]  # (K, 4, 40, 48)
        energy = np.square(spectral).sum(axis=(0, 1))
        assert energy[:, :24].sum() == 0 and energy[:, 30:].sum() > 0
    with pytest.raises(ValueError, match="all black"):
        _run(model_dir, photos / "leaf.png", tmp_path / "b", "--motion_mask",
             str(tmp_path / "black.png"))  # fmt: skip
    with pytest.raises(ValueError, match="not both"):
        _run(model_dir, photos / "leaf.png", tmp_path / "c", "--motion_mask",
             str(tmp_path / "black.png"), "--still_mask", str(tmp_path / "black.png"))  # fmt: skip
    with pytest.raises(ValueError, match="all white"):
        _run(model_dir, photos / "leaf.png", tmp_path / "w", "--still_mask",
             str(tmp_path / "white.png"))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="--still_mask .*gone.png: no such file"):
        _run(model_dir, photos / "leaf.png", tmp_path / "g", "--still_mask",
             str(tmp_path / "gone.png"))  # fmt: skip


def test_a_mask_file_named_like_a_keyword_is_read_as_a_file(model_dir, photos, tmp_path,
                                                           monkeypatch):  # fmt: skip
    _masks(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "none").write_bytes((tmp_path / "move_right.png").read_bytes())
    _run(model_dir, photos / "leaf.png", tmp_path / "o", "--renderer", "remap", "--amplitude",
         "3", "--motion_mask", "none", "--save_motion")  # fmt: skip
    energy = np.square(np.load(tmp_path / "o" / "leaf_motion.npz")["spectral"]).sum(axis=(0, 1))
    assert energy[:, :24].sum() == 0 and energy[:, 30:].sum() > 0


def test_frames_overwrite_leaves_no_frame_of_an_earlier_run(model_dir, photos, tmp_path):
    args = ("--format", "frames", "--renderer", "average")
    _run(model_dir, photos / "leaf.png", tmp_path / "o", *args)  # 8 frames
    sample.main(["--model", str(model_dir), "--image", str(photos / "leaf.png"),
                 "--output", str(tmp_path / "o"), "--num_frames", "3", "--fps", "6",
                 "--num_inference_steps", "2", *args, "--overwrite"])  # fmt: skip
    assert len(list((tmp_path / "o" / "leaf").glob("*.png"))) == 3


def test_save_motion_files_are_not_replaced_silently(model_dir, photos, tmp_path):
    _run(model_dir, photos / "leaf.png", tmp_path / "o", "--save_motion")
    (tmp_path / "o" / "leaf.gif").unlink()  # the animation is gone, its motion file is not
    with pytest.raises(FileExistsError, match="leaf_motion.npz"):
        _run(model_dir, photos / "leaf.png", tmp_path / "o", "--save_motion")


def test_automatic_motion_mask(model_dir, tmp_path):
    """--motion_mask auto: the image cues keep a flat sky still and let textured green move."""
    rng = np.random.default_rng(0)
    scene = np.empty((40, 48, 3), np.uint8)
    scene[:20] = (135, 180, 235)  # a clear sky
    scene[20:] = np.clip(rng.normal((60, 140, 50), 40, (20, 48, 3)), 0, 255)  # textured green
    Image.fromarray(scene).save(tmp_path / "meadow.png")
    _run(model_dir, tmp_path / "meadow.png", tmp_path / "o", "--motion_mask", "auto",
         "--renderer", "remap", "--save_motion")  # fmt: skip
    energy = np.square(np.load(tmp_path / "o" / "meadow_motion.npz")["spectral"]).sum(axis=(0, 1))
    assert energy[:12].sum() <= 0.02 * energy.sum() and energy[28:].sum() > 0
    # it is the default; 'none' gives the model's motion everywhere (the sky moves too)
    for name, extra in (("default", ()), ("none", ("--motion_mask", "none"))):
        _run(model_dir, tmp_path / "meadow.png", tmp_path / name, "--renderer", "remap",
             "--save_motion", *extra)  # fmt: skip
    spectral = {
        name: np.load(tmp_path / name / "meadow_motion.npz")["spectral"]
        for name in ("default", "none")
    }
    np.testing.assert_array_equal(
        spectral["default"], np.load(tmp_path / "o" / "meadow_motion.npz")["spectral"]
    )
    sky = np.square(spectral["none"]).sum(axis=(0, 1))[:12]
    assert sky.sum() > 0.05 * np.square(spectral["none"]).sum()
    with pytest.raises(ValueError, match="unknown motion-mask provider"):
        _run(model_dir, tmp_path / "meadow.png", tmp_path / "p", "--motion_mask", "auto",
             "--mask_provider", "magic")  # fmt: skip


def test_poke_writes_the_response(model_dir, photos, tmp_path):
    """--poke: nothing moves before the push, the poked photo then swings."""
    _run(model_dir, photos / "tree.jpg", tmp_path / "o", "--format", "frames",
         "--renderer", "remap", "--poke", "25,25,0,6,0.5", "--save_motion")  # fmt: skip
    frames = _frames(tmp_path / "o" / "tree")  # 8 frames at 6 fps: the push at frame 3
    assert frames.shape == (8, 50, 50, 3)
    assert (frames[:4] == frames[0]).all()  # frames 0-3 are at or before 0.5 s
    assert not np.array_equal(frames[5], frames[0])
    with pytest.raises(ValueError, match="--poke"):
        _run(model_dir, photos / "tree.jpg", tmp_path / "p", "--poke", "25,25")
    with pytest.raises(ValueError, match="--damping"):
        _run(model_dir, photos / "tree.jpg", tmp_path / "q", "--poke", "25,25,0,6",
             "--damping", "1.5")  # fmt: skip


def test_sample_py_and_python_get_the_same_frames(model_dir, photos, tmp_path):
    """The command line is one MotionPipeline call: the same arguments, the same frames."""
    from data.images import load_image
    from generators.gid import DEFAULT_AMPLITUDE_REFERENCE, DEFAULT_GUIDANCE_SCALE

    _run(model_dir, photos / "leaf.png", tmp_path / "o", "--format", "frames", "--seed", "3",
         "--amplitude", "2", "--speed", "1.5")  # fmt: skip
    pipe = MotionPipeline.from_pretrained(model_dir)
    pipe.set_scheduler("dpm")
    pipe.set_progress_bar_config(disable=True)
    out = pipe(load_image(photos / "leaf.png"), num_inference_steps=2, num_frames=8, fps=6,
               amplitude=2.0, amplitude_reference=DEFAULT_AMPLITUDE_REFERENCE, speed=1.5,
               guidance_scale=DEFAULT_GUIDANCE_SCALE,
               generator=torch.Generator().manual_seed(3))  # fmt: skip
    np.testing.assert_array_equal(_frames(tmp_path / "o" / "leaf"), out.frames[0])


def test_shipped_weights_take_a_brush_as_a_condition():
    """The shipped U-Net is mask-conditioned (issue 15): a brush over the left half keeps the
    motion inside it and makes it stronger there than the U-Net moves with no mask at all
    (bench_motion_prior.py's "strength"; 1.0-2.9 on the annotated photos)."""
    from data.spectral import rms_displacement
    from generators.gid import DEFAULT_GUIDANCE_SCALE, DEFAULT_MODEL, EXAMPLES_DIR
    from models.pipeline_motion import MotionPipeline

    pipe = MotionPipeline.from_pretrained(DEFAULT_MODEL)
    assert pipe.unet.config.mask_conditioning
    pipe.set_scheduler("dpm")
    photo = EXAMPLES_DIR / "squirrel_cls.jpg"
    with Image.open(photo) as image:
        brush = np.zeros((image.height, image.width), np.uint8)  # the photo's aspect
    brush[:, : brush.shape[1] // 2] = 255

    def rms(**mask) -> np.ndarray:
        out = pipe(photo, num_inference_steps=8, guidance_scale=DEFAULT_GUIDANCE_SCALE,
                   output_size=(256, 160),
                   crop=True, renderer=None, return_displacements=False,
                   generator=torch.Generator().manual_seed(0), **mask)  # fmt: skip
        return rms_displacement(out.spectral[0])

    brushed, free = rms(motion_mask=brush), rms(mask_provider=None)
    inside = np.zeros(brushed.shape, bool)
    inside[:, :128] = True  # the brush at the 256x160 output
    assert (brushed[inside] ** 2).sum() / (brushed**2).sum() > 0.98
    strength = brushed[:, :112].mean() / free[:, :112].mean()  # away from the feather
    assert strength > 1.2, strength
