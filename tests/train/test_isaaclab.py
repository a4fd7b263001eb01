"""Isaac Lab -> trot import: an Isaac Lab run folder (tests/train/isaaclab_run.py) read into trot's layout.

The imported policy must equal the Isaac Lab policy, loaded back through rsl-rl's own runner, after reordering; and
what trot could not run the same way must be refused naming the file, the key, the value and what was expected.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import yaml
from isaaclab_run import (
    PHYSX_ORDER,
    agent_cfg,
    dump_yaml,
    env_cfg,
    isaaclab_observations,
    isaaclab_policy,
    random_states,
    write_run,
)
from tensordict import TensorDict

from trot import mapping
from trot.robots import load_robot
from trot.train.isaaclab import read_run, trot_policy
from trot.train.isaaclab_params import IsaacLabImportError, PythonObject, load_params_yaml

ROBOT = load_robot("pupper_v3")


def _trot_observation(run, states) -> np.ndarray:
    """trot's observation after the last state: trot.mapping's own functions, contract order, newest first."""
    to_contract = [PHYSX_ORDER.index(name) for name in ROBOT.joint_names]
    history = None
    for s in states:
        terms = mapping.raw_terms(
            np,
            quat_wxyz=s["quat_wxyz"],
            gyro=s["ang_vel_b"],
            joint_pos=s["joint_pos"][:, to_contract],
            joint_vel=s["joint_vel"][:, to_contract],
            default_joint_pos=np.array(ROBOT.default_joint_pos)[None],
            command=s["command"],
            last_action=s["last_action"][:, to_contract],
        )
        frame = mapping.assemble_frame(np, run.observation, terms)
        history = (
            np.tile(frame, (1, run.observation.history))
            if history is None
            else mapping.push_history(np, history, frame)
        )
    return history


# -- parity --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history_length", "history_order"), [(None, "term"), (3, "term"), (3, "time")], ids=["no_history", "term", "time"]
)
def test_trot_policy_equals_isaaclab_policy_after_reordering(tmp_path, history_length, history_order):
    frames = history_length or 1
    env = env_cfg(history_length=history_length, history_order=history_order)
    run_dir = write_run(tmp_path, env=env, obs_size=45 * frames)
    run = read_run(run_dir, ROBOT)
    reference = isaaclab_policy(run_dir, "model_150.pt", obs_size=45 * frames)
    imported = trot_policy(run)
    assert run.observation.size(12) == 45 * frames == len(run.obs_index)
    # the normalizer does real work, so its reordering is covered too
    norm = imported.obs_normalizer
    assert norm._mean.abs().max() > 1.0 and (norm._std - 1.0).abs().max() > 1.0

    # observations spread at twice the training distribution (the normalizer's statistics, in trot's layout)
    gen = torch.Generator().manual_seed(1)
    trot_obs = norm._mean + 2.0 * norm._std * torch.randn(4000, 45 * frames, generator=gen)
    isaac_obs = trot_obs[:, list(run.obs_index)]  # Isaac Lab element j is trot element obs_index[j]
    expected = reference(isaac_obs)[:, list(run.action_index)]
    with torch.inference_mode():
        got = imported(_td(trot_obs))
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def _td(obs: torch.Tensor) -> TensorDict:
    return TensorDict({"policy": obs}, batch_size=[obs.shape[0]])


@pytest.mark.parametrize(("history_length", "history_order"), [(None, "term"), (3, "term"), (3, "time")])
def test_same_robot_state_gives_both_layouts_and_the_same_actions(tmp_path, history_length, history_order):
    """Sensor readings over five steps -> Isaac Lab's observation (its manager's pipeline) and trot's (trot.mapping):
    every element lands where obs_index says, and the two policies command the same joint targets."""
    frames = history_length or 1
    env = env_cfg(history_length=history_length, history_order=history_order)
    run_dir = write_run(tmp_path, env=env, obs_size=45 * frames)
    run = read_run(run_dir, ROBOT)
    states = random_states(steps=5, batch=64)
    isaac_obs = isaaclab_observations(env, states)
    trot_obs = _trot_observation(run, states)
    np.testing.assert_allclose(trot_obs[:, list(run.obs_index)], isaac_obs, rtol=1e-12, atol=1e-12)

    isaac_actions = isaaclab_policy(run_dir, "model_150.pt", 45 * frames)(torch.tensor(isaac_obs, dtype=torch.float32))
    with torch.inference_mode():
        trot_actions = trot_policy(run)(_td(torch.tensor(trot_obs, dtype=torch.float32)))
    # joint targets: Isaac Lab's default + scale * clipped action, in its order; trot's mapping, in contract order
    isaac_targets = {name: t for name, t in zip(run.action_joint_names, isaac_actions.clip(-4, 4).T * 0.25)}
    trot_targets = mapping.action_to_target(torch, trot_actions, 0.0, run.action_scale, run.action_clip)
    for i, name in enumerate(ROBOT.joint_names):
        torch.testing.assert_close(trot_targets[:, i], isaac_targets[name], atol=1e-5, rtol=0)


def test_permutations_are_pinned_for_physx_order(tmp_path):
    run = read_run(write_run(tmp_path), ROBOT)
    # contract joint i (FR, FL, BR, BL; abduction, hip, knee) sits at this index of PhysX's breadth-first order
    assert run.action_index == (3, 7, 11, 2, 6, 10, 1, 5, 9, 0, 4, 8)
    assert run.joint_names == tuple(PHYSX_ORDER) and run.action_joint_names == tuple(PHYSX_ORDER)
    # Isaac Lab's joint_pos block (elements 9..20: BL, BR, FL, FR abduction, then hips, then knees) lands in trot's
    # joint_pos_rel block (9..20: FR, FL, BR, BL, each abduction, hip, knee)
    assert run.obs_index[9:21] == (18, 15, 12, 9, 19, 16, 13, 10, 20, 17, 14, 11)
    assert run.obs_index[:9] == tuple(range(9))  # base_ang_vel, projected_gravity, velocity_command unmoved


def test_joint_term_with_its_own_joint_order_is_mapped_by_name(tmp_path):
    env = env_cfg()
    asset_cfg = {"name": "robot", "joint_names": list(ROBOT.joint_names), "preserve_order": True}
    env["observations"]["policy"]["joint_pos"]["params"] = {"asset_cfg": asset_cfg}
    run = read_run(write_run(tmp_path, env=env), ROBOT)
    assert run.obs_index[9:21] == tuple(range(9, 21))  # this term already lists the joints in contract order
    assert run.obs_index[21:33] == (30, 27, 24, 21, 31, 28, 25, 22, 32, 29, 26, 23)  # joint_vel: PhysX order


def test_description_carries_scales_rates_and_commands(tmp_path):
    run = read_run(write_run(tmp_path), ROBOT)
    terms = [(t.name, t.scale) for t in run.observation.terms]
    assert terms == [
        ("base_ang_vel", 0.25),
        ("projected_gravity", 1.0),
        ("velocity_command", 1.0),
        ("joint_pos_rel", 1.0),
        ("joint_vel", 0.05),
        ("last_action", 1.0),
    ]
    # Isaac Lab's Unoise(-0.2, 0.2) on base_ang_vel: the uniform's std, 0.4 / sqrt(12)
    assert run.observation.terms[0].noise == pytest.approx(0.4 / 12**0.5)
    assert run.observation.history == 1 and run.obs_clip is None
    assert (run.control_dt, run.physics_dt, run.decimation) == (pytest.approx(0.02), 0.005, 4)
    assert (run.action_scale, run.action_clip) == (0.25, 4.0)
    assert run.default_joint_pos == ROBOT.default_joint_pos
    assert run.commands == {"vx": (-0.6, 0.6), "vy": (-0.4, 0.4), "yaw_rate": (-1.5, 1.5)}
    assert (run.iteration, run.task, run.checkpoint.name) == (150, "Isaac-Velocity-Flat-PupperV3", "model_150.pt")


def test_joint_order_from_env_yaml_or_the_caller_when_the_run_has_no_descriptors(tmp_path):
    recorded = read_run(
        write_run(tmp_path / "a", env=env_cfg(joint_ordering=list(PHYSX_ORDER), export_io_descriptors=False)), ROBOT
    )
    assert recorded.joint_order_source == "params/env.yaml scene.robot.joint_ordering"
    given = read_run(
        write_run(tmp_path / "b", env=env_cfg(export_io_descriptors=False)), ROBOT, joint_order=PHYSX_ORDER
    )
    assert given.joint_order_source == "read_run(joint_order=...) joint_order"
    assert recorded.action_index == given.action_index == (3, 7, 11, 2, 6, 10, 1, 5, 9, 0, 4, 8)


def test_latest_checkpoint_is_the_highest_number_not_the_last_name(tmp_path):
    run_dir = write_run(tmp_path, iteration=99)
    write_run(tmp_path, iteration=1000)  # same run folder: model_99.pt and model_1000.pt
    assert read_run(run_dir, ROBOT).checkpoint.name == "model_1000.pt"
    assert read_run(run_dir, ROBOT, checkpoint="model_99.pt").iteration == 99


# -- reading Isaac Lab's yaml safely -------------------------------------------------------------------------------


def test_isaaclab_yaml_tags_are_read_and_other_python_objects_never_built(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "env.yaml"
    path.write_text(
        "a: !!python/tuple\n- 1.0\n- 2.0\n"
        "ids: &id001 !!python/object/apply:builtins.slice\n- null\n- null\n- null\n"
        "same: *id001\n"
        f"evil: !!python/object/apply:os.system\n- touch {marker}\n"
        "cls: !!python/name:os.getcwd ''\n"
    )
    data = load_params_yaml(path)
    assert data["a"] == (1.0, 2.0) and data["ids"] == slice(None) and data["same"] is data["ids"]
    assert data["evil"] == PythonObject("python/object/apply:os.system") and not marker.exists()
    assert data["cls"] == PythonObject("python/name:os.getcwd")


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    run_dir = write_run(tmp_path)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"actor_state_dict": {}, "payload": Payload()}, run_dir / "model_151.pt")
    with pytest.raises(IsaacLabImportError, match=r"model_151\.pt: <file> = .*expected an rsl-rl checkpoint"):
        read_run(run_dir, ROBOT)
    assert not marker.exists()


# -- refusals --------------------------------------------------------------------------------------------------------


def _policy(env):
    return env["observations"]["policy"]


def _term(func, **kw):
    term = dict(_policy(env_cfg())["base_ang_vel"], func=f"isaaclab.envs.mdp.observations:{func}", scale=None)
    return dict(term, **kw)


def _swap_name(env):
    names = list(PHYSX_ORDER)
    names[0] = "FL_hip_joint"
    env["scene"]["robot"]["joint_ordering"] = names
    env["export_io_descriptors"] = False


REFUSALS = {
    # case: (edit of env.yaml, edit of agent.yaml, file, key, expected)
    "unknown observation term": (
        lambda e: _policy(e).update(height_scan=_term("height_scan")),
        None,
        "env.yaml",
        "observations.policy.height_scan.func",
        "trot's vocabulary",
    ),
    "absolute joint positions": (
        lambda e: _policy(e)["joint_pos"].update(func="isaaclab.envs.mdp.observations:joint_pos"),
        None,
        "env.yaml",
        "observations.policy.joint_pos.func",
        "trot's vocabulary",
    ),
    "base velocity in the policy": (
        lambda e: _policy(e).update(base_lin_vel=_term("base_lin_vel")),
        None,
        "env.yaml",
        "observations.policy.base_lin_vel.func",
        "critic-only",
    ),
    "joint missing from the contract": (
        _swap_name,
        None,
        "env.yaml",
        "scene.robot.joint_ordering",
        "missing ['leg_back_l_1']",
    ),
    "joint order not recorded": (
        lambda e: e.update(export_io_descriptors=False),
        None,
        "env.yaml",
        "scene.robot.joint_ordering",
        "an explicit list of joint names",
    ),
    "different control rate": (lambda e: e.update(decimation=5), None, "env.yaml", "sim.dt * decimation", "0.02 s"),
    "history lengths per term": (
        lambda e: _policy(e)["joint_vel"].update(history_length=3),
        None,
        "env.yaml",
        "observations.policy.<term>.history_length",
        "the same history length for every term",
    ),
    "history not flattened": (
        lambda e: _policy(e).update(history_length=3, flatten_history_dim=False),
        None,
        "env.yaml",
        "observations.policy.base_ang_vel.flatten_history_dim",
        "True",
    ),
    "terms kept apart": (
        lambda e: _policy(e).update(concatenate_terms=False),
        None,
        "env.yaml",
        "observations.policy.concatenate_terms/concatenate_dim",
        "one flat observation vector",
    ),
    "per-element scale": (
        lambda e: _policy(e)["base_ang_vel"].update(scale=(0.25, 0.25, 0.5)),
        None,
        "env.yaml",
        "observations.policy.base_ang_vel.scale",
        "one positive number",
    ),
    "clips trot can't express": (
        lambda e: _policy(e)["joint_vel"].update(clip=(-100.0, 100.0)),
        None,
        "env.yaml",
        "observations.policy.<term>.clip * scale",
        "one bound for every term",
    ),
    "observation modifier": (
        lambda e: _policy(e)["joint_vel"].update(modifiers=[{"func": "isaaclab.utils.modifiers:clip"}]),
        None,
        "env.yaml",
        "observations.policy.joint_vel.modifiers",
        "None",
    ),
    "joint subset": (
        lambda e: _policy(e)["joint_pos"]["params"].update(asset_cfg={"name": "robot", "joint_names": [".*_1"]}),
        None,
        "env.yaml",
        "observations.policy.joint_pos.params.asset_cfg.joint_names",
        "every joint (12)",
    ),
    "default pose differs": (
        lambda e: e["scene"]["robot"]["init_state"]["joint_pos"].update({"leg_.*_r_1": 0.3}),
        None,
        "env.yaml",
        "scene.robot.init_state.joint_pos[leg_front_r_1]",
        "0.26, the default pose",
    ),
    "default pose from the USD": (
        lambda e: e["scene"]["robot"]["init_state"]["joint_pos"].pop("leg_.*_2"),
        None,
        "env.yaml",
        "scene.robot.init_state.joint_pos",
        "exactly one regex matching 'leg_back_l_2'",
    ),
    "action scale differs": (
        lambda e: e["actions"]["joint_pos"].update(scale=0.5),
        None,
        "env.yaml",
        "actions.joint_pos.scale",
        "0.25 for every joint",
    ),
    "relative joint actions": (
        lambda e: e["actions"]["joint_pos"].update(
            class_type="isaaclab.envs.mdp.actions.joint_actions:RelativeJointPositionAction"
        ),
        None,
        "env.yaml",
        "actions.joint_pos.class_type",
        "joint-position offset from the default pose",
    ),
    "joint-target clip": (
        lambda e: e["actions"]["joint_pos"].update(clip={".*": (-1.0, 1.0)}),
        None,
        "env.yaml",
        "actions.joint_pos.clip[leg_back_l_1]",
        "each joint's soft limits",
    ),
    "gains other than the contract's": (
        lambda e: e["scene"]["robot"]["actuators"]["legs"].update(stiffness={"leg_.*_1": 5.0, "leg_.*_[23]": 20.0}),
        None,
        "env.yaml",
        "scene.robot.actuators.legs.stiffness",
        "5.0 for every joint, kp",
    ),
    "effort limit other than the contract's": (
        lambda e: e["scene"]["robot"]["actuators"]["legs"].update(effort_limit_sim=None, actuator_effort_limit=2.0),
        None,
        "env.yaml",
        "scene.robot.actuators.legs.actuator_effort_limit",
        "3.0 for every joint, torque_limit",
    ),
    "joints without an actuator": (
        lambda e: e["scene"]["robot"]["actuators"]["legs"].update(joint_names_expr=["leg_front_.*"]),
        None,
        "env.yaml",
        "scene.robot.actuators",
        "actuator groups covering ['leg_back_l_1'",
    ),
    "gait clock missing": (
        lambda e: _policy(e).update(gait_phase=dict(_term("gait_phase"), func="trot.isaaclab.mdp:gait_phase")),
        None,
        "env.yaml",
        "observations.policy.gait_phase.params.frequency_hz",
        "the gait clock in Hz",
    ),
    "unclipped policy output": (
        None,
        lambda a: a.update(clip_actions=None),
        "agent.yaml",
        "clip_actions",
        "4.0, action_clip",
    ),
    "recurrent actor": (
        None,
        lambda a: a["actor"].update(class_name="RNNModel"),
        "agent.yaml",
        "actor.class_name",
        "MLPModel",
    ),
    "state-dependent noise head": (
        None,
        lambda a: a["actor"]["distribution_cfg"].update(class_name="HeteroscedasticGaussianDistribution"),
        "agent.yaml",
        "actor.distribution_cfg.class_name",
        "deterministic action is the MLP's output",
    ),
    "two observation groups": (
        None,
        lambda a: a["obs_groups"].update(actor=["policy", "extra"]),
        "agent.yaml",
        "obs_groups.actor",
        "one observation group",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_what_trot_cannot_run_the_same_way_is_refused_by_name(tmp_path, case):
    env_edit, agent_edit, file, key, expected = REFUSALS[case]
    env, agent = env_cfg(), agent_cfg()
    for edit, cfg in ((env_edit, env), (agent_edit, agent)):
        if edit is not None:
            edit(cfg)
    run_dir = write_run(tmp_path, env=env, agent=agent_cfg())  # the checkpoint from a valid config
    dump_yaml(run_dir / "params" / "agent.yaml", agent)
    with pytest.raises(IsaacLabImportError) as err:
        read_run(run_dir, ROBOT)
    assert file in err.value.file and err.value.key == key and expected in err.value.expected, str(err.value)
    assert str(err.value).startswith(f"{err.value.file}: {key} = ")


def test_joint_order_given_that_disagrees_with_the_run_is_refused(tmp_path):
    run_dir = write_run(tmp_path)
    leg_by_leg = sorted(PHYSX_ORDER)
    with pytest.raises(
        IsaacLabImportError,
        match=r"read_run\(joint_order=\.\.\.\): joint_order = .*expected the "
        r"order in .*io_descriptors/IO_descriptors\.yaml",
    ):
        read_run(run_dir, ROBOT, joint_order=leg_by_leg)


def test_checkpoint_for_another_observation_size_is_refused(tmp_path):
    run_dir = write_run(tmp_path, obs_size=48)  # trained with base_lin_vel, yaml edited afterwards
    with pytest.raises(
        IsaacLabImportError,
        match=r"model_150\.pt: actor_state_dict\['mlp\.0\.weight'\] inputs = 48; "
        r"expected 45",
    ):
        read_run(run_dir, ROBOT)


def test_missing_params_file_is_refused(tmp_path):
    run_dir = write_run(tmp_path)
    (run_dir / "params" / "agent.yaml").unlink()
    with pytest.raises(IsaacLabImportError, match=r"params/agent\.yaml: <file> = 'missing'"):
        read_run(run_dir, ROBOT)


def test_fixture_yaml_is_what_pyyaml_default_dumper_writes(tmp_path):
    """The fixture relies on PyYAML's own tags, as Isaac Lab's dump does: no safe_load can read it."""
    text = (write_run(tmp_path) / "params" / "env.yaml").read_text()
    assert "!!python/tuple" in text and "!!python/object/apply:builtins.slice" in text and "*id001" in text
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load(text)
