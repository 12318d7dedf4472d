"""Sweep summaries: sweep.csv, sweep.jsonl, sweep.png (metric vs each swept value), a rich table."""

from __future__ import annotations

import json
import math
from pathlib import Path

from nnrun.results.format import fmt
from nnrun.rundir import atomic_write
from nnrun.safe_text import csv_text, for_console
from nnrun.engine.metrics import higher_is_better
from nnrun.sweep.runner import Outcome
from nnrun.sweep.sweep_file import Sweep


def rows(outcomes: list[Outcome]) -> list[dict]:
    return [
        {"trial": o.trial.name, "overrides": o.trial.overrides, "status": o.status, "action": o.action,
         "final_metrics": o.final_metrics, "wall_time_s": o.wall_time_s, "run_dir": o.run_dir,
         "reason": o.reason, "config_hash": o.trial.identity}
        for o in outcomes
    ]


def _cell(value) -> str:
    return "" if value is None else json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)


def write(sweep: Sweep, outcomes: list[Outcome]) -> None:
    """sweep.jsonl (one JSON row per trial) and sweep.csv (overrides and metrics as columns)."""
    data = rows(outcomes)
    atomic_write(sweep.directory / "sweep.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in data))
    metrics = sorted({k for r in data for k in r["final_metrics"]})
    header = ["trial", *sweep.swept, "status", *metrics, "wall_time_s", "run_dir", "reason"]
    atomic_write(sweep.directory / "sweep.csv", csv_text([header] + [
        [r["trial"], *(_cell(r["overrides"].get(k)) for k in sweep.swept), r["status"],
         *(_cell(r["final_metrics"].get(m)) for m in metrics), _cell(r["wall_time_s"]), _cell(r["run_dir"]),
         _cell(r["reason"])] for r in data]))


def _number(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def sorted_outcomes(outcomes: list[Outcome], metric: str) -> list[Outcome]:
    """Best first by metric; trials without it (failed, not run) last, in sweep order."""
    scored = [o for o in outcomes if _number(o.final_metrics.get(metric)) is not None]
    scored.sort(key=lambda o: o.final_metrics[metric], reverse=higher_is_better(metric))
    chosen = {id(o) for o in scored}
    return scored + [o for o in outcomes if id(o) not in chosen]


def plot(sweep: Sweep, outcomes: list[Outcome], metric: str) -> Path | None:
    """sweep.png: the metric against each swept key (seeds only when nothing else is swept);
    every trial is a dot, the line joins the mean over repeats. None if nothing to plot."""
    points = [(o.trial.overrides, _number(o.final_metrics.get(metric))) for o in outcomes]
    points = [(ov, y) for ov, y in points if y is not None]
    keys = [k for k in sweep.swept if k != "seed"] or list(sweep.swept)
    if not points or not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        xs = [ov.get(key) for ov, _ in points]
        ys = [y for _, y in points]
        numeric = all(_number(x) is not None for x in xs)
        if numeric:
            pos = [float(x) for x in xs]
            if min(pos) > 0 and max(pos) / min(pos) >= 20:
                ax.set_xscale("log")
        else:  # categories (names, lists) in order of first appearance
            labels = list(dict.fromkeys(json.dumps(x) if not isinstance(x, str) else x for x in xs))
            pos = [labels.index(json.dumps(x) if not isinstance(x, str) else x) for x in xs]
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.scatter(pos, ys, s=22, alpha=0.7)
        means = {}
        for x, y in zip(pos, ys):
            means.setdefault(x, []).append(y)
        order = sorted(means)
        ax.plot(order, [sum(means[x]) / len(means[x]) for x in order], lw=1.2)
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{sweep.name}: {metric}")
    fig.tight_layout()
    path = sweep.directory / "sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def table(sweep: Sweep, outcomes: list[Outcome], metric: str):
    from rich.table import Table

    ordered = sorted_outcomes(outcomes, metric)
    others = [m for m in ("val_accuracy", "val_loss", "accuracy", "loss") if m != metric
              and any(m in o.final_metrics for o in outcomes)][:2]
    t = Table(title=for_console(f"sweep {sweep.name}: {len(outcomes)} trials, sorted by {metric}"),
              title_justify="left")
    t.add_column("trial")
    for key in sweep.swept:
        t.add_column(for_console(key.rsplit(".", 1)[-1]), justify="right")
    t.add_column("status")
    for m in (metric, *others):
        t.add_column(m, justify="right")
    t.add_column("wall s", justify="right")
    for o in ordered:
        status = o.status + (" (skipped)" if o.action == "skipped" else "")
        t.add_row(*(for_console(cell) for cell in (
            o.trial.name, *(fmt(o.trial.overrides.get(k)) for k in sweep.swept), status,
            *(fmt(o.final_metrics.get(m)) for m in (metric, *others)), fmt(o.wall_time_s, "time_s"))))
    return t
