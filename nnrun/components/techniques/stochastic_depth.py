"""`stochastic_depth`: a shortcut for the model's own `stochastic_depth` parameter.

One implementation only: the residual model drops its branches (see models/resnet.py); this
technique just sets that rate, so technique configs can switch it on next to the others."""

from __future__ import annotations

from pydantic import Field

from nnrun.components.techniques.base import Technique
from nnrun.errors import ConfigError
from nnrun.registry import Params, register


class StochasticDepthParams(Params):
    rate: float = Field(0.1, ge=0, lt=1, description="drop rate of the deepest block's residual branch (linear in depth)")


class StochasticDepth(Technique):
    name = "stochastic_depth"

    def __init__(self, p: StochasticDepthParams):
        self.p = p

    def model_params(self, params: dict) -> dict:
        if "stochastic_depth" not in params:
            raise ConfigError("the model has no residual branches to drop (no stochastic_depth parameter)",
                              "train.techniques.stochastic_depth")
        if params["stochastic_depth"] not in (0, 0.0, self.p.rate):
            raise ConfigError(f"conflicts with model.params.stochastic_depth={params['stochastic_depth']}",
                              "train.techniques.stochastic_depth")
        return {**params, "stochastic_depth": self.p.rate}

    def record(self) -> dict:
        return self.p.model_dump()


@register("technique", "stochastic_depth", StochasticDepthParams)
def build(p: StochasticDepthParams, ctx) -> StochasticDepth:
    """Stochastic depth (Huang et al. 2016) on the model's residual branches, linear decay over depth."""
    return StochasticDepth(p)
