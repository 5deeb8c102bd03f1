"""The web demo's work without a browser (app.Demo), on a stand-in pipeline and on the real one."""

import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
from data.config import MotionConfig

EXAMPLE = Path(app.EXAMPLES[0])


class StandInPipeline:
    """A stand-in with the motion pipeline's interface (``__call__``, ``render``,
    ``motion_config``) that samples nothing: one smooth mode swinging the photo's middle.
    For the page logic's tests; the real pipeline is tested below and in the browser test."""

    motion_config = MotionConfig()

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, image, *, num_frames, fps, speed, amplitude, motion_mask, output_size,
                 renderer, **kwargs):  # fmt: skip
        from data.spectral import displacement_at_phases

        self.calls.append({"motion_mask": motion_mask, "output_size": output_size, **kwargs})
        width, height = output_size
        photo = np.asarray(Image.fromarray(image).resize((width, height)))
        yy, xx = np.mgrid[0:height, 0:width]
        shape = np.exp(-((xx - width / 2) ** 2 + (yy - height / 2) ** 2) / (0.1 * width**2))
        spectral = np.zeros((self.motion_config.num_freqs, 4, height, width), np.float32)
        spectral[5, 0] = 2.0 * amplitude * shape
        if motion_mask is not None:
            mask = Image.fromarray((np.asarray(motion_mask) * 255).astype(np.uint8))
            spectral *= np.asarray(mask.resize((width, height))) / 255.0
        phases = np.arange(num_frames) / fps * speed * self.motion_config.fps
        disp = displacement_at_phases(spectral, phases / self.motion_config.num_frames)
        disp -= disp[:1]  # D[0] = 0: frame 0 is the photo, as the pipeline promises
        frames = self.render(photo, disp, renderer)
        return type(
            "Out", (), {"frames": frames[None], "spectral": spectral[None], "images": photo[None]}
        )

    def render(self, photo_rgb, disp, renderer="synthesis", progress=False):
        from splatting import render_frames

        return render_frames(photo_rgb, disp, method="remap")


@pytest.fixture
def demo():
    return app.Demo(StandInPipeline(), num_inference_steps=2)


def animate(demo, photo, editor=None, **overrides):
    args = {"amplitude": 1.0, "speed": 1.0, "loop": False, "seed": 0, "long_side": 256,
            "num_frames": 12, "renderer": "synthesis", "use_mask": True}  # fmt: skip
    args.update(overrides)
    return demo.animate(photo, editor, **args)


def gif_frames(path: str) -> int:
    with Image.open(path) as gif:
        return gif.n_frames


def test_upload_animate_poke(demo):
    photo, editor, message = demo.load_photo(str(EXAMPLE))
    assert photo.shape == (356, 493, 3) and "493x356" in message
    assert max(editor["background"].shape[:2]) <= app.EDITOR_SIDE
    gif, mp4, motion, message = animate(demo, photo, editor)
    assert gif_frames(gif) == 12 and Path(mp4).stat().st_size > 0
    assert motion.photo.shape == (184, 256, 3)  # the photo's aspect, long side 256, even sides
    assert demo.pipe.calls[-1]["motion_mask"] is None  # nothing painted: the model decides
    gif, mp4, message = demo.poke(motion, 128, 92, 8.0, 0.0, 0.1)
    assert gif_frames(gif) == int(app.POKE_SECONDS * app.POKE_FPS)
    assert "swings up to" in message
    # poking a corner, far from the only mode, moves almost nothing
    _, _, quiet = demo.poke(motion, 0, 0, 8.0, 0.0, 0.1)
    assert float(quiet.split("up to ")[1].split(" px")[0]) < 0.5


def test_the_painted_layer_is_the_mask(demo):
    photo, editor, _ = demo.load_photo(str(EXAMPLE))
    layer = np.zeros((*editor["background"].shape[:2], 4), np.uint8)
    layer[10:40, 20:60] = (255, 255, 255, 255)
    editor["layers"] = [layer]
    animate(demo, photo, editor)
    mask = demo.pipe.calls[-1]["motion_mask"]
    assert mask.shape == layer.shape[:2] and mask.sum() == 30 * 40
    animate(demo, photo, editor, use_mask=False)
    assert demo.pipe.calls[-1]["motion_mask"] is None
    assert demo.pipe.calls[-1]["mask_provider"] == "cues"  # unpainted: the automatic mask
    *_, message = animate(demo, photo, editor, use_mask=False, auto_mask=False)
    assert demo.pipe.calls[-1]["mask_provider"] is None and "whole photo" in message


