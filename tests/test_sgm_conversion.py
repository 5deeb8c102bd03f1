"""scripts/convert_sgm_checkpoint.py and models.sgm_conversion on tiny sgm-layout checkpoints.

The checkpoints (tests/sgm_checkpoints.py) have the key layout of Stability AI's released
files and non-release sizes; each comes with its own small sgm YAML. They are converted
through the script, checked key by key and tensor by tensor, and run through ``sample.py``.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

import sample
from models import sgm_conversion as conv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sgm_checkpoints import CLIP, UNET, sgm_checkpoint, sgm_yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("svd", "svd_image_decoder", "sv3d_u", "sv3d_p")
TINY = ["--image_size", "64", "--clip_head_width", str(CLIP["head_width"])]


def _script():
    spec = importlib.util.spec_from_file_location(
        "convert_sgm_checkpoint", ROOT / "scripts" / "convert_sgm_checkpoint.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, one_torch_thread):
    """{version: (state dict, .safetensors path, YAML path, converted folder)}."""
    root = tmp_path_factory.mktemp("sgm")
    script = _script()
    out = {}
    for version in VERSIONS:
        state = sgm_checkpoint(version, seed=VERSIONS.index(version))
        path = root / f"{version}.safetensors"  # named as released: the name says the version
        save_file(state, str(path))
        config = root / f"{version}.yaml"
        config.write_text(sgm_yaml(version))
        folder = root / f"{version}_diffusers"
        argv = ["--checkpoint", str(path), "--output_dir", str(folder),
                "--original_config", str(config), *TINY]  # fmt: skip
        assert script.main(argv) == 0
        out[version] = (state, path, config, folder)
    return out


def _component(folder: Path, name: str) -> dict[str, torch.Tensor]:
    files = {"image_encoder": "model.safetensors"}
    return load_file(str(folder / name / files.get(name, "diffusion_pytorch_model.safetensors")))


# ----------------------------------------------------------------------------- keys and shapes


@pytest.mark.parametrize("version", VERSIONS)
def test_no_missing_or_unexpected_keys(checkpoints, version):
    from diffusers import AutoencoderKL, AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from models.sv3d import SV3DUNetSpatioTemporalConditionModel

    _, _, _, folder = checkpoints[version]
    index = json.loads((folder / "model_index.json").read_text())
    sv3d = version.startswith("sv3d")
    assert index["_class_name"] == ("SV3DPipeline" if sv3d else "StableVideoDiffusionPipeline")
    vae_class = AutoencoderKLTemporalDecoder if version == "svd" else AutoencoderKL
    assert index["vae"] == ["diffusers", vae_class.__name__]
    from diffusers import UNetSpatioTemporalConditionModel

    unet_class = SV3DUNetSpatioTemporalConditionModel if sv3d else UNetSpatioTemporalConditionModel
    models = {
        "unet": unet_class.from_config(unet_class.load_config(folder / "unet")),
        "vae": vae_class.from_config(vae_class.load_config(folder / "vae")),
        "image_encoder": CLIPVisionModelWithProjection(
            CLIPVisionConfig.from_pretrained(folder / "image_encoder")
        ),
    }
    for name, model in models.items():
        tensors = _component(folder, name)
        expected = model.state_dict()
        assert set(tensors) == set(expected), name
        for key, tensor in tensors.items():
            assert tensor.shape == expected[key].shape, key
        model.load_state_dict(tensors, strict=True)


def _fingerprint(tensor: torch.Tensor) -> tuple:
    return tuple(tensor.flatten()[:4].tolist()) + (tensor.numel(),)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_tensor_comes_from_exactly_one_checkpoint_tensor(checkpoints, version):
    """Random values trace each converted tensor to its source; no source is used twice."""
    state, _, _, folder = checkpoints[version]
    sources = {_fingerprint(value): key for key, value in state.items()}
    assert len(sources) == len(state)  # random tensors: fingerprints are unique
    used: dict[str, str] = {}
    for name in ("unet", "vae", "image_encoder"):
        for key, tensor in _component(folder, name).items():
            if (
                key.endswith(("_proj.weight", "_proj.bias", "visual_projection.weight"))
                and ("self_attn" in key or "visual_projection" in key)
                and "out_proj" not in key
            ):
                continue  # split or transposed: checked in the next test
            source = sources.get(_fingerprint(tensor))
            if name == "vae" and key.startswith("quant_conv") and source is None:
                continue  # SVD's AutoencodingEngine has no quant conv: identity, checked below
            assert source is not None, f"{name}/{key} matches no checkpoint tensor"
            torch.testing.assert_close(tensor.flatten(), state[source].flatten(), rtol=0, atol=0)
            assert source not in used, f"{source} lands twice ({used.get(source)}, {key})"
            used[source] = f"{name}/{key}"
    # What was not used belongs to the parts sampling does not need.
    unused = {key for key in state if key not in used and "in_proj" not in key}
    allowed = ("first_stage_model.encoder.", "first_stage_model.quant_conv.")
    for key in unused:
        assert (
            ".encoder.decoder." in key
            or ".encoder.post_quant_conv." in key
            or key.startswith(allowed)
            or ("open_clip.model." in key and ".visual." not in key)
            or key.endswith("visual.proj")
        ), key


ANCHORS_UNET = {  # diffusers key <- sgm key (the tiny U-Net: 3 levels, 1 block each)
    "conv_in.weight": "input_blocks.0.0.weight",
    "add_embedding.linear_1.weight": "label_emb.0.0.weight",
    "time_embedding.linear_2.bias": "time_embed.2.bias",
    "down_blocks.0.resnets.0.temporal_res_block.conv1.weight": "input_blocks.1.0.time_stack.in_layers.2.weight",
    "down_blocks.0.downsamplers.0.conv.weight": "input_blocks.2.0.op.weight",
    "down_blocks.1.resnets.0.spatial_res_block.conv_shortcut.weight": "input_blocks.3.0.skip_connection.weight",
    "down_blocks.1.attentions.0.temporal_transformer_blocks.0.ff_in.net.0.proj.weight": "input_blocks.3.1.time_stack.0.ff_in.net.0.proj.weight",
    "down_blocks.2.resnets.0.time_mixer.mix_factor": "input_blocks.5.0.time_mixer.mix_factor",
    "mid_block.attentions.0.time_pos_embed.linear_2.weight": "middle_block.1.time_pos_embed.2.weight",
    "mid_block.resnets.1.spatial_res_block.time_emb_proj.weight": "middle_block.2.emb_layers.1.weight",
    "up_blocks.0.upsamplers.0.conv.weight": "output_blocks.1.1.conv.weight",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight": "output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
    "up_blocks.1.upsamplers.0.conv.weight": "output_blocks.3.2.conv.weight",
    "up_blocks.2.resnets.1.spatial_res_block.conv_shortcut.weight": "output_blocks.5.0.skip_connection.weight",
    "conv_norm_out.weight": "out.0.weight",
    "conv_out.bias": "out.2.bias",
}  # fmt: skip


def test_tensors_land_where_their_shapes_say(checkpoints):
    state, _, _, folder = checkpoints["svd"]
    unet = _component(folder, "unet")
    for new, old in ANCHORS_UNET.items():
        torch.testing.assert_close(unet[new], state["model.diffusion_model." + old])
    assert unet["down_blocks.0.resnets.0.temporal_res_block.conv1.weight"].shape[2:] == (3, 1, 1)

    vae = _component(folder, "vae")
    enc, dec = "conditioner.embedders.3.encoder.", "first_stage_model.decoder."
    pairs = {
        # sgm numbers decoder levels from the full-resolution end, diffusers from the latent end
        "decoder.up_blocks.0.resnets.2.spatial_res_block.conv1.weight": dec + "up.3.block.2.conv1.weight",
        "decoder.up_blocks.2.resnets.0.spatial_res_block.conv_shortcut.weight": dec + "up.1.block.0.nin_shortcut.weight",
        "decoder.up_blocks.2.upsamplers.0.conv.weight": dec + "up.1.upsample.conv.weight",
        "decoder.mid_block.resnets.1.time_mixer.mix_factor": dec + "mid.block_2.mix_factor",
        "decoder.mid_block.resnets.0.temporal_res_block.conv2.weight": dec + "mid.block_1.time_stack.out_layers.3.weight",
        "decoder.time_conv_out.weight": dec + "conv_out.time_mix_conv.weight",
        "decoder.conv_out.weight": dec + "conv_out.weight",
        "encoder.down_blocks.1.resnets.0.conv_shortcut.weight": enc + "encoder.down.1.block.0.nin_shortcut.weight",
        "encoder.conv_norm_out.bias": enc + "encoder.norm_out.bias",
        "quant_conv.weight": enc + "quant_conv.weight",
    }  # fmt: skip
    for new, old in pairs.items():
        torch.testing.assert_close(vae[new], state[old])
    for name, old in (("to_q", "q"), ("to_out.0", "proj_out")):  # 1x1 convs -> linear layers
        torch.testing.assert_close(
            vae[f"decoder.mid_block.attentions.0.{name}.weight"],
            state[f"{dec}mid.attn_1.{old}.weight"][:, :, 0, 0],
        )

    clip = _component(folder, "image_encoder")
    visual = "conditioner.embedders.0.open_clip.model.visual."
    width = CLIP["width"]
    packed = state[visual + "transformer.resblocks.1.attn.in_proj_weight"]
    for index, name in enumerate(("q", "k", "v")):
        torch.testing.assert_close(
            clip[f"vision_model.encoder.layers.1.self_attn.{name}_proj.weight"],
            packed[index * width : (index + 1) * width],
        )
    torch.testing.assert_close(clip["visual_projection.weight"], state[visual + "proj"].T)

    # SV3D: the image decoder without post-quant conv, the encoder from the conditioner.
    state, _, _, folder = checkpoints["sv3d_p"]
    vae = _component(folder, "vae")
    assert "post_quant_conv.weight" not in vae
    torch.testing.assert_close(
        vae["decoder.up_blocks.3.resnets.0.conv1.weight"],
        state["first_stage_model.decoder.up.0.block.0.conv1.weight"],
    )
    torch.testing.assert_close(
        vae["quant_conv.bias"], state["conditioner.embedders.1.encoder.quant_conv.bias"]
    )


def test_encoder_falls_back_to_the_first_stage(checkpoints, tmp_path):
    """Without the conditioner's VAE, SVD's own encoder is used, with an identity quant conv."""
    state = {
        key: value
        for key, value in checkpoints["svd"][0].items()
        if not key.startswith("conditioner.embedders.3.")
    }
    conv.convert_sgm_checkpoint(
        state, tmp_path / "out", yaml.safe_load(sgm_yaml("svd")), image_size=64, clip_head_width=16
    )
    vae = _component(tmp_path / "out", "vae")
    torch.testing.assert_close(vae["quant_conv.weight"][:, :, 0, 0], torch.eye(8))
    torch.testing.assert_close(vae["quant_conv.bias"], torch.zeros(8))
    torch.testing.assert_close(
        vae["encoder.conv_in.weight"], state["first_stage_model.encoder.conv_in.weight"]
    )


def test_configs_from_shapes_and_yaml(checkpoints):
    for version in VERSIONS:
        folder = checkpoints[version][3]
        unet = json.loads((folder / "unet" / "config.json").read_text())
        assert unet["block_out_channels"] == [32, 64, 64]
        assert unet["down_block_types"] == ["CrossAttnDownBlockSpatioTemporal"] * 2 + [
            "DownBlockSpatioTemporal"
        ]
        assert unet["num_attention_heads"] == [2, 4, 4]  # widths / num_head_channels 16
        assert unet["cross_attention_dim"] == UNET["context_dim"]
        assert unet["sample_size"] == 8  # --image_size 64 / the VAE's 8x
        vae = json.loads((folder / "vae" / "config.json").read_text())
        assert vae["block_out_channels"] == [32, 64, 32, 32]
        assert vae["scaling_factor"] == 0.13025  # the YAML's scale_factor
        clip = json.loads((folder / "image_encoder" / "config.json").read_text())
        assert (clip["hidden_size"], clip["num_hidden_layers"], clip["num_attention_heads"]) == (
            32, 2, 2,
        )  # fmt: skip
        assert (clip["patch_size"], clip["image_size"], clip["projection_dim"]) == (112, 224, 24)
    split = {
        version: json.loads((checkpoints[version][3] / "unet" / "config.json").read_text())
        for version in ("svd", "sv3d_u", "sv3d_p")
    }
    assert split["svd"]["addition_time_embed_dim"] == 20  # 3 x 20
    assert split["sv3d_u"]["projection_class_embeddings_input_dim"] == 12
    assert split["sv3d_p"]["addition_time_embed_dim"] == 12  # then polar 10 + azimuth 10


@pytest.mark.parametrize("version", ["svd", "sv3d_p"])
def test_released_sizes_give_the_released_configs(version):
    """The released layouts (meta tensors, no weights) give diffusers' published configs."""
    state = sgm_checkpoint(version, released=True)
    original = conv.OriginalConfig.parse(None)  # no YAML: the released defaults
    detected = conv.detect_version(state, original, None)
    assert detected == version
    _, vae = conv.vae_config(state, original, 576)
    assert vae["block_out_channels"] == (128, 256, 512, 512) and vae["layers_per_block"] == 2
    unet = conv.unet_config(state, version, original, conv.RELEASED_IMAGE_SIZE[version], 8)
    assert unet["block_out_channels"] == (320, 640, 1280, 1280)
    assert unet["num_attention_heads"] == (5, 10, 20, 20)
    assert unet["down_block_types"][-1] == "DownBlockSpatioTemporal"
    assert unet["layers_per_block"] == 2 and unet["cross_attention_dim"] == 1024
    assert unet["addition_time_embed_dim"] == 256
    if version == "sv3d_p":
        assert unet["sample_size"] == 72  # 576 px / 8
        assert unet["projection_class_embeddings_input_dim"] == 1280  # 256 + 2 x 512
    else:
        assert unet["sample_size"] == 96 and unet["projection_class_embeddings_input_dim"] == 768
    clip = conv.image_encoder_config(state, original)
    assert clip["num_attention_heads"] == 16 and clip["intermediate_size"] == 5120
    assert clip["num_hidden_layers"] == 32 and clip["projection_dim"] == 1024
    unet_map = conv.unet_key_map(state)
    assert len(unet_map) == sum(key.startswith("model.diffusion_model.") for key in state)


