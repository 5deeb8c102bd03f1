"""Where and how much a motion pipeline moves held-out photos, against hand annotations.

    python benchmarks/bench_motion_prior.py [--model weights/default] [--seeds 0] [--photos aitzgorri life]

The photos: every annotated photo of ``benchmarks/data/motion_mask_annotations.json`` that
no motion model trained on (the GPL photos, data/examples, scikit-learn's china.jpg and
flower.jpg, five lakes and a forest of ``plasma-workspace-wallpapers`` and six photos of
``lomiri-wallpapers-16.04``/``-20.04`` when installed; the
permissive ones are training photos and are skipped), cover-cropped to the model's 256x160
frame, sampled with sample.py's sampling (DPM-Solver++ 25 steps, guidance 4). Four settings
of the same pipeline and seed:

* ``model``: no mask, gain 1: what sample.py did before the automatic mask and the gain;
* ``default``: the automatic motion mask (``cues`` provider) and the pipeline's
  ``motion_gain``, at the model's own amplitude (``amplitude_reference="model"``);
* ``visible``: sample.py's defaults: ``default`` lifted per photo by the visible gain
  (``amplitude_reference="visible"``; the same sample, so only p90 and px differ, and
  ``gain`` is printed);
* ``brush``: the annotation itself given as ``motion_mask`` (a user's brush), with the gain.

Per photo: ``p90``: 90th percentile of the per-pixel RMS displacement (px, about the mean
position) inside the annotated moving region; ``still``: mean RMS on annotated still
pixels over mean RMS on moving ones (``px``: that mean RMS in pixels, the only figure
of a photo annotated all still); ``corr``: Pearson correlation of the RMS with the
annotation; for ``brush``, ``inside``: share of the motion energy (RMS^2) inside the
brush, and ``strength``: mean RMS inside with the brush over mean RMS inside without a mask
(at the same gain). The annotation split (``dev`` photos tuned the cues) is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_motion_masks import (  # noqa: E402
    ANNOTATIONS,
    KDE_WALLPAPERS_DIR,
    LOMIRI_WALLPAPERS_DIR,
    ROOT,
    display_name,
    load_photo,
    rasterise,
    sklearn_images_dir,
)

from data.spectral import rms_displacement  # noqa: E402
from data.video import resize_cover_crop  # noqa: E402
from generators.gid import DEFAULT_AMPLITUDE_REFERENCE, DEFAULT_SCHEDULER  # noqa: E402
from generators.gid import DEFAULT_SAMPLING as SAMPLING  # noqa: E402
from models.pipeline_motion import DEFAULT_MASK_PROVIDER, MotionPipeline  # noqa: E402

MODEL_SIZE = (256, 160)


def held_out_photos(gpl_dir: Path) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """(annotation entry, photo, moving-region truth) at the model frame."""
    dirs = {"gpl": gpl_dir, "examples": ROOT / "data" / "examples", "sklearn": sklearn_images_dir(),
            "kde": KDE_WALLPAPERS_DIR, "lomiri": LOMIRI_WALLPAPERS_DIR}  # fmt: skip
    photos = []
    for entry in json.loads(ANNOTATIONS.read_text())["photos"]:
        folder = dirs.get(entry["source"])
        if folder is None or not (folder / entry["file"]).is_file():
            continue
        photo = load_photo(folder / entry["file"], entry)
        if photo is None:
            continue
        truth = rasterise(entry).astype(np.float32)
        photos.append(
            (
                entry,
                resize_cover_crop(photo, MODEL_SIZE, mode="crop"),
                resize_cover_crop(truth, MODEL_SIZE, mode="crop") > 0.5,
            )
        )
    return photos


def region_scores(rms: np.ndarray, truth: np.ndarray) -> dict:
    move, still = rms[truth], rms[~truth]
    result = {"p90": float(np.percentile(move, 90)) if move.size else float("nan")}
    result["still_px"] = float(still.mean()) if still.size else float("nan")
    result["still"] = (
        float(still.mean() / max(move.mean(), 1e-12)) if move.size and still.size else float("nan")
    )
    both = move.size and still.size
    result["corr"] = float(np.corrcoef(rms.ravel(), truth.ravel())[0, 1]) if both else float("nan")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "weights" / "default"))
    parser.add_argument("--gpl", default=str(ROOT.parent / "shared" / "data" / "photos" / "gpl"))
    parser.add_argument("--mask_provider", default=DEFAULT_MASK_PROVIDER)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument(
        "--photos", nargs="+", metavar="NAME",
        help="only these annotated photos (their names as printed; all by default)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    pipe = MotionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    pipe.set_scheduler(DEFAULT_SCHEDULER)
    gain = pipe.config.motion_gain
    photos = held_out_photos(Path(args.gpl))
    if args.photos:
        unknown = set(args.photos) - {display_name(entry) for entry, _, _ in photos}
        if unknown:
            print(f"no such annotated photo found: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 1
        photos = [item for item in photos if display_name(item[0]) in args.photos]
    if not photos:
        print("no held-out annotated photo found", file=sys.stderr)
        return 1

    def sample(photo, seed, **kwargs) -> np.ndarray:
        out = pipe(photo, generator=torch.Generator().manual_seed(seed), crop=True,
                   renderer=None, return_displacements=False, **SAMPLING, **kwargs)  # fmt: skip
        return rms_displacement(out.spectral[0])

    print(f"{args.model}: motion_gain {gain:g}, mask provider {args.mask_provider}, "
          f"seeds {args.seeds}")  # fmt: skip
    header = f"{'photo':<18}{'class':<9}{'split':<8}"
    header += "".join(f"{name + ' p90/still/px/corr':>34}" for name in ("model", "default"))
    header += f"{'visible p90/px/gain':>26}{'brush inside/strength':>24}"
    print(header)
    rows = []
    for entry, photo, truth in photos:
        row = {"photo": display_name(entry), "class": entry["class"], "split": entry.get("split")}
        for setting in ("model", "default", "brush"):
            per_seed = []
            for seed in args.seeds:
                if setting == "model":
                    rms = sample(photo, seed, mask_provider=None) / gain
                elif setting == "default":  # sampled once, at sample.py's reference
                    lifted = sample(photo, seed, mask_provider=args.mask_provider,
                                    amplitude_reference=DEFAULT_AMPLITUDE_REFERENCE)  # fmt: skip
                    gains = pipe.last_visible_gains
                    visible_gain = 1.0 if gains is None else float(gains[0])
                    row.setdefault("_visible", []).append((lifted, visible_gain))
                    rms = lifted / visible_gain
                elif truth.any() and (~truth).any():
                    rms = sample(photo, seed, motion_mask=truth.astype(np.uint8) * 255)
                else:
                    rms = None
                per_seed.append(rms)
            if per_seed[0] is None:
                continue
            if setting == "brush":
                inside = [float((r[truth] ** 2).sum() / max((r**2).sum(), 1e-12)) for r in per_seed]
                strength = [
                    float(r[truth].mean() / max(gain * m[truth].mean(), 1e-12))
                    for r, m in zip(per_seed, row["_model_rms"], strict=True)
                ]
                row["brush"] = {
                    "inside": float(np.mean(inside)),
                    "strength": float(np.mean(strength)),
                }
            else:
                scores = [region_scores(r, truth) for r in per_seed]
                row[setting] = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
                if setting == "model":
                    row["_model_rms"] = per_seed
        visible = row.pop("_visible")
        scores = [region_scores(r, truth) for r, _ in visible]
        row["visible"] = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
        row["visible"]["gain"] = float(np.mean([g for _, g in visible]))
        row.pop("_model_rms", None)
        rows.append(row)

        line = f"{row['photo']:<18}{row['class']:<9}{str(row['split']):<8}"
        for name in ("model", "default"):
            s = row[name]
            line += f"{s['p90']:>10.3f}{s['still']:>8.2f}{s['still_px']:>8.3f}{s['corr']:>8.2f}"
        v = row["visible"]
        line += f"{v['p90']:>10.3f}{v['still_px']:>8.3f}{v['gain']:>8.2f}"
        if "brush" in row:
            line += f"{row['brush']['inside']:>14.4f}{row['brush']['strength']:>10.2f}"
        print(line, flush=True)

    print_summary(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def print_summary(rows: list[dict]) -> None:
    """Per class, the dev photos' figures and the brush's, from the rows ``main`` makes (or
    a ``--json`` file written earlier: ``python -c "import json, bench_motion_prior as b;
    b.print_summary(json.load(open('prior.json')))"`` from ``benchmarks/``)."""
    print(
        "\nper class (mean over photos), model -> default: corr; p90 (px); still ratio; still (px)"
    )
    for name in sorted({row["class"] for row in rows}):
        group = [row for row in rows if row["class"] == name]

        def mean(setting: str, key: str, group=group) -> float:
            values = [row[setting][key] for row in group if np.isfinite(row[setting][key])]
            return float(np.mean(values)) if values else float("nan")

        print(f"  {name:<8} ({len(group)}): corr {mean('model', 'corr'):.2f} -> "
              f"{mean('default', 'corr'):.2f}; p90 {mean('model', 'p90'):.3f} -> "
              f"{mean('default', 'p90'):.3f} px; still {mean('model', 'still'):.2f} -> "
              f"{mean('default', 'still'):.2f}; still px {mean('model', 'still_px'):.3f} -> "
              f"{mean('default', 'still_px'):.3f}")  # fmt: skip
    # The figures issue 15's model rounds were chosen by (docs/MODEL_CARD.md): dev photos only.
    dev = [row["default"] for row in rows if row["split"] == "dev"]
    if dev:

        def finite(key: str) -> list[float]:
            return [d[key] for d in dev if np.isfinite(d[key])]

        print(f"  dev photos, default: mean corr {np.mean(finite('corr')):.4f}, mean still "
              f"ratio {np.mean(finite('still')):.3f} ({len(finite('corr'))} photos with a still "
              f"part), median p90 {np.median(finite('p90')):.3f} px "
              f"({len(finite('p90'))} with a moving region)")  # fmt: skip
    visible = [row for row in rows if "visible" in row and np.isfinite(row["visible"]["p90"])]
    if visible:  # rows written before the visible reference have none
        p90 = [row["visible"]["p90"] for row in visible]
        dev_p90 = [row["visible"]["p90"] for row in visible if row["split"] == "dev"]
        gains = [row["visible"]["gain"] for row in visible]
        print(f"  visible (sample.py's default), {len(p90)} photos with a moving region: p90 "
              f"{min(p90):.2f}-{max(p90):.2f} px (median {np.median(p90):.2f}; dev median "
              f"{np.median(dev_p90) if dev_p90 else float('nan'):.2f}), >= 1 px on "
              f"{sum(v >= 1.0 for v in p90)}; gain {min(gains):.2f}-{max(gains):.2f}")  # fmt: skip
    brushed = [row["brush"] for row in rows if "brush" in row]
    if brushed:
        print(f"  brush ({len(brushed)} photos): energy inside min "
              f"{min(b['inside'] for b in brushed):.4f}, strength median "
              f"{np.median([b['strength'] for b in brushed]):.2f}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
