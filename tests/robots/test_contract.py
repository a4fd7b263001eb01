"""The robot contract loader: a valid robot loads, a broken robot.toml is refused by field."""

import shutil
from pathlib import Path

import pytest

from trot.robots import ContractError, available_robots, load_robot

PUPPER = Path(__file__).resolve().parents[2] / "robots" / "pupper_v3"


def broken_copy(tmp_path: Path, old: str, new: str, source: Path = PUPPER) -> Path:
    folder = tmp_path / f"robot{len(list(tmp_path.iterdir()))}"  # a new folder for each copy in a test
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("policies"))
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


GO2 = Path(__file__).resolve().parents[2] / "robots" / "go2"


def go2_copy(tmp_path: Path, old: str, new: str) -> Path:
    return broken_copy(tmp_path, old, new, GO2)


def test_limits_are_per_joint_from_a_list_or_one_number():
    go2, pupper = load_robot("go2"), load_robot("pupper_v3")
    assert go2.torque_limit == (23.7, 23.7, 45.43) * 4  # hip, thigh, calf: Unitree's published limits
    assert go2.velocity_limit == (30.1, 30.1, 15.7) * 4
    assert pupper.torque_limit == (3.0,) * 12 and pupper.velocity_limit == (30.0,) * 12  # one number in robot.toml
    assert go2.contract()["torque_limit"] == list(go2.torque_limit)  # the contract always holds the list


def test_a_limit_that_differs_from_the_urdf_is_refused_naming_the_joint(tmp_path):
    folder = go2_copy(tmp_path, "torque_limit = [23.7, 23.7, 45.43,", "torque_limit = [23.7, 23.7, 23.7,")
    with pytest.raises(ContractError, match=r"'motor\.torque_limit\[2\]' = 23\.7; expected FR_calf_joint's URDF "
                                            r"<limit effort> \(45\.43\) to equal the contract's"):  # fmt: skip
        load_robot(folder)
    folder = broken_copy(tmp_path, "velocity_limit = 30.0", "velocity_limit = 20.0")
    with pytest.raises(ContractError, match=r"'motor\.velocity_limit\[0\]' = 20\.0; expected leg_front_r_1's URDF"):
        load_robot(folder)


def test_a_limit_list_of_the_wrong_length_or_sign_is_refused(tmp_path):
    folder = broken_copy(tmp_path, "torque_limit = 3.0", "torque_limit = [3.0, 3.0]")
    with pytest.raises(ContractError, match=r"motor\.torque_limit.*list of 12 values \(got 2\)"):
        load_robot(folder)
    folder = broken_copy(tmp_path, "torque_limit = 3.0", "torque_limit = [-3.0" + ", 3.0" * 11 + "]")
    with pytest.raises(ContractError, match=r"'motor\.torque_limit\[0\]' = -3\.0; expected a number in \(0\.0"):
        load_robot(folder)


def test_can_bus_is_optional_and_motor_ids_must_be_unique_on_their_bus(tmp_path):
    assert load_robot("go2").hardware["can_bus"] is None
    assert load_robot("pupper_v3").hardware["can_bus"] == [2, 2, 2, 1, 1, 1, 4, 4, 4, 3, 3, 3]  # components.xacro
    folder = broken_copy(tmp_path, "can_bus = [2, 2, 2, 1", "can_bus = [2, 2, 2, 2")
    with pytest.raises(ContractError, match=r"hardware\.motor_id.*expected ids unique on each CAN bus"):
        load_robot(folder)
    folder = go2_copy(tmp_path, "motor_id = [0, 1, 2,", "motor_id = [0, 1, 1,")
    with pytest.raises(ContractError, match=r"hardware\.motor_id.*expected unique ids \(no can_bus: one id space\)"):
        load_robot(folder)


def test_mujoco_options_are_read_and_a_bad_one_is_refused(tmp_path):
    from trot.sim.mujoco_model import build_model

    assert load_robot("go2").mujoco_option == (("impratio", 100.0),)
    assert build_model(load_robot("go2")).opt.impratio == 100.0
    assert build_model(load_robot("pupper_v3")).opt.impratio == 1.0  # MuJoCo's default
    folder = go2_copy(tmp_path, "impratio = 100", 'impratio = "high"')
    with pytest.raises(ContractError, match=r"'mujoco\.option\.impratio' = 'high'; expected a finite number"):
        load_robot(folder)
    folder = go2_copy(tmp_path, "impratio = 100", "impratoi = 100")
    with pytest.raises(ContractError, match=r"'mujoco\.option\.impratoi' = 100\.0; expected a numeric field of MuJoCo"):
        build_model(load_robot(folder))
    folder = go2_copy(tmp_path, "impratio = 100", "timestep = 0.001")
    with pytest.raises(ContractError, match=r"'mujoco\.option\.timestep'.*other than timestep"):
        build_model(load_robot(folder))


def test_the_declared_latency_is_read_with_its_source_and_stays_out_of_the_contract(tmp_path):
    """robot.toml [latency]: the Pupper is promised one control step, 0.02 s, until measured; changing the promise
    does not change the contract (nor its hash), since a policy does not depend on it."""
    pupper = load_robot("pupper_v3")
    assert pupper.actuation_latency_s == 0.02 and "pupperv3-mjx" in pupper.actuation_latency_source
    assert load_robot("go2").actuation_latency_s == 0.02 and "chosen" in load_robot("go2").actuation_latency_source
    assert not any("latency" in key for key in pupper.contract())
    slower = load_robot(broken_copy(tmp_path, "actuation_s = 0.02", "actuation_s = 0.03"))
    assert slower.actuation_latency_s == 0.03 and slower.contract_sha256() == pupper.contract_sha256()
    for old, new, field, expected in (
        ("actuation_s = 0.02", "actuation_s = -0.01", "latency.actuation_s", "a number in [0.0, 0.2]"),
        ("actuation_s = 0.02", "# none", "latency.actuation_s", "a value (field is missing)"),
        ('source = "not measured', 'source = "', "latency.source", "a non-empty string"),
    ):  # fmt: skip
        folder = broken_copy(tmp_path, old, new)
        if field == "latency.source":  # an empty string: the rest of the line is the old text, drop it
            toml = folder / "robot.toml"
            toml.write_text("\n".join(line if not line.startswith('source = "') else 'source = ""'
                                      for line in toml.read_text().splitlines()) + "\n")  # fmt: skip
        with pytest.raises(ContractError) as e:
            load_robot(folder)
        assert e.value.field == field and e.value.expected == expected
