"""Does the motion model move what should move and keep still what should stay still?

For each photo, a few spectral volumes are sampled by a ``MotionPipeline`` and compared
with the image-cue regions of ``data.synthetic.estimate_motion_regions``: "movable" =
vegetation + water (soft mask), "still" = where that mask is below 0.1 (sky, buildings,
ground, animals). Per sample:

* **corr**: Pearson correlation over pixels between the movable mask and the RMS motion
  (px, over the clip; ``data.motion_metrics.motion_magnitude``);
* **still share**: the share of the motion energy (sum of RMS^2) that falls on still
  pixels. Motion spread evenly over the frame scores the still pixels' share of the area
  (the ``uniform`` column); motion confined to the foliage scores near 0.

The ``truth`` columns score the synthetic generator's own motion for the same photo (what
the training clips look like, ``synthesize_motion``), the reference a model can reach.

    python benchmarks/bench_motion_localization.py --model weights/default \
        --photos data/examples ../shared/data/photos/gpl --samples 3
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.images import collect_images, load_image  # noqa: E402
from data.motion_metrics import motion_magnitude  # noqa: E402
from data.synthetic import (  # noqa: E402
    DEFAULT_AMPLITUDE_RANGE,
    estimate_motion_regions,
    synthesize_motion,  # noqa: E402
)
from data.video import resize_cover_crop  # noqa: E402

STILL_BELOW = 0.1  # movable-mask value under which a pixel should not move


def localization(spectral: np.ndarray, movable: np.ndarray) -> tuple[float, float]:
    """``(corr, still share)`` of one ``(K, 4, H, W)`` volume against the movable mask."""
    rms = motion_magnitude(spectral)
    energy = rms**2
    still = movable < STILL_BELOW
    share = float(energy[still].sum() / energy.sum()) if energy.sum() > 0 else float("nan")
    if movable.std() == 0 or rms.std() == 0:
        return float("nan"), share
    return float(np.corrcoef(movable.ravel(), rms.ravel())[0, 1]), share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="weights/default", help="MotionPipeline folder")
    parser.add_argument("--photos", nargs="+", default=["data/examples"])
    parser.add_argument("--samples", type=int, default=3, help="seeds per photo")
    parser.add_argument("--num_inference_steps", type=int, default=25)
    parser.add_argument("--guidance_scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from models.pipeline_motion import MotionPipeline

    torch.set_num_threads(args.threads)
    pipeline = MotionPipeline.from_pretrained(args.model)
    pipeline.set_progress_bar_config(disable=True)
    config = pipeline.motion_config
    photos = [p for spec in args.photos for p in collect_images(spec)]

    print(
        f"model {args.model}, {len(photos)} photos x {args.samples} samples, "
        f"{args.num_inference_steps} steps, guidance {args.guidance_scale:g}\n"
    )
    print("| photo | movable area | corr model | corr truth | still share model "
          "| still share truth | uniform |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows, start = [], time.perf_counter()
    for photo_path in photos:
        photo = resize_cover_crop(np.asarray(load_image(photo_path)), config.size)
        masks = estimate_motion_regions(photo)
        movable = np.clip(masks["vegetation"] + masks["water"], 0.0, 1.0)
        model, truth = [], []
        for seed in range(args.samples):
            generator = torch.Generator().manual_seed(seed)
            result = pipeline(
                photo, num_inference_steps=args.num_inference_steps,
                guidance_scale=args.guidance_scale, generator=generator, num_frames=2,
                renderer=None,
            )  # fmt: skip
            model.append(localization(np.asarray(result.spectral[0], np.float64), movable))
            rng = np.random.default_rng(seed)
            _, spectral, _ = synthesize_motion(
                masks, config, rng, rng.uniform(*DEFAULT_AMPLITUDE_RANGE)
            )
            truth.append(localization(spectral, movable))
        with warnings.catch_warnings():  # a photo with nothing movable: corr is NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            model_mean, truth_mean = np.nanmean(model, 0), np.nanmean(truth, 0)
        uniform = float((movable < STILL_BELOW).mean())
        rows.append((*model_mean, *truth_mean, uniform))
        print(
            f"| {photo_path.name} | {movable.mean():.2f} | {model_mean[0]:.3f} | "
            f"{truth_mean[0]:.3f} | {model_mean[1]:.3f} | {truth_mean[1]:.3f} | {uniform:.3f} |"
        )
    mean = np.nanmean(rows, 0)
    print(
        f"| **mean** | | **{mean[0]:.3f}** | {mean[2]:.3f} | **{mean[1]:.3f}** | {mean[3]:.3f} "
        f"| {mean[4]:.3f} |"
    )
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
