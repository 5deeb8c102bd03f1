"""Video I/O: read frames with their real timestamps, resample to a fixed rate, resize, write.

Reading (``iter_frames`` lazily, ``read_video`` into memory) returns RGB uint8 frames with
the *presentation timestamp* of each frame in seconds, because containers lie: an AVI can
declare 15 fps and hold 2.3 real frames per second at irregular times, and a decoder that
forces a constant rate (``imageio``'s default) repeats frames to fill the gaps. Consecutive
identical frames are dropped (they are not new samples of the motion) and the timestamp of
the first occurrence is kept. See docs/VIDEO_IO.md for the rules.

Two decoders, one interface: OpenCV's FFmpeg backend (in-process, ``CAP_PROP_POS_MSEC``
gives each frame's timestamp) and, when OpenCV cannot open a file, the ``ffmpeg`` binary
bundled with ``imageio-ffmpeg`` (timestamps parsed from its ``showinfo`` filter, no frame
rate conversion). Grayscale and 10/16-bit sources come out as 8-bit RGB from both.

Frames: ``(N, H, W, 3)`` uint8 RGB; timestamps: ``(N,)`` float64 seconds; sizes are given as
``(width, height)`` like ``MotionConfig.size``.
"""

from __future__ import annotations

import math
import queue
import re
import subprocess
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from data.config import MotionConfig
from data.io_utils import atomic_write, ensure_writable_dir

BACKENDS = ("auto", "opencv", "ffmpeg")
RESIZE_MODES = ("crop", "pad", "stretch")
# Colours of a GIF's one palette: 255, not 256, so that an index stays free for the
# transparent pixels of delta frames (write_gif).
GIF_COLORS = 255


class VideoNotFoundError(FileNotFoundError, ValueError):
    """The video path does not exist (both a ``FileNotFoundError`` and a ``ValueError``)."""


# ----------------------------------------------------------------------------- reading


@dataclass
class Video:
    """A decoded clip.

    Attributes:
        frames: ``(N, H, W, 3)`` uint8 RGB, duplicates removed.
        timestamps: ``(N,)`` float64 presentation time of each frame in seconds, increasing.
        declared_fps: the frame rate the container claims (may be wrong; see ``measured_fps``).
        source: the path it was read from.
        duplicates_dropped: consecutive identical frames removed while reading.
        backend: ``"opencv"`` or ``"ffmpeg"``, the decoder that was used.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    declared_fps: float
    source: str
    duplicates_dropped: int = 0
    backend: str = ""

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def duration(self) -> float:
        """Seconds from the first to the last kept frame."""
        return float(self.timestamps[-1] - self.timestamps[0]) if len(self) else 0.0

    @property
    def measured_fps(self) -> float:
        """Real samples per second: ``(N - 1) / duration`` (``nan`` for fewer than 2 frames)."""
        return (len(self) - 1) / self.duration if self.duration > 0 else math.nan


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares, without decoding (``probe_video``)."""

    width: int
    height: int
    declared_fps: float
    declared_frames: int
    source: str

    @property
    def declared_duration(self) -> float:
        return self.declared_frames / self.declared_fps if self.declared_fps > 0 else math.nan


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise VideoNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a video file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), not a video")
    return path


def _open_capture(path: Path) -> cv2.VideoCapture | None:
    # CAP_FFMPEG only: other backends would treat "x.mp4" as an image-sequence pattern.
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if cap.isOpened():
        return cap
    cap.release()
    return None


def probe_video(path: str | Path) -> VideoInfo:
    """Read the container's declared size, frame rate and frame count without decoding.

    Raises:
        ValueError: ``path`` is missing, empty or cannot be opened as a video.
    """
    path = _check_file(path)
    cap = _open_capture(path)
    if cap is None:
        raise ValueError(f"{path}: not a video file (cannot open it with OpenCV/FFmpeg)")
    try:
        return VideoInfo(
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            declared_fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            declared_frames=int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            source=str(path),
        )
    finally:
        cap.release()


