"""Train the motion diffusion U-Net (models/motion_unet.py) on a prepare_data.py folder.

    # stage 1: the 2-D U-Net, one random frequency slice per volume
    accelerate launch train_unet.py --train_data_dir prepared/ --codec outputs/vae/vae \\
        --output_dir outputs/unet-stage1 --stage 1 --max_train_steps 50000 --use_ema
    # stage 2: add frequency attention, all K slices jointly, from the stage-1 weights
    accelerate launch train_unet.py --train_data_dir prepared/ --codec outputs/vae/vae \\
        --output_dir outputs/unet-stage2 --stage 2 --pretrained_unet outputs/unet-stage1

``--mask_conditioning`` trains a U-Net that also takes a "may move" mask (issue 15): each
training item gets the mask of its own motion (``data.dataset.motion_energy_mask``) with
probability ``--mask_probability`` and the null mask ("no mask given") otherwise, so one
model serves both; classifier-free guidance's condition dropout drops photo and mask
together. With ``--pretrained_unet`` of a model without it, the mask channels are added
with zero weights (the model starts out computing what it computed before).

``--codec`` is a folder written by train_vae.py (``<out>/vae``) or by ``save_spectral_codec``,
a sample.py model folder (its codec, latent scale included), or ``resample:F`` for the
parameter-free ``ResampleSpectralCodec`` (area-average down by F, bicubic up) with the
data's normalisation. Laid out like diffusers' train_text_to_image.py:
accelerate for devices and mixed precision, ``checkpoint-<step>`` folders (rotated by
``--checkpoints_total_limit``, resumed by ``--resume_from_checkpoint latest``), EMA,
tensorboard, and at the end ``<output_dir>/unet`` (save_pretrained, EMA weights if used),
``<output_dir>/codec`` (with motion_config.json + normalization.json),
``<output_dir>/scheduler`` (the DDPM noise schedule) and ``model_index.json``: the folder
is a ``MotionPipeline`` that ``sample.py --model <output_dir>`` loads. The skeleton and
checkpoint rules are those of every training script (models/training_utils.py);
docs/MOTION_UNET.md has the recipe.

Every random draw of a step (which clips, which frequency slice, flips, mask or no mask,
condition dropout, timesteps, noise) comes from a generator seeded by (seed, step, process), so a resumed run
continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel, compute_snr
from tqdm.auto import tqdm

from data.config import MotionConfig
from data.dataset import SpectralVolumeDataset
from data.spectral import FrequencyNormalizer
from models.motion_unet import NULL_MASK_VALUE, MotionUNet
from models.spectral_codec import (
    ResampleSpectralCodec,
    codec_downsample_factor,
    codec_latent_channels,
    compute_codec_scaling_factor,
    decode_latents,
    encode_latents,
    load_spectral_codec,
    save_spectral_codec,
    set_codec_scaling_factor,
)
from models.training_utils import (
    add_training_args,
    check_training_args,
    create_optimizer_and_scheduler,
    ema_weights,
    init_trackers,
    is_due,
    load_checkpoint,
    load_data_config,
    mean_across_processes,
    resolve_checkpoint,
    save_checkpoint,
    setup_accelerator,
    stop_if_not_finite,
)

logger = get_logger(__name__)
VALIDATION_LOG = "validation.jsonl"  # in output_dir: one JSON line per validation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--train_data_dir", required=True, help="a folder written by prepare_data.py")
    p.add_argument(
        "--codec",
        required=True,
        help="codec folder (train_vae.py's <out>/vae), a sample.py model folder (its codec, "
        "latent scale included), or resample:F",
    )
    p.add_argument("--stage", type=int, choices=[1, 2], default=2,
                   help="1: 2-D U-Net on one frequency slice per volume; 2: + frequency attention")  # fmt: skip
    p.add_argument("--pretrained_unet", default=None,
                   help="start from this U-Net (a train_unet.py output_dir or its unet/ folder)")  # fmt: skip
    # model (ignored with --pretrained_unet)
    p.add_argument("--block_out_channels", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--layers_per_block", type=int, default=2)
    p.add_argument("--norm_num_groups", type=int, default=32)
    p.add_argument("--attention_head_dim", type=int, default=32)
    p.add_argument("--mask_conditioning", action="store_true",
                   help="the U-Net also takes a motion mask (added to a --pretrained_unet "
                        "without one, with zero weights)")  # fmt: skip
    p.add_argument("--mask_augmentation", type=float, default=0.0,
                   help="with --mask_conditioning: of the items given a mask, this share gets a "
                        "random brush stroke inside it instead, and the motion outside the "
                        "stroke is removed (the mask then decides where motion goes)")  # fmt: skip
    p.add_argument("--mask_slack", type=float, default=0.0,
                   help="with --mask_conditioning: of the items given their own mask (and no "
                        "brush stroke), this share gets a mask widened by a random region that "
                        "does not move, so the mask says 'may move', not 'moves' (automatic "
                        "masks also cover still things: the photo must decide inside them)")  # fmt: skip
    p.add_argument("--mask_lr_scale", type=float, default=1.0,
                   help="with --mask_conditioning: each optimiser step moves the mask's input "
                        "weights this many times as far (they start at zero beside trained "
                        "photo weights and learn slowly at the base rate)")  # fmt: skip
    p.add_argument("--mask_probability", type=float, default=0.5,
                   help="with --mask_conditioning: give the item's own motion mask with this "
                        "probability, the null mask otherwise")  # fmt: skip
    # diffusion
    p.add_argument("--prediction_type", choices=["epsilon", "v_prediction"], default="epsilon")
    p.add_argument("--beta_schedule", choices=["scaled_linear", "linear"], default="scaled_linear")
    p.add_argument("--num_train_timesteps", type=int, default=1000)
    p.add_argument("--snr_gamma", type=float, default=None, help="min-SNR loss weighting (5.0)")
    p.add_argument("--conditioning_dropout_prob", type=float, default=0.1,
                   help="replace the photo by zeros (and the mask by the null mask) with this "
                        "probability (for CFG)")  # fmt: skip
    # data
    p.add_argument("--min_moving_fraction", type=float, default=0.0,
                   help="train only on clips whose own motion mask covers at least this share "
                        "of the frame (0: every clip); validation keeps every clip")  # fmt: skip
    p.add_argument("--random_flip", action="store_true", help="mirror photo and motion left-right")
    p.add_argument("--codec_scaling_samples", type=int, default=32,
                   help="training volumes for the resample codec's 1/std")  # fmt: skip
    p.add_argument("--num_train_epochs", type=int, default=100)
    p.add_argument("--max_train_seconds", type=float, default=None,
                   help="also stop (and save) after this much wall time of this run "
                        "(from the script's start, validation excluded)")  # fmt: skip
    # optimisation, checkpoints, logging, validation: the flags every training script has
    add_training_args(
        p, output_dir="outputs/motion-unet", train_batch_size=4, learning_rate=1e-4,
        lr_scheduler="constant_with_warmup", lr_warmup_steps=500, adam_weight_decay=1e-2,
        ema_decay=0.9999,
    )  # fmt: skip
    p.add_argument("--num_validation_volumes", type=int, default=4)
    p.add_argument("--num_validation_freqs", type=int, default=4, help="columns in the picture")
    args = p.parse_args(argv)
    check_training_args(p, args)
    if not 0 <= args.conditioning_dropout_prob <= 1:
        p.error("--conditioning_dropout_prob must be in [0, 1]")
    if not 0 <= args.mask_probability <= 1:
        p.error("--mask_probability must be in [0, 1]")
    if not 0 <= args.mask_augmentation <= 1:
        p.error("--mask_augmentation must be in [0, 1]")
    if not 0 <= args.mask_slack <= 1:
        p.error(f"--mask_slack must be in [0, 1], got {args.mask_slack}")
    if not 0 <= args.min_moving_fraction < 1:
        p.error(f"--min_moving_fraction must be in [0, 1), got {args.min_moving_fraction}")
    if not (math.isfinite(args.mask_lr_scale) and args.mask_lr_scale > 0):
        p.error(f"--mask_lr_scale must be a finite number > 0, got {args.mask_lr_scale}")
    return args


# ------------------------------------------------------------------------ codec, U-Net


def build_codec(args, data_dir: Path, data_config: MotionConfig, train_set):
    """The codec of ``--codec``, checked against the data (K, size, normalisation)."""
    if args.codec.startswith("resample:"):
        try:
            factor = int(args.codec.split(":", 1)[1])
            codec = ResampleSpectralCodec(downsample_factor=factor)
        except ValueError as error:
            raise SystemExit(f"error: --codec {args.codec}: {error} (use resample:8)") from None
        try:
            scale = compute_codec_scaling_factor(codec, train_set, args.codec_scaling_samples)
        except ValueError as error:
            raise SystemExit(f"error: {data_dir}: {error}; are the clips valid?") from None
        set_codec_scaling_factor(codec, scale)
        return codec
    try:
        codec, codec_config, normalizer = load_spectral_codec(args.codec)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: --codec: {error}") from None
    if codec_config != data_config:
        raise SystemExit(
            f"error: codec {args.codec} was made for data {codec_config.to_dict()}, but "
            f"{data_dir} has {data_config.to_dict()}; train a codec on this data (train_vae.py)"
        )
    data_normalizer = FrequencyNormalizer.load_json(data_dir / "normalization.json")
    if not np.allclose(normalizer.scales, data_normalizer.scales, rtol=1e-6):
        raise SystemExit(
            f"error: codec {args.codec} has other normalisation statistics than "
            f"{data_dir / 'normalization.json'}; its latents would not match this data"
        )
    codec.requires_grad_(False)
    return codec


def resolve_unet_folder(path: str) -> Path:
    folder = Path(path)
    if (folder / "unet" / "config.json").is_file():
        folder = folder / "unet"
    if not (folder / "config.json").is_file():
        raise SystemExit(
            f"error: --pretrained_unet {path}: no config.json (or unet/config.json); give a "
            "train_unet.py --output_dir or its unet/ folder"
        )
    return folder


def build_unet(args, data_config: MotionConfig, codec) -> MotionUNet:
    """A fresh U-Net from the flags, or ``--pretrained_unet`` (stage 2 adds attention)."""
    factor = codec_downsample_factor(codec)
    if args.pretrained_unet is None:
        try:
            return MotionUNet(
                num_freqs=data_config.num_freqs,
                latent_channels=codec_latent_channels(codec),
                image_downsample_factor=factor,
                block_out_channels=tuple(args.block_out_channels),
                layers_per_block=args.layers_per_block,
                norm_num_groups=args.norm_num_groups,
                attention_head_dim=args.attention_head_dim,
                frequency_attention=args.stage == 2,
                mask_conditioning=args.mask_conditioning,
            )
        except ValueError as error:
            raise SystemExit(f"error: model flags: {error}") from None
    folder = resolve_unet_folder(args.pretrained_unet)
    try:
        unet = MotionUNet.from_pretrained(
            folder,
            frequency_attention=args.stage == 2,
            # a mask-conditioned folder stays so; --mask_conditioning adds it to one without
            mask_conditioning=True if args.mask_conditioning else None,
        )
    except ValueError as error:
        raise SystemExit(f"error: --pretrained_unet: {error}") from None
    expected = {
        "num_freqs": data_config.num_freqs,
        "latent_channels": codec_latent_channels(codec),
        "image_downsample_factor": factor,
    }
    for key, value in expected.items():
        if unet.config[key] != value:
            raise SystemExit(
                f"error: --pretrained_unet {folder} has {key}={unet.config[key]}, but the data "
                f"and codec need {value}"
            )
    return unet


def check_sizes(data_config: MotionConfig, codec, unet: MotionUNet) -> None:
    factor = codec_downsample_factor(codec)
    multiple = factor * unet.downsample_factor
    if data_config.width % multiple or data_config.height % multiple:
        raise SystemExit(
            f"error: frame size {data_config.width}x{data_config.height} must be a multiple of "
            f"{multiple} (codec factor {factor} x U-Net factor {unet.downsample_factor}); "
            "use fewer --block_out_channels levels or another codec"
        )


# ----------------------------------------------------------------------------- data


def batch_indices(
    micro_step: int, num_items: int, batch_size: int, num_processes: int, process: int, seed: int
) -> list[int]:
    """Dataset indices of this process's batch at ``micro_step``: epochs of seeded shuffles.

    Each micro-step takes the next ``batch_size * num_processes`` items of the epoch's
    permutation (the rest of an epoch that does not fill a global batch is dropped); the
    process takes its own slice. A function of the step alone, so resuming replays nothing
    and skips nothing.
    """
    global_batch = batch_size * num_processes
    per_epoch = max(1, num_items // global_batch)
    epoch, position = divmod(micro_step, per_epoch)
    generator = torch.Generator().manual_seed(seed * 7919 + epoch)
    order = torch.cat(
        [
            torch.randperm(num_items, generator=generator)
            for _ in range(-(-global_batch // num_items))
        ]
    )
    start = position * global_batch + process * batch_size
    return order[start : start + batch_size].tolist()


def load_split(
    dataset: SpectralVolumeDataset,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A whole split in memory: photos ``(N, 3, H, W)`` float32 in [-1, 1], normalised
    spectral volumes ``(N, K, 4, H, W)`` stored as float16 (half the memory; the values are
    O(1), so float16's 1e-3 relative precision is far below the diffusion noise) and the
    clips' own motion masks ``(N, 1, H, W)`` float32 in [0, 1].

    Normalising once here instead of per step keeps stage 1, which uses one slice of each
    volume, from spending its time on the other K - 1.
    """
    images, spectral, masks = [], [], []
    for index in range(len(dataset)):
        item = dataset[index]
        images.append(item["image"])
        spectral.append(item["spectral"].half())
        masks.append(item["motion_mask"])
    return torch.stack(images), torch.stack(spectral), torch.stack(masks)


