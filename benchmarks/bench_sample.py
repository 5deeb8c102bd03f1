"""Where the time of ``sample.py`` goes, at the training size and at native resolution.

Two runs of the one ``MotionPipeline`` call, 150 frames each, with the shipped weights:

* **256x160**: a photo at the model's training size (``--size 256x160``);
* **1024x576 from a 1920x1080 photo**: the photo is enlarged to 1920x1080 here (a stand-in
  for a camera photo), animated at the default size (long side capped at 1024).

For each: seconds to load, sample the spectral volume (DPM-Solver++, guidance 4), evaluate
the displacements, render (every renderer, timed on ``--render_frames`` frames and scaled
to 150), write a GIF and an MP4. The reference in the same run is ``cv2.remap`` of the
same frames, the cheapest warp a user could pick; renderers are reported as a ratio to it.

``--reference_model DIR`` also times the sampling (256x160, 25 DPM-Solver++ steps, guidance
4, the automatic mask) of ``--model`` and of DIR alternately, ``--repeats`` times each, and
prints the ratio of their fastest runs: how a new motion model's sampling compares with the
one it replaces, on the same machine at the same moment.

    python benchmarks/bench_sample.py --threads 2
    python benchmarks/bench_sample.py --threads 1 --reference_model OLD_WEIGHTS --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.images import load_image  # noqa: E402
from data.video import resize_cover_crop, write_video  # noqa: E402
from generators.gid import DEFAULT_SAMPLING, DEFAULT_SCHEDULER  # noqa: E402

NUM_FRAMES = 150


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="weights/default")
    parser.add_argument("--photo", default="data/examples/squirrel_cls.jpg")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--render_frames", type=int, default=30,
                        help="frames each renderer is timed on (scaled to 150)")  # fmt: skip
    parser.add_argument("--reference_model", default=None,
                        help="also compare the sampling time with this motion model's")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="alternate runs per model")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pipe = load_quiet_pipeline(args.model)
    load = time.perf_counter() - start
    print(f"load {load:.1f} s ({args.threads} threads)")
    photo = np.asarray(load_image(args.photo))
    cases = {
        "256x160": (photo, (256, 160)),
        "1024x576 from 1920x1080": (resize_cover_crop(photo, (1920, 1080)), None),
    }
    for name, (image, size) in cases.items():
        start = time.perf_counter()
        out = pipe(image, output_size=size, num_frames=NUM_FRAMES, renderer=None,
                   generator=torch.Generator().manual_seed(0), **DEFAULT_SAMPLING)  # fmt: skip
        total = time.perf_counter() - start
        timings = pipe.last_timings
        frame = out.images[0]
        disp = out.displacements[0][: args.render_frames]
        scale = NUM_FRAMES / len(disp)
        render = {}
        for renderer in ("remap", "average", "softsplat", "synthesis"):
            start = time.perf_counter()
            frames = pipe.render(frame, disp, renderer, progress=False)
            render[renderer] = (time.perf_counter() - start) * scale
        writes = {}
        full = np.concatenate([frames] * int(np.ceil(scale)))[:NUM_FRAMES]  # 150 real frames
        with tempfile.TemporaryDirectory() as tmp:
            for fmt in ("gif", "mp4"):
                start = time.perf_counter()
                write_video(full, Path(tmp) / f"x.{fmt}", fps=30)
                writes[fmt] = time.perf_counter() - start
        height, width = frame.shape[:2]
        print(f"\n{name}: frames {width}x{height}, pipeline call without rendering {total:.1f} s "
              f"(sample {timings['sample']:.1f} s, motion {timings['motion']:.1f} s)")  # fmt: skip
        for renderer, seconds in render.items():
            print(f"  render {renderer:9s} {seconds:6.1f} s for 150 frames, "
                  f"{NUM_FRAMES / seconds:6.1f} frames/s, {seconds / render['remap']:5.1f}x remap")  # fmt: skip
        print(f"  write gif {writes['gif']:.1f} s, mp4 {writes['mp4']:.1f} s")
        for renderer in ("synthesis", "average"):
            end_to_end = load + timings["sample"] + timings["motion"] + render[renderer]
            print(f"  end to end with {renderer}: {end_to_end + writes['gif']:.1f} s (gif)")
    if args.reference_model is not None:
        compare_sampling(pipe, args.model, args.reference_model, photo, args.repeats)


def load_quiet_pipeline(model: str):
    """The motion pipeline with sample.py's scheduler, no progress bar."""
    from models.pipeline_motion import MotionPipeline

    pipe = MotionPipeline.from_pretrained(model)
    pipe.set_scheduler(DEFAULT_SCHEDULER)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def compare_sampling(pipe, model: str, reference_model: str, photo: np.ndarray, repeats: int):
    """Sampling seconds of ``pipe`` and of the reference model, alternately (so that a change
    of machine load hits both), and the ratio of the fastest runs."""
    import torch

    reference = load_quiet_pipeline(reference_model)
    seconds = {model: [], reference_model: []}
    for _ in range(repeats):
        for name, pipeline in ((model, pipe), (reference_model, reference)):
            pipeline(photo, output_size=(256, 160), num_frames=2, renderer=None,
                     generator=torch.Generator().manual_seed(0), **DEFAULT_SAMPLING)  # fmt: skip
            seconds[name].append(pipeline.last_timings["sample"])
    print(f"\nsampling at 256x160, {repeats} alternate runs each (fastest):")
    for name, values in seconds.items():
        print(f"  {name}: {min(values):.2f} s (" + ", ".join(f"{v:.2f}" for v in values) + ")")
    ratio = min(seconds[model]) / min(seconds[reference_model])
    print(f"  {model} / {reference_model}: {ratio:.3f}")


if __name__ == "__main__":
    main()
