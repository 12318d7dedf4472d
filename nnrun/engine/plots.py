"""Learning-curve plot from metrics.jsonl rows."""

from __future__ import annotations

from pathlib import Path


def learning_curves(rows: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("split") == "train"]
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    metrics = sorted({k for r in rows for k, v in r.items() if not k.startswith("val_")
                      and k not in ("epoch", "step", "split", "epoch_time_s") and isinstance(v, (int, float))})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
    for ax, name in zip(axes[0], metrics):
        ax.plot(epochs, [r.get(name) for r in rows], marker="o", ms=3, label="train")
        if any(f"val_{name}" in r for r in rows):
            ax.plot(epochs, [r.get(f"val_{name}") for r in rows], marker="o", ms=3, label="val")
            ax.legend()
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
