"""Reading what an Isaac Lab rsl-rl run folder holds, without running any of it.

Isaac Lab writes `params/env.yaml` and `params/agent.yaml` with PyYAML's default Dumper, so tuples carry
`!!python/tuple`, slices `!!python/object/apply:builtins.slice`, and anything else Python `!!python/...`. They are read
here with a safe loader that builds tuples and slices and turns every other Python tag into an inert `PythonObject`
naming the tag: nothing from the file is imported or called. The checkpoint is loaded with `weights_only=True`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

CHECKPOINT_RE = re.compile(r"^model_(\d+)\.pt$")
IO_DESCRIPTORS = Path("io_descriptors") / "IO_descriptors.yaml"


class IsaacLabImportError(ValueError):
    """A run that trot can't take as it is: the file, the key, its value and what was expected."""

    def __init__(self, file: Path | str, key: str, value: object, expected: str):
        self.file, self.key, self.value, self.expected = str(file), key, value, expected
        super().__init__(f"{file}: {key} = {value!r}; expected {expected}")


@dataclass(frozen=True)
class PythonObject:
    """A value Isaac Lab dumped as a Python object other than a tuple or slice; kept as its tag, never built."""

    tag: str


class _ParamsLoader(yaml.SafeLoader):
    pass


def _slice(loader: yaml.Loader, node: yaml.Node) -> slice:
    return slice(*loader.construct_sequence(node, deep=True))


_ParamsLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda l, n: tuple(l.construct_sequence(n, deep=True)))
_ParamsLoader.add_constructor("tag:yaml.org,2002:python/object/apply:builtins.slice", _slice)
_ParamsLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda l, suffix, n: PythonObject(f"python/{suffix}"))


def load_params_yaml(path: Path) -> dict:
    """One of Isaac Lab's params/*.yaml files as plain Python values."""
    try:
        data = yaml.load(path.read_text(), Loader=_ParamsLoader)
    except FileNotFoundError:
        raise IsaacLabImportError(path, "<file>", "missing", "the file Isaac Lab's train.py writes") from None
    except yaml.YAMLError as e:
        raise IsaacLabImportError(path, "<file>", str(e).splitlines()[0], "YAML as dump_yaml writes it") from e
    if not isinstance(data, dict):
        raise IsaacLabImportError(path, "<file>", type(data).__name__, "a mapping")
    return data


@dataclass(frozen=True)
class Params:
    """The run's configs and the actor weights of one checkpoint."""

    run_dir: Path
    env: dict
    agent: dict
    checkpoint: Path
    iteration: int
    actor_state: dict
    task: str
    created: str  # run.json's created_at ("" when the run has none)

    @property
    def env_file(self) -> Path:
        return self.run_dir / "params" / "env.yaml"

    @property
    def agent_file(self) -> Path:
        return self.run_dir / "params" / "agent.yaml"

    @property
    def group(self) -> str:
        """The observation group the actor reads, resolved as rsl-rl's resolve_obs_groups does."""
        actor = (self.agent.get("obs_groups") or {}).get("actor")
        if actor is not None:
            if len(actor) != 1:
                raise self.error("agent", "obs_groups.actor", actor, "one observation group (trot has one input)")
            return actor[0]
        return "actor" if "actor" in (self.env.get("observations") or {}) else "policy"

    def error(self, which: str, key: str, value: object, expected: str) -> IsaacLabImportError:
        return IsaacLabImportError(self.env_file if which == "env" else self.agent_file, key, value, expected)

    def env_get(self, dotted: str):
        """A value of env.yaml by its dotted key; refused by name when absent."""
        value = self.env
        for i, part in enumerate(dotted.split(".")):
            if not isinstance(value, dict) or part not in value:
                raise self.error("env", ".".join(dotted.split(".")[: i + 1]), "missing", "the key Isaac Lab writes")
            value = value[part]
        return value

    def env_number(self, dotted: str) -> float:
        """A number of env.yaml by its dotted key; refused by name when absent or not a number."""
        value = self.env_get(dotted)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error("env", dotted, value, "a number")
        return float(value)

    def io_joint_names(self, asset: str) -> list[str] | None:
        """Joint names Isaac Lab exported with env.export_io_descriptors=True, if the run has them."""
        path = self.run_dir / IO_DESCRIPTORS
        if not path.is_file():
            return None
        names = ((load_params_yaml(path).get("articulations") or {}).get(asset) or {}).get("joint_names")
        if not isinstance(names, list):
            raise IsaacLabImportError(path, f"articulations.{asset}.joint_names", names, "a list of joint names")
        return names


