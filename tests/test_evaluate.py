"Tests for brain_tumor_cls.evaluate: metrics against scikit-learn, bootstrap intervals, calibration on logits, files."
import json, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, pandas as pd, pytest
from sklearn import metrics as skm
from brain_tumor_cls.evaluate import (predictions_from_probs, predictions_from_logits, evaluate, fit_temperature,
    apply_temperature, calibration_summary, ece, top_losses, most_confused, reliability, roc_curves,
    plot_confusion_matrix, plot_roc, plot_reliability, plot_most_confused, predict, predict_logits)
from brain_tumor_cls.files import read_csv, write_csv

CLS = ["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"]

def table(n=80, seed=0, sharp=1.5, scale=1.0):
    "A labelled table from logits `scale * (N(0, I) + sharp * onehot(y))`."
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n); z = rng.normal(size=(n, 4)); z[np.arange(n), y] += sharp
    return predictions_from_logits(scale * z, CLS, true=y), y, scale * z

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
    t, y, z = table(120, seed=3)
    p = np.round(t[[f"p_{c}" for c in CLS]].to_numpy(), 1) + 1e-9
    t = predictions_from_probs(p / p.sum(1, keepdims=True), CLS, true=y)  # many tied scores
    p = t[[f"p_{c}" for c in CLS]].to_numpy()
    m = evaluate(t, n_boot=0)
    assert m["macro_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))

def test_bootstrap_contains_point_and_shrinks():
    t, y, z = table(60, seed=1)
    m = evaluate(t, CLS, n_boot=300, seed=0)
    for k in ["accuracy", "macro_f1", "weighted_f1", "macro_auc"]:
        lo, hi = m[k]["ci"]
        assert lo <= m[k]["value"] <= hi, k
    big = predictions_from_logits(np.tile(z, (16, 1)), CLS, true=np.tile(y, 16))
    mb = evaluate(big, CLS, n_boot=300, seed=0)
    for k in ["accuracy", "macro_f1", "macro_auc"]:
        w_small, w_big = np.diff(m[k]["ci"])[0], np.diff(mb[k]["ci"])[0]
        assert w_big < 0.5 * w_small, (k, w_small, w_big)   # ~1/sqrt(16) = 0.25 expected

def test_bootstrap_is_seeded():
    t, *_ = table(40, seed=2)
    assert evaluate(t, n_boot=100, seed=5) == evaluate(t, n_boot=100, seed=5)

def test_degenerate_resamples_are_counted_not_nan():
    # one image of class c: many resamples miss it, its recall and AUC are undefined there
    t, y, z = table(30, seed=4)
    y = y.copy(); y[y == 3] = 0; y[0] = 3
    m = evaluate(predictions_from_logits(z, CLS, true=y), n_boot=200)
    r = m["per_class"]["pituitary_tumor"]["recall"]
    assert r["n_degenerate"] > 0 and None not in r["ci"]
    json.dumps(m, allow_nan=False)

def test_no_bootstrap_with_an_undefined_metric_is_strict_json():
    t, y, z = table(20, seed=5)
    m = evaluate(predictions_from_logits(z, CLS, true=np.zeros(20, int)), n_boot=0)   # one class only: AUCs undefined
    assert m["macro_auc"]["value"] is None and m["macro_auc"]["n_degenerate"] == 0
    json.dumps(m, allow_nan=False)

def test_one_ece_everywhere():
    "evaluate's ECE, `ece` and the reliability table agree, with bins (lo, hi]."
    t, *_ = table(200, seed=7, scale=3.0)
    r = reliability(t); nz = r[r["count"] > 0]
    by_table = float((nz["count"] * (nz.accuracy - nz.confidence).abs()).sum() / len(t))
    assert ece(t) == pytest.approx(by_table) == pytest.approx(evaluate(t, n_boot=0)["ece"]["value"])
    # a confidence of exactly 0.8 belongs to the bin (0.7, 0.8]
    p = np.array([[0.8, 0.2], [0.8, 0.2]])
    r2 = reliability(predictions_from_probs(p, ["a", "b"], true=[0, 1]))
    assert r2.loc[7, "count"] == 2 and r2.loc[7, "hi"] == pytest.approx(0.8)

def test_ece_zero_for_perfectly_calibrated_table():
    conf = np.repeat([0.4, 0.75, 1.0], [5, 8, 2])
    correct = np.r_[[1, 1, 0, 0, 0], [1] * 6 + [0] * 2, [1, 1]]
    yp = np.where(correct == 1, 0, 1)
    p = np.repeat(((1 - conf) / 2)[:, None], 3, 1); p[np.arange(len(conf)), yp] = conf
    t = predictions_from_probs(p, list("xyz"), true=np.zeros(len(conf), int))
    assert ece(t) == pytest.approx(0, abs=1e-12)
    assert reliability(t)["count"].sum() == len(conf)

def test_temperature_repairs_overconfidence_and_keeps_classes():
    val, _, _ = table(400, seed=10, sharp=1.2, scale=4.0)
    test, _, _ = table(400, seed=11, sharp=1.2, scale=4.0)
    T = fit_temperature(val)
    cal = apply_temperature(test, T)
    assert T > 2 and ece(cal) < ece(test) / 2
    assert (cal.predicted == test.predicted).all()
    # apply_temperature starts from the raw logits: applying twice replaces, T = 1 restores
    pd.testing.assert_frame_equal(apply_temperature(cal, 1.0), test)
    s = calibration_summary(test, T)
    assert s["ece_before"] == pytest.approx(ece(test)) and s["ece_after"] == pytest.approx(ece(cal))
    assert s["nll_after"] < s["nll_before"] and s["temperature"] == T
    json.dumps(s, allow_nan=False)

def test_temperature_refits_from_the_csv(tmp_path):
    "The raw logits in predictions.csv are enough to refit and re-apply T exactly, without the model."
    val, *_ = table(300, seed=12, sharp=1.0, scale=5.0)
    val["path"] = [f"img{i}.png" for i in range(len(val))]   # (a column of empty strings would read back as NaN)
    write_csv(tmp_path / "val.csv", apply_temperature(val, 2.5))      # stored calibrated, logits raw
    back = read_csv(tmp_path / "val.csv")
    assert fit_temperature(back) == pytest.approx(fit_temperature(val), rel=1e-9)
    pd.testing.assert_frame_equal(apply_temperature(back, 1.0), val, check_dtype=False)

def test_temperature_edge_cases():
    t, y, z = table(50, seed=13, sharp=8.0)
    assert (t.true == t.predicted).all()
    with pytest.warns(UserWarning, match="classified correctly"):
        assert fit_temperature(t) == 1.0
    with pytest.raises(ValueError, match="no logit columns"):
        fit_temperature(predictions_from_probs(t[[f"p_{c}" for c in CLS]].to_numpy(), CLS, true=y))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature(t, 0.0)
    noisy, *_ = table(200, seed=14, sharp=0.0, scale=50.0)            # pure noise, shouted: T hits the upper bound
    with pytest.warns(UserWarning, match="at the bound"):
        fit_temperature(noisy, bounds=(0.1, 10.0))

def test_unlabelled_rows_ignored_and_errors():
    t, *_ = table(20)
    t2 = pd.concat([t, t.head(3).assign(true="")], ignore_index=True)
    assert evaluate(t2, n_boot=0)["n"] == 20
    assert fit_temperature(t2) == pytest.approx(fit_temperature(t))
    with pytest.raises(ValueError, match="no row has a true class"):
        evaluate(t.assign(true=""), n_boot=0)
    with pytest.raises(ValueError, match="not in class_names"):
        evaluate(t.assign(true="cat"), n_boot=0)

def test_losses_confused_and_plots():
    import matplotlib; matplotlib.use("Agg")
    from matplotlib.figure import Figure
    t, y, z = table(50, seed=6, sharp=0.5)
    tl = top_losses(t, 5)
    assert len(tl) == 5 and tl["loss"].is_monotonic_decreasing
    mc = most_confused(t)
    assert mc["count"].sum() == (t.true != t.predicted).sum()
    assert set(roc_curves(t)) == set(CLS) | {"macro"}
    m = evaluate(t, n_boot=50)
    for f in (plot_confusion_matrix(t), plot_roc(t, metrics=m), plot_reliability(t), plot_most_confused(t)):
        assert isinstance(f, Figure)
    f = plot_reliability(t, apply_temperature(t, 2.0), temperature=2.0)
    assert len(f.axes) == 4 and "T = 2.00" in f.axes[1].get_title()

def _stand_in_model(with_logits=True):
    import keras
    inp = keras.Input((75, 75, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 127.5, offset=-1)(inp))
    x = keras.layers.Dense(4, name="logits" if with_logits else "scores")(x)
    return keras.Model(inp, keras.layers.Activation("softmax", name="probs")(x))

def test_predict_manifest_and_array(tmp_path):
    from PIL import Image
    mdl = _stand_in_model()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        pth = tmp_path / f"i{i}.png"; Image.fromarray(rng.integers(0, 256, (75, 75, 3), dtype=np.uint8)).save(pth); paths.append(str(pth))
    man = pd.DataFrame({"path": paths, "class": CLS[:4] + CLS[:1]})
    pr = predict(mdl, man, CLS, image_size=75, batch_size=2, progress=False)
    assert list(pr.columns) == (["path", "true", "predicted", "confidence"] + [f"p_{c}" for c in CLS]
                                + [f"logit_{c}" for c in CLS])
    assert pr["true"].tolist() == man["class"].tolist()
    np.testing.assert_allclose(pr[[f"p_{c}" for c in CLS]].sum(axis=1), 1, atol=1e-12)
    x = np.stack([np.asarray(Image.open(p)) for p in paths]).astype("float32")
    np.testing.assert_allclose(pr[[f"p_{c}" for c in CLS]], mdl.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_allclose(predict_logits(mdl, man, batch_size=2, progress=False), pr[[f"logit_{c}" for c in CLS]])
    pr2 = predict(mdl, man[["path"]], CLS, image_size=75, progress=False, temperature=3.0)
    assert (pr2["true"] == "").all() and (pr2.predicted == pr.predicted).all() and (pr2.confidence < pr.confidence).all()
    empty = predict(mdl, man.head(0), CLS, progress=False)
    assert len(empty) == 0 and list(empty.columns) == list(pr.columns)

def test_predict_needs_a_logits_layer():
    with pytest.raises(ValueError, match="no `logits` layer"):
        predict(_stand_in_model(with_logits=False), np.zeros((1, 75, 75, 3), np.uint8), CLS, progress=False)
