"""sample.py --method svd: SVD, SVD-XT, SV3D_u and SV3D_p end to end on tiny random models.

Every pipeline is built here from tiny randomly initialised components (no download),
saved with ``save_pretrained`` and run through the real command line (``sample.main``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from data.video import read_video
from generators import svd
from models.sv3d import (
    SV3DPipeline,
    SV3DUNetSpatioTemporalConditionModel,
    preprocess_object,
    sv3d_orbit,
    triangle_guidance,
)
from models.watermark import WATERMARK_BITS, decode_watermark, embed_watermark

FRAMES = 3  # SVD runs; SV3D always makes 21 (its fixed orbit length)
STEPS = 2


def _components(unet_class, projection_dim: int):
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    unet = unet_class(
        sample_size=8,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        num_attention_heads=(2, 4),
        addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=projection_dim,
        num_frames=FRAMES,
    )
    # Four blocks: 8x downsampling, as the real VAE (so 256x256 frames are 32x32 latents).
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
    )
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
        interpolation_type="linear", steps_offset=1,
    )  # fmt: skip
    # The pipelines resize PIL input to 224 for the image encoder: one 112 px patch per quarter.
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32, projection_dim=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=37, image_size=224, patch_size=112,
        )
    )  # fmt: skip
    processor = CLIPImageProcessor(crop_size=224, size=224)
    return dict(vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler,
                feature_extractor=processor)  # fmt: skip


SVD_PROJECTION = 3 * 32  # fps_id, motion_bucket_id, cond_aug: one 32-wide embedding each
SV3D_U_PROJECTION = 32  # cond_aug only
SV3D_P_PROJECTION = 32 + 2 * 16  # cond_aug + polar and azimuth embeddings of width 16


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_torch_thread):
    """Folders holding a tiny SVD pipeline and tiny SV3D_u / SV3D_p pipelines."""
    from diffusers import StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel

    root = tmp_path_factory.mktemp("models")
    pipelines = {
        "svd": StableVideoDiffusionPipeline(
            **_components(UNetSpatioTemporalConditionModel, SVD_PROJECTION)
        ),
        "sv3d_u": SV3DPipeline(
            **_components(SV3DUNetSpatioTemporalConditionModel, SV3D_U_PROJECTION)
        ),
        "sv3d_p": SV3DPipeline(
            **_components(SV3DUNetSpatioTemporalConditionModel, SV3D_P_PROJECTION)
        ),
    }
    for name, pipeline in pipelines.items():
        pipeline.save_pretrained(root / name)
    return root


def _photo(path, size=(150, 100), seed=0):
    """A smooth random photo (W, H) saved at ``path``."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.BICUBIC).save(path)
    return path


