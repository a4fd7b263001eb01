"""`trot export`: the ONNX bundle equals the torch policy, and carries the robot contract."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from trot.deploy.bundle import BundleError, check_contract, load_bundle, read_metadata
from trot.robots import load_robot
from trot.train.evaluate import load_policy


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


def test_contract_hash_recomputed_from_robots_folder_matches(tiny_bundle):
    meta = read_metadata(tiny_bundle)
    robot = load_robot(meta["robot"]["name"])
    assert meta["robot"]["contract_sha256"] == robot.contract_sha256()
    assert meta["joint_names"] == list(robot.joint_names)
    assert meta["default_joint_pos"] == list(robot.default_joint_pos)
    assert meta["control_dt"] == robot.control_dt and meta["physics_dt"] == robot.physics_dt
    sizes = sum(t["size"] for t in meta["observation"]["terms"]) * meta["observation"]["history"]
    assert sizes == load_bundle(tiny_bundle).obs_size
    assert meta["training"]["run"] and meta["training"]["iterations"] == 1


def test_bundle_for_another_contract_is_refused_naming_the_field(tiny_bundle, tmp_path):
    import shutil

    folder = tmp_path / "pupper_stiff"
    shutil.copytree(load_robot("pupper_v3").folder, folder, ignore=shutil.ignore_patterns("policies"))
    toml = folder / "robot.toml"
    toml.write_text(toml.read_text().replace("kp = 5.0", "kp = 7.5"))
    with pytest.raises(BundleError, match=r"differing fields: kp: bundle 5\.0, robot 7\.5"):
        check_contract(load_bundle(tiny_bundle), load_robot(folder))


def rewrite_metadata(src, dst, change):
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
        ("kp", None, "metadata field 'kp' is missing"),
        ("control_dt", -0.02, "metadata field 'control_dt' = -0.02; expected a positive number"),
        ("format_version", 99, "metadata field 'format_version' = 99; expected the integer 1"),
        ("default_joint_pos", [0.0] * 11, "'default_joint_pos' has 11 values; expected 12"),
    ],
)
def test_malformed_metadata_is_refused_naming_the_field(tiny_bundle, tmp_path, field, value, message):
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
    missing = subprocess.run([sys.executable, "-m", "trot.cli", "inspect", str(tmp_path / "nope.onnx")],
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode != 0 and "nope.onnx: no such bundle file" in missing.stderr
