"""`trot.bundle` without onnx: the metadata parser's every refusal (file, field, value, what was expected), the
integrity hashes, the contract comparison, and the protobuf walk that finds the metadata in a model's bytes."""

import hashlib
import json
from dataclasses import replace

import pytest

from trot import bundle as B
from trot.bundle import BundleError, BundleMeta, Commands, Contract, Observation, ObsTerm, Training
from trot.robots import MODEL_NOTICES, load_robot

ROBOT = load_robot("pupper_v3")
GRAPH = "ab" * 32
WHERE = "x.onnx"


def meta() -> BundleMeta:
    obs = Observation((ObsTerm("base_ang_vel", 3, 0.25), ObsTerm("joint_pos_rel", 12, 1.0)), history=2)
    return BundleMeta(Contract.from_robot(ROBOT), obs, Commands((-0.5, 1.0), (-0.3, 0.3), (-1.0, 1.0)),
                      Training(run="r", iterations=3, env_steps=96), ROBOT.model).with_graph(GRAPH)  # fmt: skip


def doc() -> dict:
    return json.loads(meta().to_json())


def refused(d, message: str) -> None:
    with pytest.raises(BundleError) as err:
        B.parse_metadata(d if isinstance(d, str) else json.dumps(d), WHERE)
    assert str(err.value) == f"{WHERE}: {message}"


def edit(**fields) -> dict:
    d = doc()
    d.update(fields)
    return d


def test_a_valid_document_parses_to_what_was_written():
    parsed = B.parse_metadata(meta().to_json(), WHERE)
    assert parsed == meta() and parsed.stated_contract_sha256 == ROBOT.contract_sha256()
    B.verify_integrity(parsed, GRAPH, WHERE)
    assert parsed.contract.to_dict() == ROBOT.contract() and parsed.contract_sha256 == ROBOT.contract_sha256()
    assert parsed.observation.frame_size == 15 and parsed.observation.size == 30
    spec = parsed.observation.to_spec()
    assert [(t.name, t.scale) for t in spec.terms] == [("base_ang_vel", 0.25), ("joint_pos_rel", 1.0)]
    assert spec.history == 2 and spec.gait_frequency_hz == 0.0
    assert parsed.commands.vx == (-0.5, 1.0) and parsed.training.env_steps == 96


def test_limits_are_per_joint_any_positive_value_and_printed_short_when_uniform():
    small = B.parse_metadata(json.dumps(edit(torque_limit=[0.5] * 12, velocity_limit=[1e-3] * 12)), WHERE)
    assert small.contract.torque_limit == (0.5,) * 12 and small.contract.velocity_limit == (1e-3,) * 12
    assert B.per_joint_text((3.0,) * 12) == B.per_joint_text((3.0,)) == "3 (every joint)"  # one joint too
    assert B.per_joint_text((23.7, 23.7, 45.43)) == "[23.7, 23.7, 45.43]"


