"""Synthetic oscillation: a real still photo in, a video of natural-looking motion out,
together with its exact spectral volume.

Real oscillating footage is scarce offline, so the motion model's training set is built
mostly from real photos animated here. The motion follows image-space modal analysis
(Davis et al., "Image-Space Modal Bases for Plausible Manipulation of Objects in Video",
SIGGRAPH Asia 2015): a pixel's displacement is a superposition of a few modes, each a
spatial shape (complex: amplitude and phase per pixel) oscillating at one frequency::

    D_t(p) = sum_m Re( M_m(p) * (exp(2j * pi * f_m * t / fps) - 1) )

Subtracting the t = 0 value makes ``D_0 = 0`` exactly (as for displacement measured by
optical flow from frame 0); that only adds a constant, i.e. the DC bin.

Every mode frequency lies ON an FFT bin, ``f = k * fps / T`` with an integer k in
[1, K-1] (and 0.2..3 Hz by default), so the motion is periodic over the clip and exactly
band-limited: its spectral volume is the exact description of the motion, not an
approximation (``S_k = sum M_m / 2`` over modes at bin k, ``S_0 = -sum Re M_m``), and
``spectral_to_displacement(spectral) == displacement`` to float precision.

What moves is decided from cheap image cues (``estimate_motion_regions``):
vegetation (green by the excess-green index and textured) sways, mostly horizontally,
with large smooth mode shapes and amplitude falling as 1/f (motion power falls steeply
with frequency in real footage, the paper's Figure 3); water (blue-ish, textured, below the sky) ripples with small amplitude,
fine travelling-wave shapes and higher frequencies; sky (bright, smooth, near the top)
and everything else stays still.

Frames are rendered by forward-warping the photo: ``frame_t(p + D_t(p)) = photo(p)``,
with softmax splatting (``splatting.render_frames``); holes the warp leaves are filled
with the photo's own pixel at that place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from data.config import MotionConfig
from data.io_utils import write_json_atomic, write_npz_atomic
from data.spectral import displacement_to_spectral, spectral_to_displacement
from splatting import render_frames

# Frequencies of natural oscillation that the generator draws from (Hz).
DEFAULT_FREQ_RANGE_HZ = (0.2, 3.0)
# RMS (pixels) of a vegetation mode at the lowest allowed frequency: the default, and the
# range a dataset draws from (see ``synthesize_motion``).
DEFAULT_AMPLITUDE = 1.5
DEFAULT_AMPLITUDE_RANGE = (0.75, 2.25)


@dataclass
class SyntheticClip:
    """One synthesised clip.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB; ``frames[0]`` is the photo.
        displacement: ``(T, H, W, 2)`` float32 pixels, ``[..., 0]`` = x (right),
            ``[..., 1]`` = y (down); ``displacement[0] = 0``.
        spectral: ``(K, 4, H, W)`` float32, ``displacement_to_spectral(displacement, K)``,
            exact (the motion is band-limited).
        motion_mask: ``(H, W)`` float32 in [0, 1], where motion was allowed.
        metadata: seed, amplitude, the modes (region, bin, frequency, amplitude) and the
            ``MotionConfig`` as a dict.
    """

    frames: np.ndarray
    displacement: np.ndarray
    spectral: np.ndarray
    motion_mask: np.ndarray
    metadata: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Where things move: regions from image cues
# --------------------------------------------------------------------------------------


def _smoothstep(x: np.ndarray, low: float, high: float) -> np.ndarray:
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def estimate_motion_regions(image: np.ndarray) -> dict[str, np.ndarray]:
    """Soft masks of vegetation, water and sky from colour and texture.

    Cues (all on RGB in [0, 1]; chromaticity r, g, b = R, G, B / (R + G + B)), windows are
    Gaussian with sigma 2% of the short side:
      - texture: local RMS of the grey-level gradient, 0 below 0.01 and 1 above 0.05
        intensity per pixel;
      - straight structure: coherence of the local structure tensor
        ((l1 - l2) / (l1 + l2) of its eigenvalues): near 1 along the straight edges of
        buildings, poles and frames, low in the isotropic texture of foliage and ripples;
        it vetoes water from 0.5 to 0.8 (not vegetation: leaf blades have straight edges);
      - vegetation: excess-green index 2g - r - b from 0.03 to 0.13, and green at least as
        strong as red (g - r from -0.02 to 0.01, which rules out yellow and brown), times
        (0.4 + 0.6 * texture), so that smooth green (defocused foliage, a painted wall)
        moves less;
      - sky: bright (max channel from 0.45 to 0.6), smooth, in the upper 60% of the
        image (weight falling linearly with height);
      - water: blue-ish (b - r from 0.03 to 0.1), not bright (max channel below 0.7 to
        0.9, which rules out clouds), at least a little texture, in the lower part of the
        image (weight rising from 45% to 70% of the height), not vegetation, not sky and
        not of the sky's colour (Gaussian in RGB, sigma 0.2, around the median colour of
        confident sky, if at least 1% of the image is), which keeps blue sky between
        clouds still.
    Each mask is then smoothed (sigma 1.5% of the short side) so that motion fades out
    over a few pixels at region borders instead of tearing the picture.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.

    Returns:
        ``{"vegetation", "water", "sky"}``: ``(H, W)`` float32 masks in [0, 1].
    """
    rgb = _check_image(image).astype(np.float32) / 255.0
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


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}"
        )
    return image


# --------------------------------------------------------------------------------------
# Modes: frequencies on FFT bins, smooth random shapes
# --------------------------------------------------------------------------------------


def allowed_bins(
    config: MotionConfig, freq_range_hz: tuple[float, float] = DEFAULT_FREQ_RANGE_HZ
) -> np.ndarray:
    """FFT bins k in [1, K-1], below Nyquist, with ``k * fps / T`` inside ``freq_range_hz``."""
    bins = np.arange(1, config.num_freqs)
    freqs = bins * config.fps / config.num_frames
    keep = (
        (freqs >= freq_range_hz[0] - 1e-9)
        & (freqs <= freq_range_hz[1] + 1e-9)
        & (2 * bins < config.num_frames)  # the Nyquist bin cannot carry a phase
    )
    if not keep.any():
        raise ValueError(
            f"no FFT bin k * fps / T (step {config.fps / config.num_frames:.3g} Hz, k < "
            f"{config.num_freqs}) falls in {freq_range_hz} Hz: use a longer clip, more "
            "frequencies or a wider frequency range"
        )
    return bins[keep]


def smooth_random_field(
    height: int, width: int, scale_px: float, rng: np.random.Generator
) -> np.ndarray:
    """A ``(H, W)`` float32 Gaussian random field with unit std, smooth over ``scale_px``.

    White noise on a coarse grid (one node every ``scale_px`` pixels), upsampled bicubically.
    """
    grid_h = max(2, math.ceil(height / scale_px) + 2)
    grid_w = max(2, math.ceil(width / scale_px) + 2)
    coarse = rng.standard_normal((grid_h, grid_w)).astype(np.float32)
    fine = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return (fine - fine.mean()) / (fine.std() + 1e-6)


@dataclass
class _RegionStyle:
    num_modes: int
    amplitude: float  # relative to the clip's amplitude
    shape_scale: float  # spatial smoothness of mode shapes, fraction of the short side
    y_ratio: tuple[float, float]  # vertical / horizontal amplitude, drawn uniformly
    freq_range_hz: tuple[float, float]
    wavelength: tuple[float, float] | None  # travelling ripples (fraction of short side)


_STYLES = {
    # Leaves and branches: large coherent sway, mostly horizontal, standing modes.
    "vegetation": _RegionStyle(4, 1.0, 0.4, (0.15, 0.4), (0.0, math.inf), None),
    # Water: small ripples, fine travelling waves, higher frequencies.
    "water": _RegionStyle(3, 0.3, 0.06, (0.7, 1.3), (0.6, math.inf), (0.06, 0.2)),
}


def _sample_modes(
    masks: dict[str, np.ndarray],
    config: MotionConfig,
    rng: np.random.Generator,
    amplitude: float,
    freq_range_hz: tuple[float, float],
) -> tuple[np.ndarray, list[dict]]:
    """Draw modes and sum them per bin: ``coeff (K, H, W, 2)`` complex, and their records.

    ``coeff[k]`` holds ``sum M_m`` over the modes at bin k (for x and y). A mode's shape
    has RMS ``amplitude * region amplitude * f_ref / f`` (times a random 0.5..1) over its
    region, f_ref the lowest allowed frequency.
    """
    height, width = next(iter(masks.values())).shape
    short = min(height, width)
    bins = allowed_bins(config, freq_range_hz)
    coeff = np.zeros((config.num_freqs, height, width, 2), dtype=np.complex128)
    f_ref = bins[0] * config.fps / config.num_frames  # amplitude = A * f_ref / f
    records = []
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    for region, style in _STYLES.items():
        mask = masks[region]
        if mask.max() < 0.05:
            continue
        lo = max(freq_range_hz[0], style.freq_range_hz[0])
        hi = min(freq_range_hz[1], style.freq_range_hz[1])
        freqs = bins * config.fps / config.num_frames
        region_bins = bins[(freqs >= lo - 1e-9) & (freqs <= hi + 1e-9)]
        if region_bins.size == 0:
            region_bins = bins
        for _ in range(style.num_modes):
            # Any bin of the band equally likely, amplitude falling as 1/f with some
            # spread: the expected power per bin then falls as 1/f^2.
            k = int(rng.choice(region_bins))
            freq = k * config.fps / config.num_frames
            mode_amp = amplitude * style.amplitude * (f_ref / freq) * rng.uniform(0.5, 1.0)
            scale = style.shape_scale * short
            shape = np.empty((height, width, 2), dtype=np.complex128)
            y_ratio = rng.uniform(*style.y_ratio)
            for axis, axis_amp in ((0, 1.0), (1, y_ratio)):
                # Coherent part (the whole region sways together) + smooth variation,
                # with a little phase variation across space; then a random phase.
                real = rng.normal(0.0, 0.8) + smooth_random_field(height, width, scale, rng)
                imag = 0.3 * smooth_random_field(height, width, scale, rng)
                shape[..., axis] = axis_amp * (real + 1j * imag)
                if style.wavelength is not None:
                    wavelength = rng.uniform(*style.wavelength) * short
                    angle = rng.uniform(0, 2 * np.pi)
                    ramp = (np.cos(angle) * cols + np.sin(angle) * rows) / wavelength
                    shape[..., axis] *= np.exp(2j * np.pi * ramp)
            rms = np.sqrt((np.abs(shape[..., 0]) ** 2 * mask).sum() / (mask.sum() + 1e-6))
            shape *= mode_amp / (rms + 1e-6) * np.exp(1j * rng.uniform(0, 2 * np.pi))
            coeff[k] += shape * mask[..., None]
            records.append(
                {"region": region, "bin": k, "frequency_hz": freq, "amplitude_px": float(mode_amp)}
            )
    return coeff, records


def modes_to_spectral(coeff: np.ndarray) -> np.ndarray:
    """Analytic spectral volume of ``D_t = sum_k Re(coeff_k (exp(2j pi k t / T) - 1))``.

    Args:
        coeff: ``(K, H, W, 2)`` complex mode sums per bin, ``coeff[0]`` unused.

    Returns:
        ``(K, 4, H, W)`` float64: bin k > 0 holds ``coeff_k / 2``, bin 0 ``-sum_k Re coeff_k``.
    """
    spectrum = coeff / 2.0
    spectrum[0] = -coeff[1:].real.sum(axis=0)
    parts = np.stack([spectrum.real, spectrum.imag], axis=-1)  # (K, H, W, 2 axes, re/im)
    parts = parts.reshape(*parts.shape[:3], 4)  # re_x, im_x, re_y, im_y
    return np.moveaxis(parts, -1, 1)


def synthesize_motion(
    masks: dict[str, np.ndarray],
    config: MotionConfig = MotionConfig(),  # noqa: B008 (frozen dataclass)
    seed: int | np.random.Generator = 0,
    amplitude: float = DEFAULT_AMPLITUDE,
    freq_range_hz: tuple[float, float] = DEFAULT_FREQ_RANGE_HZ,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Modal motion for given region masks: displacement, analytic spectrum and the modes.

    Args:
        masks: ``{"vegetation", "water"}`` ``(H, W)`` in [0, 1] (a missing one is empty).
        config: T, fps and K.
        seed: seed or generator.
        amplitude: pixels; a vegetation mode at frequency f gets an RMS (over its region,
            x component) of ``amplitude * f_ref / f * U(0.5, 1)``, f_ref the lowest allowed
            frequency (0.2 Hz by default); water modes 0.3x that. The amplitude is not
            renormalised per clip, so the 1/f law holds across a dataset too.
        freq_range_hz: frequencies modes are drawn from (on FFT bins only).

    Returns:
        ``displacement (T, H, W, 2)`` float32 with ``displacement[0] = 0`` exactly,
        ``spectral (K, 4, H, W)`` float64 computed analytically from the modes (equal to
        ``displacement_to_spectral(displacement, K)`` to float32 precision), and one record
        per mode (region, bin, frequency_hz, amplitude_px: its RMS over the region).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    shapes = {m.shape for m in masks.values()}
    if len(shapes) != 1:
        raise ValueError(f"all masks must have one shape, got {sorted(shapes)}")
    (shape,) = shapes
    masks = {
        name: np.clip(np.asarray(masks.get(name, np.zeros(shape)), dtype=np.float32), 0, 1)
        for name in _STYLES
    }
    coeff, modes = _sample_modes(masks, config, rng, amplitude, freq_range_hz)
    spectral = modes_to_spectral(coeff)
    displacement = spectral_to_displacement(spectral, config.num_frames)
    displacement[0] = 0.0  # already 0 up to float rounding; make it exact
    return displacement, spectral, modes


# --------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------


def synthesize_oscillation(
    image: np.ndarray,
    config: MotionConfig = MotionConfig(),  # noqa: B008 (frozen dataclass)
    seed: int | np.random.Generator = 0,
    amplitude: float = DEFAULT_AMPLITUDE,
    freq_range_hz: tuple[float, float] = DEFAULT_FREQ_RANGE_HZ,
    masks: dict[str, np.ndarray] | None = None,
    render: bool = True,
    renderer: str = "softsplat",
) -> SyntheticClip:
    """Animate a still photo with natural-looking oscillation and return its spectral volume.

    The photo is used at its own size (resize it to ``config.size`` first for training
    data, as ``write_synthetic_dataset`` does); T, fps and K come from ``config``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB photo.
        config: clip length, frame rate and number of kept frequencies.
        seed: seed or generator for every random choice (deterministic).
        amplitude: RMS displacement (pixels) of a vegetation mode at the lowest allowed
            frequency; higher modes fall as 1/f (see ``synthesize_motion``).
        freq_range_hz: frequencies modes are drawn from (on FFT bins only).
        masks: region masks to use instead of ``estimate_motion_regions(image)``
            (``{"vegetation", "water"}``, ``(H, W)`` in [0, 1]; a missing one is empty).
        render: False skips the frame rendering (``frames`` is then None).
        renderer: a method of ``splatting.render_frames``: "softsplat" (default; softmax
            splatting weighted by motion magnitude, holes filled with the photo's pixel
            there) or "average" (plain average splatting, faster).

    Returns:
        ``SyntheticClip`` (frames, displacement, spectral, motion_mask, metadata).
    """
    image = _check_image(image)
    height, width = image.shape[:2]
    if masks is None:
        masks = estimate_motion_regions(image)
    masks = {name: masks.get(name, np.zeros((height, width), np.float32)) for name in _STYLES}
    for name, mask in masks.items():
        if mask.shape != (height, width):
            raise ValueError(f"mask {name!r} has shape {mask.shape}, image is {height}x{width}")

    displacement, _, modes = synthesize_motion(masks, config, seed, amplitude, freq_range_hz)
    spectral = displacement_to_spectral(displacement, config.num_freqs)
    frames = render_frames(image, displacement, renderer) if render else None
    motion_mask = np.clip(sum(masks.values()), 0.0, 1.0).astype(np.float32)
    metadata = {
        "seed": seed if isinstance(seed, int) else None,
        "amplitude_px": float(amplitude),
        "freq_range_hz": list(freq_range_hz),
        "modes": modes,
        "max_displacement_px": float(np.abs(displacement).max()),
        "motion_config": config.to_dict(),
    }
    return SyntheticClip(frames, displacement, spectral, motion_mask, metadata)


# --------------------------------------------------------------------------------------
# A dataset of synthetic clips on disk
# --------------------------------------------------------------------------------------


def _load_photo(photo: str | Path | np.ndarray) -> tuple[str, np.ndarray]:
    if isinstance(photo, np.ndarray):
        return "photo", _check_image(photo)
    path = Path(photo)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not an image file (cannot decode)")
    return path.stem, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_synthetic_dataset(
    photos: Iterable[str | Path | np.ndarray],
    out_dir: str | Path,
    clips_per_photo: int = 1,
    seed: int = 0,
    config: MotionConfig = MotionConfig(),  # noqa: B008 (frozen dataclass)
    amplitude_range: tuple[float, float] = DEFAULT_AMPLITUDE_RANGE,
) -> list[Path]:
    """Write ``clips_per_photo`` synthetic clips per photo: an mp4 and its exact spectrum.

    Each photo (a path or an ``(H, W, 3)`` uint8 RGB array) is resized and centre-cropped
    to ``config.size``; each clip gets an amplitude drawn uniformly from
    ``amplitude_range`` (pixels, see ``synthesize_motion``). Per clip ``<stem>.mp4``
    (H.264, ``data.video.write_mp4``) and ``<stem>.npz`` with ``spectral (K, 4, H, W)``
    float32 (exact ground truth; ``spectral_to_displacement`` gives the displacement),
    ``first_frame (H, W, 3)`` uint8 (the photo, lossless) and ``motion_mask (H, W)``
    float32; one ``manifest.json`` lists the clips with their seeds and modes. Seeds
    derive from ``seed`` alone, so the same call writes the same dataset.

    Returns:
        The written ``.mp4`` paths.
    """
    from data.video import resize_cover_crop, write_mp4

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed)
    written, manifest = [], []
    for photo_index, photo in enumerate(photos):
        name, image = _load_photo(photo)
        image = resize_cover_crop(image, config.size)
        for clip_index, clip_seed in enumerate(seeds.spawn(clips_per_photo)):
            stem = f"{photo_index:04d}_{name}_{clip_index}"
            rng = np.random.default_rng(clip_seed)
            clip = synthesize_oscillation(image, config, rng, rng.uniform(*amplitude_range))
            video_path = write_mp4(clip.frames, out_dir / f"{stem}.mp4", config.fps, overwrite=True)
            write_npz_atomic(
                out_dir / f"{stem}.npz",
                spectral=clip.spectral,
                first_frame=image,
                motion_mask=clip.motion_mask,
            )
            metadata = {k: v for k, v in clip.metadata.items() if k != "seed"}
            manifest.append(
                {
                    "video": video_path.name,
                    "spectral": f"{stem}.npz",
                    "seed": [seed, *clip_seed.spawn_key],
                    **metadata,
                }
            )
            written.append(video_path)
    write_json_atomic(
        out_dir / "manifest.json", {"motion_config": config.to_dict(), "clips": manifest}
    )
    return written
