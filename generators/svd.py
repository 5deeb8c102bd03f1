"""Stable Video Diffusion behind ``sample.py --method svd``: SVD, SVD-XT, SV3D_u, SV3D_p.

    python sample.py --method svd --version svd_xt --model DIR_OR_HUB_ID --image photo.jpg
    python sample.py --method svd --version sv3d_p --model DIR --image object.png \
        --elevations_deg 20

``--model`` is a diffusers folder; Stability AI's single-file checkpoints (``sv3d_p.safetensors``,
``svd_xt_image_decoder.safetensors``, ...) are converted once with
``scripts/convert_sgm_checkpoint.py`` (given such a file, this tool prints the command).

The flags, their defaults and the input handling follow Stability AI's reference tool
(``simple_video_sample.py``); the models run through diffusers (``StableVideoDiffusionPipeline``
for SVD/SVD-XT, ``models.sv3d.SV3DPipeline`` for SV3D). Per photo the steps are:

1. load it; SVD: size floored to multiples of 64 (or ``--resize model``: cover-crop to
   1024x576); SV3D: the object cut out (alpha, or ``rembg``), centred on white, 576x576;
2. sample ``num_frames`` frames with the version's guidance schedule (SVD: linear per frame;
   SV3D: triangle), ``fps_id``, ``motion_bucket_id``, ``cond_aug``, ``decoding_t``;
3. watermark the frames (``models.watermark``; skipped with a note below 256x256 px of
   area) and write
   ``<output_folder>/<photo>/<photo>.mp4`` (+ ``input.png``, the image the model saw, and
   ``frames/`` with ``--save_frames``).

A folder of photos gives one subfolder per photo; a photo that fails is reported at the
end and the exit code is 1. docs/SVD.md has the parameter table and where to get weights.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.images import collect_images, load_image, output_stems
from generators import pick_device, run_batch
from generators.gid import EXAMPLES_DIR


@dataclass(frozen=True)
class Preset:
    """The reference tool's defaults for one model version."""

    num_frames: int
    num_steps: int
    min_guidance_scale: float
    max_guidance_scale: float
    pipeline: str  # the diffusers pipeline class the model folder must hold
    hub_id: str | None  # official diffusers-format weights, when there are any
    size: tuple[int, int]  # (width, height) px the model was trained at


PRESETS = {
    "svd": Preset(14, 25, 1.0, 2.5, "StableVideoDiffusionPipeline",
                  "stabilityai/stable-video-diffusion-img2vid", (1024, 576)),
    "svd_xt": Preset(25, 30, 1.5, 3.0, "StableVideoDiffusionPipeline",
                     "stabilityai/stable-video-diffusion-img2vid-xt", (1024, 576)),
    # The reference's image-decoder variants: the same U-Nets, decoded frame by frame.
    "svd_image_decoder": Preset(14, 25, 1.0, 2.5, "StableVideoDiffusionPipeline", None,
                                (1024, 576)),
    "svd_xt_image_decoder": Preset(25, 30, 1.5, 3.0, "StableVideoDiffusionPipeline", None,
                                   (1024, 576)),
    "sv3d_u": Preset(21, 50, 1.0, 2.5, "SV3DPipeline", None, (576, 576)),
    "sv3d_p": Preset(21, 50, 1.0, 2.5, "SV3DPipeline", None, (576, 576)),
}  # fmt: skip
SIZE_MULTIPLE = 64  # px; the reference floors SVD inputs to multiples of this
DTYPES = ("auto", "float32", "float16", "bfloat16")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
# The single files Stability AI publishes (huggingface.co/<repo>, after accepting the licence).
SGM_FILES = {
    "svd": ("stabilityai/stable-video-diffusion-img2vid", "svd.safetensors"),
    "svd_image_decoder": ("stabilityai/stable-video-diffusion-img2vid",
                          "svd_image_decoder.safetensors"),
    "svd_xt": ("stabilityai/stable-video-diffusion-img2vid-xt", "svd_xt.safetensors"),
    "svd_xt_image_decoder": ("stabilityai/stable-video-diffusion-img2vid-xt",
                             "svd_xt_image_decoder.safetensors"),
    "sv3d_u": ("stabilityai/sv3d", "sv3d_u.safetensors"),
    "sv3d_p": ("stabilityai/sv3d", "sv3d_p.safetensors"),
}  # fmt: skip


