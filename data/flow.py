"""Optical flow from one reference frame to every frame of a clip, behind one interface.

``estimate_flow(reference, frames)`` returns ``flow: (T, H, W, 2)`` float32 in pixels, with
``flow[t, y, x] = (dx, dy)`` ([..., 0] = x right, [..., 1] = y down) such that the reference
pixel at ``p = (x, y)`` is found at ``p + flow[t, y, x]`` in ``frames[t]``. Each flow is
computed directly between the reference and frame t, never chained through the frames in
between, so errors do not accumulate along the clip. This is the displacement field that
``data/spectral.py`` turns into a spectral volume.

Methods (``FLOW_METHODS``; ``get_flow_estimator(name, **options)``):

- ``dis`` (default): OpenCV's Dense Inverse Search, presets ultrafast / fast / medium / fine.
- ``farneback``: OpenCV's polynomial-expansion flow; smoother and less accurate.
- ``pyflow``: Pathak's Coarse2Fine (Liu's variational flow), the estimator used by the
  paper's authors' tooling; not on PyPI, imported only when asked for.
- ``raft``: torchvision's RAFT (large or small) from local weights only; never downloads.

Every estimator is a callable ``estimator(ref, frame) -> (H, W, 2)`` taking ``(H, W, 3)``
uint8 RGB; ``estimator.flow_to_frames(ref, frames, workers)`` does the per-reference work
(grayscale conversion, tensor upload) once and may spread frames over threads.
Accuracy and speed of each are measured by ``benchmarks/bench_flow.py`` (docs/FLOW.md).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    """Return ``image`` as contiguous ``(H, W, 3)`` uint8 RGB (gray ``(H, W)`` is expanded)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(
            f"{name} must be uint8 RGB, got {image.dtype}; for values in [0, 1] use "
            f"(x * 255).round().clip(0, 255).astype(np.uint8)"
        )
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"{name} must be (H, W, 3) RGB, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


