"""tf.distribute strategies from `runtime.strategy`, TF_CONFIG, chief detection, worker dirs.

The batch size in the config is global: under N replicas each replica computes
batch_size / N examples per step (tf.distribute splits every batch). `runtime.lr_scaling:
linear` multiplies the learning rate by N (Goyal et al. 2017), for when batch_size was grown
with the number of replicas.

multi_worker: Keras 3.15 `fit` under MultiWorkerMirroredStrategy fails (keras-team/keras#20585):
(1) `_maybe_symbolic_build` reduces a distributed data batch eagerly, which cannot be converted
to a tensor; (2) `reduce_per_replica` reduces every step output with axis=0, which is invalid
for the scalar metric results. `_patch_keras_for_multi_worker` fixes both narrowly, and only
once a multi-worker strategy exists: (1) is skipped when the model is already fully built
(nnrun builds model, optimizer, loss and metrics from a local batch before fit), and (2)
reduces rank-0 values with axis=None (an all-reduce mean across workers), rank >= 1 as before.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from nnrun.errors import ConfigError, first_line

_current = None  # (resolved name, strategy) this process built, recorded in run.json


def tf_config() -> dict:
    """The parsed TF_CONFIG environment variable ({} when unset)."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON: {exc}", "runtime.strategy") from None
    if not isinstance(value, dict) or "cluster" not in value or "task" not in value:
        raise ConfigError("TF_CONFIG needs 'cluster' and 'task' keys", "runtime.strategy")
    return value


def task() -> tuple[str, int]:
    spec = tf_config().get("task", {})
    return str(spec.get("type", "worker")), int(spec.get("index", 0))


def is_chief() -> bool:
    """The chief writes the run directory: task type "chief", or worker 0 when there is none."""
    config = tf_config()
    if not config:
        return True
    kind, index = task()
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in config["cluster"]


def configure_devices(cfg, tf) -> None:
    """Before TensorFlow initialises its runtime: split the CPU into logical devices."""
    n = cfg.runtime.cpu_devices
    if not n:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:  # already initialised in this process: keep what it has
        pass


def strategy_for(cfg, tf):
    """The tf.distribute strategy named by runtime.strategy."""
    global _current
    name = cfg.runtime.strategy
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto" and len(gpus) <= 1:
        # One device: TensorFlow's default strategy, as a hand-written loop uses; OneDeviceStrategy
        # would wrap every step and the input in distribution machinery for nothing.
        _current = ("default", tf.distribute.get_strategy())
        return _current[1]
    if name == "auto":
        name = "mirrored"
    if name == "multi_worker" and not tf_config():
        # Also reached by evaluate/export/explain of a multi-worker run: they need one device.
        print("nnrun: runtime.strategy multi_worker without TF_CONFIG: running on this machine alone",
              file=sys.stderr)
        name = "one_device"
    if name == "one_device":
        logical = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.OneDeviceStrategy(logical[0].name if logical else "/cpu:0")
    elif name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _patch_keras_for_multi_worker()
    elif name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as exc:
            raise ConfigError(f"no TPU found: {first_line(exc)}",
                              "runtime.strategy") from None
        strategy = tf.distribute.TPUStrategy(resolver)
    else:  # the schema's Literal makes this unreachable
        raise ConfigError(f"unknown strategy {name!r}", "runtime.strategy")
    _current = (name, strategy)
    return strategy


def lr_factor(cfg, strategy) -> float:
    """Learning-rate multiplier of runtime.lr_scaling for this strategy's replica count."""
    return float(strategy.num_replicas_in_sync) if cfg.runtime.lr_scaling == "linear" else 1.0


