"""bench/gpu_smoke.sh and bench/gpu_wheels.sh parse, and the smoke check refuses a machine without a CUDA GPU in one
line, before it writes anything (the GPU run itself: docs/gpu.md)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO


@pytest.mark.parametrize("script", ["gpu_smoke.sh", "gpu_wheels.sh"])
def test_bench_scripts_parse(script):
    done = subprocess.run(["bash", "-n", str(REPO / "bench" / script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: run bench/gpu_smoke.sh itself")
def test_smoke_check_stops_without_a_gpu(tmp_path):
    env = {**os.environ, "PY": sys.executable, "OUT": str(tmp_path / "out")}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu_smoke.sh")], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"gpu_smoke: no CUDA GPU visible to {sys.executable} (torch.cuda.is_available() is false); nothing run"]
    assert not (tmp_path / "out").exists()
