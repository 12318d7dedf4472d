"""Token inputs: attributions over the token embedding, reported per token.

A model over integer token ids cannot be differentiated with respect to its input. As Captum's
LayerIntegratedGradients does, the explainers then work in embedding space: on the output e
(N, T, D) of the model's token `keras.layers.Embedding` (the one that consumes the integer
input; found in nested sub-models too, or as the `tokens` Embedding inside a custom layer), and
report per token sum_d (attribution over e)_d.

Keras functional graphs cannot be cut at a layer, so the embedding output is made injectable:
inside the traced function the Embedding instance's `call` is replaced by one that returns the
tensor we give it (and watch with a GradientTape). Everything else runs on the real token ids,
so a padding mask derived from them (`Embedding(mask_zero=True)` or `ops.not_equal(tokens, 0)`),
the position ids and a CLS token are exactly what the model computes for the real input.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from nnrun.errors import UsageError

# Explainers that work on token inputs; Grad-CAM and Grad-CAM++ need (H, W) feature maps.
TOKEN_METHODS = ("integrated-gradients", "gradient", "smoothgrad")
TOKEN_EMBEDDING_NAMES = ("token_embedding", "tokens", "token_embeddings", "embedding")


@dataclass
class TokenInputs:
    """A batch of token sequences and the embedding the explainers attribute over."""

    tokens: np.ndarray  # (N, T) int32 ids
    real: np.ndarray  # (N, T) bool: True where the token is not padding
    embeddings: np.ndarray  # (N, T, D) float32, what the model's token Embedding outputs (or a noisy copy)
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.tokens)


def is_integer(x) -> bool:
    return np.issubdtype(np.asarray(x).dtype, np.integer)


def looks_like_tokens(x) -> bool:
    """(N, T) integer data: token ids (the model decides for sure; this is the check without it)."""
    return is_integer(x) and np.ndim(x) == 2


def takes_tokens(model, x) -> bool:
    """Whether `x` are token ids for `model`: (N, T) integers into a single integer model input."""
    if not looks_like_tokens(x) or len(model.inputs) != 1:
        return False
    return np.issubdtype(np.dtype(str(model.inputs[0].dtype).replace("tf.", "")), np.integer)


# -- finding the token embedding ------------------------------------------------------------

def _consumers(model, tensor) -> list:
    """Layers of `model` called on `tensor` (the symbolic input) in `model`'s own graph."""
    found = []
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            if any(t is tensor for t in node.input_tensors):
                found.append(layer)
                break
    return found


def _sublayers(layer) -> list:
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=True))
    return [v for v in vars(layer).values() if hasattr(v, "call")]


def _pick(embeddings: list, where: str):
    if len(embeddings) == 1:
        return embeddings[0]
    named = [e for e in embeddings if e.name in TOKEN_EMBEDDING_NAMES]
    if len(named) == 1:
        return named[0]
    raise UsageError(f"{where} holds {len(embeddings)} Embedding layers ({', '.join(e.name for e in embeddings)}) "
                     f"and none is named {' or '.join(TOKEN_EMBEDDING_NAMES[:2])}: cannot tell the token embedding")


def _search(model, tensor, prefix: str = "") -> list[tuple[str, object]]:
    import keras

    found = []
    for layer in _consumers(model, tensor):
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.layers.Embedding):
            found.append((path, layer))
        elif isinstance(layer, keras.Model) and len(getattr(layer, "inputs", None) or []) == 1:
            found += _search(layer, layer.inputs[0], f"{path}/")
        else:  # a custom layer embedding the tokens itself, e.g. TokenAndPositionEmbedding.tokens
            inner = [sub for sub in _sublayers(layer) if isinstance(sub, keras.layers.Embedding)]
            if inner:
                chosen = _pick(inner, f"layer {path!r}")
                found.append((f"{path}/{chosen.name}", chosen))
    return found


def find_token_embedding(model) -> tuple[str, object]:
    """(path, layer): the keras.layers.Embedding that consumes the model's integer input."""
    if len(model.inputs) != 1:
        raise UsageError(f"model {model.name!r} has {len(model.inputs)} inputs; token explanations need one")
    found = _search(model, model.inputs[0])
    if not found:
        raise UsageError(f"model {model.name!r} takes integer inputs but no keras.layers.Embedding consumes them: "
                         "token attributions are computed over the token embedding")
    if len(found) > 1:
        paths, layers = [p for p, _ in found], [layer for _, layer in found]
        chosen = _pick(layers, f"model {model.name!r}")
        return paths[layers.index(chosen)], chosen
    return found[0]


