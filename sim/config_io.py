"""Config dataclasses <-> plain data, with cattrs: checkpoints, a robot's task.toml, `--set KEY=VALUE`.

`to_data` turns a frozen config into JSON-ready dicts and lists; `structure` rebuilds it, strictly
typed (no string becomes a number, no 2.5 becomes an int); `merge` lays a partial dict (a task.toml)
over the full one and `set_field` sets one dotted field (`--set`). A list of named entries (the
observation terms) is addressed by the entries' names. Every error names where the data came from,
the field, the value and what was expected.
"""

from __future__ import annotations

import json
import typing

import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from trot.robots import ContractError


class ConfigError(ContractError):
    """A config field that does not exist or holds a value of the wrong type."""

    def __init__(self, file: str, field: str, value, expected: str, message: str | None = None):
        super().__init__(file, field, value, expected)
        if message:
            self.args = (f"{file}: {message}",)


class _Expected(ValueError):
    def __init__(self, value, expected: str):
        super().__init__(expected)
        self.value, self.expected = value, expected


def _strict(expected: str, ok, convert):
    def hook(value, _type):
        if not ok(value):
            raise _Expected(value, expected)
        return convert(value)

    return hook


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_fixed_tuple(t) -> bool:
    args = typing.get_args(t)
    return typing.get_origin(t) is tuple and bool(args) and args[-1] is not Ellipsis


def _fixed_tuple(t):
    args = typing.get_args(t)

    def hook(value, _type):
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _Expected(value, f"a list of {len(args)} values")
        try:
            return tuple(CONVERTER.structure(v, a) for v, a in zip(value, args))
        except _Expected as e:
            raise _Expected(value, f"a list of {len(args)} values, each {e.expected}") from None

    return hook


CONVERTER = cattrs.Converter(forbid_extra_keys=True)
CONVERTER.register_structure_hook(float, _strict("a number", _is_number, float))
CONVERTER.register_structure_hook(int, _strict("a whole number", _is_int, int))
CONVERTER.register_structure_hook(bool, _strict("true or false", lambda v: isinstance(v, bool), bool))
CONVERTER.register_structure_hook(str, _strict("a string", lambda v: isinstance(v, str), str))
CONVERTER.register_structure_hook_factory(_is_fixed_tuple, _fixed_tuple)


def to_data(cfg) -> dict:
    """The config as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(CONVERTER.unstructure(cfg)))


def structure(cls, data, where: str = "config"):
    """Rebuild a config of type `cls` from plain data; refuse unknown fields and wrong types by name."""
    try:
        return CONVERTER.structure(data, cls)
    except Exception as e:  # cattrs groups what went wrong where; report the first leaf
        path, leaf = _first_error(e, "")
        if isinstance(leaf, _Expected):
            raise ConfigError(where, path, leaf.value, leaf.expected) from None
        if isinstance(leaf, ForbiddenExtraKeysError):
            raise ConfigError(where, path, sorted(leaf.extra_fields), "no unknown fields") from None
        if isinstance(leaf, KeyError):
            raise ConfigError(where, path, None, "a value (field is missing)") from None
        raise ConfigError(where, path, type(leaf).__name__, str(leaf)) from None


def _first_error(exc: BaseException, path: str) -> tuple[str, BaseException]:
    """(dotted path, exception) of the first failure inside a cattrs validation error."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        if with_notes:
            inner, note = with_notes[0]
            key = getattr(note, "name", None)
            if key is None:
                index = note.index
                key = f"[{index}]" if isinstance(index, int) else index
            sub = f"{path}{key}" if str(key).startswith("[") else f"{path}.{key}" if path else str(key)
            return _first_error(inner, sub)
        return _first_error(without[0], path)
    return path, exc


def _named(node) -> bool:
    """A list whose entries are tables with a `name` (observation terms): addressed by name."""
    return isinstance(node, list) and bool(node) and all(isinstance(x, dict) and "name" in x for x in node)


def _child(node, key: str, path: str, where: str):
    """(container, key) of `key` inside `node`, refusing a key that is not there."""
    if _named(node):
        names = [x["name"] for x in node]
        if key not in names:
            expected = f"one of the entries {names}"
            raise ConfigError(where, _join(path, key), key, expected, f"no entry '{key}' in '{path}'; known: {names}")
        return node, names.index(key)
    if not isinstance(node, dict):
        raise ConfigError(where, path, node, f"a table with a field '{key}'")
    if key not in node:
        expected = f"a known field: one of {sorted(node)}"
        message = f"no field '{key}' in '{path or 'the config'}'; known: {sorted(node)}"
        raise ConfigError(where, _join(path, key), key, expected, message)
    return node, key


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


def merge(data: dict, override: dict, where: str = "config", path: str = "") -> dict:
    """A copy of `data` with every leaf of the partial `override` laid over it; unknown keys are refused."""
    out = json.loads(json.dumps(data))
    for key, value in override.items():
        container, k = _child(out, key, path, where)
        old = container[k]
        if isinstance(value, dict) and (isinstance(old, dict) or _named(old)):
            if _named(old):
                for name, sub in value.items():
                    entry = _child(old, name, _join(path, key), where)[1]
                    if not isinstance(sub, dict):
                        raise ConfigError(where, _join(_join(path, key), name), sub, "a table of fields")
                    old[entry] = merge(old[entry], sub, where, _join(_join(path, key), name))
            else:
                container[k] = merge(old, value, where, _join(path, key))
        else:
            container[k] = value
    return out


def set_field(data: dict, dotted: str, value, where: str = "config") -> dict:
    """A copy of `data` with the field at `dotted` ('env.rewards.orientation.weight') set to `value`."""
    override = value
    for key in reversed(dotted.split(".")):
        override = {key: override}
    return merge(data, override, where)


def parse_text(text: str):
    """A command-line value: JSON (numbers, true/false, lists, null) or else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
