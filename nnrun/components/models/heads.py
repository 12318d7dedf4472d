"""Shared classifier head: logits computed in float32 whatever the dtype policy.

Its layers' names mark the head: `finetune` trains them alone first, and `model.init_from`
re-creates them when the class count changes (their shapes differ, so nothing is loaded).
"""

HEAD_LAYERS = ("head_dropout", "logits")


def logits_head(x, num_classes: int, dropout: float = 0.0):
    import keras

    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # float32 so softmax/loss stay stable under mixed precision; logits (no softmax) so
    # Grad-CAM and losses see pre-softmax scores.
    return keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
