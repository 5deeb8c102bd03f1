"""Interactive dynamics: poke a photo and let its sampled motion respond.

Generative Image Dynamics (Li et al., CVPR 2024, section "interactive dynamics") reads the
sampled spectral volume as an *image-space modal basis* (Davis, Chen and Durand, "Image-Space
Modal Bases for Plausible Manipulation of Objects in Video", SIGGRAPH Asia 2015): the
slice of frequency bin k,

    U_k(p) = (S_k^x(p), S_k^y(p)) = (re_x + i im_x, re_y + i im_y)      (complex, px)

is the shape of a vibration mode of the scene at ``f_k = k * fps / T`` Hz (``fps`` and ``T``
of the motion model, ``MotionConfig.frequencies_hz()``). A poke, a push of the pixel
``p_j = (x_j, y_j)`` along ``d_j = (dx_j, dy_j)`` (px) at time ``t_j`` (s), excites every
mode through its shape there; each mode then rings as a damped oscillator; the
displacement field is the sum over modes, and over pokes (the system is linear).

The maths, as computed here
---------------------------
1. Modal force. The push is projected on the mode's (conjugated) complex shape at the
   poked point, averaged over a ``(2r+1) x (2r+1)`` window around it (``radius`` r px,
   clipped at the border) so one noisy pixel of the sampled volume does not decide it::

       g_jk = d_j . conj(Ubar_k(p_j))           (complex, px^2)

   The conjugate makes the kernel Hermitian: the response at p along e to a push at p'
   along d, ``Re((e . U(p)) conj(d . U(p')))``, equals the one at p' along d to a push at
   p along e (Maxwell-Betti reciprocity, exact while neither point is among the 1 % most
   mobile, see 4.), and the poked point always moves *along* the push (its own response
   is ``|d . U(p_j)|^2 >= 0``).
2. Modal response. Mode k (k >= 1) is an underdamped oscillator of natural angular
   frequency ``w_k = 2 pi f_k`` and damping ratio ``zeta`` (``damping``); from rest, an
   impulse at ``t_j`` gives it the coordinate::

       q_jk(t) = g_jk / E_j * exp(-zeta w_k tau) sin(w_k sqrt(1 - zeta^2) tau),
       tau = t - t_j >= 0, and q_jk(t) = 0 for t < t_j.

   The modal amplitudes of the sampled motion already carry the scene's fall-off with
   frequency (low modes swing wider), so every mode is excited in proportion to its own
   shape, with no extra ``1 / w_k`` of a unit-mass impulse, which would let the slowest
   bins swamp the rest. The DC bin (k = 0, 0 Hz) is a static offset with no restoring
   force: it would never decay, so it is left out.
3. Displacement, summed over modes and pokes::

       D(p, t) = m(p) * sum_j sum_{k>=1} Re(U_k(p) * conj(g_jk)) / E_j * env_k(t - t_j)

   with ``env_k(tau) = exp(-zeta w_k tau) sin(w_k sqrt(1 - zeta^2) tau)`` and ``m`` the
   still mask (1 = may move, 0 = still; applied to the shapes before anything else, so a
   still pixel neither moves nor passes a push on).
4. Scale. ``E_j = max(E_99, |Ubar(p_j)|^2)``, where ``|U(p)|^2 = sum_{k>=1} |U_k(p)|^2``
   (px^2) is a pixel's mode energy and ``E_99`` its 99th percentile over the image.
   Pushing a pixel by |d| px then makes it swing by at most about |d| px (the bound is
   reached by the 1 % most mobile pixels); pushing a pixel that hardly moves in the sampled
   motion gives a response as small as its mode shapes there (``|Ubar|^2 / E_99`` of it).
   ``E_j`` does not depend on the push, so the response is exactly linear in every ``d_j``
   and pokes superpose; it is also unchanged when the spectral volume is scaled
   (``amplitude`` of the pipeline does not change a poke: its strength is |d|).

Damping default: ``zeta = 0.1``. At 30 fps and T = 150 the bins are 0.2 Hz apart; with
0.1 a 1 Hz mode loses 1/e of its amplitude in 1.6 s and a 3 Hz mode in 0.5 s, so a poke
settles within a few seconds (a 5 s clip) while its lowest bins still swing visibly;
measured damping ratios of trees and plants in wind lie around 0.03 to 0.2.

Use with the pipeline::

    out = pipe(photo, renderer=None)           # spectral at the output size, mask applied
    disp = poke_response(out.spectral[0], [parse_poke("120,40,0,8")],
                         times=np.arange(150) / 30.0,
                         frequencies_hz=pipe.motion_config.frequencies_hz())
    frames = pipe.render(out.images[0], disp)  # (N, H, W, 3) uint8
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from data.config import SPECTRAL_CHANNELS

DEFAULT_DAMPING = 0.1
DEFAULT_RADIUS = 2  # px: the poke reads the mode shapes in a 5 x 5 window
ENERGY_PERCENTILE = 99.0  # E_99: the mode energy of the most mobile pixels (see the docstring)
POKE_FORMAT = "X,Y,DX,DY[,T]"


@dataclass(frozen=True)
class Poke:
    """One push of the photo.

    Attributes:
        x, y: the poked pixel (x right, y down), in pixels of the spectral volume's grid.
        dx, dy: direction and strength of the push, px (the most mobile pixels swing about
            this far).
        t: when, in seconds from the start of the animation.
    """

    x: float
    y: float
    dx: float
    dy: float
    t: float = 0.0

    def __post_init__(self) -> None:
        for name in ("x", "y", "dx", "dy", "t"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(
                value
            ):
                raise ValueError(f"poke {name} must be a finite number, got {value!r}")
        if self.t < 0:
            raise ValueError(f"poke time t must be >= 0 s, got {self.t}")


def parse_poke(text: str) -> Poke:
    """Parse a command-line poke ``"X,Y,DX,DY[,T]"`` (px, px, px, px, s; T = 0 when left out).

    >>> parse_poke("120,40,0,8,0.5")
    Poke(x=120.0, y=40.0, dx=0.0, dy=8.0, t=0.5)
    """
    parts = [part.strip() for part in str(text).split(",")]
    if len(parts) not in (4, 5):
        raise ValueError(
            f"--poke {text!r}: expected {POKE_FORMAT} (pixel x, y, push dx, dy in px, "
            "time in s), e.g. 120,40,0,8 or 120,40,0,8,0.5"
        )
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ValueError(f"--poke {text!r}: {POKE_FORMAT} must be numbers") from None
    try:
        return Poke(*values)
    except ValueError as error:
        raise ValueError(f"--poke {text!r}: {error}") from None


def _masked_spectral(spectral, still_mask) -> np.ndarray:
    """``(K, 4, H, W)`` px (numpy or torch) -> float32 numpy, checked, times the still mask."""
    if hasattr(spectral, "detach"):  # a torch tensor
        spectral = spectral.detach().cpu().numpy()
    spectral = np.asarray(spectral)
    if spectral.ndim != 4 or spectral.shape[1] != len(SPECTRAL_CHANNELS):
        raise ValueError(
            f"spectral must be one (K, 4, H, W) volume in px, got shape {spectral.shape}"
        )
    if not np.isfinite(spectral).all():
        raise ValueError("spectral contains NaN or inf")
    spectral = spectral.astype(np.float32)
    if still_mask is not None:
        mask = np.asarray(still_mask, dtype=np.float32)
        if mask.shape != spectral.shape[2:]:
            raise ValueError(
                f"still_mask must be (H, W) = {spectral.shape[2:]} like the spectral volume, "
                f"got {mask.shape}"
            )
        if not np.isfinite(mask).all():
            raise ValueError("still_mask contains NaN or inf")
        spectral = spectral * np.clip(mask, 0.0, 1.0)
    return spectral


def poke_response(
    spectral,
    pokes: Sequence[Poke],
    times: Sequence[float] | np.ndarray,
    frequencies_hz: Sequence[float],
    damping: float = DEFAULT_DAMPING,
    radius: int = DEFAULT_RADIUS,
    still_mask=None,
) -> np.ndarray:
    """Displacement of every pixel responding to ``pokes`` (the module docstring's maths).

    Args:
        spectral: ``(K, 4, H, W)`` spectral volume in px, channels ``re_x, im_x, re_y,
            im_y`` (e.g. ``pipe(...).spectral[0]``), numpy or torch.
        pokes: one or more ``Poke``; x, y in pixels of this volume's grid.
        times: ``(N,)`` seconds at which to evaluate (frame n of an animation at ``fps`` is
            ``n / fps``).
        frequencies_hz: ``(K,)`` frequency of each bin, ``pipe.motion_config.frequencies_hz()``.
        damping: damping ratio zeta of every mode, in [0, 1) (0: rings forever).
        radius: half-size in px of the window the poke reads the mode shapes in (0: one pixel).
        still_mask: optional ``(H, W)`` in [0, 1], 1 = may move, 0 = still.

    Returns:
        ``(N, H, W, 2)`` float32 displacement in px (x then y); zero before the first poke.
    """
    spectral = _masked_spectral(spectral, still_mask)  # (K, 4, H, W)
    num_freqs, _, height, width = spectral.shape
    freqs = np.asarray(frequencies_hz, dtype=np.float64).reshape(-1)
    if freqs.shape != (num_freqs,) or not np.isfinite(freqs).all() or (freqs < 0).any():
        raise ValueError(
            f"frequencies_hz must be {num_freqs} finite frequencies >= 0 (one per bin), "
            f"got {list(np.asarray(frequencies_hz).reshape(-1))}"
        )
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.isfinite(times).all():
        raise ValueError("times must be finite seconds")
    if not (isinstance(damping, (int, float)) and math.isfinite(damping) and 0 <= damping < 1):
        raise ValueError(f"damping must be a ratio in [0, 1), got {damping!r}")
    if int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be an integer >= 0 px, got {radius!r}")
    radius = int(radius)
    pokes = list(pokes)
    if not pokes:
        raise ValueError("give at least one poke")
    for poke in pokes:
        if not isinstance(poke, Poke):
            raise ValueError(f"pokes must be Poke objects (see parse_poke), got {poke!r}")
        if not (0 <= poke.x <= width - 1 and 0 <= poke.y <= height - 1):
            raise ValueError(
                f"poke at ({poke.x:g}, {poke.y:g}) is outside the {width}x{height} image "
                f"(x in [0, {width - 1}], y in [0, {height - 1}])"
            )

    # Oscillating modes only: the DC bin has no restoring force (it would never decay).
    modes = freqs > 0
    spectral, freqs = spectral[modes], freqs[modes]  # (M, 4, H, W), (M,)
    if not len(freqs):
        return np.zeros((len(times), height, width, 2), np.float32)
    energy = float(np.percentile((spectral**2).sum(axis=(0, 1)), ENERGY_PERCENTILE))  # E_99, px^2
    if energy <= 0:  # nothing may move (all still, or a zero volume): no response
        return np.zeros((len(times), height, width, 2), np.float32)

    # U_k = real_k + i imag_k, each (M, 2, H, W) with axis (x, y).
    real, imag = spectral[:, 0::2], spectral[:, 1::2]
    omega = 2.0 * np.pi * freqs  # (M,) rad/s
    omega_d = omega * math.sqrt(1.0 - damping**2)
    # With c_jk = conj(g_jk) / E_j = a_jk + i b_jk, Re(U_k(p) c_jk) = real_k(p) a_jk - imag_k(p)
    # b_jk, so D(p, t) = sum_k real_k(p) A_k(t) - imag_k(p) B_k(t) where A_k = sum_j a_jk
    # env_jk and B_k = sum_j b_jk env_jk: one (N, 2M) x (2M, H*W*2) product for any number
    # of pokes.
    coeff_re = np.zeros((len(times), len(freqs)))  # A (N, M)
    coeff_im = np.zeros((len(times), len(freqs)))  # B (N, M)
    for poke in pokes:
        col, row = int(round(poke.x)), int(round(poke.y))
        rows = slice(max(row - radius, 0), row + radius + 1)
        cols = slice(max(col - radius, 0), col + radius + 1)
        push = np.array([poke.dx, poke.dy])
        # g_jk = d . Ubar_k(p_j): the window-mean shape projected on the push, (M,) complex
        g_re = real[:, :, rows, cols].mean(axis=(2, 3)).astype(np.float64) @ push
        g_im = imag[:, :, rows, cols].mean(axis=(2, 3)).astype(np.float64) @ push
        # E_j = max(E_99, |Ubar(p_j)|^2): a push of |d| px moves the poked point <= ~|d| px
        shape_energy = float(
            (real[:, :, rows, cols].mean(axis=(2, 3)) ** 2).sum()
            + (imag[:, :, rows, cols].mean(axis=(2, 3)) ** 2).sum()
        )
        scale = max(energy, shape_energy)
        tau = times - poke.t  # (N,)
        active = (tau >= 0)[:, None]
        tau = np.where(active[:, 0], tau, 0.0)[:, None]
        env = np.exp(-damping * omega * tau) * np.sin(omega_d * tau) * active  # (N, M)
        coeff_re += env * (g_re / scale)  # a_jk = Re(conj(g)) / E_j
        coeff_im += env * (-g_im / scale)  # b_jk = Im(conj(g)) / E_j
    coeff = np.concatenate([coeff_re, -coeff_im], axis=1).astype(np.float32)  # (N, 2M)
    fields = np.concatenate([real, imag])  # (2M, 2, H, W)
    fields = np.moveaxis(fields, 1, -1).reshape(2 * len(freqs), -1)  # (2M, H*W*2)
    disp = coeff @ fields
    return disp.reshape(len(times), height, width, 2)


def poke_times(num_frames: int, fps: float, speed: float = 1.0) -> np.ndarray:
    """Seconds of motion shown at frames ``0 .. num_frames - 1`` played at ``fps``, ``speed``x."""
    if num_frames < 1 or not fps > 0 or not speed > 0:
        raise ValueError(
            f"need num_frames >= 1, fps > 0 and speed > 0, got {num_frames}, {fps}, {speed}"
        )
    return np.arange(num_frames) / fps * speed


def _check_pokes_fit(pipe, image, pokes: list[Poke], pipe_kwargs: dict) -> None:
    """ValueError if a poke lies outside the frames the pipeline will make for ``image``."""
    if not hasattr(pipe, "output_size_for"):  # a stand-in without the pipeline's sizing
        return
    from models.pipeline_motion import to_rgb_array

    photo = to_rgb_array(image)
    width, height = pipe.output_size_for(
        (photo.shape[1], photo.shape[0]),
        pipe_kwargs.get("output_size"),
        pipe_kwargs.get("crop", False),
    )
    for poke in pokes:
        if not (0 <= poke.x <= width - 1 and 0 <= poke.y <= height - 1):
            raise ValueError(
                f"poke at ({poke.x:g}, {poke.y:g}) is outside the {width}x{height} output "
                f"(pokes are pixels of the output: x in [0, {width - 1}], y in [0, {height - 1}])"
            )


@dataclass
class PokeAnimation:
    """What ``animate_poke`` returns.

    Attributes:
        frames: ``(N, H, W, 3)`` uint8, the rendered response (frame 0 is the photo).
        displacements: ``(N, H, W, 2)`` float32 px.
        spectral: ``(K, 4, H, W)`` float32 px, the sampled motion the pokes excited.
        image: ``(H, W, 3)`` uint8, the photo at the output size.
    """

    frames: np.ndarray
    displacements: np.ndarray
    spectral: np.ndarray
    image: np.ndarray


def animate_poke(
    pipe,
    image,
    pokes: Sequence[Poke],
    *,
    num_frames: int = 150,
    fps: float = 30.0,
    speed: float = 1.0,
    damping: float = DEFAULT_DAMPING,
    radius: int = DEFAULT_RADIUS,
    renderer: str = "auto",
    **pipe_kwargs,
) -> PokeAnimation:
    """Photo in, its response to ``pokes`` out: what ``sample.py --poke`` and the demo do.

    Samples the photo's spectral volume with the one motion pipeline (``pipe(image,
    renderer=None, **pipe_kwargs)``: ``generator``, ``num_inference_steps``,
    ``guidance_scale``, ``motion_mask``, ``output_size``, ... pass straight through), excites
    its modes (``poke_response``; poke x, y are pixels of the *output* size) at frames
    ``0 .. num_frames - 1`` of ``fps`` played ``speed`` times faster, and renders the frames
    with ``pipe.render``.
    """
    pokes = list(pokes)
    if not pokes or not all(isinstance(poke, Poke) for poke in pokes):
        raise ValueError("give at least one Poke (see parse_poke)")
    times = poke_times(num_frames, fps, speed)
    _check_pokes_fit(pipe, image, pokes, pipe_kwargs)  # before a minute of sampling
    out = pipe(
        image, renderer=None, num_frames=1, fps=fps, return_displacements=False, **pipe_kwargs
    )
    spectral = np.asarray(out.spectral[0], dtype=np.float32)  # (K, 4, H, W) px, output size
    photo = np.asarray(out.images[0])
    disp = poke_response(
        spectral, pokes, times, pipe.motion_config.frequencies_hz(), damping=damping, radius=radius
    )
    frames = np.asarray(pipe.render(photo, disp, renderer=renderer))
    return PokeAnimation(frames=frames, displacements=disp, spectral=spectral, image=photo)
