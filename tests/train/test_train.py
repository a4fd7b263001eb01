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
    assert set(meta) == {"robot", "robot_model", "task", "config", "code_revision", "run", "env_steps", "created",
                         "rng"}  # fmt: skip


def test_tensorboard_has_every_reward_term_and_timing(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"Perf/total_fps", "Perf/collection_time", "Perf/learning_time"} <= tags
    assert "perf/physics_ms_per_step" in tags
    from trot.randomization import TERMS
    from trot.sim.config import default_rewards

    assert {f"reward/{name}" for name, term in default_rewards().items() if term.weight} <= tags
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

    out = trot("train", "--resume", "--load_run", str(tiny_run), "--max_iterations", "1", *TINY,
               "--set", "ppo.desired_kl=0.005")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    # A setting that is not the checkpoint's is named, old and new; the iteration count (more, on resume) is not.
    said = out.stdout.split("differ from the checkpoint's")[1]
    assert "ppo.desired_kl: 0.01 -> 0.005" in said and "max_iterations" not in said
    resumed = load_checkpoint(find_checkpoint(tiny_run))
    assert resumed["iter"] == 2
    assert resumed["trot"]["env_steps"] == 3 * 8 * 8


def _rng_states(env) -> dict:
    """Every random stream training draws from: torch's global one, numpy's, Python's, the env's generator."""
    import random

    import numpy as np

    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),  # noqa: NPY002
            "env": env.gen.get_state()}  # fmt: skip


class QuietProgress:
    def __init__(self, *args, **kwargs):
        self.update = None

    def close(self) -> None:
        pass


def _set_rng(env, states: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])  # noqa: NPY002
    random.setstate(states["python"])
    env.gen.set_state(states["env"])


def _same_rng(a: dict, b: dict) -> None:
    import numpy as np

    assert torch.equal(a["torch"], b["torch"]), "torch global RNG"
    assert a["numpy"][0] == b["numpy"][0] and np.array_equal(a["numpy"][1], b["numpy"][1]), "numpy global RNG"
    assert a["numpy"][2:] == b["numpy"][2:], "numpy global RNG"
    assert a["python"] == b["python"], "python random"
    assert torch.equal(a["env"], b["env"]), "env generator"


def test_an_interrupted_and_resumed_run_continues_exactly_as_an_uninterrupted_one(tmp_path, monkeypatch):
    """Two iterations, a checkpoint, then two more: once in one process, once resumed from the checkpoint through
    `train`. A resumed process builds a fresh env (its episodes restart; the checkpoint holds no env state), so
    the uninterrupted reference rebuilds its env at the same point, touching no random stream. Everything else
    must continue exactly: all four random streams at the resume, then every reward and every parameter."""
    import random

    import numpy as np

    from trot.sim.locomotion import LocomotionEnv
    from trot.train import runner as runner_module
    from trot.train.config import override, preset
    from trot.train.runner import TrotRunner, seed_everything, train

    cfg = preset("cpu", "pupper_v3")
    for key, value in {"env.num_envs": "8", "runner.num_steps_per_env": "8", "runner.save_interval": "1",
                       "env.episode_length_s": "0.1", "runner.max_iterations": "2"}.items():  # fmt: skip
        cfg = override(cfg, key, value)
    rewards = []
    step = LocomotionEnv.step

    def recording_step(self, actions):
        out = step(self, actions)
        # Stands for any library that draws from numpy's or Python's global stream during training.
        draws = torch.tensor([np.random.random(), random.random()], dtype=out[1].dtype)  # noqa: NPY002
        rewards.append(torch.cat([out[1], draws]))
        return out

    monkeypatch.setattr(LocomotionEnv, "step", recording_step)

    # Uninterrupted: iterations 0-1, then (with the env rebuilt as a resume must) iterations 2-3.
    seed_everything(cfg.env.seed)
    env = LocomotionEnv(cfg.env)
    ref = TrotRunner(env, cfg, run_dir=tmp_path / "ref")
    ref.learn(2, init_at_random_ep_len=True)
    at_save = _rng_states(env)
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    (resumed_dir / "model_1.pt").write_bytes((tmp_path / "ref" / "model_1.pt").read_bytes())
    fresh = LocomotionEnv(cfg.env)
    _set_rng(fresh, at_save)  # the random streams continue as if the env had not been rebuilt
    ref.env = fresh
    ref.current_learning_iteration = 2  # rsl-rl's learn starts at this index; a resume sets it after the saved one
    rewards.clear()
    ref.learn(2, init_at_random_ep_len=False)
    ref_rewards, ref_params = list(rewards), {k: v.clone() for k, v in ref.alg.actor.state_dict().items()}

    # Interrupted after iteration 1 (model_1.pt), resumed by `trot train --resume`'s code path.
    after_load = {}
    load = TrotRunner.load

    def recording_load(self, path, *args, **kwargs):
        out = load(self, path, *args, **kwargs)
        after_load.update(_rng_states(self.env))
        return out

    monkeypatch.setattr(TrotRunner, "load", recording_load)
    monkeypatch.setattr(runner_module, "Progress", QuietProgress)
    rewards.clear()
    train(cfg, tmp_path, resume_from=resumed_dir / "model_1.pt", quiet=True)
    _same_rng(at_save, after_load)
    assert len(rewards) == len(ref_rewards) == 2 * 8
    for i, (got, want) in enumerate(zip(rewards, ref_rewards)):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=f"rewards of step {i} after the resume")
    resumed = load_checkpoint(resumed_dir / "model_3.pt")
    for name, value in ref_params.items():
        assert torch.equal(resumed["actor_state_dict"][name], value), name


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
        "train", "--max_iterations", "1", "--set", "env.rewards.nonsense.weight=1", "--log_root", "/nonexistent"
    )
    assert out.returncode != 0 and "no field 'nonsense' in 'env.rewards'; known: ['action_rate'" in out.stderr


