"""`finetune`: train the new classifier head alone first, then the whole model.

- During the first `freeze_epochs` every backbone layer has `trainable = False` (in Keras 3 that
  also runs BatchNormalization in inference mode) and the head (the `head_dropout` and `logits`
  layers of models/heads.py) trains alone, at `head_lr_scale` times the learning rate, so the
  backbone's features are not pulled around by the gradients of a random head.
- Then all layers train, the backbone at `backbone_lr_scale` times the rate (one schedule,
  applied per variable). `batchnorm: train` (the default) lets BatchNormalization train on
  batch statistics like the rest; `batchnorm: frozen` keeps it in inference mode with its
  pretrained statistics, scale and offset for the whole fine-tune, as the Keras guide advises
  for large ImageNet backbones.
The defaults (1 frozen epoch at the base rate, then every layer at the base rate, BatchNorm
training) were chosen with scripts/bench_transfer.py on three transfer tasks and checked on two
held out, at learning rates 1e-3 and 1e-2, three seeds each (docs/guides/fine-tuning.md has the
table). The old default, backbone at 0.1x, lost 0.07-0.36 against `init_from` alone at 1e-3
(a backbone rate of 1e-4 barely adapts), while it won at 1e-2: what a backbone needs is an
absolute rate, so `backbone_lr_scale: 0.1` is the setting for a learning rate chosen for
training from scratch. A raised head rate (10x) matched at 1e-3 and lost 0.15 at 1e-2.

Exact resume: the optimizer is built once for every variable (frozen ones included) before the
first phase, so its state has the same shape in both phases and the backup restores it; the
head's rate follows the optimizer's own step count. The engine splits `fit` at the phase
boundary and rebuilds the train function there, because a compiled train step keeps the
trainable set it was traced with.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nnrun.components.models.heads import HEAD_LAYERS
from nnrun.components.techniques.base import Technique
from nnrun.errors import ConfigError
from nnrun.registry import Params, register


class FinetuneParams(Params):
    freeze_epochs: int = Field(1, ge=0, description="epochs that train only the head (backbone frozen, BatchNorm in inference mode)")
    head_lr_scale: float = Field(
        1.0, gt=0, le=1000, description="while the backbone is frozen, the head trains at this x the learning rate "
        "(a raised rate helps at small learning rates and hurts at large ones: docs/guides/fine-tuning.md)"
    )
    backbone_lr_scale: float = Field(
        1.0, gt=0, le=1, description="after unfreezing: backbone learning rate = this x the head's (and its weight decay "
        "alike); 0.1 is the common choice for large pretrained backbones"
    )
    batchnorm: Literal["frozen", "train"] = Field(
        "train", description="train: after unfreezing BatchNorm trains on batch statistics, as the rest of the model; "
        "frozen: BatchNorm layers keep inference mode and their pretrained statistics, scale and offset through the "
        "whole fine-tune (the Keras guide's advice for large ImageNet backbones)"
    )


def head_layer(layer) -> bool:
    return layer.name in HEAD_LAYERS


def backbone_layers(model) -> list:
    """Every top-level layer with weights that is not the classifier head."""
    return [layer for layer in model.layers if layer.weights and not head_layer(layer)]


def batchnorm_layers(layers) -> list:
    """Every BatchNormalization layer in `layers`, nested sub-models included."""
    import keras

    found = []
    for layer in layers:
        found += [sub for sub in layer._flatten_layers(include_self=True, recursive=True)
                  if isinstance(sub, keras.layers.BatchNormalization)]
    return found


class Finetune(Technique):
    name = "finetune"

    def __init__(self, p: FinetuneParams, ctx):
        if p.freeze_epochs >= ctx.epochs:
            raise ConfigError(f"freeze_epochs {p.freeze_epochs} leaves no epoch to train the backbone "
                              f"(train.epochs is {ctx.epochs})", "train.techniques.finetune.freeze_epochs")
        self.p = p
        # Optimizer steps of the frozen phase: the head's rate is raised while `iterations` is below.
        self.frozen_steps = p.freeze_epochs * ctx.steps_per_epoch // max(1, ctx.gradient_accumulation_steps)
        self._trainable = None  # backbone layers the built model could train (set on first use)

    def phase_boundaries(self) -> list[int]:
        return [self.p.freeze_epochs] if self.p.freeze_epochs else []

    def frozen(self, epoch: int) -> bool:
        return epoch < self.p.freeze_epochs

    def before_segment(self, model, first_epoch: int) -> bool:
        """Freeze or unfreeze the backbone for a fit segment starting at `first_epoch`. Layers the
        model itself keeps frozen (e.g. keras_app's fixed preprocess_input) stay frozen, and with
        batchnorm: frozen so do the BatchNormalization layers."""
        if self._trainable is None:  # the model as built: all it may train
            self._trainable = [layer for layer in backbone_layers(model) if layer.trainable]
        layers = self._trainable
        if not layers or not any(head_layer(layer) for layer in model.layers):
            raise ConfigError("finetune needs a model with a classifier head named 'logits' (resnet, transformer, "
                              "keras_app, or a model built with models/heads.py)", "train.techniques.finetune")
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:  # for every variable, before any is frozen
            optimizer.build(model.trainable_variables)
        trainable = not self.frozen(first_epoch)
        frozen_norms = batchnorm_layers(layers) if trainable and self.p.batchnorm == "frozen" else []
        before = [(layer, layer.trainable) for layer in layers + frozen_norms]
        for layer in layers:
            layer.trainable = trainable  # Keras sets every sub-layer alike
        for norm in frozen_norms:
            norm.trainable = False  # inference mode, and gamma/beta stay pretrained
        return any(layer.trainable != was for layer, was in before)

    def configure_optimizer(self, optimizer, model):
        layers = self._trainable or [layer for layer in backbone_layers(model) if layer.trainable]
        backbone = [v for layer in layers for v in layer.trainable_weights]
        head = [v for layer in model.layers if head_layer(layer) for v in layer.trainable_weights]
        scale_lr(optimizer, backbone, self.p.backbone_lr_scale, head, self.p.head_lr_scale, self.frozen_steps)
        return optimizer

    def epoch_state(self, epoch: int) -> dict:
        return {"backbone_frozen": self.frozen(epoch)}

    def record(self) -> dict:
        return {**self.p.model_dump(), "head_layers": list(HEAD_LAYERS)}


def scale_lr(optimizer, backbone, backbone_scale: float, head=(), head_scale: float = 1.0,
             head_until: int = 0) -> None:
    """Per-variable learning rates (Keras optimizers have one): `backbone` variables update with
    `backbone_scale` x the optimizer's rate at every step, `head` variables with `head_scale` x
    it while the optimizer's step count is below `head_until`. Their decoupled weight decay is
    scaled the same way, as PyTorch parameter groups do. Done by wrapping the instance's
    `update_step`, which every Keras optimizer calls once per variable with the step's rate."""
    from keras import ops

    scaled_keys = {optimizer._var_key(v): backbone_scale for v in backbone if backbone_scale != 1.0}
    head_keys = {optimizer._var_key(v) for v in head} if head_scale != 1.0 and head_until > 0 else set()
    if not scaled_keys and not head_keys:
        return
    if getattr(optimizer, "weight_decay", None):  # applied below at the variable's own rate
        optimizer.exclude_from_weight_decay(var_list=[v for v in (*backbone, *head)
                                                      if optimizer._var_key(v) in set(scaled_keys) | head_keys])
    update_step = optimizer.update_step

    def scaled_update_step(gradient, variable, learning_rate):
        key = optimizer._var_key(variable)
        if key in scaled_keys:
            learning_rate = learning_rate * scaled_keys[key]
        elif key in head_keys:
            boost = ops.where(ops.less(optimizer.iterations, head_until), head_scale, 1.0)
            learning_rate = learning_rate * ops.cast(boost, learning_rate.dtype)
        else:
            return update_step(gradient, variable, learning_rate)
        if optimizer.weight_decay:
            variable.assign(variable - variable * ops.cast(learning_rate, variable.dtype) * optimizer.weight_decay)
        return update_step(gradient, variable, learning_rate)

    optimizer.update_step = scaled_update_step


@register("technique", "finetune", FinetuneParams)
def build(p: FinetuneParams, ctx) -> Finetune:
    """Frozen-backbone epochs (the new head alone), then all layers (head and backbone lr scalable)."""
    return Finetune(p, ctx)