def conversion_command(checkpoint: str | Path, version: str) -> str:
    """The exact command that converts an sgm checkpoint for ``--version``."""
    checkpoint = Path(checkpoint)
    output = checkpoint.with_name(checkpoint.stem + "_diffusers")
    script = Path(__file__).resolve().parents[1] / "scripts" / "convert_sgm_checkpoint.py"
    try:  # as short as it can be from where the user runs sample.py
        script = script.relative_to(Path.cwd())
    except ValueError:
        pass
    return f"python {script} --checkpoint {checkpoint} --version {version} --output_dir {output}"


def weights_hint(version: str) -> str:
    """How to get weights for ``version``: part of every model-loading error."""
    preset = PRESETS[version]
    repo, filename = SGM_FILES[version]
    convert = (
        f"accept the licence at huggingface.co/{repo}, `huggingface-cli download {repo} "
        f"{filename} --local-dir DIR`, then `{conversion_command(f'DIR/{filename}', version)}` "
        f"and pass --model DIR/{Path(filename).stem}_diffusers"
    )
    if preset.hub_id:
        return (
            f"--version {version} needs a diffusers-format {preset.pipeline} folder: accept the "
            f"licence at huggingface.co/{preset.hub_id}, then `huggingface-cli download "
            f"{preset.hub_id} --local-dir DIR` and pass --model DIR (or --model {preset.hub_id} "
            f"with network access), or convert the single file {filename}; see docs/SVD.md"
        )
    return (
        f"--version {version} needs a diffusers-format {preset.pipeline} folder; Stability AI "
        f"releases it as a single file: {convert}; see docs/SVD.md"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", "--input_path", dest="image", default=str(EXAMPLES_DIR),
                        help="a photo, a folder of photos or a glob pattern (--input_path: the "
                        "reference tool's name)")  # fmt: skip
    parser.add_argument("--version", choices=list(PRESETS), default="svd")
    parser.add_argument("--model", default=None,
                        help="diffusers pipeline folder or hub id (default: the official hub id "
                        "for svd/svd_xt; required otherwise); an sgm .safetensors file gets the "
                        "command that converts it")  # fmt: skip
    parser.add_argument("--num_frames", type=int, default=None,
                        help="frames to generate (default 14 / 25 / 21 / 21); fixed at 21 for SV3D")  # fmt: skip
    parser.add_argument("--num_steps", type=int, default=None,
                        help="denoising steps (default 25 / 30 / 50 / 50)")  # fmt: skip
    parser.add_argument("--min_guidance_scale", type=float, default=None,
                        help="guidance at the first frame (SVD) / the ends of the orbit (SV3D); "
                        "default 1.0 / 1.5 / 1.0 / 1.0")  # fmt: skip
    parser.add_argument("--max_guidance_scale", type=float, default=None,
                        help="guidance at the last frame (SVD) / mid-orbit (SV3D); "
                        "default 2.5 / 3.0 / 2.5 / 2.5")  # fmt: skip
    parser.add_argument("--fps_id", type=int, default=6,
                        help="frame-rate conditioning (SVD; diffusers' fps = fps_id + 1)")  # fmt: skip
    parser.add_argument("--motion_bucket_id", type=int, default=127,
                        help="amount of motion, 0-255 (SVD)")  # fmt: skip
    parser.add_argument("--cond_aug", type=float, default=0.02,
                        help="noise added to the conditioning image (SV3D: forced to 1e-5)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--decoding_t", type=int, default=14,
                        help="frames decoded at a time; lower it if decoding runs out of memory")  # fmt: skip
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    parser.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="auto: float16 on CUDA, float32 elsewhere")  # fmt: skip
    parser.add_argument("--variant", default=None,
                        help="weights variant to load, e.g. fp16 (smaller download)")  # fmt: skip
    parser.add_argument("--cpu_offload", action="store_true",
                        help="keep only the running model on the GPU (less memory, slower)")  # fmt: skip
    parser.add_argument("--output_folder", default=None,
                        help="default outputs/simple_video_sample/<version>")  # fmt: skip
    parser.add_argument("--fps", type=float, default=None,
                        help="playback rate of the MP4 (default fps_id + 1)")  # fmt: skip
    parser.add_argument("--save_frames", action="store_true", help="also write every frame as PNG")
    parser.add_argument("--resize", choices=("floor64", "model"), default="floor64",
                        help="SVD input size: floor64 keeps the photo's size floored to multiples "
                        "of 64 (the reference); model cover-crops it to 1024x576")  # fmt: skip
    parser.add_argument("--elevations_deg", type=float, nargs="+", default=[10.0],
                        help="SV3D_p: one elevation or one per frame (degrees)")  # fmt: skip
    parser.add_argument("--azimuths_deg", type=float, nargs="+", default=None,
                        help="SV3D_p: one azimuth per frame (degrees); default evenly spaced, "
                        "shifted so the last frame is the input view")  # fmt: skip
    parser.add_argument("--image_frame_ratio", type=float, default=None,
                        help="SV3D: fraction of the frame the object fills (default: as in the photo)")  # fmt: skip
    parser.add_argument("--bg_model", default=None,
                        help="SV3D: a local ONNX salient-object model (e.g. rembg's u2net.onnx or "
                        "isnet-general-use.onnx) to cut the object out of an opaque photo, run "
                        "with onnxruntime (default: rembg, which downloads its model once)")  # fmt: skip
    parser.add_argument("--no_watermark", action="store_true",
                        help="do not embed the invisible watermark")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="show progress bars and settings")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


