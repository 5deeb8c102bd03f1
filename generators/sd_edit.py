"""Training-free video from one photo with Stable Diffusion: caption, invert, edit, interpolate.

    python sample.py --method sd-edit --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --caption_model Salesforce/blip-image-captioning-base \\
        --image riverside.jpg --prompt "the autumn scenery by the riverside" \\
        --keyframes 6 --frames_between 7 --fps 12

Per photo (see models/pipeline_sd_edit.py for the maths, docs/SD_EDIT.md for the guide):

1. BLIP captions the photo (or ``--caption``): the source prompt;
2. regularised DDIM inversion gives its noise map; the reference pass reconstructs the
   photo (keyframe 0) and records the cross-attention maps;
3. every further keyframe denoises the same noise toward a point of the prompt schedule
   (``--prompt`` or ``--prompts FILE``) under cross-attention guidance;
4. ``--frames_between`` in-betweens per keyframe pair by optical flow + softmax splatting
   (models/interpolation.py), written as GIF/MP4/WebP/PNG frames at ``--fps``.

A ``--prompts`` file holds one target prompt per line, in order; ``text | N`` spends N
keyframes on the way from the previous prompt to this one (lines without ``| N`` share
``--keyframes``); blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from data.images import load_image
from generators import pick_device, plan_outputs, run_batch

FORMATS = ("gif", "mp4", "webp", "frames")
MODEL_HINT = (
    "pass --model with a Stable Diffusion v1.x folder (unet/, vae/, text_encoder/, tokenizer/, "
    "scheduler/) or hub id, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True,
                        help="a photo, a folder of photos or a glob pattern")  # fmt: skip
    parser.add_argument("--model", default=None,
                        help="Stable Diffusion v1.x folder or hub id (required)")  # fmt: skip
    parser.add_argument("--caption_model", default=None,
                        help="BLIP captioning model folder or hub id, e.g. "
                        "Salesforce/blip-image-captioning-base (not needed with --caption)")  # fmt: skip
    parser.add_argument("--caption", default=None,
                        help="the source prompt describing the photo (skips BLIP)")  # fmt: skip
    parser.add_argument("--prompt", action="append", default=None,
                        help="target prompt; repeat for a sequence of targets")  # fmt: skip
    parser.add_argument("--prompts", default=None,
                        help="text file of target prompts, one per line, 'text | N' for N keyframes")  # fmt: skip
    parser.add_argument("--keyframes", type=int, default=6,
                        help="keyframes in all, the reconstruction of the photo included")  # fmt: skip
    parser.add_argument("--frames_between", type=int, default=7,
                        help="interpolated frames between consecutive keyframes")  # fmt: skip
    parser.add_argument("--flow_method", default="dis",
                        help="optical flow for interpolation: dis, farneback, pyflow or raft "
                        "(data.flow.FLOW_METHODS)")  # fmt: skip
    parser.add_argument("--boomerang", action="store_true",
                        help="play forward then backward, for a seamless loop")  # fmt: skip
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--guidance_scale", type=float, default=5.0,
                        help="scale of the edit direction eps(edit) - eps(source); 1: none")  # fmt: skip
    parser.add_argument("--cross_attention_guidance", type=float, default=0.1,
                        help="step size of the cross-attention loss that keeps the layout; 0: off")  # fmt: skip
    parser.add_argument("--lambda_auto_corr", type=float, default=20.0,
                        help="inversion: weight of the auto-correlation penalty")  # fmt: skip
    parser.add_argument("--lambda_kl", type=float, default=20.0,
                        help="inversion: weight of the KL penalty")  # fmt: skip
    parser.add_argument("--num_reg_steps", type=int, default=5,
                        help="inversion: regularisation steps per denoising step")  # fmt: skip
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--output", default="outputs/samples", help="output folder")
    parser.add_argument("--format", choices=FORMATS, default="gif")
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    parser.add_argument("--dtype", choices=("auto", "float32", "float16"), default="auto",
                        help="auto: float16 on CUDA, float32 elsewhere")  # fmt: skip
    parser.add_argument("--save_keyframes", action="store_true",
                        help="also write the keyframes and the schedule to <name>_keyframes/")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


# ----------------------------------------------------------------------------- the schedule


def read_prompts_file(path: str | Path) -> tuple[list[str], list[int | None]]:
    """Target prompts and per-segment keyframe counts (None: share ``--keyframes``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prompts file")
    prompts: list[str] = []
    counts: list[int | None] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        text, count = line, None
        if "|" in line:
            text, _, tail = line.rpartition("|")
            try:
                count = int(tail.strip())
            except ValueError:
                raise ValueError(
                    f"{path}:{number}: expected 'text | N' with N a whole number, got {line!r}"
                ) from None
            text = text.strip()
        if not text:
            raise ValueError(f"{path}:{number}: empty prompt")
        prompts.append(text)
        counts.append(count)
    if not prompts:
        raise ValueError(f"{path}: the prompts file holds no prompt (one per line)")
    return prompts, counts


def target_prompts(args: argparse.Namespace) -> tuple[list[str], list[int | None]]:
    """The targets from ``--prompt`` / ``--prompts`` (exactly one of them)."""
    if (args.prompt is None) == (args.prompts is None):
        raise ValueError("give the target with --prompt TEXT or --prompts FILE (one of them)")
    if args.prompts is not None:
        return read_prompts_file(args.prompts)
    prompts = [text.strip() for text in args.prompt]
    if any(not text for text in prompts):
        raise ValueError("--prompt must not be empty")
    return prompts, [None] * len(prompts)


def _check_args(args: argparse.Namespace) -> None:
    for name, low in (("keyframes", 2), ("frames_between", 0), ("num_inference_steps", 1),
                      ("num_reg_steps", 0), ("width", 1), ("height", 1)):  # fmt: skip
        if getattr(args, name) < low:
            raise ValueError(f"--{name} must be >= {low}, got {getattr(args, name)}")
    for name in ("fps",):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name} must be > 0, got {getattr(args, name)}")
    for name in ("cross_attention_guidance", "lambda_auto_corr", "lambda_kl"):
        value = getattr(args, name)
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"--{name} must be a finite number >= 0, got {value}")
    if not np.isfinite(args.guidance_scale):
        raise ValueError(f"--guidance_scale must be finite, got {args.guidance_scale}")
    if args.caption is not None and not args.caption.strip():
        raise ValueError("--caption must not be empty (leave it out to caption with BLIP)")
    if args.model is None:
        raise ValueError(f"--model is required for --method sd-edit; {MODEL_HINT}")
    _check_flow_method(args)


