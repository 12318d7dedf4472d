"""Config files: `base:` composition, `--set key.path=value` overrides, and `load_config`,
which turns a file and its overrides into a resolved RunConfig.

Every file is read through `safe_yaml` (strict and bounded).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from nnrun.config.resolve import resolve
from nnrun.config.safe_yaml import is_stdin, parse_yaml, read_yaml_file
from nnrun.config.schema import RunConfig
from nnrun.errors import ConfigError

MAX_BASE_DEPTH = 16
MAX_BASE_FILES = 64  # distinct files in one config's base: chain


# Keys that name a component next to its `params` (data.dataset, model.name, loss.name, ...,
# also nested ones such as a siamese encoder): params written for one component mean nothing
# to another, so changing the name drops the old params instead of merging them.
NAME_KEYS = ("name", "dataset")


def _renames(base: dict, override: dict) -> bool:
    """Whether `override` names a different component than `base`, whose params then go."""
    return "params" in base and any(k in base and k in override and base[k] != override[k] for k in NAME_KEYS)


def deep_merge(base: dict, override: dict) -> dict:
    """Recursive dict merge: mappings merge key by key, anything else replaces; a mapping that
    changes its component name (`model: {name: transformer}` over resnet) starts with no params."""
    out = copy.deepcopy(base)
    if _renames(base, override):
        del out["params"]
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_raw(path: str | Path) -> dict:
    """Read a config file (`-`: stdin) and compose it over its `base:` file(s), relative to
    itself (to the current directory for stdin). Each file is read once however often the
    chain names it, and at most MAX_BASE_FILES files make up one config."""
    return _compose(Path(path), (), {})


def _compose(path: Path, chain: tuple, done: dict) -> dict:
    """`path` composed over its bases; `done` holds every file composed so far (by resolved
    path), so a base that many files name (a fan-out) is read and composed once."""
    resolved = path if is_stdin(path) else path.resolve()
    if resolved in chain:
        raise ConfigError(f"{path}: circular base: chain")
    if resolved in done:
        return done[resolved]  # deep_merge copies what it takes, so sharing the result is safe
    if len(chain) > MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: base: chain deeper than {MAX_BASE_DEPTH}")
    if len(done) >= MAX_BASE_FILES:
        raise ConfigError(f"{path}: the base: chain names more than {MAX_BASE_FILES} files")
    data = read_yaml_file(path)
    bases = data.pop("base", None)
    if bases is not None:
        if isinstance(bases, str):
            bases = [bases]
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise ConfigError("base: expected a file name or a list of file names", None)
        merged: dict = {}
        for base in bases:
            merged = deep_merge(merged, _compose(path.parent / base, chain + (resolved,), done))
        data = deep_merge(merged, data)
    done[resolved] = data
    return data


# Sections that accept a bare component name as shorthand (`loss: crossentropy`): a deeper
# --set (loss.params.label_smoothing=0.1) expands the shorthand to {name: ...} first.
SHORTHAND = {("loss",), ("model",), ("optimizer", "schedule")}

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*$")


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optimizer.learning_rate=3e-4")
    key, value = text.split("=", 1)
    key = key.strip()
    if not _KEY.match(key):
        raise ConfigError(f"--set {text!r}: bad key {key!r}; use dotted names like train.epochs "
                          "(a number indexes a list: model.params.stages.1)")
    return key.split("."), parse_yaml(value, f"--set {key}") if value.strip() else None


def set_value(value: Any) -> str:
    """A value as `--set` text that the config loader parses back to the same value."""
    if isinstance(value, str) and value and value.strip() == value:
        try:
            if parse_yaml(value, "value") == value:
                return value
        except ConfigError:
            pass
    return json.dumps(value)  # JSON is YAML: numbers, booleans, null, lists, mappings, quoted strings


def _index(items: list, key: str, path: list[str], text: str) -> int:
    where = ".".join(path)
    if not key.isdigit():
        raise ConfigError(f"--set {text!r}: {where} is a list; index it with a number (0-{len(items) - 1})")
    if int(key) >= len(items):
        span = f"indexes 0-{len(items) - 1}" if items else "no index is valid"
        raise ConfigError(f"--set {text!r}: {where} has {len(items)} entries ({span}); {key} is out of range")
    return int(key)


def _default_list(data: dict, path: list[str], text: str) -> list:
    """The resolved (default) value at `path` when the raw config does not hold that list."""
    value = None
    try:
        value = resolve(data).model_dump(mode="json")
        for part in path:
            value = value[part] if isinstance(value, dict) else None
    except (ConfigError, KeyError, TypeError):
        value = None
    if not isinstance(value, list):
        where = ".".join(path)
        raise ConfigError(f"--set {text!r}: {where} is not a list in the config, so it cannot be indexed; "
                          f"set it whole ({where}=[...])")
    return copy.deepcopy(value)


def _kept_params(params: Any, prefix: tuple, written: list[tuple]) -> dict:
    """What an earlier --set wrote into `params`: that survives a later --set of the name."""
    if prefix in written:
        return params
    if not isinstance(params, dict):
        return {}
    keys = {path[len(prefix)] for path in written if len(path) > len(prefix) and path[: len(prefix)] == prefix}
    return {k: v for k, v in params.items() if k in keys}


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to a raw config dict. A number in
    the path indexes an existing list (`model.params.stages.1=8`); setting a component's name
    drops the params of the component it replaces, except those set by earlier overrides."""
    out = copy.deepcopy(data)
    written: list[tuple] = []
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = out
        for i, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                child = node[_index(node, key, keys[:i], text)]
            else:
                child = node.get(key)
                if child is None:
                    child = node[key] = _default_list(out, keys[: i + 1], text) if keys[i + 1].isdigit() else {}
                if isinstance(child, str) and tuple(keys[: i + 1]) in SHORTHAND:
                    child = node[key] = {"name": child}
            if not isinstance(child, (dict, list)):
                raise ConfigError(f"--set {text!r}: {'.'.join(keys[: i + 1])} is a value, not a section")
            node = child
        last = keys[-1]
        if isinstance(node, list):
            node[_index(node, last, keys[:-1], text)] = value
            written.append(tuple(keys))
            continue
        if last in NAME_KEYS and last in node and node[last] != value and "params" in node:
            node["params"] = _kept_params(node["params"], tuple(keys[:-1]) + ("params",), written)
        node[last] = value
        written.append(tuple(keys))
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """File + `base:` chain + `--set` overrides -> resolved RunConfig."""
    raw = load_raw(path)
    if overrides:
        raw = apply_overrides(raw, overrides)
    return resolve(raw)
