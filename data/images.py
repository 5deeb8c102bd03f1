"""Photo input for the generators: find images, load any mode safely, name outputs.

Every generator behind ``sample.py`` reads user photos through this module, so a photo
that one method accepts, every method accepts:

* ``collect_images(spec)``: a file, a folder (its images, sorted) or a glob pattern.
* ``load_image(path)``: EXIF rotation applied; RGBA, LA, P, grayscale, 16-bit, 32-bit
  float and CMYK converted to 8-bit RGB (or RGBA with ``keep_alpha``); very large images
  downscaled while decoding (JPEG draft mode) so memory stays bounded; a missing,
  non-image or truncated file raises ``ValueError``/``FileNotFoundError`` naming it.
* ``output_stems(paths)``: one output name per input, unique even when two folders hold a
  ``photo.jpg``.
"""

from __future__ import annotations

import glob
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")

# Longest side kept when decoding; larger photos are reduced on load. Every generator
# works at a few hundred to ~1000 pixels, and a 10000x10000 RGB photo would take 300 MB.
DEFAULT_MAX_SIDE = 2048

# The largest photo decoded at all (pixels): 20000 x 20000, 1.2 GB as 8-bit RGB before it is
# reduced to ``max_side``. PIL's own guard (89 MP) would reject or warn about ordinary
# panoramas and scans; above this bound a file is refused as a likely decompression bomb.
MAX_DECODE_PIXELS = 20000 * 20000

# The smallest photo we accept: below this a generator's own resize would be a 10x+
# upscale of almost no information, which is never what the user meant.
MIN_SIDE = 32


def collect_images(spec: str | Path) -> list[Path]:
    """Image files named by ``spec``: a file, a folder (not recursive) or a glob pattern.

    Raises:
        FileNotFoundError: nothing exists at ``spec`` / the pattern matches nothing.
        ValueError: a folder or pattern with no image files in it.
    """
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(
                f"{path}: folder holds no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        return files
    if glob.has_magic(spec):
        matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not matches:
            raise FileNotFoundError(f"{spec}: the pattern matches no file")
        files = [p for p in matches if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise ValueError(f"{spec}: the pattern matches no image file")
        return files
    raise FileNotFoundError(f"{spec}: no such file or folder")


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float single-channel images -> 8-bit "L", scaled by range."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return image.convert("L")
    array = array.astype(np.float64)
    if np.issubdtype(np.asarray(image).dtype, np.floating):
        finite = array[np.isfinite(array)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
    else:
        low, high = 0.0, 65535.0 if array.max() > 255 else 255.0
    scaled = (np.nan_to_num(array, nan=low) - low) / max(high - low, 1e-12)
    return Image.fromarray(np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8), "L")


def load_image(
    path: str | Path, keep_alpha: bool = False, max_side: int | None = DEFAULT_MAX_SIDE
) -> Image.Image:
    """Decode a photo into an 8-bit RGB (or RGBA with ``keep_alpha``) ``PIL.Image``.

    EXIF orientation is applied, so the result is upright as a viewer shows it. Without
    ``keep_alpha``, transparent pixels are composited on white (what a viewer shows).

    Args:
        keep_alpha: return RGBA (alpha 255 where the file has none).
        max_side: reduce larger images so the longest side is at most this (None: never).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not an image, truncated or corrupt, or smaller than ``MIN_SIDE`` px.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    pil_limit = Image.MAX_IMAGE_PIXELS
    try:
        # Our bound replaces PIL's: large photos are decoded (reduced below), not warned about.
        Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
                if width * height > MAX_DECODE_PIXELS:
                    raise ValueError(
                        f"{path}: {width}x{height} px is too large to decode safely "
                        f"(at most {MAX_DECODE_PIXELS / 1e6:.0f} megapixels)"
                    )
                if max_side is not None and opened.format == "JPEG":
                    # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: bounded memory for huge JPEGs.
                    opened.draft("RGB", (max_side, max_side))
                opened.load()
                image = ImageOps.exif_transpose(opened)
    except Image.DecompressionBombError:
        raise ValueError(
            f"{path}: too large to decode safely (at most {MAX_DECODE_PIXELS / 1e6:.0f} megapixels)"
        ) from None
    except UnidentifiedImageError as error:
        raise ValueError(f"{path}: not an image file (cannot decode: {error})") from None
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path}: truncated or corrupt image ({error})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit

    if min(image.size) < MIN_SIDE:
        raise ValueError(
            f"{path}: {image.size[0]}x{image.size[1]} px is too small "
            f"(at least {MIN_SIDE} px per side is needed)"
        )
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)

    return to_rgb(image, keep_alpha=keep_alpha)


def to_rgb(image: Image.Image, keep_alpha: bool = False) -> Image.Image:
    """Any decoded PIL image -> upright 8-bit RGB (or RGBA with ``keep_alpha``).

    Applies EXIF orientation (a no-op if already applied); 16-bit, 32-bit and float modes
    are scaled to 8 bits; CMYK, YCbCr, palette, grayscale and 1-bit become RGB; without
    ``keep_alpha``, transparency is composited on white (what a viewer shows).
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = _to_8bit(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        if keep_alpha:
            return rgba
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    rgb = image.convert("RGB")  # CMYK, YCbCr, L, P, 1 -> RGB
    return rgb.convert("RGBA") if keep_alpha else rgb


def output_stems(paths: list[Path]) -> dict[Path, str]:
    """One distinct output name (no extension) per input path.

    The file stem where it is unique; otherwise ``<parent>_<stem>``, and a numeric suffix
    if even that collides (``a/photo.jpg``, ``b/photo.jpg`` -> ``a_photo``, ``b_photo``).
    """
    stems: dict[Path, str] = {}
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    used: set[str] = set()
    for path in paths:
        stem = path.stem if counts[path.stem] == 1 else f"{path.parent.name}_{path.stem}"
        candidate, index = stem, 1
        while candidate in used:
            index += 1
            candidate = f"{stem}_{index}"
        used.add(candidate)
        stems[path] = candidate
    return stems