def _check_flow_method(args: argparse.Namespace) -> None:
    """Fail before any keyframe is computed when ``--flow_method`` cannot run.

    The flow runs only after every keyframe of a photo (minutes on a GPU); an unknown name,
    or an estimator whose package or weights are missing, is caught here instead.
    """
    from data.flow import FLOW_METHODS, get_flow_estimator

    if args.flow_method not in FLOW_METHODS:
        raise ValueError(
            f"--flow_method {args.flow_method!r} is not one of {', '.join(FLOW_METHODS)}"
        )
    if args.frames_between == 0:
        return  # no in-betweens: the flow is never estimated
    try:
        get_flow_estimator(args.flow_method)
    except (ImportError, OSError) as error:
        raise ValueError(f"--flow_method {args.flow_method} cannot run here: {error}") from None


# ----------------------------------------------------------------------------- loading


def _looks_like_hub_id(name: str) -> bool:
    return not name.startswith((".", "/", "~")) and name.count("/") == 1


def load_pipeline(args: argparse.Namespace, device):
    """The pipeline from ``--model`` (+ ``--caption_model`` unless ``--caption``)."""
    import torch

    from models.pipeline_sd_edit import SDEditVideoPipeline

    for flag, name in (("--model", args.model), ("--caption_model", args.caption_model)):
        if name is None or (flag == "--caption_model" and args.caption is not None):
            continue
        local = Path(name).expanduser()
        if not local.exists() and not _looks_like_hub_id(name):
            hint = MODEL_HINT if flag == "--model" else "e.g. Salesforce/blip-image-captioning-base"
            raise FileNotFoundError(f"{flag} {name}: no such folder; {hint}")
    if args.model is not None and Path(args.model).expanduser().is_dir():
        missing = [p for p in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
                   if not (Path(args.model).expanduser() / p).is_dir()]  # fmt: skip
        if missing:
            raise FileNotFoundError(
                f"{args.model}: not a Stable Diffusion folder (missing {', '.join(missing)}/); "
                + MODEL_HINT
            )
    if args.caption is None and args.caption_model is None:
        raise ValueError(
            "no caption: pass --caption TEXT, or --caption_model DIR_OR_HUB_ID "
            "(e.g. Salesforce/blip-image-captioning-base) to caption with BLIP"
        )
    dtype = {"float32": torch.float32, "float16": torch.float16}.get(args.dtype)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    caption_model = None if args.caption is not None else args.caption_model
    try:
        pipeline = SDEditVideoPipeline.from_stable_diffusion(args.model, caption_model, dtype)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(f"cannot load the models ({error}); {MODEL_HINT}") from None
    pipeline.to(device)
    pipeline.set_progress_bar_config(leave=False)
    return pipeline


