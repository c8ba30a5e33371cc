"Tests for brain_tumor_cls.gradcam: target layer, logit vs probability, batching, empty maps, localisation."
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, pytest, keras
from brain_tumor_cls.gradcam import (find_target_layer, gradcam, upsample, overlay, plot_gallery,
                                     localisation, random_baseline, localisation_summary)

def small_cnn(n=3, size=32, softmax_in_dense=False, seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="block_out")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    if softmax_in_dense: return keras.Model(inp, keras.layers.Dense(n, activation="softmax", name="pred")(x))
    x = keras.layers.Dense(n, name="logits")(x)
    return keras.Model(inp, keras.layers.Activation("softmax", name="probs")(x))

@pytest.fixture(scope="module")
def inception():
    from brain_tumor_cls.model import build_model
    keras.utils.set_random_seed(0)
    return build_model(4, 128, weights=None)

@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3)).astype(np.float32)

def test_target_is_mixed10(inception):
    assert find_target_layer(inception) == "mixed10"
    # the original rule (last layer named *conv*) would pick a 192-channel branch instead
    orig = next(l for l in reversed(inception.layers) if "conv" in l.name.lower())
    assert orig.name != "mixed10" and orig.output.shape[-1] == 192

def test_target_for_tiny_inputs():
    "Below 107 px mixed10 is 1x1 (no spatial information): the target is the last mixed block with a 2x2 grid or more."
    from brain_tumor_cls.model import build_model
    m = build_model(4, 96, weights=None, dense_units=16)
    assert tuple(m.get_layer("mixed10").output.shape[1:3]) == (1, 1)
    assert find_target_layer(m) == "mixed7" and tuple(m.get_layer("mixed7").output.shape[1:3]) == (4, 4)
    assert find_target_layer(m, min_grid=1) == "mixed10"
    assert gradcam(m, np.zeros((1, 96, 96, 3), np.float32)).shape == (1, 4, 4)

def test_target_other_backbone():
    assert find_target_layer(small_cnn()) == "block_out"

def test_batched_equals_per_image(inception, images):
    b = gradcam(inception, images, batch_size=16)
    one = np.concatenate([gradcam(inception, images[i:i + 1]) for i in range(len(images))])
    assert b.shape == (3, 2, 2) and b.dtype == np.float32
    np.testing.assert_allclose(b, one, atol=1e-4)
    x = np.random.default_rng(3).integers(0, 256, (7, 32, 32, 3)).astype(np.float32)
    m = small_cnn()
    for method in ("gradcam", "gradcam++"):
        np.testing.assert_allclose(gradcam(m, x, batch_size=3, method=method),
                                   np.concatenate([gradcam(m, x[i], method=method) for i in range(7)]), atol=1e-5)

def test_class_index_choices():
    m = small_cnn()
    x = np.random.default_rng(4).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    _, d = gradcam(m, x, return_details=True)
    np.testing.assert_array_equal(d["class_index"], m.predict(x, verbose=0).argmax(1))
    _, d2 = gradcam(m, x, class_index=2, return_details=True)
    assert (d2["class_index"] == 2).all()
    _, d3 = gradcam(m, x, class_index=[0, 1, 2, 0], return_details=True)
    assert d3["class_index"].tolist() == [0, 1, 2, 0]

def test_saturated_model_still_has_logit_map():
    m = small_cnn()
    k, b = m.get_layer("logits").get_weights()
    m.get_layer("logits").set_weights([k * 1e3, b])
    x = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    assert (m.predict(x, verbose=0).max(1) > 0.9999).all()
    cl, dl = gradcam(m, x, return_details=True)
    cp, dp = gradcam(m, x, target="prob", return_details=True)
    assert not dl["all_zero"].any() and np.allclose(cl.max((1, 2)), 1)
    assert (dp["raw_max"] < 1e-3 * dl["raw_max"]).all()        # the softmax gradient has (nearly) vanished
    assert dp["all_zero"][dl["prob"] == 1].all()                # exactly zero where p rounds to 1

def test_softmax_inside_dense_uses_logits():
    m = small_cnn(softmax_in_dense=True)
    k, b = m.layers[-1].get_weights(); m.layers[-1].set_weights([k * 1e3, b])
    x = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    c, d = gradcam(m, x, return_details=True)
    assert not d["all_zero"].any()

def test_all_zero_map_stays_zero():
    # a target layer that is all zero (ReLU of a strongly negative bias) gives no evidence at all
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="dead",
                            kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(-1.0))(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(2, name="logits")(x)
    m = keras.Model(inp, keras.layers.Activation("softmax", name="probs")(x))
    c, d = gradcam(m, np.ones((2, 16, 16, 3), np.float32), return_details=True)
    assert d["all_zero"].all() and (c == 0).all() and np.isfinite(c).all()
    img = np.full((16, 16, 3), 90, np.uint8)
    np.testing.assert_array_equal(overlay(img, c[0]), img)
    loc = localisation(c, np.ones((2, 16, 16), bool))
    assert (loc["hit"] == 0).all() and loc["energy"].isna().all()

def test_upsample_overlay_gallery():
    import matplotlib; matplotlib.use("Agg")
    from matplotlib.figure import Figure
    cam = np.zeros((3, 3), np.float32); cam[1, 1] = 1
    up = upsample(cam, 30)
    assert up.shape == (30, 30) and 0 <= up.min() and up.max() <= 1 and up[14:16, 14:16].max() == up.max()
    ov = overlay(np.zeros((30, 30), np.uint8), cam)
    assert ov.shape == (30, 30, 3) and ov.dtype == np.uint8
    fig = plot_gallery(np.zeros((3, 30, 30, 3), np.uint8), np.stack([cam] * 3), true=["a", "b", "c"],
                       predicted=["a", "c", "c"], confidence=[.9, .8, .7], empty=[False, False, True], ncols=2)
    assert isinstance(fig, Figure)

def test_localisation_and_baseline():
    mk = np.zeros((3, 64, 64), bool); mk[:2, 30:52, 30:52] = True   # third image: no tumour
    good = np.zeros((3, 4, 4), np.float32); good[:, 2, 2] = 1
    bad = np.zeros((3, 4, 4), np.float32); bad[:, 0, 0] = 1
    lg, lb = localisation(good, mk), localisation(bad, mk)
    assert lg["hit"].tolist()[:2] == [1, 1] and lb["hit"].tolist()[:2] == [0, 0]
    assert np.isnan(lg["hit"][2]) and np.isnan(lg["area"][2])
    assert (lg["energy"][:2] > lb["energy"][:2]).all()
    rb = random_baseline(mk, (4, 4), n_draws=100, seed=0)
    assert abs(rb["hit"][:2].mean() - mk[0].mean()) < 0.1
    s = localisation_summary(lg.assign(**{"class": ["g", "m", "n"]}), rb)
    assert list(s.index) == ["g", "m", "all"] and s.loc["all", "hit"] == 1 and s.loc["all", "n"] == 2
