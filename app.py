"""The web demo: upload a photo, animate it, paint what may move, poke it, download the result.

    python app.py                      # http://127.0.0.1:7860, the shipped weights, CPU or GPU
    python app.py --port 8080 --model weights/default --device cuda

Everything runs on this machine and nothing is fetched at run time: Gradio's analytics and
version check and ONNX Runtime's telemetry are off, Gradio's fonts and scripts come from the
installed package, and no share link is made. The page is served on 127.0.0.1 unless
``--host`` says otherwise.

Every step of the work is the one motion pipeline's (``models.pipeline_motion.MotionPipeline``:
sampling, mask, amplitude, speed, output size, rendering); the poke response is
``models.interactive_dynamics.poke_response`` rendered by the same pipeline's ``render``. This
file holds the page, input checks and file writing only. docs/INTERACTIVE.md describes the
controls and the poke maths.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

# Before gradio is imported: no analytics and no version check (both would call out).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# diffusers' from_pretrained imports onnxruntime when it is installed, and its official builds
# send telemetry (a DNS lookup of Microsoft's events host was seen with strace): off.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

# sample.py's defaults, one source: classifier-free guidance 4 (docs/SAMPLING.md: it confines
# the motion to what should move), the renderers, DPM-Solver++ for few steps.
from generators.gid import (  # noqa: E402
    DEFAULT_AMPLITUDE_REFERENCE,
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_NUM_INFERENCE_STEPS,
    DEFAULT_SCHEDULER,
    RENDERERS,
)
from models.pipeline_motion import DEFAULT_MASK_PROVIDER, loop_advice  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent
DEFAULT_MODEL = REPO_ROOT / "weights" / "default"
EXAMPLES_DIR = REPO_ROOT / "data" / "examples"
EXAMPLES = sorted(str(path) for path in EXAMPLES_DIR.glob("*.jpg"))
# Long side of the output in px; 256 is the model's own size (fast on a CPU).
OUTPUT_SIDES = (256, 384, 512, 768, 1024)
# The demo's sway directions: label -> the pipeline's ``motion_direction`` (degrees,
# counter-clockwise from the horizontal as seen; None: the model's own directions).
SWAY_DIRECTIONS = {
    "any": None,
    "left-right": 0.0,
    "up-down": 90.0,
    "diagonal /": 45.0,
    "diagonal \\": 135.0,
}
DEFAULT_FRAMES = 60
DEFAULT_FPS = 30.0
# A poke's response clip: 3 s, long enough to see the slow modes (the shipped weights put
# most of their energy at 0.2 to 0.6 Hz) turn back; 15 fps is plenty for motion that slow and
# halves the rendering, the wait after each click.
POKE_SECONDS = 3.0
POKE_FPS = 15.0
MAX_UPLOAD = "25mb"
CLIP_MAX_AGE_S = 3600.0  # results are kept this long for the page to show and download
EDITOR_SIDE = 512  # the mask canvas shows the photo at most this large
# The page's progress bar follows the pipeline's own tqdm bars (denoising steps, rendering).
TQDM_PROGRESS = gr.Progress(track_tqdm=True)


@dataclass
class Motion:
    """One session's last animation, kept (gr.State) so pokes need no new sampling.

    Attributes:
        photo: ``(H, W, 3)`` uint8, the photo at the output size.
        spectral: ``(K, 4, H, W)`` float32 px, amplitude and mask applied.
        fps: frame rate of the clips, Hz; speed: playback speed the user chose.
        renderer: the renderer the animation used.
    """

    photo: np.ndarray
    spectral: np.ndarray
    fps: float
    speed: float
    renderer: str


class UserError(ValueError):
    """A problem with the user's input, shown as a one-line message in the page."""


def output_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """``(W, H)`` with the photo's aspect, the long side ``long_side``, both sides even (MP4)."""
    scale = long_side / max(width, height)
    return (max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2))


