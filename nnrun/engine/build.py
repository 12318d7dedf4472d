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
    return component.builder(params, data)


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

    if label_mode(cfg, data) == "sparse":
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    return [keras.metrics.CategoricalAccuracy(name="accuracy")]


def build_optimizer(cfg: RunConfig, num_train: int):
    opt = cfg.optimizer
    sched_component, sched_params = _params("schedule", opt.schedule.name, opt.schedule.params)
    steps = steps_per_epoch(num_train, cfg.data.batch_size)
    learning_rate = sched_component.builder(sched_params, opt.learning_rate, steps, cfg.train.epochs)
    component, params = _params("optimizer", opt.name, opt.params)
    return component.builder(params, learning_rate, weight_decay=opt.weight_decay, clipnorm=opt.clipnorm)


def compile_model(model, cfg: RunConfig, data: DataBundle) -> None:
    model.compile(
        optimizer=build_optimizer(cfg, len(data.split("train"))),
        loss=build_loss(cfg),
        metrics=build_metrics(cfg, data),
        jit_compile=cfg.train.jit_compile,
        steps_per_execution=cfg.train.steps_per_execution,
    )
