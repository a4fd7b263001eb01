"""The CRC-32 that Unitree's LowCmd and LowState carry, and the bytes it covers.

unitree_sdk2 computes `crc32_core((uint32_t *)&msg, (sizeof(msg) >> 2) - 1)`: the CRC runs over the
message's C++ struct in memory, not over its CDR bytes, as 32-bit little-endian words, all but the
last (the `crc` field itself). The C layout aligns every member to its size and pads each struct to
its alignment, so it differs from CDR's: LowCmd is 812 bytes in memory (its motor array starts at
offset 24) and 808 in CDR (offset 22). `struct_bytes` builds that layout, padding zeroed, from the
IDL declarations in `msgs`.

`crc32_core` is CRC-32 with polynomial 0x04C11DB7, initial value 0xFFFFFFFF, no reflection and no
final XOR (CRC-32/MPEG-2), fed each word most significant bit first.
"""

from __future__ import annotations

import struct
import typing
import zlib
from functools import cache

import numpy as np
from cyclonedds.idl import IdlStruct
from cyclonedds.idl import types as t

_PRIMITIVE = {  # cyclonedds annotation name -> struct code (its size is its C alignment)
    "byte": "B",
    "uint8": "B",
    "int8": "b",
    "uint16": "H",
    "int16": "h",
    "uint32": "I",
    "int32": "i",
    "float32": "f",
}


# zlib computes the reflected twin of this CRC (CRC-32/ISO-HDLC: same polynomial and initial value,
# bits least significant first, final XOR 0xFFFFFFFF). Fed bit-reversed bytes, its result is the
# bit-reversed MPEG-2 register XOR 0xFFFFFFFF, so one C call does the work of 8 shifts per byte.
_REFLECT8 = np.array([int(f"{i:08b}"[::-1], 2) for i in range(256)], dtype=np.uint8)


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 of a byte string (check value: 0x0376E6E7 for b"123456789")."""
    reflected = zlib.crc32(_REFLECT8[np.frombuffer(data, dtype=np.uint8)].tobytes())
    return int(f"{reflected:032b}"[::-1], 2) ^ 0xFFFFFFFF


def crc32_core(words) -> int:
    """Unitree's crc32_core over 32-bit words: each word's bits most significant first."""
    return crc32_mpeg2(np.asarray(words, dtype=">u4").tobytes())


def _kind(annotation) -> tuple[str, object, int | None]:
    """('prim', struct code, None), ('struct', class, None), or either with an array length."""
    args = typing.get_args(annotation)
    if len(args) == 2 and isinstance(args[1], t.array):
        kind, inner, _ = _kind(args[1].subtype)
        return kind, inner, args[1].length
    if len(args) == 2 and args[1] in _PRIMITIVE:
        return "prim", _PRIMITIVE[args[1]], None
    if isinstance(annotation, type) and issubclass(annotation, IdlStruct):
        return "struct", annotation, None
    raise TypeError(f"no C layout for the IDL type {annotation!r}")


@cache
def _fields(cls: type) -> tuple[tuple[str, str, object, int], ...]:
    """(name, kind, struct code or class, array length or None) of each field of an IDL struct, in order."""
    return tuple((name, *_kind(a)) for name, a in typing.get_type_hints(cls, include_extras=True).items())


@cache
def c_layout(cls: type) -> tuple[str, int, int]:
    """(struct format without byte order, size, alignment) of an IDL struct as a C compiler lays it out."""
    fmt, offset, align = [], 0, 1
    for _, kind, inner, length in _fields(cls):
        if kind == "prim":
            code, size, member_align = inner, struct.calcsize(inner), struct.calcsize(inner)
        else:
            code, size, member_align = c_layout(inner)
        count = 1 if length is None else length
        pad = -offset % member_align
        fmt.append(f"{pad}x" * bool(pad) + code * count)
        offset += pad + size * count
        align = max(align, member_align)
    tail = -offset % align
    return "".join(fmt) + f"{tail}x" * bool(tail), offset + tail, align


def _values(msg: IdlStruct) -> list:
    """The message's field values in declaration order, nested structs and arrays flattened."""
    out = []
    for name, kind, _, length in _fields(type(msg)):
        value = getattr(msg, name)
        items = [value] if length is None else list(value)
        if length is not None and len(items) != length:
            raise ValueError(f"{type(msg).__name__}.{name}: {len(items)} values; expected {length} (the IDL's size)")
        for item in items:
            out.extend(_values(item) if kind == "struct" else [item])
    return out


def struct_bytes(msg: IdlStruct) -> bytes:
    """The message as unitree_sdk2's C++ struct holds it in memory (little-endian, padding zero)."""
    fmt, _, _ = c_layout(type(msg))
    return struct.pack("<" + fmt, *_values(msg))


def message_crc(msg: IdlStruct) -> int:
    """The CRC a LowCmd or LowState carries: crc32_core over its C layout, less the final crc word."""
    raw = struct_bytes(msg)
    return crc32_core(np.frombuffer(raw[:-4], dtype="<u4"))


def stamp_crc(msg: IdlStruct) -> IdlStruct:
    """Set `msg.crc` to its CRC; returns the same message."""
    msg.crc = message_crc(msg)
    return msg


def crc_ok(msg: IdlStruct) -> bool:
    """Whether a received message's crc field matches its contents."""
    return msg.crc == message_crc(msg)