def mask_from_editor(editor: dict | None) -> np.ndarray | None:
    """The painted brush layer -> ``(H, W)`` float32 "may move" mask, or None (nothing painted).

    Painted pixels (alpha > 0 on any layer) may move; the rest stays still. The pipeline
    resizes the mask to the photo.
    """
    if not editor or not editor.get("layers"):
        return None
    painted = None
    for layer in editor["layers"]:
        if layer is None:
            continue
        layer = np.asarray(layer)
        alpha = layer[..., 3] if layer.ndim == 3 and layer.shape[2] == 4 else layer.max(axis=-1)
        painted = alpha > 0 if painted is None else painted | (alpha > 0)
    if painted is None or not painted.any():
        return None
    return painted.astype(np.float32)


def prune_clips(root: Path, max_age_s: float = CLIP_MAX_AGE_S) -> None:
    """Delete the clip folders under ``root`` older than ``max_age_s`` (a server runs for days)."""
    now = time.time()
    for folder in root.glob("clip_*"):
        try:
            if now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)
        except FileNotFoundError:  # another request pruned it first
            pass


def write_clip(frames: np.ndarray, fps: float, stem: str, root: Path) -> tuple[str, str]:
    """Write ``(N, H, W, 3)`` uint8 frames as GIF and MP4 in a fresh folder under ``root``."""
    from data.video import write_video

    prune_clips(root)
    folder = Path(tempfile.mkdtemp(prefix="clip_", dir=root))
    gif, mp4 = folder / f"{stem}.gif", folder / f"{stem}.mp4"
    write_video(frames, gif, fps=fps)
    write_video(frames, mp4, fps=fps)
    return str(gif), str(mp4)


