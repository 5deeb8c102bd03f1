"""Video I/O, optical flow, spectral-volume maths and normalisation, datasets."""

from data.config import SPECTRAL_CHANNELS, MotionConfig, parse_size

__all__ = ["SPECTRAL_CHANNELS", "MotionConfig", "parse_size"]
