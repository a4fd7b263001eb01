"""Unitree's Go2 low-level types and its services' request/response types written out independently of trot's:
the IDL field lists, the C layout, an XCDR1 encoder and the CRC, bit by bit as Unitree publishes it; and the values
Unitree's own code gives.

Shared by tests/deploy/test_unitree_msgs.py (the types) and tests/hil/test_hil_unitree.py (the wire bytes of
the transport and the emulator). Standard library and numpy only, except `build` (trot's struct).
"""

import struct

import numpy as np

# The IDL, field by field (unitree_sdk2 include/unitree/idl/go2/*.hpp; unitree_ros2
# cyclonedds_ws/src/unitree/unitree_go/msg/*.msg): (name, type[, array size]).
IDL = {
    "MotorCmd_": [("mode", "u8"), ("q", "f32"), ("dq", "f32"), ("tau", "f32"), ("kp", "f32"), ("kd", "f32"),
                  ("reserve", "u32", 3)],
    "BmsCmd_": [("off", "u8"), ("reserve", "u8", 3)],
    "LowCmd_": [("head", "u8", 2), ("level_flag", "u8"), ("frame_reserve", "u8"), ("sn", "u32", 2),
                ("version", "u32", 2), ("bandwidth", "u16"), ("motor_cmd", "MotorCmd_", 20), ("bms_cmd", "BmsCmd_"),
                ("wireless_remote", "u8", 40), ("led", "u8", 12), ("fan", "u8", 2), ("gpio", "u8"),
                ("reserve", "u32"), ("crc", "u32")],
    "IMUState_": [("quaternion", "f32", 4), ("gyroscope", "f32", 3), ("accelerometer", "f32", 3), ("rpy", "f32", 3),
                  ("temperature", "u8")],
    "MotorState_": [("mode", "u8"), ("q", "f32"), ("dq", "f32"), ("ddq", "f32"), ("tau_est", "f32"),
                    ("q_raw", "f32"), ("dq_raw", "f32"), ("ddq_raw", "f32"), ("temperature", "u8"), ("lost", "u32"),
                    ("reserve", "u32", 2)],
    "BmsState_": [("version_high", "u8"), ("version_low", "u8"), ("status", "u8"), ("soc", "u8"), ("current", "i32"),
                  ("cycle", "u16"), ("bq_ntc", "u8", 2), ("mcu_ntc", "u8", 2), ("cell_vol", "u16", 15)],
    "LowState_": [("head", "u8", 2), ("level_flag", "u8"), ("frame_reserve", "u8"), ("sn", "u32", 2),
                  ("version", "u32", 2), ("bandwidth", "u16"), ("imu_state", "IMUState_"),
                  ("motor_state", "MotorState_", 20), ("bms_state", "BmsState_"), ("foot_force", "i16", 4),
                  ("foot_force_est", "i16", 4), ("tick", "u32"), ("wireless_remote", "u8", 40), ("bit_flag", "u8"),
                  ("adc_reel", "f32"), ("temperature_ntc1", "u8"), ("temperature_ntc2", "u8"), ("power_v", "f32"),
                  ("power_a", "f32"), ("fan_frequency", "u16", 4), ("reserve", "u32"), ("crc", "u32")],
}  # fmt: skip
# The request/response types of Unitree's services (unitree_sdk2 include/unitree/robot/internal/internal_idl_decl/
# *.hpp, commit 21d0a3b; unitree_sdk2_python unitree_sdk2py/idl/unitree_api/msg/dds_/*.py, commit 37116c5):
# "string" is an IDL string, "u8[]" an unbounded sequence of octets.
API_IDL = {
    "RequestIdentity_": [("id", "i64"), ("api_id", "i64")],
    "RequestLease_": [("id", "i64")],
    "RequestPolicy_": [("priority", "i32"), ("noreply", "bool")],
    "RequestHeader_": [("identity", "RequestIdentity_"), ("lease", "RequestLease_"), ("policy", "RequestPolicy_")],
    "Request_": [("header", "RequestHeader_"), ("parameter", "string"), ("binary", "u8[]")],
    "ResponseStatus_": [("code", "i32")],
    "ResponseHeader_": [("identity", "RequestIdentity_"), ("status", "ResponseStatus_")],
    "Response_": [("header", "ResponseHeader_"), ("data", "string"), ("binary", "u8[]")],
}
ALL_IDL = {**IDL, **API_IDL}
CODE = {"u8": "B", "i16": "h", "u16": "H", "i32": "i", "u32": "I", "f32": "f", "i64": "q", "bool": "?"}

# The structs as unitree_sdk2's C++ compiler lays them out (members at multiples of their size, each
# struct padded to 4), written out by hand from the IDL above: 812 and 1180 bytes.
C_FORMAT = {
    "LowCmd_": "<2BBB2I2IH2x" + "B3x5f3I" * 20 + "B3B" + "40B12B2BBx" + "II",
    "LowState_": "<2BBB2I2IH2x" + "13fB3x" + "B3x7fB3xI2I" * 20 + "4BiH2B2B15H" + "4h4hI40BB3xfBB2xff4HII",
}

