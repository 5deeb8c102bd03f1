"""Turn a folder of videos into spectral-volume training data.

    python prepare_data.py --videos DIR --out DIR

Each video is resampled to --fps, resized (cover + centre crop) to --size, cut into
clips of --frames frames; optical flow from each clip's first frame to every frame gives
displacements, whose temporal FFT (the --num-freqs lowest bins) is the spectral volume.
The run is resumable (run it again on the same --out), parallel (--num-workers) and
shardable across machines (--shard i/n; the last shard to finish merges, or --merge).
The output format is described in docs/DATA_FORMAT.md.
"""

from __future__ import annotations

import argparse
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults, filters = MotionConfig(), ClipFilters()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--videos",
        help="folder of videos (searched recursively), a text "
        "file listing one video per line, or a single video",
    )
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--frames", type=int, default=defaults.num_frames, help="frames per clip (T)"
    )
    parser.add_argument(
        "--fps",
        type=float,
        default=defaults.fps,
        help="frame rate clips are resampled to, using real frame timestamps",
    )
    parser.add_argument(
        "--size",
        default=f"{defaults.width}x{defaults.height}",
        help="frame size WxH; aspect ratio kept by scaling to cover, then centre crop",
    )
    parser.add_argument(
        "--num-freqs",
        type=int,
        default=defaults.num_freqs,
        help="lowest temporal frequency bins kept (K)",
    )
    parser.add_argument(
        "--flow", default="dis", help="optical-flow estimator: dis, farneback, pyflow, raft"
    )
    parser.add_argument(
        "--flow-preset",
        default=None,
        help=f"DIS preset: ultrafast, fast, medium or fine (default for --flow dis: "
        f"{DEFAULT_DIS_PRESET}, see docs/FLOW.md)",
    )
    parser.add_argument(
        "--raft-weights",
        default=None,
        help="local RAFT checkpoint for --flow raft (never downloaded)",
    )
    parser.add_argument(
        "--clip-stride",
        type=int,
        default=None,
        help="frames between clip starts; default: --frames (no overlap)",
    )
    parser.add_argument(
        "--max-clips-per-video",
        type=int,
        default=None,
        help="at most this many clips from one video",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of videos held out for validation (split by video)",
    )
    parser.add_argument(
        "--min-distinct-fraction",
        type=float,
        default=filters.min_distinct_fraction,
        help="drop clips with fewer distinct source frames per output frame "
        "(the video's real frame rate is too low)",
    )
    parser.add_argument(
        "--max-global-motion",
        type=float,
        default=filters.max_global_motion,
        help="drop clips whose median displacement exceeds this many pixels (camera motion)",
    )
    parser.add_argument(
        "--max-flow-fraction",
        type=float,
        default=filters.max_flow_fraction,
        help="drop clips whose 99th-percentile displacement exceeds this fraction of min(W, H)",
    )
    parser.add_argument(
        "--scene-cut-threshold",
        type=float,
        default=None,
        help="histogram distance that counts as a scene cut; default: data.video's",
    )
    parser.add_argument(
        "--num-workers", type=int, default=1, help="processes working on videos in parallel"
    )
    parser.add_argument(
        "--shard", default="0/1", help="i/n: this machine prepares every n-th video starting at i"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="only gather the clips in --out into manifest.json and "
        "normalization.json (after sharded runs)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if not args.merge and not args.videos:
        parser.error("--videos is required (unless --merge)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.merge:
            manifest = merge(args.out)
            print(f"merged {manifest['counts']['kept']} clips into {args.out}/manifest.json")
            return 0
        width, height = parse_size(args.size)
        flow_options = {}
        if args.flow_preset is not None:
            flow_options["preset"] = args.flow_preset
        elif args.flow == "dis":
            flow_options["preset"] = DEFAULT_DIS_PRESET
        if args.raft_weights is not None:
            flow_options["weights_path"] = args.raft_weights
        settings = PrepareSettings(
            config=MotionConfig(
                num_frames=args.frames,
                fps=args.fps,
                num_freqs=args.num_freqs,
                width=width,
                height=height,
            ),
            flow_method=args.flow,
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
            args.out,
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
