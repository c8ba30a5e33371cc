"Tests for `brain_tumor_cls.pipeline`: group-aware split, decoding, datasets, bad rows."
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from brain_tumor_cls.phantom import make_phantom_dataset
from brain_tumor_cls.files import MIN_IMAGE_SIZE
from brain_tumor_cls.pipeline import (class_names, load_images, make_dataset,
                                      preprocess_image, split)


def real_data():
    root = Path(os.environ.get("BTC_DATA") or Path(__file__).resolve().parents[2] / "shared/data/sartaj-brain-mri")
    if not root.is_dir(): pytest.skip(f"real dataset not found at {root} (set BTC_DATA)")
    return root


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    d = tmp_path_factory.mktemp("ph")
    return make_phantom_dataset(d, n_per_class=12, size=64, layout="split", progress=False)


def grouped_manifest(n_per_class=(60, 45, 30, 20), seed=0):
    "Synthetic manifest (no files) with duplicate groups of size 1-4."
    rng = np.random.default_rng(seed)
    rows, g = [], 0
    for ci, n in enumerate(n_per_class):
        i = 0
        while i < n:
            size = min(int(rng.choice([1, 1, 1, 2, 3, 4])), n - i)
            for _ in range(size):
                rows.append({"path": f"/d/c{ci}/{i:04d}.png", "class": f"c{ci}", "split": "", "dup_group": g if size > 1 else -1})
                i += 1
            g += 1
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- split
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_split_no_group_crosses_splits(seed):
    s = split(grouped_manifest(seed=seed), 0.15, 0.15, seed=seed)
    g = s[s["dup_group"] >= 0].groupby("dup_group")["split"].nunique()
    assert (g == 1).all()
    assert set(s["split"]) == {"train", "val", "test"}


def test_split_stratified_proportions():
    m = grouped_manifest()
    s = split(m, 0.2, 0.2, seed=0)
    frac = pd.crosstab(s["class"], s["split"], normalize="index")
    assert ((frac["val"] - 0.2).abs() <= 0.08).all(), frac
    assert ((frac["test"] - 0.2).abs() <= 0.08).all(), frac
    assert ((frac["train"] - 0.6).abs() <= 0.08).all(), frac
    assert len(s) == len(m) and (s["path"] == m["path"]).all()


def test_split_deterministic_for_seed():
    m = grouped_manifest()
    assert split(m, seed=5)["split"].tolist() == split(m, seed=5)["split"].tolist()
    assert split(m, seed=5)["split"].tolist() != split(m, seed=6)["split"].tolist()
    # the input is not modified
    assert (m["split"] == "").all()


def test_split_without_dup_group_splits_by_file():
    m = grouped_manifest().drop(columns="dup_group")
    s = split(m, 0.25, 0.25, seed=0)
    counts = s["split"].value_counts()
    assert abs(counts["val"] - 0.25 * len(m)) <= 4 and abs(counts["test"] - 0.25 * len(m)) <= 4


def test_split_respects_existing_test(phantom):
    s = split(phantom, val_frac=0.25, seed=0)
    assert (s.loc[phantom["split"] == "test", "split"] == "test").all()
    assert set(s.loc[phantom["split"] == "train", "split"]) == {"train", "val"}
    assert (s["folder_split"] == phantom["split"]).all()
    # every class is in every split
    assert (pd.crosstab(s["class"], s["split"]) > 0).all().all()
    # respect_existing=False re-splits everything, Testing rows may move
    s2 = split(phantom, 0.2, 0.2, seed=0, respect_existing=False)
    assert set(s2["split"]) == {"train", "val", "test"}


def test_split_leaking_group_goes_to_test(phantom):
    m = phantom.copy()
    m["dup_group"] = -1
    te, tr = m.index[m["split"] == "test"][0], m.index[m["split"] == "train"][0]
    m.loc[[te, tr], "dup_group"] = 9
    with pytest.warns(UserWarning, match="moved"):
        s = split(m, seed=0)
    assert s.loc[[te, tr], "split"].tolist() == ["test", "test"]


def test_split_bad_fractions():
    with pytest.raises(ValueError): split(grouped_manifest(), 0.6, 0.5)


# ---------------------------------------------------------------- decoding
def write_variants(d):
    a = np.tile(np.linspace(40, 239, 70).round().astype(np.uint8), (50, 1))   # smooth ramp: resizing keeps its range
    files = {
        "grey.png": Image.fromarray(a),
        "grey_alpha.png": Image.fromarray(a).convert("LA"),
        "rgba.png": Image.fromarray(np.dstack([a, a, a, np.full_like(a, 128)]), "RGBA"),
        "palette.png": Image.fromarray(a).convert("P"),
        "grey16.png": Image.fromarray(a.astype(np.uint16) * 257),
        "rgb.jpg": Image.fromarray(np.dstack([a] * 3)),
        "grey.jpg": Image.fromarray(a),
        "grey.bmp": Image.fromarray(a),
    }
    for n, im in files.items(): im.save(d / n)
    return a, [d / n for n in files]


