import sys
from pathlib import Path

import pytest
import torch

# Tests import the project's packages from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run faster on one thread than on two fighting over a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
