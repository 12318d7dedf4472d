"""`ema`: an exponential moving average of the weights, which validation, checkpoints and every
command after training (evaluate, explain, predict, export) use.

Written here rather than with Keras' `use_ema` optimizer option, which is wrong for us in four
ways: it averages only trainable variables (timm's ModelEma also averages BatchNorm's moving
statistics, which the averaged weights need), it updates on every batch even between gradient
accumulation steps, it has no warm-up, and `fit` ends by overwriting the weights with the
average (`finalize_variable_values`), so a run split into several `fit` calls (resume, phases)
would continue from averaged weights.

How it works: the averages are optimizer variables (created beside the optimizer's own slots
when it is built, initialised to the weights, after `init_from`), so the backup saves them and a
killed run resumes bit-identically. After each optimizer update the average moves towards the
weights, in the same compiled step: ema = d * ema + (1 - d) * w. For validation and the epoch's
checkpoints the engine swaps the averages in (an exact exchange of values) and swaps the
training weights back before the backup, so training itself never sees the average.

Warm-up (timm's ModelEmaV3): d_t = min(decay, 1 - (1 + t) ** -warmup_power) at optimizer step t,
so early averages are not dominated by the random initial weights.
"""

from __future__ import annotations

from pydantic import Field

from nnrun.components.techniques.base import Technique
from nnrun.registry import Params, register


class EMAParams(Params):
    decay: float = Field(0.999, gt=0, lt=1, description="weight of the old average at each optimizer step")
    warmup: bool = Field(True, description="ramp the decay up as 1 - (1 + step) ** -warmup_power (timm's ModelEmaV3)")
    warmup_power: float = Field(0.75, gt=0, le=1, description="warm-up speed: 2/3 for long runs, 3/4 for short ones (timm)")


def decay_at(p: EMAParams, step):
    """The decay used at optimizer step `step` (1-based; a float or a tensor)."""
    from keras import ops

    if not p.warmup:
        return ops.convert_to_tensor(p.decay, "float32")
    step = ops.cast(step, "float32")
    return ops.minimum(p.decay, 1.0 - ops.power(1.0 + step, -p.warmup_power))


def averaged(model) -> list:
    """The model variables that have an average: every floating-point one (weights and BatchNorm
    statistics; not seed-generator states)."""
    return [v for v in model.weights if "float" in str(v.dtype)]


class EMA(Technique):
    name = "ema"

    def __init__(self, p: EMAParams, ctx):
        self.p = p
        self.accumulate = max(1, ctx.gradient_accumulation_steps)
        self.sources: list = []  # the averaged model variables, in a fixed order (see configure_optimizer)
        self.averages: list = []
        self.swapped = False

    def record(self) -> dict:
        return self.p.model_dump()

    def epoch_state(self, epoch: int) -> dict:
        return {"eval_weights": "ema"}

    def configure_optimizer(self, optimizer, model):
        """Create the averages when the optimizer is built, and update them after each step."""
        import keras

        # Fixed now: model.weights reorders when a layer's trainable flag changes (finetune).
        self.sources, self.averages, self.swapped = averaged(model), [], False
        # The averages start as the weights as they are now (after init_from), given as
        # initializers: Keras builds the optimizer in a stateless scope (_symbolic_build), where
        # an assign is dropped and a variable's initial value is computed later.
        start = [keras.ops.convert_to_numpy(v) for v in self.sources]
        build, apply = optimizer.build, optimizer.apply

        def build_with_averages(variables):
            build(variables)
            self.averages = [optimizer.add_variable_from_reference(v, name="ema", initializer=_constant(value))
                             for v, value in zip(self.sources, start)]

        def apply_and_average(grads, trainable_variables=None):
            apply(grads, trainable_variables)
            self._update(optimizer)

        optimizer.build, optimizer.apply = build_with_averages, apply_and_average
        return optimizer

    def _update(self, optimizer) -> None:
        from keras import ops

        raw_steps = optimizer._iterations  # batches; an update happens every `accumulate` of them
        d = decay_at(self.p, optimizer.iterations)
        updated = ops.equal(ops.mod(raw_steps, self.accumulate), 0)
        for average, v in zip(self.averages, self.sources):
            value = ops.cast(v, average.dtype)
            new = ops.cast(d, average.dtype) * average + (1 - ops.cast(d, average.dtype)) * value
            average.assign(ops.where(updated, new, average))

    def _swap(self) -> None:
        for average, v in zip(self.averages, self.sources):
            held = ops_copy(v)
            v.assign(average)
            average.assign(held)

    def use_eval_weights(self, model) -> None:
        if self.averages and not self.swapped:
            self._swap()
            self.swapped = True

    def use_train_weights(self, model) -> None:
        if self.swapped:
            self._swap()
            self.swapped = False


def _constant(value):
    """An initializer (shape, dtype) -> `value`."""
    from keras import ops

    return lambda shape, dtype=None: ops.cast(ops.convert_to_tensor(value), dtype or value.dtype)


def ops_copy(variable):
    """The variable's current value as a tensor of its own (not a view that `assign` changes)."""
    from keras import ops

    return ops.copy(ops.convert_to_tensor(variable))


@register("technique", "ema", EMAParams)
def build(p: EMAParams, ctx) -> EMA:
    """Exponential moving average of the weights (BatchNorm statistics included) for validation, checkpoints and inference."""
    return EMA(p, ctx)
