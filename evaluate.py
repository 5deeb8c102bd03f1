"""Evaluate renderers on real video: the PSNR / SSIM / LPIPS table of frame synthesis.

    python evaluate.py --videos DIR --out DIR [--model DIR] [--frames 150] [--size 256x160] \\
        [--flow dis] [--flow_preset fine] [--lpips_weights PATH] [--overwrite]
    python evaluate.py --videos PREPARED_DIR --out DIR       # a prepare_data output folder
    python evaluate.py --motion_data PREPARED_DIR --motion_model DIR --out DIR

For every clip of every video: estimate the flow from frame 0 to every frame t on the
real video, render frames 1..T-1 from frame 0 with every method, and compare them to the
real frames. Methods (rows): the frame-synthesis model (``--model``, default
``weights/default/renderer`` when it exists), and the baselines of
``splatting.render_frames``: average splatting, softmax splatting, OpenCV remap bicubic,
copy frame 0. Columns: PSNR pooled per clip (the MSE of all its frames, as the reference
table of the public reimplementation), the per-frame mean PSNR, SSIM (Gaussian 11x11,
sigma 1.5) and LPIPS (AlexNet) when its weights are on this machine (``--lpips_weights``
or torch's hub cache; never downloaded, otherwise the column says so). Every figure is a
mean over clips. A second table splits the frames by motion magnitude (the median over
pixels of |D_t|: < 1, 1-5, > 5 px) and gives each method's pooled PSNR and mean SSIM on
each part, so small and large motion show separately.

Clips: each video is read at ``--size`` (cover-crop, duplicate frames dropped, see
``data.video.read_video``), split into shots at scene cuts, and every shot gives
non-overlapping clips of ``--frames`` frames. A prepare_data folder gives its kept clips
(re-read from their source video at the clip's fps, since the folder keeps only the first
frame). A video that cannot be decoded or is too short is reported and skipped; the table
is computed on the rest. Outputs in ``--out``: ``table.md`` (also printed),
``per_clip.csv``, ``per_frame.csv``, ``per_magnitude.csv``, ``psnr_vs_frame.png``,
``summary.json``. Existing outputs are never
overwritten without ``--overwrite``. See docs/EVALUATION.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.config import MotionConfig, parse_size
from data.flow import estimate_flow
from data.io_utils import atomic_write, ensure_writable_dir
from data.motion_masks import DEFAULT_MASK_PROVIDER
from data.video import detect_scene_cuts, read_video, resample_to_fps, shot_ranges
from generators.gid import DEFAULT_MODEL, RENDERER_SUBFOLDER
from models import SCHEDULERS
from splatting import render_frames

# The trained renderer shipped with the project (the one sample.py uses by default).
DEFAULT_MODEL_DIR = DEFAULT_MODEL / RENDERER_SUBFOLDER
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# Baselines (rows) and their splatting.render_frames method names, in table order.
BASELINES = {
    "average splatting": "average",
    "softmax splatting": "softsplat",
    "OpenCV remap (bicubic)": "remap",
    "copy frame 0": "copy",
}
MODEL_ROW = "frame-synthesis model"
OUTPUT_FILES = (
    "table.md", "per_clip.csv", "per_frame.csv", "per_magnitude.csv", "psnr_vs_frame.png",
    "summary.json",
)  # fmt: skip
# torchvision's ImageNet AlexNet, which LPIPS (alex) needs: --lpips_weights or torch's hub cache.
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"
# What an online user runs once to put it in torch's hub cache (~233 MB).
ALEXNET_FETCH = (
    "python -c \"import torchvision; torchvision.models.alexnet(weights='IMAGENET1K_V1')\""
)
LPIPS_MISSING = "n/a (AlexNet weights not found)"
# DIS preset of the flow from frame 0 to frame t: "fine" (finest level at full resolution),
# the preset the training pairs are made with (data.frame_pairs.FLOW_OPTIONS).
FLOW_PRESET = "fine"
# Motion-magnitude bins of the per-magnitude table: a frame's median |D_t| over pixels, px.
MAGNITUDE_BINS = (("< 1 px", 0.0, 1.0), ("1-5 px", 1.0, 5.0), ("> 5 px", 5.0, math.inf))


@dataclass
class Clip:
    """``frames``: ``(T, H, W, 3)`` uint8 RGB real frames; ``name``: ``<video>@<first frame>``."""

    name: str
    frames: np.ndarray


# ----------------------------------------------------------------------------- clips


def video_clips(
    path: Path, num_frames: int, size: tuple[int, int], drop_duplicates: bool = True
) -> list[Clip]:
    """Non-overlapping clips of ``num_frames`` frames within the shots of one video.

    ``drop_duplicates``: drop consecutive identical frames (containers such as tree.avi
    repeat frames to fake a frame rate; a repeated frame is no new observation).

    Raises:
        ValueError: the video (or each of its shots) is shorter than ``num_frames``.
    """
    frames = read_video(path, size=size, drop_duplicates=drop_duplicates).frames
    if len(frames) < num_frames:
        raise ValueError(
            f"{path}: {len(frames)} {'distinct ' if drop_duplicates else ''}frames, fewer than --frames {num_frames}; "
            f"lower --frames or remove the video from the folder"
        )
    shots = shot_ranges(len(frames), detect_scene_cuts(frames))
    clips = [
        Clip(f"{path.name}@{start}", frames[start : start + num_frames])
        for first, stop in shots
        for start in range(first, stop - num_frames + 1, num_frames)
    ]
    if not clips:
        lengths = [stop - first for first, stop in shots]
        raise ValueError(
            f"{path}: no shot holds --frames {num_frames} frames (scene cuts split it into "
            f"shots of {lengths} frames); lower --frames"
        )
    return clips


def prepared_clips(folder: Path, num_frames: int | None, max_clips: int | None) -> list[Clip]:
    """The kept clips of a prepare_data output folder, re-read from their source videos."""
    settings = json.loads((folder / "dataset.json").read_text())["config"]
    size = (int(settings["width"]), int(settings["height"]))
    clips = []
    for record_path in sorted((folder / "clips").glob("*.json")):
        record = json.loads(record_path.read_text())
        if record.get("status") != "ok":
            continue
        source = Path(record["source"])
        if not source.is_absolute() and not source.exists():
            source = folder.parent / source  # a path relative to where prepare_data ran
        if not source.exists():
            raise FileNotFoundError(
                f"{record_path}: its source video {record['source']} is not found (run "
                f"evaluate.py from the folder prepare_data ran in, or evaluate the videos "
                f"with --videos)"
            )
        fps, length = float(record["fps"]), int(record["num_frames"])
        if num_frames is not None:
            if num_frames > length:
                raise ValueError(
                    f"{record_path}: the clip has {length} frames, fewer than --frames "
                    f"{num_frames}; lower --frames"
                )
            length = num_frames
        video = read_video(
            source, start=record["start_s"], end=record["end_s"] + 1.0 / fps, size=size
        )
        frames, _ = resample_to_fps(
            video.frames, video.timestamps, fps, length, start=record["start_s"]
        )
        clips.append(Clip(record["clip_id"], frames))
        if max_clips is not None and len(clips) >= max_clips:
            break
    if not clips:
        raise ValueError(f"{folder}: a prepare_data folder without kept clips")
    return clips


def find_clips(
    folder: str | Path,
    num_frames: int | None,
    size: tuple[int, int],
    max_clips: int | None = None,
    drop_duplicates: bool = True,
    skipped: list[str] | None = None,
) -> list[Clip]:
    """Clips of a folder of videos, or of a prepare_data output folder (has dataset.json).

    A video that cannot be decoded, or gives no clip of ``num_frames`` frames, is reported
    on stderr, appended to ``skipped`` (one line each) and left out.

    Raises:
        ValueError: no video of the folder gives a clip (the reasons are in the message).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (--videos takes a folder of videos)")
    if (folder / "dataset.json").is_file() and (folder / "clips").is_dir():
        return prepared_clips(folder, num_frames, max_clips)
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise ValueError(
            f"{folder}: no videos (looked for {', '.join(VIDEO_EXTENSIONS)}) and not a "
            f"prepare_data folder (no dataset.json)"
        )
    clips, reasons = [], []
    for path in videos:
        try:
            clips += video_clips(
                path, num_frames or MotionConfig().num_frames, size, drop_duplicates
            )
        except (ValueError, OSError) as error:  # undecodable, truncated or too short
            reasons.append(str(error).splitlines()[0])
            print(f"evaluate.py: skipped {reasons[-1]}", file=sys.stderr)
    if skipped is not None:
        skipped += reasons
    if not clips:
        raise ValueError(f"{folder}: no video gives a clip ({'; '.join(reasons)})")
    return clips[:max_clips] if max_clips else clips


