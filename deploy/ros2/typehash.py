"""ROS 2 type hashes (REP-2011, `RIHS01_<sha256>`) of the message types trot speaks, and the endpoint
USER_DATA that `rmw_cyclonedds_cpp` announces them with (`typehash=RIHS01_<hex>;`, since ROS 2 Iron).

The type descriptions are built from the IDL structs of `msgs` (field names, order and types; nested
types by their ROS name), so the hash checks those structs against ROS's own definitions: a field of
the wrong type or in the wrong place gives another hash. A description is the REP's
`TypeDescription`: the type's fields and every type it references (sorted by name), each field as
(name, type id, array capacity, string capacity, nested type name); the hash is the sha256 of that
object as JSON with ", " and ": " separators, keys in that order, default values left out.
Standard library and `cyclonedds.idl` introspection only.
"""

from __future__ import annotations

import hashlib
import json
import typing

from cyclonedds.idl import types as t

RIHS01_PREFIX = "RIHS01_"
# type_description_interfaces/msg/FieldType ids: the base types, then + 48 for arrays, + 96 for bounded and
# + 144 for unbounded sequences of them.
_NESTED, _BYTE = 1, 16
_BASE_IDS = {"int8": 2, "uint8": 3, "int16": 4, "uint16": 5, "int32": 6, "uint32": 7, "int64": 8, "uint64": 9,
             "float32": 10, "float64": 11, "bool": 15, "byte": _BYTE, "str": 17}  # fmt: skip
_ARRAY, _BOUNDED_SEQUENCE, _SEQUENCE = 48, 96, 144
# Fields a .msg declares `byte`: ROS's description says BYTE, while the DDS type `rmw_cyclonedds_cpp` puts on
# the wire (and announces in its XTypes type information) is uint8, which is what `msgs` declares.
ROS_BYTE_FIELDS = {("diagnostic_msgs/msg/DiagnosticStatus", "level")}


def ros_type_name(struct: type) -> str:
    """'sensor_msgs/msg/Imu' from the DDS type name 'sensor_msgs::msg::dds_::Imu_'."""
    package, kind, _, name = struct.__idl_typename__.split("::")
    return f"{package}/{kind}/{name.removesuffix('_')}"


def _base(annotation) -> tuple[int, str]:
    """(type id, nested type name) of a field's element type."""
    if isinstance(annotation, type) and hasattr(annotation, "__idl_typename__"):
        return _NESTED, ros_type_name(annotation)
    if annotation is str:
        return _BASE_IDS["str"], ""
    if annotation is bool:
        return _BASE_IDS["bool"], ""
    metadata = getattr(annotation, "__metadata__", ())
    if metadata and isinstance(metadata[0], str) and metadata[0] in _BASE_IDS:
        return _BASE_IDS[metadata[0]], ""
    raise ValueError(f"no ROS 2 field type for {annotation!r}")


def _field_type(annotation) -> dict:
    """The REP-2011 FieldType of one field annotation of an IDL struct."""
    holder = (getattr(annotation, "__metadata__", ()) or (None,))[0]
    if isinstance(holder, t.array):
        type_id, nested = _base(holder.subtype)
        return {"type_id": type_id + _ARRAY, "capacity": holder.length, "string_capacity": 0,
                "nested_type_name": nested}  # fmt: skip
    if isinstance(holder, t.sequence):
        type_id, nested = _base(holder.subtype)
        offset = _SEQUENCE if holder.max_length is None else _BOUNDED_SEQUENCE
        return {"type_id": type_id + offset, "capacity": holder.max_length or 0, "string_capacity": 0,
                "nested_type_name": nested}  # fmt: skip
    type_id, nested = _base(annotation)
    return {"type_id": type_id, "capacity": 0, "string_capacity": 0, "nested_type_name": nested}


def individual_description(struct: type) -> dict:
    """One type's fields, in declaration order."""
    name = ros_type_name(struct)
    fields = []
    for field, annotation in typing.get_type_hints(struct, include_extras=True).items():
        if field.startswith("_") or typing.get_origin(annotation) is typing.ClassVar:
            continue
        field_type = _field_type(annotation)
        if (name, field) in ROS_BYTE_FIELDS:
            field_type["type_id"] = _BYTE + field_type["type_id"] - _BASE_IDS["uint8"]
        fields.append({"name": field, "type": field_type})
    return {"type_name": name, "fields": fields}


def _referenced(struct: type, found: dict) -> None:
    for annotation in typing.get_type_hints(struct, include_extras=True).values():
        holder = (getattr(annotation, "__metadata__", ()) or (None,))[0]
        inner = holder.subtype if isinstance(holder, (t.array, t.sequence)) else annotation
        if isinstance(inner, type) and hasattr(inner, "__idl_typename__") and ros_type_name(inner) not in found:
            found[ros_type_name(inner)] = inner
            _referenced(inner, found)


def type_description(struct: type) -> dict:
    """The full TypeDescription: the type and every type it references, sorted by name."""
    found: dict[str, type] = {}
    _referenced(struct, found)
    return {
        "type_description": individual_description(struct),
        "referenced_type_descriptions": [individual_description(found[n]) for n in sorted(found)],
    }


def type_hash(struct: type) -> str:
    """RIHS01_<sha256 hex> of the struct's type description."""
    text = json.dumps(type_description(struct), ensure_ascii=True, allow_nan=False, separators=(", ", ": "))
    return RIHS01_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


def user_data(struct: type) -> bytes:
    """The endpoint USER_DATA `rmw_cyclonedds_cpp` announces: b'typehash=RIHS01_<hex>;'."""
    return f"typehash={type_hash(struct)};".encode("ascii")
