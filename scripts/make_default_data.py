"""Write the synthetic-motion videos that train the shipped default weights.

Real photos (permissively licensed: the opencv-doc photos and scikit-image's bundled
photos) animated by ``data.synthetic`` with motion whose spectral volume is known; the
videos then go through ``prepare_data.py`` like any real footage. The bundled example
photos (``data/examples``) are left out of training so the examples show unseen photos.

    python scripts/make_default_data.py --photos ../shared/data/photos/permissive \
        --output_dir outputs/default_data/videos --clips_per_photo 6 --seed 1

``--variants_per_photo N`` adds N - 1 augmented copies of every photo before animating
it: a random crop (35-100 % of the area), a random hue rotation (most of them), and
saturation and brightness jitter. The synthetic motion is computed from the augmented
photo itself, so each copy is a consistent (photo, motion) pair; hue rotation turns
textured regions of any colour green (they then sway) and green ones other colours (they
then stay still), which is what the motion model must learn from a handful of photos.
``--video_frames`` adds the first frame of each given video (tree.avi: a real tree).

Clip amplitudes are drawn log-uniformly in 0.6-3.0 px by default (``--amplitude_range``,
``--amplitude_distribution``; docs/SYNTHETIC_DATA.md gives the calibration on tree.avi);
``--legacy_teacher`` writes data as before issue 15 (the round-1/2 data of the shipped
U-Net's ancestors, steps 1 and 2b of scripts/train_default.sh): legacy cues, amplitudes
uniform in 0.75-2.25 px, vegetation modes falling as 1/f, scikit-image's first 7 photos;
``--cues cues-round3`` the cues as they made the round-3 data (step 2d). Photos named like
the bundled examples (``data/examples``, its subfolders included) or scikit-learn's
china.jpg / flower.jpg are left out unless ``--include_examples``: they are the held-out
evaluation photos.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.images import collect_images, load_image  # noqa: E402
from data.synthetic import (  # noqa: E402
    AMPLITUDE_DISTRIBUTIONS,
    DEFAULT_AMPLITUDE_RANGE,
    LEGACY_AMPLITUDE_RANGE,
    LEGACY_VEGETATION_FALLOFF,
    VEGETATION_FALLOFF,
    write_synthetic_dataset,
)

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "data" / "examples"

# scikit-image's bundled natural photos (BSD; in the wheel, no download).
# Issue 15 adds the still textures (brick, gravel: texture alone must not mean motion) and
# the second motorcycle view.
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "grass", "camera",
    "brick", "gravel", "motorcycle_right",
)  # fmt: skip
LEGACY_SKIMAGE_PHOTOS = SKIMAGE_PHOTOS[:7]  # those of before issue 15
# Photos held out of every shipped model's training, whatever folder they come from: the
# bundled examples and scikit-learn's two photos (china.jpg is data/examples/brush's photo).
HELD_OUT_NAMES = {"china.jpg", "flower.jpg"}


def skimage_photos(out_dir: Path, names=SKIMAGE_PHOTOS) -> list[Path]:
    """Save scikit-image's natural photos ``names`` as PNG files in ``out_dir`` (RGB)."""
    import skimage

    source = Path(skimage.__file__).parent / "data"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        file = next(source.glob(f"{name}.*"))
        array = np.asarray(Image.open(file).convert("RGB"))
        path = out_dir / f"skimage_{name}.png"
        if not path.exists():
            Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def video_first_frames(videos: list[str], out_dir: Path) -> list[Path]:
    """Save the first frame of each video as a PNG in ``out_dir``."""
    from data.video import read_video

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for video in map(Path, videos):
        path = out_dir / f"{video.stem}_frame0.png"
        if not path.exists():
            Image.fromarray(read_video(video, max_frames=1).frames[0]).save(path)
        paths.append(path)
    return paths


