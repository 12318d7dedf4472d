"""The rich tables the commands print: a run's metrics, the component catalogue, the runs
table and a comparison. Data in, a Table out; no argument parsing here."""

from __future__ import annotations

import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from nnrun.safe_text import for_console


def metrics_table(title: str, values: dict) -> Table:
    """metric | value, floats at 4 decimals (`nnrun train`'s final metrics, `nnrun evaluate`).
    The title and the keys (class names in per-class metrics) are data: shown as written."""
    table = Table(title=for_console(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in values.items():
        table.add_row(for_console(key), f"{value:.4f}" if isinstance(value, float) else for_console(value))
    return table


def confusion_tables(summary: dict) -> list[Table]:
    """`nnrun evaluate`'s view of diagnostics/<split>.json: per-class precision / recall / F1 /
    support, and the confusion matrix counts (rows true, columns predicted; up to 20 classes)."""
    scores = Table(title=f"per class (calibration error {summary['calibration_error']:.4f}, 15 bins)")
    for col in ("class", "precision", "recall", "f1", "support"):
        scores.add_column(col, justify="left" if col == "class" else "right")
    for name, row in summary["per_class"].items():
        scores.add_row(for_console(name), *(f"{row[k]:.4f}" for k in ("precision", "recall", "f1")),
                       str(row["support"]))
    tables = [scores]
    names = summary["class_names"]
    if len(names) <= 20:
        matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
        matrix.add_column("true")
        for name in names:
            matrix.add_column(for_console(name), justify="right")
        for name, counts in zip(names, summary["confusion_matrix"]):
            matrix.add_row(for_console(name), *(str(c) for c in counts))
        tables.append(matrix)
    return tables


def component_tables(rows: list[dict]) -> list[Table]:
    """One table per component (registry.describe rows): parameter, type, default, description."""
    tables = []
    for row in rows:
        table = Table(title=f"[bold]{row['kind']} {row['name']}[/bold]: {escape(row['doc'])}", title_justify="left",
                      show_edge=False, expand=False)
        for col in ("parameter", "type", "default", "description"):
            table.add_column(col, overflow="fold")
        for p in row["params"]:
            default = "(required)" if p["required"] else json.dumps(p["default"], default=str)
            table.add_row(*(escape(str(cell)) for cell in (p["name"], p["type"], default, p["doc"])))
        if not row["params"]:
            table.add_row("-", "", "", "no parameters")
        tables.append(table)
    return tables


def runs_table(records: list[dict], root: Path, sort: str | None) -> Table:
    """`nnrun runs`: one row per run; a --sort key that is not a column gets one."""
    from nnrun.results.format import fmt as show
    from nnrun.results.runs import value_of

    table = Table()
    extra = [sort] if sort and sort not in ("val_accuracy", "val_loss", "accuracy") else []
    tracked = ["mlflow run"] if any((r.get("mlflow") or {}).get("run_id") for r in records) else []
    for col in ("run", "status", "epochs", "val_accuracy", "val_loss", "accuracy", *extra, "wall s", *tracked):
        table.add_column(for_console(col), justify="left" if col in ("run", "status") else "right")
    for r in records:
        fm = r.get("final_metrics") or {}
        fmt = lambda v: show(float(v)) if isinstance(v, (int, float)) else "-"  # noqa: E731 - as --filter compares
        table.add_row(*(for_console(cell) for cell in (
            str(Path(r["path"]).relative_to(root)) if Path(r["path"]).is_relative_to(root) else r["path"],
            str(r.get("status")), str(r.get("epochs_completed", "-")),
            fmt(fm.get("val_accuracy")), fmt(fm.get("val_loss")), fmt(fm.get("accuracy")),
            *(show(value_of(r, k)) for k in extra),
            f"{r['wall_time_s']:.1f}" if isinstance(r.get("wall_time_s"), (int, float)) else "-",
            *([str((r.get("mlflow") or {}).get("run_id") or "-")] if tracked else []),
        )))
    return table
