"""Real data sources (image_folder, npz, tfds), shared preprocessing and the augment technique."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from nnrun.components.data import image_folder, npz
from nnrun.config import load_config
from nnrun.errors import ConfigError
from tests.conftest import run_cli

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def make_folder(root: Path, per_class: int = 40, layout: str = "train_val") -> Path:
    """Two easy colour classes as PNG/JPEG files of varied sizes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    parts = ("train", "val") if layout == "train_val" else ("",)
    for part in parts:
        for name, colour in COLOURS.items():
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(per_class if part != "val" else per_class // 4):
                h, w = rng.integers(12, 40, 2)
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder_resizes_and_labels_by_subfolder(tmp_path):
    root = make_folder(tmp_path / "imgs")
    data = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=16))
    train, val = data.split("train"), data.split("val")
    assert data.class_names == ["blue", "red"] and data.input_shape == (16, 16, 3)
    assert train.x.shape == (80, 16, 16, 3) and val.x.shape == (20, 16, 16, 3) and train.x.dtype == np.uint8
    assert data.preprocess == {"rescale": 1 / 255, "mean": None, "std": None}  # applied by the model
    red = preprocessed(data, train.x[train.y == 1])
    assert red[..., 0].mean() > 0.7 and red[..., 2].mean() < 0.3


def preprocessed(data, x):
    """What the model's first layers make of raw inputs `x` (the data set's preprocessing)."""
    import keras

    from nnrun.components.models.inputs import preprocess_layers

    inputs = keras.Input(shape=x.shape[1:])
    return np.asarray(keras.Model(inputs, preprocess_layers(inputs, data.preprocess))(x.astype(np.float32)))


def test_image_folder_reports_corrupt_files_by_name(tmp_path):
    root = make_folder(tmp_path / "imgs")
    (root / "train" / "red" / "notes.txt").write_text("not an image")
    (root / "train" / "blue" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    with pytest.raises(ConfigError, match=r"2 file\(s\) are not readable images: .*broken.png.*notes.txt"):
        image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=16))
    data = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=16, skip_invalid=True))
    assert len(data.split("train")) == 80


def test_single_folder_with_validation_split_is_stratified(tmp_path):
    root = make_folder(tmp_path / "flat", per_class=20, layout="flat")
    data = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=8, validation_split=0.25))
    assert np.bincount(data.split("val").y).tolist() == [5, 5]
    assert len(data.split("train")) == 30
    with pytest.raises(ConfigError, match="validation_split"):
        image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=8))


def test_normalisation_uses_training_statistics(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), y_train=np.arange(64) % 2,
             x_test=np.full((8, 8, 8, 3), 255, np.uint8), y_test=np.arange(8) % 2)
    data = npz.build(npz.NpzParams(path=str(path), normalize="train"))
    assert data.split("train").x.dtype == np.uint8  # raw: the model normalises
    train = preprocessed(data, data.split("train").x)
    np.testing.assert_allclose(train.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=(0, 1, 2)), 1, atol=1e-4)
    mean, std = (np.array(data.preprocess[k]) for k in ("mean", "std"))
    val = preprocessed(data, data.split("val").x)
    np.testing.assert_allclose(val[0, 0, 0], (1 - mean) / std, rtol=1e-5)  # test stats not used
    assert data.split("val") is data.split("test")


def test_npz_errors_are_one_line_config_errors(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((4, 3)), y_train=np.zeros(4))
    with pytest.raises(ConfigError, match="no x_val or x_test"):
        npz.build(npz.NpzParams(path=str(path)))
    np.savez(path, x_train=np.zeros((4, 3)), y_train=np.zeros(3), x_val=np.zeros((2, 3)), y_val=np.zeros(2))
    with pytest.raises(ConfigError, match="x_train has 4 rows, y_train 3"):
        npz.build(npz.NpzParams(path=str(path)))
    (tmp_path / "bad.npz").write_text("nope")
    with pytest.raises(ConfigError, match="not a readable .npz"):
        npz.build(npz.NpzParams(path=str(tmp_path / "bad.npz")))


