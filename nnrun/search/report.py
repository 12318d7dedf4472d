"""A search's summary, from the study (so every worker, on any host, sees every trial):
sweep.jsonl / sweep.csv (one row per trial), search.json (the study, its best trial,
parameter importances, epochs trained), history.png (optimisation history and per-epoch
curves), importances.png, report.html, and the table printed at the end. No TensorFlow."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from nnrun.rundir import atomic_write
from nnrun.safe_text import csv_text, for_console
from nnrun.results.format import fmt
from nnrun.search.study import Study, outcome, result, worker_of
from nnrun.sweep.summary import _cell, _number

REPORT = "report.html"
ORDER = ("completed", "pruned", "failed", "requeued", "running", "waiting")


def collect(study: Study, metric: str | None = None) -> dict:
    """Everything the summary shows, read from the study."""
    plan = study.plan
    trials = study.trials()
    replaced = {t.user_attrs.get("nnrun_replaces") for t in trials} - {None}
    by_key = {p.key: p for p in plan.params}
    rows = []
    for t in trials:
        ua, res = t.user_attrs, result(t)
        status = outcome(t, replaced)
        steps = sorted(t.intermediate_values)
        value = t.value if t.value is not None else (t.intermediate_values[steps[-1]] if steps else None)
        reason = res.get("reason")
        if status == "requeued" and not reason:
            reason = "its worker stopped (no heartbeat)"
        elif status == "failed" and not reason:
            reason = "its worker stopped (no heartbeat); not re-queued (retries spent)"
        rows.append({
            "trial": t.number, "name": ua.get("nnrun_name"), "status": status,
            "params": {k: (by_key[k].decode(v) if k in by_key else v) for k, v in t.params.items()},
            "value": value, "epochs": res.get("epochs", steps[-1] if steps else 0),
            "curve": [[s, t.intermediate_values[s]] for s in steps],
            "final_metrics": res.get("final_metrics") or {}, "wall_time_s": res.get("wall_time_s"),
            "trial_s": res.get("seconds"),  # the trial in its worker: config, model build, training, result
            "run_dir": res.get("run_dir"), "reason": reason, "replaces": ua.get("nnrun_replaces"),
            "host": worker_of(t).get("host"),
        })
    maximize = plan.direction == "maximize"
    completed = [r for r in rows if r["status"] == "completed" and _number(r["value"]) is not None]
    best = (max if maximize else min)(completed, key=lambda r: r["value"]) if completed else None
    counts = {k: sum(r["status"] == k for r in rows) for k in ORDER}
    return {
        "study": study.name, "storage": study.storage.shown, "sampler": plan.spec.sampler,
        "pruner": plan.spec.pruner.model_dump(), "metric": plan.metric, "direction": plan.direction,
        "budget": plan.trials, "counts": counts, "done": counts["running"] == counts["waiting"] == 0,
        "total_epochs": sum(int(r["epochs"] or 0) for r in rows),
        "best": None if best is None else {k: best[k] for k in ("trial", "name", "value", "params", "epochs",
                                                                  "run_dir", "final_metrics")},
        "importances": importances(study) if len(completed) >= 2 else None,
        "params": {p.key: p.describe() for p in plan.params}, "fingerprint": plan.fingerprint,
        "rows": rows, "sort_metric": metric or plan.metric,
    }


def importances(study: Study) -> dict | None:
    """Optuna's parameter importances (PED-ANOVA by default) over the completed trials; None if
    it cannot tell (too few trials, or every trial the same)."""
    import warnings

    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study.study)
    except Exception:  # noqa: BLE001 - an importance that cannot be computed is left out
        return None
    return {k: float(v) for k, v in found.items()} or None


def sorted_rows(info: dict) -> list[dict]:
    """Best first by the sort metric (the study's value, or a final metric), by outcome."""
    metric = info["sort_metric"]
    maximize = info["direction"] == "maximize" if metric == info["metric"] else None
    if maximize is None:
        from nnrun.engine.metrics import higher_is_better

        maximize = higher_is_better(metric)

    def score(r):
        v = r["value"] if metric == info["metric"] else (r["final_metrics"] or {}).get(metric)
        return _number(v)

    groups = []
    for status in ORDER:
        group = [r for r in info["rows"] if r["status"] == status]
        scored = sorted((r for r in group if score(r) is not None), key=score, reverse=maximize)
        groups += scored + [r for r in group if score(r) is None]
    return groups


def write(directory: Path, info: dict, swept: list[str], sections: list[str] = ()) -> None:
    """sweep.jsonl, sweep.csv, search.json, history.png, importances.png, report.html (with
    `sections` of HTML after the summary, e.g. an ablation's)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = info["rows"]
    atomic_write(directory / "sweep.jsonl", "".join(json.dumps({k: v for k, v in r.items() if k != "curve"},
                                                               default=str) + "\n" for r in rows))
    metrics = sorted({k for r in rows for k in r["final_metrics"]})
    header = ["trial", "name", *swept, "status", info["metric"] + " (study)", "epochs", *metrics,
              "wall_time_s", "trial_s", "run_dir", "reason"]
    atomic_write(directory / "sweep.csv", csv_text([header] + [
        [r["trial"], _cell(r["name"]), *(_cell(r["params"].get(k)) for k in swept), r["status"], _cell(r["value"]),
         _cell(r["epochs"]), *(_cell(r["final_metrics"].get(m)) for m in metrics), _cell(r["wall_time_s"]),
         _cell(r["trial_s"]), _cell(r["run_dir"]), _cell(r["reason"])] for r in rows]))
    summary = {k: v for k, v in info.items() if k not in ("rows", "sort_metric")}
    atomic_write(directory / "search.json", json.dumps(summary, indent=2, default=str) + "\n")
    figures = plot_history(directory, info), plot_importances(directory, info)
    atomic_write(directory / REPORT, render(info, [f for f in figures if f is not None], sections))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(directory: Path, info: dict) -> Path | None:
    """history.png: each trial's value by trial number with the best so far (left), and every
    trial's per-epoch metric, pruned ones in orange (right)."""
    rows = sorted(info["rows"], key=lambda r: r["trial"])
    if not any(r["curve"] for r in rows):
        return None
    plt = _plt()
    maximize = info["direction"] == "maximize"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for status, color, marker in (("completed", "tab:blue", "o"), ("pruned", "tab:orange", "x"),
                                  ("failed", "tab:red", "v")):
        pts = [(r["trial"], r["value"]) for r in rows if r["status"] == status and _number(r["value"]) is not None]
        if pts:
            left.scatter(*zip(*pts), color=color, marker=marker, s=28, label=status, zorder=3)
    best, xs, ys = None, [], []
    for r in rows:
        if r["status"] == "completed" and _number(r["value"]) is not None:
            if best is None or (r["value"] > best if maximize else r["value"] < best):
                best = r["value"]
        if best is not None:
            xs.append(r["trial"])
            ys.append(best)
    if xs:
        left.step(xs, ys, where="post", color="tab:green", lw=1.5, label="best so far")
    from matplotlib.ticker import MaxNLocator

    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("trial")
    left.set_ylabel(info["metric"])
    left.set_title("optimisation history")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    best_trial = (info["best"] or {}).get("trial")
    for r in rows:
        if not r["curve"]:
            continue
        epochs, values = zip(*r["curve"])
        if r["trial"] == best_trial:
            right.plot(epochs, values, color="tab:green", lw=2.2, zorder=4, label=f"best (trial {best_trial})")
        elif r["status"] == "pruned":
            right.plot(epochs, values, color="tab:orange", lw=1, alpha=0.8, marker="x", ms=4)
        else:
            right.plot(epochs, values, color="tab:blue" if r["status"] == "completed" else "tab:gray", lw=1,
                       alpha=0.6)
    right.set_xlabel("epoch")
    right.set_ylabel(info["metric"])
    right.set_title(f"per-epoch {info['metric']} (orange: pruned)")
    right.grid(alpha=0.3)
    if best_trial is not None:
        right.legend(fontsize=8)
    fig.suptitle(f"search {info['study']}: {info['sampler']}, pruner {info['pruner']['name']}")
    fig.tight_layout()
    path = directory / "history.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_importances(directory: Path, info: dict) -> Path | None:
    found = info.get("importances")
    path = directory / "importances.png"
    if not found:
        path.unlink(missing_ok=True)  # an earlier, now stale figure
        return None
    plt = _plt()
    keys = list(found)[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.45 * len(keys)))
    ax.barh(keys, [found[k] for k in keys], color="tab:blue")
    for i, k in enumerate(keys):
        ax.text(found[k], i, f" {found[k]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, max(found.values()) * 1.15))
    ax.set_xlabel(f"importance for {info['metric']} (Optuna, PED-ANOVA)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def counts_text(info: dict) -> str:
    c = info["counts"]
    parts = [f"{c[k]} {k}" for k in ORDER if c[k]]
    return f"{sum(c[k] for k in ('completed', 'pruned', 'failed'))}/{info['budget']} trials ended (" + \
        ", ".join(parts) + ")"


def best_text(info: dict) -> str:
    best = info["best"]
    if best is None:
        return "no completed trial"
    params = ", ".join(f"{k}={fmt(v)}" for k, v in best["params"].items())
    return f"best trial {best['trial']}: {info['metric']} {fmt(best['value'])} ({params})"


def table(info: dict, swept: list[str]):
    from rich.table import Table

    metric = info["sort_metric"]
    t = Table(title=for_console(f"search {info['study']}: {counts_text(info)}; {info['total_epochs']} epochs "
                                f"trained; {best_text(info)}"), title_justify="left")
    t.add_column("trial", justify="right")
    for key in swept:
        t.add_column(for_console(key.rsplit(".", 1)[-1]), justify="right")
    t.add_column("status")
    t.add_column(metric, justify="right")
    t.add_column("epochs", justify="right")
    t.add_column("wall s", justify="right")
    best = (info["best"] or {}).get("trial")
    for r in sorted_rows(info):
        value = r["value"] if metric == info["metric"] else r["final_metrics"].get(metric)
        t.add_row(*(for_console(cell) for cell in (
            f"{r['trial']}{' *' if r['trial'] == best else ''}", *(fmt(r["params"].get(k)) for k in swept),
            r["status"], fmt(value), fmt(r["epochs"]), fmt(r["wall_time_s"], "time_s"))))
    return t


def render(info: dict, figures: list[Path], sections: list[str] = ()) -> str:
    from nnrun.results.report import _CSS, _figure, _table

    title = f"search {info['study']}"
    best = info["best"]
    facts = [["study", info["study"]], ["storage", info["storage"]], ["sampler", info["sampler"]],
             ["pruner", ", ".join(f"{k} {v}" for k, v in info["pruner"].items())],
             ["metric", f"{info['metric']} ({info['direction']})"], ["budget", info["budget"]],
             ["trials", counts_text(info)], ["epochs trained", info["total_epochs"]]]
    parts = [f"<h1>{escape(title)}</h1>", f'<p class="sub">{escape(best_text(info))}</p>',
             "<h2>Study</h2>" + _table(["field", "value"], facts)]
    if best is not None:
        rows = [["trial", best["trial"]], [info["metric"], best["value"]], ["epochs", best["epochs"]],
                ["run directory", best["run_dir"]], *[[k, json.dumps(v) if isinstance(v, list) else v]
                                                      for k, v in best["params"].items()],
                *[[k, v] for k, v in (best["final_metrics"] or {}).items()]]
        parts.append("<h2>Best trial</h2>" + _table(["", "value"], rows))
    parts.extend(sections)
    if info.get("importances"):
        parts.append("<h2>Parameter importances</h2>" + _table(["parameter", "importance"],
                                                                [[k, v] for k, v in info["importances"].items()]))
    if figures:
        parts.append("<h2>Figures</h2>" + "".join(_figure(f.read_bytes(), f.stem) for f in figures))
    keys = list(info["params"])
    header = ["trial", *[k.rsplit(".", 1)[-1] for k in keys], "status", info["metric"], "epochs", "wall s", "reason"]
    body = [[r["trial"], *[json.dumps(r["params"].get(k)) if isinstance(r["params"].get(k), list)
                           else r["params"].get(k) for k in keys], r["status"], r["value"], r["epochs"],
             r["wall_time_s"], r["reason"] or ""] for r in sorted_rows(info)]
    parts.append("<h2>Trials</h2>" + _table(header, body))
    parts.append("<h2>Search space</h2><pre>" + escape(json.dumps(info["params"], indent=2)) + "</pre>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