def augment_photo(image: np.ndarray, rng: np.random.Generator, aspect: float) -> np.ndarray:
    """A random crop of ``aspect`` (width / height) with hue, saturation and value jitter."""
    import cv2

    height, width = image.shape[:2]
    area = rng.uniform(0.35, 1.0) * height * width
    crop_h = int(min(height, math.sqrt(area / aspect)))
    crop_w = int(min(width, crop_h * aspect))
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    crop = image[top : top + crop_h, left : left + crop_w]
    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV).astype(np.float32)  # H in [0, 180)
    if rng.random() < 0.7:
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(0, 180)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.7, 1.3), 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.85, 1.15), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def augmented_photos(photos: list[Path], variants: int, out_dir: Path, seed: int) -> list[Path]:
    """Each photo plus ``variants - 1`` augmented copies, saved as PNGs in ``out_dir``."""
    from data.config import MotionConfig

    config = MotionConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for photo in photos:
        paths.append(photo)
        image = np.asarray(load_image(photo))
        for index in range(1, variants):
            path = out_dir / f"{photo.stem}-aug{index:02d}.png"
            # drawn even when the file exists, so a resumed run draws the same later copies
            variant = augment_photo(image, rng, config.width / config.height)
            if not path.exists():
                Image.fromarray(variant).save(path)
            paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", nargs="+", required=True, help="files, folders or globs")
    parser.add_argument("--output_dir", help="folder for the mp4 + npz clips (required)")
    # the old spelling, kept as a hidden alias
    parser.add_argument(
        "--out", dest="output_dir", help=argparse.SUPPRESS, default=argparse.SUPPRESS
    )
    parser.add_argument("--clips_per_photo", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skimage", action="store_true", help="add scikit-image's photos")
    parser.add_argument("--video_frames", nargs="*", default=[], help="add these videos' frame 0")
    parser.add_argument(
        "--variants_per_photo", type=int, default=1, help="the photo + augmented copies"
    )
    parser.add_argument(
        "--include_examples", action="store_true", help="keep data/examples photos (eval sets)"
    )
    # The teacher; the defaults are issue 15's, --legacy_teacher those of before it.
    parser.add_argument(
        "--amplitude_range", type=float, nargs=2, metavar=("LOW", "HIGH"),
        help=f"clip amplitude in pixels (default {DEFAULT_AMPLITUDE_RANGE})",
    )  # fmt: skip
    parser.add_argument(
        "--amplitude_distribution", choices=AMPLITUDE_DISTRIBUTIONS, help="default log-uniform"
    )
    parser.add_argument(
        "--cues", choices=["cues", "cues-round3", "legacy"],
        help="region cues (default cues; cues-round3: as they made the round-3 data)",
    )  # fmt: skip
    parser.add_argument(
        "--vegetation_falloff", type=float,
        help=f"vegetation modes fall as f^-this (default {VEGETATION_FALLOFF})",
    )  # fmt: skip
    parser.add_argument(
        "--legacy_teacher", action="store_true",
        help="the teacher of the round-1/2 data (before issue 15): legacy cues, amplitudes "
        f"uniform in {LEGACY_AMPLITUDE_RANGE} px, 1/f vegetation, scikit-image's "
        f"{len(LEGACY_SKIMAGE_PHOTOS)} photos of then; a flag given as well wins",
    )  # fmt: skip
    args = parser.parse_args()
    if args.output_dir is None:
        parser.error("--output_dir is required")
    if args.legacy_teacher:
        teacher = {"amplitude_range": list(LEGACY_AMPLITUDE_RANGE), "cues": "legacy",
                   "amplitude_distribution": "uniform",
                   "vegetation_falloff": LEGACY_VEGETATION_FALLOFF}  # fmt: skip
    else:
        teacher = {"amplitude_range": list(DEFAULT_AMPLITUDE_RANGE), "cues": "cues",
                   "amplitude_distribution": "log-uniform",
                   "vegetation_falloff": VEGETATION_FALLOFF}  # fmt: skip
    for name, value in teacher.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    low, high = args.amplitude_range
    if not 0 < low <= high:
        parser.error(f"--amplitude_range must be 0 < LOW <= HIGH, got {low} {high}")
    if not (math.isfinite(args.vegetation_falloff) and args.vegetation_falloff >= 0):
        parser.error(f"--vegetation_falloff must be finite and >= 0: {args.vegetation_falloff}")

    example_names = set(HELD_OUT_NAMES)
    if EXAMPLES_DIR.is_dir():
        example_names |= {p.name for p in EXAMPLES_DIR.rglob("*") if p.is_file()}
    photos = [p for spec in args.photos for p in collect_images(spec)]
    if not args.include_examples:
        photos = [p for p in photos if p.name not in example_names]
    if args.skimage:
        names = LEGACY_SKIMAGE_PHOTOS if args.legacy_teacher else SKIMAGE_PHOTOS
        photos += skimage_photos(Path(args.output_dir).parent / "skimage_photos", names)
    photos += video_first_frames(args.video_frames, Path(args.output_dir).parent / "video_frames")
    if args.variants_per_photo > 1:
        photos = augmented_photos(
            photos,
            args.variants_per_photo,
            Path(args.output_dir).parent / "augmented_photos",
            args.seed,
        )
    print(f"{len(photos)} photos x {args.clips_per_photo} clips -> {args.output_dir}")
    for photo in photos:
        load_image(photo)  # fail early, with a clear message, on an unreadable photo
    written = write_synthetic_dataset(
        photos,
        args.output_dir,
        clips_per_photo=args.clips_per_photo,
        seed=args.seed,
        amplitude_range=(low, high),
        cues=args.cues,
        amplitude_distribution=args.amplitude_distribution,
        vegetation_falloff=args.vegetation_falloff,
    )
    print(f"wrote {len(written)} clips")


if __name__ == "__main__":
    main()
