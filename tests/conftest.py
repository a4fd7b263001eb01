import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")
# A folder holding model_0.pt and tiny.onnx made once (tools/mutation.py sets it: many short pytest sessions).
TINY_DIR = os.environ.get("TROT_TEST_TINY_DIR")
# MuJoCo Warp's compiled kernels (about 30 s to build on a CPU) in one folder every test process shares, and CI
# can keep between runs.
os.environ.setdefault("WARP_CACHE_PATH", str(Path(__file__).resolve().parents[1] / ".cache" / "warp"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A one-iteration training run (random-ish weights, real normalizer): its latest checkpoint."""
    if TINY_DIR and (Path(TINY_DIR) / "model_0.pt").is_file():
        return Path(TINY_DIR) / "model_0.pt"
    root = tmp_path_factory.mktemp("tiny_logs")
    out = subprocess.run(
        [sys.executable, "-m", "trot.cli", "train", "--max_iterations", "1", "--num_envs", "8",
         "--log_root", str(root), "--set", "runner.num_steps_per_env=8"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    (ckpt,) = list(root.glob("pupper_v3/walk/*/model_0.pt"))
    return ckpt


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    from trot.train.export import export_bundle

    if TINY_DIR and (Path(TINY_DIR) / "tiny.onnx").is_file():
        return Path(TINY_DIR) / "tiny.onnx"

    out = tmp_path_factory.mktemp("bundle") / "tiny.onnx"
    export_bundle(tiny_checkpoint, out)
    return out