def _object_png(path, size=96):
    """A red box on a transparent background, off centre."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[10:40, 50:90] = (200, 40, 40, 255)
    Image.fromarray(rgba).save(path)
    return path


def _frames(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted((folder / "frames").glob("*.png"))])


def _run(model, image, out, *extra):
    return sample.main(
        ["--method", "svd", "--model", str(model), "--image", str(image),
         "--output_folder", str(out), "--num_steps", "2", *map(str, extra)]
    )  # fmt: skip


# ----------------------------------------------------------------------------- end to end


def test_svd_runs_end_to_end_and_is_deterministic(models, tmp_path, capsys):
    photo = _photo(tmp_path / "photo.jpg")  # 150x100 -> floored to 128x64, with a warning
    runs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    for out, seed in zip(runs, (23, 23, 5), strict=True):
        code = _run(models / "svd", photo, out, "--version", "svd", "--num_frames", FRAMES,
                    "--seed", seed, "--save_frames")  # fmt: skip
        assert code == 0
    log = capsys.readouterr().out
    assert "resized to 128x64" in log and "trained at 1024x576" in log
    assert "no watermark" in log  # 128x64 is below the library's 256x256
    folder = runs[0] / "photo"
    assert Image.open(folder / "input.png").size == (128, 64)
    video = read_video(folder / "photo.mp4", drop_duplicates=False)
    assert len(video.frames) == FRAMES and video.frames.shape[1:3] == (64, 128)
    first, again, other = (_frames(out / "photo") for out in runs)
    assert first.shape == (FRAMES, 64, 128, 3)
    np.testing.assert_array_equal(first, again)  # same seed: same frames
    assert np.abs(first.astype(int) - other.astype(int)).max() > 0  # another seed: others


def test_svd_xt_folder_batch_goes_past_a_bad_file(models, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "one.png", (128, 64), seed=1)
    _photo(photos / "two.jpg", (128, 64), seed=2)
    (photos / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    code = _run(models / "svd", photos, out, "--version", "svd_xt", "--num_frames", 2)
    assert code == 1
    log = capsys.readouterr().out
    assert "FAILED" in log and "broken.png" in log and "2/3 photos" in log
    for stem in ("one", "two"):
        assert len(read_video(out / stem / f"{stem}.mp4", drop_duplicates=False).frames) == 2
    assert not (out / "broken").exists() or not any((out / "broken").glob("*.mp4"))
    # The outputs exist now: a second run refuses to replace them without --overwrite.
    with pytest.raises(FileExistsError, match="--overwrite"):
        _run(models / "svd", photos, out, "--version", "svd_xt", "--num_frames", 2)


def test_sv3d_u_orbit_ends_on_the_input_view(models, tmp_path):
    out = tmp_path / "out"
    code = _run(models / "sv3d_u", _object_png(tmp_path / "toy.png"), out,
                "--version", "sv3d_u", "--save_frames")  # fmt: skip
    assert code == 0
    frames = _frames(out / "toy")
    conditioning = np.asarray(Image.open(out / "toy" / "input.png"))
    assert frames.shape == (21, 64, 64, 3)  # the U-Net's sample size 8 x VAE factor 8
    assert np.abs(frames[-1].astype(int) - conditioning.astype(int)).max() <= 1
    assert conditioning[0, 0].tolist() == [255, 255, 255]  # object composited on white


def test_sv3d_p_uses_the_background_remover_and_the_orbit(models, tmp_path, monkeypatch):
    calls = []

    def fake_rembg(image):  # everything but the near-white background is the object
        calls.append(image.size)
        rgba = np.asarray(image.convert("RGBA")).copy()
        rgba[..., 3] = np.where(rgba[..., :3].min(axis=-1) > 240, 0, 255)
        return Image.fromarray(rgba)

    monkeypatch.setattr(svd, "background_remover", lambda bg_model=None: fake_rembg)
    photo = np.full((80, 120, 3), 255, np.uint8)
    photo[20:60, 30:70] = (30, 90, 200)
    Image.fromarray(photo).save(tmp_path / "object.jpg")
    outputs = []
    for elevation in ("10", "40"):
        out = tmp_path / f"e{elevation}"
        code = _run(models / "sv3d_p", tmp_path / "object.jpg", out, "--version", "sv3d_p",
                    "--elevations_deg", elevation, "--save_frames")  # fmt: skip
        assert code == 0
        outputs.append(_frames(out / "object"))
    assert calls == [(120, 80), (120, 80)]
    assert outputs[0].shape == (21, 64, 64, 3)
    # The camera conditioning reaches the U-Net: another elevation, other views.
    assert np.abs(outputs[0][:-1].astype(int) - outputs[1][:-1].astype(int)).max() > 0
    np.testing.assert_array_equal(outputs[0][-1], outputs[1][-1])  # both end on the input


def test_sv3d_opaque_photo_without_rembg_says_what_to_install(
    models, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(svd, "background_remover", lambda bg_model=None: None)
    code = _run(
        models / "sv3d_u", _photo(tmp_path / "p.jpg"), tmp_path / "o", "--version", "sv3d_u"
    )
    assert code == 1
    assert "pip install rembg" in capsys.readouterr().out


def test_watermark_survives_the_cli(models, tmp_path):
    from diffusers import StableVideoDiffusionPipeline

    # Random weights decode to saturated noise, where DWT-DCT has no room to embed: use a
    # copy whose decoder outputs mid-grey (its last convolutions zeroed) for the round trip.
    pipeline = StableVideoDiffusionPipeline.from_pretrained(models / "svd")
    decoder = pipeline.vae.decoder
    for layer in (decoder.conv_out, decoder.time_conv_out):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    pipeline.save_pretrained(tmp_path / "grey")
    photo = _photo(tmp_path / "big.png", (256, 256))
    for out, extra in (("marked", []), ("plain", ["--no_watermark"])):
        code = _run(tmp_path / "grey", photo, tmp_path / out, "--num_frames", 2,
                    "--num_steps", 1, "--save_frames", *extra)  # fmt: skip
        assert code == 0
    marked, plain = _frames(tmp_path / "marked" / "big"), _frames(tmp_path / "plain" / "big")
    for frame in marked:
        assert decode_watermark(frame) == WATERMARK_BITS
    # The written frames are exactly the sampled frames, marked.
    np.testing.assert_array_equal(marked, embed_watermark(plain))
    assert np.abs(marked.astype(int) - plain.astype(int)).max() > 0


# ----------------------------------------------------------------------------- pieces


def test_watermark_round_trip_and_small_frames():
    # A real photo (the library's DWT-DCT decoding fails on some content, e.g. noise).
    photo = Image.open(Path(__file__).resolve().parents[1] / "data" / "examples" / "butterfly.jpg")
    base = np.asarray(photo.convert("RGB").resize((512, 288)))
    marked = embed_watermark(base[None])
    assert len(WATERMARK_BITS) == 48
    assert decode_watermark(marked[0]) == WATERMARK_BITS
    assert decode_watermark(base) != WATERMARK_BITS  # an unmarked frame does not decode
    assert np.abs(marked.astype(int) - base.astype(int)).mean() < 3  # invisible
    small = np.zeros((2, 64, 64, 3), np.uint8)
    np.testing.assert_array_equal(embed_watermark(small), small)  # below 256 px: unchanged


def test_orbit_maths():
    polars, azimuths = sv3d_orbit()
    assert polars.shape == azimuths.shape == (21,)
    np.testing.assert_allclose(polars, np.deg2rad(80.0))  # elevation 10 deg
    assert azimuths[-1] == 0.0  # the last frame is the input view
    np.testing.assert_allclose(np.diff(azimuths[:-1]), 2 * np.pi / 21)
    np.testing.assert_allclose(azimuths[0], 2 * np.pi / 21)
    # Given azimuths are shifted so the last one is 0; per-frame elevations are kept.
    polars, azimuths = sv3d_orbit(3, [0.0, 30.0, -30.0], [90.0, 180.0, 270.0])
    np.testing.assert_allclose(np.rad2deg(azimuths), [180.0, 270.0, 0.0])
    np.testing.assert_allclose(np.rad2deg(polars), [90.0, 60.0, 120.0])
    with pytest.raises(ValueError, match="one per frame"):
        sv3d_orbit(21, [10.0, 20.0])
    with pytest.raises(ValueError, match=r"\[-90, 90\]"):
        sv3d_orbit(21, 100.0)


def test_triangle_guidance():
    scale = triangle_guidance(21, 1.0, 2.5)
    assert scale[0] == scale[-1] == 1.0 and scale[10] == 2.5
    torch.testing.assert_close(scale, scale.flip(0))
    assert torch.all(torch.diff(scale[:11]) > 0)


def test_sv3d_unet_without_camera_is_the_diffusers_unet(one_torch_thread):
    from diffusers import UNetSpatioTemporalConditionModel

    ours = _components(SV3DUNetSpatioTemporalConditionModel, SV3D_U_PROJECTION)["unet"].eval()
    theirs = UNetSpatioTemporalConditionModel(**ours.config).eval()
    theirs.load_state_dict(ours.state_dict())
    generator = torch.Generator().manual_seed(0)
    sample_ = torch.randn(1, 2, 8, 6, 10, generator=generator)  # odd latent size on purpose
    context = torch.randn(1, 1, 32, generator=generator)
    aug = torch.tensor([[0.02]])
    with torch.no_grad():
        expected = theirs(sample_, 3.0, context, aug).sample
        torch.testing.assert_close(ours(sample_, 3.0, context, aug).sample, expected)
        with pytest.raises(ValueError, match="SV3D_u"):
            ours(sample_, 3.0, context, aug, camera=torch.zeros(1, 2, 2))


def test_sv3d_p_unet_needs_and_uses_the_camera(one_torch_thread):
    unet = _components(SV3DUNetSpatioTemporalConditionModel, SV3D_P_PROJECTION)["unet"].eval()
    assert unet.camera_embed_dim == 16
    sample_ = torch.randn(1, 2, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    context, aug = torch.ones(1, 1, 32), torch.tensor([[1e-5]])
    with torch.no_grad():
        a = unet(sample_, 3.0, context, aug, camera=torch.tensor([[[1.4, 0.3], [1.4, 0.0]]])).sample
        b = unet(sample_, 3.0, context, aug, camera=torch.tensor([[[1.0, 0.3], [1.4, 0.0]]])).sample
        with pytest.raises(ValueError, match="camera angles"):
            unet(sample_, 3.0, context, aug)
    assert (a[0, 0] - b[0, 0]).abs().max() > 0  # frame 0's camera changed


def test_preprocess_object_centres_on_white():
    rgba = np.zeros((100, 100, 4), np.uint8)
    rgba[0:20, 60:100] = (0, 0, 0, 255)  # a 40x20 black box in the top-right corner
    image = preprocess_object(Image.fromarray(rgba), size=64, image_frame_ratio=0.5)
    array = np.asarray(image)
    assert image.size == (64, 64) and image.mode == "RGB"
    dark = np.argwhere(array.max(axis=-1) < 128)
    (top, left), (bottom, right) = dark.min(axis=0), dark.max(axis=0)
    assert abs((right + left) / 2 - 31.5) <= 1 and abs((bottom + top) / 2 - 31.5) <= 1
    assert abs((right - left + 1) - 32) <= 2  # the longer side fills half the frame
    assert array[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="rembg"):
        preprocess_object(Image.new("RGB", (50, 50)))
    with pytest.raises(ValueError, match="empty"):
        preprocess_object(Image.new("RGBA", (50, 50)))


def test_svd_input_sizes(tmp_path):
    photo = _photo(tmp_path / "wide.png", (700, 300))
    parse = sample.build_parser("svd").parse_args
    args = svd.resolve_settings(parse(["--method", "svd", "--model", str(tmp_path)]))
    image, notes = svd.prepare_input(args, photo, pipeline=None)
    assert image.size == (640, 256) and "resized to 640x256" in notes[0]
    args = svd.resolve_settings(parse(["--method", "svd", "--resize", "model"]))
    image, notes = svd.prepare_input(args, photo, pipeline=None)
    assert image.size == (1024, 576) and notes == []  # cover-cropped to the training size


def test_out_of_memory_names_the_knobs(tmp_path):
    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    args = svd.resolve_settings(
        sample.build_parser("svd").parse_args(["--method", "svd", "--model", str(tmp_path)])
    )
    with pytest.raises(MemoryError, match="--decoding_t.*--cpu_offload"):
        svd.generate(args, exhausted, Image.new("RGB", (64, 64)))


# ----------------------------------------------------------------------------- bad input


def test_motion_bucket_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="0-255"):
        _run(tmp_path, _photo(tmp_path / "p.png"), tmp_path / "o", "--motion_bucket_id", 300)


def test_missing_model_folder_says_how_to_get_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="huggingface-cli download stabilityai/"):
        _run(tmp_path / "nope", _photo(tmp_path / "p.png"), tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        _run(tmp_path / "empty", _photo(tmp_path / "p.png"), tmp_path / "o")
    with pytest.raises(ValueError, match="--model is required.*docs/SVD.md"):
        sample.main(["--method", "svd", "--version", "sv3d_u", "--image", str(tmp_path / "p.png")])


def test_wrong_pipeline_type(models, tmp_path):
    photo = _photo(tmp_path / "p.png")
    with pytest.raises(
        ValueError, match="holds a SV3DPipeline, not a StableVideoDiffusionPipeline"
    ):
        _run(models / "sv3d_u", photo, tmp_path / "o", "--version", "svd")
    with pytest.raises(ValueError, match="holds a StableVideoDiffusionPipeline"):
        _run(models / "svd", photo, tmp_path / "o", "--version", "sv3d_u")
    with pytest.raises(ValueError, match="SV3D_u model, not --version sv3d_p"):
        _run(models / "sv3d_u", photo, tmp_path / "o", "--version", "sv3d_p")
    index = json.loads((models / "svd" / "model_index.json").read_text())
    assert index["_class_name"] == "StableVideoDiffusionPipeline"


def test_outputs_never_overwrite_the_input(tmp_path):
    # A photo named input.png inside <output_folder>/input/ is where its own input.png goes.
    (tmp_path / "o" / "input").mkdir(parents=True)
    photo = _photo(tmp_path / "o" / "input" / "input.png", (128, 64))
    with pytest.raises(ValueError, match="overwrite an input"):
        _run(tmp_path, photo, tmp_path / "o")


def test_help_lists_the_reference_flags(capsys):
    with pytest.raises(SystemExit):
        sample.main(["--method", "svd", "--help"])
    out = capsys.readouterr().out
    for flag in ("--version", "--fps_id", "--motion_bucket_id", "--cond_aug", "--decoding_t",
                 "--elevations_deg", "--azimuths_deg", "--image_frame_ratio", "--cpu_offload"):  # fmt: skip
        assert flag in out


# ----------------------------------------------------------------------------- issue 18


def test_watermark_needs_an_area_not_two_sides():
    from models.watermark import can_watermark

    photo = Image.open(Path(__file__).resolve().parents[1] / "data" / "examples" / "butterfly.jpg")
    wide = np.asarray(photo.convert("RGB").resize((512, 128)))  # 512x128: 256x256 of area
    assert can_watermark(128, 512) and not can_watermark(255, 256)
    marked = embed_watermark(wide[None])
    assert decode_watermark(marked[0]) == WATERMARK_BITS  # all 48 bits
    assert np.abs(marked.astype(int) - wide.astype(int)).max() > 0
    small = np.zeros((1, 255, 256, 3), np.uint8)
    np.testing.assert_array_equal(embed_watermark(small), small)  # the library would refuse


def test_input_path_is_the_reference_name_of_image(tmp_path):
    parse = sample.build_parser("svd").parse_args
    args = parse(["--method", "svd", "--input_path", str(tmp_path / "a.png")])
    assert args.image == str(tmp_path / "a.png")


def test_verbose_shows_only_the_settings_of_the_version(tmp_path):
    parse = sample.build_parser("svd").parse_args
    for version, shown in (("svd", True), ("sv3d_u", False), ("sv3d_p", False)):
        args = svd.resolve_settings(
            parse(["--method", "svd", "--version", version, "--model", str(tmp_path)])
        )
        line = svd.settings_line(args, "cpu", 1.0)
        assert ("fps_id" in line) == shown and ("motion_bucket_id" in line) == shown, line
        assert "cond_aug" in line and "decoding_t 14" in line


def _saliency_onnx(path, size=32):
    """A tiny ONNX 'salient-object model': blue things are salient (exported here)."""

    class BlueIsSalient(torch.nn.Module):
        def forward(self, x):  # (1, 3, S, S) normalised RGB -> (1, 1, S, S)
            return torch.sigmoid(8.0 * (x[:, 2:3] - x[:, 0:1]) - 12.0)

    torch.onnx.export(BlueIsSalient(), torch.zeros(1, 3, size, size), str(path),
                      input_names=["input"], output_names=["mask"], dynamo=False)  # fmt: skip
    return path


def _blue_object_photo(path):
    photo = np.full((80, 120, 3), 255, np.uint8)
    photo[20:60, 30:70] = (30, 90, 200)
    Image.fromarray(photo).save(path)
    return path


def test_bg_model_cuts_the_object_out_with_onnxruntime(models, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from models.sv3d import OnnxSalientObject

    model = _saliency_onnx(tmp_path / "saliency.onnx")
    cutter = OnnxSalientObject(model)
    assert cutter.size == (32, 32)
    photo = Image.open(_blue_object_photo(tmp_path / "object.jpg"))
    alpha = np.asarray(cutter(photo))[..., 3]
    assert alpha.shape == (80, 120)
    assert alpha[25:55, 35:65].min() > 200 and alpha[:10].max() < 50  # object vs background

    # Through the command line, with rembg made unavailable: the local model does the job.
    monkeypatch.setattr("models.sv3d.rembg_remover", lambda: None)
    out = tmp_path / "out"
    code = _run(models / "sv3d_p", tmp_path / "object.jpg", out, "--version", "sv3d_p",
                "--bg_model", model)  # fmt: skip
    assert code == 0
    conditioning = np.asarray(Image.open(out / "object" / "input.png"))
    assert conditioning[0, 0].tolist() == [255, 255, 255]  # background replaced by white
    assert conditioning[32, 32, 2] > conditioning[32, 32, 0] + 60  # the blue object, centred
    with pytest.raises(FileNotFoundError, match="--bg_model"):
        _run(models / "sv3d_p", tmp_path / "object.jpg", out, "--version", "sv3d_p",
             "--bg_model", tmp_path / "missing.onnx")  # fmt: skip
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxSalientObject(tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match="needs --version sv3d"):
        _run(models / "svd", tmp_path / "object.jpg", out, "--bg_model", model)


def test_rembg_offline_says_what_to_do(models, tmp_path, monkeypatch, capsys):
    import sys
    import types

    from models.sv3d import rembg_model_path, rembg_remover

    def new_session(name):  # what rembg does offline: its download fails
        raise ConnectionError("HTTPSConnectionPool: Max retries exceeded (u2net.onnx)")

    fake = types.SimpleNamespace(new_session=new_session, remove=None)
    monkeypatch.setitem(sys.modules, "rembg", fake)
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    assert rembg_model_path() == tmp_path / "u2net" / "u2net.onnx"
    with pytest.raises(OSError, match=r"no model at .*u2net\.onnx.*--bg_model PATH"):
        rembg_remover()(Image.new("RGBA", (8, 8)))
    code = _run(models / "sv3d_u", _blue_object_photo(tmp_path / "p.jpg"), tmp_path / "o",
                "--version", "sv3d_u")  # fmt: skip
    assert code == 1
    log = capsys.readouterr().out
    assert "could not download it (HTTPSConnectionPool" in log and "U2NET_HOME" in log


def test_sv3d_resolution_without_a_sample_size(models):
    pipeline = SV3DPipeline.from_pretrained(models / "sv3d_u")
    assert pipeline.resolution == 64  # sample_size 8 x the VAE's 8
    pipeline.unet.register_to_config(sample_size=None)  # diffusers' default: unset
    assert pipeline.resolution == 576  # the released SV3D size, not a crash
