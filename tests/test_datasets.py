"""Built-in data sets of issue 3: sequences (order-labelled), pairs, imbalanced shapes. No TF."""

from __future__ import annotations

import numpy as np
import pytest

from nnrun.components.data import pairs, sequences, shapes
from nnrun.components.data.sequences import PAD, TOKEN_A, TOKEN_B, SequencesParams, order_label


def test_sequences_are_padded_seeded_and_labelled_by_order():
    p = SequencesParams(min_length=5, max_length=20, vocab_size=12, seed=3)
    split = sequences.generate(2000, p, 0)
    x, y = split.x, split.y
    assert x.shape == (2000, 20) and x.dtype == np.int32
    lengths = (x != PAD).sum(axis=1)
    assert lengths.min() >= 5 and lengths.max() <= 20
    assert np.all((x != PAD) == (np.arange(20)[None] < lengths[:, None]))  # padding only at the end
    assert np.all((x == TOKEN_A).sum(1) == 1) and np.all((x == TOKEN_B).sum(1) == 1)
    assert x.max() < 12
    np.testing.assert_array_equal(y, order_label(x))
    assert y.mean() == 0.5
    np.testing.assert_array_equal(sequences.generate(2000, p, 0).x, x)  # seeded
    assert not np.array_equal(sequences.generate(2000, p, 1).x, x)  # splits differ


def test_sequence_labels_are_not_a_function_of_the_token_multiset():
    """Swapping A and B keeps the multiset and flips the label, and both orders are equally
    likely, so P(label | multiset) = 1/2: any bag-of-tokens classifier scores 50% on the
    pairs {x, swap(x)}. (A trained bag-of-tokens transformer reaches ~0.52, see README.)"""
    split = sequences.generate(1000, SequencesParams(), 1)
    swapped = np.where(split.x == TOKEN_A, TOKEN_B, np.where(split.x == TOKEN_B, TOKEN_A, split.x))
    np.testing.assert_array_equal(np.sort(swapped, axis=1), np.sort(split.x, axis=1))
    np.testing.assert_array_equal(order_label(swapped), 1 - split.y)
    # and both orders really occur at every distance between A and B (no positional shortcut)
    gap = np.argmax(split.x == TOKEN_B, 1) - np.argmax(split.x == TOKEN_A, 1)
    for distance in (1, 2, 3):
        assert np.any(gap == distance) and np.any(gap == -distance)


def test_bag_of_tokens_model_cannot_beat_chance_on_swapped_pairs():
    keras = pytest.importorskip("keras")
    from nnrun.components.data.base import DataBundle
    from nnrun.components.models import transformer

    keras.utils.set_random_seed(0)
    data = DataBundle({}, (24,), 2, meta={"vocab_size": 16, "max_length": 24})
    bag = transformer.build(transformer.TransformerParams(num_layers=0, positions=False, pooling="mean"), data)
    split = sequences.generate(256, SequencesParams(), 1)
    swapped = np.where(split.x == TOKEN_A, TOKEN_B, np.where(split.x == TOKEN_B, TOKEN_A, split.x))
    pred, pred_swapped = (np.argmax(np.asarray(bag(x)), axis=1) for x in (split.x, swapped))
    np.testing.assert_array_equal(pred, pred_swapped)  # same multiset, same prediction, for any weights
    accuracy = np.mean(np.concatenate([pred == split.y, pred_swapped == 1 - split.y]))
    assert accuracy == 0.5


def test_shapes_class_balance_makes_it_imbalanced():
    p = shapes.ShapesParams(classes=["circle", "square", "triangle"], class_balance=[0.9, 0.05, 0.05],
                            image_size=16)
    y = shapes.generate(4000, p, 0).y
    np.testing.assert_allclose(np.bincount(y, minlength=3) / 4000, [0.9, 0.05, 0.05], atol=0.015)


def shape_class(areas: np.ndarray, radius: float) -> np.ndarray:
    """Class index from an object's pixel area at a known radius r (shapes.py geometry): circle
    pi r^2, square (1.6 r)^2, triangle 1.75 r^2, cross 2.04 r^2."""
    expected = np.array([np.pi, 2.56, 1.75, 2.04]) * radius**2
    return np.argmin(np.abs(areas[..., None] - expected), axis=-1)


def test_shapes_generate_honours_given_labels():
    p = shapes.ShapesParams(image_size=64, noise=0.0, min_scale=0.6, max_scale=0.6)
    labels = np.array([0, 1, 2, 3] * 5)
    split = shapes.generate(0, p, 5, labels=labels)
    np.testing.assert_array_equal(split.y, labels)
    np.testing.assert_array_equal(shape_class(split.masks.sum(axis=(1, 2)), 0.3 * 64), labels)


def test_pairs_are_same_or_different_class_images():
    p = pairs.PairsParams(num_train=400, num_val=100, image_size=16, same_fraction=0.3, seed=2)
    data = pairs.build(p)
    train = data.split("train")
    assert data.task == "pairs" and train.x.shape == (400, 2, 16, 16, 3) and data.input_shape == (2, 16, 16, 3)
    assert train.y.mean() == pytest.approx(0.3) and set(np.unique(train.y)) == {0, 1}
    np.testing.assert_array_equal(pairs.build(p).split("train").x, train.x)  # seeded
    assert not np.array_equal(train.x[:, 0], train.x[:, 1])


def test_pairs_same_label_means_same_shape_class():
    # noise 0 and one object size: the object's pixel area identifies its class
    p = pairs.PairsParams(num_train=120, num_val=10, image_size=64, noise=0.0, min_scale=0.6, max_scale=0.6)
    split = pairs.generate(120, p, 0)
    img = split.x  # object and background colours differ by > 0.3 in every channel
    area = (np.abs(img - img[:, :, :1, :1, :]).max(axis=-1) > 0.15).sum(axis=(2, 3))  # (N, 2)
    classes = shape_class(area, 0.3 * 64)
    np.testing.assert_array_equal(classes[:, 0] == classes[:, 1], split.y == 1)