_SHOWINFO = re.compile(r"\bn:\s*\d+\s+pts:\s*\S+\s+pts_time:(\S+).*?\bs:(\d+)x(\d+)")
_STREAM_FPS = re.compile(r"Stream #.*Video:.*?([\d.]+) fps")
_DURATION = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")


class _FFmpegProcess:
    """``ffmpeg -vf showinfo -fps_mode passthrough -f rawvideo -pix_fmt rgb24 -``.

    ``showinfo`` logs every frame (its timestamp and size) on stderr before the frame is
    written to stdout, so a thread turns stderr into a queue of ``(seconds, w, h)`` and the
    reader takes one entry, then exactly ``w * h * 3`` bytes. ``-fps_mode passthrough``
    stops ffmpeg from duplicating or dropping frames to reach a constant rate.
    """

    def __init__(self, path: Path, start: float):
        import imageio_ffmpeg  # imported here: only this fallback needs it

        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin"]
        if start > 0:
            cmd += ["-ss", f"{start:.6f}"]  # accurate seek; output times then start at 0
        cmd += ["-i", str(path), "-map", "0:v:0", "-vf", "showinfo", "-fps_mode", "passthrough"]
        cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        self.offset = start
        self.declared_fps = 0.0
        self.declared_duration = math.nan
        self.errors: list[str] = []
        self.infos: queue.Queue = queue.Queue()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.thread = threading.Thread(target=self._read_stderr, daemon=True)
        self.thread.start()

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            match = _SHOWINFO.search(line)
            if match:
                t_text, w, h = match.groups()
                t = float(t_text) if t_text not in ("NOPTS", "nan") else math.nan
                self.infos.put((t + self.offset, int(w), int(h)))
            elif duration := _DURATION.search(line):
                h, m, sec = duration.groups()
                self.declared_duration = 3600 * int(h) + 60 * int(m) + float(sec)
            elif (fps := _STREAM_FPS.search(line)) and not self.declared_fps:
                self.declared_fps = float(fps.group(1))
            elif "showinfo" not in line and line.strip():
                self.errors = (self.errors + [line])[-5:]
        self.infos.put(None)

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        while (info := self.infos.get()) is not None:
            t, w, h = info
            data = self.proc.stdout.read(w * h * 3)
            if len(data) < w * h * 3:
                return
            yield t, np.frombuffer(data, np.uint8).reshape(h, w, 3).copy()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.thread.join(timeout=5)
        self.proc.stderr.close()


