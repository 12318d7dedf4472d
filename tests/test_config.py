"""Config loading, composition, overrides and every class of config error (no TensorFlow)."""

from __future__ import annotations

import sys

import pytest

from nnrun.config import apply_overrides, config_hash, load_config, load_raw, to_yaml
from nnrun.config.safe_yaml import parse_yaml
from nnrun.errors import ConfigError

BASE = """
name: base-run
data: {dataset: shapes, params: {num_train: 100}}
model: {name: resnet, params: {stages: [8, 16]}}
optimizer: {name: adam, learning_rate: 1e-3}
train: {epochs: 2}
"""


def error_of(fn, *args) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    return str(info.value)


def test_base_composition_is_relative_and_deep(tmp_path, write_yaml):
    (tmp_path / "sub").mkdir()
    write_yaml(BASE, "base.yaml")
    child = write_yaml("base: ../base.yaml\nname: child\nmodel: {params: {blocks_per_stage: 3}}\n", "sub/child.yaml")
    cfg = load_config(child)
    assert cfg.name == "child"
    assert cfg.model.params["stages"] == [8, 16]  # kept from base
    assert cfg.model.params["blocks_per_stage"] == 3  # merged in
    assert cfg.data.params["num_train"] == 100


def test_overrides_are_yaml_typed_and_repeatable(write_yaml):
    path = write_yaml(BASE)
    cfg = load_config(path, ["optimizer.learning_rate=3e-4", "train.epochs=7", "model.params.stages=[4, 8, 16]",
                             "runtime.deterministic=false", "train.epochs=9"])
    assert cfg.optimizer.learning_rate == pytest.approx(3e-4)
    assert cfg.train.epochs == 9  # later --set wins
    assert cfg.model.params["stages"] == [4, 8, 16]
    assert cfg.runtime.deterministic is False


def test_exponent_floats_without_dot_are_numbers():
    assert parse_yaml("lr: 1e-3", "x") == {"lr": 0.001}


def test_resolved_config_is_complete_and_rerunnable(write_yaml, tmp_path):
    cfg = load_config(write_yaml(BASE))
    assert cfg.model.params["block"] == "basic"  # component defaults filled
    assert cfg.loss.name == "crossentropy"
    again = write_yaml(to_yaml(cfg), "resolved.yaml")
    assert config_hash(load_config(again)) == config_hash(cfg)


def test_hash_ignores_key_order(write_yaml):
    a = load_config(write_yaml(BASE, "a.yaml"))
    b = load_config(write_yaml("train: {epochs: 2}\n" + BASE.replace("train: {epochs: 2}\n", ""), "b.yaml"))
    assert config_hash(a) == config_hash(b)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("optimizer.learning_rate=fast", "optimizer.learning_rate: expected a number > 0, got 'fast'"),
        ("optimizer.learning_rate=-1", "optimizer.learning_rate: expected a value > 0, got -1"),
        ("model.name=resnt", "model.name: unknown model 'resnt'; did you mean 'resnet'?"),
        ("data.dataset=shapez", "data.dataset: unknown dataset 'shapez'; did you mean 'shapes'?"),
        ("optimizer.name=adamx", "optimizer.name: unknown optimizer 'adamx'; did you mean 'adam'?"),
        ("train.epochz=3", "train.epochz: unknown key 'epochz'; did you mean 'epochs'?"),
        ("model.params.stagez=[1]", "model.params.stagez: unknown key 'stagez'; did you mean 'stages'?"),
        ("model.params.block=wide", "model.params.block: expected one of 'basic' or 'bottleneck', got 'wide'"),
        ("train.epochs=2.5", "train.epochs: expected an integer > 0, got 2.5"),
        ("train.precision=fp8", "train.precision: expected one of"),
        ("name=../../etc", "name: '../../etc' is not allowed"),
        ("train.techniques.mixupp={}", "train.techniques.mixupp: unknown technique 'mixupp'"),
        ("data.params.class_balance=[1, 2]", "data.params: class_balance has 2 entries for 4 classes"),
    ],
)
def test_bad_values_name_the_key_path(write_yaml, override, expected):
    message = error_of(load_config, write_yaml(BASE), [override])
    assert expected in message
    assert "\n" not in message


def test_conflicting_precision_and_multi_worker_limits(write_yaml):
    path = write_yaml(BASE)
    assert "conflicts with train.precision mixed_bfloat16" in error_of(
        load_config, path, ["train.precision=mixed_bfloat16", "train.techniques={mixed_precision: {policy: mixed_float16}}"])
    assert "train.backup_every_steps: not supported with runtime.strategy: multi_worker" in error_of(
        load_config, path, ["runtime.strategy=multi_worker", "train.backup_every_steps=5"])
    assert "train.techniques.curriculum.difficulty: difficulty: loss" in error_of(
        load_config, path, ["runtime.strategy=multi_worker", "train.techniques={curriculum: {difficulty: loss}}"])
    load_config(path, ["runtime.strategy=multi_worker", "train.techniques={curriculum: {difficulty: dataset}}"])


def test_set_into_a_shorthand_component(write_yaml):
    cfg = load_config(write_yaml(BASE + "loss: crossentropy\n"), ["loss.params.label_smoothing=0.1"])
    assert cfg.loss.name == "crossentropy" and cfg.loss.params["label_smoothing"] == 0.1


def test_missing_section_is_named(write_yaml):
    assert error_of(load_config, write_yaml("name: x\ndata: {dataset: shapes}\n")) == "model: required key is missing"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: a\nname: b\n", "line 2, column 1: duplicate key 'name'"),
        ("name: [unclosed\n", "invalid YAML at line 2"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("? [a, b]\n: 1\n", "line 1, column 3: a key must be a plain value, not a list"),
        ("", "the config file is empty"),
        ("a: !!python/object/apply:os.system ['echo pwned']\n", "invalid YAML"),
    ],
)
def test_hostile_yaml_is_rejected(write_yaml, text, expected):
    assert expected in error_of(load_raw, write_yaml(text))


def test_billion_laughs_is_rejected_quickly(write_yaml):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    assert "alias bomb" in error_of(load_raw, write_yaml("\n".join(lines) + "\n"))


def test_non_utf8_and_missing_files(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in error_of(load_raw, bad)
    assert "config file not found" in error_of(load_raw, tmp_path / "nope.yaml")


def test_circular_base_is_an_error(write_yaml):
    write_yaml("base: b.yaml\nname: a\n", "a.yaml")
    path = write_yaml("base: a.yaml\nname: b\n", "b.yaml")
    assert "circular" in error_of(load_raw, path)


def test_bad_override_syntax():
    assert "expected KEY=VALUE" in error_of(apply_overrides, {}, ["train.epochs"])
    assert "is a value, not a section" in error_of(apply_overrides, {"name": "x"}, ["name.sub=1"])


def test_validation_never_imports_tensorflow(write_yaml):
    """In a fresh interpreter: other tests in this process may have imported TensorFlow."""
    import subprocess

    code = ("import sys; from nnrun.config import load_config; from nnrun import registry; "
            f"load_config({str(write_yaml(BASE))!r}); registry.components(); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