# ----------------------------------------------------------------------------- settings


def resolve_settings(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the version's defaults into ``args`` and check every value (ValueError)."""
    preset = PRESETS[args.version]
    sv3d = args.version.startswith("sv3d")
    if sv3d and args.num_frames not in (None, preset.num_frames):
        raise ValueError(
            f"--num_frames: SV3D generates {preset.num_frames} frames, got {args.num_frames}"
        )
    for name in ("num_frames", "num_steps", "min_guidance_scale", "max_guidance_scale"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(preset, name))
    if sv3d:
        args.cond_aug = 1e-5  # the reference forces this for SV3D
    for name in ("num_frames", "num_steps", "decoding_t"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.motion_bucket_id <= 255:
        raise ValueError(f"--motion_bucket_id must be in 0-255, got {args.motion_bucket_id}")
    if args.fps_id < 0:
        raise ValueError(f"--fps_id must be >= 0, got {args.fps_id}")
    if not np.isfinite(args.cond_aug) or args.cond_aug < 0:
        raise ValueError(f"--cond_aug must be a finite number >= 0, got {args.cond_aug}")
    if not 0 < args.min_guidance_scale <= args.max_guidance_scale:
        raise ValueError(
            f"need 0 < --min_guidance_scale <= --max_guidance_scale, got "
            f"{args.min_guidance_scale} and {args.max_guidance_scale}"
        )
    if not sv3d and not 5 <= args.fps_id <= 30:
        print(f"WARNING: --fps_id {args.fps_id} is outside 5-30, the range SVD was trained on")
    args.fps = float(args.fps_id + 1) if args.fps is None else args.fps
    if not args.fps > 0:
        raise ValueError(f"--fps must be > 0, got {args.fps}")
    args.orbit = None
    if args.version == "sv3d_p":
        from models.sv3d import sv3d_orbit

        elevations = (
            args.elevations_deg[0] if len(args.elevations_deg) == 1 else args.elevations_deg
        )
        args.orbit = sv3d_orbit(args.num_frames, elevations, args.azimuths_deg)
    elif args.azimuths_deg is not None or args.elevations_deg != [10.0]:
        raise ValueError(
            "--elevations_deg / --azimuths_deg choose the orbit of --version sv3d_p only"
        )
    if args.bg_model is not None:
        if not sv3d:
            raise ValueError("--bg_model cuts out SV3D's object: it needs --version sv3d_u/sv3d_p")
        if not Path(args.bg_model).expanduser().is_file():
            raise FileNotFoundError(f"--bg_model {args.bg_model}: no such ONNX model file")
    if args.model is None:
        if preset.hub_id is None:
            raise ValueError(
                f"--model is required for --version {args.version}; {weights_hint(args.version)}"
            )
        args.model = preset.hub_id
    _refuse_checkpoint_file(args)  # before any output folder is made
    if args.output_folder is None:
        args.output_folder = f"outputs/simple_video_sample/{args.version}"
    return args


def _torch_dtype(name: str, device):
    import torch

    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


# ----------------------------------------------------------------------------- model


def _refuse_checkpoint_file(args: argparse.Namespace) -> None:
    """A single-file checkpoint as ``--model``: say the exact command that converts it."""
    local = Path(args.model).expanduser()
    if not (local.is_file() or local.suffix in CHECKPOINT_SUFFIXES):
        return
    if not local.is_file():
        raise FileNotFoundError(
            f"{args.model}: no such checkpoint file; {weights_hint(args.version)}"
        )
    raise ValueError(
        f"{args.model} is a single-file sgm checkpoint; convert it once with `"
        f"{conversion_command(args.model, args.version)}`, then pass --model "
        f"{local.with_name(local.stem + '_diffusers')}"
    )


def _check_decoder(args: argparse.Namespace, vae_class: str | None) -> None:
    """SVD: the image-decoder versions decode with an image VAE, the others with the temporal one."""
    image_decoder = args.version.endswith("_image_decoder")
    if image_decoder and vae_class != "AutoencoderKL":
        raise ValueError(
            f"{args.model}: its VAE is a {vae_class}, not the image decoder (AutoencoderKL) of "
            f"--version {args.version}; use --version {args.version.removesuffix('_image_decoder')}"
        )
    if not image_decoder and vae_class == "AutoencoderKL":
        raise ValueError(
            f"{args.model}: its VAE is an image decoder (AutoencoderKL): use --version "
            f"{args.version}_image_decoder"
        )


def load_pipeline(args: argparse.Namespace, device):
    """The diffusers pipeline of ``args.model``, checked against ``args.version``.

    Raises:
        FileNotFoundError: no such folder, not a pipeline folder, or it cannot be loaded.
        ValueError: the folder holds another kind of pipeline (e.g. SV3D for --version svd).
    """
    preset = PRESETS[args.version]
    hint = weights_hint(args.version)
    local = Path(args.model).expanduser()
    _refuse_checkpoint_file(args)
    if local.exists():
        index = local / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(
                f"{args.model}: no model_index.json, not a diffusers pipeline; {hint}"
            )
        content = json.loads(index.read_text())
        found = content.get("_class_name")
        if found != preset.pipeline:
            raise ValueError(f"{args.model}: holds a {found}, not a {preset.pipeline}; {hint}")
        if not args.version.startswith("sv3d"):
            _check_decoder(args, (content.get("vae") or [None, None])[1])
    elif args.model.startswith((".", "/", "~")) or args.model.count("/") != 1:
        raise FileNotFoundError(f"{args.model}: no such model folder; {hint}")

    if preset.pipeline == "SV3DPipeline":
        from models.sv3d import SV3DPipeline as pipeline_class
    else:
        from diffusers import StableVideoDiffusionPipeline as pipeline_class
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    if args.version.endswith("_image_decoder"):
        # The pipeline's type hint names the temporal decoder; an image VAE is what these
        # versions hold, and diffusers would warn about it on every load.
        diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():  # diffusers >= 0.40 renames torch_dtype, older lack dtype
            warnings.simplefilter("ignore", FutureWarning)
            pipeline = pipeline_class.from_pretrained(
                str(local) if local.exists() else args.model,
                torch_dtype=_torch_dtype(args.dtype, device),
                variant=args.variant,
            )
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"{args.model}: cannot load the pipeline ({error}); {hint}"
        ) from None
    finally:
        diffusers_logging.set_verbosity(verbosity)
    if preset.pipeline == "SV3DPipeline" and pipeline.takes_camera != (args.version == "sv3d_p"):
        kind = "SV3D_p (camera-conditioned)" if pipeline.takes_camera else "SV3D_u"
        raise ValueError(f"{args.model}: is an {kind} model, not --version {args.version}")
    if args.cpu_offload:
        if device.type != "cuda":
            raise ValueError(
                "--cpu_offload needs --device cuda (it moves models to the GPU when used)"
            )
        pipeline.enable_model_cpu_offload()
    else:
        pipeline.to(device)
    pipeline.set_progress_bar_config(disable=not args.verbose, leave=False)
    return pipeline


# ----------------------------------------------------------------------------- input


def _cover_crop(image, width: int, height: int):
    from PIL import Image

    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    resized = image.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return resized.crop((left, top, left + width, top + height))


def prepare_input(args: argparse.Namespace, photo: Path, pipeline, remove_background=None):
    """The image the model is conditioned on, and warnings about it (as the reference)."""
    preset = PRESETS[args.version]
    notes: list[str] = []
    if args.version.startswith("sv3d"):
        from models.sv3d import preprocess_object

        rgba = load_image(photo, keep_alpha=True)
        # The model's own size: 576 for the released SV3D (its U-Net: 72 latents x 8).
        size = pipeline.resolution
        image = preprocess_object(rgba, size, args.image_frame_ratio, remove_background)
        if size != preset.size[0]:
            notes.append(f"this SV3D model works at {size}x{size}; SV3D was trained at 576x576")
        return image, notes
    image = load_image(photo)
    if args.resize == "model":
        image = _cover_crop(image, *preset.size)
    width, height = (side - side % SIZE_MULTIPLE for side in image.size)
    if min(width, height) < SIZE_MULTIPLE:
        raise ValueError(f"{photo}: {image.width}x{image.height} px is too small (>= 64x64 needed)")
    if (width, height) != image.size:
        notes.append(
            f"{image.width}x{image.height} px is not a multiple of 64: resized to {width}x{height}"
        )
        image = image.resize((width, height), resample=3)  # bicubic
    if (width, height) != preset.size:
        notes.append(
            f"the model was trained at {preset.size[0]}x{preset.size[1]}, the input is "
            f"{width}x{height}: results may be worse (try --resize model, or a higher --cond_aug)"
        )
    return image, notes


def background_remover(bg_model: str | None = None):
    """The object cutter of SV3D: ``--bg_model`` (ONNX), else ``rembg`` (None: not installed).

    rembg downloads its model on first use; without a network that fails deep inside
    rembg, so its errors are re-raised with what to do (``models.sv3d``).
    """
    from models.sv3d import OnnxSalientObject, rembg_remover

    if bg_model is not None:
        return OnnxSalientObject(bg_model)
    return rembg_remover()


# ----------------------------------------------------------------------------- sampling


def _out_of_memory_message(args: argparse.Namespace, error: BaseException) -> str:
    return (
        f"out of memory ({str(error).splitlines()[0]}); lower --decoding_t (now "
        f"{args.decoding_t}) if it failed while decoding, add --cpu_offload, use --dtype "
        "float16 on a GPU, or generate fewer --num_frames"
    )


def generate(args: argparse.Namespace, pipeline, image) -> np.ndarray:
    """Sample one video: ``(num_frames, H, W, 3)`` uint8 RGB."""
    import torch

    generator = torch.Generator("cpu").manual_seed(args.seed)
    common = dict(
        height=image.height,
        width=image.width,
        num_frames=args.num_frames,
        num_inference_steps=args.num_steps,
        min_guidance_scale=args.min_guidance_scale,
        max_guidance_scale=args.max_guidance_scale,
        noise_aug_strength=args.cond_aug,
        decode_chunk_size=args.decoding_t,
        generator=generator,
        output_type="np",
    )
    try:
        if args.version.startswith("sv3d"):
            polars, azimuths = args.orbit if args.orbit is not None else (None, None)
            result = pipeline(image, polars_rad=polars, azimuths_rad=azimuths, **common)
        else:
            result = pipeline(
                image, fps=args.fps_id + 1, motion_bucket_id=args.motion_bucket_id, **common
            )
    except torch.OutOfMemoryError as error:
        raise MemoryError(_out_of_memory_message(args, error)) from None
    except RuntimeError as error:
        if "out of memory" in str(error).lower():
            raise MemoryError(_out_of_memory_message(args, error)) from None
        raise
    frames = np.asarray(result.frames[0], dtype=np.float32)  # (F, H, W, 3) in [0, 1]
    return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8)