def test_a_clip_that_is_not_a_whole_loop_gets_a_note(demo):
    photo, editor, _ = demo.load_photo(str(EXAMPLE))
    *_, message = animate(demo, photo, editor, num_frames=60)  # 2 s of the model's 5 s loop
    assert "jumps where it wraps; 150 frames loop seamlessly" in message
    *_, message = animate(demo, photo, editor, num_frames=75, speed=2.0)
    assert "wraps" not in message


def test_sway_direction_reaches_the_pipeline(demo):
    photo, editor, _ = demo.load_photo(str(EXAMPLE))
    animate(demo, photo, editor)
    assert demo.pipe.calls[-1]["motion_direction"] is None  # the model's own directions
    for label, degrees in app.SWAY_DIRECTIONS.items():
        animate(demo, photo, editor, direction=label)
        assert demo.pipe.calls[-1]["motion_direction"] == degrees


def test_amplitude_one_is_the_visible_motion_unless_unticked(demo):
    photo, editor, _ = demo.load_photo(str(EXAMPLE))
    animate(demo, photo, editor)
    assert demo.pipe.calls[-1]["amplitude_reference"] == "visible"  # as sample.py
    animate(demo, photo, editor, visible=False)
    assert demo.pipe.calls[-1]["amplitude_reference"] == "model"


@pytest.mark.parametrize(
    "content, words",
    [
        (b"this is not a photo", "not an image file"),
        ("tiny", "too small"),
    ],
)
def test_bad_uploads_get_a_message(demo, tmp_path, content, words):
    path = tmp_path / "upload.png"
    if content == "tiny":
        Image.new("RGB", (8, 8)).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(app.UserError, match=words) as error:
        demo.load_photo(str(path))
    assert str(error.value).startswith("upload.png: ")  # no temporary folder in the message


def test_huge_upload_is_reduced(demo, tmp_path):
    path = tmp_path / "huge.png"
    Image.new("RGB", (6000, 3000), (40, 90, 30)).save(path)
    photo, _, _ = demo.load_photo(str(path))
    assert max(photo.shape[:2]) == 2048


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"amplitude": float("nan")}, "amplitude must be"),
        ({"speed": 0}, "speed must be"),
        ({"seed": None}, "seed must be a number"),
        ({"long_side": 5000}, "output size must be"),
        ({"renderer": "magic"}, "renderer must be"),
        ({"direction": "sideways"}, "sway direction must be one of"),
    ],
)
def test_bad_fields_get_a_message(demo, overrides, words):
    photo, editor, _ = demo.load_photo(str(EXAMPLE))
    with pytest.raises(app.UserError, match=words):
        animate(demo, photo, editor, **overrides)


def test_poke_before_animating_and_bad_pokes(demo):
    with pytest.raises(app.UserError, match="Animate a photo first"):
        demo.poke(None, 1, 1, 0, 8, 0.1)
    photo, editor, _ = demo.load_photo(str(EXAMPLE))
    _, _, motion, _ = animate(demo, photo, editor)
    with pytest.raises(app.UserError, match="push direction"):
        demo.poke(motion, 10, 10, 0, 0, 0.1)
    with pytest.raises(app.UserError, match="x must be between 0 and 255"):
        demo.poke(motion, 300, 10, 0, 8, 0.1)


def test_guard_turns_errors_into_one_line_messages():
    def broken(_):
        raise RuntimeError("boom")

    def refused(_):
        raise app.UserError("bad photo")

    *skipped, message = app._guard(broken, 3)(None)
    assert (
        len(skipped) == 2 and message == "⚠️ Something went wrong (RuntimeError: boom); try again."
    )
    assert app._guard(refused, 2)(None)[-1] == "⚠️ bad photo"


def test_output_size_and_arguments():
    assert app.output_size(493, 356, 256) == (256, 184)
    assert app.output_size(356, 493, 512) == (370, 512)
    assert app.parse_args([]).port == 7860
    with pytest.raises(SystemExit):
        app.parse_args(["--port", "0"])


def test_page_builds(demo):
    page = app.build_demo(demo)
    assert page.title == "Generative Image Dynamics"


