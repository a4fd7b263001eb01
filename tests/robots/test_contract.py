"""The robot contract loader: a valid robot loads, a broken robot.toml is refused by field."""

import shutil
from pathlib import Path

import pytest

from trot.robots import ContractError, available_robots, load_robot

PUPPER = Path(__file__).resolve().parents[2] / "robots" / "pupper_v3"


def broken_copy(tmp_path: Path, old: str, new: str) -> Path:
    folder = tmp_path / "robot"
    shutil.copytree(PUPPER, folder, ignore=shutil.ignore_patterns("policies"))
    toml = folder / "robot.toml"
    text = toml.read_text()
    assert old in text, f"test setup: {old!r} not in robot.toml"
    toml.write_text(text.replace(old, new, 1))
    return folder


def test_pupper_loads_by_name_and_by_folder():
    by_name, by_path = load_robot("pupper_v3"), load_robot(PUPPER)
    assert "pupper_v3" in available_robots()
    assert by_name.joint_names == by_path.joint_names
    assert by_name.num_joints == 12 and by_name.decimation == 5
    assert by_name.total_mass == pytest.approx(3.17, rel=0.01)
    assert by_name.contract_sha256() == by_path.contract_sha256()


def test_missing_field_is_refused_with_file_and_field(tmp_path):
    folder = broken_copy(tmp_path, "kd = 0.25 ", "# kd removed ")
    with pytest.raises(ContractError) as e:
        load_robot(folder)
    assert e.value.field == "control.kd"
    assert str(folder / "robot.toml") in str(e.value) and "missing" in str(e.value)


def test_wrong_joint_count_is_refused(tmp_path):
    folder = broken_copy(tmp_path, '"leg_back_l_3",\n]', "]")
    with pytest.raises(ContractError, match=r"joints\.names") as e:
        load_robot(folder)
    assert e.value.value == 11 and "12 revolute joints" in e.value.expected


def test_negative_kp_is_refused(tmp_path):
    folder = broken_copy(tmp_path, "kp = 5.0", "kp = -5.0")
    with pytest.raises(ContractError, match=r"'control\.kp' = -5\.0; expected a number in \(0\.0, 10\.0\]"):
        load_robot(folder)


def test_default_pose_outside_urdf_limits_is_refused(tmp_path):
    folder = broken_copy(tmp_path, "default_pos = [0.26", "default_pos = [2.9")
    with pytest.raises(ContractError, match=r"joints\.default_pos\[0\].*leg_front_r_1"):
        load_robot(folder)


def test_short_vector_is_refused(tmp_path):
    folder = broken_copy(tmp_path, "motor_id = [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3]", "motor_id = [1, 2, 3]")
    with pytest.raises(ContractError, match=r"hardware\.motor_id.*list of 12 values \(got 3\)"):
        load_robot(folder)


def test_contract_hash_changes_with_a_contract_field(tmp_path):
    folder = broken_copy(tmp_path, "action_scale = 0.25", "action_scale = 0.3")
    assert load_robot(folder).contract_sha256() != load_robot("pupper_v3").contract_sha256()


def test_second_robot_needs_only_a_folder(tmp_path):
    folder = broken_copy(tmp_path, 'name = "pupper_v3"', 'name = "pupper_clone"')
    robot = load_robot(folder)
    assert robot.name == "pupper_clone" and robot.folder == folder
