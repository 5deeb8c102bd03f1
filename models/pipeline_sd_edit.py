"""Training-free video from one photo with a pretrained Stable Diffusion v1.x.

The method (after pix2pix-zero, Parmar et al. 2023, and its use for video in the project's
source document), written for this project on diffusers building blocks:

1. **Caption**: BLIP (``transformers.BlipForConditionalGeneration``) describes the photo;
   the caption is the *source prompt* (``--caption`` skips BLIP).
2. **Regularised DDIM inversion**: the photo's latent is run *up* the DDIM trajectory
   (``DDIMInverseScheduler``) with the source prompt. After each U-Net call the predicted
   noise is pushed toward i.i.d. N(0, 1) by a few gradient steps on two penalties
   (:func:`auto_corr_loss`: correlation of the noise with shifted copies of itself at
   several scales; :func:`kl_divergence`: its mean/variance vs N(0, 1)), so the inverted
   map is editable noise, not a ghost of the photo.
3. **Reference pass**: denoising the inverted noise with the source prompt reconstructs
   the photo (keyframe 0) and records the U-Net's cross-attention maps at every step
   (:class:`CrossAttentionCaptureProcessor` on every ``attn2`` layer; one map per head,
   (batch * heads, pixels, 77 tokens), kept in float16).
4. **Guided editing**: for each keyframe, the text embedding is a point on the prompt
   schedule (a convex combination of the source and target prompts' embeddings). At each
   step the latent first takes a gradient step that pulls its cross-attention maps toward
   the reference maps of the same step (scale ``cross_attention_guidance``); this keeps
   the layout. Then classifier-free guidance is applied *relative to the source prompt*:
   ``eps = eps(source) + guidance_scale * (eps(edit) - eps(source))``. At a keyframe whose
   embedding equals the source this is exactly the reference pass, so the video starts
   from the reconstruction of the photo, and the scale only amplifies the edit direction.

Frames between keyframes come from ``models.interpolation`` (flow + softmax splatting).
Only epsilon-prediction models are supported (SD v1.x, SD 2.x-base).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMInverseScheduler,
    DDIMScheduler,
    DiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

CAPTION_MAX_TOKENS = 40


# ----------------------------------------------------------------------------- noise penalties


def auto_corr_loss(noise: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Auto-correlation penalty of a noise map (N, C, h, w): for every channel and at every
    scale of an average-pooling pyramid (down to 8 px), the squared mean of the product with
    a copy rolled by a random shift (1 to h/2 px) along y, and along x. 0 for uncorrelated noise in
    expectation; large for a map with structure. The shifts come from ``generator`` (CPU)."""
    loss = noise.new_zeros(())
    for channel_map in noise.reshape(-1, 1, *noise.shape[-2:]):
        level = channel_map[None]  # (1, 1, h, w)
        while True:
            # A shift in [1, h/2]: a zero shift would penalise the variance, not correlation.
            shift = 1 + int(torch.randint(max(level.shape[2] // 2, 1), (1,), generator=generator))
            loss = loss + (level * torch.roll(level, shifts=shift, dims=2)).mean() ** 2
            loss = loss + (level * torch.roll(level, shifts=shift, dims=3)).mean() ** 2
            if level.shape[2] <= 8 or level.shape[3] <= 8:
                break
            level = F.avg_pool2d(level, kernel_size=2)
    return loss


def kl_divergence(noise: torch.Tensor) -> torch.Tensor:
    """KL-style penalty of the empirical mean/variance of ``noise`` against N(0, 1):
    ``var + mean^2 - 1 - log(var)`` (0 exactly at mean 0, variance 1)."""
    mean, var = noise.mean(), noise.var()
    return var + mean**2 - 1 - torch.log(var + 1e-7)


# ----------------------------------------------------------------------------- prompt schedule


def prompt_schedule(
    num_targets: int, keyframes: int | None = None, counts: list[int | None] | None = None
) -> np.ndarray:
    """Weights over prompts ``[source, target_1, ..., target_n]`` for every keyframe.

    Keyframe 0 is the source; the schedule then moves linearly from each prompt to the next,
    spending ``counts[i]`` keyframes on the segment that ends at target ``i + 1`` (the last
    one lands exactly on it). Segments without a count share what is left of
    ``keyframes - 1`` evenly (at least one each).

    Returns:
        (num_keyframes, num_targets + 1) float64, rows are convex weights (sum 1).
    """
    if num_targets < 1:
        raise ValueError("the prompt schedule needs at least one target prompt")
    counts = list(counts) if counts is not None else [None] * num_targets
    if len(counts) != num_targets:
        raise ValueError(f"{len(counts)} keyframe counts for {num_targets} target prompts")
    if any(count is not None and count < 1 for count in counts):
        raise ValueError(f"keyframe counts must be >= 1, got {counts}")
    free = [i for i, count in enumerate(counts) if count is None]
    if free:
        if keyframes is None:
            raise ValueError("give --keyframes or a keyframe count for every prompt")
        left = keyframes - 1 - sum(count for count in counts if count is not None)
        if left < len(free):
            raise ValueError(
                f"--keyframes {keyframes} is too few: {len(free)} segment(s) without a count "
                f"need at least one keyframe each after the {keyframes - 1 - left} given"
            )
        for rank, i in enumerate(free):
            counts[i] = left // len(free) + (1 if rank < left % len(free) else 0)
    rows = [np.eye(num_targets + 1)[0]]
    for segment, count in enumerate(counts):
        for step in range(1, count + 1):
            alpha = step / count
            row = np.zeros(num_targets + 1)
            row[segment], row[segment + 1] = 1.0 - alpha, alpha
            rows.append(row)
    return np.stack(rows)


# ----------------------------------------------------------------------------- cross-attention


class CrossAttentionStore:
    """What the capture processors do with the cross-attention maps they see.

    ``mode``: ``"off"``; ``"record"`` (keep ``maps[step][layer]``, detached, one map per
    head (batch * heads, pixels, tokens), in ``dtype``); ``"guide"`` (add the squared
    distance to the recorded map of the same step and layer to ``loss``, summed over pixels
    and tokens, averaged over batch and heads, summed over layers: the scale for which
    pix2pix-zero's step size 0.1 was chosen).

    Memory: SD v1.x at 512 x 512 keeps about 33 MB of float16 maps per step (1.6 GB for
    50 steps), on the U-Net's device.
    """

    def __init__(self, dtype: torch.dtype = torch.float16):
        self.mode = "off"
        self.step = 0
        self.dtype = dtype
        self.maps: dict[int, dict[str, torch.Tensor]] = {}
        self.loss: torch.Tensor | None = None

    def observe(self, layer: str, probs: torch.Tensor) -> None:
        if self.mode == "record":
            self.maps.setdefault(self.step, {})[layer] = probs.detach().to(self.dtype)
        elif self.mode == "guide":
            reference = self.maps[self.step][layer].float()  # float32: no fp16 overflow
            term = ((probs.float() - reference) ** 2).sum(dim=(1, 2)).mean()
            self.loss = term if self.loss is None else self.loss + term


class CrossAttentionCaptureProcessor:
    """Attention processor for cross-attention layers that computes the attention
    probabilities explicitly and hands them, (batch * heads, pixels, tokens), to a
    :class:`CrossAttentionStore`. Numerically the same as diffusers' ``AttnProcessor``."""

    def __init__(self, name: str, store: CrossAttentionStore):
        self.name = name
        self.store = store

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        is_cross = encoder_hidden_states is not None
        context = encoder_hidden_states if is_cross else hidden_states
        batch_size, sequence_length, _ = context.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key, value = attn.to_k(context), attn.to_v(context)
        query, key, value = (attn.head_to_batch_dim(x) for x in (query, key, value))

        probs = attn.get_attention_scores(query, key, attention_mask)  # (B*heads, pixels, tokens)
        if is_cross and self.store.mode != "off":
            self.store.observe(self.name, probs)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


# ----------------------------------------------------------------------------- the pipeline


@dataclass
class SDEditVideoOutput(BaseOutput):
    """Keyframes of one photo.

    Args:
        keyframes: uint8 (N, H, W, 3); keyframe 0 is the reconstruction of the photo.
        image: the photo as the pipeline saw it (resized/cropped), uint8 (H, W, 3).
        caption: the source prompt (BLIP's caption or the one given).
        prompts: ``[caption, *targets]``.
        weights: (N, len(prompts)) the prompt schedule.
        inverted_latents: (1, 4, H/8, W/8) the regularised DDIM-inverted noise.
        reference_maps: step -> layer name -> cross-attention maps (heads, pixels, tokens)
            of the reference pass.
        inversion_error: ``|z_rec - z| / |z|`` (L2 norms) of the reconstructed latent vs the
            photo's latent: how well inversion + reference pass return to the photo,
            independent of the VAE's own reconstruction error.
    """

    keyframes: np.ndarray
    image: np.ndarray
    caption: str
    prompts: list[str]
    weights: np.ndarray
    inverted_latents: torch.Tensor
    reference_maps: dict[int, dict[str, torch.Tensor]]
    inversion_error: float


class SDEditVideoPipeline(DiffusionPipeline):
    r"""Photo -> keyframes along a prompt schedule, from a Stable Diffusion v1.x checkpoint.

    Args:
        vae, text_encoder, tokenizer, unet: the Stable Diffusion components.
        scheduler: any scheduler; a ``DDIMScheduler`` and ``DDIMInverseScheduler`` are built
            from its config (the inversion needs DDIM's deterministic update).
        caption_model, caption_processor: optional BLIP captioner
            (``BlipForConditionalGeneration`` + ``BlipProcessor``).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["caption_model", "caption_processor"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler,
        caption_model=None,
        caption_processor=None,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            caption_model=caption_model,
            caption_processor=caption_processor,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def from_stable_diffusion(
        cls,
        model: str,
        caption_model: str | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> SDEditVideoPipeline:
        """Load the components from a Stable Diffusion folder or hub id (``unet/``, ``vae/``,
        ``text_encoder/``, ``tokenizer/``, ``scheduler/``) and, optionally, a BLIP captioner
        (folder or hub id). Other parts of the checkpoint (safety checker) are not loaded."""
        kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", **kwargs)
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", **kwargs)
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        scheduler = DDIMScheduler.from_pretrained(model, subfolder="scheduler")
        captioner = processor = None
        if caption_model is not None:
            from transformers import BlipForConditionalGeneration, BlipProcessor

            captioner = BlipForConditionalGeneration.from_pretrained(caption_model, **kwargs)
            processor = BlipProcessor.from_pretrained(caption_model)
        return cls(vae, text_encoder, tokenizer, unet, scheduler, captioner, processor)

    # -- building blocks -------------------------------------------------------------------

    @torch.no_grad()
    def generate_caption(self, image: Image.Image) -> str:
        """BLIP's caption of ``image`` (ValueError when no captioner is loaded or it is empty)."""
        if self.caption_model is None or self.caption_processor is None:
            raise ValueError(
                "no captioning model: pass --caption TEXT, or --caption_model DIR_OR_HUB_ID "
                "(e.g. Salesforce/blip-image-captioning-base)"
            )
        inputs = self.caption_processor(images=image, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(
            self.caption_model.device, self.caption_model.dtype
        )
        ids = self.caption_model.generate(
            pixel_values=pixel_values, max_new_tokens=CAPTION_MAX_TOKENS
        )
        caption = self.caption_processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
        if not caption:
            raise ValueError("the captioning model returned an empty caption; pass --caption TEXT")
        return caption

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """CLIP text embeddings (len(prompts), 77, D) of prompts padded to the model length."""
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.text_encoder.device))[0]

    def prepare_image(self, image: Image.Image, height: int, width: int) -> np.ndarray:
        """``image`` scaled to cover (width, height) and centre-cropped: uint8 (H, W, 3)."""
        from data.video import resize_cover_crop

        multiple = self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        if height % multiple or width % multiple or height < multiple or width < multiple:
            raise ValueError(
                f"--width {width} --height {height}: both must be positive multiples of "
                f"{multiple} for this model"
            )
        return resize_cover_crop(np.asarray(image.convert("RGB")), (width, height))

    @torch.no_grad()
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) -> scaled VAE latent mean (1, 4, H/f, W/f)."""
        pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        pixels = pixels.to(self.vae.device, self.vae.dtype)
        return self.vae.encode(pixels).latent_dist.mean * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """(N, 4, h, w) latents -> uint8 (N, H, W, 3)."""
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        images = ((images.float() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)
        return images.permute(0, 2, 3, 1).cpu().numpy()

    def _install_capture(self) -> CrossAttentionStore:
        store = CrossAttentionStore(dtype=torch.float16)
        processors = {}
        for name, processor in self.unet.attn_processors.items():
            is_cross = name.endswith("attn2.processor")
            processors[name] = (
                CrossAttentionCaptureProcessor(name, store) if is_cross else processor
            )
        self.unet.set_attn_processor(processors)
        return store

    def _noise_prediction_to_epsilon(self) -> None:
        prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        if prediction_type != "epsilon":
            raise ValueError(
                f"the scheduler's prediction_type is {prediction_type!r}; sd-edit supports "
                "epsilon-prediction models (Stable Diffusion v1.x, 2.x-base)"
            )

    def _regularise(
        self,
        noise_pred: torch.Tensor,
        lambda_auto_corr: float,
        lambda_kl: float,
        num_reg_steps: int,
        num_auto_corr_rolls: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Gradient steps on the predicted noise toward i.i.d. N(0, 1) (see module docstring)."""
        noise_pred = noise_pred.detach().float()
        with torch.enable_grad():
            for _ in range(num_reg_steps):
                if lambda_auto_corr > 0:
                    for _ in range(num_auto_corr_rolls):
                        var = noise_pred.clone().requires_grad_(True)
                        (grad,) = torch.autograd.grad(auto_corr_loss(var, generator), var)
                        noise_pred = noise_pred - lambda_auto_corr * grad / num_auto_corr_rolls
                if lambda_kl > 0:
                    var = noise_pred.clone().requires_grad_(True)
                    (grad,) = torch.autograd.grad(kl_divergence(var), var)
                    noise_pred = noise_pred - lambda_kl * grad
        return noise_pred.detach()

    @torch.no_grad()
    def invert(
        self,
        latents: torch.Tensor,
        source_embeds: torch.Tensor,
        num_inference_steps: int = 50,
        lambda_auto_corr: float = 20.0,
        lambda_kl: float = 20.0,
        num_reg_steps: int = 5,
        num_auto_corr_rolls: int = 5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Regularised DDIM inversion of clean ``latents`` (1, 4, h, w) under ``source_embeds``
        (1, 77, D): the noise map (1, 4, h, w) at the last timestep."""
        self._noise_prediction_to_epsilon()
        inverse = DDIMInverseScheduler.from_config(self.scheduler.config)
        inverse.set_timesteps(num_inference_steps, device=latents.device)
        for t in self.progress_bar(inverse.timesteps):
            noise_pred = self.unet(latents, t, encoder_hidden_states=source_embeds).sample
            noise_pred = self._regularise(
                noise_pred,
                lambda_auto_corr,
                lambda_kl,
                num_reg_steps,
                num_auto_corr_rolls,
                generator,
            ).to(latents.dtype)
            latents = inverse.step(noise_pred, t, latents).prev_sample
        return latents

    @torch.no_grad()
    def reference_pass(
        self,
        noise: torch.Tensor,
        source_embeds: torch.Tensor,
        store: CrossAttentionStore,
        num_inference_steps: int,
    ) -> torch.Tensor:
        """Denoise ``noise`` with the source prompt, recording cross-attention maps per step."""
        self.scheduler.set_timesteps(num_inference_steps, device=noise.device)
        latents = noise
        store.mode = "record"
        for step, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            store.step = step
            noise_pred = self.unet(latents, t, encoder_hidden_states=source_embeds).sample
            latents = self.scheduler.step(noise_pred, t, latents).prev_sample
        store.mode = "off"
        return latents

    @torch.no_grad()
    def guided_pass(
        self,
        noise: torch.Tensor,
        source_embeds: torch.Tensor,
        edit_embeds: torch.Tensor,
        store: CrossAttentionStore,
        guidance_scale: float,
        cross_attention_guidance: float,
        num_inference_steps: int,
    ) -> torch.Tensor:
        """Denoise ``noise`` toward ``edit_embeds`` with cross-attention guidance to the maps
        in ``store`` and guidance relative to ``source_embeds``."""
        self.scheduler.set_timesteps(num_inference_steps, device=noise.device)
        latents = noise
        both = torch.cat([source_embeds, edit_embeds])
        for step, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            store.step = step
            if cross_attention_guidance > 0:
                with torch.enable_grad():
                    x = latents.detach().requires_grad_(True)
                    store.mode, store.loss = "guide", None
                    self.unet(x, t, encoder_hidden_states=edit_embeds)
                    (grad,) = torch.autograd.grad(store.loss, x)
                    store.mode = "off"
                latents = (x - cross_attention_guidance * grad).detach()
            noise_source, noise_edit = self.unet(
                torch.cat([latents] * 2), t, encoder_hidden_states=both
            ).sample.chunk(2)
            noise_pred = noise_source + guidance_scale * (noise_edit - noise_source)
            latents = self.scheduler.step(noise_pred, t, latents).prev_sample
        return latents

    # -- the whole method ------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        image: Image.Image,
        prompts: list[str],
        weights: np.ndarray,
        caption: str | None = None,
        height: int = 512,
        width: int = 512,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        cross_attention_guidance: float = 0.1,
        lambda_auto_corr: float = 20.0,
        lambda_kl: float = 20.0,
        num_reg_steps: int = 5,
        num_auto_corr_rolls: int = 5,
        generator: torch.Generator | None = None,
    ) -> SDEditVideoOutput:
        """Keyframes of ``image`` along a prompt schedule.

        Args:
            image: the photo (PIL, any size; scaled to cover (width, height), centre-cropped).
            prompts: the target prompts ``[target_1, ..., target_n]``.
            weights: (N, n + 1) schedule over ``[caption, *prompts]`` (see
                :func:`prompt_schedule`).
            caption: the source prompt; None asks the captioning model.
            num_inference_steps: DDIM steps of the inversion and of every denoising pass.
            guidance_scale: scale of ``eps(edit) - eps(source)`` (1: no amplification).
            cross_attention_guidance: step size of the cross-attention loss gradient (0: off).
            lambda_auto_corr, lambda_kl, num_reg_steps, num_auto_corr_rolls: the inversion's
                noise regularisation (0 lambdas: plain DDIM inversion).
            generator: drives the random shifts of the auto-correlation penalty.
        """
        if not prompts or any(not p.strip() for p in prompts):
            raise ValueError("the target prompts must be non-empty text")
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 2 or weights.shape[1] != len(prompts) + 1 or len(weights) < 1:
            raise ValueError(
                f"weights must be (keyframes, {len(prompts) + 1}), got {weights.shape}"
            )
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        photo = self.prepare_image(image, height, width)
        if caption is None:
            caption = self.generate_caption(Image.fromarray(photo))
        if not caption.strip():
            raise ValueError("the caption is empty; pass a non-empty --caption")
        all_prompts = [caption, *prompts]

        embeds = self.encode_prompt(all_prompts)  # (P, 77, D)
        source = embeds[:1]
        self.scheduler = DDIMScheduler.from_config(self.scheduler.config)
        store = self._install_capture()

        latents = self.encode_image(photo).to(self.unet.dtype)
        noise = self.invert(
            latents, source, num_inference_steps, lambda_auto_corr, lambda_kl,
            num_reg_steps, num_auto_corr_rolls, generator,
        )  # fmt: skip
        reconstruction = self.reference_pass(noise, source, store, num_inference_steps)

        keyframe_latents = []
        weight_tensor = torch.from_numpy(weights).to(embeds.device, embeds.dtype)
        for row in weight_tensor:
            if torch.allclose(row, weight_tensor.new_tensor(np.eye(len(all_prompts))[0])):
                keyframe_latents.append(reconstruction)  # the schedule is at the source
                continue
            edit = torch.einsum("p,ptd->td", row, embeds)[None]
            keyframe_latents.append(
                self.guided_pass(
                    noise,
                    source,
                    edit,
                    store,
                    guidance_scale,
                    cross_attention_guidance,
                    num_inference_steps,
                )  # fmt: skip
            )
        keyframes = np.concatenate([self.decode_latents(z) for z in keyframe_latents])
        self.maybe_free_model_hooks()
        return SDEditVideoOutput(
            keyframes=keyframes,
            image=photo,
            caption=caption,
            prompts=all_prompts,
            weights=weights,
            inverted_latents=noise,
            reference_maps=store.maps,
            inversion_error=float((reconstruction - latents).norm() / latents.norm()),
        )


def reconstruction_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images, in [0, 1] units."""
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean() / 255.0)


def is_local_model(path: str) -> bool:
    """True for an existing folder; hub ids are ``owner/name`` with no such folder."""
    return Path(path).expanduser().exists()
