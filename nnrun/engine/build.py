"""Build data, model, loss, optimizer and metrics from a resolved config via the registry."""

from __future__ import annotations

from nnrun import registry
from nnrun.components.data.base import DataBundle
from nnrun.config import RunConfig
from nnrun.engine.pipeline import steps_per_epoch


def _params(kind: str, name: str, params: dict):
    component = registry.get(kind, name)
    return component, component.params.model_validate(params)


def build_data(cfg: RunConfig) -> DataBundle:
    component, params = _params("dataset", cfg.data.dataset, cfg.data.params)
    return component.builder(params)


def technique_context(cfg: RunConfig, data, run_dir=None, num_train: int | None = None):
    """What techniques may know about the run (shared by training, inference and the benchmark).
    `data` is a DataBundle, or inference's DataFacts with `num_train` given."""
    from nnrun.components.techniques.base import TechniqueContext

    if num_train is None:
        num_train = len(data.split("train"))
    return TechniqueContext(
        epochs=cfg.train.epochs, batch_size=cfg.data.batch_size,
        steps_per_epoch=steps_per_epoch(num_train, cfg.data.batch_size),
        image_size=(data.train_size or data.input_shape[0]) if len(data.input_shape) == 3 else None,
        stored_size=data.input_shape[0] if data.train_size else None,
        label_mode=label_mode(cfg, data), run_dir=run_dir,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps or 1,
    )


def build_techniques(cfg: RunConfig, ctx) -> list:
    """Technique objects in config order; each sees the others through ctx.techniques."""
    techniques = []
    for name, raw in cfg.train.techniques.items():
        component, params = _params("technique", name, raw)
        technique = component.builder(params, ctx)
        ctx.techniques[name] = technique
        techniques.append(technique)
    return techniques


def build_model(cfg: RunConfig, data: DataBundle, techniques=()):
    params = dict(cfg.model.params)
    for technique in techniques:
        params = technique.model_params(params)
    component, validated = _params("model", cfg.model.name, params)
    from nnrun.components.models.inputs import with_preprocessing

    return with_preprocessing(component.builder(validated, data), data)


def build_loss(cfg: RunConfig):
    component, params = _params("loss", cfg.loss.name, cfg.loss.params)
    return component.builder(params)


def label_mode(cfg: RunConfig, data: DataBundle) -> str:
    """How the pipeline hands labels to the loss: "onehot" (float, so label smoothing, mixup
    and focal losses share one path), "sparse" (integers, when the loss asks) or "raw"."""
    if data.task != "classification":
        return "raw"
    _, params = _params("loss", cfg.loss.name, cfg.loss.params)
    return "sparse" if getattr(params, "sparse", False) else "onehot"


def build_metrics(cfg: RunConfig, data: DataBundle):
    import keras

    if data.task == "pairs":  # per epoch at a fixed threshold; final val_pair_accuracy: engine/metrics.py
        from nnrun.components.custom_objects.pairs import PairAccuracy

        _, params = _params("loss", cfg.loss.name, cfg.loss.params)
        return [PairAccuracy(threshold=getattr(params, "margin", 1.0) / 2, name="half_margin_accuracy")]
    if label_mode(cfg, data) == "sparse":
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    return [keras.metrics.CategoricalAccuracy(name="accuracy")]


def build_optimizer(cfg: RunConfig, num_train: int, lr_scale: float = 1.0):
    opt = cfg.optimizer
    sched_component, sched_params = _params("schedule", opt.schedule.name, opt.schedule.params)
    accumulate = cfg.train.gradient_accumulation_steps
    steps = steps_per_epoch(num_train, cfg.data.batch_size)  # Keras evaluates schedules at the batch count,
    # also with gradient accumulation (optimizer._iterations), so horizons stay in batches
    horizon = opt.schedule.epochs or cfg.train.epochs  # kept by a resume that trains longer
    learning_rate = schedule = sched_component.builder(sched_params, opt.learning_rate, steps, horizon)
    if lr_scale != 1.0:
        if isinstance(learning_rate, float):
            learning_rate *= lr_scale
        else:
            from nnrun.components.optim.scaled import ScaledSchedule

            learning_rate = ScaledSchedule(learning_rate, lr_scale)
    component, params = _params("optimizer", opt.name, opt.params)
    optimizer = component.builder(params, learning_rate, weight_decay=opt.weight_decay, clipnorm=opt.clipnorm,
                                  gradient_accumulation_steps=accumulate)
    if hasattr(schedule, "attach"):  # one_cycle's momentum, plateau's backed-up state
        schedule.attach(optimizer)
    optimizer.nnrun_schedule = schedule  # the engine asks plateau for its epoch-end step
    return optimizer


def schedule_of(optimizer):
    """The schedule build_optimizer gave `optimizer` (through a LossScaleOptimizer too)."""
    return getattr(getattr(optimizer, "inner_optimizer", optimizer), "nnrun_schedule", None)


def compile_model(model, cfg: RunConfig, data: DataBundle, lr_scale: float = 1.0, techniques=()) -> None:
    import tensorflow as tf

    from nnrun.engine.distribute import lr_factor

    lr_scale *= lr_factor(cfg, tf.distribute.get_strategy())  # runtime.lr_scaling (called in strategy.scope())
    optimizer = build_optimizer(cfg, len(data.split("train")), lr_scale)
    for technique in techniques:
        optimizer = technique.configure_optimizer(optimizer, model)
    model.compile(
        optimizer=optimizer,
        loss=build_loss(cfg),
        metrics=build_metrics(cfg, data),
        jit_compile=cfg.train.jit_compile,
        steps_per_execution=cfg.train.steps_per_execution,
    )
