"""The one observation and action mapping, shared by the simulator (torch) and the robot (numpy).

Every function takes an array module `xp` (numpy or torch) and arrays batch-first, so the same
lines build the policy's input in training, in the gate and on the robot (DESIGN contract 2).
Term names are the bundle vocabulary of DESIGN contract 3; a name never changes meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

# name -> (size as a function of the joint count, what it is)
OBS_VOCABULARY = {
    "base_lin_vel": (
        lambda n: 3,
        "base linear velocity, body frame, m/s (critic only: no robot measures it)",
    ),
    "base_ang_vel": (lambda n: 3, "base angular velocity (gyro), body frame, rad/s"),
    "projected_gravity": (lambda n: 3, "unit gravity vector in the body frame"),
    "velocity_command": (lambda n: 3, "commanded vx m/s, vy m/s, yaw rate rad/s"),
    "joint_pos_rel": (lambda n: n, "joint position minus default, rad"),
    "joint_vel": (lambda n: n, "joint velocity, rad/s"),
    "last_action": (lambda n: n, "previous raw policy output"),
    "gait_phase": (lambda n: 2, "sin, cos of the gait clock 2*pi*frac(steps * control_dt * gait_frequency_hz)"),
}


@dataclass(frozen=True)
class ObsTerm:
    name: str
    scale: float = 1.0
    noise: float = 0.0  # std of additive uniform-equivalent noise in the term's own units (before scale)


@dataclass(frozen=True)
class ObsSpec:
    """An ordered list of terms and a history length; the newest frame comes first."""

    terms: tuple[ObsTerm, ...]
    history: int = 1
    gait_frequency_hz: float = 0.0  # clock of the gait_phase term; steps count from the policy's start

    def sizes(self, num_joints: int) -> list[int]:
        return [OBS_VOCABULARY[t.name][0](num_joints) for t in self.terms]

    def frame_size(self, num_joints: int) -> int:
        return sum(self.sizes(num_joints))

    def size(self, num_joints: int) -> int:
        return self.frame_size(num_joints) * self.history

    def metadata(self, num_joints: int) -> dict:
        """The bundle's `observation` field."""
        return {
            "terms": [
                {"name": t.name, "size": s, "scale": t.scale}
                for t, s in zip(self.terms, self.sizes(num_joints))
            ],
            "history": self.history,
            "order": "newest_first",
            "gait_frequency_hz": self.gait_frequency_hz,
        }

    @staticmethod
    def from_metadata(meta: dict) -> ObsSpec:
        terms = tuple(ObsTerm(t["name"], float(t["scale"])) for t in meta["terms"])
        return ObsSpec(terms, int(meta["history"]), float(meta.get("gait_frequency_hz", 0.0)))


def validate_terms(spec: ObsSpec) -> None:
    unknown = [t.name for t in spec.terms if t.name not in OBS_VOCABULARY]
    if unknown:
        raise ValueError(f"unknown observation terms {unknown}; known: {sorted(OBS_VOCABULARY)}")
    if any(t.name == "gait_phase" for t in spec.terms) and not spec.gait_frequency_hz > 0:
        raise ValueError(f"observation term gait_phase needs gait_frequency_hz > 0, got {spec.gait_frequency_hz}")


def quat_rotate_inverse(xp, quat_wxyz, vec):
    """Rotate world-frame `vec` (B, 3) into the body frame of `quat_wxyz` (B, 4)."""
    w = quat_wxyz[:, :1]
    u = quat_wxyz[:, 1:4]
    uv = xp.stack(_cross(u, vec), 1)
    uuv = xp.stack(_cross(u, uv), 1)
    return vec - 2.0 * w * uv + 2.0 * uuv


def _cross(a, b):
    return (
        a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1],
        a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
        a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0],
    )


def projected_gravity(xp, quat_wxyz):
    """Unit gravity (0, 0, -1) seen in the body frame, (B, 3)."""
    down = xp.zeros_like(quat_wxyz[:, 1:4])
    down[:, 2] = -1.0
    return quat_rotate_inverse(xp, quat_wxyz, down)


