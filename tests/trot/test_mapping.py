"""`trot.mapping` against hand-computed values, on numpy and on torch: the rotations and the gravity sign,
the history shift (newest first), the term order and scales, the gait clock, the action mapping."""

import math

import numpy as np
import pytest
import torch

from trot import mapping
from trot.mapping import ObsSpec, ObsTerm

S30, C30 = 0.5, math.sqrt(3) / 2  # sin, cos of 30°


def quat(axis: str, deg: float) -> list[float]:
    """w x y z of a rotation by `deg` about one body axis (body to world)."""
    half = math.radians(deg) / 2
    v = {"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1]}[axis]
    return [math.cos(half), *(math.sin(half) * np.array(v))]


def both(fn, *arrays):
    """fn on numpy float64 and on torch float64 arrays; the two results as numpy."""
    out_np = fn(np, *[np.asarray(a, dtype=np.float64) for a in arrays])
    out_torch = fn(torch, *[torch.tensor(a, dtype=torch.float64) for a in arrays])
    np.testing.assert_allclose(out_torch.numpy(), out_np, atol=1e-12)
    return out_np


# Gravity (world 0, 0, -1) seen from the body, worked out from each body axis in world coordinates:
# g_body = (x_b · g, y_b · g, z_b · g).
GRAVITY = [
    (quat("x", 0), [0, 0, -1]),  # upright
    (quat("z", 90), [0, 0, -1]),  # heading does not change it
    (quat("x", 30), [0, -S30, -C30]),  # rolled right side down: y_b = (0, c, s), z_b = (0, -s, c)
    (quat("y", 30), [S30, 0, -C30]),  # pitched nose down: x_b = (c, 0, -s), z_b = (s, 0, c)
    (quat("x", 90), [0, -1, 0]),  # on its side: y_b points up
    (quat("x", 180), [0, 0, 1]),  # upside down
]


@pytest.mark.parametrize("q, expected", GRAVITY)
def test_projected_gravity_of_known_orientations(q, expected):
    np.testing.assert_allclose(both(mapping.projected_gravity, [q])[0], expected, atol=1e-12)


def test_quat_rotate_inverse_takes_a_world_vector_into_the_body_frame():
    # Yawed 90° left: the body's x is the world's y, its y the world's -x.
    q = quat("z", 90)
    vectors = [[1, 0, 0], [0, 1, 0], [0, 0, 2]]
    expected = [[0, -1, 0], [1, 0, 0], [0, 0, 2]]
    out = both(mapping.quat_rotate_inverse, [q] * 3, vectors)
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_push_history_puts_the_new_frame_first_and_drops_the_oldest():
    history = [[1, 2, 3, 4, 5, 6], [10, 20, 30, 40, 50, 60]]  # (B=2, 3 frames of 2), newest first
    frame = [[7, 8], [70, 80]]
    out = both(mapping.push_history, history, frame)
    np.testing.assert_array_equal(out, [[7, 8, 1, 2, 3, 4], [70, 80, 10, 20, 30, 40]])
    np.testing.assert_array_equal(both(mapping.push_history, [[1, 2]], [[3, 4]]), [[3, 4]])  # history 1


def test_assemble_frame_orders_and_scales_the_terms_as_the_spec_says():
    spec = ObsSpec((ObsTerm("joint_vel", 0.05), ObsTerm("base_ang_vel", 0.25), ObsTerm("velocity_command", 2.0)))
    terms = {"base_ang_vel": [[0.4, -0.8, 1.2]], "velocity_command": [[0.5, -0.2, 0.3]],
             "joint_vel": [[2.0, -4.0]], "last_action": [[9.0, 9.0]]}  # fmt: skip

    def assemble(xp, ang, cmd, vel, last):
        return mapping.assemble_frame(
            xp, spec, {"base_ang_vel": ang, "velocity_command": cmd, "joint_vel": vel, "last_action": last}
        )

    out = both(assemble, *terms.values())
    np.testing.assert_allclose(out, [[0.1, -0.2, 0.1, -0.2, 0.3, 1.0, -0.4, 0.6]], atol=1e-12)
    with pytest.raises(KeyError, match=r"not available: \['joint_vel'\]"):
        mapping.assemble_frame(np, spec, {"base_ang_vel": np.zeros((1, 3)), "velocity_command": np.zeros((1, 3))})


def test_raw_terms_from_sensor_readings():
    q = np.array([[0.1, 0.9, -1.8]])
    default = np.array([[0.0, 0.8, -1.6]])
    terms = mapping.raw_terms(
        np, quat_wxyz=np.array([quat("x", 30)]), gyro=np.array([[0.1, 0.2, 0.3]]), joint_pos=q,
        joint_vel=np.array([[1.0, 2.0, 3.0]]), default_joint_pos=default, command=np.array([[0.4, 0.0, -0.5]]),
        last_action=np.array([[0.5, -0.5, 0.0]]),
    )  # fmt: skip
    np.testing.assert_allclose(terms["joint_pos_rel"], [[0.1, 0.1, -0.2]], atol=1e-12)
    np.testing.assert_allclose(terms["projected_gravity"], [[0, -S30, -C30]], atol=1e-12)
    np.testing.assert_array_equal(terms["base_ang_vel"], [[0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(terms["joint_vel"], [[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(terms["velocity_command"], [[0.4, 0.0, -0.5]])
    np.testing.assert_array_equal(terms["last_action"], [[0.5, -0.5, 0.0]])
    assert "base_lin_vel" not in terms and "gait_phase" not in terms
    more = mapping.raw_terms(np, quat_wxyz=np.array([quat("x", 0)]), gyro=0, joint_pos=0, joint_vel=0,
                             default_joint_pos=0, command=0, last_action=0, base_lin_vel=7, phase=8)  # fmt: skip
    assert (more["base_lin_vel"], more["gait_phase"]) == (7, 8)


def test_gait_phase_is_sin_cos_of_the_clock():
    # control_dt 0.02 s at 2 Hz: 0.04 of a cycle per step. Steps 0, 5, 10, 25 -> 0, 0.2, 0.4, 1.0 (= 0) cycles.
    out = both(lambda xp, steps: mapping.gait_phase(xp, steps, 0.02, 2.0), [0, 5, 10, 25])
    expected = [[0, 1], [0.9510565163, 0.3090169944], [0.5877852523, -0.8090169944], [0, 1]]
    np.testing.assert_allclose(out, expected, atol=1e-9)


def test_action_to_target_is_default_plus_scale_times_clipped_action():
    def target(xp, action, default):
        return mapping.action_to_target(xp, action, default, 0.25, 2.0)

    out = both(target, [[1.0, -3.0, 0.4, 3.0]], [[0.1, 0.8, -1.6, 0.0]])
    np.testing.assert_allclose(out, [[0.35, 0.3, -1.5, 0.5]], atol=1e-12)  # clipped to -2 and +2


def test_spec_sizes_and_metadata_round_trip():
    spec = ObsSpec((ObsTerm("base_ang_vel", 0.25), ObsTerm("joint_pos_rel"), ObsTerm("gait_phase", 1.0)), history=3,
                   gait_frequency_hz=2.0)  # fmt: skip
    assert spec.sizes(12) == [3, 12, 2] and spec.frame_size(12) == 17 and spec.size(12) == 51
    meta = spec.metadata(12)
    assert meta == {
        "terms": [{"name": "base_ang_vel", "size": 3, "scale": 0.25}, {"name": "joint_pos_rel", "size": 12,
                  "scale": 1.0}, {"name": "gait_phase", "size": 2, "scale": 1.0}],
        "history": 3, "order": "newest_first", "gait_frequency_hz": 2.0,
    }  # fmt: skip
    assert ObsSpec.from_metadata(meta) == spec
    assert ObsSpec.from_metadata({"terms": [], "history": 1}).gait_frequency_hz == 0.0
    assert {name: size(12) for name, (size, _) in mapping.OBS_VOCABULARY.items()} == {
        "base_lin_vel": 3, "base_ang_vel": 3, "projected_gravity": 3, "velocity_command": 3, "joint_pos_rel": 12,
        "joint_vel": 12, "last_action": 12, "gait_phase": 2,
    }  # fmt: skip


def test_validate_terms_refuses_unknown_names_and_a_gait_term_without_a_clock():
    with pytest.raises(ValueError, match=r"unknown observation terms \['jointpos'\]"):
        mapping.validate_terms(ObsSpec((ObsTerm("jointpos"),)))
    with pytest.raises(ValueError, match="gait_phase needs gait_frequency_hz > 0, got 0.0"):
        mapping.validate_terms(ObsSpec((ObsTerm("gait_phase"),)))
    mapping.validate_terms(ObsSpec((ObsTerm("gait_phase"),), gait_frequency_hz=0.5))  # any clock above 0
