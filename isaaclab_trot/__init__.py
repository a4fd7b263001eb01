"""trot.isaaclab: trot's walking task for Isaac Lab's manager-based API, generated from a robot folder.

- `task`: the pure part, importable anywhere: `isaaclab_task(robot)` reads `robots/<name>/` and its task.toml and
  returns the whole Isaac Lab task as plain frozen dataclasses (terms as "module:function" strings, scene entities as
  `Entity`), so that it is tested without Isaac Lab; `urdf` places the robot and its feet from the URDF;
- `mdp`: the few terms Isaac Lab lacks (the gait clock, trot's gait rewards, trot's randomization terms);
- `env_cfg`: those dataclasses turned into Isaac Lab 3.0's config classes, and the rsl-rl runner config;
- `tasks`: the gym registration Isaac Lab loads through the `isaaclab.tasks` entry point.

`mdp`, `env_cfg` and `tasks` need Isaac Lab (`pip install trot[isaaclab]`, Python 3.12); see docs/isaaclab.md.
"""
