"""MotionUNet: shapes, frequency attention mixes slices, stage 1 -> 2, save/load, gradients."""

from __future__ import annotations

import pytest
import torch

from models.motion_unet import MotionUNet, MotionUNetOutput, add_frequency_attention

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K = 4


def tiny_unet(frequency_attention: bool = True, seed: int = 0) -> MotionUNet:
    torch.manual_seed(seed)
    return MotionUNet(
        num_freqs=K,
        latent_channels=4,
        image_downsample_factor=4,
        image_embed_channels=8,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
        frequency_attention=frequency_attention,
    )


def inputs(batch: int = 2, num_slices: int = K, h: int = 8, w: int = 12, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, num_slices, 4, h, w, generator=gen)
    image = torch.rand(batch, 3, 4 * h, 4 * w, generator=gen) * 2 - 1
    return sample, image


def perturb_frequency_attention(unet: MotionUNet) -> None:
    """Move the zero-initialised output projections away from zero (as training would)."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if name.startswith("freq_attn_") and "proj_out" in name:
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))


@pytest.mark.parametrize("frequency_attention", [False, True])
def test_output_shape_and_timestep_forms(frequency_attention):
    unet = tiny_unet(frequency_attention).eval()
    sample, image = inputs()
    out = unet(sample, 10, image)
    assert isinstance(out, MotionUNetOutput)
    assert out.sample.shape == sample.shape
    with torch.no_grad():
        a = unet(sample, torch.tensor(10), image).sample
        b = unet(sample, torch.tensor([10, 10]), image).sample
        c = unet(sample, torch.tensor([10, 500]), image).sample
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(a[0], c[0], atol=1e-6) and not torch.allclose(a[1], c[1], atol=1e-4)
    assert unet(sample, 10, image, return_dict=False)[0].shape == sample.shape


def test_default_config_shape():
    """The default-size model on the default latent size (32x20 latents, 256x160 photo)."""
    unet = MotionUNet()
    sample = torch.randn(1, 2, 4, 20, 32)
    image = torch.zeros(1, 3, 160, 256)
    with torch.no_grad():
        assert unet(sample, 3, image).sample.shape == sample.shape


@pytest.mark.parametrize("frequency_attention", [False, True])
def test_frequency_attention_mixes_slices_only_when_present(frequency_attention):
    unet = tiny_unet(frequency_attention).eval()
    if frequency_attention:
        perturb_frequency_attention(unet)
    sample, image = inputs()
    changed = sample.clone()
    changed[:, 2] += 1.0  # change slice j = 2 only
    with torch.no_grad():
        before = unet(sample, 50, image).sample
        after = unet(changed, 50, image).sample
    other = [0, 1, 3]
    diff_other = (after[:, other] - before[:, other]).abs().max().item()
    assert (after[:, 2] - before[:, 2]).abs().max() > 1e-3
    if frequency_attention:
        assert diff_other > 1e-4
    else:
        assert diff_other < 1e-6


def test_zero_init_attention_equals_2d_model():
    stage1 = tiny_unet(False).eval()
    stage2 = add_frequency_attention(stage1).eval()
    assert stage2.config.frequency_attention and not stage1.config.frequency_attention
    sample, image = inputs()
    with torch.no_grad():
        assert torch.equal(stage1(sample, 7, image).sample, stage2(sample, 7, image).sample)
    with pytest.raises(ValueError, match="already"):
        add_frequency_attention(stage2)


def test_stage2_from_stage1_folder(tmp_path):
    stage1 = tiny_unet(False).eval()
    stage1.save_pretrained(tmp_path / "stage1")
    stage2 = MotionUNet.from_pretrained(
        tmp_path / "stage1", frequency_attention=True, low_cpu_mem_usage=False
    ).eval()
    assert stage2.freq_attn_mid is not None
    sample, image = inputs()
    with torch.no_grad():
        assert torch.equal(stage1(sample, 7, image).sample, stage2(sample, 7, image).sample)
    # And saved with attention, it loads back as saved; it cannot be dropped.
    stage2.save_pretrained(tmp_path / "stage2")
    with pytest.raises(ValueError, match="cannot be loaded as a stage-1"):
        MotionUNet.from_pretrained(tmp_path / "stage2", frequency_attention=False)


def test_save_load_round_trip(tmp_path):
    unet = tiny_unet(True).eval()
    perturb_frequency_attention(unet)
    unet.save_pretrained(tmp_path / "unet")
    loaded = MotionUNet.from_pretrained(tmp_path / "unet").eval()
    assert loaded.config.frequency_attention and list(loaded.config.block_out_channels) == [16, 32]
    sample, image = inputs()
    with torch.no_grad():
        assert torch.equal(unet(sample, 3, image).sample, loaded(sample, 3, image).sample)


def test_gradients_reach_all_parameters():
    unet = tiny_unet(True)
    perturb_frequency_attention(unet)  # zero proj_out would block gradients to the layers before it
    sample, image = inputs()
    index = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    unet(sample, 10, image, frequency_index=index).sample.square().mean().backward()
    missing = [
        name
        for name, param in unet.named_parameters()
        if param.grad is None or param.grad.abs().sum() == 0
    ]
    assert not missing, missing


def test_deterministic():
    sample, image = inputs()
    a = tiny_unet(True, seed=3).eval()
    b = tiny_unet(True, seed=3).eval()
    with torch.no_grad():
        assert torch.equal(a(sample, 9, image).sample, b(sample, 9, image).sample)
        assert torch.equal(a(sample, 9, image).sample, a(sample, 9, image).sample)


def test_frequency_index_subsets():
    unet = tiny_unet(False).eval()
    sample, image = inputs()
    with torch.no_grad():
        full = unet(sample, 20, image).sample
        # Without frequency attention a slice's output depends only on itself and its index.
        subset = unet(
            sample[:, [1, 3]], 20, image, frequency_index=torch.tensor([[1, 3], [1, 3]])
        ).sample
        wrong_index = unet(sample[:, [1, 3]], 20, image).sample  # indices 0, 1
    assert torch.allclose(subset, full[:, [1, 3]], atol=1e-5)
    assert not torch.allclose(wrong_index, full[:, [1, 3]], atol=1e-4)
    # One slice per item with its own index (stage-1 training).
    one = unet(sample[:, 2:3], 20, image, frequency_index=torch.tensor([[2], [2]])).sample
    assert torch.allclose(one, full[:, 2:3], atol=1e-5)


def test_other_sizes_and_errors():
    unet = tiny_unet(True).eval()
    sample, image = inputs(h=4, w=6)
    with torch.no_grad():
        assert unet(sample, 1, image).sample.shape == sample.shape
    sample, image = inputs(h=5, w=6)
    with pytest.raises(ValueError, match="divisible by 2"):
        unet(sample, 1, image)
    sample, image = inputs()
    with pytest.raises(ValueError, match="image must be"):
        unet(sample, 1, image[..., :-4])
    with pytest.raises(ValueError, match="sample must be"):
        unet(sample[:, :, :3], 1, image)
    with pytest.raises(ValueError, match="frequency slices"):
        unet(torch.randn(2, K + 1, 4, 8, 12), 1, image)
    with pytest.raises(ValueError, match="frequency_index must be in"):
        unet(sample, 1, image, frequency_index=torch.full((2, K), K))
    with pytest.raises(ValueError, match="frequency_index must be"):
        unet(sample, 1, image, frequency_index=torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="norm_num_groups"):
        MotionUNet(block_out_channels=(16, 24), norm_num_groups=16, attention_head_dim=8)
    with pytest.raises(ValueError, match="power of 2"):
        MotionUNet(image_downsample_factor=6)


# ------------------------------------------------------------------ mask conditioning


def mask_inputs(batch: int = 2, h: int = 8, w: int = 12):
    sample, image = inputs(batch, K, h, w)
    mask = torch.zeros(batch, 1, 4 * h, 4 * w)
    mask[..., : 2 * h, :] = 1.0  # top half may move
    return sample, image, mask


def test_old_configs_and_weights_load_unchanged(tmp_path):
    """A folder saved before mask conditioning (no key in config.json) loads as before."""
    import json

    unet = tiny_unet().eval()
    unet.save_pretrained(tmp_path / "old")
    config_path = tmp_path / "old" / "config.json"
    config = json.loads(config_path.read_text())
    del config["mask_conditioning"]  # as written by the code of before issue 15
    config_path.write_text(json.dumps(config))
    loaded = MotionUNet.from_pretrained(tmp_path / "old").eval()
    assert loaded.config.mask_conditioning is False
    assert loaded.image_encoder.layers[0].in_channels == 3
    sample, image = inputs()
    with torch.no_grad():
        assert torch.equal(unet(sample, 10, image).sample, loaded(sample, 10, image).sample)
    with pytest.raises(ValueError, match="without mask conditioning"):
        loaded(sample, 10, image, motion_mask=torch.ones(2, 1, 32, 48))


def test_added_mask_channels_start_as_the_old_model(tmp_path):
    from models.motion_unet import NULL_MASK_VALUE, add_mask_conditioning

    unet = tiny_unet().eval()
    perturb_frequency_attention(unet)
    masked = add_mask_conditioning(unet).eval()
    assert masked.config.mask_conditioning and not unet.config.mask_conditioning
    sample, image, mask = mask_inputs()
    with torch.no_grad():
        reference = unet(sample, 10, image).sample
        for given in (None, mask, torch.full_like(mask, NULL_MASK_VALUE)):
            assert torch.allclose(masked(sample, 10, image, motion_mask=given).sample, reference)
    # the same through from_pretrained(mask_conditioning=True)
    unet.save_pretrained(tmp_path / "plain")
    loaded = MotionUNet.from_pretrained(tmp_path / "plain", mask_conditioning=True).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(sample, 10, image, motion_mask=mask).sample, reference)
    with pytest.raises(ValueError, match="already has mask conditioning"):
        add_mask_conditioning(masked)
    masked.save_pretrained(tmp_path / "masked")
    with pytest.raises(ValueError, match="mask-conditioned"):
        MotionUNet.from_pretrained(tmp_path / "masked", mask_conditioning=False)


def test_mask_null_and_black_are_three_different_conditions():
    """Once trained (weights off zero), a given mask, no mask and an all-black mask differ;
    None equals an explicit null mask; the null of one item does not affect the other."""
    from models.motion_unet import NULL_MASK_VALUE

    torch.manual_seed(0)
    unet = MotionUNet(num_freqs=K, latent_channels=4, image_downsample_factor=4,
                      image_embed_channels=8, block_out_channels=(16, 32), layers_per_block=1,
                      norm_num_groups=8, attention_head_dim=8, mask_conditioning=True).eval()  # fmt: skip
    assert unet.image_encoder.layers[0].in_channels == 5
    sample, image, mask = mask_inputs()
    null = torch.full_like(mask, NULL_MASK_VALUE)
    with torch.no_grad():
        given = unet(sample, 10, image, motion_mask=mask).sample
        none = unet(sample, 10, image).sample
        explicit_null = unet(sample, 10, image, motion_mask=null).sample
        black = unet(sample, 10, image, motion_mask=torch.zeros_like(mask)).sample
        mixed = unet(sample, 10, image, motion_mask=torch.cat([mask[:1], null[1:]])).sample
    assert torch.equal(none, explicit_null)
    assert not torch.allclose(given, none, atol=1e-5)
    assert not torch.allclose(black, none, atol=1e-5)
    assert torch.allclose(mixed[0], given[0], atol=1e-6)
    assert torch.allclose(mixed[1], none[1], atol=1e-6)


def test_bad_masks_are_refused():
    torch.manual_seed(0)
    unet = add_mask_conditioning_tiny()
    sample, image, mask = mask_inputs()
    with pytest.raises(ValueError, match=r"motion_mask must be \(2, 1, 32, 48\)"):
        unet(sample, 10, image, motion_mask=mask[:, :, :16])
    with pytest.raises(ValueError, match=r"motion_mask must be \(2, 1, 32, 48\)"):
        unet(sample, 10, image, motion_mask=mask[:, 0])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        unet(sample, 10, image, motion_mask=mask * 2)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        unet(sample, 10, image, motion_mask=mask * float("nan"))


def add_mask_conditioning_tiny() -> MotionUNet:
    from models.motion_unet import add_mask_conditioning

    return add_mask_conditioning(tiny_unet()).eval()


def test_a_briefly_trained_model_puts_motion_where_the_mask_says():
    """Train a tiny mask-conditioned U-Net for 60 steps on data where only the mask says
    where the motion is (photos are noise, the moving half is random: left or right), then
    sample with DDIM: the motion energy lies inside the given mask."""
    from diffusers import DDIMScheduler, DDPMScheduler

    torch.manual_seed(0)
    unet = MotionUNet(num_freqs=2, latent_channels=2, image_downsample_factor=2,
                      image_embed_channels=8, block_out_channels=(16, 32), layers_per_block=1,
                      norm_num_groups=8, attention_head_dim=8, frequency_attention=False,
                      mask_conditioning=True)  # fmt: skip
    h, w = 4, 8
    # x0 ("sample") prediction learns the layout in few steps; the diffusion is the same
    scheduler = DDPMScheduler(num_train_timesteps=100, prediction_type="sample")
    optimizer = torch.optim.Adam(unet.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)

    def data(batch: int):
        right = torch.rand(batch, generator=gen) < 0.5
        columns = torch.arange(w)
        inside = torch.where(right[:, None], columns >= w // 2, columns < w // 2)  # (B, w)
        inside = inside[:, None, None, None, :].float().expand(batch, 2, 2, h, w)
        motion = torch.randn(batch, 2, 2, 1, 1, generator=gen).sign() * 1.5 * inside
        mask = inside[:, :1, :1].repeat_interleave(2, -1).repeat_interleave(2, -2)[:, 0]
        image = torch.rand(batch, 3, 2 * h, 2 * w, generator=gen) * 2 - 1
        return motion, mask, image

    for _ in range(60):
        x0, mask, image = data(16)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 100, (16,), generator=gen)
        prediction = unet(scheduler.add_noise(x0, noise, t), t, image, motion_mask=mask).sample
        loss = torch.nn.functional.mse_loss(prediction, x0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    unet.eval()
    sampler = DDIMScheduler(num_train_timesteps=100, prediction_type="sample", clip_sample=False)
    sampler.set_timesteps(10)
    for right in (False, True):
        mask = torch.zeros(8, 1, 2 * h, 2 * w)
        if right:
            mask[..., w:] = 1
        else:
            mask[..., :w] = 1
        image = torch.rand(8, 3, 2 * h, 2 * w, generator=gen) * 2 - 1
        latents = torch.randn(8, 2, 2, h, w, generator=gen)
        with torch.no_grad():
            for t in sampler.timesteps:
                x0 = unet(latents, t, image, motion_mask=mask).sample
                latents = sampler.step(x0, t, latents).prev_sample
        energy = latents.square().mean(dim=(0, 1, 2, 3))  # (w,)
        inside = energy[w // 2 :] if right else energy[: w // 2]
        outside = energy[: w // 2] if right else energy[w // 2 :]
        # measured: ~200x; the data's motion has energy 1.5^2 = 2.25 inside
        assert inside.sum() > 20 * outside.sum(), (right, energy)
        assert 1.5 < inside.mean() < 3.0, (right, energy)
