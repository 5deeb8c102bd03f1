"""Rendering speed of the frame-synthesis model vs the softmax-splatting baseline renderer.

    python benchmarks/bench_frame_synthesis.py            # default renderer size, 150 frames 256x160
    python benchmarks/bench_frame_synthesis.py --block_out_channels 32,64,96 --grid_columns 6  # reference
    python benchmarks/bench_frame_synthesis.py --model weights/default/renderer --model NEW_DIR

Prints, measured in one process on one clip (a random textured photo moved by smooth
oscillating displacements of at most ~4 px):

* frames per second of ``FrameSynthesisModel.render_frames`` (the shipped default size
  16/24/32 x 2 columns unless told; untrained weights: speed does not depend on them) and of ``splatting.render_frames(...,
  "softsplat")``, and their ratio;
* the share of the model's time in the encoder (once per photo), the splatting of the
  three pyramid levels and the GridNet decoder (per frame), from a loop that does what
  ``render_frames`` does with a timer around each stage.

With ``--model DIR`` (repeatable), trained renderers (a fallback gate included) are timed
instead, in turns (``--repeats`` rounds), and each one's speed is given as a ratio to the
first one's.

The load average and the process CPU time are printed: this machine is shared, so wall-clock
figures are noisy; CPU seconds per frame vary less with the load (they still rise when
the cores are oversubscribed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.frame_synthesis import DEFAULT_BATCH_SIZE, FrameSynthesisModel  # noqa: E402
from splatting import render_frames  # noqa: E402


def make_clip(frames: int, width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured (H, W, 3) uint8 photo and (T, H, W, 2) smooth oscillating displacements."""
    g = torch.Generator().manual_seed(seed)
    photo = torch.nn.functional.interpolate(
        torch.rand(1, 3, height // 4, width // 4, generator=g), (height, width)
    )
    photo = (photo[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    shapes = torch.nn.functional.interpolate(
        torch.randn(2, 2, 4, 6, generator=g), (height, width), mode="bicubic", align_corners=False
    )  # two modes, (2, 2, H, W)
    t = torch.arange(frames, dtype=torch.float32)[:, None, None, None]
    disp = 1.5 * (
        shapes[0] * torch.sin(2 * torch.pi * t / 30) + shapes[1] * torch.sin(2 * torch.pi * t / 12)
    )
    return photo, disp.permute(0, 2, 3, 1).contiguous().numpy()


@torch.inference_mode()
def stage_times(
    model: FrameSynthesisModel, photo: np.ndarray, disp: np.ndarray, batch_size: int
) -> dict:
    """Seconds in encode / splat / decode for the whole clip (render_frames' loop, timed)."""
    image = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    d = torch.from_numpy(disp)
    metric = torch.linalg.vector_norm(d, dim=-1).mean(0)[None, None]
    times = {"encode": 0.0, "splat": 0.0, "decode": 0.0}
    start = time.perf_counter()
    features = model.encode(image)
    times["encode"] = time.perf_counter() - start
    for i in range(0, len(d), batch_size):
        flow = d[i : i + batch_size].permute(0, 3, 1, 2)
        n = flow.shape[0]
        batch = features.expand(n)
        start = time.perf_counter()
        splatted = model.splat(batch, flow, metric.expand(n, -1, -1, -1))
        times["splat"] += time.perf_counter() - start
        start = time.perf_counter()
        model.decode(batch, splatted)
        times["decode"] += time.perf_counter() - start
    return times


@torch.inference_mode()
def gflop(fn, photo: np.ndarray) -> float:
    """Floating-point operations counted by torch's FlopCounterMode (convolutions, matmuls)."""
    if fn.__name__ == "encode":
        photo = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    with FlopCounterMode(display=False) as counter:
        fn(photo)
    return counter.get_total_flops() / 1e9


@torch.inference_mode()
def compare_models(folders, frames, width, height, batch_size, repeats) -> None:
    """Time trained renderers in turns on one clip; the median of ``repeats`` rounds each."""
    models = [FrameSynthesisModel.from_pretrained(folder).eval() for folder in folders]
    photo, disp = make_clip(frames, width, height)
    print(f"clip: {frames} frames {width}x{height}, batch {batch_size}, torch threads "
          f"{torch.get_num_threads()}, load average before {os.getloadavg()[0]:.2f}")  # fmt: skip
    for model in models:
        model.render_frames(photo, disp[:2], batch_size=2)  # warm-up
    seconds = [[] for _ in models]
    for _ in range(repeats):
        for model, times in zip(models, seconds, strict=True):
            start = time.perf_counter()
            model.render_frames(photo, disp, batch_size=batch_size)
            times.append(time.perf_counter() - start)
    reference = float(np.median(seconds[0]))
    for folder, model, times in zip(folders, models, seconds, strict=True):
        median = float(np.median(times))
        gate = "with" if model.config.get("fallback_gate", False) else "without"
        print(f"{folder}: {frames / median:.1f} frames/s ({1000 * median / frames:.1f} ms/frame, "
              f"median of {repeats}; {gate} fallback gate), time x{median / reference:.3f} "
              f"of the first")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--size", type=str, default="256x160", help="WxH")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--channels_last", action="store_true", help="channels_last memory format")
    parser.add_argument("--block_out_channels", type=str, default="16,24,32", help="model size")
    parser.add_argument("--grid_columns", type=int, default=2)
    parser.add_argument("--model", action="append", default=None,
                        help="a trained FrameSynthesisModel folder (repeatable): time these")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="rounds of turns with --model")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if args.model:
        compare_models(args.model, args.frames, width, height, args.batch_size, args.repeats)
        return

    torch.manual_seed(0)
    channels = tuple(int(c) for c in args.block_out_channels.split(","))
    model = FrameSynthesisModel(block_out_channels=channels, grid_columns=args.grid_columns).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    photo, disp = make_clip(args.frames, width, height)
    print(f"clip: {args.frames} frames {width}x{height}, batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, channels_last {args.channels_last}, "
          f"model {channels} x {args.grid_columns} columns, {sum(p.numel() for p in model.parameters()):,} parameters")  # fmt: skip
    encode_gflop = gflop(model.encode, photo)
    frame_gflop = gflop(lambda x: model.render_frames(x, disp[:1]), photo) - encode_gflop
    print(f"GFLOP (multiply-add = 2): encode {encode_gflop:.2f} once, {frame_gflop:.2f} per frame")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    model.render_frames(photo, disp[:2], batch_size=2)  # warm-up
    render_frames(photo, disp[:2], "softsplat")

    start, cpu_start = time.perf_counter(), time.process_time()
    model.render_frames(photo, disp, batch_size=args.batch_size)
    model_s, model_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    start = time.perf_counter()
    render_frames(photo, disp, "softsplat", batch_size=args.batch_size)
    base_s = time.perf_counter() - start
    stages = stage_times(model, photo, disp, args.batch_size)
    total = sum(stages.values())

    print(f"FrameSynthesisModel.render_frames: {model_s:.2f} s, {args.frames / model_s:.2f} fps "
          f"(CPU time {model_cpu:.2f} s, {1000 * model_cpu / args.frames:.1f} CPU ms/frame)")  # fmt: skip
    print(f"splatting.render_frames('softsplat'): {base_s:.2f} s, {args.frames / base_s:.2f} fps")
    print(f"model / baseline time ratio: {model_s / base_s:.1f}x")
    print(f"stages (separate timed pass, {total:.2f} s): " + ", ".join(
        f"{k} {v:.2f} s ({100 * v / total:.1f}%)" for k, v in stages.items()))  # fmt: skip
    print(f"per frame: splat {1000 * stages['splat'] / args.frames:.1f} ms, "
          f"decode {1000 * stages['decode'] / args.frames:.1f} ms; encode once {1000 * stages['encode']:.1f} ms")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
