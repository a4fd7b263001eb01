"""The GPU backend: N copies of the robot stepped together by MuJoCo Warp, behind the same `Backend` interface.

The model is the C backend's `MjModel` (built from the URDF by `sim/mujoco_model.py`), handed to
`mujoco_warp.put_model` unchanged; every world runs in one batch on a Warp device (`cuda:0`, or
`cpu` where there is no GPU: slow, but the same code and numbers, which is how the tests run it).
What randomization varies lives in model fields that hold one row per world (`PER_WORLD`), written by
`write_params` from the same engine-neutral `EnvParams`, in the same units, as the C backend.

A control step (`decimation` physics steps, each world's new joint targets reaching its motors its
actuation latency late, the touch sensors' peak kept over the substeps) is captured once as a graph
and replayed with one launch (a CUDA graph on the GPU; Warp replays it on the CPU too). State is read
through torch tensors that view Warp's arrays: nothing is copied to the host.

MuJoCo Warp computes in float32: positions agree with the C backend's float64 to about 1e-6 m after a
hundred control steps (tests/sim/test_mjwarp_backend.py). A new `EnvParams` field is one more model
field in `PER_WORLD` (if it lives in the model) and one line in `write_params`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mujoco
import mujoco_warp as mjw
import numpy as np
import torch
import warp as wp

from trot.randomization import EnvParams
from trot.robots import Robot
from trot.sim import mjwarp_kernels as kernels
from trot.sim.backend import CONTACT_FORCE_N, MODEL_FIELDS, SimState
from trot.sim.mujoco_model import build_model, contact_geoms, friction_geoms, index_model

# The MuJoCo Warp model fields that get one row per world: the ones write_params sets.
PER_WORLD = (
    "body_mass", "body_inertia", "body_ipos", "geom_friction", "geom_solref",
    "actuator_gainprm", "actuator_biasprm", "actuator_forcerange",
    "dof_armature", "dof_damping", "dof_frictionloss",
)  # fmt: skip


def contact_capacity(model: mujoco.MjModel) -> tuple[int, int]:
    """(contacts, constraint rows) one world can need at most, from the model's collision pairs: a sphere
    touches anything at one point, a plane a box at 4 corners and a capsule at 2; other pairs get MuJoCo's
    per-pair maximum. Rows: each contact's friction pyramid (or cone), one per joint limit, per dof with
    dry friction and per equality row (6 at most). MuJoCo Warp's buffers are fixed; sized so, they cannot
    overflow."""
    geoms = [g for g in range(model.ngeom) if model.geom_contype[g] or model.geom_conaffinity[g]]
    t = mujoco.mjtGeom
    contacts = 0
    for a, i in enumerate(geoms):
        for j in geoms[a + 1 :]:
            meets = (model.geom_contype[i] & model.geom_conaffinity[j]) or (
                model.geom_contype[j] & model.geom_conaffinity[i]
            )
            if not meets or model.geom_bodyid[i] == model.geom_bodyid[j]:
                continue
            pair = {int(model.geom_type[i]), int(model.geom_type[j])}
            if t.mjGEOM_SPHERE in pair:
                contacts += 1
            elif pair == {t.mjGEOM_PLANE, t.mjGEOM_BOX}:
                contacts += 4
            elif pair == {t.mjGEOM_PLANE, t.mjGEOM_CAPSULE}:
                contacts += 2
            else:
                contacts += mujoco.mjMAXCONPAIR
    condim = int(model.geom_condim[geoms].max()) if geoms else 1
    pyramidal = model.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
    per_contact = 2 * (condim - 1) if pyramidal and condim > 1 else condim
    rows = contacts * per_contact + int(model.jnt_limited.sum()) + int((model.dof_frictionloss > 0).sum())
    rows += 6 * model.neq + int(model.tendon_limited.sum()) + int((model.tendon_frictionloss > 0).sum())
    return max(contacts, 1), max(rows, 1)


def _warp_device(device: str) -> wp.context.Device:
    """Warp's device for a torch-style name, or an error that says what to do instead."""
    try:
        return wp.get_device(device)
    except ValueError:
        found = ", ".join(str(d) for d in wp.get_devices())
        hint = "" if wp.is_cuda_available() else " (Warp finds no CUDA driver here: --device cpu runs it on the CPU)"
        raise ValueError(f"--device {device}: not a Warp device; found {found}{hint}") from None