def _args(*sets: str):
    import argparse

    return argparse.Namespace(
        task="walk", preset="cpu", robot="pupper_v3", num_envs=None, seed=None, max_iterations=None, logger=None,
        device=None, sim="mujoco", set=list(sets),
    )  # fmt: skip


def test_set_overrides_fields_by_name_with_their_type():
    from trot.train.runner import build_cfg

    cfg = build_cfg(_args(
        "env.rewards.orientation.weight=-2", "env.rewards.track_lin_vel_xy.params.sigma=0.2", "ppo.learning_rate=5e-4",
        "env.commands.vx=[-0.3, 0.5]", "env.observations.policy_terms.joint_vel.noise=0.4",
        "env.randomization.terms.friction.range=[0.5, 1.5]", "policy.actor_hidden_dims=[64, 64]",
        "env.only_positive_rewards=false",
    ))  # fmt: skip
    env = cfg.env
    assert env.rewards["orientation"].weight == -2.0 and isinstance(env.rewards["orientation"].weight, float)
    assert env.rewards["track_lin_vel_xy"].params == {"sigma": 0.2}
    assert cfg.ppo.learning_rate == 5e-4 and env.commands.vx == (-0.3, 0.5)
    assert {t.name: t.noise for t in env.observations.policy_terms}["joint_vel"] == 0.4
    assert env.randomization.terms["friction"].range == (0.5, 1.5) and cfg.policy.actor_hidden_dims == (64, 64)
    assert env.only_positive_rewards is False
    assert env.rewards["feet_air_time"].params == {"target_s": 0.2}  # the rest is Pupper's task, untouched


@pytest.mark.parametrize(
    "item, message",
    [
        ("env.rewards.orientation.weight=abc", "field 'env.rewards.orientation.weight' = 'abc'; expected a number"),
        ("ppo.num_learning_epochs=2.5", "field 'ppo.num_learning_epochs' = 2.5; expected a whole number"),
        ("env.commands.vx=[0.1]", "field 'env.commands.vx' = [0.1]; expected a list of 2 values"),
        ("env.only_positive_rewards=1", "expected true or false"),
        ("env.observations.policy_terms.gyro.noise=1", "no entry 'gyro' in 'env.observations.policy_terms'"),
        ("env.randomization.terms.friction.range=[0.2, 9]", "'env.randomization.terms.friction.range' = [0.2, 9.0]; "
         "expected within the physical bounds [0.0, 5.0]"),
        ("env.rewards.orientation.func=wobble",
         "'env.rewards.orientation.func' = 'wobble'; expected a reward function"),
        ("env.rewards", "--set expects key=value"),
    ],
)  # fmt: skip
def test_bad_set_is_refused_naming_field_value_and_expectation(item, message):
    from trot.train.runner import build_cfg

    with pytest.raises(SystemExit) as e:
        build_cfg(_args(item))
    assert message in str(e.value)


