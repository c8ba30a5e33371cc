"""`export`: SavedModel, ONNX and LiteRT exports of btc-saved models, checked against Keras with their own runtimes;
the JSON beside them; the missing-extra message; refusals that protect the model and other people's folders."""
import sys

import numpy as np
import pytest

from brain_tumor_cls import export as E
from brain_tumor_cls.files import read_json
from brain_tumor_cls.run import UsageError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A small convolutional classifier (3 classes, 75 px) saved with `model.save_model`: fast to export."
    import keras
    from brain_tumor_cls.model import save_model
    i = keras.Input((75, 75, 3), name="image")
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv")(keras.layers.Rescaling(1/127.5, offset=-1, name="scale")(i))
    z = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D(name="avg_pool")(h))
    p = tmp_path_factory.mktemp("tiny")/"model.keras"
    save_model(keras.Model(i, keras.layers.Activation("softmax", name="probs")(z)), p, ["glioma", "meningioma", "pituitary"], 75)
    return p


def keras_probs(model_path, x):
    from brain_tumor_cls.predict import load_model_safely
    m, meta = load_model_safely(model_path)
    return E.keras_reference(m, x, float(meta.get("temperature") or 1.0))["probabilities"]


def other_images(size, n=3):
    "Images the export's own check never saw: random colour noise."
    return np.random.default_rng(1).integers(0, 256, (n, size, size, 3)).astype(np.float32)


def test_onnx_export_of_inceptionv3_matches_keras(tmp_path):
    "What users export: a real InceptionV3 (75 px, random weights), checked by onnxruntime, and again on new images."
    from brain_tumor_cls.model import build_model, save_model
    mp = save_model(build_model(2, 75, weights=None), tmp_path/"model.keras", ["tumour", "none"], 75)
    res = E.export_model(mp, "onnx")
    assert res["out"] == tmp_path/"model.onnx" and res["sidecar"] == tmp_path/"model.onnx.json"
    side = read_json(res["sidecar"])
    assert side["check"]["passed"] and side["check"]["max_abs_diff_probabilities"] <= 1e-4
    assert side["check"]["runtime"].startswith("onnxruntime") and side["class_names"] == ["tumour", "none"]
    assert side["input"]["shape"] == [None, 75, 75, 3] and side["input"]["range"] == [0, 255] and side["temperature"] == 1.0
    assert side["source"]["model"] == "model.keras" and len(side["sha256"]) == 64
    x = other_images(75)
    got = E.run_exported(res["out"], x)
    np.testing.assert_allclose(got["probabilities"], keras_probs(mp, x), atol=1e-4)


@pytest.mark.parametrize("fmt", ["savedmodel", "litert"])
def test_savedmodel_and_litert_match_keras_with_their_runtimes(tiny, tmp_path, fmt):
    out = tmp_path/("exported" if fmt == "savedmodel" else "exported.tflite")
    res = E.export_model(tiny, fmt, out)
    side = read_json(res["sidecar"])
    assert side["format"] == fmt and side["check"]["passed"] and side["check"]["max_abs_diff_probabilities"] <= 1e-4
    assert side["check"]["runtime"].split()[0] in (("tensorflow",) if fmt == "savedmodel" else ("ai_edge_litert", "tf.lite.Interpreter"))
    if fmt == "savedmodel":
        assert (out/"saved_model.pb").is_file() and res["sidecar"] == out/"assets.extra"/"brain_tumor_cls.json"
        import tensorflow as tf
        from brain_tumor_cls.predict import load_model_safely
        stored = tf.train.load_checkpoint(str(out/"variables"/"variables")).get_variable_to_shape_map()
        n = sum(int(np.prod(s)) for k, s in stored.items() if k != "_CHECKPOINTABLE_OBJECT_GRAPH")
        assert n == load_model_safely(tiny)[0].count_params()       # each weight once (model.export stores them twice)
    x = other_images(75)
    np.testing.assert_allclose(E.run_exported(out, x)["probabilities"], keras_probs(tiny, x), atol=1e-4)


def test_missing_extra_is_one_line_naming_it(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)     # what Python does for a module that cannot be imported
    with pytest.raises(UsageError) as e: E.export_model(tmp_path/"absent.keras", "onnx")  # checked before the model
    msg = str(e.value)
    assert "\n" not in msg and "onnxruntime" in msg and 'pip install "brain_tumor_cls[export]"' in msg
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("model, fmt, out, say", [
    ("absent.keras", "onnx", None, "model file not found"),
    (".", "onnx", None, "is a folder"),
    ("tiny", "coreml", None, "unknown export format 'coreml'"),
    ("tiny", "onnx", "m.tflite", "ending in .onnx"),
    ("tiny", "litert", "folder", "is a folder"),
    ("tiny", "savedmodel", "tinydir", "is the model itself"),
])
def test_bad_requests_are_refused_before_any_work(tiny, tmp_path, model, fmt, out, say):
    (tmp_path/"folder.tflite").mkdir()
    mp = {"tiny": tiny, ".": tmp_path}.get(model, tmp_path/model)
    o = {"folder": tmp_path/"folder.tflite", "tinydir": tiny.parent}.get(out, None if out is None else tmp_path/out)
    with pytest.raises(UsageError, match=say): E.export_model(mp, fmt, o, overwrite=True)


def test_existing_outputs_are_kept_unless_overwrite_and_folders_only_if_savedmodels(tiny, tmp_path, fingerprint):
    (tmp_path/"m.tflite").write_bytes(b"earlier")
    with pytest.raises(UsageError, match="add --overwrite"): E.export_model(tiny, "litert", tmp_path/"m.tflite")
    assert (tmp_path/"m.tflite").read_bytes() == b"earlier"
    (tmp_path/"mine").mkdir(); (tmp_path/"mine"/"notes.txt").write_text("precious")
    before = fingerprint(tmp_path/"mine")
    with pytest.raises(UsageError, match="is not a SavedModel"): E.export_model(tiny, "savedmodel", tmp_path/"mine", overwrite=True)
    assert fingerprint(tmp_path/"mine") == before
    E.export_model(tiny, "savedmodel", tmp_path/"sm")
    first = (tmp_path/"sm"/"saved_model.pb").stat().st_mtime_ns
    E.export_model(tiny, "savedmodel", tmp_path/"sm", overwrite=True)     # an earlier export is replaced
    assert (tmp_path/"sm"/"saved_model.pb").stat().st_mtime_ns != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "mine", "sm"]  # no temporary folders left


def test_an_export_that_fails_its_check_is_never_written(tiny, tmp_path, monkeypatch):
    real = E.run_exported
    monkeypatch.setattr(E, "run_exported", lambda p, x: {k: v + 1e-3 for k, v in real(p, x).items()})
    with pytest.raises(E.ExportCheckError, match="nothing was written"): E.export_model(tiny, "litert", tmp_path/"m.tflite")
    assert not list(tmp_path.iterdir())


def test_btc_export_command(tiny, tmp_path, btc):
    "`btc export` end to end: exit 0, the export and its JSON; a second call refuses to replace it (exit 2, one line)."
    out = tmp_path/"m.onnx"
    r = btc("export", tiny, "--format", "onnx", "--out", out)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and read_json(E.sidecar_path(out, E.check_format("onnx")))["class_names"] == ["glioma", "meningioma", "pituitary"]
    assert "probabilities match Keras" in r.stdout
    again = btc("export", tiny, "--format", "onnx", "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1
