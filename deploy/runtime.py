"""The deploy-side policy runtime: sensor readings -> observation -> onnxruntime -> motor targets.

numpy and onnxruntime only. The observation is built by `trot.mapping`, the same code the
simulator uses, from the order, scales and history stated in the bundle's metadata; the default
pose, action scale and clip come from the verified contract (the robot's, when one is given).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trot import mapping
from trot.deploy.bundle import Bundle, check_contract


@dataclass
class PolicyOutput:
    target: np.ndarray  # (J,) joint-position targets, rad, policy order
    action: np.ndarray  # (J,) raw policy output
    obs: np.ndarray  # (obs_size,) what the network saw


class PolicyRuntime:
    """Keeps the observation history and last action; `step` returns the next motor targets."""

    def __init__(self, bundle: Bundle, robot=None):
        # Without a robot, the bundle's own contract (its integrity was checked when it was loaded).
        contract = check_contract(bundle, robot) if robot is not None else bundle.contract
        self.bundle = bundle
        self.session = bundle.session()
        self.spec = bundle.meta.observation.to_spec()
        mapping.validate_terms(self.spec)
        self.num_joints = contract.num_joints
        self.default_joint_pos = np.asarray(contract.default_joint_pos, dtype=np.float64)[None]
        self.action_scale = contract.action_scale
        self.action_clip = contract.action_clip
        self.control_dt = contract.control_dt
        self.obs_clip = bundle.meta.observation.clip
        self.obs_size = self.spec.size(self.num_joints)
        self.reset()

    def reset(self) -> None:
        self.last_action = np.zeros((1, self.num_joints))
        self.history: np.ndarray | None = None
        self.steps = 0  # policy steps since reset: drives the gait clock, as episode steps do in training

    def observe(self, quat_wxyz, gyro, joint_pos, joint_vel, command) -> np.ndarray:
        """Push one frame from sensor readings into the history; return the (1, obs_size) input."""
        terms = mapping.raw_terms(
            np,
            quat_wxyz=np.asarray(quat_wxyz, dtype=np.float64).reshape(1, 4),
            gyro=np.asarray(gyro, dtype=np.float64).reshape(1, 3),
            joint_pos=np.asarray(joint_pos, dtype=np.float64).reshape(1, -1),
            joint_vel=np.asarray(joint_vel, dtype=np.float64).reshape(1, -1),
            default_joint_pos=self.default_joint_pos,
            command=np.asarray(command, dtype=np.float64).reshape(1, 3),
            last_action=self.last_action,
            phase=mapping.gait_phase(np, np.array([self.steps]), self.control_dt, self.spec.gait_frequency_hz),
        )
        self.steps += 1
        frame = mapping.assemble_frame(np, self.spec, terms)
        if self.history is None:  # first frame after a reset fills the whole history, as in training
            self.history = np.tile(frame, (1, self.spec.history))
        else:
            self.history = mapping.push_history(np, self.history, frame)
        return np.clip(self.history, -self.obs_clip, self.obs_clip).astype(np.float32)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.session.run(["actions"], {"obs": obs})[0].astype(np.float64)

    def step(self, quat_wxyz, gyro, joint_pos, joint_vel, command) -> PolicyOutput:
        obs = self.observe(quat_wxyz, gyro, joint_pos, joint_vel, command)
        action = np.clip(self.act(obs), -self.action_clip, self.action_clip)
        self.last_action = action
        target = mapping.action_to_target(
            np, action, self.default_joint_pos, self.action_scale, self.action_clip
        )
        return PolicyOutput(target[0], action[0], obs[0])
