"""What the three training scripts share (accelerate / diffusers-examples conventions).

Every script (``train_vae.py``, ``train_unet.py``, ``train_frame_synthesis.py``) has the
same skeleton: ``parse_args`` (the common flags come from ``add_training_args``), set-up
(``setup_accelerator``), data, model, resume (``resolve_checkpoint`` + ``load_checkpoint``),
the loop (``mean_across_processes`` + ``stop_if_not_finite``, ``is_due``), validation
(under ``ema_weights``), save (``save_checkpoint``, then the final ``save_pretrained``).

Checkpoints. ``checkpoint-<step>`` holds ``accelerator.save_state`` (model as safetensors;
optimiser, scheduler and RNG states that accelerate loads with ``weights_only=True``),
``training_state.json`` (step, data and model config, whether EMA was on) and, with EMA,
``ema.safetensors`` + ``ema_state.json``. EMA is *not* registered with
``accelerator.register_for_checkpointing``: accelerate pickles such objects and loads
them back with ``weights_only=False``, so a crafted file in a checkpoint folder would run
code on resume. A checkpoint that still carries such a pickle is refused, never loaded.

Saving is kill-safe at every instant: the new checkpoint is written under
``.partial-checkpoint-<step>``, renamed to ``checkpoint-<step>`` once complete, and only
then are checkpoints beyond ``--checkpoints_total_limit`` removed (renamed to a hidden
``.deleting-`` name first, so a half-deleted folder is never listed). ``latest`` picks the
newest complete checkpoint; when only interrupted saves exist it stops with an error
rather than silently starting again at step 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from accelerate import Accelerator

from data.config import MotionConfig

TRAINING_STATE = "training_state.json"  # in each checkpoint: step, data config, model config
EMA_WEIGHTS = "ema.safetensors"  # EMA shadow parameters, in parameter order
EMA_STATE = "ema_state.json"  # EMA scalars (decay, optimization_step, ...)
PARTIAL_PREFIX = ".partial-checkpoint-"  # a save in progress (or killed mid-way)
DELETING_PREFIX = ".deleting-checkpoint-"  # a rotated-out checkpoint being removed

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- flags


def add_training_args(
    parser: argparse.ArgumentParser,
    *,
    output_dir: str,
    train_batch_size: int,
    learning_rate: float,
    lr_scheduler: str,
    lr_warmup_steps: int,
    adam_weight_decay: float,
    ema_decay: float,
    checkpointing_steps: int = 500,
    validation_steps: int = 500,
) -> None:
    """The flags every training script has, with one spelling and one meaning.

    Script-specific defaults are keyword arguments; ``0`` for ``--checkpointing_steps``
    and ``--validation_steps`` means "never" (see ``is_due``).
    """
    p = parser
    p.add_argument("--output_dir", default=output_dir)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train_batch_size", type=int, default=train_batch_size, help="per device")
    p.add_argument("--max_train_steps", type=int, default=None,
                   help="optimiser steps (overrides --num_train_epochs where there is one)")  # fmt: skip
    p.add_argument("--gradient_accumulation_steps", type=int, default=1)
    p.add_argument("--learning_rate", type=float, default=learning_rate)
    p.add_argument("--lr_scheduler", default=lr_scheduler, help="diffusers get_scheduler name")
    p.add_argument("--lr_warmup_steps", type=int, default=lr_warmup_steps)
    p.add_argument("--adam_beta1", type=float, default=0.9)
    p.add_argument("--adam_beta2", type=float, default=0.999)
    p.add_argument("--adam_weight_decay", type=float, default=adam_weight_decay)
    p.add_argument("--adam_epsilon", type=float, default=1e-8)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default="no")
    p.add_argument("--use_ema", action="store_true", help="keep and save EMA weights")
    p.add_argument("--ema_decay", type=float, default=ema_decay)
    p.add_argument("--dataloader_num_workers", type=int, default=0)
    p.add_argument("--checkpointing_steps", type=int, default=checkpointing_steps,
                   help="save a checkpoint every N steps; 0: never")  # fmt: skip
    p.add_argument("--checkpoints_total_limit", type=int, default=None,
                   help="keep only the N newest checkpoints")  # fmt: skip
    p.add_argument("--resume_from_checkpoint", default=None,
                   help='"latest", a checkpoint-<step> name in --output_dir, or a folder')  # fmt: skip
    p.add_argument("--report_to", default="tensorboard", help='accelerate tracker, or "none"')
    p.add_argument("--logging_dir", default="logs", help="under --output_dir")
    p.add_argument("--validation_steps", type=int, default=validation_steps,
                   help="validate every N steps (and at the end); 0: never")  # fmt: skip


def check_training_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` (exit status 2) for common flags out of range."""
    for name in ("checkpointing_steps", "validation_steps", "lr_warmup_steps"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0 (0: never), got {getattr(args, name)}")
    for name in ("train_batch_size", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        parser.error(f"--max_train_steps must be >= 1, got {args.max_train_steps}")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        parser.error(f"--checkpoints_total_limit must be >= 1, got {args.checkpoints_total_limit}")
    if not 0 <= args.ema_decay <= 1:
        parser.error(f"--ema_decay must be in [0, 1], got {args.ema_decay}")


def is_due(step: int, interval: int) -> bool:
    """Whether an every-``interval``-steps event happens at ``step``; ``interval`` 0: never."""
    return interval > 0 and step % interval == 0


# ----------------------------------------------------------------------------- set-up


def setup_accelerator(args, output_dir: Path) -> Accelerator:
    """The ``Accelerator`` of a training script from its standard flags
    (``--gradient_accumulation_steps --mixed_precision --report_to --logging_dir --seed``);
    also sets up logging, seeds every RNG and creates ``output_dir`` (main process)."""
    from accelerate.utils import ProjectConfiguration, set_seed

    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / args.logging_dir)
        ),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    set_seed(args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    return accelerator


def init_trackers(accelerator: Accelerator, project: str, args) -> None:
    """Start the ``--report_to`` tracker (main process) with the run's flags as its config."""
    if accelerator.is_main_process and accelerator.log_with:
        config = {k: v if isinstance(v, (int, float, bool)) else str(v)
                  for k, v in vars(args).items() if v is not None}  # fmt: skip
        accelerator.init_trackers(project, config=config)


def load_data_config(data_dir: Path) -> MotionConfig:
    """The folder's MotionConfig; a clear error when it is not a finished prepare_data output."""
    for name in ("manifest.json", "normalization.json"):
        if not (data_dir / name).is_file():
            raise SystemExit(
                f"error: {data_dir} has no {name}; it is not a finished prepare_data.py folder "
                f"(run: python prepare_data.py --videos VIDEOS --output_dir {data_dir})"
            )
    return MotionConfig.from_dict(json.loads((data_dir / "manifest.json").read_text())["config"])


# ------------------------------------------------------------------------ the loop


def mean_across_processes(accelerator: Accelerator, loss: torch.Tensor) -> float:
    """The loss averaged over all processes (a collective: every process must call it).

    Every process then sees the same value, so on a NaN they all stop together instead of
    one stopping and the others waiting forever in the next gradient all-reduce.
    """
    return accelerator.gather(loss.detach().float().reshape(1)).mean().item()


def stop_if_not_finite(accelerator: Accelerator, loss: float, step: int, output_dir: Path) -> None:
    """Raise ``SystemExit`` naming the last good checkpoint when ``loss`` is NaN or inf.

    Nothing is saved: the run's state after the last checkpoint is already suspect.
    """
    if math.isfinite(loss):
        return
    last = list_checkpoints(output_dir)
    accelerator.end_training()
    raise SystemExit(
        f"error: loss is {loss} at step {step}; stopping without saving. Last good checkpoint: "
        f"{last[-1] if last else 'none'}. Lower --learning_rate or check the data, then resume "
        "with --resume_from_checkpoint latest."
    )


@contextlib.contextmanager
def ema_weights(ema, parameters: Iterable[torch.nn.Parameter]) -> Iterator[None]:
    """Inside the block the model holds its EMA weights (validation); restored after.

    ``ema`` None: a no-op, so callers need no branch.
    """
    if ema is None:
        yield
        return
    parameters = list(parameters)
    ema.store(parameters)
    ema.copy_to(parameters)
    try:
        yield
    finally:
        ema.restore(parameters)


# ------------------------------------------------------------------------ EMA state


def save_ema(ema, folder: Path) -> None:
    """EMA shadow parameters to ``ema.safetensors`` and its scalars to ``ema_state.json``."""
    from safetensors.torch import save_file

    state = ema.state_dict()
    tensors = {f"shadow_params.{i}": p.detach().contiguous().cpu()
               for i, p in enumerate(state.pop("shadow_params"))}  # fmt: skip
    save_file(tensors, str(folder / EMA_WEIGHTS))
    (folder / EMA_STATE).write_text(json.dumps(state, indent=2))


def load_ema(ema, folder: Path, device: torch.device | str | None = None) -> None:
    """Restore what ``save_ema`` wrote into ``ema`` (same number and shapes of parameters)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(folder / EMA_WEIGHTS))
        scalars = json.loads((folder / EMA_STATE).read_text())
    except (OSError, SafetensorError, json.JSONDecodeError) as error:
        raise SystemExit(f"error: {folder}: unreadable EMA state ({error})") from None
    shadow = [tensors.get(f"shadow_params.{i}") for i in range(len(ema.shadow_params))]
    if len(tensors) != len(ema.shadow_params) or any(
        t is None or t.shape != p.shape for t, p in zip(shadow, ema.shadow_params, strict=True)
    ):
        raise SystemExit(
            f"error: {folder / EMA_WEIGHTS} holds {len(tensors)} EMA tensors that do not match "
            f"this model's {len(ema.shadow_params)} parameters; resume with the same model flags"
        )
    ema.load_state_dict({**scalars, "shadow_params": shadow})
    if device is not None:
        ema.to(device)


# ------------------------------------------------------------------------ checkpoints


def _step_of(path: Path, prefix: str) -> int | None:
    tail = path.name[len(prefix) :]
    return int(tail) if path.name.startswith(prefix) and tail.isdigit() else None


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete ``checkpoint-<step>`` folders (with ``training_state.json``), oldest first."""
    found = [
        p
        for p in Path(output_dir).glob("checkpoint-*")
        if _step_of(p, "checkpoint-") is not None and (p / TRAINING_STATE).is_file()
    ]
    return sorted(found, key=lambda p: _step_of(p, "checkpoint-"))


def list_partial_checkpoints(output_dir: Path) -> list[Path]:
    """``.partial-checkpoint-<step>`` folders: saves that were interrupted (or in progress)."""
    found = [p for p in Path(output_dir).glob(PARTIAL_PREFIX + "*") if _step_of(p, PARTIAL_PREFIX)]
    return sorted(found, key=lambda p: _step_of(p, PARTIAL_PREFIX))


def _remove(path: Path) -> None:
    """Rename ``checkpoint-N`` to a hidden name, then delete it: a kill in between leaves a
    folder nothing lists (cleaned up by the next save), never a half-deleted checkpoint."""
    hidden = path.with_name(DELETING_PREFIX + path.name.split("-", 1)[1])
    shutil.rmtree(hidden, ignore_errors=True)
    os.replace(path, hidden)
    shutil.rmtree(hidden)


def save_checkpoint(accelerator: Accelerator, args, step: int, state: dict, ema=None) -> Path:
    """Write ``checkpoint-<step>`` (main process only), kill-safe at every instant.

    Order: write everything to ``.partial-checkpoint-<step>``; rename it into place; then
    rotate out the oldest checkpoints beyond ``args.checkpoints_total_limit``. Until the
    rename, the previous checkpoints are untouched, so a kill at any moment leaves at least
    the last complete checkpoint.

    Args:
        state: JSON-able facts about the run (data config, model config, ...) that resume
            compares with the new run; ``global_step`` and ``use_ema`` are added.
        ema: a diffusers ``EMAModel`` or None; saved as safetensors, never pickled.
    """
    output_dir = Path(args.output_dir)
    for stale in [*output_dir.glob(PARTIAL_PREFIX + "*"), *output_dir.glob(DELETING_PREFIX + "*")]:
        shutil.rmtree(stale, ignore_errors=True)  # leftovers of killed saves / rotations
    final = output_dir / f"checkpoint-{step}"
    partial = output_dir / f"{PARTIAL_PREFIX}{step}"
    accelerator.save_state(str(partial), safe_serialization=True)
    if ema is not None:
        save_ema(ema, partial)
    record = {**state, "global_step": step, "use_ema": ema is not None}
    (partial / TRAINING_STATE).write_text(json.dumps(record, indent=2))
    if final.exists():  # the same step saved again (e.g. a run resumed at it)
        _remove(final)
    os.replace(partial, final)
    if args.checkpoints_total_limit is not None:
        existing = list_checkpoints(output_dir)
        for old in existing[: max(0, len(existing) - args.checkpoints_total_limit)]:
            if old != final:
                _remove(old)
    return final


def resolve_checkpoint(args) -> Path | None:
    """The checkpoint ``--resume_from_checkpoint`` names, or None for a fresh run.

    ``latest`` with no checkpoint at all starts fresh (as in diffusers); ``latest`` when the
    only checkpoints are interrupted saves is an error, never a silent restart at step 0.
    """
    if args.resume_from_checkpoint is None:
        return None
    output_dir = Path(args.output_dir)
    if args.resume_from_checkpoint == "latest":
        found = list_checkpoints(output_dir)
        if found:
            return found[-1]
        partial = list_partial_checkpoints(output_dir)
        if partial:
            raise SystemExit(
                f"error: --resume_from_checkpoint latest: {output_dir} holds only "
                f"{', '.join(p.name for p in partial)}, a save that was interrupted before it "
                "completed; there is no complete checkpoint to resume. Delete it to start "
                "again from step 0, or resume from a copy of an older checkpoint."
            )
        return None
    path = Path(args.resume_from_checkpoint)
    if not path.is_dir():
        path = output_dir / args.resume_from_checkpoint
    if not (path / TRAINING_STATE).is_file():
        raise SystemExit(
            f"error: checkpoint {args.resume_from_checkpoint} not found (no {TRAINING_STATE} in "
            f"{path}); available: {[p.name for p in list_checkpoints(output_dir)]}"
        )
    return path


def check_resume_compatible(checkpoint: Path, state: dict, use_ema: bool) -> int:
    """The checkpoint's step, after checking it was made by a run like this one.

    Every key of ``state`` (data config, model config, stage, ...) must equal the
    checkpoint's, and ``--use_ema`` must agree; otherwise a one-line ``SystemExit`` names
    the difference (instead of a size-mismatch traceback from deep inside ``load_state``).
    """
    saved = json.loads((checkpoint / TRAINING_STATE).read_text())
    for key, value in state.items():
        value = json.loads(json.dumps(value))  # tuples -> lists, as saved
        if key not in saved:
            continue  # a fact older checkpoints did not record
        if isinstance(value, dict) and isinstance(saved[key], dict):
            for inner in value:
                if saved[key].get(inner) != value.get(inner):
                    raise SystemExit(
                        f"error: {checkpoint} has {key} {inner}={saved[key].get(inner)}, but "
                        f"this run has {inner}={value.get(inner)}; resume with the same flags "
                        "and data, or use a new --output_dir"
                    )
        elif saved[key] != value:
            raise SystemExit(
                f"error: {checkpoint} has {key}={saved[key]}, but this run has {key}={value}; "
                "resume with the same flags and data, or use a new --output_dir"
            )
    saved_ema = saved.get("use_ema", (checkpoint / "custom_checkpoint_0.pkl").exists())
    if saved_ema != use_ema:
        raise SystemExit(
            f"error: {checkpoint} was saved {'with' if saved_ema else 'without'} --use_ema; "
            f"resume {'with' if saved_ema else 'without'} --use_ema too"
        )
    return int(saved["global_step"])


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, state: dict, ema=None) -> int:
    """Check ``checkpoint`` against this run, restore it (no pickle is loaded) and return
    its step.

    Raises:
        SystemExit: another data/model config or ``--use_ema`` setting, or a checkpoint
            that carries pickled custom state (accelerate's ``custom_checkpoint_*.pkl``).
    """
    pickles = sorted(p.name for p in checkpoint.glob("custom_checkpoint_*.pkl"))
    if pickles:
        raise SystemExit(
            f"error: {checkpoint} contains {', '.join(pickles)}: pickled state that would run "
            "arbitrary code if loaded, so it is refused (older versions stored EMA that way). "
            "Resume from a checkpoint written by this version, or start a new run."
        )
    step = check_resume_compatible(checkpoint, state, use_ema=ema is not None)
    try:
        accelerator.load_state(str(checkpoint))
    except RuntimeError as error:  # size mismatch of a state dict not caught above
        raise SystemExit(f"error: {checkpoint} does not fit this model: {error}") from None
    if ema is not None:
        load_ema(ema, checkpoint, accelerator.device)
    return step


def create_optimizer_and_scheduler(
    args, parameters: Iterable[torch.nn.Parameter], max_train_steps: int, num_processes: int
):
    """AdamW from the ``--learning_rate --adam_*`` flags and the ``--lr_scheduler`` schedule.

    The schedule's step counts are multiplied by ``num_processes`` because accelerate's
    prepared scheduler steps once per process per optimiser step (diffusers' examples).
    """
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.AdamW(
        parameters, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon,
    )  # fmt: skip
    lr_scheduler = get_scheduler(
        args.lr_scheduler, optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * num_processes,
        num_training_steps=max_train_steps * num_processes,
    )  # fmt: skip
    return optimizer, lr_scheduler
