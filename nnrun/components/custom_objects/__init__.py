"""Keras custom objects that nnrun's components build: the additive attention layer
(attention.py), and the siamese pairs' distance, contrastive loss and pair metric (pairs.py).

These modules import keras at the top, so import them lazily (inside builders). Each class is
registered with `keras.saving.register_keras_serializable(package="nnrun")`, so `.keras`
checkpoints reload with `safe_mode=True` once the module is imported (`load_all`). Keras finds
registered classes by their registered name, so checkpoints saved before this package moved
(as nnrun.layers) still load.
"""


def load_all() -> None:
    """Import every module here, registering the classes for checkpoint loading."""
    from nnrun.components.custom_objects import attention, pairs  # noqa: F401
