"""Training pairs for the frame-synthesis renderer: (frame 0, displacement 0 -> t, frame t).

Three optional sources, all resized (cover-crop) to one frame size first:

* **videos** (a folder, read with ``data.video.read_video``): windows of
  ``max_gap + 1`` consecutive frames every ``window_stride`` frames; the flow from the
  window's first frame to each of the next ``max_gap`` frames is estimated once with
  ``data.flow.estimate_flow`` (DIS ``fine``) and cached on disk, one ``.npz`` per window
  (written atomically), so later epochs and runs only read it. A sample draws t in
  [1, max_gap] at random. ``long_gaps`` adds frames further away in the same shot
  (e.g. 16, 24, 32 frames: tens of pixels of real motion, real disocclusions), and
  ``both_directions`` adds every window played backwards (frame s + k -> frame s).
* **pairs** (a folder of two-image pairs named ``<name><a>.<ext>`` / ``<name><b>.<ext>``,
  e.g. basketball1/2, leuvenA/B, aloeL/R; a name with one image, like aloeGT, is
  skipped): both directions, flow by DIS, cached the same way.
* **photos** (a folder of stills): animated by ``data.synthetic.synthesize_oscillation``
  with a known smooth displacement; ``frames_per_photo`` frames spread over the clip are
  rendered (softmax-splatting baseline) and paired with their exact displacement.
  Note the targets are then *the baseline renderer's* output, not real pixels.
* **layered** (a folder of stills): large motion with occlusion ordering and exact
  targets (``layered_motion_groups``). A smooth blob cut from one photo (the foreground)
  slides over another photo (the background); each layer moves by its own smooth field
  (the foreground by a translation of 0.3 to ``layered_max_px`` px, log-uniform, plus a
  smooth variation; the background by up to a third of that), and frame t is composited
  with the foreground on top: the background it uncovers is real photo content, not a
  splat. One composition gives targets at 5 %, 15 %, 40 % and 100 % of its motion, so
  every group spans sub-pixel to tens of pixels.

Each item is a dict of float32 tensors: ``image`` (3, r, r) in [0, 1] (frame 0),
``flow`` (2, r, r) forward displacement in pixels (x right, y down), ``target`` (3, r, r)
in [0, 1] (frame t), a random ``resolution`` crop with a random horizontal flip.
Randomness comes from ``(seed, epoch, index)``: call ``set_epoch`` for new crops.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data.config import MotionConfig
from data.flow import estimate_flow
from data.io_utils import write_npz_atomic
from data.synthetic import synthesize_oscillation
from data.video import detect_scene_cuts, read_video, resize_cover_crop, shot_ranges
from splatting import render_frames

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif")
FLOW_OPTIONS = {"method": "dis", "preset": "fine"}


@dataclass
class _Group:
    """One reference frame and the frames it can be paired with (all at the frame size)."""

    name: str
    reference: np.ndarray  # (H, W, 3) uint8
    targets: np.ndarray  # (G, H, W, 3) uint8
    flows: np.ndarray  # (G, H, W, 2) float32, reference -> targets[g]


def _read_image(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not an image file (cannot decode)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _list(folder: str | Path, extensions: tuple[str, ...], what: str) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: {what} folder does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions)
    if not files:
        raise ValueError(f"{folder}: no {what} files ({', '.join(extensions)})")
    return files


def _cached_flow(
    cache_dir: Path | None, key: str, reference: np.ndarray, frames: np.ndarray
) -> np.ndarray:
    """Flow reference -> frames ``(G, H, W, 2)``, read from / written to ``cache_dir``."""
    if cache_dir is None:
        return estimate_flow(reference, frames, **FLOW_OPTIONS)
    digest = hashlib.sha1(
        reference.tobytes() + frames.tobytes() + repr(FLOW_OPTIONS).encode()
    ).hexdigest()
    path = cache_dir / f"{key}-{digest[:12]}.npz"
    if path.is_file():
        try:
            with np.load(path) as npz:
                return npz["flow"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache file: recompute and overwrite it
    flow = estimate_flow(reference, frames, **FLOW_OPTIONS)
    write_npz_atomic(path, flow=flow)
    return flow


def video_groups(
    folder: str | Path,
    size: tuple[int, int],
    max_gap: int = 8,
    window_stride: int = 4,
    max_frames: int | None = None,
    cache_dir: Path | None = None,
    long_gaps: tuple[int, ...] = (),
    both_directions: bool = False,
) -> list[_Group]:
    """Windows of every video in ``folder``: frame s and frames s+1..s+max_gap, plus
    s+g for every g in ``long_gaps`` (> max_gap) that stays in the shot.

    Windows stop at scene cuts (``data.video.detect_scene_cuts``): a pair never spans two
    shots, whose "flow" would be meaningless. ``both_directions``: every shot also played
    backwards (group names ``<video>@<last frame>r+<i>``; its pairs run from a later frame
    to an earlier one, so what disappears forwards appears).
    """
    groups = []
    for path in _list(folder, VIDEO_EXTENSIONS, "video"):
        frames = read_video(path, size=size, max_frames=max_frames).frames
        for tag, shot in _shots_in_both_directions(frames, both_directions):
            for start in range(0, len(shot) - 1, window_stride):
                offsets = list(range(1, max_gap + 1)) + [g for g in long_gaps if g > max_gap]
                offsets = [k for k in offsets if start + k < len(shot)]
                targets = shot[[start + k for k in offsets]]
                # Forwards the name is <video>@<frame> (as before: cache keys unchanged).
                name = f"{tag}+{start}" if tag.endswith("r") else f"{int(tag) + start}"
                flows = _cached_flow(cache_dir, f"{path.stem}-{name}", shot[start], targets)
                groups.append(_Group(f"{path.name}@{name}", shot[start], targets, flows))
    return groups


# Fractions of a layered composition's motion its targets show (sub-pixel to full).
LAYERED_FRACTIONS = (0.05, 0.15, 0.4, 1.0)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """``(H, W)`` float32 smooth noise in about [-1, 1]: a ``cells``-cell grid, upsampled."""
    height, width = shape
    coarse = rng.uniform(-1, 1, (cells, max(2, round(cells * width / height)))).astype(np.float32)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def _inverse_warp(layer: np.ndarray, disp: np.ndarray, border: int) -> np.ndarray:
    """``layer`` moved forward by the smooth field ``disp`` ``(H, W, 2)``: the target pixel q
    shows the source p with p + disp(p) = q (p found by fixed-point iteration, exact for
    translations and close for smooth fields), bilinear, ``border`` an OpenCV border mode."""
    height, width = disp.shape[:2]
    qx, qy = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    px, py = qx - disp[..., 0], qy - disp[..., 1]
    for _ in range(3):
        dx = cv2.remap(disp[..., 0], px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        dy = cv2.remap(disp[..., 1], px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        px, py = qx - dx, qy - dy
    return cv2.remap(layer, px, py, cv2.INTER_LINEAR, borderMode=border)


def layered_composition(
    background: np.ndarray,
    foreground: np.ndarray,
    max_px: float,
    rng: np.random.Generator,
    fractions: tuple[float, ...] = LAYERED_FRACTIONS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A foreground blob sliding over a background, with occlusion ordering.

    Args:
        background, foreground: ``(H, W, 3)`` uint8 photos of one size.
        max_px: the largest foreground translation, pixels (drawn log-uniform in
            [0.3, max_px], random direction).
        fractions: the targets show these fractions of the motion.

    Returns:
        frame 0 ``(H, W, 3)`` uint8, targets ``(G, H, W, 3)`` uint8 and the exact forward
        displacement of every frame-0 pixel ``(G, H, W, 2)`` float32 (the foreground's
        where the blob covers the pixel, the background's elsewhere).
    """
    height, width = background.shape[:2]
    # The blob: a smooth-noise level set covering ~15-35 % of the frame, 1 px soft edge.
    noise = _smooth_noise(rng, (height, width), int(rng.integers(2, 5)))
    level = np.quantile(noise, 1.0 - rng.uniform(0.15, 0.35))
    mask = cv2.GaussianBlur((noise > level).astype(np.float32), (0, 0), 0.7)[..., None]
    magnitude = float(np.exp(rng.uniform(np.log(0.3), np.log(max_px))))
    angle = rng.uniform(0, 2 * np.pi)

    def field(amplitude: float, angle: float, wobble: float) -> np.ndarray:
        shift = amplitude * np.array([np.cos(angle), np.sin(angle)], np.float32)
        smooth = np.stack([_smooth_noise(rng, (height, width), 3) for _ in range(2)], axis=-1)
        return shift + wobble * amplitude * smooth

    fg_disp = field(magnitude, angle, 0.15)
    bg_disp = field(magnitude * rng.uniform(0.0, 1.0 / 3.0), rng.uniform(0, 2 * np.pi), 0.3)
    fg, bg = foreground.astype(np.float32), background.astype(np.float32)
    frame0 = mask * fg + (1 - mask) * bg
    targets, flows = [], []
    for fraction in fractions:
        f, b = fg_disp * fraction, bg_disp * fraction
        moved_mask = _inverse_warp(mask[..., 0], f, cv2.BORDER_CONSTANT)[..., None]
        target = moved_mask * _inverse_warp(fg, f, cv2.BORDER_REFLECT_101) + (
            1 - moved_mask
        ) * _inverse_warp(bg, b, cv2.BORDER_REFLECT_101)
        targets.append(target)
        flows.append(mask * f + (1 - mask) * b)
    to_uint8 = lambda x: np.clip(np.asarray(x) + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
    return to_uint8(frame0), to_uint8(targets), np.stack(flows).astype(np.float32)


def layered_motion_groups(
    folder: str | Path,
    size: tuple[int, int],
    per_photo: int = 4,
    max_px: float = 40.0,
    seed: int = 0,
) -> list[_Group]:
    """``per_photo`` layered compositions (``layered_composition``) per photo of ``folder``:
    the photo is the background, a blob of another photo (the next one; a single photo
    is its own, mirrored) the foreground."""
    photos = [
        resize_cover_crop(_read_image(p), size) for p in _list(folder, IMAGE_EXTENSIONS, "photo")
    ]
    rng = np.random.default_rng((seed, 7))
    groups = []
    for i, background in enumerate(photos):
        for k in range(per_photo):
            j = (i + 1 + k) % len(photos)
            foreground = photos[j] if j != i else photos[i][:, ::-1]
            frame0, targets, flows = layered_composition(background, foreground, max_px, rng)
            groups.append(_Group(f"layered:{i}:{k}", frame0, targets, flows))
    return groups


def _shots_in_both_directions(
    frames: np.ndarray, both_directions: bool
) -> list[tuple[str, np.ndarray]]:
    """``(tag, frames)`` per shot of ``frames``, played forwards (tag ``""``) and, with
    ``both_directions``, backwards (tag ``"r"``; its frame i is the shot's last - i)."""
    shots = []
    for first, stop in shot_ranges(len(frames), detect_scene_cuts(frames)):
        shots.append((f"{first}", frames[first:stop]))
        if both_directions:
            shots.append((f"{stop - 1}r", frames[first:stop][::-1]))
    return shots


def pair_groups(
    folder: str | Path, size: tuple[int, int], cache_dir: Path | None = None
) -> list[_Group]:
    """Both directions of every two-image pair in ``folder`` (names differ in the last character)."""
    by_name: dict[str, list[Path]] = {}
    for path in _list(folder, IMAGE_EXTENSIONS, "image"):
        by_name.setdefault(path.stem[:-1], []).append(path)
    groups = []
    for name, paths in sorted(by_name.items()):
        if len(paths) != 2:
            continue  # e.g. aloeGT (a disparity map, not a frame)
        a, b = (resize_cover_crop(_read_image(p), size) for p in paths)
        for (src, dst), tag in (((a, b), "ab"), ((b, a), "ba")):
            flow = _cached_flow(cache_dir, f"{name}-{tag}", src, dst[None])
            groups.append(_Group(f"{name}:{tag}", src, dst[None], flow))
    if not groups:
        raise ValueError(f"{folder}: no image pairs (expected e.g. name1.png + name2.png)")
    return groups


def photo_groups(
    folder: str | Path, config: MotionConfig, frames_per_photo: int = 8, seed: int = 0
) -> list[_Group]:
    """Photos animated with a known displacement (``synthesize_oscillation``), at ``config.size``."""
    groups = []
    for i, path in enumerate(_list(folder, IMAGE_EXTENSIONS, "photo")):
        photo = resize_cover_crop(_read_image(path), config.size)
        clip = synthesize_oscillation(photo, config, seed=seed + i, render=False)
        # Frames spread over the clip, skipping t = 0 (zero displacement).
        ts = np.linspace(1, config.num_frames - 1, frames_per_photo).round().astype(int)
        disp = np.ascontiguousarray(clip.displacement[ts])
        groups.append(_Group(path.name, photo, render_frames(photo, disp, "softsplat"), disp))
    return groups


class FramePairDataset(Dataset):
    """Random crops of (frame 0, flow 0 -> t, frame t) from videos, pairs and photos.

    Args:
        videos, pairs, photos: source folders (at least one); see the module docstring.
        resolution: side of the square random crop (pixels); <= the frame size.
        size: ``(width, height)`` every source is resized (cover-crop) to.
        max_gap: videos: largest t - s between the frames of a pair.
        window_stride: videos: frames between window starts.
        max_video_frames: videos: read at most this many frames of each.
        frames_per_photo: photos: synthesised frames per photo.
        long_gaps: videos: more frame gaps (> max_gap) paired within a shot.
        both_directions: videos: every shot also played backwards.
        layered: a folder of photos for layered large-motion compositions.
        layered_per_photo: layered: compositions per photo.
        layered_max_px: layered: the largest foreground translation, pixels.
        num_frames: photos: T of the synthesised clip (frequencies lie on its FFT bins).
        cache_dir: where estimated flows are cached (None: recompute every run).
        seed: seeds the synthetic motion and every crop/flip.
        flip: random horizontal flips (the flow's x is negated).
    """

    def __init__(
        self,
        videos: str | Path | None = None,
        pairs: str | Path | None = None,
        photos: str | Path | None = None,
        *,
        resolution: int = 128,
        size: tuple[int, int] = (256, 160),
        max_gap: int = 8,
        window_stride: int = 4,
        max_video_frames: int | None = None,
        frames_per_photo: int = 8,
        long_gaps: tuple[int, ...] = (),
        both_directions: bool = False,
        layered: str | Path | None = None,
        layered_per_photo: int = 4,
        layered_max_px: float = 40.0,
        num_frames: int = MotionConfig().num_frames,
        cache_dir: str | Path | None = None,
        seed: int = 0,
        flip: bool = True,
    ) -> None:
        if videos is None and pairs is None and photos is None and layered is None:
            raise ValueError(
                "FramePairDataset: give at least one of videos, pairs, photos, layered"
            )
        width, height = size
        if not 1 <= resolution <= min(width, height):
            raise ValueError(
                f"resolution {resolution} must be in [1, {min(width, height)}] for size {width}x{height}"
            )
        cache = Path(cache_dir) if cache_dir is not None else None
        self.groups: list[_Group] = []
        if videos is not None:
            self.groups += video_groups(
                videos, size, max_gap, window_stride, max_video_frames, cache, tuple(long_gaps),
                both_directions,
            )  # fmt: skip
        if pairs is not None:
            self.groups += pair_groups(pairs, size, cache)
        if photos is not None:
            config = MotionConfig(num_frames=num_frames, width=width, height=height)
            self.groups += photo_groups(photos, config, frames_per_photo, seed)
        if layered is not None:
            self.groups += layered_motion_groups(
                layered, size, layered_per_photo, layered_max_px, seed
            )
        self.resolution, self.seed, self.flip, self.epoch = resolution, seed, flip, 0

    def set_epoch(self, epoch: int) -> None:
        """New random crops, flips and frame choices for each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        group = self.groups[index]
        g = int(rng.integers(len(group.targets)))
        height, width = group.reference.shape[:2]
        r = self.resolution
        y, x = int(rng.integers(height - r + 1)), int(rng.integers(width - r + 1))
        crop = np.s_[y : y + r, x : x + r]
        image = torch.from_numpy(group.reference[crop]).permute(2, 0, 1).float() / 255.0
        target = torch.from_numpy(group.targets[g][crop]).permute(2, 0, 1).float() / 255.0
        flow = torch.from_numpy(group.flows[g][crop]).permute(2, 0, 1).float()
        if self.flip and rng.random() < 0.5:
            image, target, flow = image.flip(-1), target.flip(-1), flow.flip(-1)
            flow[0] = -flow[0]
        return {
            "image": image.contiguous(),
            "flow": flow.contiguous(),
            "target": target.contiguous(),
        }
