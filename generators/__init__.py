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
