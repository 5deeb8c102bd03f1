"""models/training_utils.py: kill-safe checkpoints, EMA without pickle, resume checks,
"never" intervals, and a tree with no pickle loads."""

from __future__ import annotations

import json
import os
import re
import shutil
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

import models.training_utils as tu

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after the raise runs (BaseException skips handlers)."""


def tiny_run(tmp_path: Path, limit: int | None = 1):
    accelerator = Accelerator()
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema = EMAModel(model.parameters(), decay=0.9)
    args = Namespace(output_dir=str(tmp_path), checkpoints_total_limit=limit,
                     resume_from_checkpoint="latest")  # fmt: skip
    return accelerator, model, ema, args


def step(model, ema) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.step(model.parameters())


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("where", ["save_state", "ema", "rename", "rotation"])
def test_a_kill_at_any_moment_of_a_save_keeps_a_complete_checkpoint(tmp_path, monkeypatch, where):
    """With --checkpoints_total_limit 1, a kill during the save of checkpoint-2 must leave
    checkpoint-1 (or the complete checkpoint-2) for ``latest``: never nothing."""
    accelerator, model, ema, args = tiny_run(tmp_path)
    step(model, ema)
    tu.save_checkpoint(accelerator, args, 1, {"x": 1}, ema)
    step(model, ema)

    def die(*_args, **_kwargs):
        raise Killed

    if where == "save_state":
        real = accelerator.save_state

        def half_save(output_dir, **kwargs):
            real(output_dir, **kwargs)  # files written ...
            raise Killed  # ... but killed before the checkpoint is complete

        monkeypatch.setattr(accelerator, "save_state", half_save)
    elif where == "ema":
        monkeypatch.setattr(tu, "save_ema", die)
    elif where == "rename":
        monkeypatch.setattr(tu.os, "replace", die)
    else:  # killed while deleting the rotated-out checkpoint-1
        monkeypatch.setattr(tu.shutil, "rmtree", die)
    with pytest.raises(Killed):
        tu.save_checkpoint(accelerator, args, 2, {"x": 1}, ema)
    monkeypatch.undo()

    latest = tu.resolve_checkpoint(args)
    assert latest is not None, names(tmp_path)
    expected = "checkpoint-2" if where == "rotation" else "checkpoint-1"
    assert latest.name == expected
    # What latest names is complete: it loads.
    assert tu.load_checkpoint(accelerator, latest, {"x": 1}, ema) == int(expected.split("-")[1])

    # The next save cleans up what the kill left behind and rotates normally.
    tu.save_checkpoint(accelerator, args, 3, {"x": 1}, ema)
    assert names(tmp_path) == ["checkpoint-3"]


def test_latest_with_only_an_interrupted_save_is_an_error_not_step_0(tmp_path, monkeypatch):
    accelerator, model, ema, args = tiny_run(tmp_path)
    monkeypatch.setattr(tu.os, "replace", lambda *a: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        tu.save_checkpoint(accelerator, args, 5, {}, ema)
    monkeypatch.undo()
    assert names(tmp_path) == [".partial-checkpoint-5"]
    with pytest.raises(SystemExit, match=r"only \.partial-checkpoint-5.*interrupted"):
        tu.resolve_checkpoint(args)
    # A folder with nothing at all is a fresh start, as in diffusers.
    shutil.rmtree(tmp_path / ".partial-checkpoint-5")
    assert tu.resolve_checkpoint(args) is None


def test_ema_state_round_trips_through_safetensors(tmp_path):
    accelerator, model, ema, args = tiny_run(tmp_path, limit=None)
    for _ in range(3):
        step(model, ema)
    saved = tu.save_checkpoint(accelerator, args, 3, {}, ema)
    assert (saved / tu.EMA_WEIGHTS).is_file() and not list(saved.glob("*.pkl*custom*"))
    assert not list(saved.glob("custom_checkpoint_*"))
    fresh = EMAModel(model.parameters(), decay=0.5)
    tu.load_ema(fresh, saved)
    assert fresh.optimization_step == ema.optimization_step == 3 and fresh.decay == 0.9
    for a, b in zip(fresh.shadow_params, ema.shadow_params, strict=True):
        assert torch.equal(a, b)
    # Shapes from another model are refused with a message, not loaded.
    other = EMAModel(torch.nn.Linear(4, 2).parameters())
    with pytest.raises(SystemExit, match="do not match"):
        tu.load_ema(other, saved)


def test_a_crafted_pickle_in_a_checkpoint_never_runs(tmp_path):
    """accelerate's custom_checkpoint_0.pkl is loaded with weights_only=False; we refuse it."""
    accelerator, model, ema, args = tiny_run(tmp_path, limit=None)
    saved = tu.save_checkpoint(accelerator, args, 1, {}, ema)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"x": Payload()}, saved / "custom_checkpoint_0.pkl")
    with pytest.raises(SystemExit, match="custom_checkpoint_0.pkl.*refused"):
        tu.load_checkpoint(accelerator, saved, {}, ema)
    assert not marker.exists()


