"""Speed and memory of sampling one spectral volume, and quality against the number of steps.

Speed (untrained weights are fine for timing)::

    python benchmarks/bench_motion_sampling.py --threads 1 2

builds the default ``MotionUNet`` (K=16, 256x160, latents 16x4x20x32 through a
``ResampleSpectralCodec`` with factor 8, or ``--codec vae`` for a factor-8 spectral VAE)
and, for each thread count, runs four configurations, each in its own process so that its
peak resident memory (``ru_maxrss``) is its own: plain, classifier-free guidance
(``--guidance_scale 2``: the U-Net sees a batch of 2), loop self-guidance (scale 1), both.
Per configuration it times one bare U-Net forward (the reference), a 1-step and an
N-step pipeline call (``--steps``), and prints

    seconds per step = (t_N - t_1) / (N - 1), its ratio to the bare U-Net forward,
    seconds per volume at 25 DDIM steps and 10 DPM-Solver steps = t_1 + (S - 1) * step,
    a directly timed full call (``--full_steps``, plain configuration only),
    loop error and RMS motion of the sample (same seed, untrained: says what the guidance
    does to the numbers, not what a trained model produces).

Loop guidance step rule (``--loop_scan``): loop error against the guidance scale for the
pipeline's Polyak step and the classifier-guidance step it replaced, on a tiny random model.

Quality against steps (a trained pipeline and prepared data with a val split)::

    python benchmarks/bench_motion_sampling.py --model weights/default \\
        --data outputs/prepared_synth --max_clips 5

runs ``data.motion_metrics.evaluate_motion`` with DDIM at ``--ddim_steps`` (250) and
DPM-Solver++ at ``--dpm_steps`` (10 20 25), plus DPM-Solver 25 steps with loop guidance, and
prints the metric table and seconds per volume of each. The machine is shared: the load
average is printed before and after; compare ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.config import MotionConfig  # noqa: E402

CONFIGURATIONS = {
    "plain": {"guidance_scale": 1.0, "loop_guidance_scale": 0.0},
    "cfg": {"guidance_scale": 2.0, "loop_guidance_scale": 0.0},
    "loop": {"guidance_scale": 1.0, "loop_guidance_scale": 1.0},
    "cfg+loop": {"guidance_scale": 2.0, "loop_guidance_scale": 1.0},
}


# ----------------------------------------------------------------------------- timing


def default_pipeline(codec: str = "resample"):
    """The default-size MotionUNet with random weights, a factor-8 codec, DDIM."""
    from diffusers import DDIMScheduler

    from data.spectral import FrequencyNormalizer
    from models.motion_unet import MotionUNet
    from models.pipeline_motion import MotionPipeline
    from models.spectral_codec import ResampleSpectralCodec
    from models.spectral_vae import create_spectral_vae

    config = MotionConfig()
    torch.manual_seed(0)
    vae = create_spectral_vae(8) if codec == "vae" else ResampleSpectralCodec(downsample_factor=8)
    # per-frequency scales falling as 1/f, roughly those of prepared data (px)
    scales = [1.0 / (k + 1) for k in range(config.num_freqs)]
    pipe = MotionPipeline(
        codec=vae.eval(),
        unet=MotionUNet(num_freqs=config.num_freqs).eval(),
        scheduler=DDIMScheduler(),
        motion_config=config.to_dict(),
        normalization=FrequencyNormalizer(scales, 95.0, 0, config).to_dict(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_configuration(name: str, threads: int, steps: int, full_steps: int, codec: str) -> dict:
    """Run in a child process: times and peak memory of one configuration."""
    torch.set_num_threads(threads)
    pipe = default_pipeline(codec)
    kwargs = CONFIGURATIONS[name]
    photo = np.random.default_rng(0).integers(0, 256, (160, 256, 3), dtype=np.uint8)
    latents = torch.randn(pipe.latent_shape(1), generator=torch.Generator().manual_seed(0))
    image = torch.zeros(1, 3, 160, 256)

    def call(num_steps: int):
        start = time.perf_counter()
        out = pipe(photo, num_inference_steps=num_steps, latents=latents.clone(), renderer=None,
                   **kwargs)  # fmt: skip
        return time.perf_counter() - start, out

    with torch.no_grad():  # reference: one bare U-Net forward on the same batch
        batch = 2 if kwargs["guidance_scale"] > 1 else 1
        pipe.unet(latents.repeat(batch, 1, 1, 1, 1), 500, image.repeat(batch, 1, 1, 1))
        start = time.perf_counter()
        pipe.unet(latents.repeat(batch, 1, 1, 1, 1), 500, image.repeat(batch, 1, 1, 1))
        unet_forward = time.perf_counter() - start
    call(1)  # warm-up
    one_step, _ = call(1)
    n_steps, out = call(steps)
    step = (n_steps - one_step) / (steps - 1)
    disp = out.displacements[0]
    result = {
        "name": name,
        "threads": threads,
        "unet_forward_s": unet_forward,
        "one_step_call_s": one_step,
        "step_s": step,
        "volume_25_s": one_step + 24 * step,
        "volume_10_s": one_step + 9 * step,
        "loop_error_px": float(np.linalg.norm(disp[-1] - disp[0], axis=-1).mean()),
        "rms_motion_px": float(np.sqrt((disp**2).sum(-1).mean())),
    }
    if full_steps and name == "plain":
        result["full_s"], _ = call(full_steps)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_timing(args) -> None:
    print(
        f"sampling speed, default MotionUNet (K=16, 256x160, codec {args.codec}, DDIM), "
        f"untrained weights; {os.cpu_count()} CPUs, load average before "
        f"{os.getloadavg()[0]:.2f} (shared machine: compare ratios)"
    )
    rows = []
    for threads in args.threads:
        for name in args.configs:
            command = [
                sys.executable, __file__, "--_child", name, "--threads", str(threads),
                "--steps", str(args.steps), "--full_steps", str(args.full_steps),
                "--codec", args.codec,
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                print(done.stderr[-2000:])
                raise SystemExit(f"child {name} ({threads} threads) failed")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"  measured {name}, {threads} thread(s), load {os.getloadavg()[0]:.2f}")
    plain = {r["threads"]: r for r in rows if r["name"] == "plain"}
    print(
        "\n| threads | config | s / step | step / bare U-Net | step / plain step "
        "| s / volume, 25 steps | s / volume, 10 steps | peak RSS (MB) | loop error (px) "
        "| RMS motion (px) |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        base = plain.get(r["threads"])
        versus = f"{r['step_s'] / base['step_s']:.2f}" if base else "n/a"
        print(
            f"| {r['threads']} | {r['name']} | {r['step_s']:.2f} "
            f"| {r['step_s'] / r['unet_forward_s']:.2f} | {versus} | {r['volume_25_s']:.1f} "
            f"| {r['volume_10_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['loop_error_px']:.4f} "
            f"| {r['rms_motion_px']:.4f} |"
        )
    for r in rows:
        if "full_s" in r:
            print(
                f"directly timed: {args.full_steps} DDIM steps, {r['threads']} thread(s): "
                f"{r['full_s']:.1f} s per volume"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


# ----------------------------------------------------------------------------- loop scan


def _classifier_guidance(self, output, latents, t, scale):
    """The rejected variant: ``eps' = eps + scale * sqrt(1 - a) / sqrt(a) * dL/dx0``."""
    from models.pipeline_motion import displacement_at_frames, loop_loss

    eps, x0 = self._split_prediction(output, latents, t)
    with torch.enable_grad():
        x0 = x0.detach().requires_grad_(True)
        num_frames = self.motion_config.num_frames
        disp = displacement_at_frames(self.decode_spectral(x0), [0, num_frames - 1], num_frames)
        loss = loop_loss(disp[:, 0], disp[:, 1])
        (grad,) = torch.autograd.grad(loss.sum(), x0)
    a = self._alpha_bar(t)
    eps = eps + scale * ((1 - a).sqrt() / a.sqrt()) * grad
    return self._join_prediction(eps, latents, t), loss.detach()


