"""Reconstruction error and speed of trained spectral VAEs against a resampling baseline.

    python benchmarks/bench_vae.py --data_dir outputs/prepared_synth \\
        --vae outputs/vae_f8/vae outputs/vae_f4/vae

For every held-out (val) spectral volume of ``--data_dir`` at full frame size, each VAE
reconstructs it through its latents (posterior mean); the baseline with the same
compression stores the volume area-downsampled by the VAE's factor f (4 channels at
H/f x W/f per frequency, as many numbers as a 4-channel latent) and upsamples it bicubically.
Errors, pooled over all volumes:
  - L1 and relative RMS (``sqrt(sum err^2 / sum x^2)``) in normalised units (what the
    VAE is trained on);
  - relative RMS in pixels after de-normalisation (``FrequencyNormalizer.denormalize``),
    and of the displacement field rebuilt by the inverse FFT (T frames, pixels).
Speed: best of --repeats encode and decode calls of one volume (K slices at once).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.dataset import SpectralVolumeDataset  # noqa: E402
from data.spectral import spectral_to_displacement  # noqa: E402
from models.spectral_vae import (  # noqa: E402
    decode_spectral,
    encode_spectral,
    load_spectral_vae,
    vae_downsample_factor,
)


def baseline_reconstruction(spectral: torch.Tensor, factor: int) -> torch.Tensor:
    """Area-downsample by ``factor`` then bicubic upsample: ``(K, 4, H, W)`` -> same shape."""
    small = F.avg_pool2d(spectral, factor)
    return F.interpolate(small, size=spectral.shape[-2:], mode="bicubic", align_corners=False)


class ErrorPool:
    """Sums for pooled L1 / relative RMS over many volumes."""

    def __init__(self) -> None:
        self.abs = self.sq = self.ref_sq = self.count = 0.0

    def add(self, estimate: torch.Tensor, truth: torch.Tensor) -> None:
        error = (estimate - truth).double()
        self.abs += float(error.abs().sum())
        self.sq += float(error.square().sum())
        self.ref_sq += float(truth.double().square().sum())
        self.count += error.numel()

    @property
    def l1(self) -> float:
        return self.abs / self.count

    @property
    def relative_rms(self) -> float:
        return (self.sq / self.ref_sq) ** 0.5


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def evaluate_vae(path: str, volumes: list[torch.Tensor], dataset, repeats: int) -> list[tuple]:
    """Error rows (VAE, then its same-compression baseline) and a timing line for one VAE."""
    config, normalizer = dataset.config, dataset.normalizer
    vae, vae_config, _ = load_spectral_vae(path)
    if vae_config.to_dict() != config.to_dict():
        raise SystemExit(f"{path} was trained on {vae_config}, the data is {config}")
    vae.eval()
    factor = vae_downsample_factor(vae)

    def vae_reconstruction(x: torch.Tensor) -> torch.Tensor:
        return decode_spectral(vae, encode_spectral(vae, x[None], chunk_size=16), chunk_size=16)[0]

    methods = {
        f"VAE f={factor} ({Path(path).parent.name})": vae_reconstruction,
        f"area down x{factor} + bicubic up": lambda x: baseline_reconstruction(x, factor),
    }
    rows = []
    for name, reconstruct in methods.items():
        normalised, pixels, displacement = ErrorPool(), ErrorPool(), ErrorPool()
        for x in volumes:
            estimate = reconstruct(x).float()
            normalised.add(estimate, x)
            pixels.add(normalizer.denormalize(estimate), normalizer.denormalize(x))
            displacement.add(
                spectral_to_displacement(normalizer.denormalize(estimate), config.num_frames),
                spectral_to_displacement(normalizer.denormalize(x), config.num_frames),
            )
        rows.append(
            (
                name,
                normalised.l1,
                normalised.relative_rms,
                pixels.relative_rms,
                displacement.relative_rms,
            )
        )

    x = volumes[0][None]  # (1, K, 4, H, W)
    latents = encode_spectral(vae, x, chunk_size=16)
    encode_s = best_time(lambda: encode_spectral(vae, x, chunk_size=16), repeats)
    decode_s = best_time(lambda: decode_spectral(vae, latents, chunk_size=16), repeats)
    baseline_s = best_time(lambda: baseline_reconstruction(x[0], factor), repeats)
    params = sum(p.numel() for p in vae.parameters()) / 1e6
    print(
        f"{path}: f={factor}, {params:.2f} M parameters, latents {tuple(latents.shape[1:])} per "
        f"volume; encode {encode_s:.3f} s, decode {decode_s:.3f} s per volume "
        f"({config.num_freqs} slices of {config.width}x{config.height}); baseline "
        f"down+up {baseline_s * 1e3:.1f} ms"
    )
    return rows


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", required=True, help="prepare_data.py folder")
    parser.add_argument(
        "--vae", nargs="+", required=True, help="train_vae.py <output_dir>/vae folders"
    )
    parser.add_argument("--split", default="val", help="val (held out), train or all")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dataset = SpectralVolumeDataset(args.data_dir, args.split)
    if len(dataset) == 0:
        raise SystemExit(f"{args.data_dir}: no {args.split} clips")
    config = dataset.config
    volumes = [dataset[i]["spectral"] for i in range(len(dataset))]  # (K, 4, H, W) each
    print(
        f"{len(volumes)} {args.split} volumes of {args.data_dir}: K={config.num_freqs}, "
        f"{config.width}x{config.height}, T={config.num_frames}; torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}\n"
    )

    rows = []
    for path in args.vae:
        rows += evaluate_vae(path, volumes, dataset, args.repeats)

    print(
        "\n| method | L1 (normalised) | rel. RMS (normalised) | rel. RMS (pixels) | "
        "rel. RMS of displacement |\n|---|---|---|---|---|"
    )
    for name, l1, rms, rms_px, rms_disp in rows:
        print(f"| {name} | {l1:.4f} | {rms:.4f} | {rms_px:.4f} | {rms_disp:.4f} |")


if __name__ == "__main__":
    main()
