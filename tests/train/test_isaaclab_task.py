"""trot -> Isaac Lab: the task generated from robots/pupper_v3/ (isaaclab_trot/task.py), checked as plain data.

Its values must be the contract's (robot.toml, the URDF) and the robot's task config's (task.toml over the shared
defaults), and a run of it must import back with the contract's joint order. The Isaac Lab config classes built from
it are checked only where Isaac Lab is importable (Python 3.12 with `trot[isaaclab]`).
"""

from __future__ import annotations

import ast
import math
import os
import shutil
from pathlib import Path

import pytest
from isaaclab_run import env_cfg_of_task, write_run

import trot.isaaclab
from trot.isaaclab.task import isaaclab_task, task_id
from trot.randomization import TERMS
from trot.robots import ContractError, load_robot
from trot.sim.mujoco_model import build_model
from trot.sim.mujoco_model import standing_height as mujoco_standing_height
from trot.sim.task import task_cfg
from trot.train.isaaclab import read_run
from trot.train.isaaclab_import import import_run

ROBOT = load_robot("pupper_v3")
TASK = isaaclab_task("pupper_v3")
CFG = task_cfg("pupper_v3")


def test_articulation_is_the_contract():
    art, a = TASK.articulation, TASK.articulation.actuator
    assert TASK.task_id == task_id("pupper_v3") == "Trot-Velocity-Flat-PupperV3"
    assert art.urdf_path == str(ROBOT.urdf_path) and art.joint_ordering == ROBOT.joint_names
    assert art.init_joint_pos == dict(zip(ROBOT.joint_names, ROBOT.default_joint_pos))
    assert a.joint_names_expr == ROBOT.joint_names
    # robot.toml: kp 5, kd 0.25, 3 N·m, 30 rad/s, armature 0.0016, damping 0.01, frictionloss 0.01
    assert (a.stiffness, a.damping, a.actuator_effort_limit, a.joint_effort_limit) == (5.0, 0.25, 3.0, 3.0)
    assert (a.actuator_velocity_limit, a.joint_velocity_limit, a.armature) == (30.0, 30.0, 0.0016)
    assert (a.friction, a.viscous_friction) == (0.01, 0.01)
    # task.toml: actuation_latency [0, 0.02] s in whole physics steps of 4 ms
    assert (a.min_delay, a.max_delay) == (0, 5)
    assert (TASK.physics_dt, TASK.decimation) == (0.004, 5)


def test_standing_height_from_the_urdf_equals_mujocos():
    height = TASK.articulation.init_pos[2]
    assert height == pytest.approx(mujoco_standing_height(build_model(ROBOT), ROBOT), abs=1e-9)
    assert 0.15 < height < 0.2


def test_actions_are_the_contracts():
    assert TASK.action.joint_names == ROBOT.joint_names and TASK.action.scale == 0.25
    assert TASK.runner["clip_actions"] == 4.0
    # target clip at the soft limits: the URDF's leg_front_r_1 range less hardware.soft_limit_margin 0.1 rad
    lower, upper = ROBOT.joint_limits.lower[0], ROBOT.joint_limits.upper[0]
    assert TASK.action.target_clip["leg_front_r_1"] == pytest.approx((lower + 0.1, upper - 0.1))
    assert list(TASK.action.target_clip) == list(ROBOT.joint_names)


def test_observation_groups_are_trots_terms_scales_and_noise():
    policy = TASK.policy
    assert [(t.name, t.scale, t.noise_std) for t in policy.terms] == [
        (t.name, t.scale, t.noise) for t in CFG.observations.policy_terms
    ]
    assert [t.name for t in policy.terms][-1] == "gait_phase" and policy.terms[-1].params == {"frequency_hz": 2.5}
    assert (policy.history_length, policy.history_order, policy.enable_corruption) == (3, "time", True)
    clips = {t.name: t.clip for t in policy.terms}
    assert clips["joint_vel"] == (-2000.0, 2000.0) and clips["base_ang_vel"] == (-400.0, 400.0)  # ±100 / scale
    # observation_latency [0, 0.02] s: 0 or 1 control step of 20 ms, on the IMU terms only
    assert {t.name: t.delay_lag for t in policy.terms if t.delay_lag != (0, 0)} == {
        "base_ang_vel": (0, 1),
        "projected_gravity": (0, 1),
    }
    critic = TASK.critic
    assert [(t.name, t.scale) for t in critic.terms] == [(t.name, t.scale) for t in CFG.observations.critic_terms]
    assert critic.terms[0].name == "base_lin_vel" and all(t.noise_std == 0 for t in critic.terms)
    assert (critic.history_length, critic.enable_corruption) == (None, False)


def test_commands_are_the_task_tomls():
    assert TASK.commands["ranges"] == {"lin_vel_x": (-0.6, 0.6), "lin_vel_y": (-0.4, 0.4), "ang_vel_z": (-1.5, 1.5)}
    assert TASK.commands["resampling_time_range"] == (10.0, 10.0) and TASK.commands["heading_command"] is False