def test_npz_one_hot_labels_and_vectors_pass_through(tmp_path):
    path = tmp_path / "v.npz"
    y = np.eye(3)[np.arange(30) % 3]
    np.savez(path, x_train=np.ones((30, 5), np.float32), y_train=y, x_val=np.ones((6, 5), np.float32), y_val=y[:6])
    data = npz.build(npz.NpzParams(path=str(path)))
    assert data.input_shape == (5,) and data.num_classes == 3 and data.split("train").y.tolist()[:4] == [0, 1, 2, 0]


def test_missing_folder_exits_2_before_any_run_dir(tmp_path, write_yaml):
    cfg = write_yaml(f"""
        name: f
        data: {{dataset: image_folder, params: {{path: {tmp_path / 'nope'}, image_size: 16}}, batch_size: 8}}
        model: {{name: resnet, params: {{stages: [8], blocks_per_stage: 1}}}}
        runtime: {{runs_root: {tmp_path / 'runs'}}}
        """)
    res = run_cli("train", str(cfg))
    assert res.returncode == 2 and "image folder not found" in res.stderr
    assert not (tmp_path / "runs").exists()


# --- training ------------------------------------------------------------------------------

CONFIG = """
name: {name}
seed: 0
data: {{dataset: {dataset}, params: {params}, batch_size: 16}}
model: {{name: resnet, params: {{stages: [8], blocks_per_stage: 1}}}}
optimizer: {{name: adam, learning_rate: 0.01}}
train: {{epochs: {epochs}, techniques: {techniques}}}
runtime: {{runs_root: {runs}}}
"""


def _train(tmp_path: Path, dataset: str, params: dict, techniques: str = "{}", epochs: int = 3) -> dict:
    cfg = tmp_path / f"{dataset}.yaml"
    cfg.write_text(CONFIG.format(name=dataset, dataset=dataset, params=json.dumps(params), techniques=techniques,
                                 epochs=epochs, runs=tmp_path / "runs"))
    res = run_cli("train", str(cfg))
    assert res.returncode == 0, res.stderr
    return json.loads((Path(res.stdout.strip().splitlines()[-1]) / "run.json").read_text())


@pytest.mark.slow
def test_trains_on_an_image_folder_with_augmentation(tmp_path):
    root = make_folder(tmp_path / "imgs")
    record = _train(tmp_path, "image_folder", {"path": str(root), "image_size": 16},
                    techniques='{augment: {flip: both, crop_padding: 2}}')
    assert record["status"] == "completed" and record["final_metrics"]["val_accuracy"] >= 0.9
    assert record["techniques"]["augment"]["crop_padding"] == 2


@pytest.mark.slow
def test_trains_on_npz(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(160) % 2
    x = rng.normal(0.3, 0.1, (160, 12, 12, 1)).astype(np.float32)
    x[y == 1, :6] += 0.5  # class 1: bright top half
    np.savez(tmp_path / "d.npz", x_train=x[:128], y_train=y[:128], x_val=x[128:], y_val=y[128:])
    record = _train(tmp_path, "npz", {"path": str(tmp_path / "d.npz"), "normalize": "train"})
    assert record["status"] == "completed" and record["final_metrics"]["val_accuracy"] >= 0.9


def test_tfds_offline_fails_fast_with_a_how_to(tmp_path, write_yaml):
    cfg = write_yaml(f"""
        name: t
        data: {{dataset: tfds, params: {{name: mnist, data_dir: {tmp_path / 'tfds'}}}}}
        model: resnet
        runtime: {{runs_root: {tmp_path / 'runs'}}}
        """)
    start = time.monotonic()
    res = run_cli("train", str(cfg))
    assert res.returncode == 2, res.stderr
    assert "not prepared" in res.stderr and "tfds build mnist" in res.stderr and len(res.stderr.splitlines()) == 1
    assert time.monotonic() - start < 60 and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (16, 16, 3))])
