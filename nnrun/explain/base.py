"""What every explainer shares: the target score, batched input gradients, map normalisation.

An explainer turns images `x` (N, H, W, C) and per-image target classes (N,) into a raw
attribution (`attribute`) and a display heatmap (N, H, W) in [0, 1] (`heatmap`). Raw
attributions are averageable, which is what lets SmoothGrad wrap any explainer.

Token sequences (N, T) of integer ids into a model whose token `keras.layers.Embedding` consumes
them are explained in embedding space instead (see tokens.py): `attribute_tokens` returns one
signed attribution per token (N, T), 0 at padding, and the heatmap is that row over its largest
magnitude, in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnrun.explain.score import Score, target_score

EPS = 1e-12


@dataclass
class Explanation:
    raw: np.ndarray  # what `attribute` returned (saved as .npy)
    heatmap: np.ndarray  # (N, H, W) in [0, 1]; token inputs: (N, T) in [-1, 1], 0 at padding
    per_image: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. IG completeness error
    real: np.ndarray | None = None  # token inputs: (N, T) True where the token is not padding


class Explainer:
    """Base class; subclasses implement `attribute` and say what their raw output is."""

    raw_description = ""
    token_description = ""  # what `attribute_tokens` returns; empty: no token version

    def __init__(self, model):
        self.model = model
        self.info: dict = {}  # facts for the manifest (layer used, steps, baseline, ...)
        self._token_model = None

    def attribute(self, x: np.ndarray, targets: np.ndarray, batch_size: int) -> np.ndarray:
        raise NotImplementedError

    def heatmap(self, raw: np.ndarray) -> np.ndarray:
        """Pixel attributions (N, H, W, C) -> per-pixel magnitude summed over channels."""
        return normalise(np.abs(raw).sum(axis=-1))

    def per_image(self, x, targets, raw, batch_size) -> dict[str, np.ndarray]:
        return {}

    def explain(self, x: np.ndarray, targets: np.ndarray, batch_size: int = 32, pad_id: int = 0) -> Explanation:
        """Raw attributions, heatmaps and per-image figures; token ids go through `explain_tokens`."""
        from nnrun.explain.tokens import takes_tokens

        targets = np.asarray(targets, np.int32)
        if takes_tokens(self.model, x):
            return self.explain_tokens(np.asarray(x, np.int32), targets, batch_size, pad_id)
        x = np.asarray(x, np.float32)
        raw = self.attribute(x, targets, batch_size)
        return Explanation(raw, self.heatmap(raw), self.per_image(x, targets, raw, batch_size))

    # -- token inputs (tokens.py) --------------------------------------------------------------

    @property
    def token_model(self):
        from nnrun.explain.tokens import TokenModel

        if self._token_model is None:
            self._token_model = TokenModel(self.model)
        return self._token_model

    def explain_tokens(self, tokens: np.ndarray, targets: np.ndarray, batch_size: int, pad_id: int) -> Explanation:
        from nnrun.explain.tokens import token_heatmap

        inp = self.token_model.inputs(tokens, pad_id, batch_size)
        raw = self.attribute_tokens(inp, targets, batch_size)
        self.info.update({"input": "tokens", "embedding_layer": self.token_model.path, "pad_id": int(pad_id)})
        if self.token_description:
            self.raw_description = self.token_description
        return Explanation(raw, token_heatmap(raw, inp.real), self.per_token(inp, targets, raw, batch_size), inp.real)

    def attribute_tokens(self, inp, targets: np.ndarray, batch_size: int) -> np.ndarray:
        """TokenInputs -> (N, T) attributions per token, exactly 0 at padding."""
        from nnrun.errors import UsageError

        raise UsageError(f"{type(self).__name__} does not explain token sequences")

    def per_token(self, inp, targets, raw, batch_size) -> dict[str, np.ndarray]:
        return {}


def normalise(maps: np.ndarray) -> np.ndarray:
    """Min-max each map to [0, 1]; a constant map becomes all zeros (never NaN)."""
    maps = np.asarray(maps, np.float32)
    axes = tuple(range(1, maps.ndim))
    low = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - low
    return np.where(span > EPS, (maps - low) / np.maximum(span, EPS), 0.0).astype(np.float32)


def single_output(model):
    from nnrun.errors import UsageError

    if len(model.outputs) != 1:
        raise UsageError(f"model {model.name!r} has {len(model.outputs)} outputs; explainers need one (class scores)")
    return model.outputs[0]


def gradient_fn(model, score: Score):
    """A compiled function (x, targets) -> (scores, d score / d x), samples independent.

    `training=False` keeps BatchNorm in inference mode, so a batch gives exactly the gradients of
    its samples one by one and the gradient of the summed scores is every sample's own gradient.
    """
    from nnrun.engine.runtime import import_tensorflow

    tf = import_tensorflow()

    @tf.function(reduce_retracing=True)
    def fn(x, targets):
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = target_score(tf, model(x, training=False), targets, score)
            total = tf.reduce_sum(scores)  # inside the tape, or it is not recorded
        return scores, tf.cast(tape.gradient(total, x), tf.float32)

    return fn


def outputs_of(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Model outputs (float32 logits) in batches; direct calls, not `predict` (no tf.data noise)."""
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False), np.float32)
                           for i in range(0, len(x), batch_size)])


def scores_of(model, x: np.ndarray, targets: np.ndarray, score: Score, batch_size: int) -> np.ndarray:
    """Target scores of `x` in batches, without gradients."""
    from nnrun.engine.runtime import import_tensorflow

    tf = import_tensorflow()
    return target_score(tf, outputs_of(model, x, batch_size), targets, score).numpy().astype(np.float64)


def validate_options(component, values: dict):
    """Validate command-line options as `component`'s params; errors name the option."""
    from pydantic import ValidationError

    from nnrun.errors import UsageError

    try:
        return component.params.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        option = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else "options"
        if error["type"] == "extra_forbidden":
            raise UsageError(f"{option} does not apply to the {component.name} explainer") from None
        raise UsageError(f"{option}: {error['msg']}") from None
