"""`nnrun ablate CONFIG`: does each technique help here? The config as it is, and the config without
each of its techniques, each with the same N seeds.

It writes a sweep file (ablate.yaml) into the sweep directory: a `search:` block with the grid
sampler over `train.techniques` (the full set, then each set with one technique left out) and
`seed`, without pruning. So the runs go through the search machinery: the sweep directory, warm
workers, `--jobs`, and a second `nnrun ablate` of the same config continues the study instead of
training again. When it is done, each variant gets the mean of the monitored metric (its last
epoch, `train.monitor`) with a 95% interval over the seeds, the paired difference to the full
config with its interval (seed by seed: the same seeds, hence the same initial weights and data
order, for every variant), and the training time and its paired difference. The table is
printed and written as ablation.csv, ablation.json and ablation.png, and added to report.html.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import yaml

from nnrun.config import load_config
from nnrun.config.loader import parse_override
from nnrun.errors import ConfigError, RunFailed
from nnrun.rundir import atomic_write, read_json
from nnrun.safe_text import csv_text, for_console

FULL = "full"
SWEEP_FILE = "ablate.yaml"
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% Student-t interval (None for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def variants(techniques: dict) -> dict[str, dict]:
    """full -> every technique; "without X" -> all but X."""
    out = {FULL: techniques}
    out.update({f"without {name}": {k: v for k, v in techniques.items() if k != name} for name in techniques})
    return out


def write_sweep_file(config: Path, overrides: list[str], seeds: int, directory: Path, name: str) -> Path:
    """The ablation as a sweep file with a search: block (ConfigError if the config is invalid or
    has no technique to leave out)."""
    cfg = load_config(config, overrides)
    if not cfg.train.techniques:
        raise ConfigError("the config has no train.techniques to leave out", "train.techniques")
    shared = {}
    for text in overrides:
        keys, value = parse_override(text)
        key = ".".join(keys)
        if key == "seed":
            raise ConfigError("--set seed: ablate gives every variant the same seeds (the config's seed, +1, ...)")
        if not (key == "train.techniques" or key.startswith("train.techniques.")):  # those are in the variants
            shared[key] = value
    spec = {
        "name": name,
        "base": str(Path(config).resolve()),
        "set": shared,
        "search": {"sampler": "grid", "pruner": "none", "metric": cfg.train.monitor},
        "params": {"train.techniques": {"choice": list(variants(cfg.train.techniques).values())},
                   "seed": {"choice": [cfg.seed + i for i in range(seeds)]}},
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SWEEP_FILE
    atomic_write(path, "# written by nnrun ablate; the study reads it\n" + yaml.safe_dump(spec, sort_keys=False))
    return path


def summarise(info: dict, techniques: dict, monitor: str) -> list[dict]:
    """One row per variant: the metric's mean and interval, and the paired differences to full."""
    names = {json.dumps(v, sort_keys=True): k for k, v in variants(techniques).items()}
    scores: dict[str, dict[int, tuple[float, float]]] = {}
    for row in info["rows"]:
        if row["status"] != "completed":
            continue
        variant = names.get(json.dumps(row["params"]["train.techniques"], sort_keys=True))
        value = (row["final_metrics"] or {}).get(monitor)
        if variant is None or not isinstance(value, (int, float)):
            continue
        seconds = _train_seconds(row)
        scores.setdefault(variant, {})[int(row["params"]["seed"])] = (float(value), seconds)
    full = scores.get(FULL, {})
    table = []
    for variant in variants(techniques):
        runs = scores.get(variant, {})
        if not runs:
            table.append({"variant": variant, "seeds": 0})
            continue
        values = [v for v, _ in runs.values()]
        times = [t for _, t in runs.values() if t is not None]
        mean, half = interval(values)
        paired = [runs[s][0] - full[s][0] for s in runs if s in full]
        paired_time = [runs[s][1] - full[s][1] for s in runs if s in full and None not in (runs[s][1], full[s][1])]
        diff, diff_half = interval(paired) if paired else (None, None)
        time_diff, time_half = interval(paired_time) if paired_time else (None, None)
        table.append({
            "variant": variant, "seeds": len(values), "metric": monitor, "mean": mean, "ci95": half,
            "diff_to_full": None if variant == FULL else diff, "diff_ci95": None if variant == FULL else diff_half,
            "train_s": statistics.fmean(times) if times else None,
            "train_s_diff": None if variant == FULL else time_diff,
            "train_s_diff_ci95": None if variant == FULL else time_half,
            "values": {str(s): v for s, (v, _) in sorted(runs.items())},
        })
    return table


