"""Videos -> clips -> optical flow -> spectral volumes, resumable, parallel and shardable.

This is the engine behind ``prepare_data.py``. The output folder (format in
``docs/DATA_FORMAT.md``)::

    OUT/dataset.json          settings of the run (MotionConfig, flow, filters, split)
    OUT/videos/<video_id>.json one record per source video: done or failed, and why
    OUT/clips/<clip_id>.npz   spectral (K, 4, H, W) float16 + first_frame (H, W, 3) uint8
    OUT/clips/<clip_id>.json  one record per clip: source, time range, split, kept or why not
    OUT/manifest.json         every clip record, gathered by the merge step
    OUT/normalization.json    frequency-adaptive normalisation from the training split
    OUT/power_spectrum.png    mean power per frequency (train and val)
    OUT/previews/*.png        first frame + flow colour image of a few clips

Every file is written atomically, so a killed run leaves no corrupt file, and a run
restarted on the same folder skips every video and clip that is already recorded.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data.config import MotionConfig
from data.io_utils import ensure_writable_dir, write_json_atomic, write_npz_atomic

# DIS with its finest level at full resolution: on oscillation whose amplitude varies
# across the image it halves the error of OpenCV's "medium" (benchmarks/bench_prepare.py).
DEFAULT_DIS_PRESET = "fine"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
FORMAT_VERSION = 1


@dataclass
class ClipFilters:
    """Thresholds of the clip filters; a clip failing one is recorded with the reason.

    Attributes:
        min_distinct_fraction: fewest distinct source frames per output frame. A video
            whose real frame rate is far below ``fps`` repeats frames, which turns smooth
            motion into steps; such clips are dropped.
        scene_cut_threshold: histogram distance between consecutive frames above which a
            scene cut is declared (see ``data.video.detect_scene_cuts``).
        max_global_motion: largest allowed |median displacement| over the frame, in
            pixels of the output size: the camera moved or the whole scene slid.
        max_flow_fraction: largest allowed 99th-percentile displacement magnitude, as a
            fraction of min(W, H): beyond it flow is implausible for oscillation.
    """

    min_distinct_fraction: float = 0.5
    scene_cut_threshold: float | None = None  # None: data.video's default
    max_global_motion: float = 1.5
    max_flow_fraction: float = 0.15


@dataclass
class PrepareSettings:
    """Everything that decides what a prepared folder contains (saved as dataset.json)."""

    config: MotionConfig = field(default_factory=MotionConfig)
    flow_method: str = "dis"
    flow_options: dict = field(default_factory=lambda: {"preset": DEFAULT_DIS_PRESET})
    clip_stride: int | None = None  # frames between clip starts; None: num_frames (no overlap)
    max_clips_per_video: int | None = None
    val_fraction: float = 0.1
    filters: ClipFilters = field(default_factory=ClipFilters)

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "flow": {"method": self.flow_method, "options": self.flow_options},
            "clip_stride": self.clip_stride or self.config.num_frames,
            "max_clips_per_video": self.max_clips_per_video,
            "val_fraction": self.val_fraction,
            "filters": asdict(self.filters),
        }


# ----------------------------------------------------------------------------- inputs


def list_videos(source: str | Path) -> tuple[list[Path], Path]:
    """Videos named by ``source``: a folder (searched recursively), a list file or one video.

    Returns the sorted paths and the root that ids are made relative to.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if source.is_dir():
        videos = sorted(
            p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
        )
        root = source
    elif source.suffix.lower() in VIDEO_EXTENSIONS:
        videos, root = [source], source.parent
    else:  # a text file listing one video per line; blank lines and '#' comments ignored
        lines = source.read_text().splitlines()
        entries = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        videos = sorted((source.parent / entry).resolve() for entry in entries)
        missing = [str(v) for v in videos if not v.is_file()]
        if missing:
            raise FileNotFoundError(f"{source}: listed videos not found: {', '.join(missing[:5])}")
        root = Path(*Path(videos[0]).parts[:1]) if videos else source.parent
    if not videos:
        raise ValueError(f"{source}: no videos found (looked for {', '.join(VIDEO_EXTENSIONS)})")
    return videos, root


