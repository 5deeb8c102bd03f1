"""Interactive dynamics: a poke excites the modes of a spectral volume (models/interactive_dynamics)."""

import numpy as np
import pytest
import torch

from data.config import MotionConfig
from models.interactive_dynamics import (
    DEFAULT_DAMPING,
    Poke,
    animate_poke,
    parse_poke,
    poke_response,
    poke_times,
)

H, W = 24, 32
FREQS = MotionConfig().frequencies_hz()[:6]  # 0, 0.2, ..., 1.0 Hz
TIMES = poke_times(90, 30.0)  # 3 s


def blob(cx: float, cy: float, sigma: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))


def two_blob_volume() -> np.ndarray:
    """(K, 4, H, W): a blob at (8, 12) swinging in x at 1 Hz, one at (24, 12) in y at 0.6 Hz."""
    spectral = np.zeros((len(FREQS), 4, H, W), np.float32)
    spectral[0, 0] = 5.0 * blob(8, 12)  # DC offset: must not matter (no restoring force)
    spectral[5, 0] = 1.0 * blob(8, 12)  # re_x at 1.0 Hz
    spectral[5, 1] = 2.0 * blob(8, 12)  # im_x: a phase past 45 degrees
    spectral[3, 3] = 1.5 * blob(24, 12)  # im_y at 0.6 Hz
    return spectral


def respond(spectral, pokes, **kwargs):
    return poke_response(spectral, pokes, TIMES, FREQS, **kwargs)


def test_no_motion_before_the_first_poke():
    disp = respond(two_blob_volume(), [Poke(8, 12, 3.0, 0.0, t=1.0), Poke(24, 12, 0, 2, t=2.0)])
    assert disp.shape == (len(TIMES), H, W, 2) and disp.dtype == np.float32
    before = TIMES <= 1.0  # at t = t_j itself the oscillators are still at rest
    assert np.abs(disp[before]).max() == 0.0
    assert np.abs(disp[~before]).max() > 0.5


def test_the_poked_point_moves_along_the_push_and_the_response_decays():
    disp = poke_response(two_blob_volume(), [Poke(8, 12, 3.0, 0.0)], poke_times(300, 30.0), FREQS)
    x_motion = disp[:, 12, 8, 0]
    first_peak = int(np.argmax(np.abs(x_motion[:30])))
    assert x_motion[first_peak] > 0  # it swings toward the push first
    # 1 Hz with zeta = 0.1: the amplitude falls by exp(-2 pi * 0.1 * t); compare 1 s windows.
    energy = [np.abs(x_motion[i * 30 : (i + 1) * 30]).max() for i in range(10)]
    assert all(b < a for a, b in zip(energy[1:-1], energy[2:], strict=True))
    assert energy[8] < 0.1 * energy[0]
    np.testing.assert_allclose(
        energy[5] / energy[4], np.exp(-2 * np.pi * DEFAULT_DAMPING), rtol=0.1
    )


def test_reciprocity():
    # The response at p along e to a push at q along d equals the one at q along d to a push
    # at p along e (the kernel Re((e . U(p)) conj(d . U(q))) is Hermitian).
    spectral = np.random.default_rng(1).standard_normal((len(FREQS), 4, H, W)).astype(np.float32)
    p, q, e, d = (5, 7), (20, 15), np.array([1.0, 2.0]), np.array([-1.5, 0.5])
    energy = (spectral[1:] ** 2).sum(axis=(0, 1))
    assert max(energy[p[1], p[0]], energy[q[1], q[0]]) < np.percentile(energy, 99)
    at_p = respond(spectral, [Poke(*q, *d)], radius=0)[:, p[1], p[0]] @ e
    at_q = respond(spectral, [Poke(*p, *e)], radius=0)[:, q[1], q[0]] @ d
    np.testing.assert_allclose(at_p, at_q, atol=1e-5)


def test_the_most_mobile_pixel_swings_no_further_than_the_push():
    # One pixel far more mobile than the rest (above the 99th percentile that sets the
    # scale): pushing it by 3 px still moves it about 3 px at most, not 100 times more.
    spectral = two_blob_volume()
    spectral[5, 0, 20, 28] = 50.0
    disp = poke_response(spectral, [Poke(28, 20, 3.0, 0.0)], poke_times(300, 30.0), FREQS, radius=0)
    assert 1.0 < np.abs(disp[:, 20, 28, 0]).max() <= 3.0 * 1.05


