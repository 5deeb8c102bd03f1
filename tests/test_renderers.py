"""Tests of splatting.renderers: the shared interface, each method, hole filling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.config import MotionConfig
from splatting import RENDERERS, render_frames, softsplat_metric

METHODS = tuple(RENDERERS)


def smooth_photo(height=24, width=32, seed=0) -> np.ndarray:
    """(H, W, 3) uint8, a smooth random texture (bicubic and bilinear agree on it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2), rng.uniform(0, 6)
        channels.append(0.5 + 0.4 * np.sin(fx * x + fy * y + phase))
    return np.round(np.stack(channels, axis=-1) * 255).astype(np.uint8)


def constant_displacements(frames, height, width, dx, dy) -> np.ndarray:
    disp = np.zeros((frames, height, width, 2), dtype=np.float32)
    disp[..., 0], disp[..., 1] = dx, dy
    return disp


@pytest.mark.parametrize("method", METHODS)
def test_shapes_and_dtype(method):
    photo = smooth_photo()
    disp = np.random.default_rng(1).normal(size=(5, 24, 32, 2)).astype(np.float32)
    frames = render_frames(photo, disp, method, batch_size=2)
    assert frames.shape == (5, 24, 32, 3) and frames.dtype == np.uint8


@pytest.mark.parametrize("method", METHODS)
def test_zero_displacement_gives_the_photo(method):
    photo = smooth_photo()
    frames = render_frames(photo, np.zeros((3, 24, 32, 2), np.float32), method)
    assert np.array_equal(frames, np.repeat(photo[None], 3, axis=0))


def test_copy_baseline_is_exact():
    photo = smooth_photo()
    disp = np.full((4, 24, 32, 2), 7.3, dtype=np.float32)
    assert np.array_equal(render_frames(photo, disp, "copy"), np.repeat(photo[None], 4, axis=0))


def test_integer_translation_agrees_across_methods():
    photo = smooth_photo()
    dx, dy = 3, -2
    disp = constant_displacements(2, 24, 32, dx, dy)
    # Frame pixel (y, x) shows photo pixel (y - dy, x - dx) wherever that exists.
    expected = photo[-dy:, : 32 - dx]
    for method in ("remap", "average", "softsplat"):
        frames = render_frames(photo, disp, method)
        assert np.array_equal(frames[:, : 24 + dy, dx:], np.stack([expected] * 2)), method


def test_subpixel_translation_agrees_in_the_interior():
    photo = smooth_photo()
    disp = constant_displacements(1, 24, 32, 1.5, 0.25)
    remap = render_frames(photo, disp, "remap").astype(int)
    average = render_frames(photo, disp, "average").astype(int)
    soft = render_frames(photo, disp, "softsplat").astype(int)
    interior = (slice(None), slice(3, -3), slice(4, -4))
    # Constant flow gives a constant metric, so softmax and average splatting coincide.
    assert np.array_equal(soft, average)
    # Bicubic sampling and bilinear splatting differ by interpolation error only.
    assert np.abs(remap[interior] - average[interior]).max() <= 3


def test_holes_are_filled_with_the_photo():
    photo = smooth_photo()
    disp = constant_displacements(1, 24, 32, 5, 0)  # the left 5 columns receive nothing
    for method in ("average", "softsplat"):
        frame = render_frames(photo, disp, method)[0]
        assert np.array_equal(frame[:, :5], photo[:, :5]), method
        assert np.array_equal(frame[:, 5:], photo[:, :-5]), method


def test_remap_has_no_holes_it_mirrors_the_border():
    photo = smooth_photo()
    frame = render_frames(photo, constant_displacements(1, 24, 32, 2, 0), "remap")[0]
    assert np.array_equal(frame[:, 0], photo[:, 2])  # sample at x = -2 reflects to x = 2
    assert np.array_equal(frame[:, 1], photo[:, 1])


def test_softsplat_puts_the_moving_foreground_in_front():
    # A bright square moves 4 px right over a dark static background; where it lands,
    # softmax splatting (larger motion wins) shows the square, averaging blends.
    photo = np.full((16, 16, 3), 20, dtype=np.uint8)
    photo[4:10, 4:10] = 230
    disp = np.zeros((1, 16, 16, 2), dtype=np.float32)
    disp[0, 4:10, 4:10, 0] = 4.0
    soft = render_frames(photo, disp, "softsplat")[0]
    average = render_frames(photo, disp, "average")[0]
    assert np.all(soft[4:10, 8:14] == 230)
    assert np.all(average[4:10, 10:14] < 200)  # square and background averaged


def test_non_finite_displacement_is_handled():
    photo = smooth_photo()
    disp = np.zeros((1, 24, 32, 2), dtype=np.float32)
    disp[0, 5, 7] = np.nan
    for method in METHODS:
        frame = render_frames(photo, disp, method)[0]
        assert np.array_equal(frame, photo), method  # the hole is filled by the photo


def test_torch_displacements_are_accepted():
    photo = smooth_photo()
    disp = torch.full((2, 24, 32, 2), 1.0)
    assert np.array_equal(
        render_frames(photo, disp, "softsplat"), render_frames(photo, disp.numpy(), "softsplat")
    )


def test_metric_is_mean_motion_magnitude():
    disp = torch.zeros(4, 2, 3, 2)
    disp[1, 0, 0] = torch.tensor([3.0, 4.0])  # |D| = 5 in one of 4 frames
    disp[2, 1, 1, 0] = float("nan")  # counts as 0
    metric = softsplat_metric(disp, scale=2.0)
    expected = torch.zeros(2, 3)
    expected[0, 0] = 2.0 * 5.0 / 4
    torch.testing.assert_close(metric, expected)


def test_bad_inputs_raise_value_error():
    photo = smooth_photo()
    disp = np.zeros((2, 24, 32, 2), np.float32)
    with pytest.raises(ValueError, match="unknown method"):
        render_frames(photo, disp, "nearest")
    with pytest.raises(ValueError, match="uint8"):
        render_frames(photo.astype(np.float32) / 255, disp)
    with pytest.raises(ValueError, match="3 channels"):
        render_frames(photo[..., :1], disp)
    with pytest.raises(ValueError, match="displacements must have shape"):
        render_frames(photo, disp[:, :10])
    with pytest.raises(ValueError, match="displacements must have shape"):
        render_frames(photo, disp[0])
    with pytest.raises(ValueError, match="batch_size"):
        render_frames(photo, disp, batch_size=0)


def _render_clip(scale: int) -> None:
    """A clip of num_frames frames at the default size divided by `scale`, in chunks."""
    base = MotionConfig()
    config = MotionConfig(width=base.width // scale, height=base.height // scale)
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 256, (config.height, config.width, 3), dtype=np.uint8)
    t = np.arange(config.num_frames, dtype=np.float32)[:, None, None, None]
    disp = np.broadcast_to(2.5 * np.sin(2 * np.pi * t / config.num_frames), (t.size, 1, 1, 2))
    disp = np.ascontiguousarray(
        np.broadcast_to(disp, (config.num_frames, config.height, config.width, 2))
    )
    frames = render_frames(photo, disp, "softsplat", batch_size=16)
    assert frames.shape == (config.num_frames, config.height, config.width, 3)
    assert np.array_equal(frames[0], photo)  # D_0 = 0


def test_clip_renders_in_chunks():
    _render_clip(scale=4)


@pytest.mark.slow
def test_full_size_clip_renders_in_chunks():
    _render_clip(scale=1)
