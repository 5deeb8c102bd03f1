"""``MotionPipeline``: photo -> spectral volume -> per-frame displacements.

The diffusers pipeline of Generative Image Dynamics. It holds three components and two
plain dictionaries that travel with them:

* ``vae``: the spectral codec (``models.spectral_codec``: an ``AutoencoderKL`` or a
  ``ResampleSpectralCodec``), normalised spectral volume ``(B, K, 4, H, W)`` <-> scaled
  latents ``(B, K, c, h, w)``;
* ``unet``: the ``MotionUNet`` denoiser, ``unet(latents, t, image).sample``, conditioned on
  the photo ``(B, 3, H, W)`` in [-1, 1]; an all-zero photo is the unconditional input;
* ``scheduler``: any diffusers scheduler (DDIM by default; swap in
  ``DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)`` for few steps);
* ``motion_config`` (``data.config.MotionConfig`` as a dict: T, fps, K, width, height) and
  ``normalization`` (``data.spectral.FrequencyNormalizer`` as a dict). Both are
  registered to the pipeline's config, so ``save_pretrained`` writes them into
  ``model_index.json`` and ``from_pretrained`` hands them back to ``__init__`` unchanged.

One call, step by step (see ``__call__``)::

    photo --resize (cover + centre crop)--> image (B, 3, H, W) in [-1, 1]
    noise (B, K, c, h, w) --for t in timesteps: U-Net (+ classifier-free guidance)
                                                  (+ loop self-guidance) -> scheduler.step
    latents --codec decode--> S' (normalised) --denormalise--> S (B, K, 4, H, W) px
            --Fourier series at frames 0..N-1--> D (B, N, H, W, 2) px

Seamless looping (the paper's motion self-guidance): with ``loop_guidance_scale > 0``
each step predicts the clean latents x0, decodes them to displacements and takes the
gradient of ``L = |D[T-1] - D[0]|_1 + |grad D[T-1] - grad D[0]|_1`` (spatial finite
differences, summed over pixels) with respect to x0; the noise prediction is then moved
along that gradient as in classifier guidance (``_loop_guidance``). docs/MOTION_PIPELINE.md
defines the loop error and shows what the guidance does to it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from data.config import SPECTRAL_CHANNELS, MotionConfig
from data.spectral import FrequencyNormalizer, displacement_at_phases
from data.video import resize_cover_crop
from models import SCHEDULERS

TRAIN_UNET_HINT = (
    "a motion pipeline is a folder written by MotionPipeline.save_pretrained (model_index.json "
    "+ vae/ + unet/ + scheduler/); build one from train_unet.py's output with "
    "MotionPipeline.from_training_output(OUTPUT_DIR)"
)


@dataclass
class MotionPipelineOutput(BaseOutput):
    """What ``MotionPipeline.__call__`` returns.

    Attributes:
        spectral: ``(B, K, 4, H, W)`` spectral volumes in pixels (channels
            ``re_x, im_x, re_y, im_y``); numpy float32 or a torch tensor (``output_type="pt"``).
        displacements: ``(B, N, H, W, 2)`` displacement of every pixel of the photo at
            frames ``0 .. N-1`` (frame n at ``n / fps`` s), in pixels, x then y.
        images: the photos as the model saw them: ``(B, H, W, 3)`` uint8 (``"np"``), or
            ``(B, 3, H, W)`` in [-1, 1] (``"pt"``).
    """

    spectral: np.ndarray | torch.Tensor
    displacements: np.ndarray | torch.Tensor
    images: np.ndarray | torch.Tensor


# ---------------------------------------------------------------------------- helpers


def scheduler_class(name: str) -> type:
    """The diffusers scheduler class of a name in ``SCHEDULERS``."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    classes = {
        "ddim": DDIMScheduler,
        "dpm": DPMSolverMultistepScheduler,
        "ddpm": DDPMScheduler,
        "euler": EulerDiscreteScheduler,
    }
    if name not in classes:
        raise ValueError(f"scheduler must be one of {list(SCHEDULERS)}, got {name!r}")
    return classes[name]


