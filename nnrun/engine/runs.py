"""Scan a runs root for run directories and summarise them (no TensorFlow)."""

from __future__ import annotations

import json
from pathlib import Path

from nnrun.engine.rundir import RUN_JSON


def find_runs(root: str | Path) -> list[dict]:
    """run.json records under root (any depth), newest first, each with its `path`."""
    root = Path(root)
    records = []
    for path in root.rglob(RUN_JSON):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {"status": "unreadable"}
        record["path"] = str(path.parent)
        records.append(record)
    records.sort(key=lambda r: r.get("started_at") or "", reverse=True)
    return records
