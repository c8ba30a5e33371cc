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
    assert gradcam(m, np.zeros((1, 96, 96, 3), np.float32), method="gradcam").shape == (1, 4, 4)
    assert gradcam(m, np.zeros((1, 96, 96, 3), np.float32)).shape == (1, 45, 45)      # default: LayerCAM, first stem block

def test_target_other_backbone():
    assert find_target_layer(small_cnn()) == "block_out"

def test_batched_equals_per_image(inception, images):
    b = gradcam(inception, images, batch_size=16, method="gradcam")
    one = np.concatenate([gradcam(inception, images[i:i + 1], method="gradcam") for i in range(len(images))])
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
    cl, dl = gradcam(m, x, method="gradcam", return_details=True)
    cp, dp = gradcam(m, x, method="gradcam", target="prob", return_details=True)
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


# ---- methods, fusion, smoothing: argument handling and edge cases (the formulas are checked in the notebook)
def test_bad_arguments_are_refused_clearly():
    m = small_cnn()
    x = np.zeros((2, 32, 32, 3), np.float32)
    for kw, msg in [(dict(method="eigencam"), "method must be one of"), (dict(fuse="median", layer=["conv_a", "block_out"]), "fuse must be"),
                    (dict(target="softmax"), "target must be"), (dict(layer="nope"), "nope")]:
        with pytest.raises(ValueError, match=msg): gradcam(m, x, **kw)
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"): gradcam(m, np.zeros((32, 32)))

@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "hirescam", "layercam", "scorecam"])
def test_every_method_keeps_empty_maps_empty(method):
    "A dead target layer gives no evidence for any method: all zero, flagged, finite."
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="dead",
                            kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(-1.0))(inp)
    x = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    m = keras.Model(inp, keras.layers.Activation("softmax", name="probs")(x))
    c, d = gradcam(m, np.ones((3, 16, 16, 3), np.float32), method=method, aug_smooth=method == "layercam", return_details=True)
    assert c.shape == (3, 16, 16) and (c == 0).all() and d["all_zero"].all()

def test_fused_layers_and_class_choice():
    m = small_cnn()
    x = np.random.default_rng(5).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    for how in ("mean", "max", "product"):
        c, d = gradcam(m, x, method="layercam", layer=["block_out", "conv_a"], fuse=how, class_index=[0, 1, 2], return_details=True)
        assert c.shape == (3, 32, 32) and c.max() <= 1 and d["class_index"].tolist() == [0, 1, 2]
    s = gradcam(m, x, method="scorecam", max_channels=3, batch_size=2)
    assert s.shape == (3, 16, 16) and np.isfinite(s).all()

# ---- overlays
@pytest.mark.parametrize("shape,dtype", [((619, 495), np.uint8), ((40, 90, 3), np.uint8), ((50, 50, 4), np.uint8),
                                         ((3000, 1200), np.uint8), ((80, 60, 3), np.float32)])
def test_overlay_image_keeps_aspect_and_size_limits(shape, dtype):
    from brain_tumor_cls.gradcam import overlay_image
    img = (np.random.default_rng(0).random(shape) * 255).astype(dtype)
    cam = np.random.default_rng(1).random((4, 4)).astype(np.float32)
    out = overlay_image(img, cam, "glioma_tumor", 0.87, colorbar=False)
    H, W = shape[:2]
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert min(out.shape[:2]) >= min(320, 1024 * min(H, W) / max(H, W)) - 1 and max(out.shape[:2]) <= 1024
    assert abs(out.shape[0] / out.shape[1] - H / W) < 0.02                  # the aspect ratio survives
    sbs = overlay_image(img, cam, side_by_side=True, colorbar=False)
    assert sbs.shape[0] == out.shape[0] and sbs.shape[1] > 2 * out.shape[1]

def test_overlay_image_marks_empty_maps():
    from brain_tumor_cls.gradcam import overlay_image
    img = np.full((100, 100), 80, np.uint8)
    plain = overlay_image(img, np.zeros((4, 4)), colorbar=False)
    assert (plain != 80).any()                                              # the stamp is drawn on the plain image
    with pytest.raises(ValueError, match=r"\[H,W\]"): overlay_image(np.zeros((4, 4, 4, 3)), np.zeros((2, 2)))

