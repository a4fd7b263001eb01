"""Batched physics behind one small interface, and its CPU implementation on `mujoco.rollout`.

A backend steps N copies of one robot together: one call per control step runs `decimation`
physics substeps for every env in MuJoCo's C code on a thread pool (the GIL is released). What
randomization varies per env arrives as one engine-neutral `EnvParams` through `write_params`:
masses, centre of mass, friction, contact softness, gains, torque limits, joint armature, damping and
dry friction go into per-env `MjModel` copies (made the first time an env differs from the nominal
robot; until then all envs share one model, about 10 % faster), and actuation latency is per env at
physics-step granularity: each substep applies the newest target issued at least that long ago. State
comes back as batch-first numpy arrays viewed as torch tensors, with no per-env Python loop on the hot
path.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Protocol

import mujoco
import numpy as np
import torch
from mujoco import rollout

from trot.randomization import EnvParams, nominal_params
from trot.robots import Robot
from trot.sim.mujoco_model import build_model, index_model, param_targets, write_model_params

CONTACT_FORCE_N = 1.0  # a touch sensor reading above this counts as contact
# The EnvParams fields that live in the MjModel (the rest are latency, applied in `step`, and the task's).
MODEL_FIELDS = (
    "friction", "mass_scale", "payload_mass", "com_offset", "kp", "kd", "torque_limit",
    "contact_timeconst", "contact_dampratio", "armature", "joint_damping", "joint_friction",
)  # fmt: skip


@dataclass
class SimState:
    """What the task reads after a step; tensors (num_envs, ...) on the backend's device."""

    base_pos: torch.Tensor  # (N, 3) world
    base_quat: torch.Tensor  # (N, 4) w x y z
    base_lin_vel_world: torch.Tensor  # (N, 3)
    base_ang_vel: torch.Tensor  # (N, 3) body frame (what a gyro measures)
    joint_pos: torch.Tensor  # (N, J) policy order
    joint_vel: torch.Tensor  # (N, J)
    joint_torque: torch.Tensor  # (N, J) actuator torque at the last substep
    foot_force: torch.Tensor  # (N, F) largest normal force over the step's substeps
    foot_pos: torch.Tensor  # (N, F, 3) world
    foot_vel: torch.Tensor  # (N, F, 3) world
    base_contact: torch.Tensor  # (N,) bool, base touched something during the step


