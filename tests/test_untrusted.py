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


# -- bounded YAML: every file nnrun reads ----------------------------------------------------

DICT_BOMB = "a0: &a0 {k0: 1, k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1, k8: 1}\n" + "".join(
    f"a{i}: &a{i} {{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(9)) + "}\n" for i in range(1, 8))


def test_an_alias_bomb_config_yaml_marks_its_run_unreadable_in_under_a_second(tmp_path):
    import time

    from nnrun.results.runs import find_runs
    from tests.test_compare import make_run

    root = tmp_path / "runs"
    good = make_run(root, "good", [], {"val_accuracy": 0.5}, "2026-01-01T00:00:01+00:00")
    bomb = make_run(root, "bomb", [], {"val_accuracy": 0.6}, "2026-01-01T00:00:02+00:00")
    (bomb / "config.yaml").write_text(DICT_BOMB)
    assert len(DICT_BOMB) < 1000
    start = time.perf_counter()
    records = find_runs(root, sort="optimizer.learning_rate")
    assert time.perf_counter() - start < 1.0
    by_path = {r["path"]: r for r in records}
    assert by_path[str(bomb)]["status"] == "unreadable" and "alias bomb" in by_path[str(bomb)]["reason"]
    assert by_path[str(good)]["status"] == "completed"
    res = run_cli("runs", str(root), "--filter", "no.such.key=1")  # the path that expanded it: 100 s before
    assert res.returncode == 2 and "unknown key 'no.such.key'" in res.stderr


@pytest.mark.parametrize("text, message", [
    ("train: " + "[" * 2000 + "]" * 2000 + "\n", "nested more than 64 levels deep"),
    ("a: &a [*a]\n", "a recursive alias"),
    ("d: [&a0 [1], " + ", ".join(f"&a{i} [*a{i - 1}]" for i in range(1, 100)) + "]\n", "(through aliases)"),
])
def test_deep_or_recursive_yaml_is_one_config_error(tmp_path, text, message):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    res = run_cli("validate", str(path))
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_base_files_are_read_once_and_their_number_is_capped(tmp_path, monkeypatch):
    from nnrun.config import loader

    (tmp_path / "leaf.yaml").write_text("train: {epochs: 2}\n")
    (tmp_path / "mid.yaml").write_text("base: [" + ", ".join(["leaf.yaml"] * 60) + "]\nseed: 3\n")
    (tmp_path / "top.yaml").write_text("base: [" + ", ".join(["mid.yaml"] * 60) + "]\nname: fan\n")
    reads = []
    real = loader.read_yaml_file
    monkeypatch.setattr(loader, "read_yaml_file", lambda path: reads.append(Path(path).name) or real(path))
    assert loader.load_raw(tmp_path / "top.yaml") == {"train": {"epochs": 2}, "seed": 3, "name": "fan"}
    assert sorted(reads) == ["leaf.yaml", "mid.yaml", "top.yaml"]  # was 1 + 60 + 3,600 reads
    for i in range(70):
        (tmp_path / f"c{i}.yaml").write_text(f"seed: {i}\n")
    (tmp_path / "wide.yaml").write_text("base: [" + ", ".join(f"c{i}.yaml" for i in range(70)) + "]\n")
    with pytest.raises(loader.ConfigError, match="names more than 64 files"):
        loader.load_raw(tmp_path / "wide.yaml")


# -- labels, grids ----------------------------------------------------------------------------

@pytest.mark.parametrize("labels, message", [
    ([0, 2**31 - 1], "has the label 2147483647"),
    ([2**32, 2**32 + 1], "has the label 4294967297"),  # int32 would wrap them to 0 and 1
    ([0.5, 1.0], "must hold integer class labels"),
    ([0, -1], "negative class labels"),
])
def test_npz_labels_are_checked_before_the_int32_cast(tmp_path, labels, message):
    import numpy as np

    from nnrun.components.data.preprocess import labels_as_indices
    from nnrun.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        labels_as_indices(np.array(labels), "y_train")


