"""Average the U-Nets of several train_unet.py outputs into one folder (a "weight soup").

    python scripts/average_unets.py --inputs RUN_A RUN_B [RUN_C ...] --output_dir SOUP \
        [--base INIT --base_weight 0.75]

Fine-tuning runs that start from one U-Net and differ only in their seed (or a mild
change of recipe) end in nearby minima; the uniform average of their weights is often
better than each of them, at no training cost. The runs must share the U-Net config,
the codec and the normalisation statistics (the same data and init); anything else is
refused.

``--base`` names the U-Net the runs were fine-tuned from and moves the average back
towards it: ``base_weight * base + (1 - base_weight) * mean(runs)`` (weight-space
ensembling, "WiSE-FT"). Fine-tuning teaches what the new data has (here: obeying a mask)
and can forget what the init knew (here: where a photo moves by itself); part of the way
back can keep some of both. The base is loaded the way the fine-tunes loaded it (mask
channels and frequency attention added with zero weights when it lacks them), so its
normalisation statistics may differ from the runs' (train_unet.py measures them on each
run's data); the output keeps the runs'.

The output is a copy of the first run's folder (codec, scheduler, model_index) with the
averaged U-Net; its ``motion_gain`` is reset to 1.0, because the gain belongs to the
weights: calibrate it again (``scripts/calibrate_motion_gain.py --write``). The
checkpoints, validation images and logs of the runs are not copied.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.motion_unet import MotionUNet  # noqa: E402

UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"
# What the runs must agree on for their U-Nets to be averaged (model_index keys).
SHARED_KEYS = ("codec", "motion_config", "normalization", "unet")
# What of the first run is copied (its checkpoints and validation images are not).
COPIED = ("codec", "scheduler", "unet", "renderer", "model_index.json")


def check_runs(runs: list[Path], with_base: bool = False) -> dict:
    """The first run's model_index, after checking that every run can be averaged."""
    if len(runs) < (1 if with_base else 2):
        raise SystemExit("error: --inputs needs at least two runs (or one with --base)")

    def config_of(path: Path) -> dict:  # where it was loaded from does not count
        config = json.loads(path.read_text())
        config.pop("_name_or_path", None)
        return config

    indexes, configs = [], []
    for run in runs:
        for needed in ("model_index.json", UNET_WEIGHTS, Path("unet") / "config.json"):
            if not (run / needed).is_file():
                raise SystemExit(f"error: {run}: no {needed} (a finished train_unet.py output?)")
        indexes.append(json.loads((run / "model_index.json").read_text()))
        configs.append(config_of(run / "unet" / "config.json"))
    for run, index, config in zip(runs[1:], indexes[1:], configs[1:], strict=True):
        if config != configs[0]:
            raise SystemExit(f"error: {run}: its U-Net config differs from {runs[0]}'s")
        for key in SHARED_KEYS:
            if index.get(key) != indexes[0].get(key):
                raise SystemExit(f"error: {run}: its {key!r} differs from {runs[0]}'s")
        if config_of(run / "codec" / "config.json") != config_of(runs[0] / "codec" / "config.json"):
            raise SystemExit(f"error: {run}: its codec differs from {runs[0]}'s")
    return indexes[0]


def average_state_dicts(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The uniform average of safetensors state dicts with the same keys and shapes
    (accumulated in float64, stored in each tensor's own dtype)."""
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for path in paths:
        state = load_file(str(path))
        if total and state.keys() != total.keys():
            raise SystemExit(f"error: {path}: its tensors differ from {paths[0]}'s")
        for name, tensor in state.items():
            if name in total and tensor.shape != total[name].shape:
                raise SystemExit(f"error: {path}: {name} has shape {tuple(tensor.shape)}")
            dtypes.setdefault(name, tensor.dtype)
            total[name] = total.get(name, 0) + tensor.double()
    return {
        name: (value / len(paths)).to(dtypes[name]).contiguous() for name, value in total.items()
    }


def base_state_dict(base: Path, runs_config: Path) -> dict[str, torch.Tensor]:
    """The weights of ``base`` (a train_unet.py output or pipeline folder) as a U-Net of
    the runs' config: loaded as the fine-tunes loaded their init."""
    folder = base / "unet" if (base / "unet" / "config.json").is_file() else base
    if not (folder / "config.json").is_file():
        raise SystemExit(f"error: --base {base}: no unet/config.json (a U-Net folder?)")
    config = json.loads(runs_config.read_text())
    try:
        unet = MotionUNet.from_pretrained(
            folder,
            frequency_attention=config.get("frequency_attention"),
            mask_conditioning=config.get("mask_conditioning", False),
        )
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: --base {base}: {error}") from None
    # private keys (_name_or_path, _diffusers_version, ...) say where, not what
    base_config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    wanted = {k: v for k, v in config.items() if not k.startswith("_")}
    differing = sorted(k for k in wanted if base_config.get(k) != wanted[k])
    if differing:
        raise SystemExit(f"error: --base {base}: its U-Net differs from the runs' in {differing}")
    return {name: tensor.detach() for name, tensor in unet.state_dict().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", nargs="+", required=True, type=Path,
                        help="finished train_unet.py output folders")  # fmt: skip
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--base", type=Path, default=None,
                        help="the U-Net the runs were fine-tuned from (folder); the output "
                        "moves towards it by --base_weight")  # fmt: skip
    parser.add_argument("--base_weight", type=float, default=None,
                        help="with --base: its share in the output, in [0, 1]")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    if (args.base is None) != (args.base_weight is None):
        raise SystemExit("error: --base and --base_weight go together")
    if args.base_weight is not None and not 0.0 <= args.base_weight <= 1.0:
        raise SystemExit(f"error: --base_weight must be in [0, 1], got {args.base_weight}")
    index = check_runs(args.inputs, with_base=args.base is not None)
    out = args.output_dir
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(f"error: {out} is not empty; pass --overwrite to replace it")
    averaged = average_state_dicts([run / UNET_WEIGHTS for run in args.inputs])
    if args.base is not None:
        base = base_state_dict(args.base, args.inputs[0] / "unet" / "config.json")
        if base.keys() != averaged.keys():
            raise SystemExit(f"error: --base {args.base}: its tensors differ from the runs'")
        w = args.base_weight
        averaged = {
            name: (w * base[name].double() + (1 - w) * tensor.double()).to(tensor.dtype)
            for name, tensor in averaged.items()
        }
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in COPIED:
        source = args.inputs[0] / name
        if source.is_dir():
            shutil.copytree(source, tmp / name)
        elif source.is_file():
            shutil.copy2(source, tmp / name)
    save_file(averaged, str(tmp / UNET_WEIGHTS))
    (tmp / "model_index.json").write_text(json.dumps({**index, "motion_gain": 1.0}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # nothing half-written is left under the output name
    what = f"the mean of {len(args.inputs)} U-Nets" if len(args.inputs) > 1 else "the U-Net"
    if args.base is not None:
        what += f", {args.base_weight:g} of the way back to {args.base}'s"
    print(f"wrote {out}: {what}; motion_gain reset to 1.0 "
          "(calibrate it: scripts/calibrate_motion_gain.py --write)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
