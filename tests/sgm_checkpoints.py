"""Tiny random checkpoints in the key layout of Stability AI's ``generative-models`` (sgm).

Written for the tests from the construction rules of sgm's ``VideoUNet``, its LDM
``Encoder`` / ``Decoder`` / ``VideoDecoder`` and OpenCLIP's ``VisionTransformer`` (walking
their constructors forward, as the modules register their parameters), independently of
``models.sgm_conversion`` (which reads them backward). Every tensor is random, so a
converted tensor can be traced back to the one it came from by its values.
"""

from __future__ import annotations

import torch

# Non-release sizes (the released models: 320 channels, 4 levels, heads of 64, ViT-H/14).
UNET = dict(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
            attention_resolutions=(1, 2), num_head_channels=16, context_dim=24,
            transformer_depth=1, in_channels=8, out_channels=4)  # fmt: skip
# diffusers' temporal decoder fits sgm's only with 2 blocks per level, as released.
VAE = dict(ch=32, ch_mult=(1, 2, 1, 1), num_res_blocks=2, z_channels=4)
CLIP = dict(width=32, layers=2, patch=112, image=224, embed_dim=24, head_width=16)
# Vector conditioning (ConcatTimestepEmbedderND outdims) of each version, in sgm order.
VECTOR = {
    "svd": [("fps_id", 20), ("motion_bucket_id", 20), ("cond_aug", 20)],
    "sv3d_u": [("cond_aug", 12)],
    "sv3d_p": [("cond_aug", 12), ("polars_rad", 10), ("azimuths_rad", 10)],
}


# The released sizes (Stability's configs/inference/*.yaml and OpenCLIP's ViT-H-14), for
# shape-only checks on the meta device.
RELEASED_UNET = dict(model_channels=320, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                     attention_resolutions=(4, 2, 1), num_head_channels=64, context_dim=1024,
                     transformer_depth=1, in_channels=8, out_channels=4)  # fmt: skip
RELEASED_VAE = dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4)
RELEASED_CLIP = dict(width=1280, layers=32, patch=14, image=224, embed_dim=1024, head_width=80)
RELEASED_VECTOR = {
    "svd": [("fps_id", 256), ("motion_bucket_id", 256), ("cond_aug", 256)],
    "sv3d_u": [("cond_aug", 256)],
    "sv3d_p": [("cond_aug", 256), ("polars_rad", 512), ("azimuths_rad", 512)],
}


