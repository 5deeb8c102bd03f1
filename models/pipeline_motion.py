"""``MotionPipeline``: photo -> spectral volume -> displacements -> rendered frames.

The one diffusers pipeline of Generative Image Dynamics: ``sample.py``, ``evaluate.py``
and the web demo all call it, none re-implements a step. Its components, all declared in
``model_index.json`` and loaded by one ``from_pretrained``:

* ``codec``: the spectral codec (``models.spectral_codec``: an ``AutoencoderKL`` or a
  ``ResampleSpectralCodec``), normalised spectral volume ``(B, K, 4, H, W)`` <-> scaled
  latents ``(B, K, c, h, w)``. Folders written before it had this name call it ``vae``;
  they still load.
* ``unet``: the ``MotionUNet`` denoiser, ``unet(latents, t, image).sample``, conditioned on
  the photo ``(B, 3, H, W)`` in [-1, 1]; an all-zero photo is the unconditional input;
* ``scheduler``: any diffusers scheduler (``set_scheduler("dpm")`` for few steps);
* ``renderer`` (optional): the learned ``FrameSynthesisModel``; without it the splatting
  renderers still work;
* ``motion_config`` (``data.config.MotionConfig`` as a dict: T, fps, K, training size) and
  ``normalization`` (``data.spectral.FrequencyNormalizer`` as a dict), registered to the
  config so that they travel in ``model_index.json``.

One call, step by step (see ``__call__``)::

    photo (any size, aspect) --fit (crop only to an explicit output aspect)--> photo at
        the output size (default: its own, long side <= 1024)
      --resize to the model's pixel budget, aspect kept, reflect-pad to the U-Net's multiple-->
        model input (B, 3, h_m, w_m) in [-1, 1]
    noise --for t in timesteps: U-Net (+ classifier-free guidance) (+ loop self-guidance)
          -> scheduler.step--> latents --decode, denormalise, crop the padding, blur
        (``motion_smoothing``)--> S (B, K, 4, h, w) px of the model frame
      --D[0] = 0 (frame 0 is the photo), upsample to the output size, scale to its pixels,
        x motion_gain x amplitude, x the feathered motion mask (the caller's, else the
        automatic one of ``mask_provider``), x the visible gain (``amplitude_reference=
        "visible"``)--> S (B, K, 4, H, W) px
      --Fourier series at t_n = n / fps * speed--> D (B, N, H, W, 2) px
      --renderer (learned, or a splatting baseline)--> frames (B, N, H, W, 3) uint8

Seamless looping (the paper's motion self-guidance): with ``loop_guidance_scale > 0``
each step predicts the clean latents x0, decodes them to displacements and takes the
gradient of ``L = |D[T-1] - D[0]|_1 + |grad D[T-1] - grad D[0]|_1`` (spatial finite
differences, summed over pixels) with respect to x0; x0 then moves against it
(``_loop_guidance``). docs/MOTION_PIPELINE.md defines the loop error and shows what the
guidance does to it.

Why resize and pad rather than tile or crop: the U-Net is convolutional (plus per-pixel
frequency attention and one mid-block attention), so it runs at any size; keeping its
training pixel budget keeps the receptive field and the motion's scale in pixels what it
learnt. Rounding the size to the U-Net's multiple (32 px for the shipped model) would bend
the aspect by up to 10 %, so the photo is resized at its exact aspect and reflect-padded
instead; the padding's motion is cropped away. docs/SAMPLING.md measures it against the
cover crop.
"""

from __future__ import annotations

import inspect
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from data.config import SPECTRAL_CHANNELS, MotionConfig
from data.motion_masks import DEFAULT_MASK_PROVIDER  # the automatic mask of __call__
from data.spectral import FrequencyNormalizer, displacement_at_phases
from data.video import resize_cover_crop
from models import SCHEDULERS
from models.motion_unet import NULL_MASK_VALUE

TRAIN_UNET_HINT = (
    "a motion pipeline is a folder written by MotionPipeline.save_pretrained (model_index.json "
    "+ codec/ + unet/ + scheduler/ [+ renderer/]); build one from train_unet.py's output with "
    "MotionPipeline.from_training_output(OUTPUT_DIR)"
)
# Default cap of the output's long side: the photo's own size up to this, never upscaled.
MAX_OUTPUT_SIDE = 1024
# The baselines of ``splatting.render_frames`` that ``renderer=`` accepts beside "synthesis".
SPLATTING_RENDERERS = ("softsplat", "average", "remap")
RENDERERS = ("synthesis", *SPLATTING_RENDERERS)
# ``renderer="auto"`` uses the learned renderer up to this many pixels per frame (4x the
# shipped model's 256x160 training frame) and average splatting above. Both measured on
# held-out real video (docs/SAMPLING.md): the learned renderer is 0.2 dB better at 256x160
# and at 640x272, but it costs ~45x average splatting per pixel, so a 150-frame 1024x576
# animation takes minutes with it on 2 CPU cores and seconds with average splatting.
AUTO_SYNTHESIS_MAX_PIXELS = 4 * 256 * 160
# Width of the motion mask's feathered edge, as a fraction of the output's long side: wide
# enough that no seam shows where moving pixels meet still ones, narrow enough to keep a
# brushed region's shape.
MASK_FEATHER_FRACTION = 0.015
MASK_FEATHER_MIN_PX = 3.0
# Two aspects closer than this are the same (rounding of a resized photo or mask).
ASPECT_TOLERANCE = 0.02
# ``amplitude_reference="visible"`` (sample.py's and the web demo's default): the motion is
# scaled so that the 90th percentile of per-pixel RMS displacement over the region that may
# move is this many pixels of the model's frame (issue 15's visibility goal, 1 px at
# 256x160), by a gain within VISIBLE_GAIN_RANGE times the model's calibrated motion: never
# weaker than the model, and at most 4x, so that a photo the model barely moves does not
# become amplified noise. "model" (the pipeline's default) keeps the calibrated amplitude,
# which follows the training data (docs/SAMPLING.md).
VISIBLE_MOTION_P90_PX = 1.0
VISIBLE_GAIN_RANGE = (1.0, 4.0)
AMPLITUDE_REFERENCES = ("model", "visible")
# ``motion_direction``'s default strength: the motion across the axis is kept at a fifth,
# so leaves still flutter a little across the wind instead of sliding along a line.
DEFAULT_DIRECTION_STRENGTH = 0.8


class MotionPipelineWarning(UserWarning):
    """Something a user should know about their input (an upscaled photo, a stretched mask)."""


@dataclass
class MotionPipelineOutput(BaseOutput):
    """What ``MotionPipeline.__call__`` returns.

    Attributes:
        frames: ``(B, N, H, W, 3)`` uint8 rendered frames at the output size (frame 0 is the
            photo), or None with ``renderer=None``.
        spectral: ``(B, K, 4, H, W)`` spectral volumes in pixels of the output size
            (channels ``re_x, im_x, re_y, im_y``), amplitude and motion mask applied, the
            DC term shifted so that D[0] = 0; numpy float32 or a torch tensor (``"pt"``).
        displacements: ``(B, N, H, W, 2)`` displacement of every pixel of the photo at
            frame n (at ``n / fps * speed`` s of the model's clip), in pixels, x then y; None
            with ``return_displacements=False``.
        images: the photos at the output size: ``(B, H, W, 3)`` uint8 (``"np"``), or
            ``(B, 3, H, W)`` in [-1, 1] (``"pt"``).
    """

    frames: np.ndarray | torch.Tensor | None
    spectral: np.ndarray | torch.Tensor
    displacements: np.ndarray | torch.Tensor | None
    images: np.ndarray | torch.Tensor


