"""Checkpoint and data helpers shared by the training scripts (accelerate conventions).

``checkpoint-<step>`` folders hold ``accelerator.save_state`` plus ``training_state.json``
(the step and what was trained on what); ``--resume_from_checkpoint latest`` picks the
newest complete one. Saving goes through a temporary name, so a run killed mid-save never
leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from accelerate import Accelerator

from data.config import MotionConfig

TRAINING_STATE = "training_state.json"  # in each checkpoint: step, data config, model config


def setup_accelerator(args, output_dir: Path) -> Accelerator:
    """The ``Accelerator`` of a training script from its standard flags
    (``--gradient_accumulation_steps --mixed_precision --report_to --logging_dir --seed``);
    also sets up logging, seeds every RNG and creates ``output_dir`` (main process)."""
    import logging

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


def load_data_config(data_dir: Path) -> MotionConfig:
    """The folder's MotionConfig; a clear error when it is not a finished prepare_data output."""
    for name in ("manifest.json", "normalization.json"):
        if not (data_dir / name).is_file():
            raise SystemExit(
                f"error: {data_dir} has no {name}; it is not a finished prepare_data.py folder "
                f"(run: python prepare_data.py --videos VIDEOS --out {data_dir})"
            )
    return MotionConfig.from_dict(json.loads((data_dir / "manifest.json").read_text())["config"])


def list_checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-<step>`` folders, oldest first."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator: Accelerator, args, step: int, state: dict) -> Path:
    """Rotate old checkpoints, then save to a temporary name and rename: a kill mid-save
    never leaves a half-written ``checkpoint-<step>`` for ``latest`` to pick."""
    output_dir = Path(args.output_dir)
    if args.checkpoints_total_limit is not None:
        existing = list_checkpoints(output_dir)
        for old in existing[: max(0, len(existing) - args.checkpoints_total_limit + 1)]:
            shutil.rmtree(old)
    final = output_dir / f"checkpoint-{step}"
    partial = output_dir / f".partial-checkpoint-{step}"
    shutil.rmtree(partial, ignore_errors=True)
    accelerator.save_state(str(partial))
    (partial / TRAINING_STATE).write_text(json.dumps({**state, "global_step": step}, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    return final


def resolve_checkpoint(args) -> Path | None:
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint == "latest":
        found = list_checkpoints(Path(args.output_dir))
        return found[-1] if found else None  # nothing yet: start fresh, like diffusers
    path = Path(args.resume_from_checkpoint)
    if not path.is_dir():
        path = Path(args.output_dir) / args.resume_from_checkpoint
    if not (path / TRAINING_STATE).is_file():
        raise SystemExit(
            f"error: checkpoint {args.resume_from_checkpoint} not found (no {TRAINING_STATE} in "
            f"{path}); available: {[p.name for p in list_checkpoints(Path(args.output_dir))]}"
        )
    return path