@pytest.mark.slow
def test_predict_refuses_npz_labels_outside_the_runs_classes(trained_run, tmp_path):
    import numpy as np

    x = np.zeros((3, 16, 16, 3), np.uint8)
    np.savez(tmp_path / "bad.npz", x=x, y=np.array([0, 1, 7]))
    res = run_cli("predict", str(trained_run), str(tmp_path / "bad.npz"))
    assert res.returncode == 2 and "has the label 7" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_huge_grid_is_refused_before_it_is_built(tmp_path):
    import time

    from tests.test_search import make_search

    path = make_search(tmp_path, "search: {sampler: grid}\nparams: {model.params.blocks_per_stage: {int: [1, 10000000000]}}\n")
    start = time.perf_counter()
    res = run_cli("sweep", str(path), "--print-commands")
    assert res.returncode == 2 and "the grid has 10,000,000,000 points" in res.stderr, res.stderr
    assert time.perf_counter() - start < 30
    (tmp_path / "grid.yaml").write_text("base: tiny.yaml\ngrid: {" + ", ".join(
        f"k{i}.x: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]" for i in range(8)) + "}\n")
    res = run_cli("sweep", str(tmp_path / "grid.yaml"), "--print-commands")
    assert res.returncode == 2 and "the sweep has 100,000,000 trials" in res.stderr, res.stderr


# -- text from data: CSV cells, terminals, credentials -------------------------------------------

def test_csv_cells_that_spreadsheets_would_evaluate_are_quoted():
    import csv
    import io

    import numpy as np

    from nnrun.inference.predict import _csv

    text = _csv(["=cmd|' /C calc'!A0", "ok.png"], np.array([[0.9, 0.1], [0.2, 0.8]]), [None, None],
                ["@SUM(1+1)", "-2+3"], 2, by_index=False)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1][0] == "'=cmd|' /C calc'!A0" and rows[1][1] == "'@SUM(1+1)" and rows[2][1] == "'-2+3"
    assert rows[1][2] == "0.900000"  # numbers stay numbers


def test_text_from_data_prints_as_written():
    from rich.console import Console

    from nnrun.cli.tables import metrics_table
    from nnrun.safe_text import mask_credentials

    console = Console(record=True, width=120, force_terminal=False)
    console.print(metrics_table("runs/x [val, best]", {"val_recall_\x1b[31mred": 0.5, "val_recall_[bold]b": 0.25}))
    shown = console.export_text()
    assert "runs/x [val, best]" in shown and "val_recall_[bold]b" in shown
    assert "\x1b" not in shown and "val_recall_\\x1b[31mred" in shown
    assert mask_credentials("got 'u:s3cret@db.example/optuna'") == "got 'u:***@db.example/optuna'"


@pytest.mark.slow
def test_evaluate_title_keeps_its_brackets(trained_run):
    res = run_cli("evaluate", str(trained_run))
    assert res.returncode == 0 and "[val, best]" in res.stdout, res.stdout  # the title may wrap


def test_a_schemeless_storage_url_is_never_echoed_with_its_password(tmp_path):
    from tests.test_search import make_search

    path = make_search(tmp_path, "search: {trials: 1, storage: 'nnrun:s3cr3t@db.example/optuna'}\n"
                                 "params: {optimizer.learning_rate: {uniform: [0.001, 0.01]}}\n")
    res = run_cli("sweep", str(path), "--print-commands")
    assert res.returncode == 2 and "s3cr3t" not in res.stderr + res.stdout, res.stderr
    assert "environment variable" in res.stderr


# -- symbolic links inside a run directory -------------------------------------------------------

