"""`nnrun compare`: which config keys differ between runs, and their final metrics (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

from nnrun.rundir import CONFIG_YAML
from nnrun.config import flatten
from nnrun.results.format import fmt
from nnrun.safe_text import for_console
from nnrun.results.runs import find_runs, read_record, run_config
from nnrun.errors import UsageError

# run.json fields shown beside the final metrics.
RUN_FIELDS = ("status", "epochs_completed", "wall_time_s")


def _expand(path: Path) -> list[dict]:
    """A run directory -> its record; any other directory -> every run under it (e.g. a sweep)."""
    if (path / CONFIG_YAML).is_file():
        return [read_record(path)]
    if path.is_dir():
        found = find_runs(path)
        if found:
            return sorted(found, key=lambda r: r["path"])
    raise UsageError(f"not a run directory and no runs under it: {path}")


def compare(paths: list[str | Path]) -> dict:
    """{"runs": [path...], "config": {key: [value per run]} for keys that differ,
    "metrics": {name: [value per run]}}; a key a run lacks is null for that run."""
    records = [r for p in paths for r in _expand(Path(p))]
    if len(records) < 2:
        raise UsageError("compare needs at least two runs (or a directory holding several)")
    configs = [flatten(run_config(r)) for r in records]
    keys = sorted({k for c in configs for k in c})
    differences = {}
    for key in keys:
        values = [c.get(key) for c in configs]
        if any(v != values[0] for v in values[1:]):
            differences[key] = values
    metrics = {field: [r.get(field) for r in records] for field in RUN_FIELDS}
    names = sorted({k for r in records for k in (r.get("final_metrics") or {})})
    for name in names:
        metrics[name] = [(r.get("final_metrics") or {}).get(name) for r in records]
    return {"runs": [r["path"] for r in records], "config": differences, "metrics": metrics}


def short_names(paths: list[str]) -> list[str]:
    """Column titles: the shortest trailing path parts that tell the runs apart."""
    parts = [Path(p).parts for p in paths]
    names = [p[-2] if len(p) > 1 else p[-1] for p in parts]  # the run name (its parent directory)
    if len(set(names)) == len(names):
        return names
    for depth in range(2, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return list(paths)


def tables(result: dict):
    """Two rich tables (config differences, metrics) for the terminal."""
    from rich.table import Table

    titles = short_names(result["runs"])
    out = []
    for title, rows in (("config differences", result["config"]), ("final metrics", result["metrics"])):
        table = Table(title=title, title_justify="left")
        table.add_column("key")
        for name in titles:
            table.add_column(for_console(name), justify="right", overflow="fold")
        for key, values in rows.items():
            table.add_row(for_console(key), *(for_console(fmt(v, key)) for v in values))
        if not rows:
            table.add_row("(none)", *("" for _ in titles))
        out.append(table)
    return out
