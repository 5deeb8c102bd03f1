"""Spectral-volume FFT conventions, frequency-adaptive normalisation, streaming statistics."""

import json

import numpy as np
import pytest
import torch

from data.config import SPECTRAL_CHANNELS, MotionConfig
from data.spectral import (
    SCALE_FLOOR,
    FrequencyNormalizer,
    SpectralStatsAccumulator,
    displacement_to_spectral,
    frequency_power_spectrum,
    spectral_to_displacement,
)

T, K, H, W = 24, 6, 5, 7


def band_limited_spectral(rng, batch=None):
    """A random spectrum a real signal can carry: no imaginary DC part."""
    shape = (K, 4, H, W) if batch is None else (batch, K, 4, H, W)
    spectral = rng.normal(size=shape)
    spectral[..., 0, 1, :, :] = 0.0  # im_x of DC
    spectral[..., 0, 3, :, :] = 0.0  # im_y of DC
    return spectral


@pytest.mark.parametrize("batch", [None, 3])
def test_round_trip_numpy(batch):
    rng = np.random.default_rng(0)
    spectral = band_limited_spectral(rng, batch)
    disp = spectral_to_displacement(spectral, T)
    assert disp.shape == ((T, H, W, 2) if batch is None else (batch, T, H, W, 2))
    assert disp.dtype == np.float32
    back = displacement_to_spectral(disp, K)
    assert back.dtype == np.float32 and back.shape == spectral.shape
    np.testing.assert_allclose(back, spectral, atol=1e-5)
    # ... and displacement -> spectral -> displacement for band-limited motion.
    np.testing.assert_allclose(spectral_to_displacement(back, T), disp, atol=1e-5)


@pytest.mark.parametrize("batch", [None, 2])
def test_round_trip_torch_with_autograd(batch):
    rng = np.random.default_rng(1)
    spectral = torch.tensor(band_limited_spectral(rng, batch), requires_grad=True)
    disp = spectral_to_displacement(spectral, T)
    assert isinstance(disp, torch.Tensor) and disp.dtype == torch.float64
    back = displacement_to_spectral(disp, K)
    torch.testing.assert_close(back, spectral, atol=1e-12, rtol=0)
    # float32 stays float32, and gradients flow.
    disp32 = spectral_to_displacement(spectral.float(), T)
    assert disp32.dtype == torch.float32
    (disp**2).sum().backward()
    assert spectral.grad is not None and torch.isfinite(spectral.grad).all()


def test_numpy_and_torch_agree():
    rng = np.random.default_rng(2)
    disp = rng.normal(size=(T, H, W, 2)).astype(np.float32)
    np.testing.assert_allclose(
        displacement_to_spectral(torch.from_numpy(disp), K).numpy(),
        displacement_to_spectral(disp, K),
        atol=1e-6,
    )


def test_known_cosine_gives_half_amplitude_at_its_bin():
    amplitude, k, phase = 3.0, 4, 0.7
    t = np.arange(T)
    disp = np.zeros((T, H, W, 2))
    disp[..., 0] = (amplitude * np.cos(2 * np.pi * k * t / T + phase))[:, None, None]
    disp[..., 1] = 0.5  # constant offset in y: DC only
    spectral = displacement_to_spectral(disp, K)
    re_x, im_x, re_y, im_y = (SPECTRAL_CHANNELS.index(c) for c in SPECTRAL_CHANNELS)
    coeff = spectral[k, re_x] + 1j * spectral[k, im_x]
    np.testing.assert_allclose(np.abs(coeff), amplitude / 2, rtol=1e-5)
    np.testing.assert_allclose(np.angle(coeff), phase, atol=1e-5)
    others = np.delete(spectral[:, [re_x, im_x]], k, axis=0)
    assert np.abs(others).max() < 1e-5
    np.testing.assert_allclose(spectral[0, re_y], 0.5, rtol=1e-6)
    assert np.abs(spectral[1:, [re_y, im_y]]).max() < 1e-6


def test_coefficient_independent_of_clip_length():
    def coefficient(num_frames):
        t = np.arange(num_frames)
        disp = np.zeros((num_frames, 1, 1, 2))
        disp[:, 0, 0, 0] = 2.0 * np.cos(2 * np.pi * 2 * t / num_frames)
        return displacement_to_spectral(disp, 3)[2, 0, 0, 0]

    assert coefficient(30) == pytest.approx(coefficient(150), rel=1e-5) == pytest.approx(1.0)


