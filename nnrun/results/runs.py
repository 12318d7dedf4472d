"""Scan a runs root for run directories, filter and sort them (no TensorFlow)."""

from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path
from typing import Any

import yaml

from nnrun.engine.rundir import CONFIG_YAML, RUN_JSON
from nnrun.errors import ConfigError, UsageError

MISSING = object()
# Metrics where smaller is better; everything else (accuracy, auc, ...) sorts best = highest.
_LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "time", "perplexity", "epoch")


def find_runs(root: str | Path, filters: list[str] | None = None, sort: str | None = None,
              reverse: bool = False) -> list[dict]:
    """run.json records under root (any depth), each with its `path`.

    Newest first, or best first by `sort` (a final metric, run.json field or config key);
    `filters` are KEY=VALUE strings that must all match (see `matches`).
    """
    root = Path(root)
    parsed = [parse_filter(f) for f in filters or []]
    records = []
    for path in root.rglob(RUN_JSON):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {"status": "unreadable"}
        record["path"] = str(path.parent)
        if all(matches(record, key, value) for key, value in parsed):
            records.append(record)
    records.sort(key=lambda r: r.get("started_at") or "", reverse=True)
    if sort:
        records = sort_records(records, sort, reverse)
    return records


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {dotted.key: leaf}; lists stay whole (they are values in a config)."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def run_config(record: dict) -> dict:
    """The run's resolved config.yaml as plain data (cached on the record); {} if unreadable."""
    if "_config" not in record:
        try:
            record["_config"] = yaml.safe_load((Path(record["path"]) / CONFIG_YAML).read_text()) or {}
        except (OSError, yaml.YAMLError):
            record["_config"] = {}
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


def parse_filter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--filter {text!r}: expected KEY=VALUE, e.g. status=completed or optimizer.name=adam")
    return key.strip(), value.strip()


def matches(record: dict, key: str, raw: str) -> bool:
    """Equality after reading VALUE as YAML (so `seed=1`, `lr=1e-3`, `stages=[8,16]` compare as
    data); shell-style wildcards (`name=tiny*`) match strings."""
    actual = lookup(record, key)
    if actual is MISSING:
        return False
    if any(ch in raw for ch in "*?[") and isinstance(actual, str) and fnmatch.fnmatchcase(actual, raw):
        return True
    from nnrun.config.loader import parse_yaml

    try:
        wanted = parse_yaml(raw, "--filter") if raw else None
    except ConfigError:
        wanted = raw
    if isinstance(wanted, (int, float)) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return math.isclose(float(wanted), float(actual), rel_tol=1e-9, abs_tol=0.0)
    return wanted == actual or str(actual) == raw


def higher_is_better(metric: str) -> bool:
    return not any(word in metric.lower() for word in _LOWER_IS_BETTER)


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
