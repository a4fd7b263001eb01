"""`trot gate BUNDLE`: the policy bundle, through the deploy runtime, on a second simulator.

Each cell of a commands × perturbations matrix runs the bundle with `trot.deploy.runtime.PolicyRuntime`
(the code that runs on the robot) against PyBullet: the same URDF, the contract's motor model, physics
at the bundle's `physics_dt`, the policy at its `control_dt`. A cell records whether the robot fell,
velocity tracking error, standing drift, torque saturation, foot slip and joint-limit margin, and
passes when every figure is within `GateThresholds`. `--mujoco` runs the same matrix in MuJoCo too,
side by side, and holds the two engines' tracking errors to agree. `--quick` runs a few cells in
PyBullet only. Writes `gate.json`, `gate.md` and PNG plots; exits 1 when a cell fails, 2 on a bad bundle.

One module per job:

- `commands`: the robot's velocity commands by name (its task config); `perturbations`: training's
  randomization terms pinned to values, by name (the matrix's two axes);
- `cell`: one cell's physics (`CellSim`, `make_engine`) and its run through the runtime (`run_cell`);
- `judge`: `GateThresholds`, a cell's metrics (`CellResult`), its failures, the engines' agreement;
- `run`: the matrix in a process pool (`run_gate` -> `GateRun`);
- `report`: `gate.json`, `gate.md`, the plots and the summary table;
- `cli`: the flags and the exit status.

Importing this package loads only what the CLI's parser needs (no engine, torch or matplotlib), so the
`trot` command builds its flags anywhere; `cell`, `run` and `report` bring the engines when imported.
"""

from trot.hil.gate.cli import add_args, main, run_cli
from trot.hil.gate.judge import GateThresholds
from trot.hil.gate.perturbations import PERTURBATIONS, Perturbation

__all__ = ["PERTURBATIONS", "GateThresholds", "Perturbation", "add_args", "main", "run_cli"]
