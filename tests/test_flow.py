"""Optical flow: known motion recovered, sign convention, shapes, threads, registry, and the
optional back ends (pyflow faked, RAFT with random weights: code path only, no accuracy)."""

from __future__ import annotations

import sys
import types

import cv2
import numpy as np
import pytest

from data.flow import (
    FLOW_METHODS,
    PYFLOW_INSTALL_HINT,
    endpoint_error,
    estimate_flow,
    find_raft_weights,
    get_flow_estimator,
    render_displaced,
)

HEIGHT, WIDTH = 96, 128
BORDER = 12  # pixels ignored on each side: content there enters or leaves the frame


def texture(seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Smooth random RGB texture ``(HEIGHT, WIDTH, 3)`` uint8: blurred noise, full range."""
    noise = np.random.default_rng(seed).random((HEIGHT, WIDTH, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).round().astype(np.uint8)


def translation(dx: float, dy: float) -> np.ndarray:
    disp = np.empty((HEIGHT, WIDTH, 2), np.float32)
    disp[..., 0], disp[..., 1] = dx, dy
    return disp


def smooth_field(amplitude: float = 2.0) -> np.ndarray:
    """A smooth non-rigid field: sinusoids of wavelength 64-96 px, up to ``amplitude`` px."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    disp = np.stack(
        [
            amplitude * np.sin(2 * np.pi * ys / 96 + 0.5) * np.cos(2 * np.pi * xs / 128),
            0.75 * amplitude * np.cos(2 * np.pi * xs / 64 + 1.0),
        ],
        axis=-1,
    )
    return disp.astype(np.float32)


def test_render_displaced_integer_shift_is_a_copy():
    image = texture()
    moved = render_displaced(image, translation(3, -2))
    # reference pixel (x, y) appears at (x + 3, y - 2)
    np.testing.assert_array_equal(moved[10:80, 13:120], image[12:82, 10:117])


def test_render_displaced_checks_shape():
    with pytest.raises(ValueError, match="disp must be"):
        render_displaced(texture(), np.zeros((10, 10, 2), np.float32))


# Mean interior EPE bounds (px), with margin over what these cases measure on seeds 0-3
# (translation / smooth: DIS-medium 0.02 / 0.22, Farneback 0.05 / 0.21).
CASES = {
    ("dis", "translation"): 0.1,
    ("farneback", "translation"): 0.15,
    ("dis", "smooth"): 0.35,
    ("farneback", "smooth"): 0.35,
}


