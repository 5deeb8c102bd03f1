"""Flow-based in-betweens (models/interpolation.py): endpoints, motion, counts, bad input."""

import numpy as np
import pytest
import torch

from models.interpolation import FlowInterpolator, interpolate_keyframes, interpolate_pair


def _scene(shift: int, size: int = 64) -> np.ndarray:
    """A textured background with a bright textured square whose left edge is at 16 + shift."""
    rng = np.random.default_rng(0)
    background = (rng.random((size, size, 3)) * 60 + 40).astype(np.uint8)
    square = (rng.random((20, 20, 3)) * 80 + 170).astype(np.uint8)
    image = background.copy()
    image[22:42, 16 + shift : 36 + shift] = square
    return image


def _square_centre_x(image: np.ndarray) -> float:
    bright = image.astype(float).mean(axis=2) > 160
    return float(np.nonzero(bright)[1].mean())


def test_endpoints_return_the_keyframes(one_torch_thread):
    frame0, frame1 = _scene(0), _scene(8)
    frames = interpolate_pair(frame0, frame1, [0.0, 1.0])
    np.testing.assert_array_equal(frames[0], frame0)
    np.testing.assert_array_equal(frames[1], frame1)


def test_midpoint_moves_the_square_halfway(one_torch_thread):
    frame0, frame1 = _scene(0), _scene(8)
    interpolator = FlowInterpolator(frame0, frame1)
    middle = interpolator(0.5)
    x0, x1, xm = _square_centre_x(frame0), _square_centre_x(frame1), _square_centre_x(middle)
    assert abs(xm - (x0 + x1) / 2) < 1.0, (x0, xm, x1)
    # A cross-fade would leave two half-bright squares; the warp keeps one crisp square.
    fade = ((frame0.astype(float) + frame1) / 2).astype(np.uint8)
    assert _square_centre_x(fade) == pytest.approx((x0 + x1) / 2, abs=1.0)
    square_pixels = lambda image: int((image.astype(float).mean(axis=2) > 160).sum())  # noqa: E731
    assert abs(square_pixels(middle) - 400) < 60
    assert square_pixels(fade) < 250


def test_keyframe_sequence_length_and_keyframe_positions(one_torch_thread):
    keys = np.stack([_scene(0), _scene(4), _scene(8)])
    clip = interpolate_keyframes(keys, frames_between=3)
    assert clip.shape == (2 * 4 + 1, 64, 64, 3)
    for index, key in zip((0, 4, 8), keys, strict=True):
        np.testing.assert_array_equal(clip[index], key)
    assert interpolate_keyframes(keys, frames_between=0).shape == (3, 64, 64, 3)
    assert interpolate_keyframes(keys[:1], frames_between=5).shape == (1, 64, 64, 3)


def test_interpolation_keeps_the_callers_torch_thread_count(one_torch_thread):
    FlowInterpolator(_scene(0), _scene(2))(0.5)
    assert torch.get_num_threads() == 1


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="differ in size"):
        interpolate_pair(_scene(0), _scene(0, size=48), [0.5])
    with pytest.raises(ValueError, match="uint8 RGB"):
        interpolate_pair(_scene(0).astype(np.float32), _scene(0), [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FlowInterpolator(_scene(0), _scene(2))(1.5)
    with pytest.raises(ValueError, match="no keyframes"):
        interpolate_keyframes([], 3)
    with pytest.raises(ValueError, match=">= 0"):
        interpolate_keyframes(np.stack([_scene(0)] * 2), -1)
