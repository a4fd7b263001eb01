"""`trot export`: the ONNX bundle equals the torch policy, carries the robot contract once, in the typed
format-3 schema with its integrity hashes; `--upgrade` turns a format-1 or -2 bundle into format 3 untouched."""

import hashlib
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from trot.bundle import FORMAT_VERSION, Contract, field_hashes, model_sections, read_bundle_meta
from trot.deploy.bundle import BundleError, check_contract, load_bundle
from trot.robots import contract_sha256, load_robot
from trot.train.evaluate import load_policy
from trot.train.export import upgrade_bundle

ROBOT = load_robot("pupper_v3")
SHIPPED = ROBOT.folder / "policies" / "walk.onnx"
# The policy shipped until 2026-11-30, kept for the format-upgrade test: trained as format 1, upgraded twice.
UPGRADED = Path(__file__).parents[1] / "data" / "walk_2026-11-23.onnx"


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
    assert doc["format_version"] == FORMAT_VERSION == 3
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
        ("format_version", 99, "metadata field 'format_version' = 99; expected the integer 3"),
        ("format_version", 1, "format_version 1 is no longer read .*`trot export --upgrade OLD.onnx -o NEW.onnx`"),
        ("format_version", 2, "format_version 2 is no longer read .*torque_limit and velocity_limit are lists"),
        ("torque_limit", 3.0, r"metadata field 'torque_limit' = 3\.0; expected a list of 12 numbers, one per joint"),
        ("velocity_limit", [30.0] * 11 + [0.0], "'velocity_limit' = .*; expected a list of 12 positive numbers"),
        ("default_joint_pos", [0.0] * 11, "'default_joint_pos' has 11 values; expected 12, one per joint"),
        ("robot_contract", {}, r"metadata fields \['robot_contract'\] are not part of format 3"),
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


# ---- upgrading formats 1 and 2 to format 3 ----------------------------------------------------------


def scalar_limits(doc: dict) -> dict:
    """Format 1 and 2 held one torque and one velocity limit for every joint."""
    out = dict(doc)
    for key in ("torque_limit", "velocity_limit"):
        if key in out:
            assert len(set(out[key])) == 1, "test setup: an older format can only hold a uniform limit"
            out[key] = out[key][0]
    return out


def to_format1(text: str) -> str:
    """Format-3 metadata as trot wrote it before format 2: the contract stored twice, no integrity hashes."""
    meta = scalar_limits(json.loads(text))
    contract = {k: meta[k] for k in ROBOT.contract() if k != "name"}
    for key in ("joint_lower", "joint_upper", "velocity_limit", "integrity"):
        del meta[key]
    meta["format_version"] = 1
    contract = {"name": meta["robot"]["name"], **contract}
    meta["robot"] = {"name": contract["name"], "contract_sha256": contract_sha256(contract), "contract": contract}
    return json.dumps(meta)


def to_format2(text: str) -> str:
    """Format-3 metadata as format 2 held it: one number per limit; the hashes of that metadata, same graph."""
    meta = scalar_limits(json.loads(text))
    graph = meta.pop("integrity")["graph_sha256"]
    meta["format_version"] = 2
    contract = {"name": meta["robot"]["name"], **{k: meta[k] for k in ROBOT.contract() if k != "name"}}
    meta["robot"] = {"name": contract["name"], "contract_sha256": contract_sha256(contract)}
    meta["integrity"] = {"graph_sha256": graph, "fields_sha256": field_hashes(meta)}
    return json.dumps(meta)


def format1_copy(src, tmp_path):
    return rewrite_metadata(src, tmp_path / "v1.onnx", lambda props: {"trot": to_format1(props["trot"])})


def format2_copy(src, tmp_path):
    return rewrite_metadata(src, tmp_path / "v2.onnx", lambda props: {"trot": to_format2(props["trot"])})