def video_id(path: Path, root: Path) -> str:
    """A stable, collision-free id: the file stem plus a hash of its path under ``root``."""
    try:
        relative = path.resolve().relative_to(root.resolve())
    except ValueError:
        relative = path.resolve()
    digest = hashlib.sha1(relative.as_posix().encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in path.stem)[:40]
    return f"{stem}-{digest}"


def assign_splits(video_ids: Iterable[str], val_fraction: float) -> dict[str, str]:
    """Split by video, so no clip of a validation video ever trains.

    A video goes to "val" when the hash of its id, read as a number in [0, 1), is below
    ``val_fraction``: adding videos later never moves an existing one. With two or more
    videos and a positive fraction, at least one video is held out (the lowest hash), and
    at least one video always trains.
    """
    ids = list(video_ids)
    position = {
        vid: int(hashlib.sha1(f"split:{vid}".encode()).hexdigest()[:12], 16) / 16**12 for vid in ids
    }
    splits = {vid: "val" if position[vid] < val_fraction else "train" for vid in ids}
    if val_fraction > 0 and len(ids) >= 2 and "val" not in splits.values():
        splits[min(ids, key=position.__getitem__)] = "val"
    if ids and "train" not in splits.values():  # a lone video always trains
        splits[max(ids, key=position.__getitem__)] = "train"
    return splits


# ----------------------------------------------------------------------------- one video


def _clip_record_path(out: Path, clip_id: str) -> Path:
    return out / "clips" / f"{clip_id}.json"


def _video_record_path(out: Path, vid: str) -> Path:
    return out / "videos" / f"{vid}.json"


def _flow_stats(disp: np.ndarray) -> dict:
    """Summary of a displacement stack ``disp: (T, H, W, 2)`` used by the filters."""
    magnitude = np.linalg.norm(disp, axis=-1)  # (T, H, W)
    global_motion = np.linalg.norm(np.median(disp.reshape(len(disp), -1, 2), axis=1), axis=-1)
    return {
        "mean_magnitude": float(magnitude.mean()),
        "p99_magnitude": float(np.percentile(magnitude, 99)),
        "max_global_motion": float(global_motion.max()),
    }


def _process_clip(
    clip: dict,
    frames: np.ndarray,
    timestamps: np.ndarray,
    sample_ids: np.ndarray,
    out: Path,
    settings: PrepareSettings,
) -> dict:
    """Resample, filter, estimate flow and write one clip; fill in and return its record.

    ``frames: (N, H, W, 3)`` at the output size, ``timestamps: (N,)`` seconds covering the
    clip's time range (it starts at ``clip["start_s"]``), ``sample_ids: (N,)`` the same id
    for frames that repeat one real sample.
    """
    from data.flow import estimate_flow
    from data.spectral import displacement_to_spectral
    from data.video import detect_scene_cuts, resample_to_fps

    config, filters = settings.config, settings.filters
    frames, info = resample_to_fps(
        frames, timestamps, config.fps, num_frames=config.num_frames, start=clip["start_s"]
    )
    distinct = len(np.unique(sample_ids[info.indices]))
    clip["distinct_source_frames"] = distinct
    if distinct < filters.min_distinct_fraction * config.num_frames:
        real_rate = distinct / (clip["end_s"] - clip["start_s"])
        return clip | {
            "status": "rejected",
            "reason": f"low frame rate: {distinct} distinct source frames for "
            f"{config.num_frames} output frames (~{real_rate:.1f} real frames/s, fewer than "
            f"{filters.min_distinct_fraction:g} x {config.fps:g}; a still scene gives this too)",
        }
    cut_options = {}
    if filters.scene_cut_threshold is not None:
        cut_options["threshold"] = filters.scene_cut_threshold
    cuts = detect_scene_cuts(frames, **cut_options)
    if cuts:
        return clip | {"status": "rejected", "reason": f"scene cut: at output frame(s) {cuts[:5]}"}

    disp = estimate_flow(frames[0], frames, method=settings.flow_method, **settings.flow_options)
    stats = _flow_stats(disp)  # disp: (T, H, W, 2), disp[0] = 0
    clip["flow_stats"] = stats
    limit = filters.max_flow_fraction * min(config.width, config.height)
    if stats["max_global_motion"] > filters.max_global_motion:
        return clip | {
            "status": "rejected",
            "reason": f"camera/global motion: median displacement reaches "
            f"{stats['max_global_motion']:.2f} px > {filters.max_global_motion} px",
        }
    if stats["p99_magnitude"] > limit:
        return clip | {
            "status": "rejected",
            "reason": f"implausible flow: 99th-percentile magnitude "
            f"{stats['p99_magnitude']:.1f} px > {limit:.1f} px",
        }
    spectral = displacement_to_spectral(disp, config.num_freqs)  # (K, 4, H, W)
    write_npz_atomic(
        out / "clips" / f"{clip['clip_id']}.npz",
        spectral=spectral.astype(np.float16),
        first_frame=frames[0],
    )
    return clip | {"status": "ok", "file": f"clips/{clip['clip_id']}.npz"}