class Demo:
    """The demo's work, independent of the page (tests call these methods directly).

    Args:
        pipe: a ``MotionPipeline`` (with its renderer) on its device.
    """

    def __init__(self, pipe, num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS) -> None:
        self.pipe = pipe
        self.num_inference_steps = num_inference_steps
        # GIFs and MP4s handed to the page (Gradio copies them into its own cache, which
        # the page's delete_cache empties); folders older than CLIP_MAX_AGE_S are pruned.
        self.clip_root = Path(tempfile.mkdtemp(prefix="gid_app_"))

    # -- inputs -------------------------------------------------------------------------

    def load_photo(self, path: str | None):
        """An uploaded file -> ``(photo (H, W, 3) uint8, editor value, message)``."""
        from data.images import load_image

        if not path:
            return None, None, "Upload a photo or pick an example."
        try:
            image = load_image(path)
        except (ValueError, FileNotFoundError) as error:
            raise UserError(f"{Path(path).name}: {_reason(error, path)}") from None
        photo = np.asarray(image)
        preview = image.copy()
        preview.thumbnail((EDITOR_SIDE, EDITOR_SIDE))
        editor = {"background": np.asarray(preview), "layers": [], "composite": None}
        height, width = photo.shape[:2]
        return (
            photo,
            editor,
            f"Loaded a {width}x{height} photo. Paint what may move, or not, and press Animate.",
        )

    # -- animation ----------------------------------------------------------------------

    def animate(
        self,
        photo: np.ndarray | None,
        editor: dict | None,
        amplitude: float,
        speed: float,
        loop: bool,
        seed: float,
        long_side: int,
        num_frames: int,
        renderer: str = "auto",
        use_mask: bool = True,
        auto_mask: bool = True,
        visible: bool = True,
        direction: str = next(iter(SWAY_DIRECTIONS)),
    ) -> tuple[str, str, Motion, str]:
        """Sample the motion and render the animation: ``(gif, mp4, motion, message)``.

        Without a painted mask (or with ``use_mask`` off), ``auto_mask`` gates the motion by
        the pipeline's automatic mask (vegetation and water); off, the model moves the whole
        photo. ``visible``: ``amplitude`` 1 is sample.py's visible motion (the pipeline's
        ``amplitude_reference="visible"``); off, the model's own amplitude. ``direction``:
        a key of ``SWAY_DIRECTIONS`` (the axis things sway along).
        """
        from models.pipeline_motion import MotionPipelineWarning

        if photo is None:
            raise UserError("Upload a photo or pick an example first.")
        amplitude, speed = (
            _number("amplitude", amplitude, 0.0, 10.0),
            _number("speed", speed, 0.05, 10.0),
        )
        seed = int(_number("seed", seed, 0, 2**31 - 1))
        num_frames = int(_number("frames", num_frames, 2, 300))
        long_side = int(_number("output size", long_side, 64, 1024))
        if renderer not in RENDERERS:
            raise UserError(f"renderer must be one of {', '.join(RENDERERS)}, got {renderer!r}")
        if direction not in SWAY_DIRECTIONS:
            raise UserError(
                f"sway direction must be one of {', '.join(SWAY_DIRECTIONS)}, got {direction!r}"
            )
        mask = mask_from_editor(editor) if use_mask else None
        provider = DEFAULT_MASK_PROVIDER if auto_mask else None
        size = output_size(photo.shape[1], photo.shape[0], long_side)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MotionPipelineWarning)
            reference = DEFAULT_AMPLITUDE_REFERENCE if visible else "model"
            out = self._call_pipeline(
                photo, seed, num_frames, speed, amplitude, reference, mask, loop, size, renderer,
                provider, SWAY_DIRECTIONS[direction],
            )  # fmt: skip
        notes = "".join(
            f" Note: {w.message}." for w in caught if issubclass(w.category, MotionPipelineWarning)
        )
        advice = loop_advice(num_frames, self.pipe.motion_config, DEFAULT_FPS, speed)
        if advice is not None:
            notes += f" Note: {advice}."
        frames = np.asarray(out.frames[0])
        gif, mp4 = write_clip(frames, DEFAULT_FPS, f"animation_seed{seed}", self.clip_root)
        motion = Motion(
            photo=np.asarray(out.images[0]),
            spectral=np.asarray(out.spectral[0], dtype=np.float32),
            fps=DEFAULT_FPS,
            speed=speed,
            renderer=renderer,
        )
        seconds = time.perf_counter() - start
        where = (
            f"with your mask: {100 * mask.mean():.0f} % may move"
            if mask is not None
            else "an automatic mask chose what moves: vegetation and water"
            if provider is not None
            else "no mask: the model moves the whole photo"
        )
        gains = getattr(self.pipe, "last_visible_gains", None) if visible else None
        if gains is not None and gains[0] > 1.0:
            where += f"; motion x{gains[0]:.1f} to be visible"
        return (
            gif,
            mp4,
            motion,
            (
                f"Animated {len(frames)} frames at {size[0]}x{size[1]} in {seconds:.1f} s ({where}). "
                "Drag or click on the photo below to poke it." + notes
            ),
        )

    def _call_pipeline(
        self, photo, seed, num_frames, speed, amplitude, reference, mask, loop, size, renderer,
        provider, direction=None,
    ):  # fmt: skip
        """The one pipeline call of an animation (the benchmark times it alone)."""
        import torch

        return self.pipe(
            photo,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=DEFAULT_GUIDANCE_SCALE,
            generator=torch.Generator().manual_seed(seed),
            num_frames=num_frames,
            fps=DEFAULT_FPS,
            speed=speed,
            amplitude=amplitude,
            amplitude_reference=reference,
            motion_direction=direction,
            motion_mask=mask,
            mask_provider=provider,
            loop_guidance_scale=1.0 if loop else 0.0,
            output_size=size,
            renderer=renderer,
            return_displacements=False,  # only the frames and the spectral volume are kept
            output_type="np",
        )

    # -- poke ---------------------------------------------------------------------------

    def poke(
        self, motion: Motion | None, x: float, y: float, dx: float, dy: float, damping: float
    ) -> tuple[str, str, str]:
        """The response to a push at pixel ``(x, y)`` along ``(dx, dy)`` px: ``(gif, mp4, message)``."""
        from models.interactive_dynamics import Poke, poke_response, poke_times

        if motion is None:
            raise UserError("Animate a photo first, then drag or click on it to poke it.")
        height, width = motion.photo.shape[:2]
        x, y = _number("x", x, 0, width - 1), _number("y", y, 0, height - 1)
        dx, dy = _number("push dx", dx, -100, 100), _number("push dy", dy, -100, 100)
        damping = _number("damping", damping, 0.0, 0.99)
        if dx == 0 and dy == 0:
            raise UserError("Set a push direction (dx, dy) other than 0, 0.")
        start = time.perf_counter()
        num_frames = int(round(POKE_SECONDS * POKE_FPS))
        disp = poke_response(
            motion.spectral,
            [Poke(x, y, dx, dy, 0.0)],
            poke_times(num_frames, POKE_FPS, motion.speed),
            self.pipe.motion_config.frequencies_hz(),
            damping=damping,
        )
        frames = self.pipe.render(motion.photo, disp, renderer=motion.renderer)
        gif, mp4 = write_clip(
            np.asarray(frames), POKE_FPS, f"poke_{int(x)}_{int(y)}", self.clip_root
        )
        peak = float(np.linalg.norm(disp, axis=-1).max())
        seconds = time.perf_counter() - start
        return (
            gif,
            mp4,
            (
                f"Poked ({x:.0f}, {y:.0f}) by ({dx:g}, {dy:g}) px: the scene swings up to "
                f"{peak:.1f} px; {num_frames} frames in {seconds:.1f} s."
            ),
        )


