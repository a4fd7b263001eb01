"""`trot.deploy.bundle`: what `load_bundle` refuses beyond the metadata (a graph onnxruntime cannot read, the wrong
input or output names), the bundle's typed accessors, and what `trot inspect` prints."""

import argparse
import hashlib
import json
from dataclasses import replace

import onnx
import pytest
from onnx import TensorProto, helper

from trot.bundle import BundleMeta, Commands, Contract, Observation, ObsTerm, Training
from trot.deploy.bundle import Bundle, BundleError, format_metadata, load_bundle, run_inspect
from trot.robots import load_robot
from trot.train.export import write_bundle

ROBOT = load_robot("pupper_v3")


def meta() -> BundleMeta:
    obs = Observation((ObsTerm("base_ang_vel", 3, 0.25), ObsTerm("joint_pos_rel", 12, 1.0)), history=2)
    return BundleMeta(Contract.from_robot(ROBOT), obs, Commands((-0.5, 1.0), (-0.3, 0.3), (-1.0, 1.0)),
                      Training(run="r", iterations=3, env_steps=96, code_revision="abc", created="today"),
                      ROBOT.model)  # fmt: skip


def identity(inp: str, out: str) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Identity", [inp], [out])], "g",
                              [helper.make_tensor_value_info(inp, TensorProto.FLOAT, [1, 30])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 30])])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_a_graph_with_other_names_is_refused_naming_them(tmp_path):
    path = tmp_path / "names.onnx"
    write_bundle(identity("x", "y"), meta(), path)
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    assert str(err.value) == f"{path}: graph has inputs ['x'] and outputs ['y']; expected ['obs'] and ['actions']"
    write_bundle(identity("obs", "y"), meta(), path)  # the input right, the output not
    with pytest.raises(BundleError, match=r"graph has inputs \['obs'\] and outputs \['y'\]"):
        load_bundle(path)
    write_bundle(identity("obs", "actions"), meta(), tmp_path / "ok.onnx")
    bundle = load_bundle(tmp_path / "ok.onnx")
    assert bundle.num_joints == 12 and bundle.obs_size == 30 and bundle.contract == Contract.from_robot(ROBOT)


def test_bytes_onnxruntime_cannot_read_are_refused(tmp_path):
    graph = b"\x3a\x03abc"  # ModelProto field 7 (graph), three bytes that are no GraphProto
    text = replace(meta()).with_graph(hashlib.sha256(graph).hexdigest()).to_json().encode()
    entry = b"\x0a\x04trot" + b"\x12" + _varint(len(text)) + text
    path = tmp_path / "junk.onnx"
    path.write_bytes(graph + b"\x72" + _varint(len(entry)) + entry)
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # what onnxruntime says, named in the refusal
        expected = f"{path}: not a readable ONNX model ({type(e).__name__}: {e})"
    with pytest.raises(BundleError) as err:
        load_bundle(path)
    assert str(err.value) == expected


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_a_session_is_single_threaded_on_the_cpu(tmp_path):
    write_bundle(identity("obs", "actions"), meta(), tmp_path / "ok.onnx")
    session = load_bundle(tmp_path / "ok.onnx").session()
    assert session.get_providers() == ["CPUExecutionProvider"]
    opts = session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)


