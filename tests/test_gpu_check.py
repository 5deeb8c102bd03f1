"""benchmarks/gpu_check.sh on a machine without a GPU: says so clearly and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check runs")
def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_LOGS": str(tmp_path / "logs")}
    env.pop("GPU_CHECK_DEVICE", None)
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no CUDA GPU on this machine" in result.stdout
    assert not (tmp_path / "logs").exists()  # it ran nothing


def test_a_python_without_torch_is_an_error_not_no_gpu(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")  # any interpreter that cannot import torch
    fake.chmod(0o755)
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
                            env={**os.environ, "PYTHON": str(fake)}, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "cannot import torch" in result.stderr
