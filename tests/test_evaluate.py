"Tests for brain_tumor_cls.evaluate: metrics against scikit-learn, bootstrap intervals, calibration, files."
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, pandas as pd, pytest
from sklearn import metrics as skm
from brain_tumor_cls.evaluate import (predictions_from_probs, evaluate, fit_temperature, apply_temperature,
    top_losses, most_confused, reliability, roc_curves,
    plot_confusion_matrix, plot_roc, plot_reliability, plot_most_confused, predict)

CLS = ["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"]

def table(n=80, seed=0, sharp=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n); z = rng.normal(size=(n, 4)); z[np.arange(n), y] += sharp
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return predictions_from_probs(p, CLS, true=y), y, p

def test_hand_made_table_matches_sklearn():
    # 3 classes, 8 rows, every count checked by hand: acc 5/8
    p = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.1, .2, .7],
                  [.3, .6, .1], [.1, .1, .8], [.5, .4, .1], [.2, .2, .6]])
    y = np.array([0, 0, 1, 2, 0, 2, 1, 1])
    t = predictions_from_probs(p, ["a", "b", "c"], true=y)
    m = evaluate(t, ["a", "b", "c"], n_boot=100)
    yp = p.argmax(1)
    assert m["accuracy"]["value"] == pytest.approx(5 / 8)
    assert m["macro_f1"]["value"] == pytest.approx(skm.f1_score(y, yp, average="macro"))
    assert m["weighted_f1"]["value"] == pytest.approx(skm.f1_score(y, yp, average="weighted"))
    assert m["macro_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    for i, c in enumerate("abc"):
        pc = m["per_class"][c]
        assert pc["precision"]["value"] == pytest.approx(skm.precision_score(y == i, yp == i))
        assert pc["recall"]["value"] == pytest.approx(skm.recall_score(y == i, yp == i))
        assert pc["specificity"]["value"] == pytest.approx(skm.recall_score(y != i, yp != i))
        assert pc["f1"]["value"] == pytest.approx(skm.f1_score(y == i, yp == i))
        assert pc["auc"]["value"] == pytest.approx(skm.roc_auc_score(y == i, p[:, i]))
        assert pc["support"] == int((y == i).sum())
    assert m["confusion_matrix"] == skm.confusion_matrix(y, yp).tolist()
    json.dumps(m, allow_nan=False)

def test_random_table_matches_sklearn_with_ties():
    t, y, p = table(120, seed=3)
    p = np.round(p, 1); t = predictions_from_probs(p / p.sum(1, keepdims=True), CLS, true=y)  # many tied scores
    p = t[[f"p_{c}" for c in CLS]].to_numpy()
    m = evaluate(t, n_boot=0)
    assert m["macro_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))

def test_bootstrap_contains_point_and_shrinks():
    t, y, p = table(60, seed=1)
    m = evaluate(t, CLS, n_boot=300, seed=0)
    for k in ["accuracy", "macro_f1", "weighted_f1", "macro_auc"]:
        lo, hi = m[k]["ci"]
        assert lo <= m[k]["value"] <= hi, k
    big = predictions_from_probs(np.tile(p, (16, 1)), CLS, true=np.tile(y, 16))
    mb = evaluate(big, CLS, n_boot=300, seed=0)
    for k in ["accuracy", "macro_f1", "macro_auc"]:
        w_small, w_big = np.diff(m[k]["ci"])[0], np.diff(mb[k]["ci"])[0]
        assert w_big < 0.5 * w_small, (k, w_small, w_big)   # ~1/sqrt(16) = 0.25 expected

def test_bootstrap_is_seeded():
    t, *_ = table(40, seed=2)
    assert evaluate(t, n_boot=100, seed=5) == evaluate(t, n_boot=100, seed=5)

def test_degenerate_resamples_are_counted_not_nan():
    # one image of class c: many resamples miss it, its recall and AUC are undefined there
    t, y, p = table(30, seed=4)
    y = y.copy(); y[y == 3] = 0; y[0] = 3
    t = predictions_from_probs(p, CLS, true=y)
    m = evaluate(t, n_boot=200)
    r = m["per_class"]["pituitary_tumor"]["recall"]
    assert r["n_degenerate"] > 0 and None not in r["ci"]
    json.dumps(m, allow_nan=False)

def test_ece_zero_for_perfectly_calibrated_table():
    conf = np.repeat([0.4, 0.75, 1.0], [5, 8, 2])
    correct = np.r_[[1, 1, 0, 0, 0], [1] * 6 + [0] * 2, [1, 1]]
    yp = np.where(correct == 1, 0, 1)
    p = np.repeat(((1 - conf) / 2)[:, None], 3, 1); p[np.arange(len(conf)), yp] = conf
    m = evaluate(predictions_from_probs(p, list("xyz"), true=np.zeros(len(conf), int)), n_boot=0)
    assert m["ece"]["value"] == pytest.approx(0, abs=1e-12)
    r = reliability(predictions_from_probs(p, list("xyz"), true=np.zeros(len(conf), int)))
    assert r["count"].sum() == len(conf)

def test_ece_positive_when_overconfident_and_temperature_fixes_it():
    rng = np.random.default_rng(0)
    def sim(n):
        y = rng.integers(0, 4, n); z = rng.normal(size=(n, 4)); z[np.arange(n), y] += 1.2
        q = np.exp(4 * z); return predictions_from_probs(q / q.sum(1, keepdims=True), CLS, true=y)
    val, test = sim(300), sim(300)
    T = fit_temperature(val)
    cal = apply_temperature(test, T)
    e0, e1 = evaluate(test, n_boot=0)["ece"]["value"], evaluate(cal, n_boot=0)["ece"]["value"]
    assert T > 2 and e1 < e0
    assert (cal.predicted == test.predicted).all()

def test_unlabelled_rows_ignored_and_errors():
    t, *_ = table(20)
    t2 = pd.concat([t, t.head(3).assign(true="")], ignore_index=True)
    assert evaluate(t2, n_boot=0)["n"] == 20
    with pytest.raises(ValueError, match="no row has a true class"):
        evaluate(t.assign(true=""), n_boot=0)
    with pytest.raises(ValueError, match="not in class_names"):
        evaluate(t.assign(true="cat"), n_boot=0)

def test_losses_confused_and_plots():
    import matplotlib; matplotlib.use("Agg")
    from matplotlib.figure import Figure
    t, y, p = table(50, seed=6, sharp=0.5)
    tl = top_losses(t, 5)
    assert len(tl) == 5 and tl["loss"].is_monotonic_decreasing
    mc = most_confused(t)
    assert mc["count"].sum() == (t.true != t.predicted).sum()
    assert set(roc_curves(t)) == set(CLS) | {"macro"}
    m = evaluate(t, n_boot=50)
    for f in (plot_confusion_matrix(t), plot_roc(t, metrics=m), plot_reliability(t), plot_most_confused(t)):
        assert isinstance(f, Figure)

def test_predict_manifest_and_array(tmp_path):
    import keras
    from PIL import Image
    inp = keras.Input((75, 75, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 127.5, offset=-1)(inp))
    mdl = keras.Model(inp, keras.layers.Activation("softmax", name="probs")(keras.layers.Dense(4, name="logits")(x)))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        pth = tmp_path / f"i{i}.png"; Image.fromarray(rng.integers(0, 256, (75, 75, 3), dtype=np.uint8)).save(pth); paths.append(str(pth))
    man = pd.DataFrame({"path": paths, "class": CLS[:4] + CLS[:1]})
    pr = predict(mdl, man, CLS, image_size=75, batch_size=2, progress=False)
    assert list(pr.columns) == ["path", "true", "predicted", "confidence"] + [f"p_{c}" for c in CLS]
    assert pr["true"].tolist() == man["class"].tolist()
    np.testing.assert_allclose(pr[[f"p_{c}" for c in CLS]].sum(1), 1, atol=1e-5)
    pr2 = predict(mdl, man[["path"]], CLS, image_size=75, progress=False)
    assert (pr2["true"] == "").all()
