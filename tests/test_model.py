"Tests of `brain_tumor_cls.model`: flat graph, weights options, atomic save, safe load."
import os, zipfile
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import pytest
import keras

from brain_tumor_cls.model import build_model, save_model, load_model, set_trainable, backbone_frozen, n_outputs, HEAD_LAYERS

CLASSES = ["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return build_model(4, image_size=75, weights=None, dense_units=16)


def test_flat_graph_and_names(model):
    assert not any(isinstance(l, keras.Model) for l in model.layers)
    assert [l.name for l in model.layers[-5:]] == list(HEAD_LAYERS)
    assert model.get_layer("mixed10").output.shape[-1] == 2048
    assert model.get_layer("logits").get_config()["activation"] == "linear"
    cam = keras.Model(model.inputs, [model.get_layer("mixed10").output, model.get_layer("logits").output])
    conv, logits = cam([np.full((2, 75, 75, 3), 255, "float32")])
    assert conv.shape[0] == 2 and logits.shape == (2, 4)
    assert backbone_frozen(model) and n_outputs(model) == 4


def test_scaling_inside_model(model):
    out = np.asarray(model.get_layer("scale")(np.array([[[[0.0, 127.5, 255.0]]]], "float32")))
    np.testing.assert_allclose(out, [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)


def test_trainable_from_keeps_batchnorm_frozen(model):
    try:
        set_trainable(model, "mixed9")
        names = [l.name for l in model.layers]
        first = next(i for i, l in enumerate(model.layers) if l.trainable)
        assert first == names.index("mixed8") + 1
        assert not any(l.trainable for l in model.layers if isinstance(l, keras.layers.BatchNormalization))
        assert not backbone_frozen(model)
    finally:
        set_trainable(model, None)
    assert backbone_frozen(model)


@pytest.mark.parametrize("n", [1, 0, -3, 2.5])
def test_n_classes_below_two(n):
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2"):
        build_model(n, image_size=75, weights=None)


def test_wrong_weights_path(tmp_path):
    p = tmp_path / "nope" / "inception_notop.h5"
    with pytest.raises(FileNotFoundError, match="inception_notop.h5"):
        build_model(4, image_size=75, weights=p)


def test_weights_of_another_architecture(tmp_path):
    inp = keras.Input((10,))
    keras.Model(inp, keras.layers.Dense(3)(inp)).save_weights(tmp_path / "mlp.weights.h5")
    with pytest.raises(ValueError, match="does not fit InceptionV3"):
        build_model(4, image_size=75, weights=tmp_path / "mlp.weights.h5", dense_units=16)


def test_local_weights_roundtrip(model, tmp_path):
    model.save_weights(tmp_path / "full.weights.h5")
    m2 = build_model(4, image_size=75, weights=tmp_path / "full.weights.h5", dense_units=16)
    for a, b in zip(model.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_save_load_roundtrip(model, tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (2, 75, 75, 3)).astype("float32")
    path = save_model(model, tmp_path / "model.keras", CLASSES, 75)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]   # no temp file left
    loaded, meta = load_model(path)
    assert meta == {"class_names": CLASSES, "image_size": 75}
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    loaded.get_layer("mixed10")


def test_save_is_atomic_on_failure(model, tmp_path, monkeypatch):
    dest = tmp_path / "model.keras"
    def broken_save(path, *a, **k):
        open(path, "wb").write(b"PK\x03\x04 half written")
        raise OSError("disk full")
    monkeypatch.setattr(model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, dest, CLASSES, 75)
    assert list(tmp_path.iterdir()) == []   # neither a final nor a temporary file


def test_save_checks_class_names(model, tmp_path):
    with pytest.raises(ValueError, match="4 classes but 2 class names"):
        save_model(model, tmp_path / "m.keras", ["a", "b"], 75)
    with pytest.raises(ValueError, match=".keras"):
        save_model(model, tmp_path / "m.h5", CLASSES, 75)


def test_lambda_file_is_refused(tmp_path):
    inp = keras.Input((4,))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="times_two")(inp)
    keras.Model(inp, keras.layers.Dense(2)(x)).save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match=r"Lambda layer \(times_two\).*safe_mode=False"):
        load_model(tmp_path / "lambda.keras")


def test_load_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_model(tmp_path / "missing.keras")
    (tmp_path / "junk.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="not a .keras model archive"):
        load_model(tmp_path / "junk.keras")
