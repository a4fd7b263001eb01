"""The gate record (`<bundle>.gate.json`): bound to the bundle file's exact bytes, read by flash and inspect with a
sentence for each case (passing, failing, another file's, none, unreadable)."""

import json
import shutil

import pytest

from trot.gate_record import (
    GateRecord,
    GateRecordError,
    file_sha256,
    find_record,
    read_record,
    record_path,
    require_pass,
)


@pytest.fixture
def bundle(tiny_bundle, tmp_path):
    path = tmp_path / "walk.onnx"
    shutil.copyfile(tiny_bundle, path)
    return path


def test_the_record_lives_beside_the_bundle_and_round_trips(bundle, gate_record):
    assert record_path(bundle) == bundle.with_name("walk.onnx.gate.json")
    written = gate_record(bundle)
    assert read_record(record_path(bundle)) == written
    assert require_pass(bundle) == written
    assert written.counts("pybullet") == (4, 4) and written.counts("pybullet", judged=False) == (2, 2)
    assert written.summary() == ("PASS on 2026-12-08 (trot 0123456789ab, 10 s cells, latency 20 ms): judged cells "
                                 "passing pybullet 4 of 4; stress (not judged) pybullet 2 of 2")  # fmt: skip


def test_a_one_byte_change_of_the_bundle_unbinds_its_record(bundle, gate_record):
    gate_record(bundle)
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    bundle.write_bytes(bytes(data))
    with pytest.raises(GateRecordError) as err:
        require_pass(bundle)
    assert str(err.value).startswith(f"{record_path(bundle)} is the gate record of another file (sha256 ")
    assert f"{bundle} has sha256 {file_sha256(bundle)[:16]}…: gate this file" in str(err.value)


def test_no_record_and_a_failing_one_are_refused_naming_why(bundle, gate_record):
    with pytest.raises(GateRecordError) as err:
        require_pass(bundle)
    assert str(err.value) == (f"no gate record for {bundle} (expected {record_path(bundle)}): run "
                              f"`trot gate {bundle}`")  # fmt: skip
    gate_record(bundle, failures=("lin err 0.300 > 0.12 m/s",))
    with pytest.raises(GateRecordError) as err:
        require_pass(bundle)
    assert str(err.value).startswith(f"{bundle} failed the gate (FAIL on 2026-12-08")
    assert str(err.value).endswith("pybullet forward_max / latency_declared: lin err 0.300 > 0.12 m/s")
    record, found = find_record(bundle)  # a failing record is still this file's: inspect shows it
    assert record is not None and not record.passed and found.endswith(f"for this exact file (sha256 "
                                                                      f"{file_sha256(bundle)[:16]}…)")  # fmt: skip


def test_an_unreadable_record_names_the_file_and_the_field(bundle, gate_record):
    path = record_path(bundle)
    path.write_text("{")
    with pytest.raises(GateRecordError, match=r"gate.json: not a gate record: not valid JSON"):
        require_pass(bundle)
    doc = json.loads(gate_record(bundle).to_json())
    for change, message in (({"format_version": 0}, "field 'format_version' = 0; expected 1"),
                            ({"passed": "yes"}, "field 'passed' = 'yes'; expected true or false"),
                            ({"bundle_sha256": None}, "field 'bundle_sha256' = None; expected a string"),
                            ({"cells": [{"engine": "pybullet"}]}, "field 'cells[0]' lacks ['command', 'perturbation'"),
                            ):  # fmt: skip
        path.write_text(json.dumps(doc | change))
        with pytest.raises(GateRecordError) as err:
            read_record(path)
        assert str(err.value).startswith(f"{path}: {message}"), str(err.value)
    del doc["seed"]
    path.write_text(json.dumps(doc))
    with pytest.raises(GateRecordError, match="field 'seed' is missing"):
        GateRecord.from_json(path.read_text(), str(path))