def test_tfds_source_trains_on_fake_data(tmp_path, name, shape):
    """In-process (the fake-data helper patches TFDS in this process), one short epoch."""
    import tensorflow_datasets as tfds

    from nnrun.components.data import tfds_source
    from nnrun.engine.train import Output, train

    params = {"name": name, "download": True, "max_examples": 64}
    if name == "cifar10":
        params["image_size"] = 16
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        data = tfds_source.build(tfds_source.TfdsParams(**params))
        assert data.input_shape == shape and data.num_classes == 10 and len(data.split("train")) == 64
        assert data.split("train").x.dtype == np.uint8 and data.preprocess["rescale"] == pytest.approx(1 / 255)
        cfg_path = tmp_path / "t.yaml"
        cfg_path.write_text(CONFIG.format(name=name, dataset="tfds", params=json.dumps(params), techniques="{}",
                                          epochs=1, runs=tmp_path / "runs"))
        run = train(load_config(cfg_path, []), ["nnrun", "train"], Output(console=None, progress=False, epoch_lines=False))
    record = json.loads((run.path / "run.json").read_text())
    assert record["status"] == "completed" and np.isfinite(record["final_metrics"]["loss"])


def test_augment_is_a_pure_function_of_the_key_and_really_augments():
    import tensorflow as tf

    from nnrun.components.data.augment import Augment, AugmentParams
    from nnrun.components.techniques.base import TechniqueContext

    ctx = TechniqueContext(epochs=1, batch_size=8, steps_per_epoch=1, image_size=8, label_mode="onehot")
    images = tf.reshape(tf.range(64 * 8, dtype=tf.float32), (8, 8, 8, 1))
    flip = Augment(AugmentParams(flip="horizontal"), ctx)
    key = tf.constant([3, 4], tf.int64)
    a, _ = flip.batch_transform(images, None, 0, key)
    b, _ = flip.batch_transform(images, None, 0, key)
    np.testing.assert_array_equal(a, b)
    flipped = [bool(np.array_equal(a[i], images[i][:, ::-1])) for i in range(8)]
    kept = [bool(np.array_equal(a[i], images[i])) for i in range(8)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    crop = Augment(AugmentParams(flip="none", crop_padding=2, pad_mode="constant"), ctx)
    c, _ = crop.batch_transform(images, None, 0, key)
    assert c.shape == images.shape
    for i in range(8):  # each output is an 8x8 window of the zero-padded image
        padded = np.pad(images[i].numpy(), ((2, 2), (2, 2), (0, 0)))
        windows = [padded[r:r + 8, s:s + 8] for r in range(5) for s in range(5)]
        assert any(np.array_equal(c[i], w) for w in windows)
    assert not np.array_equal(c, images)


# --- streamed splits (cache: file | none) ----------------------------------------------------


def _streamed(root: Path, tmp_path: Path, **extra):
    params = {"path": str(root), "image_size": 16, "cache": "file", "cache_dir": str(tmp_path / "cache"), **extra}
    if params["cache"] != "file":
        params.pop("cache_dir")
    return image_folder.build(image_folder.ImageFolderParams(**params))


def test_streamed_image_folder_matches_memory_and_caches_once(tmp_path, monkeypatch):
    from nnrun.components.data import stream

    root = make_folder(tmp_path / "imgs")
    memory = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=16))
    filed = _streamed(root, tmp_path, normalize="train")
    train = filed.split("train")
    assert train.x is None and train.stream is not None and len(train) == 80 and filed.input_shape == (16, 16, 3)
    assert sorted(train.y) == sorted(memory.split("train").y)
    assert len(set(train.y[:10])) == 2  # stored in a mixed order, not one class folder after another
    x, y = train.head(80)
    np.testing.assert_array_equal(y, train.y)
    # Raw pixels: exactly the images memory mode decodes (one decoder, decode.py), in another order.
    pillow = memory.split("train").x
    assert {image.tobytes() for image in np.asarray(x, np.uint8)} == {image.tobytes() for image in pillow}
    mean = pillow.reshape(-1, 3).mean(axis=0) / 255  # normalize: train statistics from the stream
    np.testing.assert_allclose(filed.preprocess["mean"], mean, rtol=1e-5)
    caches = sorted((tmp_path / "cache").iterdir())
    assert [c.name.split("-")[0] for c in caches] == ["image_folder", "image_folder"]  # train, val
    with monkeypatch.context() as patch:  # reused: neither rewritten nor the files opened again
        patch.setattr(stream, "_write", lambda *a: pytest.fail("cache rewritten"))
        patch.setattr(image_folder, "_check_files", lambda *a: pytest.fail("files checked again"))
        again = _streamed(root, tmp_path, normalize="train")
        np.testing.assert_array_equal(again.split("train").head(80)[0], x)
    # cache: none decodes the same images every epoch, without a cache
    none = _streamed(root, tmp_path, cache="none", normalize="train")
    np.testing.assert_array_equal(none.split("train").head(80)[0], x)
    # A changed file is a different cache
    (root / "train" / "red" / "0.jpg").unlink()
    assert len(_streamed(root, tmp_path).split("train")) == 79
    assert len(list((tmp_path / "cache").iterdir())) == 3


