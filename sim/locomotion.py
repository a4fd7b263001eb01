"""Velocity-command locomotion on flat ground as an rsl-rl `VecEnv` (the legged_gym / Isaac Lab recipe).

One step: actions -> joint targets (trot.mapping) -> backend physics (decimation substeps, latency)
-> rewards (declared terms) -> terminations and resets (randomization, written to the backend)
-> commands, pushes -> observations (policy group with noise, latency and history; critic group
noiseless with privileged terms).
"""

from __future__ import annotations

import math
import time
from dataclasses import fields

import torch
from rsl_rl.env import VecEnv
from tensordict import TensorDict

from trot import mapping
from trot.randomization import Randomizer
from trot.robots import load_robot
from trot.sim.backend import CONTACT_FORCE_N, Backend, MujocoBackend, SimState
from trot.sim.config import EnvCfg
from trot.sim.rewards import REWARDS
from trot.sim.symmetry import robot_mirror
from trot.sim.task import validate_env_cfg


class LocomotionEnv(VecEnv):
    """N robots tracking random velocity commands; `step` returns rsl-rl's (obs, rew, dones, extras)."""

    def __init__(self, cfg: EnvCfg, backend: Backend | None = None, nthread: int | None = None):
        self.cfg = cfg
        self.robot = load_robot(cfg.robot)
        validate_env_cfg(cfg, self.robot)
        self.policy_spec, self.critic_spec = cfg.observations.policy, cfg.observations.critic
        self.sim_backend = backend or MujocoBackend(self.robot, cfg.num_envs, nthread=nthread)
        self.device = self.sim_backend.device
        self.num_envs = cfg.num_envs
        self.num_actions = self.robot.num_joints
        self.dt = self.robot.control_dt
        self.max_episode_length = math.ceil(cfg.episode_length_s / self.dt)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.randomizer = Randomizer(cfg.randomization, self.robot, self.num_envs, self.gen)
        self.params = self.randomizer.params  # per-env physical parameters, written to the backend
        self._alloc()
        self._mirror: dict | None = None
        self._randomize("startup", torch.arange(self.num_envs))
        self.reset()

    # -- set-up ----------------------------------------------------------------------------

    def _alloc(self) -> None:
        n, j, f = self.num_envs, self.num_actions, len(self.robot.foot_links)
        r, dev = self.robot, self.device
        f64 = {"dtype": torch.float64, "device": dev}
        self.default_joint_pos = torch.tensor(r.default_joint_pos, **f64)
        # Targets are clamped where the robot's deploy loop clamps them, inside the URDF limits.
        self.joint_lower = torch.tensor(r.soft_joint_limits.lower, **f64)
        self.joint_upper = torch.tensor(r.soft_joint_limits.upper, **f64)
        self.episode_length_buf = torch.zeros(n, dtype=torch.long, device=dev)
        self.actions = torch.zeros(n, j, **f64)
        self.last_actions = torch.zeros_like(self.actions)
        self.commands = torch.zeros(n, 3, **f64)
        self.feet_air_time = torch.zeros(n, f, **f64)
        self.touchdown_air_time = torch.zeros_like(self.feet_air_time)
        self.first_contact = torch.zeros(n, f, dtype=torch.bool, device=dev)
        self.foot_contact = torch.zeros(n, f, dtype=torch.bool, device=dev)
        self.terminated = torch.zeros(n, dtype=torch.bool, device=dev)
        self.time_outs = torch.zeros(n, dtype=torch.bool, device=dev)
        obs_latency = self.cfg.randomization.terms.get("observation_latency")
        max_obs_latency = round(obs_latency.range[1] / self.dt) if obs_latency else 0
        self._imu_buf = torch.zeros(max_obs_latency + 1, n, 6, **f64)  # newest first
        # What the task reads of the per-env params, on the task's device (the randomizer keeps them on the CPU).
        self.joint_zero_offset = torch.zeros(n, j, **f64)
        self.obs_latency_steps = torch.zeros(n, dtype=torch.long, device=dev)
        self._policy_obs = torch.zeros(n, self.policy_spec.size(j), dtype=torch.float32, device=dev)
        self._critic_obs = torch.zeros(n, self.critic_spec.size(j), dtype=torch.float32, device=dev)
        self._policy_hist = torch.zeros(n, self.policy_spec.size(j), **f64)
        self._critic_hist = torch.zeros(n, self.critic_spec.size(j), **f64)
        self.reward_terms = {name: term for name, term in self.cfg.rewards.items() if term.weight != 0.0}
        self.episode_sums = {name: torch.zeros(n, **f64) for name in self.reward_terms}
        first = self.cfg.gait.pairs[0] if self.cfg.gait.pairs else ()
        # (feet,) stance in the clock's first half
        self.first_pair = torch.tensor([i in first for i in range(f)], device=dev)
        # Per-step observation noise is drawn where the task runs; on the CPU from the one seeded generator.
        self._noise_gen = self.gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(self.cfg.seed)
        self.common_step_counter = 0

    def _randomize(self, schedule: str, ids: torch.Tensor) -> None:
        """Draw the randomization terms due on `schedule` for `ids` and write them to the backend."""
        ids = ids.cpu()
        self.randomizer.sample(schedule, ids)
        self.sim_backend.write_params(ids, self.params)
        rows, p = ids.to(self.device), self.params
        self.joint_zero_offset[rows] = p.joint_zero_offset[ids].to(self.device)
        self.obs_latency_steps[rows] = (p.observation_latency_s[ids] / self.dt).round().long().to(self.device)

    def mirror_maps(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Index and sign tensors that turn each observation group, and the actions, into their mirror image
        (`x[:, index] * sign`; trot.sim.symmetry)."""
        if self._mirror is None:
            m = robot_mirror(self.robot, self.cfg.gait.pairs)
            phase = -1.0 if m.phase_shift else 1.0
            specs = {"policy": self.policy_spec, "critic": self.critic_spec,
                     "actions": mapping.ObsSpec((mapping.ObsTerm("last_action"),))}  # fmt: skip
            self._mirror = {}
            for group, spec in specs.items():
                index, sign = mapping.mirror_map(spec, m.joint_perm, m.joint_sign, phase)
                self._mirror[group] = (torch.tensor(index, device=self.device), torch.tensor(sign, device=self.device))
        return self._mirror

    # -- VecEnv ----------------------------------------------------------------------------

    def get_observations(self) -> TensorDict:
        return TensorDict(
            {"policy": self._policy_obs, "critic": self._critic_obs}, batch_size=[self.num_envs]
        )

    def reset(self) -> TensorDict:
        self._reset_envs(torch.arange(self.num_envs))
        self.sim = self.sim_backend.read()
        self._derive_kinematics()
        self._compute_observations(torch.arange(self.num_envs))
        return self.get_observations()

    def step(self, actions: torch.Tensor):
        r = self.robot
        self.last_actions = self.actions
        self.actions = actions.detach().to(torch.float64).clip(-r.action_clip, r.action_clip)
        target = mapping.action_to_target(
            torch, self.actions, self.default_joint_pos, r.action_scale, r.action_clip
        )
        target = torch.maximum(torch.minimum(target, self.joint_upper), self.joint_lower)
        # The motor controller works in encoder coordinates, which are off by the zero error.
        started = time.perf_counter()
        self.sim = self.sim_backend.step(target - self.joint_zero_offset)
        physics_s = time.perf_counter() - started
        self.episode_length_buf += 1
        self.common_step_counter += 1
        self._derive_kinematics()
        self._update_contacts()

        self._check_terminations()
        rewards = self._compute_rewards()
        dones = self.terminated | self.time_outs
        extras = {"time_outs": self.time_outs.clone(), "log": {"perf/physics_ms_per_step": 1e3 * physics_s}}
        done_ids = dones.nonzero().flatten()
        if len(done_ids):
            extras["log"].update(self._episode_log(done_ids))
            self._reset_envs(done_ids)
        self._resample_commands_on_schedule()
        pushed = self.randomizer.events(self.sim_backend, self.dt).to(self.device)
        self._refresh(torch.cat([done_ids, pushed]).unique())
        self._compute_observations(done_ids)
        extras["randomization"] = self.randomizer.values
        return self.get_observations(), rewards.float(), dones, extras

    # -- per-step quantities ---------------------------------------------------------------

    def _derive_kinematics(self) -> None:
        s = self.sim
        self.base_lin_vel = mapping.quat_rotate_inverse(torch, s.base_quat, s.base_lin_vel_world)
        self.projected_gravity = mapping.projected_gravity(torch, s.base_quat)
        speed = self.commands[:, :2].norm(dim=1) + self.commands[:, 2].abs()
        self.moving_command = speed > self.cfg.commands.min_speed
        f = self.policy_spec.gait_frequency_hz
        self.gait_clock = (self.episode_length_buf * (self.dt * f)) % 1.0  # cycle fraction, 0 at reset

    def _refresh(self, ids: torch.Tensor) -> None:
        """Re-read the state and body-frame kinematics of the envs that resets and pushes changed after the
        physics step (the observations see them), leaving every other row as the step read it."""
        if not len(ids):
            return
        part = self.sim_backend.read(ids)
        self.sim = SimState(**{f.name: getattr(self.sim, f.name).index_copy(0, ids, getattr(part, f.name))
                               for f in fields(SimState)})  # fmt: skip
        quat = part.base_quat
        self.base_lin_vel = self.base_lin_vel.index_copy(
            0, ids, mapping.quat_rotate_inverse(torch, quat, part.base_lin_vel_world)
        )
        self.projected_gravity = self.projected_gravity.index_copy(0, ids, mapping.projected_gravity(torch, quat))

    def _update_contacts(self) -> None:
        """Foot contact and air time, once per physics step (the first touchdown pays the air time)."""
        contact = self.sim.foot_force > CONTACT_FORCE_N
        self.first_contact = (self.feet_air_time > 0) & contact
        self.feet_air_time += self.dt
        self.touchdown_air_time = self.feet_air_time.clone()
        self.feet_air_time *= ~contact
        self.foot_contact = contact

    def _check_terminations(self) -> None:
        t = self.cfg.terminations
        tilted = self.projected_gravity[:, 2] > -math.cos(math.radians(t.max_tilt_deg))
        self.terminated = tilted | (self.sim.base_contact if t.base_contact else torch.zeros_like(tilted))
        self.time_outs = self.episode_length_buf >= self.max_episode_length
        self.terminated |= self.time_outs

    def _compute_rewards(self) -> torch.Tensor:
        total = torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)
        terminal = torch.zeros_like(total)
        for name, term in self.reward_terms.items():
            value = REWARDS[term.func](self, **term.params) * (term.weight * self.dt)
            self.episode_sums[name] += value
            if term.terminal:
                terminal += value
            else:
                total += value
        if self.cfg.only_positive_rewards:
            total = total.clamp(min=0.0)
        return total + terminal

    def _episode_log(self, ids: torch.Tensor) -> dict:
        log = {}
        for name, sums in self.episode_sums.items():
            log[f"reward/{name}"] = (sums[ids] / self.cfg.episode_length_s).mean()
            sums[ids] = 0.0
        log["termination/time_out"] = self.time_outs[ids].float().mean()
        log["termination/fall"] = (self.terminated[ids] & ~self.time_outs[ids]).float().mean()
        log["episode/length_s"] = self.episode_length_buf[ids].float().mean() * self.dt
        for name, values in self.randomizer.values.items():
            log[f"randomization/{name}"] = values[ids.cpu()].float().mean()
        return log

    # -- resets, commands, events ----------------------------------------------------------

    def _reset_envs(self, ids: torch.Tensor) -> None:
        n, dev = len(ids), self.device
        self._randomize("reset", ids)
        qpos = self.sim_backend.home_qpos().to(dev).repeat(n, 1)
        jq = self.sim_backend.joint_qpos_index().to(dev)
        noise = self.cfg.init.joint_pos_noise
        qpos[:, jq] += noise * (2 * torch.rand(n, len(jq), generator=self.gen, dtype=torch.float64) - 1).to(dev)
        qpos[:, jq] = torch.maximum(torch.minimum(qpos[:, jq], self.joint_upper), self.joint_lower)
        yaw = ((2 * torch.rand(n, generator=self.gen, dtype=torch.float64) - 1) * math.pi).to(dev)
        rq, rv = self.sim_backend.root_qpos_adr, self.sim_backend.root_qvel_adr
        qpos[:, rq + 3 : rq + 7] = torch.stack([torch.cos(yaw / 2), 0 * yaw, 0 * yaw, torch.sin(yaw / 2)], 1)
        qvel = torch.zeros(n, self.sim_backend.num_qvel, dtype=torch.float64, device=dev)
        v = self.cfg.init.base_vel_noise
        qvel[:, rv : rv + 6] = v * (2 * torch.rand(n, 6, generator=self.gen, dtype=torch.float64) - 1).to(dev)
        self.sim_backend.reset_envs(ids, qpos, qvel)
        self.actions[ids] = 0.0
        self.last_actions[ids] = 0.0
        self.feet_air_time[ids] = 0.0
        self.episode_length_buf[ids] = 0
        self._sample_commands(ids)

    def _sample_commands(self, ids: torch.Tensor) -> None:
        c, n = self.cfg.commands, len(ids)
        lo, hi = torch.tensor(c.sample_ranges(), dtype=torch.float64).T
        cmd = lo + (hi - lo) * torch.rand(n, 3, generator=self.gen, dtype=torch.float64)
        small = cmd[:, :2].norm(dim=1) < c.min_speed
        cmd[small, :2] = 0.0
        standing = torch.rand(n, generator=self.gen) < c.standing_fraction
        cmd[standing] = 0.0
        self.commands[ids] = cmd.to(self.device)

    def _resample_commands_on_schedule(self) -> None:
        every = max(1, round(self.cfg.commands.resample_s / self.dt))
        due = ((self.episode_length_buf % every) == 0) & (self.episode_length_buf > 0)
        ids = due.nonzero().flatten()
        if len(ids):
            self._sample_commands(ids)

    # -- observations ----------------------------------------------------------------------

    def _compute_observations(self, reset_ids: torch.Tensor) -> None:
        s, obs_cfg, policy = self.sim, self.cfg.observations, self.policy_spec
        imu_now = torch.cat([s.base_ang_vel, self.projected_gravity], 1)
        self._imu_buf = torch.cat([imu_now[None], self._imu_buf[:-1]], 0)
        if len(reset_ids):
            self._imu_buf[:, reset_ids] = imu_now[reset_ids]
        lat = self.obs_latency_steps.clamp(max=self._imu_buf.shape[0] - 1)
        imu = self._imu_buf[lat, torch.arange(self.num_envs, device=self.device)]
        measured = mapping.raw_terms(
            torch,
            quat_wxyz=s.base_quat,
            gyro=s.base_ang_vel,
            joint_pos=s.joint_pos + self.joint_zero_offset,
            joint_vel=s.joint_vel,
            default_joint_pos=self.default_joint_pos,
            command=self.commands,
            last_action=self.actions,
            base_lin_vel=self.base_lin_vel,
            phase=mapping.gait_phase(torch, self.episode_length_buf, self.dt, policy.gait_frequency_hz),
        )
        policy_terms = dict(measured, base_ang_vel=imu[:, :3], projected_gravity=imu[:, 3:])
        if obs_cfg.add_noise:
            for t in policy.terms:
                if t.noise > 0:
                    x = policy_terms[t.name]
                    policy_terms[t.name] = x + t.noise * torch.randn(
                        x.shape, generator=self._noise_gen, dtype=x.dtype, device=x.device
                    )
        self._policy_hist = self._update_history(policy, self._policy_hist, policy_terms, reset_ids)
        self._critic_hist = self._update_history(self.critic_spec, self._critic_hist, measured, reset_ids)
        # New tensors every step, never written in place: rsl-rl keeps a reference to the observation
        # an action was computed from until after the next step, and stores it then.
        self._policy_obs = self._policy_hist.clip(-obs_cfg.clip, obs_cfg.clip).float()
        self._critic_obs = self._critic_hist.clip(-obs_cfg.clip, obs_cfg.clip).float()

    def _update_history(self, spec, hist, terms, reset_ids):
        frame = mapping.assemble_frame(torch, spec, terms)
        hist = mapping.push_history(torch, hist, frame)
        if len(reset_ids) and spec.history > 1:
            hist[reset_ids] = frame[reset_ids].repeat(1, spec.history)
        return hist


def mirror_batch(env: LocomotionEnv, obs: TensorDict | None = None, actions: torch.Tensor | None = None):
    """rsl-rl's symmetry `data_augmentation_func`: each of `obs` and `actions` followed by its mirror image."""
    maps = env.mirror_maps()

    def both(x, group):
        index, sign = maps[group]
        return torch.cat([x, x[:, index] * sign.to(x.dtype)])

    if obs is not None:
        obs = TensorDict({k: both(obs[k], k) for k in obs.keys()}, batch_size=[2 * obs.batch_size[0]])
    if actions is not None:
        actions = both(actions, "actions")
    return obs, actions
