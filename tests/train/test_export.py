"""`trot export`: the ONNX bundle equals the torch policy, carries the robot contract once, in the typed
format-4 schema with its integrity hashes, bound to the robot model it was trained on; older bundles are refused."""

import hashlib
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from trot.bundle import FORMAT_VERSION, Contract, model_sections, read_bundle_meta
from trot.deploy.bundle import BundleError, check_contract, load_bundle
from trot.robots import MODEL_NOTICES, load_robot
from trot.train.checkpoint import CheckpointError
from trot.train.evaluate import load_policy

ROBOT = load_robot("pupper_v3")
SHIPPED = ROBOT.folder / "policies" / "walk.onnx"
# The Pupper policies shipped until 2026-11-30 (format 3, upgraded from format 1) and until 2026-12-07 (format 3),
# both trained on trot's earlier Pupper model, whose joint roles and directions were not the robot's.
WRONG_BODY = [Path(__file__).parents[1] / "data" / name for name in ("walk_2026-11-23.onnx", "walk_2026-12-01.onnx")]


def test_onnx_matches_torch_policy_on_random_observations(tiny_checkpoint, tiny_bundle):
    policy, cfg, _ = load_policy(tiny_checkpoint)
    bundle = load_bundle(tiny_bundle)
    gen = torch.Generator().manual_seed(0)
    obs = 2.0 * torch.randn(2000, bundle.obs_size, generator=gen)
    # Make the normalizer do real work, so the test covers it being in the graph.
    assert not torch.allclose(policy.obs_normalizer._mean, torch.zeros_like(policy.obs_normalizer._mean))
    with torch.inference_mode():
        expected = policy.as_onnx(verbose=False).eval()(obs).numpy()
    got = bundle.session().run(["actions"], {"obs": obs.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_contract_fields_are_exactly_the_robots_and_stored_once(tiny_bundle):
    assert [f.name for f in fields(Contract)] == list(ROBOT.contract())
    assert Contract.from_robot(ROBOT).to_dict() == ROBOT.contract()
    meta = read_bundle_meta(tiny_bundle)
    assert meta.contract == Contract.from_robot(ROBOT) and meta.contract_sha256 == ROBOT.contract_sha256()
    doc = json.loads(meta.to_json())
    assert doc["format_version"] == FORMAT_VERSION == 4
    assert doc["torque_limit"] == [3.0] * 12 and doc["velocity_limit"] == [30.0] * 12  # per joint
    assert doc["robot"] == {"name": "pupper_v3", "contract_sha256": ROBOT.contract_sha256()}  # no second copy
    for key, value in ROBOT.contract().items():
        if key != "name":
            assert doc[key] == value, key
    assert meta.observation.size == load_bundle(tiny_bundle).obs_size == 141
    assert meta.training.run and meta.training.iterations == 1


def test_graph_hash_equals_the_onnx_packages_serialization_without_the_metadata(tiny_bundle):
    model = onnx.load(str(tiny_bundle))
    (entry,) = [p for p in model.metadata_props if p.key == "trot"]
    text = entry.value
    model.metadata_props.remove(entry)
    graph, parsed_text = model_sections(tiny_bundle.read_bytes())
    assert graph == hashlib.sha256(model.SerializeToString()).hexdigest()
    assert parsed_text == text and json.loads(text)["integrity"]["graph_sha256"] == graph


def test_bundle_for_another_contract_is_refused_naming_the_field(tiny_bundle, tmp_path):
    import shutil

    folder = tmp_path / "pupper_stiff"
    shutil.copytree(ROBOT.folder, folder, ignore=shutil.ignore_patterns("policies"))
    toml = folder / "robot.toml"
    toml.write_text(toml.read_text().replace("kp = 5.0", "kp = 7.5"))
    with pytest.raises(BundleError, match=r"differing fields: kp: bundle 5\.0, robot 7\.5"):
        check_contract(load_bundle(tiny_bundle), load_robot(folder))


def rewrite_metadata(src, dst, change):
    """Edit the `trot` entry's JSON by hand, leaving every hash as it was (what a careless edit does)."""
    model = onnx.load(str(src))
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    for key, value in change(props).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(dst))
    return dst


def test_bundle_without_metadata_is_refused(tiny_bundle, tmp_path):
    bad = rewrite_metadata(tiny_bundle, tmp_path / "bare.onnx", lambda p: {})
    with pytest.raises(BundleError, match=r"bare\.onnx: no 'trot' entry in metadata_props"):
        load_bundle(bad)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("kp", None, "metadata field 'kp' is missing; expected a positive number"),
        ("control_dt", -0.02, "metadata field 'control_dt' = -0.02; expected a positive number of seconds"),
        ("format_version", 99, "metadata field 'format_version' = 99; expected the integer 4"),
        ("format_version", 3, "format_version 3 is no longer read: format 4 binds a policy to the robot model"),
        ("torque_limit", 3.0, r"metadata field 'torque_limit' = 3\.0; expected a list of 12 numbers, one per joint"),
        ("velocity_limit", [30.0] * 11 + [0.0], "'velocity_limit' = .*; expected a list of 12 positive numbers"),
        ("default_joint_pos", [0.0] * 11, "'default_joint_pos' has 11 values; expected 12, one per joint"),
        ("robot_contract", {}, r"metadata fields \['robot_contract'\] are not part of format 4"),
        ("model_sha256", "0" * 64, "'robot_model' hashes to .*, not to the model_sha256 000000000000…: the model was "
                                   "edited"),
        ("commands", {"vx": [1, -1], "vy": [0, 0], "yaw_rate": [0, 0]}, r"'commands.vx' = \[1, -1\]; expected"),
        ("kp", 9.5, "metadata field 'kp' changed since export"),
    ],
)
def test_malformed_or_edited_metadata_is_refused_naming_the_field(tiny_bundle, tmp_path, field, value, message):
    def change(props):
        meta = json.loads(props["trot"])
        if value is None:
            del meta[field]
        else:
            meta[field] = value
        return {"trot": json.dumps(meta)}

    bad = rewrite_metadata(tiny_bundle, tmp_path / "bad.onnx", change)
    with pytest.raises(BundleError, match=message):
        load_bundle(bad)


