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


def build_model(cfg: RunConfig, data: DataBundle):
    component, params = _params("model", cfg.model.name, cfg.model.params)
    return component.builder(params, input_shape=data.input_shape, num_classes=data.num_classes)


def build_loss(cfg: RunConfig):
    component, params = _params("loss", cfg.loss.name, cfg.loss.params)
    return component.builder(params)


def sparse_labels(cfg: RunConfig) -> bool:
    """Whether the loss wants integer labels (else the pipeline one-hot encodes them)."""
    _, params = _params("loss", cfg.loss.name, cfg.loss.params)
    return bool(getattr(params, "sparse", False))


def build_metrics(cfg: RunConfig):
    import keras

    if sparse_labels(cfg):
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    return [keras.metrics.CategoricalAccuracy(name="accuracy")]


def build_optimizer(cfg: RunConfig, num_train: int):
    opt = cfg.optimizer
    sched_component, sched_params = _params("schedule", opt.schedule.name, opt.schedule.params)
    steps = steps_per_epoch(num_train, cfg.data.batch_size)
    learning_rate = sched_component.builder(sched_params, opt.learning_rate, steps, cfg.train.epochs)
    component, params = _params("optimizer", opt.name, opt.params)
    return component.builder(params, learning_rate, weight_decay=opt.weight_decay, clipnorm=opt.clipnorm)


def compile_model(model, cfg: RunConfig, num_train: int) -> None:
    model.compile(
        optimizer=build_optimizer(cfg, num_train),
        loss=build_loss(cfg),
        metrics=build_metrics(cfg),
        jit_compile=cfg.train.jit_compile,
        steps_per_execution=cfg.train.steps_per_execution,
    )
