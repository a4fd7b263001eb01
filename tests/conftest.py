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


def write_gate_record(bundle: Path, passed: bool = True, failures: tuple[str, ...] = (), sha256: str | None = None,
                      latency_s: float = 0.02):  # fmt: skip
    """A gate record beside `bundle` as a full run writes it (trot.gate_record's schema), for tests of what reads it
    (flash, inspect): the verdict is the test's, not a gate run's. failures: reasons of one failing judged cell."""
    from trot.gate_record import GateRecord, file_sha256, record_path

    cells = [{"engine": "pybullet", "command": c, "perturbation": p, "judged": p != "latency_2_steps",
              "passed": not (failures and (c, p) == ("forward_max", "latency_declared")),
              "failures": list(failures) if (c, p) == ("forward_max", "latency_declared") else []}
             for c in ("stand", "forward_max") for p in ("nominal", "latency_declared", "latency_2_steps")]  # fmt: skip
    record = GateRecord(
        bundle_sha256=sha256 or file_sha256(bundle), bundle_file=bundle.name, robot="pupper_v3",
        contract_sha256="0" * 64, passed=passed and not failures, created="2026-12-08T10:00:00+00:00",
        trot_revision="0123456789ab", engines=("pybullet",), seconds=10.0, seed=0, latency_s=latency_s,
        latency_source="test", thresholds={}, commands={}, perturbations={}, cells=tuple(cells),
    )  # fmt: skip
    record_path(bundle).write_text(record.to_json())
    return record


@pytest.fixture
def gate_record():
    """`write_gate_record(bundle, passed=True, failures=(), sha256=None, latency_s=0.02)`: a record beside a bundle."""
    return write_gate_record
