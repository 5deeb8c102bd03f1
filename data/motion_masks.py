"""Automatic motion masks: where in a photo things may move (vegetation, water).

One interface, pluggable providers::

    mask = estimate_motion_mask(image_rgb, provider="cues")          # offline default
    mask = estimate_motion_mask("photo.jpg")                         # a path works too
    mask = estimate_motion_mask(image_rgb, provider="segformer:nvidia/segformer-b0-finetuned-ade-512-512")

``image_rgb`` is ``(H, W, 3)`` uint8 RGB; the mask is ``(H, W)`` float32 in [0, 1], 1 = may
move (vegetation, water), 0 = keep still (sky, buildings, roads, people, animals). It is
what ``MotionPipeline(..., motion_mask=...)`` takes.

Providers (``PROVIDERS``; ``register_provider`` adds one):

* ``"cues"``: image cues only, no weights (``estimate_regions``). Finds vegetation of any
  colour (green foliage, dry grass, autumn leaves, flowers, including their defocused
  backgrounds), water of any colour (smooth horizontal bands below the horizon, the sky's
  reflection), and keeps sky, straight-edged structure (buildings, poles, rails), grey
  surfaces (roads, walls, wood) still.
* ``"legacy"``: the colour cues the synthetic teacher used up to issue 15 (green by the
  excess-green index, blue-ish water): kept to reproduce old datasets and as the
  baseline of ``benchmarks/bench_motion_masks.py``.
* ``"segformer:<folder or hub id>"``: a transformers semantic-segmentation model with
  ADE20K-style labels (any ``AutoModelForSemanticSegmentation``: SegFormer, UperNet, BEiT,
  DPT; not Mask2Former/OneFormer, whose outputs are mask queries): the mask is the summed
  probability of the classes that may move (``MOVING_LABEL_WORDS``). A hub id downloads
  the weights once (needs internet), a folder must hold a ``config.json`` of such a model.

From the command line, a mask as a PNG to edit or to pass as ``motion_mask``::

    python -m data.motion_masks photo.jpg photo_mask.png [--provider cues]

See docs/MOTION_MASKS.md for how each cue is built, the IoU against hand-annotated
photos and the speed.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

# Long side (pixels) at which the cues are computed: they describe regions, not pixels, so
# a 4000 px photo gives the same mask as its 320 px copy, at a fraction of the time.
ANALYSIS_LONG_SIDE = 320
# ``_mirror_line`` score from which a level line is taken for a calm lake's waterline: the
# one mirroring dev photo scores 0.94, every other dev photo at most 0.65.
MIRROR_MIN_SCORE = 0.8
MIRROR_MIN_MARGIN = 0.3  # over any row a band away (that dev photo: 0.82)

Provider = Callable[[np.ndarray], np.ndarray]
PROVIDERS: dict[str, Provider] = {}
# What decides where things move when a caller gives no mask (MotionPipeline, sample.py,
# the demo, evaluate.py): IoU 0.62 with hand annotations on held-out photos against 0.25
# for the old teacher's cues (docs/MOTION_MASKS.md).
DEFAULT_MASK_PROVIDER = "cues"


def register_provider(name: str, provider: Provider) -> None:
    """Make ``estimate_motion_mask(image, provider=name)`` call ``provider(image)``.

    ``provider`` takes ``(H, W, 3)`` uint8 RGB and returns an ``(H, W)`` mask in [0, 1].
    """
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ValueError(f"provider name {name!r}: use lower-case letters, digits, - and _")
    PROVIDERS[name] = provider


def estimate_motion_mask(
    image_rgb: np.ndarray | str | Path, provider: str = DEFAULT_MASK_PROVIDER
) -> np.ndarray:
    """Soft mask of what may move in a photo.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB, or the path of a photo (read with
            ``data.images.load_image``: EXIF rotation applied, any mode made RGB).
        provider: a registered name (``"cues"``, ``"legacy"``) or
            ``"segformer:<folder or hub id>"``.

    Returns:
        ``(H, W)`` float32 in [0, 1]; 1 = may move (vegetation, water), 0 = still.

    Raises:
        ValueError: not an ``(H, W, 3)`` uint8 image (or a file that is not an image), or
            an unknown provider.
        FileNotFoundError: a photo or segmentation folder that does not exist.
    """
    if isinstance(image_rgb, (str, Path)):
        from data.images import load_image

        image_rgb = np.asarray(load_image(image_rgb))
    image = check_image(image_rgb)
    name, argument = check_provider(provider)
    if name == "segformer":
        mask = segmentation_motion_mask(image, argument)
    else:
        mask = PROVIDERS[name](image)
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"provider {provider!r} returned a mask of shape {mask.shape}, "
            f"image is {image.shape[0]}x{image.shape[1]}"
        )
    return np.clip(mask, 0.0, 1.0)


def check_provider(provider: str) -> tuple[str, str]:
    """``provider`` -> ``(name, argument)``, or ValueError naming the known providers (cheap:
    nothing is loaded, so a command line can check it before any work)."""
    name, _, argument = str(provider).partition(":")
    if name == "segformer":
        if not argument:
            raise ValueError(
                "provider 'segformer' needs a model: 'segformer:<folder or hub id>', e.g. "
                "'segformer:nvidia/segformer-b0-finetuned-ade-512-512'"
            )
        return name, argument
    if name in PROVIDERS and not argument:
        return name, argument
    known = ", ".join([*sorted(PROVIDERS), "segformer:<folder or hub id>"])
    raise ValueError(f"unknown motion-mask provider {provider!r} (known: {known})")


def check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` if it is ``(H, W, 3)`` uint8 RGB of at least 2x2, else raise."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}"
        )
    if min(image.shape[:2]) < 2:
        raise ValueError(f"image is too small: {image.shape[1]}x{image.shape[0]} pixels")
    return image


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """0 below ``low``, 1 above ``high``, a smooth cubic ramp between (``low > high`` flips it)."""
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _resize_long_side(image: np.ndarray, long_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = long_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(2, round(width * scale)), max(2, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _upsample(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)


def _hue_band(hue: np.ndarray, low: float, high: float, soft: float) -> np.ndarray:
    """1 inside the hue band [low, high] degrees, falling to 0 over ``soft`` degrees outside
    (the band may wrap through 0/360)."""
    centre = (low + high) / 2.0 if low <= high else ((low + high + 360.0) / 2.0) % 360.0
    half = ((high - low) % 360.0) / 2.0
    distance = np.abs((hue - centre + 180.0) % 360.0 - 180.0)  # 0..180 from the centre
    return _smoothstep(distance, half + soft, half)


# --------------------------------------------------------------------------------------
# The "cues" provider
# --------------------------------------------------------------------------------------


def _structure(grey: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local gradient RMS, structure-tensor coherence and the share of vertical gradient.

    Returns ``(rms, coherence, vertical)``, each ``(H, W)``: ``rms`` in grey levels per
    pixel (grey in [0, 1]); ``coherence`` = (l1 - l2) / (l1 + l2) of the tensor's
    eigenvalues (1 along a straight edge, ~0 in isotropic texture); ``vertical`` =
    Jyy / (Jxx + Jyy) (near 1 in horizontal bands, where intensity changes along y).
    """
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    jxx, jyy, jxy = _blur(gx * gx, sigma), _blur(gy * gy, sigma), _blur(gx * gy, sigma)
    energy = jxx + jyy + 1e-7
    coherence = np.sqrt((jxx - jyy) ** 2 + 4.0 * jxy**2) / energy
    return np.sqrt(energy), coherence, jyy / energy


