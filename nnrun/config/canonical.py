"""The canonical form of a resolved config: its YAML text, its hash, a trial's identity, and
its dotted keys. What a run directory records and what sweeps and `compare` match on."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from nnrun.config.schema import RunConfig


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=None)


def config_hash(cfg: RunConfig) -> str:
    """Stable hash of the resolved config (key order and formatting do not matter)."""
    canonical = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def identity(cfg: RunConfig) -> str:
    """A trial's identity: the resolved-config hash with runs_root, threads and tracking blanked,
    so moving a sweep directory, re-running with another --jobs or under another MLflow parent
    run still recognises finished trials."""
    runtime = cfg.runtime.model_copy(update={"runs_root": "", "threads": None})
    return config_hash(cfg.model_copy(update={"runtime": runtime, "tracking": type(cfg.tracking)()}))


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
