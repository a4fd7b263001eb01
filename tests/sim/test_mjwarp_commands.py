"""`trot train --sim mjwarp` and `trot bench sim --sim mjwarp` end to end on Warp's CPU device; the training image."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trot.robots import tomllib

ROOT = Path(__file__).resolve().parents[2]
needs_warp = pytest.mark.skipif(
    importlib.util.find_spec("mujoco_warp") is None, reason="the gpu extra (mujoco-warp, warp-lang) is not installed"
)


def trot(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "trot.cli", *args], capture_output=True, text=True, timeout=timeout)


@needs_warp
@pytest.mark.slow
def test_train_two_iterations_on_mjwarp(tmp_path):
    out = trot(
        "train", "--sim", "mjwarp", "--device", "cpu", "--num_envs", "16", "--max_iterations", "2",
        "--log_root", str(tmp_path), "--set", "runner.num_steps_per_env=8",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = list((tmp_path / "pupper_v3" / "walk").iterdir())
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["sim"] == "mjwarp" and cfg["device"] == "cpu" and cfg["env"]["num_envs"] == 16
    assert (run / "model_1.pt").exists()
    import torch

    ckpt = torch.load(run / "model_1.pt", weights_only=False)
    assert ckpt["trot"]["env_steps"] == 2 * 8 * 16


@needs_warp
@pytest.mark.slow
def test_bench_sim_mjwarp_prints_the_task_against_raw_stepping():
    out = trot("bench", "sim", "--sim", "mjwarp", "--num_envs", "16", "--seconds", "0.5", "--threads", "1")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert "raw MuJoCo Warp stepping of the same model" in lines[0]
    assert lines[1].split() == ["num_envs", "task", "raw", "mjwarp", "ratio", "C", "rollout", "threads", "mjwarp",
                                "ms", "C", "ms"]  # fmt: skip
    num_envs, task, raw, ratio, c_rollout, threads, mjwarp_ms, c_ms = (float(x) for x in lines[2].split())
    assert num_envs == 16 and threads == 1 and task > 0 and raw > 0 and c_rollout > 0
    assert ratio == pytest.approx(task / raw, abs=0.01)
    assert mjwarp_ms == pytest.approx(1e3 * 16 / raw, rel=0.01)
    assert c_ms == pytest.approx(1e3 * 16 / c_rollout, rel=0.01)


def test_preset_gpu_without_cuda_stops_before_making_a_run_folder(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    out = trot("train", "--preset", "gpu", "--max_iterations", "1", "--log_root", str(tmp_path), timeout=120)
    assert out.returncode != 0
    assert "--device cuda:0 (preset 'gpu'): this torch finds no CUDA device" in out.stderr
    assert not any(tmp_path.iterdir())


def test_the_training_image_installs_the_gpu_extra_and_every_package_folder():
    """docker/Dockerfile.train is not built in CI (no Docker engine): its install line names extras that exist,
    with train and gpu among them, and it copies every folder the package maps."""
    text = (ROOT / "docker" / "Dockerfile.train").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = re.search(r'pip install --no-cache-dir "\.\[([a-z0-9,]+)\]"', text).group(1).split(",")
    assert {"train", "gpu"} <= set(extras) <= set(project["project"]["optional-dependencies"])
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    copied = set(re.findall(r"^COPY (\w+) \1$", text, re.M))
    assert folders <= copied, folders - copied


def test_preset_gpu_is_the_gpu_anchors_batch_layout():
    """legged_gym / Isaac Lab PPO on one GPU: 4096 envs x 24 steps per iteration in 4 mini-batches, 5 epochs,
    actor and critic MLP 512-256-128, on MuJoCo Warp on cuda:0."""
    from trot.train.config import preset

    cfg = preset("gpu")
    assert (cfg.sim, cfg.device, cfg.env.num_envs) == ("mjwarp", "cuda:0", 4096)
    assert (cfg.runner.num_steps_per_env, cfg.ppo.num_mini_batches, cfg.ppo.num_learning_epochs) == (24, 4, 5)
    assert cfg.policy.actor_hidden_dims == cfg.policy.critic_hidden_dims == (512, 256, 128)
