"""trot: train a small quadruped in simulation and run it on the robot."""

__version__ = "0.1.0"

import os as _os

# MuJoCo picks its GL backend when it is first imported: headless software rendering unless the
# user chose one (MUJOCO_GL=egl on a GPU machine).
_os.environ.setdefault("MUJOCO_GL", "osmesa")