@pytest.mark.parametrize("method,motion", list(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_known_motion_is_recovered(method, motion, seed):
    image = texture(seed)
    truth = translation(1.3, -0.6) if motion == "translation" else smooth_field(2.0)
    frame = render_displaced(image, truth)
    flow = estimate_flow(image, frame[None], method=method)[0]
    assert endpoint_error(flow, truth, border=BORDER) < CASES[method, motion]


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_sign_convention(method):
    """Content moving right and down gives positive x and y flow."""
    image = texture()
    flow = estimate_flow(image, render_displaced(image, translation(2.0, 1.0))[None], method)
    inner = flow[0, BORDER:-BORDER, BORDER:-BORDER]
    assert np.median(inner[..., 0]) == pytest.approx(2.0, abs=0.1)
    assert np.median(inner[..., 1]) == pytest.approx(1.0, abs=0.1)


def test_flow_to_every_frame_shapes_and_reference_zero():
    """Flow is from the reference to each frame directly: frame t holds shift t * 0.5 px."""
    image = texture()
    frames = np.stack([render_displaced(image, translation(0.5 * t, 0)) for t in range(5)])
    flow = estimate_flow(image, frames)
    assert flow.shape == (5, HEIGHT, WIDTH, 2) and flow.dtype == np.float32
    assert not flow[0].any()  # frame 0 is the reference: exactly zero, not estimated
    medians = np.median(flow[:, BORDER:-BORDER, BORDER:-BORDER, 0], axis=(1, 2))
    np.testing.assert_allclose(medians, 0.5 * np.arange(5), atol=0.1)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_threads_give_the_same_flow(method):
    image = texture()
    frames = np.stack([render_displaced(image, smooth_field(a)) for a in (0.5, 1.0, 1.5, 2.0)])
    serial = estimate_flow(image, frames, method, workers=1)
    threaded = estimate_flow(image, frames, method, workers=2)
    np.testing.assert_array_equal(serial, threaded)


def test_estimator_objects_and_options():
    image = texture()
    frame = render_displaced(image, translation(1.0, 0.0))
    for preset in ["ultrafast", "fast", "medium"]:
        flow = get_flow_estimator("dis", preset=preset)(image, frame)
        assert flow.shape == (HEIGHT, WIDTH, 2) and flow.dtype == np.float32
    gray_flow = get_flow_estimator("dis")(image[..., 0], frame[..., 0])  # gray accepted
    assert gray_flow.shape == (HEIGHT, WIDTH, 2)
    with pytest.raises(ValueError, match="preset"):
        get_flow_estimator("dis", preset="slow")


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: dis, farneback, pyflow, raft"):
        estimate_flow(texture(), texture()[None], method="lucas-kanade")
    assert set(FLOW_METHODS) == {"dis", "farneback", "pyflow", "raft"}


def test_bad_inputs():
    image = texture()
    with pytest.raises(ValueError, match="uint8"):
        estimate_flow(image.astype(np.float32) / 255, image[None])
    with pytest.raises(ValueError, match="differ"):
        estimate_flow(image, image[None, :50])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        get_flow_estimator("dis")(image[..., :2], image[..., :2])


def test_endpoint_error():
    truth = translation(1.0, 0.0)
    flow = truth.copy()
    flow[:4] += np.array([3.0, 4.0])  # error of 5 px in the top 4 rows only
    assert endpoint_error(flow, truth) == pytest.approx(5 * 4 / HEIGHT)
    assert endpoint_error(flow, truth, border=4) == 0.0
    with pytest.raises(ValueError, match="border"):
        endpoint_error(flow, truth, border=HEIGHT)


# ----------------------------------------------------------------------------- pyflow


def test_pyflow_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyflow", None)  # makes `import pyflow` fail
    with pytest.raises(ImportError, match="not on PyPI") as error:
        get_flow_estimator("pyflow")
    assert "github.com/pathak22/pyflow" in str(error.value)
    assert "github.com/pathak22/pyflow" in PYFLOW_INSTALL_HINT


def test_unrelated_pyflow_package_is_rejected(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyflow", types.ModuleType("pyflow"))
    with pytest.raises(ImportError, match="another package"):
        get_flow_estimator("pyflow")


def test_pyflow_wrapper_converts_inputs_and_outputs(monkeypatch):
    """With a stand-in for Coarse2Fine: RGB float64 in [0, 1] goes in, (u, v) comes out."""
    seen = {}

    def coarse2fine_flow(im1, im2, *args):
        seen.update(dtype=im1.dtype, max=im2.max(), contiguous=im1.flags.c_contiguous, args=args)
        height, width = im1.shape[:2]
        return np.full((height, width), 1.5), np.full((height, width), -0.5), im2

    fake = types.ModuleType("pyflow")
    fake.coarse2fine_flow = coarse2fine_flow
    monkeypatch.setitem(sys.modules, "pyflow", fake)
    image = texture()
    flow = estimate_flow(image, np.stack([image, 255 - image]), method="pyflow")
    assert flow.shape == (2, HEIGHT, WIDTH, 2) and flow.dtype == np.float32
    assert not flow[0].any()
    np.testing.assert_array_equal(flow[1, 0, 0], [1.5, -0.5])
    assert seen["dtype"] == np.float64 and seen["max"] <= 1.0 and seen["contiguous"]
    assert seen["args"][-1] == 0  # colour type: RGB


# ----------------------------------------------------------------------------- RAFT


@pytest.fixture(scope="module")
def random_raft_small(tmp_path_factory):
    """torchvision raft_small with random weights saved as a state dict (no download)."""
    torch = pytest.importorskip("torch")
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "my_raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    return path


def test_raft_code_path_with_random_weights(random_raft_small):
    """Loads, infers the variant, pads odd sizes, batches frames. Untrained: no accuracy."""
    estimator = get_flow_estimator(
        "raft", weights_path=random_raft_small, num_flow_updates=2, device="cpu", batch_size=2
    )
    assert estimator.model == "small"
    image = texture()[:60, :70]  # not a multiple of 8 and below RAFT's 128 px minimum
    frames = np.stack([image, np.roll(image, 1, axis=1), np.roll(image, 2, axis=1)])
    flow = estimator.flow_to_frames(image, frames)
    assert flow.shape == (3, 60, 70, 2) and flow.dtype == np.float32
    assert np.isfinite(flow).all()
    assert estimator(image, frames[1]).shape == (60, 70, 2)


def test_raft_weights_found_in_hub_cache_or_clear_error(monkeypatch, tmp_path, random_raft_small):
    import shutil

    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        get_flow_estimator("raft")
    (tmp_path / "checkpoints").mkdir()
    target = tmp_path / "checkpoints" / "raft_small_C_T_V2-01064c6d.pth"
    shutil.copy(random_raft_small, target)
    assert find_raft_weights() == target
    estimator = get_flow_estimator("raft", num_flow_updates=1, device="cpu")
    assert estimator.model == "small"


def test_raft_rejects_wrong_files(tmp_path, random_raft_small):
    import torch

    with pytest.raises(FileNotFoundError, match="not found"):
        get_flow_estimator("raft", weights_path=tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="do not match"):
        get_flow_estimator("raft", weights_path=tmp_path / "other.pth")
    with pytest.raises(ValueError, match="raft_large"):
        get_flow_estimator("raft", weights_path=random_raft_small, model="large")
