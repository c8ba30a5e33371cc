"Tests for `brain_tumor_cls.augment`: policies and offline balancing."
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import keras

from brain_tumor_cls.augment import apply_policy, balance, heavy_policy, light_policy
from brain_tumor_cls.phantom import make_phantom_dataset
from brain_tumor_cls.pipeline import split


@pytest.fixture(scope="module")
def split_manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("ph")
    m = make_phantom_dataset(d, n_per_class=8, size=64, layout="split", progress=False)
    # make no_tumor a minority class in Training: drop 4 of its training rows
    drop = m.index[(m["class"] == "no_tumor") & (m["split"] == "train")][:4]
    return split(m.drop(index=drop), val_frac=0.34, seed=0)


def files_with_mtimes(d):
    return {p.as_posix(): p.stat().st_mtime_ns for p in Path(d).rglob("*") if p.is_file()}


def test_policies_on_uint8_and_float_0_255():
    x = tf.cast(tf.random.stateless_uniform((4, 64, 72, 3), (0, 1), 0, 256, tf.int32), tf.uint8)
    for make in (heavy_policy, light_policy):
        a = apply_policy(make(0), x)
        b = apply_policy(make(0), tf.cast(x, tf.float32))
        assert a.dtype == tf.uint8 and a.shape == x.shape
        assert np.array_equal(a.numpy(), b.numpy())
        assert not np.array_equal(a.numpy(), x.numpy())


def test_light_policy_brightness_is_a_tenth_of_the_range():
    x = np.full((64, 8, 8, 3), 128, np.uint8)   # flat image: contrast and flips do nothing
    y = apply_policy(light_policy(1), x).numpy().astype(int)
    shifts = y[:, 0, 0, 0] - 128
    assert np.abs(shifts).max() <= 26 and np.abs(shifts).max() >= 10 and (y == y[:, :1, :1, :1]).all()


def test_balance_only_train_sources_and_rows(split_manifest, tmp_path):
    m = split_manifest
    out = tmp_path / "aug"
    b = balance(m, target_per_class=6, out_dir=out, seed=0, progress=False)
    new = b[b["augmented"]]
    train_paths = set(m.loc[m["split"] == "train", "path"])
    assert set(new["split"]) == {"train"}
    assert set(new["source"]) <= train_paths
    assert not (set(new["source"]) & set(m.loc[m["split"] != "train", "path"]))
    # non-train rows unchanged
    pd.testing.assert_frame_equal(b[b["split"] != "train"].drop(columns=["source", "augmented"]).reset_index(drop=True),
                                  m[m["split"] != "train"].reset_index(drop=True))
    # files are in out_dir/<class>/ only, PNG, decodable at the source's size
    for p, s in zip(new["path"], new["source"]):
        assert Path(p).parent.parent == out.resolve() and Path(p).suffix == ".png"
        assert tf.io.decode_image(tf.io.read_file(p)).shape[:2] == tf.io.decode_image(tf.io.read_file(s)).shape[:2]
    assert not list(out.rglob("*.tmp-*"))


def test_balance_counts_reach_target(split_manifest, tmp_path):
    b = balance(split_manifest, target_per_class=7, out_dir=tmp_path / "aug", progress=False)
    tr = b[b["split"] == "train"].groupby("class").size()
    orig = split_manifest[split_manifest["split"] == "train"].groupby("class").size()
    assert (tr == np.maximum(orig, 7)).all()


def test_balance_rerun_creates_nothing_new(split_manifest, tmp_path):
    out = tmp_path / "aug"
    b1 = balance(split_manifest, 6, out, seed=0, progress=False)
    before = files_with_mtimes(out)
    b2 = balance(b1, 6, out, seed=0, progress=False)          # from the balanced manifest
    b3 = balance(split_manifest, 6, out, seed=0, progress=False)   # from the split one
    assert files_with_mtimes(out) == before and len(before) == b1["augmented"].sum()
    pd.testing.assert_frame_equal(b1, b2)
    pd.testing.assert_frame_equal(b1, b3)


def test_balance_resume_recreates_identical_file(split_manifest, tmp_path):
    out = tmp_path / "aug"
    b = balance(split_manifest, 6, out, seed=0, progress=False)
    p = Path(b.loc[b["augmented"], "path"].iloc[0])
    data = p.read_bytes()
    p.unlink()                                              # as if interrupted before this file
    balance(split_manifest, 6, out, seed=0, progress=False)
    assert p.read_bytes() == data
    # another seed gives other pixels
    b2 = balance(split_manifest, 6, tmp_path / "aug2", seed=1, progress=False)
    q = Path(b2.loc[b2["augmented"], "path"].iloc[0])
    assert q.name == p.name and q.read_bytes() != data


def test_balance_refuses_source_folders(split_manifest, tmp_path):
    some = Path(split_manifest["path"].iloc[0])
    for bad in (some.parent, some.parent / "augmented", some.parent.parent, some.parents[2]):
        with pytest.raises(ValueError, match="overlaps"):
            balance(split_manifest, 6, bad, progress=False)
    assert not (some.parent / "augmented").exists()


