"""Pictures of motion: flow colour wheel, power-spectrum plot, spectral-volume panels.

``flow_to_color`` follows the colour coding of the Middlebury optical-flow benchmark
(Baker et al., IJCV 2011): hue is the direction of motion, saturation its magnitude
(white = still). Our own implementation: a 55-colour wheel through red, yellow, green,
cyan, blue and magenta (the benchmark's segment lengths 15, 6, 4, 11, 13, 6), with
right = red, down = yellow, left = cyan, up = violet-blue (image y points down).

Plots use matplotlib's Agg backend (no display) and are written atomically as PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from data.config import SPECTRAL_CHANNELS
from data.io_utils import atomic_write

# Colour-wheel segments: (number of hues, start colour, end colour), RGB in [0, 255].
_WHEEL_SEGMENTS = (
    (15, (255, 0, 0), (255, 255, 0)),  # red -> yellow
    (6, (255, 255, 0), (0, 255, 0)),  # yellow -> green
    (4, (0, 255, 0), (0, 255, 255)),  # green -> cyan
    (11, (0, 255, 255), (0, 0, 255)),  # cyan -> blue
    (13, (0, 0, 255), (255, 0, 255)),  # blue -> magenta
    (6, (255, 0, 255), (255, 0, 0)),  # magenta -> red
)


def _color_wheel() -> np.ndarray:
    """``(55, 3)`` float RGB in [0, 1], hue index 0 = red, going red->yellow->green->..."""
    colors = []
    for count, start, end in _WHEEL_SEGMENTS:
        for i in range(count):
            t = i / count
            colors.append([(1 - t) * a + t * b for a, b in zip(start, end, strict=True)])
    return np.asarray(colors, dtype=np.float64) / 255.0


_WHEEL = _color_wheel()


def flow_to_color(flow, max_magnitude: float | None = None) -> np.ndarray:
    """Colour-code a flow or displacement field.

    Args:
        flow: ``(H, W, 2)`` pixels, ``[..., 0]`` = x (right), ``[..., 1]`` = y (down);
            numpy or torch.
        max_magnitude: magnitude shown fully saturated; larger ones are clipped and
            darkened slightly. None: the field's largest magnitude (a still field is white).

    Returns:
        ``(H, W, 3)`` uint8 RGB. Direction -> hue (right red, down yellow, left
        cyan, up violet-blue), magnitude -> saturation. NaN/inf pixels are black.
    """
    if hasattr(flow, "detach"):
        flow = flow.detach().cpu().numpy()
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be (H, W, 2), got shape {flow.shape}")
    invalid = ~np.isfinite(flow).all(axis=2)
    u = np.where(invalid, 0.0, flow[..., 0])
    v = np.where(invalid, 0.0, flow[..., 1])
    magnitude = np.hypot(u, v)
    if max_magnitude is None:
        max_magnitude = float(magnitude.max())
    radius = magnitude / max(max_magnitude, 1e-12)

    # Angle measured from +x towards +y (down), mapped onto the wheel's hue positions.
    angle = np.arctan2(v, u)  # (-pi, pi]
    position = (angle % (2 * np.pi)) / (2 * np.pi) * len(_WHEEL)
    i0 = np.floor(position).astype(np.int64) % len(_WHEEL)
    i1 = (i0 + 1) % len(_WHEEL)
    frac = (position - np.floor(position))[..., None]
    hue = (1 - frac) * _WHEEL[i0] + frac * _WHEEL[i1]  # (H, W, 3)

    saturation = np.clip(radius, 0.0, 1.0)[..., None]
    color = 1.0 - saturation * (1.0 - hue)  # white at rest, the pure hue at max_magnitude
    color = np.where(radius[..., None] > 1.0, color * 0.75, color)  # beyond the range
    color[invalid] = 0.0
    return np.clip(np.rint(color * 255.0), 0, 255).astype(np.uint8)


def _save_figure(figure, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(figure)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; keeps an already chosen backend
    import matplotlib.pyplot as plt

    return plt


def plot_power_spectrum(
    power: np.ndarray | Mapping[str, np.ndarray],
    frequencies_hz: Sequence[float],
    path: str | Path,
    title: str = "Average motion power per frequency",
) -> Path:
    """Plot mean power per frequency on a log y axis (the paper's Figure 3) to a PNG.

    Args:
        power: ``(K,)`` mean power in pixels^2 (``frequency_power_spectrum``), or a dict
            ``name -> (K,)`` for several curves.
        frequencies_hz: ``(K,)`` frequency of each bin (``MotionConfig.frequencies_hz()``).
        path: output PNG (written atomically).
    """
    plt = _pyplot()
    curves = dict(power) if isinstance(power, Mapping) else {"": power}
    frequencies = np.asarray(frequencies_hz, dtype=np.float64)
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.shape != frequencies.shape:
            raise ValueError(
                f"power{f' {name!r}' if name else ''} has {values.size} values but "
                f"{frequencies.size} frequencies were given"
            )
        # Zero power cannot be drawn on a log axis: leave the point out.
        shown = np.where(values > 0, values, np.nan)
        axes.plot(frequencies, shown, marker="o", markersize=3, label=name or None)
    axes.set_yscale("log")
    axes.set_xlabel("frequency (Hz)")
    axes.set_ylabel("mean power |S_x|^2 + |S_y|^2 (px^2)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if any(curves):
        axes.legend()
    figure.tight_layout()
    return _save_figure(figure, path)


def plot_spectral_volume(
    spectral,
    path: str | Path,
    frequencies_hz: Sequence[float] | None = None,
    num_shown: int = 8,
    image: np.ndarray | None = None,
) -> Path:
    """A grid of the four channels (rows) of the first ``num_shown`` frequencies (columns).

    Each channel is shown with a diverging colour map, symmetric around 0, one shared
    scale per frequency, so sign and the fall of amplitude with frequency are both visible.

    Args:
        spectral: ``(K, 4, H, W)`` in pixels or normalised (numpy or torch).
        path: output PNG (written atomically).
        frequencies_hz: ``(K,)`` for the column titles (bin index if None).
        image: optional ``(H, W, 3)`` uint8 photo drawn in an extra first column.
    """
    if hasattr(spectral, "detach"):
        spectral = spectral.detach().cpu().numpy()
    spectral = np.asarray(spectral, dtype=np.float64)
    if spectral.ndim != 4 or spectral.shape[1] != len(SPECTRAL_CHANNELS):
        raise ValueError(f"spectral must be (K, 4, H, W), got shape {spectral.shape}")
    plt = _pyplot()
    shown = min(num_shown, spectral.shape[0])
    extra = 1 if image is not None else 0
    height, width = spectral.shape[2:]
    cell = 1.6
    figure, axes = plt.subplots(
        len(SPECTRAL_CHANNELS),
        shown + extra,
        figsize=((shown + extra) * cell * width / height, len(SPECTRAL_CHANNELS) * cell + 0.4),
        squeeze=False,
    )
    for row, channel in enumerate(SPECTRAL_CHANNELS):
        if extra:
            axes[row, 0].imshow(image if row == 0 else np.zeros_like(image))
            axes[row, 0].axis("off")
        for k in range(shown):
            limit = max(float(np.abs(spectral[k]).max()), 1e-12)
            ax = axes[row, k + extra]
            ax.imshow(spectral[k, row], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                label = f"{frequencies_hz[k]:.2f} Hz" if frequencies_hz is not None else f"k={k}"
                ax.set_title(f"{label}\n±{limit:.2g}", fontsize=7)
            if k == 0:
                ax.set_ylabel(channel, fontsize=8)
    figure.tight_layout()
    return _save_figure(figure, path)
