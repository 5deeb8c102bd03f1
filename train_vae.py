"""Train the spectral-volume VAE (models/spectral_vae.py) on a prepare_data.py folder.

    accelerate launch train_vae.py --train_data_dir prepared/ --output_dir outputs/vae \\
        --resolution 64 --train_batch_size 4 --max_train_steps 20000 --use_ema

Laid out like diffusers' example training scripts: accelerate for devices and mixed
precision, ``checkpoint-<step>`` folders written by ``accelerator.save_state`` (rotated
by ``--checkpoints_total_limit``, resumed by ``--resume_from_checkpoint latest``), EMA,
tensorboard, and at the end the scaling factor and ``save_pretrained`` to
``<output_dir>/vae`` with the dataset's normalization.json and motion config beside it.
Two CPU processes: ``accelerate launch --cpu --num_processes 2 train_vae.py ...``
(docs/VAE.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from accelerate.logging import get_logger
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from data.config import MotionConfig
from data.dataset import SpectralVolumeDataset
from models.spectral_vae import (
    compute_scaling_factor,
    create_spectral_vae,
    decode_spectral,
    encode_spectral,
    save_spectral_vae,
    set_scaling_factor,
    spectral_vae_loss,
    vae_downsample_factor,
)
from models.training_utils import (
    TRAINING_STATE,
    list_checkpoints,
    load_data_config,
    resolve_checkpoint,
    save_checkpoint,
    setup_accelerator,
)

logger = get_logger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--train_data_dir", required=True, help="a folder written by prepare_data.py")
    p.add_argument("--output_dir", default="outputs/spectral-vae")
    p.add_argument("--seed", type=int, default=0)
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
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    # optimisation
    p.add_argument("--train_batch_size", type=int, default=4, help="spectral volumes per device")
    p.add_argument("--num_train_epochs", type=int, default=100)
    p.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_train_epochs")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument(
        "--lr_scheduler", default="constant_with_warmup", help="diffusers get_scheduler name"
    )
    p.add_argument("--lr_warmup_steps", type=int, default=100)
    p.add_argument("--adam_weight_decay", type=float, default=0.0)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None)
    p.add_argument("--use_ema", action="store_true")
    p.add_argument("--ema_decay", type=float, default=0.999)
    # checkpoints, logging, validation
    p.add_argument("--checkpointing_steps", type=int, default=500)
    p.add_argument("--checkpoints_total_limit", type=int, default=None)
    p.add_argument("--resume_from_checkpoint", default=None, help='"latest" or a checkpoint folder')
    p.add_argument("--report_to", default="tensorboard", help='accelerate tracker, or "none"')
    p.add_argument("--logging_dir", default="logs", help="under --output_dir")
    p.add_argument("--validation_steps", type=int, default=500, help="0: never")
    p.add_argument("--num_validation_freqs", type=int, default=4)
    p.add_argument("--scaling_factor_samples", type=int, default=64, help="train volumes for 1/std")
    args = p.parse_args(argv)
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


# ------------------------------------------------------------------------ checkpoints


def check_resume_compatible(checkpoint: Path, data_config: MotionConfig, vae_config: dict) -> int:
    """The checkpoint's step, after checking it was trained on the same kind of data and model."""
    state = json.loads((checkpoint / TRAINING_STATE).read_text())
    if state["data_config"] != data_config.to_dict():
        raise SystemExit(
            f"error: {checkpoint} was trained on data with config {state['data_config']}, but "
            f"--train_data_dir has {data_config.to_dict()}; use a new --output_dir"
        )
    for key in ("block_out_channels", "latent_channels", "layers_per_block"):
        if json.loads(json.dumps(vae_config[key])) != state["vae_config"][key]:
            raise SystemExit(
                f"error: {checkpoint} has {key}={state['vae_config'][key]}, but the flags give "
                f"{vae_config[key]}; resume with the same model flags"
            )
    return int(state["global_step"])


# ------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(vae, val_spectral: torch.Tensor, args, step: int, data_config) -> float:
    """L1 of a full-frame reconstruction of one held-out volume; a PNG of input vs output."""
    from data.visualize import plot_spectral_volume

    factor = vae_downsample_factor(vae)
    height, width = (s - s % factor for s in val_spectral.shape[-2:])
    target = val_spectral[None, :, :, :height, :width]  # (1, K, 4, H, W)
    reconstruction = decode_spectral(
        vae, encode_spectral(vae, target, chunk_size=16), chunk_size=16
    )
    reconstruction = reconstruction.float().cpu()
    l1 = float((reconstruction - target).abs().mean())
    # Input above its reconstruction in each cell, shared colour scale per frequency.
    shown = min(args.num_validation_freqs, target.shape[1])
    stacked = torch.cat([target[0, :shown], reconstruction[0, :shown]], dim=-2)
    path = Path(args.output_dir) / "validation" / f"step-{step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_spectral_volume(stacked, path, data_config.frequencies_hz(), num_shown=shown)
    return l1


# ------------------------------------------------------------------------------- main


