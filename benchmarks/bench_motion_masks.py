"""Automatic motion masks against hand-annotated photos: IoU per photo, and speed.

The annotations (``benchmarks/data/motion_mask_annotations.json``) are polygons labelled
"moves" (vegetation, water) or "still", drawn by hand on each photo resized to a long side
of 320 px; only the polygons, the file name, size and sha256 are stored, never pixels.
The photos come from five places (``--*-dir``): the GPL photos in
``../shared/data/photos/gpl`` (evaluation only), the permissive ones beside them, the
repository's ``data/examples``, scikit-learn's sample images (``china.jpg``,
``flower.jpg``; skipped when scikit-learn is not installed), five lakes and a forest of
Debian's ``plasma-workspace-wallpapers`` (``/usr/share/wallpapers``) and six landscapes,
leaves and a trunk of Debian's ``lomiri-wallpapers-16.04``/``-20.04``
(``/usr/share/backgrounds``); both evaluation only. A photo that is not installed is
skipped; one whose sha256 differs from the annotation's is skipped with a note, never
scored.

Per photo and provider: IoU of the "moves" class (the mask thresholded at 0.5; "n/a" when
the photo has nothing that moves), the mean IoU over the classes the annotation has (moves, still), and
the share of "still" pixels marked as moving. Means are printed per split: ``dev`` (the
photos looked at while tuning the cues) and ``heldout`` (chosen before tuning).

    python benchmarks/bench_motion_masks.py                       # cues vs legacy
    python benchmarks/bench_motion_masks.py --providers cues legacy segformer:nvidia/segformer-b0-finetuned-ade-512-512
    python benchmarks/bench_motion_masks.py --overlays outputs/motion_masks  # PNGs to look at

``--real-motion VIDEO`` instead measures how real oscillating footage moves (issue 15,
part 3): the clean frames of ``tree.avi`` (0-52, at their real ~2.3 frames/s), resized
and cropped to the model's 256x160, optical flow (DIS medium) from frame 0 to every frame,
then per pixel the RMS displacement about its mean position, in the vegetation the cues
find and in the still parts (the flow's noise floor), and the dominant frequency of the
mean power spectrum; and the same figures for ``data.synthetic`` animating that same
first frame, so that the generator's amplitude can be set to match:

    python benchmarks/bench_motion_masks.py --real-motion ../shared/data/videos/tree.avi
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.motion_masks import estimate_motion_mask  # noqa: E402

ANNOTATIONS = ROOT / "benchmarks" / "data" / "motion_mask_annotations.json"
# Real photos of water (lakes at dusk, in fog, at sunset) and a forest from Debian's
# plasma-workspace-wallpapers (LGPL-3 / GPL-2+: evaluation only, never committed nor
# trained on): ``apt-get install plasma-workspace-wallpapers`` puts them here.
KDE_WALLPAPERS_DIR = Path("/usr/share/wallpapers")
# Real landscapes, a forest stream, leaves against the sky, a meadow, a tree trunk from
# Debian's lomiri-wallpapers-16.04 and -20.04 (CC-BY-4.0, CC-BY-SA-3.0/4.0, CC0: evaluation
# only here): ``apt-get install lomiri-wallpapers-16.04 lomiri-wallpapers-20.04``.
LOMIRI_WALLPAPERS_DIR = Path("/usr/share/backgrounds")


def display_name(entry: dict) -> str:
    """The photo's short name (a wallpaper's file is ``NAME/contents/images/WxH.jpg``)."""
    return entry.get("name", entry["file"])


def rasterise(entry: dict) -> np.ndarray:
    """``(h, w)`` bool "moves" mask at the entry's ``annotated_size``."""
    width, height = entry["annotated_size"]
    label = np.full((height, width), 1 if entry["default"] == "moves" else 0, np.uint8)
    for polygon in entry["polygons"]:
        points = np.round(np.asarray(polygon["points"], np.float64)).astype(np.int32)
        cv2.fillPoly(label, [points], 1 if polygon["label"] == "moves" else 0)
    return label.astype(bool)


def photo_path(entry: dict, dirs: dict[str, Path | None]) -> Path | None:
    folder = dirs.get(entry["source"])
    if folder is None:
        return None
    path = folder / entry["file"]
    return path if path.is_file() else None