# ----------------------------------------------------------------------------- numerics


def _open_clip_forward(state: dict, prefix: str, image: torch.Tensor, heads: int) -> torch.Tensor:
    """OpenCLIP's ViT image tower, written here from its definition: (B, 3, H, W) -> (B, D)."""
    import torch.nn.functional as F

    v = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    width = v["class_embedding"].shape[0]
    x = F.conv2d(image, v["conv1.weight"], stride=v["conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)  # (B, patches, width)
    x = torch.cat([v["class_embedding"].expand(x.shape[0], 1, width), x], dim=1)
    x = x + v["positional_embedding"]
    x = F.layer_norm(x, (width,), v["ln_pre.weight"], v["ln_pre.bias"])
    layer = 0
    while f"transformer.resblocks.{layer}.ln_1.weight" in v:
        b = f"transformer.resblocks.{layer}."
        attention = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        attention.load_state_dict({
            "in_proj_weight": v[b + "attn.in_proj_weight"], "in_proj_bias": v[b + "attn.in_proj_bias"],
            "out_proj.weight": v[b + "attn.out_proj.weight"], "out_proj.bias": v[b + "attn.out_proj.bias"],
        })  # fmt: skip
        h = F.layer_norm(x, (width,), v[b + "ln_1.weight"], v[b + "ln_1.bias"])
        x = x + attention(h, h, h, need_weights=False)[0]
        h = F.layer_norm(x, (width,), v[b + "ln_2.weight"], v[b + "ln_2.bias"])
        h = F.gelu(F.linear(h, v[b + "mlp.c_fc.weight"], v[b + "mlp.c_fc.bias"]))
        x = x + F.linear(h, v[b + "mlp.c_proj.weight"], v[b + "mlp.c_proj.bias"])
        layer += 1
    pooled = F.layer_norm(x[:, 0], (width,), v["ln_post.weight"], v["ln_post.bias"])
    return pooled @ v["proj"]


def test_image_encoder_matches_an_open_clip_forward(checkpoints):
    from transformers import CLIPVisionModelWithProjection

    state, _, _, folder = checkpoints["sv3d_u"]
    model = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder").eval()
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    heads = CLIP["width"] // CLIP["head_width"]
    with torch.no_grad():
        expected = _open_clip_forward(
            state, "conditioner.embedders.0.open_clip.model.visual.", image, heads
        )
        got = model(pixel_values=image).image_embeds
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- end to end


def _object_png(path):
    rgba = np.zeros((96, 96, 4), np.uint8)
    rgba[20:70, 30:80] = (200, 60, 40, 255)
    Image.fromarray(rgba).save(path)
    return path


def _svd_run(model, image, out, *extra):
    return sample.main(
        ["--method", "svd", "--model", str(model), "--input_path", str(image),
         "--output_folder", str(out), "--num_steps", "2", "--save_frames", *map(str, extra)]
    )  # fmt: skip


@pytest.mark.parametrize(
    "version,frames", [("svd", 3), ("svd_image_decoder", 3), ("sv3d_p", 21), ("sv3d_u", 21)]
)
def test_converted_pipeline_runs_through_sample(checkpoints, tmp_path, version, frames):
    folder = checkpoints[version][3]
    if version.startswith("sv3d"):
        image, extra = _object_png(tmp_path / "toy.png"), []
    else:
        image = tmp_path / "toy.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(image)
        extra = ["--num_frames", frames]
    code = _svd_run(folder, image, tmp_path / "out", "--version", version, *extra)
    assert code == 0
    written = sorted((tmp_path / "out" / "toy" / "frames").glob("*.png"))
    assert len(written) == frames
    first = np.asarray(Image.open(written[0]))
    assert first.shape == ((64, 64, 3) if version.startswith("sv3d") else (64, 128, 3))
    assert (tmp_path / "out" / "toy" / "toy.mp4").is_file()


def test_image_decoder_versions_check_the_vae(checkpoints, tmp_path):
    image = tmp_path / "p.png"
    Image.new("RGB", (128, 64), (90, 120, 30)).save(image)
    with pytest.raises(ValueError, match="use --version svd_image_decoder"):
        _svd_run(checkpoints["svd_image_decoder"][3], image, tmp_path / "o", "--version", "svd")
    with pytest.raises(ValueError, match="use --version svd_xt"):
        _svd_run(checkpoints["svd"][3], image, tmp_path / "o", "--version", "svd_xt_image_decoder")


def test_sample_given_a_checkpoint_prints_the_conversion_command(checkpoints, tmp_path):
    _, released, config, _ = checkpoints["sv3d_p"]
    path = tmp_path / released.name
    path.write_bytes(released.read_bytes())
    with pytest.raises(ValueError, match="convert_sgm_checkpoint.py") as error:
        _svd_run(path, _object_png(tmp_path / "o.png"), tmp_path / "o", "--version", "sv3d_p")
    assert not (tmp_path / "o").exists()  # refused before any output folder was made
    command = str(error.value).split("`")[1]
    argv = shlex.split(command)
    assert argv[0] == "python" and argv[1].endswith("scripts/convert_sgm_checkpoint.py")
    assert "--version" in argv and argv[argv.index("--version") + 1] == "sv3d_p"
    # The printed command converts (the tiny tower needs its head width; the rest is default).
    argv += ["--original_config", str(config), "--clip_head_width", str(CLIP["head_width"])]
    assert _script().main(argv[2:]) == 0
    output = Path(argv[argv.index("--output_dir") + 1])
    assert output == tmp_path / "sv3d_p_diffusers"
    unet = json.loads((output / "unet" / "config.json").read_text())
    assert unet["sample_size"] == 72  # SV3D's 576 px by default


# ----------------------------------------------------------------------------- bad input


def _convert(state, tmp_path, **kwargs):
    return conv.convert_sgm_checkpoint(state, tmp_path / "out", **kwargs)


def test_head_count_that_does_not_divide_names_the_option(tmp_path):
    state = sgm_checkpoint("svd")
    config = yaml.safe_load(sgm_yaml("svd"))
    with pytest.raises(ValueError, match=r"head width 64 .*released.*--original_config"):
        _convert(state, tmp_path, image_size=64, clip_head_width=16)  # no YAML: heads of 64
    config["model"]["params"]["network_config"]["params"]["num_head_channels"] = 24
    with pytest.raises(ValueError, match=r"num_head_channels.*--original_config"):
        _convert(state, tmp_path, original_config=config, image_size=64, clip_head_width=16)
    config = yaml.safe_load(sgm_yaml("svd"))
    with pytest.raises(ValueError, match="--clip_head_width"):
        _convert(state, tmp_path, original_config=config, image_size=64)  # unknown arch
    with pytest.raises(ValueError, match=r"width 32 is not a multiple of the head width 80"):
        del config["model"]["params"]["conditioner_config"]["params"]["emb_models"][0]["params"]
        _convert(state, tmp_path, original_config=config, image_size=64)  # ViT-H-14: 80
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_checkpoints_and_configs(tmp_path):
    config = yaml.safe_load(sgm_yaml("sv3d_p"))
    kwargs = dict(original_config=config, image_size=64, clip_head_width=16)
    state = sgm_checkpoint("sv3d_p")
    with pytest.raises(ValueError, match="unexpected"):
        _convert(
            {**state, "model.diffusion_model.extra.weight": torch.zeros(1)}, tmp_path, **kwargs
        )
    with pytest.raises(ValueError, match="no known part"):
        _convert({**state, "cond_stage_model.x": torch.zeros(1)}, tmp_path, **kwargs)
    with pytest.raises(ValueError, match="use --version sv3d_p"):
        _convert(state, tmp_path, version="svd", **kwargs)
    wrong = yaml.safe_load(sgm_yaml("sv3d_p"))
    wrong["model"]["params"]["conditioner_config"]["params"]["emb_models"][-1]["params"][
        "outdim"
    ] = 12
    with pytest.raises(ValueError, match="adds up to 34"):
        _convert(state, tmp_path, **{**kwargs, "original_config": wrong})
    with pytest.raises(ValueError, match=r"vector conditioning is \['fps_id'"):
        _convert(state, tmp_path, **{**kwargs, "original_config": yaml.safe_load(sgm_yaml("svd"))})
    with pytest.raises(ValueError, match="--image_size 60 must be a positive multiple of 8"):
        _convert(state, tmp_path, **{**kwargs, "image_size": 60})
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        conv.convert_sgm_checkpoint(tmp_path / "nope.safetensors", tmp_path / "out")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        conv.convert_sgm_checkpoint(tmp_path / "junk.safetensors", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _convert(state, tmp_path, **kwargs)


def test_script_reports_errors_in_one_line(tmp_path):
    import subprocess

    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "convert_sgm_checkpoint.py"), "--checkpoint",
         str(tmp_path / "missing.safetensors"), "--output_dir", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'missing.safetensors'}: no such checkpoint file"
    ]