class _VAEForTraining(torch.nn.Module):
    """One forward through encoder and decoder returning the posterior too (for the KL),
    so that DistributedDataParallel sees the whole computation in one ``forward``."""

    def __init__(self, vae) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, slices: torch.Tensor):
        posterior = self.vae.encode(slices).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data_dir = Path(args.train_data_dir)
    data_config = load_data_config(data_dir)
    output_dir = Path(args.output_dir)
    accelerator = setup_accelerator(args, output_dir)

    # Model, EMA, optimiser.
    vae = create_spectral_vae(
        downsample_factor=args.downsample_factor,
        block_out_channels=[
            min(args.base_channels * 2**i, args.base_channels * 4)
            for i in range(int(math.log2(args.downsample_factor)) + 1)
        ],
        latent_channels=args.latent_channels,
        layers_per_block=args.layers_per_block,
        norm_num_groups=args.norm_num_groups or min(32, args.base_channels),
        mid_block_add_attention=not args.no_mid_attention,
        sample_size=args.resolution or max(data_config.width, data_config.height),
    )
    checkpoint = resolve_checkpoint(args)
    first_step = check_resume_compatible(checkpoint, data_config, vae.config) if checkpoint else 0
    ema = EMAModel(vae.parameters(), decay=args.ema_decay) if args.use_ema else None
    optimizer = torch.optim.AdamW(
        vae.parameters(), lr=args.learning_rate, weight_decay=args.adam_weight_decay
    )

    # Data: every process reads the whole (small, cached) split; the prepared loader shards it.
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
        drop_last=len(train_set) >= args.train_batch_size * accelerator.num_processes,
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    steps_per_epoch = math.ceil(
        len(loader) / accelerator.num_processes / args.gradient_accumulation_steps
    )
    max_train_steps = args.max_train_steps or args.num_train_epochs * max(1, steps_per_epoch)
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    # `model` (maybe DDP-wrapped) shares its parameters with `vae`, used unwrapped below.
    model, optimizer, loader, lr_scheduler = accelerator.prepare(
        _VAEForTraining(vae), optimizer, loader, lr_scheduler
    )
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    if checkpoint is not None:
        accelerator.print(f"resuming from {checkpoint} (step {first_step})")
        accelerator.load_state(str(checkpoint))
    if accelerator.is_main_process and accelerator.log_with:
        accelerator.init_trackers(
            "train_vae", config={k: v for k, v in vars(args).items() if v is not None}
        )

    state = {"data_config": data_config.to_dict(), "vae_config": dict(vae.config)}
    logger.info(
        f"{len(train_set)} training volumes, {accelerator.num_processes} process(es), "
        f"batch {args.train_batch_size} x {args.gradient_accumulation_steps} accumulation, "
        f"{max_train_steps} steps, from step {first_step}"
    )

    # Training loop. Crops come from a generator seeded by (seed, step, process), so a
    # resumed run draws the crops the uninterrupted run would have drawn; a resumed run
    # starts a new pass over the data (the order of the interrupted epoch is not replayed).
    global_step = first_step
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
                # Every process sees the same averaged loss, so all stop together on NaN.
                mean_loss = accelerator.gather(losses["loss"].detach()[None]).mean().item()
                if not math.isfinite(mean_loss):
                    break
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

            if global_step % args.checkpointing_steps == 0:
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    saved = save_checkpoint(accelerator, args, global_step, state)
                    logger.info(f"saved {saved}")
            if (
                args.validation_steps
                and global_step % args.validation_steps == 0
                and accelerator.is_main_process
            ):
                if ema is not None:
                    ema.store(vae.parameters())
                    ema.copy_to(vae.parameters())
                vae.eval()
                val_l1 = validate(vae, val_spectral, args, global_step, data_config)
                vae.train()
                if ema is not None:
                    ema.restore(vae.parameters())
                accelerator.log({"val_l1": val_l1}, step=global_step)
                logger.info(f"step {global_step}: validation L1 {val_l1:.4f} (normalised units)")
            if global_step >= max_train_steps:
                break
        if not math.isfinite(mean_loss):  # the loop above broke on a NaN/inf loss
            last = list_checkpoints(output_dir)
            accelerator.end_training()
            raise SystemExit(
                f"error: loss is {mean_loss} at step {global_step + 1}; stopping. Last good "
                f"checkpoint: {last[-1] if last else 'none'}. Lower --learning_rate or check the data."
            )

    # Final model: EMA weights if any, the scaling factor from data, the data's config beside it.
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(vae.parameters())
        vae.eval()
        factor = vae_downsample_factor(vae)
        subset = torch.utils.data.Subset(
            train_set, range(min(len(train_set), args.scaling_factor_samples))
        )
        volumes = (  # whole frames, cropped to a multiple of the factor
            item["spectral"][
                None,
                ...,
                : data_config.height // factor * factor,
                : data_config.width // factor * factor,
            ]
            for item in subset
        )
        scaling_factor = compute_scaling_factor(vae, volumes)
        set_scaling_factor(vae, scaling_factor)
        saved = save_spectral_vae(
            vae, output_dir / "vae", data_config, data_dir / "normalization.json"
        )
        logger.info(f"scaling factor {scaling_factor:.4f}; saved {saved}")
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1:])