def sklearn_images_dir() -> Path | None:
    try:
        import sklearn.datasets
    except ImportError:
        return None
    return Path(sklearn.datasets.__file__).parent / "images"


def load_photo(path: Path, entry: dict) -> np.ndarray | None:
    """The photo resized to the annotation's size (RGB uint8), or None if its sha256 differs."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        print(f"  skip {path}: sha256 differs from the annotated photo")
        return None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        print(f"  skip {path}: cannot decode")
        return None
    if [bgr.shape[1], bgr.shape[0]] != entry["size"]:
        print(f"  skip {path}: size {bgr.shape[1]}x{bgr.shape[0]} differs from {entry['size']}")
        return None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, tuple(entry["annotated_size"]), interpolation=cv2.INTER_AREA)


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(IoU of "moves" or nan when nothing moves, mean IoU over the classes the annotation
    has (moves, still), share of "still" pixels marked moving or nan when all moves)."""
    moves = pred >= 0.5

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        union = (a | b).sum()
        return float((a & b).sum() / union) if union else 1.0

    iou_moves = iou(moves, truth) if truth.any() else float("nan")
    present = [iou(moves, truth)] if truth.any() else []
    present += [iou(~moves, ~truth)] if (~truth).any() else []
    miou = float(np.mean(present))
    false_move = float(moves[~truth].mean()) if (~truth).any() else float("nan")
    return iou_moves, miou, false_move