def loop_scan(num_photos: int = 3, steps: int = 10) -> None:
    """Loop error against the guidance scale, Polyak step vs classifier-guidance step.

    The tiny random MotionUNet of tests/test_pipeline_motion.py (K=4, T=12, 32x16), DDIM.
    """
    from diffusers import DDIMScheduler

    from data.spectral import FrequencyNormalizer
    from models.motion_unet import MotionUNet
    from models.pipeline_motion import MotionPipeline
    from models.spectral_codec import ResampleSpectralCodec

    torch.set_num_threads(1)
    config = MotionConfig(num_frames=12, fps=6.0, num_freqs=4, width=32, height=16)
    torch.manual_seed(0)
    unet = MotionUNet(num_freqs=4, image_downsample_factor=4, image_embed_channels=4,
                      block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                      attention_head_dim=8)  # fmt: skip
    pipe = MotionPipeline(
        codec=ResampleSpectralCodec(downsample_factor=4),
        unet=unet.eval(),
        scheduler=DDIMScheduler(num_train_timesteps=100),
        motion_config=config.to_dict(),
        normalization=FrequencyNormalizer([2.0, 1.0, 0.5, 0.25], 95.0, 3, config).to_dict(),
    )
    pipe.set_progress_bar_config(disable=True)
    polyak = MotionPipeline._loop_guidance
    print(f"loop error vs guidance scale: tiny random MotionUNet, {steps} DDIM steps, "
          f"{num_photos} photos")  # fmt: skip
    print("| step rule | scale | loop error (px) | L at step 1 | max L | L at last step |")
    print("|---|---:|---:|---:|---:|---:|")
    rules = [("classifier", _classifier_guidance, (0.0, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0)),
             ("polyak", polyak, (0.1, 0.3, 0.5, 1.0))]  # fmt: skip
    try:
        for rule, function, scales in rules:
            MotionPipeline._loop_guidance = function
            for scale in scales:
                errors = []
                for seed in range(num_photos):
                    rng = np.random.default_rng(seed)
                    photo = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
                    out = pipe(photo, num_inference_steps=steps, loop_guidance_scale=scale,
                               generator=torch.Generator().manual_seed(seed), crop=True,
                               renderer=None)  # fmt: skip
                    d = out.displacements[0]
                    errors.append(np.linalg.norm(d[-1] - d[0], axis=-1).mean())
                losses = [float(v.mean()) for v in pipe.loop_losses] if scale else [np.nan]
                print(f"| {rule if scale else 'none'} | {scale:g} | {np.mean(errors):.4f} "
                      f"| {losses[0]:.3g} | {max(losses):.3g} | {losses[-1]:.3g} |")  # fmt: skip
    finally:
        MotionPipeline._loop_guidance = polyak


