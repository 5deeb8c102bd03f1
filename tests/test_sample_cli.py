"""sample.py (method gid): what bad input gets, before any model is needed.

The end-to-end runs with tiny models are in tests/test_sample_gid.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import sample


def _photo(path, size=(64, 48)):
    Image.fromarray(np.full((size[1], size[0], 3), 120, np.uint8)).save(path)
    return path


def test_help_lists_each_method(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--image", "--num_frames", "--renderer", "--loop", "--amplitude", "--speed"):
        assert flag in out


def test_unknown_method_is_rejected(capsys):
    with pytest.raises(SystemExit):
        sample.main(["--method", "nonsense"])
    assert "invalid choice" in capsys.readouterr().err


def test_missing_image(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        sample.main(["--image", str(tmp_path / "nope.jpg"), "--output", str(tmp_path / "o")])


def test_folder_without_images(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        sample.main(["--image", str(tmp_path / "photos"), "--output", str(tmp_path / "o")])


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PermissionError, match="not writable"):
        sample.main(["--image", str(_photo(tmp_path / "a.png")), "--output", str(locked / "x")])


def test_output_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PermissionError, match="not writable"):
        sample.main(
            ["--image", str(_photo(tmp_path / "a.png")), "--output", str(tmp_path / "file")]
        )


def test_existing_output_is_never_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.gif").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        sample.main(["--image", str(_photo(tmp_path / "a.png")), "--output", str(out)])
    assert (out / "a.gif").read_bytes() == b"precious"


def test_model_folder_missing_or_wrong(tmp_path):
    photo = str(_photo(tmp_path / "a.png"))
    with pytest.raises(FileNotFoundError, match="train_default.sh"):
        sample.main(["--image", photo, "--output", str(tmp_path / "o"),
                     "--model", str(tmp_path / "no_model")])  # fmt: skip
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        sample.main(["--image", photo, "--output", str(tmp_path / "o2"),
                     "--model", str(tmp_path / "empty_model")])  # fmt: skip


@pytest.mark.parametrize(
    "flag, value",
    [("--num_frames", "0"), ("--fps", "0"), ("--speed", "-1"), ("--amplitude", "nan")],
)
def test_bad_numbers(tmp_path, flag, value):
    with pytest.raises(ValueError, match=flag):
        sample.main(["--image", str(_photo(tmp_path / "a.png")), "--output", str(tmp_path / "o"),
                     flag, value])  # fmt: skip


def test_command_line_prints_one_line_errors(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "sample.py", "--image", str(tmp_path / "missing.jpg")],
        capture_output=True,
        text=True,
        cwd=sample.__file__.rsplit("/", 1)[0],
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "missing.jpg" in result.stderr
    assert "Traceback" not in result.stderr
