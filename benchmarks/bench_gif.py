"""GIF writing: data.video.write_gif against the writers it replaced.

    python benchmarks/bench_gif.py [PHOTO]          # synthetic: the right half moves
    python benchmarks/bench_gif.py --clip OUT.mp4    # a real animation (sample.py's output)

Three writers of the same frames: per-frame palettes (imageio's Pillow default), one
256-colour palette for the clip (write_gif before 2026-12-02: Pillow stores a frame as its
changes only when the palette leaves an index unused for them, which a full palette does
not), and ``write_gif`` (one 255-colour palette: every frame after the first is stored as
its changes, the unchanged pixels transparent). Prints encode time, file size, mean absolute error against the frames and,
for the synthetic clip, the frame-to-frame flicker of its still left half.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.images import load_image  # noqa: E402
from data.video import read_video, resize_cover_crop, write_gif  # noqa: E402
from splatting import render_frames  # noqa: E402


def synthetic_clip(photo: str) -> np.ndarray:
    """150 frames 256x160 of ``photo`` whose right half sways (softsplat), left half still."""
    image = resize_cover_crop(np.asarray(load_image(photo)), (256, 160))
    phase = np.arange(150)[:, None, None] / 150 * 2 * np.pi
    ys, xs = np.mgrid[0:160, 0:256]
    moving = xs >= 128
    disp = np.stack(
        [np.sin(phase) * np.sin(xs / 20) * 2 * moving, np.cos(phase) * moving * 1.0], axis=-1
    ).astype(np.float32)
    return render_frames(image, disp, method="softsplat")


def whole_frames_gif(frames: np.ndarray) -> bytes:
    """The previous write_gif: one 256-colour palette, Pillow's defaults."""
    mosaic = np.concatenate(frames[:: max(1, len(frames) // 8)][:8], axis=0)
    palette = Image.fromarray(mosaic).quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    images = [
        Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames
    ]
    buffer = io.BytesIO()
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=1000 / 30, loop=0
    )
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photo", nargs="?", default="data/examples/squirrel_cls.jpg")
    parser.add_argument("--clip", type=Path, default=None, help="a video to write as GIF")
    args = parser.parse_args(argv)
    if args.clip is not None:
        frames = read_video(args.clip, drop_duplicates=False).frames
        still_half = False
    else:
        frames = synthetic_clip(args.photo)
        still_half = True
    print(f"{len(frames)} frames of {frames.shape[2]}x{frames.shape[1]}")

    def report(name: str, data: bytes, seconds: float) -> None:
        back = iio.imread(data, index=None, extension=".gif")[..., :3].astype(float)
        line = (
            f"{name:34s} {seconds:6.2f} s  {len(data) / 1e6:6.2f} MB  "
            f"mean abs error {np.abs(back - frames).mean():.2f}"
        )
        if still_half:
            line += f"  still flicker {np.abs(np.diff(back[:, :, :100], axis=0)).mean():.3f}"
        print(line)

    start = time.perf_counter()
    buffer = io.BytesIO()
    iio.imwrite(buffer, frames, extension=".gif", plugin="pillow", duration=1000 / 30, loop=0)
    report("per-frame palettes (imageio)", buffer.getvalue(), time.perf_counter() - start)
    start = time.perf_counter()
    data = whole_frames_gif(frames)
    report("one 256-colour palette (before)", data, time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = write_gif(frames, Path(tmp) / "clip.gif", fps=30)
        report(
            "one palette, delta frames (write_gif)", path.read_bytes(), time.perf_counter() - start
        )


if __name__ == "__main__":
    main()
