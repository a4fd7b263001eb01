"""rclpy nodes for the tests, each in a process of its own, on Fast DDS and the loopback interface.

The ROS 2 wheels (`trot[ros2-rclpy]`) put their C libraries beside rclpy; their start-up hook adds them to the
loader path only for the Python environment they were installed into (a worktree venv that sees another venv's
packages cannot load them). `rclpy_env` adds them itself, so a child process imports rclpy wherever the wheels are.
Every rclpy process gets `rmw_fastrtps_cpp` (the default RMW, a stock Pupper's), its domain id, and the loopback
profile (`trot.deploy.ros2.fastdds`): traffic on 127.0.0.1 and shared memory only.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trot.deploy.ros2 import fastdds

RMW = "rmw_fastrtps_cpp"


def _library_dirs() -> list[str]:
    """The wheels' library folders: <prefix>/lib and site-packages/ros_*.libs of the environment holding rclpy."""
    spec = importlib.util.find_spec("rclpy")
    if spec is None or spec.origin is None:
        return []
    site_packages = Path(spec.origin).parents[1]
    return [str(site_packages.parents[1]), *map(str, sorted(site_packages.glob("ros_*.libs")))]


def rclpy_env(domain_id: int, **extra: str) -> dict[str, str]:
    """This process's environment for an rclpy child: Fast DDS on loopback in `domain_id`, rclpy loadable."""
    env = {**os.environ, **fastdds.loopback_env(), "RMW_IMPLEMENTATION": RMW, "ROS_DOMAIN_ID": str(domain_id),
           "PYTHONUNBUFFERED": "1", **extra}  # fmt: skip
    for name in fastdds.WIDENING_VARIABLES:
        env.pop(name, None)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*_library_dirs(), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])])
    assert fastdds.loopback_problems(env) == [], fastdds.loopback_problems(env)
    return env


@functools.cache
def rclpy_problem() -> str | None:
    """None when an rclpy child process can make a node on Fast DDS; else why not."""
    code = (
        "from trot.deploy.ros2.rclpy_node import import_problem\n"
        "problem = import_problem()\n"
        "if problem is None:\n"
        "    from rclpy.utilities import get_rmw_implementation_identifier\n"
        "    problem = None if get_rmw_implementation_identifier() == sys.argv[1] else 'RMW ' + "
        "get_rmw_implementation_identifier()\n"
        "print(problem or '')\n"
    )
    out = subprocess.run([sys.executable, "-c", "import sys\n" + code, RMW], env=rclpy_env(0), capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    if out.returncode != 0:
        return f"the probe exited {out.returncode}: {out.stderr.strip()[-500:]}"
    return out.stdout.strip() or None


def require_rclpy() -> None:
    """Skip, saying why, where rclpy on Fast DDS cannot run (the `ros2-rclpy` extra is not installed)."""
    problem = rclpy_problem()
    if problem is not None:
        pytest.skip(f"rclpy on {RMW} does not run here ({problem}): pip install -e '.[ros2-rclpy]'")


_SPDP_FASTDDS = re.compile(r"SPDP ST0 \S+ .*?NEW \(([^)]*)\).*?\"fastdds\.physical_data\.process\":\"(\d+)\"")


def fastdds_participants(cyclone_trace: str) -> dict[int, set[str]]:
    """The Fast DDS participants a Cyclone DDS trace saw, by process id, with the IPv4 addresses each announced."""
    seen: dict[int, set[str]] = {}
    for locators, pid in _SPDP_FASTDDS.findall(cyclone_trace):
        seen.setdefault(int(pid), set()).update(re.findall(r"udp/([0-9.]+)", locators))
    return seen
