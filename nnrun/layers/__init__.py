"""Keras objects (layers, a loss, a metric) that nnrun's components build.

These modules import keras at the top, so import them lazily (inside builders). Each class is
registered with `keras.saving.register_keras_serializable(package="nnrun")`, so `.keras`
checkpoints reload with `safe_mode=True` once the module is imported (`nnrun.layers.load_all`).
"""


def load_all() -> None:
    """Import every module here, registering the classes for checkpoint loading."""
    from nnrun.layers import attention, pairs  # noqa: F401