class Backend(Protocol):
    """What the locomotion task needs from a simulator; the GPU backend implements it too."""

    robot: Robot
    num_envs: int
    decimation: int
    device: torch.device
    num_qvel: int
    root_qpos_adr: int  # free joint: position (3) then quaternion w x y z (4)
    root_qvel_adr: int  # free joint: world linear velocity (3) then body angular velocity (3)

    def step(self, joint_targets: torch.Tensor) -> SimState: ...

    def reset_envs(self, env_ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None: ...

    def add_base_velocity(self, env_ids: torch.Tensor, delta: torch.Tensor) -> None: ...

    def write_params(self, env_ids: torch.Tensor, params: EnvParams) -> None: ...

    def read(self, env_ids: torch.Tensor | None = None) -> SimState:
        """The state of every env, or of `env_ids` only (rows in that order)."""
        ...

    def home_qpos(self) -> torch.Tensor: ...

    def joint_qpos_index(self) -> torch.Tensor: ...


class MujocoBackend:
    """N envs on the CPU, stepped by `mujoco.rollout` with one call per control step."""

    def __init__(self, robot: Robot, num_envs: int, nthread: int | None = None):
        self.robot = robot
        self.num_envs = num_envs
        self.decimation = robot.decimation
        self.device = torch.device("cpu")
        self.model = build_model(robot)
        self.idx = index_model(self.model, robot)
        m = self.model
        self.num_qvel = m.nv
        self.root_qpos_adr, self.root_qvel_adr = self.idx.root_qpos, self.idx.root_qvel
        self.models = [m] * num_envs  # one shared model until an env's params differ from the nominal robot
        nthread = nthread or os.cpu_count() or 1
        self._datas = [mujoco.MjData(m) for _ in range(nthread)]
        self._rollout = rollout.Rollout(nthread=nthread)

        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self._state_spec = spec
        self._nstate = mujoco.mj_stateSize(m, spec)
        self._qpos_at = mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_TIME)
        self._qvel_at = self._qpos_at + m.nq
        data = mujoco.MjData(m)
        mujoco.mj_resetDataKeyframe(m, data, m.key("home").id)
        home = np.zeros(self._nstate)
        mujoco.mj_getState(m, data, home, spec)
        self._home_state = home
        self.state = np.tile(home, (num_envs, 1))  # (N, nstate), the physics state between calls
        self._state_out = np.zeros((num_envs, self.decimation, self._nstate))
        self._sens_out = np.zeros((num_envs, self.decimation, m.nsensordata))
        self._ctrl = np.tile(m.key("home").ctrl, (num_envs, self.decimation, 1))
        # Targets of the previous control steps, newest first: (depth, N, J), depth grows with the latency.
        self._held = np.tile(np.asarray(robot.default_joint_pos), (1, num_envs, 1))
        self._latency = np.zeros(num_envs, dtype=np.int64)  # physics steps
        self._substep = np.arange(self.decimation)[None, :]
        self._nominal = param_targets(m, robot)
        self._nominal_params = nominal_params(robot, 1)
        self._views()

    # -- hot path --------------------------------------------------------------------------

    def step(self, joint_targets: torch.Tensor) -> SimState:
        """Run one control step: each env's new target reaches its motors its actuation latency late."""
        target = joint_targets.detach().cpu().numpy().astype(np.float64)
        self._ctrl[:, :, self.idx.joint_ctrl] = self._applied_targets(target)
        self._held = np.concatenate([target[None], self._held[:-1]]) if len(self._held) > 1 else target[None]
        self._rollout.rollout(
            self.models, self._datas, self.state, self._ctrl,
            nstep=self.decimation, state=self._state_out, sensordata=self._sens_out, skip_checks=True,
        )  # fmt: skip
        self.state[:] = self._state_out[:, -1]
        return self.read()

    def _applied_targets(self, target: np.ndarray) -> np.ndarray:
        """(N, decimation, J): at substep s an env with latency k applies the target issued
        ceil((k - s) / decimation) control steps ago, or the new one when s >= k."""
        late = self._latency[:, None]
        held = (self._substep < late)[:, :, None]  # (N, decimation, 1)
        if len(self._held) == 1:  # latency within one control step: the previous target
            return np.where(held, self._held[0][:, None, :], target[:, None, :])
        back = np.maximum(late - self._substep - 1, 0) // self.decimation  # (N, decimation) steps back - 1
        old = self._held[back, np.arange(self.num_envs)[:, None]]  # (N, decimation, J)
        return np.where(held, old, target[:, None, :])

    def _views(self) -> None:
        """Torch views on the state and sensor buffers (no copies)."""
        s = torch.from_numpy(self.state)
        self._qpos = s[:, self._qpos_at : self._qpos_at + self.model.nq]
        self._qvel = s[:, self._qvel_at : self._qvel_at + self.model.nv]
        self._sens = torch.from_numpy(self._sens_out)
        sens = self.idx.sensor
        self._foot_touch = [sens[f"foot{i}_touch"].start for i in range(len(self.robot.foot_links))]
        self._foot_pos = [sens[f"foot{i}_pos"].start for i in range(len(self.robot.foot_links))]
        self._foot_vel = [sens[f"foot{i}_vel"].start for i in range(len(self.robot.foot_links))]
        self._torque = [sens[f"{n}_torque"].start for n in self.robot.joint_names]
        self._base_touch = sens["base_touch"].start
        self._jq = torch.as_tensor(self.idx.joint_qpos)
        self._jv = torch.as_tensor(self.idx.joint_qvel)

    def read(self, env_ids: torch.Tensor | None = None) -> SimState:
        """The state of every env (views where the layout allows), or copies of `env_ids`' rows."""
        rows = slice(None) if env_ids is None else env_ids.cpu()
        q, v, sens = self._qpos[rows], self._qvel[rows], self._sens[rows]
        r, d = self.idx.root_qpos, self.idx.root_qvel
        last = sens[:, -1]
        foot_pos = torch.stack([last[:, a : a + 3] for a in self._foot_pos], 1)
        foot_vel = torch.stack([last[:, a : a + 3] for a in self._foot_vel], 1)
        return SimState(
            base_pos=q[:, r : r + 3],
            base_quat=q[:, r + 3 : r + 7],
            base_lin_vel_world=v[:, d : d + 3],
            base_ang_vel=v[:, d + 3 : d + 6],
            joint_pos=q[:, self._jq],
            joint_vel=v[:, self._jv],
            joint_torque=last[:, self._torque],
            foot_force=sens[:, :, self._foot_touch].amax(1),
            foot_pos=foot_pos,
            foot_vel=foot_vel,
            base_contact=sens[:, :, self._base_touch].amax(1) > CONTACT_FORCE_N,
        )

    # -- resets and events -----------------------------------------------------------------

    def home_qpos(self) -> torch.Tensor:
        return torch.from_numpy(self._home_state[self._qpos_at : self._qpos_at + self.model.nq].copy())

    def joint_qpos_index(self) -> torch.Tensor:
        return self._jq

    def reset_envs(self, env_ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        """Set full qpos (n, nq) and qvel (n, nv) of some envs; their motors restart at the new pose."""
        ids = env_ids.cpu().numpy()
        self.state[ids] = self._home_state
        self.state[ids, self._qpos_at : self._qpos_at + self.model.nq] = qpos.cpu().numpy()
        self.state[ids, self._qvel_at : self._qvel_at + self.model.nv] = qvel.cpu().numpy()
        self._held[:, ids] = qpos.cpu().numpy()[:, self.idx.joint_qpos]
        self._sens_out[ids] = 0.0

    def add_base_velocity(self, env_ids: torch.Tensor, delta: torch.Tensor) -> None:
        """Kick: add a world-frame linear velocity (n, 3) to the base of some envs."""
        ids = env_ids.cpu().numpy()
        at = self._qvel_at + self.idx.root_qvel
        self.state[ids, at : at + 3] += delta.cpu().numpy()

    # -- randomization ---------------------------------------------------------------------

    def write_params(self, env_ids: torch.Tensor, params: EnvParams) -> None:
        """Put the randomized parameters of `env_ids` into their models and actuation latency."""
        latency = params.actuation_latency_s[env_ids].cpu().numpy() / self.robot.physics_dt
        self._set_latency(env_ids.cpu().numpy(), np.rint(latency).astype(np.int64))
        shared = self.models[0] is self.model
        if shared and not params.differ(env_ids, self._nominal_params, MODEL_FIELDS):
            return
        if shared:
            self.models = [copy.copy(self.model) for _ in range(self.num_envs)]
        p = {f: getattr(params, f)[env_ids].cpu().numpy() for f in MODEL_FIELDS}
        for row, i in enumerate(env_ids.cpu().numpy()):
            write_model_params(self.models[i], self._nominal, {f: v[row] for f, v in p.items()})

    def _set_latency(self, ids: np.ndarray, steps: np.ndarray) -> None:
        """Per-env latency in physics steps; keep as many past targets as the largest one needs."""
        self._latency[ids] = steps
        depth = max(1, -(-int(self._latency.max()) // self.decimation))
        if depth > len(self._held):
            extra = np.repeat(self._held[-1:], depth - len(self._held), axis=0)
            self._held = np.concatenate([self._held, extra])