def test_stronger_damping_decays_faster():
    pokes = [Poke(8, 12, 3.0, 0.0)]
    late = TIMES > 2.0
    weak = np.abs(respond(two_blob_volume(), pokes, damping=0.05)[late]).max()
    strong = np.abs(respond(two_blob_volume(), pokes, damping=0.3)[late]).max()
    assert strong < 0.3 * weak


def test_linear_in_the_force():
    spectral = two_blob_volume()
    rng = np.random.default_rng(0)
    spectral += 0.2 * rng.standard_normal(spectral.shape).astype(np.float32)
    one = respond(spectral, [Poke(10, 11, 1.0, -2.0, t=0.2)])
    other = respond(spectral, [Poke(10, 11, 0.5, 3.0, t=0.2)])
    both = respond(spectral, [Poke(10, 11, 3 * 1.0 - 2 * 0.5, 3 * -2.0 - 2 * 3.0, t=0.2)])
    np.testing.assert_allclose(both, 3 * one - 2 * other, atol=1e-4)
    # and unchanged when the whole volume is scaled (the poke's strength is |d|, in px)
    np.testing.assert_allclose(
        respond(3 * spectral, [Poke(10, 11, 1.0, -2.0, t=0.2)]), one, atol=1e-4
    )


def test_several_pokes_superpose():
    spectral = two_blob_volume()
    first, second = Poke(8, 12, 2.0, 1.0, t=0.0), Poke(24, 13, -1.0, 2.0, t=0.7)
    together = respond(spectral, [first, second])
    np.testing.assert_allclose(
        together, respond(spectral, [first]) + respond(spectral, [second]), atol=1e-5
    )


def test_largest_where_the_mode_shapes_are_large_near_the_poked_point():
    spectral = two_blob_volume()
    # A push in x at the x-swinging blob moves that blob, and not the other (its mode is
    # at another frequency and in y).
    disp = respond(spectral, [Poke(8, 12, 3.0, 0.0)])
    peak = np.linalg.norm(disp, axis=-1).max(axis=0)  # (H, W)
    row, col = np.unravel_index(np.argmax(peak), peak.shape)
    assert abs(row - 12) <= 1 and abs(col - 8) <= 1
    assert peak[12, 24] < 1e-4 * peak.max()
    # Poking where nothing moves gives (almost) nothing; poking the blob gives a lot.
    quiet = np.abs(respond(spectral, [Poke(16, 2, 3.0, 0.0)])).max()
    assert quiet < 0.01 * np.abs(disp).max()
    # A push across the mode (y at an x-only mode) excites nothing there.
    assert np.abs(respond(spectral, [Poke(8, 12, 0.0, 3.0)])[..., 0]).max() < 1e-6
    # The most mobile pixel pushed by |d| px swings by about |d| px, not more.
    assert 0.5 * 3.0 < np.abs(disp[:, 12, 8, 0]).max() <= 3.0 * 1.05


def test_zero_under_a_still_mask():
    spectral = two_blob_volume()
    mask = np.ones((H, W), np.float32)
    mask[:, :16] = 0.0  # the left half (the x blob) is still
    disp = respond(spectral, [Poke(8, 12, 3.0, 0.0), Poke(24, 12, 0.0, 2.0)], still_mask=mask)
    assert np.abs(disp[:, :, :16]).max() == 0.0
    assert np.abs(disp[:, :, 16:]).max() > 0.5
    # poking the still region passes nothing on to the rest
    assert np.abs(respond(spectral, [Poke(8, 12, 3.0, 3.0)], still_mask=mask)).max() == 0.0


def test_torch_input_and_dc_only_volume():
    spectral = two_blob_volume()
    np.testing.assert_allclose(
        respond(torch.from_numpy(spectral), [Poke(8, 12, 1, 0)]),
        respond(spectral, [Poke(8, 12, 1, 0)]),
        atol=1e-6,
    )
    dc_only = np.zeros_like(spectral)
    dc_only[0] = spectral[0]
    assert np.abs(respond(dc_only, [Poke(8, 12, 1, 0)])).max() == 0.0


