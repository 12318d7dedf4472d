"""Optimizers: thin declarations over Keras' own (adam, adamw, sgd)."""

from __future__ import annotations

from pydantic import Field

from nnrun.registry import Params, register


class AdamParams(Params):
    beta_1: float = Field(0.9, ge=0, lt=1)
    beta_2: float = Field(0.999, ge=0, lt=1)
    epsilon: float = Field(1e-7, gt=0)
    amsgrad: bool = False


class SGDParams(Params):
    momentum: float = Field(0.9, ge=0, lt=1, description="heavy-ball momentum")
    nesterov: bool = Field(True, description="Nesterov momentum")


def _common(learning_rate, weight_decay, clipnorm, gradient_accumulation_steps) -> dict:
    kwargs = {"learning_rate": learning_rate, "clipnorm": clipnorm}
    if weight_decay:
        kwargs["weight_decay"] = weight_decay
    if gradient_accumulation_steps:  # Keras' own: accumulators are optimizer variables, so backed up
        kwargs["gradient_accumulation_steps"] = gradient_accumulation_steps
    return kwargs


@register("optimizer", "adam", AdamParams)
def adam(p: AdamParams, learning_rate, weight_decay: float = 0.0, clipnorm=None, gradient_accumulation_steps=None):
    """Adam (weight_decay, when set, is applied decoupled as in Keras 3)."""
    import keras

    return keras.optimizers.Adam(**_common(learning_rate, weight_decay, clipnorm, gradient_accumulation_steps),
                                 **p.model_dump())


@register("optimizer", "adamw", AdamParams)
def adamw(p: AdamParams, learning_rate, weight_decay: float = 0.0, clipnorm=None, gradient_accumulation_steps=None):
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter)."""
    import keras

    kwargs = _common(learning_rate, weight_decay, clipnorm, gradient_accumulation_steps)
    kwargs.setdefault("weight_decay", 0.0)
    return keras.optimizers.AdamW(**kwargs, **p.model_dump())


@register("optimizer", "sgd", SGDParams)
def sgd(p: SGDParams, learning_rate, weight_decay: float = 0.0, clipnorm=None, gradient_accumulation_steps=None):
    """SGD with (Nesterov) momentum."""
    import keras

    return keras.optimizers.SGD(**_common(learning_rate, weight_decay, clipnorm, gradient_accumulation_steps),
                                **p.model_dump())
