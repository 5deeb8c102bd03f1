"""Stability AI's single-file sgm checkpoints -> the project's diffusers pipeline folders.

Stability AI releases SVD, SVD-XT, their image-decoder variants, SV3D_u and SV3D_p as one
``.safetensors`` file each, in the key layout of their ``generative-models`` code (``sgm``).
``sample.py --method svd`` loads diffusers folders (``StableVideoDiffusionPipeline``,
``models.sv3d.SV3DPipeline``); this module turns one into the other.

Where the parts live in an sgm checkpoint, and where they go:

=============================================================  ===============================
sgm keys                                                        diffusers component
=============================================================  ===============================
``model.diffusion_model.*`` (``VideoUNet``)                     ``unet`` (spatio-temporal U-Net;
                                                                SV3D: ``SV3DUNet...``)
``conditioner.embedders.K.open_clip.model.visual.*``            ``image_encoder``
(OpenCLIP ViT image tower)                                      (``CLIPVisionModelWithProjection``)
``conditioner.embedders.K.encoder.{encoder,quant_conv}.*``      ``vae`` encoder (what encodes the
(the conditioning image's VAE encoder)                          conditioning frame)
``first_stage_model.decoder.*`` (+ ``post_quant_conv``)         ``vae`` decoder: SVD's temporal
                                                                decoder or an image decoder
=============================================================  ===============================

Not converted (reported, never silently dropped): the text-tower leftovers of the OpenCLIP
model (``token_embedding``, ``ln_final``, ...), the conditioning VAE's unused decoder and
post-quant conv, and ``first_stage_model``'s training-only encoder when the conditioner holds
the encoder used at sampling, ``denoiser.*`` schedule buffers. Any other key is an error.

Configs come from the tensors' shapes wherever the shapes fix them: U-Net widths, levels,
residual blocks per level, which levels attend, transformer depths, cross-attention width,
input/output channels, the width of the vector conditioning; the VAE's levels, widths and
latent channels; the image tower's width, depth, MLP width, patch and image size,
projection width. What the shapes cannot fix comes from the sgm YAML the checkpoint is used
with (``original_config``; Stability's ``configs/inference/*.yaml``), else from the
released configs:

* U-Net attention head width (``num_head_channels``, released 64) or count (``num_heads``);
* how the vector conditioning splits between its inputs (SVD: ``fps_id``,
  ``motion_bucket_id``, ``cond_aug``, 256 each; SV3D_p: ``cond_aug`` 256, then the polar and
  azimuth angles 512 each; SV3D_u: ``cond_aug``);
* the image tower's head width (from its OpenCLIP ``arch``: ViT-H-14 has 80);
* the latent scale factor (``scale_factor``, 0.18215), the frame count and the image size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
FIRST_STAGE_PREFIX = "first_stage_model."
VERSIONS = ("svd", "svd_xt", "svd_image_decoder", "svd_xt_image_decoder", "sv3d_u", "sv3d_p")
# Frames the U-Net was trained on (diffusers' num_frames) and the square size (px) its
# sample_size stands for: diffusers' SVD folders say 96 latents (768 px); SV3D works at 576.
RELEASED_NUM_FRAMES = {"svd": 14, "svd_xt": 25, "svd_image_decoder": 14,
                       "svd_xt_image_decoder": 25, "sv3d_u": 21, "sv3d_p": 21}  # fmt: skip
RELEASED_IMAGE_SIZE = {"svd": 768, "svd_xt": 768, "svd_image_decoder": 768,
                       "svd_xt_image_decoder": 768, "sv3d_u": 576, "sv3d_p": 576}  # fmt: skip
RELEASED_HEAD_CHANNELS = 64  # network_config.num_head_channels of every released model
RELEASED_COND_AUG_WIDTH = 256  # ConcatTimestepEmbedderND outdim of cond_aug (all versions)
RELEASED_SCALE_FACTOR = 0.18215
RELEASED_CLIP_ARCH = "ViT-H-14"
# Head widths of OpenCLIP's ViT towers (open_clip's model configs; default 64).
OPEN_CLIP_HEAD_WIDTH = {"ViT-H-14": 80, "ViT-H-16": 80, "ViT-g-14": 88, "ViT-bigG-14": 104,
                        "ViT-L-14": 64, "ViT-L-16": 64, "ViT-B-16": 64, "ViT-B-32": 64}  # fmt: skip
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The vector conditioning of each family, in the order the sgm conditioner concatenates it.
VECTOR_KEYS = {
    "svd": ("fps_id", "motion_bucket_id", "cond_aug"),
    "sv3d_u": ("cond_aug",),
    "sv3d_p": ("cond_aug", "polars_rad", "azimuths_rad"),
}


class ConversionError(ValueError):
    """The checkpoint (or its YAML) does not fit the diffusers models; the message says why."""


# ----------------------------------------------------------------------------- reading


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of an sgm checkpoint: ``.safetensors``, or a ``.ckpt``/``.pt`` state dict.

    ``.ckpt`` files are read with ``torch.load(weights_only=True)`` (no pickle code runs);
    a top-level ``state_dict`` entry is unwrapped. Raises FileNotFoundError / ConversionError.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise ConversionError(f"{path}: not a readable safetensors file ({error})") from None
    if path.suffix in (".ckpt", ".pt", ".pth", ".bin"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ConversionError(
                f"{path}: cannot read it as a weights-only state dict ({error})"
            ) from None
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise ConversionError(f"{path}: holds no state dict")
        return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    raise ConversionError(f"{path}: expected a .safetensors (or .ckpt) sgm checkpoint")


def load_original_config(path: str | Path) -> dict:
    """The sgm YAML config (``configs/inference/<version>.yaml``) as a dict."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--original_config {path}: no such file")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConversionError(f"--original_config {path}: not valid YAML ({error})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ConversionError(f"--original_config {path}: no 'model:' section (not an sgm config)")
    return config


def _get(config: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(config, dict) or key not in config:
            return default
        config = config[key]
    return config


@dataclass
class OriginalConfig:
    """What the converter reads from an sgm YAML (None: not given there)."""

    num_head_channels: int | None = None
    num_heads: int | None = None
    vector: list[tuple[str, int]] | None = None  # (input_key, outdim) in concatenation order
    clip_arch: str | None = None
    scale_factor: float | None = None
    network: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, config: dict | None) -> OriginalConfig:
        if config is None:
            return cls()
        params = _get(config, "model", "params", default={}) or {}
        network = _get(params, "network_config", "params", default={}) or {}
        heads = network.get("num_heads", -1)
        head_channels = network.get("num_head_channels", -1)
        vector, arch = None, None
        embedders = _get(params, "conditioner_config", "params", "emb_models")
        if isinstance(embedders, list):
            vector = []
            for embedder in embedders:
                target = str(embedder.get("target", ""))
                if target.endswith("ConcatTimestepEmbedderND"):
                    outdim = _get(embedder, "params", "outdim")
                    vector.append((str(embedder.get("input_key")), int(outdim)))
                elif target.endswith("FrozenOpenCLIPImagePredictionEmbedder"):
                    arch = _get(
                        embedder, "params", "open_clip_embedding_config", "params", "arch",
                        default=RELEASED_CLIP_ARCH,
                    )  # fmt: skip
        scale = params.get("scale_factor")
        return cls(
            num_head_channels=None if head_channels in (None, -1) else int(head_channels),
            num_heads=None if heads in (None, -1) else int(heads),
            vector=vector,
            clip_arch=arch,
            scale_factor=None if scale is None else float(scale),
            network=network,
        )


# ----------------------------------------------------------------------------- key helpers


def _sub(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix``, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def _indices(state: Mapping[str, Any], prefix: str) -> list[int]:
    """Sorted integers ``i`` of the keys ``<prefix><i>.*``."""
    found = set()
    for key in state:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def _rename(
    keys: list[str], source: str, target: str, rules: list[tuple[str, str]], mapping: dict
) -> None:
    """Map every key under ``source`` by the first rule whose old prefix starts its suffix.

    ``mapping`` (new key -> old key) grows; a key no rule matches is an error.
    """
    for key in keys:
        if not key.startswith(source):
            continue
        suffix = key[len(source) :]
        for old, new in rules:
            if suffix.startswith(old):
                mapping[target + new + suffix[len(old) :]] = key
                break
        else:
            raise ConversionError(f"unexpected key {key} (no known layout for it)")


# Rename rules inside one sgm block (suffix prefix -> diffusers suffix prefix).
_UNET_RESNET = [
    ("time_stack.in_layers.0.", "temporal_res_block.norm1."),
    ("time_stack.in_layers.2.", "temporal_res_block.conv1."),
    ("time_stack.emb_layers.1.", "temporal_res_block.time_emb_proj."),
    ("time_stack.out_layers.0.", "temporal_res_block.norm2."),
    ("time_stack.out_layers.3.", "temporal_res_block.conv2."),
    ("time_mixer.mix_factor", "time_mixer.mix_factor"),
    ("in_layers.0.", "spatial_res_block.norm1."),
    ("in_layers.2.", "spatial_res_block.conv1."),
    ("emb_layers.1.", "spatial_res_block.time_emb_proj."),
    ("out_layers.0.", "spatial_res_block.norm2."),
    ("out_layers.3.", "spatial_res_block.conv2."),
    ("skip_connection.", "spatial_res_block.conv_shortcut."),
]
_UNET_TRANSFORMER = [
    ("time_stack.", "temporal_transformer_blocks."),
    ("time_pos_embed.0.", "time_pos_embed.linear_1."),
    ("time_pos_embed.2.", "time_pos_embed.linear_2."),
    ("norm.", "norm."),
    ("proj_in.", "proj_in."),
    ("proj_out.", "proj_out."),
    ("transformer_blocks.", "transformer_blocks."),
    ("time_mixer.mix_factor", "time_mixer.mix_factor"),
]
_VAE_RESNET = [
    ("norm1.", "norm1."), ("conv1.", "conv1."), ("norm2.", "norm2."), ("conv2.", "conv2."),
    ("nin_shortcut.", "conv_shortcut."),
]  # fmt: skip
_VAE_VIDEO_RESNET = [
    ("time_stack.in_layers.0.", "temporal_res_block.norm1."),
    ("time_stack.in_layers.2.", "temporal_res_block.conv1."),
    ("time_stack.out_layers.0.", "temporal_res_block.norm2."),
    ("time_stack.out_layers.3.", "temporal_res_block.conv2."),
    ("mix_factor", "time_mixer.mix_factor"),
] + [(old, "spatial_res_block." + new) for old, new in _VAE_RESNET]
_VAE_ATTENTION = [
    ("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
]  # fmt: skip


# ----------------------------------------------------------------------------- U-Net


@dataclass
class _Level:
    blocks: list[int] = field(default_factory=list)  # sgm input_blocks indices of resnets
    downsample: int | None = None


def _unet_levels(unet: Mapping[str, torch.Tensor]) -> list[_Level]:
    levels, level = [], _Level()
    for index in _indices(unet, "input_blocks.")[1:]:
        if f"input_blocks.{index}.0.op.weight" in unet:
            level.downsample = index
            levels.append(level)
            level = _Level()
        else:
            level.blocks.append(index)
    levels.append(level)
    if any(not level.blocks for level in levels):
        raise ConversionError("model.diffusion_model: a U-Net level without residual blocks")
    return levels


def _depth(unet: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len(_indices(unet, f"{prefix}.transformer_blocks."))


def _vector_split(
    version: str, adm: int, original: OriginalConfig
) -> tuple[int, list[tuple[str, int]]]:
    """(addition_time_embed_dim, [(input, width)]) of the U-Net's vector conditioning."""
    family = "svd" if version.startswith("svd") else version
    keys = VECTOR_KEYS[family]
    if original.vector is not None:
        vector = original.vector
        if tuple(name for name, _ in vector) != keys:
            raise ConversionError(
                f"--original_config: the vector conditioning is {[n for n, _ in vector]}, but "
                f"--version {version} needs {list(keys)} in this order"
            )
    elif family == "svd":
        if adm % 3:
            raise ConversionError(
                f"the U-Net's vector input is {adm} wide, not three equal parts (fps_id, "
                "motion_bucket_id, cond_aug); pass --original_config with its conditioner"
            )
        vector = [(key, adm // 3) for key in keys]
    elif family == "sv3d_u":
        vector = [("cond_aug", adm)]
    else:
        camera = adm - RELEASED_COND_AUG_WIDTH
        if camera <= 0 or camera % 2:
            raise ConversionError(
                f"the U-Net's vector input is {adm} wide: cannot split it into cond_aug "
                f"({RELEASED_COND_AUG_WIDTH}, as released) and two equal camera angles; pass "
                "--original_config with its conditioner (ConcatTimestepEmbedderND outdims)"
            )
        vector = [("cond_aug", RELEASED_COND_AUG_WIDTH), ("polars_rad", camera // 2),
                  ("azimuths_rad", camera // 2)]  # fmt: skip
    total = sum(width for _, width in vector)
    if total != adm:
        raise ConversionError(
            f"--original_config: the vector conditioning adds up to {total}, but the U-Net's "
            f"label_emb takes {adm} (model.diffusion_model.label_emb.0.0.weight)"
        )
    widths = [width for _, width in vector]
    if family == "svd" and len(set(widths)) != 1:
        raise ConversionError(
            f"fps_id, motion_bucket_id and cond_aug embeddings of widths {widths}: diffusers' "
            "SVD U-Net needs them equal"
        )
    if family == "sv3d_p" and widths[1] != widths[2]:
        raise ConversionError(f"polar and azimuth embeddings of widths {widths[1:]} must be equal")
    return widths[0], vector


def unet_config(
    state: Mapping[str, torch.Tensor], version: str, original: OriginalConfig, image_size: int,
    vae_scale: int,
) -> dict:  # fmt: skip
    """The diffusers ``UNetSpatioTemporalConditionModel`` config of ``model.diffusion_model``."""
    unet = _sub(state, UNET_PREFIX)
    if not unet:
        raise ConversionError("no model.diffusion_model.* keys: not an sgm checkpoint")
    try:
        conv_in = unet["input_blocks.0.0.weight"]
        adm = unet["label_emb.0.0.weight"].shape[1]
        time_dim = unet["time_embed.0.weight"].shape[0]
        out_channels = unet["out.2.weight"].shape[0]
        cross = unet["middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1]
    except KeyError as error:
        raise ConversionError(f"model.diffusion_model: missing {error.args[0]}") from None
    if time_dim != 4 * conv_in.shape[0]:
        raise ConversionError(
            f"time embedding width {time_dim} != 4 x model_channels {conv_in.shape[0]}: "
            "diffusers' U-Net cannot hold it"
        )
    levels = _unet_levels(unet)
    widths, layers, attends, depths = [], [], [], []
    for number, level in enumerate(levels):
        channels = {unet[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0] for i in level.blocks}
        attention = {f"input_blocks.{i}.1.proj_in.weight" in unet for i in level.blocks}
        level_depths = {_depth(unet, f"input_blocks.{i}.1") for i in level.blocks}
        if len(channels) != 1 or len(attention) != 1 or len(level_depths) != 1:
            raise ConversionError(f"U-Net level {number}: blocks differ in width or attention")
        widths.append(channels.pop())
        layers.append(len(level.blocks))
        attends.append(attention.pop())
        depths.append(level_depths.pop())
    expected_up = sum(n + 1 for n in layers)
    if len(_indices(unet, "output_blocks.")) != expected_up:
        raise ConversionError(
            f"U-Net: {len(_indices(unet, 'output_blocks.'))} output blocks, expected {expected_up}"
        )
    mid_depth = _depth(unet, "middle_block.1")
    if attends[-1] and depths[-1] != mid_depth:
        raise ConversionError(
            f"U-Net: middle transformer depth {mid_depth} differs from the last level's "
            f"{depths[-1]}; diffusers' U-Net cannot hold it"
        )
    depths = [d if a else 1 for d, a in zip(depths, attends, strict=True)]
    depths[-1] = mid_depth  # diffusers' middle block takes the last entry
    heads = []
    for width, attention in zip(widths, attends + [True], strict=False):
        if original.num_heads is not None:
            if width % original.num_heads:
                raise ConversionError(
                    f"U-Net width {width} is not divisible by num_heads {original.num_heads} "
                    "(from --original_config network_config.params.num_heads); fix that value"
                )
            heads.append(original.num_heads)
            continue
        head_width = original.num_head_channels or RELEASED_HEAD_CHANNELS
        if width % head_width and attention:
            source = "--original_config" if original.num_head_channels else "the released configs"
            raise ConversionError(
                f"U-Net width {width} is not a multiple of the attention head width "
                f"{head_width} (num_head_channels, from {source}); pass --original_config "
                "with this model's network_config num_head_channels (or num_heads)"
            )
        heads.append(max(1, width // head_width))
    addition, _ = _vector_split(version, adm, original)
    network = original.network
    checks = {"model_channels": conv_in.shape[0], "in_channels": conv_in.shape[1],
              "out_channels": out_channels, "adm_in_channels": adm, "context_dim": cross}  # fmt: skip
    for name, value in checks.items():
        if name in network and network[name] != value:
            raise ConversionError(
                f"--original_config says {name} {network[name]}, the checkpoint's weights "
                f"have {value}: is it the config of this checkpoint?"
            )
    if image_size < vae_scale or image_size % vae_scale:
        raise ConversionError(
            f"--image_size {image_size} must be a positive multiple of {vae_scale} (the VAE's "
            "downsampling)"
        )
    return {
        "sample_size": image_size // vae_scale,
        "in_channels": int(conv_in.shape[1]),
        "out_channels": int(out_channels),
        "down_block_types": tuple(
            "CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attends
        ),
        "up_block_types": tuple(
            "CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal"
            for a in reversed(attends)
        ),
        "block_out_channels": tuple(int(w) for w in widths),
        "addition_time_embed_dim": int(addition),
        "projection_class_embeddings_input_dim": int(adm),
        "layers_per_block": layers[0] if len(set(layers)) == 1 else tuple(layers),
        "cross_attention_dim": int(cross),
        "transformer_layers_per_block": depths[0] if len(set(depths)) == 1 else tuple(depths),
        "num_attention_heads": tuple(heads),
        "num_frames": RELEASED_NUM_FRAMES[version],
    }


def unet_key_map(state: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """diffusers U-Net key -> sgm key, for every ``model.diffusion_model.*`` key."""
    unet = _sub(state, UNET_PREFIX)
    keys = list(unet)
    mapping: dict[str, str] = {}
    for old, new in (("time_embed.0.", "time_embedding.linear_1."),
                     ("time_embed.2.", "time_embedding.linear_2."),
                     ("label_emb.0.0.", "add_embedding.linear_1."),
                     ("label_emb.0.2.", "add_embedding.linear_2."),
                     ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."),
                     ("out.2.", "conv_out.")):  # fmt: skip
        _rename(keys, old, new, [("", "")], mapping)
    levels = _unet_levels(unet)
    for number, level in enumerate(levels):
        for j, index in enumerate(level.blocks):
            block = f"down_blocks.{number}"
            _rename(
                keys, f"input_blocks.{index}.0.", f"{block}.resnets.{j}.", _UNET_RESNET, mapping
            )
            _rename(keys, f"input_blocks.{index}.1.", f"{block}.attentions.{j}.",
                    _UNET_TRANSFORMER, mapping)  # fmt: skip
        if level.downsample is not None:
            _rename(keys, f"input_blocks.{level.downsample}.0.op.",
                    f"down_blocks.{number}.downsamplers.0.conv.", [("", "")], mapping)  # fmt: skip
    _rename(keys, "middle_block.0.", "mid_block.resnets.0.", _UNET_RESNET, mapping)
    _rename(keys, "middle_block.1.", "mid_block.attentions.0.", _UNET_TRANSFORMER, mapping)
    _rename(keys, "middle_block.2.", "mid_block.resnets.1.", _UNET_RESNET, mapping)
    index = 0
    for number, level in enumerate(reversed(levels)):
        for j in range(len(level.blocks) + 1):
            block = f"up_blocks.{number}"
            _rename(
                keys, f"output_blocks.{index}.0.", f"{block}.resnets.{j}.", _UNET_RESNET, mapping
            )
            for sub in (1, 2):  # the attention (if any), then the upsampler (if any)
                prefix = f"output_blocks.{index}.{sub}."
                if f"{prefix}conv.weight" in unet:
                    _rename(keys, f"{prefix}conv.", f"{block}.upsamplers.0.conv.", [("", "")],
                            mapping)  # fmt: skip
                else:
                    _rename(keys, prefix, f"{block}.attentions.{j}.", _UNET_TRANSFORMER, mapping)
            index += 1
    mapped = set(mapping.values())
    leftover = sorted(key for key in keys if key not in mapped)
    if leftover:
        raise ConversionError(f"unexpected U-Net keys: {', '.join(leftover[:5])}")
    return {new: UNET_PREFIX + old for new, old in mapping.items()}


# ----------------------------------------------------------------------------- VAE


@dataclass
class _VaeSources:
    encoder: str  # prefix of the LDM Encoder
    quant_conv: str | None
    decoder: str
    post_quant_conv: str | None
    temporal: bool
    unused: list[str]  # prefixes present in the checkpoint but not needed for sampling


def _vae_sources(state: Mapping[str, torch.Tensor]) -> _VaeSources:
    embedders = sorted(
        {
            m.group(0)
            for key in state
            if (m := re.match(r"conditioner\.embedders\.\d+\.encoder\.", key))
        }
    )
    decoder = FIRST_STAGE_PREFIX + "decoder."
    if not any(key.startswith(decoder) for key in state):
        raise ConversionError("no first_stage_model.decoder.* keys: the checkpoint has no VAE")
    unused = []
    if embedders:
        base = embedders[0]
        encoder, quant = base + "encoder.", base + "quant_conv."
        unused += [base + "decoder.", base + "post_quant_conv."]
        unused += [FIRST_STAGE_PREFIX + "encoder.", FIRST_STAGE_PREFIX + "quant_conv."]
        unused += embedders[1:]
    else:
        encoder, quant = FIRST_STAGE_PREFIX + "encoder.", FIRST_STAGE_PREFIX + "quant_conv."
    if not any(key.startswith(encoder) for key in state):
        raise ConversionError(
            "no VAE encoder: neither conditioner.embedders.K.encoder.encoder.* nor "
            "first_stage_model.encoder.*"
        )
    post = FIRST_STAGE_PREFIX + "post_quant_conv."
    return _VaeSources(
        encoder=encoder,
        quant_conv=quant if quant + "weight" in state else None,
        decoder=decoder,
        post_quant_conv=post if post + "weight" in state else None,
        temporal=decoder + "conv_out.time_mix_conv.weight" in state,
        unused=unused,
    )


def vae_config(
    state: Mapping[str, torch.Tensor], original: OriginalConfig, image_size: int
) -> tuple[str, dict]:
    """(diffusers class name, config) of the checkpoint's VAE."""
    sources = _vae_sources(state)
    encoder = _sub(state, sources.encoder)
    decoder = _sub(state, sources.decoder)
    levels = _indices(encoder, "down.")
    if any(key.startswith(("down.", "up.")) and ".attn." in key for key in {**encoder, **decoder}):
        raise ConversionError(
            "a VAE with attention inside its levels (attn_resolutions) is not supported"
        )
    layers = len(_indices(encoder, "down.0.block."))
    widths = tuple(
        int(encoder[f"down.{i}.block.{layers - 1}.conv2.weight"].shape[0]) for i in levels
    )
    latent = int(decoder["conv_in.weight"].shape[1])
    for i in levels:
        if len(_indices(decoder, f"up.{i}.block.")) != layers + 1:
            raise ConversionError("VAE encoder and decoder differ in blocks per level")
        if decoder[f"up.{i}.block.0.conv2.weight"].shape[0] != widths[i]:
            raise ConversionError("VAE encoder and decoder differ in widths")
    if encoder["conv_out.weight"].shape[0] != 2 * latent:
        raise ConversionError("VAE encoder output is not twice the decoder's latent channels")
    config = {
        "in_channels": int(encoder["conv_in.weight"].shape[1]),
        "out_channels": int(decoder["conv_out.weight"].shape[0]),
        "down_block_types": ("DownEncoderBlock2D",) * len(levels),
        "block_out_channels": widths,
        "layers_per_block": layers,
        "latent_channels": latent,
        "sample_size": image_size,
        "scaling_factor": original.scale_factor or RELEASED_SCALE_FACTOR,
    }
    if sources.temporal:
        if layers != 2:
            # diffusers' TemporalDecoder gives its middle block layers_per_block resnets,
            # sgm's always has two: only the released depth (2) fits both.
            raise ConversionError(
                f"a temporal-decoder VAE with {layers} residual blocks per level: diffusers' "
                "AutoencoderKLTemporalDecoder holds only 2 (the released depth)"
            )
        return "AutoencoderKLTemporalDecoder", config
    config.update(
        up_block_types=("UpDecoderBlock2D",) * len(levels),
        use_quant_conv=sources.quant_conv is not None,
        use_post_quant_conv=sources.post_quant_conv is not None,
        mid_block_add_attention="mid.attn_1.q.weight" in decoder,
    )
    return "AutoencoderKL", config


def vae_key_map(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(diffusers VAE key -> sgm key, tensors to add that the checkpoint lacks)."""
    sources = _vae_sources(state)
    keys = list(state)
    mapping: dict[str, str] = {}
    encoder = _sub(state, sources.encoder)
    n = len(_indices(encoder, "down."))
    e, d = sources.encoder, sources.decoder
    _rename(keys, e + "conv_in.", "encoder.conv_in.", [("", "")], mapping)
    _rename(keys, e + "norm_out.", "encoder.conv_norm_out.", [("", "")], mapping)
    _rename(keys, e + "conv_out.", "encoder.conv_out.", [("", "")], mapping)
    for i in range(n):
        for j in _indices(encoder, f"down.{i}.block."):
            _rename(keys, f"{e}down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.",
                    _VAE_RESNET, mapping)  # fmt: skip
        _rename(keys, f"{e}down.{i}.downsample.conv.",
                f"encoder.down_blocks.{i}.downsamplers.0.conv.", [("", "")], mapping)  # fmt: skip
    _rename(keys, e + "mid.block_1.", "encoder.mid_block.resnets.0.", _VAE_RESNET, mapping)
    _rename(keys, e + "mid.attn_1.", "encoder.mid_block.attentions.0.", _VAE_ATTENTION, mapping)
    _rename(keys, e + "mid.block_2.", "encoder.mid_block.resnets.1.", _VAE_RESNET, mapping)

    resnet = _VAE_VIDEO_RESNET if sources.temporal else _VAE_RESNET
    _rename(keys, d + "conv_in.", "decoder.conv_in.", [("", "")], mapping)
    _rename(keys, d + "norm_out.", "decoder.conv_norm_out.", [("", "")], mapping)
    if sources.temporal:
        _rename(keys, d + "conv_out.", "decoder.",
                [("time_mix_conv.", "time_conv_out."), ("", "conv_out.")], mapping)  # fmt: skip
    else:
        _rename(keys, d + "conv_out.", "decoder.conv_out.", [("", "")], mapping)
    decoder = _sub(state, d)
    for i in range(n):
        up = f"decoder.up_blocks.{n - 1 - i}"  # sgm counts decoder levels from the top
        for j in _indices(decoder, f"up.{i}.block."):
            _rename(keys, f"{d}up.{i}.block.{j}.", f"{up}.resnets.{j}.", resnet, mapping)
        _rename(keys, f"{d}up.{i}.upsample.conv.", f"{up}.upsamplers.0.conv.", [("", "")], mapping)
    _rename(keys, d + "mid.block_1.", "decoder.mid_block.resnets.0.", resnet, mapping)
    _rename(keys, d + "mid.attn_1.", "decoder.mid_block.attentions.0.", _VAE_ATTENTION, mapping)
    _rename(keys, d + "mid.block_2.", "decoder.mid_block.resnets.1.", resnet, mapping)

    extra: dict[str, torch.Tensor] = {}
    if sources.quant_conv:
        _rename(keys, sources.quant_conv, "quant_conv.", [("", "")], mapping)
    elif sources.temporal:
        # diffusers' temporal-decoder VAE always has a quant conv; sgm's AutoencodingEngine has
        # none: an identity 1x1 convolution keeps the encoder's moments as they are.
        channels = encoder["conv_out.weight"].shape[0]
        dtype = encoder["conv_out.weight"].dtype
        extra["quant_conv.weight"] = torch.eye(channels, dtype=dtype)[:, :, None, None]
        extra["quant_conv.bias"] = torch.zeros(channels, dtype=dtype)
    if sources.post_quant_conv:
        _rename(keys, sources.post_quant_conv, "post_quant_conv.", [("", "")], mapping)
    for prefix in (e, d):
        leftover = sorted(
            key for key in keys if key.startswith(prefix) and key not in set(mapping.values())
        )
        if leftover:
            raise ConversionError(f"unexpected VAE keys: {', '.join(leftover[:5])}")
    return mapping, extra


# ----------------------------------------------------------------------------- image encoder


def _clip_prefix(state: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """(prefix of the OpenCLIP model, prefix of its visual tower)."""
    found = sorted(
        {m.group(1) for key in state
         if (m := re.match(r"(conditioner\.embedders\.\d+\.open_clip\.model\.)visual\.", key))}
    )  # fmt: skip
    if len(found) != 1:
        raise ConversionError(
            "expected one OpenCLIP image tower (conditioner.embedders.K.open_clip.model.visual.*),"
            f" found {len(found)}"
        )
    return found[0], found[0] + "visual."


def image_encoder_config(
    state: Mapping[str, torch.Tensor], original: OriginalConfig, head_width: int | None = None
) -> dict:
    """transformers ``CLIPVisionConfig`` fields of the OpenCLIP image tower."""
    _, prefix = _clip_prefix(state)
    visual = _sub(state, prefix)
    width, _, patch, _ = visual["conv1.weight"].shape
    positions = visual["positional_embedding"].shape[0] - 1
    grid = round(positions**0.5)
    if grid * grid != positions:
        raise ConversionError(f"image tower: {positions} patch positions is not a square grid")
    arch = original.clip_arch or RELEASED_CLIP_ARCH
    if head_width is None:
        if arch not in OPEN_CLIP_HEAD_WIDTH:
            raise ConversionError(
                f"unknown OpenCLIP arch {arch!r} (--original_config): pass --clip_head_width"
            )
        head_width, source = OPEN_CLIP_HEAD_WIDTH[arch], f"OpenCLIP {arch}"
    else:
        source = "--clip_head_width"
    if width % head_width:
        raise ConversionError(
            f"image tower width {width} is not a multiple of the head width {head_width} "
            f"({source}); pass --clip_head_width (or --original_config with the tower's arch)"
        )
    return {
        "hidden_size": int(width),
        "intermediate_size": int(visual["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "projection_dim": int(visual["proj"].shape[1]),
        "num_hidden_layers": len(_indices(visual, "transformer.resblocks.")),
        "num_attention_heads": int(width // head_width),
        "num_channels": int(visual["conv1.weight"].shape[1]),
        "image_size": int(grid * patch),
        "patch_size": int(patch),
        "hidden_act": "gelu",  # LAION's OpenCLIP ViTs use exact GELU, not OpenAI's quick GELU
        "layer_norm_eps": 1e-5,
    }


def image_encoder_state(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(CLIPVisionModelWithProjection state dict, sgm keys it used)."""
    _, prefix = _clip_prefix(state)
    visual = _sub(state, prefix)
    out = {
        "vision_model.embeddings.class_embedding": visual["class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": visual["conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": visual["positional_embedding"],
        # open_clip applies x @ proj; a Linear layer stores the transpose.
        "visual_projection.weight": visual["proj"].t().contiguous(),
    }
    used = ["class_embedding", "conv1.weight", "positional_embedding", "proj"]
    for old, new in (("ln_pre", "vision_model.pre_layrnorm"),
                     ("ln_post", "vision_model.post_layernorm")):  # fmt: skip
        for part in ("weight", "bias"):
            out[f"{new}.{part}"] = visual[f"{old}.{part}"]
            used.append(f"{old}.{part}")
    for i in _indices(visual, "transformer.resblocks."):
        old, new = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        # nn.MultiheadAttention packs q, k, v into one projection: rows [q; k; v].
        for part, tensor in (("weight", visual[old + "attn.in_proj_weight"]),
                             ("bias", visual[old + "attn.in_proj_bias"])):  # fmt: skip
            for name, chunk in zip(("q", "k", "v"), tensor.chunk(3, dim=0), strict=True):
                out[f"{new}self_attn.{name}_proj.{part}"] = chunk.clone()
            used.append(f"{old}attn.in_proj_{part}")
        for sub_old, sub_new in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                                 ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                                 ("mlp.c_proj", "mlp.fc2")):  # fmt: skip
            for part in ("weight", "bias"):
                out[f"{new}{sub_new}.{part}"] = visual[f"{old}{sub_old}.{part}"]
                used.append(f"{old}{sub_old}.{part}")
    leftover = sorted(set(visual) - set(used))
    if leftover:
        raise ConversionError(
            f"unexpected image-tower keys: {', '.join(prefix + k for k in leftover[:5])}"
        )
    return out, [prefix + key for key in used]


# ----------------------------------------------------------------------------- whole checkpoint


def detect_version(state: Mapping[str, torch.Tensor], original: OriginalConfig,
                   hint: str | None = None) -> str:  # fmt: skip
    """The version the checkpoint holds, from its VAE and vector conditioning.

    SVD / SVD-XT differ only in the frames they were trained on, which no shape says:
    ``hint`` (``--version``, or a file named after a version) picks between them.
    """
    sources = _vae_sources(state)
    if sources.temporal:
        family = ("svd", "svd_xt")
    elif FIRST_STAGE_PREFIX + "encoder.conv_in.weight" in state:
        family = ("svd_image_decoder", "svd_xt_image_decoder")
    else:
        if original.vector is not None:
            names = tuple(name for name, _ in original.vector)
            camera = "polars_rad" in names
        else:
            adm = state[UNET_PREFIX + "label_emb.0.0.weight"].shape[1]
            camera = adm != RELEASED_COND_AUG_WIDTH
        family = ("sv3d_p",) if camera else ("sv3d_u",)
    if hint is None:
        return family[0]
    if hint not in family:
        what = {"svd": "a temporal-decoder VAE (SVD / SVD-XT)",
                "svd_image_decoder": "an image VAE with an encoder (an SVD image-decoder variant)",
                "sv3d_u": "no vector input but cond_aug (SV3D_u)",
                "sv3d_p": "camera conditioning (SV3D_p)"}[family[0]]  # fmt: skip
        raise ConversionError(f"--version {hint}: the checkpoint holds {what}: use --version {family[0]}"
                              + (f" or {family[1]}" if len(family) > 1 else ""))  # fmt: skip
    return hint


def _check_and_cast(
    build: Callable[[], torch.nn.Module], tensors: dict[str, torch.Tensor], what: str, dtype
) -> dict[str, torch.Tensor]:
    """Check ``tensors`` against the model's own keys and shapes; reshape 1x1 convs to linear.

    ``build`` makes the model (on the meta device: no memory for weights).
    """
    with torch.device("meta"):
        model = build()
    expected = {key: value.shape for key, value in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ConversionError(
            f"{what}: {len(missing)} missing keys ({', '.join(missing[:3])}), "
            f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})"
        )
    out = {}
    for key, tensor in tensors.items():
        shape = expected[key]
        if tensor.shape != shape:
            if (
                tensor.dim() > len(shape)
                and tensor.shape[: len(shape)] == shape
                and all(side == 1 for side in tensor.shape[len(shape) :])
            ):
                tensor = tensor.reshape(
                    shape
                )  # a 1x1 convolution stored where diffusers has a linear
            else:
                raise ConversionError(
                    f"{what}: {key} has shape {tuple(tensor.shape)}, the model needs {tuple(shape)}"
                )
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        out[key] = tensor.contiguous()
    return out


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    # Views (q/k/v chunks, reshaped 1x1 convs) may share storage; safetensors refuses that.
    seen: set[int] = set()
    owned = {}
    for key, tensor in tensors.items():
        pointer = tensor.untyped_storage().data_ptr()
        owned[key] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    save_file(owned, str(path), metadata={"format": "pt"})


@dataclass
class ConversionReport:
    """What ``convert_sgm_checkpoint`` wrote and left out."""

    version: str
    output_dir: Path
    tensors: int  # checkpoint tensors used
    unused: dict[str, int]  # prefix -> number of checkpoint tensors not needed for sampling
    configs: dict[str, dict]


def convert_sgm_checkpoint(
    checkpoint: str | Path | Mapping[str, torch.Tensor],
    output_dir: str | Path,
    original_config: str | Path | dict | None = None,
    version: str | None = None,
    image_size: int | None = None,
    clip_head_width: int | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert one sgm checkpoint into a diffusers pipeline folder.

    Args:
        checkpoint: the ``.safetensors`` file (or its loaded state dict).
        output_dir: the pipeline folder to write (model_index.json, unet/, vae/, ...).
        original_config: the sgm YAML (path or loaded dict); None: the released defaults.
        version: one of ``VERSIONS``; default: from the file name when it is a version name,
            else what the weights say (svd / svd_image_decoder / sv3d_u / sv3d_p).
        image_size: the square size (px) the U-Net's ``sample_size`` stands for
            (default 576 for SV3D, 768 for SVD as in diffusers' folders).
        clip_head_width: the image tower's attention head width (default from its arch).
        dtype: cast floating-point weights (default: keep the checkpoint's).
    Returns:
        a ``ConversionReport``. Nothing is written unless the whole checkpoint converts.
    Raises:
        FileNotFoundError, FileExistsError, ConversionError (a ValueError).
    """
    hint = None
    if isinstance(checkpoint, Mapping):
        state = dict(checkpoint)
    else:
        state = load_checkpoint(checkpoint)
        stem = Path(checkpoint).stem.lower()
        hint = stem if stem in VERSIONS else None
    if version is not None:
        if version not in VERSIONS:
            raise ConversionError(f"--version must be one of {', '.join(VERSIONS)}, got {version}")
        hint = version
    if isinstance(original_config, (str, Path)):
        original_config = load_original_config(original_config)
    original = OriginalConfig.parse(original_config)
    output_dir = Path(output_dir).expanduser()
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{output_dir}: exists and is not empty (pass --overwrite)")
    if clip_head_width is not None and clip_head_width < 1:
        raise ConversionError(f"--clip_head_width must be >= 1, got {clip_head_width}")

    from diffusers import (
        AutoencoderKL,
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from models.sv3d import SV3DUNetSpatioTemporalConditionModel

    version = detect_version(state, original, hint)
    sv3d = version.startswith("sv3d")
    size = image_size or RELEASED_IMAGE_SIZE[version]

    vae_class_name, vae_conf = vae_config(state, original, size)
    vae_class = {"AutoencoderKL": AutoencoderKL,
                 "AutoencoderKLTemporalDecoder": AutoencoderKLTemporalDecoder}[vae_class_name]  # fmt: skip
    vae_map, vae_extra = vae_key_map(state)
    vae_scale = 2 ** (len(vae_conf["block_out_channels"]) - 1)
    vae_tensors = {new: state[old] for new, old in vae_map.items()} | vae_extra
    vae_tensors = _check_and_cast(lambda: vae_class(**vae_conf), vae_tensors, "VAE", dtype)

    unet_conf = unet_config(state, version, original, size, vae_scale)
    unet_class = SV3DUNetSpatioTemporalConditionModel if sv3d else UNetSpatioTemporalConditionModel
    unet_map = unet_key_map(state)
    unet_tensors = {new: state[old] for new, old in unet_map.items()}
    unet_tensors = _check_and_cast(lambda: unet_class(**unet_conf), unet_tensors, "U-Net", dtype)

    clip_conf = image_encoder_config(state, original, clip_head_width)
    clip_tensors, clip_used = image_encoder_state(state)
    vision_config = CLIPVisionConfig(**clip_conf)
    clip_tensors = _check_and_cast(
        lambda: CLIPVisionModelWithProjection(vision_config), clip_tensors,
        "image encoder", dtype,
    )  # fmt: skip

    # Every checkpoint key is used or belongs to a known part that sampling does not need.
    used = set(unet_map.values()) | set(vae_map.values()) | set(clip_used)
    clip_model, _ = _clip_prefix(state)
    # denoiser.*: buffers of sgm's sampling schedule (e.g. sigmas), which the scheduler holds.
    unused_prefixes = _vae_sources(state).unused + [clip_model, "denoiser."]
    unused: dict[str, int] = {}
    unknown = []
    for key in state:
        if key in used:
            continue
        prefix = next((p for p in unused_prefixes if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        else:
            unused[prefix] = unused.get(prefix, 0) + 1
    if unknown:
        raise ConversionError(
            f"{len(unknown)} checkpoint keys belong to no known part: {', '.join(sorted(unknown)[:5])}"
        )

    # Write: components first, model_index.json last (a folder without it is no pipeline).
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "model_index.json").unlink(missing_ok=True)
    unet_dir, vae_dir = output_dir / "unet", output_dir / "vae"
    for folder in (unet_dir, vae_dir, output_dir / "image_encoder"):
        folder.mkdir(exist_ok=True)
    with torch.device("meta"):
        unet_class(**unet_conf).save_config(unet_dir)
        vae_class(**vae_conf).save_config(vae_dir)
    _save_tensors(unet_tensors, unet_dir / "diffusion_pytorch_model.safetensors")
    _save_tensors(vae_tensors, vae_dir / "diffusion_pytorch_model.safetensors")
    vision_config.architectures = ["CLIPVisionModelWithProjection"]
    vision_config.save_pretrained(output_dir / "image_encoder")
    _save_tensors(clip_tensors, output_dir / "image_encoder" / "model.safetensors")
    side = clip_conf["image_size"]
    CLIPImageProcessor(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), resample=3,
    ).save_pretrained(output_dir / "feature_extractor")  # fmt: skip
    # The EDM discretisation of the reference sampler (sigma 0.002-700, Karras rho 7) with
    # v-prediction, as in diffusers' SVD folders.
    EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
        beta_end=0.012, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
        interpolation_type="linear", steps_offset=1,
    ).save_pretrained(output_dir / "scheduler")  # fmt: skip
    import diffusers

    index = {
        "_class_name": "SV3DPipeline" if sv3d else "StableVideoDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "unet": ["models.sv3d", "SV3DUNetSpatioTemporalConditionModel"] if sv3d
        else ["diffusers", "UNetSpatioTemporalConditionModel"],
        "vae": ["diffusers", vae_class_name],
    }  # fmt: skip
    (output_dir / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return ConversionReport(
        version=version,
        output_dir=output_dir,
        tensors=len(used),
        unused=unused,
        configs={"unet": unet_conf, "vae": vae_conf, "image_encoder": clip_conf},
    )
