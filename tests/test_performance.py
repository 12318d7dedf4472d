"""Performance settings and the ceiling benchmark's arithmetic (issue 15): `train.precision: auto`
and the FLOP count behind mfu."""

from __future__ import annotations

import importlib.util

import pytest

from nnrun.components.techniques.mixed_precision import auto_precision, cpu_has_bf16
from tests.conftest import ROOT

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 avx512_vnni\n"
AMX = "flags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n"
PLAIN = "flags\t\t: fpu sse2 avx2 fma avx512f\n"


def test_bf16_units_are_read_from_cpu_flags():
    assert cpu_has_bf16(ZEN4) and cpu_has_bf16(AMX)
    assert not cpu_has_bf16(PLAIN) and not cpu_has_bf16("")


@pytest.mark.parametrize("cpuinfo, gpus, policy", [(ZEN4, 0, "mixed_bfloat16"), (AMX, 0, "mixed_bfloat16"),
                                                   (PLAIN, 0, "float32"), (ZEN4, 1, "float32")])
def test_precision_auto_picks_bf16_only_on_a_cpu_with_bf16_units(cpuinfo, gpus, policy):
    chosen, why = auto_precision(cpuinfo, gpus)
    assert chosen == policy and why.startswith("auto: ")


def test_precision_auto_is_a_valid_config_value(write_yaml):
    from nnrun.config import load_config

    from tests.conftest import TINY

    cfg = load_config(write_yaml(TINY.replace("RUNS", "runs")), ["train.precision=auto"])
    assert cfg.train.precision == "auto"


def _bench_ceiling():
    spec = importlib.util.spec_from_file_location("bench_ceiling", ROOT / "scripts" / "bench_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_forward_flops_of_resnet20_match_the_hand_count():
    """ResNet-20 at 32 px: 2 x multiply-adds of its 21 convolutions and the logits layer, by hand."""
    from nnrun.config import load_config
    from nnrun.engine import build

    cfg = load_config(ROOT / "configs" / "resnet20.yaml", ["data.params.num_train=64", "data.params.num_val=64"])
    data = build.build_data(cfg)
    counted = _bench_ceiling().count_forward_flops(build.build_model(cfg, data), data.input_shape)
    macs = 32 * 32 * 9 * 3 * 16  # stem
    macs += 6 * 32 * 32 * 9 * 16 * 16  # stage 1: 3 blocks x 2 convs
    macs += 16 * 16 * 9 * 16 * 32 + 5 * 16 * 16 * 9 * 32 * 32 + 16 * 16 * 16 * 32  # stage 2 (+ 1x1 projection)
    macs += 8 * 8 * 9 * 32 * 64 + 5 * 8 * 8 * 9 * 64 * 64 + 8 * 8 * 32 * 64  # stage 3 (+ 1x1 projection)
    macs += 64 * data.num_classes  # logits
    assert counted["forward"] == 2 * macs
    assert counted["layers_counted"] == 22


def test_precision_auto_records_its_choice_and_why_in_run_json(tiny_config):
    """`auto` must never change numerics silently: run.json names the policy it picked and why."""
    import json
    from pathlib import Path

    from tests.conftest import run_cli

    res = run_cli("train", str(tiny_config), "--set", "train.precision=auto", "--set", "train.epochs=1")
    assert res.returncode == 0, res.stderr
    record = json.loads((Path(res.stdout.strip().splitlines()[-1]) / "run.json").read_text())
    policy, why = auto_precision()
    assert record["precision"] == policy == record["dtype_policy"]
    assert record["precision_auto"] == why
