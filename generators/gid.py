"""Generative Image Dynamics: photo -> spectral volume -> displacements -> rendered frames.

``python sample.py`` animates the bundled example photos with the shipped default weights;
``python sample.py --image photo.jpg`` animates yours. Stages, each timed:

1. load the motion pipeline (spectral codec + U-Net + scheduler, ``--model``) and the
   renderer (``<model>/renderer``, a ``FrameSynthesisModel``);
2. per photo: sample its spectral volume (``models.pipeline_motion.MotionPipeline``),
   scale it by ``--amplitude``, and evaluate the motion at ``--num_frames`` frames of
   ``--fps`` played ``--speed`` times faster (``data.spectral.displacement_at_phases``);
3. render the frames (``--renderer``) and write GIF/MP4/WebP/PNG frames.

A folder of photos gives one output per photo; a photo that fails is reported at the end
and the exit code is 1, the others are still written.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from data.images import load_image
from generators import pick_device, plan_outputs, run_batch
from models import SCHEDULERS

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT / "weights" / "default"
EXAMPLES_DIR = REPO_ROOT / "data" / "examples"
RENDERER_SUBFOLDER = "renderer"
# Classifier-free guidance on the photo: with the shipped weights, 4 confines the motion to
# what moves (correlation with the vegetation mask 0.17 -> 0.41, motion energy on still
# pixels 16 % -> 4 %; docs/SAMPLING.md) at twice the U-Net work per step.
DEFAULT_GUIDANCE_SCALE = 4.0
RENDERERS = ("synthesis", "softsplat", "average", "remap")
FORMATS = ("gif", "mp4", "webp", "frames")
REBUILD_HINT = (
    "the shipped default weights live in weights/default (git checkout restores them); "
    "bash scripts/train_default.sh rebuilds them, or pass --model DIR_OR_HUB_ID of a folder "
    "written by train_unet.py / MotionPipeline.save_pretrained"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image",
        default=str(EXAMPLES_DIR),
        help="a photo, a folder of photos or a glob pattern; the bundled examples by default",
    )
    parser.add_argument("--output", default="outputs/samples", help="output folder")
    parser.add_argument("--format", choices=FORMATS, default="gif")
    parser.add_argument("--num_frames", type=int, default=150)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_inference_steps", type=int, default=25)
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="dpm",
                        help="dpm: DPM-Solver++ (few steps); ddim: the training-time default")  # fmt: skip
    parser.add_argument("--guidance_scale", type=float, default=DEFAULT_GUIDANCE_SCALE,
                        help="classifier-free guidance on the photo (1: off)")  # fmt: skip
    parser.add_argument("--loop", action="store_true",
                        help="motion self-guidance toward a seamless loop")  # fmt: skip
    parser.add_argument("--loop_guidance_scale", type=float, default=1.0,
                        help="strength of --loop")  # fmt: skip
    parser.add_argument("--amplitude", type=float, default=1.0, help="scales the motion")
    parser.add_argument("--speed", type=float, default=1.0, help="plays the motion faster (>1)")
    parser.add_argument("--renderer", choices=RENDERERS, default="synthesis",
                        help="synthesis: the learned renderer; others: splatting baselines")  # fmt: skip
    parser.add_argument("--model", default=str(DEFAULT_MODEL),
                        help="motion pipeline folder or hub id; the shipped weights by default")  # fmt: skip
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    parser.add_argument("--save_motion", action="store_true",
                        help="also write the spectral volume (.npz), flow images, spectrum plot")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _check_args(args: argparse.Namespace) -> None:
    for name in ("num_frames", "num_inference_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("fps", "speed"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name} must be > 0, got {getattr(args, name)}")
    if not np.isfinite(args.amplitude) or args.amplitude < 0:
        raise ValueError(f"--amplitude must be a finite number >= 0, got {args.amplitude}")


def load_models(model: str, renderer: str, device):
    """The motion pipeline and (for ``renderer == "synthesis"``) the learned renderer."""
    local = Path(model)
    if local.exists() and not (local / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{model}: no model_index.json, not a motion pipeline; {REBUILD_HINT}"
        )
    if not local.exists() and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise FileNotFoundError(f"{model}: no such model folder; {REBUILD_HINT}")
    from models.frame_synthesis import FrameSynthesisModel
    from models.pipeline_motion import MotionPipeline

    try:
        pipeline = MotionPipeline.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"{model}: cannot load the motion pipeline ({error}); {REBUILD_HINT}"
        ) from None
    pipeline.to(device)
    pipeline.set_progress_bar_config(desc="motion", leave=False)
    synthesis = None
    if renderer == "synthesis":
        try:
            synthesis = FrameSynthesisModel.from_pretrained(model, subfolder=RENDERER_SUBFOLDER)
        except (OSError, ValueError) as error:
            raise FileNotFoundError(
                f"{model}: no learned renderer in {RENDERER_SUBFOLDER}/ ({error}); "
                "use --renderer softsplat, or train one with train_frame_synthesis.py and "
                f"save it as {model}/{RENDERER_SUBFOLDER}"
            ) from None
        synthesis.to(device).eval()
    return pipeline, synthesis


def _write_frames(path: Path, frames: np.ndarray, fps: float, fmt: str, overwrite: bool) -> None:
    from data.video import write_video

    if fmt == "frames":
        from PIL import Image

        path.mkdir(parents=True, exist_ok=True)
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(path / f"{index:04d}.png")
        return
    write_video(frames, path, fps=fps, overwrite=overwrite)


def _save_motion(out_dir: Path, stem: str, spectral: np.ndarray, disp: np.ndarray, config) -> None:
    from PIL import Image

    from data.io_utils import write_npz_atomic
    from data.spectral import frequency_power_spectrum
    from data.visualize import flow_to_color, plot_power_spectrum

    write_npz_atomic(out_dir / f"{stem}_motion.npz", spectral=spectral.astype(np.float32),
                     num_frames=config.num_frames, fps=config.fps)  # fmt: skip
    flow_dir = out_dir / f"{stem}_flow"
    flow_dir.mkdir(exist_ok=True)
    scale = float(np.percentile(np.linalg.norm(disp, axis=-1), 99)) or 1.0
    for index in np.linspace(0, len(disp) - 1, min(8, len(disp))).astype(int):
        Image.fromarray(flow_to_color(disp[index], max_magnitude=scale)).save(
            flow_dir / f"{index:04d}.png"
        )
    plot_power_spectrum(
        frequency_power_spectrum(spectral),
        config.frequencies_hz(),
        out_dir / f"{stem}_spectrum.png",
    )


def animate(args: argparse.Namespace, pipeline, synthesis, photo: Path, out_path: Path, timings):
    """Sample, render and write one photo's animation; adds seconds per stage to ``timings``."""
    import torch

    from data.spectral import displacement_at_phases
    from splatting import render_frames

    image = load_image(photo)
    start = time.perf_counter()
    generator = torch.Generator("cpu").manual_seed(args.seed)
    result = pipeline(
        image,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        loop_guidance_scale=args.loop_guidance_scale if args.loop else 0.0,
        generator=generator,
        num_frames=1,  # the displacements are evaluated below, at the requested times
    )
    spectral = np.asarray(result.spectral[0], dtype=np.float32) * args.amplitude  # (K, 4, H, W) px
    photo_rgb = np.asarray(result.images[0])  # the photo at the model's size, uint8 (H, W, 3)
    config = pipeline.motion_config
    # Frame n is at n / fps seconds; the clip the model describes lasts T / fps_model seconds.
    seconds = np.arange(args.num_frames) / args.fps * args.speed
    disp = displacement_at_phases(spectral, seconds * config.fps / config.num_frames)
    # The photo is the clip's reference frame (training flow is measured from frame 0, so
    # D[0] = 0 there); a sampled volume misses that by ~0.1 px, so shift it back: frame 0
    # of every animation is the photo itself.
    disp -= displacement_at_phases(spectral, [0.0])
    timings["motion"] += time.perf_counter() - start

    start = time.perf_counter()
    if synthesis is not None:
        with torch.inference_mode():
            frames = synthesis.render_frames(photo_rgb, disp, progress=True)
    else:
        frames = render_frames(photo_rgb, disp, method=args.renderer)
    timings["render"] += time.perf_counter() - start

    start = time.perf_counter()
    _write_frames(out_path, frames, args.fps, args.format, args.overwrite)
    if args.save_motion:
        _save_motion(out_path.parent, out_path.name.split(".")[0], spectral, disp, config)
    timings["write"] += time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    targets = plan_outputs(args.image, args.output, args.format, args.overwrite)
    photos = list(targets)

    timings = {"load": 0.0, "motion": 0.0, "render": 0.0, "write": 0.0}
    start = time.perf_counter()
    device = pick_device(args.device)
    pipeline, synthesis = load_models(args.model, args.renderer, device)
    pipeline.set_scheduler(args.scheduler)
    timings["load"] = time.perf_counter() - start

    def process(photo: Path) -> str:
        animate(args, pipeline, synthesis, photo, targets[photo], timings)
        return f"wrote {targets[photo]}"

    return run_batch(photos, process, timings)
