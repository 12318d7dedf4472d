"""Learning-rate schedules over the whole run (steps counted across all epochs)."""

from __future__ import annotations

from pydantic import Field

from nnrun.registry import NoParams, Params, register


class CosineParams(Params):
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of the peak")


class WarmupCosineParams(CosineParams):
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up from 0 to the peak (may be fractional)")


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
