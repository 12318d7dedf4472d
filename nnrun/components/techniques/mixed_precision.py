"""`mixed_precision`: the same switch as `train.precision`, listed with the other techniques.

The policy is a Keras dtype policy set before the model is built (engine/runtime.py): layers
compute in float16/bfloat16 with float32 variables, the logits layer and the loss stay in
float32, and Keras wraps the optimizer in a LossScaleOptimizer for float16."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nnrun.components.techniques.base import Technique
from nnrun.registry import Params, register


class MixedPrecisionParams(Params):
    policy: Literal["mixed_float16", "mixed_bfloat16"] = Field(
        "mixed_bfloat16", description="Keras dtype policy (bfloat16 needs no loss scaling)"
    )


class MixedPrecision(Technique):
    name = "mixed_precision"

    def __init__(self, p: MixedPrecisionParams):
        self.p = p

    def record(self) -> dict:
        return self.p.model_dump()


def effective_precision(train_cfg) -> str:
    """train.precision, or the policy of a listed mixed_precision technique."""
    technique = train_cfg.techniques.get("mixed_precision")
    return technique["policy"] if technique else train_cfg.precision


@register("technique", "mixed_precision", MixedPrecisionParams)
def build(p: MixedPrecisionParams, ctx) -> MixedPrecision:
    """Mixed precision via a Keras dtype policy; float32 logits and loss; loss scaling for float16."""
    return MixedPrecision(p)
