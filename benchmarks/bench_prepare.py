"""prepare_data on synthetic clips with known motion: recovery error and throughput.

    python benchmarks/bench_prepare.py [--photos ../shared/data/photos/permissive]
        [--clips-per-photo 1] [--flow dis] [--flow-preset fine] [--num-workers 1]

Makes one synthetic oscillation clip per photo at the default MotionConfig (150 frames,
30 fps, 256x160, K=16), writes it as H.264 MP4, runs the real pipeline on that folder
and prints:
- how well the spectral volume recovered through video coding + optical flow + FFT
  matches the truth: relative RMS error of the displacement rebuilt from it, the gain
  (least-squares slope of recovered on true), and the error per frequency bin;
- clips per second of prepare_data and samples per second of SpectralVolumeDataset.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.config import MotionConfig  # noqa: E402
from data.dataset import SpectralVolumeDataset  # noqa: E402
from data.prepare import DEFAULT_DIS_PRESET, PrepareSettings, prepare  # noqa: E402
from data.spectral import spectral_to_displacement  # noqa: E402
from data.synthetic import write_synthetic_dataset  # noqa: E402

BORDER = 8  # pixels next to the frame edge, where flow has no support, are not scored


def recovery_errors(manifest: dict, out: Path, config: MotionConfig) -> dict:
    """Compare each kept clip's spectral volume with the generator's ground truth."""
    relative, gains, per_bin_error, per_bin_truth = [], [], [], []
    inner = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    for clip in manifest["clips"]:
        if clip["status"] != "ok":
            continue
        truth = np.load(Path(clip["source"]).with_suffix(".npz"))
        recovered = np.load(out / clip["file"])["spectral"].astype(np.float32)
        moving = truth["motion_mask"][inner] > 0.5
        if moving.sum() < 100:
            continue  # the generator found (almost) nothing to move in this photo
        true_s = truth["spectral"][:, :, inner[0], inner[1]][..., moving]  # (K, 4, P)
        got_s = recovered[:, :, inner[0], inner[1]][..., moving]
        per_bin_error.append(np.abs(got_s - true_s).mean(axis=(1, 2)))
        per_bin_truth.append(np.abs(true_s).mean(axis=(1, 2)))
        true_d = spectral_to_displacement(truth["spectral"], config.num_frames)
        got_d = spectral_to_displacement(recovered, config.num_frames)
        true_d, got_d = (
            true_d[:, inner[0], inner[1]][:, moving],
            got_d[:, inner[0], inner[1]][:, moving],
        )
        relative.append(np.sqrt(np.mean((got_d - true_d) ** 2) / np.mean(true_d**2)))
        gains.append(np.sum(got_d * true_d) / np.sum(true_d**2))
    return {
        "relative_rms": np.array(relative),
        "gain": np.array(gains),
        "bin_error": np.mean(per_bin_error, axis=0),
        "bin_truth": np.mean(per_bin_truth, axis=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--photos",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/photos/permissive"),
    )
    parser.add_argument("--clips-per-photo", type=int, default=1)
    parser.add_argument("--flow", default="dis")
    parser.add_argument("--flow-preset", default=None, help="default for dis: prepare_data's")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="keep the videos and prepared data here")
    args = parser.parse_args()

    photos = sorted(Path(args.photos).glob("*.jpg"))
    if not photos:
        sys.exit(f"{args.photos}: no .jpg photos")
    config = MotionConfig()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    videos, out = work / "videos", work / "prepared"
    shutil.rmtree(out, ignore_errors=True)

    started = time.perf_counter()
    if not videos.exists():
        write_synthetic_dataset(photos, videos, args.clips_per_photo, args.seed, config)
    synth_seconds = time.perf_counter() - started

    options = {}
    if args.flow_preset or args.flow == "dis":
        options["preset"] = args.flow_preset or DEFAULT_DIS_PRESET
    settings = PrepareSettings(config=config, flow_method=args.flow, flow_options=options)
    started = time.perf_counter()
    manifest = prepare(videos, out, settings, num_workers=args.num_workers, progress=False)
    prepare_seconds = time.perf_counter() - started
    counts = manifest["counts"]

    result = recovery_errors(manifest, out, config)
    dataset = SpectralVolumeDataset(out, split="all")
    started = time.perf_counter()
    for _ in range(3):
        for index in range(len(dataset)):
            dataset[index]
    load_rate = 3 * len(dataset) / (time.perf_counter() - started)

    print(f"photos: {len(photos)} from {args.photos}, {counts['videos']} synthetic clips "
          f"({config.num_frames} frames, {config.fps:g} fps, {config.width}x{config.height}, "
          f"K={config.num_freqs}), generated in {synth_seconds:.1f} s")  # fmt: skip
    print(f"flow: {args.flow} {options or ''}; workers: {args.num_workers}")
    print(f"kept {counts['kept']} of {counts['clips']} clips; rejected: "
          f"{counts['rejected_by_reason'] or 'none'}")  # fmt: skip
    print(f"prepare_data: {prepare_seconds:.1f} s, {counts['clips'] / prepare_seconds:.2f} clips/s "
          f"(including the merge)")  # fmt: skip
    print(
        f"dataset: {load_rate:.0f} samples/s (image + normalised spectral volume, from disk cache)"
    )
    rel, gain = result["relative_rms"], result["gain"]
    print(f"displacement relative RMS error: median {np.median(rel):.3f}, "
          f"min {rel.min():.3f}, max {rel.max():.3f}")  # fmt: skip
    print(f"gain (recovered / true): median {np.median(gain):.3f}, "
          f"min {gain.min():.3f}, max {gain.max():.3f}")  # fmt: skip
    print("bin  Hz     mean|true| px  mean|error| px")
    for k, (truth, error) in enumerate(zip(result["bin_truth"], result["bin_error"], strict=True)):
        print(f"{k:3d}  {config.frequencies_hz()[k]:.2f}   {truth:.4f}         {error:.4f}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
