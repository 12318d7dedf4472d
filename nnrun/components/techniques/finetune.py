"""`finetune`: train only the classifier head first, then everything with a smaller backbone lr.

The Keras transfer-learning recipe: during the first `freeze_epochs` every backbone layer has
`trainable = False`, which in Keras 3 also runs BatchNormalization in inference mode (its
moving statistics stay those of the pretrained model); the head (the `head_dropout` and
`logits` layers of models/heads.py) trains alone. Then all layers train, the backbone with
`backbone_lr_scale` times the head's learning rate (one schedule, applied per variable).

Exact resume: the optimizer is built once for every variable (frozen ones included) before the
first phase, so its state has the same shape in both phases and the backup restores it. The
engine splits `fit` at the phase boundary and rebuilds the train function there, because a
compiled train step keeps the trainable set it was traced with.
"""

from __future__ import annotations

from pydantic import Field

from nnrun.components.models.heads import HEAD_LAYERS
from nnrun.components.techniques.base import Technique
from nnrun.errors import ConfigError
from nnrun.registry import Params, register


class FinetuneParams(Params):
    freeze_epochs: int = Field(1, ge=0, description="epochs that train only the head (backbone frozen, BatchNorm in inference mode)")
    backbone_lr_scale: float = Field(
        0.1, gt=0, le=1, description="after unfreezing: backbone learning rate = this x the head's (and its weight decay alike)"
    )


def head_layer(layer) -> bool:
    return layer.name in HEAD_LAYERS


def backbone_layers(model) -> list:
    """Every top-level layer with weights that is not the classifier head."""
    return [layer for layer in model.layers if layer.weights and not head_layer(layer)]


class Finetune(Technique):
    name = "finetune"

    def __init__(self, p: FinetuneParams, ctx):
        if p.freeze_epochs >= ctx.epochs:
            raise ConfigError(f"freeze_epochs {p.freeze_epochs} leaves no epoch to train the backbone "
                              f"(train.epochs is {ctx.epochs})", "train.techniques.finetune.freeze_epochs")
        self.p = p
        self._trainable = None  # backbone layers the built model could train (set on first use)

    def phase_boundaries(self) -> list[int]:
        return [self.p.freeze_epochs] if self.p.freeze_epochs else []

    def frozen(self, epoch: int) -> bool:
        return epoch < self.p.freeze_epochs

    def before_segment(self, model, first_epoch: int) -> bool:
        """Freeze or unfreeze the backbone for a fit segment starting at `first_epoch`. Layers the
        model itself keeps frozen (e.g. keras_app's fixed preprocess_input) stay frozen."""
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
        changed = any(layer.trainable != trainable for layer in layers)
        for layer in layers:
            layer.trainable = trainable
        return changed

    def configure_optimizer(self, optimizer, model):
        if self.p.backbone_lr_scale != 1.0:
            layers = self._trainable or [layer for layer in backbone_layers(model) if layer.trainable]
            scale_backbone_lr(optimizer, [v for layer in layers for v in layer.trainable_weights],
                              self.p.backbone_lr_scale)
        return optimizer

    def epoch_state(self, epoch: int) -> dict:
        return {"backbone_frozen": self.frozen(epoch)}

    def record(self) -> dict:
        return {**self.p.model_dump(), "head_layers": list(HEAD_LAYERS)}


def scale_backbone_lr(optimizer, variables, scale: float) -> None:
    """Per-variable learning rate (Keras optimizers have one): `variables` update with `scale` x
    the optimizer's rate at every step; their decoupled weight decay is scaled the same way, as
    PyTorch parameter groups do. Done by wrapping the instance's `update_step`, which every Keras
    optimizer calls once per variable with the step's learning rate."""
    keys = {optimizer._var_key(v) for v in variables}
    if getattr(optimizer, "weight_decay", None):
        optimizer.exclude_from_weight_decay(var_list=variables)  # applied below at the scaled rate
    update_step = optimizer.update_step

    def scaled_update_step(gradient, variable, learning_rate):
        if optimizer._var_key(variable) in keys:
            learning_rate = learning_rate * scale
            if optimizer.weight_decay:
                variable.assign(variable - variable * learning_rate * optimizer.weight_decay)
        return update_step(gradient, variable, learning_rate)

    optimizer.update_step = scaled_update_step


@register("technique", "finetune", FinetuneParams)
def build(p: FinetuneParams, ctx) -> Finetune:
    """Frozen-backbone epochs (head only, BatchNorm frozen), then all layers with a scaled backbone lr."""
    return Finetune(p, ctx)
