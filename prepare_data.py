"""Turn a folder of videos into spectral-volume training data.

    python prepare_data.py --videos DIR --output_dir DIR

Each video is resampled to --fps, resized (cover + centre crop) to --size, cut into
clips of --num_frames frames; optical flow from each clip's first frame to every frame
gives displacements, whose temporal FFT (the --num_freqs lowest bins) is the spectral
volume. The run is resumable (run it again on the same --output_dir), parallel
(--num_workers) and
shardable across machines (--shard i/n; the last shard to finish merges, or --merge).
The output format is described in docs/DATA_FORMAT.md.
"""

from __future__ import annotations

import argparse
import functools
import sys

from data.config import MotionConfig, parse_size
from data.prepare import (
    DEFAULT_DIS_PRESET,
    ClipFilters,
    PrepareSettings,
    merge,
    parse_shard,
    prepare,
)


def _add(parser: argparse.ArgumentParser, name: str, *old: str, **kwargs) -> None:
    """``--name`` with ``kwargs``, plus each old spelling as a hidden alias of it.

    The aliases (kebab-case, ``--out``, ``--flow``, ``--frames`` from before the flags were
    unified with the training scripts') keep old commands working without cluttering
    ``--help``.
    """
    parser.add_argument(name, **kwargs)
    dest = name.lstrip("-")
    for spelling in old:
        alias = {k: v for k, v in kwargs.items() if k in ("type", "action", "choices")}
        parser.add_argument(spelling, dest=dest, help=argparse.SUPPRESS,
                            default=argparse.SUPPRESS, **alias)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults, filters = MotionConfig(), ClipFilters()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = functools.partial(_add, parser)
    add("--videos", help="folder of videos (searched recursively), a text file listing one "
        "video per line, or a single video")  # fmt: skip
    add("--output_dir", "--out", help="output folder (created if missing)")
    add("--num_frames", "--frames", type=int, default=defaults.num_frames,
        help="frames per clip (T)")  # fmt: skip
    add("--fps", type=float, default=defaults.fps,
        help="frame rate clips are resampled to, using real frame timestamps")  # fmt: skip
    add("--size", default=f"{defaults.width}x{defaults.height}",
        help="frame size WxH; aspect ratio kept by scaling to cover, then centre crop")  # fmt: skip
    add("--num_freqs", "--num-freqs", type=int, default=defaults.num_freqs,
        help="lowest temporal frequency bins kept (K)")  # fmt: skip
    add("--flow_method", "--flow", default="dis",
        help="optical-flow estimator: dis, farneback, pyflow, raft")  # fmt: skip
    add("--flow_preset", "--flow-preset", default=None,
        help=f"DIS preset: ultrafast, fast, medium or fine (default for --flow_method dis: "
        f"{DEFAULT_DIS_PRESET}, see docs/FLOW.md)")  # fmt: skip
    add("--raft_weights", "--raft-weights", default=None,
        help="local RAFT checkpoint for --flow_method raft (never downloaded)")  # fmt: skip
    add("--clip_stride", "--clip-stride", type=int, default=None,
        help="frames between clip starts; default: --num_frames (no overlap)")  # fmt: skip
    add("--max_clips_per_video", "--max-clips-per-video", type=int, default=None,
        help="at most this many clips from one video")  # fmt: skip
    add("--val_fraction", "--val-fraction", type=float, default=0.1,
        help="share of videos held out for validation (split by video)")  # fmt: skip
    add("--min_distinct_fraction", "--min-distinct-fraction", type=float,
        default=filters.min_distinct_fraction,
        help="drop clips with fewer distinct source frames per output frame "
        "(the video's real frame rate is too low)")  # fmt: skip
    add("--max_global_motion", "--max-global-motion", type=float,
        default=filters.max_global_motion,
        help="drop clips whose median displacement exceeds this many pixels (camera motion)")  # fmt: skip
    add("--max_flow_fraction", "--max-flow-fraction", type=float,
        default=filters.max_flow_fraction,
        help="drop clips whose 99th-percentile displacement exceeds this fraction of min(W, H)")  # fmt: skip
    add("--scene_cut_threshold", "--scene-cut-threshold", type=float, default=None,
        help="histogram distance that counts as a scene cut; default: data.video's")  # fmt: skip
    add("--num_workers", "--num-workers", type=int, default=1,
        help="processes working on videos in parallel")  # fmt: skip
    add("--shard", default="0/1", help="i/n: this machine prepares every n-th video starting at i")
    add("--merge", action="store_true",
        help="only gather the clips in --output_dir into manifest.json and normalization.json "
        "(after sharded runs)")  # fmt: skip
    add("--no_progress", "--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.output_dir is None:
        parser.error("--output_dir is required")
    if not args.merge and not args.videos:
        parser.error("--videos is required (unless --merge)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.merge:
            manifest = merge(args.output_dir)
            print(f"merged {manifest['counts']['kept']} clips into {args.output_dir}/manifest.json")
            return 0
        width, height = parse_size(args.size)
        flow_options = {}
        if args.flow_preset is not None:
            flow_options["preset"] = args.flow_preset
        elif args.flow_method == "dis":
            flow_options["preset"] = DEFAULT_DIS_PRESET
        if args.raft_weights is not None:
            flow_options["weights_path"] = args.raft_weights
        settings = PrepareSettings(
            config=MotionConfig(
                num_frames=args.num_frames,
                fps=args.fps,
                num_freqs=args.num_freqs,
                width=width,
                height=height,
            ),
            flow_method=args.flow_method,
            flow_options=flow_options,
            clip_stride=args.clip_stride,
            max_clips_per_video=args.max_clips_per_video,
            val_fraction=args.val_fraction,
            filters=ClipFilters(
                min_distinct_fraction=args.min_distinct_fraction,
                scene_cut_threshold=args.scene_cut_threshold,
                max_global_motion=args.max_global_motion,
                max_flow_fraction=args.max_flow_fraction,
            ),
        )
        prepare(
            args.videos,
            args.output_dir,
            settings,
            num_workers=args.num_workers,
            shard=parse_shard(args.shard),
            progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError, PermissionError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
