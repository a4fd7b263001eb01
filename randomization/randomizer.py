"""The one randomization loop every backend runs: sample the terms due on a schedule, compose the params.

`Randomizer` keeps each term's current per-env value (logged as `randomization/<name>`) and the
per-env `EnvParams` they compose to. After `sample("startup" | "reset", env_ids)` the caller hands
`params` to its backend's `write_params(env_ids, params)`; `events(backend)` fires interval terms
(pushes) straight at the backend. A config with every range pinned ([v, v]) gives fixed
parameters: that is how the gate sets one perturbation. Sampling order is fixed (sorted names) and
every draw comes from the one seeded generator, so a run is reproducible from its seed.
"""

from __future__ import annotations

import torch

from trot.randomization.params import nominal_params
from trot.randomization.terms import TERMS, RandomizationCfg, nominal_values, sample_term, validate
from trot.robots import Robot


class Randomizer:
    """Per-env term values and the parameters they compose to, for `num_envs` copies of `robot`."""

    def __init__(self, cfg: RandomizationCfg, robot: Robot, num_envs: int, gen: torch.Generator):
        validate(cfg, robot)
        self.cfg, self.robot, self.num_envs, self.gen = cfg, robot, num_envs, gen
        self.values = nominal_values(num_envs, robot)
        self.nominal = nominal_params(robot, 1)
        self.params = nominal_params(robot, num_envs)

    def sample(self, schedule: str, env_ids: torch.Tensor) -> None:
        """Draw the terms on `schedule` for `env_ids`, then recompose those envs' params from every term."""
        for name in sorted(self.cfg.terms):
            term = self.cfg.terms[name]
            # A term fixed at its nominal value keeps it and draws nothing: adding a term to the registry does
            # not change the random stream of a config that does not vary it.
            if term.schedule == schedule and self.cfg.varies(name):
                self.values[name][env_ids] = sample_term(name, term, len(env_ids), self.robot, self.gen)
        self.compose(env_ids)

    def compose(self, env_ids: torch.Tensor) -> None:
        """params[env_ids] = nominal, then each non-event term's apply step, in declaration order."""
        self.params.reset(env_ids, self.nominal)
        for name, spec in TERMS.items():
            if spec.kind != "event":
                spec.apply(self.params, env_ids, self.values[name][env_ids])

    def events(self, backend, control_dt: float) -> torch.Tensor:
        """Each interval term hits each env with probability control_dt / interval_s this control step;
        return the ids of the envs hit (their state changed in the backend)."""
        hit_any = torch.zeros(self.num_envs, dtype=torch.bool)
        for name in sorted(self.cfg.terms):
            term = self.cfg.terms[name]
            if term.schedule != "interval" or not self.cfg.varies(name):
                continue
            hit = torch.rand(self.num_envs, generator=self.gen) < control_dt / term.interval_s
            ids = hit.nonzero().flatten()
            if len(ids):
                value = sample_term(name, term, len(ids), self.robot, self.gen)
                self.values[name][ids] = value
                TERMS[name].apply(backend, ids, value, self.gen)
                hit_any[ids] = True
        return hit_any.nonzero().flatten()
