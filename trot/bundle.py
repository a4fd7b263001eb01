"""The policy bundle's metadata (DESIGN contract 3): one typed schema, one writer, one parser.

A bundle is one ONNX file; its `metadata_props` entry `trot` holds the JSON this module writes
(`BundleMeta.to_json`) and parses (`parse_metadata`). The robot contract's fields are stored once, at the
top level (`robot` holds only the name and the contract's hash), and the `integrity` field holds a hash
of the ONNX model without that entry (graph and weights) and one of every other metadata field, so that
any loader can say whether the weights or which field changed since export (`verify_integrity`).

Standard library (and numpy through `trot.robots`) only: the robot reads its bundle without the `onnx`
package; `model_sections` walks the protobuf wire format of the file's top-level fields instead.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from trot.mapping import OBS_VOCABULARY
from trot.robots import MODEL_NOTICES, contract_sha256, model_differences

FORMAT_VERSION = 4  # 4: the robot model the policy was trained on (3: per-joint limits; 2: one number each)
METADATA_KEY = "trot"
OBS_ORDER = "newest_first"
COMMAND_AXES = ("vx", "vy", "yaw_rate")
# ModelProto field numbers (onnx.proto): metadata_props is `repeated StringStringEntryProto`, field 14.
_METADATA_PROPS = 14
# Why an older bundle is refused: none of them says which body it was trained on, so none can be upgraded.
OLD_FORMAT_REASON = (
    "format 4 binds a policy to the robot model it was trained on (the contract's model_sha256 and the "
    "robot_model field), and an older bundle cannot say which body that was"
)
RETRAIN_HINT = "retrain (`trot train --robot NAME`) and export the new run (`trot export RUN -o NEW.onnx`)"


class BundleError(ValueError):
    """A bundle that can't be run: unreadable, malformed or altered metadata, or made for another robot."""