@pytest.mark.parametrize("cache", ["none", "file"])
def test_streamed_training_order_is_keyed_on_seed_and_epoch(tmp_path, cache):
    import tensorflow as tf

    from nnrun.engine import pipeline

    data = _streamed(make_folder(tmp_path / "imgs"), tmp_path, cache=cache, **({"shuffle_buffer": 32}
                                                                               if cache == "file" else {}))
    split = data.split("train")
    if cache == "none":  # the file list is permuted each epoch, no buffer of decoded images
        assert split.decode is not None and split.shuffle_buffer == 0
    else:
        assert split.decode is None and split.shuffle_buffer == 32

    def labels(**kw):
        args = dict(batch_size=16, seed=3, num_classes=2, label_mode="sparse", first_epoch=0, last_epoch=3)
        return [b[1].numpy().tolist() for b in pipeline.train_dataset(split, **{**args, **kw})]

    full = labels()
    assert len(full) == 15 and full == labels()
    if cache == "none":  # a resumed epoch does not decode the files it already trained on
        read, decode = [], split.decode

        def counted(order, crop=None):
            seen = tf.numpy_function(lambda o: read.append(len(o)) or np.int64(len(o)), [order], tf.int64)
            with tf.control_dependencies([seen]):
                return decode(tf.identity(order), crop)

        split.decode = counted
        assert labels(first_epoch=1, skip_steps=2) == full[7:] and read == [80 - 2 * 16, 80]
    assert labels(first_epoch=1, skip_steps=2) == full[7:]  # resume at epoch 1, step 2
    assert full[:5] != full[5:10]  # a new order each epoch
    assert sorted(sum(full[:5], [])) == sorted(split.y.tolist())  # each epoch is every example once
    assert labels(seed=4) != full
    natural = [b[1].numpy().tolist() for b in pipeline.eval_dataset(split, batch_size=16, num_classes=2,
                                                                    label_mode="sparse")]
    assert sum(natural, []) == split.y.tolist()