@pytest.mark.parametrize("size", [75, 96])
def test_preprocess_any_format_to_rgb_uint8(tmp_path, size):
    a, paths = write_variants(tmp_path)
    for p in paths:
        x = preprocess_image(str(p), size)
        assert x.dtype == tf.uint8 and tuple(x.shape) == (size, size, 3), p.name
        x = x.numpy().astype(int)
        assert (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all(), p.name   # grey stays grey
        # same range as the 8-bit source (the 16-bit file is scaled by 257, not clipped or truncated)
        tol = 6 if p.suffix == ".jpg" else 2
        assert abs(x.max() - int(a.max())) <= tol and abs(x.min() - int(a.min())) <= tol, (p.name, x.min(), x.max())
    x16 = load_images([tmp_path / "grey16.png"], 75)
    x8 = load_images([tmp_path / "grey.png"], 75)
    assert np.abs(x16.astype(int) - x8.astype(int)).max() <= 1


def test_image_size_below_inception_minimum(tmp_path, phantom):
    _, paths = write_variants(tmp_path)
    for f in (lambda: preprocess_image(str(paths[0]), 74), lambda: load_images(paths[:1], 50),
              lambda: make_dataset(phantom, class_names(phantom), image_size=64)):
        with pytest.raises(ValueError, match="at least 75"): f()
    assert MIN_IMAGE_SIZE == 75


# ---------------------------------------------------------------- datasets
def collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_class_names_and_labels(phantom):
    names = class_names(phantom)
    assert names == sorted(phantom["class"].unique())
    # a fixed list with an extra class: labels are indices in *that* list
    fixed = ["aaa_extra"] + names
    _, y = collect(make_dataset(phantom, fixed, 75, batch_size=64))
    want = [fixed.index(c) for c in phantom["class"]]
    assert y.tolist() == want and y.dtype == np.int32
    with pytest.raises(ValueError, match="not in class_names"):
        make_dataset(phantom, names[:2], 75)


@pytest.mark.parametrize("cache", [None, "memory", "file"])
def test_eval_dataset_is_not_augmented(phantom, tmp_path, cache):
    cache = tmp_path / "cache" / "c" if cache == "file" else cache
    m = phantom.iloc[:10]
    ds = make_dataset(m, class_names(phantom), 75, batch_size=4, cache=cache)
    x1, y1 = collect(ds)
    x2, y2 = collect(ds)
    assert x1.dtype == np.uint8 and x1.shape == (10, 75, 75, 3)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert np.array_equal(x1, load_images(m["path"], 75))
    if cache not in (None, "memory"): assert any(Path(cache).parent.iterdir())


def test_training_dataset_shuffles_and_augments(phantom):
    m = phantom.iloc[:16]
    names = class_names(phantom)
    plain = load_images(m["path"], 75)
    tr = make_dataset(m, names, 75, batch_size=8, training=True, cache="memory", seed=3)
    x1, y1 = collect(tr)
    x2, y2 = collect(tr)
    assert sorted(y1.tolist()) == sorted(y2.tolist()) == sorted(y1.tolist())
    assert len(y1) == 16 and x1.dtype == np.uint8
    # augmented pixels differ from every plain image; epochs differ
    assert not any(np.array_equal(x1[0], p) for p in plain)
    assert not np.array_equal(x1, x2)
    # augment=False: every image is one of the plain ones, shuffled
    xa, _ = collect(make_dataset(m, names, 75, batch_size=8, training=True, augment=False, seed=3))
    assert all(any(np.array_equal(x, p) for p in plain) for x in xa)
    # same seed -> same first epoch
    x3, _ = collect(make_dataset(m, names, 75, batch_size=8, training=True, cache="memory", seed=3))
    assert np.array_equal(x1, x3)


def test_bad_rows_are_skipped_with_a_warning(phantom, tmp_path):
    m = phantom.iloc[:12].copy().reset_index(drop=True)
    bad = []
    for i, how in enumerate(["missing", "empty", "text", "truncated"]):
        p = tmp_path / f"bad_{how}.png"
        if how == "empty": p.write_bytes(b"")
        if how == "text": p.write_text("this is not a png")
        if how == "truncated":
            Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "t.jpg")
            b = (tmp_path / "t.jpg").read_bytes(); p = tmp_path / "bad_truncated.jpg"; p.write_bytes(b[: len(b) // 3])
        m.loc[i, "path"] = str(p); bad.append(str(p))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        ds = make_dataset(m, class_names(phantom), 75, batch_size=4, training=True)
    msg = " ".join(str(x.message) for x in w)
    for p in bad[:3]: assert p in msg            # missing/empty/text are named up front
    x, y = collect(ds)                           # the epoch completes; the truncated file is skipped
    assert len(y) == 12 - 4
    with pytest.raises(ValueError, match="bad_text"): load_images([bad[2]], 75)
    with pytest.raises(ValueError, match="no usable rows"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore"); make_dataset(m.iloc[:3], class_names(phantom), 75)


def test_real_data_decodes():
    root = real_data()
    paths = sorted(root.glob("*/*/*.jpg"))[::400][:8]
    x = load_images(paths, 75)
    assert x.shape == (len(paths), 75, 75, 3) and x.dtype == np.uint8 and x.max() > 50


# ---------------------------------------------------------------- patients and the leak check
def patient_manifest(n_patients=40, seed=0):
    "Synthetic manifest (no files): patients with 1-6 slices each, one class per patient."
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for s in range(int(rng.integers(1, 7))):
            rows.append({"path": f"/d/P{p:03d}_{s}.dcm", "class": f"c{p % 3}", "patient_id": f"P{p:03d}", "dup_group": -1})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_keeps_every_patient_in_one_split(seed):
    from brain_tumor_cls.pipeline import split_leaks
    m = patient_manifest(seed=seed)
    s = split(m, 0.2, 0.2, seed=seed)
    assert (s.groupby("patient_id")["split"].nunique() == 1).all() and set(s["split"]) == {"train", "val", "test"}
    assert split_leaks(s).empty
    by_file = split(m.drop(columns="patient_id"), 0.2, 0.2, seed=seed).assign(patient_id=m["patient_id"])
    assert (split_leaks(by_file)["kind"] == "patient").sum() > 5        # without the IDs most patients would straddle


def test_patient_in_training_and_testing_folders_moves_to_test():
    m = patient_manifest(12).assign(split="train")
    m.loc[m["patient_id"] == "P003", "split"] = ["test"] + ["train"] * ((m["patient_id"] == "P003").sum() - 1)
    with pytest.warns(UserWarning, match="same patient"):
        s = split(m, 0.2, seed=0)
    assert set(s.loc[s["patient_id"] == "P003", "split"]) == {"test"}


def test_split_leaks_names_each_kind_and_hides_patient_ids():
    from brain_tumor_cls.pipeline import LEAK_COLUMNS, split_leaks
    m = pd.DataFrame({"path": list("abcdefg"), "split": ["train", "test", "train", "train", "val", "test", ""],
                      "dup_group": [0, 0, 1, 1, 2, 3, 3], "md5": ["", "", "x", "y", "z", "z", ""],
                      "patient_id": ["", "", "", "", "Jane Doe", "Jane Doe", ""]})
    leaks = split_leaks(m)
    assert list(leaks.columns) == LEAK_COLUMNS
    assert leaks[["kind", "splits", "files"]].values.tolist() == [
        ["duplicate_group", ["test", "train"], 2], ["identical_bytes", ["test", "val"], 2], ["patient", ["test", "val"], 2]]
    assert "Jane Doe" not in leaks.to_csv() and leaks["key"].iloc[-1].startswith("anon-")
    assert leaks["paths"].iloc[0] == ["a", "b"]                    # a row without a split (g) is not a leak


def test_dicom_rows_decode_in_datasets_and_load_images(tmp_path):
    from brain_tumor_cls.dicom import write_dicom, _edit_dicom
    a = np.tile(np.linspace(0, 4000, 80).astype(np.uint16), (60, 1))
    write_dicom(tmp_path/"a.dcm", a, bits=12, window=(2000, 4000))
    write_dicom(tmp_path/"mono1.dcm", 4000 - a, bits=12, window=(2000, 4000), photometric="MONOCHROME1")
    (tmp_path/"frames.dcm").write_bytes(_edit_dicom((tmp_path/"a.dcm").read_bytes(), NumberOfFrames=3))
    x = load_images([tmp_path/"a.dcm", tmp_path/"mono1.dcm"], 75)
    assert x.dtype == np.uint8 and np.abs(x[0].astype(int) - x[1]).max() <= 1 and x.max() > 200
    with pytest.raises(ValueError, match="multi-frame DICOM"): load_images([tmp_path/"frames.dcm"], 75)
    m = pd.DataFrame({"path": [str(tmp_path/f) for f in ("a.dcm", "mono1.dcm", "frames.dcm")], "class": ["x", "y", "x"]})
    with pytest.warns(UserWarning, match="frames.dcm"):
        got, _ = collect(make_dataset(m, ["x", "y"], 75, batch_size=4))
    assert np.array_equal(got, x)
