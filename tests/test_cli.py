"""The `trot` command: every subcommand has --help; robots lists the robot; view renders it."""

import subprocess
import sys

import numpy as np
import pytest

from trot.cli import COMMANDS, main


def run_trot(*args):
    return subprocess.run(
        [sys.executable, "-m", "trot.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage: trot " + name in capsys.readouterr().out


def test_robots_lists_pupper_with_its_mass_and_rates():
    out = run_trot("robots")
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("pupper_v3"))
    assert line.split()[1:5] == ["3.170", "12", "50", "250"]


def test_view_renders_the_robot_to_png(tmp_path):
    import imageio.v3 as iio

    png = tmp_path / "pupper.png"
    out = run_trot("view", "pupper_v3", "-o", str(png), "--width", "320", "--height", "240")
    assert out.returncode == 0, out.stderr
    image = iio.imread(png)
    assert image.shape == (240, 320, 3)
    # The grey robot in the middle differs from the floor/sky around it.
    centre = image[80:160, 110:210].reshape(-1, 3).astype(float)
    assert centre.std() > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50


def test_unknown_robot_is_refused_with_known_names():
    out = run_trot("view", "no_such_robot")
    assert out.returncode != 0
    assert "no_such_robot" in out.stderr and "pupper_v3" in out.stderr


def test_bench_sim_prints_task_and_raw_rollout_with_their_ratio():
    out = run_trot("bench", "sim", "--num_envs", "8", "--seconds", "0.3")
    assert out.returncode == 0, out.stderr
    row = out.stdout.strip().splitlines()[-1].split()
    num_envs, task, raw, ratio = int(row[0]), float(row[1]), float(row[2]), float(row[3])
    assert num_envs == 8 and task > 0 and raw > 0
    assert ratio == pytest.approx(task / raw, abs=0.006)  # the ratio is printed to two decimals
