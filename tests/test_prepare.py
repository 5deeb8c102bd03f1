"""prepare_data.py end to end: recovery of known motion, resume, shards, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data.config import MotionConfig
from data.dataset import SpectralVolumeDataset
from data.prepare import ClipFilters, PrepareSettings, assign_splits, prepare
from data.spectral import spectral_to_displacement
from data.synthetic import write_synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
# Small clips keep the suite fast; the maths is the same at 150 frames of 256x160.
CONFIG = MotionConfig(num_frames=40, fps=20.0, num_freqs=8, width=128, height=80)


def textured_photo(seed: int, width: int = 192, height: int = 120) -> np.ndarray:
    """A photo-like test image: textured green foliage below, smooth blue sky above."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 1.5)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    image = np.zeros((height, width, 3), np.float32)
    image[..., 0] = 40 + 60 * noise
    image[..., 1] = 90 + 150 * noise
    image[..., 2] = 30 + 40 * noise
    sky = np.linspace(0, 1, height)[:, None] < 0.3
    image[sky[:, 0]] = [150, 190, 240]
    return image.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def synthetic_videos(tmp_path_factory) -> Path:
    """Four synthetic clips with known spectral volumes (one per photo)."""
    folder = tmp_path_factory.mktemp("synthetic")
    photos = [textured_photo(seed) for seed in range(4)]
    write_synthetic_dataset(photos, folder, clips_per_photo=1, seed=7, config=CONFIG)
    return folder


def settings(**overrides) -> PrepareSettings:
    values = {"config": CONFIG, "val_fraction": 0.25}
    values.update(overrides)
    return PrepareSettings(**values)


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "prepare_data.py"), *args, "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


CLI_SIZE = ["--num_frames", "40", "--fps", "20", "--num_freqs", "8", "--size", "128x80"]
# The spellings from before the flags were unified: still accepted (hidden aliases).
OLD_CLI_SIZE = ["--frames", "40", "--fps", "20", "--num-freqs", "8", "--size", "128x80"]


def spectral_files(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p)["spectral"] for p in sorted((out / "clips").glob("*.npz"))}


def test_recovers_known_spectral_volume(synthetic_videos, tmp_path):
    """prepare_data on synthetic video (H.264) recovers the true motion.

    Measured on these four clips (seed 7) with DIS "fine": relative RMS error of the
    displacement rebuilt from the recovered spectral volume 0.15-0.22, gain 0.89-0.95
    (flow slightly underestimates). Other seeds give up to 0.42 / 0.66 on one clip of
    four, where a mode varies faster in space than the flow resolves.
    """
    manifest = prepare(synthetic_videos, tmp_path / "out", settings(), progress=False)
    assert manifest["counts"]["kept"] == 4
    for clip in manifest["clips"]:
        truth = np.load(Path(clip["source"]).with_suffix(".npz"))
        recovered = np.load(tmp_path / "out" / clip["file"])["spectral"].astype(np.float32)
        assert recovered.shape == (CONFIG.num_freqs, 4, CONFIG.height, CONFIG.width)
        # Moving pixels away from the border, where flow has no support.
        moving = truth["motion_mask"][8:-8, 8:-8] > 0.5
        true_disp = spectral_to_displacement(truth["spectral"], CONFIG.num_frames)
        got_disp = spectral_to_displacement(recovered, CONFIG.num_frames)
        true_disp = true_disp[:, 8:-8, 8:-8][:, moving]
        got_disp = got_disp[:, 8:-8, 8:-8][:, moving]
        relative_error = np.sqrt(np.mean((got_disp - true_disp) ** 2) / np.mean(true_disp**2))
        gain = np.sum(got_disp * true_disp) / np.sum(true_disp**2)
        assert relative_error < 0.32, relative_error
        assert 0.75 < gain < 1.1, gain


