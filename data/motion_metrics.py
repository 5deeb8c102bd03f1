"""Motion-quality metrics: a predicted spectral volume against the clip's true one.

All quantities are in pixels of the model's frame (default 256x160). For a spectral
volume ``S: (K, 4, H, W)`` (channels ``re_x, im_x, re_y, im_y``, ``data/spectral.py``) and
its displacement ``D = spectral_to_displacement(S, T): (T, H, W, 2)``:

* **amplitude** of bin k at a pixel: ``|S_k| = sqrt(re_x^2 + im_x^2 + re_y^2 + im_y^2)``
  (px; a cosine of amplitude A along x at bin k > 0 has ``|S_k| = A / 2``).
* **per-frequency amplitude error**: ``amp_err_k = mean over pixels | |S_pred_k| - |S_true_k| |``;
  ``amp_error_px`` is its mean over k.
* **motion magnitude** of a pixel: RMS over the T frames of ``|D[t]|`` (px), computed
  exactly from the spectrum by Parseval: ``sqrt(|S_0|^2 (real parts) + 2 sum_{k>0} |S_k|^2)``.
* **magnitude correlation**: Pearson correlation over the pixels of one clip between the
  predicted and true motion magnitude; 0 when the prediction is constant over the frame
  (no information about *where* things move: the zero-motion and mean-spectrum baselines),
  and undefined (NaN, left out of means) when the truth is constant.
* **loop error**: ``mean over pixels |D[T-1] - D[0]|`` (Euclidean, px): the jump a viewer
  sees when the clip wraps from its last frame to its first. A spectral volume is periodic
  in T, so this is never a cut, but it can be a lurch; it is compared with the typical
  frame-to-frame step ``mean over t, pixels |D[t+1] - D[t]|`` as ``loop_ratio``
  (1 = the wrap is as smooth as any other frame).
* **reference offset**: ``mean over pixels |D[0]|`` (px). Frame 0 is the photo itself (flow
  is measured from it, so the truth has D[0] = 0 up to the truncation to K bins); a
  prediction with a large D[0] starts the video away from the photo.

Baselines (``evaluate_motion``):

* ``zero_motion``: S = 0.
* ``mean_spectrum``: one spectrum for every pixel of every photo, from the training split:
  bin 0 = the mean DC displacement (real parts; imaginary DC is not a signal), bins k > 0 =
  the mean amplitude of x and of y, ``mean over clips and pixels of sqrt(re^2 + im^2)``, as
  sines (imaginary parts), which vanish at frame 0 as the truth does (D[0] = DC only). It
  has the average motion energy per frequency but no spatial layout.

And one reference that is not a baseline but a bound, where the data allows it:

* ``truth_resampled``: the true spectral volume of *another* clip of the same photo (clips
  whose first frames are the same photo up to video coding: the synthetic clips of one
  photo, drawn with other seeds).
  It is what a perfect generative model scores: a sample from the true distribution of
  motions given the photo, not the one motion that happened. Oscillation phases and
  amplitudes are random, so on per-pixel amplitude error such a sample can score worse
  than predicting no motion at all (the zero baseline pays the true amplitude once, a
  sample about the true plus its own, where they do not overlap); the magnitude
  correlation shows what it knows that the baselines do not (where things move). Clips
  whose photo has no second clip have no such row.

Because a single sample cannot beat the zero baseline on per-pixel amplitude error even
when it is drawn from the true distribution, one more metric compares expectations, where
the data has several clips per photo:

* **expected amplitude error** (``expected_amp_error_px``): per photo with n >= 2 clips,
  the first half of its clips (n // 2) supply the prediction and the second half the
  target: ``mean over k, pixels | mean_A |S_pred_k| - mean_B |S_true_k| |``, where A are
  the method's outputs for the first-half clips (the model: one sample per clip, so n // 2
  samples; ``truth_resampled``: the first-half clips' true volumes) and B the second-half
  clips' true volumes; mean over photos. Every method is scored against the same target
  with the same number of draws, and it rewards knowing where and how much things move on
  average. With 8 draws a side the synthetic truth scores about 25 % below the zero
  baseline; with 1 draw a side it scores above it.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from data.motion_masks import DEFAULT_MASK_PROVIDER
from data.spectral import spectral_to_displacement

# Mean absolute difference (images in [-1, 1]) under which two clips' first frames are the
# same photo: H.264 coding moves a frame by ~0.006; different photos differ by ~0.1-0.5.
SAME_PHOTO_TOLERANCE = 0.02

METRIC_KEYS = (
    "amp_error_px",
    "magnitude_corr",
    "loop_error_px",
    "loop_ratio",
    "reference_offset_px",
    "rms_motion_px",
)


# ----------------------------------------------------------------------------- per clip


def _check(spectral: np.ndarray) -> np.ndarray:
    spectral = np.asarray(spectral, dtype=np.float64)
    if spectral.ndim != 4 or spectral.shape[1] != 4:
        raise ValueError(f"spectral must be (K, 4, H, W) in pixels, got shape {spectral.shape}")
    return spectral


def amplitude(spectral: np.ndarray) -> np.ndarray:
    """``(K, H, W)`` amplitude ``|S_k|`` (px) of a ``(K, 4, H, W)`` spectral volume."""
    return np.sqrt((_check(spectral) ** 2).sum(axis=1))


def amplitude_error_per_freq(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(K,)``: mean over pixels of ``| |S_pred_k| - |S_true_k| |`` in px."""
    if np.shape(pred) != np.shape(true):
        raise ValueError(f"shapes differ: pred {np.shape(pred)}, true {np.shape(true)}")
    return np.abs(amplitude(pred) - amplitude(true)).mean(axis=(1, 2))


