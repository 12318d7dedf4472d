"""Learning-rate schedules over the whole run (steps counted across all epochs, in batches: Keras
evaluates a schedule at the batch count, also with gradient accumulation). Each builder gets
the peak rate, the batches of an epoch and the horizon in epochs, and returns a rate or a Keras
LearningRateSchedule."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from nnrun.registry import NoParams, Params, register


class CosineParams(Params):
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of the peak")


class WarmupCosineParams(CosineParams):
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up from 0 to the peak (may be fractional)")


class StepParams(Params):
    step_epochs: float = Field(30.0, gt=0, description="multiply the lr by gamma every this many epochs")
    gamma: float = Field(0.1, gt=0, le=1, description="factor at each step")


class MultiStepParams(Params):
    milestones: list[float] = Field(description="epochs at which the lr is multiplied by gamma, increasing")
    gamma: float = Field(0.1, gt=0, le=1, description="factor at each milestone")

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value):
        if not value or any(b <= a for a, b in zip(value, value[1:])) or value[0] <= 0:
            raise ValueError("milestones must be one or more increasing epochs > 0")
        return value


class ExponentialParams(Params):
    gamma: float = Field(0.95, gt=0, le=1, description="lr factor per epoch, applied smoothly at every step")


class OneCycleParams(Params):
    pct_start: float = Field(0.3, gt=0, lt=1, description="fraction of the run spent warming up to the peak")
    div_factor: float = Field(25.0, ge=1, description="initial lr = peak / div_factor")
    final_div_factor: float = Field(1e4, ge=1, description="final lr = initial lr / final_div_factor")
    anneal: Literal["cos", "linear"] = Field("cos", description="shape of both phases")
    cycle_momentum: bool = Field(False, description="sgd only: momentum from max_momentum down to base_momentum "
                                 "while the lr rises, and back up while it falls (Smith 2018)")
    base_momentum: float = Field(0.85, ge=0, lt=1, description="momentum at the lr's peak")
    max_momentum: float = Field(0.95, ge=0, lt=1, description="momentum at the start and the end")


class PlateauParams(Params):
    monitor: str = Field("val_loss", description="metric to watch (one the run logs)")
    factor: float = Field(0.1, gt=0, lt=1, description="multiply the lr by this when the metric stops improving")
    patience: int = Field(10, ge=0, description="epochs without improvement before reducing")
    min_delta: float = Field(1e-4, ge=0, description="smaller changes do not count as improvement")
    cooldown: int = Field(0, ge=0, description="epochs after a reduction before counting again")
    min_lr: float = Field(0.0, ge=0, description="never reduce below this lr")
    mode: Literal["auto", "min", "max"] = Field("auto", description="auto: max for accuracies, min for losses")


@register("schedule", "constant", NoParams)
def constant(p: NoParams, base_lr: float, steps_per_epoch: int, epochs: int):
    """Constant learning rate."""
    return base_lr


@register("schedule", "cosine", CosineParams)
def cosine(p: CosineParams, base_lr: float, steps_per_epoch: int, epochs: int):
    """Cosine decay from the peak to min_lr_ratio * peak over the run."""
    import keras

    return keras.optimizers.schedules.CosineDecay(base_lr, max(1, steps_per_epoch * epochs), alpha=p.min_lr_ratio)


@register("schedule", "warmup_cosine", WarmupCosineParams)
def warmup_cosine(p: WarmupCosineParams, base_lr: float, steps_per_epoch: int, epochs: int):
    """Linear warm-up to the peak, then cosine decay over the remaining steps."""
    import keras

    total = max(1, steps_per_epoch * epochs)
    warmup = min(total - 1, int(round(p.warmup_epochs * steps_per_epoch)))
    return keras.optimizers.schedules.CosineDecay(
        0.0, total - warmup, alpha=p.min_lr_ratio, warmup_target=base_lr, warmup_steps=warmup
    )


@register("schedule", "step", StepParams)
def step(p: StepParams, base_lr: float, steps_per_epoch: int, epochs: int):
    """lr x gamma every step_epochs epochs (PyTorch StepLR)."""
    import keras

    return keras.optimizers.schedules.ExponentialDecay(base_lr, max(1, p.step_epochs * steps_per_epoch), p.gamma,
                                                       staircase=True)


@register("schedule", "multistep", MultiStepParams)
def multistep(p: MultiStepParams, base_lr: float, steps_per_epoch: int, epochs: int):
    """lr x gamma at each milestone epoch (PyTorch MultiStepLR)."""
    import keras

    boundaries = [int(round(m * steps_per_epoch)) for m in p.milestones]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, [base_lr * p.gamma ** i for i in range(len(boundaries) + 1)])


@register("schedule", "exponential", ExponentialParams)
def exponential(p: ExponentialParams, base_lr: float, steps_per_epoch: int, epochs: int):
    """lr x gamma per epoch, smoothly at every step."""
    import keras

    return keras.optimizers.schedules.ExponentialDecay(base_lr, max(1, steps_per_epoch), p.gamma)


@register("schedule", "one_cycle", OneCycleParams)
def one_cycle(p: OneCycleParams, base_lr: float, steps_per_epoch: int, epochs: int):
    """Smith's one-cycle: warm up to the peak, then anneal far below the start (PyTorch OneCycleLR)."""
    from nnrun.components.optim.schedule_hooks import OneCycle

    return OneCycle(base_lr, max(2, int(round(steps_per_epoch * epochs))), **p.model_dump())


@register("schedule", "plateau", PlateauParams)
def plateau(p: PlateauParams, base_lr: float, steps_per_epoch: int, epochs: int):
    """Reduce the lr when a metric stops improving (Keras ReduceLROnPlateau; its state is backed up)."""
    from nnrun.components.optim.schedule_hooks import Plateau

    return Plateau(base_lr, **p.model_dump())