@contextlib.contextmanager
def injected(layer, embeddings):
    """While active, `layer` (an Embedding) outputs `embeddings` instead of looking its inputs up.

    Only `call` is replaced: Keras' `__call__` around it still computes the layer's mask from the
    real token ids (`mask_zero=True`). Used inside a traced function, so it lasts one trace."""
    from keras import ops

    def call(*args, **kwargs):
        return ops.copy(ops.cast(embeddings, layer.compute_dtype))  # a fresh tensor for the mask metadata

    names = ["call"] + (["quantized_call"] if getattr(layer, "quantization_mode", None) else [])
    for name in names:
        layer.__dict__[name] = call  # an instance attribute shadows the class's method
    try:
        yield
    finally:
        for name in names:
            layer.__dict__.pop(name, None)


# -- the model seen from its embedding ------------------------------------------------------

class TokenModel:
    """`model` as a function of (token ids, token embeddings), with compiled gradients."""

    def __init__(self, model):
        self.model = model
        self.path, self.layer = find_token_embedding(model)
        self._fns: dict = {}

    def inputs(self, tokens: np.ndarray, pad_id: int, batch_size: int) -> TokenInputs:
        tokens = np.asarray(tokens, np.int32)
        return TokenInputs(tokens, tokens != pad_id, self.embed(tokens, batch_size), pad_id)

    def embed(self, tokens: np.ndarray, batch_size: int) -> np.ndarray:
        """What the token Embedding outputs for `tokens` (N, T) -> (N, T, D) float32."""
        return np.concatenate([np.asarray(self.layer(tokens[i:i + batch_size]), np.float32)
                               for i in range(0, len(tokens), batch_size)])

    def baseline(self, inp: TokenInputs, batch_size: int) -> np.ndarray:
        """The padding id's embedding at every real position; padding positions keep theirs (which
        is the same vector), and the model still sees the real ids, so its padding mask is unchanged."""
        return self.embed(np.where(inp.real, inp.pad_id, inp.tokens).astype(np.int32), batch_size)

    def gradient_fn(self, score):
        """A compiled (embeddings, targets, tokens) -> (scores, d score / d embeddings)."""
        if score not in self._fns:
            from nnrun.engine.runtime import import_tensorflow
            from nnrun.explain.score import target_score

            tf = import_tensorflow()
            model, layer = self.model, self.layer

            @tf.function(reduce_retracing=True)
            def fn(embeddings, targets, tokens):
                with tf.GradientTape() as tape:
                    tape.watch(embeddings)
                    with injected(layer, embeddings):
                        outputs = model(tokens, training=False)
                    total_scores = target_score(tf, outputs, targets, score)
                    total = tf.reduce_sum(total_scores)  # samples are independent (inference mode)
                return total_scores, tf.cast(tape.gradient(total, embeddings), tf.float32)

            self._fns[score] = fn
        return self._fns[score]

    def gradients(self, inp: TokenInputs, targets, score, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N,), gradients (N, T, D)) at `inp.embeddings`."""
        fn = self.gradient_fn(score)
        scores, grads = [], []
        for i in range(0, len(inp), batch_size):
            s, g = fn(inp.embeddings[i:i + batch_size], targets[i:i + batch_size], inp.tokens[i:i + batch_size])
            scores.append(s.numpy())
            grads.append(g.numpy())
        return np.concatenate(scores).astype(np.float64), np.concatenate(grads)


def per_token(values: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(N, T, D) -> (N, T): summed over the embedding dimension, exactly 0 at padding."""
    return np.where(real, np.asarray(values, np.float64).sum(axis=-1), 0.0).astype(np.float32)


def token_heatmap(raw: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Signed per-token attributions / their largest magnitude over the real tokens: [-1, 1], 0 at
    padding (an all-zero row stays zero)."""
    raw = np.where(real, np.asarray(raw, np.float32), 0.0)
    peak = np.abs(raw).max(axis=1, keepdims=True)
    return np.where(peak > 1e-12, raw / np.maximum(peak, 1e-12), 0.0).astype(np.float32)


def check_method(method: str, base: str | None) -> None:
    """Refuse, before TensorFlow loads, an explainer that has no token version."""
    wanted = base if method == "smoothgrad" and base else method
    if wanted not in TOKEN_METHODS:
        what = f"smoothgrad --base {wanted}" if method == "smoothgrad" else method
        raise UsageError(f"{what} needs convolutional (height, width) feature maps; this run's inputs are token "
                         f"sequences: use --method {', '.join(TOKEN_METHODS)} (attributions per token)")
