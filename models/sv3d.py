"""SV3D (Voleti et al., 2024): an object photo -> a 21-frame orbit around the object.

diffusers ships Stable Video Diffusion but not SV3D. SV3D is the same spatio-temporal
latent U-Net with a different *vector conditioning* (the embedding added to the time
embedding of every frame):

* SVD:     ``[emb(fps_id), emb(motion_bucket_id), emb(cond_aug)]``, one vector per video;
* SV3D_u:  ``[emb(cond_aug)]`` (the model picks the orbit itself, elevation ~0);
* SV3D_p:  ``[emb(cond_aug), emb(polar_f), emb(azimuth_f)]``, one vector *per frame f*:
  the camera of each frame, angles in radians through sinusoidal embeddings.

This module builds SV3D on diffusers' pieces:

* ``SV3DUNetSpatioTemporalConditionModel``: diffusers' ``UNetSpatioTemporalConditionModel``
  whose forward takes the per-frame camera angles (``camera``). The config is unchanged:
  the camera embedding width is ``(projection_class_embeddings_input_dim -
  addition_time_embed_dim) / 2`` (SV3D_p: ``(1280 - 256) / 2 = 512``; SV3D_u: 0).
* ``SV3DPipeline``: ``StableVideoDiffusionPipeline``'s encoders, latents and decoding with
  SV3D's sampling: conditioning noise 1e-5, a triangle guidance schedule (1.0 at the
  first and last frame, ``max_guidance_scale`` at the back view), and the last frame
  (the input view) overwritten with the conditioning image after decoding.
* ``sv3d_orbit``: the reference tool's orbit (elevation 10 degrees, azimuths evenly spaced
  and shifted so that the last frame sits at azimuth 0, the input view).
* ``preprocess_object``: the reference tool's object preprocessing (alpha or background
  removal, crop to the object, pad to a square, resize, composite on white).
* ``OnnxSalientObject`` / ``rembg_remover``: the background removers, offline (a local ONNX
  salient-object model run with onnxruntime) or through ``rembg`` (which downloads its model
  on first use; its failures offline are explained).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    ModelMixin,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.unets.unet_spatio_temporal_condition import (
    UNetSpatioTemporalConditionOutput,
)
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
    StableVideoDiffusionPipelineOutput,
    retrieve_timesteps,
)
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

# diffusers' from_pretrained finds a component's loader by looking up the base classes it
# knows (ModelMixin, ...) in the module named in model_index.json: this one, for the U-Net.
__all__ = [
    "ModelMixin",
    "OnnxSalientObject",
    "rembg_remover",
    "SV3DPipeline",
    "SV3DUNetSpatioTemporalConditionModel",
    "preprocess_object",
    "sv3d_orbit",
    "triangle_guidance",
]

SV3D_NUM_FRAMES = 21
SV3D_RESOLUTION = 576  # px, square
SV3D_COND_AUG = 1e-5
DEFAULT_ELEVATION_DEG = 10.0
BACKGROUND_REMOVAL_MAX_SIDE = 768  # px; the reference shrinks photos to this before rembg


# ----------------------------------------------------------------------------- orbit maths


def sv3d_orbit(
    num_frames: int = SV3D_NUM_FRAMES,
    elevations_deg: float | Sequence[float] = DEFAULT_ELEVATION_DEG,
    azimuths_deg: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Camera angles of an SV3D_p orbit, as the reference tool computes them.

    Args:
        num_frames: frames in the orbit.
        elevations_deg: one elevation for every frame, or one per frame; degrees above the
            object's equator, in [-90, 90].
        azimuths_deg: one azimuth per frame (degrees); default ``num_frames`` evenly spaced
            steps of ``360 / num_frames`` ending at 360. They are shifted so that the last
            frame is at azimuth 0: the last frame is the input view.
    Returns:
        ``polars_rad`` ``(num_frames,)`` (``90 deg - elevation``, in radians) and
        ``azimuths_rad`` ``(num_frames,)`` in ``[0, 2 pi)``, the last one 0.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    elevations = np.atleast_1d(np.asarray(elevations_deg, dtype=np.float64))
    if elevations.size == 1:
        elevations = np.full(num_frames, elevations[0])
    if elevations.shape != (num_frames,):
        raise ValueError(
            f"elevations_deg: give one value or {num_frames} (one per frame), got {elevations.size}"
        )
    if not np.all(np.isfinite(elevations)) or np.abs(elevations).max() > 90:
        raise ValueError(f"elevations_deg must be in [-90, 90], got {elevations.tolist()}")
    if azimuths_deg is None:
        azimuths = np.linspace(0.0, 360.0, num_frames + 1)[1:] % 360.0
    else:
        azimuths = np.asarray(azimuths_deg, dtype=np.float64).reshape(-1)
        if azimuths.shape != (num_frames,) or not np.all(np.isfinite(azimuths)):
            raise ValueError(
                f"azimuths_deg: give {num_frames} finite values (one per frame), got {azimuths.size}"
            )
    polars_rad = np.deg2rad(90.0 - elevations)
    azimuths_rad = np.deg2rad((azimuths - azimuths[-1]) % 360.0)
    return polars_rad, azimuths_rad


def triangle_guidance(
    num_frames: int, min_scale: float = 1.0, max_scale: float = 2.5
) -> torch.Tensor:
    """SV3D's per-frame guidance: ``min_scale`` at both ends, ``max_scale`` mid-orbit.

    A triangle wave over ``t = linspace(0, 1, num_frames)``: ``2 |t - round(t)|``, scaled
    to ``[min_scale, max_scale]``. Returns ``(num_frames,)`` float32.
    """
    t = torch.linspace(0.0, 1.0, num_frames, dtype=torch.float64)
    wave = 2.0 * (t - torch.floor(t + 0.5)).abs()
    return (wave * (max_scale - min_scale) + min_scale).float()


# ----------------------------------------------------------------------------- object input


def _has_transparency(image: PIL.Image.Image) -> bool:
    return image.mode == "RGBA" and int(np.asarray(image)[..., 3].min()) < 255


def preprocess_object(
    image: PIL.Image.Image,
    size: int = SV3D_RESOLUTION,
    image_frame_ratio: float | None = None,
    remove_background: Callable[[PIL.Image.Image], PIL.Image.Image] | None = None,
) -> PIL.Image.Image:
    """An object photo -> SV3D's conditioning image: the object centred on white.

    1. The object mask: the image's alpha if it has transparent pixels; otherwise
       ``remove_background(rgba)`` (e.g. ``rembg.remove``; the photo is first shrunk to
       768 px as in the reference tool) returns an RGBA image whose alpha is the mask.
    2. Crop to the mask's bounding box and paste it centred in a transparent square of side
       ``max(object w, h) / image_frame_ratio`` (default: the photo's longer side).
    3. Resize to ``size`` x ``size`` (Lanczos) and composite on white.

    Args:
        image: RGB or RGBA.
        image_frame_ratio: fraction of the frame the object's longer side fills, in (0, 1].
    Returns:
        RGB ``size`` x ``size``.
    Raises:
        ValueError: no background remover for an opaque photo, or an empty mask.
    """
    if image_frame_ratio is not None and not 0.0 < image_frame_ratio <= 1.0:
        raise ValueError(f"image_frame_ratio must be in (0, 1], got {image_frame_ratio}")
    if _has_transparency(image):
        rgba = image
    else:
        if remove_background is None:
            raise ValueError(
                "the photo has no transparent background and no background remover is set: "
                "pip install rembg, pass --bg_model PATH (a local ONNX salient-object model), "
                "or give an RGBA PNG whose background is transparent"
            )
        small = image.convert("RGB").copy()
        small.thumbnail(
            (BACKGROUND_REMOVAL_MAX_SIDE, BACKGROUND_REMOVAL_MAX_SIDE), PIL.Image.LANCZOS
        )
        rgba = remove_background(small.convert("RGBA")).convert("RGBA")
    array = np.asarray(rgba)  # (H, W, 4) uint8
    rows, cols = np.nonzero(array[..., 3] > 0)
    if rows.size == 0:
        raise ValueError("no object found: the alpha mask is empty (fully transparent)")
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    h, w = bottom - top, right - left
    if image_frame_ratio is None:
        side = max(array.shape[0], array.shape[1])
    else:
        side = max(int(max(h, w) / image_frame_ratio), h, w)
    square = np.zeros((side, side, 4), np.uint8)
    y0, x0 = side // 2 - h // 2, side // 2 - w // 2
    square[y0 : y0 + h, x0 : x0 + w] = array[top:bottom, left:right]
    resized = (
        np.asarray(PIL.Image.fromarray(square).resize((size, size), PIL.Image.LANCZOS), np.float32)
        / 255.0
    )
    alpha = resized[..., 3:]
    rgb = resized[..., :3] * alpha + (1.0 - alpha)  # on white
    return PIL.Image.fromarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------- background removal

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ISNET_SIZE = 1024  # px; IS-Net models take 1024x1024 inputs normalised with mean 0.5, std 1


class OnnxSalientObject:
    """Cut the object out with a local ONNX salient-object model (U2-Net, IS-Net, ...).

    The model takes ``(1, 3, S, S)`` float RGB and returns ``(1, 1, S, S)`` (first output)
    saliency; ``S`` is read from the model (320 when it is dynamic). The input is scaled by
    its maximum and normalised with ImageNet statistics (U2-Net family) or with mean 0.5,
    std 1 when ``S`` is 1024 (IS-Net), as rembg feeds these models. The saliency, min-max
    normalised and resized to the photo, becomes the alpha channel.
    """

    def __init__(self, path: str | Path):
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--bg_model {path}: no such ONNX model file")
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError(
                f"--bg_model needs onnxruntime ({error}): pip install onnxruntime"
            ) from error
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own error types
            raise ValueError(f"--bg_model {path}: not a loadable ONNX model ({error})") from None
        model_input = self.session.get_inputs()[0]
        shape = list(model_input.shape)
        if len(shape) != 4 or shape[1] not in (3, None) and not isinstance(shape[1], str):
            raise ValueError(
                f"--bg_model {path}: input {model_input.name} has shape {shape}, expected "
                "(1, 3, S, S) RGB"
            )
        self.input_name = model_input.name
        self.size = tuple(side if isinstance(side, int) else 320 for side in shape[2:])
        isnet = self.size == (ISNET_SIZE, ISNET_SIZE)
        self.mean = np.asarray((0.5, 0.5, 0.5) if isnet else IMAGENET_MEAN, np.float32)
        self.std = np.asarray((1.0, 1.0, 1.0) if isnet else IMAGENET_STD, np.float32)

    def mask(self, image: PIL.Image.Image) -> np.ndarray:
        """Saliency of ``image`` in [0, 1], ``(H, W)`` float32 at the photo's size."""
        height, width = self.size
        rgb = np.asarray(image.convert("RGB").resize((width, height), PIL.Image.LANCZOS))
        array = rgb.astype(np.float32) / max(float(rgb.max()), 1e-6)
        array = (array - self.mean) / self.std
        batch = array.transpose(2, 0, 1)[None].astype(np.float32)  # (1, 3, S, S)
        prediction = np.asarray(self.session.run(None, {self.input_name: batch})[0])
        prediction = prediction.reshape(-1, *prediction.shape[-2:])[0].astype(np.float32)
        low, high = float(prediction.min()), float(prediction.max())
        prediction = (prediction - low) / max(high - low, 1e-6)
        resized = PIL.Image.fromarray(prediction).resize(image.size, PIL.Image.BILINEAR)  # mode F
        return np.clip(np.asarray(resized), 0.0, 1.0)

    def __call__(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """RGB(A) -> RGBA whose alpha is the object mask."""
        rgba = image.convert("RGBA")
        alpha = np.rint(self.mask(image) * 255.0).astype(np.uint8)
        rgba.putalpha(PIL.Image.fromarray(alpha))
        return rgba


def rembg_model_path(model_name: str = "u2net") -> Path:
    """Where rembg looks for (and downloads) its model: ``$U2NET_HOME`` or ``~/.u2net``."""
    home = os.environ.get("U2NET_HOME") or os.path.join(
        os.environ.get("XDG_DATA_HOME", "~"), ".u2net"
    )
    return Path(home).expanduser() / f"{model_name}.onnx"


def rembg_remover() -> Callable[[PIL.Image.Image], PIL.Image.Image] | None:
    """``rembg.remove`` with alpha matting, or None when rembg is not installed.

    rembg downloads ``u2net.onnx`` (about 176 MB) at first use; offline that fails with a
    raw connection error, which is re-raised here as an OSError that says what to do.
    """
    try:
        import rembg
    except ImportError:
        return None
    model = rembg_model_path()
    sessions: list = []

    def remove(image: PIL.Image.Image) -> PIL.Image.Image:
        try:
            if not sessions:
                sessions.append(rembg.new_session("u2net"))
            return rembg.remove(image, session=sessions[0], alpha_matting=True)
        except Exception as error:  # a download or model failure inside rembg
            if model.is_file():
                raise
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise OSError(
                f"background removal failed: rembg has no model at {model} and could not "
                f"download it ({first}); download it once with network access (python -c "
                "\"import rembg; rembg.new_session('u2net')\") or copy u2net.onnx there "
                "(U2NET_HOME sets the folder), or pass --bg_model PATH to a local ONNX "
                "salient-object model, or give an RGBA PNG with a transparent background"
            ) from None

    return remove


# ----------------------------------------------------------------------------- U-Net


def _cross(block: torch.nn.Module) -> bool:
    return bool(getattr(block, "has_cross_attention", False))


class SV3DUNetSpatioTemporalConditionModel(UNetSpatioTemporalConditionModel):
    """diffusers' spatio-temporal U-Net with SV3D's per-frame camera conditioning.

    Same config and weights layout as ``UNetSpatioTemporalConditionModel``. The vector
    conditioning of frame f is ``[emb(added_time_ids), emb(polar_f), emb(azimuth_f)]``
    (sinusoidal embeddings, cos first, as the reference), projected by ``add_embedding``
    and added to the time embedding; for SV3D_u (``camera_embed_dim == 0``) only the first.
    """

    @property
    def camera_embed_dim(self) -> int:
        """Width of each camera-angle embedding (0: an SV3D_u model without camera input)."""
        extra = (
            self.config.projection_class_embeddings_input_dim - self.config.addition_time_embed_dim
        )
        if extra < 0 or extra % 2:
            raise ValueError(
                f"projection_class_embeddings_input_dim {self.config.projection_class_embeddings_input_dim}"
                f" must be addition_time_embed_dim ({self.config.addition_time_embed_dim}) plus "
                "twice the camera embedding width"
            )
        return extra // 2

    def vector_embedding(
        self, added_time_ids: torch.Tensor, camera: torch.Tensor | None, num_frames: int
    ) -> torch.Tensor:
        """``added_time_ids`` ``(B, n)``, ``camera`` ``(B, F, 2)`` radians -> ``(B * F, C)``."""
        batch = added_time_ids.shape[0]
        vector = self.add_time_proj(added_time_ids.flatten()).reshape(batch, -1)
        vector = vector.repeat_interleave(num_frames, dim=0)  # (B * F, n * addition_dim)
        width = self.camera_embed_dim
        if width:
            if camera is None or camera.shape != (batch, num_frames, 2):
                raise ValueError(
                    f"this SV3D_p U-Net needs camera angles of shape ({batch}, {num_frames}, 2) "
                    f"(polar, azimuth in radians), got {None if camera is None else tuple(camera.shape)}"
                )
            angles = camera.reshape(-1, 2).float()
            polar = get_timestep_embedding(angles[:, 0], width, True, downscale_freq_shift=0)
            azimuth = get_timestep_embedding(angles[:, 1], width, True, downscale_freq_shift=0)
            vector = torch.cat([vector, polar, azimuth], dim=1)
        elif camera is not None:
            raise ValueError(
                "this U-Net takes no camera angles (an SV3D_u model); pass camera=None"
            )
        return self.add_embedding(vector.to(self.add_embedding.linear_1.weight.dtype))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        camera: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNetSpatioTemporalConditionOutput | tuple:
        """Denoise ``sample`` ``(B, F, C, h, w)``.

        Args:
            encoder_hidden_states: ``(B, 1, cross_attention_dim)`` image embeddings.
            added_time_ids: ``(B, 1)``: the conditioning-noise level ``cond_aug``.
            camera: ``(B, F, 2)`` polar and azimuth angles in radians (SV3D_p only).
        """
        batch, num_frames = sample.shape[:2]
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        emb = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))  # (B, C)
        emb = emb.repeat_interleave(num_frames, dim=0)  # (B * F, C)
        emb = emb + self.vector_embedding(added_time_ids, camera, num_frames).to(emb.dtype)
        context = encoder_hidden_states.repeat_interleave(num_frames, dim=0)  # (B * F, 1, D)
        indicator = torch.zeros(batch, num_frames, dtype=sample.dtype, device=sample.device)

        # Latent sizes that are not multiples of 2**num_upsamplers: upsample to each skip's size.
        odd_size = any(side % 2**self.num_upsamplers for side in sample.shape[-2:])
        hidden = self.conv_in(sample.flatten(0, 1))  # (B * F, C0, h, w)
        skips = (hidden,)
        for block in self.down_blocks:
            kwargs = {"encoder_hidden_states": context} if _cross(block) else {}
            hidden, res = block(
                hidden_states=hidden, temb=emb, image_only_indicator=indicator, **kwargs
            )
            skips += res
        hidden = self.mid_block(
            hidden_states=hidden,
            temb=emb,
            encoder_hidden_states=context,
            image_only_indicator=indicator,
        )
        for index, block in enumerate(self.up_blocks):
            res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            last = index == len(self.up_blocks) - 1
            size = skips[-1].shape[2:] if odd_size and not last else None
            kwargs = {"encoder_hidden_states": context} if _cross(block) else {}
            hidden = block(
                hidden_states=hidden,
                temb=emb,
                res_hidden_states_tuple=res,
                upsample_size=size,
                image_only_indicator=indicator,
                **kwargs,
            )
        hidden = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        out = hidden.reshape(batch, num_frames, *hidden.shape[1:])
        return UNetSpatioTemporalConditionOutput(sample=out) if return_dict else (out,)