# ---------------------------------------------------------------------------- helpers


def scheduler_class(name: str) -> type:
    """The diffusers scheduler class of a name in ``SCHEDULERS``."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    classes = {
        "ddim": DDIMScheduler,
        "dpm": DPMSolverMultistepScheduler,
        "ddpm": DDPMScheduler,
        "euler": EulerDiscreteScheduler,
    }
    if name not in classes:
        raise ValueError(f"scheduler must be one of {list(SCHEDULERS)}, got {name!r}")
    return classes[name]


def displacement_at_frames(
    spectral: torch.Tensor, frames: torch.Tensor | list[int], num_frames: int
) -> torch.Tensor:
    """Displacement at chosen frames from a spectral volume, differentiable (torch).

    The inverse real FFT of ``data.spectral.spectral_to_displacement`` evaluated only at
    ``frames`` (any integers; the motion is periodic with period ``num_frames``)::

        D[t] = sum_k w_k (Re S_k cos(2 pi k t / T) - Im S_k sin(2 pi k t / T)),
        w_0 = 1 (DC, imaginary part dropped), w_k = 2 otherwise.

    Args:
        spectral: ``(B, K, 4, H, W)`` in pixels; ``K < T / 2`` (no Nyquist bin).
        frames: ``(N,)`` frame indices.
        num_frames: T, the period in frames.

    Returns:
        ``(B, N, H, W, 2)`` in pixels, the input's dtype and device.
    """
    if spectral.ndim != 5 or spectral.shape[2] != len(SPECTRAL_CHANNELS):
        raise ValueError(f"spectral must be (B, K, 4, H, W), got {tuple(spectral.shape)}")
    num_freqs = spectral.shape[1]
    if 2 * (num_freqs - 1) >= num_frames:
        raise ValueError(f"K = {num_freqs} frequencies need T > {2 * (num_freqs - 1)} frames")
    phases = np.asarray(frames, dtype=np.float64).reshape(-1) / num_frames
    return displacement_at_phases(spectral, phases)


def loop_loss(disp_first: torch.Tensor, disp_last: torch.Tensor) -> torch.Tensor:
    """The paper's looping energy per sample, summed over pixels (px).

    ``L = sum |D_last - D_first| + sum |grad D_last - grad D_first|``, grad = forward
    differences in x and in y (L1 over both displacement components).

    Args:
        disp_first, disp_last: ``(B, H, W, 2)`` displacement in pixels.

    Returns:
        ``(B,)``.
    """
    diff = disp_last - disp_first  # (B, H, W, 2)
    grad_x = diff[:, :, 1:] - diff[:, :, :-1]
    grad_y = diff[:, 1:] - diff[:, :-1]
    return (
        diff.abs().flatten(1).sum(1)
        + grad_x.abs().flatten(1).sum(1)
        + grad_y.abs().flatten(1).sum(1)
    )


def check_finite(
    name: str, value: float, minimum: float, strict: bool = False, maximum: float = math.inf
) -> float:
    """``value`` as a float, or ValueError naming ``name`` if NaN, infinite or out of range
    (``> minimum`` with ``strict``, else ``>= minimum``; ``<= maximum``)."""
    value = float(value)
    low_ok = value > minimum if strict else value >= minimum
    if not (math.isfinite(value) and low_ok and value <= maximum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        upper = f" and <= {maximum:g}" if math.isfinite(maximum) else ""
        raise ValueError(f"{name} must be a finite number {bound}{upper}, got {value}")
    return value


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1|3|4) uint8 / uint16 / float in [0, 1] -> (H, W, 3) uint8."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    if array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(
            f"image arrays must be uint8, uint16 or float in [0, 1], got {array.dtype}"
        )
    if array.shape[2] == 4:  # composite on white, as a viewer shows transparency
        alpha = array[..., 3:].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def to_rgb_array(item) -> np.ndarray:
    """A photo (PIL image, path, array or ``(3, H, W)`` tensor in [-1, 1]) -> (H, W, 3) uint8."""
    if isinstance(item, (str, Path)):
        from data.images import load_image

        item = load_image(item)
    if isinstance(item, Image.Image):  # any mode, EXIF-rotated -> upright 8-bit RGB
        from data.images import to_rgb

        return np.asarray(to_rgb(item))
    if isinstance(item, np.ndarray):
        return _array_to_rgb(item)
    if isinstance(item, torch.Tensor):
        if item.ndim != 3 or item.shape[0] != 3:
            raise ValueError(
                f"an image tensor must be (3, H, W) or (B, 3, H, W) in [-1, 1], "
                f"got shape {tuple(item.shape)}"
            )
        rgb = (item.detach().float().cpu().permute(1, 2, 0).clamp(-1, 1) + 1.0) * 127.5
        return np.ascontiguousarray(rgb.round().to(torch.uint8).numpy())
    raise TypeError(
        f"image must be a PIL image, a path, a numpy array or a tensor, got {type(item).__name__}"
    )


# ------------------------------------------------------------------------ sizes and masks


def default_output_size(
    photo_size: tuple[int, int], max_side: int = MAX_OUTPUT_SIDE
) -> tuple[int, int]:
    """The photo's own ``(width, height)``, shrunk (aspect kept) so its long side <= ``max_side``."""
    width, height = photo_size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs((a[0] / a[1]) / (b[0] / b[1]) - 1.0) <= ASPECT_TOLERANCE


