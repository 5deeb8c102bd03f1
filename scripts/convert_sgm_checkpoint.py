"""Convert one of Stability AI's single-file sgm checkpoints into a diffusers pipeline folder.

    python scripts/convert_sgm_checkpoint.py --checkpoint sv3d_p.safetensors --output_dir sv3d_p
    python sample.py --method svd --version sv3d_p --model sv3d_p --image object.png

Handles ``svd``, ``svd_xt``, ``svd_image_decoder``, ``svd_xt_image_decoder``, ``sv3d_u`` and
``sv3d_p``. The maths (key maps, configs from the tensors' shapes) is in
``models.sgm_conversion``; docs/SVD.md says where to get the files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.sgm_conversion import VERSIONS, convert_sgm_checkpoint  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True,
                        help="the sgm .safetensors file (e.g. sv3d_p.safetensors)")  # fmt: skip
    parser.add_argument("--output_dir", required=True, help="the diffusers folder to write")
    parser.add_argument("--original_config", default=None,
                        help="the sgm YAML the checkpoint is used with (configs/inference/"
                        "<version>.yaml); default: the released configs' head widths and "
                        "conditioning split")  # fmt: skip
    parser.add_argument("--version", choices=VERSIONS, default=None,
                        help="default: the file name if it is a version name, else what the "
                        "weights say (svd / svd_image_decoder / sv3d_u / sv3d_p)")  # fmt: skip
    parser.add_argument("--image_size", type=int, default=None,
                        help="square size (px) of the U-Net's sample_size (default 576 for "
                        "SV3D, 768 for SVD)")  # fmt: skip
    parser.add_argument("--clip_head_width", type=int, default=None,
                        help="attention head width of the image tower (default from its "
                        "OpenCLIP arch: 80 for ViT-H-14)")  # fmt: skip
    parser.add_argument("--dtype", choices=("keep", "float16", "bfloat16", "float32"),
                        default="keep", help="cast the weights (default: as stored)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output_dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    dtype = None if args.dtype == "keep" else getattr(torch, args.dtype)
    report = convert_sgm_checkpoint(
        args.checkpoint,
        args.output_dir,
        original_config=args.original_config,
        version=args.version,
        image_size=args.image_size,
        clip_head_width=args.clip_head_width,
        dtype=dtype,
        overwrite=args.overwrite,
    )
    unet = report.configs["unet"]
    print(
        f"{args.checkpoint} -> {report.output_dir} (--version {report.version}): "
        f"{report.tensors} tensors; U-Net widths {list(unet['block_out_channels'])}, heads "
        f"{list(unet['num_attention_heads'])}, sample_size {unet['sample_size']}"
    )
    for prefix, count in report.unused.items():
        print(f"  not needed for sampling, left out: {prefix}* ({count} tensors)")
    print(
        f"run: python sample.py --method svd --version {report.version} "
        f"--model {report.output_dir} --image PHOTO"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
