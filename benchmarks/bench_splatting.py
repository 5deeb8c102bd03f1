"""Speed of softmax splatting against cv2.remap, measured in one process.

    python benchmarks/bench_splatting.py            # CPU; adds a PyTorch-vs-CuPy table on CUDA
    python benchmarks/bench_splatting.py --threads 1 --photo path/to/photo.jpg

Prints, for one 256x160 frame and for a whole clip of T = MotionConfig.num_frames frames
batched: forward and backward time of ``softsplat(..., mode="soft")`` on the 3-channel
photo and on 64-channel features, and their ratio to ``cv2.remap`` (bicubic, float32) of
the same frames. Also the end-to-end renderers (uint8 photo in, uint8 frames out).
Goals (issue 3): soft splatting of a clip <= 3x cv2.remap per frame on the CPU; backward
<= 3x forward. Times are the best of --repeats runs after one warm-up (the minimum is the
least disturbed by other processes on a shared machine; the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.config import MotionConfig  # noqa: E402
from splatting import (  # noqa: E402
    cupy_kernel,
    numba_kernel,
    render_frames,
    softsplat,
    softsplat_metric,
)

FEATURE_CHANNELS = 64


def oscillating_displacements(
    num_frames: int, height: int, width: int, amplitude: float, seed: int
) -> np.ndarray:
    """(T, H, W, 2) float32: smooth random fields oscillating at two frequencies, D_0 = 0."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames, dtype=np.float32)[:, None, None, None]
    disp = np.zeros((num_frames, height, width, 2), dtype=np.float32)
    for cycles in (2.0, 5.0):
        coarse = rng.standard_normal((6, 8, 2)).astype(np.float32)
        field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        disp += field[None] * np.sin(2 * np.pi * cycles * t / num_frames)
    return disp * (amplitude / np.abs(disp).max())