def test_decoding_t_changes_only_the_temporal_decoder(checkpoints, tmp_path):
    """SVD's temporal decoder sees one chunk at a time: chunk edges change its frames."""
    image = tmp_path / "p.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)).save(image)
    frames = {}
    for version in ("svd", "svd_image_decoder"):
        for chunk in (1, 3):
            out = tmp_path / f"{version}{chunk}"
            code = _svd_run(checkpoints[version][3], image, out, "--version", version,
                            "--num_frames", 3, "--decoding_t", chunk)  # fmt: skip
            assert code == 0
            paths = sorted((out / "p" / "frames").glob("*.png"))
            frames[version, chunk] = np.stack([np.asarray(Image.open(p)) for p in paths])
    temporal = np.abs(frames["svd", 1].astype(int) - frames["svd", 3].astype(int))
    assert temporal.max() > 10
    image_decoder = np.abs(
        frames["svd_image_decoder", 1].astype(int) - frames["svd_image_decoder", 3].astype(int)
    )
    assert image_decoder.max() <= 1


def _sinusoid(values: torch.Tensor, width: int) -> torch.Tensor:
    """sgm's timestep embedding, from its definition: [cos(v f), sin(v f)], f = 10000^(-k/half)."""
    half = width // 2
    freqs = torch.exp(-np.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = values.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def test_sv3d_p_vector_conditioning_is_split_as_the_yaml_says(checkpoints):
    """label_emb sees [emb_12(cond_aug), emb_10(polar_f), emb_10(azimuth_f)] per frame."""
    from models.sv3d import SV3DUNetSpatioTemporalConditionModel

    state, _, _, folder = checkpoints["sv3d_p"]
    unet = SV3DUNetSpatioTemporalConditionModel.from_pretrained(folder / "unet").eval()
    cond_aug = torch.tensor([[1e-5]])
    camera = torch.tensor([[[1.2, 0.0], [1.4, 2.5], [0.3, 5.9]]])  # (B, F, 2) radians
    with torch.no_grad():
        got = unet.vector_embedding(cond_aug, camera, num_frames=3)
    vector = torch.cat(
        [_sinusoid(cond_aug.flatten().repeat(3), 12), _sinusoid(camera[0, :, 0], 10),
         _sinusoid(camera[0, :, 1], 10)], dim=1,
    )  # fmt: skip
    p = "model.diffusion_model.label_emb.0."
    hidden = torch.nn.functional.silu(vector @ state[p + "0.weight"].T + state[p + "0.bias"])
    expected = hidden @ state[p + "2.weight"].T + state[p + "2.bias"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def _sgm_video_unet(state: dict, x, timesteps, context, y, frames: int, head_channels: int):
    """sgm's VideoUNet forward, written here from its definition (openaimodel ResBlock,
    VideoResBlock, SpatialVideoTransformer, VideoTransformerBlock, AlphaBlender with
    ``learned_with_images`` on video frames), on the raw checkpoint tensors.


    x ``(B*F, C, h, w)``, timesteps ``(B*F,)``, context ``(B*F, 1, D)``, y ``(B*F, adm)``.
    """
    import torch.nn.functional as F

    prefix = "model.diffusion_model."
    s = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}

    def lin(name, h):
        return F.linear(h, s[name + ".weight"], s.get(name + ".bias"))

    def gn(name, h, eps=1e-5):  # GroupNorm32; the transformers' Normalize has 1e-6
        return F.group_norm(h, 32, s[name + ".weight"], s[name + ".bias"], eps=eps)

    def ln(name, h):
        return F.layer_norm(h, h.shape[-1:], s[name + ".weight"], s[name + ".bias"])

    def conv(name, h):
        weight, bias = s[name + ".weight"], s[name + ".bias"]
        if weight.dim() == 5:  # the temporal (3, 1, 1) convolutions
            return F.conv3d(h, weight, bias, padding=(weight.shape[2] // 2, 0, 0))
        return F.conv2d(h, weight, bias, padding=weight.shape[-1] // 2)

    def resblock(pre, h, emb, eps=1e-5):
        r = conv(pre + "in_layers.2", F.silu(gn(pre + "in_layers.0", h, eps)))
        r = r + lin(pre + "emb_layers.1", F.silu(emb))[:, :, None, None]
        r = conv(pre + "out_layers.3", F.silu(gn(pre + "out_layers.0", r, eps)))
        h = (conv(pre + "skip_connection", h) if pre + "skip_connection.weight" in s else h) + r
        bt, c, hh, ww = h.shape
        video = h.reshape(bt // frames, frames, c, hh, ww).transpose(1, 2)  # (b, c, t, h, w)
        t = pre + "time_stack."
        r = conv(t + "in_layers.2", F.silu(gn(t + "in_layers.0", video, eps)))
        e = lin(t + "emb_layers.1", F.silu(emb)).reshape(bt // frames, frames, c)
        r = r + e.transpose(1, 2)[..., None, None]
        r = conv(t + "out_layers.3", F.silu(gn(t + "out_layers.0", r, eps)))
        alpha = torch.sigmoid(s[pre + "time_mixer.mix_factor"])
        mixed = alpha * video + (1 - alpha) * (video + r)
        return mixed.transpose(1, 2).reshape(bt, c, hh, ww)

    def attention(pre, h, ctx, heads):
        q, k, v = lin(pre + ".to_q", h), lin(pre + ".to_k", ctx), lin(pre + ".to_v", ctx)
        d = q.shape[-1] // heads

        def split(z):
            return z.reshape(z.shape[0], z.shape[1], heads, d).transpose(1, 2)

        weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / d**0.5, dim=-1)
        out = (weights @ split(v)).transpose(1, 2).reshape(q.shape)
        return lin(pre + ".to_out.0", out)

    def ff(pre, h):
        value, gate = lin(pre + ".net.0.proj", h).chunk(2, dim=-1)  # GEGLU
        return lin(pre + ".net.2", value * F.gelu(gate))

    def transformer(pre, h, ctx):
        bt, c, hh, ww = h.shape
        b, heads, size = bt // frames, c // head_channels, hh * ww
        x = lin(pre + "proj_in", gn(pre + "norm", h, 1e-6).flatten(2).transpose(1, 2))
        time_ctx = ctx[::frames].repeat_interleave(size, dim=0)  # first frame's context
        position = _sinusoid(torch.arange(frames).repeat(b), c)
        pos = lin(pre + "time_pos_embed.2", F.silu(lin(pre + "time_pos_embed.0", position)))
        k = 0
        while f"{pre}transformer_blocks.{k}.norm1.weight" in s:
            blk, t = f"{pre}transformer_blocks.{k}.", f"{pre}time_stack.{k}."
            normed = ln(blk + "norm1", x)
            x = attention(blk + "attn1", normed, normed, heads) + x
            x = attention(blk + "attn2", ln(blk + "norm2", x), ctx, heads) + x
            x = ff(blk + "ff", ln(blk + "norm3", x)) + x
            m = (x + pos[:, None]).reshape(b, frames, size, c).transpose(1, 2)
            m = m.reshape(b * size, frames, c)  # (b s) t c: attention across frames
            m = ff(t + "ff_in", ln(t + "norm_in", m)) + m
            normed = ln(t + "norm1", m)
            m = attention(t + "attn1", normed, normed, heads) + m
            m = attention(t + "attn2", ln(t + "norm2", m), time_ctx, heads) + m
            m = ff(t + "ff", ln(t + "norm3", m)) + m
            m = m.reshape(b, size, frames, c).transpose(1, 2).reshape(bt, size, c)
            alpha = torch.sigmoid(s[pre + "time_mixer.mix_factor"])
            x = alpha * x + (1 - alpha) * m
            k += 1
        x = lin(pre + "proj_out", x)
        return x.transpose(1, 2).reshape(bt, c, hh, ww) + h

    mc = s["input_blocks.0.0.weight"].shape[0]
    emb = lin("time_embed.2", F.silu(lin("time_embed.0", _sinusoid(timesteps, mc))))
    emb = emb + lin("label_emb.0.2", F.silu(lin("label_emb.0.0", y)))
    h = conv("input_blocks.0.0", x)
    skips = [h]
    index = 1
    while (
        f"input_blocks.{index}.0.op.weight" in s
        or f"input_blocks.{index}.0.in_layers.0.weight" in s
    ):
        pre = f"input_blocks.{index}."
        if pre + "0.op.weight" in s:
            h = F.conv2d(h, s[pre + "0.op.weight"], s[pre + "0.op.bias"], stride=2, padding=1)
        else:
            h = resblock(pre + "0.", h, emb)
            if pre + "1.norm.weight" in s:
                h = transformer(pre + "1.", h, context)
        skips.append(h)
        index += 1
    h = resblock("middle_block.0.", h, emb)
    h = transformer("middle_block.1.", h, context)
    h = resblock("middle_block.2.", h, emb)
    index = 0
    while f"output_blocks.{index}.0.in_layers.0.weight" in s:
        pre = f"output_blocks.{index}."
        h = resblock(pre + "0.", torch.cat([h, skips.pop()], dim=1), emb)
        for sub in (1, 2):
            if f"{pre}{sub}.norm.weight" in s:
                h = transformer(f"{pre}{sub}.", h, context)
            elif f"{pre}{sub}.conv.weight" in s:
                h = conv(f"{pre}{sub}.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
        index += 1
    return conv("out.2", F.silu(gn("out.0", h)))


def test_converted_sv3d_p_unet_matches_an_sgm_forward(checkpoints):
    """The converted U-Net computes what sgm's VideoUNet computes with the same tensors.

    One difference is diffusers' own: its spatio-temporal U-Net builds the residual blocks
    of the attending down levels and of every up level with GroupNorm eps 1e-6, sgm with
    1e-5 (diffusers' SVD folders share it). With sgm's eps set, the outputs agree to float
    rounding; with diffusers' the difference is printed (the figure in docs/SVD.md).
    """
    import copy

    from models.sv3d import SV3DUNetSpatioTemporalConditionModel

    state, _, _, folder = checkpoints["sv3d_p"]
    unet = SV3DUNetSpatioTemporalConditionModel.from_pretrained(folder / "unet").eval()
    exact = copy.deepcopy(unet)
    for name, module in exact.named_modules():
        if isinstance(module, torch.nn.GroupNorm) and ".resnets." in name:
            module.eps = 1e-5
    generator = torch.Generator().manual_seed(4)
    frames = 3
    sample_ = torch.randn(1, frames, 8, 8, 8, generator=generator)
    context = torch.randn(1, 1, UNET["context_dim"], generator=generator)
    cond_aug = torch.tensor([[0.02]])
    camera = torch.tensor([[[1.2, 0.4], [1.4, 2.5], [0.3, 0.0]]])
    timestep = torch.tensor(0.7)
    with torch.no_grad():
        y = torch.cat([_sinusoid(cond_aug.flatten().repeat(frames), 12),
                       _sinusoid(camera[0, :, 0], 10), _sinusoid(camera[0, :, 1], 10)], dim=1)  # fmt: skip
        reference = _sgm_video_unet(
            state, sample_[0], timestep.repeat(frames), context.repeat(frames, 1, 1), y,
            frames, UNET["num_head_channels"],
        )  # fmt: skip
        converted = unet(sample_, timestep, context, cond_aug, camera=camera).sample[0]
        with_sgm_eps = exact(sample_, timestep, context, cond_aug, camera=camera).sample[0]
    assert reference.abs().mean() > 1e-2  # a non-trivial output
    torch.testing.assert_close(with_sgm_eps, reference, rtol=1e-4, atol=1e-5)
    difference = (converted - reference).abs().max() / reference.abs().max()
    print(f"converted vs sgm forward: max |diff| / max |output| = {difference:.1e}")
    assert difference < 1e-3


def _sgm_video_decoder(state: dict, prefix: str, z: torch.Tensor, frames: int) -> torch.Tensor:
    """sgm's VideoDecoder (time_mode conv-only) forward, written here from its definition:
    LDM ResnetBlocks each followed by a temporal ResBlock blended by sigmoid(mix_factor),
    a plain attention block in the middle, and a temporal convolution after conv_out.

    z ``(B*F, c, h, w)`` -> ``(B*F, 3, H, W)``.
    """
    import torch.nn.functional as F

    s = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}

    def gn(name, h, eps):
        return F.group_norm(h, 32, s[name + ".weight"], s[name + ".bias"], eps=eps)

    def conv(name, h):
        weight, bias = s[name + ".weight"], s[name + ".bias"]
        if weight.dim() == 5:
            return F.conv3d(h, weight, bias, padding=(weight.shape[2] // 2, 0, 0))
        return F.conv2d(h, weight, bias, padding=weight.shape[-1] // 2)

    def block(pre, h):
        r = conv(pre + "conv1", F.silu(gn(pre + "norm1", h, 1e-6)))  # Normalize: eps 1e-6
        r = conv(pre + "conv2", F.silu(gn(pre + "norm2", r, 1e-6)))
        h = (conv(pre + "nin_shortcut", h) if pre + "nin_shortcut.weight" in s else h) + r
        bt, c, hh, ww = h.shape
        video = h.reshape(bt // frames, frames, c, hh, ww).transpose(1, 2)
        t = pre + "time_stack."  # openaimodel ResBlock without time embedding: GroupNorm32
        r = conv(t + "in_layers.2", F.silu(gn(t + "in_layers.0", video, 1e-5)))
        r = conv(t + "out_layers.3", F.silu(gn(t + "out_layers.0", r, 1e-5)))
        alpha = torch.sigmoid(s[pre + "mix_factor"])
        mixed = alpha * (video + r) + (1 - alpha) * video  # temporal weighted by alpha
        return mixed.transpose(1, 2).reshape(bt, c, hh, ww)

    def attention(pre, h):
        bt, c, hh, ww = h.shape
        normed = gn(pre + "norm", h, 1e-6)
        q, k, v = (conv(pre + name, normed).flatten(2) for name in ("q", "k", "v"))
        weights = torch.softmax(q.transpose(1, 2) @ k / c**0.5, dim=-1)  # (bt, hw, hw)
        out = (v @ weights.transpose(1, 2)).reshape(bt, c, hh, ww)
        return h + conv(pre + "proj_out", out)

    h = conv("conv_in", z)
    h = block("mid.block_2.", attention("mid.attn_1.", block("mid.block_1.", h)))
    levels = sorted({int(key.split(".")[1]) for key in s if key.startswith("up.")})
    for level in reversed(levels):
        j = 0
        while f"up.{level}.block.{j}.conv1.weight" in s:
            h = block(f"up.{level}.block.{j}.", h)
            j += 1
        if level != 0:
            h = conv(
                f"up.{level}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest")
            )
    h = F.conv2d(
        F.silu(gn("norm_out", h, 1e-6)), s["conv_out.weight"], s["conv_out.bias"], padding=1
    )
    bt, c, hh, ww = h.shape
    video = conv(
        "conv_out.time_mix_conv", h.reshape(bt // frames, frames, c, hh, ww).transpose(1, 2)
    )
    return video.transpose(1, 2).reshape(bt, c, hh, ww)


def test_converted_temporal_decoder_matches_an_sgm_forward(checkpoints):
    from diffusers import AutoencoderKLTemporalDecoder

    state, _, _, folder = checkpoints["svd"]
    vae = AutoencoderKLTemporalDecoder.from_pretrained(folder / "vae").eval()
    frames = 3
    z = torch.randn(frames, 4, 4, 6, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference = _sgm_video_decoder(state, "first_stage_model.decoder.", z, frames)
        converted = vae.decode(z, num_frames=frames).sample
    assert reference.abs().mean() > 1e-2
    torch.testing.assert_close(converted, reference, rtol=1e-4, atol=1e-5)
