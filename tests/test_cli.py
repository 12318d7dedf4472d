"""The CLI as a user runs it: exit codes, one-line errors, listings (no training here)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT


def test_validate_ok(cli):
    res = cli("validate", "configs/quickstart.yaml")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok: configs/quickstart.yaml")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--set", "optimizer.learning_rate=fast"],
         "config error: optimizer.learning_rate: expected a number > 0, got 'fast'"),
        (["--set", "model.name=resnt"], "config error: model.name: unknown model 'resnt'; did you mean 'resnet'?"),
        (["--set", "train.epochs"], "config error: --set 'train.epochs': expected KEY=VALUE"),
    ],
)
@pytest.mark.parametrize("command", ["validate", "train"])
def test_config_errors_exit_2_with_one_line_and_no_run_dir(cli, tmp_path, command, args, expected):
    res = cli(command, str(ROOT / "configs/quickstart.yaml"), "--set", f"runtime.runs_root={tmp_path}/runs",
              *args, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip() == expected or res.stderr.strip().startswith(expected)
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_config_file(cli, tmp_path):
    res = cli("train", str(tmp_path / "nope.yaml"))
    assert res.returncode == 2
    assert res.stderr.strip() == f"config error: config file not found: {tmp_path / 'nope.yaml'}"


def test_debug_shows_traceback(cli):
    res = cli("--debug", "validate", "configs/quickstart.yaml", "--set", "model.name=resnt")
    assert res.returncode == 2
    assert "Traceback" in res.stderr and res.stderr.strip().endswith("did you mean 'resnet'?")


def test_components_lists_every_registered_component_with_params(cli):
    from nnrun import registry

    res = cli("components", "--json")
    assert res.returncode == 0, res.stderr
    listed = {(c["kind"], c["name"]): c for c in json.loads(res.stdout)}
    assert set(listed) == {(c.kind, c.name) for c in registry.components()}
    resnet = listed[("model", "resnet")]
    params = {p["name"]: p for p in resnet["params"]}
    assert params["block"]["default"] == "basic" and params["block"]["type"] == "basic|bottleneck"
    assert params["stages"]["doc"]
    assert all(c["doc"] for c in listed.values())


def test_components_table_and_bad_kind(cli):
    res = cli("components", "model")
    assert res.returncode == 0 and "resnet" in res.stdout and "shapes" not in res.stdout
    bad = cli("components", "modle")
    assert bad.returncode == 2 and "did you mean 'model'?" in bad.stderr


def test_schema_is_json_schema_with_component_names(cli):
    res = cli("schema")
    assert res.returncode == 0
    schema = json.loads(res.stdout)
    assert schema["title"] == "RunConfig"
    assert "resnet" in schema["$defs"]["ModelConfig"]["properties"]["name"]["enum"]


def test_evaluate_rejects_non_run_dir(cli, tmp_path):
    res = cli("evaluate", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: not a run directory (no config.yaml): {tmp_path}"


def test_runs_on_empty_root(cli, tmp_path):
    res = cli("runs", str(tmp_path))
    assert res.returncode == 0 and "no runs" in res.stdout