def test_balance_needs_split_and_out_dir(split_manifest, tmp_path):
    with pytest.raises(ValueError, match="out_dir"): balance(split_manifest, 6, None)
    with pytest.raises(ValueError, match="split"):
        balance(split_manifest.drop(columns="split"), 6, tmp_path / "a")
    with pytest.raises(ValueError, match="split"):
        balance(split_manifest.assign(split="test"), 6, tmp_path / "a")


def test_balance_skips_rows_the_audit_dropped(split_manifest, tmp_path):
    m = split_manifest.copy()
    m["keep"] = True
    dropped = m.index[(m["split"] == "train") & (m["class"] == "no_tumor")][0]
    m.loc[dropped, "keep"] = False
    b = balance(m, 6, tmp_path / "aug", progress=False)
    assert m.loc[dropped, "path"] not in set(b["source"])
    assert b.loc[b["augmented"], "keep"].all()


def test_light_augment_is_the_light_policy_per_image():
    from brain_tumor_cls.augment import light_augment
    flat = np.full((16, 16, 3), 128, np.uint8)
    d = np.array([int(light_augment(flat, (i, 0)).numpy()[0, 0, 0]) - 128 for i in range(40)])
    assert np.abs(d).max() <= 26 and d.std() > 5               # brightness ±0.1 of the range
    img = (np.arange(16 * 16 * 3) % 251).reshape(16, 16, 3).astype(np.uint8)
    a = light_augment(img, (3, 4)).numpy()
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, light_augment(img.astype(np.float32), (3, 4)).numpy())   # uint8 or float in
    assert np.array_equal(a, light_augment(img, (3, 4)).numpy())                      # stateless


def test_online_augmentation_never_turns_the_sella_upside_down():
    "A pituitary tumour sits low in the slice; no default online augmentation may move it to the top half."
    from brain_tumor_cls.augment import light_augment
    from brain_tumor_cls.phantom import draw_slice
    img, mask = draw_slice(np.random.default_rng(3), "pituitary_tumor", 96)
    x = np.stack([img, mask * 255, img], -1).astype(np.uint8)   # brightness/contrast act per channel; the mask stays > 127
    assert np.argwhere(mask)[:, 0].mean() > 60
    keras_out = apply_policy(light_policy(0), np.repeat(x[None], 32, 0)).numpy()
    tfdata_out = [light_augment(x, (i, 5)).numpy() for i in range(32)]
    for outs in (keras_out, tfdata_out):
        rows = [np.argwhere(o[..., 1] > 127)[:, 0].mean() for o in outs]
        assert min(rows) > 48, rows
    flipped = [light_augment(x, (i, 5), vertical_flip=True).numpy() for i in range(32)]
    assert min(np.argwhere(o[..., 1] > 127)[:, 0].mean() for o in flipped) < 48   # opt-in: it does flip


def test_heavy_shear_is_the_original_tenth_of_a_degree():
    from brain_tumor_cls.augment import RandomAffine
    x = tf.zeros((256, 8, 8, 3))
    for pol in (heavy_policy(0), heavy_policy(0, single_warp=False)):
        layer = next(l for l in pol.layers if isinstance(l, (RandomAffine, keras.layers.RandomShear)))
        t = layer.get_random_transformation(x, training=True)
        s = np.abs(np.asarray(t["shear"] if "shear" in t else t["shear_factor"]))
        assert s.max() <= np.tan(np.radians(0.1)) + 1e-9 and s.max() > 0.5 * np.tan(np.radians(0.1))


def test_random_affine_geometry_and_sharpness():
    from brain_tumor_cls.augment import RandomAffine
    layer = RandomAffine()
    x = tf.random.stateless_uniform((1, 20, 30, 3), (0, 2), 0, 255)
    def t(**k):
        base = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zoom": 1.0, "flip": 1.0} | k
        return {n: tf.constant([v], tf.float32) for n, v in base.items()}
    xn = x.numpy()
    assert np.allclose(layer.transform_images(x, t()).numpy(), xn)
    assert np.allclose(layer.transform_images(x, t(flip=-1.0)).numpy(), xn[:, :, ::-1])
    assert np.allclose(layer.transform_images(x, t(tx=1 / 30)).numpy()[0, :, :-1], xn[0, :, 1:])
    assert np.allclose(layer.transform_images(x, t(theta=np.pi)).numpy(), xn[:, ::-1, ::-1], atol=0.01)
    # one warp keeps more detail than the stack of four Keras layers
    img = np.kron((np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8), np.ones((4, 4), np.uint8))
    img = np.repeat(img[..., None], 3, -1)
    def sharp(y): y = np.asarray(y, float)[..., 0]; return np.abs(np.diff(y, axis=0)).mean() + np.abs(np.diff(y, axis=1)).mean()
    one = np.mean([sharp(apply_policy(heavy_policy(0), img, seed=(i, 0))) for i in range(4)])
    four = np.mean([sharp(apply_policy(heavy_policy(0, single_warp=False), img, seed=(i, 0))) for i in range(4)])
    assert one > four