def test_streamed_sources_name_bad_files_and_bad_options(tmp_path, write_yaml):
    from PIL import Image

    root = make_folder(tmp_path / "imgs")
    (root / "train" / "blue" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    Image.new("RGB", (8, 8)).save(root / "train" / "red" / "scan.tiff")  # Pillow decodes it in every mode
    with pytest.raises(ConfigError, match=r"1 file\(s\) are not readable images: .*broken.png \(not an image"):
        _streamed(root, tmp_path)
    assert len(_streamed(root, tmp_path, skip_invalid=True).split("train")) == 81
    cfg = write_yaml(f"""
        name: s
        data: {{dataset: image_folder, params: {{path: {root}, shuffle_buffer: 64}}}}
        model: resnet
        runtime: {{runs_root: {tmp_path / 'runs'}}}
        """)
    res = run_cli("validate", str(cfg))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "shuffle_buffer applies to streamed data" in res.stderr
    res = run_cli("validate", str(cfg), "--set", "data.params.cache=none")  # it permutes the file list instead
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "shuffle_buffer applies to cache: file; with cache: none image_folder permutes" in res.stderr


def test_cache_writes_clean_up_and_report_what_failed(tmp_path, monkeypatch):
    import platform

    import tensorflow as tf
    from PIL import Image

    root = make_folder(tmp_path / "imgs")
    img = Image.open(root / "train" / "red" / "0.jpg")
    img.save(root / "train" / "red" / "camera.jpg", "MPO", save_all=True, append_images=[img])  # a phone JPEG
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = cache / f".image_folder-x.{platform.node()}.999999999.tmp"  # a writer killed mid-write
    other_host = cache / ".image_folder-x.elsewhere.999999999.tmp"  # maybe still writing
    for d in (dead, other_host):
        d.mkdir()

    def full_disk(self, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(tf.data.Dataset, "save", full_disk)
        with pytest.raises(ConfigError, match="cannot write the data cache .*No space left on device"):
            image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=16, cache="file",
                                                              cache_dir=str(cache)))
    assert sorted(p.name for p in cache.iterdir()) == [other_host.name]  # ours removed, theirs kept
    data = image_folder.build(image_folder.ImageFolderParams(path=str(root), image_size=16, cache="file",
                                                             cache_dir=str(cache)))
    assert len(data.split("train")) == 81  # the MPO file is accepted and decoded
    assert data.split("train").head(81)[0].shape == (81, 16, 16, 3)


def test_tfds_feature_names_are_checked():
    from types import SimpleNamespace

    from nnrun.components.data import tfds_source

    builder = SimpleNamespace(info=SimpleNamespace(supervised_keys=None, features={"image": 0, "objects": 0}))
    with pytest.raises(ConfigError, match="no \\(input, label\\) supervised keys.*features: image, objects"):
        tfds_source._feature_names(builder, tfds_source.TfdsParams(name="x"))
    with pytest.raises(ConfigError, match="has no feature 'label'; it has: image, objects"):
        tfds_source._feature_names(builder, tfds_source.TfdsParams(name="x", as_supervised=False))


def test_curriculum_needs_an_in_memory_training_split(tmp_path, write_yaml):
    from nnrun.components.techniques.curriculum import Curriculum, CurriculumParams

    data = _streamed(make_folder(tmp_path / "imgs"), tmp_path, cache="none")
    with pytest.raises(ConfigError, match="curriculum needs the training split in memory"):
        Curriculum(CurriculumParams(), None).check(data)
    cfg = write_yaml(f"""
        name: s
        data: {{dataset: image_folder, params: {{path: {tmp_path / 'imgs'}, cache: none}}}}
        model: resnet
        train: {{techniques: {{curriculum: {{}}}}}}
        """)
    res = run_cli("validate", str(cfg))
    assert res.returncode == 2 and "train.techniques.curriculum: curriculum needs the training split in memory" \
        in res.stderr


STREAMED = """\
name: streamed
seed: 0
data:
  dataset: image_folder
  params: {{path: {root}, image_size: 16, cache: file, cache_dir: {cache}, shuffle_buffer: 48}}
  batch_size: 16
model: {{name: resnet, params: {{stages: [8], blocks_per_stage: 1}}}}
optimizer: {{name: adam, learning_rate: 0.01}}
train:
  epochs: 4
  backup_every_steps: 2
  techniques: {{mixup: {{alpha: 0.3}}, augment: {{flip: horizontal}}}}
runtime: {{runs_root: {runs}, deterministic: true}}
"""


@pytest.mark.slow
def test_streamed_run_trains_and_resumes_bit_identically(tmp_path):
    from tests.test_reliability import assert_identical, position, start_and_stop

    root = make_folder(tmp_path / "imgs", per_class=80)
    cfg = tmp_path / "streamed.yaml"
    cfg.write_text(STREAMED.format(root=root, cache=tmp_path / "cache", runs=tmp_path / "runs"))
    res = run_cli("train", str(cfg))
    assert res.returncode == 0, res.stderr
    reference = Path(res.stdout.strip().splitlines()[-1])
    record = json.loads((reference / "run.json").read_text())
    assert record["status"] == "completed" and record["final_metrics"]["val_accuracy"] >= 0.9

    def mid_epoch(run):
        pos = position(run)
        return pos is not None and pos["epoch"] >= 1 and 2 <= pos["step"] <= 6

    run, proc = start_and_stop(cfg, tmp_path / "runs" / "streamed", mid_epoch)
    assert position(run)["step"] > 0
    res = run_cli("train", "--resume", str(run))
    assert res.returncode == 0, res.stderr
    assert_identical(reference, run)


