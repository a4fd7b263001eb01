"""Headless MuJoCo rendering: a still of the default pose, and frames for videos."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import mujoco
import numpy as np

# Camera distance in units of the robot's radius (`robot_radius`): the Pupper (0.22 m) at 0.7 m, where its still
# always was, a Go2 (0.46 m) at 1.5 m.
STILL_DISTANCE = 3.2
VIDEO_DISTANCE = 3.6  # videos leave room for the robot to walk


def robot_radius(model: mujoco.MjModel) -> float:
    """Radius of the sphere about the base that holds every geom of the robot (not the floor) at its 'home'
    keyframe (the default pose), m."""
    data = mujoco.MjData(model)
    if model.nkey:
        mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mujoco.mj_forward(model, data)
    robot = model.geom_bodyid > 0  # body 0 is the world: the floor
    base = data.xpos[1]  # the free-floating base is the world's first child
    return float(np.max(np.linalg.norm(data.geom_xpos[robot] - base, axis=1) + model.geom_rbound[robot]))


def make_camera(lookat, distance: float, azimuth: float = 135.0, elevation: float = -20.0):
    """A free camera looking at `lookat` from `distance` m."""
    cam = mujoco.MjvCamera()
    cam.lookat[:] = lookat
    cam.distance, cam.azimuth, cam.elevation = distance, azimuth, elevation
    return cam


def render_default_pose(robot_name: str, width: int = 640, height: int = 480) -> np.ndarray:
    """RGB image (height, width, 3) of the robot standing at its default pose."""
    from trot.robots import load_robot
    from trot.sim.mujoco_model import build_model

    robot = load_robot(robot_name)
    model = build_model(robot)
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mujoco.mj_forward(model, data)
    renderer = mujoco.Renderer(model, height=height, width=width)
    try:
        renderer.update_scene(data, camera=make_camera(data.qpos[:3], STILL_DISTANCE * robot_radius(model)))
        return renderer.render().copy()
    finally:
        renderer.close()


def save_png(path: str | Path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)


def run_view(args: argparse.Namespace) -> int:
    from trot.robots import resolve_robot_dir

    out = args.output or f"{resolve_robot_dir(args.robot).name}.png"
    image = render_default_pose(args.robot, args.width, args.height)
    save_png(out, image)
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]}, MUJOCO_GL={os.environ['MUJOCO_GL']})")
    return 0