def read_params(run_dir: Path, checkpoint: str | Path | None = None) -> Params:
    """params/env.yaml, params/agent.yaml, run.json's task and the actor of `checkpoint` (default: the latest)."""
    if not run_dir.is_dir():
        raise IsaacLabImportError(run_dir, "<folder>", "missing", "an Isaac Lab run folder (logs/rsl_rl/<exp>/<run>)")
    env = load_params_yaml(run_dir / "params" / "env.yaml")
    agent = load_params_yaml(run_dir / "params" / "agent.yaml")
    path = _checkpoint_path(run_dir, checkpoint)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated, foreign or code-carrying files
        raise IsaacLabImportError(
            path,
            "<file>",
            f"{type(e).__name__}: {str(e)[:200]}",
            "an rsl-rl checkpoint (torch.save of tensors and plain values)",
        ) from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("actor_state_dict"), dict):
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise IsaacLabImportError(path, "actor_state_dict", keys, "rsl-rl >= 4's checkpoint with an actor_state_dict")
    manifest = _manifest(run_dir)
    return Params(
        run_dir,
        env,
        agent,
        path,
        int(ckpt.get("iter", -1)),
        ckpt["actor_state_dict"],
        str(manifest.get("task", "")),
        str(manifest.get("created_at", "")),
    )


def _checkpoint_path(run_dir: Path, checkpoint: str | Path | None) -> Path:
    if checkpoint is not None:
        path = Path(checkpoint)
        path = path if path.is_absolute() or path.parent != Path(".") else run_dir / path
        if not path.is_file():
            raise IsaacLabImportError(path, "<file>", "missing", "a model_<N>.pt checkpoint")
        return path
    found = [p for p in run_dir.iterdir() if CHECKPOINT_RE.match(p.name)]
    if not found:
        raise IsaacLabImportError(run_dir, "model_<N>.pt", "none", "a checkpoint rsl-rl saved in the run folder")
    return max(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))


def _manifest(run_dir: Path) -> dict:
    """Isaac Lab's run manifest (run.json: task, created_at, ...); {} for runs written without one."""
    try:
        manifest = json.loads((run_dir / "run.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def match_names(keys, names: list[str], preserve_order: bool, file: Path, key: str) -> list[str]:
    """Isaac Lab's resolve_matching_names: regex full matches, each name at most one key, every key used."""
    keys = [keys] if isinstance(keys, str) else list(keys)
    matched = []  # (key index, name index)
    for j, name in enumerate(names):
        hits = [i for i, k in enumerate(keys) if re.fullmatch(k, name)]
        if len(hits) > 1:
            raise IsaacLabImportError(file, key, keys, f"regexes matching '{name}' once (it matches {hits})")
        matched += [(hits[0], j)] if hits else []
    unused = [k for i, k in enumerate(keys) if all(i != h for h, _ in matched)]
    if unused:
        raise IsaacLabImportError(file, key, unused, f"regexes that match some of {names}")
    if preserve_order:
        matched.sort(key=lambda m: m[0])  # stable: within one key, names stay in articulation order
    return [names[j] for _, j in matched]


def match_values(value, names: list[str], file: Path, key: str) -> dict[str, float]:
    """A number for every name from a number or a {regex: number} dict (Isaac Lab's per-joint settings)."""
    out = {}
    for name in names:
        hits = [k for k in value if re.fullmatch(k, name)] if isinstance(value, dict) else [None]
        if len(hits) != 1:
            raise IsaacLabImportError(file, key, value, f"exactly one regex matching '{name}' (found {hits})")
        number = value if hits[0] is None else value[hits[0]]
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise IsaacLabImportError(file, key, value, f"a number for '{name}'")
        out[name] = float(number)
    return out
