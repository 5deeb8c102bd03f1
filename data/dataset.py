"""Torch datasets over a folder written by ``prepare_data.py``.

A sample is one clip: its first frame, its normalised spectral volume and the "may move"
mask of its own motion (``motion_energy_mask``), read from one small ``.npz`` (no video
decoding, no flow stacks). ``in_memory=True`` keeps every clip
in RAM after the first read, for small datasets and many epochs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data.config import MotionConfig
from data.spectral import FrequencyNormalizer, rms_displacement

# motion_energy_mask's rule (docs/MOTION_UNET.md): a clip whose 95th-percentile RMS
# displacement is below STILL_CLIP_PX pixels is still (all-zero mask); otherwise the mask
# ramps from 0 at 10 % to 1 at 30 % of that percentile, is dilated by MASK_DILATE_PX and
# feathered (box blur of the same radius), like a brushed mask.
STILL_CLIP_PX = 0.05
MASK_RAMP = (0.1, 0.3)
MASK_DILATE_PX = 3


def motion_energy_mask(spectral: np.ndarray) -> np.ndarray:
    """The "may move" mask of a clip from its own motion: ``(K, 4, H, W)`` raw -> ``(H, W)``.

    Per pixel, the RMS displacement about the mean position, from the spectral volume in
    pixels (``displacement_to_spectral``, ``norm="forward"`` FFT):
    ``rms(p) = sqrt(2 * sum_{k >= 1} |S_k(p)|^2)`` over x and y (bin 0 is the mean offset,
    not motion). Relative to the clip's 95th percentile ``r95``: ``clip((rms / r95 -
    0.1) / 0.2, 0, 1)``, then a 7x7 max filter (the brush covers the rim of what moves,
    whose motion can pass through zero inside a region) and a 7x7 box blur (a feathered
    edge). A still clip (``r95 < 0.05`` px) gives all zeros: nothing may move.

    Args:
        spectral: ``(K, 4, H, W)`` float, channels (re_x, im_x, re_y, im_y), pixels.

    Returns:
        ``(H, W)`` float32 in [0, 1].
    """
    import cv2

    rms = rms_displacement(np.asarray(spectral, dtype=np.float32))
    r95 = float(np.percentile(rms, 95))
    if r95 < STILL_CLIP_PX:
        return np.zeros(rms.shape, dtype=np.float32)
    low, high = MASK_RAMP
    mask = np.clip((rms / r95 - low) / (high - low), 0.0, 1.0).astype(np.float32)
    size = 2 * MASK_DILATE_PX + 1
    mask = cv2.dilate(mask, np.ones((size, size), np.uint8))
    return np.clip(cv2.blur(mask, (size, size)), 0.0, 1.0).astype(np.float32)


class SpectralVolumeDataset(Dataset):
    """(image, normalised spectral volume) pairs of one split of a prepared folder.

    Each item is a dict:
        ``image``: (3, H, W) float32 in [-1, 1], the clip's first frame;
        ``spectral``: (K, 4, H, W) float32, normalised with the training-split statistics
            (``normalize=False`` gives raw coefficients in pixels);
        ``motion_mask``: (1, H, W) float32 in [0, 1], where the clip moves
            (``motion_energy_mask`` of the raw volume);
        ``clip_id``: str.

    Args:
        root: a folder written by ``prepare_data.py`` (manifest.json, normalization.json).
        split: "train", "val" or "all".
        normalize: apply the frequency-adaptive normalisation.
        in_memory: cache decoded clips (float16 as stored) after the first read.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        normalize: bool = True,
        in_memory: bool = False,
    ) -> None:
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{self.root}: no manifest.json; run prepare_data.py --videos ... --out {self.root}"
            )
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        manifest = json.loads(manifest_path.read_text())
        self.config = MotionConfig.from_dict(manifest["config"])
        self.clips = [
            clip
            for clip in manifest["clips"]
            if clip["status"] == "ok" and split in ("all", clip["split"])
        ]
        self.normalizer = (
            FrequencyNormalizer.load_json(self.root / "normalization.json") if normalize else None
        )
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if in_memory else None

    def __len__(self) -> int:
        return len(self.clips)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        path = self.root / self.clips[index]["file"]
        try:
            with np.load(path) as data:
                arrays = (data["first_frame"], data["spectral"])
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path}: unreadable clip file ({error})") from None
        if self._cache is not None:
            self._cache[index] = arrays
        return arrays

    def __getitem__(self, index: int) -> dict:
        first_frame, spectral = self._load(index)
        image = torch.from_numpy(first_frame).permute(2, 0, 1).float() / 127.5 - 1.0
        # numpy here: element-wise work on one sample is faster single-threaded than
        # through torch's thread pool, and DataLoader workers are single-threaded anyway.
        spectral = spectral.astype(np.float32)
        motion_mask = torch.from_numpy(motion_energy_mask(spectral))[None]
        if self.normalizer is not None:
            spectral = self.normalizer.normalize(spectral)
        spectral = torch.from_numpy(spectral)
        return {
            "image": image,
            "spectral": spectral,
            "motion_mask": motion_mask,
            "clip_id": self.clips[index]["clip_id"],
        }
