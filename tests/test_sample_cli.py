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
    with pytest.raises(
        FileExistsError, match="a.gif already exists; pass --overwrite to replace it "
    ):
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


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--guidance_scale", "inf"), ("--guidance_scale", "nan"), ("--guidance_scale", "-3"),
     ("--speed", "inf"), ("--fps", "inf"), ("--fps", "1000"), ("--loop_guidance_scale", "nan"),
     ("--num_inference_steps", "5000"), ("--seed", "99999999999999999999"), ("--seed", "-1"),
     ("--motion_smoothing", "-1"), ("--motion_smoothing", "nan"), ("--direction", "nan"),
     ("--direction", "inf")],
)  # fmt: skip
def test_every_number_is_checked_before_any_model_loads(tmp_path, flag, value):
    """The model folder does not exist: the flag must be refused first."""
    with pytest.raises(ValueError, match=flag):
        sample.main(["--image", str(_photo(tmp_path / "a.png")), "--output", str(tmp_path / "o"),
                     "--model", str(tmp_path / "no_model"), flag, value])  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--direction", "0", "--direction_strength", "1.5"], "--direction_strength must be"),
     (["--direction_strength", "0.5"], "pass a --direction too"),
     (["--direction", "0", "--poke", "10,10,2,0"], "a --poke's is its DX, DY")],
)  # fmt: skip
def test_direction_flags_are_checked_before_any_model_loads(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        sample.main(["--image", str(_photo(tmp_path / "a.png")), "--output", str(tmp_path / "o"),
                     "--model", str(tmp_path / "no_model"), *flags])  # fmt: skip


def test_frames_that_cannot_fit_in_memory_are_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match=r"--num_frames 100000 at 1024x768 needs about \d+"):
        sample.main(["--image", str(_photo(tmp_path / "a.png", (1600, 1200))),
                     "--output", str(tmp_path / "o"), "--model", str(tmp_path / "no_model"),
                     "--num_frames", "100000"])  # fmt: skip


def test_a_huge_photo_is_downscaled_and_says_so(tmp_path, capsys):
    """9500 x 9500 (more than PIL's 89 MP guard): no decompression-bomb warning, and the run
    names the photo's size and the frames' size (this test stops at the missing model)."""
    import warnings

    from data.images import load_image

    Image.new("L", (9500, 9500), 90).save(tmp_path / "huge.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(tmp_path / "huge.png")
    assert image.size == (2048, 2048)
    from generators.gid import image_size_on_disk

    assert image_size_on_disk(tmp_path / "huge.png") == (9500, 9500)
