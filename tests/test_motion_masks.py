"""Automatic motion masks: the interface, the cue provider, the segmentation provider."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.motion_masks import (
    PROVIDERS,
    estimate_motion_mask,
    estimate_regions,
    main,
    moving_label_ids,
    register_provider,
    save_mask_png,
)

ROOT = Path(__file__).resolve().parents[1]


def sky_over_foliage(height=96, width=128, seed=0):
    """Clear blue sky on the top third, a textured green band (foliage) in the middle,
    a grey smooth road at the bottom."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    third = height // 3
    ramp = np.linspace(0, 25, third, dtype=np.float32)[:, None, None]
    image[:third] = np.clip(np.array([95, 150, 225], np.float32) + ramp, 0, 255).astype(np.uint8)
    leaves = cv2.GaussianBlur(rng.random((third, width)).astype(np.float32), (0, 0), 1.0)
    leaves = (leaves - leaves.min()) / (leaves.max() - leaves.min())
    image[third : 2 * third, :, 0] = (20 + 60 * leaves).astype(np.uint8)
    image[third : 2 * third, :, 1] = (70 + 150 * leaves).astype(np.uint8)
    image[third : 2 * third, :, 2] = (15 + 40 * leaves).astype(np.uint8)
    image[2 * third :] = 110
    return image


