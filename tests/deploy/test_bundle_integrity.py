"""Issue 13, items 1-3, reproduced: a tampered bundle never reaches the motors. Every loader (`trot deploy`,
`trot inspect`, `trot flash`, `trot gate`, `trot bench deploy`) recomputes the bundle's hashes and refuses a
changed weight or metadata field, naming what differs; the loop takes gains only from the verified contract."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from trot.bundle import Contract, read_bundle_meta
from trot.deploy.bundle import BundleError, load_bundle
from trot.deploy.flash import DirTarget, flash, resolve_flashed, sha256_file
from trot.robots import load_robot

ROBOT = load_robot("pupper_v3")


def cli(*args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trot.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


LOADERS = {
    "deploy": lambda b, tmp: cli("deploy", "--bundle", b, "--port", tmp / "tty", "--telemetry", tmp / "t.jsonl"),
    "inspect": lambda b, tmp: cli("inspect", b),
    "flash": lambda b, tmp: cli("flash", b, "--target", tmp / "robot"),
    "gate": lambda b, tmp: cli("gate", b, "--seconds", "1", "--commands", "stand", "--perturbations", "nominal",
                               "-o", tmp / "gate"),  # fmt: skip
    "bench deploy": lambda b, tmp: cli("bench", "deploy", b, "--seconds", "1"),
}


def flip_weight_byte(src, dst):
    """Invert one byte inside the largest weight tensor of the graph (the metadata is left as exported)."""
    model = onnx.load(str(src))
    weights = max(model.graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    data = bytearray(src.read_bytes())
    at = bytes(data).find(weights) + len(weights) // 2 + 3  # the high byte of a float32 in the middle
    data[at] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def edit_metadata(src, dst, change):
    """Change the `trot` JSON by hand, every hash left as it was."""
    model = onnx.load(str(src))
    for p in model.metadata_props:
        if p.key == "trot":
            doc = json.loads(p.value)
            change(doc)
            p.value = json.dumps(doc)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def tampered(tiny_bundle, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tampered")
    weight = flip_weight_byte(tiny_bundle, folder / "weight.onnx")
    kp = edit_metadata(tiny_bundle, folder / "kp.onnx", lambda d: d.update(kp=9.5))
    return {"weight": weight, "kp": kp}


def test_one_inverted_weight_byte_changes_the_actions(tiny_bundle, tampered):
    """Why it matters (issue 13 item 1): the flipped byte changes what the policy commands."""
    good = ort.InferenceSession(str(tiny_bundle))
    bad = ort.InferenceSession(str(tampered["weight"]))
    obs = np.random.default_rng(0).normal(0.0, 1.0, (256, good.get_inputs()[0].shape[1])).astype(np.float32)
    change = np.abs(good.run(None, {"obs": obs})[0] - bad.run(None, {"obs": obs})[0]).max()
    assert change > 0.1, change


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize(
    "kind, message",
    [
        ("weight", "the ONNX graph or weights changed since export"),
        ("kp", "metadata field 'kp' changed since export"),  # issue 13 item 2: kp 5.0 -> 9.5, hash left
    ],
)
def test_every_loader_refuses_a_tampered_bundle_naming_what_differs(tampered, tmp_path, loader, kind, message):
    out = LOADERS[loader](tampered[kind], tmp_path)
    assert out.returncode != 0, out.stdout[-2000:]
    assert message in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "robot").exists() and not (tmp_path / "t.jsonl").exists()


def test_a_consistently_rehashed_kp_edit_is_still_refused_against_the_robot(tiny_bundle, tmp_path):
    """Someone who recomputes every hash after editing kp gets past integrity, not past the robot's contract."""
    from trot.train.export import write_bundle

    meta = read_bundle_meta(tiny_bundle)
    stiff = replace(meta, contract=replace(meta.contract, kp=9.5), integrity=None)
    bundle = write_bundle(onnx.load(str(tiny_bundle)), stiff, tmp_path / "stiff.onnx")
    assert bundle.contract.kp == 9.5 and load_bundle(tmp_path / "stiff.onnx").contract.kp == 9.5
    with pytest.raises(BundleError, match=r"differing fields: kp: bundle 9\.5, robot 5\.0"):
        flash(tmp_path / "stiff.onnx", DirTarget(tmp_path / "robot"), ROBOT)
    out = cli("deploy", "--bundle", tmp_path / "stiff.onnx", "--port", tmp_path / "tty")
    assert out.returncode == 2 and "kp: bundle 9.5, robot 5.0" in out.stderr


