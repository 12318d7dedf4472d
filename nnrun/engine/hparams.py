"""TensorBoard's HParams dashboard: every run writes its config values into its tensorboard/
folder, beside the per-epoch metrics Keras' TensorBoard callback logs there; a sweep or search
directory writes the experiment config, which names the swept keys and the monitored metric.
So `tensorboard --logdir` on a sweep directory lists its trials in the HParams tab with their
values and that metric (on a plain runs root, TensorBoard infers the metrics it finds).

Written with TensorBoard's own protos and event writer, not tf.summary: a sweep supervisor
never imports TensorFlow (4-5 s), and tensorboard.plugins.hparams.summary_v2 imports it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

EXPERIMENT_SUFFIX = ".hparams-experiment"
SESSION_SUFFIX = ".hparams"


def metric_name(monitor: str) -> tuple[str, str]:
    """(group, tag) under which Keras' TensorBoard callback logs `monitor` per epoch: val_x is
    epoch_x in the validation/ folder, anything else epoch_x in train/."""
    if monitor.startswith("val_"):
        return "validation", f"epoch_{monitor[4:]}"
    return "train", f"epoch_{monitor}"


def run_values(cfg) -> dict[str, bool | int | float | str]:
    """The resolved config flattened to dotted keys, as HParams values: numbers, booleans and
    strings as they are, lists and nulls as JSON text; `train.techniques` also as one value,
    the technique names (what an ablation varies)."""
    from nnrun.config import flatten

    raw = cfg.model_dump(mode="json", by_alias=True)
    values: dict = {}
    for key, value in flatten(raw).items():
        if key.startswith("runtime."):
            continue  # where and how it ran, not what
        values[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    values["train.techniques"] = ",".join(sorted(raw["train"].get("techniques") or {})) or "none"
    return values


def _event_writer(directory: Path, suffix: str):
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    directory.mkdir(parents=True, exist_ok=True)
    return EventFileWriter(str(directory), filename_suffix=suffix)


def _write(directory: Path, suffix: str, tag: str, plugin_data) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import metadata

    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(plugin_data), tensor=metadata.NULL_TENSOR)
    writer = _event_writer(directory, suffix)
    writer.add_event(event_pb2.Event(wall_time=time.time(), summary=summary))
    writer.close()


def write_run(tensorboard_dir: Path, cfg, trial_id: str) -> None:
    """The run's session: its values (run_values) under its own trial id. Written when the run
    is created (engine.train); a resumed run keeps the session it started with."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(group_name=trial_id, start_time_secs=time.time())
    for key, value in sorted(run_values(cfg).items()):
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[key].number_value = value
        else:
            info.hparams[key].string_value = value
    from tensorboard.plugins.hparams import metadata

    _write(Path(tensorboard_dir), SESSION_SUFFIX, metadata.SESSION_START_INFO_TAG,
           plugin_data_pb2.HParamsPluginData(session_start_info=info))


def write_experiment(directory: Path, swept: list[str], metric: str) -> None:
    """The experiment config of a sweep or search directory: the swept keys (a swept
    `train.techniques`, as nnrun ablate sweeps it, is the technique list) and the metric."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    directory = Path(directory)
    for old in directory.glob(f"events.out.tfevents.*{EXPERIMENT_SUFFIX}"):
        old.unlink()  # one experiment config: the newest sweep file's
    group, tag = metric_name(metric)
    names = list(dict.fromkeys(["seed", *swept]))
    experiment = api_pb2.Experiment(
        hparam_infos=[api_pb2.HParamInfo(name=name) for name in names],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(group=group, tag=tag), display_name=metric)],
        time_created_secs=time.time())
    _write(directory, EXPERIMENT_SUFFIX, metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))
