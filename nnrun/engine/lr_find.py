"""`nnrun lr-find`: the learning-rate range test (Smith 2017; fastai's `lr_find`).

The config's model is trained from its initial weights on the config's training batches (its
techniques' transforms included) for up to `steps` batches while the learning rate rises
exponentially from `start` to `end`; the loss of each batch is recorded and smoothed with an
exponential moving average (beta 0.98, bias-corrected, as fastai). The test stops early when
the smoothed loss exceeds 4 x its minimum. The suggestion is the rate at the steepest descent of
the smoothed loss against log(lr) (fastai's "steep" rule, on a windowed slope) among the rates
at least 10x below where the loss bottoms out; the rate at the minimum / 10 is recorded too. Nothing trains for real: the results go to RUNS_ROOT/lr-find/<id>/ (lr_find.json,
lr_find.png), never to a run directory.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np

from nnrun.config import RunConfig, config_hash
from nnrun.errors import ConfigError
from nnrun.rundir import atomic_write

BETA = 0.98
DIVERGED = 4.0  # stop once the smoothed loss exceeds this x its minimum


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """fastai's smoothing: an exponential moving average, divided by 1 - beta^(i + 1)."""
    out, average = [], 0.0
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** (i + 1)))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> dict:
    """Steepest descent of the smoothed loss against log10(lr), among the rates at least 10x
    below the one where the loss bottoms out (closer to it, training is at the edge of diverging,
    and the last drop before the blow-up is often the steepest). The slope at a point is a
    least-squares line over a window of a tenth of the points (a point-to-point gradient follows
    the batch noise); the first points, where the average has not settled, are left out. Also
    recorded: the rate at the minimum, and that / 10 (the other common rule)."""
    x = np.log10(np.asarray(lrs, np.float64))
    y = np.asarray(smoothed, np.float64)
    lowest = int(np.argmin(y))
    half = max(2, len(x) // 20)
    first = len(x) // 10
    candidates = [i for i in range(first, lowest + 1) if x[i] <= x[lowest] - 1] or [lowest]
    slopes = [np.polyfit(x[max(0, i - half):i + half + 1], y[max(0, i - half):i + half + 1], 1)[0]
              for i in candidates]
    steepest = candidates[int(np.argmin(slopes))]
    minimum = float(lrs[lowest])
    return {"suggested_lr": float(lrs[steepest]),
            "rule": "steepest descent of the smoothed loss, at rates 10x or more below its minimum",
            "min_loss_lr": minimum, "min_loss_lr_div_10": minimum / 10}


class _RisingRate:
    """lr(step) = start * (end / start) ** (step / (steps - 1))."""

    def __init__(self, start: float, end: float, steps: int):
        self.start, self.ratio, self.steps = start, end / start, steps

    def at(self, step: int) -> float:
        return self.start * self.ratio ** (step / max(1, self.steps - 1))


def lr_find(cfg: RunConfig, start: float = 1e-7, end: float = 10.0, steps: int = 100, say=print) -> dict:
    """Run the range test; returns the result (with its `directory`)."""
    if not 0 < start < end:
        raise ConfigError(f"--start {start:g} and --end {end:g}: need 0 < start < end")
    if steps < 10:
        raise ConfigError(f"--steps {steps}: at least 10")
    from nnrun.engine import build, pipeline
    from nnrun.engine.prepare import prepare

    p = prepare(cfg)
    # Compiled again with a plain rate (a variable it can set at every step) in place of the
    # config's schedule; the optimizer, its parameters and the techniques' settings stay.
    constant = cfg.optimizer.model_copy(update={"learning_rate": start, "schedule": cfg.optimizer.schedule.model_copy(
        update={"name": "constant", "params": {}})})
    with p.strategy.scope():
        build.compile_model(p.model, cfg.model_copy(update={"optimizer": constant}), p.data, techniques=p.techniques)
    rate = _RisingRate(start, end, steps)
    epochs = math.ceil(steps / p.steps)
    ds = pipeline.train_dataset(p.data.split("train"), batch_size=cfg.data.batch_size, seed=cfg.seed,
                                num_classes=p.data.num_classes, label_mode=p.labels, first_epoch=0, last_epoch=epochs,
                                techniques=p.techniques)
    for technique in p.techniques:
        technique.before_segment(p.model, cfg.train.epochs)  # the whole model trains (finetune: unfrozen)
    lrs, losses = [], []
    best = math.inf
    for step, (x, y) in enumerate(ds.take(steps)):
        lr = rate.at(step)
        p.model.optimizer.learning_rate = lr
        loss = float(np.asarray(p.model.train_on_batch(x, y, return_dict=True)["loss"]))
        if not math.isfinite(loss):
            break
        lrs.append(lr)
        losses.append(loss)
        smoothed = smooth(losses)[-1]
        best = min(best, smoothed)
        if step > 10 and smoothed > DIVERGED * best:
            break
    if len(losses) < 10:
        raise ConfigError(f"the loss was not finite after {len(losses)} steps from lr {start:g}; lower --start")
    smoothed = smooth(losses)
    result = {"config": cfg.name, "start": start, "end": end, "steps_run": len(losses), "lrs": lrs,
              "losses": losses, "smoothed": smoothed, **suggest(lrs, smoothed)}
    directory = _directory(cfg)
    atomic_write(directory / "lr_find.json", json.dumps(result, indent=2) + "\n")
    _plot(directory / "lr_find.png", result)
    result["directory"] = str(directory)
    return result


def _directory(cfg: RunConfig) -> Path:
    """RUNS_ROOT/lr-find/<timestamp>-<hash>, never reused."""
    parent = Path(cfg.runtime.runs_root) / "lr-find"
    parent.mkdir(parents=True, exist_ok=True)
    stamp = f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{config_hash(cfg)[:6]}"
    for n in range(1, 1000):
        path = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"no free directory name under {parent}")


def _plot(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(result["lrs"], result["losses"], alpha=0.3, label="loss")
    ax.plot(result["lrs"], result["smoothed"], label="smoothed")
    ax.axvline(result["suggested_lr"], color="tab:red", ls="--",
               label=f"suggested {result['suggested_lr']:.2g} (steepest)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    low, high = min(result["smoothed"]), result["smoothed"][0]
    ax.set_ylim(low - 0.1 * abs(high - low), high + 0.5 * abs(high - low) + 1e-9)
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(f"lr-find: {result['config']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
