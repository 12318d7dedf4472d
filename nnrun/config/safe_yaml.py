"""Strict, bounded YAML: the one parser for every YAML file nnrun reads.

Stricter than `yaml.safe_load`: duplicate keys are errors, the file must be UTF-8, exponent
floats without a dot (`1e-3`) are numbers as in YAML 1.2, and what a file may cost is bounded:
its size (MAX_FILE_BYTES), its nesting (MAX_DEPTH, checked while composing, before Python's own
recursion limit is near) and its size after alias expansion (MAX_EXPANDED_NODES, so a
"billion laughs" file cannot exhaust memory; a recursive alias is refused too). Every YAML file
nnrun reads (configs, sweep files, run directories' config.yaml) goes through here.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from nnrun.errors import ConfigError

MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 64  # nested mappings/lists; a real config nests 4-5 levels
MAX_FILE_BYTES = 4 * 1024 * 1024

_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, reads `1e-3` as a float and bounds nesting."""

    _depth = 0

    def compose_node(self, parent, index):
        """PyYAML composes recursively: a file nested thousands deep would end in RecursionError."""
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"line {mark.line + 1}, column {mark.column + 1}: nested more than "
                                  f"{MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


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


_OPEN = (-1, -1)  # memo mark of a collection being measured: meeting it again is a recursive alias


def _measure(value: Any, memo: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(node count after alias expansion, nesting depth), computed without expanding (memoised
    on identity). ConfigError for a collection that contains itself (`a: &a [*a]`)."""
    key = id(value)
    if key in memo:
        if memo[key] == _OPEN:
            raise ConfigError("a recursive alias (a mapping or list that contains itself)")
        return memo[key]
    size, depth = 1, 0
    if isinstance(value, (dict, list)):
        memo[key] = _OPEN
        items = [x for kv in value.items() for x in kv] if isinstance(value, dict) else value
        for item in items:
            n, d = _measure(item, memo)
            size, depth = size + n, max(depth, d)
        depth += 1
    memo[key] = (size, depth)
    return size, depth


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
    try:
        size, depth = _measure(data, {})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if size > MAX_EXPANDED_NODES:
        raise ConfigError(
            f"{source}: YAML expands to more than {MAX_EXPANDED_NODES} nodes (alias bomb?)"
        )
    if depth > MAX_DEPTH:  # through aliases: each anchor holding the previous one
        raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep (through aliases)")
    return data


STDIN = "-"  # a config path that means standard input (its relative base: paths resolve against the cwd)


def is_stdin(path: str | Path) -> bool:
    return str(path) == STDIN


def read_yaml_file(path: Path) -> dict:
    source = "<stdin>" if is_stdin(path) else str(path)
    try:
        if is_stdin(path):
            raw = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {source}: {exc.strerror}") from None
    return parse_config_bytes(raw, source, "" if is_stdin(path) else "file ")


def parse_config_bytes(raw: bytes, source: str, what: str = "file ") -> dict:
    """A config's bytes (at most MAX_FILE_BYTES of UTF-8 YAML, a mapping at the top) -> its
    data; ConfigError naming `source` otherwise. For bytes read by other means (a run
    directory's config.yaml, read without following links)."""
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not a config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (bad byte at offset {exc.start})") from None
    data = parse_yaml(text, source)
    if data is None:
        raise ConfigError(f"{source}: the config {what}is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data