# ----------------------------------------------------------------------------- per photo


def _write_pngs(folder: Path, frames: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{index:04d}.png")


def animate(args, pipeline, photo: Path, out_path: Path, schedule, timings: dict) -> dict:
    """Keyframes, in-betweens and output file of one photo; returns a summary."""
    import torch

    from data.video import write_video
    from models.interpolation import interpolate_keyframes
    from models.pipeline_sd_edit import reconstruction_error

    prompts, weights = schedule
    image = load_image(photo)
    start = time.perf_counter()
    generator = torch.Generator("cpu").manual_seed(args.seed)
    result = pipeline(
        image,
        prompts,
        weights,
        caption=args.caption,
        height=args.height,
        width=args.width,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        cross_attention_guidance=args.cross_attention_guidance,
        lambda_auto_corr=args.lambda_auto_corr,
        lambda_kl=args.lambda_kl,
        num_reg_steps=args.num_reg_steps,
        generator=generator,
    )
    timings["keyframes"] += time.perf_counter() - start

    start = time.perf_counter()
    frames = interpolate_keyframes(result.keyframes, args.frames_between, args.flow_method)
    if args.boomerang and len(frames) > 2:
        frames = np.concatenate([frames, frames[-2:0:-1]])
    timings["interpolate"] += time.perf_counter() - start

    start = time.perf_counter()
    if args.format == "frames":
        _write_pngs(out_path, frames)
    else:
        write_video(frames, out_path, fps=args.fps, overwrite=args.overwrite)
    summary = {
        "image": str(photo),
        "caption": result.caption,
        "prompts": result.prompts,
        "weights": np.round(result.weights, 6).tolist(),
        "frames": len(frames),
        "reconstruction_error": reconstruction_error(result.keyframes[0], result.image),
        "inversion_error": result.inversion_error,
    }
    if args.save_keyframes:
        from data.io_utils import write_json_atomic

        folder = out_path.parent / f"{out_path.name.split('.')[0]}_keyframes"
        _write_pngs(folder, result.keyframes)
        write_json_atomic(folder / "schedule.json", summary)
    timings["write"] += time.perf_counter() - start
    return summary


def run(args: argparse.Namespace) -> int:
    from models.pipeline_sd_edit import prompt_schedule

    _check_args(args)
    prompts, counts = target_prompts(args)
    weights = prompt_schedule(len(prompts), args.keyframes, counts)
    targets = plan_outputs(args.image, args.output, args.format, args.overwrite)
    photos = list(targets)

    timings = {"load": 0.0, "keyframes": 0.0, "interpolate": 0.0, "write": 0.0}
    start = time.perf_counter()
    pipeline = load_pipeline(args, pick_device(args.device))
    timings["load"] = time.perf_counter() - start

    def process(photo: Path) -> str:
        summary = animate(args, pipeline, photo, targets[photo], (prompts, weights), timings)
        return (
            f"wrote {targets[photo]}: {summary['frames']} frames, caption "
            f"{json.dumps(summary['caption'])}, reconstruction error "
            f"{summary['reconstruction_error']:.3f} (mean |diff|, 0..1; latent "
            f"{summary['inversion_error']:.3f} relative L2)"
        )

    return run_batch(photos, process, timings)
