"""The deploy runtime builds the same observation as the simulator, from the same state."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from trot.deploy.bundle import load_bundle
from trot.deploy.runtime import PolicyRuntime
from trot.randomization import RandomizationCfg
from trot.sim.locomotion import LocomotionEnv
from trot.sim.task import task_cfg


def test_runtime_observation_equals_simulator_observation(tiny_bundle):
    runtime = PolicyRuntime(load_bundle(tiny_bundle))
    pupper = task_cfg("pupper_v3")
    cfg = replace(pupper, num_envs=1, randomization=RandomizationCfg.nominal(),
                  observations=replace(pupper.observations, add_noise=False))  # fmt: skip
    env = LocomotionEnv(cfg)
    gen = torch.Generator().manual_seed(0)
    for step in range(20):
        s = env.sim
        obs = runtime.observe(s.base_quat[0], s.base_ang_vel[0], s.joint_pos[0], s.joint_vel[0], env.commands[0])
        np.testing.assert_allclose(obs[0], env.get_observations()["policy"][0].numpy(), atol=1e-6,
                                   err_msg=f"step {step}")  # fmt: skip
        action = torch.randn(1, 12, generator=gen)
        env.step(action)
        runtime.last_action = env.actions.numpy().copy()


def test_runtime_targets_follow_the_action_mapping(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    runtime = PolicyRuntime(bundle)
    c = bundle.contract
    out = runtime.step([1, 0, 0, 0], [0, 0, 0], c.default_joint_pos, [0] * 12, [0.2, 0, 0])
    default = np.array(c.default_joint_pos)
    np.testing.assert_allclose(out.target, default + c.action_scale * out.action)
    assert np.abs(out.action).max() <= c.action_clip
    assert out.obs.shape == (bundle.obs_size,)
    np.testing.assert_array_equal(runtime.last_action[0], out.action)


def test_deploy_package_imports_no_torch_mujoco_or_pybullet():
    import subprocess
    import sys

    code = (
        "import sys, trot.deploy.bundle, trot.deploy.runtime, trot.deploy.protocol\n"
        "bad = sorted(m for m in ('torch', 'mujoco', 'pybullet') if m in sys.modules)\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"trot.deploy pulled in {out.stdout.strip()}"


def test_runtime_observation_of_a_known_pose_written_out_by_hand(tiny_bundle):
    """The robot side's observation from a known pose and velocity: scales, gravity sign, term order and the
    history shift, against a vector worked out by hand (not through trot.mapping)."""
    from trot.bundle import Observation, ObsTerm

    bundle = load_bundle(tiny_bundle)
    terms = (("base_ang_vel", 3, 0.25), ("projected_gravity", 3, 1.0), ("velocity_command", 3, 2.0),
             ("joint_pos_rel", 12, 1.0), ("joint_vel", 12, 0.05), ("last_action", 12, 1.0))  # fmt: skip
    obs_meta = Observation(tuple(ObsTerm(*t) for t in terms), history=2, clip=100.0)
    runtime = PolicyRuntime(replace(bundle, meta=replace(bundle.meta, observation=obs_meta)))
    default = np.array(bundle.contract.default_joint_pos)
    roll30 = [0.9659258263, 0.2588190451, 0.0, 0.0]  # cos 15°, sin 15°: rolled 30°, right side down
    dq = np.array([0.1, -0.1, 0.2, 0, 0, 0, 0, 0, 0, 0, 0, -0.3])
    qd = np.array([2.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -4.0])

    first = runtime.observe(roll30, [0.4, -0.8, 1.2], default + dq, qd, [0.5, -0.2, 0.3])
    frame1 = np.concatenate([
        [0.1, -0.2, 0.3],  # gyro × 0.25
        [0.0, -0.5, -0.8660254],  # gravity in the body: (0, -sin 30°, -cos 30°)
        [1.0, -0.4, 0.6],  # command × 2
        [0.1, -0.1, 0.2, 0, 0, 0, 0, 0, 0, 0, 0, -0.3],  # joint position − default
        [0.1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -0.2],  # joint velocity × 0.05
        np.zeros(12),  # no action yet
    ])  # fmt: skip
    np.testing.assert_allclose(first[0], np.concatenate([frame1, frame1]), atol=1e-6)  # the first fills the history

    runtime.last_action = np.full((1, 12), 0.5)
    upright = [1.0, 0.0, 0.0, 0.0]
    second = runtime.observe(upright, [0.0, 0.0, 0.8], default, np.full(12, 3000.0), [0.0, 0.0, 0.0])
    frame2 = np.concatenate([[0, 0, 0.2], [0, 0, -1], [0, 0, 0], np.zeros(12), np.full(12, 100.0),  # 150 clipped
                             np.full(12, 0.5)])  # fmt: skip
    np.testing.assert_allclose(second[0], np.concatenate([frame2, frame1]), atol=1e-6)  # newest first
    assert second.dtype == np.float32 and second.shape == (1, 2 * 45)


def test_runtime_checks_the_robot_clips_both_ways_and_keeps_float64(tiny_bundle, tmp_path):
    import shutil

    from trot.deploy.bundle import BundleError
    from trot.robots import load_robot

    bundle = load_bundle(tiny_bundle)
    robot = load_robot("pupper_v3")
    runtime = PolicyRuntime(bundle, robot)
    assert runtime.bundle is bundle and runtime.obs_size == bundle.obs_size
    other = tmp_path / "stiff"
    shutil.copytree(robot.folder, other, ignore=shutil.ignore_patterns("policies"))
    (other / "robot.toml").write_text((other / "robot.toml").read_text().replace("kp = 5.0", "kp = 6.0"))
    with pytest.raises(BundleError, match=r"kp: bundle 5\.0, robot 6\.0"):
        PolicyRuntime(bundle, load_robot(other))
    obs = np.zeros((1, bundle.obs_size), dtype=np.float32)
    assert runtime.act(obs).dtype == np.float64
    clip = bundle.contract.action_clip
    runtime.act = lambda obs: np.concatenate([np.full((1, 6), 10 * clip), np.full((1, 6), -10 * clip)], 1)
    out = runtime.step([1, 0, 0, 0], [0, 0, 0], bundle.contract.default_joint_pos, np.full(12, -1e6), [0, 0, 0])
    np.testing.assert_array_equal(out.action, [clip] * 6 + [-clip] * 6)
    assert out.obs.min() == -bundle.meta.observation.clip  # a huge negative velocity clipped at -clip