# ----------------------------------------------------------------------------- model


def load_model(path: str | Path, device: str = "cpu"):
    """A ``FrameSynthesisModel`` from a ``save_pretrained`` folder, with clear errors."""
    from models.frame_synthesis import FrameSynthesisModel

    path = Path(path)
    config_path = path / "config.json"
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: model folder not found (train one with train_frame_synthesis.py, or "
            f"leave out --model to evaluate the baselines only)"
        )
    if not config_path.is_file():
        if (path / "model_index.json").is_file() and (path / RENDERER_SUBFOLDER).is_dir():
            raise ValueError(
                f"{path}: a pipeline folder, not a FrameSynthesisModel; give its renderer, "
                f"--model {path / RENDERER_SUBFOLDER}"
            )
        raise ValueError(f"{path}: not a saved model (no config.json)")
    class_name = json.loads(config_path.read_text()).get("_class_name")
    if class_name != FrameSynthesisModel.__name__:
        raise ValueError(
            f"{path}: holds a {class_name!r}, not a FrameSynthesisModel (give the folder "
            f"written by train_frame_synthesis.py)"
        )
    try:
        model = FrameSynthesisModel.from_pretrained(str(path))
    except (OSError, RuntimeError) as error:  # a corrupt or truncated weights file
        raise ValueError(
            f"{path}: cannot load the model ({str(error).splitlines()[0]}); is a file damaged?"
        ) from None
    return model.to(device).eval()


