"""sd-edit: tiny random Stable Diffusion + BLIP built here, offline, run through sample.py.

A random U-Net is not a denoiser: its noise prediction jumps with every change of the
latent, and DDIM inversion (which assumes eps(x_t) ~ eps(x_{t-1})) then cannot return.
The tiny U-Net's output layer is therefore scaled down (eps varies smoothly with x, as a
trained model's does near its data) and the VAE's scaling factor is set so that latents
have unit standard deviation, as Stable Diffusion's 0.18215 does for real photos.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from generators import sd_edit
from generators.sd_edit import read_prompts_file, target_prompts
from models.pipeline_sd_edit import (
    CrossAttentionCaptureProcessor,
    CrossAttentionStore,
    SDEditVideoPipeline,
    auto_corr_loss,
    kl_divergence,
    prompt_schedule,
)

SIZE = 32  # image side in pixels; latents are 16 x 16 (tiny VAE: factor 2)
TOKENS = 16  # the tiny tokenizer's model_max_length


def _byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE vocabularies."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def _photo(path: Path) -> Path:
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.random((6, 5, 3)), np.ones((8, 8, 1)))  # 48 x 40 blocks
    Image.fromarray((smooth * 200 + 30).astype(np.uint8)).save(path)
    return path


def _build_stable_diffusion(root: Path, photo: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    alphabet = _byte_level_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["th", "the</w>"]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    (root / "tokenizer").mkdir(parents=True)
    (root / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    tokenizer = CLIPTokenizer(
        str(root / "tokenizer" / "vocab.json"),
        str(root / "tokenizer" / "merges.txt"),
        model_max_length=TOKENS,
    )
    tokenizer.save_pretrained(root / "tokenizer")
    end = vocab["<|endoftext|>"]
    text_config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2, projection_dim=16,
                                 max_position_embeddings=TOKENS, bos_token_id=vocab["<|startoftext|>"],
                                 eos_token_id=end, pad_token_id=end)  # fmt: skip
    CLIPTextModel(text_config).save_pretrained(root / "text_encoder")
    unet = UNet2DConditionModel(
        sample_size=SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=8, cross_attention_dim=16,
        attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )  # fmt: skip
    with torch.no_grad():
        unet.conv_out.weight.mul_(0.1)
        unet.conv_out.bias.mul_(0.1)
    unet.save_pretrained(root / "unet")
    vae = AutoencoderKL(block_out_channels=(8, 16), norm_num_groups=8, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, sample_size=SIZE)  # fmt: skip
    pixels = torch.from_numpy(np.array(Image.open(photo).resize((SIZE, SIZE)))).float()
    with torch.no_grad():
        latent = vae.encode(pixels.permute(2, 0, 1)[None] / 127.5 - 1).latent_dist.mean
    vae.register_to_config(scaling_factor=1.0 / float(latent.std()))
    vae.save_pretrained(root / "vae")
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                  ).save_pretrained(root / "scheduler")  # fmt: skip


def _build_blip(root: Path) -> None:
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    torch.manual_seed(0)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "river", "in",
             "spring", "tree", "the", "of", "photo"]  # fmt: skip
    root.mkdir(parents=True)
    (root / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(root / "vocab.txt"), bos_token="[DEC]")
    processor = BlipProcessor(BlipImageProcessor(size={"height": SIZE, "width": SIZE}), tokenizer)
    text = dict(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=64, bos_token_id=5,
                pad_token_id=0, sep_token_id=3, eos_token_id=3, encoder_hidden_size=16)  # fmt: skip
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, image_size=SIZE, patch_size=8)  # fmt: skip
    model = BlipForConditionalGeneration(
        BlipConfig(text_config=text, vision_config=vision, projection_dim=16)
    )
    model.save_pretrained(root)
    processor.save_pretrained(root)


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("sd_edit")
    photo = _photo(root / "photo.png")
    _build_stable_diffusion(root / "sd", photo)
    _build_blip(root / "blip")
    return {"sd": root / "sd", "blip": root / "blip", "photo": photo}


@pytest.fixture(scope="module")
def pipeline(models):
    pipe = SDEditVideoPipeline.from_stable_diffusion(str(models["sd"]))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _cli(models, out: Path, *extra: str) -> int:
    return sample.main([
        "--method", "sd-edit", "--model", str(models["sd"]), "--image", str(models["photo"]),
        "--width", str(SIZE), "--height", str(SIZE), "--num_inference_steps", "4",
        "--num_reg_steps", "1", "--output", str(out), *extra,
    ])  # fmt: skip


def _pngs(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))]


# ----------------------------------------------------------------------------- pure functions


def test_prompt_schedule_moves_linearly_through_the_prompts():
    np.testing.assert_allclose(
        prompt_schedule(1, keyframes=4), [[1, 0], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0, 1]]
    )
    weights = prompt_schedule(2, keyframes=6, counts=[2, None])  # the free segment gets 3
    assert weights.shape == (6, 3)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(weights[2], [0, 1, 0])
    np.testing.assert_allclose(weights[-1], [0, 0, 1])
    assert prompt_schedule(3, keyframes=4).shape == (4, 4)  # one keyframe per segment
    assert prompt_schedule(2, counts=[1, 4]).shape == (6, 3)  # counts alone decide
    with pytest.raises(ValueError, match="too few"):
        prompt_schedule(3, keyframes=3)
    with pytest.raises(ValueError, match="at least one target"):
        prompt_schedule(0, keyframes=3)
    with pytest.raises(ValueError, match=">= 1"):
        prompt_schedule(1, counts=[0])


def test_prompts_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# autumn, then winter\nautumn by the river | 3\n\nwinter by the river\n")
    assert read_prompts_file(path) == (["autumn by the river", "winter by the river"], [3, None])
    path.write_text("autumn | many\n")
    with pytest.raises(ValueError, match=r"prompts.txt:1: expected 'text \| N'"):
        read_prompts_file(path)
    path.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="holds no prompt"):
        read_prompts_file(path)
    with pytest.raises(FileNotFoundError, match="no such prompts file"):
        read_prompts_file(tmp_path / "missing.txt")


def test_target_prompts_from_the_flags(tmp_path):
    from argparse import Namespace

    flags = Namespace(prompt=[" autumn ", "winter"], prompts=None)
    assert target_prompts(flags) == (["autumn", "winter"], [None, None])
    with pytest.raises(ValueError, match="one of them"):
        target_prompts(Namespace(prompt=["autumn"], prompts=str(tmp_path / "p.txt")))


def test_noise_penalties_tell_white_noise_from_structure():
    generator = torch.Generator().manual_seed(0)
    white = torch.randn(1, 4, 64, 64, generator=generator)
    smooth = torch.nn.functional.avg_pool2d(white, 5, stride=1, padding=2) * 5
    for seed in range(3):  # measured: white 0.002, smooth 0.085 to 0.75 depending on shifts
        white_loss = float(auto_corr_loss(white, torch.Generator().manual_seed(seed)))
        smooth_loss = float(auto_corr_loss(smooth, torch.Generator().manual_seed(seed)))
        assert white_loss < 0.01 and smooth_loss > 20 * white_loss, (white_loss, smooth_loss)
    assert abs(float(kl_divergence(white))) < 1e-3
    assert float(kl_divergence(white * 0.3)) > 0.5


# ----------------------------------------------------------------------------- the pipeline


def test_cross_attention_capture_is_exact_and_records_every_step(pipeline, models):
    photo = pipeline.prepare_image(Image.open(models["photo"]), SIZE, SIZE)
    latents = pipeline.encode_image(photo)
    embeds = pipeline.encode_prompt(["a river in spring"])
    t = torch.tensor(500)
    with torch.no_grad():
        pipeline.unet.set_default_attn_processor()
        expected = pipeline.unet(latents, t, encoder_hidden_states=embeds).sample
        store = pipeline._install_capture()
        captured = pipeline.unet(latents, t, encoder_hidden_states=embeds).sample
    torch.testing.assert_close(captured, expected, atol=1e-5, rtol=1e-5)
    capture = [p for p in pipeline.unet.attn_processors.values()
               if isinstance(p, CrossAttentionCaptureProcessor)]  # fmt: skip
    assert len(capture) == 4  # cross-attention: 1 in the down block, 1 mid, 2 in the up block

    pipeline.reference_pass(torch.randn_like(latents), embeds, store, num_inference_steps=3)
    assert sorted(store.maps) == [0, 1, 2]
    for layers in store.maps.values():
        assert sorted(layers) == sorted(p.name for p in capture)
        assert all(name.endswith("attn2.processor") for name in layers)
        for name, probs in layers.items():
            heads = pipeline.unet.get_submodule(name.removesuffix(".processor")).heads
            pixels = 8 * 8 if name.startswith("mid_block") else 16 * 16  # latent: 16 x 16
            assert probs.shape == (heads, pixels, TOKENS)  # (batch * heads, pixels, tokens)
            torch.testing.assert_close(
                probs.float().sum(-1), torch.ones(heads, pixels), atol=2e-3, rtol=0
            )  # float16 storage


def test_inversion_then_reconstruction_returns_to_the_photo(pipeline, models):
    photo = pipeline.prepare_image(Image.open(models["photo"]), SIZE, SIZE)
    latents = pipeline.encode_image(photo)
    embeds = pipeline.encode_prompt(["a river in spring"])
    store = CrossAttentionStore()
    plain = pipeline.invert(latents, embeds, 10, lambda_auto_corr=0.0, lambda_kl=0.0)
    rebuilt = pipeline.reference_pass(plain, embeds, store, 10)
    error = float((rebuilt - latents).norm() / latents.norm())
    assert error < 0.1, error  # measured 0.053 (relative L2 of the latent) at 10 DDIM steps
    # The regulariser makes the inverted map more like i.i.d. N(0, 1) noise.
    regularised = pipeline.invert(latents, embeds, 10, generator=torch.Generator().manual_seed(0))
    assert float(kl_divergence(regularised)) < 0.5 * float(kl_divergence(plain))


def test_cross_attention_guidance_step_lowers_the_loss(pipeline, models):
    photo = pipeline.prepare_image(Image.open(models["photo"]), SIZE, SIZE)
    latents = pipeline.encode_image(photo)
    source, edit = pipeline.encode_prompt(["a river in spring", "a tree in the snow"]).chunk(2)
    store = pipeline._install_capture()
    pipeline.reference_pass(torch.randn_like(latents), source, store, num_inference_steps=2)
    t = pipeline.scheduler.timesteps[0]

    def loss(x: torch.Tensor) -> torch.Tensor:
        store.mode, store.loss, store.step = "guide", None, 0
        pipeline.unet(x, t, encoder_hidden_states=edit)
        store.mode = "off"
        return store.loss

    x = latents.clone().requires_grad_(True)
    before = loss(x)
    (grad,) = torch.autograd.grad(before, x)
    with torch.no_grad():
        after = loss(x - 0.01 * grad / grad.abs().max())
    assert 0 < after < before


# ----------------------------------------------------------------------------- command line


def test_cli_with_blip_writes_the_scheduled_frames_deterministically(models, tmp_path):
    args = ["--caption_model", str(models["blip"]), "--prompt", "a river in autumn",
            "--keyframes", "3", "--frames_between", "2", "--format", "frames",
            "--save_keyframes"]  # fmt: skip
    assert _cli(models, tmp_path / "a", *args) == 0
    frames = _pngs(tmp_path / "a" / "photo")
    assert len(frames) == (3 - 1) * (2 + 1) + 1
    keyframes = _pngs(tmp_path / "a" / "photo_keyframes")
    for index, key in zip((0, 3, 6), keyframes, strict=True):
        np.testing.assert_array_equal(frames[index], key)
    summary = json.loads((tmp_path / "a" / "photo_keyframes" / "schedule.json").read_text())
    assert summary["caption"] and "[DEC]" not in summary["caption"]  # BLIP's words
    assert summary["prompts"] == [summary["caption"], "a river in autumn"]
    assert not np.array_equal(keyframes[0], keyframes[2])  # the edit changes the image

    # Same seed: the same video (written over the first with --overwrite).
    assert _cli(models, tmp_path / "a", *args, "--overwrite") == 0
    for first, second in zip(frames, _pngs(tmp_path / "a" / "photo"), strict=True):
        np.testing.assert_array_equal(first, second)


def test_cli_prompts_file_gives_the_requested_gif(models, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a river in autumn | 1\na river in winter | 2\n")
    out = tmp_path / "out"
    args = ["--caption", "a river in spring", "--prompts", str(prompts),
            "--frames_between", "1", "--fps", "4"]  # fmt: skip
    assert _cli(models, out, *args) == 0
    with Image.open(out / "photo.gif") as gif:
        assert gif.n_frames == (1 + 1 + 2 - 1) * 2 + 1  # 4 keyframes, 1 in-between each
    with pytest.raises(FileExistsError, match="--overwrite"):
        _cli(models, out, *args)


def test_bad_input_names_the_fix(models, tmp_path, monkeypatch):
    out = tmp_path / "out"
    base = ["--caption", "a river", "--prompt", "a lake"]
    with pytest.raises(FileNotFoundError, match="no such folder.*stable-diffusion"):
        sample.main(["--method", "sd-edit", "--model", str(tmp_path / "nope"),
                     "--image", str(models["photo"]), "--output", str(out), *base])  # fmt: skip
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing unet, vae, text_encoder"):
        sample.main(["--method", "sd-edit", "--model", str(tmp_path / "empty"),
                     "--image", str(models["photo"]), "--output", str(out), *base])  # fmt: skip
    with pytest.raises(ValueError, match="--model is required"):
        sample.main(["--method", "sd-edit", "--image", str(models["photo"]), *base])
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n# no prompts\n")
    with pytest.raises(ValueError, match="holds no prompt"):
        _cli(models, out, "--caption", "a river", "--prompts", str(empty))
    with pytest.raises(ValueError, match="--prompt must not be empty"):
        _cli(models, out, "--caption", "a river", "--prompt", "  ")
    with pytest.raises(ValueError, match="--prompt TEXT or --prompts FILE"):
        _cli(models, out, "--caption", "a river")
    with pytest.raises(ValueError, match="--caption_model"):
        _cli(models, out, "--prompt", "a lake")
    with pytest.raises(ValueError, match="--caption must not be empty"):
        _cli(models, out, "--caption", "", "--prompt", "a lake")
    # A flow method that does not exist fails before any model is loaded or keyframe made.
    calls = []
    monkeypatch.setattr(sd_edit, "load_pipeline", lambda *a: calls.append(a))
    with pytest.raises(ValueError, match="--flow_method 'bogus' is not one of dis, farneback"):
        _cli(models, out, *base, "--flow_method", "bogus")
    assert calls == []

    def missing(name):  # e.g. pyflow not installed, RAFT weights absent
        raise ImportError(f"{name} needs a package that is not installed")

    monkeypatch.setattr("data.flow.get_flow_estimator", missing)
    with pytest.raises(ValueError, match="--flow_method pyflow cannot run here: pyflow needs"):
        _cli(models, out, *base, "--flow_method", "pyflow")
    assert calls == []
    monkeypatch.undo()
    # A size the U-Net cannot take fails that photo (exit code 1), with the fix printed.
    assert _cli(models, out, *base, "--width", "30") == 1
