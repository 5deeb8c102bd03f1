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

What moves is decided from cheap image cues (``estimate_motion_regions``, which calls
``data.motion_masks``): vegetation of any colour sways, mostly horizontally, with large
smooth mode shapes and amplitude falling as f^-1.5 (motion power falls steeply with
frequency in real footage, the paper's Figure 3, and 97 % of a real tree's power lies
below 0.6 Hz: docs/SYNTHETIC_DATA.md); water (calm, level, below the horizon,
of the sky's colour or blue-grey) ripples with small amplitude, fine travelling-wave
shapes and higher frequencies; sky, straight-edged structure and everything else stays
still.

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
from data.motion_masks import estimate_regions, estimate_regions_legacy
from data.spectral import displacement_to_spectral, spectral_to_displacement
from splatting import render_frames

# Frequencies of natural oscillation that the generator draws from (Hz).
DEFAULT_FREQ_RANGE_HZ = (0.2, 3.0)
# RMS (pixels) of a vegetation mode at the lowest allowed frequency: the default, and the
# range a dataset draws from, log-uniformly (see ``synthesize_motion``). 0.6 px matches
# tree.avi, a calm real tree (docs/MOTION_MASKS.md); 3.0 px is clearly visible sway.
DEFAULT_AMPLITUDE = 1.5
DEFAULT_AMPLITUDE_RANGE = (0.6, 3.0)
# The distribution datasets drew amplitudes from before issue 15 (uniform).
LEGACY_AMPLITUDE_RANGE = (0.75, 2.25)
AMPLITUDE_DISTRIBUTIONS = ("log-uniform", "uniform")
# A vegetation mode at frequency f has RMS ``amplitude * (f_ref / f) ** falloff``: f^-1.5
# (power f^-3) since issue 15, from tree.avi, which puts 97 % of its power below 0.6 Hz;
# before issue 15, 1/f (56 % there; docs/MOTION_MASKS.md). Water modes keep 1/f.
VEGETATION_FALLOFF = 1.5
LEGACY_VEGETATION_FALLOFF = 1.0


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


def estimate_motion_regions(image: np.ndarray, cues: str = "cues") -> dict[str, np.ndarray]:
    """Soft masks of vegetation, water and sky from image cues (``data.motion_masks``).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        cues: ``"cues"`` (default since issue 15: vegetation of any colour, water of any
            colour, sky and straight-edged structure kept still; see
            ``data.motion_masks.estimate_regions``), ``"cues-round3"`` (the same as they
            made issue 15's round-3 training data, ``estimate_regions(round3=True)``) or
            ``"legacy"`` (the green-and-blue colour cues used before,
            ``data.motion_masks.estimate_regions_legacy``; the datasets of the weights
            trained before issue 15 were made with them).

    Returns:
        ``{"vegetation", "water", "sky"}``: ``(H, W)`` float32 masks in [0, 1].
    """
    if cues in ("cues", "cues-round3"):
        return estimate_regions(image, round3=cues == "cues-round3")
    if cues == "legacy":
        return estimate_regions_legacy(image)
    raise ValueError(f"unknown region cues {cues!r} (known: 'cues', 'cues-round3', 'legacy')")


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
    # Leaves and branches: large coherent sway, mostly horizontal, standing modes, falling
    # as f^-VEGETATION_FALLOFF.
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
    vegetation_falloff: float = VEGETATION_FALLOFF,
) -> tuple[np.ndarray, list[dict]]:
    """Draw modes and sum them per bin: ``coeff (K, H, W, 2)`` complex, and their records.

    ``coeff[k]`` holds ``sum M_m`` over the modes at bin k (for x and y). A mode's shape
    has RMS ``amplitude * region amplitude * (f_ref / f) ** falloff`` (times a random
    0.5..1) over its region, f_ref the lowest allowed frequency (falloff:
    ``vegetation_falloff`` for vegetation, 1 for water).
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
            # Any bin of the band equally likely, amplitude falling as f^-falloff with
            # some spread: the expected power per bin then falls as f^(-2 falloff).
            k = int(rng.choice(region_bins))
            freq = k * config.fps / config.num_frames
            exponent = vegetation_falloff if region == "vegetation" else 1.0
            falloff = (f_ref / freq) ** exponent
            mode_amp = amplitude * style.amplitude * falloff * rng.uniform(0.5, 1.0)
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
    vegetation_falloff: float = VEGETATION_FALLOFF,
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Modal motion for given region masks: displacement, analytic spectrum and the modes.

    Args:
        masks: ``{"vegetation", "water"}`` ``(H, W)`` in [0, 1] (a missing one is empty).
        config: T, fps and K.
        seed: seed or generator.
        amplitude: pixels; a vegetation mode at frequency f gets an RMS (over its region,
            x component) of ``amplitude * (f_ref / f) ** vegetation_falloff * U(0.5, 1)``,
            f_ref the lowest allowed frequency (0.2 Hz by default); a water mode
            ``0.3 * amplitude * f_ref / f * U(0.5, 1)``. The amplitude is not renormalised
            per clip, so the power law holds across a dataset too.
        freq_range_hz: frequencies modes are drawn from (on FFT bins only).
        vegetation_falloff: 1.5 (``VEGETATION_FALLOFF``) or the 1/f of before issue 15
            (``LEGACY_VEGETATION_FALLOFF``).

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
    if not (np.isfinite(vegetation_falloff) and vegetation_falloff >= 0):
        raise ValueError(f"vegetation_falloff must be finite and >= 0: {vegetation_falloff}")
    coeff, modes = _sample_modes(masks, config, rng, amplitude, freq_range_hz, vegetation_falloff)
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
    cues: str = "cues",
    vegetation_falloff: float = VEGETATION_FALLOFF,
) -> SyntheticClip:
    """Animate a still photo with natural-looking oscillation and return its spectral volume.

    The photo is used at its own size (resize it to ``config.size`` first for training
    data, as ``write_synthetic_dataset`` does); T, fps and K come from ``config``.

    Args:
        image: ``(H, W, 3)`` uint8 RGB photo.
        config: clip length, frame rate and number of kept frequencies.
        seed: seed or generator for every random choice (deterministic).
        amplitude: RMS displacement (pixels) of a vegetation mode at the lowest allowed
            frequency; higher modes fall as f^-``vegetation_falloff`` (see
            ``synthesize_motion``).
        freq_range_hz: frequencies modes are drawn from (on FFT bins only).
        masks: region masks to use instead of ``estimate_motion_regions(image)``
            (``{"vegetation", "water"}``, ``(H, W)`` in [0, 1]; a missing one is empty).
        render: False skips the frame rendering (``frames`` is then None).
        renderer: a method of ``splatting.render_frames``: "softsplat" (default; softmax
            splatting weighted by motion magnitude, holes filled with the photo's pixel
            there) or "average" (plain average splatting, faster).
        cues: which image cues find the regions when ``masks`` is None: "cues",
            "cues-round3" or "legacy" (see ``estimate_motion_regions``).
        vegetation_falloff: see ``synthesize_motion``.

    Returns:
        ``SyntheticClip`` (frames, displacement, spectral, motion_mask, metadata).
    """
    image = _check_image(image)
    height, width = image.shape[:2]
    given_masks = masks
    if masks is None:
        masks = estimate_motion_regions(image, cues)
    masks = {name: masks.get(name, np.zeros((height, width), np.float32)) for name in _STYLES}
    for name, mask in masks.items():
        if mask.shape != (height, width):
            raise ValueError(f"mask {name!r} has shape {mask.shape}, image is {height}x{width}")

    displacement, _, modes = synthesize_motion(
        masks, config, seed, amplitude, freq_range_hz, vegetation_falloff
    )
    spectral = displacement_to_spectral(displacement, config.num_freqs)
    frames = render_frames(image, displacement, renderer) if render else None
    motion_mask = np.clip(sum(masks.values()), 0.0, 1.0).astype(np.float32)
    metadata = {
        "seed": seed if isinstance(seed, int) else None,
        "amplitude_px": float(amplitude),
        "freq_range_hz": list(freq_range_hz),
        "modes": modes,
        "max_displacement_px": float(np.abs(displacement).max()),
        "region_cues": cues if given_masks is None else "given",
        "vegetation_falloff": float(vegetation_falloff),
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
    cues: str = "cues",
    amplitude_distribution: str = "log-uniform",
    vegetation_falloff: float = VEGETATION_FALLOFF,
) -> list[Path]:
    """Write ``clips_per_photo`` synthetic clips per photo: an mp4 and its exact spectrum.

    Each photo (a path or an ``(H, W, 3)`` uint8 RGB array) is resized and centre-cropped
    to ``config.size``; each clip gets an amplitude drawn from ``amplitude_range``
    (pixels, see ``synthesize_motion``), log-uniformly by default (every factor of 2
    equally likely: calm and strong wind alike; "uniform" was the rule before issue 15,
    with ``LEGACY_AMPLITUDE_RANGE``). Per clip ``<stem>.mp4``
    (H.264, ``data.video.write_mp4``) and ``<stem>.npz`` with ``spectral (K, 4, H, W)``
    float32 (exact ground truth; ``spectral_to_displacement`` gives the displacement),
    ``first_frame (H, W, 3)`` uint8 (the photo, lossless) and ``motion_mask (H, W)``
    float32; one ``manifest.json`` lists the clips with their seeds and modes. Seeds
    derive from ``seed`` alone, so the same call writes the same dataset. ``cues`` picks
    the region cues (``estimate_motion_regions``) and ``vegetation_falloff`` the spectrum
    (``synthesize_motion``): "legacy", ``LEGACY_VEGETATION_FALLOFF`` and the legacy
    amplitudes reproduce the teacher of before issue 15.

    Returns:
        The written ``.mp4`` paths.
    """
    from data.video import resize_cover_crop, write_mp4

    if amplitude_distribution not in AMPLITUDE_DISTRIBUTIONS:
        raise ValueError(
            f"amplitude_distribution must be one of {AMPLITUDE_DISTRIBUTIONS}, "
            f"got {amplitude_distribution!r}"
        )
    low, high = amplitude_range
    if not 0 < low <= high:
        raise ValueError(f"amplitude_range must be 0 < low <= high pixels, got {amplitude_range}")
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
            if amplitude_distribution == "log-uniform":
                amplitude = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            else:
                amplitude = float(rng.uniform(low, high))
            clip = synthesize_oscillation(
                image, config, rng, amplitude, cues=cues, vegetation_falloff=vegetation_falloff
            )
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