def gait_phase(xp, steps, control_dt: float, frequency_hz: float):
    """(B, 2) sin and cos of the gait clock after `steps` (B,) policy steps."""
    angle = 2.0 * 3.141592653589793 * ((steps * (control_dt * frequency_hz)) % 1.0)
    return xp.stack([xp.sin(angle), xp.cos(angle)], 1)


def raw_terms(
    xp, *, quat_wxyz, gyro, joint_pos, joint_vel, default_joint_pos, command, last_action, base_lin_vel=None,
    phase=None,
):
    """Every vocabulary term from sensor-level quantities, unscaled, each (B, size)."""
    terms = {
        "base_ang_vel": gyro,
        "projected_gravity": projected_gravity(xp, quat_wxyz),
        "velocity_command": command,
        "joint_pos_rel": joint_pos - default_joint_pos,
        "joint_vel": joint_vel,
        "last_action": last_action,
    }
    if base_lin_vel is not None:
        terms["base_lin_vel"] = base_lin_vel
    if phase is not None:
        terms["gait_phase"] = phase
    return terms


def assemble_frame(xp, spec: ObsSpec, terms: dict):
    """One observation frame (B, frame_size): the spec's terms in order, each times its scale."""
    missing = [t.name for t in spec.terms if t.name not in terms]
    if missing:
        raise KeyError(f"observation terms not available: {missing}")
    return xp.concatenate([terms[t.name] * t.scale for t in spec.terms], 1)


def push_history(xp, history, frame):
    """Shift a (B, history * frame) buffer right by one frame and put `frame` first (newest first)."""
    size = frame.shape[1]
    if history.shape[1] == size:
        return frame
    return xp.concatenate([frame, history[:, :-size]], 1)


def action_to_target(xp, action, default_joint_pos, action_scale: float, action_clip: float):
    """Joint-position target = default + scale * clip(action)."""
    return default_joint_pos + action_scale * xp.clip(action, -action_clip, action_clip)


# The left-right mirror (y -> -y) of each vocabulary term's components. A vector (velocity, gravity) keeps x, z
# and flips y; an angular velocity (an axial vector) flips x and z; the command flips vy and the yaw rate.
_MIRROR_SIGNS = {
    "base_lin_vel": (1.0, -1.0, 1.0),
    "base_ang_vel": (-1.0, 1.0, -1.0),
    "projected_gravity": (1.0, -1.0, 1.0),
    "velocity_command": (1.0, -1.0, -1.0),
}
_JOINT_TERMS = ("joint_pos_rel", "joint_vel", "last_action")


def mirror_map(spec: ObsSpec, joint_perm, joint_sign, phase_sign: float) -> tuple[list[int], list[float]]:
    """Index and sign vectors over a whole observation (every frame of its history) that give its mirror image:
    `mirrored = obs[:, index] * sign`. Joint terms move joint i to joint_perm[i] with joint_sign[i] (the robot's
    mirror, trot.sim.symmetry); the gait clock's sin and cos are multiplied by `phase_sign` (-1: the mirror
    image is half a cycle later, as when the mirrored diagonal pairs of a trot swap)."""
    n = len(joint_perm)
    index, sign, start = [], [], 0
    for term, size in zip(spec.terms, spec.sizes(n)):
        if term.name in _JOINT_TERMS:
            # The mirror's joint k is the image of joint perm[k] (the map is its own inverse).
            index += [start + joint_perm[k] for k in range(n)]
            sign += [float(joint_sign[joint_perm[k]]) for k in range(n)]
        elif term.name == "gait_phase":
            index += [start, start + 1]
            sign += [phase_sign, phase_sign]
        else:
            index += range(start, start + size)
            sign += _MIRROR_SIGNS[term.name]
        start += size
    return [i + h * start for h in range(spec.history) for i in index], sign * spec.history
