"""The deploy runtime builds the same observation as the simulator, from the same state."""

from dataclasses import replace

import numpy as np
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
