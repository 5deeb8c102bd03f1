import sys
from pathlib import Path

import pytest
import torch

# Tests import the project's packages from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.config import MotionConfig  # noqa: E402

# The motion config of the tiny training data below (64x48, K = 4, 20 frames).
TINY_CONFIG = MotionConfig(num_frames=20, fps=10.0, num_freqs=4, width=64, height=48)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run faster on one thread than on two fighting over a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """A prepare_data folder of 4 synthetic clips (3 train, 1 val) at TINY_CONFIG, shared by
    the training-script tests (read only: a test that changes it works on a copy)."""
    from data.prepare import PrepareSettings, prepare
    from data.synthetic import write_synthetic_dataset
    from tests.test_prepare import textured_photo

    root = tmp_path_factory.mktemp("tiny_data")
    photos = [textured_photo(seed) for seed in range(4)]
    write_synthetic_dataset(photos, root / "videos", clips_per_photo=1, seed=3, config=TINY_CONFIG)
    settings = PrepareSettings(config=TINY_CONFIG, val_fraction=0.25)
    manifest = prepare(root / "videos", root / "prepared", settings, progress=False)
    assert manifest["counts"]["train"] >= 2
    return root / "prepared"
