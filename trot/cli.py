"""The `trot` command: one entry point, a subcommand per stage.

Subcommands are declared here with argparse only; each imports its stage when it runs, so
`trot deploy --help` works on a robot that has only the `deploy` extra (no torch, mujoco or pybullet).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], str]] = {}


def command(name: str, help: str, target: str):
    """Register `name` with an argument builder; `target` is 'module:function' run with the args."""

    def wrap(build: Callable[[argparse.ArgumentParser], None]):
        COMMANDS[name] = (help, build, target)
        return build

    return wrap


@command("robots", "list the robots trot knows, with mass, joints and rates", "trot.cli:run_robots")
def _robots(p: argparse.ArgumentParser) -> None:
    p.add_argument("--robot", default=None, help="only this robot (name or folder)")


@command("view", "render a robot's default pose to a PNG (headless MuJoCo)", "trot.sim.render:run_view")
def _view(p: argparse.ArgumentParser) -> None:
    p.add_argument("robot", help="robot name (e.g. pupper_v3) or folder with a robot.toml")
    p.add_argument("-o", "--output", default=None, help="PNG path (default: <robot>.png)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)


@command("bench", "benchmarks that print figures against a reference measured in the same run", "trot.cli:run_bench")
def _bench(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    s = sub.add_parser("sim", help="env-steps/s of the full task vs raw stepping of the same model")
    s.add_argument("--num_envs", type=int, nargs="+", default=[1024], help="one or more batch sizes")
    s.add_argument("--sim", default="mujoco", choices=["mujoco", "mjwarp"], help="physics backend")
    s.add_argument("--device", default="cpu", help="MuJoCo Warp's device for --sim mjwarp (cpu, cuda:0)")
    s.add_argument("--seconds", type=float, default=5.0, help="measuring time per figure")
    s.add_argument("--robot", default="pupper_v3")
    s.add_argument("--threads", type=int, default=None, help="physics threads (default: all cores)")
    from trot.train.bench import add_bench_train_args  # argparse only until it runs

    add_bench_train_args(sub.add_parser("train", help="time to a gate-passing policy over seeds (train --until_gate)"))
    from trot.hil.bench_deploy import add_bench_args  # argparse; PyBullet only when it runs

    add_bench_args(sub.add_parser("deploy", help="deploy loop timing against the emulator, serial link budget"))
    from trot.hil.bench_ros2 import add_bench_args as add_bench_ros2_args  # argparse only until it runs

    add_bench_ros2_args(sub.add_parser("ros2", help="ROS 2 rate and latency, raw Cyclone DDS and rclpy, each way"))
    from trot.deploy.fuzz import add_fuzz_args  # argparse only until it runs

    add_fuzz_args(sub.add_parser("fuzz", help="mutated frames through the serial decoder: frames/s, what it refused"))


def run_bench(args: argparse.Namespace) -> int:
    if args.what == "fuzz":
        from trot.deploy.fuzz import run_bench_fuzz

        return run_bench_fuzz(args)
    if args.what == "train":
        from trot.train.bench import run_bench_train

        return run_bench_train(args)
    if args.what == "deploy":
        from trot.hil.bench_deploy import run_bench as run_bench_deploy

        return run_bench_deploy(args)
    if args.what == "ros2":
        from trot.hil.bench_ros2 import run_bench as run_bench_ros2

        return run_bench_ros2(args)
    from trot.sim.bench import run_bench_sim

    return run_bench_sim(args)


@command("deploy", "run a policy on the robot: real-time loop with its safety layer", "trot.deploy.cli:run_deploy")
def _deploy(p: argparse.ArgumentParser) -> None:
    from trot.deploy.cli import add_deploy_args  # argparse only

    add_deploy_args(p)


@command(
    "watchdog",
    "damp the motors when trot deploy (ROS 2) stops commanding; its own process and systemd unit",
    "trot.deploy.watchdog:run_watchdog",
)
def _watchdog(p: argparse.ArgumentParser) -> None:
    from trot.deploy.watchdog import add_watchdog_args  # argparse only

    add_watchdog_args(p)


@command("log", "deploy telemetry: PNG plots (plot) or timing and transitions (summary)", "trot.deploy.cli:run_log")
def _log(p: argparse.ArgumentParser) -> None:
    from trot.deploy.cli import add_log_args

    add_log_args(p)


@command("train", "train a policy with rsl-rl-lib PPO in batched MuJoCo", "trot.train.runner:run_train")
def _train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--robot", default="pupper_v3", help="robot name or folder")
    p.add_argument(
        "--task", default="walk", help="experiment name: runs go to LOG_ROOT/<robot>/<task>/ (the task itself is "
        "the shared walking task with the robot folder's task.toml)",
    )  # fmt: skip
    p.add_argument("--preset", default="cpu", choices=["cpu", "gpu"], help="cpu: 2-core default; gpu: mjwarp")
    p.add_argument("--num_envs", type=int, default=None, help="parallel environments (preset default)")
    p.add_argument(
        "--max_iterations", type=int, default=None, help="PPO iterations to run (more, on --resume)"
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--run_name", default="", help="suffix of the run folder name")
    p.add_argument("--resume", action="store_true", help="continue a run from its checkpoint")
    p.add_argument("--load_run", default=None, help="run folder (name or path) to resume; default: latest")
    p.add_argument("--checkpoint", default=None, help="checkpoint to resume (N or file); default: latest")
    p.add_argument("--headless", action="store_true", help="accepted for habit: trot never opens a window")
    p.add_argument("--device", default=None, help="torch device for learning (cpu, cuda:0)")
    p.add_argument(
        "--sim", default=None, choices=["mujoco", "mjwarp"],
        help="physics backend: mujoco (C, CPU threads) or mjwarp (MuJoCo Warp on --device); default: the preset's",
    )  # fmt: skip
    p.add_argument("--logger", default=None, choices=["tensorboard", "wandb", "neptune"])
    p.add_argument("--log_root", default="logs", help="runs go to LOG_ROOT/<robot>/<task>/<time>_<run_name>")
    p.add_argument(
        "--until_gate", action="store_true",
        help="stop when the policy passes the gate: a quick gate in a side process every --gate_every iterations, "
        "the full gate at the first quick pass; exit 0 only when a policy passed the full gate",
    )  # fmt: skip
    p.add_argument("--gate_every", type=int, default=None, help="iterations between quick gates (default 25)")
    p.add_argument("--max_minutes", type=float, default=None, help="wall-time cap of --until_gate (default 30)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="override any config field, e.g. --set env.rewards.orientation.weight=-2 (repeatable)",
    )  # fmt: skip


@command("play", "evaluate a checkpoint in MuJoCo: table, MP4 and plots", "trot.train.evaluate:run_play")
def _play(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument(
        "--checkpoint", default=None, help="checkpoint in the run folder (N or file); default: latest"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="per command")
    p.add_argument("-o", "--output", default=None, help="folder for play.mp4 and plots (default: RUN/play)")
    p.add_argument("--fps", type=int, default=20)
    p.add_argument("--no_video", action="store_true")
    p.add_argument(
        "--headless", action="store_true", help="accepted for habit: rendering is always offscreen"
    )
    p.add_argument("--strict", action="store_true", help="exit 1 unless every command passes")


@command("export", "export a checkpoint to the one-file ONNX policy bundle", "trot.train.export:run_export")
def _export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder or checkpoint file")
    p.add_argument("--checkpoint", default=None, help="checkpoint (N or file); default: latest")
    p.add_argument("-o", "--output", default="policy.onnx", help="bundle path")


@command(
    "import-isaaclab",
    "write an Isaac Lab rsl-rl run as a policy bundle",
    "trot.train.isaaclab_import:run_import_isaaclab",
)
def _import_isaaclab(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="Isaac Lab run folder (logs/rsl_rl/<experiment>/<time>)")
    p.add_argument("--checkpoint", default=None, help="model_<N>.pt (N or file); default: the highest N")
    p.add_argument("--robot", default="pupper_v3", help="robot name or folder the run was trained for")
    p.add_argument("--joint_order", nargs="+", default=None, metavar="JOINT",
                   help="Isaac Lab's joint order (env.unwrapped.scene['robot'].joint_names), when the run lacks it")
    p.add_argument("-o", "--output", default="policy.onnx", help="bundle path")


@command("inspect", "print a policy bundle's metadata", "trot.deploy.bundle:run_inspect")
def _inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="policy bundle (.onnx)")
    p.add_argument("--json", action="store_true", help="raw JSON")


@command("emulate", "PyBullet robot behind a pty, speaking the serial protocol", "trot.hil.emulator:run_cli")
def _emulate(p: argparse.ArgumentParser) -> None:
    from trot.hil.emulator import add_args  # argparse only: no PyBullet until it runs

    add_args(p)


@command("flash", "copy a policy bundle and its systemd unit to the robot", "trot.deploy.flash:run_flash")
def _flash(p: argparse.ArgumentParser) -> None:
    from trot.deploy.flash import add_flash_args  # argparse only

    add_flash_args(p)


@command("gate", "test a policy bundle in PyBullet over commands x perturbations", "trot.hil.gate:run_cli")
def _gate(p: argparse.ArgumentParser) -> None:
    from trot.hil.gate import add_args  # argparse only: no PyBullet until it runs

    add_args(p)


def run_robots(args: argparse.Namespace) -> int:
    from trot.robots import available_robots, load_robot

    names = [args.robot] if args.robot else available_robots()
    print(f"{'robot':<14}{'mass kg':>9}{'joints':>8}{'control Hz':>12}{'physics Hz':>12}  folder")
    for name in names:
        r = load_robot(name)
        print(
            f"{r.name:<14}{r.total_mass:>9.3f}{r.num_joints:>8d}{1 / r.control_dt:>12.0f}"
            f"{1 / r.physics_dt:>12.0f}  {r.folder}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trot", description="Train a quadruped in simulation, gate it in PyBullet, run it on the robot."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help, build, target) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        build(p)
        p.set_defaults(_target=target)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, func = args._target.split(":")
    import importlib

    try:
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
