"""The actor of an Isaac Lab run in trot's layout: where each observation element goes, and the reordered MLPModel.

Isaac Lab's policy group is a concatenation of terms, each holding its own history oldest frame first ("term"
order), or of whole frames oldest first (history_order "time"); joint terms follow the articulation's (or the action
term's) joint order. trot's observation is frames newest first, each frame its terms in order with joint terms in the
contract's order, and its actions are in contract order. Both are fixed permutations, folded here into the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from rsl_rl.models import MLPModel
from tensordict import TensorDict

from trot.train.isaaclab_params import IsaacLabImportError, Params

if TYPE_CHECKING:
    from trot.train.isaaclab import IsaacLabRun

JOINT_TERMS = ("joint_pos_rel", "joint_vel", "last_action")
DISTRIBUTIONS = (None, "GaussianDistribution")  # heads whose deterministic action is the MLP's own output


def obs_index(terms: list[tuple[str, tuple]], history: int, time_major: bool, contract_joints) -> tuple[int, ...]:
    """For each Isaac Lab observation element, its position in trot's layout.

    `terms` are (trot name, elements) in the group's order; elements are joint names in the term's Isaac Lab order
    for joint terms, component indices otherwise.
    """
    trot_position = {}
    for age in range(history):  # age 0: the newest frame
        for i, (name, elements) in enumerate(terms):
            for e in contract_joints if name in JOINT_TERMS else elements:
                trot_position[(age, i, e)] = len(trot_position)
    ages = range(history - 1, -1, -1)  # Isaac Lab: oldest first
    if time_major:
        labels = [(age, i, e) for age in ages for i, (_, elements) in enumerate(terms) for e in elements]
    else:
        labels = [(age, i, e) for i, (_, elements) in enumerate(terms) for age in ages for e in elements]
    return tuple(trot_position[label] for label in labels)


def actor_weights(p: Params, obs_size: int, num_actions: int) -> tuple[dict, dict]:
    """agent.yaml's actor section and the checkpoint's actor_state_dict, checked to load into that actor."""
    if p.agent.get("class_name", "OnPolicyRunner") != "OnPolicyRunner":
        raise p.error("agent", "class_name", p.agent.get("class_name"), "OnPolicyRunner (a PPO actor)")
    actor = p.agent.get("actor") or {}
    if actor.get("class_name") != "MLPModel":
        raise p.error("agent", "actor.class_name", actor.get("class_name"), "MLPModel (no recurrent or CNN actor)")
    distribution = (actor.get("distribution_cfg") or {}).get("class_name")
    if distribution not in DISTRIBUTIONS:
        raise p.error(
            "agent",
            "actor.distribution_cfg.class_name",
            distribution,
            f"one of {DISTRIBUTIONS} (a head whose deterministic action is the MLP's output)",
        )
    weight = p.actor_state.get("mlp.0.weight")
    if weight is None or weight.shape[1] != obs_size:
        raise IsaacLabImportError(
            p.checkpoint,
            "actor_state_dict['mlp.0.weight'] inputs",
            None if weight is None else weight.shape[1],
            f"{obs_size}, the size of params/env.yaml's '{p.group}' group",
        )
    try:
        model = _mlp_model(obs_size, num_actions, actor, distribution=actor.get("distribution_cfg"))
    except (KeyError, TypeError, ValueError) as e:
        raise p.error("agent", "actor", actor, f"an MLPModel config rsl-rl-lib builds ({type(e).__name__}: {e})") from e
    try:
        model.load_state_dict(p.actor_state, strict=True)
    except RuntimeError as e:
        raise IsaacLabImportError(p.checkpoint, "actor_state_dict", "does not load", f"agent.yaml's actor ({e})") from e
    return dict(actor), p.actor_state


def trot_policy(run: IsaacLabRun) -> MLPModel:
    """The actor as an rsl-rl MLPModel taking trot's observation layout and returning actions in contract order.

    The input permutation is folded into the normalizer and the first layer, the output permutation into the last
    layer, so the graph has the shape of a policy trained by trot; no distribution (inference is deterministic).
    """
    size = len(run.obs_index)
    inverse = torch.empty(size, dtype=torch.long)
    inverse[torch.tensor(run.obs_index)] = torch.arange(size)  # trot element k is Isaac Lab element inverse[k]
    model = _mlp_model(size, len(run.action_index), run.actor_cfg, distribution=None)
    linear = [k.removesuffix(".weight") for k in model.state_dict() if k.startswith("mlp.") and k.endswith(".weight")]
    rows = torch.tensor(run.action_index)
    state = {}
    for key in model.state_dict():
        value = run.actor_state[key]
        if key.startswith("obs_normalizer._") or key == f"{linear[0]}.weight":
            value = value[:, inverse]
        if key in (f"{linear[-1]}.weight", f"{linear[-1]}.bias"):
            value = value[rows]
        state[key] = value
    model.load_state_dict(state, strict=True)
    return model.eval()


def _mlp_model(obs_size: int, num_actions: int, actor: dict, distribution) -> MLPModel:
    """An MLPModel shaped as rsl-rl's PPO builds the actor from agent.yaml, reading one input group."""
    obs = TensorDict({"policy": torch.zeros(1, obs_size)}, batch_size=[1])
    return MLPModel(
        obs,
        {"actor": ["policy"]},
        "actor",
        num_actions,
        hidden_dims=list(actor["hidden_dims"]),
        activation=actor["activation"],
        obs_normalization=bool(actor.get("obs_normalization", False)),
        distribution_cfg=None if distribution is None else dict(distribution),
    )
