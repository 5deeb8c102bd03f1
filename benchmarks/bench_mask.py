"""The motion brush: how much motion leaks where the mask is black, how much is kept inside.

One photo and its mask, sampled with and without the mask (same seed), at the photo's
own size. Prints the share of the motion energy (sum over pixels of the RMS motion
squared) on the mask's black pixels, and the RMS motion inside the white region (more than
one feather width from its edge) with the mask divided by that without it.

    python benchmarks/bench_mask.py --photo data/examples/brush/china.jpg \
        --mask data/examples/brush/china_trees.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.images import load_image  # noqa: E402
from data.motion_metrics import motion_magnitude  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="weights/default")
    parser.add_argument("--photo", required=True)
    parser.add_argument("--mask", required=True)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import cv2
    import torch

    from models.pipeline_motion import (
        MASK_FEATHER_FRACTION,
        MotionPipeline,
        fit_to_size,
        load_motion_mask,
    )

    torch.set_num_threads(args.threads)
    pipe = MotionPipeline.from_pretrained(args.model)
    pipe.set_scheduler("dpm")
    pipe.set_progress_bar_config(disable=True)
    image = load_image(args.photo)
    for seed in range(args.seeds):
        runs = {}
        for name, mask in (("free", None), ("masked", args.mask)):
            out = pipe(image, guidance_scale=4.0, num_frames=1, renderer=None, motion_mask=mask,
                       generator=torch.Generator().manual_seed(seed))  # fmt: skip
            runs[name] = motion_magnitude(out.spectral[0])  # (H, W) RMS px
        height, width = runs["free"].shape
        mask = fit_to_size(load_motion_mask(args.mask, image.size), (width, height))
        black = mask <= 1 / 255
        feather = MASK_FEATHER_FRACTION * max(width, height)
        distance = cv2.distanceTransform((~black).astype(np.uint8), cv2.DIST_L2, 5)
        inside = distance > 2 * feather
        energy = runs["masked"] ** 2
        share = energy[black].sum() / energy.sum()
        kept = runs["masked"][inside].mean() / runs["free"][inside].mean()
        print(f"seed {seed}: {width}x{height}, black {black.mean():.0%} of the frame; motion "
              f"energy on black pixels {share:.4%} (without the mask "
              f"{(runs['free'] ** 2)[black].sum() / (runs['free'] ** 2).sum():.1%}); RMS inside "
              f"with / without the mask {kept:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