# ---- the schema -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contract:
    """The robot contract a policy was trained for: exactly the fields of `Robot.contract()`.

    `torque_limit` and `velocity_limit` always hold one value per joint (format 3), even where a robot.toml
    writes one number: every consumer clips per joint, and each robot has one form, so one hash.
    """

    name: str
    joint_names: tuple[str, ...]
    default_joint_pos: tuple[float, ...]
    joint_lower: tuple[float, ...]
    joint_upper: tuple[float, ...]
    kp: float
    kd: float
    action_scale: float
    action_clip: float
    torque_limit: tuple[float, ...]  # N·m, per joint
    velocity_limit: tuple[float, ...]  # rad/s, per joint
    control_dt: float
    physics_dt: float
    model_sha256: str  # digest of the robot model (kinematics, inertia, collision, motor) the policy was trained on

    @classmethod
    def from_robot(cls, robot) -> Contract:
        """The contract of a loaded `trot.robots.Robot`."""
        return parse_contract(robot.contract(), "robot")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def to_dict(self) -> dict:
        """Plain JSON values, equal to `Robot.contract()` for the same robot."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def sha256(self) -> str:
        """The contract hash (`trot.robots.contract_sha256` of `to_dict()`)."""
        return contract_sha256(self.to_dict())

    def differences(self, other: Contract) -> list[str]:
        """'field: bundle X, robot Y' for each field where `other` (the robot's) differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: bundle {mine[k]!r}, robot {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]


def per_joint_text(values) -> str:
    """A per-joint value for people: '3 (every joint)' when uniform, else the list."""
    values = list(values)
    return f"{values[0]:g} (every joint)" if len(set(values)) == 1 else "[" + ", ".join(f"{v:g}" for v in values) + "]"


@dataclass(frozen=True)
class ObsTerm:
    name: str  # a `trot.mapping.OBS_VOCABULARY` name
    size: int
    scale: float


@dataclass(frozen=True)
class Observation:
    """What the graph's input is: the terms in order (each times its scale), `history` frames, newest first."""

    terms: tuple[ObsTerm, ...]
    history: int
    gait_frequency_hz: float = 0.0
    clip: float = 100.0  # the observation is clipped to ±clip after scaling
    order: str = OBS_ORDER

    @property
    def frame_size(self) -> int:
        return sum(t.size for t in self.terms)

    @property
    def size(self) -> int:
        return self.frame_size * self.history

    def to_spec(self):
        """The `trot.mapping.ObsSpec` that builds this observation."""
        from trot.mapping import ObsSpec
        from trot.mapping import ObsTerm as SpecTerm

        return ObsSpec(tuple(SpecTerm(t.name, t.scale) for t in self.terms), self.history, self.gait_frequency_hz)


@dataclass(frozen=True)
class Commands:
    """The velocity command ranges the policy was trained on, [min, max] each."""

    vx: tuple[float, float]
    vy: tuple[float, float]
    yaw_rate: tuple[float, float]


@dataclass(frozen=True)
class Training:
    """Where the weights came from (not used to run the policy, but covered by the integrity hash)."""

    run: str = ""
    iterations: int = 0
    env_steps: int = 0
    code_revision: str = "unknown"
    created: str = ""
    task: str = ""


@dataclass(frozen=True)
class Integrity:
    """Hashes taken at export: the ONNX model without the `trot` entry, and each other metadata field."""

    graph_sha256: str
    fields_sha256: dict  # metadata field name -> sha256 of its canonical JSON


@dataclass(frozen=True)
class BundleMeta:
    """Everything the `trot` metadata entry says, typed."""

    contract: Contract
    observation: Observation
    commands: Commands
    training: Training
    robot_model: dict  # `Robot.model` of the body trained on; hashes to contract.model_sha256
    integrity: Integrity | None = None  # None only while a writer builds it
    # robot.contract_sha256 as the file states it (None: as the contract hashes); checked by verify_integrity
    stated_contract_sha256: str | None = field(default=None, compare=False)

    @property
    def contract_sha256(self) -> str:
        return self.contract.sha256()

    def fields_json(self) -> dict:
        """Every metadata field but `integrity`, as the JSON layout of DESIGN contract 3."""
        c = self.contract.to_dict()
        name = c.pop("name")
        obs = asdict(self.observation)
        return {
            "format_version": FORMAT_VERSION,
            "robot": {"name": name, "contract_sha256": self.stated_contract_sha256 or self.contract.sha256()},
            **c,
            "observation": obs,
            "commands": {k: list(getattr(self.commands, k)) for k in COMMAND_AXES},
            "training": asdict(self.training),
            "robot_model": self.robot_model,
        }

    def with_graph(self, graph_sha256: str) -> BundleMeta:
        """This metadata with its integrity hashes for a model whose graph hashes to `graph_sha256`."""
        fresh = BundleMeta(self.contract, self.observation, self.commands, self.training, self.robot_model)
        return BundleMeta(self.contract, self.observation, self.commands, self.training, self.robot_model,
                          Integrity(graph_sha256, field_hashes(fresh.fields_json())))  # fmt: skip

    def to_json(self) -> str:
        """The `trot` metadata_props value (compact JSON); needs `with_graph` first."""
        if self.integrity is None:
            raise ValueError("BundleMeta.to_json: no integrity hashes yet; call with_graph(graph_sha256) first")
        doc = self.fields_json()
        doc["integrity"] = asdict(self.integrity)
        return json.dumps(doc, separators=(",", ":"), allow_nan=False)


# ---- hashing ----------------------------------------------------------------------------------------


def canonical_json(value) -> str:
    """The one text a JSON value hashes as: sorted keys, no whitespace, ASCII, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def field_hashes(doc: dict) -> dict:
    """sha256 of each field's canonical JSON."""
    return {k: hashlib.sha256(canonical_json(v).encode()).hexdigest() for k, v in sorted(doc.items())}


def _varint(data: bytes, i: int, where: str) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(data) or shift > 63:
            raise BundleError(f"{where}: not a readable ONNX model (malformed protobuf: varint cut off at byte {i})")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7


def _protobuf_fields(data: bytes, where: str):
    """(field number, start, value start, end) of each field of one protobuf message, in file order."""
    i = 0
    while i < len(data):
        start = i
        key, i = _varint(data, i, where)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(data, i, where)
            value = i
        elif wire == 1 or wire == 5:
            value = i
            i += 8 if wire == 1 else 4
        elif wire == 2:
            length, value = _varint(data, i, where)
            i = value + length
        else:
            raise BundleError(f"{where}: not a readable ONNX model (malformed protobuf: wire type {wire} at byte "
                              f"{start})")  # fmt: skip
        if i > len(data):
            raise BundleError(f"{where}: not a readable ONNX model (malformed protobuf: field {number} runs past "
                              "the end)")  # fmt: skip
        yield number, start, value, i


def _entry(data: bytes, where: str) -> tuple[str, str]:
    """(key, value) of a StringStringEntryProto."""
    out = {1: "", 2: ""}
    for number, _, value, end in _protobuf_fields(data, where):
        if number in out:
            try:
                out[number] = data[value:end].decode("utf-8")
            except UnicodeDecodeError as e:
                raise BundleError(f"{where}: a metadata_props entry is not UTF-8 ({e})") from e
    return out[1], out[2]


def model_sections(data: bytes, where: str = "bundle") -> tuple[str, str | None]:
    """(graph_sha256, the `trot` metadata text or None) of a serialized ONNX ModelProto.

    graph_sha256 is the sha256 of every top-level field but the `trot` metadata entry, in file order:
    the file's bytes as they would be with that entry removed (graph, weights, opsets, other metadata).
    """
    digest, text = hashlib.sha256(), None
    view = memoryview(data)
    for number, start, value, end in _protobuf_fields(data, where):
        if number == _METADATA_PROPS:
            key, entry_value = _entry(bytes(view[value:end]), where)
            if key == METADATA_KEY:
                if text is not None:
                    raise BundleError(f"{where}: two '{METADATA_KEY}' entries in metadata_props; expected one")
                text = entry_value
                continue
        digest.update(view[start:end])
    return digest.hexdigest(), text


# ---- parsing ----------------------------------------------------------------------------------------


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive(v) -> bool:
    return _number(v) and v > 0


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _fail(where: str, name: str, value, expected: str):
    raise BundleError(f"{where}: metadata field '{name}' = {value!r}; expected {expected}")


def _take(doc: dict, name: str, ok, expected: str, where: str):
    if name not in doc:
        raise BundleError(f"{where}: metadata field '{name}' is missing; expected {expected}")
    if not ok(doc[name]):
        _fail(where, name, doc[name], expected)
    return doc[name]


def _floats(doc: dict, name: str, n: int | None, where: str) -> tuple[float, ...]:
    expected = f"a list of {n} numbers, one per joint" if n else "a list of numbers"
    value = _take(doc, name, lambda v: isinstance(v, list) and all(_number(x) for x in v), expected, where)
    if n is not None and len(value) != n:
        raise BundleError(f"{where}: metadata field '{name}' has {len(value)} values; expected {n}, one per joint")
    return tuple(float(x) for x in value)


def parse_contract(doc: dict, where: str, name: str | None = None) -> Contract:
    """A Contract from a dict holding its fields (the metadata's top level, or `Robot.contract()`)."""
    names = _take(doc, "joint_names", lambda v: isinstance(v, list) and v and all(isinstance(s, str) for s in v),
                  "a non-empty list of joint names", where)  # fmt: skip
    if len(set(names)) != len(names):
        _fail(where, "joint_names", names, "unique joint names")
    n = len(names)
    positive = {k: float(_take(doc, k, _positive, "a positive number", where))
                for k in ("kp", "action_scale", "action_clip")}  # fmt: skip
    limits = {k: _floats(doc, k, n, where) for k in ("torque_limit", "velocity_limit")}
    for k, values in limits.items():
        if not all(v > 0 for v in values):
            _fail(where, k, list(values), f"a list of {n} positive numbers, one per joint")
    kd = float(_take(doc, "kd", lambda v: _number(v) and v >= 0, "a non-negative number", where))
    dts = {k: float(_take(doc, k, _positive, "a positive number of seconds", where))
           for k in ("control_dt", "physics_dt")}  # fmt: skip
    lower, upper = _floats(doc, "joint_lower", n, where), _floats(doc, "joint_upper", n, where)
    if any(lo >= hi for lo, hi in zip(lower, upper)):
        _fail(where, "joint_upper", list(upper), "each above its joint_lower")
    model_sha256 = _take(doc, "model_sha256", _hex64, "64 hex digits: the digest of the robot model", where)
    return Contract(
        name=name if name is not None else doc["name"],
        joint_names=tuple(names),
        default_joint_pos=_floats(doc, "default_joint_pos", n, where),
        joint_lower=lower,
        joint_upper=upper,
        kd=kd,
        **positive,
        **limits,
        **dts,
        model_sha256=model_sha256,
    )


def parse_observation(doc: dict, n: int, where: str) -> Observation:
    expected = "{'terms': [{'name', 'size', 'scale'}...], 'history': int >= 1, 'order': 'newest_first', ...}"
    obs = _take(doc, "observation", lambda v: isinstance(v, dict), expected, where)
    known = {f.name for f in fields(Observation)}
    if set(obs) - known:
        _fail(where, "observation", sorted(set(obs) - known), f"only the keys {sorted(known)}")
    terms = []
    for i, t in enumerate(_take(obs, "terms", lambda v: isinstance(v, list) and v, "a non-empty list", where)):
        field_name = f"observation.terms[{i}]"
        if not (isinstance(t, dict) and set(t) == {"name", "size", "scale"}):
            _fail(where, field_name, t, "{'name': str, 'size': int, 'scale': number}")
        if t["name"] not in OBS_VOCABULARY:
            _fail(where, field_name + ".name", t["name"], f"one of {sorted(OBS_VOCABULARY)}")
        size = OBS_VOCABULARY[t["name"]][0](n)
        if t["size"] != size or isinstance(t["size"], bool):
            _fail(where, field_name + ".size", t["size"], f"{size} for {t['name']} with {n} joints")
        if not _number(t["scale"]):
            _fail(where, field_name + ".scale", t["scale"], "a finite number")
        terms.append(ObsTerm(t["name"], size, float(t["scale"])))
    history = _take(obs, "history", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                    "an integer >= 1", where)  # fmt: skip
    if obs.get("order", OBS_ORDER) != OBS_ORDER:
        _fail(where, "observation.order", obs["order"], f"'{OBS_ORDER}'")
    gait = obs.get("gait_frequency_hz", 0.0)
    if not (_number(gait) and gait >= 0):
        _fail(where, "observation.gait_frequency_hz", gait, "a non-negative number")
    if any(t.name == "gait_phase" for t in terms) and not gait > 0:
        _fail(where, "observation.gait_frequency_hz", gait, "> 0 with a gait_phase term")
    clip = obs.get("clip", 100.0)
    if not _positive(clip):
        _fail(where, "observation.clip", clip, "a positive number")
    return Observation(tuple(terms), history, float(gait), float(clip))


def parse_commands(doc: dict, where: str) -> Commands:
    expected = "{'vx': [min, max], 'vy': [min, max], 'yaw_rate': [min, max]}"
    c = _take(doc, "commands", lambda v: isinstance(v, dict) and set(v) == set(COMMAND_AXES), expected, where)
    ranges = {}
    for k in COMMAND_AXES:
        r = c[k]
        if not (isinstance(r, list) and len(r) == 2 and all(_number(x) for x in r) and r[0] <= r[1]):
            _fail(where, f"commands.{k}", r, "[min, max] with min <= max")
        ranges[k] = (float(r[0]), float(r[1]))
    return Commands(**ranges)


def parse_training(doc: dict, where: str) -> Training:
    t = _take(doc, "training", lambda v: isinstance(v, dict), "an object with run, iterations, env_steps, ...", where)
    kinds = {f.name: (int if f.type == "int" else str) for f in fields(Training)}
    for key, value in t.items():
        if key not in kinds:
            _fail(where, f"training.{key}", value, f"only the keys {sorted(kinds)}")
        if not isinstance(value, kinds[key]) or isinstance(value, bool):
            _fail(where, f"training.{key}", value, f"a{'n int' if kinds[key] is int else ' string'}")
    return Training(**t)


def parse_integrity(doc: dict, where: str) -> Integrity:
    expected = "{'graph_sha256': hex, 'fields_sha256': {field: hex}} (written by `trot export`)"
    i = _take(doc, "integrity", lambda v: isinstance(v, dict) and set(v) == {"graph_sha256", "fields_sha256"},
              expected, where)  # fmt: skip
    if not (_hex64(i["graph_sha256"]) and isinstance(i["fields_sha256"], dict)
            and all(_hex64(v) for v in i["fields_sha256"].values())):  # fmt: skip
        _fail(where, "integrity", i, expected)
    return Integrity(i["graph_sha256"], dict(i["fields_sha256"]))


def _hex64(v) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


_TOP_LEVEL = ("format_version", "robot", *(f.name for f in fields(Contract) if f.name != "name"),
              "observation", "commands", "training", "robot_model", "integrity")  # fmt: skip


def parse_robot_model(doc: dict, contract: Contract, where: str) -> dict:
    """The `robot_model` field, once it hashes to the contract's model_sha256."""
    model = _take(doc, "robot_model", lambda v: isinstance(v, dict) and {"joints", "links"} <= set(v),
                  "the robot model trained on ({'joints': ..., 'links': ..., 'motor': ..., 'foot_radius': ...})",
                  where)  # fmt: skip
    if contract_sha256(model) != contract.model_sha256:
        raise BundleError(f"{where}: metadata field 'robot_model' hashes to {contract_sha256(model)[:12]}…, not to "
                          f"the model_sha256 {contract.model_sha256[:12]}…: the model was edited")  # fmt: skip
    return model


def parse_metadata(text: str, where: str) -> BundleMeta:
    """The typed metadata from the `trot` entry's JSON; BundleError naming the field and what was expected."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise BundleError(f"{where}: metadata '{METADATA_KEY}' is not valid JSON ({e})") from e
    if not isinstance(doc, dict):
        raise BundleError(f"{where}: metadata '{METADATA_KEY}' is not a JSON object")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and 1 <= version < FORMAT_VERSION:
            robot = doc.get("robot") if isinstance(doc.get("robot"), dict) else {}
            name = robot.get("name") if isinstance(robot.get("name"), str) else "?"
            notice = MODEL_NOTICES.get(name, RETRAIN_HINT.replace("NAME", name))
            raise BundleError(f"{where}: metadata format_version {version} is no longer read: {OLD_FORMAT_REASON}. "
                              f"Robot '{name}': {notice}")  # fmt: skip
        _fail(where, "format_version", version, f"the integer {FORMAT_VERSION}")
    unknown = sorted(set(doc) - set(_TOP_LEVEL))
    if unknown:
        raise BundleError(f"{where}: metadata fields {unknown} are not part of format {FORMAT_VERSION}; "
                          f"expected only {list(_TOP_LEVEL)}")  # fmt: skip
    robot = _take(doc, "robot", lambda v: isinstance(v, dict) and set(v) == {"name", "contract_sha256"}
                  and isinstance(v["name"], str) and v["name"] and _hex64(v["contract_sha256"]),
                  "{'name': str, 'contract_sha256': 64 hex digits}", where)  # fmt: skip
    contract = parse_contract(doc, where, name=robot["name"])
    return BundleMeta(contract, parse_observation(doc, contract.num_joints, where), parse_commands(doc, where),
                      parse_training(doc, where), parse_robot_model(doc, contract, where), parse_integrity(doc, where),
                      robot["contract_sha256"])  # fmt: skip


def verify_integrity(meta: BundleMeta, graph_sha256: str, where: str) -> None:
    """Refuse a bundle whose graph or a metadata field changed since export, naming which; then one whose
    stated contract hash is not the hash of its contract fields."""
    if graph_sha256 != meta.integrity.graph_sha256:
        raise BundleError(
            f"{where}: the ONNX graph or weights changed since export (sha256 {graph_sha256[:12]}…, "
            f"recorded {meta.integrity.graph_sha256[:12]}…); the policy would not act as it was trained to"
        )
    recorded, now = meta.integrity.fields_sha256, field_hashes(meta.fields_json())
    changed = [k for k in now if recorded.get(k) != now[k]]
    changed += [k for k in recorded if k not in now]
    if changed:
        raise BundleError(
            f"{where}: metadata field{'s' if len(changed) > 1 else ''} {', '.join(repr(k) for k in changed)} "
            "changed since export (integrity hash differs); re-export the bundle rather than editing it"
        )
    stated, computed = meta.stated_contract_sha256, meta.contract.sha256()
    if stated is not None and stated != computed:
        raise BundleError(
            f"{where}: metadata field 'robot.contract_sha256' = {stated[:12]}… does not match the contract fields "
            f"stored in the bundle (they hash to {computed[:12]}…): a contract field was edited"
        )


def read_bundle_meta(path: str | Path) -> BundleMeta:
    """Read, parse and verify a bundle file's metadata (no onnx or onnxruntime needed)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    graph, text = model_sections(path.read_bytes(), str(path))
    if text is None:
        raise BundleError(f"{path}: no '{METADATA_KEY}' entry in metadata_props; export it with `trot export`")
    meta = parse_metadata(text, str(path))
    verify_integrity(meta, graph, str(path))
    return meta


def check_contract(meta: BundleMeta, robot, where: str) -> Contract:
    """The bundle's contract once it equals `robot`'s, field by field; BundleError naming the fields that differ."""
    mine = Contract.from_robot(robot)
    if meta.contract == mine:
        return meta.contract
    if meta.contract.name == robot.name and meta.contract.model_sha256 != mine.model_sha256:
        notice = MODEL_NOTICES.get(robot.name, RETRAIN_HINT.replace("NAME", robot.name))
        raise BundleError(
            f"{where}: trained on another body than the '{robot.name}' here: robot model "
            f"{meta.contract.model_sha256[:12]} in the bundle, {mine.model_sha256[:12]} here ({robot.urdf_path.name} "
            f"and robot.toml); what differs: {'; '.join(model_differences(meta.robot_model, robot.model))}. A policy "
            f"runs only on the body it was trained on: {notice}"
        )
    raise BundleError(
        f"{where}: made for robot '{meta.contract.name}' (contract {meta.contract_sha256[:12]}), not for "
        f"'{robot.name}' (contract {mine.sha256()[:12]}); differing fields: "
        + "; ".join(meta.contract.differences(mine))
    )
