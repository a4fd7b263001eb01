"""Unitree Go2 DDS types: identity with unitree_sdk2's types, wire bytes against an independent encoding of
the IDL, the C layout and CRC against Unitree's, conversions through the hardware map, and refusals."""

import dataclasses
import struct

import numpy as np
import pytest

pytest.importorskip("cyclonedds")

from unitree_idl import (  # noqa: E402  (tests/unitree_idl.py)
    C_FORMAT,
    IDL,
    SAMPLES,
    UNITREE_CRC,
    UNITREE_TYPE_IDS,
    build,
    crc_bitwise,
    default_fields,
    flat,
    sample_low_cmd_fields,
    xcdr1_le,
)

from trot.deploy.unitree import convert, crc, msgs  # noqa: E402
from trot.robots import load_robot  # noqa: E402

GO2 = load_robot("go2")


def test_types_carry_unitree_dds_type_names_and_topics():
    names = {c.__name__: c.__idl_typename__ for c in (msgs.LowCmd_, msgs.LowState_, msgs.MotorCmd_,
             msgs.MotorState_, msgs.IMUState_, msgs.BmsCmd_, msgs.BmsState_)}  # fmt: skip
    assert names == {n: f"unitree_go::msg::dds_::{n}" for n in names}
    assert (msgs.LOWCMD_TOPIC, msgs.LOWSTATE_TOPIC) == ("rt/lowcmd", "rt/lowstate")


@pytest.mark.parametrize("type_name", sorted(IDL))
def test_field_order_follows_the_idl(type_name):
    assert list(getattr(msgs, type_name).__dataclass_fields__) == [f[0] for f in IDL[type_name]]


@pytest.mark.parametrize("type_name", sorted(UNITREE_TYPE_IDS))
def test_type_identifiers_equal_unitree_sdk2s(type_name):
    info = getattr(msgs, type_name).__idl__.get_type_info()
    minimal, complete = UNITREE_TYPE_IDS[type_name]
    assert bytes(info.minimal.typeid_with_size.type_id.value).hex() == minimal
    assert bytes(info.complete.typeid_with_size.type_id.value).hex() == complete


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_cdr_bytes_equal_an_independent_xcdr1_encoding(type_name):
    for fields in (SAMPLES[type_name](), default_fields(type_name)):
        assert build(type_name, fields).serialize() == xcdr1_le(type_name, fields)


def test_cdr_and_c_layouts_differ_where_the_motor_array_starts():
    fields = sample_low_cmd_fields()
    wire, memory = build("LowCmd_", fields).serialize()[4:], crc.struct_bytes(build("LowCmd_", fields))
    assert (len(wire), len(memory)) == (808, 812)
    assert (wire[22], memory[24]) == (1, 1)  # motor_cmd[0].mode: CDR packs it after bandwidth, C aligns it
    assert struct.unpack_from("<f", wire, 24)[0] == struct.unpack_from("<f", memory, 28)[0] == pytest.approx(-0.5)
    assert struct.unpack_from("<I", memory, 804)[0] == 0xDEADBEEF  # reserve; crc at 808


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_c_layout_equals_the_hand_written_struct_format(type_name):
    fields = SAMPLES[type_name]()
    expected = struct.pack(C_FORMAT[type_name], *(v for _, v in flat(type_name, fields)))
    assert len(expected) == {"LowCmd_": 812, "LowState_": 1180}[type_name]
    assert crc.struct_bytes(build(type_name, fields)) == expected


def test_crc32_mpeg2_gives_the_catalogue_check_value():
    assert crc.crc32_mpeg2(b"123456789") == 0x0376E6E7  # CRC RevEng catalogue, CRC-32/MPEG-2


def test_crc32_core_equals_the_bitwise_algorithm():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 202):
        words = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32)
        assert crc.crc32_core(words) == crc_bitwise(words)
    assert crc.crc32_core([0xFFFFFFFF]) == crc_bitwise([0xFFFFFFFF])


