"""Invisible watermark on generated frames (the ``invisible-watermark`` package).

Stability AI's sampling tools mark every generated frame with a fixed 48-bit message,
embedded with the DWT-DCT method of ``imwatermark``; we embed the same message so that
their public decoder recognises our SVD / SV3D outputs as generated.

* ``embed_watermark(frames)``: ``(N, H, W, 3)`` uint8 RGB -> the same, marked.
* ``decode_watermark(frame)``: the 48 bits read back from one ``(H, W, 3)`` uint8 RGB frame.

The library refuses frames of fewer pixels than 256x256 (an area: 512x128 frames embed and
decode all 48 bits); smaller frames are returned unchanged (``can_watermark`` tells in
advance), as the reference tool leaves them.
"""

from __future__ import annotations

import numpy as np

# The 48-bit message of Stability AI's sampling scripts (also used by diffusers' SDXL).
WATERMARK_MESSAGE = 0b101100111110110010010000011110111011000110011110
WATERMARK_BITS = [int(bit) for bit in bin(WATERMARK_MESSAGE)[2:]]  # 48 ints, 0 or 1
WATERMARK_METHOD = "dwtDct"
MIN_WATERMARK_SIDE = 256  # px; the library needs H * W >= MIN_WATERMARK_SIDE ** 2
MIN_WATERMARK_AREA = MIN_WATERMARK_SIDE**2  # px, the check imwatermark's encoder makes
INSTALL_HINT = "pip install invisible-watermark (or pass --no_watermark)"


def can_watermark(height: int, width: int) -> bool:
    """Whether frames of this size (px) can carry the watermark: ``height * width >= 256**2``."""
    return height * width >= MIN_WATERMARK_AREA


def _imwatermark():
    try:
        import imwatermark
    except ImportError as error:
        raise ImportError(
            f"the invisible watermark needs imwatermark ({error}); {INSTALL_HINT}"
        ) from error
    return imwatermark


def embed_watermark(frames: np.ndarray) -> np.ndarray:
    """Mark every frame with ``WATERMARK_BITS``.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB.
    Returns:
        ``(N, H, W, 3)`` uint8 RGB, marked; unchanged (a copy) when ``H * W < 256 * 256``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if not can_watermark(*frames.shape[1:3]):
        return frames.copy()
    encoder = _imwatermark().WatermarkEncoder()
    encoder.set_watermark("bits", WATERMARK_BITS)
    marked = np.empty_like(frames)
    for index, frame in enumerate(frames):
        bgr = np.ascontiguousarray(frame[:, :, ::-1])  # the library works in OpenCV's BGR
        encoded = encoder.encode(bgr, WATERMARK_METHOD)
        marked[index] = np.clip(encoded, 0, 255).astype(np.uint8)[:, :, ::-1]
    return marked


def decode_watermark(frame: np.ndarray) -> list[int]:
    """The 48 bits embedded in one ``(H, W, 3)`` uint8 RGB frame (garbage if unmarked)."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or not can_watermark(*frame.shape[:2]):
        raise ValueError(
            f"need an (H, W, 3) frame of at least 256x256 px in area, got {frame.shape}"
        )
    decoder = _imwatermark().WatermarkDecoder("bits", len(WATERMARK_BITS))
    bits = decoder.decode(np.ascontiguousarray(frame[:, :, ::-1]), WATERMARK_METHOD)
    return [int(bit) for bit in bits]