@pytest.mark.slow
def test_the_report_embeds_only_what_the_run_holds(trained_run, tmp_path):
    run = tmp_path / "linked"
    shutil.copytree(trained_run, run)
    secret = tmp_path / "secret.txt"
    secret.write_text("TOKEN-7c1e: a file outside the run\n")
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").unlink()
    (run / "config.yaml").symlink_to(secret)
    (run / "plots" / "extra.png").symlink_to(secret)
    res = run_cli("report", str(run))
    assert res.returncode == 0, res.stderr
    page = (run / "report.html").read_text()
    assert "TOKEN-7c1e" not in page and "Not shown" in page and "is a symbolic link" in page
    assert "learning curves" in page  # the real plot is still there
    (run / "config.yaml").unlink()
    (run / "config.yaml").write_text(config)
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text("")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(outside)
    res = run_cli("evaluate", str(run))
    assert res.returncode == 2 and "metrics.jsonl is a symbolic link" in res.stderr, res.stderr
    assert outside.read_text() == ""


@pytest.mark.slow
def test_predict_does_not_write_through_a_linked_predictions_folder(trained_run, tmp_path):
    from PIL import Image

    run = tmp_path / "linked"
    shutil.copytree(trained_run, run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "predictions").symlink_to(elsewhere)
    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    res = run_cli("predict", str(run), str(tmp_path / "x.png"))
    assert res.returncode == 2 and "predictions is a symbolic link" in res.stderr, res.stderr
    assert not list(elsewhere.iterdir())


# -- writes: atomic checkpoints, unique prediction files, one trainer per run -----------------------

DYING_SAVE = """
import os, signal, sys
from keras.src.saving import saving_lib

which, nth = sys.argv[1], int(sys.argv[2])
real, calls = saving_lib._save_model_to_fileobj, []


def dying(model, fileobj, weights_format):
    # Die in the middle of writing the nth save of best/last.keras: half a zip, then SIGKILL.
    if which in os.path.basename(str(getattr(fileobj, "name", ""))):
        calls.append(1)
        if len(calls) == nth:
            fileobj.write(b"PK\\x03\\x04" + b"\\0" * 4096)
            fileobj.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real(model, fileobj, weights_format)


saving_lib._save_model_to_fileobj = dying
sys.argv = ["nnrun"] + sys.argv[3:]
from nnrun.cli import main

main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("which", ["best", "last"])
def test_a_kill_during_a_checkpoint_save_leaves_the_previous_checkpoint(tmp_path, which):
    import subprocess
    import sys

    import keras

    from tests.conftest import ROOT

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("RUNS", str(tmp_path / "runs")))
    res = subprocess.run([sys.executable, "-c", DYING_SAVE, which, "2", "train", str(config),
                          "--set", "train.epochs=3", "--set", "train.monitor=loss",
                          "--set", "data.params.num_train=256"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == -9, res.stderr  # killed in the second save
    (run,) = (tmp_path / "runs" / "tiny").iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # the kill came during epoch 2's save
    for name in ("best", "last"):
        model = keras.saving.load_model(run / "checkpoints" / f"{name}.keras", compile=False)
        assert model.count_params() > 0


def test_prediction_files_get_distinct_names_even_in_the_same_second(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from nnrun.rundir import write_new_file

    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(lambda i: write_new_file(tmp_path, "20261202-101010", ".csv", f"file {i}\n" * 1000),
                              range(8)))
    assert len(set(paths)) == 8 and {p.name for p in paths} == {"20261202-101010.csv"} | {
        f"20261202-101010-{n}.csv" for n in range(2, 9)}
    assert sorted(p.read_text() for p in paths) == sorted(f"file {i}\n" * 1000 for i in range(8))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temp files left


@pytest.mark.slow
def test_a_second_resume_of_a_run_in_training_is_refused(trained_run, tmp_path):
    import fcntl

    run = tmp_path / "busy"
    shutil.copytree(trained_run, run)
    record = json.loads((run / "run.json").read_text())
    record.update(status="interrupted", pid=2**22 + 17)  # no such process: only the lock says busy
    (run / "run.json").write_text(json.dumps(record))
    with open(run / ".nnrun.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the process that is training it holds it
        res = run_cli("train", "--resume", str(run), "--set", "train.epochs=2", "--allow-change", "train.epochs")
    assert res.returncode == 2 and res.stderr.strip() == f"error: run is in use: another nnrun process is " \
                                                         f"training or resuming it: {run}", res.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"  # untouched


# -- decoding memory -------------------------------------------------------------------------------

MEASURE = """
import resource, sys
from nnrun.components.data import decode
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode.decode_full(sys.argv[1], 224, *[int(a) for a in sys.argv[2:]])
    print("decoded")
