"""The Warp kernels of the MJWarp backend's control step, around MuJoCo Warp's own `step`.

Each runs one thread per (world, joint) or (world, sensor) and is launched inside the captured control
step, so a control step is one graph launch: per substep, `apply_targets` writes each world's delayed
joint targets into `ctrl` and `track_touch` keeps the touch sensors' largest reading; after the last
substep `push_targets` shifts the new targets into the history that actuation latency reads from.
Arrays are float32 (MuJoCo Warp's precision), batch-first.
"""

from __future__ import annotations

import warp as wp


@wp.kernel
def apply_targets(
    substep: int,
    decimation: int,
    target: wp.array2d(dtype=float),  # (N, J) this control step's targets
    held: wp.array3d(dtype=float),  # (depth, N, J) the previous control steps' targets, newest first
    latency: wp.array(dtype=int),  # (N,) physics steps
    actuator: wp.array(dtype=int),  # (J,) actuator id of each joint, policy order
    ctrl: wp.array2d(dtype=float),  # (N, nu)
):
    """At substep s a world with latency k applies the target issued ceil((k - s) / decimation) control
    steps ago while s < k, else the new one (the C backend's `_applied_targets`)."""
    w, j = wp.tid()
    k = latency[w]
    value = target[w, j]
    if substep < k:
        value = held[(k - substep - 1) // decimation, w, j]
    ctrl[w, actuator[j]] = value


@wp.kernel
def push_targets(target: wp.array2d(dtype=float), held: wp.array3d(dtype=float)):
    """held <- [target, held[0], ..., held[depth - 2]]: each thread owns one (world, joint) column."""
    w, j = wp.tid()
    for back in range(held.shape[0] - 1, 0, -1):
        held[back, w, j] = held[back - 1, w, j]
    held[0, w, j] = target[w, j]


@wp.kernel
def track_touch(
    substep: int,
    sensordata: wp.array2d(dtype=float),  # (N, nsensordata)
    address: wp.array(dtype=int),  # (T,) sensordata address of each touch sensor
    peak: wp.array2d(dtype=float),  # (N, T) largest reading since the control step began
):
    """The control step's largest touch reading per sensor: a foot that touched at any substep counts."""
    w, i = wp.tid()
    value = sensordata[w, address[i]]
    if substep == 0:
        peak[w, i] = value
    else:
        peak[w, i] = wp.max(peak[w, i], value)