def test_checkpoint_config_round_trips_and_refuses_unknown_fields():
    from trot.train.config import TrainCfg, from_dict, preset, to_dict

    cfg = preset("cpu")
    data = to_dict(cfg)
    assert from_dict(TrainCfg, json.loads(json.dumps(data))) == cfg
    data["env"]["rewards"]["orientation"]["scale"] = 1.0
    with pytest.raises(CheckpointError, match=r"checkpoint config: field 'env.rewards.orientation' = \['scale'\]"):
        from_dict(TrainCfg, data)
    data["env"]["rewards"] = {"weights": {"orientation": -5.0}, "only_positive": True}  # before terms were declared
    with pytest.raises(CheckpointError, match="'env.rewards.weights' holds the reward format of an older trot"):
        from_dict(TrainCfg, data)


def synthetic_robot(tmp_path: Path) -> Path:
    """A second 12-joint robot: Pupper's URDF with a heavier base and stronger motors, its own robot.toml and a
    task.toml with a pacing gait (left legs together), another clock and other command ranges."""
    import shutil

    from trot.robots import load_robot

    folder = tmp_path / "pacer"
    shutil.copytree(load_robot("pupper_v3").folder, folder, ignore=shutil.ignore_patterns("policies", "task.toml"))
    urdf = (folder / "pupper_v3.urdf").read_text()
    assert urdf.count('effort="3.0"') == 12 and '<mass value="1.506"/>' in urdf, "test setup"
    urdf = urdf.replace('effort="3.0"', 'effort="4.0"').replace('<mass value="1.506"/>', '<mass value="2.0"/>')
    (folder / "pacer.urdf").write_text(urdf)
    (folder / "pupper_v3.urdf").unlink()
    toml = (folder / "robot.toml").read_text()
    for old, new in (('name = "pupper_v3"', 'name = "pacer"'), ('urdf = "pupper_v3.urdf"', 'urdf = "pacer.urdf"'),
                     ("torque_limit = 3.0", "torque_limit = 4.0"), ("kp = 5.0", "kp = 6.0")):  # fmt: skip
        assert old in toml, "test setup"
        toml = toml.replace(old, new)
    (folder / "robot.toml").write_text(toml)
    (folder / "task.toml").write_text(
        "[commands]\nvx = [-0.3, 0.3]\nvy = [-0.1, 0.1]\nyaw_rate = [-0.5, 0.5]\n"
        '[gait]\npairs = [["leg_front_r_3", "leg_back_r_3"], [1, 3]]\n'
        "[observations]\ngait_frequency_hz = 2.0\n"
        "[randomization.terms]\nfriction = { range = [0.8, 1.2] }\nactuation_latency = { range = [0.0, 0.008] }\n"
    )
    return folder


def test_a_second_robot_trains_from_its_folder_alone(tmp_path):
    folder = synthetic_robot(tmp_path)
    out = trot("train", "--robot", str(folder), "--max_iterations", "2", "--log_root", str(tmp_path / "logs"), *TINY)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = list((tmp_path / "logs" / "pacer" / "walk").iterdir())
    ckpt = load_checkpoint(find_checkpoint(run))
    assert ckpt["iter"] == 1 and ckpt["trot"]["robot"]["name"] == "pacer"
    env_cfg = ckpt["trot"]["config"]["env"]
    assert env_cfg["gait"]["pairs"] == [[0, 2], [1, 3]] and env_cfg["observations"]["gait_frequency_hz"] == 2.0
    assert env_cfg["commands"]["vx"] == [-0.3, 0.3]
    assert env_cfg["randomization"]["terms"]["actuation_latency"]["range"] == [0.0, 0.008]

    from dataclasses import replace

    from trot.sim.locomotion import LocomotionEnv
    from trot.sim.task import task_cfg

    env = LocomotionEnv(replace(task_cfg(folder), num_envs=2))
    assert env.robot.total_mass == pytest.approx(3.17 + 0.494, abs=1e-6)
    assert env.first_pair.tolist() == [True, False, True, False]  # right feet stand in the first half
    assert env.params.torque_limit.max().item() == 4.0 and env.params.kp.max().item() == 6.0


def test_task_names_the_run_folder(tmp_path):
    out = trot("train", "--task", "stairs_v2", "--max_iterations", "1", "--log_root", str(tmp_path), *TINY)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = list((tmp_path / "pupper_v3" / "stairs_v2").iterdir())
    assert load_checkpoint(find_checkpoint(run))["trot"]["task"] == "stairs_v2"
    out = trot("train", "--task", "../elsewhere", "--max_iterations", "1", "--log_root", str(tmp_path))
    assert out.returncode != 0 and "must be a plain name" in out.stderr