def test_every_varying_randomization_term_is_drawn_once_with_trots_range():
    events = {e.name: e for e in TASK.events}
    drawn = [t for e in TASK.events for t in e.trot_terms if CFG.randomization.varies(t)] + list(TASK.latency_terms)
    assert sorted(drawn) == sorted(n for n in TERMS if CFG.randomization.varies(n))
    assert events["friction"].params["static_friction_range"] == (0.6, 1.4)
    assert events["link_mass_scale"].params["mass_distribution_params"] == (0.7, 1.3)
    assert events["link_mass_scale"].mode == "startup"  # trot's schedule for the term
    assert events["payload_mass"].params["mass_range"] == (0.0, 0.4)  # kg
    assert events["base_com"].params["com_range"] == {"x": (-0.03, 0.03), "y": (-0.01, 0.01), "z": (-0.02, 0.02)}
    actuation = events["actuation"].params
    assert (actuation["kp_scale_range"], actuation["kd_scale_range"]) == ((0.75, 1.25), (0.5, 2.0))
    assert actuation["motor_strength_range"] == (0.8, 1.2)
    assert events["joint_zero_offset"].params["offset_range"] == (-0.02, 0.02)  # rad
    push = events["push_robot"]
    assert (push.params["speed_range"], push.mode, push.interval_range_s) == ((0.0, 0.2), "interval", (0.5, 1.5))
    assert events["reset_robot_joints"].params["position_range"] == (-0.1, 0.1)


def test_rewards_have_trots_weights_and_params():
    rewards = {r.name: r for r in TASK.rewards}
    assert {n: r.weight for n, r in rewards.items()} == {n: t.weight for n, t in CFG.rewards.items() if t.weight}
    # task.toml: sigma 0.1 m²/s² -> Isaac Lab's std = sqrt(0.1) m/s
    assert rewards["track_lin_vel_xy"].params["std"] == pytest.approx(math.sqrt(0.1))
    assert rewards["track_lin_vel_xy"].func == "isaaclab.envs.mdp.rewards:track_lin_vel_xy_exp"
    assert rewards["feet_air_time"].params["target_s"] == 0.2
    assert rewards["gait_contact"].params["pairs"] == ((0, 3), (1, 2))  # FR+BL, FL+BR
    assert rewards["joint_limits"].params["lower"] == ROBOT.soft_joint_limits.lower


def test_runner_is_trots_gpu_preset():
    r = TASK.runner
    assert r["actor"]["hidden_dims"] == [512, 256, 128] and r["algorithm"]["entropy_coef"] == 0.005
    assert r["obs_groups"] == {"actor": ["policy"], "critic": ["critic"]} and r["experiment_name"] == "pupper_v3_flat"
    assert TASK.num_envs == 4096


