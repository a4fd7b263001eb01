"""`trot train` / `trot play`: run folders, atomic checkpoints, resume, refusals, evaluation media."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trot.train.checkpoint import CheckpointError, atomic_torch_save, find_checkpoint, load_checkpoint

TINY = [
    "--num_envs",
    "8",
    "--set",
    "runner.num_steps_per_env=8",
    "--set",
    "runner.save_interval=1",
    "--set",
    "env.episode_length_s=0.1",
]  # fmt: skip  (short episodes: their logs reach TensorBoard)


def trot(*args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "trot.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("logs")
    out = trot("train", "--max_iterations", "2", "--log_root", str(root), "--run_name", "tiny", *TINY)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = list((root / "pupper_v3" / "walk").iterdir())
    return run


def test_train_creates_events_config_and_checkpoints(tiny_run):
    assert tiny_run.name.endswith("_tiny")
    assert list(tiny_run.glob("events.out.tfevents.*"))
    cfg = json.loads((tiny_run / "config.json").read_text())
    assert cfg["env"]["num_envs"] == 8 and cfg["runner"]["num_steps_per_env"] == 8
    assert (tiny_run / "code_revision.txt").read_text().strip()
    ckpt = load_checkpoint(find_checkpoint(tiny_run))
    assert ckpt["iter"] == 1
    meta = ckpt["trot"]
    assert meta["robot"]["name"] == "pupper_v3" and len(meta["robot"]["contract_sha256"]) == 64
    assert {"torch", "numpy", "python", "env"} <= set(meta["rng"])
    assert "optimizer_state_dict" in ckpt and any("obs_normalizer" in k for k in ckpt["actor_state_dict"])
    assert meta["env_steps"] == 2 * 8 * 8


def test_tensorboard_has_every_reward_term_and_timing(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"Perf/total_fps", "Perf/collection_time", "Perf/learning_time"} <= tags
    assert "perf/physics_ms_per_step" in tags
    from trot.randomization import TERMS
    from trot.sim.config import RewardCfg

    assert {f"reward/{name}" for name, w in RewardCfg().weights.items() if w} <= tags
    assert {f"randomization/{name}" for name in TERMS} <= tags


def test_resume_continues_at_the_next_iteration_with_identical_parameters(tiny_run):
    before = load_checkpoint(tiny_run / "model_1.pt")
    from trot.sim.locomotion import LocomotionEnv
    from trot.train.config import TrainCfg, from_dict
    from trot.train.runner import TrotRunner

    cfg = from_dict(TrainCfg, before["trot"]["config"])
    runner = TrotRunner(LocomotionEnv(cfg.env), cfg, run_dir=None)
    runner.load(str(tiny_run / "model_1.pt"))
    assert runner.current_learning_iteration == 2
    for name, value in runner.alg.actor.state_dict().items():
        assert torch.equal(value, before["actor_state_dict"][name]), name
    assert torch.equal(runner.env.gen.get_state(), before["trot"]["rng"]["env"])

    out = trot("train", "--resume", "--load_run", str(tiny_run), "--max_iterations", "1", *TINY)
    assert out.returncode == 0, out.stderr[-2000:]
    resumed = load_checkpoint(find_checkpoint(tiny_run))
    assert resumed["iter"] == 2
    assert resumed["trot"]["env_steps"] == 3 * 8 * 8


def test_corrupt_checkpoint_is_refused_with_file_and_reason(tmp_path):
    bad = tmp_path / "model_5.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"model_5\.pt: not a readable checkpoint"):
        load_checkpoint(bad)
    out = trot("play", str(bad), "--no_video", "--seconds", "0.1")
    assert out.returncode != 0 and "model_5.pt: not a readable checkpoint" in out.stderr


def test_wrong_robot_checkpoint_is_refused(tiny_run, tmp_path):
    import shutil

    from trot.robots import load_robot

    folder = tmp_path / "other"
    shutil.copytree(load_robot("pupper_v3").folder, folder, ignore=shutil.ignore_patterns("policies"))
    toml = folder / "robot.toml"
    toml.write_text(toml.read_text().replace("kp = 5.0", "kp = 6.0"))
    with pytest.raises(
        CheckpointError, match="trained for robot 'pupper_v3' with contract .* but the robot here"
    ):
        load_checkpoint(find_checkpoint(tiny_run), load_robot(folder))


def test_checkpoint_write_killed_midway_leaves_the_previous_one_loadable(tmp_path):
    path = tmp_path / "model_0.pt"
    atomic_torch_save({"x": torch.zeros(3)}, path)
    child = subprocess.Popen(
        [sys.executable, "-c", (
            "import torch, sys; from trot.train.checkpoint import atomic_torch_save\n"
            "big = {'x': torch.ones(64, 1024, 1024)}\n"  # 256 MB: the write takes a while
            "print('writing', flush=True)\n"
            f"atomic_torch_save(big, {str(path)!r})\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout.readline().strip() == "writing"
    time.sleep(0.3)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert torch.equal(torch.load(path)["x"], torch.zeros(3))


@pytest.mark.slow
def test_training_killed_with_sigkill_resumes_from_its_last_checkpoint(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "trot.cli", "train", "--max_iterations", "50", "--log_root", str(tmp_path)]
        + TINY,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    run_root = tmp_path / "pupper_v3" / "walk"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(run_root.glob("*/model_2.pt")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (run,) = list(run_root.iterdir())
    for ckpt in run.glob("model_*.pt"):
        load_checkpoint(ckpt)  # every complete checkpoint loads
    last = load_checkpoint(find_checkpoint(run))["iter"]
    out = trot("train", "--resume", "--max_iterations", "1", "--log_root", str(tmp_path), *TINY)
    assert out.returncode == 0, out.stderr[-2000:]
    assert load_checkpoint(find_checkpoint(run))["iter"] == last + 1


def test_play_writes_video_plots_and_table(tiny_run, tmp_path):
    import imageio.v3 as iio

    out = trot("play", str(tiny_run), "--seconds", "0.6", "-o", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("velocity_tracking.png", "joint_pos.png", "joint_torque.png", "foot_contacts.png"):
        assert (tmp_path / name).stat().st_size > 5000, name
    assert (tmp_path / "play.mp4").stat().st_size > 1000
    meta = iio.immeta(tmp_path / "play.mp4")
    assert meta["fps"] == 20
    for row in ("stand", "forward_0.2", "turn_right_1.0"):
        assert row in out.stdout


def test_unknown_config_override_is_refused():
    out = trot(
        "train", "--max_iterations", "1", "--set", "env.rewards.nonsense=1", "--log_root", "/nonexistent"
    )
    assert out.returncode != 0 and "no field 'nonsense'" in out.stderr