class _Builder:
    def __init__(self, seed: int, meta: bool = False):
        self.generator = torch.Generator().manual_seed(seed)
        self.meta = meta
        self.state: dict[str, torch.Tensor] = {}

    def tensor(self, name: str, *shape: int) -> None:
        assert name not in self.state, name
        if self.meta:  # shapes only
            self.state[name] = torch.empty(*shape, device="meta")
            return
        # Small values keep the random networks' activations finite through many layers.
        self.state[name] = 0.05 * torch.randn(*shape, generator=self.generator)

    def linear(self, name: str, out: int, inp: int, bias: bool = True) -> None:
        self.tensor(f"{name}.weight", out, inp)
        if bias:
            self.tensor(f"{name}.bias", out)

    def conv(self, name: str, out: int, inp: int, kernel: tuple[int, ...] = (3, 3)) -> None:
        self.tensor(f"{name}.weight", out, inp, *kernel)
        self.tensor(f"{name}.bias", out)

    def norm(self, name: str, channels: int) -> None:
        self.tensor(f"{name}.weight", channels)
        if not self.meta:
            self.state[f"{name}.weight"] += 1.0
        self.tensor(f"{name}.bias", channels)

    # --- U-Net pieces (sgm.modules.diffusionmodules.video_model / video_attention)

    def video_resblock(self, p: str, cin: int, cout: int, emb: int | None) -> None:
        """sgm ``VideoResBlock`` (``emb`` None: the VAE's variant without time embedding)."""
        if emb is None:  # LDM ResnetBlock names
            self.norm(p + "norm1", cin)
            self.conv(p + "conv1", cout, cin)
            self.norm(p + "norm2", cout)
            self.conv(p + "conv2", cout, cout)
            if cin != cout:
                self.conv(p + "nin_shortcut", cout, cin, (1, 1))
            self.tensor(p + "mix_factor", 1)
        else:  # openaimodel ResBlock names
            self.norm(p + "in_layers.0", cin)
            self.conv(p + "in_layers.2", cout, cin)
            self.linear(p + "emb_layers.1", cout, emb)
            self.norm(p + "out_layers.0", cout)
            self.conv(p + "out_layers.3", cout, cout)
            if cin != cout:
                self.conv(p + "skip_connection", cout, cin, (1, 1))
            self.tensor(p + "time_mixer.mix_factor", 1)
        t = p + "time_stack."
        self.norm(t + "in_layers.0", cout)
        self.conv(t + "in_layers.2", cout, cout, (3, 1, 1))
        if emb is not None:
            self.linear(t + "emb_layers.1", cout, emb)
        self.norm(t + "out_layers.0", cout)
        self.conv(t + "out_layers.3", cout, cout, (3, 1, 1))

    def attention(self, p: str, dim: int, context: int) -> None:
        for name, inp in (("to_q", dim), ("to_k", context), ("to_v", context)):
            self.linear(f"{p}.{name}", dim, inp, bias=False)
        self.linear(f"{p}.to_out.0", dim, dim)

    def feed_forward(self, p: str, dim: int) -> None:
        self.linear(f"{p}.net.0.proj", 2 * 4 * dim, dim)  # GEGLU: value and gate
        self.linear(f"{p}.net.2", dim, 4 * dim)

    def layer_norms(self, p: str, dim: int, names: tuple[str, ...]) -> None:
        for name in names:
            self.norm(p + name, dim)

    def video_transformer(self, p: str, ch: int, depth: int, context: int) -> None:
        """sgm ``SpatialVideoTransformer`` (linear projections, ff_in, spatial context)."""
        self.norm(p + "norm", ch)
        self.linear(p + "proj_in", ch, ch)
        for k in range(depth):
            b = f"{p}transformer_blocks.{k}."
            self.attention(b + "attn1", ch, ch)
            self.feed_forward(b + "ff", ch)
            self.attention(b + "attn2", ch, context)
            self.layer_norms(b, ch, ("norm1", "norm2", "norm3"))
        for k in range(depth):
            b = f"{p}time_stack.{k}."
            self.norm(b + "norm_in", ch)
            self.feed_forward(b + "ff_in", ch)
            self.attention(b + "attn1", ch, ch)
            self.feed_forward(b + "ff", ch)
            self.attention(b + "attn2", ch, context)
            self.layer_norms(b, ch, ("norm1", "norm2", "norm3"))
        self.linear(p + "proj_out", ch, ch)
        self.linear(p + "time_pos_embed.0", 4 * ch, ch)
        self.linear(p + "time_pos_embed.2", ch, 4 * ch)
        self.tensor(p + "time_mixer.mix_factor", 1)

    def video_unet(self, adm: int, cfg: dict = UNET) -> None:
        p, mc = "model.diffusion_model.", cfg["model_channels"]
        emb, ctx = 4 * mc, cfg["context_dim"]
        self.linear(p + "time_embed.0", emb, mc)
        self.linear(p + "time_embed.2", emb, emb)
        self.linear(p + "label_emb.0.0", emb, adm)
        self.linear(p + "label_emb.0.2", emb, emb)
        self.conv(p + "input_blocks.0.0", mc, cfg["in_channels"])
        chans, ch, ds, index = [mc], mc, 1, 1
        mults = cfg["channel_mult"]
        for level, mult in enumerate(mults):
            for _ in range(cfg["num_res_blocks"]):
                self.video_resblock(f"{p}input_blocks.{index}.0.", ch, mult * mc, emb)
                ch = mult * mc
                if ds in cfg["attention_resolutions"]:
                    self.video_transformer(f"{p}input_blocks.{index}.1.", ch,
                                           cfg["transformer_depth"], ctx)  # fmt: skip
                chans.append(ch)
                index += 1
            if level != len(mults) - 1:
                self.conv(f"{p}input_blocks.{index}.0.op", ch, ch)
                chans.append(ch)
                index, ds = index + 1, ds * 2
        self.video_resblock(f"{p}middle_block.0.", ch, ch, emb)
        self.video_transformer(f"{p}middle_block.1.", ch, cfg["transformer_depth"], ctx)
        self.video_resblock(f"{p}middle_block.2.", ch, ch, emb)
        index = 0
        for level, mult in reversed(list(enumerate(mults))):
            for i in range(cfg["num_res_blocks"] + 1):
                self.video_resblock(f"{p}output_blocks.{index}.0.", ch + chans.pop(), mc * mult,
                                    emb)  # fmt: skip
                ch, sub = mc * mult, 1
                if ds in cfg["attention_resolutions"]:
                    self.video_transformer(f"{p}output_blocks.{index}.1.", ch,
                                           cfg["transformer_depth"], ctx)  # fmt: skip
                    sub = 2
                if level and i == cfg["num_res_blocks"]:
                    self.conv(f"{p}output_blocks.{index}.{sub}.conv", ch, ch)
                    ds //= 2
                index += 1
        self.norm(p + "out.0", ch)
        self.conv(p + "out.2", cfg["out_channels"], mc)

    # --- VAE pieces (sgm.modules.diffusionmodules.model, sgm.modules.autoencoding.temporal_ae)

    def resnet(self, p: str, cin: int, cout: int, video: bool) -> None:
        if video:
            self.video_resblock(p, cin, cout, None)
            return
        self.norm(p + "norm1", cin)
        self.conv(p + "conv1", cout, cin)
        self.norm(p + "norm2", cout)
        self.conv(p + "conv2", cout, cout)
        if cin != cout:
            self.conv(p + "nin_shortcut", cout, cin, (1, 1))

    def mid(self, p: str, ch: int, video: bool) -> None:
        self.resnet(p + "mid.block_1.", ch, ch, video)
        self.norm(p + "mid.attn_1.norm", ch)
        for name in ("q", "k", "v", "proj_out"):  # 1x1 convolutions
            self.conv(f"{p}mid.attn_1.{name}", ch, ch, (1, 1))
        self.resnet(p + "mid.block_2.", ch, ch, video)

    def encoder(self, p: str, cfg: dict = VAE) -> None:
        ch, mults = cfg["ch"], cfg["ch_mult"]
        self.conv(p + "conv_in", ch, 3)
        block_in = ch
        for i, mult in enumerate(mults):
            for j in range(cfg["num_res_blocks"]):
                self.resnet(f"{p}down.{i}.block.{j}.", block_in, ch * mult, False)
                block_in = ch * mult
            if i != len(mults) - 1:
                self.conv(f"{p}down.{i}.downsample.conv", block_in, block_in)
        self.mid(p, block_in, False)
        self.norm(p + "norm_out", block_in)
        self.conv(p + "conv_out", 2 * cfg["z_channels"], block_in)

    def decoder(self, p: str, video: bool, cfg: dict = VAE) -> None:
        ch, mults = cfg["ch"], cfg["ch_mult"]
        block_in = ch * mults[-1]
        self.conv(p + "conv_in", block_in, cfg["z_channels"])
        self.mid(p, block_in, video)
        for i in reversed(range(len(mults))):
            for j in range(cfg["num_res_blocks"] + 1):
                self.resnet(f"{p}up.{i}.block.{j}.", block_in, ch * mults[i], video)
                block_in = ch * mults[i]
            if i != 0:
                self.conv(f"{p}up.{i}.upsample.conv", block_in, block_in)
        self.norm(p + "norm_out", block_in)
        self.conv(p + "conv_out", 3, block_in)
        if video:  # AE3DConv: a temporal convolution after the output convolution
            self.conv(p + "conv_out.time_mix_conv", 3, 3, (3, 1, 1))

    def legacy_autoencoder(self, p: str, cfg: dict = VAE) -> None:
        """sgm ``AutoencoderKLModeOnly``: encoder, decoder and both quant convs."""
        z = cfg["z_channels"]
        self.encoder(p + "encoder.", cfg)
        self.decoder(p + "decoder.", False, cfg)
        self.conv(p + "quant_conv", 2 * z, 2 * z, (1, 1))
        self.conv(p + "post_quant_conv", z, z, (1, 1))

    # --- OpenCLIP (open_clip.transformer.VisionTransformer), text tower deleted by sgm

    def open_clip(self, p: str, cfg: dict = CLIP) -> None:
        w = cfg["width"]
        v = p + "visual."
        self.tensor(v + "class_embedding", w)
        self.tensor(v + "positional_embedding", (cfg["image"] // cfg["patch"]) ** 2 + 1, w)
        self.tensor(v + "proj", w, cfg["embed_dim"])
        self.tensor(v + "conv1.weight", w, 3, cfg["patch"], cfg["patch"])
        self.norm(v + "ln_pre", w)
        for i in range(cfg["layers"]):
            b = f"{v}transformer.resblocks.{i}."
            self.norm(b + "ln_1", w)
            self.tensor(b + "attn.in_proj_weight", 3 * w, w)
            self.tensor(b + "attn.in_proj_bias", 3 * w)
            self.linear(b + "attn.out_proj", w, w)
            self.norm(b + "ln_2", w)
            self.linear(b + "mlp.c_fc", 4 * w, w)
            self.linear(b + "mlp.c_proj", w, 4 * w)
        self.norm(v + "ln_post", w)
        # What FrozenOpenCLIPImageEmbedder keeps of the text side after `del model.transformer`.
        self.tensor(p + "token_embedding.weight", 10, 16)
        self.tensor(p + "positional_embedding", 7, 16)
        self.norm(p + "ln_final", 16)
        self.tensor(p + "text_projection", 16, cfg["embed_dim"])
        self.tensor(p + "logit_scale", 1)


def sgm_checkpoint(version: str, seed: int = 0, released: bool = False) -> dict[str, torch.Tensor]:
    """A tiny random sgm checkpoint of ``version`` (svd, svd_image_decoder, sv3d_u, sv3d_p).

    ``released``: the released sizes instead, as meta tensors (shapes only, no memory).
    The conditioner's embedders are numbered as in Stability's inference configs.
    """
    builder = _Builder(seed, meta=released)
    unet, vae, clip, vectors = (
        (RELEASED_UNET, RELEASED_VAE, RELEASED_CLIP, RELEASED_VECTOR)
        if released
        else (UNET, VAE, CLIP, VECTOR)
    )
    family = "svd" if version.startswith("svd") else version
    adm = sum(width for _, width in vectors[family])
    builder.video_unet(adm, unet)
    builder.open_clip("conditioner.embedders.0.open_clip.model.", clip)
    vae_index = 3 if family == "svd" else 1  # after fps_id and motion_bucket_id in SVD
    builder.legacy_autoencoder(f"conditioner.embedders.{vae_index}.encoder.", vae)
    if version in ("svd", "svd_xt"):  # AutoencodingEngine: encoder + VideoDecoder, no quant convs
        builder.encoder("first_stage_model.encoder.", vae)
        builder.decoder("first_stage_model.decoder.", True, vae)
    elif version.endswith("image_decoder"):  # the legacy AutoencoderKL
        builder.legacy_autoencoder("first_stage_model.", vae)
    else:  # SV3D: AutoencodingEngine with an Identity encoder
        builder.decoder("first_stage_model.decoder.", False, vae)
    return builder.state


def sgm_yaml(version: str) -> str:
    """A small sgm inference YAML for ``sgm_checkpoint(version)`` (as configs/inference/*.yaml)."""
    family = "svd" if version.startswith("svd") else version
    vector = VECTOR[family]
    u = UNET
    embedders = [
        "        - input_key: cond_frames_without_noise\n"
        "          target: sgm.modules.encoders.modules.FrozenOpenCLIPImagePredictionEmbedder\n"
        "          params:\n"
        "            open_clip_embedding_config:\n"
        "              target: sgm.modules.encoders.modules.FrozenOpenCLIPImageEmbedder\n"
        "              params: {arch: tiny-test-arch}\n"
    ]
    for key, width in vector:
        embedders.append(
            f"        - input_key: {key}\n"
            "          target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND\n"
            f"          params: {{outdim: {width}}}\n"
        )
    return (
        "model:\n"
        "  target: sgm.models.diffusion.DiffusionEngine\n"
        "  params:\n"
        "    scale_factor: 0.13025\n"
        "    network_config:\n"
        "      target: sgm.modules.diffusionmodules.video_model.VideoUNet\n"
        "      params:\n"
        f"        adm_in_channels: {sum(w for _, w in vector)}\n"
        "        num_classes: sequential\n"
        f"        in_channels: {u['in_channels']}\n"
        f"        out_channels: {u['out_channels']}\n"
        f"        model_channels: {u['model_channels']}\n"
        f"        attention_resolutions: {list(u['attention_resolutions'])}\n"
        f"        num_res_blocks: {u['num_res_blocks']}\n"
        f"        channel_mult: {list(u['channel_mult'])}\n"
        f"        num_head_channels: {u['num_head_channels']}\n"
        "        use_linear_in_transformer: True\n"
        f"        transformer_depth: {u['transformer_depth']}\n"
        f"        context_dim: {u['context_dim']}\n"
        "    conditioner_config:\n"
        "      target: sgm.modules.GeneralConditioner\n"
        "      params:\n"
        "        emb_models:\n" + "".join(embedders)
    )