class FlowEstimator:
    """Base class: flow from a reference frame to another frame, ``(H, W, 2)`` float32 pixels.

    Subclasses implement ``prepare`` (work that depends on the reference only, done once per
    reference) and ``flow_from`` (the rest). ``thread_safe = False`` means ``flow_from`` must
    not run concurrently on one instance; ``flow_to_frames`` then keeps one per thread.
    """

    name = ""
    thread_safe = True

    def prepare(self, reference: np.ndarray) -> Any:
        return reference

    def flow_from(self, prepared: Any, frame: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, reference: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """Flow ``(H, W, 2)`` float32 from ``reference`` to ``frame`` (both ``(H, W, 3)`` uint8)."""
        reference = _check_image(reference, "reference")
        frame = _check_image(frame, "frame")
        if frame.shape != reference.shape:
            raise ValueError(f"frame {frame.shape} and reference {reference.shape} differ")
        return self.flow_from(self.prepare(reference), frame)

    def flow_to_frames(
        self, reference: np.ndarray, frames: np.ndarray | Sequence[np.ndarray], workers: int = 1
    ) -> np.ndarray:
        """Flow from ``reference`` to each of ``frames``: ``(T, H, W, 2)`` float32.

        A frame identical to the reference gets an exact zero flow without estimation.
        ``workers > 1`` spreads frames over threads (OpenCV releases the GIL while it works).
        """
        reference = _check_image(reference, "reference")
        checked = [_check_image(f, f"frames[{i}]") for i, f in enumerate(frames)]
        for i, frame in enumerate(checked):
            if frame.shape != reference.shape:
                raise ValueError(
                    f"frames[{i}] {frame.shape} and reference {reference.shape} differ"
                )
        height, width = reference.shape[:2]
        out = np.zeros((len(checked), height, width, 2), dtype=np.float32)
        todo = [i for i, frame in enumerate(checked) if not np.array_equal(frame, reference)]
        if not todo:
            return out
        if workers <= 1 or len(todo) == 1:
            prepared = self.prepare(reference)
            for i in todo:
                out[i] = self.flow_from(prepared, checked[i])
            return out
        local = threading.local()

        def work(i: int) -> None:
            if not hasattr(local, "state"):  # per thread: own estimator if not thread-safe
                estimator = self if self.thread_safe else self.clone()
                local.state = (estimator, estimator.prepare(reference))
            estimator, prepared = local.state
            out[i] = estimator.flow_from(prepared, checked[i])

        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(work, todo))
        return out

    def clone(self) -> FlowEstimator:
        """A fresh estimator with the same options (for per-thread use)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be cloned for threads")


def _to_gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


class DISFlow(FlowEstimator):
    """OpenCV Dense Inverse Search (Kroeger et al., ECCV 2016) on grayscale frames.

    Args:
        preset: ``"ultrafast"``, ``"fast"``, ``"medium"`` (default) or ``"fine"``: medium
            with its finest pyramid level at full resolution (OpenCV's presets stop at half
            resolution). About 3x slower than medium; on oscillation whose amplitude varies
            across the image it halves the error, because medium's half-resolution field
            smooths the variation away (docs/FLOW.md).
        finest_scale, patch_size, patch_stride, gradient_descent_iterations,
        variational_refinement_iterations: override the preset's value when given.
    """

    name = "dis"
    thread_safe = False  # a cv2.DISOpticalFlow keeps per-call buffers
    PRESETS = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        "fine": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,  # + finest_scale 0, set below
    }

    def __init__(
        self,
        preset: str = "medium",
        *,
        finest_scale: int | None = None,
        patch_size: int | None = None,
        patch_stride: int | None = None,
        gradient_descent_iterations: int | None = None,
        variational_refinement_iterations: int | None = None,
    ):
        if preset not in self.PRESETS:
            raise ValueError(f"DIS preset must be one of {sorted(self.PRESETS)}, got {preset!r}")
        self.options = dict(
            preset=preset,
            finest_scale=finest_scale,
            patch_size=patch_size,
            patch_stride=patch_stride,
            gradient_descent_iterations=gradient_descent_iterations,
            variational_refinement_iterations=variational_refinement_iterations,
        )
        self.dis = cv2.DISOpticalFlow_create(self.PRESETS[preset])
        if preset == "fine" and finest_scale is None:
            self.dis.setFinestScale(0)
        setters = {
            "finest_scale": self.dis.setFinestScale,
            "patch_size": self.dis.setPatchSize,
            "patch_stride": self.dis.setPatchStride,
            "gradient_descent_iterations": self.dis.setGradientDescentIterations,
            "variational_refinement_iterations": self.dis.setVariationalRefinementIterations,
        }
        for key, setter in setters.items():
            if self.options[key] is not None:
                setter(int(self.options[key]))

    def clone(self) -> DISFlow:
        return DISFlow(**self.options)

    def prepare(self, reference: np.ndarray) -> np.ndarray:
        return _to_gray(reference)

    def flow_from(self, prepared: np.ndarray, frame: np.ndarray) -> np.ndarray:
        return self.dis.calc(prepared, _to_gray(frame), None)


class FarnebackFlow(FlowEstimator):
    """OpenCV Farneback (polynomial expansion) flow on grayscale frames; options as in
    ``cv2.calcOpticalFlowFarneback``. Defaults: those of OpenCV's sample, with 5 levels so
    that the coarsest level (1/16 size) still sees displacements of several pixels."""

    name = "farneback"

    def __init__(
        self,
        *,
        pyr_scale: float = 0.5,
        levels: int = 5,
        winsize: int = 15,
        iterations: int = 3,
        poly_n: int = 5,
        poly_sigma: float = 1.2,
        gaussian: bool = False,
    ):
        self.args = (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma)
        self.flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN if gaussian else 0

    def prepare(self, reference: np.ndarray) -> np.ndarray:
        return _to_gray(reference)

    def flow_from(self, prepared: np.ndarray, frame: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(
            prepared, _to_gray(frame), None, *self.args, flags=self.flags
        )


PYFLOW_INSTALL_HINT = (
    "pyflow (Coarse2Fine optical flow by Deepak Pathak, github.com/pathak22/pyflow) is not "
    "installed. It is not on PyPI (the PyPI package named 'pyflow' is unrelated). Install "
    "it from source: git clone https://github.com/pathak22/pyflow && cd pyflow && "
    "python setup.py build_ext -i, then add that folder to PYTHONPATH. "
    "Or use method='dis', which needs nothing extra."
)


def _import_pyflow():
    try:
        import pyflow
    except ImportError:
        raise ImportError(PYFLOW_INSTALL_HINT) from None
    if not hasattr(pyflow, "coarse2fine_flow"):
        raise ImportError(
            f"the importable 'pyflow' ({getattr(pyflow, '__file__', '?')}) has no "
            f"coarse2fine_flow: it is another package. {PYFLOW_INSTALL_HINT}"
        )
    return pyflow


class PyflowFlow(FlowEstimator):
    """Coarse2Fine variational flow (C. Liu's code wrapped by D. Pathak's ``pyflow``).

    Options are pyflow's, with its demo's defaults: ``alpha`` (smoothness), ``ratio``
    (pyramid downsampling), ``min_width`` (coarsest level width), outer/inner fixed-point and
    SOR iterations. Works on RGB in [0, 1] as float64.
    """

    name = "pyflow"

    def __init__(
        self,
        *,
        alpha: float = 0.012,
        ratio: float = 0.75,
        min_width: int = 20,
        outer_iterations: int = 7,
        inner_iterations: int = 1,
        sor_iterations: int = 30,
    ):
        self.pyflow = _import_pyflow()
        self.args = (alpha, ratio, min_width, outer_iterations, inner_iterations, sor_iterations)

    def prepare(self, reference: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(reference, dtype=np.float64) / 255.0

    def flow_from(self, prepared: np.ndarray, frame: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(frame, dtype=np.float64) / 255.0
        u, v, _ = self.pyflow.coarse2fine_flow(prepared, image, *self.args, 0)  # 0: RGB
        return np.stack([u, v], axis=-1).astype(np.float32)


def _raft_weight_files(model: str) -> list[str]:
    """File names torchvision gives the ``model`` ("large"/"small") weights, default first."""
    from torchvision.models import optical_flow

    enum = optical_flow.Raft_Large_Weights if model == "large" else optical_flow.Raft_Small_Weights
    ordered = [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]
    return [w.url.rsplit("/", 1)[-1] for w in ordered]


def find_raft_weights(model: str | None = None) -> Path:
    """A RAFT checkpoint already in the torch hub cache (``torch.hub.get_dir()/checkpoints``).

    Looks for torchvision's own file names (``raft_large_C_T_SKHT_V2-ff5fadd5.pth``, ...),
    large before small unless ``model`` says which. Never downloads.

    Raises:
        FileNotFoundError: none there; the message says where to put one.
    """
    import torch

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    names = [n for m in ([model] if model else ["large", "small"]) for n in _raft_weight_files(m)]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"no RAFT weights found: pass weights_path=... or copy one of {names} into {folder} "
        f"(this project never downloads weights; fetch it on a machine with internet, e.g. "
        f"torchvision.models.optical_flow.raft_large(weights='DEFAULT'))"
    )


class RAFTFlow(FlowEstimator):
    """torchvision RAFT (Teed & Deng, ECCV 2020) from a local state dict.

    Args:
        weights_path: a ``.pth`` state dict of torchvision's ``raft_large`` or ``raft_small``
            (plain, or under a ``"state_dict"``/``"model"`` key). ``None``: look in the
            torch hub cache (``find_raft_weights``).
        model: ``"large"`` or ``"small"``; ``None`` tries the one whose keys match.
        num_flow_updates: recurrent refinement steps (torchvision's default 12).
        device: torch device; ``None`` picks CUDA when available.
        batch_size: frames per forward pass in ``flow_to_frames``.
    Frames are padded (replicated edges) to a multiple of 8, at least 128x128, and the flow
    cropped back.
    """

    name = "raft"

    def __init__(
        self,
        *,
        weights_path: str | Path | None = None,
        model: str | None = None,
        num_flow_updates: int = 12,
        device: str | None = None,
        batch_size: int = 4,
    ):
        import torch
        from torchvision.models.optical_flow import raft_large, raft_small

        if model not in (None, "large", "small"):
            raise ValueError(f"RAFT model must be 'large' or 'small', got {model!r}")
        path = Path(weights_path) if weights_path is not None else find_raft_weights(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: RAFT weights file not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise ValueError(f"{path}: not a RAFT state dict (got {type(state).__name__})")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        candidates = (
            [model]
            if model
            else (["small", "large"] if "small" in path.name else ["large", "small"])
        )
        builders = {"large": raft_large, "small": raft_small}
        for candidate in candidates:
            net = builders[candidate](weights=None)
            try:
                net.load_state_dict(state, strict=True)
            except RuntimeError:
                continue
            self.model = candidate
            break
        else:
            raise ValueError(
                f"{path}: keys do not match torchvision raft_{' or raft_'.join(candidates)}"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = net.eval().to(self.device)
        self.num_flow_updates = num_flow_updates
        self.batch_size = batch_size

    def _to_tensor(self, images: np.ndarray):
        """``(B, H, W, 3)`` uint8 -> ``(B, 3, H', W')`` float in [-1, 1], padded to RAFT's
        needs: a multiple of 8 and at least 128 (its correlation pyramid halves 1/8 size
        features 3 times)."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        height, width = x.shape[2:]
        pad_h, pad_w = max(-height % 8, 128 - height), max(-width % 8, 128 - width)
        return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x

    def prepare(self, reference: np.ndarray):
        return self._to_tensor(reference[None]), reference.shape[:2]

    def _flows(self, prepared, frames: np.ndarray) -> np.ndarray:
        import torch

        ref, (height, width) = prepared
        target = self._to_tensor(frames)
        with torch.inference_mode():
            flows = self.net(
                ref.expand(len(target), -1, -1, -1), target, num_flow_updates=self.num_flow_updates
            )[-1]
        return flows[:, :, :height, :width].permute(0, 2, 3, 1).float().cpu().numpy()

    def flow_from(self, prepared, frame: np.ndarray) -> np.ndarray:
        return self._flows(prepared, frame[None])[0]

    def flow_to_frames(
        self, reference: np.ndarray, frames: np.ndarray | Sequence[np.ndarray], workers: int = 1
    ) -> np.ndarray:
        """Batched on the device; ``workers`` is ignored (the network already uses all cores)."""
        reference = _check_image(reference, "reference")
        clip = np.stack([_check_image(f, f"frames[{i}]") for i, f in enumerate(frames)])
        if clip.shape[1:] != reference.shape:
            raise ValueError(f"frames {clip.shape[1:]} and reference {reference.shape} differ")
        prepared = self.prepare(reference)
        return np.concatenate(
            [
                self._flows(prepared, clip[i : i + self.batch_size])
                for i in range(0, len(clip), self.batch_size)
            ]
        )


FLOW_METHODS: dict[str, type[FlowEstimator]] = {
    "dis": DISFlow,
    "farneback": FarnebackFlow,
    "pyflow": PyflowFlow,
    "raft": RAFTFlow,
}


def get_flow_estimator(name: str = "dis", **options) -> FlowEstimator:
    """Build the estimator registered as ``name`` in ``FLOW_METHODS`` with its ``options``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid ones).
        ImportError / FileNotFoundError: pyflow not installed / RAFT weights not present.
    """
    if name not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {name!r}; valid: {', '.join(FLOW_METHODS)}")
    try:
        return FLOW_METHODS[name](**options)
    except TypeError as error:  # an option this estimator does not take
        raise ValueError(f"flow method {name!r}: {error}") from None


def estimate_flow(
    reference: np.ndarray,
    frames: np.ndarray | Sequence[np.ndarray],
    method: str = "dis",
    *,
    workers: int = 1,
    **options,
) -> np.ndarray:
    """Forward flow from ``reference`` to every frame: ``(T, H, W, 2)`` float32 pixels.

    Args:
        reference: ``(H, W, 3)`` uint8 RGB, usually frame 0 of the clip.
        frames: ``(T, H, W, 3)`` uint8 RGB (include frame 0 to get ``flow[0] = 0``).
        method: a key of ``FLOW_METHODS``.
        workers: threads over frames (for the OpenCV methods; see docs/FLOW.md for speed-up).
        options: passed to the estimator (e.g. ``preset="fast"`` for DIS).
    Returns:
        ``flow`` with ``reference[p]`` found at ``p + flow[t, p]`` in ``frames[t]``;
        ``[..., 0]`` = x (right), ``[..., 1]`` = y (down).
    """
    return get_flow_estimator(method, **options).flow_to_frames(reference, frames, workers=workers)


# ----------------------------------------------------------------------------- evaluation


def endpoint_error(flow: np.ndarray, target: np.ndarray, border: int = 0) -> float:
    """Mean end-point error ``|flow - target|_2`` in pixels over ``(..., H, W, 2)`` arrays,
    ignoring ``border`` pixels on each side (where the true correspondence may leave the
    frame)."""
    if flow.shape != target.shape:
        raise ValueError(f"flow {flow.shape} and target {target.shape} differ")
    height, width = flow.shape[-3:-1]
    if 2 * border >= min(height, width):
        raise ValueError(f"border {border} leaves nothing of a {width}x{height} flow")
    window = (..., slice(border, height - border), slice(border, width - border), slice(None))
    diff = flow[window].astype(np.float64) - target[window]
    return float(np.sqrt((diff**2).sum(-1)).mean())


def render_displaced(image: np.ndarray, disp: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Render ``image`` moved by a smooth forward field: ``image[p]`` lands at ``p + disp[p]``.

    Backward sampling needs the inverse map: for each output pixel x the source q solves
    ``q + disp(q) = x``, found by the fixed-point iteration ``q <- x - disp(q)`` (converges
    when the field's gradient is below 1, true for smooth motion). Then ``out(x) =
    image(q)`` with bicubic interpolation and mirrored borders. The result's flow from
    ``image`` is ``disp``, so ``disp`` is exact ground truth for flow benchmarks.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``, any dtype cv2.remap takes.
        disp: ``(H, W, 2)`` pixels, [..., 0] = x, [..., 1] = y.
    """
    height, width = image.shape[:2]
    if disp.shape != (height, width, 2):
        raise ValueError(f"disp must be ({height}, {width}, 2), got {disp.shape}")
    disp = np.ascontiguousarray(disp, dtype=np.float32)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    qx, qy = xs - disp[..., 0], ys - disp[..., 1]
    for _ in range(iterations):
        at_q = cv2.remap(disp, qx, qy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        qx, qy = xs - at_q[..., 0], ys - at_q[..., 1]
    return cv2.remap(image, qx, qy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
