"""How rough is the sampled motion against its data, and what a ``motion_smoothing`` blur does.

    python benchmarks/bench_motion_smoothness.py --model weights/default \
        --data outputs/v3/prepared --num_clips 30 --sigmas 0 1 2 3 4 6 --threads 2

Per clip that moves (``calibrate_motion_gain.moving_clips``, spread evenly), the clip's first
frame is animated at the training frame with sample.py's sampling (DPM-Solver++, 25 steps,
guidance 4, the automatic mask, seed = the clip's position) once per ``--sigmas`` value
(``motion_smoothing=SIGMA``; the same seed, so the same sample blurred differently), and
the share of the motion's energy (frequencies 1..K-1, all four channels) in bands of
spatial wavelength (> 64, 32-64, 16-32, 8-16, < 8 px of the model's frame) is compared with
the clip's own: the L1 distance between the two sets of shares. This is the measurement
behind the shipped ``motion_smoothing`` (docs/SAMPLING.md, "Smooth motion"). Use training
clips (``--split train``, the default) to choose anything; held-out clips only to report.

What a user sees of it, on a thin upright structure (a stem) in motion saved by
``sample.py --save_motion``:

    python benchmarks/bench_motion_smoothness.py --saved_motion a_motion.npz b_motion.npz \
        --box X0 X1 Y0 Y1

For each file, the horizontal displacement averaged over columns X0..X1 is followed down
rows Y0..Y1 (pixels of the saved frames) at 60 instants of one loop: its sway (RMS about
the mean, largest |dx|) and its curvature along the stem (|d2x/dy2|, px per px^2: p99 and
largest). A stem that bends in kinks has a large curvature for its sway.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from calibrate_motion_gain import moving_clips  # noqa: E402

from data.dataset import SpectralVolumeDataset  # noqa: E402
from data.spectral import displacement_at_phases  # noqa: E402
from generators.gid import DEFAULT_SAMPLING as SAMPLING  # noqa: E402
from generators.gid import DEFAULT_SCHEDULER  # noqa: E402
from models.pipeline_motion import MotionPipeline  # noqa: E402

# Band edges in pixels of spatial wavelength, longest first; the latent cell is 8 px.
BAND_EDGES_PX = (math.inf, 64.0, 32.0, 16.0, 8.0, 0.0)
BAND_NAMES = tuple(
    f">{lo:g}" if hi == math.inf else (f"<{hi:g}" if lo == 0 else f"{lo:g}-{hi:g}")
    for hi, lo in zip(BAND_EDGES_PX[:-1], BAND_EDGES_PX[1:], strict=True)
)


def band_fractions(spectral: np.ndarray) -> np.ndarray:
    """``(K, 4, H, W)`` spectral volume -> ``(5,)`` shares of the energy of frequencies
    1..K-1 per band of spatial wavelength (``BAND_EDGES_PX``); zeros for a still volume."""
    volume = np.asarray(spectral, np.float64)[1:]
    if volume.ndim != 4:
        raise ValueError(f"band_fractions needs a (K, 4, H, W) volume, got {spectral.shape}")
    height, width = volume.shape[-2:]
    power = (np.abs(np.fft.fft2(volume)) ** 2).sum(axis=(0, 1))
    frequency = np.hypot(np.fft.fftfreq(width)[None, :], np.fft.fftfreq(height)[:, None])
    wavelength = np.divide(1.0, frequency, out=np.full_like(frequency, np.inf), where=frequency > 0)
    total = power.sum()
    if total == 0:
        return np.zeros(len(BAND_NAMES))
    return np.array(
        [
            power[(wavelength <= hi) & (wavelength > lo)].sum() / total
            for hi, lo in zip(BAND_EDGES_PX[:-1], BAND_EDGES_PX[1:], strict=True)
        ]
    )


def stem_curvature(spectral: np.ndarray, box: tuple[int, int, int, int], instants: int = 60):
    """``(K, 4, H, W)`` px and ``(x0, x1, y0, y1)`` -> the sway and curvature along the stem
    (see the module docstring): ``rms_px, max_px, p99_curvature, max_curvature``."""
    x0, x1, y0, y1 = box
    height, width = np.shape(spectral)[-2:]
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 - 2 <= height - 2):
        raise ValueError(f"--box {box} does not fit a {width}x{height} frame with 3+ rows")
    crop = torch.from_numpy(np.asarray(spectral, np.float32)[None, ..., y0:y1, x0:x1])
    phases = np.arange(instants) / instants
    profile = displacement_at_phases(crop, phases)[0, ..., 0].mean(-1).numpy()  # (N, rows)
    sway = profile - profile.mean(axis=0)
    curvature = np.abs(np.diff(profile, 2, axis=1))
    return (
        float(np.sqrt((sway**2).mean())),
        float(np.abs(profile).max()),
        float(np.percentile(curvature, 99)),
        float(curvature.max()),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "weights" / "default"))
    parser.add_argument("--data", help="a prepare_data.py folder (the band measurement)")
    parser.add_argument("--saved_motion", nargs="+", help="sample.py --save_motion .npz files")
    parser.add_argument("--box", type=int, nargs=4, metavar=("X0", "X1", "Y0", "Y1"),
                        help="the stem's columns and rows in the saved frames")  # fmt: skip
    parser.add_argument("--split", default="train", choices=["train", "val", "all"])
    parser.add_argument("--num_clips", type=int, default=30)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0, 1, 2, 3, 4, 6])
    parser.add_argument("--min_mask_fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.saved_motion:
        if args.box is None:
            parser.error("--saved_motion needs --box X0 X1 Y0 Y1")
        print(f"{'file':<48}{'RMS px':>8}{'max px':>8}{'p99 curv':>10}{'max curv':>10}")
        for path in args.saved_motion:
            with np.load(path) as saved:  # written by sample.py: arrays only, no pickle
                figures = stem_curvature(saved["spectral"], tuple(args.box))
            print(f"{path:<48}" + "".join(f"{v:>8.2f}" for v in figures[:2])
                  + "".join(f"{v:>10.4f}" for v in figures[2:]))  # fmt: skip
        return
    if args.data is None:
        parser.error("give --data (the band measurement) or --saved_motion and --box")
    if args.num_clips < 1:
        parser.error("--num_clips must be >= 1")
    if not all(math.isfinite(s) and s >= 0 for s in args.sigmas):
        parser.error("--sigmas must be finite and >= 0")
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    items = moving_clips(
        SpectralVolumeDataset(args.data, args.split, normalize=False),
        args.num_clips,
        args.min_mask_fraction,
    )
    pipe = MotionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    pipe.set_scheduler(DEFAULT_SCHEDULER)
    print(f"{args.model}: {len(items)} clips of {args.data} ({args.split}), sigmas {args.sigmas}")
    print(f"{'clip':<44}" + "".join(f"{f'L1 s={s:g}':>10}" for s in args.sigmas))
    truths, samples = [], {s: [] for s in args.sigmas}
    start = time.perf_counter()
    for position, item in enumerate(items):
        truths.append(band_fractions(item["spectral"].numpy()))
        photo = ((item["image"].permute(1, 2, 0).numpy() + 1.0) * 127.5).clip(0, 255)
        for sigma in args.sigmas:
            out = pipe(
                photo.astype(np.uint8), generator=torch.Generator().manual_seed(position),
                crop=True, renderer=None, return_displacements=False, motion_smoothing=sigma,
                **SAMPLING,
            )  # fmt: skip
            samples[sigma].append(band_fractions(out.spectral[0]))
        distances = [np.abs(samples[s][-1] - truths[-1]).sum() for s in args.sigmas]
        print(f"{item['clip_id']:<44}" + "".join(f"{d:>10.3f}" for d in distances))
    print(f"{len(items)} clips in {time.perf_counter() - start:.0f} s")
    print(f"\nmean share of the energy per band of wavelength (px): {' '.join(BAND_NAMES)}")
    print(f"  {'truth':<10}" + " ".join(f"{v:.3f}" for v in np.mean(truths, axis=0)))
    for sigma in args.sigmas:
        shares = np.mean(samples[sigma], axis=0)
        distance = np.mean(
            [np.abs(a - b).sum() for a, b in zip(samples[sigma], truths, strict=True)]
        )
        print(
            f"  {f'sigma {sigma:g}':<10}" + " ".join(f"{v:.3f}" for v in shares)
            + f"   mean L1 to the truth {distance:.4f}"
        )  # fmt: skip


if __name__ == "__main__":
    main()