# ----------------------------------------------------------------------------- metrics


def psnr_per_frame(pred: np.ndarray, real: np.ndarray) -> np.ndarray:
    """``(T,)`` PSNR in dB of uint8 ``(T, H, W, 3)`` frames (inf for identical frames)."""
    mse = ((pred.astype(np.float64) - real.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(255.0**2 / mse)


def psnr_pooled(pred: np.ndarray, real: np.ndarray) -> float:
    """PSNR in dB of the MSE over all frames and pixels of a clip (inf if identical)."""
    mse = float(((pred.astype(np.float64) - real.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)


def ssim_per_frame(pred: np.ndarray, real: np.ndarray, batch: int = 16) -> np.ndarray:
    """``(T,)`` SSIM (Gaussian window 11, sigma 1.5, RGB averaged) of uint8 frames."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    values = [
        ssim(
            _to_tensor(pred[i : i + batch]),
            _to_tensor(real[i : i + batch]),
            data_range=1.0,
            reduction="none",
        )  # fmt: skip
        for i in range(0, len(pred), batch)
    ]
    return torch.cat(values).numpy().astype(np.float64)


# AlexNet ``features`` layer index -> the torchmetrics LPIPS slice holding it.
_ALEX_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def alexnet_weights_path(path: str | Path | None = None) -> Path | None:
    """``path`` (``--lpips_weights``; must exist), else torch's hub-cache copy if present."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no such file (--lpips_weights takes torchvision's {ALEXNET_WEIGHTS}; "
                f"fetch it online with: {ALEXNET_FETCH})"
            )
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS
    return cached if cached.is_file() else None


class LPIPS:
    """LPIPS (AlexNet, torchmetrics' linear layers) from a local AlexNet weights file.

    ``weights``: torchvision's ImageNet AlexNet state dict (``features.*`` keys; the
    classifier is ignored), loaded with ``weights_only=True``; None looks in torch's hub
    cache, and without a file the metric is unavailable (nothing is downloaded).
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        self.path = alexnet_weights_path(weights)
        self.metric = None
        if self.path is None:
            return
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # not a torch file, or one that needs pickle
            raise ValueError(
                f"{self.path}: cannot read AlexNet weights ({str(error).splitlines()[0]})"
            ) from None
        if not isinstance(state, dict):
            raise ValueError(f"{self.path}: not a state dict of AlexNet weights")
        # The backbone starts random (pnet_rand: torchvision would download it) and gets
        # the file's weights; the linear layers ship with torchmetrics.
        metric = _NoTrainLpips(net="alex", pnet_rand=True).eval()
        mapped = {}
        for key, value in state.items():
            parts = key.split(".")
            if parts[0] == "features" and int(parts[1]) in _ALEX_SLICES:
                mapped[f"slice{_ALEX_SLICES[int(parts[1])]}.{parts[1]}.{parts[2]}"] = value
        try:
            metric.net.load_state_dict(mapped, strict=True)
        except RuntimeError as error:
            raise ValueError(
                f"{self.path}: not torchvision's AlexNet weights ({str(error).splitlines()[0]}); "
                f"fetch them with: {ALEXNET_FETCH}"
            ) from None
        self.metric = metric

    @property
    def available(self) -> bool:
        return self.metric is not None

    @torch.no_grad()
    def __call__(self, pred: np.ndarray, real: np.ndarray, batch: int = 16) -> float:
        """Mean LPIPS over the frames of uint8 ``(T, H, W, 3)`` arrays (nan when unavailable)."""
        if self.metric is None:
            return math.nan
        scores = [
            self.metric(_to_tensor(pred[i : i + batch]), _to_tensor(real[i : i + batch]), normalize=True)
            .flatten().double().sum().item()
            for i in range(0, len(pred), batch)
        ]  # fmt: skip
        return sum(scores) / len(pred)


# ----------------------------------------------------------------------------- evaluation


def flow_options(method: str, preset: str = FLOW_PRESET) -> dict:
    """``estimate_flow`` keyword arguments: the DIS preset applies to ``dis`` only."""
    return {"method": method, **({"preset": preset} if method == "dis" else {})}


def evaluate_clip(
    clip: Clip, renderers: dict, flow_method: str, lpips: LPIPS, flow_preset: str = FLOW_PRESET
) -> tuple[list[dict], list[dict], dict[str, np.ndarray]]:
    """Flow 0 -> t on the real frames, render frames 1..T-1 with every renderer, score them.

    Returns per-method rows, per-frame rows (clip, method, t, psnr, mse, ssim,
    median_disp: the median over pixels of |D_t| in px) and the rendered frames per method.
    """
    real = clip.frames[1:]
    disp = estimate_flow(clip.frames[0], real, **flow_options(flow_method, flow_preset))
    median_disp = np.median(np.linalg.norm(disp, axis=-1).reshape(len(real), -1), axis=1)
    rows, frame_rows, rendered = [], [], {}
    for name, render in renderers.items():
        start = time.perf_counter()
        pred = render(clip.frames[0], disp)
        seconds = time.perf_counter() - start
        per_frame = psnr_per_frame(pred, real)
        mse = ((pred.astype(np.float64) - real) ** 2).mean(axis=(1, 2, 3))
        ssim = ssim_per_frame(pred, real)
        rows.append({
            "clip": clip.name, "method": name, "frames": len(real),
            "psnr_pooled": psnr_pooled(pred, real), "psnr_mean": float(per_frame.mean()),
            "ssim": float(ssim.mean()), "lpips": lpips(pred, real),
            "render_fps": len(real) / seconds if seconds > 0 else math.inf,
        })  # fmt: skip
        frame_rows += [
            {"clip": clip.name, "method": name, "t": t + 1, "psnr": float(per_frame[t]),
             "mse": float(mse[t]), "ssim": float(ssim[t]), "median_disp": float(median_disp[t])}
            for t in range(len(real))
        ]  # fmt: skip
        rendered[name] = pred
    return rows, frame_rows, rendered


def magnitude_breakdown(frame_rows: list[dict], methods: list[str]) -> list[dict]:
    """Per method and motion-magnitude bin (``MAGNITUDE_BINS``, by a frame's median |D_t|):
    the frame count, PSNR pooled over the bin's frames (mean MSE) and mean SSIM (nan when
    the bin is empty)."""
    table = []
    for method in methods:
        mine = [r for r in frame_rows if r["method"] == method]
        for label, low, high in MAGNITUDE_BINS:
            part = [r for r in mine if low <= r["median_disp"] < high]
            mse = float(np.mean([r["mse"] for r in part])) if part else math.nan
            psnr = math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
            table.append({
                "method": method, "magnitude": label, "frames": len(part), "psnr_pooled": psnr,
                "ssim": float(np.mean([r["ssim"] for r in part])) if part else math.nan,
            })  # fmt: skip
    return table


def magnitude_markdown(table: list[dict]) -> str:
    """The per-magnitude table: one row per method, 'PSNR / SSIM' per bin."""
    counts: dict[str, int] = {}
    for r in table:  # every method scores the same frames: the first one's counts
        counts.setdefault(r["magnitude"], r["frames"])
    labels = [label for label, _, _ in MAGNITUDE_BINS]
    lines = [
        "| method | " + " | ".join(f"{b} ({counts[b]} frames)" for b in labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for method in dict.fromkeys(r["method"] for r in table):
        cells = []
        for label in labels:
            row = next(r for r in table if r["method"] == method and r["magnitude"] == label)
            cells.append(
                "-" if not row["frames"]
                else f"{_number(row['psnr_pooled'], 2)} / {row['ssim']:.4f}"
            )  # fmt: skip
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summarize(rows: list[dict], methods: list[str]) -> list[dict]:
    """Mean over clips of every metric, per method, in ``methods`` order."""
    table = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        table.append({
            "method": method, "clips": len(mine), "frames": sum(r["frames"] for r in mine),
            **{k: float(np.mean([r[k] for r in mine])) for k in ("psnr_pooled", "psnr_mean", "ssim", "lpips")},
        })  # fmt: skip
    return table


def _number(value: float, digits: int) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def table_markdown(table: list[dict], lpips_available: bool) -> str:
    lines = [
        "| method | PSNR pooled (dB) | PSNR per-frame mean (dB) | SSIM | LPIPS (AlexNet) |",
        "|---|---|---|---|---|",
    ]
    for row in table:
        lpips = _number(row["lpips"], 4) if lpips_available else LPIPS_MISSING
        lines.append(
            f"| {row['method']} | {_number(row['psnr_pooled'], 2)} | "
            f"{_number(row['psnr_mean'], 2)} | {row['ssim']:.4f} | {lpips} |"
        )
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def plot_psnr_curves(curves: dict[str, list[np.ndarray]], path: Path) -> None:
    """Mean over clips of PSNR against frame index, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, per_clip in curves.items():
        length = min(len(c) for c in per_clip)
        values = np.stack([c[:length] for c in per_clip])
        values = np.where(np.isfinite(values), values, np.nan)  # identical frames: not drawn
        ax.plot(np.arange(1, length + 1), np.nanmean(values, axis=0), label=name)
    ax.set_xlabel("frame index t (rendered from frame 0)")
    ax.set_ylabel("PSNR (dB), mean over clips")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()

    def save(tmp: Path) -> None:
        fig.savefig(tmp, dpi=100, format="png")

    atomic_write(path, save)
    plt.close(fig)


def check_outputs(out: Path, overwrite: bool, names: tuple[str, ...] = OUTPUT_FILES) -> Path:
    """Create ``out`` (writable) and refuse to replace existing outputs unless ``overwrite``."""
    out = ensure_writable_dir(out)
    existing = [name for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out}: already holds {', '.join(existing)}; pass --overwrite to replace them or "
            f"choose another --out"
        )
    return out


def build_renderers(model) -> dict:
    renderers = {}
    if model is not None:
        renderers[MODEL_ROW] = lambda image, disp: model.render_frames(image, disp)
    for name, method in BASELINES.items():
        renderers[name] = lambda image, disp, method=method: render_frames(image, disp, method)
    return renderers


def run_frame_evaluation(args: argparse.Namespace) -> str:
    """The renderer table; returns its markdown (also written to ``--out``)."""
    out = check_outputs(Path(args.out), args.overwrite)
    size = parse_size(args.size)
    model_dir = args.model
    if model_dir is None and DEFAULT_MODEL_DIR.is_dir():
        model_dir = DEFAULT_MODEL_DIR
    model = load_model(model_dir) if model_dir is not None and not args.no_model else None
    if model is None:
        reason = "--no_model" if args.no_model else f"no --model and no {DEFAULT_MODEL_DIR}"
        print(f"no model ({reason}): evaluating the baselines only")
    lpips = LPIPS(args.lpips_weights)  # before the clips: a bad weights file fails fast
    skipped: list[str] = []
    clips = find_clips(
        args.videos, args.frames, size, args.max_clips, not args.keep_duplicate_frames, skipped
    )
    print(f"{len(clips)} clips from {args.videos}: " + ", ".join(c.name for c in clips))
    renderers = build_renderers(model)
    rows, per_frame, curves = [], [], {name: [] for name in renderers}
    for clip in clips:
        clip_rows, frame_rows, _ = evaluate_clip(
            clip, renderers, args.flow, lpips, args.flow_preset
        )
        rows += clip_rows
        per_frame += frame_rows
        for name in renderers:
            curves[name].append(np.array([r["psnr"] for r in frame_rows if r["method"] == name]))
        print(f"  {clip.name}: " + ", ".join(
            f"{r['method']} {_number(r['psnr_pooled'], 2)} dB" for r in clip_rows))  # fmt: skip
    table = summarize(rows, list(renderers))
    by_magnitude = magnitude_breakdown(per_frame, list(renderers))
    markdown = (
        table_markdown(table, lpips.available)
        + "\nBy motion magnitude (a frame's median |D_t| over pixels; pooled PSNR (dB) / SSIM "
        "over the frames of all clips in the bin):\n\n" + magnitude_markdown(by_magnitude)
    )
    if skipped:
        markdown += "\nSkipped videos:\n" + "".join(f"- {reason}\n" for reason in skipped)
    _write_text(out / "table.md", markdown)
    _write_text(out / "per_clip.csv", _csv_text(rows))
    _write_text(out / "per_frame.csv", _csv_text(per_frame))
    _write_text(out / "per_magnitude.csv", _csv_text(by_magnitude))
    plot_psnr_curves(curves, out / "psnr_vs_frame.png")
    summary = {
        "videos": str(args.videos), "model": str(model_dir) if model is not None else None,
        "keep_duplicate_frames": args.keep_duplicate_frames, "frames": args.frames,
        "size": args.size, "flow": args.flow, "flow_preset": args.flow_preset,
        "clips": [c.name for c in clips], "skipped": skipped,
        "lpips": str(lpips.path) if lpips.available else None, "table": table,
        "by_magnitude": by_magnitude,
    }  # fmt: skip
    _write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return markdown


def run_motion_evaluation(args: argparse.Namespace) -> str:
    """Motion-quality metrics on a prepare_data folder (``data.motion_metrics``): the motion
    model of ``--motion_model`` (a ``MotionPipeline`` folder; without it, the baselines only)."""
    from data.motion_metrics import evaluate_motion, motion_table_markdown

    if not Path(args.motion_data).is_dir():
        raise FileNotFoundError(f"{args.motion_data}: no such folder (--motion_data)")
    pipeline = None
    if args.motion_model is not None:
        if not Path(args.motion_model).is_dir():
            raise FileNotFoundError(f"{args.motion_model}: motion model folder not found")
        from models.pipeline_motion import MotionPipeline

        try:
            pipeline = MotionPipeline.from_pretrained(args.motion_model)
        except (OSError, RuntimeError) as error:  # a corrupt or truncated weights file
            raise ValueError(
                f"{args.motion_model}: cannot load the motion model ({str(error).splitlines()[0]}); "
                "is a file damaged? Save it again (train_unet.py output or "
                "MotionPipeline.save_pretrained)"
            ) from None
        if args.scheduler is not None:
            pipeline.set_scheduler(args.scheduler)
    out = check_outputs(Path(args.out), args.overwrite, ("motion.md", "motion_metrics.csv"))
    rows = evaluate_motion(
        args.motion_data, pipeline, split=args.motion_split, out_dir=out,
        num_inference_steps=args.num_inference_steps, max_clips=args.max_clips,
        guidance_scale=args.guidance_scale,
        mask_provider=None if args.mask_provider == "none" else args.mask_provider,
    )  # fmt: skip
    markdown = motion_table_markdown(rows)
    _write_text(out / "motion.md", markdown)
    return markdown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--videos", help="folder of videos, or a prepare_data output folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--model",
        default=None,
        help=f"FrameSynthesisModel folder (default: {DEFAULT_MODEL_DIR} when it exists)",
    )
    p.add_argument("--no_model", action="store_true", help="baselines only")
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="frames per clip (videos: default 150; prepared folders: default the clip's)",
    )
    p.add_argument("--size", default="256x160", help="WxH the videos are resized to")
    p.add_argument("--flow", default="dis", help="flow method (data.flow.FLOW_METHODS)")
    p.add_argument(
        "--flow_preset", default=FLOW_PRESET, choices=["ultrafast", "fast", "medium", "fine"],
        help="DIS preset (--flow dis); fine is what the training pairs use",
    )  # fmt: skip
    p.add_argument(
        "--lpips_weights", default=None,
        help=f"torchvision's AlexNet weights file ({ALEXNET_WEIGHTS}) for LPIPS (default: torch's "
        f"hub cache if there; fetch online with: {ALEXNET_FETCH})",
    )  # fmt: skip
    p.add_argument("--max_clips", type=int, default=None, help="evaluate at most N clips")
    p.add_argument(
        "--keep_duplicate_frames",
        action="store_true",
        help="keep consecutive identical frames (dropped by default: repeated frames fake a rate)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--motion_data", default=None, help="prepare_data folder: motion metrics")
    p.add_argument(
        "--motion_model", default=None, help="MotionPipeline folder (default: baselines only)"
    )
    p.add_argument("--motion_split", default="val", choices=["val", "train", "all"])
    p.add_argument(
        "--mask_provider", default=DEFAULT_MASK_PROVIDER,
        help="--motion_model: the automatic motion mask (sample.py's default, cues) or none "
        "(the model's motion everywhere)",
    )  # fmt: skip
    p.add_argument(
        "--scheduler", default=None, choices=SCHEDULERS,
        help="motion: sample with this scheduler (default: the one saved with the model)",
    )  # fmt: skip
    p.add_argument("--num_inference_steps", type=int, default=25)
    p.add_argument(
        "--guidance_scale", type=float, default=1.0,
        help="motion: classifier-free guidance on the photo (1: off)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.videos is None and args.motion_data is None:
        p.error("give --videos DIR (renderer table) and/or --motion_data DIR (motion metrics)")
    if args.frames is not None and args.frames < 2:
        p.error(
            f"--frames must be >= 2 (frame 0 and at least one frame to predict), got {args.frames}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.videos is not None:
            print(run_frame_evaluation(args))
        if args.motion_data is not None:
            print(run_motion_evaluation(args))
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