def overlay(photo: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Photo | predicted mask (white = moves) with the annotation's outline, BGR uint8."""
    mask = np.repeat((255 * pred[..., None]).astype(np.uint8), 3, axis=2)
    contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(mask, contours, -1, (255, 0, 255), 1)
    return cv2.cvtColor(np.concatenate([photo, mask], axis=1), cv2.COLOR_RGB2BGR)


def speed(provider: str, sizes: list[tuple[int, int]], repeats: int) -> list[float]:
    """Median seconds per photo at each (width, height), on a blurred random RGB image."""
    rng = np.random.default_rng(0)
    out = []
    for width, height in sizes:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = cv2.GaussianBlur(image, (0, 0), 2.0)
        estimate_motion_mask(image, provider)  # warm-up (model load, caches)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            estimate_motion_mask(image, provider)
            times.append(time.perf_counter() - start)
        out.append(float(np.median(times)))
    return out


def _interpolation_matrix(times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``(len(grid), len(times))`` weights of linear interpolation from ``times`` to ``grid``."""
    weights = np.zeros((len(grid), len(times)))
    index = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(times) - 2)
    frac = (grid - times[index]) / (times[index + 1] - times[index])
    weights[np.arange(len(grid)), index] = 1.0 - frac
    weights[np.arange(len(grid)), index + 1] = frac
    return weights


def _displacement_stats(
    disp: np.ndarray,
    times: np.ndarray,
    moving: np.ndarray,
    still: np.ndarray,
    band_hz: tuple[float, float],
    window_s: float,
) -> dict[str, float]:
    """Per-pixel RMS displacement about the mean position (px) and the spectrum.

    Args:
        disp: ``(T, H, W, 2)`` px displacement from frame 0.
        times: ``(T,)`` seconds, may be irregular: the spectrum is taken after linear
            resampling onto a uniform grid at the mean rate.
        moving, still: ``(H, W)`` bool regions (``still`` may be empty).
        band_hz: the band both clips can represent; ``rms_band_*`` keep only it.
        window_s: ``rms_window_*``: the RMS about the mean position within windows this
            long (a model clip's duration), mean square over all windows starting at a
            frame, then the root: what a clip of that length sees of slow drifts.

    Returns:
        RMS median / 90th percentile over ``moving`` (all frequencies and in the band), the
        median over ``still`` (all frequencies and in the band), the largest |D|
        component in ``moving``, the dominant frequency of the mean power spectrum over
        ``moving`` (in the band), the log-log slope of that power over the band and the
        share of the power (DC excluded) below 0.6 Hz.
    """
    centred = disp - disp.mean(axis=0, keepdims=True)
    rms = np.sqrt((centred**2).sum(axis=-1).mean(axis=0))  # (H, W)
    window_ms = []
    for start in range(len(times)):
        inside = (times >= times[start]) & (times < times[start] + window_s - 1e-9)
        if times[start] + window_s > times[-1] + 1e-6 and start > 0:
            break  # windows that would run past the clip's end
        part = disp[inside][:, moving]
        window_ms.append(((part - part.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0))
    window_rms = np.sqrt(np.mean(window_ms, axis=0))
    grid = np.linspace(times[0], times[-1], len(times))
    flat = centred[:, moving].reshape(len(times), -1)  # (T, pixels * 2)
    uniform = _interpolation_matrix(times, grid) @ flat
    spectrum = np.fft.rfft(uniform, axis=0)
    freqs = np.fft.rfftfreq(len(grid), d=(grid[-1] - grid[0]) / (len(grid) - 1))
    power = (np.abs(spectrum) ** 2).mean(axis=1)
    in_band = (freqs >= band_hz[0] - 1e-9) & (freqs <= band_hz[1] + 1e-9)
    band = np.fft.irfft(spectrum * in_band[:, None], n=len(grid), axis=0)
    band_rms = np.sqrt((band.reshape(len(grid), -1, 2) ** 2).sum(axis=-1).mean(axis=0))
    # log-log slope of the mean power over the band's bins (the 1/f^2 law has -2)
    slope = np.polyfit(np.log(freqs[in_band]), np.log(power[in_band] + 1e-20), 1)[0]
    still_band = float("nan")
    if still.any():
        flat_still = _interpolation_matrix(times, grid) @ centred[:, still].reshape(len(times), -1)
        spectrum_still = np.fft.rfft(flat_still, axis=0) * in_band[:, None]
        band_still = np.fft.irfft(spectrum_still, n=len(grid), axis=0)
        band_still = band_still.reshape(len(grid), -1, 2)
        still_band = float(np.median(np.sqrt((band_still**2).sum(axis=-1).mean(axis=0))))
    return {
        "rms_median": float(np.median(rms[moving])),
        "rms_p90": float(np.percentile(rms[moving], 90)),
        "rms_window_median": float(np.median(window_rms)),
        "rms_window_p90": float(np.percentile(window_rms, 90)),
        "rms_band_median": float(np.median(band_rms)),
        "rms_band_p90": float(np.percentile(band_rms, 90)),
        "rms_still_median": float(np.median(rms[still])) if still.any() else float("nan"),
        "rms_still_band_median": still_band,
        "band_slope": float(slope),
        "max_abs": float(np.abs(disp[:, moving]).max()),
        "dominant_hz": float(freqs[in_band][np.argmax(power[in_band])]),
        "power_share_below_0.6hz": float(power[1:][freqs[1:] <= 0.6].sum() / power[1:].sum()),
    }


def real_motion(
    video_path: Path, last_frame: int, seeds: int, still_box: tuple[int, int, int, int] | None
) -> int:
    """Print displacement statistics of a real clip and of the synthetic generator."""
    from data.config import MotionConfig
    from data.flow import estimate_flow
    from data.motion_masks import estimate_regions
    from data.synthetic import DEFAULT_AMPLITUDE, DEFAULT_AMPLITUDE_RANGE, synthesize_oscillation
    from data.video import read_video, resize_cover_crop

    config = MotionConfig()
    video = read_video(video_path, max_frames=last_frame + 1)
    frames = np.stack([resize_cover_crop(f, config.size) for f in video.frames])
    times = video.timestamps - video.timestamps[0]
    rate = (len(times) - 1) / times[-1]
    nyquist = rate / 2.0
    lowest = config.fps / config.num_frames  # the lowest non-DC bin of a model clip
    band = (lowest, nyquist)
    disp = estimate_flow(frames[0], frames, "dis", preset="medium")
    regions = estimate_regions(frames[0])
    moving = regions["vegetation"] > 0.5
    still = np.zeros(moving.shape, bool)
    if still_box is not None:
        x0, y0, x1, y1 = still_box
        still[y0:y1, x0:x1] = True
    print(
        f"{video_path.name}: frames 0-{len(frames) - 1} at {rate:.2f} frames/s on average "
        f"({times[-1]:.1f} s; Nyquist {nyquist:.2f} Hz), {frames.shape[2]}x{frames.shape[1]} "
        f"px, flow DIS medium; vegetation (cues > 0.5) {100 * moving.mean():.0f}% of the "
        f"frame; still box {still_box}"
    )
    print(
        f"{'':<28}{'RMS p50':>8}{'RMS p90':>8}{'5s p50':>7}{'5s p90':>7}{'band p50':>9}{'band p90':>9}{'still':>7}"
        f"{'st.band':>8}{'max|D|':>7}{'dominant':>10}{'slope':>6}{'<=0.6Hz':>8}"
    )

    def row(name: str, stats: dict[str, float]) -> None:
        print(
            f"{name:<28}{stats['rms_median']:>8.3f}{stats['rms_p90']:>8.3f}"
            f"{stats['rms_window_median']:>7.3f}{stats['rms_window_p90']:>7.3f}"
            f"{stats['rms_band_median']:>9.3f}{stats['rms_band_p90']:>9.3f}"
            f"{stats['rms_still_median']:>7.3f}{stats['rms_still_band_median']:>8.3f}"
            f"{stats['max_abs']:>7.2f}{stats['dominant_hz']:>8.2f}Hz{stats['band_slope']:>6.1f}"
            f"{100 * stats['power_share_below_0.6hz']:>7.0f}%"
        )

    window = config.num_frames / config.fps
    real = _displacement_stats(disp, times, moving, still, band, window)
    row("real", real)
    synthetic_times = np.arange(config.num_frames) / config.fps
    amplitudes = sorted({DEFAULT_AMPLITUDE, *DEFAULT_AMPLITUDE_RANGE})
    stats_p90 = {}
    for amplitude in amplitudes:
        runs = []
        for seed in range(seeds):
            clip = synthesize_oscillation(frames[0], config, seed, amplitude, render=False)
            runs.append(
                _displacement_stats(clip.displacement, synthetic_times, moving, still, band, window)
            )
        mean = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
        if amplitude == DEFAULT_AMPLITUDE:
            stats_p90 = mean
        row(f"synthetic A={amplitude:g} ({seeds} seeds)", mean)
    print(
        f"5s: RMS within {window:g} s windows (a model clip's length). band: only "
        f"{band[0]:.2f}-{band[1]:.2f} Hz (what both a model clip and the real clip's frame "
        f"rate can hold). still/st.band: median over the still box."
    )
    for key, label in (("rms_window_p90", "5 s window RMS p90"), ("rms_band_p90", "band RMS p90")):
        per_px = stats_p90[key] / DEFAULT_AMPLITUDE
        print(
            f"amplitude whose {label} matches the real clip's: {real[key] / per_px:.2f} px "
            f"(synthetic gives {per_px:.3f} px per px of amplitude; today "
            f"{DEFAULT_AMPLITUDE:g}, dataset range {DEFAULT_AMPLITUDE_RANGE[0]:g}-"
            f"{DEFAULT_AMPLITUDE_RANGE[1]:g})"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=Path, default=ANNOTATIONS)
    parser.add_argument("--providers", nargs="+", default=["legacy", "cues"])
    parser.add_argument("--gpl-dir", type=Path, default=ROOT.parent / "shared/data/photos/gpl")
    parser.add_argument(
        "--permissive-dir", type=Path, default=ROOT.parent / "shared/data/photos/permissive"
    )
    parser.add_argument("--examples-dir", type=Path, default=ROOT / "data" / "examples")
    parser.add_argument("--kde-dir", type=Path, default=KDE_WALLPAPERS_DIR)
    parser.add_argument("--lomiri-dir", type=Path, default=LOMIRI_WALLPAPERS_DIR)
    parser.add_argument("--overlays", type=Path, default=None, help="write PNG overlays here")
    parser.add_argument(
        "--split", choices=["dev", "heldout"], default=None,
        help="score only this split (tune the cues with --split dev)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats per size")
    parser.add_argument(
        "--real-motion", type=Path, default=None, metavar="VIDEO",
        help="measure the displacement statistics of this real clip instead (tree.avi)",
    )  # fmt: skip
    parser.add_argument("--last-frame", type=int, default=52, help="of the real clip")
    parser.add_argument("--seeds", type=int, default=4, help="synthetic clips per amplitude")
    parser.add_argument(
        "--still-box", type=int, nargs=4, default=None, metavar=("X0", "Y0", "X1", "Y1"),
        help="a rigid part of the real clip at 256x160 (tree.avi: the window frame, "
        "0 0 12 160): its RMS is the flow's noise floor plus camera shake",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.real_motion is not None:
        box = tuple(args.still_box) if args.still_box else None
        return real_motion(args.real_motion, args.last_frame, args.seeds, box)

    doc = json.loads(args.annotations.read_text())
    dirs = {
        "gpl": args.gpl_dir,
        "permissive": args.permissive_dir,
        "examples": args.examples_dir,
        "sklearn": sklearn_images_dir(),
        "kde": args.kde_dir,
        "lomiri": args.lomiri_dir,
    }
    if args.overlays is not None:
        args.overlays.mkdir(parents=True, exist_ok=True)

    header = f"{'photo':<18}{'class':<9}{'split':<9}" + "".join(
        f"{p[:22]:>24}" for p in args.providers
    )
    print("IoU(moves) / mean IoU (moves, still) / % of still pixels marked moving")
    print(header)
    table: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    per_class: dict[str, dict[str, list[float]]] = {}
    for entry in doc["photos"]:
        if args.split is not None and entry["split"] != args.split:
            continue
        path = photo_path(entry, dirs)
        if path is None:
            print(f"  skip {display_name(entry)}: not found under the {entry['source']!r} folder")
            continue
        photo = load_photo(path, entry)
        if photo is None:
            continue
        truth = rasterise(entry)
        cells = []
        for provider in args.providers:
            pred = estimate_motion_mask(photo, provider)
            result = scores(pred, truth)
            table.setdefault(provider, {}).setdefault(entry["split"], []).append(result)
            per_class.setdefault(provider, {}).setdefault(entry["class"], []).append(result[1])
            iou_text = "n/a" if np.isnan(result[0]) else f"{result[0]:.2f}"
            fm = "n/a" if np.isnan(result[2]) else f"{100 * result[2]:.0f}%"
            cells.append(f"{iou_text:>8} /{result[1]:5.2f} /{fm:>5}")
            if args.overlays is not None:
                name = f"{Path(display_name(entry)).stem}_{provider.split(':')[0]}.png"
                cv2.imwrite(str(args.overlays / name), overlay(photo, pred, truth))
        print(
            f"{display_name(entry)[:17]:<18}{entry['class']:<9}{entry['split']:<9}"
            + "".join(f"{c:>24}" for c in cells)
        )

    print("\nmeans per split: IoU(moves) over photos with moving parts / mean IoU / false-move %")
    for split in ("dev", "heldout"):
        cells = []
        for provider in args.providers:
            rows = np.array(table.get(provider, {}).get(split, []), dtype=np.float64)
            if rows.size == 0:
                cells.append(f"{'-':>24}")
                continue
            cells.append(
                f"{np.nanmean(rows[:, 0]):>8.2f} /{np.nanmean(rows[:, 1]):5.2f} /"
                f"{100 * np.nanmean(rows[:, 2]):>4.0f}%"
            )
        count = len(table.get(args.providers[0], {}).get(split, []))
        print(f"{split + f' ({count})':<36}" + "".join(f"{c:>24}" for c in cells))
    print("\nmean IoU (moves, still) per photo class")
    classes = sorted({c for p in per_class.values() for c in p})
    for cls in classes:
        cells = [f"{np.mean(per_class[p].get(cls, [np.nan])):>24.2f}" for p in args.providers]
        count = len(per_class[args.providers[0]].get(cls, []))
        print(f"{cls + f' ({count})':<36}" + "".join(cells))

    print(f"\nseconds per photo (median of {args.repeats}; OpenCV with its default threads)")
    sizes = [(256, 160), (1024, 640)]
    for provider in args.providers:
        times = speed(provider, sizes, args.repeats)
        print(
            f"  {provider:<40}"
            + "  ".join(
                f"{w}x{h}: {t * 1000:7.1f} ms" for (w, h), t in zip(sizes, times, strict=True)
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
