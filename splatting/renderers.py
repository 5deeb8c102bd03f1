"""Baseline renderers: a photo and per-frame forward displacements in, video frames out.

One interface for every method, used by the evaluation, ``sample.py`` and the synthetic
data generator::

    frames = render_frames(image, displacements, method="softsplat")

Convention (the same for every method):

* ``image``: ``np.ndarray`` (H, W, 3) ``uint8`` RGB;
* ``displacements``: (T, H, W, 2) float, a ``np.ndarray`` or ``torch.Tensor``, the
  forward displacement of every pixel of the photo in frame t, in pixels;
  ``[..., 0]`` = x (right), ``[..., 1]`` = y (down). Frame t shows pixel p at p + D_t(p);
* result: ``np.ndarray`` (T, H, W, 3) ``uint8``.

Methods (``RENDERERS``) and how each handles holes (pixels no source lands on):

* ``"copy"``: every frame is the photo (identity baseline); no holes.
* ``"remap"``: ``cv2.remap`` with bicubic interpolation, sampling the photo at
  p - D_t(p). This is a *backward* warp that treats the forward displacement as if it
  were backward: exact only for spatially constant displacement, an approximation
  elsewhere (errors grow with the displacement's spatial gradient). No holes: samples
  outside the photo come from its mirrored border (``BORDER_REFLECT_101``).
* ``"average"``: average splatting of the photo (:func:`softsplat` mode ``avg``):
  overlapping sources are averaged, so foreground and background blend.
* ``"softsplat"``: softmax splatting of the photo (mode ``soft``) weighted by motion
  magnitude, as in Generative Image Dynamics: Z(p) = ``SOFTSPLAT_METRIC_SCALE`` * mean
  over t of |D_t(p)|, computed once per photo, so where sources overlap the one that
  moves more (the foreground: leaves over sky) wins.

Both splatting renderers fill holes with the photo's own pixel at that location (cheap,
and right for the small oscillating motions this project renders; a disocclusion then
shows the moving object's original colour rather than black). Non-finite displacements:
that pixel's source is dropped by the splatting renderers (it counts as 0 in the metric)
and treated as zero displacement by ``remap``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from splatting.softsplat import hole_mask, softsplat

# Z = scale * mean_t |D_t(p)| (pixels). With 5, a source that moves 1 px more on average
# than the one it lands on gets e^5 ~ 150x its weight (a near-hard z-order), and weights
# underflow in float32 only where mean motions differ by more than ~87 / 5 ~ 17 px.
SOFTSPLAT_METRIC_SCALE = 5.0

# Frames splatted together: larger batches give no speed-up on CPU (the operator chunks
# internally to stay in cache) and cost memory.
DEFAULT_BATCH_SIZE = 16

Renderer = Callable[[np.ndarray, np.ndarray, int, torch.device], np.ndarray]


def render_frames(
    image: np.ndarray,
    displacements: np.ndarray | torch.Tensor,
    method: str = "softsplat",
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Render T frames of ``image`` moved by ``displacements`` with one of ``RENDERERS``.

    Args:
        image: (H, W, 3) uint8 RGB photo.
        displacements: (T, H, W, 2) forward displacement per frame in pixels,
            [..., 0] = x (right), [..., 1] = y (down).
        method: a key of ``RENDERERS``: "copy", "remap", "average" or "softsplat".
        batch_size: frames splatted at once (splatting methods only).
        device: torch device of the splatting methods ("cpu", "cuda", "mps").

    Returns:
        (T, H, W, 3) uint8 frames.

    Raises:
        ValueError: on an unknown method or badly shaped/typed inputs.
    """
    if method not in RENDERERS:
        raise ValueError(f"render_frames: unknown method {method!r}; choose from {list(RENDERERS)}")
    if batch_size < 1:
        raise ValueError(f"render_frames: batch_size must be >= 1, got {batch_size}")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(
            f"render_frames: image must be a (H, W, 3) uint8 numpy array, got {_describe(image)}"
        )
    if image.shape[2] != 3:
        raise ValueError(f"render_frames: image must have 3 channels (RGB), got {image.shape}")
    if isinstance(displacements, torch.Tensor):
        displacements = displacements.detach().cpu().numpy()
    displacements = np.asarray(displacements, dtype=np.float32)
    height, width = image.shape[:2]
    if displacements.ndim != 4 or displacements.shape[1:] != (height, width, 2):
        raise ValueError(
            f"render_frames: displacements must have shape (T, {height}, {width}, 2) to match "
            f"the image, got {displacements.shape}"
        )
    return RENDERERS[method](image, displacements, batch_size, torch.device(device))