def flip_left_right(
    image: torch.Tensor,
    spectral: torch.Tensor,
    flip: torch.Tensor,
    mask: torch.Tensor | None = None,
):
    """Mirror the items where ``flip`` (B,) is True: photo, motion (x motion changes sign)
    and mask.

    Args:
        image: ``(B, 3, H, W)``; spectral: ``(B, K, 4, H, W)`` (channels re_x, im_x, re_y, im_y);
        mask: ``(B, 1, H, W)`` or None.

    Returns:
        ``(image, spectral)``, or ``(image, spectral, mask)`` when a mask is given.
    """
    sign = spectral.new_tensor([-1.0, -1.0, 1.0, 1.0])[:, None, None]
    flipped_spectral = spectral.flip(-1) * sign
    spectral = torch.where(flip[:, None, None, None, None], flipped_spectral, spectral)
    image = torch.where(flip[:, None, None, None], image.flip(-1), image)
    if mask is None:
        return image, spectral
    return image, spectral, torch.where(flip[:, None, None, None], mask.flip(-1), mask)


def random_brush(batch: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Random brush-like regions ``(B, 1, H, W)`` in [0, 1]: smooth blobs covering 30-70 %
    of the frame, with a feathered edge (9x9 box blur at the training size)."""
    height, width = size
    coarse = torch.rand(batch, 1, 3, 5, generator=generator)
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    levels = torch.rand(batch, generator=generator) * 0.4 + 0.3
    level = torch.quantile(field.flatten(1), levels, dim=1)  # (levels, items)
    # each item at its own level: the diagonal of the table
    level = level.diagonal()[:, None, None, None]
    region = (field > level).float()
    return F.avg_pool2d(region, 9, stride=1, padding=4, count_include_pad=False)


def brush_augment(spectral: torch.Tensor, mask: torch.Tensor, augment: torch.Tensor,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Where ``augment`` (B,) is True: the mask becomes ``mask * brush`` for a random brush
    stroke, and the motion is multiplied by the stroke (gone outside it), so that the mask,
    not the photo, says where the motion is (the photo's cues would still say "foliage"
    outside the stroke). Multiplying normalised volumes by a per-pixel factor is the same
    as multiplying the motion in pixels (the normalisation is one scale per frequency).

    Args:
        spectral: ``(B, K', 4, H, W)``; mask: ``(B, 1, H, W)`` in [0, 1]; augment: ``(B,)``.

    Returns:
        ``(spectral, mask)``, changed only where ``augment``.
    """
    brush = random_brush(spectral.shape[0], tuple(spectral.shape[-2:]), generator)
    gate = torch.where(augment[:, None, None, None], brush, torch.ones_like(brush))
    return spectral * gate[:, None], mask * gate


def widen_mask(mask: torch.Tensor, widen: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Where ``widen`` (B,) is True, the mask becomes ``max(mask, region)`` for a random region
    (``random_brush``) while the motion stays as it is: "may move" covers still things too,
    as an automatic mask does (the cues mark a green wall or a grey sky's reflection), and
    the model must learn from the photo which parts of the mask move.

    Args:
        mask: ``(B, 1, H, W)`` in [0, 1]; widen: ``(B,)`` bool.

    Returns:
        ``(B, 1, H, W)``, changed only where ``widen``.
    """
    region = random_brush(mask.shape[0], tuple(mask.shape[-2:]), generator)
    return torch.where(widen[:, None, None, None], torch.maximum(mask, region), mask)


# ------------------------------------------------------------------------- the step


@contextlib.contextmanager
def scaled_mask_input_update(unet, scale: float):
    """Multiply the change the enclosed optimiser step makes to the mask's input weights by
    ``scale``: a learning rate of their own. Adam's step does not grow with the gradient, and
    these weights are one slice of the photo encoder's first convolution, so the slice's
    update is scaled after the step rather than given a parameter group."""
    if scale == 1.0 or not unet.config.mask_conditioning:
        yield
        return
    weight = unet.image_encoder.layers[0].weight
    mask_slice = slice(unet.config.image_channels, None)
    before = weight.detach()[:, mask_slice].clone()
    yield
    with torch.no_grad():
        after = weight[:, mask_slice]
        weight[:, mask_slice] = before + scale * (after - before)


def make_batch(args, micro_step: int, train_images, train_spectral, codec, noise_scheduler,
               generator: torch.Generator, accelerator, train_masks=None):  # fmt: skip
    """The noisy latents, timesteps, photos, frequency indices, targets and motion masks of
    one micro-step.

    Every random draw (which clips, flips, frequency slice, mask or null mask, condition
    dropout, timesteps, noise) comes from ``generator`` seeded by (seed, micro-step,
    process): a resumed run draws exactly what the uninterrupted run would have.

    Returns:
        ``(noisy, timesteps, image, frequency_index, target, motion_mask)``; ``motion_mask``
        ``(B, 1, H, W)`` (the item's own mask, or ``NULL_MASK_VALUE`` where none is given)
        when ``args.mask_conditioning`` and ``train_masks`` are given, else None.
    """
    generator.manual_seed(args.seed * 1_000_003 + micro_step * 101 + accelerator.process_index)
    indices = batch_indices(micro_step, len(train_images), args.train_batch_size,
                            accelerator.num_processes, accelerator.process_index, args.seed)  # fmt: skip
    image = train_images[indices]  # (B, 3, H, W)
    spectral = train_spectral[indices].float()  # (B, K, 4, H, W)
    use_masks = getattr(args, "mask_conditioning", False) and train_masks is not None
    mask = train_masks[indices] if use_masks else None  # (B, 1, H, W)
    batch, num_freqs = spectral.shape[:2]
    if args.random_flip:
        flipped = flip_left_right(
            image, spectral, torch.rand(batch, generator=generator) < 0.5, mask
        )
        image, spectral = flipped[:2]
        mask = flipped[2] if use_masks else None
    if args.stage == 1:  # one random frequency slice per volume
        frequency_index = torch.randint(0, num_freqs, (batch, 1), generator=generator)
        spectral = spectral[torch.arange(batch)[:, None], frequency_index]
    else:
        frequency_index = torch.arange(num_freqs).expand(batch, num_freqs)
    drop = torch.rand(batch, generator=generator) < args.conditioning_dropout_prob
    image = torch.where(drop[:, None, None, None], torch.zeros_like(image), image)
    if use_masks:
        # Drawn only for mask models, so the draws of a model without masks are unchanged.
        give = torch.rand(batch, generator=generator) < args.mask_probability
        keep = give & ~drop  # CFG dropout drops photo and mask
        if getattr(args, "mask_augmentation", 0.0) > 0:  # drawn only then (same reason)
            augment = keep & (torch.rand(batch, generator=generator) < args.mask_augmentation)
            spectral, mask = brush_augment(spectral, mask, augment, generator)
            keep_whole = keep & ~augment
        else:
            keep_whole = keep
        if getattr(args, "mask_slack", 0.0) > 0:  # drawn only then (same reason)
            slack = keep_whole & (torch.rand(batch, generator=generator) < args.mask_slack)
            mask = widen_mask(mask, slack, generator)
        keep = keep[:, None, None, None]
        mask = torch.where(keep, mask, torch.full_like(mask, NULL_MASK_VALUE))
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (batch,), generator=generator
    )
    with torch.no_grad():
        latents = encode_latents(codec, spectral.to(accelerator.device))
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    image, frequency_index, timesteps = (
        x.to(accelerator.device) for x in (image, frequency_index, timesteps)
    )
    if mask is not None:
        mask = mask.to(accelerator.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    target = diffusion_target(noise_scheduler, latents, noise, timesteps)
    return noisy, timesteps, image, frequency_index, target, mask


def diffusion_loss(args, noise_scheduler, prediction, target, timesteps) -> torch.Tensor:
    """MSE to the target, min-SNR weighted with ``--snr_gamma`` (Hang et al. 2023)."""
    if args.snr_gamma is None:
        return F.mse_loss(prediction.float(), target.float())
    snr = compute_snr(noise_scheduler, timesteps)
    weights = torch.clamp(snr, max=args.snr_gamma)
    weights = weights / (snr if args.prediction_type == "epsilon" else snr + 1)
    per_item = F.mse_loss(prediction.float(), target.float(), reduction="none")
    return (per_item.mean(dim=(1, 2, 3, 4)) * weights).mean()


# ------------------------------------------------------------------------ checkpoints


UNET_KEYS = ("num_freqs", "latent_channels", "block_out_channels", "layers_per_block",
             "frequency_attention", "image_downsample_factor")  # fmt: skip


# ------------------------------------------------------------------------- diffusion


def diffusion_target(scheduler: DDPMScheduler, latents, noise, timesteps) -> torch.Tensor:
    if scheduler.config.prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(latents, noise, timesteps)


def predict_x0(scheduler: DDPMScheduler, noisy, prediction, timesteps) -> torch.Tensor:
    """One-step estimate of the clean latents from the model output, ``(B, K, c, h, w)``."""
    alpha = scheduler.alphas_cumprod.to(noisy.device)[timesteps].view(-1, 1, 1, 1, 1)
    if scheduler.config.prediction_type == "epsilon":
        return (noisy - (1 - alpha).sqrt() * prediction) / alpha.sqrt()
    return alpha.sqrt() * noisy - (1 - alpha).sqrt() * prediction


VALIDATION_TIMESTEPS = (50, 250, 500, 750, 950)


@torch.no_grad()
def validate(unet, codec, scheduler, val_items, args, step: int, data_config,
             with_masks: bool = False) -> float:  # fmt: skip
    """Denoising loss (unweighted MSE to the training target) on held-out volumes.

    All K slices of each volume are denoised jointly (a stage-1 model treats them one by
    one), with the photo, at fixed timesteps and fixed noise, so values are comparable
    between runs and stages. ``with_masks``: each volume's own motion mask conditions a
    mask-conditioned model (else the null mask, the default: comparable with models
    without masks). Also writes a PNG: ground truth above the one-step x0 prediction at
    t = 500, decoded to normalised spectral volumes.
    """
    from data.visualize import plot_spectral_volume

    device = unet.device
    spectral = torch.stack([item["spectral"] for item in val_items]).to(device)
    image = torch.stack([item["image"] for item in val_items]).to(device)
    mask = None
    if with_masks:
        mask = torch.stack([item["motion_mask"] for item in val_items]).to(device)
    latents = encode_latents(codec, spectral)
    generator = torch.Generator(device="cpu").manual_seed(12345)
    losses = []
    for t in VALIDATION_TIMESTEPS:
        noise = torch.randn(latents.shape, generator=generator).to(device)
        timesteps = torch.full((latents.shape[0],), t, device=device, dtype=torch.long)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, image, motion_mask=mask).sample
        target = diffusion_target(scheduler, latents, noise, timesteps)
        losses.append(F.mse_loss(prediction.float(), target.float()).item())
        if t == 500:
            x0 = predict_x0(scheduler, noisy, prediction, timesteps)
            predicted_spectral = decode_latents(codec, x0[:1]).float().cpu()
    shown = min(args.num_validation_freqs, spectral.shape[1])
    stacked = torch.cat([spectral[0, :shown].cpu(), predicted_spectral[0, :shown]], dim=-2)
    suffix = "-masked" if with_masks else ""
    path = Path(args.output_dir) / "validation" / f"step-{step:07d}{suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_spectral_volume(stacked, path, data_config.frequencies_hz(), num_shown=shown)
    return float(np.mean(losses))


# ------------------------------------------------------------------------------- main


def save_final_model(unet, codec, noise_scheduler, output_dir: Path, data_dir: Path,
                     data_config: MotionConfig) -> None:  # fmt: skip
    """``unet/``, ``codec/`` (with the data's motion config and statistics), ``scheduler/``,
    then the whole folder as a ``MotionPipeline`` (``model_index.json``), so that
    ``sample.py --model <output_dir>`` and ``MotionPipeline.from_pretrained`` load it."""
    from models.pipeline_motion import MotionPipeline

    unet.save_pretrained(output_dir / "unet")
    save_spectral_codec(codec, output_dir / "codec", data_config, data_dir / "normalization.json")
    noise_scheduler.save_pretrained(output_dir / "scheduler")
    MotionPipeline.from_training_output(output_dir).save_pretrained(output_dir)
    logger.info(f"saved {output_dir} (a MotionPipeline folder: sample.py --model {output_dir})")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start_time = time.monotonic()
    data_dir = Path(args.train_data_dir)
    data_config = load_data_config(data_dir)
    output_dir = Path(args.output_dir)
    accelerator = setup_accelerator(args, output_dir)

    # Data (small; every process keeps the whole split in memory) and codec.
    train_set = SpectralVolumeDataset(data_dir, "train")
    if len(train_set) == 0:
        raise SystemExit(f"error: {data_dir} has no training clips")
    # (N, 3, H, W), (N, K, 4, H, W), (N, 1, H, W)
    train_images, train_spectral, train_masks = load_split(train_set)
    if args.min_moving_fraction > 0:
        moving = (train_masks > 0.5).float().mean(dim=(1, 2, 3)) >= args.min_moving_fraction
        if not moving.any():
            raise SystemExit(
                f"error: no training clip of {data_dir} moves over {args.min_moving_fraction:.0%}"
                " of its frame; lower --min_moving_fraction"
            )
        logger.info(
            f"--min_moving_fraction {args.min_moving_fraction:g}: {int(moving.sum())} of "
            f"{len(moving)} training clips move enough"
        )
        train_images, train_spectral, train_masks = (
            train_images[moving], train_spectral[moving], train_masks[moving]
        )  # fmt: skip
    val_set = SpectralVolumeDataset(data_dir, "val")
    val_source = val_set if len(val_set) else train_set
    val_items = [val_source[i] for i in range(min(len(val_source), args.num_validation_volumes))]
    codec = build_codec(args, data_dir, data_config, train_spectral.float())
    codec = codec.to(accelerator.device)

    # Model, noise schedule, optimiser, schedule, EMA.
    unet = build_unet(args, data_config, codec)
    check_sizes(data_config, codec, unet)
    noise_scheduler = DDPMScheduler(
        num_train_timesteps=args.num_train_timesteps,
        beta_schedule=args.beta_schedule,
        prediction_type=args.prediction_type,
        # Latents have unit variance, not a [-1, 1] range: clipping the predicted x0 (the
        # DDPM default, inherited by DDIM built from this config) would cut their tails.
        clip_sample=False,
    )
    global_batch = args.train_batch_size * accelerator.num_processes
    steps_per_epoch = max(1, len(train_images) // global_batch) / args.gradient_accumulation_steps
    max_train_steps = args.max_train_steps or math.ceil(args.num_train_epochs * steps_per_epoch)
    optimizer, lr_scheduler = create_optimizer_and_scheduler(
        args, unet.parameters(), max_train_steps, accelerator.num_processes
    )
    ema = EMAModel(unet.parameters(), decay=args.ema_decay) if args.use_ema else None
    # `model` (maybe DDP-wrapped) shares its parameters with `unet`, used unwrapped below.
    model, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)

    # Resume.
    state = {
        "data_config": data_config.to_dict(),
        "unet_config": {k: unet.config[k] for k in UNET_KEYS},
        "stage": args.stage,
    }
    if unet.config.mask_conditioning:  # only then, so checkpoints of before still resume
        state["unet_config"]["mask_conditioning"] = True
    if args.min_moving_fraction > 0:  # the same: only then
        state["min_moving_fraction"] = args.min_moving_fraction
    checkpoint = resolve_checkpoint(args)  # None: a new run ("latest" with nothing saved yet)
    global_step = 0
    if checkpoint is not None:
        global_step = load_checkpoint(accelerator, checkpoint, state, ema)
        accelerator.print(f"resuming from {checkpoint} (step {global_step})")
    init_trackers(accelerator, "train_unet", args)
    num_params = sum(p.numel() for p in unet.parameters())
    logger.info(
        f"stage {args.stage}{' (mask-conditioned)' if unet.config.mask_conditioning else ''}: "
        f"{num_params / 1e6:.2f} M parameters, {len(train_images)} training "
        f"volumes, {accelerator.num_processes} process(es), batch {args.train_batch_size} x "
        f"{args.gradient_accumulation_steps} accumulation, {max_train_steps} steps, from step "
        f"{global_step}"
    )

    # Train.
    progress = tqdm(
        range(max_train_steps),
        initial=global_step,
        desc="steps",
        disable=not accelerator.is_local_main_process,
    )
    generator = torch.Generator()
    validation_seconds = 0.0  # not counted in --max_train_seconds
    model.train()
    while global_step < max_train_steps:
        for accumulation in range(args.gradient_accumulation_steps):
            micro_step = global_step * args.gradient_accumulation_steps + accumulation
            noisy, timesteps, image, frequency_index, target, mask = make_batch(
                args, micro_step, train_images, train_spectral, codec, noise_scheduler,
                generator, accelerator, train_masks if unet.config.mask_conditioning else None,
            )  # fmt: skip
            with accelerator.accumulate(model):
                prediction = model(
                    noisy, timesteps, image, frequency_index, motion_mask=mask
                ).sample
                loss = diffusion_loss(args, noise_scheduler, prediction, target, timesteps)
                # Every process gets the same mean, so on NaN all stop together.
                mean_loss = mean_across_processes(accelerator, loss)
                stop_if_not_finite(accelerator, mean_loss, global_step + 1, output_dir)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                with scaled_mask_input_update(unet, args.mask_lr_scale):
                    optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
        if ema is not None:
            ema.step(unet.parameters())
        global_step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{mean_loss:.4f}")
        accelerator.log({"loss": mean_loss, "lr": lr_scheduler.get_last_lr()[0]}, step=global_step)
        train_seconds = time.monotonic() - start_time - validation_seconds
        out_of_time = args.max_train_seconds is not None and train_seconds > args.max_train_seconds
        # All processes agree on stopping for time (clocks differ slightly).
        out_of_time = bool(
            accelerator.gather(torch.tensor([float(out_of_time)], device=accelerator.device))
            .max()
            .item()
        )

        last = global_step >= max_train_steps or out_of_time
        if is_due(global_step, args.checkpointing_steps):
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                saved = save_checkpoint(accelerator, args, global_step, state, ema)
                logger.info(f"saved {saved}")
        if accelerator.is_main_process and (
            is_due(global_step, args.validation_steps) or (last and args.validation_steps)
        ):
            validation_start = time.monotonic()
            with ema_weights(ema, unet.parameters()):
                unet.eval()
                val_loss = validate(
                    unet, codec, noise_scheduler, val_items, args, global_step, data_config
                )
                record = {"step": global_step, "train_seconds": round(train_seconds, 1),
                          "val_loss": val_loss, "train_loss": mean_loss}  # fmt: skip
                if unet.config.mask_conditioning:  # and with each volume's own mask
                    record["val_loss_masked"] = validate(
                        unet, codec, noise_scheduler, val_items, args, global_step,
                        data_config, with_masks=True,
                    )  # fmt: skip
                unet.train()
            accelerator.log(
                {k: v for k, v in record.items() if k.startswith("val_")}, step=global_step
            )
            with open(output_dir / VALIDATION_LOG, "a") as log_file:
                log_file.write(json.dumps(record) + "\n")
            logger.info(f"step {global_step}: validation denoising loss {val_loss:.4f}")
            validation_seconds += time.monotonic() - validation_start
        if out_of_time:
            logger.info(
                f"--max_train_seconds {args.max_train_seconds} reached at step {global_step}"
            )
            break

    # Save: EMA weights if any; codec and noise schedule beside the U-Net; a pipeline folder.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(unet.parameters())
        save_final_model(unet, codec, noise_scheduler, output_dir, data_dir, data_config)
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1:])
