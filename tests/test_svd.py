"""sample.py --method svd: SVD, SVD-XT, SV3D_u and SV3D_p end to end on tiny random models.

Every pipeline is built here from tiny randomly initialised components (no download),
saved with ``save_pretrained`` and run through the real command line (``sample.main``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from models.sv3d import (
    SV3DPipeline,
    SV3DUNetSpatioTemporalConditionModel,
)

FRAMES = 3  # SVD runs; SV3D always makes 21 (its fixed orbit length)
STEPS = 2


def _components(unet_class, projection_dim: int):
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    unet = unet_class(
        sample_size=8,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        num_attention_heads=(2, 4),
        addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=projection_dim,
        num_frames=FRAMES,
    )
    # Four blocks: 8x downsampling, as the real VAE (so 256x256 frames are 32x32 latents).
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
    )
    scheduler = EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
        timestep_spacing="leading", timestep_type="continuous", use_karras_sigmas=True,
        interpolation_type="linear", steps_offset=1,
    )  # fmt: skip
    # The pipelines resize PIL input to 224 for the image encoder: one 112 px patch per quarter.
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32, projection_dim=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=37, image_size=224, patch_size=112,
        )
    )  # fmt: skip
    processor = CLIPImageProcessor(crop_size=224, size=224)
    return dict(vae=vae, image_encoder=encoder, unet=unet, scheduler=scheduler,
                feature_extractor=processor)  # fmt: skip


SVD_PROJECTION = 3 * 32  # fps_id, motion_bucket_id, cond_aug: one 32-wide embedding each
SV3D_U_PROJECTION = 32  # cond_aug only
SV3D_P_PROJECTION = 32 + 2 * 16  # cond_aug + polar and azimuth embeddings of width 16


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_torch_thread):
    """Folders holding a tiny SVD pipeline and tiny SV3D_u / SV3D_p pipelines."""
    from diffusers import StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel

    root = tmp_path_factory.mktemp("models")
    pipelines = {
        "svd": StableVideoDiffusionPipeline(
            **_components(UNetSpatioTemporalConditionModel, SVD_PROJECTION)
        ),
        "sv3d_u": SV3DPipeline(
            **_components(SV3DUNetSpatioTemporalConditionModel, SV3D_U_PROJECTION)
        ),
        "sv3d_p": SV3DPipeline(
            **_components(SV3DUNetSpatioTemporalConditionModel, SV3D_P_PROJECTION)
        ),
    }
    for name, pipeline in pipelines.items():
        pipeline.save_pretrained(root / name)
    return root


def _photo(path, size=(150, 100), seed=0):
    """A smooth random photo (W, H) saved at ``path``."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.BICUBIC).save(path)
    return path


def _object_png(path, size=96):
    """A red box on a transparent background, off centre."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[10:40, 50:90] = (200, 40, 40, 255)
    Image.fromarray(rgba).save(path)
    return path


def _frames(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted((folder / "frames").glob("*.png"))])


def _run(model, image, out, *extra):
    return sample.main(
        ["--method", "svd", "--model", str(model), "--image", str(image),
         "--output_folder", str(out), "--num_steps", "2", *map(str, extra)]
    )  # fmt: skip
