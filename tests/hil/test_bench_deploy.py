"""`trot bench deploy` figures that need no emulator run."""

import pytest

from trot.deploy.protocol import MessageType, frame_size


def test_link_budget_matches_the_protocol_table():
    from trot.hil.bench_deploy import link_budget

    state, command = link_budget(12, state_hz=50.0, command_hz=50.0, baud=1_000_000)
    assert state["bytes"] == frame_size(MessageType.STATE, 12) == 206
    assert state["bytes_per_s"] == 10_300 and state["load"] == pytest.approx(0.103)
    assert command["bytes"] == 205
