"""Flow-based frame interpolation: in-between frames from two keyframes.

For keyframes ``I0`` and ``I1`` and a time ``t`` in [0, 1]:

1. optical flow both ways, ``F01`` (``I0[p]`` is found at ``p + F01[p]`` in ``I1``) and
   ``F10``, with ``data.flow.estimate_flow`` (DIS by default);
2. forward-warp ``I0`` by ``t * F01`` and ``I1`` by ``(1 - t) * F10`` with softmax
   splatting (``splatting.softsplat``, mode ``"soft"``). The splatting metric is
   ``Z = -ALPHA * |I0 - backwarp(I1, F01)|`` (mean over RGB, values in [0, 1]): where two
   source pixels land on one target, the one whose flow is photometrically consistent
   wins (Niklaus & Liu, CVPR 2020);
3. blend the two warps with weights ``(1 - t) * W0`` and ``t * W1``, where ``W0``/``W1``
   are 1 where the warp received a source and 0 in its holes. Pixels that are holes in
   both warps fall back to the cross-fade ``(1 - t) I0 + t I1``.

At ``t = 0`` the flow ``t * F01`` is zero and ``I1`` has weight 0, so the result is ``I0``
(exactly, after rounding to uint8); likewise ``I1`` at ``t = 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from data.flow import estimate_flow
from splatting import hole_mask, softsplat

# Sharpness of the photometric splatting metric for images in [0, 1] (the value used with
# softmax splatting for frame interpolation): an error of 0.05 lowers a weight by e^-1.
METRIC_ALPHA = 20.0


def _check_pair(frame0: np.ndarray, frame1: np.ndarray) -> None:
    for name, frame in (("frame0", frame0), ("frame1", frame1)):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"{name}: expected a uint8 RGB array (H, W, 3), got {frame.dtype} {frame.shape}"
            )
    if frame0.shape != frame1.shape:
        raise ValueError(f"keyframes differ in size: {frame0.shape} vs {frame1.shape}")


def _to_tensor(frame: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0


def _flow_tensor(flow: np.ndarray) -> torch.Tensor:
    """(H, W, 2) float32 pixels -> (1, 2, H, W)."""
    return torch.from_numpy(np.ascontiguousarray(flow)).permute(2, 0, 1)[None].float()


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` (N, C, H, W) at ``p + flow[p]`` (flow (N, 2, H, W) pixels), bilinear,
    border-clamped: the pixel of ``image`` that each pixel of the reference moved to."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=flow.dtype), torch.arange(w, dtype=flow.dtype), indexing="ij"
    )
    x = (xs + flow[:, 0]) / max(w - 1, 1) * 2 - 1  # (N, H, W), in [-1, 1] inside the frame
    y = (ys + flow[:, 1]) / max(h - 1, 1) * 2 - 1
    grid = torch.stack((x, y), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


class FlowInterpolator:
    """In-between frames for one keyframe pair; the flows and metrics are computed once.

    Args:
        frame0, frame1: keyframes, uint8 (H, W, 3) RGB of the same size.
        flow_method: a ``data.flow.FLOW_METHODS`` key (``"dis"``: OpenCV DIS, CPU).
    """

    def __init__(self, frame0: np.ndarray, frame1: np.ndarray, flow_method: str = "dis"):
        _check_pair(frame0, frame1)
        self.frame0, self.frame1 = frame0, frame1
        self.image0, self.image1 = _to_tensor(frame0), _to_tensor(frame1)
        self.flow01 = _flow_tensor(estimate_flow(frame0, frame1[None], method=flow_method)[0])
        self.flow10 = _flow_tensor(estimate_flow(frame1, frame0[None], method=flow_method)[0])
        self.metric0 = self._metric(self.image0, self.image1, self.flow01)
        self.metric1 = self._metric(self.image1, self.image0, self.flow10)

    @staticmethod
    def _metric(source: torch.Tensor, target: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        error = (source - backward_warp(target, flow)).abs().mean(dim=1, keepdim=True)
        return -METRIC_ALPHA * error  # (1, 1, H, W)

    def __call__(self, t: float) -> np.ndarray:
        """The frame at time ``t`` in [0, 1] between the keyframes: uint8 (H, W, 3)."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {t}")
        threads = torch.get_num_threads()
        try:
            return self._frame(t)
        finally:
            # The numba splatting kernel's first call can reset torch's (shared OpenMP)
            # thread count to numba's; keep the caller's setting for what runs next.
            torch.set_num_threads(threads)

    def _frame(self, t: float) -> np.ndarray:
        with torch.no_grad():
            warp0, weight0 = softsplat(
                self.image0, self.flow01 * t, self.metric0, "soft", return_weight=True
            )
            warp1, weight1 = softsplat(
                self.image1, self.flow10 * (1.0 - t), self.metric1, "soft", return_weight=True
            )
            w0 = (1.0 - t) * (~hole_mask(weight0)).float()  # (1, 1, H, W)
            w1 = t * (~hole_mask(weight1)).float()
            total = w0 + w1
            blend = (w0 * warp0 + w1 * warp1) / total.clamp_min(1e-12)
            fade = (1.0 - t) * self.image0 + t * self.image1
            frame = torch.where(total > 0, blend, fade)
        return _to_uint8(frame[0])


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (image.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def interpolate_pair(
    frame0: np.ndarray, frame1: np.ndarray, times: Sequence[float], flow_method: str = "dis"
) -> np.ndarray:
    """Frames at ``times`` (each in [0, 1]) between two keyframes: uint8 (len(times), H, W, 3)."""
    interpolator = FlowInterpolator(frame0, frame1, flow_method)
    return np.stack([interpolator(float(t)) for t in times])


def interpolate_keyframes(
    keyframes: np.ndarray | Sequence[np.ndarray], frames_between: int, flow_method: str = "dis"
) -> np.ndarray:
    """A smooth clip through ``keyframes`` (N, H, W, 3) uint8 with ``frames_between``
    in-betweens per consecutive pair: ``(N - 1) * (frames_between + 1) + 1`` frames, the
    keyframes themselves at indices ``0, frames_between + 1, ...`` unchanged."""
    keyframes = [np.asarray(frame) for frame in keyframes]
    if not keyframes:
        raise ValueError("no keyframes to interpolate")
    if frames_between < 0:
        raise ValueError(f"frames_between must be >= 0, got {frames_between}")
    frames = [keyframes[0]]
    times = np.arange(1, frames_between + 1) / (frames_between + 1)
    for frame0, frame1 in zip(keyframes[:-1], keyframes[1:], strict=True):
        if frames_between:
            frames.extend(interpolate_pair(frame0, frame1, times, flow_method))
        else:
            _check_pair(frame0, frame1)
        frames.append(frame1)
    return np.stack(frames)


def benchmark(size: int = 512, in_betweens: int = 7) -> str:
    """Time one keyframe pair at ``size`` x ``size``: flow set-up, and one in-between vs a
    cross-fade of the same frames (the cheapest in-between), in one process, one thread."""
    import os
    import time

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    blocks = rng.random((size // 8, size // 8, 3))
    frame0 = (np.kron(blocks, np.ones((8, 8, 1))) * 255).astype(np.uint8)
    frame1 = np.roll(frame0, (6, 10), axis=(0, 1))  # a 6 px down, 10 px right shift
    FlowInterpolator(frame0[:64, :64], frame1[:64, :64])(0.5)  # warm-up (numba compiles)
    times = [k / (in_betweens + 1) for k in range(1, in_betweens + 1)]
    start = time.perf_counter()
    interpolator = FlowInterpolator(frame0, frame1)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    for t in times:
        interpolator(t)
    per_frame = (time.perf_counter() - start) / len(times)
    start = time.perf_counter()
    for t in times:
        ((1 - t) * frame0 + t * frame1).astype(np.uint8)
    fade = (time.perf_counter() - start) / len(times)
    return (
        f"{size}x{size}: flows both ways {setup:.3f} s per keyframe pair, "
        f"{per_frame * 1e3:.1f} ms per in-between ({per_frame / fade:.0f}x a cross-fade's "
        f"{fade * 1e3:.2f} ms); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
        "cores (shared machine: compare ratios, not absolute times)"
    )


if __name__ == "__main__":
    print(benchmark())