def _real_samples(sample_ids: list[int]) -> list[int]:
    """Indices of the frames that are real samples: the first of each run of repeats.

    A repeated frame is no new sample of the motion (containers that lie about their rate
    repeat frames), so its timestamp must not compete in nearest-frame resampling. The
    newest frame is kept as well: it marks how far the video reaches, and its content is
    what the video shows at that time.
    """
    last = len(sample_ids) - 1
    return [
        i for i in range(len(sample_ids))
        if i == 0 or i == last or sample_ids[i] != sample_ids[i - 1]
    ]  # fmt: skip


def process_video(path: Path, vid: str, split: str, out: Path, settings: PrepareSettings) -> dict:
    """Cut one video into clips, estimate flow, write spectral volumes; return its record.

    The video is decoded once, as a stream, at the output size: memory holds one clip's
    frames, whatever the video's length. Clips already recorded in ``out`` (by an
    interrupted run) are not computed again. A video that cannot be read gives a "failed"
    record instead of an exception; a truncated one keeps the clips before the damage.
    """
    from data.video import iter_frames

    config = settings.config
    clip_span = (config.num_frames - 1) / config.fps  # first to last frame, seconds
    stride = (settings.clip_stride or config.num_frames) / config.fps
    max_clips = settings.max_clips_per_video
    record = {"video_id": vid, "source": str(path), "split": split, "clips": []}
    started = time.perf_counter()

    # The frames of the clip being filled: (time, frame, id of the real sample it shows).
    times: list[float] = []
    frames: list[np.ndarray] = []
    sample_ids: list[int] = []
    first_time = last_time = clip_start = None
    num_decoded = num_samples = 0

    def emit_clip() -> None:
        """Process the clip starting at ``clip_start`` and move on to the next one."""
        nonlocal clip_start
        clip_id = f"{vid}_{len(record['clips']):04d}"
        record["clips"].append(clip_id)
        if not _clip_record_path(out, clip_id).exists():
            clip = {
                "clip_id": clip_id, "video_id": vid, "source": str(path), "split": split,
                "start_s": clip_start, "end_s": clip_start + clip_span, "fps": config.fps,
                "num_frames": config.num_frames,
                "flow": {"method": settings.flow_method, "options": settings.flow_options},
            }  # fmt: skip
            real = _real_samples(sample_ids)
            clip = _process_clip(
                clip,
                np.stack([frames[i] for i in real]),
                np.asarray([times[i] for i in real]),
                np.asarray([sample_ids[i] for i in real]),
                out,
                settings,
            )
            write_json_atomic(_clip_record_path(out, clip_id), clip)
        clip_start += stride
        # Keep one frame before the next clip's start: it may be the nearest.
        keep = max(0, int(np.searchsorted(times, clip_start, side="right")) - 1)
        del times[:keep], frames[:keep], sample_ids[:keep]

    def enough_clips() -> bool:
        return max_clips is not None and len(record["clips"]) >= max_clips

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for t, frame in iter_frames(path, size=config.size, drop_duplicates=False):
                num_decoded += 1
                if first_time is None:
                    first_time = clip_start = t
                last_time = t
                num_samples += not (frames and np.array_equal(frame, frames[-1]))
                times.append(t)
                frames.append(frame)
                sample_ids.append(num_samples)
                # A clip is ready once a frame at or after its last target time arrived:
                # the nearest frame to every target time is then in the buffer.
                while t >= clip_start + clip_span - 1e-9 and not enough_clips():
                    emit_clip()
                if enough_clips():
                    break
            # The video may end within half a frame interval of the last clip's end: the
            # last frame is then the nearest to the last target time.
            if len(times) > 1 and not enough_clips():
                half_interval = 0.5 * (times[-1] - times[0]) / (len(times) - 1)
                if last_time + half_interval >= clip_start + clip_span - 1e-9:
                    emit_clip()
        except ValueError as error:
            if not record["clips"]:
                record.update(status="failed", reason=str(error))
                write_json_atomic(_video_record_path(out, vid), record)
                return record
            record["warnings"] = [str(error)]
    record.setdefault("warnings", []).extend(str(w.message) for w in caught)
    duration = (last_time - first_time) if num_decoded > 1 else 0.0
    record.update(
        status="done",
        decoded_frames=num_decoded,
        repeated_frames=num_decoded - num_samples,
        duration_s=duration,
        measured_fps=(num_samples - 1) / duration if duration > 0 else 0.0,
        seconds=time.perf_counter() - started,
    )
    if not record["clips"]:
        needs = f"a clip needs {clip_span:.2f} s ({config.num_frames} frames at {config.fps:g} fps)"
        damage = [w for w in record["warnings"] if TRUNCATION_MARK in w]
        if damage:  # the file is cut short, not the video: say so (the fix differs)
            record["reason"] = (
                f"truncated or damaged file: {_stopped_at(damage[0])}; "
                f"the readable {duration:.2f} s are too short, {needs}"
            )
        else:
            record["reason"] = f"too short: {duration:.2f} s, {needs}"
    write_json_atomic(_video_record_path(out, vid), record)
    return record