def write_outputs(
    args: argparse.Namespace, folder: Path, stem: str, image, frames: np.ndarray
) -> list[str]:
    """Watermark and write one photo's outputs into ``folder``; returns notes for the user."""
    from data.video import write_mp4
    from models.watermark import MIN_WATERMARK_SIDE, can_watermark, embed_watermark

    notes = []
    if args.no_watermark:
        notes.append("no watermark (--no_watermark)")
    elif can_watermark(*frames.shape[1:3]):
        frames = embed_watermark(frames)
    else:
        notes.append(
            f"no watermark: {frames.shape[2]}x{frames.shape[1]} px is less area than the "
            f"{MIN_WATERMARK_SIDE}x{MIN_WATERMARK_SIDE} the watermark library needs"
        )
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / "input.png")
    write_mp4(frames, folder / f"{stem}.mp4", fps=args.fps, overwrite=args.overwrite)
    if args.save_frames:
        from PIL import Image

        (folder / "frames").mkdir(exist_ok=True)
        for index, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / "frames" / f"{index:04d}.png")
    return notes


def settings_line(args: argparse.Namespace, device, seconds: float) -> str:
    """The ``--verbose`` summary: only the settings this version uses."""
    if args.version.startswith("sv3d"):  # SV3D has no frame-rate or motion conditioning
        conditioning = (
            "" if args.orbit is None else ", camera orbit from --elevations_deg/--azimuths_deg"
        )
    else:
        conditioning = f", fps_id {args.fps_id}, motion_bucket_id {args.motion_bucket_id}"
    return (
        f"{args.version} on {device}: {args.num_frames} frames, {args.num_steps} steps, "
        f"guidance {args.min_guidance_scale}-{args.max_guidance_scale}{conditioning}, "
        f"cond_aug {args.cond_aug}, decoding_t {args.decoding_t}, seed {args.seed}, "
        f"loaded in {seconds:.1f} s"
    )


