"""Optical flow accuracy and speed on real photos moved by known oscillating fields.

Each photo (resized and cropped to MotionConfig's 256x160) becomes a clip of ``--frames``
frames: frame t shows reference pixel p at p + D_t(p), where D_t is a smooth field
oscillating in time (a few spatial modes, 1-3 cycles per clip, D_0 = 0), scaled so that
its largest displacement is one of ``--amplitudes`` pixels. Frames are rendered by
backward sampling at the fixed-point inverse of the field (``data.flow.render_displaced``),
so D_t is exact ground truth for the flow from frame 0 to frame t.

Printed: mean end-point error (EPE, px) in the interior (``--border`` px excluded) per
amplitude; frames per second of the reference-to-every-frame path (``flow_to_frames``)
with 1 thread and with ``--workers`` threads, and of a naive loop that calls the
estimator on each (reference, frame) pair. Then, on real video without ground truth
(bikes.mp4's first shot, tree.avi's clean part), the photometric residual after warping
each frame back to the reference with the estimated flow, against no warp.

Run from the repository root:  python benchmarks/bench_flow.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.config import MotionConfig  # noqa: E402
from data.flow import endpoint_error, get_flow_estimator, render_displaced  # noqa: E402
from data.video import read_video, resize_cover_crop  # noqa: E402

PHOTOS = ["aloeL.jpg", "butterfly.jpg", "squirrel_cls.jpg", "fruits.jpg"]
ESTIMATORS = {  # label: (method, options)
    "dis-ultrafast": ("dis", {"preset": "ultrafast"}),
    "dis-fast": ("dis", {"preset": "fast"}),
    "dis-medium": ("dis", {"preset": "medium"}),
    "dis-fine": ("dis", {"preset": "fine"}),
    "farneback": ("farneback", {}),
    "pyflow": ("pyflow", {}),
    "raft": ("raft", {}),
}


def smooth_noise(height: int, width: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``(H, W, 2)`` Gaussian-blurred noise scaled to a largest magnitude of 1."""
    field = cv2.GaussianBlur(
        rng.standard_normal((height, width, 2)).astype(np.float32), (0, 0), sigma
    )
    return field / np.linalg.norm(field, axis=-1).max()


def oscillating_field(
    num_frames: int, height: int, width: int, amplitude: float, rng: np.random.Generator
) -> np.ndarray:
    """``disp: (T, H, W, 2)``: three spatial modes, each ``a (cos wt - 1) + b sin wt`` with
    1-3 cycles per clip (a phase that varies over the image), ``disp[0] = 0``, and
    ``max |disp| = amplitude`` px."""
    t = np.arange(num_frames, dtype=np.float32)[:, None, None, None]
    disp = np.zeros((num_frames, height, width, 2), np.float32)
    for cycles in (1, 2, 3):
        a, b = (smooth_noise(height, width, rng.uniform(16, 32), rng) for _ in range(2))
        omega = 2 * np.pi * cycles / num_frames
        disp += (a * (np.cos(omega * t) - 1) + b * np.sin(omega * t)) / cycles
    return disp * (amplitude / np.linalg.norm(disp, axis=-1).max())


