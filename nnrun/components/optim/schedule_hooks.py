"""Schedules that need more than a step count: one-cycle (it also sets SGD's momentum at every
step) and plateau (it follows a metric, and its state is backed up). Both are Keras
LearningRateSchedules; `attach(optimizer)` gives them what they need from the optimizer, and
build_optimizer calls it."""

from __future__ import annotations

import math

import keras
from keras import ops


def _anneal(kind: str, start, end, pct):
    """From `start` (pct 0) to `end` (pct 1): half a cosine, or a line."""
    if kind == "cos":
        return end + (start - end) / 2.0 * (1.0 + ops.cos(math.pi * pct))
    return start + (end - start) * pct


@keras.saving.register_keras_serializable(package="nnrun")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """PyTorch's OneCycleLR (two phases): from peak / div_factor up to the peak over the first
    pct_start of the steps, then down to that start / final_div_factor. Step 0 is the first
    update, as Keras evaluates the schedule at the optimizer's step count before it increments."""

    def __init__(self, peak, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, anneal="cos",
                 cycle_momentum=False, base_momentum=0.85, max_momentum=0.95):
        self.peak, self.total_steps, self.pct_start = float(peak), int(total_steps), float(pct_start)
        self.div_factor, self.final_div_factor, self.anneal = float(div_factor), float(final_div_factor), anneal
        self.cycle_momentum, self.base_momentum, self.max_momentum = cycle_momentum, base_momentum, max_momentum
        self.initial = self.peak / self.div_factor
        self.final = self.initial / self.final_div_factor
        self.warm_end = max(1.0, self.pct_start * self.total_steps - 1)  # the step at the peak

    def _phase(self, step, rise, fall):
        """(start, end) pairs of the two phases -> the value at `step`."""
        step = ops.cast(step, "float32")
        up = _anneal(self.anneal, rise[0], rise[1], ops.minimum(step / self.warm_end, 1.0))
        span = max(1.0, self.total_steps - 1 - self.warm_end)
        down = _anneal(self.anneal, fall[0], fall[1], ops.clip((step - self.warm_end) / span, 0.0, 1.0))
        return ops.where(step <= self.warm_end, up, down)

    def __call__(self, step):
        return self._phase(step, (self.initial, self.peak), (self.peak, self.final))

    def momentum(self, step):
        return self._phase(step, (self.max_momentum, self.base_momentum), (self.base_momentum, self.max_momentum))

    def attach(self, optimizer) -> None:
        """With cycle_momentum, SGD's momentum follows the cycle. Keras' SGD.update_step tests
        `self.momentum != 0` in Python, so a tensor cannot stand in for it: this is its update
        (m = m * momentum - lr * g; w += m, or the Nesterov step) with the step's momentum."""
        if not self.cycle_momentum:
            return

        def cycled_update_step(gradient, variable, learning_rate):
            learning_rate = ops.cast(learning_rate, variable.dtype)
            gradient = ops.cast(gradient, variable.dtype)
            # The batch count, where Keras evaluates the lr schedule (iterations // N with accumulation).
            momentum = ops.cast(self.momentum(optimizer._iterations), variable.dtype)
            m = optimizer.momentums[optimizer._get_variable_index(variable)]
            optimizer.assign(m, ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate)))
            if optimizer.nesterov:
                optimizer.assign_add(variable, ops.subtract(ops.multiply(m, momentum),
                                                            ops.multiply(gradient, learning_rate)))
            else:
                optimizer.assign_add(variable, m)

        optimizer.update_step = cycled_update_step

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor, "anneal": self.anneal,
                "cycle_momentum": self.cycle_momentum, "base_momentum": self.base_momentum,
                "max_momentum": self.max_momentum}


@keras.saving.register_keras_serializable(package="nnrun")
class Plateau(keras.optimizers.schedules.LearningRateSchedule):
    """Keras ReduceLROnPlateau's rule as a schedule: the rate is peak x a factor that `epoch_end`
    lowers when the monitored metric has not improved for `patience` epochs. The factor, the best
    value, the wait and the cooldown are optimizer variables (created when it is built), so the
    backup holds them and a resumed run reduces exactly when an uninterrupted one does (Keras'
    callback keeps them in Python attributes, which a resume loses)."""

    def __init__(self, peak, monitor="val_loss", factor=0.1, patience=10, min_delta=1e-4, cooldown=0, min_lr=0.0,
                 mode="auto"):
        self.peak, self.monitor, self.factor, self.patience = float(peak), monitor, float(factor), int(patience)
        self.min_delta, self.cooldown, self.min_lr, self.mode = float(min_delta), int(cooldown), float(min_lr), mode
        self.state = None  # {"scale", "best", "wait", "cooldown"}: optimizer variables once attached
        self.higher = mode == "max"  # mode auto: the engine says which way the metric improves

    def __call__(self, step):
        return self.peak if self.state is None else self.peak * self.state["scale"]

    def attach(self, optimizer) -> None:
        build = optimizer.build

        def build_with_state(variables):
            build(variables)
            start = {"scale": 1.0, "best": -math.inf if self.higher else math.inf, "wait": 0.0, "cooldown": 0.0}
            self.state = {k: optimizer.add_variable((), initializer=keras.initializers.Constant(v), dtype="float32",
                                                    name=f"plateau_{k}") for k, v in start.items()}

        optimizer.build = build_with_state

    def set_direction(self, higher_is_better: bool) -> None:
        """For mode auto: the engine knows which way the monitored metric improves."""
        if self.mode == "auto":
            self.higher = higher_is_better

    def epoch_end(self, logs: dict) -> None:
        """Keras ReduceLROnPlateau.on_epoch_end, on the backed-up state."""
        current = logs.get(self.monitor)
        if current is None or self.state is None or math.isnan(float(current)):
            return
        s = {k: float(v.numpy()) for k, v in self.state.items()}
        improved = current > s["best"] + self.min_delta if self.higher else current < s["best"] - self.min_delta
        if s["cooldown"] > 0:
            s["cooldown"] -= 1
            s["wait"] = 0
        if improved:
            s["best"], s["wait"] = float(current), 0
        elif s["cooldown"] <= 0:
            s["wait"] += 1
            if s["wait"] >= self.patience:
                lr = self.peak * s["scale"]
                if lr > self.min_lr:
                    s["scale"] = max(lr * self.factor, self.min_lr) / self.peak
                    s["cooldown"], s["wait"] = self.cooldown, 0
        for k, v in s.items():
            self.state[k].assign(v)

    def get_config(self):
        return {"peak": self.peak, "monitor": self.monitor, "factor": self.factor, "patience": self.patience,
                "min_delta": self.min_delta, "cooldown": self.cooldown, "min_lr": self.min_lr, "mode": self.mode}
