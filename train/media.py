"""Videos and plots of an evaluation: what people would rather look at than read."""

from __future__ import annotations

import copy
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from trot.sim.render import VIDEO_DISTANCE, make_camera, robot_radius  # noqa: E402


class VideoRecorder:
    """Renders every env of an evaluation each `1/fps` s; `write` tiles them one after another."""

    def __init__(self, robot: str, fps: int = 20, width: int = 320, height: int = 240):
        self.fps, self.width, self.height = fps, width, height
        self.frames: list[list[np.ndarray]] = []
        self.renderer = None
        self.step = 0

    def capture(self, env) -> None:
        every = max(1, round(1.0 / (self.fps * env.dt)))
        self.step += 1
        if (self.step - 1) % every:
            return
        b = env.sim_backend
        if self.renderer is None:
            # Software rendering: shadows and reflections would triple the time per frame.
            self.model = copy.copy(b.model)
            self.model.light_castshadow[:] = 0
            self.model.mat_reflectance[:] = 0
            self.data = mujoco.MjData(self.model)
            self.renderer = mujoco.Renderer(self.model, height=self.height, width=self.width)
            self.frames = [[] for _ in range(env.num_envs)]
            self.distance = VIDEO_DISTANCE * robot_radius(self.model)
        for i in range(env.num_envs):
            self.data.qpos[:] = b.state[i, b._qpos_at : b._qpos_at + b.model.nq]
            mujoco.mj_forward(self.model, self.data)
            cam = make_camera(self.data.qpos[b.root_qpos_adr : b.root_qpos_adr + 3], self.distance)
            self.renderer.update_scene(self.data, camera=cam)
            self.frames[i].append(self.renderer.render().copy())

    def write(self, path: Path, names: list[str]) -> Path:
        import imageio.v2 as imageio

        with imageio.get_writer(path, fps=self.fps, codec="libx264", quality=6, macro_block_size=8) as w:
            for frames in self.frames:
                for frame in frames:
                    w.append_data(frame)
        return path

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None


def save_plots(ev, out: Path) -> list[Path]:
    """Velocity tracking, joint positions vs targets, torques and a foot-contact gait diagram."""
    t = np.arange(ev.traces["base_lin_vel"].shape[0]) * ev.dt
    names, cmds = ev.traces["names"], ev.traces["commands"]
    written = []

    fig, axes = plt.subplots(len(names), 3, figsize=(12, 2.2 * len(names)), sharex=True, squeeze=False)
    for i, name in enumerate(names):
        measured = (
            ev.traces["base_lin_vel"][:, i, 0],
            ev.traces["base_lin_vel"][:, i, 1],
            ev.traces["yaw_rate"][:, i],
        )
        for j, (label, m) in enumerate(zip(("vx m/s", "vy m/s", "yaw rate rad/s"), measured)):
            ax = axes[i, j]
            ax.plot(t, m, lw=1, label="measured")
            ax.axhline(cmds[i, j], color="k", ls="--", lw=1, label="command")
            ax.set_ylabel(label)
            if j == 0:
                ax.set_title(name, loc="left", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time s")
    written.append(_save(fig, out / "velocity_tracking.png"))

    walk = next((i for i, n in enumerate(names) if n.startswith("forward")), 0)
    for key, title in (("joint_pos", "joint position vs target, rad"), ("joint_torque", "joint torque, N·m")):
        fig, axes = plt.subplots(4, 3, figsize=(12, 8), sharex=True)
        for j, ax in enumerate(axes.flat):
            ax.plot(t, ev.traces[key][:, walk, j], lw=1, label="measured" if key == "joint_pos" else "torque")
            if key == "joint_pos":
                ax.plot(t, ev.traces["joint_target"][:, walk, j], lw=1, ls="--", label="target")
            ax.set_title(f"joint {j}", fontsize=8)
        axes[0, 0].legend(fontsize=7)
        fig.suptitle(f"{title} ({names[walk]})")
        written.append(_save(fig, out / f"{key}.png"))

    fig, ax = plt.subplots(figsize=(12, 2.5))
    contact = ev.traces["foot_contact"][:, walk]
    for f in range(contact.shape[1]):
        on = np.where(contact[:, f], f, np.nan)
        ax.plot(t, on, lw=6, solid_capstyle="butt")
    ax.set_yticks(range(contact.shape[1]), ["FR", "FL", "BR", "BL"][: contact.shape[1]])
    ax.set_xlabel("time s")
    ax.set_title(f"foot contacts ({names[walk]})")
    written.append(_save(fig, out / "foot_contacts.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
