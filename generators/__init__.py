"""The image-to-video generators behind ``sample.py``.

Each method is a module with two functions:

* ``add_arguments(parser: argparse.ArgumentParser) -> None``: its command-line flags;
* ``run(args: argparse.Namespace) -> int``: does the work, returns the exit code
  (non-zero when any input failed).

``sample.py --method NAME`` picks the module from ``METHODS``; modules are imported only
when chosen, so one method's optional dependencies never slow down or break another.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

# --method value -> module path. "gid" (Generative Image Dynamics) is the default.
METHODS = {
    "gid": "generators.gid",
    "svd": "generators.svd",
    "sd-edit": "generators.sd_edit",
}
DEFAULT_METHOD = "gid"


def load_method(name: str) -> ModuleType:
    """The generator module for ``--method name`` (ValueError for an unknown name)."""
    if name not in METHODS:
        raise ValueError(f"unknown --method {name!r}; choose from {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def pick_device(name: str):
    """``--device auto|cpu|cuda|mps`` -> a ``torch.device``; auto prefers CUDA, then MPS.

    Raises:
        ValueError: the named device is not available here.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (try --device cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: MPS is not available (try --device cpu)")
    return torch.device(name)


def plan_outputs(
    image_spec: str,
    output: str,
    fmt: str,
    overwrite: bool,
    extra_outputs: Callable[[Path], list[Path]] | None = None,
    single_file: bool = False,
) -> dict[Path, Path]:
    """Photo -> output path (``<output>/<unique stem>.<fmt>``, a folder for ``frames``).

    Checks everything a run could fail on before any model loads: the photos exist, the
    output folder is writable, and no output exists unless ``overwrite``.

    Args:
        extra_outputs: output path -> the other files written beside it (checked too).
        single_file: ``output`` names the one output file itself (one photo only).

    Raises:
        FileNotFoundError / ValueError: no photos at ``image_spec``; several photos for a
            single output file.
        PermissionError: the output folder cannot be written.
        FileExistsError: an output exists and ``overwrite`` is False.
    """
    from data.images import collect_images, output_stems
    from data.io_utils import ensure_writable_dir

    photos = collect_images(image_spec)
    if single_file:
        if len(photos) != 1:
            raise ValueError(
                f"--output {output} is one file but {image_spec} holds {len(photos)} photos; "
                "pass a folder as --output"
            )
        ensure_writable_dir(Path(output).parent)
        targets = {photos[0]: Path(output)}
    else:
        out_dir = ensure_writable_dir(output)
        stems = output_stems(photos)
        targets = {
            photo: out_dir / (stems[photo] if fmt == "frames" else f"{stems[photo]}.{fmt}")
            for photo in photos
        }
    planned = list(targets.values())
    if extra_outputs is not None:
        planned += [extra for path in targets.values() for extra in extra_outputs(path)]
    existing = [str(path) for path in planned if path.exists()]
    if existing and not overwrite:
        names = f"{', '.join(existing[:3])}{' ...' if len(existing) > 3 else ''}"
        verb, pronoun = (
            ("already exists", "it") if len(existing) == 1 else ("already exist", "them")
        )
        raise FileExistsError(
            f"{names} {verb}; pass --overwrite to replace {pronoun} or choose another --output"
        )
    return targets


def run_batch(photos: list[Path], process: Callable[[Path], str], timings: dict[str, float]) -> int:
    """Run ``process`` on every photo; a photo that fails is reported, the batch goes on.

    ``process(photo)`` does one photo and returns the line to print (``wrote ...``); it may
    add seconds to ``timings`` (stage name -> seconds). At the end one summary line says
    where the time went, each failure gets a ``FAILED <photo>: <reason>`` line, and the
    return value is the exit code: 1 if any photo failed, else 0.
    """
    from tqdm.auto import tqdm

    failures: list[tuple[Path, str]] = []
    for photo in tqdm(photos, desc="photos", disable=len(photos) == 1):
        try:
            print(process(photo))
        except (ValueError, OSError, MemoryError) as error:  # a bad photo: report it, go on
            failures.append((photo, str(error)))
        except Exception:  # noqa: BLE001 (an unexpected failure must not stop the batch either)
            failures.append((photo, traceback.format_exc(limit=3)))
    print(
        f"{len(photos) - len(failures)}/{len(photos)} photos in {sum(timings.values()):.1f} s: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    )
    for photo, message in failures:
        print(f"FAILED {photo}: {message}")
    return 1 if failures else 0