except decode.UnreadableImage as exc:
    print("refused:", exc)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.fixture(scope="module")
def huge_16_bit_png(tmp_path_factory) -> Path:
    """12000 x 12000 16-bit grayscale, 280 KB on disk (as in the security review)."""
    import numpy as np
    from PIL import Image

    path = tmp_path_factory.mktemp("huge") / "huge16.png"
    pixels = np.zeros((12000, 12000), np.uint16)
    pixels[100:200, 100:200] = 40000
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.slow
def test_a_huge_16_bit_png_is_refused_or_decoded_within_a_stated_memory_bound(huge_16_bit_png):
    """Peak memory of the decode, measured as ru_maxrss in a fresh process. By default it is over
    the pixel budget and refused from its header; with a budget that admits it, it decodes in
    at most 5 bytes per pixel (the decoded 16-bit image is 2; the old decoder rose by 20)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    def measure(*args):
        res = subprocess.run([sys.executable, "-c", MEASURE, str(huge_16_bit_png), *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        outcome, rise = res.stdout.strip().splitlines()
        return outcome, int(rise)

    outcome, rise = measure()
    assert outcome == ("refused: 12000x12000 is 144,000,000 pixels, above the budget of 89,478,485 "
                       "(data.params.max_pixels)") and rise < 32 * 2**20
    outcome, rise = measure("200000000")
    assert outcome == "decoded" and rise < 5 * 12000 * 12000, rise


@pytest.mark.slow
def test_an_image_folder_names_the_file_over_the_budget(huge_16_bit_png, tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for label in ("a", "b"):
            folder = tmp_path / "photos" / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (20, 20), (60 * i, 0, 0)).save(folder / f"{i}.png")
    shutil.copy(huge_16_bit_png, tmp_path / "photos" / "train" / "a" / "huge.png")
    config = tmp_path / "photos.yaml"
    config.write_text(TINY.replace("RUNS", str(tmp_path / "runs")).replace(
        "dataset: shapes\n  params: {num_train: 1024, num_val: 128, image_size: 16, min_scale: 0.5, max_scale: 0.9}",
        f"dataset: image_folder\n  params: {{path: {tmp_path / 'photos'}, image_size: 16}}").replace(
        "batch_size: 64", "batch_size: 4"))
    res = run_cli("train", str(config))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "huge.png (12000x12000 is 144,000,000 pixels, above the budget" in res.stderr
    assert not (tmp_path / "runs").exists()


# -- what gets installed -----------------------------------------------------------------------------

def test_keras_floor_is_past_the_safe_mode_bypasses_and_setup_installs_the_tested_versions():
    import importlib.metadata
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    from tests.conftest import ROOT

    deps = {Requirement(d).name: Requirement(d) for d in
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    floor = min(Version(s.version) for s in deps["keras"].specifier if s.operator in (">=", "=="))
    assert floor >= Version("3.14")  # CVE-2025-1550, -8747, -9906, CVE-2026-0897, -1462
    assert all(s.operator not in ("==", "<=", "<") for r in deps.values() for s in r.specifier
               if r.name in ("tensorflow", "keras", "numpy"))  # pip install nnrun stays unpinned
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    assert Version(pins["keras"]) >= floor and {"tensorflow", "numpy", "optuna", "mkdocs"} <= set(pins)
    assert importlib.metadata.version("keras") == pins["keras"]  # this suite runs on the pinned versions
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
