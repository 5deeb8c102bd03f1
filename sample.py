"""Photo -> animated GIF/MP4/WebP/frames.

    python sample.py                                  # the bundled example photos
    python sample.py --image photo.jpg                # your photo, Generative Image Dynamics
    python sample.py --method svd --model DIR --image photo.jpg
    python sample.py --method sd-edit --model DIR --image photo.jpg --prompt "..."

``python sample.py --method NAME --help`` lists the flags of one method. The methods live
in ``generators/``; this script only picks one and hands it the command line.
"""

from __future__ import annotations

import argparse
import sys

from generators import DEFAULT_METHOD, METHODS, load_method


def build_parser(method: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=f"Photo -> video. Method {method!r}; see --method.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--method",
        choices=list(METHODS),
        default=DEFAULT_METHOD,
        help="gid: Generative Image Dynamics; svd: Stable Video Diffusion (SVD, SVD-XT, "
        "SV3D); sd-edit: training-free Stable Diffusion editing",
    )
    load_method(method).add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pre_parser = argparse.ArgumentParser(add_help=False)
    pre_parser.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD)
    known, _ = pre_parser.parse_known_args(argv)
    args = build_parser(known.method).parse_args(argv)
    return load_method(args.method).run(args)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def cli() -> int:
    """``main`` for the command line: a user error prints one line, not a traceback, and so
    does a warning."""
    import warnings

    warnings.formatwarning = _one_line_warning
    try:
        return main()
    except (ValueError, OSError, MemoryError) as error:  # bad input, missing/unwritable files
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; outputs already written are complete (written atomically)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(cli())
