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
    """train.precision (`auto` resolved, see `auto_precision`), or the policy of a listed
    mixed_precision technique."""
    technique = train_cfg.techniques.get("mixed_precision")
    if technique:
        return technique["policy"]
    return auto_precision()[0] if train_cfg.precision == "auto" else train_cfg.precision


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU reports bfloat16 units: AVX512_BF16 (Zen 4, Cooper Lake, Sapphire Rapids) or AMX."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def auto_precision(cpuinfo: str | None = None, gpus: int | None = None) -> tuple[str, str]:
    """`train.precision: auto`: (policy, why). mixed_bfloat16 on a machine without GPUs whose CPU
    has bf16 units (measured faster there: README "Performance"); float32 everywhere else (without
    bf16 units both mixed policies are much slower; GPUs are not measured). run.json records both."""
    if gpus is None:
        import sys

        tf = sys.modules.get("tensorflow")
        gpus = len(tf.config.list_physical_devices("GPU")) if tf is not None else 0
    if gpus:
        return "float32", "auto: a GPU is visible (auto picks bf16 on CPUs only)"
    if cpu_has_bf16(cpuinfo):
        return "mixed_bfloat16", "auto: the CPU reports AVX512_BF16/AMX bf16 units"
    return "float32", "auto: the CPU reports no bf16 units (AVX512_BF16/AMX)"


@register("technique", "mixed_precision", MixedPrecisionParams)
def build(p: MixedPrecisionParams, ctx) -> MixedPrecision:
    """Mixed precision via a Keras dtype policy; float32 logits and loss; loss scaling for float16."""
    return MixedPrecision(p)