def run(args: argparse.Namespace) -> int:
    from data.io_utils import ensure_writable_dir

    args = resolve_settings(args)
    photos = collect_images(args.image)
    out_dir = Path(args.output_folder)
    ensure_writable_dir(out_dir)
    stems = output_stems(photos)
    folders = {photo: out_dir / stems[photo] for photo in photos}
    inputs = {photo.resolve() for photo in photos}
    for photo, folder in folders.items():
        written = [folder / "input.png", folder / f"{stems[photo]}.mp4", folder / "frames"]
        if any(path.resolve() in inputs for path in written):
            raise ValueError(
                f"{photo}: an output would overwrite an input; choose another --output_folder"
            )
    existing = [
        str(folder) for folder in folders.values() if (folder / f"{folder.name}.mp4").exists()
    ]
    if existing and not args.overwrite:
        raise FileExistsError(
            f"{', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''} already hold outputs; "
            "pass --overwrite to replace them or choose another --output_folder"
        )

    start = time.perf_counter()
    device = pick_device(args.device)
    pipeline = load_pipeline(args, device)
    remover = background_remover(args.bg_model) if args.version.startswith("sv3d") else None
    if args.verbose:
        print(settings_line(args, device, time.perf_counter() - start))

    timings = {"load": time.perf_counter() - start, "generate": 0.0, "write": 0.0}

    def process(photo: Path) -> str:
        started = time.perf_counter()
        image, notes = prepare_input(args, photo, pipeline, remover)
        frames = generate(args, pipeline, image)
        generated = time.perf_counter()
        timings["generate"] += generated - started
        notes += write_outputs(args, folders[photo], stems[photo], image, frames)
        timings["write"] += time.perf_counter() - generated
        for note in notes:
            print(f"WARNING {photo.name}: {note}")
        seconds = time.perf_counter() - started
        return f"wrote {folders[photo] / (stems[photo] + '.mp4')} ({len(frames)} frames, {seconds:.1f} s)"

    return run_batch(photos, process, timings)