def test_the_document_layout_is_design_contract_3():
    d = doc()
    assert list(d) == ["format_version", "robot", "joint_names", "default_joint_pos", "joint_lower", "joint_upper",
                       "kp", "kd", "action_scale", "action_clip", "torque_limit", "velocity_limit", "control_dt",
                       "physics_dt", "model_sha256", "observation", "commands", "training", "robot_model",
                       "integrity"]  # fmt: skip
    assert d["format_version"] == 4 and d["robot"] == {"name": "pupper_v3", "contract_sha256": ROBOT.contract_sha256()}
    # the body trained on: the robot's model numbers, and their digest in the contract
    assert d["robot_model"] == ROBOT.model and d["model_sha256"] == ROBOT.model_sha256()
    assert d["robot_model"]["joints"]["leg_front_r_1"]["parent"] == "base_link"
    terms = [{"name": "base_ang_vel", "size": 3, "scale": 0.25}, {"name": "joint_pos_rel", "size": 12, "scale": 1.0}]
    assert d["observation"] == {"terms": terms, "history": 2, "gait_frequency_hz": 0.0, "clip": 100.0,
                                "order": "newest_first"}  # fmt: skip
    assert d["commands"] == {"vx": [-0.5, 1.0], "vy": [-0.3, 0.3], "yaw_rate": [-1.0, 1.0]}
    assert d["integrity"]["graph_sha256"] == GRAPH
    fields = {k: v for k, v in d.items() if k != "integrity"}
    assert d["integrity"]["fields_sha256"] == {
        k: hashlib.sha256(json.dumps(v, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        for k, v in fields.items()
    }
    assert meta().to_json() == json.dumps(d, separators=(",", ":"))  # compact
    with pytest.raises(ValueError, match=r"no integrity hashes yet; call with_graph\(graph_sha256\) first"):
        replace(meta(), integrity=None).to_json()


def test_canonical_json_is_sorted_compact_ascii_and_refuses_nan():
    assert B.canonical_json({"b": [1, 2.5], "a": "é"}) == '{"a":"\\u00e9","b":[1,2.5]}'
    with pytest.raises(ValueError):
        B.canonical_json(float("nan"))


CONTRACT_FIELDS = [
    ("format_version", 5, "metadata field 'format_version' = 5; expected the integer 4"),
    ("robot", {"name": "p"}, "metadata field 'robot' = {'name': 'p'}; expected {'name': str, 'contract_sha256': 64 "
                             "hex digits}"),
    ("robot", {"name": "", "contract_sha256": "ab" * 32}, None),
    ("robot", {"name": "p", "contract_sha256": "AB" * 32}, None),
    ("joint_names", [], "metadata field 'joint_names' = []; expected a non-empty list of joint names"),
    ("joint_names", ["a"] * 12, "metadata field 'joint_names' = " + repr(["a"] * 12) + "; expected unique joint names"),
    ("joint_names", "abc", "metadata field 'joint_names' = 'abc'; expected a non-empty list of joint names"),
    ("kp", 0, "metadata field 'kp' = 0; expected a positive number"),
    ("kp", True, "metadata field 'kp' = True; expected a positive number"),
    ("torque_limit", 3.0, "metadata field 'torque_limit' = 3.0; expected a list of 12 numbers, one per joint"),
    ("velocity_limit", [30.0] * 11 + [0.0], "metadata field 'velocity_limit' = " + repr([30.0] * 11 + [0.0])
     + "; expected a list of 12 positive numbers, one per joint"),
    ("kd", -0.1, "metadata field 'kd' = -0.1; expected a non-negative number"),
    ("control_dt", 0.0, "metadata field 'control_dt' = 0.0; expected a positive number of seconds"),
    ("physics_dt", "0.005", "metadata field 'physics_dt' = '0.005'; expected a positive number of seconds"),
    ("default_joint_pos", [0.0] * 11, "metadata field 'default_joint_pos' has 11 values; expected 12, one per joint"),
    ("joint_lower", [0.0] * 11 + ["x"], "metadata field 'joint_lower' = " + repr([0.0] * 11 + ["x"])
     + "; expected a list of 12 numbers, one per joint"),
]  # fmt: skip


@pytest.mark.parametrize("field, value, message", CONTRACT_FIELDS, ids=[f[0] for f in CONTRACT_FIELDS])
def test_each_top_level_field_is_refused_naming_it(field, value, message):
    if message is None:
        message = f"metadata field 'robot' = {value!r}; expected {{'name': str, 'contract_sha256': 64 hex digits}}"
    refused(edit(**{field: value}), message)


def test_missing_unknown_and_format_1_fields():
    d = doc()
    del d["kd"]
    refused(d, "metadata field 'kd' is missing; expected a non-negative number")
    refused(edit(extra=1), "metadata fields ['extra'] are not part of format 4; expected only "
                           f"{list(B._TOP_LEVEL)}")  # fmt: skip
    for old in (1, 2, 3):  # none says which body it was trained on; a Pupper's was not the Pupper v3
        with pytest.raises(BundleError) as err:
            B.parse_metadata(json.dumps(edit(format_version=old)), WHERE)
        assert str(err.value) == (
            f"{WHERE}: metadata format_version {old} is no longer read: format 4 binds a policy to the robot model it "
            "was trained on (the contract's model_sha256 and the robot_model field), and an older bundle cannot say "
            f"which body that was. Robot 'pupper_v3': {MODEL_NOTICES['pupper_v3']}"
        )
    assert "must not run on one: use the shipped robots/pupper_v3/policies/walk.onnx" in MODEL_NOTICES["pupper_v3"]
    with pytest.raises(BundleError, match=r"Robot 'go2': retrain \(`trot train --robot go2`\) and export the new run"):
        B.parse_metadata(json.dumps(edit(format_version=3, robot={"name": "go2", "contract_sha256": "0" * 64})), WHERE)
    refused("{not json", "metadata 'trot' is not valid JSON (Expecting property name enclosed in double quotes: "
                         "line 1 column 2 (char 1))")  # fmt: skip
    refused("[1, 2]", "metadata 'trot' is not a JSON object")


def test_joint_limits_must_be_ordered():
    upper = list(ROBOT.joint_limits.lower)
    refused(edit(joint_upper=upper), f"metadata field 'joint_upper' = {upper!r}; expected each above its joint_lower")


def obs_edit(**fields) -> dict:
    d = doc()
    d["observation"].update(fields)
    return d


def term(name="base_ang_vel", size=3, scale=0.25) -> dict:
    return {"name": name, "size": size, "scale": scale}


OBS_FIELDS = [
    ({"terms": []}, "metadata field 'terms' = []; expected a non-empty list"),
    ({"terms": [{"name": "base_ang_vel", "size": 3}]}, "metadata field 'observation.terms[0]' = {'name': "
     "'base_ang_vel', 'size': 3}; expected {'name': str, 'size': int, 'scale': number}"),
    ({"terms": [term(), term("gyro")]}, "metadata field 'observation.terms[1].name' = 'gyro'; expected one of "
     + repr(sorted(B.OBS_VOCABULARY))),
    ({"terms": [term(size=4)]}, "metadata field 'observation.terms[0].size' = 4; expected 3 for base_ang_vel with 12 "
     "joints"),
    ({"terms": [term("joint_vel", True, 1.0)]}, "metadata field 'observation.terms[0].size' = True; expected 12 for "
     "joint_vel with 12 joints"),
    ({"terms": [term(scale="1")]}, "metadata field 'observation.terms[0].scale' = '1'; expected a finite number"),
    ({"history": 0}, "metadata field 'history' = 0; expected an integer >= 1"),
    ({"history": True}, "metadata field 'history' = True; expected an integer >= 1"),
    ({"order": "oldest_first"}, "metadata field 'observation.order' = 'oldest_first'; expected 'newest_first'"),
    ({"gait_frequency_hz": -1.0}, "metadata field 'observation.gait_frequency_hz' = -1.0; expected a non-negative "
     "number"),
    ({"terms": [term("gait_phase", 2, 1.0)]}, "metadata field 'observation.gait_frequency_hz' = 0.0; expected > 0 "
     "with a gait_phase term"),
    ({"clip": 0}, "metadata field 'observation.clip' = 0; expected a positive number"),
    ({"extra": 1}, "metadata field 'observation' = ['extra']; expected only the keys "
     "['clip', 'gait_frequency_hz', 'history', 'order', 'terms']"),
]  # fmt: skip


@pytest.mark.parametrize("fields, message", OBS_FIELDS, ids=[next(iter(f)) + str(i) for i, (f, _) in
                                                             enumerate(OBS_FIELDS)])  # fmt: skip
def test_each_observation_field_is_refused_naming_it(fields, message):
    refused(obs_edit(**fields), message)


def test_observation_defaults_and_a_gait_clock():
    d = doc()
    for key in ("gait_frequency_hz", "clip", "order"):
        del d["observation"][key]
    d["integrity"] = doc()["integrity"]
    parsed = B.parse_metadata(json.dumps(d), WHERE)
    assert (parsed.observation.gait_frequency_hz, parsed.observation.clip, parsed.observation.order) == (
        0.0, 100.0, "newest_first")  # fmt: skip
    gait = B.parse_metadata(json.dumps(obs_edit(terms=[term("gait_phase", 2, 1.0)], gait_frequency_hz=0.5)), WHERE)
    assert gait.observation.gait_frequency_hz == 0.5 and isinstance(gait.observation.clip, float)
    refused(edit(observation=[1]), "metadata field 'observation' = [1]; expected {'terms': [{'name', 'size', "
                                   "'scale'}...], 'history': int >= 1, 'order': 'newest_first', ...}")  # fmt: skip


@pytest.mark.parametrize("commands, message", [
    ({"vx": [0, 1], "vy": [0, 1]}, "metadata field 'commands' = {'vx': [0, 1], 'vy': [0, 1]}; expected {'vx': "
     "[min, max], 'vy': [min, max], 'yaw_rate': [min, max]}"),
    ({"vx": [1, 0], "vy": [0, 1], "yaw_rate": [0, 1]}, "metadata field 'commands.vx' = [1, 0]; expected [min, max] "
     "with min <= max"),
    ({"vx": [0, 1], "vy": [0, 1, 2], "yaw_rate": [0, 1]}, "metadata field 'commands.vy' = [0, 1, 2]; expected "
     "[min, max] with min <= max"),
    ({"vx": [0, 1], "vy": [0, 1], "yaw_rate": [0, "1"]}, "metadata field 'commands.yaw_rate' = [0, '1']; expected "
     "[min, max] with min <= max"),
])  # fmt: skip
def test_command_ranges_are_refused_naming_the_axis(commands, message):
    refused(edit(commands=commands), message)
    assert B.parse_metadata(json.dumps(edit(commands={"vx": [0, 0], "vy": [0, 1], "yaw_rate": [-1, 1]})),
                            WHERE).commands.vx == (0.0, 0.0)  # fmt: skip


@pytest.mark.parametrize("training, message", [
    ({"run": 3}, "metadata field 'training.run' = 3; expected a string"),
    ({"iterations": "3"}, "metadata field 'training.iterations' = '3'; expected an int"),
    ({"iterations": True}, "metadata field 'training.iterations' = True; expected an int"),
    ({"gpu": "x"}, "metadata field 'training.gpu' = 'x'; expected only the keys "
     "['code_revision', 'created', 'env_steps', 'iterations', 'run', 'task']"),
])  # fmt: skip
def test_training_fields_are_typed(training, message):
    refused(edit(training=training), message)
    expected = "an object with run, iterations, env_steps, ..."
    refused(edit(training=[]), f"metadata field 'training' = []; expected {expected}")


@pytest.mark.parametrize("integrity", [
    {"graph_sha256": GRAPH}, {"graph_sha256": "AB" * 32, "fields_sha256": {}},
    {"graph_sha256": GRAPH, "fields_sha256": {"kp": "x"}}, {"graph_sha256": GRAPH, "fields_sha256": []},
    {"graph_sha256": "X" * 64, "fields_sha256": {}},
])  # fmt: skip
def test_integrity_field_shape(integrity):
    refused(edit(integrity=integrity), f"metadata field 'integrity' = {integrity!r}; expected {{'graph_sha256': hex, "
                                       "'fields_sha256': {field: hex}} (written by `trot export`)")  # fmt: skip


def test_verify_integrity_names_what_changed():
    with pytest.raises(BundleError) as err:
        B.verify_integrity(meta(), "cd" * 32, WHERE)
    assert str(err.value) == (f"{WHERE}: the ONNX graph or weights changed since export (sha256 cdcdcdcdcdcd…, "
                              "recorded abababababab…); the policy would not act as it was trained to")  # fmt: skip
    one = B.parse_metadata(json.dumps(edit(kp=9.5)), WHERE)
    with pytest.raises(BundleError) as err:
        B.verify_integrity(one, GRAPH, WHERE)
    assert str(err.value) == (f"{WHERE}: metadata field 'kp' changed since export (integrity hash differs); "
                              "re-export the bundle rather than editing it")  # fmt: skip
    two = B.parse_metadata(json.dumps(edit(kp=9.5, kd=0.5)), WHERE)
    with pytest.raises(BundleError, match=r"metadata fields 'kd', 'kp' changed since export"):
        B.verify_integrity(two, GRAPH, WHERE)
    d = doc()
    d["integrity"]["fields_sha256"]["retired"] = "00" * 32  # recorded at export, gone now
    with pytest.raises(BundleError, match=r"metadata field 'retired' changed since export"):
        B.verify_integrity(B.parse_metadata(json.dumps(d), WHERE), GRAPH, WHERE)
    stale = replace(meta(), stated_contract_sha256="00" * 32)  # edited, and every field hash made to match
    stale = replace(stale, integrity=B.Integrity(GRAPH, B.field_hashes(stale.fields_json())))
    with pytest.raises(BundleError) as err:
        B.verify_integrity(stale, GRAPH, WHERE)
    assert str(err.value) == (f"{WHERE}: metadata field 'robot.contract_sha256' = 000000000000… does not match the "
                              f"contract fields stored in the bundle (they hash to {ROBOT.contract_sha256()[:12]}…): "
                              "a contract field was edited")  # fmt: skip


def test_check_contract_accepts_only_an_equal_contract_and_names_each_difference():
    assert B.check_contract(meta(), ROBOT, WHERE) == Contract.from_robot(ROBOT)
    names = list(ROBOT.joint_names)
    names[0], names[3] = names[3], names[0]
    other = replace(meta(), contract=replace(meta().contract, joint_names=tuple(names), kp=6.0))
    with pytest.raises(BundleError) as err:
        B.check_contract(other, ROBOT, WHERE)
    assert str(err.value) == (
        f"{WHERE}: made for robot 'pupper_v3' (contract {other.contract_sha256[:12]}), not for 'pupper_v3' "
        f"(contract {ROBOT.contract_sha256()[:12]}); differing fields: joint_names: bundle {names!r}, robot "
        f"{list(ROBOT.joint_names)!r}; kp: bundle 6.0, robot 5.0"
    )


# ---- the protobuf walk --------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    key = varint(number << 3 | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def entry(key: str, value: str) -> bytes:
    return field(14, 2, field(1, 2, key.encode()) + field(2, 2, value.encode()))


def test_model_sections_hash_everything_but_the_trot_entry_in_file_order():
    graph = field(7, 2, b"g" * 300)  # a length above 127: a two-byte varint
    first, rest = field(1, 0, varint(8)), field(5, 1, b"\x01" * 8) + field(6, 5, b"\x02" * 4) + entry("other", "v")
    others = first + rest
    data = first + entry("trot", '{"a":1}') + rest + graph
    digest, text = B.model_sections(data, WHERE)
    assert text == '{"a":1}' and digest == hashlib.sha256(others + graph).hexdigest()
    assert B.model_sections(others + graph, WHERE) == (hashlib.sha256(others + graph).hexdigest(), None)


@pytest.mark.parametrize("data, message", [
    (field(7, 2, b"x")[:-1], "not a readable ONNX model (malformed protobuf: field 7 runs past the end)"),
    (b"\x08\x80", "not a readable ONNX model (malformed protobuf: varint cut off at byte 2)"),
    (b"\x08" + b"\xff" * 10 + b"\x01", "not a readable ONNX model (malformed protobuf: varint cut off at byte 11)"),
    (varint(7 << 3 | 3), "not a readable ONNX model (malformed protobuf: wire type 3 at byte 0)"),
    (entry("trot", "{}") + entry("trot", "{}"), "two 'trot' entries in metadata_props; expected one"),
    (field(14, 2, field(1, 2, b"trot") + field(2, 2, b"\xff")), None),
])  # fmt: skip
def test_malformed_models_are_refused(data, message):
    with pytest.raises(BundleError) as err:
        B.model_sections(data, WHERE)
    if message is None:
        assert str(err.value).startswith(f"{WHERE}: a metadata_props entry is not UTF-8 (")
    else:
        assert str(err.value) == f"{WHERE}: {message}"


def test_read_bundle_meta_refuses_a_missing_file_or_entry(tmp_path):
    with pytest.raises(BundleError, match=r"nope\.onnx: no such bundle file$"):
        B.read_bundle_meta(tmp_path / "nope.onnx")
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(field(7, 2, b"graph"))
    with pytest.raises(BundleError) as err:
        B.read_bundle_meta(bare)
    assert str(err.value) == f"{bare}: no 'trot' entry in metadata_props; export it with `trot export`"
    good = tmp_path / "good.onnx"
    graph = field(7, 2, b"graph")
    good.write_bytes(graph + entry("trot", meta_for(graph)))
    assert B.read_bundle_meta(good).contract == Contract.from_robot(ROBOT)


def meta_for(graph_bytes: bytes) -> str:
    return replace(meta(), integrity=None).with_graph(hashlib.sha256(graph_bytes).hexdigest()).to_json()


def test_edges_the_parser_accepts():
    d = edit(kd=0)
    d["observation"].update(history=1, clip=50)
    d["joint_upper"] = [x + 0.5 for x in d["joint_lower"]]
    parsed = B.parse_metadata(json.dumps(d), WHERE)
    assert parsed.contract.kd == 0.0 and parsed.observation.history == 1 and parsed.observation.clip == 50.0
    refused(edit(joint_upper=[1.0] * 11), "metadata field 'joint_upper' has 11 values; expected 12, one per joint")
    gait = replace(meta().observation, gait_frequency_hz=1.5)
    assert gait.to_spec().gait_frequency_hz == 1.5
    with pytest.raises(ValueError) as err:
        replace(meta(), integrity=None).to_json()
    assert str(err.value) == "BundleMeta.to_json: no integrity hashes yet; call with_graph(graph_sha256) first"


@pytest.mark.parametrize("data, message", [
    (b"\x80", "not a readable ONNX model (malformed protobuf: varint cut off at byte 1)"),  # the key
    (b"\x3a\x80", "not a readable ONNX model (malformed protobuf: varint cut off at byte 2)"),  # a length
    (field(14, 2, b"\x80"), "not a readable ONNX model (malformed protobuf: varint cut off at byte 1)"),  # an entry
])  # fmt: skip
def test_every_malformed_varint_names_the_file(data, message):
    with pytest.raises(BundleError) as err:
        B.model_sections(data, WHERE)
    assert str(err.value) == f"{WHERE}: {message}"


def test_fixed_width_fields_are_skipped_by_their_width():
    # A fixed64 whose bytes look like fields, then a fixed32, then the entry: read at the wrong width, the walk
    # would take the entry for something else.
    fixed = field(5, 1, field(14, 2, b"")[:2] + b"\x00" * 6) + field(6, 5, b"\x0a\x00\x00\x00")
    data = fixed + entry("trot", "{}") + field(7, 2, b"g")
    assert B.model_sections(data, WHERE) == (hashlib.sha256(fixed + field(7, 2, b"g")).hexdigest(), "{}")
    # A fixed64 whose last four bytes, read as the start of a field, would swallow the entry behind it.
    tail = entry("trot", "{}")
    trap = field(5, 1, b"\x00" * 4 + b"\x0a" + bytes([2 + len(tail)]) + b"\x00\x00")
    assert B.model_sections(trap + tail, WHERE) == (hashlib.sha256(trap).hexdigest(), "{}")
    with pytest.raises(BundleError, match=r"^bundle: not a readable ONNX model"):  # the default `where`
        B.model_sections(b"\x80")
    key_only = field(14, 2, field(1, 2, b"trot"))  # an entry without a value field: the value is ""
    assert B.model_sections(key_only, WHERE) == (hashlib.sha256(b"").hexdigest(), "")


def test_read_bundle_meta_names_the_file_in_every_refusal(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x80")
    with pytest.raises(BundleError, match=rf"^{broken}: not a readable ONNX model"):
        B.read_bundle_meta(broken)
    graph = field(7, 2, b"graph")
    edited = tmp_path / "edited.onnx"
    edited.write_bytes(graph + entry("trot", json.dumps(edit(kp=9.5))))
    with pytest.raises(BundleError, match=rf"^{edited}: "):
        B.read_bundle_meta(edited)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(graph + entry("trot", json.dumps(edit(kp=-1))))
    with pytest.raises(BundleError, match=rf"^{bad}: metadata field 'kp' = -1"):
        B.read_bundle_meta(bad)