# ---- faithfulness and the shortcut detector: edge cases
def test_deletion_insertion_shapes_and_bounds():
    from brain_tumor_cls.gradcam import deletion_insertion
    m = small_cnn()
    x = np.random.default_rng(6).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    df, d, i = deletion_insertion(m, x, np.random.default_rng(0).random((3, 4, 4)), [0, 1, 2], n_steps=5, batch_size=7, return_curves=True)
    assert d.shape == i.shape == (3, 6) and ((df >= 0) & (df <= 1)).all().all()
    p = m.predict(x, verbose=0)
    np.testing.assert_allclose(d[:, 0], p[[0, 1, 2], [0, 1, 2]], atol=1e-5)  # step 0: the image itself
    np.testing.assert_allclose(i[:, -1], p[[0, 1, 2], [0, 1, 2]], atol=1e-5) # last insertion step: the image again
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"): deletion_insertion(m, x[0], np.zeros((4, 4)), 0)

def test_brain_mask_and_outside_share_edge_cases():
    from brain_tumor_cls.gradcam import brain_mask, outside_share, shortcut_check, shortcut_summary
    assert not brain_mask(np.zeros((20, 30), np.uint8)).any()              # a blank image has no head
    img = np.zeros((40, 60), np.uint8); img[10:30, 10:40] = 150; img[18:22, 20:25] = 5   # head with a dark hole
    bm = brain_mask(img)
    assert bm[20, 22] and bm[:, 45:].sum() == 0 and abs(int(bm.sum()) - 20 * 30) < 150   # the hole is filled; edges blur a pixel
    cam = np.zeros((4, 4), np.float32); cam[:, 3] = 1                       # evidence at the right edge only
    out = outside_share([cam, np.zeros((4, 4))], [bm, np.ones((8, 8), bool)])
    assert out[0] > 0.9 and np.isnan(out[1])
    chk = shortcut_check([cam, cam], [img, img.T], ["a", "b"])
    assert chk["flagged"].tolist()[0] and (chk["outside_area"] > 0).all()
    s = shortcut_summary(chk)
    assert s.loc["a", "rate"] == 1 and list(s.columns) == ["n", "flagged", "rate", "outside"]

# ---- the shortcut detector against a known shortcut: a model trained on phantoms whose one class carries a mark
def test_shortcut_detector_flags_the_confounded_class_only(tmp_path):
    """A small CNN trained on 64-px phantoms where every `confound` slice has a bright corner mark outside the head
    learns the mark (the easiest cue). Its LayerCAM evidence for that class then lies outside the brain, for the other
    classes inside: `shortcut_summary` must flag the confounded class and not the others. `no_tumor` carries the mark,
    as the no-tumour slices of the public collection carried their source (see the notebook); other phantoms than the
    notebook's (seed 1)."""
    confound = "no_tumor"
    from PIL import Image
    from brain_tumor_cls.phantom import make_phantom_dataset, PHANTOM_CLASSES
    from brain_tumor_cls.gradcam import shortcut_check, shortcut_summary
    df = make_phantom_dataset(tmp_path, n_per_class=40, size=64, seed=1, confound=confound, layout="split", progress=False)
    load = lambda ps: np.stack([np.asarray(Image.open(p).convert("RGB")) for p in ps]).astype(np.float32)
    tr, te = df[df.split == "train"], df[df.split == "test"]
    keras.utils.set_random_seed(0)
    inp = keras.Input((64, 64, 3)); x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    for i, f in enumerate([16, 32, 32]): x = keras.layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"conv{i}")(x)
    x = keras.layers.Dense(4, name="logits")(keras.layers.GlobalMaxPooling2D()(x))
    m = keras.Model(inp, keras.layers.Activation("softmax", name="probs")(x))
    m.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    m.fit(load(tr.path), np.array([PHANTOM_CLASSES.index(c) for c in tr["class"]]), epochs=12, batch_size=16, verbose=0)
    xte = load(te.path)
    cams, det = gradcam(m, xte, layer="conv1", method="layercam", return_details=True)
    pred = [PHANTOM_CLASSES[i] for i in det.class_index]
    s = shortcut_summary(shortcut_check(cams, xte, pred))
    assert confound in s.index and s.loc[confound, "rate"] >= 0.8, s              # the shortcut class is flagged...
    assert (s.drop(confound)["rate"] <= 0.2).all(), s                            # ...and the others are not