# XTypes TypeIdentifier hashes (minimal, complete) from the type_info_blob of unitree_sdk2's generated
# include/unitree/idl/go2/LowCmd_.hpp and LowState_.hpp (commit 21d0a3b): they cover every field's name,
# type, order and array size, the nested types' too, and the @final extensibility.
UNITREE_TYPE_IDS = {
    "LowCmd_": ("832876ceec9737d69f6ed62a3f63", "52cc8eb0d427d692aa2b20a90540"),
    "LowState_": ("853a99e23d0daa1610b65c526b40", "08f239c471d3a27e67e7c7723184"),
}
# The same, from the type_info_blob of include/unitree/robot/internal/internal_idl_decl/*.hpp (commit 21d0a3b).
UNITREE_API_TYPE_IDS = {
    "Request_": ("cba4dc965d393ada76b4de081925", "c47a4429fcbf539486498753c48f"),
    "Response_": ("48c997d379c3e18c530b5f8fe946", "d1c32cc02214901a464a6c51325d"),
    "RequestHeader_": ("fddd300ec6ac5e7a4bdaf7a4dcc7", "9b9a2d501756f60f8c9241b0eedb"),
    "ResponseHeader_": ("9c43e509d9262e25e73c21efbfee", "0f90cca0ee3b257ff8910c07eb3e"),
}

# CDR bytes unitree_sdk2_python's own types (commit 37116c5, on the cyclonedds 0.10.2 it pins) serialize for the
# SelectMode("normal") request with id 0x0102030405060708, and for a Response_ (id -5, api 1001, status 7004, data
# {"form": "0", "name": "normal"}, binary [1, 2, 250]).
UNITREE_API_BYTES = {
    "Request_": (
        "000100000807060504030201ea0300000000000000000000000000000000000000000000130000007b226e616d65223a"
        "20226e6f726d616c227d000000000000"
    ),
    "Response_": (
        "00010000fbffffffffffffffe9030000000000005c1b0000200000007b22666f726d223a202230222c20226e616d6522"
        "3a20226e6f726d616c227d00030000000102fa"
    ),
}

# CRCs that unitree_sdk2_python's CRC().Crc (its crc_amd64.so; commit 37116c5) computes for messages with
# the field values of `default` (all zero) and `sample_*` below, built with its own LowCmd_/LowState_.
UNITREE_CRC = {
    ("LowCmd_", "default"): 0x4B5A4880,
    ("LowState_", "default"): 0x85F11EA6,
    ("LowCmd_", "sample"): 0x9BBBA4B2,
    ("LowState_", "sample"): 0x380ECB2E,
}


def sample_low_cmd_fields() -> dict:
    motors = [
        dict(mode=1 if i < 12 else 0, q=0.1 * i - 0.5, dq=-0.25 * i, tau=0.5 + i, kp=20.0 + i, kd=0.5 + 0.125 * i,
             reserve=[i, 2 * i, 3 * i])
        for i in range(20)
    ]  # fmt: skip
    return dict(head=[0xFE, 0xEF], level_flag=0xFF, frame_reserve=0x12, sn=[0x01020304, 0xA0B0C0D0], version=[7, 9],
                bandwidth=0x1234, motor_cmd=motors, bms_cmd=dict(off=1, reserve=[4, 5, 6]),
                wireless_remote=list(range(40)), led=[100 + j for j in range(12)], fan=[7, 8], gpio=3,
                reserve=0xDEADBEEF, crc=0)  # fmt: skip


def sample_low_state_fields() -> dict:
    motors = [
        dict(mode=1, q=0.05 * i, dq=-0.5 * i, ddq=i * 2.0, tau_est=-1.5 + i, q_raw=0.01 * i, dq_raw=0.02 * i,
             ddq_raw=0.03 * i, temperature=30 + i, lost=i * 1000, reserve=[i, i + 1])
        for i in range(20)
    ]  # fmt: skip
    imu = dict(quaternion=[0.5, -0.5, 0.25, 0.75], gyroscope=[0.1, -0.2, 0.3], accelerometer=[0.5, -0.25, 9.75],
               rpy=[0.01, -0.02, 0.03], temperature=45)  # fmt: skip
    bms = dict(version_high=1, version_low=2, status=3, soc=87, current=-1234, cycle=321, bq_ntc=[25, 26],
               mcu_ntc=[27, 28], cell_vol=[3700 + j for j in range(15)])  # fmt: skip
    return dict(head=[0xFE, 0xEF], level_flag=0, frame_reserve=1, sn=[11, 12], version=[13, 14], bandwidth=500,
                imu_state=imu, motor_state=motors, bms_state=bms, foot_force=[10, -20, 30, -40],
                foot_force_est=[1, 2, 3, 4], tick=123456, wireless_remote=[255 - j for j in range(40)], bit_flag=5,
                adc_reel=1.25, temperature_ntc1=33, temperature_ntc2=34, power_v=28.5, power_a=-3.25,
                fan_frequency=[1000, 2000, 3000, 4000], reserve=99, crc=0)  # fmt: skip


