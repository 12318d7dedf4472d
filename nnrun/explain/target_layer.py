"""Find the conv layer to explain (also inside nested sub-models) and build input -> [A, scores].

Keras 3 cannot reach a layer inside a nested Functional sub-model through `.output` from the
outer graph, so for a nested layer we build the sub-model's own (input -> [A, output]) model and
re-run the outer graph with the sub-model replaced by it (`clone_model` with the original layers,
so weights are shared, and a `call_function` that captures A).
"""

from __future__ import annotations

import difflib

from nnrun.errors import UsageError


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _output_rank(layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError, TypeError):  # never called, or called more than once
        return None


def _paths(model, prefix: str = ""):
    """(path, [layer, ...]) for every layer, depth first; nested names are 'outer/inner'."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        yield path, [layer]
        if _is_model(layer):
            for inner, chain in _paths(layer, f"{path}/"):
                yield inner, [layer, *chain]


def find_layer(model, name: str | None) -> tuple[str, list]:
    """The chain of layers to `name` ('conv', or 'backbone/conv'); None: the last 4-D layer.

    A bare name is looked up in nested sub-models too. The layer must have a 4-D output.
    """
    import keras

    if name is None:
        chain = _last_4d(model)
        if chain is None:
            raise UsageError(f"model {model.name!r} has no layer with a 4-D output (batch, height, width, "
                             "channels); Grad-CAM needs a convolutional layer")
        return "/".join(layer.name for layer in chain), chain
    paths = dict(_paths(model))
    chain = paths.get(name) or next((c for p, c in paths.items() if p.split("/")[-1] == name), None)
    if chain is None:
        close = difflib.get_close_matches(name, list(paths), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"model {model.name!r} has no layer {name!r}{hint}")
    path = "/".join(layer.name for layer in chain)
    layer = chain[-1]
    if isinstance(layer, keras.layers.InputLayer) or _output_rank(layer) != 4:
        shape = tuple(layer.output.shape) if _output_rank(layer) else "undefined"
        raise UsageError(f"layer {path!r} has output shape {shape}, not 4-D (batch, height, width, channels)")
    return path, chain


def _last_4d(model) -> list | None:
    import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if _is_model(layer):
            inner = _last_4d(layer)
            if inner is not None:
                return [layer, *inner]
        elif _output_rank(layer) == 4:
            return [layer]
    return None


def activation_model(model, chain: list):
    """A Keras model x -> [activation of chain[-1], model output], sharing `model`'s weights."""
    import keras

    from nnrun.explain.base import single_output

    single_output(model)
    # Re-run the graph and capture the activation rather than use `layer.output`: that is only the
    # layer's first call, which for a layer shared with another model is not this graph's.
    sub = chain[0]
    inner = activation_model(sub, chain[1:]) if len(chain) > 1 else None
    captured = []

    def call(layer, *args, **kwargs):
        if layer is not sub:
            return layer(*args, **kwargs)
        if inner is None:
            out = layer(*args, **kwargs)
            captured.append(out)
            return out
        activation, out = inner(*args, **kwargs)
        captured.append(activation)
        return out

    if isinstance(model, keras.Sequential):  # call_function is for Functional models only
        inputs = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
        x = inputs
        for layer in model.layers:
            x = call(layer, x)
        return keras.Model(inputs, [captured[0], x])
    rebuilt = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    inputs = rebuilt.inputs[0] if len(rebuilt.inputs) == 1 else rebuilt.inputs  # no [inputs] nesting
    return keras.Model(inputs, [captured[0], rebuilt.outputs[0]])