def _long_lines(grey: np.ndarray, short: int) -> np.ndarray:
    """Density of long straight edges: Canny edges, probabilistic Hough segments at least
    12% of the short side long, drawn 1 px wide and blurred (sigma 3% of the short side),
    scaled so that a pixel among a few parallel segments (a facade, a window grid) is ~1."""
    edges = cv2.Canny(np.clip(grey * 255.0, 0, 255).astype(np.uint8), 40, 120)
    min_length = max(8, int(0.12 * short))
    segments = cv2.HoughLinesP(
        edges, 1, np.pi / 180, threshold=max(8, min_length // 2), minLineLength=min_length,
        maxLineGap=2,
    )  # fmt: skip
    lines = np.zeros_like(grey)
    if segments is not None:
        for x0, y0, x1, y1 in segments.reshape(-1, 4):
            cv2.line(lines, (int(x0), int(y0)), (int(x1), int(y1)), 1.0, 1)
    sigma = max(1.0, 0.03 * short)
    # One isolated 1 px line blurred with sigma s peaks at 1 / (sqrt(2 pi) s).
    return _blur(lines, sigma) * np.sqrt(2 * np.pi) * sigma


def _top_connected(candidate: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``candidate`` where its thresholded region is 4-connected to the top row, else 0."""
    binary = (candidate > threshold).astype(np.uint8)
    count, labels = cv2.connectedComponents(binary, connectivity=4)
    if count <= 1:
        return np.zeros_like(candidate)
    touching = np.unique(labels[0][binary[0] > 0])
    return candidate * np.isin(labels, touching).astype(np.float32)


def _mirror_line(grey: np.ndarray) -> tuple[int, float, float]:
    """The level line calm water mirrors the scene about: ``(row, score, margin)``.

    For every row y between 15 % and 90 % of the height, the band of up to 12 % of the
    height above it, flipped, is compared with the band below it by normalised
    cross-correlation of their fine horizontal structure (each row minus its blur along x,
    sigma 3 % of the width, so that vignetting and level colour gradients of sky and
    water, which correlate about any row, do not count). A reflection is what water makes
    of the scene: darker (at most 95 % of its brightness) and no sharper, so only rows
    where the band below is both are candidates (this rules out symmetric objects: a
    retina, a clock face, a letterboxed frame). A waterline is one line: ``margin`` is
    how far the best score stands above every row more than one band away (inf when
    there is none); a periodic pattern (the floors of a facade) mirrors about many rows.
    A lake reflecting its far shore scores ~0.9 at the waterline, 0.8 above the next; no
    other photo the cues were developed on scores above 0.65 (docs/MOTION_MASKS.md).
    """
    height, width = grey.shape
    fine = _blur(grey, 1.0)
    fine = fine - cv2.GaussianBlur(fine, (0, 0), sigmaX=max(1.0, 0.03 * width), sigmaY=0.5)
    band = max(4, int(0.12 * height))
    scores = {}
    for row in range(int(0.15 * height), int(0.9 * height)):
        k = min(band, row, height - row)
        above, below = fine[row - k : row][::-1], fine[row : row + k]
        power_above, power_below = np.square(above).mean(), np.square(below).mean()
        power = float(np.sqrt(power_above * power_below))
        if power < 1e-5 or power_below > power_above:  # nothing to mirror, or sharper
            continue
        if grey[row : row + k].mean() > 0.95 * grey[row - k : row].mean():  # not darker
            continue
        scores[row] = float((above * below).mean()) / power
    if not scores:
        return 0, -1.0, 0.0
    best_row = max(scores, key=scores.get)
    far = [score for row, score in scores.items() if abs(row - best_row) > band]
    margin = scores[best_row] - max(far) if far else math.inf
    return best_row, scores[best_row], margin


def estimate_regions(image_rgb: np.ndarray, round3: bool = False) -> dict[str, np.ndarray]:
    """Soft masks of vegetation, water and sky from image cues (the ``"cues"`` provider).

    The photo is analysed at ``ANALYSIS_LONG_SIDE`` px (long side); windows are given as
    a fraction of the short side s. With RGB in [0, 1], HSV from OpenCV (hue in degrees):

    * **texture**: local RMS of the grey gradient over a Gaussian window (sigma 2% s);
      **straightness**: structure-tensor coherence over a wider window (5% s), high along
      the long straight edges of buildings, rails and poles, low in foliage;
    * **sky**: smooth, bright or blue, and 4-connected to the top row (so a blue car or
      a pale wall below a roof is not sky); blue or grey, never a saturated warm colour;
    * **vegetation colour**: green-yellow-cyan hues (45-170 degrees) with some saturation,
      or saturated warm hues (flowers, autumn leaves, dry grass: 0-60 and 330-360
      degrees, saturation above ~0.35), or blue-violet flowers that are textured and
      saturated; grey (low saturation) surfaces never (roads, walls, concrete, wood);
    * **vegetation**: colour x (not straight) x (not sky), where smooth warm surfaces (a
      yellow facade) need texture; dark or defocused pixels inside vegetation (gaps
      between leaves, a blurred garden behind a flower) take the vegetation level of
      their surroundings (a wide blur, sigma 6% s);
    * **water**: below the horizon (the lowest row where sky is common), calm, level
      (intensity changes mostly along y) or glassy (a hazy blue mountain is neither: its
      faint rock texture has no direction), and either of the sky's colour (reflections:
      a lake under a sunset is orange) or blue-grey and not dark; with no sky in view,
      blue-grey and smooth anywhere. A **mirror line**
      (``_mirror_line``: the scene above a level row reflected below it, a calm lake's
      waterline) overrides the horizon: the sky ends there, and below it every calm pixel
      whose colour matches its mirror image above (darker allowed) is water too;
    * each mask is smoothed (sigma 1.5% s) so motion fades out at region borders, and
      upsampled back to the photo's size.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB.
        round3: the cues as they made issue 15's round-3 training data (2026-12-01): no
            mirror line, and water level or merely smooth instead of level or glassy
            (``scripts/make_default_data.py --cues cues-round3`` writes that data again).

    Returns:
        ``{"vegetation", "water", "sky"}``: ``(H, W)`` float32 masks in [0, 1].
    """
    image = check_image(image_rgb)
    full_h, full_w = image.shape[:2]
    small = _resize_long_side(image, ANALYSIS_LONG_SIDE)
    rgb = small.astype(np.float32) / 255.0
    height, width = rgb.shape[:2]
    short = min(height, width)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    grey = rgb.mean(axis=2)
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]

    rms, _, vertical = _structure(grey, max(1.0, 0.02 * short))
    # Share of the neighbourhood that is finely textured: ~1 in grass and foliage, low on a
    # facade whose only texture is the edges of its windows.
    gradient = (
        np.hypot(
            cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        )
        / 8.0
    )
    dense = _blur(_smoothstep(gradient, 0.015, 0.03), max(1.0, 0.04 * short))
    texture = _smoothstep(rms, 0.008, 0.04)
    _, coherence_wide, _ = _structure(grey, max(1.0, 0.05 * short))
    straight = _smoothstep(coherence_wide, 0.35, 0.65) * _smoothstep(rms, 0.01, 0.03)
    # Long straight segments count where edges are sparse (a facade, a rail); in dense
    # texture the Hough transform finds chance alignments.
    lines = _smoothstep(_long_lines(grey, short), 0.3, 0.8) * _smoothstep(dense, 0.6, 0.4)
    straight = np.maximum(straight, lines)

    # Sky: bright grey/white or blue, smooth (blue sky may carry birds and wisps), not a
    # saturated warm colour, 4-connected to the top edge. A "sky" that fills the bottom
    # of the frame as well is a close-up of a surface (water, a wall), not sky.
    blue = _hue_band(hue, 195.0, 240.0, 20.0) * _smoothstep(sat, 0.08, 0.15)
    pale = _smoothstep(sat, 0.13, 0.08) * _smoothstep(val, 0.5, 0.65)
    smooth = 1.0 - _smoothstep(rms, 0.008, 0.025)
    blue_sky = blue * _smoothstep(val, 0.35, 0.5) * (1.0 - _smoothstep(rms, 0.02, 0.05))
    sky = _top_connected(_blur(np.maximum(pale * smooth, blue_sky), max(1.0, 0.01 * short)))
    sky = _smoothstep(sky, 0.3, 0.6)
    # A sunset or dusk sky of any hue: very smooth, bright, spanning the top edge, ending
    # in a near-level line with ground below it (a flat petal does not end in a level line).
    glow = _top_connected(_smoothstep(rms, 0.01, 0.004) * _smoothstep(val, 0.45, 0.6))
    columns = glow > 0.5
    if columns[0].mean() > 0.9:
        depth = np.where(columns.all(axis=0), height, np.argmin(columns, axis=0))
        level = np.std(depth) < 0.05 * height and 0.1 * height < np.median(depth) < 0.7 * height
        if level:
            # Down to the level line, every pixel of the glow's colour is sky too (the
            # rim above the horizon is less smooth than the rest).
            glow_rgb = np.median(rgb[columns], axis=0)
            similar = _smoothstep(np.sqrt(((rgb - glow_rgb) ** 2).sum(axis=2)), 0.15, 0.08)
            above = (rows < (np.median(depth) + 0.02 * height) / height).astype(np.float32)
            sky = np.maximum(sky, np.maximum(glow, similar) * above)
    if (sky[int(0.8 * height) :] > 0.5).mean() > 0.7:
        sky = np.zeros_like(sky)
    # A calm lake mirrors its far shore: the smooth sky region may have run on into the
    # smooth water below the waterline; it ends there.
    mirror_row, mirror_score, mirror_margin = _mirror_line(grey)
    mirrored = mirror_score >= MIRROR_MIN_SCORE and mirror_margin >= MIRROR_MIN_MARGIN
    mirrored = mirrored and not round3
    if mirrored:
        sky = sky * (rows < mirror_row / max(1, height - 1)).astype(np.float32)

    # Vegetation colour: green to teal foliage (also in shade), vivid flowers and autumn
    # leaves, textured dry grass; blue-violet flowers when textured.
    greenish = np.maximum(
        _hue_band(hue, 60.0, 170.0, 15.0) * _smoothstep(sat, 0.2, 0.32),
        _hue_band(hue, 80.0, 160.0, 10.0) * _smoothstep(sat, 0.1, 0.2),  # hazy, in shade
    )
    vivid = _hue_band(hue, 345.0, 55.0, 10.0) * _smoothstep(sat, 0.6, 0.75)
    vivid = vivid * _smoothstep(val, 0.2, 0.35)
    dry = (
        _hue_band(hue, 32.0, 60.0, 8.0)
        * _smoothstep(sat, 0.25, 0.35)
        * _smoothstep(val, 0.45, 0.6)
        * _smoothstep(rms, 0.035, 0.06)
        * _smoothstep(dense, 0.45, 0.7)
    )
    violet = _hue_band(hue, 245.0, 320.0, 15.0) * _smoothstep(sat, 0.3, 0.5) * texture
    # Hue means little in near-black pixels; green survives down to darker shade.
    colour = np.maximum(
        greenish * _smoothstep(val, 0.03, 0.08),
        np.maximum.reduce([vivid, dry, violet]) * _smoothstep(val, 0.06, 0.15),
    )
    # Evidence of still things: grey surfaces (roads, concrete, walls, clouds) and browns
    # (fur, skin, bark, brick, wood).
    grey_surface = _smoothstep(sat, 0.15, 0.08) * _smoothstep(val, 0.15, 0.25)
    brown = (
        _hue_band(hue, 5.0, 40.0, 8.0) * _smoothstep(sat, 0.15, 0.25) * _smoothstep(sat, 0.75, 0.6)
    )
    still = np.maximum.reduce([grey_surface, brown, straight, sky])
    # Straight edges veto colour, except in clearly green areas (leaf veins, grass blades)
    # (and in vivid colours: petals are long and straight, facades are rarely that vivid).
    vivid_strong = vivid * _smoothstep(sat, 0.7, 0.85)
    keep = np.maximum(greenish, vivid_strong)
    vegetation = colour * (1.0 - 0.8 * straight * (1.0 - keep)) * (1.0 - sky)
    # Dark gaps and defocused backgrounds take the level of the vegetation around them;
    # other pixels without evidence of being still (small flowers, stems) most of it.
    context = _blur(vegetation, max(1.0, 0.06 * short))
    uncertain = np.maximum(1.0 - _smoothstep(val, 0.08, 0.2), 1.0 - texture)
    uncertain = np.maximum(uncertain, 0.7)
    vegetation = np.maximum(vegetation, context * uncertain * (1.0 - still))

    # Water: below the horizon, calm, horizontal, of the sky's colour (a reflection may
    # be darker) or blue-grey and not dark; with no sky in view, blue and not dark.
    sky_rows = (sky > 0.5).mean(axis=1)
    blue_water = _hue_band(hue, 175.0, 245.0, 20.0) * _smoothstep(sat, 0.08, 0.15)
    blue_water = blue_water * _smoothstep(sat, 0.6, 0.45) * _smoothstep(val, 0.3, 0.45)
    if sky_rows.max() > 0.3:
        horizon = float(np.nonzero(sky_rows > 0.3)[0].max()) / max(1, height - 1)
        below = _smoothstep(rows, horizon + 0.03, horizon + 0.08)
        sky_rgb = np.median(rgb[sky > 0.5], axis=0)
        chroma = rgb / (rgb.sum(axis=2, keepdims=True) + 1e-3)
        sky_chroma = sky_rgb / (sky_rgb.sum() + 1e-3)
        chroma_distance = np.sqrt(((chroma - sky_chroma) ** 2).sum(axis=2))
        reflection = _smoothstep(chroma_distance, 0.06, 0.025)
        reflection = reflection * _smoothstep(val, 0.25 * sky_rgb.max(), 0.45 * sky_rgb.max())
        water_colour = np.maximum(reflection, blue_water)
    else:
        below = np.ones_like(rows)
        water_colour = blue_water
    horizontal = _smoothstep(vertical, 0.5, 0.7)
    calm = 1.0 - _smoothstep(rms, 0.03, 0.06)
    if mirrored:
        # Below the waterline, a pixel of its mirror image's chromaticity is a reflection,
        # at 15-110 % of its brightness (both blurred: ripples smear a reflection).
        below = (rows >= mirror_row / max(1, height - 1)).astype(np.float32)
        smeared = _blur(rgb, max(1.0, 0.01 * short))
        mirror_rows = 2 * mirror_row - 1 - np.arange(height)
        mirror_image = smeared[np.clip(mirror_rows, 0, height - 1)]
        chroma = smeared / (smeared.sum(axis=2, keepdims=True) + 1e-3)
        mirror_chroma = mirror_image / (mirror_image.sum(axis=2, keepdims=True) + 1e-3)
        distance = np.sqrt(((chroma - mirror_chroma) ** 2).sum(axis=2))
        ratio = (smeared.mean(axis=2) + 1e-3) / (mirror_image.mean(axis=2) + 1e-3)
        reflection = _smoothstep(distance, 0.06, 0.025) * _smoothstep(ratio, 0.1, 0.15)
        reflection = reflection * _smoothstep(ratio, 1.2, 1.1) * (mirror_rows >= 0)[:, None]
        water_colour = np.maximum(water_colour, reflection)
    # Calm water is level (its ripples are horizontal) or glassy; a hazy blue mountain
    # has the sky's colour too, but an isotropic rock texture of a few grey levels.
    glassy = smooth if round3 else 1.0 - _smoothstep(rms, 0.006, 0.012)
    water = water_colour * below * calm * np.maximum(horizontal, glassy)
    # Straight edges veto water unless they are level (ripples, the far shore).
    water = water * (1.0 - sky) * (1.0 - 0.8 * straight * (1.0 - horizontal))
    vegetation = vegetation * (1.0 - water)

    sigma = max(1.0, 0.015 * short)
    out = {}
    for name, mask in (("vegetation", vegetation), ("water", water), ("sky", sky)):
        mask = np.clip(_blur(mask.astype(np.float32), sigma), 0.0, 1.0)
        out[name] = np.clip(_upsample(mask, full_h, full_w), 0.0, 1.0)
    return out


def cues_motion_mask(image_rgb: np.ndarray) -> np.ndarray:
    """The ``"cues"`` provider: vegetation + water of ``estimate_regions``, clipped to [0, 1]."""
    regions = estimate_regions(image_rgb)
    return np.clip(regions["vegetation"] + regions["water"], 0.0, 1.0)


# --------------------------------------------------------------------------------------
# The "legacy" provider: the teacher's cues before issue 15
# --------------------------------------------------------------------------------------


def estimate_regions_legacy(image: np.ndarray) -> dict[str, np.ndarray]:
    """The region cues of ``data.synthetic`` up to issue 15 (green vegetation, blue water).

    Cues (all on RGB in [0, 1]; chromaticity r, g, b = R, G, B / (R + G + B)), windows are
    Gaussian with sigma 2% of the short side: texture (local RMS of the grey-level
    gradient, 0.01 -> 0.05); straight structure (structure-tensor coherence 0.5 -> 0.8,
    vetoes water); vegetation = excess green 2g - r - b (0.03 -> 0.13) x green >= red
    (g - r, -0.02 -> 0.01) x (0.4 + 0.6 texture); sky = bright (max channel 0.45 -> 0.6),
    smooth, upper 60%; water = blue-ish (b - r, 0.03 -> 0.1), not bright, a little
    textured, lower part of the image, not vegetation, not sky, not of the sky's colour.
    Each mask is smoothed with sigma 1.5% of the short side. Computed at full resolution.

    Returns:
        ``{"vegetation", "water", "sky"}``: ``(H, W)`` float32 masks in [0, 1].
    """
    rgb = check_image(image).astype(np.float32) / 255.0
    height, width = rgb.shape[:2]
    short = min(height, width)
    window = max(1.0, 0.02 * short)
    total = rgb.sum(axis=2) + 1e-3
    r, g, b = (rgb[..., c] / total for c in range(3))

    grey = rgb.mean(axis=2)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    jxx, jyy, jxy = _blur(gx * gx, window), _blur(gy * gy, window), _blur(gx * gy, window)
    energy = jxx + jyy
    local_rms = np.sqrt(energy)
    texture = _smoothstep(local_rms, 0.01, 0.05)
    coherence = np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (energy + 1e-6)
    free = 1.0 - _smoothstep(coherence, 0.5, 0.8)

    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    greenness = _smoothstep(2 * g - r - b, 0.03, 0.13) * _smoothstep(g - r, -0.02, 0.01)
    vegetation = greenness * (0.4 + 0.6 * texture)

    top_prior = np.clip(1.0 - rows / 0.6, 0.0, 1.0)
    bright = _smoothstep(rgb.max(axis=2), 0.45, 0.6)
    sky = bright * (1.0 - texture) * top_prior

    low_prior = _smoothstep(rows, 0.45, 0.7)
    blueness = _smoothstep(b - r, 0.03, 0.1) * (1.0 - _smoothstep(rgb.max(axis=2), 0.7, 0.9))
    water = blueness * _smoothstep(local_rms, 0.004, 0.02) * low_prior * free
    water = water * (1.0 - sky) * (1.0 - greenness)
    confident_sky = sky > 0.5
    if confident_sky.mean() >= 0.01:
        sky_colour = np.median(rgb[confident_sky], axis=0)
        distance2 = ((rgb - sky_colour) ** 2).sum(axis=2)
        water = water * (1.0 - np.exp(-distance2 / (2 * 0.2**2)))

    sigma = max(1.0, 0.015 * short)
    return {
        name: np.clip(_blur(mask.astype(np.float32), sigma), 0.0, 1.0)
        for name, mask in (("vegetation", vegetation), ("water", water), ("sky", sky))
    }


def legacy_motion_mask(image_rgb: np.ndarray) -> np.ndarray:
    """The ``"legacy"`` provider: vegetation + water of ``estimate_regions_legacy``."""
    regions = estimate_regions_legacy(image_rgb)
    return np.clip(regions["vegetation"] + regions["water"], 0.0, 1.0)


register_provider("cues", cues_motion_mask)
register_provider("legacy", legacy_motion_mask)


# --------------------------------------------------------------------------------------
# The "segformer:" provider: a transformers semantic-segmentation model
# --------------------------------------------------------------------------------------

# A class may move when one of the words of its label is here. ADE20K spells labels like
# "plant;flora;plant;life", "palm;palm;tree", "waterfall;falls"; COCO-stuff like
# "tree-merged"; Cityscapes "vegetation". Words, not substrings: "street" is no "tree".
MOVING_LABEL_WORDS = frozenset(
    {
        "tree", "trees", "grass", "plant", "plants", "flora", "flower", "flowers", "palm",
        "bush", "shrub", "hedge", "foliage", "leaves", "leaf", "vegetation", "reed", "reeds",
        "field", "water", "sea", "river", "waterfall", "falls", "lake", "pond", "fountain",
    }
)  # fmt: skip


def moving_label_ids(id2label: dict) -> list[int]:
    """Ids of the classes whose label (any of its words) names something that may move."""
    moving = []
    for index, label in id2label.items():
        words = set(re.findall(r"[a-z]+", str(label).lower()))
        if words & MOVING_LABEL_WORDS:
            moving.append(int(index))
    return sorted(moving)


@lru_cache(maxsize=2)
def _load_segmentation_model(name_or_path: str):
    """(model, processor or None, moving class ids); cached so a batch of photos loads once."""
    import torch  # noqa: F401 (transformers needs it; imported here to keep cues torch-free)
    from transformers import AutoConfig, AutoModelForSemanticSegmentation

    path = Path(name_or_path).expanduser()
    looks_local = (
        path.exists() or name_or_path.startswith((".", "/", "~")) or (name_or_path.count("/") != 1)
    )
    if looks_local:
        if not path.is_dir():
            raise FileNotFoundError(f"{name_or_path}: no such segmentation model folder")
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{name_or_path}: not a transformers model folder (no config.json); save one "
                "with save_pretrained or give a hub id"
            )
    try:
        config = AutoConfig.from_pretrained(str(path) if looks_local else name_or_path)
    except (OSError, ValueError) as error:
        where = "a model config" if looks_local else "it: no such folder, nor a reachable hub id"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ValueError(f"{name_or_path}: cannot load {where} ({first_line})") from error
    try:
        model = AutoModelForSemanticSegmentation.from_pretrained(
            str(path) if looks_local else name_or_path, config=config
        )
    except ValueError as error:
        raise ValueError(
            f"{name_or_path}: a {config.model_type!r} model is not a semantic-segmentation "
            "model (need e.g. SegFormer, UperNet, BEiT or DPT with a segmentation head)"
        ) from error
    model.eval()
    id2label = getattr(model.config, "id2label", None) or {}
    moving = moving_label_ids(id2label)
    if not moving:
        raise ValueError(
            f"{name_or_path}: none of its {len(id2label)} class labels names vegetation or "
            "water (expected ADE20K-style labels such as 'tree', 'grass', 'water')"
        )
    processor = None
    try:
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(str(path) if looks_local else name_or_path)
    except (OSError, ValueError):
        processor = None  # no preprocessor_config.json: ImageNet normalisation below
    return model, processor, tuple(moving)


def segmentation_motion_mask(
    image_rgb: np.ndarray, name_or_path: str, input_long_side: int = 512
) -> np.ndarray:
    """Motion mask from a semantic-segmentation model: P(class may move) per pixel.

    The photo is resized (long side ``input_long_side``, aspect kept; or by the model's
    image processor when the folder has one), the model's logits are upsampled to the
    photo's size, softmaxed over classes, and the probabilities of the classes in
    ``moving_label_ids`` are summed.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB.
        name_or_path: a local model folder (``save_pretrained`` output) or a hub id.
        input_long_side: long side fed to the model when it has no image processor.

    Returns:
        ``(H, W)`` float32 in [0, 1].
    """
    import torch

    image = check_image(image_rgb)
    model, processor, moving = _load_segmentation_model(str(name_or_path))
    height, width = image.shape[:2]
    if processor is not None:
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    else:
        small = cv2.resize(
            image,
            _fit_long_side(width, height, input_long_side),
            interpolation=cv2.INTER_AREA,
        )
        mean = np.array([0.485, 0.456, 0.406], np.float32)
        std = np.array([0.229, 0.224, 0.225], np.float32)
        array = (small.astype(np.float32) / 255.0 - mean) / std
        pixels = torch.from_numpy(array.transpose(2, 0, 1).copy())[None]
    parameter = next(model.parameters())
    with torch.no_grad():
        logits = model(pixel_values=pixels.to(parameter.device, parameter.dtype)).logits
        logits = torch.nn.functional.interpolate(
            logits.float(), size=(height, width), mode="bilinear", align_corners=False
        )
        probs = logits.softmax(dim=1)[0, list(moving)].sum(dim=0)
    return probs.clamp(0.0, 1.0).cpu().numpy().astype(np.float32)


def _fit_long_side(width: int, height: int, long_side: int) -> tuple[int, int]:
    scale = long_side / max(width, height)
    # multiples of 32 keep every stage of a hierarchical encoder aligned
    return (max(32, round(width * scale / 32) * 32), max(32, round(height * scale / 32) * 32))


# --------------------------------------------------------------------------------------
# Command line: photo in, 8-bit PNG mask out
# --------------------------------------------------------------------------------------


def save_mask_png(mask: np.ndarray, path: str | Path, overwrite: bool = False) -> Path:
    """Write an ``(H, W)`` mask in [0, 1] as an 8-bit grey PNG (255 = may move), atomically.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        ValueError: ``path`` does not end in ``.png``.
    """
    from data.io_utils import atomic_write

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: the mask is written as PNG; name it *.png")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists (pass --overwrite to replace it)")
    grey = np.clip(np.rint(np.asarray(mask, np.float32) * 255.0), 0, 255).astype(np.uint8)

    def write(tmp: Path) -> None:
        ok, encoded = cv2.imencode(".png", grey)
        if not ok:
            raise ValueError(f"{path}: cannot encode the mask as PNG")
        tmp.write_bytes(encoded.tobytes())

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, write)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.motion_masks",
        description="Write the automatic motion mask of a photo as a PNG (white = may move).",
    )
    parser.add_argument("photo", type=Path)
    parser.add_argument("out", type=Path, help="the mask, *.png, the photo's size")
    parser.add_argument(
        "--provider", default="cues",
        help="cues (default), legacy, or segformer:<folder or hub id>",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        parser.error(f"{args.out}: exists (pass --overwrite to replace it)")
    mask = estimate_motion_mask(args.photo, args.provider)
    save_mask_png(mask, args.out, overwrite=args.overwrite)
    print(
        f"{args.out}: {mask.shape[1]}x{mask.shape[0]}, {100 * (mask >= 0.5).mean():.0f}% may move"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