def default_fields(type_name: str) -> dict:
    """All-zero (empty) field values of an IDL type, in the shape `sample_*_fields` use."""
    zero = {"string": "", "u8[]": [], "bool": False}
    out = {}
    for name, kind, *size in ALL_IDL[type_name]:
        one = default_fields(kind) if kind in ALL_IDL else zero.get(kind, 0)
        out[name] = [default_fields(kind) if kind in ALL_IDL else 0 for _ in range(size[0])] if size else one
    return out


def build(type_name: str, fields: dict):
    """trot's struct with these field values."""
    from trot.deploy.unitree import api_msgs, msgs

    cls = getattr(msgs if type_name in IDL else api_msgs, type_name)
    kwargs = {}
    for name, kind, *size in ALL_IDL[type_name]:
        value = fields[name]
        if kind in ALL_IDL:
            value = [build(kind, v) for v in value] if size else build(kind, value)
        kwargs[name] = value
    return cls(**kwargs)


def flat(type_name: str, fields: dict) -> list[tuple[str, object]]:
    """(type code, value) of every primitive, in IDL order."""
    out = []
    for name, kind, *size in IDL[type_name]:
        for item in fields[name] if size else [fields[name]]:
            out.extend(flat(kind, item) if kind in IDL else [(CODE[kind], item)])
    return out


def xcdr1_le(type_name: str, fields: dict) -> bytes:
    """An independent XCDR1 little-endian encoding: encapsulation CDR_LE, each primitive aligned to its size
    (8-byte integers to 8), a string as its uint32 length counting the NUL, its bytes and the NUL, a sequence as
    its uint32 length and its elements."""
    body = bytearray()

    def put(code: str, value) -> None:
        size = struct.calcsize(code)
        body.extend(bytes(-len(body) % size) + struct.pack("<" + code, value))

    def encode(kind: str, value) -> None:
        if kind in ALL_IDL:
            for name, member, *size in ALL_IDL[kind]:
                for item in value[name] if size else [value[name]]:
                    encode(member, item)
        elif kind == "string":
            raw = value.encode("utf-8") + b"\x00"
            put("I", len(raw))
            body.extend(raw)
        elif kind == "u8[]":
            put("I", len(value))
            body.extend(bytes(value))
        else:
            put(CODE[kind], value)

    encode(type_name, fields)
    return b"\x00\x01\x00\x00" + bytes(body)


def request_fields(request_id: int, api_id: int, parameter: str) -> dict:
    """A Request_ as unitree_sdk2_python's client fills it: lease 0, priority 0, a reply wanted, no binary."""
    return dict(header=dict(identity=dict(id=request_id, api_id=api_id), lease=dict(id=0),
                            policy=dict(priority=0, noreply=False)), parameter=parameter, binary=[])  # fmt: skip


def crc_bitwise(words) -> int:
    """crc32_core as published: per word, per bit from the top, shift then XOR the polynomial on the data bit."""
    crc = 0xFFFFFFFF
    for word in words:
        for bit in range(31, -1, -1):
            top = crc & 0x80000000
            crc = (crc << 1) & 0xFFFFFFFF
            if top:
                crc ^= 0x04C11DB7
            if (int(word) >> bit) & 1:
                crc ^= 0x04C11DB7
    return crc


SAMPLES = {
    "LowCmd_": sample_low_cmd_fields,
    "LowState_": sample_low_state_fields,
}




def c_words(type_name: str, fields: dict) -> np.ndarray:
    """The message as 32-bit little-endian words of its C layout (what unitree_sdk2 stamps the CRC over)."""
    return np.frombuffer(struct.pack(C_FORMAT[type_name], *(v for _, v in flat(type_name, fields))), "<u4")


def stamped(type_name: str, fields: dict) -> dict:
    """The fields with `crc` set as unitree_sdk2 sets it: crc32_core over every word but the last."""
    return {**fields, "crc": crc_bitwise(c_words(type_name, {**fields, "crc": 0})[:-1])}


POS_STOP, VEL_STOP = 2.146e9, 16000.0  # unitree_sdk2's "no target" q and dq (PosStopF, VelStopF)


def low_cmd_fields(motors: dict[int, dict]) -> dict:
    """A LowCmd as unitree_sdk2's examples build one, CRC stamped: head FE EF, low level (0xFF), every slot in
    servo mode (0x01) parked at the "no target" values, and `motors` {slot: {field: value}} on top."""
    fields = default_fields("LowCmd_")
    fields.update(head=[0xFE, 0xEF], level_flag=0xFF)
    for slot, m in enumerate(fields["motor_cmd"]):
        m.update({"mode": 0x01, "q": POS_STOP, "dq": VEL_STOP, **motors.get(slot, {})})
    return stamped("LowCmd_", fields)
