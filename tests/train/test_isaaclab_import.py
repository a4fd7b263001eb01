"""`trot import-isaaclab`: an Isaac Lab run (tests/train/isaaclab_run.py) written as a trot bundle.

The bundle must load like any other (load_bundle verifies its schema and hashes), act like the Isaac Lab policy after
reordering, carry the contract and the run's provenance, run in the gate, and not exist at all when the run is refused.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from isaaclab_run import _obs_term, env_cfg, isaaclab_policy, write_run

from trot.cli import main
from trot.deploy.bundle import load_bundle
from trot.hil.gate.run import run_gate
from trot.robots import load_robot
from trot.train.isaaclab import IsaacLabImportError
from trot.train.isaaclab_import import import_run

ROBOT = load_robot("pupper_v3")


def _imported(tmp_path, env=None, obs_size=45):
    run_dir = write_run(tmp_path, env=env, obs_size=obs_size)
    out = tmp_path / "imported.onnx"
    run, meta = import_run(run_dir, out)
    return run_dir, run, out


def test_bundle_actions_equal_the_isaaclab_policy_after_reordering(tmp_path):
    run_dir, run, out = _imported(tmp_path)
    bundle = load_bundle(out)  # schema, integrity hashes, onnxruntime session
    assert bundle.obs_size == 45 and bundle.num_joints == 12
    gen = torch.Generator().manual_seed(3)
    # spread around the normalizer's statistics (Isaac Lab layout), so every input element matters
    ckpt = torch.load(run.checkpoint, weights_only=True)["actor_state_dict"]
    isaac_obs = ckpt["obs_normalizer._mean"] + 2.0 * ckpt["obs_normalizer._std"] * torch.randn(2000, 45, generator=gen)
    expected = isaaclab_policy(run_dir, "model_150.pt")(isaac_obs)[:, list(run.action_index)]
    trot_obs = torch.empty_like(isaac_obs)
    trot_obs[:, list(run.obs_index)] = isaac_obs  # Isaac Lab element j is trot element obs_index[j]
    got = bundle.session().run(["actions"], {"obs": trot_obs.numpy()})[0]
    assert expected.abs().max() > 1.0
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5, rtol=0)


def test_bundle_carries_the_contract_observation_and_provenance(tmp_path):
    _, _, out = _imported(tmp_path)
    meta = load_bundle(out).meta
    assert meta.contract.sha256() == ROBOT.contract_sha256()
    assert (meta.contract.physics_dt, meta.contract.control_dt) == (0.004, 0.02)  # the contract's, not sim.dt 0.005
    terms = [(t.name, t.size, t.scale) for t in meta.observation.terms]
    assert terms == [
        ("base_ang_vel", 3, 0.25),
        ("projected_gravity", 3, 1.0),
        ("velocity_command", 3, 1.0),
        ("joint_pos_rel", 12, 1.0),
        ("joint_vel", 12, 0.05),
        ("last_action", 12, 1.0),
    ]
    # Isaac Lab clipped nothing: the bound is trot's task clip for the Pupper
    assert (meta.observation.history, meta.observation.clip, meta.observation.order) == (1, 100.0, "newest_first")
    assert (meta.commands.vx, meta.commands.vy, meta.commands.yaw_rate) == ((-0.6, 0.6), (-0.4, 0.4), (-1.5, 1.5))
    t = meta.training
    assert t.run == "isaaclab:pupper_v3_flat/2026-05-04_10-11-12"
    assert (t.iterations, t.env_steps) == (151, 151 * 24 * 4096)  # model_150.pt: iterations 0..150, 24 steps x 4096
    assert (t.created, t.task) == ("2026-05-04T10:11:12+00:00", "Isaac-Velocity-Flat-PupperV3")


def test_isaaclab_clip_becomes_the_bundle_clip(tmp_path):
    env = env_cfg()
    for term in env["observations"]["policy"].values():
        if isinstance(term, dict):  # clip before scale in Isaac Lab: (-5/scale, 5/scale) is ±5 after scaling
            scale = term["scale"] or 1.0
            term["clip"] = (-5.0 / scale, 5.0 / scale)
    _, _, out = _imported(tmp_path, env=env)
    assert load_bundle(out).meta.observation.clip == 5.0


def test_gait_phase_term_of_trots_isaaclab_task_carries_its_clock(tmp_path):
    env = env_cfg()
    group = env["observations"]["policy"]
    gait = _obs_term("gait_phase", params={"frequency_hz": 2.5})
    group["gait_phase"] = dict(gait, func="trot.isaaclab.mdp:gait_phase")
    _, run, out = _imported(tmp_path, env=env, obs_size=47)
    obs = load_bundle(out).meta.observation
    assert obs.terms[-1].name == "gait_phase" and obs.gait_frequency_hz == 2.5 and obs.size == 47
    assert run.obs_index[45:] == (45, 46)


def test_refused_run_writes_nothing_and_keeps_an_existing_bundle(tmp_path):
    env = env_cfg()
    env["decimation"] = 5  # 25 ms control period: not the contract's 20 ms
    run_dir = write_run(tmp_path, env=env)
    out = tmp_path / "policy.onnx"
    with pytest.raises(IsaacLabImportError, match=r"sim\.dt \* decimation"):
        import_run(run_dir, out)
    assert not out.exists()
    out.write_bytes(b"an earlier bundle")
    with pytest.raises(IsaacLabImportError):
        import_run(run_dir, out)
    assert out.read_bytes() == b"an earlier bundle" and sorted(p.name for p in tmp_path.iterdir()) == [
        "logs",
        "policy.onnx",
    ]


def test_cli_imports_a_checkpoint_by_number_and_names_a_refusal(tmp_path, capsys):
    run_dir = write_run(tmp_path)
    out = tmp_path / "b.onnx"
    assert main(["import-isaaclab", str(run_dir), "--checkpoint", "150", "-o", str(out)]) == 0
    assert "151 iterations" in capsys.readouterr().out and load_bundle(out).meta.training.iterations == 151
    with pytest.raises(SystemExit, match=r"trot import-isaaclab: .*model_7\.pt: <file> = 'missing'"):
        main(["import-isaaclab", str(run_dir), "--checkpoint", "7", "-o", str(tmp_path / "c.onnx")])
    assert not (tmp_path / "c.onnx").exists()


def test_imported_bundle_runs_in_the_gate(tmp_path):
    """Random weights won't walk; the cell must run through the deploy runtime in PyBullet and be judged."""
    _, _, out = _imported(tmp_path)
    gate = run_gate(load_bundle(out), commands=["forward_0.2"], perturbations=["nominal"], seconds=1.0, jobs=1)
    (cell,) = gate.cells
    assert (cell.engine, cell.command, cell.perturbation) == ("pybullet", "forward_0.2", "nominal")
    assert cell.peak_torque > 0.5  # the policy drove the motors
    assert not gate.passed and cell.failures and (not cell.fell or cell.failures[0].startswith("fell at"))