def test_resume_checks_name_the_difference(tmp_path):
    accelerator, model, ema, args = tiny_run(tmp_path, limit=None)
    saved = tu.save_checkpoint(accelerator, args, 4, {"model_config": {"width": 8}}, ema)
    with pytest.raises(SystemExit, match="width=8, but this run has width=16"):
        tu.check_resume_compatible(saved, {"model_config": {"width": 16}}, use_ema=True)
    with pytest.raises(SystemExit, match="saved with --use_ema; resume with --use_ema"):
        tu.check_resume_compatible(saved, {"model_config": {"width": 8}}, use_ema=False)
    assert tu.check_resume_compatible(saved, {"model_config": {"width": 8}}, use_ema=True) == 4


def test_zero_interval_means_never():
    assert not any(tu.is_due(step, 0) for step in range(1, 100))
    assert [s for s in range(1, 10) if tu.is_due(s, 3)] == [3, 6, 9]


SELF = {"training_utils.py", "test_training_utils.py"}  # they name what they forbid


def test_no_pickle_load_anywhere_in_the_tree():
    """torch.load only with weights_only=True; no allow_pickle=True, no pickle.load(s)."""
    problems = []
    for path in ROOT.rglob("*.py"):
        if any(part.startswith(".") or part in {"node_modules", "build"} for part in
               path.relative_to(ROOT).parts):  # fmt: skip
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"\btorch\.load\(", text):
            # The call's arguments: up to the matching closing parenthesis.
            depth, end = 0, match.end() - 1
            for end in range(match.end() - 1, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            if "weights_only=True" not in text[match.end() : end]:
                problems.append(f"{path.relative_to(ROOT)}: {text[match.start() : end + 1]}")
        for pattern in (r"allow_pickle\s*=\s*True", r"\bpickle\.loads?\(", r"\bcPickle\b"):
            if path.name not in SELF and re.search(pattern, text):
                problems.append(f"{path.relative_to(ROOT)}: {pattern}")
        if path.name not in SELF and "register_for_checkpointing(" in text:
            problems.append(f"{path.relative_to(ROOT)}: register_for_checkpointing pickles state")
    assert not problems, "\n".join(problems)


def test_stop_if_not_finite_names_the_last_checkpoint(tmp_path):
    accelerator, model, ema, args = tiny_run(tmp_path, limit=None)
    tu.save_checkpoint(accelerator, args, 2, {}, None)
    tu.stop_if_not_finite(accelerator, 0.5, 3, tmp_path)  # finite: nothing happens
    with pytest.raises(SystemExit, match="loss is nan at step 3.*checkpoint-2"):
        tu.stop_if_not_finite(accelerator, float("nan"), 3, tmp_path)
    state = json.loads((tmp_path / "checkpoint-2" / tu.TRAINING_STATE).read_text())
    assert state["use_ema"] is False and state["global_step"] == 2
    assert os.listdir(tmp_path) == ["checkpoint-2"]