def describe() -> dict:
    """What run.json records about distribution."""
    if _current is None:
        return {}
    name, strategy = _current
    record = {"strategy": name, "class": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync)}
    try:
        devices = strategy.extended.worker_devices
    except (AttributeError, RuntimeError):  # the default strategy has none to report
        devices = None
    if devices:
        record["devices"] = list(devices)
    if tf_config():
        kind, index = task()
        record["task"] = {"type": kind, "index": index, "chief": is_chief(),
                          "workers": sum(len(v) for v in tf_config()["cluster"].values())}
    return record


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def check_same_position(strategy, position: dict | None) -> None:
    """Under multi_worker, every worker must start from the same backup (`position`; None: a new
    run, or no backup): a whole-job kill can land between two workers' epoch-end saves, or one
    worker may be started without --resume, and their collectives would then not match. Every
    worker computes the same sums of the positions and their squares, so all of them see a
    mismatch and stop with the same message."""
    if not is_multi_worker(strategy):
        return
    import tensorflow as tf

    n = strategy.num_replicas_in_sync
    local = [1.0, float(position["epoch"]), float(position["step"])] if position else [0.0, 0.0, 0.0]
    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(local + [v * v for v in local], tf.float64))
    sums = strategy.reduce("SUM", values, axis=None).numpy()
    if any(n * sums[3 + i] != sums[i] ** 2 for i in range(3)):
        from nnrun.errors import RunFailed

        mine = f"epoch {position['epoch']}, step {position['step']}" if position else "no backup"
        raise RunFailed(f"the workers start from different backups (this one: {mine}); nothing was changed. "
                        f"Every worker's state is the same at an epoch end: copy the newest worker's "
                        f"checkpoints/backup and metrics.jsonl over the others' and resume every worker")


def worker_runs_root(cfg) -> str:
    """Where this process writes run files: runs_root on the chief; elsewhere on other workers.

    Every worker runs the same callbacks (checkpoint and backup saves read synchronised
    variables, which are collective operations all workers must join), but only the chief's
    files are the run: other workers write to NNRUN_WORKER_DIR, or a fresh temporary directory.
    """
    if is_chief():
        return cfg.runtime.runs_root
    kind, index = task()
    return os.environ.get("NNRUN_WORKER_DIR") or tempfile.mkdtemp(prefix=f"nnrun-{kind}{index}-")


_patched = False


def _patch_keras_for_multi_worker() -> None:
    """Work around keras-team/keras#20585 (see the module docstring); idempotent."""
    global _patched
    if _patched:
        return
    import tensorflow as tf
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def reduce(v):
                local = strategy.experimental_local_results(v)[0] if isinstance(
                    v, tf.distribute.DistributedValues) else v
                return strategy.reduce("MEAN", v, axis=None if local.shape.rank == 0 else 0)

            return tree.map_structure(reduce, values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        built = (all(layer.built for layer in self._flatten_layers())
                 and (self.optimizer is None or self.optimizer.built)
                 and (self._compile_metrics is None or self._compile_metrics.built)
                 and (self._compile_loss is None or self._compile_loss.built))
        if built and tf_trainer._collective_all_reduce_multi_worker(self.distribute_strategy):
            return  # nothing to build; the original would fail reducing the distributed batch
        return original_build(self, iterator=iterator, data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _patched = True


def callbacks(strategy, model) -> list:
    """Callbacks a strategy needs; under multi_worker, `SyncLocalVariables` (why: its docstring)."""
    if not is_multi_worker(strategy):
        return []
    import keras
    import tensorflow as tf

    class SyncLocalVariables(keras.callbacks.Callback):
        """Average the non-trainable model variables (BatchNorm moving statistics) across workers
        before validation and at every epoch end, so every worker evaluates, checkpoints and ends
        with identical weights. Keras creates them with aggregation "none", so under
        MultiWorkerMirroredStrategy each worker updates them from its own shard only. The moving
        averages are linear in the batch statistics and start equal, so averaging them at sync
        points equals averaging the batch statistics at every step (what MirroredStrategy's
        "mean" aggregation would do), at a fraction of the communication."""

        def __init__(self):
            super().__init__()
            self.variables = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

            def replica_fn():
                values = [tf.identity(v.value) for v in self.variables]
                return tf.distribute.get_replica_context().all_reduce("MEAN", values)

            self._reduce = tf.function(lambda: strategy.run(replica_fn))

        def sync(self):
            if not self.variables:
                return
            averaged = strategy.experimental_local_results(self._reduce())[0]
            for variable, value in zip(self.variables, averaged):
                variable.assign(value)

        def on_test_begin(self, logs=None):
            self.sync()

        def on_epoch_end(self, epoch, logs=None):
            self.sync()

    return [SyncLocalVariables()]
