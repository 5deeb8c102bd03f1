"""data/images.py: every photo mode loads as upright 8-bit RGB; bad files say what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data.images import MIN_SIDE, collect_images, load_image, output_stems


def _gradient(width: int = 64, height: int = 48) -> np.ndarray:
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    return np.concatenate(
        [np.broadcast_to(x, (height, width, 1)), np.broadcast_to(y, (height, width, 1)),
         np.full((height, width, 1), 128.0)], axis=2
    ).astype(np.uint8)  # fmt: skip


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "F"])
def test_every_mode_loads_as_rgb(tmp_path, mode):
    rgb = Image.fromarray(_gradient())
    if mode == "I;16":
        image = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    elif mode == "F":
        image = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.float32) / 255.0)
    else:
        image = rgb.convert(mode)
    path = tmp_path / ("photo.tif" if mode in ("I;16", "F", "CMYK") else "photo.png")
    image.save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (64, 48)
    if mode in ("L", "I;16", "F"):  # gray levels survive the bit-depth change
        gray = np.asarray(loaded)[..., 0].astype(int)
        assert np.abs(gray - np.asarray(rgb.convert("L")).astype(int)).max() <= 1


def test_alpha_composited_on_white_or_kept(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent
    rgba[10:20, 10:20] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb = np.asarray(load_image(tmp_path / "a.png"))
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[15, 15]) == (255, 0, 0)
    kept = load_image(tmp_path / "a.png", keep_alpha=True)
    assert kept.mode == "RGBA" and np.asarray(kept)[0, 0, 3] == 0


def test_exif_rotation_applied(tmp_path):
    image = Image.fromarray(_gradient(64, 48))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (48, 64)


def test_large_image_downscaled(tmp_path):
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(tmp_path / "big.jpg")
    loaded = load_image(tmp_path / "big.jpg", max_side=512)
    assert max(loaded.size) == 512 and loaded.size[0] / loaded.size[1] == pytest.approx(4 / 3, 0.01)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="text.jpg: not an image"):
        load_image(tmp_path / "text.jpg")
    Image.fromarray(_gradient(200, 200)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.png: truncated or corrupt"):
        load_image(tmp_path / "cut.png")
    Image.new("RGB", (20, 20)).save(tmp_path / "tiny.png")
    with pytest.raises(ValueError, match=f"at least {MIN_SIDE} px"):
        load_image(tmp_path / "tiny.png")


def test_collect_images(tmp_path):
    for name in ("b.png", "a.jpg"):
        Image.new("RGB", (40, 40)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in collect_images(tmp_path)] == ["a.jpg", "b.png"]
    assert [p.name for p in collect_images(tmp_path / "*.png")] == ["b.png"]
    assert collect_images(tmp_path / "a.jpg") == [tmp_path / "a.jpg"]
    with pytest.raises(FileNotFoundError):
        collect_images(tmp_path / "nothing_here")
    with pytest.raises(FileNotFoundError):
        collect_images(tmp_path / "*.gif")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        collect_images(empty)


def test_output_stems_unique():
    from pathlib import Path

    paths = [Path("a/photo.jpg"), Path("b/photo.jpg"), Path("a/tree.png"), Path("a/photo.png")]
    stems = output_stems(paths)
    assert len(set(stems.values())) == len(paths)
    assert stems[Path("a/tree.png")] == "tree"
