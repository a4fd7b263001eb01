"""The left-right mirror: found in the URDF, true of the physics, refused for an asymmetric robot, and trained on
through rsl-rl's Symmetry extension."""

import shutil
from dataclasses import replace

import pytest
import torch

from trot.randomization import RandomizationCfg
from trot.robots import ContractError, load_robot
from trot.sim.config import InitCfg
from trot.sim.locomotion import LocomotionEnv, mirror_batch
from trot.sim.symmetry import robot_mirror
from trot.sim.task import task_cfg
from trot.train.config import override, preset, to_rsl_rl


# The Go2's published base inertia has small products ixy, iyz (go2_description), so its mirror image is not
# quite itself: 0.4e-3 rad/s apart within 0.6 s. The Pupper's links carry their authors' full inertia tensors, whose
# left and right products of inertia mirror to the published rounding: 2e-6 apart within 0.6 s.
@pytest.mark.parametrize("robot, atol", [("pupper_v3", 1e-5), ("go2", 1e-3)])
def test_the_mirror_image_of_a_walk_is_the_walk_the_mirrored_actions_make(robot, atol):
    """Two robots from the same pose, facing +x: one driven by random actions, the other by their mirror images.
    After 0.6 s every observation of the second is the mirror image of the first's, to rounding (the gait clock
    aside: both run the same clock). A wrong joint pair or sign shows within a step. (Facing +x: MuJoCo's
    pyramidal friction cone has its edges along the world axes, so two headings that are not mirror images of
    each other differ by up to 0.03 rad/s within a step.)"""
    cfg = task_cfg(robot)
    cfg = replace(cfg, num_envs=2, randomization=RandomizationCfg.nominal(), init=InitCfg(0.0, 0.0),
                  observations=replace(cfg.observations, add_noise=False))  # fmt: skip
    env = LocomotionEnv(cfg, nthread=1)
    backend = env.sim_backend
    backend.reset_envs(torch.arange(2), backend.home_qpos().repeat(2, 1), torch.zeros(2, backend.num_qvel))
    index, sign = env.mirror_maps()["critic"]
    act_index, act_sign = env.mirror_maps()["actions"]
    gen = torch.Generator().manual_seed(0)
    command = torch.tensor([0.3, 0.2, 0.5], dtype=torch.float64)
    clock = [i for i, t in enumerate(_term_names(env)) if t == "gait_phase"]
    for _ in range(30):
        env.commands[:] = torch.stack([command, command * torch.tensor([1.0, -1.0, -1.0])])
        a = 0.5 * torch.randn(1, env.num_actions, generator=gen)
        obs, *_ = env.step(torch.cat([a, a[:, act_index] * act_sign.float()]))
    critic = obs["critic"]
    image = critic[0, index] * sign
    keep = [i for i in range(critic.shape[1]) if i not in clock]
    assert (critic[0, keep] - critic[1, keep]).abs().max() > 0.1  # the two walks differ ...
    torch.testing.assert_close(critic[1, keep], image[keep], atol=atol, rtol=0)  # ... by the mirror


def _term_names(env) -> list[str]:
    spec = env.critic_spec
    return [t.name for t, size in zip(spec.terms, spec.sizes(env.num_actions)) for _ in range(size)]


def test_the_mirror_is_its_own_inverse_and_swaps_the_trots_diagonals():
    env = LocomotionEnv(replace(task_cfg("pupper_v3"), num_envs=4), nthread=1)
    obs = env.get_observations()
    twice, _ = mirror_batch(env, mirror_batch(env, obs)[0][4:])
    torch.testing.assert_close(twice["policy"][4:], obs["policy"])
    mirror = robot_mirror(env.robot, env.cfg.gait.pairs)
    assert mirror.joint_perm == (3, 4, 5, 0, 1, 2, 9, 10, 11, 6, 7, 8) and mirror.phase_shift
    # Go2's hips turn about the same x axis on both sides (angles flip), its thighs and calves about y (they don't).
    go2 = robot_mirror(load_robot("go2"))
    assert go2.joint_sign == (-1.0, 1.0, 1.0) * 4


def test_an_asymmetric_pose_or_gait_is_refused_by_name():
    pupper = load_robot("pupper_v3")
    pose = list(pupper.default_joint_pos)
    pose[0] += 0.1
    with pytest.raises(ContractError, match="robot.toml: field 'default_joint_pos'.*symmetric"):
        robot_mirror(replace(pupper, default_joint_pos=tuple(pose)))
    with pytest.raises(ContractError, match="task.toml: field 'gait.pairs'"):
        robot_mirror(pupper, [[0], [1, 2, 3]])
    assert not robot_mirror(pupper, [[0, 1], [2, 3]]).phase_shift  # a bound: the mirror keeps the pairs


def test_a_leg_that_is_not_the_mirror_of_its_partner_is_refused_by_joint(tmp_path):
    folder = shutil.copytree(load_robot("pupper_v3").folder, tmp_path / "lopsided")
    urdf = folder / "pupper_v3.urdf"
    text = urdf.read_text()
    assert '<origin xyz="0.075 0.0835 0"' in text
    urdf.write_text(text.replace('<origin xyz="0.075 0.0835 0"', '<origin xyz="0.080 0.0835 0"'))
    with pytest.raises(ContractError, match="pupper_v3.urdf: field 'joint leg_front_r_1'.*mirrored anchor"):
        robot_mirror(load_robot(folder))


def test_ppo_trains_on_the_mirrored_batch(tmp_path):
    from rsl_rl.runners import OnPolicyRunner

    cfg = preset("cpu")
    cfg = override(override(cfg, "env.num_envs", "16"), "ppo.symmetry_augmentation", "true")
    cfg = override(cfg, "ppo.mirror_loss_coeff", "0.5")
    env = LocomotionEnv(cfg.env, nthread=1)
    runner = OnPolicyRunner(env, to_rsl_rl(cfg), log_dir=str(tmp_path), device="cpu")
    assert runner.alg.symmetry.use_data_augmentation and runner.alg.symmetry.use_mirror_loss
    batches = []
    real = runner.alg.symmetry.data_augmentation_func

    def spy(**kw):
        out = real(**kw)
        batches.append((kw["obs"], out[0]))
        return out

    runner.alg.symmetry.data_augmentation_func = spy
    runner.learn(1)
    first_in, first_out = next((i, o) for i, o in batches if i is not None)
    assert first_out.batch_size[0] == 2 * first_in.batch_size[0]