def test_contract_hash_is_recomputed_from_the_stored_fields(tiny_bundle, tmp_path):
    from trot.bundle import field_hashes

    def change(doc):
        doc["robot"]["contract_sha256"] = "0" * 64

    bad = edit_metadata(tiny_bundle, tmp_path / "hash.onnx", change)
    with pytest.raises(BundleError, match="metadata field 'robot' changed since export"):
        load_bundle(bad)

    def change_and_rehash(doc):  # the field hashes recomputed too: the stated contract hash still disagrees
        change(doc)
        doc["integrity"]["fields_sha256"] = field_hashes({k: v for k, v in doc.items() if k != "integrity"})

    bad = edit_metadata(tiny_bundle, tmp_path / "hash2.onnx", change_and_rehash)
    with pytest.raises(BundleError, match=r"'robot.contract_sha256' = 000000000000… does not match the contract"):
        load_bundle(bad)


@pytest.mark.parametrize("rehashed", [False, True])
def test_flash_refuses_reordered_joint_names_and_keeps_the_good_policy(tiny_bundle, tmp_path, rehashed):
    """Issue 13 item 3: joint order changed in the metadata; flash runs deploy's checks before touching the robot."""
    from trot.train.export import write_bundle

    robot_dir = tmp_path / "robot"
    flash(tiny_bundle, DirTarget(robot_dir), ROBOT, force=True)  # no gate record: the gate's verdict is not tested here
    good = resolve_flashed(robot_dir)
    names = list(ROBOT.joint_names)
    names[0], names[3] = names[3], names[0]
    bad = tmp_path / "reordered.onnx"
    if rehashed:  # a bundle exported for a robot whose contract lists the joints in another order
        meta = read_bundle_meta(tiny_bundle)
        write_bundle(onnx.load(str(tiny_bundle)), replace(meta, contract=replace(meta.contract,
                     joint_names=tuple(names)), integrity=None), bad)  # fmt: skip
        message = "differing fields: joint_names: bundle ['leg_front_l_1'"
    else:
        edit_metadata(tiny_bundle, bad, lambda d: d.update(joint_names=names))
        message = "metadata field 'joint_names' changed since export"
    out = cli("flash", bad, "--target", robot_dir)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    assert resolve_flashed(robot_dir) == good and sha256_file(good) == sha256_file(tiny_bundle)


def test_the_loop_drives_with_the_verified_contract_only(tiny_bundle):
    from trot.deploy.commands import ConstantCommand
    from trot.deploy.loop import DeployLoop
    from trot.deploy.safety import TargetClamp

    bundle = load_bundle(tiny_bundle)
    assert bundle.contract == Contract.from_robot(ROBOT)
    loop = DeployLoop(bundle, ROBOT, transport=None, commands=ConstantCommand(), telemetry=None)
    assert loop.contract is bundle.contract and loop.clamp.kp == TargetClamp(loop.contract, ROBOT.hardware).kp == 5.0
    stiff = replace(bundle, meta=replace(bundle.meta, contract=replace(bundle.contract, kp=9.5)))
    with pytest.raises(BundleError, match=r"kp: bundle 9\.5, robot 5\.0"):
        DeployLoop(stiff, ROBOT, transport=None, commands=ConstantCommand(), telemetry=None)