def test_a_run_of_the_task_imports_with_the_contracts_joint_order(tmp_path):
    run_dir = write_run(tmp_path, env=env_cfg_of_task(TASK), obs_size=141)
    run = read_run(run_dir, ROBOT)
    assert run.action_index == tuple(range(12)) and run.joint_order_source.endswith("scene.robot.joint_ordering")
    frame = 47
    # Isaac Lab's frames oldest first, trot's newest first; inside a frame, nothing moves
    assert run.obs_index == tuple((2 - i // frame) * frame + i % frame for i in range(3 * frame))
    _, meta = import_run(run_dir, tmp_path / "b.onnx")
    assert (meta.observation.clip, meta.observation.gait_frequency_hz, meta.observation.history) == (100.0, 2.5, 3)


def test_terms_with_different_schedules_for_one_quantity_are_refused(tmp_path):
    folder = tmp_path / "pupper_v3"
    shutil.copytree(ROBOT.folder, folder)
    toml = folder / "task.toml"
    old = "com_offset_y = { range = [-0.01, 0.01] }"
    toml.write_text(toml.read_text().replace(old, 'com_offset_y = { range = [-0.01, 0.01], schedule = "startup" }'))
    with pytest.raises(ContractError, match=r"randomization\.terms\.com_offset_x\.schedule.*one schedule"):
        isaaclab_task(str(folder))


def _signature(tree: ast.Module, name: str) -> list[str]:
    """The keyword params a term of isaaclab_trot/mdp.py takes (a function, or a term class's __call__)."""
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            if isinstance(node, ast.ClassDef):
                node = next(b for b in node.body if isinstance(b, ast.FunctionDef) and b.name == "__call__")
            return [a.arg for a in node.args.args if a.arg not in ("self", "env", "env_ids")]
    raise AssertionError(f"isaaclab_trot/mdp.py has no term {name}")


def test_trots_own_terms_get_exactly_the_params_they_take():
    """Isaac Lab calls a term with its params as keywords: each of trot's terms must be given exactly its own."""
    tree = ast.parse((Path(trot.isaaclab.__file__).parent / "mdp.py").read_text())
    specs = [*TASK.events, *TASK.rewards, *TASK.policy.terms]
    ours = [s for s in specs if s.func.startswith("trot.isaaclab.mdp:")]
    assert len(ours) == 11  # gait_phase, 4 events, 6 rewards
    for spec in ours:
        assert sorted(spec.params) == sorted(_signature(tree, spec.func.split(":")[1])), spec.name


def test_isaaclab_config_classes_build_from_the_task():
    pytest.importorskip("isaaclab", reason="Isaac Lab 3.0 needs Python 3.12 and `pip install trot[isaaclab]`")
    from trot.isaaclab.env_cfg import env_cfg, runner_cfg

    cfg, runner = env_cfg("pupper_v3"), runner_cfg("pupper_v3")
    assert cfg.scene.robot.joint_ordering == list(ROBOT.joint_names)
    assert cfg.scene.robot.actuators["legs"].stiffness == 5.0 and cfg.sim.dt == 0.004 and cfg.decimation == 5
    assert list(vars(cfg.observations.policy))[-7:] == [t.name for t in TASK.policy.terms]
    assert runner.clip_actions == 4.0 and runner.actor.hidden_dims == [512, 256, 128]


def _isaaclab_source():
    """An unpacked isaaclab 3.0.0 wheel (`pip download --no-deps --python-version 3.12 --only-binary=:all:
    isaaclab==3.0.0`, then unzip), named by ISAACLAB_SRC: Isaac Lab's source read as text, on any Python."""
    src = os.environ.get("ISAACLAB_SRC")
    if not src or not (Path(src) / "isaaclab" / "envs").is_dir():
        pytest.skip("set ISAACLAB_SRC to an unpacked isaaclab-3.0.0 wheel to check names against Isaac Lab's source")
    return Path(src)


def _classes(src: Path) -> dict[str, list[tuple[set, list]]]:
    """Every class of the wheel by its own name: (fields, base names) of each definition."""
    out = {}

    def walk(body):
        for node in body:
            if isinstance(node, ast.ClassDef):
                fields = {b.target.id for b in node.body if isinstance(b, ast.AnnAssign) and hasattr(b.target, "id")}
                fields |= {t.id for b in node.body if isinstance(b, ast.Assign) for t in b.targets if hasattr(t, "id")}
                out.setdefault(node.name, []).append((fields, [ast.unparse(b).split(".")[-1] for b in node.bases]))
                walk(node.body)

    for path in src.rglob("*.py"):
        if "test" not in path.parts and "source" not in path.parts:
            walk(ast.parse(path.read_text()).body)
    return out


def _fields(classes: dict, name: str, seen: set) -> set:
    if name in seen:
        return set()
    seen.add(name)
    found = set()
    for fields, bases in classes.get(name, []):
        found |= fields
        for base in bases:
            found |= _fields(classes, base, seen)
    return found


def test_config_classes_and_fields_used_exist_in_isaaclab_3_source():
    """Each Isaac Lab config class env_cfg.py builds takes every keyword it is given (inherited fields included)."""
    src = _isaaclab_source()
    classes = _classes(src)
    tree = ast.parse((Path(trot.isaaclab.__file__).parent / "env_cfg.py").read_text())
    aliases = {a.asname: a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names if a.asname}
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    checked = 0
    for call in calls:
        name = ast.unparse(call.func).split(".")[-1]
        name = aliases.get(name, name)
        if not (name.endswith("Cfg") or name == "Ranges"):
            continue
        assert name in classes, f"env_cfg.py builds {name}, which isaaclab 3.0.0 does not define"
        unknown = [k.arg for k in call.keywords if k.arg and k.arg not in _fields(classes, name, set())]
        assert not unknown, f"{name} has no field(s) {unknown}"
        checked += 1
    assert checked >= 15


def test_isaaclab_terms_get_params_their_functions_take():
    """Each Isaac Lab term the task names exists in the 3.0 source and takes the params given, its required ones
    included."""
    src = _isaaclab_source()
    specs = [*TASK.events, *TASK.rewards, *TASK.terminations, *TASK.policy.terms, *TASK.critic.terms]
    for spec in [s for s in specs if not s.func.startswith("trot.")]:
        module, name = spec.func.split(":")
        tree = ast.parse((src / (module.replace(".", "/") + ".py")).read_text())
        node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name), None)
        assert node is not None, f"{spec.func} is not in isaaclab 3.0.0"
        if isinstance(node, ast.ClassDef):
            node = next(b for b in node.body if isinstance(b, ast.FunctionDef) and b.name == "__call__")
        args = node.args.args
        names = {a.arg for a in args}
        required = {a.arg for a in args[: len(args) - len(node.args.defaults)]} - {"self", "env", "env_ids"}
        assert set(spec.params) <= names and required <= set(spec.params), (spec.name, sorted(names))