# data.video's warning when decoding stops well before the container's declared end.
TRUNCATION_MARK = "truncated or damaged file"


def _stopped_at(warning: str) -> str:
    """ "decoding stopped at X s of Y s declared" out of data.video's truncation warning."""
    text = warning.split(": ", 1)[-1].split(";")[0]
    return text.replace(f" ({TRUNCATION_MARK})", "")


def _process_video_job(job: tuple) -> dict:
    """Worker entry point: one thread per worker, the processes give the parallelism."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    return process_video(*job)


# ----------------------------------------------------------------------------- merge


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def unusable_videos(videos: list[dict], clips: list[dict]) -> dict[str, str]:
    """``{source: why}`` for every video that gave no kept clip (unreadable, truncated, too
    short, or every clip rejected, with the clip reasons counted)."""
    by_video: dict[str, list[dict]] = {}
    for clip in clips:
        by_video.setdefault(clip["video_id"], []).append(clip)
    unusable = {}
    for video in videos:
        own = by_video.get(video["video_id"], [])
        if any(c["status"] == "ok" for c in own):
            continue
        if video["status"] == "failed" or not own:
            unusable[video["source"]] = video.get("reason", "no clips")
            continue
        reasons: dict[str, int] = {}
        for clip in own:
            key = clip["reason"].split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        unusable[video["source"]] = (
            "every clip rejected ("
            + ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
            + ")"
        )
    return unusable


def describe_unusable(unusable: dict[str, str], limit: int = 10) -> str:
    """One line naming the unusable videos and why (the first ``limit``)."""
    parts = [f"{Path(source).name}: {why}" for source, why in list(unusable.items())[:limit]]
    more = (
        f"; and {len(unusable) - limit} more (see manifest.json)" if len(unusable) > limit else ""
    )
    return ("unusable videos: " + "; ".join(parts) + more) if parts else ""


def _promote_to_train(out: Path, videos: list[dict], clips: list[dict]) -> str:
    """No kept clip is in the training split, but some are in val: the video with the most
    kept clips trains instead (a usable video never sits in val while nothing trains).

    Rewrites that video's record and its clip records (so a resumed run agrees) and updates
    ``videos`` / ``clips`` in place; returns the video's source.
    """
    kept_per_video: dict[str, int] = {}
    for clip in clips:
        if clip["status"] == "ok":
            kept_per_video[clip["video_id"]] = kept_per_video.get(clip["video_id"], 0) + 1
    chosen = min(kept_per_video, key=lambda vid: (-kept_per_video[vid], vid))
    for clip in clips:
        if clip["video_id"] == chosen:
            clip["split"] = "train"
            write_json_atomic(_clip_record_path(out, clip["clip_id"]), clip)
    for video in videos:
        if video["video_id"] == chosen:
            video["split"] = "train"
            write_json_atomic(_video_record_path(out, chosen), video)
            return video["source"]
    return chosen


def merge(out: str | Path, num_previews: int = 6) -> dict:
    """Gather clip records into manifest.json and compute normalization.json.

    The statistics come from the training split only, across every shard that wrote
    into ``out``. Also writes the power-spectrum plot and a few flow previews. The
    manifest is written even when no training clip survived (it says why), and then a
    ValueError is raised.
    """
    from PIL import Image

    from data.io_utils import atomic_write
    from data.spectral import (
        SpectralStatsAccumulator,
        frequency_power_spectrum,
        spectral_to_displacement,
    )
    from data.visualize import flow_to_color, plot_power_spectrum

    out = Path(out)
    # Every shard is done when the merge runs: a temporary file still here is the remains
    # of a write that a kill interrupted (its record was redone on resume), never needed.
    for stale in out.rglob(".*.tmp"):
        stale.unlink(missing_ok=True)
    dataset = _read_json(out / "dataset.json")
    config = MotionConfig.from_dict(dataset["config"])
    videos = [_read_json(p) for p in sorted((out / "videos").glob("*.json"))]
    clips = [_read_json(p) for p in sorted((out / "clips").glob("*.json"))]
    kept = [c for c in clips if c["status"] == "ok"]
    train = [c for c in kept if c["split"] == "train"]
    moved = None
    if kept and not train:
        moved = _promote_to_train(out, videos, clips)
        train = [c for c in kept if c["split"] == "train"]

    reasons: dict[str, int] = {}
    for clip in clips:
        if clip["status"] != "ok":
            key = clip["reason"].split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    manifest = {
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "flow": dataset["flow"],
        "counts": {
            "videos": len(videos),
            "failed_videos": sum(v["status"] == "failed" for v in videos),
            "clips": len(clips),
            "kept": len(kept),
            "train": len(train),
            "val": len(kept) - len(train),
            "rejected_by_reason": reasons,
        },
        "unusable": unusable_videos(videos, clips),
        "videos": videos,
        "clips": clips,
    }
    if moved:
        manifest["split_note"] = (
            f"{moved} was assigned to val but is the only video that yielded clips; it trains"
        )
    write_json_atomic(out / "manifest.json", manifest)
    if not train:
        (out / "normalization.json").unlink(missing_ok=True)
        raise ValueError(
            f"{out}: no training clip survived ({len(videos)} videos, {len(clips)} clips, "
            f"{len(kept)} kept); {describe_unusable(manifest['unusable']) or 'no video was read'}"
        )

    accumulator = SpectralStatsAccumulator(config.num_freqs)
    power = {"train": np.zeros(config.num_freqs), "val": np.zeros(config.num_freqs)}
    counts = {"train": 0, "val": 0}
    for clip in kept:
        spectral = np.load(out / clip["file"])["spectral"].astype(np.float32)
        if clip["split"] == "train":
            accumulator.update(spectral)
        power[clip["split"]] += frequency_power_spectrum(spectral)
        counts[clip["split"]] += 1
    normalization = accumulator.finalize().to_dict()
    normalization["config"] = config.to_dict()
    normalization["num_train_clips"] = len(train)
    write_json_atomic(out / "normalization.json", normalization)

    curves = {
        f"{split} ({counts[split]} clips)": power[split] / counts[split]
        for split in power
        if counts[split]
    }
    plot_power_spectrum(curves, config.frequencies_hz(), out / "power_spectrum.png")

    for clip in kept[:num_previews]:
        with np.load(out / clip["file"]) as data:
            spectral, first_frame = data["spectral"].astype(np.float32), data["first_frame"]
        disp = spectral_to_displacement(spectral, config.num_frames)  # (T, H, W, 2)
        t_max = int(np.argmax(np.abs(disp).mean(axis=(1, 2, 3))))
        picture = np.concatenate([first_frame, flow_to_color(disp[t_max])], axis=1)
        atomic_write(
            out / "previews" / f"{clip['clip_id']}.png",
            lambda tmp, picture=picture: Image.fromarray(picture).save(tmp, format="PNG"),
        )
    return manifest


# ----------------------------------------------------------------------------- the run


def _check_settings(out: Path, settings: PrepareSettings) -> None:
    """Write dataset.json, or refuse to mix settings with an earlier run in ``out``."""
    wanted = settings.to_dict()
    path = out / "dataset.json"
    if path.exists():
        existing = _read_json(path)
        if existing != json.loads(json.dumps(wanted)):
            changed = sorted(
                k for k in wanted if existing.get(k) != json.loads(json.dumps(wanted))[k]
            )
            raise ValueError(
                f"{out} was prepared with other settings ({', '.join(changed)} differ); "
                "use a new --output_dir, or the same settings to resume"
            )
    else:
        write_json_atomic(path, wanted)


def prepare(
    videos: str | Path,
    out: str | Path,
    settings: PrepareSettings | None = None,
    num_workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
    log=print,
) -> dict | None:
    """Prepare every video of ``videos`` (this shard's share) into ``out``.

    Returns the manifest when this call completed the whole dataset (it then merges),
    or None when other shards still have videos to do.
    """
    from tqdm import tqdm

    from data.flow import get_flow_estimator

    settings = settings or PrepareSettings()
    shard_index, num_shards = shard
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard must be i/n with 0 <= i < n, got {shard_index}/{num_shards}")
    all_videos, root = list_videos(videos)
    # Fail before any work on a flow method that does not exist or cannot load here.
    get_flow_estimator(settings.flow_method, **settings.flow_options)
    out = ensure_writable_dir(out)
    _check_settings(out, settings)

    ids = [video_id(p, root) for p in all_videos]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{videos}: two videos map to one id; rename one of them")
    splits = assign_splits(ids, settings.val_fraction)
    mine = [
        (p, vid)
        for i, (p, vid) in enumerate(zip(all_videos, ids, strict=True))
        if i % num_shards == shard_index
    ]
    todo = [(p, vid) for p, vid in mine if not _video_record_path(out, vid).exists()]

    if not todo:
        log(f"{out}: all {len(mine)} videos of shard {shard_index}/{num_shards} already prepared")
    else:
        log(
            f"preparing {len(todo)} of {len(mine)} videos (shard {shard_index}/{num_shards}, "
            f"{len(mine) - len(todo)} already done) with {num_workers} worker(s)"
        )
        jobs = [(p, vid, splits[vid], out, settings) for p, vid in todo]
        bar = tqdm(total=len(jobs), unit="video", disable=not progress, dynamic_ncols=True)
        started, clips_done = time.perf_counter(), 0

        def account(record: dict) -> None:
            nonlocal clips_done
            clips_done += len(record["clips"])
            if record.get("reason"):  # unreadable, truncated or too short: no clip at all
                log(f"skipped {record['source']}: {record['reason']}")
            else:
                for warning in record.get("warnings", []):
                    if TRUNCATION_MARK in warning:
                        log(f"warning: {warning}")
            bar.update(1)
            bar.set_postfix(
                clips=clips_done, clips_per_s=f"{clips_done / (time.perf_counter() - started):.2f}"
            )

        if num_workers <= 1:
            for job in jobs:
                account(process_video(*job))
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(num_workers) as pool:
                for record in pool.imap_unordered(_process_video_job, jobs):
                    account(record)
        bar.close()

    remaining = [vid for vid in ids if not _video_record_path(out, vid).exists()]
    if remaining:
        log(
            f"{len(remaining)} videos belong to other shards and are not done yet; "
            "the last shard to finish merges (or run with --merge)"
        )
        return None
    if not todo and (out / "manifest.json").exists() and (out / "normalization.json").exists():
        log(f"{out}: nothing to do, manifest.json and normalization.json are up to date")
        return _read_json(out / "manifest.json")
    manifest = merge(out)
    counts = manifest["counts"]
    log(
        f"{counts['kept']} clips kept ({counts['train']} train, {counts['val']} val) of "
        f"{counts['clips']} from {counts['videos']} videos; rejected clips: "
        f"{counts['rejected_by_reason'] or 'none'}; failed videos: {counts['failed_videos']}"
    )
    if manifest.get("split_note"):
        log(f"note: {manifest['split_note']}")
    if manifest["unusable"]:
        log(describe_unusable(manifest["unusable"]))
    return manifest


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` into ``(i, n)``."""
    try:
        index, total = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if total < 1 or not 0 <= index < total:
        raise ValueError(f"--shard must satisfy 0 <= i < n, got {text!r}")
    return index, total