class FrameReader:
    """Iterable of ``(seconds, frame)`` pairs; see ``iter_frames``. Use as a context manager.

    After (or during) iteration, ``duplicates_dropped`` counts the identical consecutive
    frames that were skipped and ``backend`` names the decoder in use.
    """

    def __init__(
        self,
        path: Path,
        start: float,
        end: float | None,
        max_frames: int | None,
        size: tuple[int, int] | None,
        resize_mode: str,
        drop_duplicates: bool,
        duplicate_tol: int,
        backend: str,
    ):
        self.path = path
        self.start, self.end, self.max_frames = start, end, max_frames
        self.size, self.resize_mode = size, resize_mode
        self.drop_duplicates, self.duplicate_tol = drop_duplicates, duplicate_tol
        self.duplicates_dropped = 0
        self.declared_fps = 0.0
        self.backend = backend
        self._cap: cv2.VideoCapture | None = None
        self._ffmpeg: _FFmpegProcess | None = None
        self._used = False
        self._decoded = 0  # frames OpenCV decoded, including those before `start`
        self._declared_duration = math.nan  # seconds, from the container header

    def _opencv_frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """Yield ``(seconds, rgb)`` from the OpenCV capture, skipping frames before ``start``."""
        while self._cap.grab():
            self._decoded += 1
            t = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if t < self.start - 1e-6:
                continue  # grab() decodes but skips the colour conversion of frames we drop
            ok, bgr = self._cap.retrieve()
            if not ok or bgr is None:
                return
            if bgr.ndim == 2 or bgr.shape[2] == 1:
                bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
            if bgr.dtype != np.uint8:  # only if a build hands out 16-bit frames
                bgr = (bgr.astype(np.float32) * (255.0 / np.iinfo(bgr.dtype).max)).round()
                bgr = bgr.astype(np.uint8)
            yield t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def _raw_frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """Open the decoder (OpenCV first in ``auto``) and yield its first and later frames."""
        if self.backend in ("auto", "opencv"):
            self._cap = _open_capture(self.path)
            if self._cap is not None:
                self.declared_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
                count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0
                if self.declared_fps > 0 and count > 0:
                    self._declared_duration = count / self.declared_fps
                frames = self._opencv_frames()
                first = next(frames, None)
                if first is not None:
                    self.backend = "opencv"
                    yield first
                    yield from frames
                    return
                self._cap.release()
                self._cap = None
                if self._decoded:  # decodable, just nothing at or after `start`
                    return
            if self.backend == "opencv":
                raise ValueError(
                    f"{self.path}: not a video file or no decodable frames (OpenCV/FFmpeg "
                    f"could not read it; truncated files lose their index when cut)"
                )
        self.backend = "ffmpeg"
        self._ffmpeg = _FFmpegProcess(self.path, self.start)
        frames = self._ffmpeg.frames()
        first = next(frames, None)
        if first is None:
            detail = "; ".join(self._ffmpeg.errors[-2:]) or "no video stream"
            raise ValueError(f"{self.path}: not a video file or no decodable frames ({detail})")
        self.declared_fps = self._ffmpeg.declared_fps
        self._declared_duration = self._ffmpeg.declared_duration
        yield first
        yield from frames

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        if self._used:
            raise RuntimeError("a FrameReader can be iterated once; call iter_frames again")
        self._used = True
        fallback_dt = None
        prev: np.ndarray | None = None
        last_t = last_decoded_t = -math.inf
        count = 0
        stopped_early = False  # by `end` or `max_frames`, not by the decoder
        try:
            for t, frame in self._raw_frames():
                if self.end is not None and t > self.end + 1e-6:
                    stopped_early = True
                    break
                last_decoded_t = max(last_decoded_t, t)
                if (
                    prev is not None
                    and self.drop_duplicates
                    and _same(prev, frame, self.duplicate_tol)
                ):
                    self.duplicates_dropped += 1
                    continue
                if not t > last_t:  # missing or non-increasing timestamp: step by 1/fps
                    if fallback_dt is None:
                        fallback_dt = 1.0 / self.declared_fps if self.declared_fps > 0 else 1 / 30
                        warnings.warn(
                            f"{self.path}: missing or non-increasing timestamps; using steps "
                            f"of {fallback_dt:.4f} s",
                            stacklevel=2,
                        )
                    t = last_t + fallback_dt if last_t > -math.inf else 0.0
                prev, last_t = frame, t
                if self.size is not None:
                    frame = resize_cover_crop(frame, self.size, mode=self.resize_mode)
                yield t, frame
                count += 1
                if self.max_frames is not None and count >= self.max_frames:
                    stopped_early = True
                    break
            if not stopped_early and count:
                self._check_complete(last_decoded_t)
        finally:
            self.close()

    def _check_complete(self, last_t: float) -> None:
        # last_t: time of the last decoded frame, kept or dropped as a duplicate
        """Warn when decoding stopped well before the declared end (a truncated file)."""
        frame_time = 1.0 / self.declared_fps if self.declared_fps > 0 else 0.0
        declared = self._declared_duration
        if math.isfinite(declared) and last_t + frame_time < 0.9 * declared:
            warnings.warn(
                f"{self.path}: decoding stopped at {last_t + frame_time:.2f} s of "
                f"{declared:.2f} s declared (truncated or damaged file); "
                f"returning the readable part",
                stacklevel=3,
            )

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._ffmpeg is not None:
            self._ffmpeg.close()
            self._ffmpeg = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _same(a: np.ndarray, b: np.ndarray, tol: int) -> bool:
    if a.shape != b.shape:
        return False
    if tol <= 0:
        return np.array_equal(a, b)
    return int(cv2.absdiff(a, b).max()) <= tol