# ----------------------------------------------------------------------------- quality


def quality_vs_steps(
    model: str | Path,
    data: str | Path,
    ddim_steps: int = 250,
    dpm_steps: tuple[int, ...] = (10, 20, 25),
    max_clips: int | None = None,
    seed: int = 0,
    guidance_scale: float = 1.0,
) -> list[dict]:
    """Motion metrics of DDIM (``ddim_steps``) and DPM-Solver++ (each of ``dpm_steps``).

    Returns the ``model`` rows of ``evaluate_motion`` with ``scheduler``, ``steps``,
    ``loop_guidance_scale`` and ``seconds_per_volume`` added; the baselines once, last.
    """
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    from data.motion_metrics import evaluate_motion
    from models.pipeline_motion import MotionPipeline

    pipe = MotionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    runs = [("ddim", ddim_steps, 0.0)] + [("dpm", s, 0.0) for s in dpm_steps]
    runs.append(("dpm", max(dpm_steps), 1.0))
    classes = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}
    out, baselines = [], []
    for scheduler, steps, loop in runs:
        pipe.scheduler = classes[scheduler].from_config(pipe.scheduler.config)
        start = time.perf_counter()
        rows = evaluate_motion(
            data, pipe, "val", steps, guidance_scale, loop, seed, None, max_clips
        )
        elapsed = time.perf_counter() - start
        model_row = next(r for r in rows if r["method"] == "model")
        baselines = [r for r in rows if r["method"] != "model"]
        model_row.update(
            method=f"{scheduler} {steps} steps" + (f", loop {loop:g}" if loop else ""),
            scheduler=scheduler,
            steps=steps,
            loop_guidance_scale=loop,
            seconds_per_volume=elapsed / model_row["num_clips"],
        )
        out.append(model_row)
    return out + baselines


def run_quality(args) -> None:
    from data.motion_metrics import motion_table_markdown

    torch.set_num_threads(args.threads[0])
    print(
        f"quality vs steps: model {args.model}, data {args.data} (val), "
        f"{args.threads[0]} thread(s), load average before {os.getloadavg()[0]:.2f}"
    )
    rows = quality_vs_steps(
        args.model, args.data, args.ddim_steps, tuple(args.dpm_steps), args.max_clips, args.seed
    )
    print(motion_table_markdown(rows))
    for row in rows:
        if "seconds_per_volume" in row:
            print(f"{row['method']}: {row['seconds_per_volume']:.1f} s per volume (incl. metrics)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=4, help="N of the N-step timed call")
    parser.add_argument("--full_steps", type=int, default=0,
                        help="also time a whole call of this many DDIM steps (plain)")  # fmt: skip
    parser.add_argument("--codec", choices=("resample", "vae"), default="resample")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGURATIONS),
                        default=list(CONFIGURATIONS))  # fmt: skip
    parser.add_argument("--model", help="a trained pipeline folder: run quality vs steps")
    parser.add_argument("--data", help="a prepared data folder with a val split (with --model)")
    parser.add_argument("--ddim_steps", type=int, default=250)
    parser.add_argument("--dpm_steps", type=int, nargs="+", default=[10, 20, 25])
    parser.add_argument("--max_clips", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loop_scan", action="store_true",
                        help="loop error vs guidance scale on a tiny random model")  # fmt: skip
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2")
    if args._child:
        print(json.dumps(time_configuration(
            args._child, args.threads[0], args.steps, args.full_steps, args.codec
        )))  # fmt: skip
    elif args.loop_scan:
        loop_scan()
    elif args.model or args.data:
        if not (args.model and args.data):
            parser.error("--model and --data go together")
        run_quality(args)
    else:
        run_timing(args)


if __name__ == "__main__":
    main()
