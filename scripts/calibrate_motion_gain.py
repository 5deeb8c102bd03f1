"""Measure how much weaker a motion pipeline's samples are than its training data, and
store the correction as the pipeline's ``motion_gain``.

    python scripts/calibrate_motion_gain.py --model weights/default \
        --train_data_dir outputs/v3/prepared [--num_clips N] [--write]

Per training clip that moves (its motion mask, ``data.dataset.motion_energy_mask``, covers
at least ``--min_mask_fraction`` of the frame), the clip's first frame is animated with
sample.py's sampling defaults (DPM-Solver++, 25 steps, guidance 4, seed 0, at the training
frame, the pipeline's current gain ignored) and the 90th percentile of the per-pixel RMS
displacement inside the mask is compared with the clip's own: ``ratio = truth / sampled``.
The gain is the median ratio. Only training clips are used: the held-out photos judge the
result (docs/SAMPLING.md, "The default"), they never set it. The ratios spread widely (the
clips' amplitudes are drawn at random), so the script also prints a bootstrap interval of
the median: two gains inside each other's interval are not told apart by the measurement.
So every clip that moves is used unless ``--num_clips`` asks for fewer (spread evenly, for a
quick look): 24 clips gave round 8's U-Net 1.55 with a 90 % interval of 0.77-3.0, all 148
moving clips of its training data 1.32 (1.08-1.47).

``--write`` stores the gain in the folder's ``model_index.json`` (atomically); without it
the script only prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.dataset import SpectralVolumeDataset  # noqa: E402
from data.io_utils import write_json_atomic  # noqa: E402
from data.spectral import rms_displacement  # noqa: E402
from generators.gid import DEFAULT_SAMPLING as SAMPLING  # noqa: E402
from generators.gid import DEFAULT_SCHEDULER  # noqa: E402
from models.pipeline_motion import MotionPipeline  # noqa: E402


def moving_clips(dataset: SpectralVolumeDataset, num_clips: int | None, min_mask_fraction: float):
    """The items whose motion mask covers ``min_mask_fraction``: all of them, or up to
    ``num_clips`` spread evenly over the dataset (deterministic)."""
    chosen = []
    for index in range(len(dataset)):
        item = dataset[index]
        if float((item["motion_mask"] > 0.5).float().mean()) >= min_mask_fraction:
            chosen.append(index)
    if not chosen:
        raise ValueError(
            f"no training clip moves over {min_mask_fraction:.0%} of its frame; "
            "is this a prepared folder of moving clips?"
        )
    if num_clips is not None:
        chosen = chosen[:: max(1, len(chosen) // num_clips)][:num_clips]
    return [dataset[i] for i in chosen]


def measure_gain(pipe: MotionPipeline, items, seed: int = 0) -> tuple[float, list[dict]]:
    """The median ``truth / sampled`` ratio of the 90th-percentile RMS inside each clip's
    motion mask, and one row per clip. The pipeline's own ``motion_gain`` is left out."""
    rows = []
    gain = pipe.config.motion_gain
    for item in items:
        truth = rms_displacement(item["spectral"].numpy())
        mask = item["motion_mask"].numpy()[0] > 0.5
        photo = ((item["image"].permute(1, 2, 0).numpy() + 1.0) * 127.5).clip(0, 255)
        out = pipe(
            photo.astype(np.uint8), generator=torch.Generator().manual_seed(seed), crop=True,
            renderer=None, return_displacements=False, **SAMPLING,
        )  # fmt: skip
        sampled = rms_displacement(out.spectral[0]) / gain
        truth_p90 = float(np.percentile(truth[mask], 90))
        sampled_p90 = float(np.percentile(sampled[mask], 90))
        rows.append(
            {
                "clip": item["clip_id"],
                "truth_p90_px": truth_p90,
                "sampled_p90_px": sampled_p90,
                "ratio": truth_p90 / max(sampled_p90, 1e-9),
            }
        )
    return float(np.median([row["ratio"] for row in rows])), rows


def median_interval(
    ratios, confidence: float = 0.9, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """A percentile-bootstrap ``confidence`` interval of the median of ``ratios``."""
    ratios = np.asarray(ratios, dtype=np.float64)
    if ratios.ndim != 1 or len(ratios) == 0 or not np.isfinite(ratios).all():
        raise ValueError("median_interval needs a non-empty 1-D array of finite ratios")
    draws = np.random.default_rng(seed).choice(ratios, size=(resamples, len(ratios)))
    medians = np.median(draws, axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(medians, [tail, 100.0 - tail])
    return float(low), float(high)


def write_gain(folder: Path, gain: float) -> None:
    """Set ``motion_gain`` in ``folder/model_index.json`` (temp file + rename)."""
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["motion_gain"] = round(gain, 4)
    write_json_atomic(index_path, index)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a MotionPipeline folder")
    parser.add_argument("--train_data_dir", required=True,
                        help="the prepare_data.py folder of (or like) its training data")  # fmt: skip
    parser.add_argument("--num_clips", type=int, default=None,
                        help="at most this many moving clips (default: every one)")  # fmt: skip
    parser.add_argument("--min_mask_fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="store the gain in the folder")
    args = parser.parse_args(argv)
    if args.num_clips is not None and args.num_clips < 1:
        parser.error("--num_clips must be >= 1")
    if not 0.0 < args.min_mask_fraction <= 1.0:
        parser.error("--min_mask_fraction must be in (0, 1]")
    folder = Path(args.model)
    if not (folder / "model_index.json").is_file():
        parser.error(f"--model {folder}: no model_index.json (not a MotionPipeline folder)")
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    dataset = SpectralVolumeDataset(args.train_data_dir, "train", normalize=False)
    pipe = MotionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    pipe.set_scheduler(DEFAULT_SCHEDULER)
    items = moving_clips(dataset, args.num_clips, args.min_mask_fraction)
    gain, rows = measure_gain(pipe, items, args.seed)
    print(f"{'clip':<44}{'truth p90':>10}{'sampled p90':>12}{'ratio':>7}")
    for row in rows:
        print(f"{row['clip'][:43]:<44}{row['truth_p90_px']:>10.3f}"
              f"{row['sampled_p90_px']:>12.3f}{row['ratio']:>7.2f}")  # fmt: skip
    ratios = np.array([row["ratio"] for row in rows])
    low, high = median_interval(ratios)
    print(f"{len(rows)} clips: median ratio {gain:.3f} (quartiles {np.percentile(ratios, 25):.3f}"
          f"-{np.percentile(ratios, 75):.3f}; 90 % bootstrap interval of the median "
          f"{low:.3f}-{high:.3f})")  # fmt: skip
    if args.write:
        write_gain(folder, gain)
        print(f"wrote motion_gain = {gain:.4f} to {folder / 'model_index.json'}")


if __name__ == "__main__":
    main()