def test_the_real_pipeline_through_the_demo(one_torch_thread):
    """The shipped weights through app.Demo: the call the page makes matches the pipeline."""
    pipe, device = app.load_pipeline(str(app.DEFAULT_MODEL), "cpu")
    pipe.set_progress_bar_config(disable=True)
    demo = app.Demo(pipe, num_inference_steps=1)
    photo, editor, _ = demo.load_photo(str(EXAMPLE))
    layer = np.zeros((*editor["background"].shape[:2], 4), np.uint8)
    layer[:, : layer.shape[1] // 2] = 255  # the left half may move
    editor["layers"] = [layer]
    gif, mp4, motion, message = animate(demo, photo, editor, num_frames=6, renderer="softsplat")
    assert gif_frames(gif) >= 2 and "with your mask" in message
    assert motion.photo.shape == (184, 256, 3)
    assert motion.spectral.shape == (pipe.motion_config.num_freqs, 4, 184, 256)
    # the painted mask holds: the right half (beyond the feathered edge) does not move
    assert np.abs(motion.spectral[..., 160:]).max() == 0.0
    energy = (motion.spectral[1:] ** 2).sum(axis=(0, 1))
    row, col = np.unravel_index(np.argmax(energy), energy.shape)
    gif, mp4, message = demo.poke(motion, col, row, 8.0, 0.0, 0.1)
    assert gif_frames(gif) > 1 and float(message.split("up to ")[1].split(" px")[0]) > 1.0
    _, _, upright, _ = animate(demo, photo, editor, num_frames=2, renderer="softsplat",
                               direction="up-down")  # fmt: skip
    # the default strength keeps a fifth of the motion across: a 25th of its energy
    assert np.square(upright.spectral[1:, 0:2]).sum() < 0.05 * np.square(upright.spectral[1:]).sum()


class SlowStandIn(StandInPipeline):
    """Takes 1.5 s per animation and records how many run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.running = self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, image, **kwargs):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(1.5)
        try:
            return super().__call__(image, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


def test_several_users_at_once_queue_and_a_full_queue_is_refused():
    from gradio_client import Client, handle_file

    pipe = SlowStandIn()
    page = app.build_demo(app.Demo(pipe, num_inference_steps=1))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app.serve(page, "127.0.0.1", port, concurrency=1, max_queue=3, block=False)
    try:
        url = f"http://127.0.0.1:{port}/"
        users = [Client(url, verbose=False) for _ in range(6)]
        for user in users:
            user.predict(handle_file(str(EXAMPLE)), api_name="/on_upload")
        editor = {"background": None, "layers": [], "composite": None}
        jobs = [
            user.submit(editor, 1.0, 1.0, False, 0, 256, 4, "auto", True, api_name="/on_animate")
            for user in users
        ]
        done, refused = [], []
        for job in jobs:
            try:
                done.append(job.result(timeout=60)[-1])
            except Exception as error:  # the client raises for a refused request
                refused.append(str(error))
        assert pipe.most_at_once == 1  # one animation at a time, the others waited
        # max_queue waiting, plus the running one when it had left the queue before the
        # last users arrived (on a loaded machine it may not have: then 3)
        assert len(done) + len(refused) == len(users)
        assert len(done) >= 3 and all(m.startswith("Animated 4 frames") for m in done)
        assert refused and all("queue is full" in m.lower() for m in refused), refused
        # the server is still there for the next user
        assert (
            Client(url, verbose=False)
            .predict(handle_file(str(EXAMPLE)), api_name="/on_upload")[-1]
            .startswith("Loaded")
        )
    finally:
        page.close()


def test_a_missing_model_is_a_one_line_error(capsys, tmp_path):
    assert app.main(["--model", str(tmp_path / "nothing"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no such model folder" in err and "Traceback" not in err


def test_old_clips_are_pruned(tmp_path):
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    old_gif, _ = app.write_clip(frames, 10.0, "old", tmp_path)
    stale = time.time() - app.CLIP_MAX_AGE_S - 60
    os.utime(Path(old_gif).parent, (stale, stale))
    new_gif, new_mp4 = app.write_clip(frames, 10.0, "new", tmp_path)
    assert not Path(old_gif).exists() and Path(new_gif).exists() and Path(new_mp4).exists()
