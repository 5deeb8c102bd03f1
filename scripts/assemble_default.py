"""Assemble a sample.py model folder from train_unet.py's output and a trained renderer.

    python scripts/assemble_default.py --unet_output OUT/unet_stage2 --renderer OUT/renderer \
        --output_dir weights/default

Writes a ``MotionPipeline`` folder (model_index.json, codec/ = the spectral codec, unet/,
scheduler/ = DDIM, renderer/ = the learned renderer, the motion config and normalisation
statistics, ``--motion_smoothing``): exactly what ``python sample.py --model DIR`` loads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.frame_synthesis import FrameSynthesisModel  # noqa: E402
from models.pipeline_motion import MotionPipeline, check_finite  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unet_output", required=True, help="a finished train_unet.py output_dir")
    parser.add_argument("--renderer", help="a FrameSynthesisModel folder (save_pretrained)")
    parser.add_argument("--output_dir", help="the sample.py model folder to write (required)")
    # the old spelling, kept as a hidden alias
    parser.add_argument(
        "--out", dest="output_dir", help=argparse.SUPPRESS, default=argparse.SUPPRESS
    )
    parser.add_argument("--motion_smoothing", type=float, default=None, metavar="SIGMA",
                        help="the pipeline's blur of every sampled volume, in pixels of the "
                        "model's frame (docs/SAMPLING.md; default: the training output's "
                        "model_index.json, else 0: none)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.output_dir is None:
        parser.error("--output_dir is required")
    if args.motion_smoothing is not None:
        try:
            check_finite("--motion_smoothing", args.motion_smoothing, 0.0)
        except ValueError as error:
            parser.error(str(error))

    out = Path(args.output_dir)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(f"error: {out} is not empty; pass --overwrite to replace it")
    # Load everything before anything is deleted: the renderer may live inside --output_dir.
    renderer = FrameSynthesisModel.from_pretrained(args.renderer) if args.renderer else None
    pipeline = MotionPipeline.from_training_output(
        args.unet_output, scheduler="ddim", renderer=renderer
    )
    if args.motion_smoothing is not None:  # like the gain, else carried over
        pipeline.register_to_config(motion_smoothing=float(args.motion_smoothing))
    if out.exists():
        shutil.rmtree(out)
    pipeline.save_pretrained(out)
    # diffusers records where each component was loaded from; in a folder that ships
    # that is a path of the machine that built it, so it is dropped.
    for config in out.glob("*/config.json"):
        values = json.loads(config.read_text())
        if values.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