def displacement_at_frames(
    spectral: torch.Tensor, frames: torch.Tensor | list[int], num_frames: int
) -> torch.Tensor:
    """Displacement at chosen frames from a spectral volume, differentiable (torch).

    The inverse real FFT of ``data.spectral.spectral_to_displacement`` evaluated only at
    ``frames`` (any integers; the motion is periodic with period ``num_frames``)::

        D[t] = sum_k w_k (Re S_k cos(2 pi k t / T) - Im S_k sin(2 pi k t / T)),
        w_0 = 1 (DC, imaginary part dropped), w_k = 2 otherwise.

    Args:
        spectral: ``(B, K, 4, H, W)`` in pixels; ``K < T / 2`` (no Nyquist bin).
        frames: ``(N,)`` frame indices.
        num_frames: T, the period in frames.

    Returns:
        ``(B, N, H, W, 2)`` in pixels, the input's dtype and device.
    """
    if spectral.ndim != 5 or spectral.shape[2] != len(SPECTRAL_CHANNELS):
        raise ValueError(f"spectral must be (B, K, 4, H, W), got {tuple(spectral.shape)}")
    num_freqs = spectral.shape[1]
    if 2 * (num_freqs - 1) >= num_frames:
        raise ValueError(f"K = {num_freqs} frequencies need T > {2 * (num_freqs - 1)} frames")
    phases = np.asarray(frames, dtype=np.float64).reshape(-1) / num_frames
    return displacement_at_phases(spectral, phases)


