"""Shared classifier head: logits computed in float32 whatever the dtype policy."""


def logits_head(x, num_classes: int, dropout: float = 0.0):
    import keras

    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # float32 so softmax/loss stay stable under mixed precision; logits (no softmax) so
    # Grad-CAM and losses see pre-softmax scores.
    return keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
