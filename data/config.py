"""The one source of truth for the motion representation's constants.

A spectral volume is the temporal FFT of every pixel's displacement from the first
frame of a clip of ``num_frames`` frames at ``fps``, keeping the ``num_freqs`` lowest
frequency bins. These numbers travel with the prepared data (``dataset.json``) and with
trained models (their ``config.json``), so that sampling never guesses them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

# Channel layout of one frequency slice of a spectral volume (K, 4, H, W).
SPECTRAL_CHANNELS = ("re_x", "im_x", "re_y", "im_y")


@dataclass(frozen=True)
class MotionConfig:
    """Clip length, frame rate, number of kept frequencies and frame size.

    Attributes:
        num_frames: T, frames per clip (displacement fields D_0..D_{T-1}, D_0 = 0).
        fps: frames per second the clip is resampled to.
        num_freqs: K, lowest temporal frequency bins kept (bin k is k * fps / T Hz).
        width, height: frame size in pixels after resize-and-crop.
    """

    num_frames: int = 150
    fps: float = 30.0
    num_freqs: int = 16
    width: int = 256
    height: int = 160

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {self.num_frames}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not 1 <= self.num_freqs <= self.num_frames // 2 + 1:
            raise ValueError(
                f"num_freqs must be in [1, num_frames // 2 + 1 = {self.num_frames // 2 + 1}], "
                f"got {self.num_freqs}"
            )
        if self.width < 1 or self.height < 1:
            raise ValueError(f"frame size must be positive, got {self.width}x{self.height}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return (self.width, self.height)

    def frequencies_hz(self) -> list[float]:
        """Frequency of each kept bin in Hz: k * fps / T."""
        return [k * self.fps / self.num_frames for k in range(self.num_freqs)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> MotionConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> MotionConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"256x160"`` (W x H) into ``(256, 160)``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like WxH (e.g. 256x160), got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {text!r}")
    return width, height
