"""Flow colour wheel and plots."""

import numpy as np
import pytest
import torch

from data.visualize import flow_to_color, plot_power_spectrum, plot_spectral_volume


def test_color_wheel_hues_for_the_four_directions():
    flow = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]])
    right, down, left, up = flow_to_color(flow)[0].astype(int)
    assert right[0] == 255 and right[1] < 30 and right[2] < 30  # red
    assert down[0] > 200 and down[1] > 200 and down[2] < 30  # yellow
    assert left[0] < 30 and left[1] > 150 and left[2] > 200  # cyan
    assert up[2] > 200 and up[1] < 30 and 50 < up[0] < 200  # violet-blue


def test_magnitude_sets_saturation_and_still_is_white():
    flow = np.array([[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [4.0, 0.0]]])
    still, weak, strong, beyond = flow_to_color(flow, max_magnitude=2.0)[0].astype(int)
    assert list(still) == [255, 255, 255]
    assert weak[0] == 255 and 100 < weak[1] < 160  # half saturated red
    assert list(strong) == [255, 0, 0]
    assert beyond[0] < 255 and beyond[1] == 0  # clipped and darkened
    # auto scale, torch input, non-finite values shown black
    tensor = torch.tensor([[[3.0, 0.0], [float("nan"), 0.0]]])
    colors = flow_to_color(tensor)
    assert list(colors[0, 0]) == [255, 0, 0] and list(colors[0, 1]) == [0, 0, 0]
    assert flow_to_color(np.zeros((4, 5, 2))).shape == (4, 5, 3)
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        flow_to_color(np.zeros((4, 5)))


def test_plot_power_spectrum_writes_png(tmp_path):
    freqs = np.arange(6) * 0.2
    path = plot_power_spectrum(
        {"train": 1.0 / (1 + freqs) ** 2, "val": np.r_[0.0, 1.0 / (1 + freqs[1:])]},
        freqs,
        tmp_path / "power.png",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_power_spectrum(np.ones(6), freqs, tmp_path / "single.png")
    assert (tmp_path / "single.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["power.png", "single.png"]
    with pytest.raises(ValueError, match="6 frequencies"):
        plot_power_spectrum(np.ones(5), freqs, tmp_path / "bad.png")


def test_plot_spectral_volume_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    spectral = rng.normal(size=(4, 4, 10, 16))
    image = rng.integers(0, 255, size=(10, 16, 3), dtype=np.uint8)
    path = plot_spectral_volume(spectral, tmp_path / "sv.png", [0.0, 0.2, 0.4, 0.6], image=image)
    assert path.read_bytes()[:4] == b"\x89PNG"