def test_dataset_items_and_normalisation(synthetic_videos, tmp_path):
    prepare(synthetic_videos, tmp_path, settings(), progress=False)
    train = SpectralVolumeDataset(tmp_path, split="train")
    val = SpectralVolumeDataset(tmp_path, split="val")
    assert len(train) + len(val) == 4 and len(val) >= 1
    train_ids = {c["video_id"] for c in train.clips}
    assert not train_ids & {c["video_id"] for c in val.clips}, "a video is in both splits"
    item = train[0]
    assert item["image"].shape == (3, CONFIG.height, CONFIG.width)
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["spectral"].shape == (CONFIG.num_freqs, 4, CONFIG.height, CONFIG.width)
    raw = SpectralVolumeDataset(tmp_path, split="train", normalize=False)[0]["spectral"]
    assert np.allclose(train.normalizer.denormalize(item["spectral"]), raw, atol=1e-4)
    # About 95% of normalised training values lie in [-1, 1] (the 95th-percentile scale).
    values = np.concatenate([train[i]["spectral"].numpy().ravel() for i in range(len(train))])
    assert 0.9 < np.mean(np.abs(values) <= 1.0) < 0.99
    stats = json.loads((tmp_path / "normalization.json").read_text())
    assert stats["num_train_clips"] == len(train)
    assert (tmp_path / "power_spectrum.png").stat().st_size > 0
    assert list((tmp_path / "previews").glob("*.png"))


def test_second_run_does_nothing_and_says_so(synthetic_videos, tmp_path):
    prepare(synthetic_videos, tmp_path, settings(), progress=False)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    said = []
    prepare(synthetic_videos, tmp_path, settings(), progress=False, log=said.append)
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert before == after
    assert any("nothing to do" in line for line in said)


def test_other_settings_on_same_folder_are_refused(synthetic_videos, tmp_path):
    prepare(synthetic_videos, tmp_path, settings(), progress=False)
    with pytest.raises(ValueError, match="other settings"):
        prepare(
            synthetic_videos,
            tmp_path,
            settings(flow_method="farneback", flow_options={}),
            progress=False,
        )


def test_shards_merge_to_the_same_dataset(synthetic_videos, tmp_path):
    whole = prepare(synthetic_videos, tmp_path / "whole", settings(), progress=False)
    assert prepare(synthetic_videos, tmp_path / "sharded", settings(), shard=(0, 2),
                   progress=False) is None  # fmt: skip
    sharded = prepare(synthetic_videos, tmp_path / "sharded", settings(), shard=(1, 2),
                      progress=False)  # fmt: skip
    assert sharded["counts"] == whole["counts"]
    a, b = spectral_files(tmp_path / "whole"), spectral_files(tmp_path / "sharded")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (tmp_path / "whole" / "normalization.json").read_text() == (
        tmp_path / "sharded" / "normalization.json"
    ).read_text()