def fit_to_size(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W[, C])`` to ``size = (width, height)``; a different aspect is cover-cropped."""
    height, width = array.shape[:2]
    if _same_aspect((width, height), size):
        return resize_cover_crop(array, size, mode="stretch")
    return resize_cover_crop(array, size, mode="crop")


def model_frame_size(
    aspect: float, training_size: tuple[int, int], multiple: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where the U-Net samples a photo of ``aspect`` (width / height).

    The frame keeps the training frame's pixel budget (width x height) at the photo's exact
    aspect; the U-Net needs multiples of ``multiple``, so the frame is then padded.

    Returns:
        ``((width, height), (padded_width, padded_height))``.
    """
    budget = training_size[0] * training_size[1]
    height = max(1, round(math.sqrt(budget / aspect)))
    width = max(1, round(height * aspect))
    padded = (-(-width // multiple) * multiple, -(-height // multiple) * multiple)
    return (width, height), padded


def read_mask(mask, source: str = "the motion mask") -> np.ndarray:
    """A mask -> ``(h, w)`` float32 in [0, 1] at its own size (1 = white).

    Accepts a path, a PIL image (transparent pixels count as black: a brush painted on a
    transparent layer), an ``(H, W)`` / ``(H, W, C)`` array (bool, uint8, uint16, or float
    in [0, 1]) or a tensor.

    Raises:
        ValueError: unreadable, badly shaped, non-finite or out of range.
    """
    if isinstance(mask, (str, Path)):
        from data.images import load_image

        source = str(mask)
        mask = load_image(mask, keep_alpha=True, max_side=None)
    if isinstance(mask, Image.Image):
        rgba = np.asarray(mask.convert("RGBA"), dtype=np.float32) / 255.0
        return np.ascontiguousarray(rgba[..., :3].mean(axis=2) * rgba[..., 3])
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[..., : min(3, array.shape[2])]  # colour channels; alpha is dropped
    elif array.ndim != 2:
        raise ValueError(f"{source}: must be (H, W) or (H, W, C), got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.float32)
    elif array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        array = array.astype(np.float32) / 65535.0
    else:
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"{source}: contains NaN or infinite values")
        if array.min() < 0.0 or array.max() > 1.0:
            raise ValueError(
                f"{source}: float values must lie in [0, 1], got "
                f"[{array.min():.3g}, {array.max():.3g}]"
            )
    if array.ndim == 3:
        array = array.mean(axis=2)
    return np.ascontiguousarray(array)


def load_motion_mask(
    mask, photo_size: tuple[int, int], source: str = "the motion mask"
) -> np.ndarray:
    """A user's motion mask (``read_mask``) -> ``(H, W)`` float32 in [0, 1] at the photo's
    ``(W, H)``. White (1) may move, black (0) stays still, grey in between. A mask of
    another aspect is stretched to the photo with a warning.

    Raises:
        ValueError: as ``read_mask``, or all black (nothing may move).
    """
    if isinstance(mask, (str, Path)):
        source = str(mask)
    array = read_mask(mask, source)
    height, width = array.shape
    if not _same_aspect((width, height), photo_size):
        warnings.warn(
            f"{source} is {width}x{height}, another aspect than the photo "
            f"({photo_size[0]}x{photo_size[1]}); it is stretched to fit",
            MotionPipelineWarning,
            stacklevel=3,
        )
    array = np.clip(resize_cover_crop(array, photo_size, mode="stretch"), 0.0, 1.0)
    if array.max() <= 1.0 / 255.0:
        raise ValueError(f"{source} is all black: nothing may move (white = moves, black = still)")
    return array


def feathered_gate(mask: np.ndarray, feather_px: float) -> np.ndarray:
    """A mask ``(H, W)`` in [0, 1] -> a gate that is exactly 0 where the mask is black and
    rises smoothly (over ``feather_px`` pixels, at least ``MASK_FEATHER_MIN_PX``) to the mask's blurred value inside.

    ``gate = blur(mask) * smoothstep(min(1, distance to the nearest black pixel / feather))``:
    the blur softens a brushed edge so that no seam shows, the distance ramp keeps black
    pixels perfectly still even right next to a white region.
    """
    feather_px = max(float(feather_px), MASK_FEATHER_MIN_PX)
    sigma = feather_px / 2.0
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma)
    black = mask <= 1.0 / 255.0
    if not black.any():
        return np.clip(soft, 0.0, 1.0)
    distance = cv2.distanceTransform((~black).astype(np.uint8), cv2.DIST_L2, 5)
    ramp = np.clip(distance / feather_px, 0.0, 1.0)
    ramp = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: no kink where the ramp ends
    return np.clip(soft * ramp, 0.0, 1.0).astype(np.float32)


def smooth_spectral(spectral: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of every slice of ``(B, K, C, H, W)`` spectral volumes, ``sigma`` in
    pixels (0: unchanged); edges are mirrored (replicated where the frame is narrower than
    the kernel), so a border moves like its neighbours.

    Why: the sampled fields carry about twice their training data's share of energy at
    wavelengths of one to four latent cells (docs/SAMPLING.md), which a thin stem or a
    blade shows as kinks that travel along it.
    """
    sigma = check_finite("motion_smoothing", sigma, 0.0)
    if sigma == 0.0:
        return spectral
    batch, num_freqs, channels, height, width = spectral.shape
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=spectral.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(spectral.dtype)
    # every slice a channel of one depthwise convolution (17x faster on CPU than a batch of
    # one-channel images)
    slices = batch * num_freqs * channels
    flat = spectral.reshape(1, slices, height, width)
    mode = "reflect" if radius < min(height, width) else "replicate"
    rows = kernel.view(1, 1, 1, -1).expand(slices, 1, 1, -1)
    columns = kernel.view(1, 1, -1, 1).expand(slices, 1, -1, 1)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode=mode), rows, groups=slices)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode=mode), columns, groups=slices)
    return flat.reshape(spectral.shape)


def check_direction(
    direction: float,
    strength: float,
    names: tuple[str, str] = ("motion_direction", "direction_strength"),
) -> tuple[float, float]:
    """``(direction, strength)`` as floats, or ValueError naming ``names``: a direction must be
    a finite number of degrees, a strength within [0, 1]."""
    direction = float(direction)
    if not math.isfinite(direction):
        raise ValueError(f"{names[0]} must be a finite number of degrees, got {direction}")
    return direction, check_finite(names[1], strength, 0.0, maximum=1.0)


def steer_direction(
    spectral: torch.Tensor, direction: float, strength: float = DEFAULT_DIRECTION_STRENGTH
) -> torch.Tensor:
    """Make ``(B, K, 4, H, W)`` spectral volumes sway along one axis, like plants in a wind.

    ``direction`` is the axis in degrees as seen in the picture, counter-clockwise from the
    horizontal (0: left-right, 90: up-down, 45: lower left to upper right; an axis, so 180
    is 0). Each coefficient's (x, y) vector is split into its part along the axis and its
    part across; the part across is scaled by ``1 - strength`` (0: unchanged, 1: motion only
    along the axis). Each volume is then scaled back to its own energy over the bins k >= 1,
    so the direction changes how things move, not how much (the sampled motion has no
    preferred direction: ~half its energy along any axis).
    """
    direction, strength = check_direction(direction, strength)
    if strength == 0.0:
        return spectral
    # the picture's y axis points down: counter-clockwise as seen is (cos, -sin)
    radians = math.radians(direction)
    along = spectral.new_tensor([math.cos(radians), -math.sin(radians)])
    # channels (re_x, im_x, re_y, im_y): the (re, im) pair of each component
    x, y = spectral[:, :, 0:2], spectral[:, :, 2:4]
    projection = x * along[0] + y * along[1]  # the complex coefficient along the axis
    # (1 - strength) of the whole vector plus strength of its part along the axis
    keep = 1.0 - strength
    steered = torch.cat(
        [keep * x + strength * projection * along[0], keep * y + strength * projection * along[1]],
        dim=2,
    )
    before = spectral[:, 1:].square().sum(dim=(1, 2, 3, 4))
    after = steered[:, 1:].square().sum(dim=(1, 2, 3, 4))
    scale = torch.where(after > 0, (before / after.clamp_min(1e-30)).sqrt(), torch.ones_like(after))
    return steered * scale.view(-1, 1, 1, 1, 1)


def frames_per_loop(config: MotionConfig, fps: float, speed: float = 1.0) -> float:
    """Frames of an animation at ``fps`` and ``speed`` in one period of the motion (the
    model's T frames at its fps: 150 at sample.py's defaults). An animation whose frame count
    is a whole number of periods wraps without a jump; any other shows a cut where it wraps.
    """
    return config.num_frames / config.fps * fps / speed


def loop_advice(
    num_frames: int, config: MotionConfig, fps: float, speed: float = 1.0
) -> str | None:
    """None if ``num_frames`` frames wrap seamlessly (a whole number of periods, within half a
    frame), else a sentence saying how much of the loop they cover and what would wrap."""
    period = frames_per_loop(config, fps, speed)
    loops = num_frames / period
    if abs(loops - round(loops)) * period <= 0.5:
        return None
    seamless = round(max(1, round(loops)) * period)
    return (
        f"{num_frames} frames cover {loops:.2f} periods of the motion ({period:g} frames each), "
        f"so the animation jumps where it wraps; {seamless} frames loop seamlessly"
    )


def estimate_memory_bytes(num_frames: int, output_size: tuple[int, int], num_freqs: int) -> int:
    """Bytes a call holds at once for one photo: frames (uint8), displacements and the
    spectral volume (float32) at the output size."""
    pixels = output_size[0] * output_size[1]
    return num_frames * pixels * (3 + 2 * 4) + num_freqs * 4 * pixels * 4


# ---------------------------------------------------------------------------- pipeline


class MotionPipeline(DiffusionPipeline):
    r"""Photo -> spectral volume -> displacements -> frames (Generative Image Dynamics).

    Parameters:
        codec: the spectral codec (``AutoencoderKL`` or ``ResampleSpectralCodec``).
        unet: the ``MotionUNet``.
        scheduler: any diffusers scheduler (``DDIMScheduler`` by default).
        renderer: the learned ``FrameSynthesisModel`` (optional).
        motion_config: ``MotionConfig.to_dict()`` of the training data (T, fps, K, size).
        normalization: ``FrequencyNormalizer.to_dict()`` of the training data.
        motion_gain: every sampled volume is multiplied by this before ``amplitude``. A
            small diffusion model trained briefly samples weaker motion than its training
            data (regression to the mean); ``scripts/calibrate_motion_gain.py`` measures the
            ratio on training clips (never held-out photos) and stores it here. 1.0 for
            folders written before it.
        motion_smoothing: sigma, in pixels of the model's frame, of the Gaussian blur
            applied to every sampled volume before the mask (``smooth_spectral``); part of
            what the gain is calibrated with. 0.0 for folders written before it.
    """

    model_cpu_offload_seq = "unet->codec->renderer"
    _optional_components = ["renderer"]

    def __init__(
        self,
        codec,
        unet,
        scheduler,
        renderer=None,
        motion_config: dict | None = None,
        normalization: dict | None = None,
        motion_gain: float = 1.0,
        motion_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if motion_config is None or normalization is None:
            raise ValueError(
                "MotionPipeline needs motion_config and normalization (the training data's "
                f"MotionConfig and FrequencyNormalizer as dicts); {TRAIN_UNET_HINT}"
            )
        self.register_modules(codec=codec, unet=unet, scheduler=scheduler, renderer=renderer)
        # validate before registering: a bad dict fails here with the class's own message
        MotionConfig.from_dict(motion_config)
        FrequencyNormalizer.from_dict(normalization)
        motion_gain = check_finite("motion_gain", motion_gain, 0.0, strict=True)
        motion_smoothing = check_finite("motion_smoothing", motion_smoothing, 0.0)
        self.register_to_config(
            motion_config=dict(motion_config),
            normalization=dict(normalization),
            motion_gain=motion_gain,
            motion_smoothing=motion_smoothing,
        )
        self._check_components()

    @property
    def motion_config(self) -> MotionConfig:
        """T, fps, K and frame size of the training data (read from the pipeline's config)."""
        return MotionConfig.from_dict(self.config.motion_config)

    @property
    def normalizer(self) -> FrequencyNormalizer:
        """The training data's frequency-adaptive normalisation (from the pipeline's config)."""
        return FrequencyNormalizer.from_dict(self.config.normalization)

    @property
    def size_multiple(self) -> int:
        """The model frame's sides must be multiples of this (codec factor x U-Net factor)."""
        from models.spectral_codec import codec_downsample_factor

        unet_factor = getattr(self.unet, "downsample_factor", 1)
        return codec_downsample_factor(self.codec) * unet_factor

    # ------------------------------------------------------------------ construction

    def _check_components(self) -> None:
        """Codec, U-Net, motion config and statistics must describe the same volumes."""
        from models.spectral_codec import codec_downsample_factor, codec_latent_channels

        config = self.motion_config
        problems = []
        if self.normalizer.num_freqs != config.num_freqs:
            problems.append(
                f"normalization has {self.normalizer.num_freqs} frequencies, "
                f"motion_config K = {config.num_freqs}"
            )
        unet_freqs = getattr(self.unet.config, "num_freqs", config.num_freqs)
        if unet_freqs != config.num_freqs:
            problems.append(f"unet num_freqs = {unet_freqs}, motion_config K = {config.num_freqs}")
        codec_channels = codec_latent_channels(self.codec)
        unet_channels = getattr(self.unet.config, "latent_channels", codec_channels)
        if unet_channels != codec_channels:
            problems.append(
                f"unet latent_channels = {unet_channels}, codec latent channels = {codec_channels}"
            )
        factor = codec_downsample_factor(self.codec)
        if config.width % factor or config.height % factor:
            problems.append(
                f"frame size {config.width}x{config.height} is not a multiple of the codec's "
                f"downsampling factor {factor}"
            )
        if problems:
            raise ValueError(
                "the codec, U-Net and motion config disagree: "
                + "; ".join(problems)
                + "; train the U-Net on latents of this codec and data (train_unet.py)"
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> MotionPipeline:
        """Load a pipeline folder (or hub id) written by ``save_pretrained``.

        Older local folders still load: one whose ``model_index.json`` names the codec
        ``vae``, and one whose learned renderer sits in ``renderer/`` without being declared.
        A local folder without ``model_index.json`` raises ``FileNotFoundError`` that says
        how to make one (train_unet.py, ``from_training_output``).
        """
        # diffusers imports a component's class only from modules already imported
        import models.frame_synthesis  # noqa: F401
        import models.motion_unet  # noqa: F401
        import models.spectral_codec  # noqa: F401

        local = Path(pretrained_model_name_or_path)
        if local.is_dir():
            index_path = local / "model_index.json"
            if not index_path.is_file():
                hint = (
                    " (it looks like train_unet.py's output: use "
                    "MotionPipeline.from_training_output)"
                    if (local / "unet").is_dir()
                    else ""
                )
                raise FileNotFoundError(
                    f"{local}: no model_index.json, not a motion pipeline{hint}; {TRAIN_UNET_HINT}"
                )
            try:
                index = json.loads(index_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise ValueError(f"{index_path}: not a valid JSON file ({error})") from None
            if "codec" not in index and "vae" in index and "codec" not in kwargs:
                kwargs["codec"] = _load_component(local / "vae", index["vae"])
            renderer_dir = local / "renderer"
            declared = index.get("renderer") not in (None, [None, None])
            if (
                not declared
                and "renderer" not in kwargs
                and (renderer_dir / "config.json").is_file()
            ):
                kwargs["renderer"] = _load_component(
                    renderer_dir, ["models.frame_synthesis", "FrameSynthesisModel"]
                )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_training_output(
        cls, output_dir: str | Path, scheduler: str = "ddim", renderer=None
    ) -> MotionPipeline:
        """Assemble a pipeline from ``train_unet.py``'s ``output_dir/{unet,scheduler,codec}``,
        with the ``motion_gain`` and ``motion_smoothing`` of its ``model_index.json``
        (``scripts/calibrate_motion_gain.py --write`` stores the gain there; 1.0 and 0.0 if
        absent).

        Args:
            scheduler: a name of ``SCHEDULERS`` (default ``"ddim"``; ``"ddpm"`` is the
                training scheduler as saved).
            renderer: a ``FrameSynthesisModel`` to include (optional).
        """
        from diffusers import DDPMScheduler

        from models.motion_unet import MotionUNet
        from models.spectral_codec import load_spectral_codec

        output_dir = Path(output_dir)
        for name in ("unet", "scheduler", "codec"):
            if not (output_dir / name).is_dir():
                raise FileNotFoundError(
                    f"{output_dir}: no {name}/ folder; expected the output_dir of a finished "
                    "train_unet.py run (unet/, scheduler/, codec/)"
                )
        scheduler_cls = scheduler_class(scheduler)  # a bad name fails before loading anything
        codec, motion_config, normalizer = load_spectral_codec(output_dir / "codec")
        unet = MotionUNet.from_pretrained(output_dir / "unet")
        trained = DDPMScheduler.from_pretrained(output_dir / "scheduler")
        index_path = output_dir / "model_index.json"
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
        return cls(
            codec=codec,
            unet=unet,
            scheduler=scheduler_cls.from_config(trained.config),
            renderer=renderer,
            motion_config=motion_config.to_dict(),
            normalization=normalizer.to_dict(),
            motion_gain=index.get("motion_gain", 1.0),
            motion_smoothing=index.get("motion_smoothing", 0.0),
        )

    def set_scheduler(self, name: str) -> None:
        """Sample with another scheduler (``SCHEDULERS``), configured like the current one."""
        self.scheduler = scheduler_class(name).from_config(self.scheduler.config)

    # ------------------------------------------------------------------ inputs

    def output_size_for(
        self,
        photo_size: tuple[int, int],
        output_size: tuple[int, int] | None = None,
        crop: bool = False,
    ) -> tuple[int, int]:
        """The ``(width, height)`` a photo of ``photo_size`` is animated at.

        ``output_size`` if given; with ``crop``, the model's training size (the photo is
        cover-cropped to it); otherwise the photo's own size, long side capped at
        ``MAX_OUTPUT_SIDE``.
        """
        if output_size is not None:
            width, height = (int(v) for v in output_size)
            if width < 1 or height < 1:
                raise ValueError(f"output_size must be positive, got {output_size}")
            return width, height
        if crop:
            return self.motion_config.size
        return default_output_size(photo_size)

    def preprocess(
        self, image, output_size: tuple[int, int] | None = None, crop: bool = False
    ) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
        """Photo(s) -> the photos at the output size, ``(H, W, 3)`` uint8 each, and each
        photo's original ``(width, height)``.

        Accepts a PIL image (any mode, EXIF orientation applied), a path, an ``(H, W[, C])``
        uint8/uint16/float array, a ``(3, H, W)`` / ``(B, 3, H, W)`` tensor in [-1, 1], or
        a list of those. A photo is cover-cropped only when the output aspect differs from
        its own (an explicit ``output_size`` or ``crop``). Enlarging a photo warns.
        """
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            image = list(image)
        if not isinstance(image, (list, tuple)):
            image = [image]
        if not image:
            raise ValueError("no image given (an empty list)")
        photos, sizes = [], []
        for item in image:
            rgb = to_rgb_array(item)
            size = (rgb.shape[1], rgb.shape[0])
            target = self.output_size_for(size, output_size, crop)
            if target[0] * target[1] > size[0] * size[1] * 1.01:
                warnings.warn(
                    f"the photo ({size[0]}x{size[1]}) is upscaled to {target[0]}x{target[1]}: "
                    "the output holds no more detail than the photo",
                    MotionPipelineWarning,
                    stacklevel=3,
                )
            photos.append(fit_to_size(rgb, target))
            sizes.append(size)
        if len({p.shape for p in photos}) > 1:
            raise ValueError(
                "photos of different sizes in one call: pass output_size, or call once per photo"
            )
        return photos, sizes

    def model_input(self, photos: list[np.ndarray]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Photos at the output size -> the U-Net's input ``(B, 3, h_p, w_p)`` in [-1, 1] and
        the model frame ``(w, h)`` inside it (the rest is reflect padding)."""
        height, width = photos[0].shape[:2]
        (model_w, model_h), (pad_w, pad_h) = model_frame_size(
            width / height, self.motion_config.size, self.size_multiple
        )
        batch = []
        for rgb in photos:
            small = resize_cover_crop(rgb, (model_w, model_h), mode="stretch")
            tensor = torch.from_numpy(small.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)
            batch.append(tensor)
        return _pad_to(torch.stack(batch), (pad_w, pad_h)), (model_w, model_h)

    def model_mask(self, masks: list[np.ndarray], padded_size: tuple[int, int]) -> torch.Tensor:
        """Motion masks at the output size -> the U-Net's mask input ``(B, 1, h_p, w_p)``.

        Each ``(H, W)`` mask in [0, 1] is resized to the model frame exactly as its photo is
        (``model_input``) and padded the same way, so mask and photo stay aligned.

        Args:
            masks: one ``(H, W)`` float mask per photo, at the photos' output size.
            padded_size: ``(w_p, h_p)`` of the U-Net input (``model_input``'s tensor).
        """
        height, width = masks[0].shape[:2]
        (model_w, model_h), padded = model_frame_size(
            width / height, self.motion_config.size, self.size_multiple
        )
        if padded != tuple(padded_size):
            raise ValueError(f"masks of {width}x{height} do not fit a model input {padded_size}")
        small = [
            np.clip(resize_cover_crop(m.astype(np.float32), (model_w, model_h), "stretch"), 0, 1)
            for m in masks
        ]
        return _pad_to(torch.from_numpy(np.stack(small))[:, None], padded)

    def latent_shape(
        self, batch_size: int, frame_size: tuple[int, int] | None = None
    ) -> tuple[int, ...]:
        """``(B, K, c, h, w)`` of the latents the U-Net denoises for a (padded) model frame
        ``(width, height)`` (default: the training size)."""
        from models.spectral_codec import codec_downsample_factor

        factor = codec_downsample_factor(self.codec)
        config = self.motion_config
        width, height = frame_size or config.size
        return (
            batch_size,
            config.num_freqs,
            self.unet.config.latent_channels,
            height // factor,
            width // factor,
        )

    # ------------------------------------------------------------------ pieces of a step

    def decode_spectral(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(B, K, c, h, w)`` -> spectral volumes in pixels ``(B, K, 4, H, W)``."""
        from models.spectral_codec import decode_latents

        return self.normalizer.denormalize(decode_latents(self.codec, latents).float())

    def _alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        alphas_cumprod = getattr(self.scheduler, "alphas_cumprod", None)
        if alphas_cumprod is None or float(self.scheduler.init_noise_sigma) != 1.0:
            raise ValueError(
                f"loop guidance needs a variance-preserving scheduler (DDIM, DDPM, DPM-Solver); "
                f"{type(self.scheduler).__name__} is not one"
            )
        return alphas_cumprod[int(t)].to(torch.float32)

    def _split_prediction(self, output, latents, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Model output -> (predicted noise, predicted clean latents x0)."""
        a = self._alpha_bar(t)
        sa, sb = a.sqrt(), (1 - a).sqrt()
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            eps = output
            x0 = (latents - sb * eps) / sa
        elif kind == "v_prediction":
            x0 = sa * latents - sb * output
            eps = sa * output + sb * latents
        elif kind == "sample":
            x0 = output
            eps = (latents - sa * x0) / sb
        else:
            raise ValueError(f"unsupported prediction_type {kind!r}")
        return eps, x0

    def _join_prediction(self, eps, latents, t) -> torch.Tensor:
        """Predicted noise -> the model output kind the scheduler expects."""
        a = self._alpha_bar(t)
        sa, sb = a.sqrt(), (1 - a).sqrt()
        kind = self.scheduler.config.prediction_type
        x0 = (latents - sb * eps) / sa
        if kind == "epsilon":
            return eps
        if kind == "v_prediction":
            return sa * eps - sb * x0
        return x0

    def _loop_guidance(
        self, output: torch.Tensor, latents: torch.Tensor, t, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Move the prediction toward a seamless loop (motion self-guidance).

        x0 = the predicted clean latents; ``L(x0)`` = ``loop_loss`` (per photo) of the
        displacements decoded from x0 at frames 0 and T-1; ``g = dL/dx0``. The U-Net's
        Jacobian is not back-propagated, so a step costs one codec decode and its backward,
        not a U-Net backward. x0 moves against the gradient by a Polyak step::

            x0' = x0 - scale * L / |g|^2 * g

        which, were L linear in x0, would remove the fraction ``scale`` of the loop loss
        (scale = 1: all of it). The noise prediction is made consistent with x0' at the
        same x_t (``eps' = (x_t - sqrt(a) x0') / sqrt(1 - a)``, a = alpha_bar_t), so any
        variance-preserving scheduler (DDIM, DDPM, DPM-Solver) continues from it. Why not
        the classifier-guidance step ``eps + scale * sqrt(1 - a) * grad``: the gradient of
        an L1 loss does not shrink as the loss does and the de-normalisation grows it with
        the motion, so fixed-size steps overshoot and the loss diverged in our runs
        (docs/MOTION_PIPELINE.md).

        Returns:
            (the adjusted model output, the per-photo loop loss ``(B,)`` before the shift).
        """
        eps, x0 = self._split_prediction(output, latents, t)
        with torch.enable_grad():
            x0 = x0.detach().float().requires_grad_(True)
            spectral = self.decode_spectral(x0)
            num_frames = self.motion_config.num_frames
            disp = displacement_at_frames(spectral, [0, num_frames - 1], num_frames)
            loss = loop_loss(disp[:, 0], disp[:, 1])  # (B,)
            (grad,) = torch.autograd.grad(loss.sum(), x0)
        loss = loss.detach()
        grad_sq = grad.flatten(1).square().sum(1).clamp_min(1e-12)  # (B,)
        step = (scale * loss / grad_sq).view(-1, *[1] * (grad.ndim - 1))
        x0 = (x0.detach() - step * grad).to(latents.dtype)
        a = self._alpha_bar(t).to(latents.device)
        eps = (latents - a.sqrt() * x0) / (1 - a).sqrt()
        return self._join_prediction(eps, latents, t), loss

    # ------------------------------------------------------------------ stages of a call

    def sample_spectral(
        self,
        images: torch.Tensor,
        frame_size: tuple[int, int],
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        loop_guidance_scale: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        motion_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise the K frequency latents of each photo jointly.

        Args:
            images: ``(B, 3, h_p, w_p)`` in [-1, 1] (``model_input``).
            frame_size: ``(w, h)`` of the model frame inside the padded input.
            motion_mask: ``(B, 1, h_p, w_p)`` in [0, 1] (``model_mask``), the "may move"
                condition of a mask-conditioned U-Net; None: the null mask (no mask given).
                Classifier-free guidance's unconditional branch gets the null mask and a
                zero photo.

        Returns:
            ``(B, K, 4, h, w)`` spectral volumes in pixels of the model frame.
        """
        device = self._execution_device
        images = images.to(device=device, dtype=self.unet.dtype)
        batch_size = images.shape[0]
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"{len(generator)} generators for {batch_size} photos")
        do_cfg = guidance_scale > 1.0
        # classifier-free guidance: the unconditional input is an all-zero (grey) photo
        condition = torch.cat([images, torch.zeros_like(images)]) if do_cfg else images
        mask_condition = None
        if self.unet.config.get("mask_conditioning", False):
            null = torch.full_like(images[:, :1], NULL_MASK_VALUE)
            if motion_mask is None:
                mask_condition = null
            else:
                if tuple(motion_mask.shape) != tuple(null.shape):
                    raise ValueError(
                        f"motion_mask must be {tuple(null.shape)} (B, 1, h_p, w_p) like the "
                        f"model input, got {tuple(motion_mask.shape)}"
                    )
                mask_condition = motion_mask.to(null)
            if do_cfg:  # the unconditional branch drops photo and mask together
                mask_condition = torch.cat([mask_condition, null])
        elif motion_mask is not None:
            raise ValueError(
                "this pipeline's U-Net takes no motion mask (mask_conditioning=False); gate "
                "the output instead (motion_at_output's gate)"
            )

        shape = self.latent_shape(batch_size, (images.shape[-1], images.shape[-2]))
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device) * self.scheduler.init_noise_sigma

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = {}
        if "generator" in inspect.signature(self.scheduler.step).parameters:
            step_kwargs["generator"] = generator
        self.loop_losses = []  # per step, (B,) loop loss of the predicted x0 (for inspection)
        for t in self.progress_bar(self.scheduler.timesteps):
            # a. predict the noise, conditional and (for CFG) unconditional in one batch
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            output = self.unet(model_input, t, condition, motion_mask=mask_condition).sample
            # b. classifier-free guidance
            if do_cfg:
                cond, uncond = output.chunk(2)
                output = uncond + guidance_scale * (cond - uncond)
            # c. motion self-guidance toward a seamless loop
            if loop_guidance_scale > 0:
                output, loss = self._loop_guidance(output, latents, t, loop_guidance_scale)
                self.loop_losses.append(loss.cpu())
            # d. x_t -> x_{t-1}
            latents = self.scheduler.step(output, t, latents, **step_kwargs).prev_sample

        spectral = self.decode_spectral(latents)  # (B, K, 4, h_p, w_p) px
        return spectral[..., : frame_size[1], : frame_size[0]]

    def motion_at_output(
        self,
        spectral: torch.Tensor,
        output_size: tuple[int, int],
        amplitude: float = 1.0,
        gate: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Spectral volumes of the model frame -> spectral volumes of the output frame.

        1. D[0] = 0: the photo is the clip's reference frame (training flow is measured from
           frame 0), but a sampled volume misses that by ~0.1 px; the DC term absorbs the
           difference, so frame 0 of every animation is the photo itself.
        2. Upsampled (bilinear) to ``output_size`` and scaled to its pixels (x by the width
           ratio, y by the height ratio), times ``amplitude`` and the pipeline's
           ``motion_gain``.
        3. Times ``gate`` (``feathered_gate`` of a motion mask), ``(H, W)`` or one per photo
           ``(B, 1, 1, H, W)``, if given.

        Args:
            spectral: ``(B, K, 4, h, w)`` px of the model frame.

        Returns:
            ``(B, K, 4, H, W)`` float32 px of the output frame.
        """
        spectral = spectral.float().clone()
        first = displacement_at_phases(spectral, [0.0])[:, 0]  # (B, h, w, 2)
        spectral[:, 0, 0] -= first[..., 0]
        spectral[:, 0, 2] -= first[..., 1]
        batch, num_freqs, channels, height, width = spectral.shape
        out_w, out_h = output_size
        if (out_w, out_h) != (width, height):
            flat = spectral.reshape(batch, num_freqs * channels, height, width)
            flat = F.interpolate(flat, size=(out_h, out_w), mode="bilinear", align_corners=False)
            spectral = flat.reshape(batch, num_freqs, channels, out_h, out_w)
        scale = torch.tensor([out_w / width, out_w / width, out_h / height, out_h / height])
        gain = amplitude * self.config.motion_gain
        spectral = spectral * (scale.to(spectral) * gain).view(1, 1, 4, 1, 1)
        if gate is not None:
            spectral = spectral * torch.from_numpy(gate).to(spectral)
        return spectral

    @staticmethod
    def visible_gain(
        spectral: torch.Tensor, masks: list[np.ndarray] | None, model_px: float
    ) -> np.ndarray:
        """Per-photo gain that makes the motion visible (``amplitude_reference="visible"``).

        The gain lifts the 90th percentile of per-pixel RMS displacement over the region
        that may move (mask >= 0.5; the whole frame without a mask) to
        ``VISIBLE_MOTION_P90_PX`` pixels of the model's frame, clipped to
        ``VISIBLE_GAIN_RANGE``.

        Args:
            spectral: ``(B, K, 4, H, W)`` px of the output frame (``motion_at_output``).
            masks: ``(H, W)`` masks in [0, 1], one per photo, or None.
            model_px: output pixels per model-frame pixel (the width ratio).

        Returns:
            ``(B,)`` float32 gains.
        """
        low, high = VISIBLE_GAIN_RANGE
        # every 2nd pixel is plenty for a percentile and keeps 1024 px outputs cheap
        step = 2 if spectral.shape[-1] > 512 else 1
        coarse = spectral[..., ::step, ::step].float()
        rms = torch.sqrt(2.0 * coarse[:, 1:].square().sum(dim=(1, 2))).cpu().numpy()
        gains = np.ones(len(rms), np.float32)
        for index, photo_rms in enumerate(rms):
            region = np.ones(photo_rms.shape, bool)
            if masks is not None:
                mask = masks[index][::step, ::step]
                region = mask >= 0.5 if (mask >= 0.5).any() else mask > 0
            p90 = float(np.percentile(photo_rms[region], 90)) / model_px if region.any() else 0.0
            gains[index] = high if p90 <= 0 else np.clip(VISIBLE_MOTION_P90_PX / p90, low, high)
        return gains

    def displacements(
        self,
        spectral: torch.Tensor,
        num_frames: int,
        fps: float | None = None,
        speed: float = 1.0,
    ) -> torch.Tensor:
        """Spectral volumes -> displacement at ``num_frames`` frames of ``fps``.

        Frame n shows the model's clip at ``n / fps * speed`` seconds (phase
        ``n / fps * speed * fps_model / T``); the motion loops every ``T / fps_model`` s.

        Args:
            spectral: ``(B, K, 4, H, W)`` px (``motion_at_output``).
            fps: frames per second of the animation (default: the model's).

        Returns:
            ``(B, N, H, W, 2)`` px, the input's dtype and device.
        """
        config = self.motion_config
        fps = config.fps if fps is None else fps
        seconds = np.arange(num_frames, dtype=np.float64) / fps * speed
        return displacement_at_phases(spectral, seconds * config.fps / config.num_frames)

    def resolve_renderer(
        self, renderer: str | None, output_size: tuple[int, int] | None = None
    ) -> str | None:
        """``"auto"`` -> ``"synthesis"`` when the pipeline has a learned renderer and the
        frames have at most ``AUTO_SYNTHESIS_MAX_PIXELS``, else ``"average"``; any other
        name is checked."""
        if renderer is None:
            return None
        if renderer == "auto":
            small = (
                output_size is None or output_size[0] * output_size[1] <= AUTO_SYNTHESIS_MAX_PIXELS
            )
            return "synthesis" if self.renderer is not None and small else "average"
        if renderer not in RENDERERS:
            raise ValueError(
                f"renderer must be one of {('auto', *RENDERERS)} or None, got {renderer!r}"
            )
        if renderer == "synthesis" and self.renderer is None:
            raise ValueError(
                "renderer='synthesis' but this pipeline has no learned renderer (renderer/); "
                f"use one of {SPLATTING_RENDERERS}, or add a FrameSynthesisModel "
                "(train_frame_synthesis.py)"
            )
        return renderer

    def render(
        self,
        photo: np.ndarray,
        displacements: np.ndarray | torch.Tensor,
        renderer: str = "auto",
        progress: bool | None = None,
    ) -> np.ndarray:
        """Draw one photo's frames: ``(H, W, 3)`` uint8 and ``(N, H, W, 2)`` px -> ``(N, H, W, 3)``
        uint8, with the learned renderer (``"synthesis"``) or a splatting baseline."""
        height, width = np.shape(photo)[:2]
        renderer = self.resolve_renderer(renderer, (width, height))
        if renderer is None:
            raise ValueError("render: renderer=None draws nothing")
        if progress is None:
            progress = not self._progress_bar_config.get("disable", False)
        if renderer == "synthesis":
            with torch.inference_mode():
                return self.renderer.render_frames(photo, displacements, progress=progress)
        from splatting import render_frames

        return render_frames(photo, displacements, method=renderer, device=self._execution_device)

    # ------------------------------------------------------------------ the call

    @torch.no_grad()
    def __call__(
        self,
        image,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_frames: int | None = None,
        fps: float | None = None,
        speed: float = 1.0,
        amplitude: float = 1.0,
        amplitude_reference: str = "model",
        motion_smoothing: float | None = None,
        motion_direction: float | None = None,
        direction_strength: float = DEFAULT_DIRECTION_STRENGTH,
        motion_mask=None,
        mask_provider: str | None = DEFAULT_MASK_PROVIDER,
        loop_guidance_scale: float = 0.0,
        latents: torch.Tensor | None = None,
        output_size: tuple[int, int] | None = None,
        crop: bool = False,
        renderer: str | None = "auto",
        return_displacements: bool = True,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> MotionPipelineOutput | tuple:
        r"""Animate each photo: sample its motion, evaluate it at every frame, render.

        Args:
            image: a photo or a list of photos (see ``preprocess``), any size and aspect.
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance weight w on the photo condition
                (``eps = eps_uncond + w * (eps_cond - eps_uncond)``); ``<= 1`` runs the
                conditional branch only.
            generator: a ``torch.Generator`` or one per photo (then a batch equals the
                single calls with the same generators).
            num_frames: frames to make (default: the model's T).
            fps: frames per second of the animation (default: the model's); with
                ``speed`` it fixes which instant of the model's clip each frame shows.
            speed: plays the motion this many times faster.
            amplitude: scales the motion (0: a still photo).
            amplitude_reference: what ``amplitude=1`` means. ``"model"``: the model's
                calibrated motion (the amplitude of its training data, which follows real
                footage; sub-pixel to a few pixels). ``"visible"``: per photo, that motion
                times the gain in ``VISIBLE_GAIN_RANGE`` that brings its 90th-percentile RMS
                over the region that may move to ``VISIBLE_MOTION_P90_PX`` px of the
                model's frame (sample.py's default). The gains chosen are in
                ``self.last_visible_gains``.
            motion_smoothing: sigma of the Gaussian blur of the sampled volume, in pixels
                of the model's frame (``smooth_spectral``; 0: none). Default: the
                pipeline's ``motion_smoothing``, with which its gain was calibrated.
            motion_direction: the axis things sway along, in degrees as seen in the picture,
                counter-clockwise from the horizontal (0: left-right, like plants in a
                side wind; 90: up-down, like water bobbing); None: the model's own
                directions (``steer_direction``). The motion's energy is kept.
            direction_strength: how much of the motion across that axis goes: 0 none, 1 all
                (the default 0.8 keeps a fifth, a flutter across the wind).
            motion_mask: where things may move: an ``(H, W)`` array, PIL image, tensor or
                path, white = may move, black = stays still, grey in between; resized to the
                photo (stretched with a warning if its aspect differs). The sampled motion
                is gated by it, feathered (``feathered_gate``), so black pixels never move.
            mask_provider: without ``motion_mask``, compute the mask of each photo with
                this provider of ``data.motion_masks`` (default ``"cues"``: image cues,
                offline; ``"segformer:<folder or hub id>"``: a segmentation model) and gate
                the motion by it, so that sky, buildings, people and roads stay still; a photo
                in which it finds nothing that may move is animated whole, with a
                ``MotionPipelineWarning``. None: no mask (the model's motion everywhere).
            loop_guidance_scale: motion self-guidance weight toward a seamless loop (0: off).
            latents: initial noise ``(B, K, c, h, w)`` instead of drawing it.
            output_size: ``(width, height)`` of the frames. Default: the photo's own size, long
                side capped at ``MAX_OUTPUT_SIDE`` (with ``crop``: the model's training size).
                Another aspect than the photo's cover-crops the photo.
            crop: cover-crop the photo to the model's training frame (the old behaviour).
            renderer: ``"auto"`` (the learned renderer if the pipeline has one and the
                frames have at most ``AUTO_SYNTHESIS_MAX_PIXELS``, else ``"average"``),
                ``"synthesis"``, ``"softsplat"``, ``"average"``, ``"remap"``,
                or None (motion only, no frames).
            return_displacements: also return ``(B, N, H, W, 2)`` float32 displacements
                (``N * H * W * 8`` bytes per photo: 0.7 GB for 150 frames of 1024x576).
            output_type: ``"np"`` (numpy) or ``"pt"`` (torch tensors).
            return_dict: return a ``MotionPipelineOutput`` instead of a tuple.

        Returns:
            ``MotionPipelineOutput(frames, spectral, displacements, images)`` or that tuple.
        """
        if output_type not in ("np", "pt"):
            raise ValueError(f"output_type must be 'np' or 'pt', got {output_type!r}")
        if int(num_inference_steps) < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        config = self.motion_config
        num_frames = config.num_frames if num_frames is None else int(num_frames)
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        guidance_scale = check_finite("guidance_scale", guidance_scale, 0.0)
        loop_guidance_scale = check_finite("loop_guidance_scale", loop_guidance_scale, 0.0)
        speed = check_finite("speed", speed, 0.0, strict=True)
        amplitude = check_finite("amplitude", amplitude, 0.0)
        if amplitude_reference not in AMPLITUDE_REFERENCES:
            raise ValueError(
                f"amplitude_reference must be one of {AMPLITUDE_REFERENCES}, "
                f"got {amplitude_reference!r}"
            )
        fps = config.fps if fps is None else check_finite("fps", fps, 0.0, strict=True)
        if motion_smoothing is None:
            motion_smoothing = self.config.get("motion_smoothing", 0.0)
        motion_smoothing = check_finite("motion_smoothing", motion_smoothing, 0.0)
        if motion_direction is not None:
            motion_direction, direction_strength = check_direction(
                motion_direction, direction_strength
            )
        self.resolve_renderer(renderer)  # a bad name fails before any work

        # seconds per stage of this call, for the command line's summary
        timings = self.last_timings = {"sample": 0.0, "motion": 0.0, "render": 0.0}
        start = time.perf_counter()

        # 1. the photos at the output size, and the model's view of them
        photos, photo_sizes = self.preprocess(image, output_size, crop)
        out_h, out_w = photos[0].shape[:2]
        renderer = self.resolve_renderer(renderer, (out_w, out_h))
        gates = masks = None
        feather = MASK_FEATHER_FRACTION * max(out_w, out_h)
        if motion_mask is not None:
            mask = fit_to_size(load_motion_mask(motion_mask, photo_sizes[0]), (out_w, out_h))
            masks = [mask] * len(photos)
            gates = [feathered_gate(mask, feather)] * len(photos)
        elif mask_provider is not None:
            from data.motion_masks import estimate_motion_mask

            masks = [estimate_motion_mask(photo, provider=mask_provider) for photo in photos]
            for index, mask in enumerate(masks):
                if mask.max() <= 1.0 / 255.0:
                    warnings.warn(
                        f"the {mask_provider!r} motion mask finds nothing that may move in "
                        f"photo {index} (no vegetation or water): animating the whole photo; "
                        "paint a motion_mask to choose what moves",
                        MotionPipelineWarning,
                        stacklevel=2,
                    )
                    masks[index] = np.ones_like(mask)
            gates = [feathered_gate(mask, feather) for mask in masks]
        gate = None if gates is None else np.stack(gates)[:, None, None]  # (B, 1, 1, H, W)
        images, frame_size = self.model_input(photos)
        # A mask-conditioned U-Net also sees the mask (the gate stays: a guarantee that
        # black never moves); without a mask it gets the null mask.
        model_mask = None
        if masks is not None and self.unet.config.get("mask_conditioning", False):
            model_mask = self.model_mask(masks, (images.shape[-1], images.shape[-2]))

        # 2. sample the spectral volume at the model's frame (B, K, 4, h, w) px
        spectral = self.sample_spectral(
            images, frame_size, num_inference_steps, guidance_scale,
            loop_guidance_scale, generator, latents, motion_mask=model_mask,
        )  # fmt: skip
        timings["sample"], start = time.perf_counter() - start, time.perf_counter()
        spectral = smooth_spectral(spectral, motion_smoothing)
        if motion_direction is not None:
            spectral = steer_direction(spectral, motion_direction, direction_strength)

        # 3. to the output frame (D[0] = 0, upsampled, scaled, amplitude, mask)
        # (the visible gain is measured on the model's motion, so that ``amplitude`` still
        # scales what it makes visible)
        visible = amplitude_reference == "visible"
        spectral = self.motion_at_output(
            spectral, (out_w, out_h), 1.0 if visible else amplitude, gate
        )
        self.last_visible_gains = None
        if visible:
            gains = self.visible_gain(spectral, masks, out_w / frame_size[0])
            self.last_visible_gains = gains
            scale = torch.from_numpy(gains * amplitude).to(spectral)
            spectral = spectral * scale.view(-1, 1, 1, 1, 1)

        # 4. displacement at every frame, then 5. the frames
        disp = self.displacements(spectral, num_frames, fps, speed)  # (B, N, H, W, 2) px
        timings["motion"], start = time.perf_counter() - start, time.perf_counter()
        frames = None
        if renderer is not None:
            disp_np = disp.float().cpu().numpy()
            frames = np.stack(
                [self.render(photo, d, renderer) for photo, d in zip(photos, disp_np, strict=True)]
            )

        timings["render"] = time.perf_counter() - start
        self.maybe_free_model_hooks()
        images_out = np.stack(photos)
        if output_type == "np":
            spectral = spectral.float().cpu().numpy()
            disp = disp.float().cpu().numpy() if return_displacements else None
        else:
            images_out = torch.from_numpy(images_out).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            frames = None if frames is None else torch.from_numpy(frames)
            disp = disp if return_displacements else None
        if not return_dict:
            return (frames, spectral, disp, images_out)
        return MotionPipelineOutput(
            frames=frames, spectral=spectral, displacements=disp, images=images_out
        )


def _pad_to(batch: torch.Tensor, padded_size: tuple[int, int]) -> torch.Tensor:
    """Pad ``(B, C, h, w)`` at the right and bottom to ``padded_size = (w_p, h_p)``: reflect
    (replicate where the pad is not smaller than the side, which reflect cannot do)."""
    height, width = batch.shape[-2:]
    pad = (0, padded_size[0] - width, 0, padded_size[1] - height)
    if not any(pad):
        return batch
    mode = "reflect" if pad[1] < width and pad[3] < height else "replicate"
    return F.pad(batch, pad, mode=mode)


def _load_component(folder: Path, library_and_class: list):
    """Load one component of an older pipeline folder (``[module, class]`` from its index)."""
    import importlib

    module_name, class_name = library_and_class
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"{folder}: unknown component class {module_name}.{class_name}") from error
    return cls.from_pretrained(folder)