@pytest.mark.slow
def test_tfds_source_streams_through_a_file_cache(tmp_path):
    """The fake-data helper again, with cache: file: labels read without decoding the images, the
    images cached once, training one epoch from the cache."""
    import tensorflow_datasets as tfds

    from nnrun.components.data import tfds_source
    from nnrun.engine.train import Output, train

    params = {"name": "mnist", "download": True, "max_examples": 64}
    streamed = {**params, "cache": "file", "cache_dir": str(tmp_path / "cache"), "shuffle_buffer": 32}
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        memory = tfds_source.build(tfds_source.TfdsParams(**params))
        data = tfds_source.build(tfds_source.TfdsParams(**streamed))
        train_split = data.split("train")
        assert data.input_shape == (28, 28, 1) and data.num_classes == 10 and len(train_split) == 64
        x, y = train_split.head(64)
        np.testing.assert_array_equal(y, memory.split("train").y)
        np.testing.assert_array_equal(x, memory.split("train").x)
        assert len(list((tmp_path / "cache").iterdir())) == 2  # train and test (the validation split)
        cfg_path = tmp_path / "t.yaml"
        cfg_path.write_text(CONFIG.format(name="mnist", dataset="tfds", params=json.dumps(streamed), techniques="{}",
                                          epochs=1, runs=tmp_path / "runs"))
        run = train(load_config(cfg_path, []), ["nnrun", "train"], Output(console=None, progress=False, epoch_lines=False))
    record = json.loads((run.path / "run.json").read_text())
    assert record["status"] == "completed" and np.isfinite(record["final_metrics"]["loss"])


@pytest.mark.slow
def test_tfds_text_becomes_token_ids_and_trains_a_transformer(tmp_path):
    """imdb_reviews faked from its feature spec: strings -> TextVectorization ids (pad 0) adapted
    on train only; the transformer trains on them. Text does not stream."""
    import tensorflow_datasets as tfds

    from nnrun.components.data import tfds_source
    from nnrun.engine.train import Output, train

    params = {"name": "imdb_reviews", "download": True, "val_split": "test", "sequence_length": 16,
              "max_tokens": 50}
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        data = tfds_source.build(tfds_source.TfdsParams(**params))
        x = data.split("train").x
        assert data.input_shape == (16,) and data.num_classes == 2 and x.shape == (64, 16) and x.dtype == np.int32
        assert data.meta["pad_id"] == 0 and 0 < x.max() < data.meta["vocab_size"] <= 50
        lengths = (x != 0).sum(axis=1)
        assert all((row[n:] == 0).all() for row, n in zip(x, lengths))  # padding only at the end
        with pytest.raises(ConfigError, match="streams image data sets only"):
            tfds_source.build(tfds_source.TfdsParams(**params, cache="none"))
        cfg_path = tmp_path / "t.yaml"
        cfg_path.write_text(CONFIG.format(name="imdb", dataset="tfds", params=json.dumps(params), techniques="{}",
                                          epochs=1, runs=tmp_path / "runs").replace(
            "{name: resnet, params: {stages: [8], blocks_per_stage: 1}}",
            "{name: transformer, params: {num_layers: 1, dim: 16, num_heads: 2, mlp_dim: 32}}"))
        run = train(load_config(cfg_path, []), ["nnrun", "train"], Output(console=None, progress=False, epoch_lines=False))
    record = json.loads((run.path / "run.json").read_text())
    assert record["status"] == "completed" and np.isfinite(record["final_metrics"]["loss"])
