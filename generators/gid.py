"""Generative Image Dynamics from the command line: photos in, animations out.

``python sample.py`` animates the bundled example photos with the shipped default weights;
``python sample.py --image photo.jpg`` animates yours, whole and at its own size (long
side capped at 1024 px). This module only parses flags, plans and writes files, and loops
over photos: every step from photo to frames is one ``MotionPipeline`` call
(``models.pipeline_motion``), the same one Python users and the web demo make.

A folder of photos gives one output per photo; a photo that fails is reported at the end
and the exit code is 1, the others are still written.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from data.config import MotionConfig
from data.images import load_image
from generators import pick_device, plan_outputs, run_batch
from models import SCHEDULERS
from models.pipeline_motion import (
    AMPLITUDE_REFERENCES,
    DEFAULT_DIRECTION_STRENGTH,
    DEFAULT_MASK_PROVIDER,
    check_direction,
    check_finite,
    default_output_size,
    estimate_memory_bytes,
    loop_advice,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT / "weights" / "default"
EXAMPLES_DIR = REPO_ROOT / "data" / "examples"
# The learned renderer's folder in a pipeline folder (the pipeline component's name).
RENDERER_SUBFOLDER = "renderer"
# Classifier-free guidance on the photo: with the shipped weights, 4 confines the motion to
# what moves (correlation with the vegetation mask 0.17 -> 0.41, motion energy on still
# pixels 16 % -> 4 %; docs/SAMPLING.md) at twice the U-Net work per step.
DEFAULT_GUIDANCE_SCALE = 4.0
# DPM-Solver++ reaches DDIM-250 quality in 25 steps (docs/SAMPLING.md).
DEFAULT_SCHEDULER = "dpm"
DEFAULT_NUM_INFERENCE_STEPS = 25
# The pipeline keywords of sample.py's sampling (the scheduler is set on the pipeline).
DEFAULT_SAMPLING = {
    "num_inference_steps": DEFAULT_NUM_INFERENCE_STEPS,
    "guidance_scale": DEFAULT_GUIDANCE_SCALE,
}
# What --amplitude 1 means: "visible" lifts the model's calibrated motion (0.1-0.6 px at
# 256x160 with the shipped weights, the amplitude of its training data) to a 90th
# percentile of 1 px of the model's frame where things may move, by at most 4x
# (models.pipeline_motion.VISIBLE_MOTION_P90_PX; docs/SAMPLING.md).
DEFAULT_AMPLITUDE_REFERENCE = "visible"
RENDERERS = ("auto", "synthesis", "softsplat", "average", "remap")
FORMATS = ("gif", "mp4", "webp", "frames")
# Bounds of the numeric flags, checked before any model loads.
MAX_FPS = 120.0  # beyond this no player shows the frames (GIF stores 10 ms steps)
MAX_GIF_FPS = 50.0  # GIF frame delays below 20 ms are played at 100 ms by browsers
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
MAX_STEPS = 1000  # the schedulers' training timesteps
# Share of the machine's memory one photo's frames, displacements and motion may take.
MEMORY_FRACTION = 0.5
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
    parser.add_argument("--output", default="outputs/samples",
                        help="output folder; or, for one photo, a file (.gif/.mp4/.webp)")  # fmt: skip
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="gif (default), mp4, webp or frames (a folder of PNGs); "
                        "a file --output implies its own")  # fmt: skip
    parser.add_argument("--size", default=None,
                        help="WxH of the frames; default: the photo's own size, long side "
                        "capped at 1024 (256x160 gives the training size)")  # fmt: skip
    parser.add_argument("--crop", action="store_true",
                        help="cover-crop the photo to the model's training frame (256x160)")  # fmt: skip
    parser.add_argument("--motion_mask", default=None,
                        help="PNG: white may move, black stays still, grey in between; "
                        "'auto' (the default): computed from the photo by --mask_provider "
                        "(vegetation and water move; sky, buildings, people stay still); "
                        "'none': the model's motion everywhere")  # fmt: skip
    parser.add_argument("--mask_provider", default=DEFAULT_MASK_PROVIDER,
                        help="what --motion_mask auto uses: cues (image cues, offline) or "
                        "segformer:FOLDER_OR_HUB_ID (a segmentation model; data/motion_masks.py)")  # fmt: skip
    parser.add_argument("--still_mask", default=None,
                        help="PNG, the inverse of --motion_mask: white stays still")  # fmt: skip
    parser.add_argument("--poke", action="append", default=None, metavar="X,Y,DX,DY[,T]",
                        help="push pixel (X, Y) of the frames by (DX, DY) px at T s (default 0) "
                        "and animate the response instead of the sampled motion; repeatable")  # fmt: skip
    parser.add_argument("--damping", type=float, default=None,
                        help="damping ratio of every mode's response to --poke (0.1)")  # fmt: skip
    parser.add_argument("--num_frames", type=int, default=150)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_inference_steps", type=int, default=DEFAULT_NUM_INFERENCE_STEPS)
    parser.add_argument("--scheduler", choices=SCHEDULERS, default=DEFAULT_SCHEDULER,
                        help="dpm: DPM-Solver++ (few steps); ddim: the training-time default")  # fmt: skip
    parser.add_argument("--guidance_scale", type=float, default=DEFAULT_GUIDANCE_SCALE,
                        help="classifier-free guidance on the photo (<= 1: off)")  # fmt: skip
    parser.add_argument("--loop", action="store_true",
                        help="motion self-guidance toward a seamless loop")  # fmt: skip
    parser.add_argument("--loop_guidance_scale", type=float, default=1.0,
                        help="strength of --loop")  # fmt: skip
    parser.add_argument("--amplitude", type=float, default=1.0,
                        help="scales the sampled motion; 1 is --amplitude_reference's level "
                        "(a --poke's strength is its DX, DY)")  # fmt: skip
    parser.add_argument("--amplitude_reference", choices=AMPLITUDE_REFERENCES,
                        default=DEFAULT_AMPLITUDE_REFERENCE,
                        help="what --amplitude 1 is: visible: the model's motion lifted to a "
                        "90th percentile of 1 px at 256x160 where things may move (at most "
                        "4x); model: the model's own amplitude, that of its training data")  # fmt: skip
    parser.add_argument("--motion_smoothing", type=float, default=None, metavar="SIGMA",
                        help="blur the sampled motion by this many pixels of the model's frame "
                        "(default: the model's own motion_smoothing; 0: off; docs/SAMPLING.md)")  # fmt: skip
    parser.add_argument("--direction", type=float, default=None, metavar="DEGREES",
                        help="sway along this axis, counter-clockwise from the horizontal as "
                        "seen (0: left-right, like a side wind; 90: up-down); default: the "
                        "model's own directions")  # fmt: skip
    parser.add_argument("--direction_strength", type=float, default=None,
                        help=f"how much of the motion across --direction goes, 0-1 "
                        f"({DEFAULT_DIRECTION_STRENGTH})")  # fmt: skip
    parser.add_argument("--speed", type=float, default=1.0, help="plays the motion faster (>1)")
    parser.add_argument("--renderer", choices=RENDERERS, default="auto",
                        help="auto: the learned renderer up to 512x320 pixels (if the model has "
                        "one), average splatting above; softsplat/average/remap: baselines")  # fmt: skip
    parser.add_argument("--model", default=str(DEFAULT_MODEL),
                        help="motion pipeline folder or hub id; the shipped weights by default")  # fmt: skip
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    parser.add_argument("--save_motion", action="store_true",
                        help="also write the spectral volume (.npz), flow images, spectrum plot")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


# ---------------------------------------------------------------------------- checks


def _finite(args: argparse.Namespace, name: str, low: float, high: float = math.inf,
            strict: bool = False) -> None:  # fmt: skip
    check_finite(f"--{name}", getattr(args, name), low, strict=strict, maximum=high)


def check_args(args: argparse.Namespace) -> None:
    """Every flag is checked before any model loads; a bad one is named in a ValueError."""
    from data.config import parse_size

    for name, high in (("num_frames", math.inf), ("num_inference_steps", MAX_STEPS)):
        value = getattr(args, name)
        if not 1 <= value <= high:
            upper = f" and <= {high}" if math.isfinite(high) else ""
            raise ValueError(f"--{name} must be >= 1{upper}, got {value}")
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed must be in [0, 2**63 - 1], got {args.seed}")
    _finite(args, "fps", 0.0, MAX_FPS, strict=True)
    _finite(args, "speed", 0.0, strict=True)
    _finite(args, "amplitude", 0.0)
    _finite(args, "guidance_scale", 0.0)
    _finite(args, "loop_guidance_scale", 0.0)
    if args.motion_smoothing is not None:
        _finite(args, "motion_smoothing", 0.0)
    if args.direction_strength is not None and args.direction is None:
        raise ValueError("--direction_strength only shapes --direction; pass a --direction too")
    if args.direction_strength is None:
        args.direction_strength = DEFAULT_DIRECTION_STRENGTH
    if args.direction is not None:
        args.direction, args.direction_strength = check_direction(
            args.direction, args.direction_strength, ("--direction", "--direction_strength")
        )
        if args.poke:
            raise ValueError("--direction steers the sampled motion; a --poke's is its DX, DY")
    # Read once, refused here if missing, unreadable or all still.
    args.mask, args.provider = _resolve_motion_mask(args)
    from models.interactive_dynamics import DEFAULT_DAMPING, parse_poke

    args.pokes = [parse_poke(text) for text in args.poke or []]
    if args.damping is None:
        args.damping = DEFAULT_DAMPING
    elif not (math.isfinite(args.damping) and 0 <= args.damping < 1):
        raise ValueError(f"--damping must be a finite number in [0, 1), got {args.damping}")
    elif not args.pokes:
        raise ValueError("--damping only shapes the response to --poke; pass a --poke too")
    args.size = parse_size(args.size) if isinstance(args.size, str) else args.size
    suffix = Path(args.output).suffix.lower()
    if suffix in (".gif", ".mp4", ".webp"):
        if args.format not in (None, suffix[1:]):
            raise ValueError(
                f"--output {args.output} is a .{suffix[1:]} file but --format is {args.format}"
            )
        args.format = suffix[1:]
    args.format = args.format or "gif"
    if args.format == "gif" and args.fps > MAX_GIF_FPS:
        warnings.warn(
            f"--fps {args.fps:g}: browsers play GIF frames shorter than 20 ms at 10 fps; "
            "use --format mp4 for more than 50 fps",
            stacklevel=2,
        )


def check_memory(num_frames: int, size: tuple[int, int], num_freqs: int, photo: Path) -> None:
    """Refuse a run whose frames would not fit in memory, before sampling anything."""
    needed = estimate_memory_bytes(num_frames, size, num_freqs)
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no check
        return
    if needed > MEMORY_FRACTION * available:
        raise ValueError(
            f"{photo.name}: --num_frames {num_frames} at {size[0]}x{size[1]} needs about "
            f"{needed / 2**30:.1f} GiB, more than half of this machine's "
            f"{available / 2**30:.1f} GiB; lower --num_frames or --size"
        )


# ---------------------------------------------------------------------------- models


def load_pipeline(model: str, renderer: str, device):
    """The motion pipeline (codec, U-Net, scheduler and, when it has one, the renderer)."""
    local = Path(model)
    if local.exists() and not (local / "model_index.json").is_file():
        hint = (
            " (train_unet.py's output: it writes model_index.json when it finishes; "
            "or run MotionPipeline.from_training_output)"
            if (local / "unet").is_dir()
            else ""
        )
        raise FileNotFoundError(
            f"{model}: no model_index.json, not a motion pipeline{hint}; {REBUILD_HINT}"
        )
    if not local.exists() and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise FileNotFoundError(f"{model}: no such model folder; {REBUILD_HINT}")
    from models.pipeline_motion import MotionPipeline

    try:
        pipeline = MotionPipeline.from_pretrained(model)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"{model}: cannot load the motion pipeline ({error}); {REBUILD_HINT}"
        ) from None
    pipeline.resolve_renderer(renderer)  # "synthesis" without a renderer fails here
    if renderer == "auto" and pipeline.renderer is None:
        print(f"{model} has no learned renderer (renderer/): rendering with average splatting")
    pipeline.to(device)
    pipeline.set_progress_bar_config(desc="motion", leave=False)
    return pipeline


# ---------------------------------------------------------------------------- outputs


def motion_paths(out_path: Path) -> list[Path]:
    """The files ``--save_motion`` writes beside an animation."""
    stem = out_path.parent / out_path.name.split(".")[0]
    return [Path(f"{stem}_motion.npz"), Path(f"{stem}_flow"), Path(f"{stem}_spectrum.png")]


def _write_frames(path: Path, frames: np.ndarray, fps: float, fmt: str, overwrite: bool) -> None:
    from data.video import write_video

    if fmt == "frames":
        _write_png_folder(path, frames)
        return
    write_video(frames, path, fps=fps, overwrite=overwrite)


def _write_png_folder(path: Path, frames: np.ndarray) -> None:
    """PNG frames into ``path``, replacing the folder whole (no frame of an earlier, longer
    run is left behind), written beside it first so a failure leaves the old folder intact."""
    from PIL import Image

    staging = path.with_name(f".{path.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(staging / f"{index:04d}.png")
    if path.exists():
        shutil.rmtree(path)
    staging.rename(path)


def _save_motion(out_path: Path, spectral: np.ndarray, disp: np.ndarray, config, fps: float):
    from PIL import Image

    from data.io_utils import write_npz_atomic
    from data.spectral import frequency_power_spectrum
    from data.visualize import flow_to_color, plot_power_spectrum

    npz, flow_dir, plot = motion_paths(out_path)
    write_npz_atomic(npz, spectral=spectral.astype(np.float32),
                     num_frames=config.num_frames, fps=config.fps, output_fps=fps)  # fmt: skip
    flow_dir.mkdir(exist_ok=True)
    for old in flow_dir.glob("*.png"):
        old.unlink()
    scale = float(np.percentile(np.linalg.norm(disp, axis=-1), 99)) or 1.0
    for index in np.linspace(0, len(disp) - 1, min(8, len(disp))).astype(int):
        Image.fromarray(flow_to_color(disp[index], max_magnitude=scale)).save(
            flow_dir / f"{index:04d}.png"
        )
    plot_power_spectrum(frequency_power_spectrum(spectral), config.frequencies_hz(), plot)


# ---------------------------------------------------------------------------- the run


def image_size_on_disk(photo: Path) -> tuple[int, int] | None:
    """(width, height) the file declares, upright (EXIF orientation applied); None if it
    cannot be read (the photo's own run then reports why)."""
    from PIL import Image

    try:
        with Image.open(photo) as opened:
            width, height = opened.size
            orientation = opened.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _resolve_motion_mask(args: argparse.Namespace) -> tuple[np.ndarray | None, str | None]:
    """What decides where things move: ``(mask, provider)``.

    ``--motion_mask PNG`` (white may move) or ``--still_mask PNG`` (inverted) gives a mask in
    [0, 1]; ``--motion_mask auto`` or neither flag gives ``--mask_provider`` (checked here, run
    by the pipeline); ``--motion_mask none`` gives neither. A file named "auto" or "none" is
    read as a file.
    """
    from models.pipeline_motion import read_mask

    if args.motion_mask and args.still_mask:
        raise ValueError("pass --motion_mask or --still_mask, not both")
    keyword = args.motion_mask in ("auto", "none") and not Path(args.motion_mask).is_file()
    no_flag = args.motion_mask is None and args.still_mask is None
    if no_flag or (keyword and args.motion_mask == "auto"):
        from data.motion_masks import check_provider

        check_provider(args.mask_provider)
        return None, args.mask_provider
    if keyword:  # "none"
        return None, None
    name, path = (
        ("motion_mask", args.motion_mask) if args.motion_mask else ("still_mask", args.still_mask)
    )
    if not Path(path).is_file():
        raise FileNotFoundError(f"--{name} {path}: no such file")
    mask = read_mask(path, f"--{name} {path}")
    moving = mask if name == "motion_mask" else 1.0 - mask
    if moving.max() <= 1.0 / 255.0:
        colour = "black" if name == "motion_mask" else "white"
        raise ValueError(f"--{name} {path} is all {colour}: nothing may move")
    return moving, None


def animate(args: argparse.Namespace, pipeline, photo: Path, out_path: Path, timings) -> str:
    """One photo: a ``MotionPipeline`` call, then the files; adds seconds to ``timings``.

    Returns the line to print: what was written, at what size, from what.
    """
    import torch

    from models.pipeline_motion import MotionPipelineWarning

    image = load_image(photo)
    common = dict(
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        loop_guidance_scale=args.loop_guidance_scale if args.loop else 0.0,
        generator=torch.Generator("cpu").manual_seed(args.seed),
        motion_smoothing=args.motion_smoothing,
        motion_mask=args.mask,
        mask_provider=args.provider,
        output_size=args.size,
        crop=args.crop,
    )
    lifted = ""  # the visible gain, when the sampled motion was lifted
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MotionPipelineWarning)
        if args.pokes:  # the response to the pushes, rendered through the same pipeline
            from models.interactive_dynamics import animate_poke

            start = time.perf_counter()
            result = animate_poke(pipeline, image, args.pokes, num_frames=args.num_frames,
                                  fps=args.fps, speed=args.speed, damping=args.damping,
                                  renderer=args.renderer, **common)  # fmt: skip
            pipeline.last_timings["render"] = (
                time.perf_counter()
                - start
                - sum(pipeline.last_timings[stage] for stage in ("sample", "motion"))
            )
            frames, spectral, disp = result.frames, result.spectral, result.displacements
        else:
            result = pipeline(
                image,
                num_frames=args.num_frames,
                fps=args.fps,
                speed=args.speed,
                amplitude=args.amplitude,
                amplitude_reference=args.amplitude_reference,
                motion_direction=args.direction,
                direction_strength=args.direction_strength,
                renderer=args.renderer,
                return_displacements=args.save_motion,
                **common,
            )
            frames, spectral = result.frames[0], result.spectral[0]
            disp = result.displacements[0] if args.save_motion else None
            gains = pipeline.last_visible_gains
            if gains is not None:
                lifted = f"; motion x{gains[0]:.2f} to be visible (see --amplitude_reference)"
    for warning in caught:
        if issubclass(warning.category, MotionPipelineWarning):
            print(f"warning: {photo.name}: {warning.message}")
    for stage, seconds in pipeline.last_timings.items():
        timings[stage] += seconds

    start = time.perf_counter()
    _write_frames(out_path, frames, args.fps, args.format, args.overwrite)
    if args.save_motion:
        _save_motion(out_path, spectral, disp, pipeline.motion_config, args.fps)
    timings["write"] += time.perf_counter() - start
    shown = f"{frames.shape[2]}x{frames.shape[1]}"
    source = f"{image.size[0]}x{image.size[1]}"
    on_disk = image_size_on_disk(photo)
    if on_disk and image.size != on_disk:
        source = f"{on_disk[0]}x{on_disk[1]} downscaled to {source} on loading"
    return f"wrote {out_path} ({len(frames)} frames of {shown}, from a {source} photo{lifted})"