@pytest.mark.parametrize("type_name,which", sorted(UNITREE_CRC))
def test_message_crc_equals_unitree_sdk2_pythons(type_name, which):
    fields = SAMPLES[type_name]() if which == "sample" else default_fields(type_name)
    msg = build(type_name, fields)
    assert crc.message_crc(msg) == UNITREE_CRC[(type_name, which)]
    words = np.frombuffer(struct.pack(C_FORMAT[type_name], *(v for _, v in flat(type_name, fields))), "<u4")
    assert crc_bitwise(words[:-1]) == UNITREE_CRC[(type_name, which)]


def test_crc_ok_catches_a_changed_field_after_the_wire():
    msg = crc.stamp_crc(build("LowCmd_", sample_low_cmd_fields()))
    received = msgs.LowCmd_.deserialize(msg.serialize())
    assert crc.crc_ok(received)
    received.motor_cmd[3].kp += 1.0
    assert not crc.crc_ok(received)


# --- conversions through the hardware map ----------------------------------------------------------


def test_go2_policy_order_is_unitree_motor_order():
    motors = convert.MotorMap.from_robot(GO2)
    legs = [f"{leg}_{part}_joint" for leg in ("FR", "FL", "RR", "RL") for part in ("hip", "thigh", "calf")]
    assert list(GO2.joint_names) == legs  # unitree_sdk2 go2 JointIndex: FR_Hip = 0 ... RL_Calf = 11
    assert motors.index.tolist() == list(range(12))
    assert motors.sign.tolist() == [1.0] * 12 and motors.offset.tolist() == [0.0] * 12


def test_targets_fill_the_mapped_slots_and_park_the_rest():
    motors = convert.MotorMap.from_robot(GO2)
    q = np.array(GO2.default_joint_pos)
    cmd = msgs.LowCmd_.deserialize(convert.targets_to_low_cmd(motors, q, kp=25.0, kd=0.5).serialize())
    assert (bytes(cmd.head), cmd.level_flag) == (b"\xfe\xef", 0xFF)
    assert [m.mode for m in cmd.motor_cmd] == [msgs.MODE_SERVO] * 20
    np.testing.assert_allclose([m.q for m in cmd.motor_cmd[:12]], q, atol=1e-7)
    assert [(m.kp, m.kd, m.dq, m.tau) for m in cmd.motor_cmd[:12]] == [(25.0, 0.5, 0.0, 0.0)] * 12
    assert [(m.q, m.dq, m.kp, m.kd, m.tau) for m in cmd.motor_cmd[12:]] == [(2.146e9, 16000.0, 0, 0, 0)] * 8
    assert crc.crc_ok(cmd)
    back = convert.low_cmd_to_targets(cmd, motors)
    np.testing.assert_allclose(back.q, q, atol=1e-7)
    np.testing.assert_allclose(back.kp, 25.0)


def test_signs_offsets_and_slots_are_applied_both_ways():
    # Joint 0 on slot 5, mirrored, its motor reading 0.1 rad at joint zero; joint 1 on slot 0.
    motors = convert.MotorMap(index=np.array([5, 0]), sign=np.array([-1.0, 1.0]), offset=np.array([0.1, -0.2]))
    cmd = convert.targets_to_low_cmd(motors, q=[0.3, 0.5], kp=[10.0, 20.0], kd=1.0, dq=[1.0, 2.0], tau=[2.0, -1.0])
    m5, m0 = cmd.motor_cmd[5], cmd.motor_cmd[0]
    assert (m5.q, m5.dq, m5.tau, m5.kp) == pytest.approx((-0.2, -1.0, -2.0, 10.0))
    assert (m0.q, m0.dq, m0.tau, m0.kp) == pytest.approx((0.3, 2.0, -1.0, 20.0))
    back = convert.low_cmd_to_targets(cmd, motors)
    np.testing.assert_allclose(np.stack([back.q, back.dq, back.tau]), [[0.3, 0.5], [1.0, 2.0], [2.0, -1.0]], atol=1e-7)
    state = convert.arrays_to_low_state(motors, [0.3, 0.5], [1.0, 2.0], [2.0, -1.0], [1, 0, 0, 0], [0] * 3, [0] * 3)
    assert (state.motor_state[5].q, state.motor_state[5].tau_est) == pytest.approx((-0.2, -2.0))
    q, dq, tau = convert.low_state_to_joints(state, motors)
    np.testing.assert_allclose(np.stack([q, dq, tau]), [[0.3, 0.5], [1.0, 2.0], [2.0, -1.0]], atol=1e-7)