def iter_frames(
    path: str | Path,
    *,
    start: float = 0.0,
    end: float | None = None,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    resize_mode: str = "crop",
    drop_duplicates: bool = True,
    duplicate_tol: int = 0,
    backend: str = "auto",
) -> FrameReader:
    """Decode a video lazily: one frame in memory at a time.

    Args:
        path: any file FFmpeg can decode (mp4, avi, mov, mkv, webm, ...).
        start, end: keep frames with timestamp in ``[start, end]`` seconds (``end=None``: to
            the end). Frames before ``start`` are decoded but not converted.
        max_frames: stop after this many kept frames.
        size: ``(width, height)`` to resize each frame to right after decoding (memory stays
            that of the small frames), with ``resize_mode`` as in ``resize_cover_crop``.
        drop_duplicates: skip a frame identical to the previous kept one (a repeated frame,
            not a new sample); the kept copy has the timestamp of the first occurrence.
        duplicate_tol: frames whose largest absolute pixel difference is ``<= duplicate_tol``
            count as identical (0: bit-identical; re-encoded duplicates may need 2-4).
        backend: ``"auto"`` (OpenCV, then the ffmpeg binary if OpenCV cannot read the file),
            ``"opencv"`` or ``"ffmpeg"``.

    Returns:
        A ``FrameReader``: iterate it for ``(seconds, frame)`` pairs, frame ``(H, W, 3)``
        uint8 RGB. Errors (``ValueError`` naming the path) are raised when iteration starts,
        except for a missing or empty file, which raise here.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if end is not None and end < start:
        raise ValueError(f"end ({end}) must not be before start ({start})")
    path = _check_file(path)
    return FrameReader(
        path, max(0.0, start), end, max_frames, size, resize_mode, drop_duplicates,
        duplicate_tol, backend,
    )  # fmt: skip


def read_video(
    path: str | Path,
    *,
    start: float = 0.0,
    end: float | None = None,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    resize_mode: str = "crop",
    drop_duplicates: bool = True,
    duplicate_tol: int = 0,
    backend: str = "auto",
) -> Video:
    """Decode a video (or the part selected by ``start``/``end``/``max_frames``) into memory.

    Arguments are those of ``iter_frames``. For long or large videos bound the memory with
    ``size`` and ``max_frames`` / ``end``: 150 frames at 256x160 take 18 MB, a 10 min 1080p
    clip at full size 90 GB.

    Raises:
        ValueError: missing (``VideoNotFoundError``), empty, non-video or undecodable file.
    """
    reader = iter_frames(
        path, start=start, end=end, max_frames=max_frames, size=size, resize_mode=resize_mode,
        drop_duplicates=drop_duplicates, duplicate_tol=duplicate_tol, backend=backend,
    )  # fmt: skip
    times, frames = [], []
    for t, frame in reader:
        times.append(t)
        frames.append(frame)
    if not frames:
        raise ValueError(f"{path}: no frames between {start} s and {end} s")
    return Video(
        frames=np.stack(frames),
        timestamps=np.asarray(times, dtype=np.float64),
        declared_fps=reader.declared_fps,
        source=str(path),
        duplicates_dropped=reader.duplicates_dropped,
        backend=reader.backend,
    )


# ----------------------------------------------------------------------------- resampling


@dataclass
class ResampleInfo:
    """How a clip was resampled (``resample_to_fps``).

    Attributes:
        indices: ``(T,)`` source frame used for each output frame.
        target_times: ``(T,)`` seconds of each output frame.
        num_distinct: distinct source frames used; ``T - num_distinct`` outputs are repeats.
        source_fps: real rate of the source, ``(N - 1) / (t_last - t_first)`` (nan if N < 2).
        max_time_error: largest ``|target time - chosen frame's time|`` in seconds.
    """

    indices: np.ndarray
    target_times: np.ndarray
    num_distinct: int
    source_fps: float
    max_time_error: float
    extra: dict = field(default_factory=dict)

    @property
    def repeated_fraction(self) -> float:
        """Share of output frames that repeat an earlier output frame's source frame."""
        return 1.0 - self.num_distinct / len(self.indices)