def building_under_sky(height=96, width=128):
    """Pale sky above a beige facade: a dark cornice under each floor (long straight
    edges) and a row of dark windows on each floor."""
    image = np.full((height, width, 3), (215, 225, 235), np.uint8)
    image[height // 4 :] = (200, 180, 140)
    for y in range(height // 4 + 4, height - 12, 18):
        image[y : y + 2] = (120, 105, 80)
        for x in range(6, width - 12, 20):
            image[y + 5 : y + 14, x : x + 12] = (60, 60, 70)
    return image


@pytest.mark.parametrize("provider", ["cues", "legacy"])
def test_shape_range_dtype_and_determinism(provider):
    image = sky_over_foliage(90, 150)
    mask = estimate_motion_mask(image, provider)
    assert mask.shape == (90, 150) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    np.testing.assert_array_equal(mask, estimate_motion_mask(image.copy(), provider))


@pytest.mark.parametrize("shape", [(2, 2), (3, 5), (5, 400), (400, 5)])
def test_tiny_and_extreme_aspect_images(shape):
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    for provider in ("cues", "legacy"):
        mask = estimate_motion_mask(image, provider)
        assert mask.shape == shape and np.isfinite(mask).all()
        assert mask.min() >= 0.0 and mask.max() <= 1.0


def test_cues_keep_sky_and_road_still_and_move_the_foliage():
    image = sky_over_foliage()
    third = image.shape[0] // 3
    mask = estimate_motion_mask(image)
    sky, foliage, road = mask[: third - 4], mask[third + 4 : 2 * third - 4], mask[2 * third + 4 :]
    assert foliage.mean() > 0.8
    assert sky.max() < 0.05 and road.max() < 0.05
    regions = estimate_regions(image)
    assert regions["sky"][: third - 4].mean() > 0.9
    assert regions["water"].max() < 0.05


def test_cues_keep_a_building_still():
    mask = estimate_motion_mask(building_under_sky())
    assert mask.max() < 0.1


def test_cues_find_yellow_grass_and_red_flowers_not_only_green():
    rng = np.random.default_rng(1)
    grass = cv2.GaussianBlur(rng.random((64, 96)).astype(np.float32), (0, 0), 0.8)
    grass = (grass - grass.min()) / (grass.max() - grass.min())
    image = np.empty((64, 96, 3), np.uint8)
    image[..., 0] = 150 + 90 * grass  # dry grass: yellow, textured
    image[..., 1] = 120 + 80 * grass
    image[..., 2] = 40 + 30 * grass
    assert estimate_motion_mask(image).mean() > 0.6
    assert estimate_motion_mask(image, "legacy").mean() < 0.1  # what the old cues missed
    image[..., 0], image[..., 1], image[..., 2] = 200 + 50 * grass, 20 + 40 * grass, 30
    assert estimate_motion_mask(image).mean() > 0.6  # vivid red petals


def test_cues_find_a_lake_reflecting_the_sky():
    """Sunset sky on top, dark shore, then a calm lake of the sky's orange with
    horizontal ripples: water, though neither blue nor green."""
    height, width = 96, 128
    image = np.empty((height, width, 3), np.uint8)
    image[:40] = (235, 150, 80)
    image[40:46] = (40, 35, 30)
    rows = np.arange(height - 46, dtype=np.float32)[:, None]
    ripple = 12 * np.sin(rows * 1.3) * np.ones((1, width), np.float32)
    image[46:, :, 0] = np.clip(190 + ripple, 0, 255)
    image[46:, :, 1] = np.clip(120 + ripple * 0.6, 0, 255)
    image[46:, :, 2] = np.clip(65 + ripple * 0.3, 0, 255)
    regions = estimate_regions(image)
    assert regions["sky"][:34].mean() > 0.9
    assert regions["water"][54:].mean() > 0.6
    assert estimate_motion_mask(image)[:34].max() < 0.05


def test_a_hazy_blue_mountain_is_not_water():
    """A pale sky over a hazy blue-grey mountain (the sky's hue, smooth, a faint rock
    texture with no preferred direction) over green meadow: the mountain has water's
    colour and calm but neither its level ripples nor its glassy smoothness, so most of it
    stays still (0.59 water before the glassy rule, 0.30 after); made level (the same
    texture stretched along x, like ripples) the same pixels are water."""
    height, width = 120, 192
    rng = np.random.default_rng(0)
    image = np.empty((height, width, 3), np.float32)
    image[:30] = (215, 225, 240)
    rock = cv2.GaussianBlur(rng.normal(0, 1, (60, width)).astype(np.float32), (0, 0), 1.5)
    rock = 8 * rock / rock.std()
    image[30:90] = np.array([135, 150, 175], np.float32) + rock[..., None]
    meadow = cv2.GaussianBlur(rng.random((30, width)).astype(np.float32), (0, 0), 1.0)
    image[90:] = np.array([60, 130, 40], np.float32) + 50 * (meadow[..., None] - 0.5)
    mountain = np.clip(image, 0, 255).astype(np.uint8)
    assert estimate_regions(mountain)["water"][40:85].mean() < 0.4
    assert estimate_motion_mask(mountain)[40:85].mean() < 0.4
    # the cues that made the round-3 training data, before the glassy rule, took it for water
    assert estimate_regions(mountain, round3=True)["water"][40:85].mean() > 0.5
    noise = rng.normal(0, 1, (60, width)).astype(np.float32)
    ripples = cv2.GaussianBlur(noise, (0, 0), sigmaX=12, sigmaY=0.8)
    image[30:90] = np.array([135, 150, 175], np.float32) + (8 * ripples / ripples.std())[..., None]
    lake = np.clip(image, 0, 255).astype(np.uint8)
    assert estimate_regions(lake)["water"][40:85].mean() > 0.6


def mirror_lake(height=120, width=192, waterline=80, seed=0, darken=0.7):
    """A smooth dusk sky, a dark far shore with a ragged treeline, and below the
    waterline their reflection: the scene flipped, ``darken`` times as bright, blurred."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.float32)
    ramp = np.linspace(0.0, 1.0, waterline, dtype=np.float32)[:, None, None]
    image[:waterline] = np.array([70, 95, 150], np.float32) + 60 * ramp  # blue, paler down
    tops = waterline - 6 - np.abs(cv2.GaussianBlur(rng.normal(0, 6, (1, width)), (0, 0), 2))[0]
    for x, top in enumerate(tops):
        image[int(top) : waterline, x] = (35, 45, 50)
    reflection = image[2 * waterline - height : waterline][::-1] * darken
    image[waterline:] = cv2.GaussianBlur(reflection, (0, 0), 0.8)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_a_calm_lake_mirroring_its_shore_is_water_and_ends_the_sky():
    """The smooth sky alone would run on into the smooth, sky-coloured water; the mirror
    line (the treeline reflected, darker) ends the sky there and makes the rest water."""
    from data.motion_masks import MIRROR_MIN_MARGIN, MIRROR_MIN_SCORE, _mirror_line

    image = mirror_lake()
    row, score, margin = _mirror_line(image.astype(np.float32).mean(axis=2) / 255.0)
    assert score >= MIRROR_MIN_SCORE and margin >= MIRROR_MIN_MARGIN, (score, margin)
    assert abs(row - 80) <= 2, row
    regions = estimate_regions(image)
    assert regions["sky"][:60].mean() > 0.8 and regions["sky"][84:].max() < 0.05
    assert regions["water"][90:].mean() > 0.6
    assert estimate_motion_mask(image)[:60].max() < 0.05


def test_a_symmetric_object_or_a_periodic_facade_is_no_lake():
    """The same picture whose lower half is as bright and as sharp as the upper one (a
    symmetric object, not a reflection), and a facade whose floors mirror about many
    rows: no mirror line."""
    from data.motion_masks import MIRROR_MIN_MARGIN, MIRROR_MIN_SCORE, _mirror_line

    image = mirror_lake(darken=1.0)
    image[80:] = image[:80][::-1][: image.shape[0] - 80]
    for picture in (image, building_under_sky()):
        _, score, margin = _mirror_line(picture.astype(np.float32).mean(axis=2) / 255.0)
        assert score < MIRROR_MIN_SCORE or margin < MIRROR_MIN_MARGIN


@pytest.mark.parametrize(
    "name", ["astronaut", "camera", "chelsea", "clock", "coffee", "horse", "retina", "rocket"]
)
def test_no_mirror_line_in_scikit_images_without_water(name):
    """Real and symmetric pictures without a lake (a face, a clock, a retina, a launch pad)
    find no waterline: the mirror line must stay rare (docs/MOTION_MASKS.md)."""
    skimage_data = pytest.importorskip("skimage.data")
    from data.motion_masks import (
        ANALYSIS_LONG_SIDE,
        MIRROR_MIN_MARGIN,
        MIRROR_MIN_SCORE,
        _mirror_line,
        _resize_long_side,
    )

    image = np.asarray(getattr(skimage_data, name)())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = (255 * image.astype(np.float32) / image.max()).astype(np.uint8)
    small = _resize_long_side(np.ascontiguousarray(image), ANALYSIS_LONG_SIDE)
    _, score, margin = _mirror_line(small.astype(np.float32).mean(axis=2) / 255.0)
    assert score < MIRROR_MIN_SCORE or margin < MIRROR_MIN_MARGIN, (score, margin)


def test_cues_are_resolution_independent():
    small = sky_over_foliage(96, 128)
    large = cv2.resize(small, (512, 384), interpolation=cv2.INTER_NEAREST)
    a = estimate_motion_mask(small)
    b = cv2.resize(estimate_motion_mask(large), (128, 96), interpolation=cv2.INTER_AREA)
    assert np.abs(a - b).mean() < 0.08


def test_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        estimate_motion_mask(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        estimate_motion_mask(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="too small"):
        estimate_motion_mask(np.zeros((1, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown motion-mask provider 'nope'"):
        estimate_motion_mask(np.zeros((8, 8, 3), np.uint8), "nope")
    with pytest.raises(ValueError, match="needs a model"):
        estimate_motion_mask(np.zeros((8, 8, 3), np.uint8), "segformer")


def test_paths_and_the_command_line(tmp_path, capsys):
    photo = tmp_path / "garden.png"
    image = sky_over_foliage(60, 90)
    cv2.imwrite(str(photo), image[..., ::-1])
    np.testing.assert_array_equal(estimate_motion_mask(photo), estimate_motion_mask(image))
    out = tmp_path / "masks" / "garden_mask.png"
    assert main([str(photo), str(out)]) == 0
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.shape == (60, 90) and written.dtype == np.uint8
    expected = np.rint(estimate_motion_mask(image) * 255).astype(np.uint8)
    np.testing.assert_array_equal(written, expected)
    assert "may move" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # exists: refused, untouched
        main([str(photo), str(out)])
    assert main([str(photo), str(out), "--overwrite"]) == 0
    with pytest.raises(ValueError, match=r"name it \*\.png"):
        save_mask_png(np.zeros((4, 4)), tmp_path / "mask.jpg")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        estimate_motion_mask(tmp_path / "missing.jpg")
    (tmp_path / "notes.jpg").write_text("not a photo")
    with pytest.raises(ValueError, match="notes.jpg: not an image"):
        estimate_motion_mask(tmp_path / "notes.jpg")
    with pytest.raises(ValueError, match="notes.jpg: not an image"):
        main([str(tmp_path / "notes.jpg"), str(tmp_path / "notes_mask.png")])
    assert not (tmp_path / "notes_mask.png").exists()  # nothing written half-way


def test_register_provider():
    register_provider("test-half", lambda image: np.full(image.shape[:2], 0.5, np.float32))
    try:
        mask = estimate_motion_mask(np.zeros((8, 9, 3), np.uint8), "test-half")
        assert mask.shape == (8, 9) and np.all(mask == 0.5)
        register_provider("test-bad", lambda image: np.zeros((2, 2), np.float32))
        with pytest.raises(ValueError, match="returned a mask of shape"):
            estimate_motion_mask(np.zeros((8, 9, 3), np.uint8), "test-bad")
    finally:
        PROVIDERS.pop("test-half", None)
        PROVIDERS.pop("test-bad", None)
    with pytest.raises(ValueError, match="provider name"):
        register_provider("Bad Name", lambda image: image)


# --------------------------------------------------------------------------------------
# The segmentation provider, on a tiny random SegFormer with ADE20K-style labels
# --------------------------------------------------------------------------------------

ADE_STYLE = {0: "wall", 1: "tree", 2: "sky", 3: "plant;flora;plant;life", 4: "street", 5: "water"}


def test_moving_label_ids_match_words_not_substrings():
    assert moving_label_ids(ADE_STYLE) == [1, 3, 5]  # "street" holds "tree" but is no tree
    assert moving_label_ids({"0": "palm;palm;tree", "1": "person", "2": "tree-merged"}) == [0, 2]


@pytest.fixture(scope="module")
def tiny_segformer(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[8, 16],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 1],
        mlp_ratios=[2, 2],
        decoder_hidden_size=16,
        id2label=ADE_STYLE,
        label2id={v: k for k, v in ADE_STYLE.items()},
    )
    torch.manual_seed(0)
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    folder = tmp_path_factory.mktemp("segformer")
    model.save_pretrained(folder)
    return model, folder


def test_segformer_provider_sums_the_moving_class_probabilities(tiny_segformer):
    import torch

    model, folder = tiny_segformer
    image = sky_over_foliage(64, 96)
    mask = estimate_motion_mask(image, f"segformer:{folder}")
    assert mask.shape == (64, 96) and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    np.testing.assert_array_equal(mask, estimate_motion_mask(image, f"segformer:{folder}"))

    # The same maths by hand: 512 px long side (multiples of 32), ImageNet normalisation.
    small = cv2.resize(image, (512, 352), interpolation=cv2.INTER_AREA).astype(np.float32)
    small = (small / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    pixels = torch.from_numpy(small.transpose(2, 0, 1).astype(np.float32))[None]
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    logits = torch.nn.functional.interpolate(logits, size=(64, 96), mode="bilinear")
    expected = logits.softmax(1)[0, [1, 3, 5]].sum(0).numpy()
    np.testing.assert_allclose(mask, expected, atol=1e-5)


def test_segformer_uses_the_folders_image_processor(tiny_segformer, tmp_path):
    transformers = pytest.importorskip("transformers")
    model, _ = tiny_segformer
    model.save_pretrained(tmp_path)
    transformers.SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(tmp_path)
    mask = estimate_motion_mask(sky_over_foliage(48, 80), f"segformer:{tmp_path}")
    assert mask.shape == (48, 80)


def test_segformer_bad_folders(tmp_path, tiny_segformer):
    transformers = pytest.importorskip("transformers")
    image = sky_over_foliage(32, 32)
    with pytest.raises(FileNotFoundError, match="no such segmentation model folder"):
        estimate_motion_mask(image, f"segformer:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="no config.json"):
        estimate_motion_mask(image, f"segformer:{tmp_path}")
    bert = tmp_path / "bert"
    transformers.BertConfig(
        hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8
    ).save_pretrained(bert)
    with pytest.raises(ValueError, match="'bert' model is not a semantic-segmentation model"):
        estimate_motion_mask(image, f"segformer:{bert}")
    model, _ = tiny_segformer
    unlabelled = tmp_path / "no_vegetation"
    model.config.id2label = {i: name for i, name in enumerate(["wall", "sky", "a", "b", "c", "d"])}
    try:
        model.save_pretrained(unlabelled)
    finally:
        model.config.id2label = ADE_STYLE
    with pytest.raises(ValueError, match="none of its 6 class labels"):
        estimate_motion_mask(image, f"segformer:{unlabelled}")


# --------------------------------------------------------------------------------------
# The hand annotations the benchmark scores against
# --------------------------------------------------------------------------------------


def test_annotation_file_is_well_formed_and_holds_no_pixels():
    path = ROOT / "benchmarks" / "data" / "motion_mask_annotations.json"
    assert path.stat().st_size < 100_000
    doc = json.loads(path.read_text())
    splits = {"dev": 0, "heldout": 0}
    for entry in doc["photos"]:
        assert set(entry) - {"name"} == {
            "file", "source", "sha256", "size", "annotated_size", "class", "split", "default",
            "polygons",
        }  # fmt: skip
        assert len(entry["sha256"]) == 64 and entry["class"] in {
            "foliage", "grass", "water", "mixed", "still"
        }  # fmt: skip
        splits[entry["split"]] += 1
        width, height = entry["annotated_size"]
        assert max(width, height) == 320
        for polygon in entry["polygons"]:
            assert polygon["label"] in {"moves", "still"} and len(polygon["points"]) >= 3
            points = np.asarray(polygon["points"])
            assert points[:, 0].min() >= 0 and points[:, 0].max() <= width
            assert points[:, 1].min() >= 0 and points[:, 1].max() <= height
    assert splits["dev"] >= 6 and splits["heldout"] >= 6
