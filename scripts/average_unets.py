"""Average the U-Nets of several train_unet.py outputs into one folder (a "weight soup").

    python scripts/average_unets.py --inputs RUN_A RUN_B [RUN_C ...] --output_dir SOUP

Fine-tuning runs that start from one U-Net and differ only in their seed (or a mild
change of recipe) end in nearby minima; the uniform average of their weights is often
better than each of them, at no training cost. The runs must share the U-Net config,
the codec and the normalisation statistics (the same data and init); anything else is
refused. The output is a copy of the first run's folder (codec, scheduler, model_index)
with the averaged U-Net; its ``motion_gain`` is reset to 1.0, because the gain belongs to
the weights: calibrate it again (``scripts/calibrate_motion_gain.py --write``). The
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

UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"
# What the runs must agree on for their U-Nets to be averaged (model_index keys).
SHARED_KEYS = ("codec", "motion_config", "normalization", "unet")
# What of the first run is copied (its checkpoints and validation images are not).
COPIED = ("codec", "scheduler", "unet", "renderer", "model_index.json")


def check_runs(runs: list[Path]) -> dict:
    """The first run's model_index, after checking that every run can be averaged."""
    if len(runs) < 2:
        raise SystemExit("error: --inputs needs at least two runs")

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", nargs="+", required=True, type=Path,
                        help="finished train_unet.py output folders")  # fmt: skip
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    index = check_runs(args.inputs)
    out = args.output_dir
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(f"error: {out} is not empty; pass --overwrite to replace it")
    averaged = average_state_dicts([run / UNET_WEIGHTS for run in args.inputs])
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
    print(f"wrote {out}: the mean of {len(args.inputs)} U-Nets; motion_gain reset to 1.0 "
          "(calibrate it: scripts/calibrate_motion_gain.py --write)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