def run(args: argparse.Namespace) -> int:
    check_args(args)
    single_file = args.format != "frames" and Path(args.output).suffix.lower() == f".{args.format}"
    targets = plan_outputs(
        args.image,
        args.output,
        args.format,
        args.overwrite,
        extra_outputs=motion_paths if args.save_motion else None,
        single_file=single_file,
    )
    photos = list(targets)
    for photo in photos:  # frames that cannot fit are refused before anything loads
        on_disk = None if args.size or args.crop else image_size_on_disk(photo)
        size = args.size or (default_output_size(on_disk) if on_disk else None)
        if size is not None:
            check_memory(args.num_frames, size, MotionConfig().num_freqs, photo)

    timings = {"load": 0.0, "sample": 0.0, "motion": 0.0, "render": 0.0, "write": 0.0}
    start = time.perf_counter()
    pipeline = load_pipeline(args.model, args.renderer, pick_device(args.device))
    pipeline.set_scheduler(args.scheduler)
    timings["load"] = time.perf_counter() - start
    # a poke's response rings down: it is not a loop
    advice = (
        None
        if args.pokes
        else loop_advice(args.num_frames, pipeline.motion_config, args.fps, args.speed)
    )
    if advice is not None:
        warnings.warn(
            f"--num_frames {args.num_frames} at --fps {args.fps:g}, --speed {args.speed:g}: "
            f"{advice}",
            stacklevel=2,
        )

    def process(photo: Path) -> str:
        return animate(args, pipeline, photo, targets[photo], timings)

    return run_batch(photos, process, timings)
