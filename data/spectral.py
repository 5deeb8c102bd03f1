"""Spectral volumes: the temporal FFT of per-pixel displacement, and its normalisation.

A clip's motion is a displacement field ``disp: (T, H, W, 2)`` in pixels, ``[..., 0]`` = x
(right), ``[..., 1]`` = y (down), where ``disp[t]`` moves each pixel of frame 0 to its place
in frame t (so ``disp[0] = 0`` when it comes from optical flow). Its spectral volume keeps
the K lowest bins of the real FFT over t::

    S_k = (1 / T) * sum_t disp[t] * exp(-2j * pi * k * t / T),   k = 0 .. K-1

(``norm="forward"``), stored as real channels ``(K, 4, H, W)`` in the order
``data.config.SPECTRAL_CHANNELS = ("re_x", "im_x", "re_y", "im_y")``. With that
normalisation a coefficient is in pixels and does not depend on T: a cosine of amplitude
A at bin k > 0 gives ``|S_k| = A / 2``; bin k is ``k * fps / T`` Hz.

Going back, ``spectral_to_displacement`` runs the inverse real FFT with the bins >= K set
to zero. The imaginary part of the DC bin (and of the Nyquist bin ``T / 2`` when T is even
and K reaches it) cannot be represented by a real signal and is discarded. For motion
that is band-limited (only bins < K non-zero) the round trip is exact to float precision.

The paper's frequency-adaptive normalisation (``FrequencyNormalizer``) maps each real
channel S of frequency f to ``S' = sign(S) * sqrt(|S| / s_f)``, where s_f is the 95th
percentile over the training set of the per-channel absolute values ``|Re|`` and
``|Im|`` (x and y, all pixels, all clips) at that frequency: the very quantities that are
normalised, so about 95% of normalised values fall in [-1, 1]. ``SpectralStatsAccumulator``
estimates those percentiles in one streaming pass with per-frequency log-spaced
histograms that can be saved per shard and merged.

Every function accepts numpy arrays or torch tensors (any device, autograd kept) and
returns the same kind.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.config import SPECTRAL_CHANNELS, MotionConfig
from data.io_utils import write_json_atomic

Array = Any  # np.ndarray or torch.Tensor

# Smallest per-frequency scale s_f (pixels): a frequency with no energy in the statistics
# would otherwise divide by zero. Equal to the accumulator's lowest histogram edge.
SCALE_FLOOR = 1e-6

# numpy inputs with at most this many kept bins use a DFT by matrix product (see below).
_MATMUL_MAX_FREQS = 64

NORMALIZER_FORMAT = "gid-frequency-normalizer"
ACCUMULATOR_FORMAT = "gid-spectral-stats"


# --------------------------------------------------------------------------------------
# FFT between displacement and spectral volume
# --------------------------------------------------------------------------------------


def _is_torch(x: Array) -> bool:
    return isinstance(x, torch.Tensor)


def _check_num_freqs(num_freqs: int, num_frames: int) -> None:
    if not 1 <= num_freqs <= num_frames // 2 + 1:
        raise ValueError(
            f"num_freqs must be in [1, num_frames // 2 + 1 = {num_frames // 2 + 1}] "
            f"for {num_frames} frames, got {num_freqs}"
        )


def displacement_to_spectral(disp: Array, num_freqs: int) -> Array:
    """Temporal FFT of a displacement field, keeping the ``num_freqs`` lowest bins.

    Args:
        disp: ``(T, H, W, 2)`` or batched ``(B, T, H, W, 2)`` displacement in pixels
            (numpy array or torch tensor).
        num_freqs: K, bins kept (``1 <= K <= T // 2 + 1``).

    Returns:
        ``(K, 4, H, W)`` or ``(B, K, 4, H, W)`` spectral volume in pixels, channels
        ``SPECTRAL_CHANNELS``. numpy: float32. torch: the input's float dtype (float32 for
        half precision inputs), same device, differentiable.
    """
    if disp.ndim not in (4, 5) or disp.shape[-1] != 2:
        raise ValueError(
            f"disp must be (T, H, W, 2) or (B, T, H, W, 2), got shape {tuple(disp.shape)}"
        )
    num_frames = disp.shape[-4]
    _check_num_freqs(num_freqs, num_frames)
    if _is_torch(disp):
        if disp.dtype not in (torch.float32, torch.float64):
            disp = disp.float()
        coeffs = torch.fft.rfft(disp, dim=-4, norm="forward")[..., :num_freqs, :, :, :]
        # (..., K, H, W, 2) complex -> (..., K, H, W, 2, 2) [re, im] -> (..., K, 4, H, W)
        parts = torch.view_as_real(coeffs)
        parts = parts.flatten(-2, -1)  # (..., K, H, W, 4): re_x, im_x, re_y, im_y
        return parts.movedim(-1, -3).contiguous()
    disp = np.asarray(disp, dtype=np.float64)
    if num_freqs <= _MATMUL_MAX_FREQS:
        # DFT of the K kept bins as one matrix product: as exact as the FFT in float64 and
        # several times faster than numpy's FFT along a strided leading axis.
        real, imag = _dft_matrices(num_frames, num_freqs)  # (K, T) each
        frames_first = np.moveaxis(disp, -4, 0).reshape(num_frames, -1)  # (T, N)
        out_shape = (num_freqs, *np.moveaxis(disp, -4, 0).shape[1:])
        coeffs = (real @ frames_first).reshape(out_shape) + 1j * (imag @ frames_first).reshape(
            out_shape
        )
        coeffs = np.moveaxis(coeffs, 0, -4)
    else:
        coeffs = np.fft.rfft(disp, axis=-4, norm="forward")[..., :num_freqs, :, :, :]
    parts = np.stack([coeffs.real, coeffs.imag], axis=-1)  # (..., K, H, W, 2, 2)
    parts = parts.reshape(*parts.shape[:-2], 4)
    return np.ascontiguousarray(np.moveaxis(parts, -1, -3), dtype=np.float32)


def spectral_to_displacement(spectral: Array, num_frames: int) -> Array:
    """Inverse of ``displacement_to_spectral``: bins >= K are zero.

    Args:
        spectral: ``(K, 4, H, W)`` or ``(B, K, 4, H, W)`` in pixels, channels
            ``SPECTRAL_CHANNELS`` (numpy or torch, any device).
        num_frames: T, frames to reconstruct (``K <= T // 2 + 1``).

    Returns:
        ``(T, H, W, 2)`` or ``(B, T, H, W, 2)`` displacement in pixels; numpy: float32,
        torch: the input's float dtype (float32 for half precision), differentiable. The
        imaginary parts of the DC bin and of the Nyquist bin (if kept) are discarded.
    """
    if spectral.ndim not in (4, 5) or spectral.shape[-3] != len(SPECTRAL_CHANNELS):
        raise ValueError(
            f"spectral must be (K, 4, H, W) or (B, K, 4, H, W), got shape {tuple(spectral.shape)}"
        )
    num_freqs = spectral.shape[-4]
    _check_num_freqs(num_freqs, num_frames)
    nyquist_kept = num_frames % 2 == 0 and num_freqs == num_frames // 2 + 1
    if _is_torch(spectral):
        if spectral.dtype not in (torch.float32, torch.float64):
            spectral = spectral.float()
        parts = spectral.movedim(-3, -1)  # (..., K, H, W, 4)
        parts = parts.unflatten(-1, (2, 2))  # (..., K, H, W, axis, re/im)
        real, imag = parts[..., 0], parts[..., 1]
        # Drop the imaginary parts a real signal cannot carry, explicitly, so every
        # backend and device agrees (not all irfft implementations ignore them).
        keep = torch.ones(num_freqs, dtype=real.dtype, device=real.device)
        keep[0] = 0
        if nyquist_kept:
            keep[-1] = 0
        imag = imag * keep.view(num_freqs, 1, 1, 1)
        coeffs = torch.complex(real.contiguous(), imag.contiguous())
        return torch.fft.irfft(coeffs, n=num_frames, dim=-4, norm="forward")
    parts = np.moveaxis(np.asarray(spectral, dtype=np.float64), -3, -1)
    parts = parts.reshape(*parts.shape[:-1], 2, 2)  # (..., K, H, W, axis, re/im)
    if num_freqs <= _MATMUL_MAX_FREQS:
        # D_t = sum_k w_k (Re S_k cos(2 pi k t / T) - Im S_k sin(2 pi k t / T)), w_k = 2
        # for the bins that stand for a conjugate pair, 1 for DC and Nyquist; those two
        # have sin(...) = 0 at every t, so their imaginary parts drop out by themselves.
        real, imag = _dft_matrices(num_frames, num_freqs)
        weight = np.full(num_freqs, 2.0)
        weight[0] = 1.0
        if nyquist_kept:
            weight[-1] = 1.0
        cos = real.T * num_frames * weight  # (T, K)
        sin = imag.T * num_frames * weight  # (T, K), = -sin(...) * w_k
        by_freq = np.moveaxis(parts, -5, 0)  # (K, [B,] H, W, axis, re/im)
        flat_re = by_freq[..., 0].reshape(num_freqs, -1)
        flat_im = by_freq[..., 1].reshape(num_freqs, -1)
        disp = (cos @ flat_re + sin @ flat_im).reshape(num_frames, *by_freq.shape[1:-1])
        return np.moveaxis(disp, 0, -4).astype(np.float32)
    coeffs = parts[..., 0] + 1j * parts[..., 1]
    coeffs[..., 0, :, :, :] = coeffs[..., 0, :, :, :].real
    if nyquist_kept:
        coeffs[..., -1, :, :, :] = coeffs[..., -1, :, :, :].real
    disp = np.fft.irfft(coeffs, n=num_frames, axis=-4, norm="forward")
    return disp.astype(np.float32)


def displacement_at_phases(spectral: Array, phases) -> Array:
    """Evaluate the motion's Fourier series at arbitrary points of the clip's period.

    ``spectral_to_displacement(S, T)[t]`` equals ``displacement_at_phases(S, t / T)``; other
    phases give the same motion at other frame rates, lengths or speeds (phase ``t * speed
    / T`` plays it ``speed`` times faster; phases beyond 1 wrap around, the motion loops)::

        D(p) = sum_k w_k (Re S_k cos(2 pi k p) - Im S_k sin(2 pi k p)),
        w_0 = 1 (DC, imaginary part dropped), w_k = 2 otherwise (a conjugate pair).

    Args:
        spectral: ``(K, 4, H, W)`` or ``(B, K, 4, H, W)`` in pixels, channels
            ``SPECTRAL_CHANNELS``; no Nyquist bin (``K < T / 2``, as for every spectral
            volume of the project). numpy, or torch (differentiable, any device).
        phases: ``(N,)`` positions in the period, in cycles (1.0 = one clip length).

    Returns:
        ``(N, H, W, 2)`` or ``(B, N, H, W, 2)`` in pixels: numpy float32, or torch in the
        input's dtype and device.
    """
    if spectral.ndim not in (4, 5) or spectral.shape[-3] != len(SPECTRAL_CHANNELS):
        raise ValueError(
            f"spectral must be (K, 4, H, W) or (B, K, 4, H, W), got shape {tuple(spectral.shape)}"
        )
    num_freqs = spectral.shape[-4]
    phases = np.asarray(phases, dtype=np.float64).reshape(-1)
    angle = 2.0 * np.pi * phases[:, None] * np.arange(num_freqs)[None, :]  # (N, K)
    weight = np.full(num_freqs, 2.0)
    weight[0] = 1.0
    cos = np.cos(angle) * weight
    sin = -np.sin(angle) * weight
    sin[:, 0] = 0.0  # a real signal has no imaginary DC
    if _is_torch(spectral):
        cos, sin = (torch.as_tensor(m).to(spectral) for m in (cos, sin))
        real, imag = spectral[..., 0::2, :, :], spectral[..., 1::2, :, :]  # (..., K, 2, H, W)
        return torch.einsum("nk,...kahw->...nhwa", cos, real) + torch.einsum(
            "nk,...kahw->...nhwa", sin, imag
        )
    spectral = np.asarray(spectral, dtype=np.float64)
    real, imag = spectral[..., 0::2, :, :], spectral[..., 1::2, :, :]
    disp = np.einsum("nk,...kahw->...nhwa", cos, real) + np.einsum("nk,...kahw->...nhwa", sin, imag)
    return np.ascontiguousarray(disp, dtype=np.float32)


def rms_displacement(spectral: np.ndarray) -> np.ndarray:
    """Per-pixel RMS displacement about the mean position: ``(K, 4, H, W)`` px -> ``(H, W)``.

    With the ``norm="forward"`` FFT of ``displacement_to_spectral``, a real signal's power
    outside bin 0 is twice that of bins 1..K-1 (their conjugates), and bin 0 is the mean
    offset, not motion: ``rms = sqrt(2 * sum_{k >= 1} |S_k|^2)`` over x and y.
    """
    spectral = np.asarray(spectral)
    if spectral.ndim != 4 or spectral.shape[1] != 4:
        raise ValueError(f"spectral must be (K, 4, H, W), got {spectral.shape}")
    return np.sqrt(2.0 * np.square(spectral[1:]).sum(axis=(0, 1)))


def _dft_matrices(num_frames: int, num_freqs: int) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary parts of the forward-normalised DFT rows, ``(K, T)`` float64."""
    angle = 2.0 * np.pi * np.outer(np.arange(num_freqs), np.arange(num_frames)) / num_frames
    return np.cos(angle) / num_frames, -np.sin(angle) / num_frames


def frequency_power_spectrum(spectral: Array) -> np.ndarray:
    """Mean power per frequency, ``|S_x|^2 + |S_y|^2`` averaged over pixels (and batch).

    Args:
        spectral: ``(K, 4, H, W)`` or ``(B, K, 4, H, W)`` in pixels (numpy or torch).

    Returns:
        ``(K,)`` float64 numpy array in pixels^2 (the paper's Figure 3 quantity).
    """
    if _is_torch(spectral):
        spectral = spectral.detach().to("cpu", torch.float64).numpy()
    spectral = np.asarray(spectral, dtype=np.float64)
    if spectral.ndim == 4:
        spectral = spectral[None]
    if spectral.ndim != 5 or spectral.shape[2] != len(SPECTRAL_CHANNELS):
        raise ValueError(
            f"spectral must be (K, 4, H, W) or (B, K, 4, H, W), got shape {spectral.shape}"
        )
    power = (spectral**2).sum(axis=2)  # (B, K, H, W)
    return power.mean(axis=(0, 2, 3))


# --------------------------------------------------------------------------------------
# Frequency-adaptive normalisation
# --------------------------------------------------------------------------------------


class FrequencyNormalizer:
    """``S' = sign(S) * sqrt(|S| / s_f)`` per frequency f, and its inverse.

    Args:
        scales: ``(K,)`` per-frequency scale s_f in pixels (floored at ``SCALE_FLOOR``).
        percentile: the percentile the scales were taken at (recorded, e.g. 95).
        num_samples: number of clips the statistics were computed from (recorded).
        config: the ``MotionConfig`` of the data (recorded; K must match ``len(scales)``).
        statistic: what the percentile is over (recorded; this project uses per-channel
            absolute values ``|Re|``, ``|Im|`` of x and y).
    """

    def __init__(
        self,
        scales,
        percentile: float = 95.0,
        num_samples: int = 0,
        config: MotionConfig | None = None,
        statistic: str = "per-channel |Re|, |Im| of x and y",
    ) -> None:
        scales = np.asarray(scales, dtype=np.float64).reshape(-1)
        if scales.size == 0 or not np.all(np.isfinite(scales)):
            raise ValueError(f"scales must be a non-empty list of finite numbers, got {scales}")
        if config is not None and config.num_freqs != scales.size:
            raise ValueError(
                f"{scales.size} scales but config.num_freqs = {config.num_freqs}: "
                "the statistics were computed for a different K"
            )
        self.scales = np.maximum(scales, SCALE_FLOOR)
        self.percentile = float(percentile)
        self.num_samples = int(num_samples)
        self.config = config
        self.statistic = statistic

    @property
    def num_freqs(self) -> int:
        return int(self.scales.size)

    @classmethod
    def fit(
        cls, spectral: Array, percentile: float = 95.0, config: MotionConfig | None = None
    ) -> FrequencyNormalizer:
        """Exact percentiles (``np.percentile``) from spectral volumes held in memory.

        Args:
            spectral: ``(N, K, 4, H, W)`` or one ``(K, 4, H, W)``, in pixels.
        """
        values = _as_numpy(spectral)
        if values.ndim == 4:
            values = values[None]
        if values.ndim != 5 or values.shape[2] != len(SPECTRAL_CHANNELS):
            raise ValueError(f"spectral must be (N, K, 4, H, W), got shape {values.shape}")
        per_freq = np.abs(np.moveaxis(values, 1, 0)).reshape(values.shape[1], -1)
        scales = np.percentile(per_freq, percentile, axis=1)
        return cls(scales, percentile, values.shape[0], config)

    def _scale_like(self, spectral: Array) -> Array:
        k_axis = spectral.ndim - 4  # (K, 4, H, W) or (B, K, 4, H, W)
        if spectral.ndim not in (4, 5) or spectral.shape[k_axis] != self.num_freqs:
            raise ValueError(
                f"expected (K, 4, H, W) or (B, K, 4, H, W) with K = {self.num_freqs}, "
                f"got shape {tuple(spectral.shape)}"
            )
        if _is_torch(spectral):
            return torch.as_tensor(self.scales, dtype=spectral.dtype, device=spectral.device).view(
                -1, 1, 1, 1
            )
        return self.scales.reshape(-1, 1, 1, 1)

    def normalize(self, spectral: Array) -> Array:
        """Pixels -> normalised values (mostly in [-1, 1]); numpy float32 or torch dtype.

        Its gradient is infinite at S = 0 (square root): differentiate ``denormalize``.
        """
        scale = self._scale_like(spectral)
        if _is_torch(spectral):
            return torch.sign(spectral) * torch.sqrt(spectral.abs() / scale)
        # float32 throughout, in place on one buffer: this runs once per training sample.
        spectral = np.asarray(spectral, dtype=np.float32)
        out = np.abs(spectral)
        out *= (1.0 / scale).astype(np.float32)
        np.sqrt(out, out=out)
        return np.copysign(out, spectral, out=out)

    def denormalize(self, normalized: Array) -> Array:
        """Normalised values -> pixels: ``S = sign(S') * S'^2 * s_f``."""
        scale = self._scale_like(normalized)
        if _is_torch(normalized):
            return normalized * normalized.abs() * scale
        normalized = np.asarray(normalized, dtype=np.float32)
        out = np.abs(normalized)
        out *= normalized
        out *= scale.astype(np.float32)
        return out

    def to_dict(self) -> dict:
        data: dict[str, Any] = {
            "format": NORMALIZER_FORMAT,
            "version": 1,
            "percentile": self.percentile,
            "statistic": self.statistic,
            "num_samples": self.num_samples,
            "scale_floor": SCALE_FLOOR,
            "scales": [float(s) for s in self.scales],
        }
        if self.config is not None:
            data["frequencies_hz"] = self.config.frequencies_hz()
            data["motion_config"] = self.config.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FrequencyNormalizer:
        if data.get("format") != NORMALIZER_FORMAT or "scales" not in data:
            raise ValueError(
                f"not frequency-normaliser statistics (format {data.get('format')!r}, "
                f"expected {NORMALIZER_FORMAT!r})"
            )
        config = data.get("motion_config")
        return cls(
            data["scales"],
            data.get("percentile", 95.0),
            data.get("num_samples", 0),
            MotionConfig.from_dict(config) if config is not None else None,
            data.get("statistic", "per-channel |Re|, |Im| of x and y"),
        )

    def save_json(self, path: str | Path) -> None:
        """Write human-readable JSON (atomically)."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | Path) -> FrequencyNormalizer:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: normalisation statistics not found") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error.msg})") from None
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def __repr__(self) -> str:
        scales = ", ".join(f"{s:.3g}" for s in self.scales)
        return (
            f"FrequencyNormalizer(percentile={self.percentile:g}, "
            f"num_samples={self.num_samples}, scales=[{scales}])"
        )


def _as_numpy(x: Array) -> np.ndarray:
    if _is_torch(x):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------------------
# Streaming percentile estimate, mergeable across shards
# --------------------------------------------------------------------------------------


class SpectralStatsAccumulator:
    """Per-frequency histograms of per-channel ``|Re|``, ``|Im|`` values, for percentiles.

    Bins are log-spaced between ``low`` and ``high`` pixels (fixed edges, so accumulators
    built on different shards merge by adding counts), plus an underflow bin (values
    below ``low``, zeros included) and an overflow bin. With the defaults (1e-6 .. 1e4 px,
    4000 bins) one bin spans a factor 10**(10/4000) = 1.0058: each order statistic is
    placed inside its bin (values spread evenly in log space) and the percentile is
    interpolated between them as ``np.percentile`` does, so it is within that factor
    (0.58%) of ``np.percentile``; ``tests/test_spectral.py`` checks it. Values beyond
    ``high`` are clamped to the largest value seen.

    Args:
        num_freqs: K.
        low, high: histogram range in pixels.
        num_bins: log-spaced bins between ``low`` and ``high``.
    """

    def __init__(
        self, num_freqs: int, low: float = 1e-6, high: float = 1e4, num_bins: int = 4000
    ) -> None:
        if num_freqs < 1 or num_bins < 1 or not 0 < low < high:
            raise ValueError(
                f"need num_freqs >= 1, num_bins >= 1, 0 < low < high; got "
                f"{num_freqs}, {num_bins}, {low}, {high}"
            )
        self.num_freqs = int(num_freqs)
        self.low, self.high, self.num_bins = float(low), float(high), int(num_bins)
        self._log_low = math.log10(self.low)
        self._bin_width = (math.log10(self.high) - self._log_low) / self.num_bins
        # counts[:, 0] underflow, counts[:, 1..num_bins] the log bins, counts[:, -1] overflow
        self.counts = np.zeros((self.num_freqs, self.num_bins + 2), dtype=np.int64)
        self.max_value = np.zeros(self.num_freqs, dtype=np.float64)
        self.num_samples = 0

    def update(self, spectral: Array) -> None:
        """Add one clip's ``(K, 4, H, W)`` spectral volume (or a batch ``(B, K, 4, H, W)``)."""
        values = np.abs(_as_numpy(spectral))
        if values.ndim == 4:
            values = values[None]
        if values.ndim != 5 or values.shape[1:3] != (self.num_freqs, len(SPECTRAL_CHANNELS)):
            raise ValueError(
                f"expected (K={self.num_freqs}, 4, H, W) or (B, K, 4, H, W), "
                f"got shape {tuple(spectral.shape)}"
            )
        if not np.all(np.isfinite(values)):
            raise ValueError("spectral volume contains NaN or infinite values")
        per_freq = np.moveaxis(values, 1, 0).reshape(self.num_freqs, -1)  # (K, N)
        index = np.zeros(per_freq.shape, dtype=np.int64)
        positive = per_freq >= self.low
        logs = np.log10(per_freq[positive])
        index[positive] = np.clip(
            np.floor((logs - self._log_low) / self._bin_width).astype(np.int64) + 1,
            1,
            self.num_bins + 1,
        )
        index[per_freq >= self.high] = self.num_bins + 1
        stride = self.num_bins + 2
        index += np.arange(self.num_freqs, dtype=np.int64)[:, None] * stride
        self.counts += np.bincount(index.ravel(), minlength=self.num_freqs * stride).reshape(
            self.num_freqs, stride
        )
        self.max_value = np.maximum(self.max_value, per_freq.max(axis=1))
        self.num_samples += values.shape[0]

    def merge(self, other: SpectralStatsAccumulator) -> SpectralStatsAccumulator:
        """Add ``other``'s counts into this accumulator (same bins required); returns self."""
        same = (self.num_freqs, self.low, self.high, self.num_bins) == (
            other.num_freqs,
            other.low,
            other.high,
            other.num_bins,
        )
        if not same:
            raise ValueError(
                "cannot merge spectral statistics with different K or histogram bins: "
                f"{(self.num_freqs, self.low, self.high, self.num_bins)} vs "
                f"{(other.num_freqs, other.low, other.high, other.num_bins)}"
            )
        self.counts += other.counts
        self.max_value = np.maximum(self.max_value, other.max_value)
        self.num_samples += other.num_samples
        return self

    def percentile(self, q: float) -> np.ndarray:
        """``(K,)`` estimate of ``np.percentile(|values|, q)`` per frequency (linear method)."""
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        result = np.zeros(self.num_freqs, dtype=np.float64)
        for k in range(self.num_freqs):
            cumulative = np.cumsum(self.counts[k])
            total = int(cumulative[-1])
            if total == 0:
                continue
            # np.percentile's default (linear) method interpolates between the sorted
            # values at ranks floor(r) and floor(r) + 1, with r = q/100 * (n - 1).
            rank = q / 100.0 * (total - 1)
            below = math.floor(rank)
            lower = self._value_at_rank(k, cumulative, below)
            upper = self._value_at_rank(k, cumulative, min(below + 1, total - 1))
            result[k] = lower + (rank - below) * (upper - lower)
        return result

    def _value_at_rank(self, k: int, cumulative: np.ndarray, rank: int) -> float:
        """Estimate of the sorted value at integer ``rank`` of frequency k.

        The c values of a bin are taken as evenly spread in log space, the i-th of them
        at fraction (i + 0.5) / c of the bin.
        """
        b = int(np.searchsorted(cumulative, rank, side="right"))
        if b == 0:  # underflow bin: below `low`, report 0
            return 0.0
        if b >= self.num_bins + 1:  # overflow bin: only the maximum is known
            return float(self.max_value[k])
        count = cumulative[b] - cumulative[b - 1]
        fraction = (rank - cumulative[b - 1] + 0.5) / count
        log_value = self._log_low + (b - 1 + fraction) * self._bin_width
        return min(10.0**log_value, float(self.max_value[k]))

    def finalize(
        self, percentile: float = 95.0, config: MotionConfig | None = None
    ) -> FrequencyNormalizer:
        """The ``FrequencyNormalizer`` with s_f at the given percentile."""
        if self.num_samples == 0:
            raise ValueError("no spectral volumes were added: cannot compute statistics")
        return FrequencyNormalizer(
            self.percentile(percentile), percentile, self.num_samples, config
        )

    def to_dict(self) -> dict:
        """JSON-friendly dict; counts stored sparsely as ``[bin_index, count]`` pairs."""
        return {
            "format": ACCUMULATOR_FORMAT,
            "version": 1,
            "num_freqs": self.num_freqs,
            "low": self.low,
            "high": self.high,
            "num_bins": self.num_bins,
            "num_samples": self.num_samples,
            "max_value": [float(v) for v in self.max_value],
            "counts": [[[int(i), int(row[i])] for i in np.flatnonzero(row)] for row in self.counts],
        }

    @classmethod
    def from_dict(cls, data: dict) -> SpectralStatsAccumulator:
        if data.get("format") != ACCUMULATOR_FORMAT:
            raise ValueError(
                f"not spectral statistics (format {data.get('format')!r}, "
                f"expected {ACCUMULATOR_FORMAT!r})"
            )
        acc = cls(data["num_freqs"], data["low"], data["high"], data["num_bins"])
        acc.num_samples = int(data["num_samples"])
        acc.max_value = np.asarray(data["max_value"], dtype=np.float64)
        for k, pairs in enumerate(data["counts"]):
            for index, count in pairs:
                acc.counts[k, index] = count
        return acc

    def save_json(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | Path) -> SpectralStatsAccumulator:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (json.JSONDecodeError, KeyError, ValueError) as error:
            raise ValueError(f"{path}: cannot read spectral statistics ({error})") from None
