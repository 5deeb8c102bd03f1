"""Write the synthetic-motion videos that train the shipped default weights.

Real photos (permissively licensed: the opencv-doc photos and scikit-image's bundled
photos) animated by ``data.synthetic`` with motion whose spectral volume is known; the
videos then go through ``prepare_data.py`` like any real footage. The bundled example
photos (``data/examples``) are left out of training so the examples show unseen photos.

    python scripts/make_default_data.py --photos ../shared/data/photos/permissive \
        --out outputs/default_data/videos --clips_per_photo 6 --seed 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.images import collect_images, load_image  # noqa: E402
from data.synthetic import write_synthetic_dataset  # noqa: E402

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "data" / "examples"

# scikit-image's bundled natural photos (BSD; in the wheel, no download).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "grass", "camera")


def skimage_photos(out_dir: Path) -> list[Path]:
    """Save scikit-image's natural photos as PNG files in ``out_dir`` (RGB)."""
    import skimage

    source = Path(skimage.__file__).parent / "data"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SKIMAGE_PHOTOS:
        file = next(source.glob(f"{name}.*"))
        array = np.asarray(Image.open(file).convert("RGB"))
        path = out_dir / f"skimage_{name}.png"
        if not path.exists():
            Image.fromarray(array).save(path)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", nargs="+", required=True, help="files, folders or globs")
    parser.add_argument("--out", required=True, help="folder for the mp4 + npz clips")
    parser.add_argument("--clips_per_photo", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skimage", action="store_true", help="add scikit-image's photos")
    parser.add_argument(
        "--include_examples", action="store_true", help="keep data/examples photos (eval sets)"
    )
    args = parser.parse_args()

    example_names = {p.name for p in EXAMPLES_DIR.glob("*")} if EXAMPLES_DIR.is_dir() else set()
    photos = [p for spec in args.photos for p in collect_images(spec)]
    if not args.include_examples:
        photos = [p for p in photos if p.name not in example_names]
    if args.skimage:
        photos += skimage_photos(Path(args.out).parent / "skimage_photos")
    print(f"{len(photos)} photos x {args.clips_per_photo} clips -> {args.out}")
    for photo in photos:
        load_image(photo)  # fail early, with a clear message, on an unreadable photo
    written = write_synthetic_dataset(
        photos, args.out, clips_per_photo=args.clips_per_photo, seed=args.seed
    )
    print(f"wrote {len(written)} clips")


if __name__ == "__main__":
    main()