def test_bad_videos_are_recorded_and_do_not_stop_the_run(synthetic_videos, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for video in sorted(synthetic_videos.glob("*.mp4"))[:2]:
        (folder / video.name).write_bytes(video.read_bytes())
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.avi").write_text("this is not a video\n")
    good = sorted(synthetic_videos.glob("*.mp4"))[0].read_bytes()
    (folder / "truncated.mov").write_bytes(good[: len(good) // 3])
    manifest = prepare(folder, tmp_path / "out", settings(), progress=False)
    by_name = {Path(v["source"]).name: v for v in manifest["videos"]}
    assert by_name["empty.mp4"]["status"] == "failed"
    assert "empty" in by_name["empty.mp4"]["reason"]
    assert by_name["notes.avi"]["status"] == "failed"
    assert by_name["truncated.mov"]["status"] in ("failed", "done")
    assert manifest["counts"]["kept"] == 2


def test_short_low_rate_and_moving_camera_clips_are_filtered(tmp_path):
    from data.video import write_mp4

    photo = textured_photo(0, 128, 80)
    folder = tmp_path / "videos"
    # 1 s of changing frames: shorter than a 2 s clip.
    write_mp4(np.stack([np.roll(photo, i, axis=1) for i in range(20)]), folder / "short.mp4",
              fps=20)  # fmt: skip
    # 5 real frames per second, stretched to 20 fps by repeating each frame 4 times.
    slow = np.stack([np.roll(photo, i % 2, axis=0) for i in range(11)]).repeat(4, axis=0)
    write_mp4(slow, folder / "slow.mp4", fps=20)
    # The whole frame slides right by 0.5 px per frame: a panning camera.
    wide = textured_photo(1, 512, 160)
    pan = [cv2_shift(wide, 0.5 * i)[:, 128:384] for i in range(44)]
    write_mp4(np.stack([resize_half(f) for f in pan]), folder / "pan.mp4", fps=20)
    with pytest.raises(ValueError, match="no training clip survived"):
        prepare(folder, tmp_path / "out", settings(val_fraction=0.0), progress=False)
    videos = [json.loads(p.read_text()) for p in (tmp_path / "out" / "videos").glob("*.json")]
    clips = [json.loads(p.read_text()) for p in (tmp_path / "out" / "clips").glob("*.json")]
    by_video = {Path(v["source"]).name: v for v in videos}
    by_clip = {Path(c["source"]).name: c for c in clips}
    assert by_video["short.mp4"]["clips"] == []
    assert by_video["short.mp4"]["reason"].startswith("too short")
    assert by_clip["slow.mp4"]["reason"].startswith("low frame rate")
    assert by_clip["pan.mp4"]["reason"].startswith("camera/global motion")


def cv2_shift(image: np.ndarray, dx: float) -> np.ndarray:
    import cv2

    matrix = np.float32([[1, 0, dx], [0, 1, 0]])
    return cv2.warpAffine(image, matrix, image.shape[1::-1], flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)  # fmt: skip


def resize_half(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2),
                      interpolation=cv2.INTER_AREA)  # fmt: skip


def test_folder_without_videos_and_unwritable_output(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("--videos", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "no videos found" in result.stderr
    result = run_cli("--videos", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "no such file or folder" in result.stderr
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_cli("--videos", str(tmp_path / "empty"), "--output_dir", str(blocker / "out"))
    assert result.returncode == 2


def test_unknown_flow_method_fails_before_any_work(synthetic_videos, tmp_path):
    result = run_cli("--videos", str(synthetic_videos), "--output_dir", str(tmp_path / "out"),
                     "--flow_method", "nonsense", *CLI_SIZE)  # fmt: skip
    assert result.returncode == 2 and "nonsense" in result.stderr
    assert not (tmp_path / "out" / "videos").exists()


@pytest.mark.slow
def test_killed_run_resumes_and_loses_nothing(synthetic_videos, tmp_path):
    args = ["--videos", str(synthetic_videos), "--val-fraction", "0.25", *CLI_SIZE]
    reference = run_cli(*args, "--output_dir", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "prepare_data.py"), *args, "--output_dir", str(out),
         "--no-progress"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "clips").glob("*.npz")):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(list((out / "videos").glob("*.json")))
    assert done_before < 4, "the run finished before it could be killed"
    assert not (out / "manifest.json").exists()

    resumed = run_cli(*args, "--output_dir", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{4 - done_before} of 4 videos" in resumed.stdout
    a, b = spectral_files(tmp_path / "reference"), spectral_files(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_two_workers_give_the_same_result(synthetic_videos, tmp_path):
    one = run_cli("--videos", str(synthetic_videos), "--output_dir", str(tmp_path / "one"),
                  *CLI_SIZE)  # fmt: skip
    # Two workers, spelled the old way (kebab-case, --out): the hidden aliases still work.
    two = run_cli("--videos", str(synthetic_videos), "--out", str(tmp_path / "two"),
                  "--num-workers", "2", *OLD_CLI_SIZE)  # fmt: skip
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    a, b = spectral_files(tmp_path / "one"), spectral_files(tmp_path / "two")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_split_is_by_video_stable_and_never_empty():
    ids = [f"video{i}" for i in range(50)]
    splits = assign_splits(ids, 0.2)
    assert 3 <= sum(s == "val" for s in splits.values()) <= 20
    more = assign_splits(ids + ["another"], 0.2)
    assert all(more[v] == splits[v] for v in ids), "adding a video moved another"
    assert set(assign_splits(["a", "b"], 0.01).values()) == {"train", "val"}
    # A lone video trains whatever the fraction: otherwise no statistics could be made.
    assert all(assign_splits([f"solo{i}"], 0.99) == {f"solo{i}": "train"} for i in range(20))


def test_filters_are_recorded_in_dataset_json(synthetic_videos, tmp_path):
    prepare(synthetic_videos, tmp_path, settings(filters=ClipFilters(max_global_motion=3.0)),
            progress=False)  # fmt: skip
    saved = json.loads((tmp_path / "dataset.json").read_text())
    assert saved["filters"]["max_global_motion"] == 3.0
    assert saved["config"] == CONFIG.to_dict()
    assert os.access(tmp_path / "manifest.json", os.R_OK)


def test_truncated_and_too_short_videos_are_named_and_the_usable_one_trains(tmp_path):
    """A file cut short (the first 20% of a good mp4) is reported as truncated, on screen
    and in the summary; the one usable video trains even if its hash sent it to val."""
    from data.prepare import assign_splits, video_id

    long = MotionConfig(num_frames=120, fps=20.0, num_freqs=8, width=128, height=80)
    write_synthetic_dataset([textured_photo(1)], tmp_path / "syn", clips_per_photo=1, seed=7,
                            config=long)  # fmt: skip
    good = sorted((tmp_path / "syn").glob("*.mp4"))[0].read_bytes()
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "cut.mp4").write_bytes(good[: len(good) // 5])
    # A name whose hash puts the good video in val (the case that used to leave no train).
    for i in range(100):
        name = f"good{i}.mp4"
        ids = [video_id(folder / n, folder) for n in (name, "cut.mp4")]
        if assign_splits(ids, 0.1)[ids[0]] == "val":
            break
    (folder / name).write_bytes(good)
    lines: list[str] = []
    manifest = prepare(folder, tmp_path / "out", settings(val_fraction=0.1), progress=False,
                       log=lines.append)  # fmt: skip
    screen = "\n".join(lines)
    assert "skipped" in screen and "cut.mp4: truncated or damaged file" in screen, screen
    assert "unusable videos: cut.mp4: truncated" in screen, screen
    assert f"{name} was assigned to val but is the only video that yielded clips" in screen
    assert manifest["counts"]["train"] >= 1 and manifest["counts"]["val"] == 0
    by_name = {Path(v["source"]).name: v for v in manifest["videos"]}
    assert by_name[name]["split"] == "train"
    assert by_name["cut.mp4"]["reason"].startswith("truncated or damaged file: decoding stopped")
    # The promotion is on disk: a second run agrees and trains on it.
    assert prepare(folder, tmp_path / "out", settings(val_fraction=0.1), progress=False,
                   log=lines.append)["counts"]["train"] == manifest["counts"]["train"]  # fmt: skip


def test_no_usable_video_names_each_and_why(tmp_path):
    from data.video import write_mp4

    photo = textured_photo(0, 128, 80)
    folder = tmp_path / "videos"
    write_mp4(np.stack([np.roll(photo, i, axis=1) for i in range(20)]), folder / "short.mp4",
              fps=20)  # fmt: skip
    (folder / "junk.mp4").write_text("not a video")
    with pytest.raises(ValueError, match=r"unusable videos: .*short.mp4: too short: 0.9\d s"):
        prepare(folder, tmp_path / "out", settings(), progress=False, log=lambda *a: None)


def test_old_flag_spellings_are_hidden_aliases_of_the_snake_case_ones():
    import prepare_data

    old = prepare_data.parse_args(["--videos", "v", "--out", "o", "--frames", "10", "--num-freqs",
                                   "4", "--flow", "farneback", "--flow-preset", "fast",
                                   "--val-fraction", "0.2", "--num-workers", "3", "--no-progress"])  # fmt: skip
    new = prepare_data.parse_args(["--videos", "v", "--output_dir", "o", "--num_frames", "10",
                                   "--num_freqs", "4", "--flow_method", "farneback",
                                   "--flow_preset", "fast", "--val_fraction", "0.2",
                                   "--num_workers", "3", "--no_progress"])  # fmt: skip
    assert vars(old) == vars(new)
    assert new.num_freqs == 4 and new.flow_method == "farneback" and new.no_progress
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), pytest.raises(SystemExit):
        prepare_data.parse_args(["--help"])
    assert "--num_freqs" in buffer.getvalue() and "--num-freqs" not in buffer.getvalue()