def _number(name: str, value, low: float, high: float) -> float:
    """A finite number in [low, high] from a page field, or a UserError naming the field."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(value) or not low <= value <= high:
        raise UserError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
    return value


def _reason(error: Exception, path: str) -> str:
    """The loader's message without the (long, temporary) upload path it starts with."""
    text = str(error)
    return text[len(path) + 2 :] if text.startswith(f"{path}: ") else text


def _guard(function, outputs: int):
    """Run a page handler; user errors and crashes become a one-line message, never a trace.

    The wrapped handler returns its outputs with the message last; on an error every other
    output is left unchanged (``gr.skip()``) and the message says what went wrong.
    """
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (UserError, ValueError, FileNotFoundError) as error:
            message = f"⚠️ {error}"
        except Exception as error:  # noqa: BLE001 - a demo page must survive anything
            traceback.print_exc(file=sys.stderr)
            message = f"⚠️ Something went wrong ({type(error).__name__}: {error}); try again."
        gr.Warning(message.removeprefix("⚠️ "))
        return (*[gr.skip()] * (outputs - 1), message)

    return wrapper


def build_demo(demo: Demo):
    """The Gradio page around ``demo``; returns an unlaunched ``gr.Blocks``."""

    with gr.Blocks(
        title="Generative Image Dynamics",
        analytics_enabled=False,
        delete_cache=(int(CLIP_MAX_AGE_S), int(CLIP_MAX_AGE_S)),  # Gradio's copies: 1 h
    ) as page:
        photo_state = gr.State(None)
        motion_state = gr.State(None)
        gr.Markdown(
            "# Generative Image Dynamics\n"
            "Upload a photo (or pick an example), paint what may move (optional), "
            "**Animate**, then **drag on the photo** (or click it) to poke it and watch it respond."
        )
        status = gr.Markdown("Upload a photo or pick an example.", elem_id="status")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Photo", file_count="single", elem_id="upload")
                gr.Examples(EXAMPLES, inputs=[upload], label="Examples")
                editor = gr.ImageEditor(
                    label="Paint what may move (leave empty: vegetation and water, found automatically)",
                    sources=(),
                    type="numpy",
                    layers=False,
                    transforms=(),
                    brush=gr.Brush(
                        colors=["rgba(255, 64, 160, 0.6)"], color_mode="fixed", default_size=24
                    ),
                    elem_id="mask_editor",
                )
                with gr.Row():
                    amplitude = gr.Slider(0.0, 4.0, value=1.0, step=0.1, label="Amplitude")
                    visible = gr.Checkbox(
                        True,
                        label="Visible motion",
                        info="amplitude 1 = lifted to ~1 px; off: the model's own",
                    )
                    speed = gr.Slider(0.25, 4.0, value=1.0, step=0.05, label="Speed")
                    direction = gr.Dropdown(
                        list(SWAY_DIRECTIONS),
                        value=next(iter(SWAY_DIRECTIONS)),
                        label="Sway direction",
                        info="any: the model's own",
                        elem_id="direction",
                    )
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="Seed", minimum=0)
                    long_side = gr.Dropdown(
                        list(OUTPUT_SIDES),
                        value=OUTPUT_SIDES[0],
                        label="Output size (long side, px)",
                    )
                    num_frames = gr.Slider(
                        2,
                        300,
                        value=DEFAULT_FRAMES,
                        step=1,
                        label=f"Frames (at {DEFAULT_FPS:g} fps)",
                    )
                with gr.Row():
                    loop = gr.Checkbox(False, label="Seamless loop (slower)")
                    use_mask = gr.Checkbox(True, label="Use the painted mask")
                    auto_mask = gr.Checkbox(
                        True, label="Unpainted: only vegetation and water move (automatic mask)"
                    )
                    renderer = gr.Dropdown(list(RENDERERS), value="auto", label="Renderer")
                animate_button = gr.Button("Animate", variant="primary", elem_id="animate")
            with gr.Column():
                animation = gr.Image(
                    label="Animation (GIF)", type="filepath", interactive=False, elem_id="animation"
                )
                animation_mp4 = gr.File(
                    label="Download MP4", interactive=False, elem_id="animation_mp4"
                )
                gr.Markdown(
                    "### Poke: drag on the photo (the push), or click it (pushed by dx, dy)"
                )
                poke_target = gr.Image(
                    label="Drag or click to poke",
                    type="numpy",
                    interactive=False,
                    elem_id="poke_target",
                )
                with gr.Row():
                    push_dx = gr.Number(8, label="Push dx (px, right)", elem_id="push_dx")
                    push_dy = gr.Number(0, label="Push dy (px, down)", elem_id="push_dy")
                    damping = gr.Slider(0.0, 0.5, value=0.1, step=0.01, label="Damping ratio")
                response = gr.Image(
                    label="Response (GIF)", type="filepath", interactive=False, elem_id="response"
                )
                response_mp4 = gr.File(
                    label="Download MP4", interactive=False, elem_id="response_mp4"
                )

        def on_upload(path):
            photo, editor_value, message = demo.load_photo(path)
            return photo, editor_value, message

        upload.change(_guard(on_upload, 3), inputs=[upload], outputs=[photo_state, editor, status])

        def on_animate(photo, editor_value, amp, spd, lp, sd, side, frames, rend, masked, auto,
                       lift, sway, progress=TQDM_PROGRESS):  # fmt: skip
            progress(0.0, desc="sampling the motion")
            gif, mp4, motion, message = demo.animate(
                photo, editor_value, amp, spd, lp, sd, side, frames, rend, masked, auto, lift, sway
            )
            return gif, mp4, motion, motion.photo, message

        animate_button.click(
            _guard(on_animate, 5),
            inputs=[
                photo_state,
                editor,
                amplitude,
                speed,
                loop,
                seed,
                long_side,
                num_frames,
                renderer,
                use_mask,
                auto_mask,
                visible,
                direction,
            ],  # fmt: skip
            outputs=[animation, animation_mp4, motion_state, poke_target, status],
        )

        def on_poke(motion, dx, dy, zeta, event: gr.SelectData):
            x, y = event.index[:2]
            return demo.poke(motion, x, y, dx, dy, zeta)

        poke_target.select(
            _guard(on_poke, 3),
            inputs=[motion_state, push_dx, push_dy, damping],
            outputs=[response, response_mp4, status],
        )

        # A drag on the photo: DRAG_SCRIPT writes "x,y,dx,dy" (image px) here and clicks.
        drag = gr.Textbox(visible="hidden", elem_id="drag_poke")
        drag_go = gr.Button(visible="hidden", elem_id="drag_go")

        def on_drag(motion, text, zeta):
            try:
                x, y, dx, dy = (float(part) for part in text.split(","))
            except ValueError:
                raise UserError(f"a drag must give x,y,dx,dy, got {text!r}") from None
            # a long drag is a strong push, capped at the fields' 100 px
            shrink = min(1.0, 100.0 / max(abs(dx), abs(dy), 1e-9))
            return demo.poke(motion, x, y, round(dx * shrink, 1), round(dy * shrink, 1), zeta)

        drag_go.click(
            _guard(on_drag, 3),
            inputs=[motion_state, drag, damping],
            outputs=[response, response_mp4, status],
        )
    return page


