"""Scan a runs root for run directories, filter and sort them (no TensorFlow)."""

from __future__ import annotations

import difflib
import fnmatch
import math
import re
from pathlib import Path
from typing import Any

from nnrun.config import flatten
from nnrun.engine.metrics import higher_is_better
from nnrun.engine.tracking import ARTIFACTS_DIR
from nnrun.config.safe_yaml import MAX_FILE_BYTES, parse_config_bytes
from nnrun.rundir import CONFIG_YAML, RUN_JSON, read_inside, read_json
from nnrun.errors import ConfigError, UsageError
from nnrun.results.format import number_text

MISSING = object()


def find_runs(root: str | Path, filters: list[str] | None = None, sort: str | None = None,
              reverse: bool = False) -> list[dict]:
    """run.json records under root (any depth), each with its `path`.

    Newest first, or best first by `sort` (a final metric, run.json field or config key);
    `filters` are KEY=VALUE strings that must all match (see `matches`). A root that is not a
    directory, or a key no run has (`check_key`), is a UsageError rather than "no runs".
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{'not a directory' if root.exists() else 'no such directory'}: {root}")
    parsed = [parse_filter(f) for f in filters or []]
    records = []
    for path in root.rglob(RUN_JSON):
        if ARTIFACTS_DIR not in path.relative_to(root).parts:  # MLflow's copies of uploaded runs
            records.append(read_record(path.parent))
    for option, key in [("--filter", key) for key, _, _ in parsed] + ([("--sort", sort)] if sort else []):
        check_key(records, key, option, root)
    records = [r for r in records if all(matches(r, key, value, op) for key, op, value in parsed)]
    records.sort(key=lambda r: r.get("started_at") or "", reverse=True)
    if sort:
        records = sort_records(records, sort, reverse)
    return records


def read_record(run_path: Path) -> dict:
    """A run's run.json with its `path`; {"status": "unreadable"} when run.json cannot be read
    (missing, a symbolic link, too large or deep, not a JSON object)."""
    record = read_json(Path(run_path) / RUN_JSON, Path(run_path))
    return {**(record if isinstance(record, dict) else {"status": "unreadable"}), "path": str(run_path)}


def run_config(record: dict) -> dict:
    """The run's resolved config.yaml as plain data (cached on the record); {} if it is missing.
    A config.yaml that cannot be read within the bounded loader's limits (an alias bomb, deep
    nesting, a symbolic link, not YAML) marks the run unreadable, with the reason."""
    if "_config" not in record:
        record["_config"] = {}
        path = Path(record["path"]) / CONFIG_YAML
        if path.exists() or path.is_symlink():
            try:
                record["_config"] = parse_config_bytes(read_inside(path.parent, path, MAX_FILE_BYTES), str(path))
            except (OSError, ConfigError, UsageError) as exc:
                record["status"], record["reason"] = "unreadable", f"{CONFIG_YAML}: {exc}"
    return record["_config"]


def _dig(data: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return MISSING
        data = data[part]
    return data


def lookup(record: dict, key: str) -> Any:
    """A value for KEY: a final metric (`val_accuracy`), a run.json field (`status`,
    `device.accelerator`) or a dotted config key (`optimizer.learning_rate`); MISSING if none."""
    for source in (record.get("final_metrics") or {}, record):
        value = _dig(source, key)
        if value is not MISSING:
            return value
    return _dig(run_config(record), key)


def value_of(record: dict, key: str) -> Any:
    """`lookup`, with None for a key the run does not have."""
    value = lookup(record, key)
    return None if value is MISSING else value


def _prefixes(keys) -> set[str]:
    """Every dotted key and each of its parents (`device.accelerator` -> also `device`)."""
    out = set()
    for key in keys:
        parts = key.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def check_key(records: list[dict], key: str, option: str, root: Path) -> None:
    """A --filter/--sort KEY must be a final metric, run.json field or config key of some run:
    a typo would otherwise silently match nothing (or sort by nothing). No runs, nothing to check."""
    if not records or any(lookup(r, key) is not MISSING for r in records):
        return
    metrics = sorted({m for r in records for m in (r.get("final_metrics") or {})})
    known = set(metrics) | _prefixes(k for r in records for k in flatten(public(r))) \
        | _prefixes(k for r in records for k in flatten(run_config(r)))
    close = difflib.get_close_matches(key, metrics, n=1, cutoff=0.6) \
        or difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else (
        f": no run under {root} has it as a final metric ({', '.join(metrics) or 'none yet'}), "
        "run.json field or config key")
    raise UsageError(f"{option}: unknown key {key!r}{hint}")


_FILTER = re.compile(r"^([^=<>!]*)(>=|<=|!=|==|=|>|<)(.*)$", re.S)
_ORDER = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def parse_filter(text: str) -> tuple[str, str, str]:
    """KEY=VALUE (also KEY!=VALUE, and KEY>=, <=, >, < a number) -> (key, operator, value)."""
    match = _FILTER.match(text)
    if not match or not match.group(1).strip():
        raise UsageError(f"--filter {text!r}: expected KEY=VALUE, e.g. status=completed or optimizer.name=adam")
    key, op, value = match.group(1).strip(), match.group(2), match.group(3).strip()
    op = "=" if op == "==" else op
    if op in _ORDER and _number(_parse(value)) is None:
        raise UsageError(f"--filter {text!r}: {op} compares numbers, got {value!r}")
    return key, op, value


def _parse(raw: str) -> Any:
    from nnrun.config.safe_yaml import parse_yaml

    try:
        return parse_yaml(raw, "--filter") if raw else None
    except ConfigError:
        return raw


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _shown(value: float) -> float:
    return float(number_text(value))


def _equal(actual: Any, wanted: Any, raw: str) -> bool:
    if any(ch in raw for ch in "*?[") and isinstance(actual, str) and fnmatch.fnmatchcase(actual, raw):
        return True
    a, w = _number(actual), _number(wanted)
    if a is not None and w is not None:
        if isinstance(actual, int) and isinstance(wanted, int):
            return actual == wanted
        return a == w or _shown(a) == _shown(w)  # 0.665 matches a metric shown as 0.6650
    return wanted == actual or str(actual) == raw


def matches(record: dict, key: str, raw: str, op: str = "=") -> bool:
    """Whether the run's KEY compares with VALUE read as YAML (so `seed=1`, `lr=1e-3`,
    `stages=[8,16]` compare as data): numbers at the precision tables show them (`number_text`),
    shell-style wildcards (`name=tiny*`) on strings. A run without KEY never matches."""
    actual = lookup(record, key)
    if actual is MISSING:
        return False
    wanted = _parse(raw)
    if op in _ORDER:
        a, w = _number(actual), _number(wanted)
        return a is not None and w is not None and _ORDER[op](_shown(a), _shown(w))
    return _equal(actual, wanted, raw) != (op == "!=")


def sort_records(records: list[dict], metric: str, reverse: bool = False) -> list[dict]:
    """Best first by `metric` (highest, or lowest for losses/errors/times); runs without it last."""

    def number(record):
        value = lookup(record, metric)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    keyed = [(number(r), r) for r in records]
    have = [(v, r) for v, r in keyed if v is not None and not math.isnan(v)]
    rest = [r for v, r in keyed if v is None or math.isnan(v)]
    have.sort(key=lambda pair: pair[0], reverse=higher_is_better(metric) != reverse)
    return [r for _, r in have] + rest


def public(record: dict) -> dict:
    """The record without private caches, for JSON output."""
    return {k: v for k, v in record.items() if not k.startswith("_")}
