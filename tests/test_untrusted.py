"""A run directory, or a file, that someone hands you is data: nothing in it runs code, exhausts
memory, or makes nnrun write where it should not (docs: When things go wrong, trust model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import TINY, run_cli

PLUGIN = "open({marker!r}, 'w').write('ran')\n"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One finished tiny run (1 epoch, 16 px shapes)."""
    base = tmp_path_factory.mktemp("trained")
    config = base / "tiny.yaml"
    config.write_text(TINY.replace("RUNS", str(base / "runs")))
    res = run_cli("train", str(config), "--set", "train.epochs=1", "--set", "data.params.num_train=256")
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])


def crafted_copy(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of `run` whose run.json names a plugin.py that sits beside it (and would leave a marker)."""
    copy = tmp_path / "handed" / run.name
    shutil.copytree(run, copy)
    marker = tmp_path / "marker"
    (copy / "plugin.py").write_text(PLUGIN.format(marker=str(marker)))
    record = json.loads((copy / "run.json").read_text())
    record["plugins"] = ["plugin.py"]
    (copy / "run.json").write_text(json.dumps(record))
    return copy, marker


@pytest.mark.slow
@pytest.mark.parametrize("command", [
    ["evaluate", "."],
    ["predict", ".", "image.png"],
    ["explain", ".", "--num-images", "2"],
    ["export", "."],
    ["train", "--resume", "."],
])
def test_a_run_directory_that_names_a_plugin_runs_nothing(trained_run, tmp_path, command):
    run, marker = crafted_copy(trained_run, tmp_path)
    if command[0] == "predict":
        from PIL import Image

        Image.new("RGB", (16, 16)).save(run / "image.png")
    if command[0] == "train":  # a run that can be resumed: interrupted after its first epoch
        record = json.loads((run / "run.json").read_text())
        record.update(status="interrupted", epochs_completed=1)
        (run / "run.json").write_text(json.dumps(record))
        command = command + ["--set", "train.epochs=2", "--allow-change", "train.epochs"]
    res = run_cli(*command, cwd=run)
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip()
    assert len(line.splitlines()) == 1 and "plugin.py" in line and "--plugin plugin.py" in line, line
    assert not marker.exists()


@pytest.mark.slow
def test_a_named_plugin_runs_only_when_given_on_the_command_line(trained_run, tmp_path):
    run, marker = crafted_copy(trained_run, tmp_path)
    res = run_cli("evaluate", ".", "--plugin", "plugin.py", "--json", cwd=run)
    assert res.returncode == 0, res.stderr
    assert marker.read_text() == "ran" and "accuracy" in json.loads(res.stdout.splitlines()[-1])
