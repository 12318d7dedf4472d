"""TensorBoard HParams: a sweep directory's experiment config and each trial's session, read
back with TensorBoard's own event readers and hparams plugin parsers."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli
from tests.test_sweep import make_sweep


def _hparams_content(logdir: Path) -> tuple[dict, object]:
    """{run: {tag: plugin content}} of the hparams plugin under logdir, and the multiplexer."""
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    return mux.PluginRunToTagToContent("hparams"), mux


def test_a_sweep_shows_its_trials_in_the_hparams_dashboard(tmp_path):
    from tensorboard.plugins.hparams import metadata

    path = make_sweep(tmp_path, "grid: {optimizer.learning_rate: [0.01, 0.02]}\n")
    res = run_cli("sweep", str(path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    sweep_dir = Path(res.stdout.strip().splitlines()[-1])
    content, mux = _hparams_content(sweep_dir)

    experiment = metadata.parse_experiment_plugin_data(content["."][metadata.EXPERIMENT_TAG])
    assert [h.name for h in experiment.hparam_infos] == ["seed", "optimizer.learning_rate"]
    (metric,) = experiment.metric_infos
    assert (metric.name.group, metric.name.tag, metric.display_name) == ("validation", "epoch_accuracy", "val_accuracy")

    sessions = {run: metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
                for run, tags in content.items() if metadata.SESSION_START_INFO_TAG in tags}
    assert len(sessions) == 2
    rates = sorted(s.hparams["optimizer.learning_rate"].number_value for s in sessions.values())
    assert rates == [0.01, 0.02]
    for run, session in sessions.items():
        assert run.endswith("/tensorboard") and session.hparams["train.techniques"].string_value == "none"
        assert session.hparams["model.params.stages"].string_value == "[4]"
        assert session.group_name == Path(run).parent.name  # the run directory's id
        # The metric the experiment names is where the dashboard looks: session run + group, tag.
        assert len(mux.Tensors(f"{run}/{metric.name.group}", metric.name.tag)) == 1  # one epoch