def motion_magnitude(spectral: np.ndarray) -> np.ndarray:
    """``(H, W)`` RMS over the clip of ``|D[t]|`` (px), by Parseval (K < T / 2)."""
    spectral = _check(spectral)
    dc = spectral[0, 0] ** 2 + spectral[0, 2] ** 2  # real parts of the DC bin
    rest = 2.0 * (spectral[1:] ** 2).sum(axis=(0, 1))
    return np.sqrt(dc + rest)


def magnitude_correlation(pred: np.ndarray, true: np.ndarray) -> float:
    """Pearson correlation over pixels of the motion magnitudes (see the module docstring)."""
    a, b = motion_magnitude(pred).ravel(), motion_magnitude(true).ravel()
    a, b = a - a.mean(), b - b.mean()
    norm_a, norm_b = math.sqrt(float(a @ a)), math.sqrt(float(b @ b))
    if norm_b <= 1e-12 * max(1.0, b.size):
        return float("nan")  # the truth has no spatial variation: undefined
    if norm_a <= 1e-12 * max(1.0, a.size):
        return 0.0  # a constant prediction says nothing about where things move
    return float(a @ b) / (norm_a * norm_b)


def loop_statistics(spectral: np.ndarray, num_frames: int) -> dict[str, float]:
    """``loop_error_px``, ``mean_step_px``, ``loop_ratio`` and ``reference_offset_px``."""
    disp = spectral_to_displacement(_check(spectral).astype(np.float32), num_frames)
    loop = float(np.linalg.norm(disp[-1] - disp[0], axis=-1).mean())
    step = float(np.linalg.norm(np.diff(disp, axis=0), axis=-1).mean())
    return {
        "loop_error_px": loop,
        "mean_step_px": step,
        "loop_ratio": loop / step if step > 0 else float("nan"),
        "reference_offset_px": float(np.linalg.norm(disp[0], axis=-1).mean()),
    }


def motion_metrics(pred: np.ndarray, true: np.ndarray, num_frames: int) -> dict:
    """Every metric of one clip: a flat dict (``amp_error_per_freq`` is a ``(K,)`` list)."""
    per_freq = amplitude_error_per_freq(pred, true)
    return {
        "amp_error_px": float(per_freq.mean()),
        "amp_error_per_freq": [float(v) for v in per_freq],
        "magnitude_corr": magnitude_correlation(pred, true),
        "rms_motion_px": float(np.sqrt((motion_magnitude(pred) ** 2).mean())),
        **loop_statistics(pred, num_frames),
    }


# ----------------------------------------------------------------------------- baselines


def mean_spectrum(spectra) -> np.ndarray:
    """``(K, 4)`` training-set mean spectrum (see the module docstring) from ``(K, 4, H, W)`` volumes.

    Returns per bin ``(re_x, im_x, re_y, im_y)``: bin 0 the mean real DC, bins k > 0 the mean
    amplitude of x and of y in the imaginary slots, 0 in the real ones (sines, so the
    frequencies k > 0 add nothing at frame 0, the photo).
    """
    total, count = None, 0
    for spectral in spectra:
        spectral = _check(spectral)
        amp_x = np.hypot(spectral[:, 0], spectral[:, 1]).mean(axis=(1, 2))  # (K,)
        amp_y = np.hypot(spectral[:, 2], spectral[:, 3]).mean(axis=(1, 2))
        row = np.zeros((spectral.shape[0], 4))
        row[1:, 1], row[1:, 3] = amp_x[1:], amp_y[1:]  # sines: zero at frame 0
        row[0, 0], row[0, 2] = spectral[0, 0].mean(), spectral[0, 2].mean()
        total = row if total is None else total + row
        count += 1
    if count == 0:
        raise ValueError("mean_spectrum: no training clips")
    return total / count


