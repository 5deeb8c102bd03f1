"""GIF writing: one palette per clip (data.video.write_gif) vs per-frame palettes.

    python benchmarks/bench_gif.py [PHOTO]

A 150-frame 256x160 clip of a photo whose right half moves (softsplat); prints encode
time, mean absolute error and frame-to-frame flicker of the still left half for both.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.images import load_image  # noqa: E402
from data.video import resize_cover_crop, write_gif  # noqa: E402
from splatting import render_frames  # noqa: E402


def main() -> None:
    photo = sys.argv[1] if len(sys.argv) > 1 else "data/examples/squirrel_cls.jpg"
    image = resize_cover_crop(np.asarray(load_image(photo)), (256, 160))
    phase = np.arange(150)[:, None, None] / 150 * 2 * np.pi
    ys, xs = np.mgrid[0:160, 0:256]
    moving = xs >= 128
    disp = np.stack(
        [np.sin(phase) * np.sin(xs / 20) * 2 * moving, np.cos(phase) * moving * 1.0], axis=-1
    ).astype(np.float32)
    frames = render_frames(image, disp, method="softsplat")

    def report(name: str, data: bytes, seconds: float) -> None:
        back = iio.imread(data, index=None, extension=".gif")[..., :3].astype(float)
        flicker = np.abs(np.diff(back[:, :, :100], axis=0)).mean()
        print(f"{name:28s} {seconds:6.2f} s  {len(data) / 1e6:5.2f} MB  "
              f"mean abs error {np.abs(back - frames).mean():.2f}  still flicker {flicker:.3f}")  # fmt: skip

    start = time.perf_counter()
    buffer = io.BytesIO()
    iio.imwrite(buffer, frames, extension=".gif", plugin="pillow", duration=1000 / 30, loop=0)
    report("per-frame palettes (imageio)", buffer.getvalue(), time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = write_gif(frames, Path(tmp) / "clip.gif", fps=30)
        report("one palette (write_gif)", path.read_bytes(), time.perf_counter() - start)


if __name__ == "__main__":
    main()