def test_not_json_metadata_is_refused(tiny_bundle, tmp_path):
    bad = rewrite_metadata(tiny_bundle, tmp_path / "notjson.onnx", lambda p: {"trot": "{oops"})
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bad)


def test_export_and_inspect_cli(tiny_checkpoint, tmp_path):
    out = tmp_path / "walk.onnx"
    run = subprocess.run([sys.executable, "-m", "trot.cli", "export", str(tiny_checkpoint), "-o", str(out)],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    shown = subprocess.run([sys.executable, "-m", "trot.cli", "inspect", str(out)], capture_output=True, text=True)
    assert shown.returncode == 0
    assert "pupper_v3" in shown.stdout and "joint_pos_rel" in shown.stdout and "newest_first" in shown.stdout
    assert f"graph sha256 {read_bundle_meta(out).integrity.graph_sha256}" in shown.stdout
    missing = subprocess.run([sys.executable, "-m", "trot.cli", "inspect", str(tmp_path / "nope.onnx")],
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode != 0 and "nope.onnx: no such bundle file" in missing.stderr


# ---- a policy runs only on the body it was trained on ----------------------------------------------------


def other_body(tmp_path, old: str, new: str):
    """A copy of the Pupper folder whose URDF differs in one place (the contract otherwise equal)."""
    import shutil

    folder = tmp_path / "pupper_other_body"
    shutil.copytree(ROBOT.folder, folder, ignore=shutil.ignore_patterns("policies"))
    urdf = folder / "pupper_v3.urdf"
    assert old in urdf.read_text(), "test setup"
    urdf.write_text(urdf.read_text().replace(old, new, 1))
    return load_robot(folder)


def test_a_bundle_for_another_body_is_refused_naming_both_digests_and_what_differs(tiny_bundle, tmp_path):
    moved = other_body(tmp_path, '<origin xyz="0.075 -0.0835 0" rpy="1.570801 0 0"/>',
                       '<origin xyz="0.075 -0.0835 0" rpy="0 0 0"/>')  # front-right hip flexion turned into abduction
    assert moved.contract() | {"model_sha256": ""} == ROBOT.contract() | {"model_sha256": ""}
    with pytest.raises(BundleError) as err:
        check_contract(load_bundle(tiny_bundle), moved)
    message = str(err.value)
    assert f"robot model {ROBOT.model_sha256()[:12]} in the bundle, {moved.model_sha256()[:12]} here" in message
    assert "what differs: joints.leg_front_r_1.rpy: trained [1.570801, 0.0, 0.0], here [0.0, 0.0, 0.0]." in message
    assert MODEL_NOTICES["pupper_v3"] in message
    heavier = other_body(tmp_path / "b", '<mass value="1.506"/>', '<mass value="1.706"/>')
    with pytest.raises(BundleError, match=r"what differs: links\.base_link\.mass: trained 1\.506, here 1\.706\."):
        check_contract(load_bundle(tiny_bundle), heavier)


def test_a_visual_change_keeps_the_body(tiny_bundle, tmp_path):
    restyled = other_body(tmp_path, '<cylinder radius="0.012" length="0.08445"/>',
                          '<cylinder radius="0.02" length="0.08445"/>')  # fmt: skip
    assert restyled.model_sha256() == ROBOT.model_sha256()
    assert check_contract(load_bundle(tiny_bundle), restyled) == Contract.from_robot(ROBOT)


def test_a_checkpoint_trained_on_another_body_is_not_exported(tiny_checkpoint, tmp_path):
    """Export and play load a checkpoint against the robot here: a run on another body is refused, naming it."""
    import torch

    ckpt = torch.load(tiny_checkpoint, weights_only=False)
    ckpt["trot"]["robot_model"]["joints"]["leg_front_r_3"]["axis"] = [0.0, 1.0, 0.0]
    ckpt["trot"]["robot"]["contract_sha256"] = "0" * 64
    old = tmp_path / "model_0.pt"
    torch.save(ckpt, old)
    with pytest.raises(CheckpointError, match=r"the robot model differs: joints\.leg_front_r_3\.axis: trained "
                                              r"\[0\.0, 1\.0, 0\.0\], here \[0\.0, 0\.0, 1\.0\]"):  # fmt: skip
        load_policy(old)
    del ckpt["trot"]["robot_model"]
    torch.save(ckpt, old)
    run = subprocess.run([sys.executable, "-m", "trot.cli", "export", str(old), "-o", str(tmp_path / "x.onnx")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode != 0 and not (tmp_path / "x.onnx").exists()
    assert "the run records no robot model (it predates trot's model digests)" in run.stderr
    assert "trot's Pupper v3 model was corrected on 2026-12-07" in run.stderr


@pytest.mark.parametrize("old", WRONG_BODY, ids=lambda p: p.name)
def test_the_policies_trained_on_the_old_pupper_model_are_refused_saying_what_to_run(old):
    """Every loader (deploy, flash, gate, bench, emulator host) reads a bundle through load_bundle."""
    with pytest.raises(BundleError) as err:
        load_bundle(old)
    assert str(err.value) == (
        f"{old}: metadata format_version 3 is no longer read: format 4 binds a policy to the robot model it was "
        "trained on (the contract's model_sha256 and the robot_model field), and an older bundle cannot say which body "
        f"that was. Robot 'pupper_v3': {MODEL_NOTICES['pupper_v3']}"
    )
    shown = subprocess.run([sys.executable, "-m", "trot.cli", "deploy", "--bundle", str(old), "--transport", "serial",
                            "--port", "/dev/null"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shown.returncode != 0 and "must not run on one: use the shipped robots/pupper_v3/policies/walk.onnx" in (
        shown.stderr + shown.stdout
    )


def test_the_shipped_policy_is_current_and_fits_the_robot():
    """walk.onnx loads through deploy's checks (integrity hashes) at the current format, on the robot's contract."""
    bundle = load_bundle(SHIPPED)
    props = {p.key: p.value for p in onnx.load(str(SHIPPED)).metadata_props}
    assert json.loads(props["trot"])["format_version"] == FORMAT_VERSION
    assert check_contract(bundle, ROBOT) == Contract.from_robot(ROBOT)
