"""Domain randomization terms: each declared once with its range, when it is sampled, and its bounds.

A term is a name, a [min, max] range, a schedule ("startup", "reset" or "interval") and the
physical bounds a value may never leave. `sample_terms` draws per-env values from a seeded torch
generator, so a run is reproducible from its seed. The backend applies the physics terms to its
per-env models; the task applies latency, offsets, noise and pushes. Setting a range to [v, v]
fixes a term; `RandomizationCfg.nominal()` fixes every term at its nominal value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

SCHEDULES = ("startup", "reset", "interval")


@dataclass(frozen=True)
class TermSpec:
    """What a term means and the values it can physically take."""

    unit: str
    nominal: float
    bounds: tuple[float, float]
    integer: bool = False
    help: str = ""


# The registry: name -> spec. Defaults for the ranges are in RandomizationCfg below.
TERMS: dict[str, TermSpec] = {
    "friction": TermSpec("", 1.0, (0.0, 5.0), help="floor and foot sliding friction coefficient"),
    "link_mass_scale": TermSpec("x", 1.0, (0.1, 10.0), help="every link's mass and inertia"),
    "payload_mass": TermSpec("kg", 0.0, (-1.0, 10.0), help="mass added to the base at its centre of mass"),
    "com_offset_x": TermSpec("m", 0.0, (-0.1, 0.1), help="base centre-of-mass shift, body x"),
    "com_offset_y": TermSpec("m", 0.0, (-0.1, 0.1), help="base centre-of-mass shift, body y"),
    "com_offset_z": TermSpec("m", 0.0, (-0.1, 0.1), help="base centre-of-mass shift, body z"),
    "motor_strength": TermSpec("x", 1.0, (0.1, 2.0), help="scales the whole motor torque and its limit"),
    "kp_scale": TermSpec("x", 1.0, (0.1, 5.0), help="scales the position gain"),
    "kd_scale": TermSpec("x", 1.0, (0.1, 5.0), help="scales the damping gain"),
    "actuation_latency": TermSpec(
        "substeps",
        0,
        (0, 50),
        integer=True,
        help="a new target reaches the motors this many physics steps late",
    ),
    "observation_latency": TermSpec(
        "control steps",
        0,
        (0, 5),
        integer=True,
        help="IMU terms (gyro, gravity) are this many policy steps old",
    ),
    "joint_zero_offset": TermSpec("rad", 0.0, (-0.2, 0.2), help="encoder zero error, per joint"),
    "push_velocity": TermSpec("m/s", 0.0, (0.0, 5.0), help="magnitude of a horizontal base velocity kick"),
}

# Terms sampled once per joint instead of once per env.
PER_JOINT = {"joint_zero_offset"}


@dataclass(frozen=True)
class Term:
    range: tuple[float, float]
    schedule: str = "reset"


def _t(lo: float, hi: float, schedule: str = "reset") -> Term:
    return Term((lo, hi), schedule)


@dataclass(frozen=True)
class RandomizationCfg:
    """Ranges and schedules; defaults from the Pupper v3 authors' MJX training (see robots/pupper_v3)."""

    terms: dict[str, Term] = field(
        default_factory=lambda: {
            "friction": _t(0.6, 1.4),
            "link_mass_scale": _t(0.7, 1.3, "startup"),
            "payload_mass": _t(0.0, 0.4),
            "com_offset_x": _t(-0.03, 0.03),
            "com_offset_y": _t(-0.01, 0.01),
            "com_offset_z": _t(-0.02, 0.02),
            "motor_strength": _t(0.8, 1.2),
            "kp_scale": _t(0.75, 1.25),
            "kd_scale": _t(0.5, 2.0),
            "actuation_latency": _t(0, 5),
            "observation_latency": _t(0, 1),
            "joint_zero_offset": _t(-0.02, 0.02, "startup"),
            "push_velocity": _t(0.0, 0.2, "interval"),
        }
    )
    push_probability: float = 0.02  # per env and control step, for "interval" terms

    @staticmethod
    def nominal() -> RandomizationCfg:
        """Every term fixed at its nominal value: the robot as described."""
        return RandomizationCfg(
            {name: Term((spec.nominal, spec.nominal), "reset") for name, spec in TERMS.items()}, 0.0
        )

    def with_term(self, name: str, lo: float, hi: float | None = None, schedule: str | None = None):
        """A copy with one term's range (and optionally schedule) replaced."""
        old = self.terms.get(name, Term((0.0, 0.0)))
        term = Term((lo, lo if hi is None else hi), schedule or old.schedule)
        return replace(self, terms={**self.terms, name: term})


def validate(cfg: RandomizationCfg) -> None:
    """Refuse unknown terms, inverted ranges, values outside physical bounds, bad schedules."""
    unknown = sorted(set(cfg.terms) - set(TERMS))
    if unknown:
        raise ValueError(f"randomization: unknown term(s) {unknown}; known: {sorted(TERMS)}")
    for name, term in cfg.terms.items():
        spec = TERMS[name]
        lo, hi = term.range
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"randomization term '{name}': range {term.range} must be finite")
        if lo > hi:
            raise ValueError(f"randomization term '{name}': range min {lo} > max {hi}")
        if lo < spec.bounds[0] or hi > spec.bounds[1]:
            raise ValueError(
                f"randomization term '{name}': range {term.range} {spec.unit} is outside the physical bounds "
                f"{spec.bounds} ({spec.help})"
            )
        if spec.integer and (lo != int(lo) or hi != int(hi)):
            raise ValueError(f"randomization term '{name}': range {term.range} must be whole {spec.unit}")
        if term.schedule not in SCHEDULES:
            raise ValueError(f"randomization term '{name}': schedule '{term.schedule}' not in {SCHEDULES}")
    if not 0.0 <= cfg.push_probability <= 1.0:
        raise ValueError(f"randomization: push_probability {cfg.push_probability} not in [0, 1]")


def sample_term(name: str, term: Term, n: int, num_joints: int, gen: torch.Generator) -> torch.Tensor:
    """Per-env values of one term: (n,) or (n, num_joints) for per-joint terms."""
    lo, hi = term.range
    shape = (n, num_joints) if name in PER_JOINT else (n,)
    if TERMS[name].integer:
        return torch.randint(int(lo), int(hi) + 1, shape, generator=gen)
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def sample_terms(
    cfg: RandomizationCfg, schedules: tuple[str, ...], n: int, num_joints: int, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Values for every term whose schedule is in `schedules`, in a fixed (sorted) order."""
    return {
        name: sample_term(name, cfg.terms[name], n, num_joints, gen)
        for name in sorted(cfg.terms)
        if cfg.terms[name].schedule in schedules
    }


def nominal_values(n: int, num_joints: int) -> dict[str, torch.Tensor]:
    """Every term at its nominal value, for n envs."""
    out = {}
    for name, spec in TERMS.items():
        shape = (n, num_joints) if name in PER_JOINT else (n,)
        dtype = torch.long if spec.integer else torch.float64
        out[name] = torch.full(shape, spec.nominal, dtype=dtype)
    return out