class MjwarpBackend:
    """N envs in MuJoCo Warp on one device, one graph launch per control step."""

    def __init__(self, robot: Robot, num_envs: int, device: str = "cpu", graph: bool = True):
        wp.config.log_level = wp.LOG_WARNING  # no banner or module-load lines in the training log
        wp.init()
        self.robot = robot
        self.num_envs = num_envs
        self.decimation = robot.decimation
        self.wp_device = _warp_device(device)
        self.device = torch.device(wp.device_to_torch(self.wp_device))
        self.model = build_model(robot)
        self.idx = index_model(self.model, robot)
        m, n = self.model, num_envs
        self.num_qvel = m.nv
        self.root_qpos_adr, self.root_qvel_adr = self.idx.root_qpos, self.idx.root_qvel
        self.nconmax, self.njmax = contact_capacity(m)

        home = mujoco.MjData(m)
        mujoco.mj_resetDataKeyframe(m, home, m.key("home").id)
        mujoco.mj_forward(m, home)
        self._home_qpos = home.qpos.copy()
        feet = len(robot.foot_links)
        touch = [self.idx.sensor[f"foot{i}_touch"].start for i in range(feet)] + [self.idx.sensor["base_touch"].start]
        with wp.ScopedDevice(self.wp_device):
            self.wm = mjw.put_model(m, batch_sizes={f: n for f in PER_WORLD})
            self.wd = mjw.put_data(m, home, nworld=n, nconmax=self.nconmax, njmax=self.njmax)
            self._target = wp.array(np.tile(robot.default_joint_pos, (n, 1)), dtype=float)
            self._held = wp.array(np.tile(robot.default_joint_pos, (1, n, 1)), dtype=float)  # (depth, N, J)
            self._latency = wp.zeros(n, dtype=int)
            self._actuator = wp.array(self.idx.joint_ctrl, dtype=int)
            self._touch_address = wp.array(touch, dtype=int)
            self._touch_peak = wp.zeros((n, len(touch)), dtype=float)
        self._latency_host = np.zeros(n, dtype=np.int64)  # physics steps; the max sizes the target history
        self._views()
        self._nominal = self._nominal_fields()
        # Graphs need Warp's memory pool on CUDA (allocation during capture); the CPU replays them always.
        self._use_graph = graph and (self.wp_device.is_cpu or wp.is_mempool_enabled(self.wp_device))
        self._graph = None
        self._torch_stream = wp.stream_from_torch(self.device) if self.wp_device.is_cuda else None
        self._capture()

    # -- hot path --------------------------------------------------------------------------

    def step(self, joint_targets: torch.Tensor) -> SimState:
        """Run one control step: each env's new target reaches its motors its actuation latency late."""
        self._target_t.copy_(joint_targets)
        self._launch()
        return self.read()

    def _control_step(self, after_substep: Callable[[int], None] | None = None) -> None:
        """The Warp launches of one control step (captured into the graph); `after_substep(s)` lets a test
        look at each substep when the step runs eagerly."""
        n, j = self.num_envs, self.robot.num_joints
        for s in range(self.decimation):
            wp.launch(
                kernels.apply_targets, dim=(n, j),
                inputs=[s, self.decimation, self._target, self._held, self._latency, self._actuator],
                outputs=[self.wd.ctrl],
            )  # fmt: skip
            mjw.step(self.wm, self.wd)
            wp.launch(
                kernels.track_touch, dim=self._touch_peak.shape,
                inputs=[s, self.wd.sensordata, self._touch_address], outputs=[self._touch_peak],
            )  # fmt: skip
            if after_substep is not None:
                after_substep(s)
        wp.launch(kernels.push_targets, dim=(n, j), inputs=[self._target], outputs=[self._held])

    def _capture(self) -> None:
        if not self._use_graph:
            return
        with wp.ScopedDevice(self.wp_device), wp.ScopedCapture() as capture:
            self._control_step()
        self._graph = capture.graph

    def _launch(self) -> None:
        """One control step, ordered after the torch work that wrote its inputs and before what reads it."""
        with wp.ScopedDevice(self.wp_device):
            stream = wp.get_stream() if self._torch_stream is not None else None
            if stream is not None:
                stream.wait_stream(self._torch_stream)
            if self._graph is not None:
                wp.capture_launch(self._graph)
            else:
                self._control_step()
            if stream is not None:
                self._torch_stream.wait_stream(stream)

    def _views(self) -> None:
        """Torch tensors on the Warp arrays (shared memory, float32), and the index tensors of `read`."""
        d, dev, sens = self.wd, self.device, self.idx.sensor
        self._qpos, self._qvel = wp.to_torch(d.qpos), wp.to_torch(d.qvel)
        self._sens = wp.to_torch(d.sensordata)
        self._time = wp.to_torch(d.time)
        self._target_t, self._held_t = wp.to_torch(self._target), wp.to_torch(self._held)
        self._latency_t, self._peak = wp.to_torch(self._latency), wp.to_torch(self._touch_peak)
        self._per_world = {f: wp.to_torch(getattr(self.wm, f)) for f in PER_WORLD}
        feet = range(len(self.robot.foot_links))

        def columns(names, size):
            return torch.tensor([sens[name].start + k for name in names for k in range(size)], device=dev)

        self._foot_pos = columns([f"foot{i}_pos" for i in feet], 3)
        self._foot_vel = columns([f"foot{i}_vel" for i in feet], 3)
        self._torque = columns([f"{name}_torque" for name in self.robot.joint_names], 1)
        self._jq = torch.as_tensor(self.idx.joint_qpos, device=dev)
        self._jv = torch.as_tensor(self.idx.joint_qvel, device=dev)

    def read(self, env_ids: torch.Tensor | None = None) -> SimState:
        """The state of every env, or of `env_ids` only (rows in that order), as float64 copies."""
        rows = slice(None) if env_ids is None else env_ids.to(self.device)
        q, v, sens = self._qpos[rows].double(), self._qvel[rows].double(), self._sens[rows].double()
        r, d, feet = self.idx.root_qpos, self.idx.root_qvel, len(self.robot.foot_links)
        n = q.shape[0]
        peak = self._peak[rows].double()
        return SimState(
            base_pos=q[:, r : r + 3],
            base_quat=q[:, r + 3 : r + 7],
            base_lin_vel_world=v[:, d : d + 3],
            base_ang_vel=v[:, d + 3 : d + 6],
            joint_pos=q[:, self._jq],
            joint_vel=v[:, self._jv],
            joint_torque=sens[:, self._torque],
            foot_force=peak[:, :feet],
            foot_pos=sens[:, self._foot_pos].view(n, feet, 3),
            foot_vel=sens[:, self._foot_vel].view(n, feet, 3),
            base_contact=peak[:, feet] > CONTACT_FORCE_N,
        )

    # -- resets and events -----------------------------------------------------------------

    def home_qpos(self) -> torch.Tensor:
        return torch.tensor(self._home_qpos, dtype=torch.float64, device=self.device)

    def joint_qpos_index(self) -> torch.Tensor:
        return self._jq

    def reset_envs(self, env_ids: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        """Set full qpos (n, nq) and qvel (n, nv) of some envs; their motors restart at the new pose."""
        ids, qpos = env_ids.to(self.device), qpos.to(self.device, torch.float32)
        self._qpos[ids] = qpos
        self._qvel[ids] = qvel.to(self.device, torch.float32)
        self._time[ids] = 0.0
        self._held_t[:, ids] = qpos[:, self._jq]
        self._sens[ids] = 0.0  # as the C backend: no sensor reading until the env has stepped
        self._peak[ids] = 0.0

    def add_base_velocity(self, env_ids: torch.Tensor, delta: torch.Tensor) -> None:
        """Kick: add a world-frame linear velocity (n, 3) to the base of some envs."""
        at = self.idx.root_qvel
        self._qvel[env_ids.to(self.device), at : at + 3] += delta.to(self.device, torch.float32)

    # -- randomization ---------------------------------------------------------------------

    def _nominal_fields(self) -> dict:
        m, dev = self.model, self.device

        def f64(x):
            return torch.as_tensor(np.array(x), dtype=torch.float64, device=dev)

        return {
            "body_mass": f64(m.body_mass),
            "body_inertia": f64(m.body_inertia),
            "body_ipos": f64(m.body_ipos),
            "friction_geoms": torch.as_tensor(friction_geoms(m), device=dev),
            "contact_geoms": torch.as_tensor(contact_geoms(m), device=dev),
            "dofs": torch.as_tensor(self.idx.joint_qvel, device=dev),
            "base": m.body(self.robot.base_link).id,
            "act": torch.as_tensor(self.idx.joint_ctrl, device=dev),
        }

    def write_params(self, env_ids: torch.Tensor, params: EnvParams) -> None:
        """Put the randomized parameters of `env_ids` into their worlds' model rows and actuation latency,
        computed in float64 as the C backend does, stored in float32."""
        host_ids = env_ids.cpu()
        self._set_latency(host_ids, torch.round(params.actuation_latency_s[host_ids] / self.robot.physics_dt))
        p = {f: getattr(params, f)[host_ids].to(self.device) for f in MODEL_FIELDS}
        nom, base, w = self._nominal, self._nominal["base"], self._per_world
        rows = host_ids.to(self.device)
        mass = nom["body_mass"] * p["mass_scale"][:, None]  # (n, nbody)
        inertia = nom["body_inertia"] * p["mass_scale"][:, None, None]  # (n, nbody, 3)
        with_payload = mass[:, base] + p["payload_mass"]
        inertia[:, base] *= (with_payload / mass[:, base])[:, None]
        mass[:, base] = with_payload
        ipos = nom["body_ipos"].repeat(len(rows), 1, 1)  # (n, nbody, 3)
        ipos[:, base] += p["com_offset"]
        at, act, geoms = rows[:, None], nom["act"], nom["friction_geoms"]
        w["body_mass"][rows] = mass.float()
        w["body_inertia"][rows] = inertia.float()
        w["body_ipos"][rows] = ipos.float()
        w["geom_friction"][at, geoms, 0] = p["friction"][:, None].float()
        w["actuator_gainprm"][at, act, 0] = p["kp"].float()
        w["actuator_biasprm"][at, act, 1] = -p["kp"].float()
        w["actuator_biasprm"][at, act, 2] = -p["kd"].float()
        w["actuator_forcerange"][at, act, 0] = -p["torque_limit"].float()
        w["actuator_forcerange"][at, act, 1] = p["torque_limit"].float()
        contact, dofs = nom["contact_geoms"], nom["dofs"]
        w["geom_solref"][at, contact, 0] = p["contact_timeconst"][:, None].float()
        w["geom_solref"][at, contact, 1] = p["contact_dampratio"][:, None].float()
        w["dof_armature"][at, dofs] = p["armature"].float()
        w["dof_damping"][at, dofs] = p["joint_damping"].float()
        w["dof_frictionloss"][at, dofs] = p["joint_friction"].float()

    def _set_latency(self, ids: torch.Tensor, steps: torch.Tensor) -> None:
        """Per-env latency in physics steps; keep as many past targets as the largest one needs (a deeper
        history is a new array, so the graph is captured again)."""
        self._latency_host[ids.numpy()] = steps.numpy()
        self._latency_t[ids.to(self.device)] = steps.to(self.device, torch.int32)
        depth = max(1, math.ceil(int(self._latency_host.max()) / self.decimation))
        if depth > self._held.shape[0]:
            old = self._held_t
            self._held = wp.empty((depth, *old.shape[1:]), dtype=float, device=self.wp_device)
            self._held_t = wp.to_torch(self._held)
            self._held_t[: len(old)] = old
            self._held_t[len(old) :] = old[-1]
            self._capture()