def test_parse_poke():
    assert parse_poke("120,40,0,8") == Poke(120.0, 40.0, 0.0, 8.0, 0.0)
    assert parse_poke(" 1.5, 2 ,-3,4, 0.25") == Poke(1.5, 2.0, -3.0, 4.0, 0.25)
    for text, words in [
        ("1,2,3", "expected X,Y,DX,DY"),
        ("1,2,3,4,5,6", "expected X,Y,DX,DY"),
        ("a,2,3,4", "must be numbers"),
        ("1,nan,3,4", "y must be a finite number"),
        ("1,2,3,inf", "dy must be a finite number"),
        ("1,2,3,4,-1", "t must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_poke(text)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"pokes": [Poke(W, 3, 1, 0)]}, "outside the 32x24 image"),
        ({"pokes": [Poke(3, -0.5, 1, 0)]}, "outside the 32x24 image"),
        ({"pokes": []}, "at least one poke"),
        ({"pokes": [(3, 3, 1, 0)]}, "must be Poke objects"),
        ({"damping": 1.0}, "damping must be"),
        ({"damping": float("nan")}, "damping must be"),
        ({"radius": -1}, "radius must be"),
        ({"times": [0.0, float("nan")]}, "times must be finite"),
        ({"frequencies_hz": FREQS[:3]}, "frequencies_hz must be 6"),
        ({"still_mask": np.ones((H, W + 1))}, "still_mask must be"),
        ({"spectral": np.zeros((6, 3, H, W))}, "spectral must be one"),
        ({"spectral": np.full((6, 4, H, W), np.nan)}, "NaN"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, words):
    args = {
        "spectral": two_blob_volume(),
        "pokes": [Poke(3, 3, 1, 0)],
        "times": TIMES,
        "frequencies_hz": FREQS,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=words):
        poke_response(**args)
    with pytest.raises(ValueError, match="finite number"):
        Poke(float("nan"), 1, 1, 1)


class RecordingPipeline:
    """The motion pipeline's interface (``__call__``, ``render``, ``motion_config``), recording."""

    class motion_config:  # noqa: N801 - stands for the pipeline's attribute
        @staticmethod
        def frequencies_hz():
            return FREQS

    def __init__(self):
        self.kwargs, self.rendered = None, None

    def __call__(self, image, **kwargs):
        self.kwargs = kwargs
        photo = np.full((H, W, 3), 100, np.uint8)
        return type("Out", (), {"spectral": two_blob_volume()[None], "images": photo[None]})

    def render(self, photo, disp, renderer="synthesis", progress=False):
        self.rendered = (disp, renderer)
        return np.repeat(photo[None], len(disp), axis=0)


def test_animate_poke_samples_once_and_renders_the_response():
    pipe = RecordingPipeline()
    pokes = [Poke(8, 12, 3.0, 0.0, t=0.5)]
    result = animate_poke(pipe, "photo.jpg", pokes, num_frames=45, fps=15.0, renderer="softsplat",
                          guidance_scale=4.0)  # fmt: skip
    assert pipe.kwargs["renderer"] is None and pipe.kwargs["guidance_scale"] == 4.0
    assert result.frames.shape == (45, H, W, 3) and pipe.rendered[1] == "softsplat"
    expected = poke_response(two_blob_volume(), pokes, poke_times(45, 15.0), FREQS)
    np.testing.assert_array_equal(result.displacements, expected)
    assert pipe.rendered[0] is result.displacements
    with pytest.raises(ValueError, match="at least one Poke"):
        animate_poke(pipe, "photo.jpg", ["1,2,3,4"])


def test_animate_poke_refuses_a_poke_outside_the_output_before_sampling():
    from models.pipeline_motion import MotionPipeline

    class SizedPipeline(RecordingPipeline):
        output_size_for = MotionPipeline.output_size_for

    pipe = SizedPipeline()
    photo = np.zeros((100, 200, 3), np.uint8)
    with pytest.raises(ValueError, match=r"outside the 64x32 output"):
        animate_poke(pipe, photo, [Poke(70, 5, 1, 0)], output_size=(64, 32))
    assert pipe.kwargs is None  # nothing was sampled
    animate_poke(pipe, photo, [Poke(8, 12, 1, 0)], output_size=(W, H))
    assert pipe.kwargs["output_size"] == (W, H)


def test_animate_poke_with_the_shipped_weights(one_torch_thread):
    from generators.gid import DEFAULT_MODEL, load_pipeline

    pipe = load_pipeline(str(DEFAULT_MODEL), "auto", torch.device("cpu"))
    pipe.set_progress_bar_config(disable=True)
    photo = "data/examples/squirrel_cls.jpg"
    result = animate_poke(pipe, photo, [parse_poke("11,76,0,-8")], num_frames=5, fps=10.0,
                          output_size=(128, 102), num_inference_steps=1, renderer="average",
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert result.frames.shape == (5, 102, 128, 3) and result.frames.dtype == np.uint8
    assert result.spectral.shape[1:] == (4, 102, 128)
    np.testing.assert_array_equal(result.frames[0], result.image)  # at rest before the push
    assert np.abs(result.displacements).max() > 0.5  # and then it moves
