"""Strict, bounded YAML: the one parser for every YAML file nnrun reads.

Stricter than `yaml.safe_load`: duplicate keys are errors, the file must be UTF-8, exponent
floats without a dot (`1e-3`) are numbers as in YAML 1.2, and alias expansion is bounded so a
"billion laughs" file cannot exhaust memory.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from nnrun.errors import ConfigError

MAX_EXPANDED_NODES = 100_000

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


STDIN = "-"  # a config path that means standard input (its relative base: paths resolve against the cwd)


def is_stdin(path: str | Path) -> bool:
    return str(path) == STDIN


def read_yaml_file(path: Path) -> dict:
    source = "<stdin>" if is_stdin(path) else str(path)
    try:
        raw = sys.stdin.buffer.read() if is_stdin(path) else path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {source}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (bad byte at offset {exc.start})") from None
    data = parse_yaml(text, source)
    if data is None:
        raise ConfigError(f"{source}: the config {'' if is_stdin(path) else 'file '}is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data
