"""Train the spectral-volume VAE (models/spectral_vae.py) on a prepare_data.py folder.

    accelerate launch train_vae.py --train_data_dir prepared/ --output_dir outputs/vae \\
        --resolution 64 --train_batch_size 4 --max_train_steps 20000 --use_ema

Laid out like diffusers' example training scripts, with the skeleton and checkpoint rules
of every training script here (models/training_utils.py): accelerate for devices and
mixed precision, kill-safe ``checkpoint-<step>`` folders (rotated by
``--checkpoints_total_limit``, resumed by ``--resume_from_checkpoint latest``), EMA in
safetensors, tensorboard, and at the end the scaling factor and ``save_spectral_codec`` to
``<output_dir>/vae`` with the dataset's normalization.json and motion config beside it.
Two CPU processes: ``accelerate launch --cpu --num_processes 2 train_vae.py ...``
(docs/VAE.md).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from accelerate.logging import get_logger
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from data.config import MotionConfig
from data.dataset import SpectralVolumeDataset
from models.spectral_codec import (
    codec_downsample_factor,
    compute_codec_scaling_factor,
    decode_latents,
    encode_latents,
    save_spectral_codec,
    set_codec_scaling_factor,
)
from models.spectral_vae import create_spectral_vae, default_block_out_channels, spectral_vae_loss
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--train_data_dir", required=True, help="a folder written by prepare_data.py")
    # model
    p.add_argument("--downsample_factor", type=int, default=8, help="latent size = crop / factor")
    p.add_argument("--base_channels", type=int, default=32, help="channels of the first level")
    p.add_argument("--latent_channels", type=int, default=4)
    p.add_argument("--layers_per_block", type=int, default=1)
    p.add_argument("--norm_num_groups", type=int, default=None, help="default: min(32, base)")
    p.add_argument("--no_mid_attention", action="store_true", help="no attention in the bottleneck")
    # loss
    p.add_argument("--kl_weight", type=float, default=1e-6)
    p.add_argument("--gradient_loss_weight", type=float, default=1.0)
    # data
    p.add_argument("--resolution", type=int, default=64, help="square random crop; 0: whole frame")
    p.add_argument(
        "--random_flip", action="store_true", help="mirror left-right (negates x motion)"
    )
    p.add_argument("--num_train_epochs", type=int, default=100)
    # optimisation, checkpoints, logging, validation: the flags every training script has
    add_training_args(
        p, output_dir="outputs/spectral-vae", train_batch_size=4, learning_rate=1e-4,
        lr_scheduler="constant_with_warmup", lr_warmup_steps=100, adam_weight_decay=0.0,
        ema_decay=0.999,
    )  # fmt: skip
    p.add_argument("--num_validation_freqs", type=int, default=4)
    p.add_argument("--scaling_factor_samples", type=int, default=64, help="train volumes for 1/std")
    args = p.parse_args(argv)
    check_training_args(p, args)
    if args.resolution and args.resolution % args.downsample_factor:
        p.error(f"--resolution {args.resolution} must be a multiple of --downsample_factor")
    return args


# ----------------------------------------------------------------------------- data


def random_crop_flip(
    spectral: torch.Tensor, size: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """Per-volume random square crop (and left-right mirror) of ``(B, K, 4, H, W)``.

    A mirrored volume is a mirrored motion: the x channels (re_x, im_x) change sign.
    """
    if not size and not flip:
        return spectral
    out = []
    for volume in spectral:
        height, width = volume.shape[-2:]
        if size:
            top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
            volume = volume[..., top : top + size, left : left + size]
        if flip and bool(torch.rand((), generator=generator) < 0.5):
            volume = volume.flip(-1) * volume.new_tensor([-1.0, -1.0, 1.0, 1.0])[:, None, None]
        out.append(volume)
    return torch.stack(out)


# ------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(vae, val_spectral: torch.Tensor, args, step: int, data_config) -> float:
    """L1 of a full-frame reconstruction of one held-out volume; a PNG of input vs output."""
    from data.visualize import plot_spectral_volume

    factor = codec_downsample_factor(vae)
    height, width = (s - s % factor for s in val_spectral.shape[-2:])
    target = val_spectral[None, :, :, :height, :width]  # (1, K, 4, H, W)
    reconstruction = decode_latents(vae, encode_latents(vae, target, chunk_size=16), chunk_size=16)
    reconstruction = reconstruction.float().cpu()
    l1 = float((reconstruction - target).abs().mean())
    # Input above its reconstruction in each cell, shared colour scale per frequency.
    shown = min(args.num_validation_freqs, target.shape[1])
    stacked = torch.cat([target[0, :shown], reconstruction[0, :shown]], dim=-2)
    path = Path(args.output_dir) / "validation" / f"step-{step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_spectral_volume(stacked, path, data_config.frequencies_hz(), num_shown=shown)
    return l1


# ----------------------------------------------------------------------- data, model


def build_data(args, data_dir: Path, data_config: MotionConfig, num_processes: int):
    """The training split (in memory), its shuffling loader and one held-out volume.

    Every process reads the whole (small, cached) split; the prepared loader shards it.
    """
    train_set = SpectralVolumeDataset(data_dir, "train", in_memory=True)
    if len(train_set) == 0:
        raise SystemExit(f"error: {data_dir} has no training clips")
    if args.resolution > min(data_config.width, data_config.height):
        raise SystemExit(
            f"error: --resolution {args.resolution} exceeds the frame size {data_config.size}"
        )
    val_set = SpectralVolumeDataset(data_dir, "val")
    val_spectral = (val_set if len(val_set) else train_set)[0]["spectral"]
    loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=args.train_batch_size,
        shuffle=True,
        drop_last=len(train_set) >= args.train_batch_size * num_processes,
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    return train_set, loader, val_spectral


VAE_KEYS = (
    "block_out_channels",
    "latent_channels",
    "layers_per_block",
    "norm_num_groups",
    "mid_block_add_attention",
)  # fmt: skip  (must match on resume)


def build_model(args, data_config: MotionConfig):
    """A fresh spectral VAE from the model flags."""
    try:
        return create_spectral_vae(
            downsample_factor=args.downsample_factor,
            block_out_channels=default_block_out_channels(
                args.downsample_factor, args.base_channels
            ),
            latent_channels=args.latent_channels,
            layers_per_block=args.layers_per_block,
            norm_num_groups=args.norm_num_groups or min(32, args.base_channels),
            mid_block_add_attention=not args.no_mid_attention,
            sample_size=args.resolution or max(data_config.width, data_config.height),
        )
    except ValueError as error:
        raise SystemExit(f"error: model flags: {error}") from None


class _VAEForTraining(torch.nn.Module):
    """One forward through encoder and decoder returning the posterior too (for the KL),
    so that DistributedDataParallel sees the whole computation in one ``forward``."""

    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, slices: torch.Tensor):
        posterior = self.vae.encode(slices).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior


@torch.no_grad()
def save_final_model(vae, train_set, args, data_dir: Path, data_config: MotionConfig) -> Path:
    """The scaling factor (1 / std of whole-frame latents) and ``save_spectral_codec``."""
    vae.eval()
    factor = codec_downsample_factor(vae)
    count = min(len(train_set), args.scaling_factor_samples)
    volumes = (  # whole frames, cropped to a multiple of the factor
        train_set[i]["spectral"][
            ..., : data_config.height // factor * factor, : data_config.width // factor * factor
        ]
        for i in range(count)
    )
    scaling_factor = compute_codec_scaling_factor(vae, volumes, num_samples=count)
    set_codec_scaling_factor(vae, scaling_factor)
    saved = save_spectral_codec(vae, Path(args.output_dir) / "vae", data_config,
                                data_dir / "normalization.json")  # fmt: skip
    logger.info(f"scaling factor {scaling_factor:.4f}; saved {saved}")
    return saved


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data_dir = Path(args.train_data_dir)
    data_config = load_data_config(data_dir)
    output_dir = Path(args.output_dir)
    accelerator = setup_accelerator(args, output_dir)

    # Data.
    train_set, loader, val_spectral = build_data(
        args, data_dir, data_config, accelerator.num_processes
    )

    # Model, optimiser, schedule, EMA.
    vae = build_model(args, data_config)
    steps_per_epoch = math.ceil(
        len(loader) / accelerator.num_processes / args.gradient_accumulation_steps
    )
    max_train_steps = args.max_train_steps or args.num_train_epochs * max(1, steps_per_epoch)
    optimizer, lr_scheduler = create_optimizer_and_scheduler(
        args, vae.parameters(), max_train_steps, accelerator.num_processes
    )
    ema = EMAModel(vae.parameters(), decay=args.ema_decay) if args.use_ema else None
    # `model` (maybe DDP-wrapped) shares its parameters with `vae`, used unwrapped below.
    model, optimizer, loader, lr_scheduler = accelerator.prepare(
        _VAEForTraining(vae), optimizer, loader, lr_scheduler
    )
    if ema is not None:
        ema.to(accelerator.device)

    # Resume.
    state = {"data_config": data_config.to_dict(),
             "vae_config": {k: vae.config[k] for k in VAE_KEYS}}  # fmt: skip
    checkpoint = resolve_checkpoint(args)  # None: a new run ("latest" with nothing saved yet)
    global_step = 0
    if checkpoint is not None:
        global_step = load_checkpoint(accelerator, checkpoint, state, ema)
        accelerator.print(f"resuming from {checkpoint} (step {global_step})")
    init_trackers(accelerator, "train_vae", args)
    logger.info(
        f"{len(train_set)} training volumes, {accelerator.num_processes} process(es), "
        f"batch {args.train_batch_size} x {args.gradient_accumulation_steps} accumulation, "
        f"{max_train_steps} steps, from step {global_step}"
    )

    # Train. Crops come from a generator seeded by (seed, step, process), so a resumed run
    # draws the crops the uninterrupted run would have drawn; a resumed run starts a new
    # pass over the data (the order of the interrupted epoch is not replayed).
    progress = tqdm(
        range(max_train_steps),
        initial=global_step,
        desc="steps",
        disable=not accelerator.is_local_main_process,
    )
    crop_generator = torch.Generator()
    model.train()
    while global_step < max_train_steps:
        for batch in loader:
            crop_generator.manual_seed(
                args.seed * 1_000_003 + global_step * 101 + accelerator.process_index
            )
            spectral = random_crop_flip(
                batch["spectral"], args.resolution, args.random_flip, crop_generator
            )
            slices = spectral.flatten(0, 1)  # (B*K, 4, h, w): each frequency is one image
            with accelerator.accumulate(model):
                reconstruction, posterior = model(slices)
                losses = spectral_vae_loss(
                    reconstruction, slices, posterior, args.kl_weight, args.gradient_loss_weight
                )
                # Every process gets the same mean, so on NaN all stop together.
                mean_loss = mean_across_processes(accelerator, losses["loss"])
                stop_if_not_finite(accelerator, mean_loss, global_step + 1, output_dir)
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step(vae.parameters())
            global_step += 1
            progress.update(1)
            logs = {k: v.item() for k, v in losses.items()} | {"lr": lr_scheduler.get_last_lr()[0]}
            logs["loss"] = mean_loss
            progress.set_postfix(loss=f"{mean_loss:.4f}")
            accelerator.log(logs, step=global_step)

            last = global_step >= max_train_steps
            if is_due(global_step, args.checkpointing_steps):
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    saved = save_checkpoint(accelerator, args, global_step, state, ema)
                    logger.info(f"saved {saved}")
            if accelerator.is_main_process and (
                is_due(global_step, args.validation_steps) or (last and args.validation_steps)
            ):
                with ema_weights(ema, vae.parameters()):
                    vae.eval()
                    val_l1 = validate(vae, val_spectral, args, global_step, data_config)
                    vae.train()
                accelerator.log({"val_l1": val_l1}, step=global_step)
                logger.info(f"step {global_step}: validation L1 {val_l1:.4f} (normalised units)")
            if last:
                break

    # Save: EMA weights if any, the scaling factor from data, the data's config beside it.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(vae.parameters())
        save_final_model(vae, train_set, args, data_dir, data_config)
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1:])