def test_dc_and_nyquist_imaginary_parts_are_discarded():
    num_frames = 8  # even: Nyquist bin 4 is kept with K = 5
    spectral = np.zeros((5, 4, 1, 1))
    spectral[0, 1] = 1.0  # im_x of DC
    spectral[4, 3] = 1.0  # im_y of Nyquist
    for backend in (np.asarray, torch.tensor):
        disp = spectral_to_displacement(backend(spectral), num_frames)
        assert np.abs(np.asarray(disp)).max() < 1e-12


def test_invalid_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="num_freqs"):
        displacement_to_spectral(np.zeros((8, 2, 2, 2)), 6)
    with pytest.raises(ValueError, match=r"\(T, H, W, 2\)"):
        displacement_to_spectral(np.zeros((8, 2, 2)), 3)
    with pytest.raises(ValueError, match=r"\(K, 4, H, W\)"):
        spectral_to_displacement(np.zeros((3, 2, 2, 2)), 8)


def test_power_spectrum():
    spectral = np.zeros((K, 4, H, W))
    spectral[2, 0] = 3.0
    spectral[2, 3] = 4.0
    power = frequency_power_spectrum(torch.tensor(spectral)[None])
    assert power.shape == (K,)
    np.testing.assert_allclose(power[2], 25.0)
    assert power.sum() == pytest.approx(25.0)


# ---------------------------------------------------------------- normalisation


def test_normalizer_round_trip_numpy_and_torch():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(4, K, 4, H, W)) / np.arange(1, K + 1)[None, :, None, None, None]
    norm = FrequencyNormalizer.fit(data)
    normalized = norm.normalize(data)
    assert normalized.dtype == np.float32
    # by construction ~95% of normalised values lie within [-1, 1]
    assert 0.93 < (np.abs(normalized) <= 1).mean() < 0.97
    np.testing.assert_allclose(norm.denormalize(normalized), data, rtol=1e-5, atol=1e-7)
    tensor = torch.tensor(data[0], dtype=torch.float32)
    torch.testing.assert_close(norm.denormalize(norm.normalize(tensor)), tensor)
    np.testing.assert_allclose(norm.normalize(tensor).numpy(), normalized[0], rtol=1e-5)


def test_normalizer_formula_and_zero_energy_floor():
    norm = FrequencyNormalizer([4.0, 0.0])
    assert norm.scales[1] == SCALE_FLOOR
    spectral = np.zeros((2, 4, 1, 1))
    spectral[0, 0] = -1.0
    spectral[1, 2] = 1e-6
    out = norm.normalize(spectral)
    assert out[0, 0, 0, 0] == pytest.approx(-0.5)
    assert out[1, 2, 0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="K = 2"):
        norm.normalize(np.zeros((3, 4, 1, 1)))


def test_normalizer_json_round_trip(tmp_path):
    config = MotionConfig(num_frames=T, num_freqs=K, width=W, height=H)
    norm = FrequencyNormalizer(np.linspace(0.1, 2.0, K), 95.0, 12, config)
    path = tmp_path / "stats.json"
    norm.save_json(path)
    saved = json.loads(path.read_text())
    assert saved["scales"] == pytest.approx(list(np.linspace(0.1, 2.0, K)))
    assert saved["percentile"] == 95.0 and saved["num_samples"] == 12
    assert saved["motion_config"]["num_freqs"] == K and len(saved["frequencies_hz"]) == K
    loaded = FrequencyNormalizer.load_json(path)
    np.testing.assert_array_equal(loaded.scales, norm.scales)
    assert loaded.config == config and loaded.num_samples == 12
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="bad.json"):
        FrequencyNormalizer.load_json(tmp_path / "bad.json")


def test_normalizer_rejects_mismatched_config():
    with pytest.raises(ValueError, match="num_freqs"):
        FrequencyNormalizer(np.ones(3), config=MotionConfig(num_freqs=16))


# ---------------------------------------------------------------- streaming statistics

