"""Whole photo or cover crop: does sampling the whole frame hurt the motion?

``MotionPipeline`` samples a photo's motion at the model's pixel budget with the photo's
own aspect (resized, reflect-padded to the U-Net's multiple); before, it cover-cropped the
photo to the training frame (256x160, ``crop=True``). Both are compared on the region they
share: the whole-frame motion is sampled at the scale where that region is 256x160 and cut
out there. Per photo and mode (``bench_motion_localization.localization``):

* **corr**: correlation of the RMS motion with the movable (vegetation + water) cue mask;
* **still share**: share of the motion energy on pixels the cues call still;
* **rms**: median RMS motion (px at 256x160) over the region; the ratio whole / crop.

    python benchmarks/bench_aspect.py --photos data/examples ../shared/data/photos/gpl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_motion_localization import localization  # noqa: E402

from data.images import collect_images, load_image  # noqa: E402
from data.motion_metrics import motion_magnitude  # noqa: E402
from data.synthetic import estimate_motion_regions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="weights/default", help="MotionPipeline folder")
    parser.add_argument("--photos", nargs="+", default=["data/examples"])
    parser.add_argument("--samples", type=int, default=1, help="seeds per photo")
    parser.add_argument("--num_inference_steps", type=int, default=25)
    parser.add_argument("--guidance_scale", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from models.pipeline_motion import MotionPipeline

    torch.set_num_threads(args.threads)
    pipe = MotionPipeline.from_pretrained(args.model)
    pipe.set_scheduler("dpm")
    pipe.set_progress_bar_config(disable=True)
    width, height = pipe.motion_config.size
    rows = []
    print(
        "| photo | aspect | corr crop | corr whole | still crop | still whole | rms crop | rms whole |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for path in [p for spec in args.photos for p in collect_images(spec)]:
        image = load_image(path)
        scale = max(width / image.size[0], height / image.size[1])
        whole_size = (round(image.size[0] * scale), round(image.size[1] * scale))
        x0, y0 = (whole_size[0] - width) // 2, (whole_size[1] - height) // 2
        for seed in range(args.samples):
            common = dict(num_inference_steps=args.num_inference_steps, num_frames=1,
                          guidance_scale=args.guidance_scale, renderer=None)  # fmt: skip
            crop = pipe(image, crop=True, generator=torch.Generator().manual_seed(seed), **common)
            whole = pipe(image, output_size=whole_size,
                         generator=torch.Generator().manual_seed(seed), **common)  # fmt: skip
            region = whole.spectral[0][..., y0 : y0 + height, x0 : x0 + width]
            masks = estimate_motion_regions(crop.images[0])
            movable = np.clip(masks["vegetation"] + masks["water"], 0.0, 1.0)
            row = [*localization(crop.spectral[0].astype(np.float64), movable),
                   *localization(region.astype(np.float64), movable),
                   float(np.median(motion_magnitude(crop.spectral[0]))),
                   float(np.median(motion_magnitude(region)))]  # fmt: skip
            rows.append(row)
            print(f"| {path.name} | {image.size[0] / image.size[1]:.2f} | {row[0]:.3f} | "
                  f"{row[2]:.3f} | {row[1]:.3f} | {row[3]:.3f} | {row[4]:.3f} | {row[5]:.3f} |")  # fmt: skip
    mean = np.nanmean(np.asarray(rows), axis=0)
    print(f"| **mean of {len(rows)}** | | {mean[0]:.3f} | {mean[2]:.3f} | {mean[1]:.3f} | "
          f"{mean[3]:.3f} | {mean[4]:.3f} | {mean[5]:.3f} |")  # fmt: skip
    print(f"rms whole / crop: {mean[5] / mean[4]:.2f}")


if __name__ == "__main__":
    main()