def loop_loss(disp_first: torch.Tensor, disp_last: torch.Tensor) -> torch.Tensor:
    """The paper's looping energy per sample, summed over pixels (px).

    ``L = sum |D_last - D_first| + sum |grad D_last - grad D_first|``, grad = forward
    differences in x and in y (L1 over both displacement components).

    Args:
        disp_first, disp_last: ``(B, H, W, 2)`` displacement in pixels.

    Returns:
        ``(B,)``.
    """
    diff = disp_last - disp_first  # (B, H, W, 2)
    grad_x = diff[:, :, 1:] - diff[:, :, :-1]
    grad_y = diff[:, 1:] - diff[:, :-1]
    return (
        diff.abs().flatten(1).sum(1)
        + grad_x.abs().flatten(1).sum(1)
        + grad_y.abs().flatten(1).sum(1)
    )


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL image (EXIF-rotated, RGBA, L, P, 16-bit, float) -> (H, W, 3) uint8 upright RGB."""
    from data.images import to_rgb

    return np.asarray(to_rgb(image))


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1|3|4) uint8 / uint16 / float in [0, 1] -> (H, W, 3) uint8."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}"
        )
    if array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(
            f"image arrays must be uint8, uint16 or float in [0, 1], got {array.dtype}"
        )
    if array.shape[2] == 4:  # composite on white, as a viewer shows transparency
        alpha = array[..., 3:].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


# ---------------------------------------------------------------------------- pipeline


class MotionPipeline(DiffusionPipeline):
    r"""Photo -> spectral volume -> per-frame displacements (Generative Image Dynamics).

    Parameters:
        vae: the spectral codec (``AutoencoderKL`` or ``ResampleSpectralCodec``).
        unet: the ``MotionUNet``.
        scheduler: any diffusers scheduler (``DDIMScheduler`` by default).
        motion_config: ``MotionConfig.to_dict()`` of the training data (T, fps, K, size).
        normalization: ``FrequencyNormalizer.to_dict()`` of the training data.
    """

    model_cpu_offload_seq = "unet->vae"

    def __init__(
        self,
        vae,
        unet,
        scheduler,
        motion_config: dict | None = None,
        normalization: dict | None = None,
    ) -> None:
        super().__init__()
        if motion_config is None or normalization is None:
            raise ValueError(
                "MotionPipeline needs motion_config and normalization (the training data's "
                f"MotionConfig and FrequencyNormalizer as dicts); {TRAIN_UNET_HINT}"
            )
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler)
        # validate before registering: a bad dict fails here with the class's own message
        MotionConfig.from_dict(motion_config)
        FrequencyNormalizer.from_dict(normalization)
        self.register_to_config(
            motion_config=dict(motion_config), normalization=dict(normalization)
        )
        self._check_components()

    @property
    def motion_config(self) -> MotionConfig:
        """T, fps, K and frame size of the training data (read from the pipeline's config)."""
        return MotionConfig.from_dict(self.config.motion_config)

    @property
    def normalizer(self) -> FrequencyNormalizer:
        """The training data's frequency-adaptive normalisation (from the pipeline's config)."""
        return FrequencyNormalizer.from_dict(self.config.normalization)

    # ------------------------------------------------------------------ construction

    def _check_components(self) -> None:
        """Codec, U-Net, motion config and statistics must describe the same volumes."""
        from models.spectral_codec import codec_downsample_factor, codec_latent_channels

        config = self.motion_config
        problems = []
        if self.normalizer.num_freqs != config.num_freqs:
            problems.append(
                f"normalization has {self.normalizer.num_freqs} frequencies, "
                f"motion_config K = {config.num_freqs}"
            )
        unet_freqs = getattr(self.unet.config, "num_freqs", config.num_freqs)
        if unet_freqs != config.num_freqs:
            problems.append(f"unet num_freqs = {unet_freqs}, motion_config K = {config.num_freqs}")
        codec_channels = codec_latent_channels(self.vae)
        unet_channels = getattr(self.unet.config, "latent_channels", codec_channels)
        if unet_channels != codec_channels:
            problems.append(
                f"unet latent_channels = {unet_channels}, codec latent channels = {codec_channels}"
            )
        factor = codec_downsample_factor(self.vae)
        if config.width % factor or config.height % factor:
            problems.append(
                f"frame size {config.width}x{config.height} is not a multiple of the codec's "
                f"downsampling factor {factor}"
            )
        if problems:
            raise ValueError(
                "the codec, U-Net and motion config disagree: "
                + "; ".join(problems)
                + "; train the U-Net on latents of this codec and data (train_unet.py)"
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> MotionPipeline:
        """Load a pipeline folder (or hub id) written by ``save_pretrained``.

        A local folder without ``model_index.json`` raises ``FileNotFoundError`` that says
        how to make one (train_unet.py, ``from_training_output``).
        """
        local = Path(pretrained_model_name_or_path)
        if local.is_dir() and not (local / "model_index.json").is_file():
            hint = (
                " (it looks like train_unet.py's output: use MotionPipeline.from_training_output)"
                if (local / "unet").is_dir()
                else ""
            )
            raise FileNotFoundError(
                f"{local}: no model_index.json, not a motion pipeline{hint}; {TRAIN_UNET_HINT}"
            )
        # diffusers imports a component's class only from modules already imported
        import models.motion_unet  # noqa: F401
        import models.spectral_codec  # noqa: F401

        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_training_output(
        cls, output_dir: str | Path, scheduler: str = "ddim"
    ) -> MotionPipeline:
        """Assemble a pipeline from ``train_unet.py``'s ``output_dir/{unet,scheduler,codec}``.

        Args:
            scheduler: a name of ``SCHEDULERS`` (default ``"ddim"``; ``"ddpm"`` is the
                training scheduler as saved).
        """
        from diffusers import DDPMScheduler

        from models.motion_unet import MotionUNet
        from models.spectral_codec import load_spectral_codec

        output_dir = Path(output_dir)
        for name in ("unet", "scheduler", "codec"):
            if not (output_dir / name).is_dir():
                raise FileNotFoundError(
                    f"{output_dir}: no {name}/ folder; expected the output_dir of a finished "
                    "train_unet.py run (unet/, scheduler/, codec/)"
                )
        scheduler_cls = scheduler_class(scheduler)  # a bad name fails before loading anything
        codec, motion_config, normalizer = load_spectral_codec(output_dir / "codec")
        unet = MotionUNet.from_pretrained(output_dir / "unet")
        trained = DDPMScheduler.from_pretrained(output_dir / "scheduler")
        return cls(
            vae=codec,
            unet=unet,
            scheduler=scheduler_cls.from_config(trained.config),
            motion_config=motion_config.to_dict(),
            normalization=normalizer.to_dict(),
        )

    def set_scheduler(self, name: str) -> None:
        """Sample with another scheduler (``SCHEDULERS``), configured like the current one."""
        self.scheduler = scheduler_class(name).from_config(self.scheduler.config)

    # ------------------------------------------------------------------ inputs

    def preprocess(self, image) -> torch.Tensor:
        """Photo(s) -> ``(B, 3, H, W)`` float32 in [-1, 1] at the model's size.

        Accepts a PIL image (any mode, EXIF orientation applied), a path, an ``(H, W[, C])``
        uint8/uint16/float array, a ``(3, H, W)`` / ``(B, 3, H, W)`` tensor in [-1, 1], or
        a list of those. Each is resized to cover the model's frame and centre-cropped
        (``data.video.resize_cover_crop``).
        """
        size = self.motion_config.size
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            image = list(image)
        if not isinstance(image, (list, tuple)):
            image = [image]
        if not image:
            raise ValueError("no image given (an empty list)")
        out = []
        for item in image:
            if isinstance(item, (str, Path)):
                from data.images import load_image

                item = load_image(item)
            if isinstance(item, Image.Image):
                rgb = _pil_to_rgb(item).astype(np.float32) / 127.5 - 1.0
            elif isinstance(item, np.ndarray):
                rgb = _array_to_rgb(item).astype(np.float32) / 127.5 - 1.0
            elif isinstance(item, torch.Tensor):
                if item.ndim != 3 or item.shape[0] != 3:
                    raise ValueError(
                        f"an image tensor must be (3, H, W) or (B, 3, H, W) in [-1, 1], "
                        f"got shape {tuple(item.shape)}"
                    )
                rgb = item.detach().float().cpu().permute(1, 2, 0).numpy()
            else:
                raise TypeError(
                    f"image must be a PIL image, a path, a numpy array or a tensor, got "
                    f"{type(item).__name__}"
                )
            rgb = resize_cover_crop(np.ascontiguousarray(rgb), size)
            out.append(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
        return torch.stack(out).clamp(-1.0, 1.0)

    def latent_shape(self, batch_size: int) -> tuple[int, ...]:
        """``(B, K, c, h, w)`` of the latents the U-Net denoises."""
        from models.spectral_codec import codec_downsample_factor

        factor = codec_downsample_factor(self.vae)
        config = self.motion_config
        return (
            batch_size,
            config.num_freqs,
            self.unet.config.latent_channels,
            config.height // factor,
            config.width // factor,
        )

    # ------------------------------------------------------------------ pieces of a step

    def decode_spectral(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(B, K, c, h, w)`` -> spectral volumes in pixels ``(B, K, 4, H, W)``."""
        from models.spectral_codec import decode_latents

        return self.normalizer.denormalize(decode_latents(self.vae, latents).float())

    def _alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        alphas_cumprod = getattr(self.scheduler, "alphas_cumprod", None)
        if alphas_cumprod is None or float(self.scheduler.init_noise_sigma) != 1.0:
            raise ValueError(
                f"loop guidance needs a variance-preserving scheduler (DDIM, DDPM, DPM-Solver); "
                f"{type(self.scheduler).__name__} is not one"
            )
        return alphas_cumprod[int(t)].to(torch.float32)

    def _split_prediction(self, output, latents, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Model output -> (predicted noise, predicted clean latents x0)."""
        a = self._alpha_bar(t)
        sa, sb = a.sqrt(), (1 - a).sqrt()
        kind = self.scheduler.config.prediction_type
        if kind == "epsilon":
            eps = output
            x0 = (latents - sb * eps) / sa
        elif kind == "v_prediction":
            x0 = sa * latents - sb * output
            eps = sa * output + sb * latents
        elif kind == "sample":
            x0 = output
            eps = (latents - sa * x0) / sb
        else:
            raise ValueError(f"unsupported prediction_type {kind!r}")
        return eps, x0

    def _join_prediction(self, eps, latents, t) -> torch.Tensor:
        """Predicted noise -> the model output kind the scheduler expects."""
        a = self._alpha_bar(t)
        sa, sb = a.sqrt(), (1 - a).sqrt()
        kind = self.scheduler.config.prediction_type
        x0 = (latents - sb * eps) / sa
        if kind == "epsilon":
            return eps
        if kind == "v_prediction":
            return sa * eps - sb * x0
        return x0

    def _loop_guidance(
        self, output: torch.Tensor, latents: torch.Tensor, t, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Move the prediction toward a seamless loop (motion self-guidance).

        x0 = the predicted clean latents; ``L(x0)`` = ``loop_loss`` (per photo) of the
        displacements decoded from x0 at frames 0 and T-1; ``g = dL/dx0``. The U-Net's
        Jacobian is not back-propagated, so a step costs one codec decode and its backward,
        not a U-Net backward. x0 moves against the gradient by a Polyak step::

            x0' = x0 - scale * L / |g|^2 * g

        which, were L linear in x0, would remove the fraction ``scale`` of the loop loss
        (scale = 1: all of it). The noise prediction is made consistent with x0' at the
        same x_t (``eps' = (x_t - sqrt(a) x0') / sqrt(1 - a)``, a = alpha_bar_t), so any
        variance-preserving scheduler (DDIM, DDPM, DPM-Solver) continues from it. Why not
        the classifier-guidance step ``eps + scale * sqrt(1 - a) * grad``: the gradient of
        an L1 loss does not shrink as the loss does and the de-normalisation grows it with
        the motion, so fixed-size steps overshoot and the loss diverged in our runs
        (docs/MOTION_PIPELINE.md).

        Returns:
            (the adjusted model output, the per-photo loop loss ``(B,)`` before the shift).
        """
        eps, x0 = self._split_prediction(output, latents, t)
        with torch.enable_grad():
            x0 = x0.detach().float().requires_grad_(True)
            spectral = self.decode_spectral(x0)
            num_frames = self.motion_config.num_frames
            disp = displacement_at_frames(spectral, [0, num_frames - 1], num_frames)
            loss = loop_loss(disp[:, 0], disp[:, 1])  # (B,)
            (grad,) = torch.autograd.grad(loss.sum(), x0)
        loss = loss.detach()
        grad_sq = grad.flatten(1).square().sum(1).clamp_min(1e-12)  # (B,)
        step = (scale * loss / grad_sq).view(-1, *[1] * (grad.ndim - 1))
        x0 = (x0.detach() - step * grad).to(latents.dtype)
        a = self._alpha_bar(t).to(latents.device)
        eps = (latents - a.sqrt() * x0) / (1 - a).sqrt()
        return self._join_prediction(eps, latents, t), loss

    # ------------------------------------------------------------------ the call

    @torch.no_grad()
    def __call__(
        self,
        image,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_frames: int | None = None,
        loop_guidance_scale: float = 0.0,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ) -> MotionPipelineOutput | tuple:
        r"""Generate the motion of each photo.

        Args:
            image: a photo or a list of photos (see ``preprocess``).
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance weight w on the photo condition
                (``eps = eps_uncond + w * (eps_cond - eps_uncond)``); ``<= 1`` runs the
                conditional branch only.
            generator: a ``torch.Generator`` or one per photo (then a batch equals the
                single calls with the same generators).
            num_frames: frames of displacement to return (default: the model's T); frame
                n is at ``n / fps`` s and the motion repeats every T frames.
            loop_guidance_scale: motion self-guidance weight toward a seamless loop (0: off).
            latents: initial noise ``(B, K, c, h, w)`` instead of drawing it.
            output_type: ``"np"`` (numpy) or ``"pt"`` (torch tensors).
            return_dict: return a ``MotionPipelineOutput`` instead of a tuple.

        Returns:
            ``MotionPipelineOutput(spectral, displacements, images)`` or that tuple.
        """
        if output_type not in ("np", "pt"):
            raise ValueError(f"output_type must be 'np' or 'pt', got {output_type!r}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        config = self.motion_config
        num_frames = config.num_frames if num_frames is None else int(num_frames)
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        device = self._execution_device

        # 1. the photos at the model's size, (B, 3, H, W) in [-1, 1]
        images = self.preprocess(image).to(device=device, dtype=self.unet.dtype)
        batch_size = images.shape[0]
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"{len(generator)} generators for {batch_size} photos")
        do_cfg = guidance_scale > 1.0
        # classifier-free guidance: the unconditional input is an all-zero (grey) photo
        condition = torch.cat([images, torch.zeros_like(images)]) if do_cfg else images

        # 2. initial noise (B, K, c, h, w)
        shape = self.latent_shape(batch_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        latents = latents.to(device) * self.scheduler.init_noise_sigma

        # 3. denoise the K frequency latents jointly
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = {}
        if "generator" in inspect.signature(self.scheduler.step).parameters:
            step_kwargs["generator"] = generator
        self.loop_losses = []  # per step, (B,) loop loss of the predicted x0 (for inspection)
        for t in self.progress_bar(self.scheduler.timesteps):
            # 3a. predict the noise, conditional and (for CFG) unconditional in one batch
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            output = self.unet(model_input, t, condition).sample
            # 3b. classifier-free guidance
            if do_cfg:
                cond, uncond = output.chunk(2)
                output = uncond + guidance_scale * (cond - uncond)
            # 3c. motion self-guidance toward a seamless loop
            if loop_guidance_scale > 0:
                output, loss = self._loop_guidance(output, latents, t, loop_guidance_scale)
                self.loop_losses.append(loss.cpu())
            # 3d. x_t -> x_{t-1}
            latents = self.scheduler.step(output, t, latents, **step_kwargs).prev_sample

        # 4. decode, denormalise, evaluate the Fourier series at every frame
        spectral = self.decode_spectral(latents)  # (B, K, 4, H, W) px
        disp = displacement_at_frames(spectral, list(range(num_frames)), config.num_frames)

        self.maybe_free_model_hooks()
        if output_type == "np":
            spectral = spectral.float().cpu().numpy()
            disp = disp.float().cpu().numpy()
            images = ((images.float().cpu().permute(0, 2, 3, 1) + 1) * 127.5).round()
            images = images.clamp(0, 255).to(torch.uint8).numpy()
        if not return_dict:
            return (spectral, disp, images)
        return MotionPipelineOutput(spectral=spectral, displacements=disp, images=images)
