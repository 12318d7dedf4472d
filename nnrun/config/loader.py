"""Safe YAML loading with `base:` composition and `--set key.path=value` overrides.

The loader is stricter than `yaml.safe_load`: duplicate keys are errors, the file must be
UTF-8, exponent floats without a dot (`1e-3`) are numbers as in YAML 1.2, and alias
expansion is bounded so a "billion laughs" file cannot exhaust memory.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from nnrun.errors import ConfigError

MAX_EXPANDED_NODES = 100_000
MAX_BASE_DEPTH = 16

_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads `1e-3` as a float."""


StrictLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        mark = key_node.start_mark
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise ConfigError(f"line {mark.line + 1}, column {mark.column + 1}: a key must be a plain value, "
                              f"not a {type(key).__name__}")
        if key in seen:
            raise ConfigError(f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {key!r}")
        seen[key] = True
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """Node count after alias expansion, computed without expanding (memoised on identity)."""
    key = id(value)
    if key in memo:
        return memo[key]
    if isinstance(value, dict):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in value.items())
    elif isinstance(value, list):
        size = 1 + sum(_expanded_size(v, memo) for v in value)
    else:
        size = 1
    memo[key] = size
    return size


def parse_yaml(text: str, source: str) -> Any:
    try:
        data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{source}: invalid YAML at {where}{problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    if _expanded_size(data, {}) > MAX_EXPANDED_NODES:
        raise ConfigError(
            f"{source}: YAML expands to more than {MAX_EXPANDED_NODES} nodes (alias bomb?)"
        )
    return data


def read_yaml_file(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(base: dict, override: dict) -> dict:
    """Recursive dict merge: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_raw(path: str | Path, _depth: int = 0, _chain: tuple = ()) -> dict:
    """Read a config file and compose it over its `base:` file(s), relative to itself."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        raise ConfigError(f"{path}: circular base: chain")
    if _depth > MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: base: chain deeper than {MAX_BASE_DEPTH}")
    data = read_yaml_file(path)
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError("base: expected a file name or a list of file names", None)
    merged: dict = {}
    for base in bases:
        merged = deep_merge(merged, load_raw(path.parent / base, _depth + 1, _chain + (resolved,)))
    return deep_merge(merged, data)


# Sections that accept a bare component name as shorthand (`loss: crossentropy`): a deeper
# --set (loss.params.label_smoothing=0.1) expands the shorthand to {name: ...} first.
SHORTHAND = {("loss",), ("model",), ("optimizer", "schedule")}

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optimizer.learning_rate=3e-4")
    key, value = text.split("=", 1)
    key = key.strip()
    if not _KEY.match(key):
        raise ConfigError(f"--set {text!r}: bad key {key!r}; use dotted names like train.epochs")
    return key.split("."), parse_yaml(value, f"--set {key}") if value.strip() else None


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to a raw config dict."""
    out = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if isinstance(child, str) and tuple(keys[: i + 1]) in SHORTHAND:
                child = node[key] = {"name": child}
            if not isinstance(child, dict):
                prefix = ".".join(keys[: i + 1])
                raise ConfigError(f"--set {text!r}: {prefix} is a value, not a section")
            node = child
        node[keys[-1]] = value
    return out