REL_TOL = 6e-3  # one log bin spans 0.58% with the default 4000 bins over 10 decades


def clips(rng, count):
    # Heavy-tailed magnitudes spanning several decades, falling with frequency like 1/f.
    falloff = 1.0 / np.arange(1, K + 1)[None, :, None, None, None]
    return (
        rng.lognormal(0.0, 1.5, size=(count, K, 4, 16, 16))
        * falloff
        * rng.choice([-1, 1], size=(count, K, 4, 16, 16))
    )


@pytest.mark.parametrize("q", [50.0, 95.0, 99.0])
def test_accumulator_percentile_matches_numpy(q):
    rng = np.random.default_rng(4)
    data = clips(rng, 5)
    acc = SpectralStatsAccumulator(K)
    for clip in data:
        acc.update(clip)
    expected = np.percentile(np.abs(np.moveaxis(data, 1, 0)).reshape(K, -1), q, axis=1)
    np.testing.assert_allclose(acc.percentile(q), expected, rtol=REL_TOL)
    np.testing.assert_allclose(
        acc.finalize(q).scales, FrequencyNormalizer.fit(data, q).scales, rtol=REL_TOL
    )


def test_accumulator_merge_equals_single_pass(tmp_path):
    rng = np.random.default_rng(5)
    data = clips(rng, 6)
    single = SpectralStatsAccumulator(K)
    single.update(torch.tensor(data))  # a batch, as a tensor
    shards = [SpectralStatsAccumulator(K) for _ in range(3)]
    for i, clip in enumerate(data):
        shards[i % 3].update(clip)
    # Per-shard statistics travel through JSON before the merge.
    for i, shard in enumerate(shards):
        shard.save_json(tmp_path / f"shard{i}.json")
    merged = SpectralStatsAccumulator.load_json(tmp_path / "shard0.json")
    for i in (1, 2):
        merged.merge(SpectralStatsAccumulator.load_json(tmp_path / f"shard{i}.json"))
    np.testing.assert_array_equal(merged.counts, single.counts)
    np.testing.assert_array_equal(merged.max_value, single.max_value)
    assert merged.num_samples == single.num_samples == 6
    np.testing.assert_array_equal(merged.finalize().scales, single.finalize().scales)
    with pytest.raises(ValueError, match="different K"):
        merged.merge(SpectralStatsAccumulator(K + 1))


def test_accumulator_zero_energy_frequency_and_empty():
    acc = SpectralStatsAccumulator(2)
    with pytest.raises(ValueError, match="no spectral volumes"):
        acc.finalize()
    spectral = np.zeros((2, 4, 3, 3))
    spectral[0] = 0.25
    acc.update(spectral)
    norm = acc.finalize()
    assert norm.scales[0] == pytest.approx(0.25, rel=REL_TOL)
    assert norm.scales[1] == SCALE_FLOOR


def test_long_clips_use_the_fft_path_with_the_same_result():
    # K > 64 takes np.fft instead of the DFT matrix product; both must agree with torch.
    rng = np.random.default_rng(6)
    num_frames, num_freqs = 160, 70
    disp = rng.normal(size=(num_frames, 2, 3, 2))
    spectral = displacement_to_spectral(disp, num_freqs)
    np.testing.assert_allclose(
        spectral, displacement_to_spectral(torch.tensor(disp), num_freqs).numpy(), atol=1e-6
    )
    back = spectral_to_displacement(spectral, num_frames)
    np.testing.assert_allclose(
        back, spectral_to_displacement(torch.tensor(spectral), num_frames).numpy(), atol=1e-6
    )


def test_displacement_at_phases_matches_inverse_fft_and_loops():
    from data.spectral import displacement_at_phases

    rng = np.random.default_rng(3)
    disp = rng.normal(size=(30, 5, 6, 2)).astype(np.float32)
    spectral = displacement_to_spectral(disp, 8)
    expected = spectral_to_displacement(spectral, 30)
    got = displacement_at_phases(spectral, np.arange(30) / 30)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # one period later the motion repeats
    np.testing.assert_allclose(
        displacement_at_phases(spectral, [1.25]),
        displacement_at_phases(spectral, [0.25]),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="spectral must be"):
        displacement_at_phases(spectral[0], [0.0])