def test_damping_is_kp_zero_with_the_contracts_damping_kd():
    motors = convert.MotorMap.from_robot(GO2)
    cmd = convert.damping_low_cmd(motors, GO2.hardware["damping_kd"])
    assert [(m.kp, m.kd, m.dq, m.tau) for m in cmd.motor_cmd[:12]] == [(0.0, 3.5, 0.0, 0.0)] * 12
    assert all(m.mode == msgs.MODE_SERVO for m in cmd.motor_cmd) and crc.crc_ok(cmd)


def test_low_state_round_trips_joints_and_imu_through_the_wire():
    motors = convert.MotorMap.from_robot(GO2)
    rng = np.random.default_rng(1)
    q, dq, tau = rng.uniform(-2, 2, (3, 12))
    quat, gyro, accel = [0.9, 0.1, -0.3, 0.3], [0.5, -0.25, 0.125], [0.0, 0.5, 9.81]
    state = convert.arrays_to_low_state(motors, q, dq, tau, quat, gyro, accel, tick=77)
    received = msgs.LowState_.deserialize(state.serialize())
    assert crc.crc_ok(received) and received.tick == 77
    for got, sent in zip(convert.low_state_to_joints(received, motors), (q, dq, tau)):
        np.testing.assert_allclose(got, sent, atol=2e-7)
    for got, sent in zip(convert.low_state_to_imu(received), (quat, gyro, accel)):
        np.testing.assert_allclose(got, sent, atol=1e-6)


def test_wrong_sizes_and_values_are_refused():
    motors = convert.MotorMap.from_robot(GO2)
    with pytest.raises(ValueError, match=r"q: shape \(11,\); expected \(12,\)"):
        convert.targets_to_low_cmd(motors, np.zeros(11), kp=25.0, kd=0.5)
    with pytest.raises(ValueError, match=r"kd: shape \(2,\); expected \(12,\)"):
        convert.targets_to_low_cmd(motors, np.zeros(12), kp=25.0, kd=[0.5, 0.5])
    with pytest.raises(ValueError, match="q: .*nan.*expected finite values"):
        convert.targets_to_low_cmd(motors, np.r_[np.zeros(11), np.nan], kp=25.0, kd=0.5)
    with pytest.raises(ValueError, match=r"imu_quat: shape \(3,\); expected \(4,\)"):
        convert.arrays_to_low_state(motors, *np.zeros((3, 12)), [1, 0, 0], [0] * 3, [0] * 3)
    short = msgs.LowCmd_(motor_cmd=[msgs.MotorCmd_() for _ in range(12)])
    with pytest.raises(ValueError, match="LowCmd.motor_cmd: 12 motor slots; expected 20"):
        convert.low_cmd_to_targets(short, motors)
    with pytest.raises(ValueError, match="LowCmd_.motor_cmd: 12 values; expected 20"):
        crc.message_crc(short)
    with pytest.raises(ValueError, match="LowState.motor_state: 21 motor slots; expected 20"):
        convert.low_state_to_joints(msgs.LowState_(motor_state=[msgs.MotorState_() for _ in range(21)]), motors)


@pytest.mark.parametrize("motor_id", [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 20]])
def test_hardware_map_with_a_repeated_or_missing_slot_is_refused(motor_id):
    robot = dataclasses.replace(GO2, hardware={**GO2.hardware, "motor_id": motor_id})
    with pytest.raises(ValueError, match=r"robot.toml: field 'hardware.motor_id' = .*expected 12 distinct LowCmd"):
        convert.MotorMap.from_robot(robot)
