"""Domain randomization terms, each declared once: kind, units, nominal value, physical bounds, apply step.

A term's declaration (`TERMS`) says what it means; its configuration (`Term`: range, schedule, and
for interval events the mean time between them) says how it varies, per robot (the robot's
`task.toml`). Kinds: `model` (the simulated body: masses, friction, contact softness, joint damping and
dry friction), `actuation` (how a joint target becomes torque: gains, strength, rotor inertia, latency),
`sensor` (what the policy measures: encoder offsets, IMU latency; additive noise is in the observation
terms) and `event` (something done to the robot during an episode: pushes). The apply step of a model,
actuation or sensor term writes the sampled values into `EnvParams` (params.py), which every backend
reads; an event's apply step acts on the backend directly. `docs/randomization.md` lists every term and how to add one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from trot.randomization.params import CONTACT_SOLREF, EnvParams
from trot.robots import ContractError, Robot

KINDS = ("model", "actuation", "sensor", "event")
SCHEDULES = ("startup", "reset", "interval")


@dataclass(frozen=True)
class TermSpec:
    """What a term means, the values it can physically take, and how it is applied."""

    kind: str
    unit: str
    nominal: float
    bounds: tuple[float, float]
    apply: Callable
    schedule: str = "reset"  # default schedule
    per_joint: bool = False  # one value per joint instead of one per env
    step: str | None = None  # sampled in whole physics or control steps (the unit stays seconds)
    min_physics_steps: int = 0  # a time that must span at least this many physics steps of the robot
    help: str = ""


# -- apply steps: (params, env_ids, values) for model, actuation and sensor terms -----------------------------


def _friction(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.friction[ids] = v


def _link_mass_scale(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.mass_scale[ids] = v


def _payload_mass(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.payload_mass[ids] = v


# One plain function per axis, not one made by a factory when this module is imported: mutmut (tools/mutation.py)
# credits a function's mutants to the tests that call it, and a factory is called by the import, not by the tests.
def _com_offset_x(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.com_offset[ids, 0] = v


def _com_offset_y(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.com_offset[ids, 1] = v


def _com_offset_z(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.com_offset[ids, 2] = v


def _kp_scale(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.kp[ids] *= v[:, None]


def _kd_scale(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.kd[ids] *= v[:, None]


def _motor_strength(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    for gain in (p.kp, p.kd, p.torque_limit):
        gain[ids] *= v[:, None]


def _actuation_latency(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.actuation_latency_s[ids] = v


def _observation_latency(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.observation_latency_s[ids] = v


def _joint_zero_offset(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.joint_zero_offset[ids] = v


def _contact_timeconst(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.contact_timeconst[ids] = v


def _contact_dampratio(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.contact_dampratio[ids] = v


def _armature_scale(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.armature[ids] *= v[:, None]


def _joint_damping_scale(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.joint_damping[ids] *= v[:, None]


def _joint_friction_scale(p: EnvParams, ids: torch.Tensor, v: torch.Tensor) -> None:
    p.joint_friction[ids] *= v[:, None]


# -- apply steps of events: (backend, env_ids, values, generator) -----------------------------------------------


def _push(backend, ids: torch.Tensor, speed: torch.Tensor, gen: torch.Generator) -> None:
    """A horizontal kick of `speed` m/s in a random direction."""
    angle = 2 * math.pi * torch.rand(len(ids), generator=gen, dtype=torch.float64)
    delta = torch.stack([speed * torch.cos(angle), speed * torch.sin(angle), 0 * speed], 1)
    backend.add_base_velocity(ids, delta)


# The registry, in apply order (the gain scales before the strength that multiplies them too).
TERMS: dict[str, TermSpec] = {
    "friction": TermSpec("model", "", 1.0, (0.0, 5.0), _friction, help="floor-foot sliding friction coefficient"),
    "link_mass_scale": TermSpec(
        "model", "x", 1.0, (0.1, 10.0), _link_mass_scale, "startup", help="every link's mass and inertia"
    ),
    "payload_mass": TermSpec(
        "model", "kg", 0.0, (-1.0, 10.0), _payload_mass, help="mass added to the base at its centre of mass"
    ),
    "com_offset_x": TermSpec("model", "m", 0.0, (-0.1, 0.1), _com_offset_x, help="base centre-of-mass shift, body x"),
    "com_offset_y": TermSpec("model", "m", 0.0, (-0.1, 0.1), _com_offset_y, help="base centre-of-mass shift, body y"),
    "com_offset_z": TermSpec("model", "m", 0.0, (-0.1, 0.1), _com_offset_z, help="base centre-of-mass shift, body z"),
    "contact_timeconst": TermSpec(
        "model", "s", CONTACT_SOLREF[0], (0.0, 1.0), _contact_timeconst, min_physics_steps=2,
        help="contact softness: MuJoCo's solref time constant of the floor, feet and base (longer is softer)",
    ),  # fmt: skip
    "contact_dampratio": TermSpec(
        "model", "", CONTACT_SOLREF[1], (0.1, 10.0), _contact_dampratio, help="contact damping ratio (solref)"
    ),
    "joint_damping_scale": TermSpec(
        "model", "x", 1.0, (0.0, 20.0), _joint_damping_scale, help="scales each joint's viscous friction"
    ),
    "joint_friction_scale": TermSpec(
        "model", "x", 1.0, (0.0, 20.0), _joint_friction_scale, help="scales each joint's dry friction"
    ),
    "kp_scale": TermSpec("actuation", "x", 1.0, (0.1, 5.0), _kp_scale, help="scales the position gain"),
    "kd_scale": TermSpec("actuation", "x", 1.0, (0.1, 5.0), _kd_scale, help="scales the damping gain"),
    "motor_strength": TermSpec(
        "actuation", "x", 1.0, (0.1, 2.0), _motor_strength, help="scales Kp, Kd and the torque limit together"
    ),
    "armature_scale": TermSpec(
        "actuation", "x", 1.0, (0.1, 10.0), _armature_scale, help="scales each joint's reflected rotor inertia"
    ),
    "actuation_latency": TermSpec(
        "actuation", "s", 0.0, (0.0, 0.2), _actuation_latency, step="physics",
        help="a new joint target reaches the motors this late (whole physics steps)",
    ),  # fmt: skip
    "observation_latency": TermSpec(
        "sensor", "s", 0.0, (0.0, 0.1), _observation_latency, step="control",
        help="the IMU terms (gyro, gravity) the policy sees are this old (whole control steps)",
    ),  # fmt: skip
    "joint_zero_offset": TermSpec(
        "sensor", "rad", 0.0, (-0.2, 0.2), _joint_zero_offset, "startup", per_joint=True,
        help="encoder zero error, per joint: the motor holds target - offset, the policy sees true + offset",
    ),  # fmt: skip
    "push_velocity": TermSpec(
        "event", "m/s", 0.0, (0.0, 5.0), _push, "interval", help="magnitude of a horizontal base velocity kick"
    ),
}


@dataclass(frozen=True)
class Term:
    """How one term varies: uniform in `range` (in the term's unit), drawn on `schedule`."""

    range: tuple[float, float]
    schedule: str = "reset"
    interval_s: float = 15.0  # interval terms: mean time between events per env (legged_gym pushes every 15 s)


def _nominal_terms() -> dict[str, Term]:
    return {name: Term((spec.nominal, spec.nominal), spec.schedule) for name, spec in TERMS.items()}


@dataclass(frozen=True)
class RandomizationCfg:
    """Every term's range and schedule. The shared default is the robot as described (every term pinned at its
    nominal value); a robot's task.toml sets the ranges its hardware varies in."""

    terms: dict[str, Term] = field(default_factory=_nominal_terms)

    @staticmethod
    def nominal() -> RandomizationCfg:
        """Every term fixed at its nominal value: the robot as described."""
        return RandomizationCfg()

    @staticmethod
    def pinned(**values: float) -> RandomizationCfg:
        """The nominal robot with some terms fixed at a value, e.g. `pinned(friction=0.5)`: one gate perturbation."""
        cfg = RandomizationCfg()
        for name, value in values.items():
            cfg = cfg.with_term(name, value)
        return cfg

    def with_term(
        self, name: str, lo: float, hi: float | None = None, schedule: str | None = None, interval_s=None
    ) -> RandomizationCfg:
        """A copy with one term's range (and optionally schedule, interval) replaced; [lo, lo] pins it."""
        old = self.terms.get(name, Term((0.0, 0.0)))
        term = Term(
            (lo, lo if hi is None else hi),
            schedule or old.schedule,
            old.interval_s if interval_s is None else interval_s,
        )
        return replace(self, terms={**self.terms, name: term})

    def varies(self, name: str) -> bool:
        """True when the term can take a value other than its nominal one."""
        term = self.terms.get(name)
        return term is not None and term.range != (TERMS[name].nominal, TERMS[name].nominal)


def step_s(spec: TermSpec, robot: Robot) -> float | None:
    """The step a term is sampled in, in seconds, or None for a continuous term."""
    return {"physics": robot.physics_dt, "control": robot.control_dt, None: None}[spec.step]


def validate(cfg: RandomizationCfg, robot: Robot, where: str = "config") -> None:
    """Refuse unknown terms, inverted ranges, values outside physical bounds, bad schedules, and latencies
    that are not whole steps; errors name `where` (a file or 'config'), the field, value and expectation."""
    for name, term in cfg.terms.items():
        at = f"randomization.terms.{name}"
        if name not in TERMS:
            raise ContractError(where, at, name, f"a randomization term: one of {sorted(TERMS)}")
        spec = TERMS[name]
        lo, hi = term.range
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ContractError(where, f"{at}.range", list(term.range), "finite [min, max] with min <= max")
        if lo < spec.bounds[0] or hi > spec.bounds[1]:
            raise ContractError(
                where, f"{at}.range", list(term.range),
                f"within the physical bounds {list(spec.bounds)}{' ' + spec.unit if spec.unit else ''} ({spec.help})",
            )  # fmt: skip
        shortest = spec.min_physics_steps * robot.physics_dt
        if spec.min_physics_steps and lo < shortest - 1e-12:
            raise ContractError(
                where, f"{at}.range", list(term.range),
                f"at least {spec.min_physics_steps} physics steps ({shortest:g} s for {robot.name}): MuJoCo raises a "
                "shorter one to that without a word",
            )  # fmt: skip
        step = step_s(spec, robot)
        if step is not None and any(abs(x / step - round(x / step)) > 1e-6 for x in (lo, hi)):
            raise ContractError(
                where, f"{at}.range", list(term.range), f"whole {spec.step} steps of {step:g} s ({robot.name})"
            )
        if term.schedule not in SCHEDULES:
            raise ContractError(where, f"{at}.schedule", term.schedule, f"one of {SCHEDULES}")
        if (term.schedule == "interval") != (spec.kind == "event"):
            expected = "'interval' (an event)" if spec.kind == "event" else "'startup' or 'reset'"
            article = "an" if spec.kind[0] in "aeiou" else "a"
            raise ContractError(where, f"{at}.schedule", term.schedule, f"{expected} for {article} {spec.kind} term")
        if not term.interval_s > 0:
            raise ContractError(where, f"{at}.interval_s", term.interval_s, "a time > 0 s")


def sample_term(name: str, term: Term, n: int, robot: Robot, gen: torch.Generator) -> torch.Tensor:
    """Per-env values of one term, float64: (n,) or (n, joints) for per-joint terms."""
    spec = TERMS[name]
    lo, hi = term.range
    shape = (n, robot.num_joints) if spec.per_joint else (n,)
    step = step_s(spec, robot)
    if step is not None:  # uniform over the whole steps in the range
        k = torch.randint(round(lo / step), round(hi / step) + 1, shape, generator=gen)
        return k.to(torch.float64) * step
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def nominal_values(n: int, robot: Robot) -> dict[str, torch.Tensor]:
    """Every term at its nominal value, for n envs."""
    return {
        name: torch.full((n, robot.num_joints) if spec.per_joint else (n,), spec.nominal, dtype=torch.float64)
        for name, spec in TERMS.items()
    }