@pytest.mark.parametrize("old_format", [1, 2])
def test_upgrade_rewrites_older_metadata_and_keeps_the_graph_byte_for_byte(tiny_bundle, tmp_path, old_format):
    old = (format1_copy if old_format == 1 else format2_copy)(tiny_bundle, tmp_path)
    with pytest.raises(BundleError, match=f"format_version {old_format} is no longer read"):
        read_bundle_meta(old)
    new = tmp_path / "v3.onnx"
    run = subprocess.run([sys.executable, "-m", "trot.cli", "export", "--upgrade", str(old), "-o", str(new)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert model_sections(old.read_bytes())[0] == model_sections(new.read_bytes())[0]
    assert read_bundle_meta(new) == read_bundle_meta(tiny_bundle)  # contract, observation, commands, training
    assert read_bundle_meta(new).contract.torque_limit == (3.0,) * 12


def test_upgrade_refuses_a_format_1_bundle_whose_contract_copy_was_edited(tiny_bundle, tmp_path):
    old = format1_copy(tiny_bundle, tmp_path)

    def change(props):
        meta = json.loads(props["trot"])
        meta["kp"] = 9.5  # the top-level copy only: the two copies disagree
        return {"trot": json.dumps(meta)}

    rewrite_metadata(old, old, change)
    with pytest.raises(BundleError, match=r"metadata field 'kp' = 9\.5 differs from robot.contract's 5\.0"):
        upgrade_bundle(old, tmp_path / "v3.onnx")


def test_upgrade_refuses_a_format_2_bundle_edited_since_export(tiny_bundle, tmp_path):
    old = format2_copy(tiny_bundle, tmp_path)

    def change(props):
        meta = json.loads(props["trot"])
        meta["torque_limit"] = 4.0  # the integrity hashes still say 3.0
        return {"trot": json.dumps(meta)}

    rewrite_metadata(old, old, change)
    with pytest.raises(BundleError, match=r"metadata fields \['torque_limit'\] changed since export"):
        upgrade_bundle(old, tmp_path / "v3.onnx")


def test_the_shipped_policy_is_current_and_fits_the_robot():
    """walk.onnx loads through deploy's checks (integrity hashes) at the current format, on the robot's contract."""
    bundle = load_bundle(SHIPPED)
    props = {p.key: p.value for p in onnx.load(str(SHIPPED)).metadata_props}
    assert json.loads(props["trot"])["format_version"] == FORMAT_VERSION
    assert check_contract(bundle, ROBOT) == Contract.from_robot(ROBOT)


def test_the_upgraded_policy_is_format_3_and_acts_as_its_format_2_original(tmp_path):
    """The policy shipped until 2026-11-30 was upgraded with `trot export --upgrade` (format 1 -> 2, then
    2 -> 3): its graph bytes are the format-1 file's (the pinned hash was computed from that file), and
    upgrading its format-2 and format-1 forms again gives the same metadata and bit-identical actions."""
    meta = read_bundle_meta(UPGRADED)
    assert meta.contract == Contract.from_robot(ROBOT)
    assert meta.training.run == "2026-11-23_13-45-36_cpu_default" and meta.training.iterations == 701
    assert model_sections(UPGRADED.read_bytes())[0] == (
        "a38f52d4b6660aa4690e301281ba4064b282b34c680e731bf079273d880a69d6"
    )
    olds = [format1_copy(UPGRADED, tmp_path), format2_copy(UPGRADED, tmp_path)]
    upgraded = [upgrade_bundle(old, tmp_path / f"walk_{i}.onnx") and tmp_path / f"walk_{i}.onnx"
                for i, old in enumerate(olds)]  # fmt: skip
    assert all(read_bundle_meta(p) == meta for p in upgraded)
    obs = np.random.default_rng(0).normal(0.0, 3.0, (4096, meta.observation.size)).astype(np.float32)
    actions = [ort.InferenceSession(str(p)).run(None, {"obs": obs})[0].tobytes() for p in (*olds, UPGRADED, *upgraded)]
    assert len(set(actions)) == 1
