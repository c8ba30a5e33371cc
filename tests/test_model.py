"Tests of `brain_tumor_cls.model`: flat graph, weights options, atomic save, safe load."
import json, os, zipfile
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import pytest
import keras

from brain_tumor_cls.model import (build_model, save_model, load_model, set_temperature, set_trainable, backbone_frozen,
                                   n_outputs, HEAD_LAYERS, META_ENTRY)

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
    assert meta == {"class_names": CLASSES, "image_size": 75, "temperature": 1.0}
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    loaded.get_layer("mixed10")


def test_save_is_atomic_on_failure(model, tmp_path, monkeypatch):
    import brain_tumor_cls.model as M
    dest = tmp_path / "model.keras"
    class Broken:
        def save(self, path, *a, **k):
            open(path, "wb").write(b"PK\x03\x04 half written")
            raise OSError("disk full")
    monkeypatch.setattr(M, "_without_optimizer", lambda m: Broken())
    with pytest.raises(OSError, match="disk full"):
        save_model(model, dest, CLASSES, 75)
    assert list(tmp_path.iterdir()) == []   # neither a final nor a temporary file


def test_saved_model_carries_no_optimizer_state(tmp_path):
    "Compiled and trained one step with Adam (two moving averages per variable): the file is about the weights' size."
    import h5py, io
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(inp))
    m = keras.Model(inp, keras.layers.Activation("softmax", name="probs")(keras.layers.Dense(3, name="logits")(x)))
    m.compile(keras.optimizers.Adam(), "sparse_categorical_crossentropy")
    m.train_on_batch(np.zeros((2, 16, 16, 3), "float32"), np.array([0, 1]))
    m.save(tmp_path / "plain.keras")
    save_model(m, tmp_path / "model.keras", ["a", "b", "c"], 16)
    weights = sum(w.nbytes for w in m.get_weights())                     # (Keras' save_weights includes the optimizer too)
    size = lambda n: (tmp_path / n).stat().st_size
    assert size("plain.keras") > 2.5 * weights                           # what a plain save writes
    assert size("model.keras") <= 1.2 * weights
    with zipfile.ZipFile(tmp_path / "model.keras") as z, h5py.File(io.BytesIO(z.read("model.weights.h5"))) as f:
        assert "optimizer" not in f
    assert m.optimizer.variables and m.compiled                          # the model in memory keeps its optimizer
    loaded, _ = load_model(tmp_path / "model.keras")
    for a, b in zip(loaded.get_weights(), m.get_weights()): np.testing.assert_array_equal(a, b)


def test_temperature_in_the_metadata(model, tmp_path):
    p = save_model(model, tmp_path / "model.keras", CLASSES, 75, temperature=2.5)
    assert load_model(p)[1]["temperature"] == 2.5
    weights = zipfile.ZipFile(p).read("model.weights.h5")
    set_temperature(p, 1.25)
    assert load_model(p)[1]["temperature"] == 1.25 and zipfile.ZipFile(p).read("model.weights.h5") == weights
    assert sorted(q.name for q in tmp_path.iterdir()) == ["model.keras"]
    # a file written before temperatures were stored reads as T = 1
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(p) as src, zipfile.ZipFile(old, "w") as out:
        for i in src.infolist():
            meta = json.loads(src.read(i)) if i.filename == META_ENTRY else None
            out.writestr(i, json.dumps({k: meta[k] for k in ("class_names", "image_size")}) if meta else src.read(i))
    assert load_model(old)[1] == {"class_names": CLASSES, "image_size": 75, "temperature": 1.0}
    for bad in (0, -1.0, float("nan"), float("inf"), "hot"):
        with pytest.raises(ValueError, match="temperature must be"):
            save_model(model, tmp_path / "t.keras", CLASSES, 75, temperature=bad)


def test_save_checks_class_names(model, tmp_path):
    with pytest.raises(ValueError, match="4 classes but 2 class names"):
        save_model(model, tmp_path / "m.keras", ["a", "b"], 75)
    with pytest.raises(ValueError, match=".keras"):
        save_model(model, tmp_path / "m.h5", CLASSES, 75)
