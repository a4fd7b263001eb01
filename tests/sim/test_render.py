"""The still of `trot view` and the training videos frame the robot whatever its size."""

import mujoco
import numpy as np
import pytest

from trot.robots import load_robot
from trot.sim.mujoco_model import build_model
from trot.sim.render import STILL_DISTANCE, make_camera, robot_radius


@pytest.mark.parametrize("name, radius", [("pupper_v3", 0.215), ("go2", 0.464)])
def test_the_still_frames_the_whole_robot_at_a_distance_that_scales_with_it(name, radius):
    model = build_model(load_robot(name))
    assert robot_radius(model) == pytest.approx(radius, abs=0.002)  # m, about the base at the default pose
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mujoco.mj_forward(model, data)
    renderer = mujoco.Renderer(model, height=240, width=320)
    renderer.enable_segmentation_rendering()
    try:
        renderer.update_scene(data, camera=make_camera(data.qpos[:3], STILL_DISTANCE * robot_radius(model)))
        segmentation = renderer.render()  # (H, W, 2): object id, object type
    finally:
        renderer.close()
    ids, kinds = segmentation[..., 0], segmentation[..., 1]
    robot = (kinds == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(ids, np.flatnonzero(model.geom_bodyid > 0))
    rows, cols = np.flatnonzero(robot.any(axis=1)), np.flatnonzero(robot.any(axis=0))
    # Inside the frame with a margin, and large in it: a Go2 at the Pupper's old 0.7 m is cut at the edges.
    assert rows.min() > 5 and rows.max() < 234 and cols.min() > 5 and cols.max() < 314
    assert (cols.max() - cols.min()) / 320 > 0.35 and (rows.max() - rows.min()) / 240 > 0.35
