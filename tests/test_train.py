"""End-to-end training on built-in data: the run directory, its files, repeatability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow


def read_events(directory: Path) -> dict[str, list[float]]:
    """Scalars from TensorBoard event files, read with TensorFlow's own summary reader."""
    import tensorflow as tf

    scalars: dict[str, list[float]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                scalars.setdefault(value.tag, []).append(number)
    return scalars


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run through the real CLI, shared by the tests below."""
    from tests.conftest import TINY, run_cli

    tmp = tmp_path_factory.mktemp("train")
    config = tmp / "tiny.yaml"
    config.write_text(TINY.replace("RUNS", str(tmp / "runs")))
    res = run_cli("train", str(config), cwd=tmp)
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1]), res, config


def test_last_stdout_line_is_the_run_directory(trained):
    run, res, _ = trained
    assert run.is_dir() and run.parent.name == "tiny"
    assert res.stdout.strip().splitlines() == [str(run)]  # not a terminal: quiet


def test_run_directory_holds_every_artefact(trained):
    run, _, _ = trained
    for rel in ("config.yaml", "run.json", "metrics.jsonl", "checkpoints/best.keras", "checkpoints/last.keras",
                "plots/learning_curves.png"):
        assert (run / rel).is_file() and (run / rel).stat().st_size > 0, rel
    assert (run / "plots/learning_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_json_records_the_run(trained):
    run, _, _ = trained
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "completed" and record["reason"] is None
    assert record["argv"][1:3] == ["train", str(trained[2])]
    assert set(record["versions"]) >= {"python", "tensorflow", "keras", "nnrun"}
    assert record["device"]["accelerator"] in ("cpu", "gpu")
    assert record["seed"] == 1 and len(record["config_hash"]) == 64
    assert record["epochs_completed"] == 3 and record["wall_time_s"] > 0
    final = record["final_metrics"]
    assert set(final) >= {"accuracy", "loss", "val_accuracy", "val_loss"}
    assert final["val_accuracy"] > 0.6  # 4 balanced classes: chance is 0.25


def test_metrics_jsonl_has_one_row_per_epoch(trained):
    run, _, _ = trained
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["step"] for r in rows] == [16, 32, 48]  # 1024 / 64 per epoch
    for row in rows:
        assert row["split"] == "train"
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(row)
    assert rows[-1]["val_accuracy"] == json.loads((run / "run.json").read_text())["final_metrics"]["val_accuracy"]


def test_config_yaml_is_resolved_and_rerunnable(trained):
    from nnrun.config import config_hash, load_config

    run, _, _ = trained
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["params"]["block"] == "basic"  # defaults written out
    record = json.loads((run / "run.json").read_text())
    assert config_hash(load_config(run / "config.yaml")) == record["config_hash"]


def test_tensorboard_events_are_readable(trained):
    run, _, _ = trained
    train = read_events(run / "tensorboard" / "train")
    val = read_events(run / "tensorboard" / "validation")
    assert len(train["epoch_loss"]) == 3 and len(val["epoch_loss"]) == 3
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert train["epoch_loss"] == pytest.approx([r["loss"] for r in rows], rel=1e-5)


def test_evaluate_and_runs_table(trained, cli):
    run, _, _ = trained
    res = cli("evaluate", str(run), "--json")
    assert res.returncode == 0, res.stderr
    scores = json.loads(res.stdout)
    record = json.loads((run / "run.json").read_text())
    assert scores["accuracy"] == pytest.approx(record["final_metrics"]["best_val_accuracy"], abs=1e-6)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["split"] == "val" and last["checkpoint"] == "best"
    listing = cli("runs", str(run.parents[1]), "--json")
    assert [r["path"] for r in json.loads(listing.stdout)] == [str(run)]
    table = cli("runs", str(run.parents[1]))
    assert "completed" in table.stdout and run.name in table.stdout


def test_deterministic_runs_are_bit_identical(trained, cli):
    run, _, config = trained
    again = cli("train", str(config))
    assert again.returncode == 0, again.stderr
    other = Path(again.stdout.strip().splitlines()[-1])
    assert other != run  # never overwritten: a new directory

    def metrics(path):
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("epoch_time_s", "train_time_s")} for r in rows if r["split"] == "train"]

    assert metrics(run) == metrics(other)


def test_a_failed_pipeline_assertion_is_reported_by_its_own_message():
    import tensorflow as tf

    from nnrun.engine.train import failure_reason

    message = ("Graph execution error:\n\nDetected at node image_folder_decode\nassertion failed: "
               "[image_folder: cannot decode /data/x.png: truncated file]\n\t [[{{node Assert}}]]")
    assert failure_reason(tf.errors.InvalidArgumentError(None, None, message)) == \
        "image_folder: cannot decode /data/x.png: truncated file"
    assert failure_reason(ValueError("bad\nmore")) == "ValueError: bad"


def test_steps_per_execution_trains_the_same_epochs(trained, cli):
    """4 batches per compiled call over 16-batch epochs: every epoch sees exactly its own
    batches, so the metrics equal the one-batch-per-call run's (op determinism on)."""
    run, _, config = trained
    res = cli("train", str(config), "--set", "train.steps_per_execution=4")
    assert res.returncode == 0, res.stderr
    assert "ran out of data" not in res.stderr

    def metrics(path):
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("epoch_time_s", "train_time_s")} for r in rows
                if r["split"] == "train"]  # (another test appends an evaluate row to `run`)

    assert metrics(Path(res.stdout.strip().splitlines()[-1])) == metrics(run)


def test_steps_per_execution_that_splits_an_epoch_is_refused(trained, cli):
    """Keras would let each epoch's last call run into the next epoch's batches, and the input
    would run out before the last epoch ends (found by the ResNet-20 benchmark)."""
    _, _, config = trained
    runs = config.parent / "runs"
    before = sorted(runs.rglob("run.json"))
    res = cli("train", str(config), "--set", "train.steps_per_execution=3")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("config error: train.steps_per_execution: 3 does not divide "
                                                          "the 16 batches of an epoch")
    assert "use one of 1, 2, 4, 8, 16" in res.stderr
    assert sorted(runs.rglob("run.json")) == before
