"""Video I/O: real timestamps, duplicate frames, odd formats, broken files, resampling,
resizing, writing and scene cuts. Every video is generated here (no shared data)."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from data.config import MotionConfig
from data.video import (
    VideoNotFoundError,
    detect_scene_cuts,
    iter_frames,
    probe_video,
    read_video,
    resample_to_fps,
    resize_cover_crop,
    scene_cut_scores,
    shot_ranges,
    write_gif,
    write_mp4,
    write_video,
)

BACKENDS = ["opencv", "ffmpeg"]


def texture(height: int, width: int, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    """Smooth random RGB texture, uint8 (compresses well, so codecs keep it accurately)."""
    noise = rng.random((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).round().astype(np.uint8)


def moving_clip(num: int, height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """``(num, H, W, 3)`` frames of a texture sliding 1 px right per frame (all distinct)."""
    base = texture(height, width + num, np.random.default_rng(seed))
    return np.stack([base[:, num - i : num - i + width] for i in range(num)])


def ffmpeg_encode(path: Path, frames: np.ndarray, rate: float, *args: str) -> Path:
    """Encode raw RGB ``frames`` read at ``rate`` fps with extra ffmpeg output ``args``."""
    height, width = frames.shape[1:3]
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(rate)]
    cmd += ["-i", "-", *args, str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True)
    return path


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_mp4_timestamps_and_pixels(tmp_path, backend):
    clip = moving_clip(12)
    path = write_mp4(clip, tmp_path / "clip.mp4", fps=24)
    video = read_video(path, backend=backend)
    assert video.backend == backend
    assert video.frames.shape == clip.shape and video.frames.dtype == np.uint8
    assert video.timestamps.dtype == np.float64
    np.testing.assert_allclose(video.timestamps, np.arange(12) / 24, atol=1e-3)
    assert video.declared_fps == pytest.approx(24)
    assert video.measured_fps == pytest.approx(24, rel=1e-3)
    assert np.abs(video.frames.astype(int) - clip).mean() < 6  # lossy, chroma at half size
    assert video.duplicates_dropped == 0


def test_backends_agree(tmp_path):
    path = write_mp4(moving_clip(8), tmp_path / "clip.mp4", fps=10)
    a, b = read_video(path, backend="opencv"), read_video(path, backend="ffmpeg")
    np.testing.assert_allclose(a.timestamps, b.timestamps, atol=1e-3)
    assert np.abs(a.frames.astype(int) - b.frames).max() <= 2  # same decoder, rgb conversion


@pytest.mark.parametrize("backend", BACKENDS)
def test_irregular_timestamps_and_duplicates(tmp_path, backend):
    """Variable frame rate (t_n = 0.01 n^2 s) with repeated frames: repeats are dropped and
    each kept frame has the time of its first occurrence."""
    distinct = moving_clip(5)
    order = [0, 0, 1, 2, 2, 2, 3, 4]  # indices into distinct, repeats included
    path = ffmpeg_encode(
        tmp_path / "vfr.mkv", distinct[order], 10,
        "-vf", "settb=1/1000,setpts=N*N*0.01/TB", "-fps_mode", "passthrough",
        "-enc_time_base", "1/1000", "-c:v", "ffv1",
    )  # fmt: skip
    video = read_video(path, backend=backend)
    first_seen = [0, 2, 3, 6, 7]
    np.testing.assert_allclose(video.timestamps, 0.01 * np.square(first_seen), atol=1e-3)
    np.testing.assert_array_equal(video.frames, distinct)  # ffv1 is lossless
    assert video.duplicates_dropped == 3
    kept = read_video(path, backend=backend, drop_duplicates=False)
    assert len(kept) == len(order)


@pytest.mark.parametrize("backend", BACKENDS)
def test_container_that_claims_more_frames_than_it_has(tmp_path, backend):
    """An AVI stored at 15 fps whose picture changes 2.5 times a second (each frame repeated
    6 times), like tree.avi: the measured rate is the real one."""
    distinct = moving_clip(4)
    path = ffmpeg_encode(tmp_path / "slow.avi", np.repeat(distinct, 6, axis=0), 15, "-c:v", "ffv1")
    video = read_video(path, backend=backend)
    assert video.declared_fps == pytest.approx(15, rel=1e-3)
    assert len(video) == 4 and video.duplicates_dropped == 20
    np.testing.assert_allclose(video.timestamps, np.arange(4) * 0.4, atol=1e-3)
    assert video.measured_fps == pytest.approx(2.5, rel=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grayscale_video_gives_three_equal_channels(tmp_path, backend):
    clip = moving_clip(4)
    path = ffmpeg_encode(tmp_path / "gray.mkv", clip, 10, "-c:v", "ffv1", "-pix_fmt", "gray")
    video = read_video(path, backend=backend)
    assert video.frames.shape == clip.shape
    np.testing.assert_array_equal(video.frames[..., 0], video.frames[..., 1])
    np.testing.assert_array_equal(video.frames[..., 0], video.frames[..., 2])
    gray = cv2.cvtColor(clip[0], cv2.COLOR_RGB2GRAY).astype(int)
    assert np.abs(video.frames[0, ..., 0].astype(int) - gray).mean() < 3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv444p16le"])
def test_high_bit_depth_video_gives_uint8(tmp_path, backend, pix_fmt):
    clip = moving_clip(4)
    path = ffmpeg_encode(tmp_path / "deep.mkv", clip, 10, "-c:v", "ffv1", "-pix_fmt", pix_fmt)
    video = read_video(path, backend=backend)
    assert video.frames.dtype == np.uint8 and video.frames.shape == clip.shape
    assert np.abs(video.frames.astype(int) - clip).mean() < 4


def test_missing_empty_and_non_video_files(tmp_path):
    with pytest.raises(VideoNotFoundError, match="no such file"):
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(ValueError, match="nope.mp4: no such file"):  # also a ValueError
        read_video(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mp4: empty file"):
        read_video(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 50)
    for backend in ["auto", *BACKENDS]:
        with pytest.raises(ValueError, match="text.mp4: not a video file"):
            read_video(tmp_path / "text.mp4", backend=backend)
    with pytest.raises(ValueError, match="not a video file"):
        probe_video(tmp_path / "text.mp4")


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_mp4_with_index_first_gives_readable_prefix(tmp_path, backend):
    """Our MP4s put the index first (+faststart): cut in half, the first frames still decode;
    a warning says the file ended early."""
    clip = np.stack([texture(48, 64, np.random.default_rng(i), sigma=1.0) for i in range(20)])
    full = write_mp4(clip, tmp_path / "full.mp4", fps=20)
    data = full.read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="truncated"):
        video = read_video(tmp_path / "half.mp4", backend=backend)
    assert 0 < len(video) < 20
    reference = read_video(full, backend=backend)
    np.testing.assert_array_equal(video.frames[:3], reference.frames[:3])


def test_truncated_mp4_with_index_last_raises(tmp_path):
    """An MP4 whose index (moov) is at the end loses it when cut: a clear ValueError."""
    path = tmp_path / "tail_index.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20, (64, 48))
    for frame in moving_clip(20):
        writer.write(frame)
    writer.release()
    data = path.read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="half.mp4: not a video file or no decodable frames"):
        read_video(tmp_path / "half.mp4")


def test_iter_frames_is_lazy_and_bounded(tmp_path):
    path = write_mp4(moving_clip(30, height=72, width=96), tmp_path / "clip.mp4", fps=10)
    with iter_frames(path, start=1.0, end=2.0, size=(32, 16)) as reader:
        pairs = list(reader)
    times = [t for t, _ in pairs]
    np.testing.assert_allclose(times, np.arange(10, 21) / 10, atol=1e-3)
    assert all(frame.shape == (16, 32, 3) for _, frame in pairs)
    assert reader.backend == "opencv"
    video = read_video(path, max_frames=4, start=0.5)
    assert len(video) == 4 and video.timestamps[0] == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="no frames"):
        read_video(path, start=100.0)
    with pytest.raises(ValueError, match="backend"):
        iter_frames(path, backend="gstreamer")


def test_probe_video(tmp_path):
    path = write_mp4(moving_clip(6), tmp_path / "clip.mp4", fps=12)
    info = probe_video(path)
    assert (info.width, info.height, info.declared_frames) == (64, 48, 6)
    assert info.declared_fps == pytest.approx(12)
    assert info.declared_duration == pytest.approx(0.5)


# ----------------------------------------------------------------------------- resampling


def test_resample_picks_nearest_frame_and_counts_distinct():
    frames = np.arange(4, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    times = np.array([0.0, 0.4, 0.8, 1.2])  # 2.5 real fps
    out, info = resample_to_fps(frames, times, fps=10, num_frames=13)
    expected = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3])  # ties go to the earlier frame
    np.testing.assert_array_equal(info.indices, expected)
    np.testing.assert_array_equal(out[:, 0, 0, 0], expected)
    assert info.num_distinct == 4
    assert info.source_fps == pytest.approx(2.5)
    assert info.repeated_fraction == pytest.approx(1 - 4 / 13)
    assert info.max_time_error == pytest.approx(0.2)
    out, info = resample_to_fps(frames, times, fps=5, start=0.4)  # to the end by default
    np.testing.assert_allclose(info.target_times, [0.4, 0.6, 0.8, 1.0, 1.2])


def test_resample_errors():
    frames = np.zeros((4, 2, 2, 3), np.uint8)
    times = np.array([0.0, 0.4, 0.8, 1.2])
    with pytest.raises(ValueError, match="need"):
        resample_to_fps(frames, times, fps=10, num_frames=30)  # 2.9 s asked, 1.2 s held
    with pytest.raises(ValueError, match="real frames/s"):
        resample_to_fps(frames, times, fps=10, num_frames=5, min_fps_ratio=0.5)
    with pytest.raises(ValueError, match="increasing"):
        resample_to_fps(frames, times[::-1], fps=10, num_frames=5)
    with pytest.raises(ValueError, match="timestamps must be"):
        resample_to_fps(frames, times[:3], fps=10)


# ----------------------------------------------------------------------------- resizing


def test_resize_cover_crop_modes():
    image = np.zeros((100, 300, 3), np.uint8)  # 3:1, wider than the 16:10 target
    image[:, 140:160] = 255  # a centred white bar survives the centre crop
    out = resize_cover_crop(image, (64, 40))
    assert out.shape == (40, 64, 3)
    assert out[20, 32].min() > 200 and out[20, 2].max() < 10
    padded = resize_cover_crop(image, (64, 40), mode="pad")
    assert padded.shape == (40, 64, 3)
    # 300x100 fits as 64x21: black bands above and below
    assert padded[:9].max() == 0 and padded[-9:].max() == 0
    assert resize_cover_crop(image, (64, 40), mode="stretch").shape == (40, 64, 3)
    clip = np.stack([image, image])
    assert resize_cover_crop(clip, (20, 30)).shape == (2, 30, 20, 3)
    config = MotionConfig()
    assert resize_cover_crop(image).shape == (config.height, config.width, 3)
    with pytest.raises(ValueError, match="mode"):
        resize_cover_crop(image, (64, 40), mode="squash")


def test_resize_shrinks_without_aliasing():
    """INTER_AREA averages: a 1-px checkerboard shrunk 4x becomes flat grey, not a pattern."""
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    board = np.repeat(board[..., None], 3, axis=2)
    small = resize_cover_crop(board, (16, 16))
    assert np.abs(small.astype(int) - 127).max() <= 1


# ----------------------------------------------------------------------------- writing


def test_write_video_formats_and_atomicity(tmp_path):
    clip = moving_clip(6)
    for name in ["a.mp4", "a.gif", "a.webp"]:
        path = write_video(clip, tmp_path / name, fps=10)
        assert path.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.mp4", "a.webp"]  # no temps
    import imageio.v3 as iio

    gif = iio.imread(tmp_path / "a.gif", index=None)
    assert gif.shape[:3] == (6, 48, 64)
    with pytest.raises(ValueError, match="unsupported extension"):
        write_video(clip, tmp_path / "a.mkv", fps=10)


def test_write_refuses_to_overwrite(tmp_path):
    clip = moving_clip(3)
    path = write_gif(clip, tmp_path / "x.gif", fps=5)
    with pytest.raises(FileExistsError, match="x.gif: already exists"):
        write_gif(clip, path, fps=5)
    write_gif(clip[:2], path, fps=5, overwrite=True)
    import imageio.v3 as iio

    assert len(iio.imread(path, index=None)) == 2


def test_write_into_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(PermissionError, match="not writable"):
        write_mp4(moving_clip(2), blocker / "out.mp4", fps=5)


def test_write_mp4_odd_size_and_bad_input(tmp_path):
    clip = moving_clip(3, height=31, width=45)
    video = read_video(write_mp4(clip, tmp_path / "odd.mp4", fps=5))
    assert video.frames.shape == (3, 32, 46, 3)  # padded by one replicated row and column
    assert np.abs(video.frames[:, :31, :45].astype(int) - clip).mean() < 6
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(clip.astype(np.float32) / 255, tmp_path / "f.mp4", fps=5)


# ----------------------------------------------------------------------------- scene cuts


def test_detect_scene_cuts_on_synthetic_cut():
    shot_a = moving_clip(10, seed=1)
    shot_b = moving_clip(10, seed=2)[..., ::-1] // 2 + 60  # other content, other colours
    clip = np.concatenate([shot_a, shot_b])
    assert detect_scene_cuts(clip) == [10]
    scores = scene_cut_scores(clip)
    assert scores.shape == (19,) and scores[9] > 3 * np.delete(scores, 9).max()
    assert detect_scene_cuts(shot_a) == []
    assert shot_ranges(20, [10]) == [(0, 10), (10, 20)]
    assert shot_ranges(5, []) == [(0, 5)]


def test_no_warning_on_complete_file(tmp_path):
    path = write_mp4(moving_clip(5), tmp_path / "clip.mp4", fps=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_video(path)


def test_gif_uses_one_palette_so_still_pixels_never_flicker(tmp_path):
    rng = np.random.default_rng(0)
    still = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    clip = np.repeat(still[None], 10, axis=0)
    clip[:, :, 20:] = rng.integers(0, 256, (10, 32, 20, 3), dtype=np.uint8)  # a moving half
    write_gif(clip, tmp_path / "c.gif", fps=10)
    import imageio.v3 as iio

    back = iio.imread(tmp_path / "c.gif", index=None)[..., :3].astype(int)
    assert back.shape == (10, 32, 40, 3)
    assert (back[:, :, :20] == back[0, :, :20]).all()  # the still half: identical colours
    assert np.abs(back - clip).mean() < 12  # 255 colours for random pixels: coarse but close


def test_gif_stores_frames_as_their_changes(tmp_path):
    """Random colours fill the palette, yet every frame after the first holds only its two
    moving corners (the unchanged pixels between them transparent): the file is far smaller
    than the same decoded frames stored whole."""
    import imageio.v3 as iio
    from PIL import Image

    rng = np.random.default_rng(1)
    clip = np.repeat(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)[None], 12, axis=0)
    clip[:, :8, :8] = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)  # two moving corners
    clip[:, -8:, -8:] = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    path = write_gif(clip, tmp_path / "d.gif", fps=10)
    back = iio.imread(path, index=None)[..., :3]
    assert (back[:, 8:-8] == back[0, 8:-8]).all()
    with Image.open(path) as gif:
        assert len(gif.getpalette()) // 3 <= 256 and gif.n_frames == 12

    whole = [Image.fromarray(frame).quantize(colors=256) for frame in back]
    whole[0].save(
        tmp_path / "whole.gif", save_all=True, append_images=whole[1:], optimize=False, loop=0
    )
    assert path.stat().st_size < 0.4 * (tmp_path / "whole.gif").stat().st_size
