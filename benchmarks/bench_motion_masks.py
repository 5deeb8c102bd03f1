"""Automatic motion masks against hand-annotated photos: IoU per photo, and speed.

The annotations (``benchmarks/data/motion_mask_annotations.json``) are polygons labelled
"moves" (vegetation, water) or "still", drawn by hand on each photo resized to a long side
of 320 px; only the polygons, the file name, size and sha256 are stored, never pixels.
The photos come from four places (``--*-dir``): the GPL photos in
``../shared/data/photos/gpl`` (evaluation only), the permissive ones beside them, the
repository's ``data/examples`` and scikit-learn's sample images (``china.jpg``,
``flower.jpg``; skipped when scikit-learn is not installed). A photo whose sha256 differs
from the annotation's is skipped with a note, never scored.

Per photo and provider: IoU of the "moves" class (the mask thresholded at 0.5; "n/a" when
the photo has nothing that moves), the mean IoU over the classes the annotation has (moves, still), and
the share of "still" pixels marked as moving. Means are printed per split: ``dev`` (the
photos looked at while tuning the cues) and ``heldout`` (chosen before tuning).

    python benchmarks/bench_motion_masks.py                       # cues vs legacy
    python benchmarks/bench_motion_masks.py --providers cues legacy segformer:nvidia/segformer-b0-finetuned-ade-512-512
    python benchmarks/bench_motion_masks.py --overlays outputs/motion_masks  # PNGs to look at
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
    """Median seconds per photo at each (width, height), on a real photo or a textured one."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=Path, default=ANNOTATIONS)
    parser.add_argument("--providers", nargs="+", default=["legacy", "cues"])
    parser.add_argument("--gpl-dir", type=Path, default=ROOT.parent / "shared/data/photos/gpl")
    parser.add_argument(
        "--permissive-dir", type=Path, default=ROOT.parent / "shared/data/photos/permissive"
    )
    parser.add_argument("--examples-dir", type=Path, default=ROOT / "data" / "examples")
    parser.add_argument("--overlays", type=Path, default=None, help="write PNG overlays here")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats per size")
    args = parser.parse_args(argv)

    doc = json.loads(args.annotations.read_text())
    dirs = {
        "gpl": args.gpl_dir,
        "permissive": args.permissive_dir,
        "examples": args.examples_dir,
        "sklearn": sklearn_images_dir(),
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
        path = photo_path(entry, dirs)
        if path is None:
            print(f"  skip {entry['file']}: not found under the {entry['source']!r} folder")
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
                name = f"{Path(entry['file']).stem}_{provider.split(':')[0]}.png"
                cv2.imwrite(str(args.overlays / name), overlay(photo, pred, truth))
        print(
            f"{entry['file'][:17]:<18}{entry['class']:<9}{entry['split']:<9}"
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

    print("\nseconds per photo (median of", args.repeats, "), one core where the machine allows")
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