# ----------------------------------------------------------------------------- pipeline


class SV3DPipeline(StableVideoDiffusionPipeline):
    """SV3D_u / SV3D_p: a square object image -> an orbit of ``num_frames`` views.

    Components as ``StableVideoDiffusionPipeline`` (the VAE may be an image
    ``AutoencoderKL``, as in the released SV3D, or SVD's temporal-decoder VAE), with an
    ``SV3DUNetSpatioTemporalConditionModel``. Whether the U-Net takes camera angles
    (SV3D_p) or not (SV3D_u) is in its config; see ``unet.camera_embed_dim``.
    """

    def __init__(
        self,
        vae: AutoencoderKLTemporalDecoder | AutoencoderKL,
        image_encoder: CLIPVisionModelWithProjection,
        unet: SV3DUNetSpatioTemporalConditionModel,
        scheduler: EulerDiscreteScheduler,
        feature_extractor: CLIPImageProcessor,
    ):
        super().__init__(vae, image_encoder, unet, scheduler, feature_extractor)

    @property
    def resolution(self) -> int:
        """The square size (px) the model works at: U-Net sample size x VAE factor (576).

        A U-Net config without ``sample_size`` (diffusers' default is None) means the
        released 576.
        """
        if self.unet.config.sample_size is None:
            return SV3D_RESOLUTION
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def takes_camera(self) -> bool:
        """True for SV3D_p (camera-conditioned), False for SV3D_u."""
        return self.unet.camera_embed_dim > 0

    @torch.no_grad()
    def __call__(
        self,
        image: PIL.Image.Image,
        height: int | None = None,
        width: int | None = None,
        num_frames: int = SV3D_NUM_FRAMES,
        num_inference_steps: int = 50,
        min_guidance_scale: float = 1.0,
        max_guidance_scale: float = 2.5,
        noise_aug_strength: float = SV3D_COND_AUG,
        polars_rad: Sequence[float] | None = None,
        azimuths_rad: Sequence[float] | None = None,
        decode_chunk_size: int | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> StableVideoDiffusionPipelineOutput | tuple:
        """Sample one orbit.

        Args:
            image: the preprocessed object image (see ``preprocess_object``), RGB.
            height, width: output size in px (multiples of 8); default ``self.resolution``.
            polars_rad, azimuths_rad: ``num_frames`` camera angles each (SV3D_p only; see
                ``sv3d_orbit``). The last frame is the input view.
            noise_aug_strength: ``cond_aug``, the noise added to the conditioning image.
            decode_chunk_size: frames decoded at a time (less memory); default all.
        Returns:
            ``StableVideoDiffusionPipelineOutput`` with ``frames``: a list with one list of
            ``num_frames`` PIL images (``output_type="pil"``), or an array
            ``(1, num_frames, H, W, 3)`` in [0, 1] (``"np"``).
        """
        if not isinstance(image, PIL.Image.Image):
            raise ValueError(f"image must be one PIL image, got {type(image).__name__}")
        height, width = height or self.resolution, width or self.resolution
        self.check_inputs(image, height, width)
        device = self._execution_device
        decode_chunk_size = decode_chunk_size or num_frames
        camera = self._camera(polars_rad, azimuths_rad, num_frames)
        guidance = triangle_guidance(num_frames, min_guidance_scale, max_guidance_scale)
        self._guidance_scale = max_guidance_scale  # do_classifier_free_guidance reads it
        cfg = self.do_classifier_free_guidance

        # 1. Conditioning: CLIP embedding and the (slightly noised) VAE latents of the image.
        image_embeddings = self._encode_image(image, device, 1, cfg)  # (B', 1, D)
        cond = self.video_processor.preprocess(image, height=height, width=width).to(device)
        noise = randn_tensor(cond.shape, generator=generator, device=device, dtype=cond.dtype)
        needs_upcasting = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if needs_upcasting:
            self.vae.to(dtype=torch.float32)
        image_latents = self._encode_vae_image(cond + noise_aug_strength * noise, device, 1, cfg)
        if needs_upcasting:
            self.vae.to(dtype=torch.float16)
        image_latents = image_latents.to(image_embeddings.dtype)
        image_latents = image_latents.unsqueeze(1).repeat(
            1, num_frames, 1, 1, 1
        )  # (B', F, c, h, w)

        added_time_ids = torch.tensor([[noise_aug_strength]], dtype=image_embeddings.dtype)
        added_time_ids = added_time_ids.repeat(2 if cfg else 1, 1).to(device)  # (B', 1)
        if camera is not None:
            camera = camera.to(device=device, dtype=image_embeddings.dtype)
            camera = camera.repeat(2 if cfg else 1, 1, 1)  # (B', F, 2)

        # 2. Noise, timesteps and the per-frame guidance scale.
        timesteps, num_inference_steps = retrieve_timesteps(
            self.scheduler, num_inference_steps, device
        )
        latents = self.prepare_latents(
            1, num_frames, self.unet.config.in_channels, height, width,
            image_embeddings.dtype, device, generator, latents,
        )  # fmt: skip
        scale = guidance.to(device, latents.dtype).reshape(1, num_frames, 1, 1, 1)
        self._guidance_scale = scale
        self._num_timesteps = len(timesteps)

        # 3. Denoise.
        for t in self.progress_bar(timesteps):
            model_input = torch.cat([latents] * 2) if cfg else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            model_input = torch.cat([model_input, image_latents], dim=2)
            prediction = self.unet(
                model_input,
                t,
                encoder_hidden_states=image_embeddings,
                added_time_ids=added_time_ids,
                camera=camera,
                return_dict=False,
            )[0]
            if cfg:
                uncond, cond_pred = prediction.chunk(2)
                prediction = uncond + scale * (cond_pred - uncond)
            latents = self.scheduler.step(prediction, t, latents).prev_sample

        # 4. Decode; the last frame is the input view: show the input itself there.
        if output_type == "latent":
            frames = latents
        else:
            if needs_upcasting:
                self.vae.to(dtype=torch.float16)
            frames = self.decode_latents(latents, num_frames, decode_chunk_size)  # (1, 3, F, H, W)
            frames[:, :, -1] = cond.to(frames.device, frames.dtype)
            frames = self.video_processor.postprocess_video(video=frames, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (frames,)
        return StableVideoDiffusionPipelineOutput(frames=frames)

    def _camera(
        self,
        polars_rad: Sequence[float] | None,
        azimuths_rad: Sequence[float] | None,
        num_frames: int,
    ) -> torch.Tensor | None:
        """``(1, F, 2)`` camera angles for SV3D_p, None for SV3D_u (checked against the U-Net)."""
        given = polars_rad is not None or azimuths_rad is not None
        if not self.takes_camera:
            if given:
                raise ValueError(
                    "this is an SV3D_u model (its U-Net takes no camera angles); use an SV3D_p "
                    "model for a chosen orbit, or leave polars_rad/azimuths_rad unset"
                )
            return None
        if polars_rad is None or azimuths_rad is None:
            polars_rad, azimuths_rad = sv3d_orbit(num_frames)
        if len(polars_rad) != num_frames or len(azimuths_rad) != num_frames:
            raise ValueError(
                f"need {num_frames} polar and azimuth angles, got {len(polars_rad)} and "
                f"{len(azimuths_rad)}"
            )
        angles = np.stack([np.asarray(polars_rad), np.asarray(azimuths_rad)], axis=-1)
        return torch.from_numpy(angles.astype(np.float32))[None]
