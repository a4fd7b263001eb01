"""A robot's task.toml, as the robot layer reads it: the gate's commands and the gait's feet."""

import shutil

import pytest

from trot.robots import ContractError, load_robot
from trot.robots.task import foot_pairs, load_task_file

PUPPER = load_robot("pupper_v3")


def test_pupper_gate_commands_are_the_gate_speeds():
    gate = load_task_file(PUPPER).gate
    assert gate.segments() == {
        "forward_0.3": ((0.0, (0.3, 0.0, 0.0)),),  # besides stand and the range ends, which the gate derives
        "sequence": (
            (0.0, (0.3, 0.0, 0.0)),
            (0.2, (0.2, 0.0, 0.6)),
            (0.4, (0.0, -0.2, 0.0)),
            (0.6, (-0.2, 0.0, 0.0)),
            (0.8, (0.0, 0.0, 0.0)),
        ),
    }


def test_gait_feet_by_name_or_index():
    names = [["leg_front_r_3", "leg_back_l_3"], ["leg_front_l_3", "leg_back_r_3"]]
    assert foot_pairs(names, PUPPER, "task.toml") == [[0, 3], [1, 2]]
    assert foot_pairs([[0, 2], ["leg_front_l_3", 3]], PUPPER, "task.toml") == [[0, 2], [1, 3]]
    for bad in ([[0, 3], [1]], [[0, 3], [1, 2], []], [[0, 3], [1, 7]], [[0, 3], ["leg_front_l_2", 2]]):
        with pytest.raises(ContractError, match="gait.pairs"):
            foot_pairs(bad, PUPPER, "task.toml")


@pytest.mark.parametrize(
    "old, new, field",
    [
        ('"forward_0.3" = [0.3, 0.0, 0.0]', '"forward_0.3" = [0.3, 0.0]', "gate.commands.forward_0.3"),
        ("at = [0.0, 0.2, 0.4, 0.6, 0.8]", "at = [0.0, 0.4, 0.2, 0.6, 0.8]", "gate.sequence.at"),
        ("at = [0.0, 0.2, 0.4, 0.6, 0.8]", "at = [0.0, 0.2, 0.4, 0.6]", "gate.sequence.commands"),
    ],
)
def test_bad_gate_section_is_refused_by_field(tmp_path, old, new, field):
    folder = tmp_path / "robot"
    shutil.copytree(PUPPER.folder, folder, ignore=shutil.ignore_patterns("policies"))
    toml = folder / "task.toml"
    assert old in toml.read_text(), "test setup"
    toml.write_text(toml.read_text().replace(old, new))
    with pytest.raises(ContractError) as e:
        load_task_file(load_robot(folder))
    assert e.value.field == field and e.value.file == str(toml)
