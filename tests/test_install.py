"""The robot-side install: `pip install .[deploy,ros2]` brings no torch, mujoco or pybullet."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "mujoco", "pybullet", "rsl-rl-lib", "matplotlib")


def dockerfile_pip_extras(name: str) -> str:
    """The extras the image's `pip install ".[...]"` line installs (so the test runs what the image runs)."""
    text = (ROOT / "docker" / name).read_text()
    match = re.search(r'pip install --no-cache-dir "\.\[([a-z0-9,]+)\]"', text)
    assert match, f"docker/{name}: no pip install line"
    return match.group(1)


@pytest.mark.slow
def test_onboard_install_has_no_heavy_packages_and_runs_the_cli(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip, trot = venv / "bin" / "pip", venv / "bin" / "trot"
    extras = dockerfile_pip_extras("Dockerfile.onboard")
    out = subprocess.run([str(pip), "install", "-q", f"{ROOT}[{extras}]"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    installed = subprocess.run([str(pip), "list", "--format=freeze"], capture_output=True, text=True).stdout.lower()
    names = {line.split("==")[0] for line in installed.splitlines()}
    assert not names & set(HEAVY), f"robot install pulled in {names & set(HEAVY)}"
    assert {"numpy", "onnxruntime", "pyserial", "cyclonedds"} <= names
    for command in ("deploy", "flash", "inspect"):
        help_out = subprocess.run([str(trot), command, "--help"], capture_output=True, text=True, timeout=60)
        assert help_out.returncode == 0, help_out.stderr[-2000:]
        assert f"usage: trot {command}" in help_out.stdout


@pytest.mark.parametrize("name", ["Dockerfile.onboard", "Dockerfile.train"])
def test_docker_image_copies_every_folder_the_package_maps(name):
    """`pip install .` in the image needs every folder pyproject.toml maps to a package."""
    import tomllib

    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    folders = {d.split("/")[0] for d in package_dir.values()}
    copied = set(re.findall(r"^COPY (\S+) ", (ROOT / "docker" / name).read_text(), re.M))
    missing = sorted(folders - copied - {"."})
    assert not missing, f"docker/{name} does not COPY {missing}, which pyproject.toml maps to packages"
