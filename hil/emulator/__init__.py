"""Robot emulator: the robot in PyBullet, in real time, behind a link that speaks to the deploy loop.

It plays the motor/IMU microcontroller of `deploy/PROTOCOL.md`: it answers Hello, applies Commands, answers
Heartbeats, latches e-stops, runs its own command watchdog and streams State frames behind a pty, so that
the deploy loop can be run and tested against it unchanged (`trot deploy --transport serial --port
/dev/pts/N`); over ROS 2 the same robot publishes Imu and JointState and takes joint commands.

Faults are injected on demand (dropped, delayed or corrupted frames, a frozen IMU, a NaN, a disconnect, a
push, a tip-over, the e-stop button), all drawn from one seeded generator. Times of the `*_at` faults are
seconds on the fault clock: since `start()` by default, or since the first session opened (`fault_clock`).

The `joint_current` field of State is the applied motor torque divided by `torque_constant` (joint-side
N·m per A). The default 1.0 makes it the joint torque in N·m; set the motor's Kt times its gear ratio to
get amperes.

The parts, one module each:

- `firmware`: the MCU's state machine (sessions, command clamps, watchdog, e-stop latch): pure logic;
- `plant`: the robot in PyBullet and its IMU (kinematics, accelerometer);
- `faults`: the fault schedule on the fault clock and the random faults, from one seed;
- `link` (the seam), `serial_link` (pty, COBS frames), `ros2_link` (topics over Cyclone DDS), `unitree_link`
  (Unitree's LowState/LowCmd over Cyclone DDS) with `unitree_motion` (the Go2's motion service);
- `runner`: `Emulator`, the real-time loop composing them; `cli`: `trot emulate`, whose `--transport`
  picks a link from `cli.LINKS`.
"""

from trot.hil.emulator.cli import add_args, main, options_from_args, run_cli
from trot.hil.emulator.options import EmulatorOptions, EmulatorStats
from trot.hil.emulator.runner import Emulator

__all__ = ["Emulator", "EmulatorOptions", "EmulatorStats", "add_args", "main", "options_from_args", "run_cli"]
