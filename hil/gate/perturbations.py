"""The gate's perturbations: training's randomization terms pinned to a value, by name.

A perturbation names terms of `trot.randomization.TERMS` and the value each is pinned to, in the term's
own unit (kg, s, ×, m/s): `Perturbation.randomization()` is `RandomizationCfg.pinned(...)`. The cell
composes it into one env's `EnvParams` through training's randomization loop and writes that into the
engine with `write_params`; an event term (a push) fires once during the cell. So a term added for
training is testable in the gate with no gate code: `trot gate BUNDLE --pin armature_scale=0.5`.
Sensor noise is the training task's observation noise (the stds of the robot's observation terms).

This module imports no torch: the CLI lists the names without loading the engines.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from trot.robots import Robot


@dataclass(frozen=True)
class Perturbation:
    """Terms pinned to values (name, value in the term's unit), and whether the sensors carry the training noise."""

    terms: tuple[tuple[str, float], ...] = ()
    sensor_noise: bool = False

    @staticmethod
    def of(sensor_noise: bool = False, **terms: float) -> Perturbation:
        """`Perturbation.of(friction=0.5, payload_mass=0.63)`."""
        return Perturbation(tuple(sorted((k, float(v)) for k, v in terms.items())), sensor_noise)

    def randomization(self):
        """The pinned `RandomizationCfg`: every other term at its nominal value."""
        from trot.randomization import RandomizationCfg

        return RandomizationCfg.pinned(**dict(self.terms))

    def describe(self) -> str:
        """'friction = 0.5, payload_mass = 0.634' (or 'nominal', 'sensor noise')."""
        parts = [f"{k} = {v:g}" for k, v in self.terms] + (["sensor noise"] if self.sensor_noise else [])
        return ", ".join(parts) or "nominal"


# name -> the perturbation for a robot. Names are the same for every robot; the values are the terms'
# (payload a fifth of the robot's mass in kg; latency the robot's declared figure, robot.toml [latency], and two
# of its control steps, the edge of the training range, in s).
PERTURBATIONS: dict[str, Callable[[Robot], Perturbation]] = {
    "nominal": lambda r: Perturbation(),
    "armature_x0.5": lambda r: Perturbation.of(armature_scale=0.5),
    "soft_contact": lambda r: Perturbation.of(contact_timeconst=0.04),
    "friction_0.4": lambda r: Perturbation.of(friction=0.4),
    "payload_+20%_friction_0.5": lambda r: Perturbation.of(payload_mass=round(0.2 * r.total_mass, 3), friction=0.5),
    "motor_-20%": lambda r: Perturbation.of(motor_strength=0.8),
    "latency_declared": lambda r: Perturbation.of(actuation_latency=r.actuation_latency_s),
    "latency_2_steps": lambda r: Perturbation.of(actuation_latency=2 * r.control_dt),
    "push_0.3": lambda r: Perturbation.of(push_velocity=0.3),
    "sensor_noise": lambda r: Perturbation(sensor_noise=True),
}


# Stress columns: run, reported and plotted, not part of the verdict. The gate judges at the latency the robot is
# promised to meet (`latency_declared`); the training range's edge shows how much margin the policy has beyond it.
STRESS = {"latency_2_steps": "the edge of the training range, beyond the robot's declared latency"}


def parse_pin(text: str) -> Perturbation:
    """`--pin 'armature_scale=0.5,friction=0.6'` -> a perturbation (its name is the text itself)."""
    terms = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name.strip() or not math.isfinite(number):
            raise ValueError(f"--pin {text!r}: {item!r} is not TERM=VALUE (a randomization term and a number)")
        terms[name.strip()] = number
    return Perturbation.of(**terms)


def resolve(names: list[str], pins: list[str], robot: Robot) -> dict[str, Perturbation]:
    """The perturbations by name (`PERTURBATIONS`), then each `--pin` under its own text; refuses unknown names
    and terms (checked against the training terms, in their bounds, for `robot`)."""
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise ValueError(f"unknown perturbation(s) {unknown}; known: {list(PERTURBATIONS)}")
    out = {n: PERTURBATIONS[n](robot) for n in names}
    out.update({pin: parse_pin(pin) for pin in pins})
    from trot.randomization import validate  # torch: only when the gate runs

    for name, p in out.items():
        validate(p.randomization(), robot, where=f"perturbation {name!r}")  # a ContractError is a ValueError
    return out


def policy_noise_stds(robot: Robot) -> dict[str, float]:
    """The robot's training task's observation noise stds by term (imported lazily: trot.sim needs torch)."""
    from trot.sim.task import policy_noise_stds as task_noise_stds

    return task_noise_stds(robot.folder)