def _train_seconds(row: dict) -> float | None:
    """The run's training time (run.json wall_time_s), else the trial's."""
    record = read_json(Path(row["run_dir"]) / "run.json") if row.get("run_dir") else None
    seconds = (record or {}).get("wall_time_s") if isinstance(record, dict) else None
    return float(seconds) if isinstance(seconds, (int, float)) else row.get("wall_time_s")


def _pm(value, half, digits=4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + (f" ± {half:.{digits}f}" if half is not None else "")


def _signed(value, half, digits=4) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" + (f" ± {half:.{digits}f}" if half is not None else "")


def write(directory: Path, table: list[dict]) -> list[Path]:
    """ablation.json, ablation.csv and ablation.png in the sweep directory."""
    atomic_write(directory / "ablation.json", json.dumps(table, indent=2) + "\n")
    header = ["variant", "seeds", "metric", "mean", "ci95", "diff_to_full", "diff_ci95", "train_s", "train_s_diff",
              "train_s_diff_ci95"]
    atomic_write(directory / "ablation.csv", csv_text([header] + [[r.get(k) for k in header] for r in table]))
    return [directory / "ablation.json", directory / "ablation.csv", _plot(directory / "ablation.png", table)]


def _plot(path: Path, table: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table if r.get("seeds")]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(rows) + 1.6))
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [r["mean"] for r in rows], xerr=[r["ci95"] or 0 for r in rows], color=["tab:blue"] +
            ["tab:gray"] * (len(rows) - 1), capsize=4)
    for yi, r in zip(y, rows):
        for value in r["values"].values():
            ax.plot(value, yi, "k.", ms=4)
    ax.set_yticks(y, [r["variant"] for r in rows])
    low = min(v for r in rows for v in r["values"].values())
    high = max(v for r in rows for v in r["values"].values())
    pad = max(0.02, 0.25 * (high - low))
    ax.set_xlim(low - pad, high + pad)
    ax.set_xlabel(f"{rows[0]['metric']} (mean, 95% interval, seeds as dots)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rich_table(table: list[dict]):
    from rich.table import Table

    t = Table(title="ablation: each technique left out, paired over the same seeds", title_justify="left")
    for col in ("variant", "seeds", f"{table[0].get('metric', 'metric')} (95%)", "diff to full (95%)", "train s",
                "train s diff"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in table:
        t.add_row(*(for_console(c) for c in (
            r["variant"], str(r["seeds"]), _pm(r.get("mean"), r.get("ci95")),
            _signed(r.get("diff_to_full"), r.get("diff_ci95")),
            "-" if r.get("train_s") is None else f"{r['train_s']:.1f}",
            _signed(r.get("train_s_diff"), r.get("train_s_diff_ci95"), 1))))
    return t


def html_section(table: list[dict], figure: Path) -> str:
    from nnrun.results.report import _figure, _table

    rows = [[r["variant"], r["seeds"], _pm(r.get("mean"), r.get("ci95")), _signed(r.get("diff_to_full"), r.get("diff_ci95")),
             r.get("train_s"), _signed(r.get("train_s_diff"), r.get("train_s_diff_ci95"), 1)] for r in table]
    return ("<h2>Ablation</h2>" + _table(["variant", "seeds", "metric (95%)", "diff to full (95%)", "train s",
                                          "train s diff"], rows) + _figure(figure.read_bytes(), "ablation"))


def ablate(config: Path, overrides: list[str], seeds: int = 3, *, jobs: int = 1, out: Path | None = None,
           console=None, say=print) -> Path:
    """Run (or continue) the ablation and write its summary; returns the sweep directory."""
    from nnrun.search import report
    from nnrun.search.command import search_command
    from nnrun.search.plan import search_sweep
    from nnrun.sweep.sweep_file import read_sweep_file

    if seeds < 2:
        raise ConfigError(f"--seeds {seeds}: at least 2 (an interval needs two)")
    cfg = load_config(config, overrides)
    name = f"{cfg.name}-ablation"
    directory = Path(out) if out else Path(cfg.runtime.runs_root) / "sweeps" / name
    path = write_sweep_file(config, overrides, seeds, directory, name)
    sweep = search_sweep(read_sweep_file(path, directory))
    try:
        search_command(sweep, jobs=jobs, out=directory, console=None, say=say)
    except RunFailed:
        pass  # the summary below says which variants have no result
    from nnrun.search.study import Study

    study = Study(sweep.search, sweep.name, sweep.directory, say)
    try:
        study.open()
        info = report.collect(study)
    finally:
        study.close()
    table = summarise(info, cfg.train.techniques, cfg.train.monitor)
    if not any(r.get("seeds") for r in table):
        raise RunFailed(f"no run of the ablation completed; see {directory / 'sweep.csv'}")
    files = write(directory, table)
    report.write(directory, info, sweep.swept, sections=[html_section(table, files[-1])])
    if console is not None:
        console.print(rich_table(table))
    return directory
