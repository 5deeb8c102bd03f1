"""Time the synthetic oscillation generator per clip, stage by stage.

    python benchmarks/bench_synthetic.py [--photo PATH] [--repeats 3] [--picture OUT.png]
        [--spectrum-photos DIR --clips-per-photo 4 --spectrum-plot OUT.png] [--flow-check]

Default photo: ../shared/data/photos/permissive/squirrel_cls.jpg when present, else a
generated green/blue test image. The photo is resized and cropped to the MotionConfig
size (256x160), T = 150 frames. Prints the median seconds of each stage over
``--repeats`` runs, the total per clip for each renderer and the rendering's share.
``--picture`` writes photo | frame of largest motion | its flow colours (saturated at
the 99th percentile of |D_t|) | region masks (R vegetation, G water, B sky).
``--spectrum-photos`` synthesises (without rendering) clips from every photo of a folder
and prints their mean power per frequency with the log-log slope of power vs frequency
(the generator's amplitudes fall as 1/f, so about -2 is expected), plotted with
``--spectrum-plot``.
``--flow-check`` estimates optical flow (``data.flow.estimate_flow``, DIS) from frame 0 to
every rendered frame of 4 clips of the photo and compares it with the true displacement
on moving pixels (8 px border left out): gain = <flow, true> / <true, true> and relative
RMS error; this is what ``prepare_data.py`` would recover from such a video (before
any video compression).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.config import MotionConfig  # noqa: E402
from data.spectral import displacement_to_spectral  # noqa: E402
from data.synthetic import (  # noqa: E402
    DEFAULT_AMPLITUDE_RANGE,
    estimate_motion_regions,
    synthesize_motion,
    synthesize_oscillation,
)
from data.video import resize_cover_crop  # noqa: E402
from data.visualize import flow_to_color  # noqa: E402
from splatting import render_frames  # noqa: E402

DEFAULT_PHOTO = (
    Path(__file__).resolve().parents[2] / "shared/data/photos/permissive/squirrel_cls.jpg"
)


def load_photo(path: Path | None, config: MotionConfig) -> tuple[str, np.ndarray]:
    import cv2

    if path is None and DEFAULT_PHOTO.exists():
        path = DEFAULT_PHOTO
    if path is None:
        rng = np.random.default_rng(0)
        image = np.empty((config.height, config.width, 3), np.uint8)
        image[: config.height // 2] = (90, 150, 230)
        texture = rng.integers(0, 90, size=(config.height - config.height // 2, config.width))
        image[config.height // 2 :] = np.stack(
            [30 + texture // 3, 100 + texture, 20 + texture // 4], -1
        )
        return "generated green/blue image", image
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"{path}: not an image file (cannot decode)")
    return str(path), resize_cover_crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), config.size)


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture", type=Path, default=None)
    parser.add_argument("--spectrum-photos", type=Path, default=None)
    parser.add_argument("--clips-per-photo", type=int, default=4)
    parser.add_argument("--spectrum-plot", type=Path, default=None)
    parser.add_argument("--flow-check", action="store_true")
    args = parser.parse_args()

    import torch

    config = MotionConfig()
    name, image = load_photo(args.photo, config)
    print(
        f"photo: {name}  {config.width}x{config.height}, T={config.num_frames}, K={config.num_freqs}"
    )
    print(f"torch threads: {torch.get_num_threads()}, repeats: {args.repeats} (median)")

    t_regions, masks = timed(lambda: estimate_motion_regions(image), args.repeats)
    t_motion, (disp, _, _) = timed(
        lambda: synthesize_motion(masks, config, args.seed), args.repeats
    )
    t_spectral, _ = timed(lambda: displacement_to_spectral(disp, config.num_freqs), args.repeats)
    motion_total = t_regions + t_motion + t_spectral
    t_fft, _ = timed(
        lambda: np.fft.rfft(disp.astype(np.float64), axis=0, norm="forward")[: config.num_freqs],
        args.repeats,
    )
    from data.spectral import SpectralStatsAccumulator

    spectral = displacement_to_spectral(disp, config.num_freqs)
    t_stats, _ = timed(
        lambda: SpectralStatsAccumulator(config.num_freqs).update(spectral), args.repeats
    )
    print(f"regions   {t_regions:7.3f} s")
    print(f"motion    {t_motion:7.3f} s  (modes, displacement of all frames)")
    print(
        f"spectral  {t_spectral:7.3f} s  (displacement_to_spectral; np.fft.rfft float64 "
        f"along t: {t_fft:.3f} s, {t_fft / t_spectral:.1f}x slower)"
    )
    print(f"stats     {t_stats:7.3f} s  (SpectralStatsAccumulator.update of one clip)")
    for renderer in ("softsplat", "average"):
        t_render, _ = timed(lambda r=renderer: render_frames(image, disp, r), args.repeats)
        total = motion_total + t_render
        print(
            f"render {renderer:9s} {t_render:7.3f} s -> {total:6.3f} s per clip, "
            f"rendering {100 * t_render / total:4.1f}% of it"
        )
    t_clip, clip = timed(lambda: synthesize_oscillation(image, config, args.seed), args.repeats)
    print(f"synthesize_oscillation end to end (softsplat): {t_clip:.3f} s per clip")
    print(f"max |D| {np.abs(clip.displacement).max():.2f} px; modes:")
    for mode in clip.metadata["modes"]:
        print(
            f"  {mode['region']:10s} bin {mode['bin']:2d} {mode['frequency_hz']:4.1f} Hz "
            f"rms {mode['amplitude_px']:.3f} px"
        )

    if args.picture is not None:
        from PIL import Image

        t = int(np.argmax(np.abs(clip.displacement).mean(axis=(1, 2, 3))))
        mask_rgb = np.stack([masks["vegetation"], masks["water"], masks["sky"]], -1)
        panels = [
            image,
            clip.frames[t],
            flow_to_color(
                clip.displacement[t],
                float(np.percentile(np.linalg.norm(clip.displacement[t], axis=-1), 99)),
            ),
            (mask_rgb * 255).round().astype(np.uint8),
        ]
        args.picture.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(panels, axis=1)).save(args.picture, optimize=True)
        print(f"wrote {args.picture} (frame {t})")

    if args.flow_check:
        flow_check(image, config)

    if args.spectrum_photos is not None:
        spectrum(args.spectrum_photos, args.clips_per_photo, config, args.spectrum_plot)


def flow_check(image: np.ndarray, config: MotionConfig, border: int = 8) -> None:
    from data.flow import estimate_flow

    print("flow (DIS) vs true displacement on moving pixels:")
    for seed in range(4):
        clip = synthesize_oscillation(image, config, seed)
        flow = estimate_flow(clip.frames[0], clip.frames)
        inner = (slice(None), slice(border, -border), slice(border, -border))
        moving = clip.motion_mask[inner[1:]] > 0.5
        true, got = clip.displacement[inner][:, moving], flow[inner][:, moving]
        gain = float(np.sum(got * true) / np.sum(true * true))
        error = float(np.sqrt(np.mean((got - true) ** 2) / np.mean(true * true)))
        rms = float(np.sqrt(np.mean(true * true)))
        print(f"  seed {seed}: true rms {rms:.2f} px, gain {gain:.2f}, relative error {error:.2f}")


def spectrum(folder: Path, clips_per_photo: int, config: MotionConfig, plot: Path | None) -> None:
    from data.spectral import frequency_power_spectrum
    from data.visualize import plot_power_spectrum

    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    power, count = np.zeros(config.num_freqs), 0
    for index, path in enumerate(photos):
        _, image = load_photo(path, config)
        for clip_index in range(clips_per_photo):
            rng = np.random.default_rng([index, clip_index])
            amplitude = rng.uniform(*DEFAULT_AMPLITUDE_RANGE)
            clip = synthesize_oscillation(image, config, rng, amplitude, render=False)
            power += frequency_power_spectrum(clip.spectral)
            count += 1
    power /= count
    freqs = np.asarray(config.frequencies_hz())
    print(f"mean power per frequency over {count} clips from {len(photos)} photos in {folder}:")
    for f, p in zip(freqs, power, strict=True):
        print(f"  {f:4.1f} Hz  {p:.3e} px^2")
    slope = np.polyfit(np.log(freqs[1:]), np.log(power[1:]), 1)[0]
    print(f"log-log slope of power vs frequency (bins 1..K-1): {slope:.2f}")
    if plot is not None:
        plot_power_spectrum({f"synthetic ({count} clips)": power}, freqs, plot)
        print(f"wrote {plot}")


if __name__ == "__main__":
    main()
