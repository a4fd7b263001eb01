"""Unitree's Go2 low-level DDS types (`unitree_go::msg::dds_::*`) as Cyclone DDS IDL structs.

Each class follows its IDL in unitree_sdk2 (`include/unitree/idl/go2/*.hpp`, generated from the IDL
that unitree_ros2's `unitree_go/msg/*.msg` also describe) field for field, in order, with the same
fixed array sizes. Every 8-bit field is `octet` (`t.byte`), as in unitree_sdk2's generated types
(uint8_t members, XTypes kind TK_BYTE), even where the .msg files say int8 (temperatures, NTCs): a
reading below 0 arrives as 256 + value. With these kinds the structs have the same XTypes type
identifiers as Unitree's C++ types. They are @final (cyclonedds' default) and serialize as classic
little-endian CDR (XCDR1), as unitree_sdk2 does. `deploy/UNITREE.md` documents the layout.
"""

from dataclasses import dataclass, field

from cyclonedds.idl import IdlStruct
from cyclonedds.idl import types as t

LOWCMD_TOPIC = "rt/lowcmd"  # DDS topic names (ROS 2 sees them as /lowcmd, /lowstate)
LOWSTATE_TOPIC = "rt/lowstate"
NUM_MOTORS = 20  # motor slots in LowCmd/LowState; the Go2 uses 0-11
HEAD = (0xFE, 0xEF)  # LowCmd.head, as unitree_sdk2's examples set it
LEVEL_LOW = 0xFF  # LowCmd.level_flag: low-level (joint) control
MODE_SERVO = 0x01  # MotorCmd.mode: servo (PMSM/FOC) mode, the PD law below
# unitree_sdk2's "no target" values for q and dq (PosStopF, VelStopF): sent to unused motor slots.
POS_STOP = 2.146e9
VEL_STOP = 16000.0


def _zeros(n: int):
    return field(default_factory=lambda: [0] * n)


@dataclass
class MotorCmd_(IdlStruct, typename="unitree_go::msg::dds_::MotorCmd_"):
    """One motor's command; the motor applies tau + kp (q - q_m) + kd (dq - dq_m)."""

    mode: t.byte = 0
    q: t.float32 = 0.0  # rad
    dq: t.float32 = 0.0  # rad/s
    tau: t.float32 = 0.0  # N·m, feed-forward
    kp: t.float32 = 0.0  # N·m/rad
    kd: t.float32 = 0.0  # N·m·s/rad
    reserve: t.array[t.uint32, 3] = _zeros(3)


@dataclass
class BmsCmd_(IdlStruct, typename="unitree_go::msg::dds_::BmsCmd_"):
    off: t.byte = 0
    reserve: t.array[t.byte, 3] = _zeros(3)


@dataclass
class LowCmd_(IdlStruct, typename="unitree_go::msg::dds_::LowCmd_"):
    head: t.array[t.byte, 2] = _zeros(2)
    level_flag: t.byte = 0
    frame_reserve: t.byte = 0
    sn: t.array[t.uint32, 2] = _zeros(2)
    version: t.array[t.uint32, 2] = _zeros(2)
    bandwidth: t.uint16 = 0
    motor_cmd: t.array[MotorCmd_, NUM_MOTORS] = field(default_factory=lambda: [MotorCmd_() for _ in range(NUM_MOTORS)])
    bms_cmd: BmsCmd_ = field(default_factory=BmsCmd_)
    wireless_remote: t.array[t.byte, 40] = _zeros(40)
    led: t.array[t.byte, 12] = _zeros(12)
    fan: t.array[t.byte, 2] = _zeros(2)
    gpio: t.byte = 0
    reserve: t.uint32 = 0
    crc: t.uint32 = 0  # `crc.message_crc` over the C layout of everything before it


@dataclass
class IMUState_(IdlStruct, typename="unitree_go::msg::dds_::IMUState_"):
    quaternion: t.array[t.float32, 4] = _zeros(4)  # w, x, y, z: body to world
    gyroscope: t.array[t.float32, 3] = _zeros(3)  # rad/s, body frame
    accelerometer: t.array[t.float32, 3] = _zeros(3)  # m/s², body frame
    rpy: t.array[t.float32, 3] = _zeros(3)  # rad
    temperature: t.byte = 0


@dataclass
class MotorState_(IdlStruct, typename="unitree_go::msg::dds_::MotorState_"):
    mode: t.byte = 0
    q: t.float32 = 0.0  # rad
    dq: t.float32 = 0.0  # rad/s
    ddq: t.float32 = 0.0  # rad/s²
    tau_est: t.float32 = 0.0  # N·m
    q_raw: t.float32 = 0.0
    dq_raw: t.float32 = 0.0
    ddq_raw: t.float32 = 0.0
    temperature: t.byte = 0
    lost: t.uint32 = 0
    reserve: t.array[t.uint32, 2] = _zeros(2)


@dataclass
class BmsState_(IdlStruct, typename="unitree_go::msg::dds_::BmsState_"):
    version_high: t.byte = 0
    version_low: t.byte = 0
    status: t.byte = 0
    soc: t.byte = 0
    current: t.int32 = 0
    cycle: t.uint16 = 0
    bq_ntc: t.array[t.byte, 2] = _zeros(2)
    mcu_ntc: t.array[t.byte, 2] = _zeros(2)
    cell_vol: t.array[t.uint16, 15] = _zeros(15)


@dataclass
class LowState_(IdlStruct, typename="unitree_go::msg::dds_::LowState_"):
    head: t.array[t.byte, 2] = _zeros(2)
    level_flag: t.byte = 0
    frame_reserve: t.byte = 0
    sn: t.array[t.uint32, 2] = _zeros(2)
    version: t.array[t.uint32, 2] = _zeros(2)
    bandwidth: t.uint16 = 0
    imu_state: IMUState_ = field(default_factory=IMUState_)
    motor_state: t.array[MotorState_, NUM_MOTORS] = field(
        default_factory=lambda: [MotorState_() for _ in range(NUM_MOTORS)]
    )
    bms_state: BmsState_ = field(default_factory=BmsState_)
    foot_force: t.array[t.int16, 4] = _zeros(4)
    foot_force_est: t.array[t.int16, 4] = _zeros(4)
    tick: t.uint32 = 0
    wireless_remote: t.array[t.byte, 40] = _zeros(40)
    bit_flag: t.byte = 0
    adc_reel: t.float32 = 0.0
    temperature_ntc1: t.byte = 0
    temperature_ntc2: t.byte = 0
    power_v: t.float32 = 0.0
    power_a: t.float32 = 0.0
    fan_frequency: t.array[t.uint16, 4] = _zeros(4)
    reserve: t.uint32 = 0
    crc: t.uint32 = 0