def constant_volume(spectrum: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(K, 4)`` -> ``(K, 4, H, W)``: the same spectrum at every pixel."""
    return np.broadcast_to(np.asarray(spectrum)[:, :, None, None], (*spectrum.shape, height, width))


# ----------------------------------------------------------------------------- evaluation


def _summarise(method: str, per_clip: list[dict]) -> dict:
    row: dict = {"method": method, "num_clips": len(per_clip)}
    for key in (*METRIC_KEYS, "mean_step_px"):
        values = [c[key] for c in per_clip if not math.isnan(c[key])]
        row[key] = float(np.mean(values)) if values else float("nan")
    row["amp_error_per_freq"] = [
        float(v) for v in np.mean([c["amp_error_per_freq"] for c in per_clip], axis=0)
    ]
    return row


def evaluate_motion(
    data_dir: str | Path,
    pipeline=None,
    split: str = "val",
    num_inference_steps: int = 25,
    guidance_scale: float = 1.0,
    loop_guidance_scale: float = 0.0,
    seed: int = 0,
    out_dir: str | Path | None = None,
    max_clips: int | None = None,
    mask_provider: str | None = DEFAULT_MASK_PROVIDER,
) -> list[dict]:
    """Motion metrics of a pipeline and the baselines on one split of a prepared folder.

    Each clip's first frame goes through ``pipeline`` (a ``MotionPipeline``; None:
    baselines only) with ``torch.Generator().manual_seed(seed + clip index)`` and
    ``mask_provider`` (the pipeline's default automatic mask; None: the model's motion
    everywhere).

    Args:
        data_dir: a folder written by ``prepare_data.py`` (manifest.json, clips/).
        split: "val" (held out), "train" or "all".
        max_clips: evaluate the first this many clips of the split.
        out_dir: where to write ``motion_metrics.csv`` (one line per clip and method).

    Returns:
        One dict per method (``model``, ``zero_motion``, ``mean_spectrum``,
        ``ground_truth``, and ``truth_resampled`` when some photo has two clips):
        ``method``, ``num_clips``, the means over clips of
        ``METRIC_KEYS`` and ``mean_step_px``, ``amp_error_per_freq`` ``(K,)``, and
        ``expected_amp_error_px`` over ``num_photos`` photos (NaN and 0 where no photo has
        two clips; ``ground_truth`` has none).
    """
    import torch

    from data.dataset import SpectralVolumeDataset

    data = SpectralVolumeDataset(data_dir, split, normalize=False)
    if len(data) == 0:
        raise ValueError(f"{data_dir}: no '{split}' clips in manifest.json")
    config = data.config
    if pipeline is not None:
        model_config = pipeline.motion_config
        if (model_config.num_freqs, model_config.size) != (config.num_freqs, config.size):
            raise ValueError(
                f"{data_dir}: data has K={config.num_freqs} at {config.width}x{config.height}, "
                f"the model K={model_config.num_freqs} at "
                f"{model_config.width}x{model_config.height}; evaluate on data prepared with "
                "the model's settings (prepare_data.py --size, --num-freqs)"
            )
    train = SpectralVolumeDataset(data_dir, "train", normalize=False)
    baseline = mean_spectrum(train[i]["spectral"].numpy() for i in range(len(train)))
    baseline_volume = constant_volume(baseline, config.height, config.width)
    zero_volume = np.zeros_like(baseline_volume)

    count = len(data) if max_clips is None else min(max_clips, len(data))
    per_method: dict[str, list[dict]] = {
        name: [] for name in (["model"] if pipeline else []) + ["zero_motion", "mean_spectrum"]
    }
    per_method["ground_truth"] = []
    per_method["truth_resampled"] = []
    groups = _same_photo_groups(data, count)
    siblings = {
        index: members[(position + 1) % len(members)]
        for members in groups
        for position, index in enumerate(members)
    }
    # expected amplitude: per photo, sums of |S| over the first-half clips (per method) and
    # over the second-half clips (the truth: the target)
    half_of = {}
    for group_index, members in enumerate(groups):
        half = len(members) // 2
        half_of.update({i: (group_index, "A") for i in members[:half]})
        half_of.update({i: (group_index, "B") for i in members[half : 2 * half]})
    amp_sums: dict[tuple[int, str], np.ndarray] = {}
    lines = []
    for index in range(count):
        item = data[index]
        true = item["spectral"].numpy().astype(np.float64)
        predictions = {"zero_motion": zero_volume, "mean_spectrum": baseline_volume}
        predictions["ground_truth"] = true
        if index in siblings:
            sibling = data[siblings[index]]["spectral"].numpy().astype(np.float64)
            predictions["truth_resampled"] = sibling
        if pipeline is not None:
            generator = torch.Generator().manual_seed(seed + index)
            result = pipeline(
                item["image"],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                loop_guidance_scale=loop_guidance_scale,
                generator=generator,
                num_frames=2,  # displacements are recomputed here; keep the call light
                renderer=None,
                mask_provider=mask_provider,
            )
            predictions["model"] = result.spectral[0]
        if index in half_of:
            group_index, side = half_of[index]
            if side == "A":
                predictions_a = dict(predictions, truth_resampled=true)
                for method in per_method:
                    if method in predictions_a and method != "ground_truth":
                        key = (group_index, method)
                        amp_sums[key] = amp_sums.get(key, 0) + amplitude(predictions_a[method])
            else:
                key = (group_index, "target")
                amp_sums[key] = amp_sums.get(key, 0) + amplitude(true)
        for method in per_method:
            if method not in predictions:
                continue
            metrics = motion_metrics(predictions[method], true, config.num_frames)
            per_method[method].append(metrics)
            lines.append({"clip_id": item["clip_id"], "method": method, **metrics})

    if out_dir is not None:
        _write_csv(Path(out_dir) / "motion_metrics.csv", lines)
    rows = [_summarise(method, clips) for method, clips in per_method.items() if clips]
    for row in rows:
        errors = [
            float(np.abs(amp_sums[g, row["method"]] - amp_sums[g, "target"]).mean())
            / (len(members) // 2)  # both sums hold len // 2 volumes
            for g, members in enumerate(groups)
            if (g, row["method"]) in amp_sums
        ]
        row["expected_amp_error_px"] = float(np.mean(errors)) if errors else float("nan")
        row["num_photos"] = len(errors)
    return rows


def _same_photo_groups(data, count: int) -> list[list[int]]:
    """Clip indices (among the first ``count``) grouped by their first frame: one photo
    coded into several videos decodes to slightly different frames (video compression), so
    frames within ``SAME_PHOTO_TOLERANCE`` mean absolute difference count as one photo.
    Groups of two or more clips only."""
    representatives: list[np.ndarray] = []
    groups: list[list[int]] = []
    for index in range(count):
        photo = data[index]["image"].numpy().astype(np.float32)  # [-1, 1]
        for group, representative in zip(groups, representatives, strict=True):
            if representative.shape == photo.shape:
                if np.abs(representative - photo).mean() < SAME_PHOTO_TOLERANCE:
                    group.append(index)
                    break
        else:
            representatives.append(photo)
            groups.append([index])
    return [members for members in groups if len(members) > 1]


def _write_csv(path: Path, lines: list[dict]) -> None:
    from data.io_utils import atomic_write, ensure_writable_dir

    ensure_writable_dir(path.parent)
    keys = ["clip_id", "method", *METRIC_KEYS, "mean_step_px", "amp_error_per_freq"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for line in lines:
        line = dict(line)
        line["amp_error_per_freq"] = " ".join(f"{v:.5g}" for v in line["amp_error_per_freq"])
        writer.writerow(line)
    atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))


def motion_table_markdown(rows: list[dict]) -> str:
    """A markdown table of ``evaluate_motion``'s rows (means over clips, px)."""

    def fmt(value: float, digits: int = 3) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"

    header = (
        "| method | clips | amplitude error (px) | expected amplitude error (px) "
        "| magnitude corr | loop error (px) | loop / step | D[0] offset (px) | RMS motion (px) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r['method']} | {r['num_clips']} | {fmt(r['amp_error_px'], 4)} "
        f"| {fmt(r.get('expected_amp_error_px', math.nan), 4)} "
        f"| {fmt(r['magnitude_corr'])} | {fmt(r['loop_error_px'], 4)} | {fmt(r['loop_ratio'], 2)} "
        f"| {fmt(r['reference_offset_px'], 4)} | {fmt(r['rms_motion_px'], 4)} |\n"
        for r in rows
    )
    return header + body
