"""Policy-order joint arrays <-> Unitree LowCmd/LowState, through the robot contract's hardware map.

`MotorMap` says where each joint of the contract's order sits among the 20 motor slots
(`hardware.motor_id`) and how the motor's angle relates to the joint's: motor = sign * joint +
zero_offset (`hardware.joint_sign`, `hardware.zero_offset`); velocities and torques take the sign
only. Builders stamp the CRC. Arrays of the wrong size, non-finite values and messages whose motor
arrays are not 20 long are refused with a ValueError naming the field, the size and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from trot.deploy.unitree.crc import stamp_crc
from trot.deploy.unitree.msgs import (
    HEAD,
    LEVEL_LOW,
    MODE_SERVO,
    NUM_MOTORS,
    POS_STOP,
    VEL_STOP,
    IMUState_,
    LowCmd_,
    LowState_,
    MotorCmd_,
    MotorState_,
)


@dataclass(frozen=True, eq=False)
class MotorMap:
    """Motor slot, sign and zero offset of each joint, in the contract's joint order."""

    index: np.ndarray  # (J,) int, slot in LowCmd.motor_cmd / LowState.motor_state
    sign: np.ndarray  # (J,) +1.0 or -1.0
    offset: np.ndarray  # (J,) rad, the motor's angle at joint angle 0

    @classmethod
    def from_robot(cls, robot) -> MotorMap:
        """The map in `robot.hardware`; refuses slots outside 0..19 or used twice."""
        hw = robot.hardware
        index = np.asarray(hw["motor_id"], dtype=int)
        if len(set(index.tolist())) != len(index) or index.min() < 0 or index.max() >= NUM_MOTORS:
            raise ValueError(
                f"{robot.folder / 'robot.toml'}: field 'hardware.motor_id' = {index.tolist()}; "
                f"expected {len(index)} distinct LowCmd motor slots in [0, {NUM_MOTORS})"
            )
        return cls(index, np.asarray(hw["joint_sign"], dtype=float), np.asarray(hw["zero_offset"], dtype=float))

    @property
    def num_joints(self) -> int:
        return len(self.index)


class MotorTargets(NamedTuple):
    """A LowCmd's targets and gains in the contract's joint order (joint side: rad, rad/s, N·m)."""

    q: np.ndarray
    dq: np.ndarray
    kp: np.ndarray
    kd: np.ndarray
    tau: np.ndarray


def _finite(name: str, value, n: int) -> np.ndarray:
    """A scalar broadcast to, or an array of, n finite values."""
    out = np.full(n, float(value)) if np.ndim(value) == 0 else np.asarray(value, dtype=float)
    if out.shape != (n,):
        raise ValueError(f"{name}: shape {out.shape}; expected ({n},)")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name}: {out.tolist()}; expected finite values")
    return out


def _check_slots(name: str, slots) -> None:
    if len(slots) != NUM_MOTORS:
        raise ValueError(f"{name}: {len(slots)} motor slots; expected {NUM_MOTORS} (the IDL's array size)")


def targets_to_low_cmd(motors: MotorMap, q, kp, kd, dq=0.0, tau=0.0) -> LowCmd_:
    """LowCmd driving each joint to `q` with gains kp, kd (scalars or per joint); unused slots get no target."""
    n = motors.num_joints
    q, kp, kd = _finite("q", q, n), _finite("kp", kp, n), _finite("kd", kd, n)
    dq, tau = _finite("dq", dq, n), _finite("tau", tau, n)
    cmd = LowCmd_(head=list(HEAD), level_flag=LEVEL_LOW)
    # As unitree_sdk2 initialises them: servo mode, "stop" q and dq, no gains, no torque.
    cmd.motor_cmd = [MotorCmd_(mode=MODE_SERVO, q=POS_STOP, dq=VEL_STOP) for _ in range(NUM_MOTORS)]
    s = motors.sign
    for j, slot in enumerate(motors.index):
        m = cmd.motor_cmd[slot]
        m.q, m.dq, m.tau = s[j] * q[j] + motors.offset[j], s[j] * dq[j], s[j] * tau[j]
        m.kp, m.kd = kp[j], kd[j]
    return stamp_crc(cmd)


def damping_low_cmd(motors: MotorMap, kd: float) -> LowCmd_:
    """The safe state: no position gain, every joint damped with `kd` (the contract's damping_kd)."""
    return targets_to_low_cmd(motors, np.zeros(motors.num_joints), kp=0.0, kd=kd)


def low_cmd_to_targets(cmd: LowCmd_, motors: MotorMap) -> MotorTargets:
    """The joint-side targets and gains a LowCmd carries for the map's joints (what a motor stand-in applies)."""
    _check_slots("LowCmd.motor_cmd", cmd.motor_cmd)
    m = [cmd.motor_cmd[slot] for slot in motors.index]
    v = {k: np.array([getattr(x, k) for x in m], dtype=float) for k in MotorTargets._fields}
    s = motors.sign
    return MotorTargets(s * (v["q"] - motors.offset), s * v["dq"], v["kp"], v["kd"], s * v["tau"])


def arrays_to_low_state(motors: MotorMap, q, dq, tau, imu_quat, gyro, accel, tick: int = 0) -> LowState_:
    """LowState reporting joint angles, velocities and torques (joint side) and the IMU (quaternion w x y z)."""
    n = motors.num_joints
    q, dq, tau = _finite("q", q, n), _finite("dq", dq, n), _finite("tau", tau, n)
    imu = IMUState_(
        quaternion=_finite("imu_quat", imu_quat, 4).tolist(),
        gyroscope=_finite("gyro", gyro, 3).tolist(),
        accelerometer=_finite("accel", accel, 3).tolist(),
    )
    state = LowState_(imu_state=imu, tick=tick)
    s = motors.sign
    for j, slot in enumerate(motors.index):
        state.motor_state[slot] = MotorState_(
            mode=MODE_SERVO, q=s[j] * q[j] + motors.offset[j], dq=s[j] * dq[j], tau_est=s[j] * tau[j]
        )
    return stamp_crc(state)


def low_state_to_joints(state: LowState_, motors: MotorMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(joint_pos, joint_vel, joint_torque) in the contract's joint order, from the motor slots."""
    _check_slots("LowState.motor_state", state.motor_state)
    m = [state.motor_state[slot] for slot in motors.index]
    s = motors.sign
    q = s * (np.array([x.q for x in m], dtype=float) - motors.offset)
    return q, s * np.array([x.dq for x in m], dtype=float), s * np.array([x.tau_est for x in m], dtype=float)


def low_state_to_imu(state: LowState_) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(quaternion w x y z, gyro rad/s, accel m/s²) of the IMU, body frame."""
    imu = state.imu_state
    return tuple(np.array(v, dtype=float) for v in (imu.quaternion, imu.gyroscope, imu.accelerometer))