def test_inspect_prints_every_field_or_the_json(tmp_path, capsys):
    path = tmp_path / "ok.onnx"
    written = write_bundle(identity("obs", "actions"), meta(), path)
    text = format_metadata(written)
    c = ROBOT
    for row in (
        f"robot               pupper_v3  contract sha256 {c.contract_sha256()}",
        f"integrity           graph sha256 {written.integrity.graph_sha256} (verified, and every metadata field)",
        f"rates               control {c.control_dt * 1e3:.1f} ms, physics {c.physics_dt * 1e3:.1f} ms",
        f"gains               kp {c.kp}  kd {c.kd}",
        "limits              torque 3 (every joint) N·m, velocity 30 (every joint) rad/s",
        f"actions             target = default + {c.action_scale} * clip(action, ±{c.action_clip})",
        "observation         history 2 (newest_first), clip ±100.0, size 30",
        "  base_ang_vel      size   3  scale 0.25",
        "  joint_pos_rel     size  12  scale 1.0",
        "commands            vx [-0.5, 1.0] m/s, vy [-0.3, 0.3] m/s, yaw rate [-1.0, 1.0] rad/s",
        "training            run r, 3 iterations, 96 env steps",
        "                    code abc, created today",
    ):  # fmt: skip
        assert row in text.splitlines(), row
    joints = next(line for line in text.splitlines() if line.startswith("joints"))
    assert joints == "joints              " + ", ".join(
        f"{n} ({q:+.2f})" for n, q in zip(c.joint_names, c.default_joint_pos))  # fmt: skip
    assert run_inspect(argparse.Namespace(bundle=str(path), json=True)) == 0
    assert capsys.readouterr().out == json.dumps(json.loads(written.to_json()), indent=2) + "\n"
    assert run_inspect(argparse.Namespace(bundle=str(path), json=False)) == 0
    gate = f"gate                no gate record for {path} (expected {path}.gate.json): run `trot gate {path}`"
    assert capsys.readouterr().out == text + "\n" + gate + "\n"
    with pytest.raises(SystemExit) as err:
        run_inspect(argparse.Namespace(bundle=str(tmp_path / "none.onnx"), json=False))
    assert str(err.value) == f"trot inspect: {tmp_path / 'none.onnx'}: no such bundle file"
    assert Bundle(path, written).path == path
    slow = replace(written, contract=replace(written.contract, control_dt=0.5, physics_dt=0.25))
    assert "rates               control 500.0 ms, physics 250.0 ms" in format_metadata(slow).splitlines()


def test_check_contract_of_a_loaded_bundle_names_its_file(tmp_path):
    from trot.deploy.bundle import check_contract

    path = tmp_path / "ok.onnx"
    write_bundle(identity("obs", "actions"), meta(), path)
    bundle = load_bundle(path)
    assert check_contract(bundle, ROBOT) == bundle.contract
    stiff = replace(bundle, meta=replace(bundle.meta, contract=replace(bundle.contract, kp=9.5)))
    with pytest.raises(BundleError, match=rf"^{path}: made for robot 'pupper_v3' .*kp: bundle 9\.5, robot 5\.0$"):
        check_contract(stiff, ROBOT)


def test_inspect_shows_the_gate_record_and_whether_it_is_for_this_exact_file(tiny_bundle, tmp_path, capsys,
                                                                              gate_record):  # fmt: skip
    import shutil

    from trot.gate_record import file_sha256, record_path

    path = tmp_path / "walk.onnx"
    shutil.copyfile(tiny_bundle, path)

    def gate_line() -> str:
        assert run_inspect(argparse.Namespace(bundle=str(path), json=False)) == 0
        return capsys.readouterr().out.splitlines()[-1]

    digest = file_sha256(path)
    gate_record(path)
    assert gate_line() == (f"gate                {record_path(path)}: PASS on 2026-12-08 (trot 0123456789ab, 10 s "
                           "cells, latency 20 ms): judged cells passing pybullet 4 of 4; stress (not judged) pybullet "
                           f"2 of 2; for this exact file (sha256 {digest[:16]}…)")  # fmt: skip
    gate_record(path, failures=("yaw err 0.200 > 0.1 rad/s",))
    assert "FAIL on 2026-12-08" in gate_line() and "judged cells passing pybullet 3 of 4" in gate_line()
    gate_record(path, sha256="f" * 64)  # the record of another file: a renamed or re-exported bundle
    assert gate_line() == (f"gate                {record_path(path)} is the gate record of another file (sha256 "
                           f"ffffffffffffffff…, gated as walk.onnx on 2026-12-08); {path} has sha256 {digest[:16]}…: "
                           f"gate this file (`trot gate {path}`)")  # fmt: skip
    record_path(path).write_text("{")
    assert gate_line().startswith(f"gate                unreadable gate record: {record_path(path)}: not a gate record")
    assert run_inspect(argparse.Namespace(bundle=str(path), json=True)) == 0
    assert "gate" not in json.loads(capsys.readouterr().out)  # --json is the bundle's metadata, unchanged
