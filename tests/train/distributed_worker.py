"""One rank of the two-process test in test_distributed.py, started by torchrun: trot's `train` on the CPU,
with the runner's `learn` wrapped to record this rank's parameters before and after the update."""

import sys
from dataclasses import replace
from pathlib import Path

import torch

from trot.train import runner
from trot.train.config import preset


def main(out: Path) -> None:
    learn = runner.TrotRunner.learn

    def learn_and_record(self, *args, **kwargs):
        before = {k: v.clone() for k, v in self.alg.actor.state_dict().items()}
        learn(self, *args, **kwargs)
        record = {
            "before": before,
            "actor": self.alg.actor.state_dict(),
            "critic": self.alg.critic.state_dict(),
            "seed": self.env.cfg.seed,
            "commands": self.env.commands.clone(),
        }
        torch.save(record, out / f"rank{torch.distributed.get_rank()}.pt")

    runner.TrotRunner.learn = learn_and_record
    cfg = preset("cpu")
    cfg = replace(
        cfg, env=replace(cfg.env, num_envs=8), runner=replace(cfg.runner, max_iterations=1, num_steps_per_env=8)
    )
    runner.train(cfg, out / "logs", run_name="two_ranks", quiet=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
