"""Registers trot's tasks with gym for Isaac Lab, which imports this module through the `isaaclab.tasks` entry point
(pyproject.toml) before it looks a task id up: `isaaclab train --task Trot-Velocity-Flat-PupperV3 --rl_library rsl_rl`.

The config classes are named as strings and built when Isaac Lab asks for them (`trot.isaaclab.env_cfg`).
"""

import gymnasium as gym

from trot.isaaclab.task import ROBOTS, cfg_prefix, task_id

for _robot in ROBOTS:
    _prefix = cfg_prefix(_robot)
    gym.register(
        id=task_id(_robot),
        entry_point="isaaclab.envs:ManagerBasedRLEnv",
        disable_env_checker=True,
        kwargs={
            "env_cfg_entry_point": f"trot.isaaclab.env_cfg:{_prefix}FlatEnvCfg",
            "rsl_rl_cfg_entry_point": f"trot.isaaclab.env_cfg:{_prefix}PPORunnerCfg",
            "default_agent": "rsl_rl",
        },
    )
