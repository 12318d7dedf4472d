"""report.html: one self-contained page per run (config, metrics, curves, explain grids).

Everything is inlined (CSS, images as base64 data URIs) so the file can be mailed, archived
or opened offline; no script and no network request. No TensorFlow here.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from nnrun.results.format import fmt
from nnrun.errors import UsageError
from nnrun.rundir import CONFIG_YAML, RunDir, atomic_write, read_json

REPORT = "report.html"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#1d1d1f;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.sub{color:#666}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}th{background:#f5f5f7}
td:first-child,th:first-child{text-align:left}pre{background:#f5f5f7;padding:1em;overflow:auto;font-size:12px}
img{max-width:100%;border:1px solid #eee}.completed{color:#1a7f37}.failed,.interrupted{color:#cf222e}
.pruned{color:#9a6700}
figure{margin:1em 0}figcaption{color:#666}
"""


def _png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(png: bytes, caption: str) -> str:
    return (f'<figure><img src="{_png(png)}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _inside(run: RunDir, path: Path, skipped: list[str]) -> bytes | None:
    """A file of the run for the page; None (and a note in `skipped`) for a symbolic link, a
    file under a linked folder, or one too large: the page shows only what the run holds."""
    try:
        return run.read_file(path.relative_to(run.path))
    except UsageError as exc:
        skipped.append(str(exc))
    except OSError:
        pass
    return None


def _epoch_tables(rows: list[dict]) -> str:
    html = []
    epochs = [r for r in rows if r.get("split") == "train"]
    if epochs:
        cols = ["epoch"] + sorted({k for r in epochs for k in r} - {"epoch", "split", "step"})
        html.append("<h2>Per epoch</h2>" + _table(cols, [[r.get(c) for c in cols] for r in epochs]))
    evals = [r for r in rows if r.get("split") != "train"]
    if evals:
        cols = ["split", "checkpoint", "examples"]
        cols += sorted({k for r in evals for k in r} - set(cols))
        html.append("<h2>Evaluations</h2>" + _table(cols, [[r.get(c) for c in cols] for r in evals]))
    return "".join(html)


def _diagnostics(run: RunDir, skipped: list[str]) -> str:
    """Where the model fails, per split that training or `nnrun evaluate` diagnosed
    (diagnostics/<split>.json and its figures): per-class scores, calibration, confusion matrix,
    reliability diagram, the most confidently wrong images."""
    html = []
    for path in sorted((run.path / "diagnostics").glob("*.json")):
        summary = read_json(path, run.path)
        if not isinstance(summary, dict) or not isinstance(summary.get("per_class"), dict):
            continue
        split = path.stem
        html.append(f"<h3>{escape(split)}: {fmt(summary.get('examples'))} examples, accuracy "
                    f"{fmt(summary.get('accuracy'))}, expected calibration error {fmt(summary.get('calibration_error'))}"
                    " (15 bins)</h3>")
        rows = [[name, c.get("precision"), c.get("recall"), c.get("f1"), c.get("support")]
                for name, c in summary["per_class"].items() if isinstance(c, dict)]
        html.append(_table(["class", "precision", "recall", "F1", "support"], rows))
        for suffix, caption in (("confusion", "confusion matrix (colour: fraction of the true class)"),
                                ("reliability", "reliability diagram"), ("wrong", "most confidently wrong")):
            figure = path.with_name(f"{split}_{suffix}.png")
            png = _inside(run, figure, skipped) if figure.exists() or figure.is_symlink() else None
            if png:
                html.append(_figure(png, f"{split}: {caption}"))
    return "<h2>Where the model fails</h2>" + "".join(html) if html else ""


def render(run_dir: str | Path) -> str:
    """The report of a run directory as one HTML string."""
    run = RunDir.open(run_dir)
    record = run.read()
    status = str(record.get("status", "unknown"))
    title = f"{record.get('name', run.path.parent.name)} / {record.get('run_id', run.path.name)}"
    parts = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">{escape(str(run.path))} &middot; <span class="{escape(status)}">{escape(status)}</span>'
        + (f" &middot; {escape(str(record['reason']))}" if record.get("reason") else "") + "</p>",
    ]
    facts = [["started", record.get("started_at")], ["ended", record.get("ended_at")],
             ["wall time (s)", record.get("wall_time_s")], ["epochs", record.get("epochs_completed")],
             ["pruned at epoch", record.get("pruned_at_epoch")],
             ["seed", record.get("seed")], ["config hash", (record.get("config_hash") or "")[:12]],
             ["model parameters", (record.get("model") or {}).get("parameters")],
             ["device", (record.get("device") or {}).get("accelerator")],
             *[[f"{k} version", v] for k, v in (record.get("versions") or {}).items()]]
    parts.append("<h2>Run</h2>" + _table(["field", "value"], [f for f in facts if f[1] not in (None, "")]))
    final = record.get("final_metrics") or {}
    if final:
        parts.append("<h2>Final metrics</h2>" + _table(["metric", "value"], [[k, v] for k, v in final.items()]))
    skipped: list[str] = []
    parts.append(_diagnostics(run, skipped))
    plots = [(p, _inside(run, p, skipped)) for p in sorted(run.plots.glob("*.png"))] if run.plots.is_dir() else []
    if any(png for _, png in plots):
        parts.append("<h2>Learning curves</h2>" + "".join(_figure(png, p.stem.replace("_", " "))
                                                          for p, png in plots if png))
    parts.append(_epoch_tables(run.read_metrics()))
    grids = [(g, _inside(run, g, skipped)) for g in sorted((run.path / "explain").glob("*/grid.png"))]
    if any(png for _, png in grids):
        parts.append("<h2>Explanations</h2>")
        for grid, png in grids:
            if png is None:
                continue
            caption = grid.parent.name
            info = read_json(grid.parent / "manifest.json", run.path)
            if isinstance(info, dict):
                keep = {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))}
                caption += " — " + ", ".join(f"{k}: {fmt(v)}" for k, v in list(keep.items())[:8])
            parts.append(_figure(png, caption))
    export = run.path / "exported" / "export.json"
    if export.is_file() or export.is_symlink():
        text = _inside(run, export, skipped)
        if text is not None:
            parts.append("<h2>Exports</h2><pre>" + escape(text.decode("utf-8", errors="replace")) + "</pre>")
    config = _inside(run, run.path / CONFIG_YAML, skipped)
    if config is not None:
        parts.append("<h2>Config</h2><pre>" + escape(config.decode("utf-8", errors="replace")) + "</pre>")
    if skipped:
        parts.append("<h2>Not shown</h2><ul>" + "".join(f"<li>{escape(s)}</li>" for s in skipped) + "</ul>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(parts) + "\n</body></html>\n"
    )


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.html (atomically) and return its path."""
    path = Path(run_dir) / REPORT
    atomic_write(path, render(run_dir))
    return path


def report_finished_run(run_dir: str | Path) -> None:
    """report.html for a run that just ended (completed or pruned): a report that cannot be drawn
    must not fail the run it describes."""
    try:
        write_report(run_dir)
    except Exception:  # noqa: BLE001
        pass
