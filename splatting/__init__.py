"""Softmax splatting: a differentiable forward-warping operator and baseline renderers.

``softsplat(input, flow, metric, mode)`` is pure PyTorch on every device, with CuPy CUDA
kernels used automatically where available; ``render_frames(image, displacements, method)``
turns a photo and per-frame displacements into video frames. See docs/SPLATTING.md.
"""

from splatting.renderers import RENDERERS, render_frames, softsplat_metric
from splatting.softsplat import MODES, hole_mask, softsplat

__all__ = ["MODES", "RENDERERS", "hole_mask", "render_frames", "softsplat", "softsplat_metric"]
