"""Multi-process training under `torchrun`: which rank this process is, its device and seed, its process group.

torchrun starts one process per GPU and tells each its place through WORLD_SIZE, RANK and LOCAL_RANK.
Each rank simulates its own `num_envs` envs on `cuda:<LOCAL_RANK>` with the seed `seed + RANK`;
rsl-rl-lib's PPO then broadcasts rank 0's parameters, all-reduces gradients, KL and the observation
normalizer's statistics, and only rank 0 logs and saves. rsl-rl's own set-up starts NCCL on CUDA only;
`start` does the same with gloo for CPU processes, which is how the wiring is tested without a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rank:
    """This process's place among `world_size` training processes (1 without torchrun)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def from_env(environ=os.environ) -> Rank:
    """The rank torchrun set in the environment; refuses values that cannot come from one launch."""
    values = {}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        text = environ.get(name, "1" if name == "WORLD_SIZE" else "0")
        try:
            values[name] = int(text)
        except ValueError:
            raise ValueError(f"environment variable {name}={text!r}: expected an integer (set by torchrun)") from None
    world, rank, local = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or not 0 <= local < world:
        raise ValueError(
            f"environment WORLD_SIZE={world} RANK={rank} LOCAL_RANK={local}: expected 0 <= RANK, LOCAL_RANK < "
            "WORLD_SIZE (as torchrun sets them)"
        )
    return Rank(world, rank, local)


def rank_device(device: str, rank: Rank) -> str:
    """The device of this rank: `cuda:<LOCAL_RANK>` when several processes train on CUDA, else `device`."""
    if rank.is_distributed and torch.device(device).type == "cuda":
        return f"cuda:{rank.local_rank}"
    return device


def start(device: str, rank: Rank) -> None:
    """Join the process group (NCCL on CUDA, gloo on the CPU) once; nothing to do for a single process."""
    if not rank.is_distributed or torch.distributed.is_initialized():
        return
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(rank.local_rank)
    torch.distributed.init_process_group("nccl" if cuda else "gloo", rank=rank.rank, world_size=rank.world_size)


def stop() -> None:
    """Leave the process group, if one was joined."""
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
