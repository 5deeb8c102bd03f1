"""Torch datasets over a folder written by ``prepare_data.py``.

A sample is one clip: its first frame and its normalised spectral volume, read from one
small ``.npz`` (no video decoding, no flow stacks). ``in_memory=True`` keeps every clip
in RAM after the first read, for small datasets and many epochs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data.config import MotionConfig
from data.spectral import FrequencyNormalizer


class SpectralVolumeDataset(Dataset):
    """(image, normalised spectral volume) pairs of one split of a prepared folder.

    Each item is a dict:
        ``image``: (3, H, W) float32 in [-1, 1], the clip's first frame;
        ``spectral``: (K, 4, H, W) float32, normalised with the training-split statistics
            (``normalize=False`` gives raw coefficients in pixels);
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
        if self.normalizer is not None:
            spectral = self.normalizer.normalize(spectral)
        spectral = torch.from_numpy(spectral)
        return {"image": image, "spectral": spectral, "clip_id": self.clips[index]["clip_id"]}