def inverse_residual(disp: np.ndarray, frame: int = -1, iterations: int = 20) -> float:
    """Largest |q + D(q) - x| left by render_displaced's fixed-point inverse, in px."""
    field = disp[frame]
    height, width = field.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    qx, qy = xs - field[..., 0], ys - field[..., 1]
    for _ in range(iterations):
        at_q = cv2.remap(field, qx, qy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        qx, qy = xs - at_q[..., 0], ys - at_q[..., 1]
    at_q = cv2.remap(field, qx, qy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return float(np.hypot(qx + at_q[..., 0] - xs, qy + at_q[..., 1] - ys).max())


def make_clips(args, size: tuple[int, int]) -> list[dict]:
    rng = np.random.default_rng(args.seed)
    clips = []
    for name in PHOTOS:
        bgr = cv2.imread(str(args.data_root / "photos" / "permissive" / name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"{args.data_root}/photos/permissive/{name}: missing (--data-root?)")
        photo = resize_cover_crop(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size)
        for amplitude in args.amplitudes:
            disp = oscillating_field(args.frames, size[1], size[0], amplitude, rng)
            frames = np.stack([render_displaced(photo, d) for d in disp])
            clips.append(dict(photo=name, amplitude=amplitude, frames=frames, disp=disp))
    return clips


def time_call(repeats: int, function, *args, **kwargs) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (the least disturbed by other load), and a result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


def naive_loop(estimator, ref: np.ndarray, frames: np.ndarray) -> list[np.ndarray]:
    """One independent call per (reference, frame) pair: no per-reference work shared."""
    return [estimator(ref, frame) for frame in frames]


def bench_estimator(estimator, clips: list[dict], args) -> dict:
    errors: dict[float, list[float]] = {a: [] for a in args.amplitudes}
    seconds = {"serial": 0.0, "threads": 0.0, "naive": 0.0}
    frames_done = 0
    for clip in clips:
        ref, frames = clip["frames"][0], clip["frames"]
        elapsed, flow = time_call(args.repeats, estimator.flow_to_frames, ref, frames)
        seconds["serial"] += elapsed
        elapsed, threaded = time_call(
            args.repeats, estimator.flow_to_frames, ref, frames, workers=args.workers
        )
        seconds["threads"] += elapsed
        if not np.allclose(flow, threaded, atol=1e-4):
            print(f"  note: threaded flow differs from serial for {clip['photo']}")
        elapsed, _ = time_call(args.repeats, naive_loop, estimator, ref, frames[1:])
        seconds["naive"] += elapsed
        frames_done += len(frames) - 1  # frame 0 is the reference: zero flow, not estimated
        errors[clip["amplitude"]].append(endpoint_error(flow[1:], clip["disp"][1:], args.border))
    result = {f"epe@{a:g}": float(np.mean(v)) for a, v in errors.items()}
    result["epe"] = float(np.mean([np.mean(v) for v in errors.values()]))
    for key, total in seconds.items():
        result[f"fps_{key}"] = frames_done / total
    return result


def photometric_residual(frames: np.ndarray, flow: np.ndarray, border: int) -> tuple[float, float]:
    """Mean |reference(p) - frame_t(p + flow_t(p))| (grey levels, interior, t >= 1), and the
    same without flow (|reference - frame_t|): how much of the change the flow explains."""
    gray = frames.mean(-1, dtype=np.float32)
    height, width = gray.shape[1:]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    inner = (slice(border, height - border), slice(border, width - border))
    warped, still = [], []
    for t in range(1, len(frames)):
        back = cv2.remap(gray[t], xs + flow[t, ..., 0], ys + flow[t, ..., 1], cv2.INTER_LINEAR)
        warped.append(np.abs(back - gray[0])[inner].mean())
        still.append(np.abs(gray[t] - gray[0])[inner].mean())
    return float(np.mean(warped)), float(np.mean(still))


def real_video_clips(args, size: tuple[int, int]) -> list[tuple[str, np.ndarray]]:
    clips = []
    bikes = args.data_root / "videos" / "bikes.mp4"
    if bikes.exists():  # frames 0-29: the first shot (its first cut is at frame 30)
        clips.append(("bikes.mp4 frames 0-29", read_video(bikes, size=size, max_frames=30).frames))
    tree = args.data_root / "videos" / "tree.avi"
    if tree.exists():  # frames 0-52 are clean (a hand enters at 53)
        clips.append(("tree.avi frames 0-52", read_video(tree, size=size, max_frames=53).frames))
    return clips


def time_untrained_raft(clip: dict, args) -> None:
    """Frames/s of RAFT small and large (randomly initialised: speed does not depend on the
    weights, accuracy does, so no EPE) on one clip, on the default device."""
    import tempfile

    import torch
    from torchvision.models.optical_flow import raft_large, raft_small

    torch.manual_seed(args.seed)
    ref, frames = clip["frames"][0], clip["frames"][1:]
    for name, build in [("small", raft_small), ("large", raft_large)]:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"raft_{name}_random.pth"
            torch.save(build(weights=None).state_dict(), path)
            estimator = get_flow_estimator("raft", weights_path=path, batch_size=4)
        estimator.flow_to_frames(ref, frames[:4])  # warm-up: first calls set up kernels
        elapsed, _ = time_call(1, estimator.flow_to_frames, ref, frames)
        print(f"{'raft-' + name:<14}random weights, speed only: {len(frames) / elapsed:.1f} fps "
              f"on {estimator.device} (torch threads {torch.get_num_threads()}, "
              f"{estimator.num_flow_updates} updates, batch 4)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--amplitudes", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--border", type=int, default=16, help="pixels excluded on each side")
    parser.add_argument("--workers", type=int, default=2, help="threads for the threaded path")
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats (best kept)")
    parser.add_argument("--methods", nargs="+", default=list(ESTIMATORS), choices=list(ESTIMATORS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--raft-untrained-speed", action="store_true",
        help="also time torchvision RAFT with random weights (speed only; its flow is noise)",
    )  # fmt: skip
    args = parser.parse_args()

    size = MotionConfig().size
    print(f"cv2 {cv2.__version__}, cv2 threads {cv2.getNumThreads()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} (timings are only meaningful near 0), "
          f"size {size[0]}x{size[1]}, {args.frames} frames/clip, photos {', '.join(PHOTOS)}")  # fmt: skip
    started = time.perf_counter()
    clips = make_clips(args, size)
    worst = max(inverse_residual(c["disp"], frame=len(c["disp"]) // 4) for c in clips)
    print(f"{len(clips)} clips rendered in {time.perf_counter() - started:.1f} s; "
          f"fixed-point inverse residual <= {worst:.1e} px (at t = T/4)")  # fmt: skip

    amp_cols = "".join(f"{f'EPE@{a:g}px':>10}" for a in args.amplitudes)
    header = (f"{'method':<14}{amp_cols}{'EPE all':>9}{'fps 1thr':>10}"
              f"{f'fps {args.workers}thr':>10}{'speed-up':>9}{'fps naive':>10}")  # fmt: skip
    print("\nKnown motion (mean interior EPE in px; frames/s of reference -> every frame)")
    print(header)
    estimators = {}
    for label in args.methods:
        method, options = ESTIMATORS[label]
        try:
            estimators[label] = get_flow_estimator(method, **options)
        except ImportError:
            print(f"{label:<14}not installed (see data/flow.py PYFLOW_INSTALL_HINT)")
            continue
        except FileNotFoundError:
            print(f"{label:<14}weights unavailable offline (none in the torch hub cache)")
            continue
        r = bench_estimator(estimators[label], clips, args)
        amps = "".join(f"{r[f'epe@{a:g}']:>10.3f}" for a in args.amplitudes)
        print(f"{label:<14}{amps}{r['epe']:>9.3f}{r['fps_serial']:>10.1f}{r['fps_threads']:>10.1f}"
              f"{r['fps_threads'] / r['fps_serial']:>8.2f}x{r['fps_naive']:>10.1f}")  # fmt: skip

    if args.raft_untrained_speed:
        time_untrained_raft(clips[0], args)

    videos = real_video_clips(args, size)
    if videos:
        print("\nReal video, no ground truth: mean |ref(p) - frame_t(p + flow)| in grey levels "
              "(interior), vs |ref - frame_t| without flow")  # fmt: skip
        for name, frames in videos:
            still = None
            parts = []
            for label, estimator in estimators.items():
                flow = estimator.flow_to_frames(frames[0], frames)
                warped, still = photometric_residual(frames, flow, args.border)
                parts.append(f"{label} {warped:.2f}")
            print(f"  {name} ({len(frames)} frames): no flow {still:.2f}; " + ", ".join(parts))
    print(f"\ntotal {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
