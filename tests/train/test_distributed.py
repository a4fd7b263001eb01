"""Multi-process training: torchrun's variables, each rank's device, and two CPU ranks on gloo through
rsl-rl-lib's multi-GPU path (parameter broadcast, gradient and normalizer all-reduce)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trot.train.distributed import Rank, from_env, rank_device

WORKER = Path(__file__).with_name("distributed_worker.py")


def test_no_torchrun_variables_is_one_process():
    assert from_env({}) == Rank(1, 0, 0) and not Rank().is_distributed


def test_torchrun_variables_give_the_rank():
    rank = from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    assert rank == Rank(2, 1, 1) and rank.is_distributed


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two': expected an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "WORLD_SIZE=2 RANK=2 LOCAL_RANK=0: expected 0 <= RANK, LOCAL_RANK <"),
        ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0"),
    ],
)  # fmt: skip
def test_impossible_torchrun_variables_are_refused_by_name(environ, message):
    with pytest.raises(ValueError, match=message):
        from_env(environ)


def test_each_cuda_rank_gets_its_local_gpu_and_cpu_ranks_stay_on_the_cpu():
    assert rank_device("cuda:0", Rank(4, 3, 1)) == "cuda:1"
    assert rank_device("cuda", Rank(2, 1, 1)) == "cuda:1"
    assert rank_device("cuda:0", Rank()) == "cuda:0"
    assert rank_device("cpu", Rank(2, 1, 1)) == "cpu"


@pytest.mark.slow
def test_two_cpu_ranks_train_their_own_envs_and_hold_equal_parameters_after_an_update(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
         str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=False) for i in (0, 1))
    assert (r0["seed"], r1["seed"]) == (0, 1)  # seed + rank: each rank its own envs
    assert not torch.equal(r0["commands"], r1["commands"])
    # Different seeds initialise different networks; rank 0's are broadcast before the first rollout.
    assert any(not torch.equal(r0["before"][k], r1["before"][k]) for k in r0["before"])
    for name in ("actor", "critic"):
        for key, value in r0[name].items():
            assert torch.equal(value, r1[name][key]), (name, key)
    assert any(not torch.equal(r0["actor"][k], r0["before"][k]) for k in r0["before"])  # an update happened
    (run,) = list((tmp_path / "logs").iterdir())  # rank 0 alone writes the run folder
    assert json.loads((run / "config.json").read_text())["env"]["seed"] == 0
    ckpt = torch.load(run / "model_0.pt", weights_only=False)
    assert ckpt["trot"]["env_steps"] == 2 * 8 * 8  # both ranks' steps: rsl-rl counts world_size x envs