# Drag to poke: press on the photo under "Click to poke", drag along the push, release. The
# drag (in the image's own pixels, the photo is shown letterboxed) is the push; a plain
# click (under 4 screen px of movement) is left to the image's select event, which pushes by
# the dx, dy fields.
DRAG_SCRIPT = """
<script>
(() => {
  let start = null, dragged = false;
  const photoOf = (event) => {
    const target = event.target;
    return target && target.tagName === "IMG" && target.closest("#poke_target") ? target : null;
  };
  const toImage = (img, clientX, clientY) => {
    const box = img.getBoundingClientRect();
    const scale = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight);
    const left = box.left + (box.width - img.naturalWidth * scale) / 2;
    const top = box.top + (box.height - img.naturalHeight * scale) / 2;
    return [(clientX - left) / scale, (clientY - top) / scale];
  };
  document.addEventListener("dragstart", (e) => { if (photoOf(e)) e.preventDefault(); }, true);
  document.addEventListener("pointerdown", (e) => {
    const img = photoOf(e);
    start = img ? { img, x: e.clientX, y: e.clientY } : null;
  }, true);
  document.addEventListener("pointerup", (e) => {
    if (!start) return;
    const { img, x, y } = start;
    start = null;
    if (Math.hypot(e.clientX - x, e.clientY - y) < 4) return;
    const [px, py] = toImage(img, x, y), [qx, qy] = toImage(img, e.clientX, e.clientY);
    const box = document.querySelector("#drag_poke textarea, #drag_poke input");
    box.value = [px, py, qx - px, qy - py].map((v) => v.toFixed(1)).join(",");
    box.dispatchEvent(new Event("input", { bubbles: true }));
    dragged = true;
    setTimeout(() => document.querySelector("#drag_go").click(), 100);
  }, true);
  document.addEventListener("click", (e) => {
    if (dragged && photoOf(e)) { e.stopPropagation(); e.preventDefault(); }
    dragged = false;
  }, true);
})();
</script>
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to serve on (0.0.0.0 exposes the demo to your network)")  # fmt: skip
    parser.add_argument("--model", default=str(DEFAULT_MODEL),
                        help="motion pipeline folder or hub id; the shipped weights by default")  # fmt: skip
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                        help="auto: a GPU when there is one, else the CPU")  # fmt: skip
    parser.add_argument("--num_inference_steps", type=int, default=DEFAULT_NUM_INFERENCE_STEPS,
                        help="denoising steps per animation")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=1,
                        help="animations computed at once; the others wait in the queue")  # fmt: skip
    parser.add_argument("--max_queue", type=int, default=16,
                        help="requests waiting at most; more are told to come back later")  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be in [1, 65535], got {args.port}")
    for name in ("num_inference_steps", "concurrency", "max_queue"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def load_pipeline(model: str, device_name: str):
    """The one motion pipeline (with its renderer) on the chosen device, as sample.py loads it."""
    from generators import pick_device
    from generators.gid import load_pipeline as load_motion_pipeline

    device = pick_device(device_name)
    pipe = load_motion_pipeline(model, "auto", device)
    pipe.set_scheduler(DEFAULT_SCHEDULER)
    return pipe, device


def serve(
    page, host: str, port: int, concurrency: int = 1, max_queue: int = 16, block: bool = True
) -> None:
    """Queue and serve the page, offline: no share link, no Node.js server, no analytics.

    ``concurrency`` requests run at once, ``max_queue`` more wait (each page shows its place
    in the queue), further ones are refused with Gradio's "queue is full" message; ``block=False``
    returns once the server is up (tests; ``page.close()`` stops it).
    """
    page.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    page.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,  # no Node.js server: the page is the package's prebuilt frontend
        max_file_size=MAX_UPLOAD,
        show_error=False,
        footer_links=[],
        mcp_server=False,
        pwa=False,
        head=DRAG_SCRIPT,
        prevent_thread_lock=not block,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        pipe, device = load_pipeline(args.model, args.device)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    page = build_demo(Demo(pipe, num_inference_steps=args.num_inference_steps))
    print(f"serving on http://{args.host}:{args.port} (model {args.model}, device {device})")
    serve(page, args.host, args.port, args.concurrency, args.max_queue)
    return 0


if __name__ == "__main__":
    sys.exit(main())