def resample_to_fps(
    frames: np.ndarray | Sequence[np.ndarray],
    timestamps: np.ndarray,
    fps: float,
    num_frames: int | None = None,
    start: float = 0.0,
    *,
    min_fps_ratio: float | None = None,
) -> tuple[np.ndarray, ResampleInfo]:
    """Resample frames at irregular times to a constant rate by picking the nearest frame.

    Nearest, not a linear blend: blending two frames doubles every moving edge (a ghost,
    not a displaced image) and optical flow reads that as fake, smaller motion.

    Args:
        frames: ``(N, H, W, C)`` array or sequence of frames.
        timestamps: ``(N,)`` increasing seconds.
        fps: output rate.
        num_frames: output length T; ``None`` = every target time from ``start`` up to the
            last timestamp.
        start: time of the first output frame, seconds.
        min_fps_ratio: raise if the source's real rate is below ``min_fps_ratio * fps``
            (``None``: never; read ``info.source_fps`` / ``info.num_distinct`` instead).

    Returns:
        ``(out, info)``: ``out`` is ``(T, H, W, C)``; ``info`` a ``ResampleInfo``.

    Raises:
        ValueError: the requested span runs past the video's end (more than half a source
        interval after the last frame), the source is too slow for ``min_fps_ratio``, or
        the inputs are inconsistent.
    """
    times = np.asarray(timestamps, dtype=np.float64)
    if times.ndim != 1 or len(times) != len(frames) or len(times) == 0:
        raise ValueError(
            f"timestamps must be (N,) with N = len(frames) >= 1; got {times.shape} "
            f"for {len(frames)} frames"
        )
    if np.any(np.diff(times) <= 0):
        raise ValueError("timestamps must be strictly increasing")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    span = times[-1] - times[0]
    source_fps = (len(times) - 1) / span if span > 0 else math.nan
    if min_fps_ratio is not None and not source_fps >= min_fps_ratio * fps:
        raise ValueError(
            f"source has {source_fps:.2f} real frames/s, below {min_fps_ratio} x {fps} fps "
            f"requested: most output frames would be repeats"
        )
    if num_frames is None:
        num_frames = int(math.floor((times[-1] - start) * fps + 1e-9)) + 1
    if num_frames < 1:
        raise ValueError(f"nothing to resample: start {start} s is after the last frame")
    target = start + np.arange(num_frames) / fps
    slack = 0.5 * (span / (len(times) - 1)) if len(times) > 1 else 0.5 / fps
    if target[0] < times[0] - slack or target[-1] > times[-1] + slack:
        raise ValueError(
            f"{num_frames} frames at {fps} fps from {start:.3f} s need [{target[0]:.3f}, "
            f"{target[-1]:.3f}] s, but the frames span [{times[0]:.3f}, {times[-1]:.3f}] s"
        )
    # Nearest neighbour in time; a tie goes to the earlier frame.
    right = np.clip(np.searchsorted(times, target, side="left"), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    use_left = np.abs(target - times[left]) <= np.abs(times[right] - target)
    indices = np.where(use_left, left, right)
    out = np.stack([frames[i] for i in indices])
    info = ResampleInfo(
        indices=indices,
        target_times=target,
        num_distinct=len(np.unique(indices)),
        source_fps=source_fps,
        max_time_error=float(np.abs(times[indices] - target).max()),
    )
    return out, info


# ----------------------------------------------------------------------------- resizing


def resize_cover_crop(
    frames: np.ndarray, size: tuple[int, int] | None = None, mode: str = "crop"
) -> np.ndarray:
    """Resize one frame ``(H, W, C)`` or a clip ``(N, H, W, C)`` to ``size = (width, height)``.

    Modes:
        ``"crop"`` (default): keep the aspect ratio, scale to cover the target, centre crop.
        ``"pad"``: keep the aspect ratio, scale to fit inside, centre on black.
        ``"stretch"``: scale x and y independently (distorts; motion statistics change).
    Shrinking uses ``cv2.INTER_AREA`` (averages, no aliasing), enlarging ``INTER_LINEAR``.
    ``size=None`` uses ``MotionConfig().size``.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
    width, height = size if size is not None else MotionConfig().size
    if frames.ndim == 4:
        out = np.empty((len(frames), height, width) + frames.shape[3:], dtype=frames.dtype)
        for i, frame in enumerate(frames):
            out[i] = resize_cover_crop(frame, (width, height), mode)
        return out
    if frames.ndim not in (2, 3):
        raise ValueError(f"expected (H, W[, C]) or (N, H, W, C), got shape {frames.shape}")
    h, w = frames.shape[:2]
    if mode == "stretch":
        return _resize(frames, width, height)
    scale = max(width / w, height / h) if mode == "crop" else min(width / w, height / h)
    new_w = max(1, round(w * scale)) if mode == "pad" else max(width, round(w * scale))
    new_h = max(1, round(h * scale)) if mode == "pad" else max(height, round(h * scale))
    if mode == "pad":
        new_w, new_h = min(new_w, width), min(new_h, height)
    scaled = _resize(frames, new_w, new_h)
    if mode == "crop":
        x0, y0 = (new_w - width) // 2, (new_h - height) // 2
        return np.ascontiguousarray(scaled[y0 : y0 + height, x0 : x0 + width])
    out = np.zeros((height, width) + frames.shape[2:], dtype=frames.dtype)
    x0, y0 = (width - new_w) // 2, (height - new_h) // 2
    out[y0 : y0 + new_h, x0 : x0 + new_w] = scaled
    return out


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image.copy()
    shrinking = width * height < w * h
    out = cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    return out.reshape((height, width) + image.shape[2:])


# ----------------------------------------------------------------------------- scene cuts


def scene_cut_scores(frames: Iterable[np.ndarray]) -> np.ndarray:
    """Colour-histogram distance between consecutive frames, ``(N - 1,)`` in ``[0, 1]``.

    Each frame (RGB uint8) is shrunk to 64 px wide, turned into a 16x4x4-bin HSV histogram,
    and compared to the previous one with the Bhattacharyya distance (0 identical, 1
    disjoint). Motion within a shot moves pixels but barely changes the histogram; a cut
    replaces it. Accepts any iterable, so a ``FrameReader`` can stream a long video.
    """
    scores, prev = [], None
    for frame in frames:
        h, w = frame.shape[:2]
        small = cv2.resize(frame, (64, max(1, round(64 * h / w))), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, [16, 4, 4], [0, 180, 0, 256, 0, 256])
        hist = cv2.normalize(hist, None, alpha=1.0, norm_type=cv2.NORM_L1)
        if prev is not None:
            scores.append(cv2.compareHist(prev, hist, cv2.HISTCMP_BHATTACHARYYA))
        prev = hist
    return np.asarray(scores, dtype=np.float64)


# Tuned on bikes.mp4 (docs/VIDEO_IO.md): its cuts score >= 0.35, within-shot changes <= 0.2.
SCENE_CUT_THRESHOLD = 0.3


def detect_scene_cuts(
    frames: Iterable[np.ndarray], threshold: float = SCENE_CUT_THRESHOLD
) -> list[int]:
    """Indices ``i`` where a new shot starts (frame ``i`` differs from frame ``i - 1``).

    Uses ``scene_cut_scores``; a cut is a score above ``threshold``.
    """
    return [int(i) + 1 for i in np.flatnonzero(scene_cut_scores(frames) > threshold)]


def shot_ranges(num_frames: int, cuts: Sequence[int]) -> list[tuple[int, int]]:
    """Split ``range(num_frames)`` at ``cuts`` into ``[(start, stop), ...]`` (stop exclusive)."""
    bounds = [0] + sorted(c for c in cuts if 0 < c < num_frames) + [num_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


# ----------------------------------------------------------------------------- writing


def _as_uint8_clip(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    clip = np.asarray(frames)
    if clip.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8, got {clip.dtype}; convert with "
            f"(x * 255).round().clip(0, 255).astype(np.uint8) for values in [0, 1]"
        )
    if clip.ndim == 3:  # (N, H, W) grayscale
        clip = np.repeat(clip[..., None], 3, axis=3)
    if clip.ndim != 4 or clip.shape[3] not in (1, 3) or len(clip) == 0:
        raise ValueError(f"frames must be (N, H, W, 3) with N >= 1, got shape {clip.shape}")
    if clip.shape[3] == 1:
        clip = np.repeat(clip, 3, axis=3)
    return np.ascontiguousarray(clip)


def _prepare_output(path: str | Path, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists; pass overwrite=True to replace it")
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give a file name")
    ensure_writable_dir(path.parent)
    return path


def write_mp4(
    frames: np.ndarray | Sequence[np.ndarray],
    path: str | Path,
    fps: float,
    *,
    quality: float = 8.0,
    overwrite: bool = False,
) -> Path:
    """Write an H.264 MP4 (libx264, yuv420p, ``+faststart``) that every player opens.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB (or ``(N, H, W)`` grayscale). yuv420p needs even
            sizes: an odd width or height gets one replicated column/row on the right/bottom.
        fps: frame rate.
        quality: 1 (worst) .. 10 (best, near lossless); x264 CRF = ``51 * (1 - quality / 10)``,
            so 8 gives CRF 10.
        overwrite: replace an existing file (otherwise ``FileExistsError``).
    Returns the path. The file appears atomically (temp file in the same folder, renamed).
    """
    import imageio_ffmpeg

    if not 1 <= quality <= 10:
        raise ValueError(f"quality must be in [1, 10], got {quality}")
    path = _prepare_output(path, overwrite)
    clip = _as_uint8_clip(frames)
    pad_h, pad_w = clip.shape[1] % 2, clip.shape[2] % 2
    if pad_h or pad_w:
        clip = np.pad(clip, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    crf = round(51 * (1 - quality / 10))

    def write(tmp: Path) -> None:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (clip.shape[2], clip.shape[1]), fps=fps, codec="libx264", quality=None,
            macro_block_size=1, ffmpeg_log_level="error",
            output_params=["-crf", str(crf), "-movflags", "+faststart", "-f", "mp4"],
        )  # fmt: skip
        writer.send(None)  # start ffmpeg
        for frame in clip:
            writer.send(frame)
        writer.close()

    atomic_write(path, write)
    return path


def write_gif(
    frames: np.ndarray | Sequence[np.ndarray],
    path: str | Path,
    fps: float,
    *,
    loop: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write an animated GIF (Pillow; ``loop=0`` loops forever).

    GIF stores delays in hundredths of a second, so the played rate is ``100 / round(100 /
    fps)`` (30 fps plays at 33.3). Colours are quantised to **one palette for the whole
    clip** (fast octree over up to 8 frames spread over it, no dithering): still regions
    keep exactly the same colours in every frame. Per-frame palettes (imageio's default)
    made still pixels flicker by 0.9 grey levels on average and took 25x longer for a
    150-frame 256x160 clip at the same mean error (docs/VIDEO_IO.md).

    The palette has ``GIF_COLORS`` (255) colours so that one index stays free: Pillow then
    stores every frame after the first as its changes only, the unchanged pixels in that
    transparent index, which compresses to almost nothing. An animation whose sky and
    buildings stand still shrinks several times; the decoded frames are the same.
    """
    from PIL import Image

    path = _prepare_output(path, overwrite)
    clip = _as_uint8_clip(frames)
    mosaic = np.concatenate(clip[:: max(1, len(clip) // 8)][:8], axis=0)
    palette = Image.fromarray(mosaic).quantize(colors=GIF_COLORS, method=Image.Quantize.FASTOCTREE)
    images = [
        Image.fromarray(frame).quantize(palette=palette, dither=Image.Dither.NONE) for frame in clip
    ]
    duration_ms = 1000.0 / fps

    def _write(tmp: Path) -> None:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:],
            duration=duration_ms, loop=loop, optimize=True,
        )  # fmt: skip

    atomic_write(path, _write)
    return path


def write_webp(
    frames: np.ndarray | Sequence[np.ndarray],
    path: str | Path,
    fps: float,
    *,
    quality: int = 90,
    loop: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write an animated WebP (Pillow): smaller than GIF, full colour; ``quality`` 0..100."""
    import imageio.v3 as iio

    path = _prepare_output(path, overwrite)
    clip = _as_uint8_clip(frames)
    atomic_write(
        path,
        lambda tmp: iio.imwrite(
            tmp,
            clip,
            extension=".webp",
            plugin="pillow",
            duration=1000.0 / fps,
            loop=loop,
            quality=quality,
        ),  # fmt: skip
    )
    return path


_WRITERS = {".mp4": write_mp4, ".gif": write_gif, ".webp": write_webp}


def write_video(
    frames: np.ndarray | Sequence[np.ndarray],
    path: str | Path,
    fps: float,
    *,
    overwrite: bool = False,
    **options,
) -> Path:
    """Write ``frames`` ``(N, H, W, 3)`` uint8 RGB to ``.mp4``, ``.gif`` or ``.webp`` by extension.

    ``options`` go to the writer (``quality`` for mp4/webp, ``loop`` for gif/webp).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in _WRITERS:
        raise ValueError(f"{path}: unsupported extension; use one of {sorted(_WRITERS)}")
    return _WRITERS[suffix](frames, path, fps, overwrite=overwrite, **options)


# ----------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m data.video VIDEO...``: what the container claims vs what it holds."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--cut-threshold", type=float, default=SCENE_CUT_THRESHOLD)
    args = parser.parse_args(argv)
    for path in args.videos:
        info = probe_video(path)
        video = read_video(path, backend=args.backend, size=MotionConfig().size)
        steps = np.diff(video.timestamps)
        print(f"{path}: {info.width}x{info.height} ({video.backend} backend)")
        print(
            f"  declared: {info.declared_fps:.3f} fps, {info.declared_frames} frames, "
            f"{info.declared_duration:.2f} s"
        )
        print(
            f"  decoded:  {len(video) + video.duplicates_dropped} frames, "
            f"{video.duplicates_dropped} identical repeats dropped, {len(video)} kept over "
            f"{video.duration:.2f} s = {video.measured_fps:.3f} real fps"
        )
        if len(steps):
            print(
                f"  frame interval (s): min {steps.min():.4f}  median {np.median(steps):.4f}  "
                f"max {steps.max():.4f}"
            )
        scores = scene_cut_scores(video.frames)
        cuts = [int(i) + 1 for i in np.flatnonzero(scores > args.cut_threshold)]
        below = scores[scores <= args.cut_threshold]
        print(
            f"  scene cuts (threshold {args.cut_threshold}): at frames {cuts}, scores "
            f"{[round(float(scores[c - 1]), 3) for c in cuts]}; highest other score "
            f"{below.max() if len(below) else float('nan'):.3f}"
        )


if __name__ == "__main__":
    main()