def load_photo(path: str | None, width: int, height: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8: the photo resized, or a synthetic texture without one."""
    if path:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{path}: not an image file (cannot decode)")
        return cv2.cvtColor(cv2.resize(image, (width, height)), cv2.COLOR_BGR2RGB)
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 8, width // 8, 3)).astype(np.float32)
    texture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    return (texture * 255).astype(np.uint8)


def timed(function, synchronize=lambda: None) -> float:
    synchronize()
    start = time.perf_counter()
    function()
    synchronize()
    return time.perf_counter() - start


def best_seconds(function, repeats: int, synchronize=lambda: None) -> float:
    """Minimum wall time of `repeats` calls after one warm-up call."""
    function()
    return min(timed(function, synchronize) for _ in range(repeats))


def remap_function(photo: np.ndarray, disp: np.ndarray, build_maps: bool):
    """cv2.remap bicubic (float32) of every frame of disp; maps prebuilt or built per call."""
    height, width = photo.shape[:2]
    image = photo.astype(np.float32) / 255.0
    grid_x, grid_y = np.meshgrid(
        np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    )
    maps = [(grid_x - d[..., 0], grid_y - d[..., 1]) for d in disp]

    def call_only():
        for map_x, map_y in maps:
            cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)

    def with_maps():
        for d in disp:
            cv2.remap(
                image,
                grid_x - d[..., 0],
                grid_y - d[..., 1],
                cv2.INTER_CUBIC,
                borderMode=cv2.BORDER_REFLECT_101,
            )

    return with_maps if build_maps else call_only


def splat_seconds(
    values: torch.Tensor,
    flow: torch.Tensor,
    metric: torch.Tensor,
    backend: str,
    repeats: int,
    reference=None,
) -> tuple[float, float, float]:
    """Best seconds of softsplat soft mode (forward, backward) and of `reference`.

    The three are measured in turn within each repeat, so that a change of machine load
    during the run affects numerator and denominator of their ratios alike. The backward
    pass is timed alone (its forward pass is built untimed).
    """
    sync = torch.cuda.synchronize if values.is_cuda else (lambda: None)
    leaves = [t.detach().requires_grad_() for t in (values, flow, metric)]

    def forward():
        with torch.no_grad():
            softsplat(values, flow, metric, "soft", backend=backend)

    def backward_seconds() -> float:
        output = softsplat(*leaves, "soft", backend=backend)
        return timed(lambda: output.backward(torch.ones_like(output)), sync)

    reference = reference or (lambda: None)
    forward(), backward_seconds(), reference()  # warm-up
    best = [float("inf")] * 3
    for _ in range(repeats):
        times = (timed(forward, sync), backward_seconds(), timed(reference))
        best = [min(b, t) for b, t in zip(best, times, strict=True)]
    return best[0], best[1], best[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photo", default=None, help="photo to render (default: synthetic)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch and cv2 (default: theirs)"
    )
    parser.add_argument("--amplitude", type=float, default=4.0, help="max |displacement|, px")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    config = MotionConfig()
    width, height, frames = config.width, config.height, config.num_frames
    photo = load_photo(args.photo, width, height, args.seed)
    disp = oscillating_displacements(frames, height, width, args.amplitude, args.seed)
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), cv2 {cv2.__version__} "
        f"({cv2.getNumThreads()} threads); {frames} frames of {width}x{height}, "
        f"max |D| {args.amplitude} px, best of {args.repeats}; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )

    remap_call = best_seconds(remap_function(photo, disp, False), args.repeats) / frames
    remap_with_maps = best_seconds(remap_function(photo, disp, True), args.repeats) / frames
    print(
        f"cv2.remap bicubic float32, per frame: {remap_call * 1e3:.3f} ms (call only), "
        f"{remap_with_maps * 1e3:.3f} ms (building the maps from D_t + call)"
    )

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    generator = torch.Generator().manual_seed(args.seed)
    for device in devices:
        backends = ["torch"]
        if device == "cuda" and cupy_kernel.is_available():
            backends.append("cupy")
        if device == "cpu" and numba_kernel.is_available():
            backends.append("numba")
        image = torch.from_numpy(photo).permute(2, 0, 1).float().div(255.0)
        disp_t = torch.from_numpy(disp)
        metric = softsplat_metric(disp_t)[None, None]
        flow = disp_t.permute(0, 3, 1, 2).contiguous()
        features = torch.rand(1, FEATURE_CHANNELS, height, width, generator=generator)
        print(f"\nsoftsplat soft on {device}: ms per frame (forward | backward | bwd/fwd)")
        header = "".join(f"{b:>34}" for b in backends)
        ratios = "".join(f" {b + '/remap':>12}" for b in backends)
        print(f"{'case':<22}{header}" + (f"   remap{ratios}" if device == "cpu" else ""))
        for name, values in (("3 ch", image[None]), (f"{FEATURE_CHANNELS} ch", features)):
            for n in (1, frames):
                case = [
                    values.expand(n, -1, -1, -1).contiguous().to(device),
                    flow[:n].to(device),
                    metric.expand(n, -1, -1, -1).contiguous().to(device),
                ]
                # The reference: cv2.remap of the same n frames, scaled to the channels.
                reference = remap_function(photo, disp[:n], False) if device == "cpu" else None
                row = f"{name + f', {n} frame' + ('s' if n > 1 else ''):<22}"
                forwards, remaps = [], []
                for backend in backends:
                    forward, backward, remap = splat_seconds(
                        *case, backend, args.repeats, reference
                    )
                    forward, backward = forward / n, backward / n
                    forwards.append(forward)
                    remaps.append(remap / n * values.shape[1] / 3)  # per frame, per channels
                    row += f"{forward * 1e3:>13.3f} |{backward * 1e3:>9.3f} |{backward / forward:>6.2f}x"
                if device == "cpu":
                    remap = min(remaps)
                    row += f"  {remap * 1e3:>6.3f}"
                    row += "".join(f" {forward / remap:>11.2f}x" for forward in forwards)
                print(row)
        if device == "cpu":
            print(
                "(remap: cv2.remap of the same frames measured in turn with each case (best "
                "over all backends' runs), times channels/3; <backend>/remap: that backend's "
                "forward over it)"
            )

    # Renderers measured in turn within each repeat, like the cases above.
    print("\nrender_frames, whole clip, uint8 photo in and frames out: ms per frame")
    methods = ("copy", "remap", "average", "softsplat")
    best = dict.fromkeys(methods, float("inf"))
    for method in methods:
        render_frames(photo, disp, method)  # warm-up
    for _ in range(args.repeats):
        for method in methods:
            seconds = timed(lambda m=method: render_frames(photo, disp, m))
            best[method] = min(best[method], seconds / frames)
    for method in methods:
        print(
            f"  {method:<10} {best[method] * 1e3:8.3f}   "
            f"({best[method] / best['remap']:.2f}x the remap renderer)"
        )
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
