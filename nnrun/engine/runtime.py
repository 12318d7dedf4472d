"""TensorFlow process setup: quiet logs, threads, seeds, determinism, precision, strategy.

Everything that must happen before TensorFlow initialises its runtime lives here, so the
rest of the engine can assume a configured process.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys

from nnrun.config import RunConfig


@contextlib.contextmanager
def _silenced_stderr():
    """Silence file descriptor 2: TF's C++ logs its start-up chatter there before absl is
    initialised, where TF_CPP_MIN_LOG_LEVEL does not reach. NNRUN_TF_LOGS=1 shows it."""
    if os.environ.get("NNRUN_TF_LOGS"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    """Import TensorFlow (and initialise its devices) without the start-up log noise."""
    # 3: TF's C++ errors that matter surface as Python exceptions; its level-2 lines here are noise
    # (e.g. a tf.data attribute warning logged at error level). NNRUN_TF_LOGS=1 shows everything.
    if not os.environ.get("NNRUN_TF_LOGS"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with _silenced_stderr():
        import keras  # noqa: F401 - imported here so its start-up logs are silenced too
        import tensorflow as tf

        tf.config.list_physical_devices()
    tf.get_logger().setLevel("ERROR")
    return tf


def setup(cfg: RunConfig):
    """Configure threads, seeds, determinism and dtype policy; return the distribution strategy."""
    tf = import_tensorflow()
    import keras

    if cfg.runtime.threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cfg.runtime.threads)
            tf.config.threading.set_inter_op_parallelism_threads(cfg.runtime.threads)
        except RuntimeError:
            pass  # runtime already initialised in this process (tests); keep its settings
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    from nnrun.engine import distribute

    distribute.configure_devices(cfg, tf)
    strategy = strategy_for(cfg, tf)  # before any op: MultiWorkerMirroredStrategy requires it
    keras.utils.set_random_seed(cfg.seed)
    if cfg.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    from nnrun.components.techniques.mixed_precision import effective_precision

    keras.config.set_dtype_policy(effective_precision(cfg.train))
    return strategy


def strategy_for(cfg: RunConfig, tf):
    from nnrun.engine import distribute

    return distribute.strategy_for(cfg, tf)


def versions_and_device() -> dict:
    import keras
    import numpy
    import tensorflow as tf

    from nnrun.engine import distribute

    gpus = tf.config.list_physical_devices("GPU")
    return {
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": numpy.__version__,
        },
        "device": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "gpus": [g.name for g in gpus],
            "accelerator": "gpu" if gpus else "cpu",
            "distribution": distribute.describe(),
        },
    }
