"""The gate's perturbations, by name: how a cell's robot, actuation or sensing differs from the nominal one.

Kept on their own: a later step expresses them as training's randomization terms pinned to a value.
"""

from __future__ import annotations

from dataclasses import dataclass

from trot.robots import Robot


@dataclass(frozen=True)
class Perturbation:
    """A change to the nominal robot, its actuation or its sensing; defaults are the robot as described."""

    payload_fraction: float = 0.0  # of the robot's total mass, added to the base at its centre of mass
    friction: float = 1.0  # floor-foot sliding friction coefficient
    motor_strength: float = 1.0  # scales kp, kd and the torque limit
    latency_steps: int = 0  # control steps: the target computed at step t is applied during step t + k
    push_mps: float = 0.0  # lateral (body y) base velocity kick
    push_at_s: float = 3.0  # ... at this time, or at half the cell if that is earlier
    sensor_noise: bool = False  # Gaussian noise with the training task's stds on every sensor reading


PERTURBATIONS: dict[str, Perturbation] = {
    "nominal": Perturbation(),
    "payload_+20%": Perturbation(payload_fraction=0.2),
    "friction_0.5": Perturbation(friction=0.5),
    "friction_1.2": Perturbation(friction=1.2),
    "motor_-20%": Perturbation(motor_strength=0.8),
    "latency_1_step": Perturbation(latency_steps=1),
    "push_0.3": Perturbation(push_mps=0.3),
    "sensor_noise": Perturbation(sensor_noise=True),
}


def apply_physics(engine, robot: Robot, p: Perturbation) -> None:
    """Payload, friction and motor strength, written into the engine (the base's inertia scales with its mass)."""
    if p.payload_fraction:  # the nominal engine is left exactly as built
        engine.set_base_mass(robot.link_masses[robot.base_link] + p.payload_fraction * robot.total_mass)
    engine.set_floor_friction(p.friction)
    engine.torque_scale = p.motor_strength


def policy_noise_stds(robot: Robot) -> dict[str, float]:
    """The robot's training task's observation noise stds by term (imported lazily: trot.sim needs torch)."""
    from trot.sim.task import policy_noise_stds as task_noise_stds

    return task_noise_stds(robot.folder)