def softsplat_metric(
    displacements: torch.Tensor, scale: float = SOFTSPLAT_METRIC_SCALE
) -> torch.Tensor:
    """Softmax-splatting weight of every photo pixel: scale * mean_t |D_t(p)|.

    Args:
        displacements: (T, H, W, 2) in pixels; non-finite vectors count as 0.

    Returns:
        (H, W) tensor, same dtype and device.
    """
    magnitude = torch.linalg.vector_norm(displacements, dim=-1)
    magnitude = torch.nan_to_num(magnitude, nan=0.0, posinf=0.0)
    return magnitude.mean(dim=0).mul_(scale)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def _render_copy(image: np.ndarray, displacements: np.ndarray, *_) -> np.ndarray:
    return np.repeat(image[None], len(displacements), axis=0)


def _render_remap(image: np.ndarray, displacements: np.ndarray, *_) -> np.ndarray:
    height, width = image.shape[:2]
    grid_x, grid_y = np.meshgrid(
        np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    )
    frames = np.empty((len(displacements), height, width, 3), dtype=np.uint8)
    for t, disp in enumerate(displacements):
        disp = np.nan_to_num(disp, nan=0.0, posinf=0.0, neginf=0.0)
        cv2.remap(
            image,
            grid_x - disp[..., 0],
            grid_y - disp[..., 1],
            interpolation=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_REFLECT_101,
            dst=frames[t],
        )
    return frames


def _render_splat(
    image: np.ndarray,
    displacements: np.ndarray,
    batch_size: int,
    device: torch.device,
    mode: str,
) -> np.ndarray:
    photo = torch.from_numpy(image).to(device).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
    disp = torch.from_numpy(displacements)  # (T, H, W, 2), on the CPU
    metric = None
    if mode == "soft":
        metric = softsplat_metric(disp).to(device)[None, None]  # (1, 1, H, W)
    frames = np.empty((len(disp), *image.shape), dtype=np.uint8)
    with torch.no_grad():
        for start in range(0, len(disp), batch_size):
            flow = disp[start : start + batch_size].to(device).permute(0, 3, 1, 2)
            n = flow.shape[0]
            batch_metric = None if metric is None else metric.expand(n, -1, -1, -1)
            rendered, weight = softsplat(
                photo.expand(n, -1, -1, -1), flow, batch_metric, mode, return_weight=True
            )
            rendered = torch.where(hole_mask(weight), photo, rendered)  # fill holes
            frames[start : start + n] = _to_uint8(rendered)
    return frames


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] -> (N, H, W, 3) uint8, rounded; modifies ``frames``."""
    frames.mul_(255.0).add_(0.5).clamp_(0.0, 255.0)
    return frames.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()


def _render_average(image, displacements, batch_size, device) -> np.ndarray:
    return _render_splat(image, displacements, batch_size, device, "avg")


def _render_softsplat(image, displacements, batch_size, device) -> np.ndarray:
    return _render_splat(image, displacements, batch_size, device, "soft")


RENDERERS: dict[str, Renderer] = {
    "copy": _render_copy,
    "remap": _render_remap,
    "average": _render_average,
    "softsplat": _render_softsplat,
}
