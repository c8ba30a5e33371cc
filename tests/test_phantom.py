"Tests for brain_tumor_cls.phantom: layout, masks, determinism, planted defects, learnability, no brightness cue."
import functools, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brain_tumor_cls.phantom import PHANTOM_CLASSES, draw_slice, make_phantom_dataset, mask_for

COLUMNS = ["path", "class", "split", "mask", "defect", "defect_of"]
REASONS = {"exact_duplicate", "near_duplicate", "label_conflict", "corrupt", "not_an_image",
           "resolution_outlier", "near_blank"}


@functools.lru_cache(maxsize=None)
def _arrays(seed, n, size=64):
    "Phantom slices drawn in memory (cached, shared by the learning tests): uint8 [4n, size, size] and int labels."
    X, y = [], []
    for ci, c in enumerate(PHANTOM_CLASSES):
        for i in range(n):
            X.append(draw_slice(np.random.default_rng([seed, ci, i]), c, size)[0]); y.append(ci)
    return np.stack(X), np.array(y, np.int32)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    out = tmp_path_factory.mktemp("dirty")
    return out, make_phantom_dataset(out, n_per_class=8, size=96, seed=0, dirty=True, layout="split", progress=False)


def test_flat_layout_columns_and_masks(tmp_path):
    df = make_phantom_dataset(tmp_path, n_per_class=5, size=64, seed=2, progress=False)
    assert list(df.columns) == COLUMNS and len(df) == 20
    assert (df.split == "").all() and (df.defect == "").all() and (df.defect_of == "").all()
    assert df["class"].value_counts().to_dict() == {c: 5 for c in PHANTOM_CLASSES}
    assert df.equals(df.sort_values(["split", "class", "path"], ignore_index=True))
    for r in df.to_dict("records"):
        p = Path(r["path"])
        assert p.is_absolute() and p.parent == tmp_path/"images"/r["class"] and p.suffix == ".png"
        im = Image.open(p); assert im.mode == "L" and im.size == (64, 64)
        assert mask_for(p) == r["mask"] and mask_for(str(p)) == r["mask"]
        if r["class"] == "no_tumor":
            assert r["mask"] == ""
        else:
            m = np.asarray(Image.open(r["mask"]))
            assert m.shape == (64, 64) and set(np.unique(m)) == {0, 255}
            assert 0 < (m == 255).mean() < 0.06                         # a lesion, and a small one
    saved = pd.read_csv(tmp_path/"phantom.csv", keep_default_na=False, dtype=str)
    assert saved.equals(df.astype(str))
    assert mask_for(tmp_path/"elsewhere.png") == ""


def test_split_layout_scans_like_the_real_dataset(tmp_path):
    from brain_tumor_cls.data import scan_images
    df = make_phantom_dataset(tmp_path, n_per_class=8, size=64, layout="split", test_frac=0.25, progress=False)
    assert df.groupby(["split", "class"]).size().to_dict() == {
        **{("test", c): 2 for c in PHANTOM_CLASSES}, **{("train", c): 6 for c in PHANTOM_CLASSES}}
    for r in df.to_dict("records"):
        top = {"train": "Training", "test": "Testing"}[r["split"]]
        assert Path(r["path"]).parent == tmp_path/"images"/top/r["class"]
        if r["mask"]: assert r["mask"] == (tmp_path/"masks"/top/r["class"]/Path(r["path"]).name).as_posix()
    m = scan_images(tmp_path/"images")
    assert sorted(zip(m.path, m["class"], m.split)) == sorted(zip(df.path, df["class"], df.split))


def test_deterministic_and_independent_of_n(tmp_path):
    a = make_phantom_dataset(tmp_path/"a", n_per_class=6, size=64, seed=5, dirty=True, progress=False)
    b = make_phantom_dataset(tmp_path/"b", n_per_class=6, size=64, seed=5, dirty=True, progress=False)
    files = lambda root: sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != "phantom.csv")
    assert files(tmp_path/"a") == files(tmp_path/"b")
    for rel in files(tmp_path/"a"):
        assert (tmp_path/"a"/rel).read_bytes() == (tmp_path/"b"/rel).read_bytes(), rel
    small = make_phantom_dataset(tmp_path/"c", n_per_class=3, size=64, seed=5, progress=False)
    for p in small.path:   # slice i is the same whatever n_per_class
        assert Path(p).read_bytes() == (tmp_path/"a"/Path(p).relative_to(tmp_path/"c")).read_bytes()
    other = make_phantom_dataset(tmp_path/"d", n_per_class=3, size=64, seed=6, progress=False)
    assert all(Path(p).read_bytes() != (tmp_path/"c"/Path(p).relative_to(tmp_path/"d")).read_bytes() for p in other.path)


def test_dirty_plants_each_defect(dirty):
    out, df = dirty
    assert list(df.columns) == COLUMNS
    clean, planted = df[df.defect == ""], df[df.defect != ""]
    assert len(clean) == 32 and REASONS <= set(planted.defect)
    assert (planted.defect == "exact_duplicate").sum() >= 2 and (planted.defect == "near_duplicate").sum() >= 2
    assert (planted["mask"] == "").all()
    assert all(Path(p).exists() for p in df.path)
    rows = {r["defect"]: r for r in planted.to_dict("records")}
    for r in planted[planted.defect_of != ""].to_dict("records"):
        assert r["path"] > r["defect_of"] and r["defect_of"] in set(clean.path)
    for r in planted[planted.defect.isin(["exact_duplicate", "label_conflict"])].to_dict("records"):
        assert Path(r["path"]).read_bytes() == Path(r["defect_of"]).read_bytes()
    conflict = rows["label_conflict"]
    assert conflict["class"] != clean.set_index("path").loc[conflict["defect_of"], "class"]
    assert Path(conflict["path"]).parent.name == conflict["class"]
    near = planted[planted.defect == "near_duplicate"]
    assert {Path(p).suffix for p in near.path} == {".jpg", ".png"}
    for r in near.to_dict("records"):
        a, b = Image.open(r["path"]), Image.open(r["defect_of"])
        if a.format == "PNG": assert a.size == (72, 72)                    # the 0.75x rescale
        x = np.asarray(a.convert("L").resize(b.size), float).ravel(); z = np.asarray(b, float).ravel()
        assert Path(r["path"]).read_bytes() != Path(r["defect_of"]).read_bytes()
        assert np.corrcoef(x, z)[0, 1] > 0.97
    assert np.asarray(Image.open(rows["near_blank"]["path"])).max() <= 5
    assert Image.open(rows["resolution_outlier"]["path"]).size == (288, 288)
    with pytest.raises(Exception): Image.open(rows["not_an_image"]["path"])
    assert Path(rows["not_an_image"]["path"]).read_bytes().decode().startswith("Radiology")
    with pytest.raises(OSError): Image.open(rows["corrupt"]["path"]).load()
    assert Image.open(rows["corrupt"]["path"]).size == (96, 96)           # the header still reads


def test_clean_images_are_homogeneous(dirty):
    "The clean slices share one resolution and have no brightness or contrast outliers (robust z < 3)."
    _, df = dirty
    X = np.stack([np.asarray(Image.open(p), np.float32) for p in df.path[df.defect == ""]])
    for v in (X.mean((1, 2)), X.std((1, 2))):
        z = np.abs(v - np.median(v))/(1.4826*np.median(np.abs(v - np.median(v))))
        assert z.max() < 3, z.max()


def test_rewrite_and_bad_arguments(tmp_path):
    make_phantom_dataset(tmp_path, n_per_class=6, size=64, dirty=True, progress=False)
    df = make_phantom_dataset(tmp_path, n_per_class=4, size=64, progress=False)   # replaces the earlier set
    assert sorted(p.as_posix() for p in (tmp_path/"images").rglob("*.*")) == sorted(df.path)
    foreign = tmp_path/"foreign"; (foreign/"images"/"cats").mkdir(parents=True)
    (foreign/"images"/"cats"/"tom.png").write_bytes(b"")
    with pytest.raises(FileExistsError, match="not a phantom folder"): make_phantom_dataset(foreign, 4, progress=False)
    assert (foreign/"images"/"cats"/"tom.png").exists()
    with pytest.raises(ValueError, match="layout"): make_phantom_dataset(tmp_path/"x", 4, layout="nested", progress=False)
    with pytest.raises(ValueError, match="n_per_class"): make_phantom_dataset(tmp_path/"x", 2, dirty=True, progress=False)
    with pytest.raises(ValueError, match="unknown class"): draw_slice(np.random.default_rng(0), "astrocytoma")


def test_mean_and_std_do_not_separate_the_classes():
    "A logistic regression on per-slice (mean, std) stays near chance (0.25) on phantoms of another seed."
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    feats = lambda X: np.stack([X.mean((1, 2)), X.std((1, 2))], 1)
    Xtr, ytr = _arrays(0, 64); Xte, yte = _arrays(1, 40)
    lr = make_pipeline(StandardScaler(), LogisticRegression()).fit(feats(Xtr), ytr)
    acc = lr.score(feats(Xte), yte)
    print(f"logistic regression on (mean, std): held-out accuracy {acc:.3f}")
    assert acc <= 0.4


def test_small_cnn_learns_the_classes():
    "A tiny CNN trained on 64 slices per class (64 px, seed 0) classifies held-out phantoms (seed 1) well above chance."
    import keras
    Xtr, ytr = _arrays(0, 64); Xte, yte = _arrays(1, 40)
    std = lambda X: ((X - X.mean((1, 2), keepdims=True))/X.std((1, 2), keepdims=True))[..., None].astype("float32")
    keras.utils.set_random_seed(0)
    L = keras.layers
    def block(f): return [L.Conv2D(f, 3, padding="same", use_bias=False), L.BatchNormalization(momentum=0.8), L.ReLU()]
    model = keras.Sequential([keras.Input((64, 64, 1)), *block(16), L.MaxPooling2D(), *block(32), L.MaxPooling2D(),
                              *block(48), L.MaxPooling2D(), *block(64), L.GlobalMaxPooling2D(), L.Dense(4)])
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")])
    model.fit(std(Xtr), ytr, epochs=8, batch_size=32, verbose=0)
    acc = model.evaluate(std(Xte), yte, verbose=0)[1]
    print(f"small CNN: held-out accuracy {acc:.3f}")
    assert acc >= 0.7


def test_format_switch_leaves_no_stale_files(tmp_path):
    "Rewriting a PNG phantom as DICOM (and back) in the same folder removes the other format's slices."
    png = make_phantom_dataset(tmp_path, n_per_class=3, size=64, layout="split", progress=False)
    dcm = make_phantom_dataset(tmp_path, n_per_class=3, size=64, layout="split", format="dicom", progress=False)
    files = lambda: sorted(p.as_posix() for p in (tmp_path/"images").rglob("*.*"))
    assert files() == sorted(dcm.path) and all(p.endswith(".dcm") for p in files())
    assert sorted(dcm["mask"]) == sorted(png["mask"])                      # masks stay PNG, same places
    make_phantom_dataset(tmp_path, n_per_class=3, size=64, progress=False)
    assert all(p.endswith(".png") for p in files())
    with pytest.raises(ValueError, match="format"): make_phantom_dataset(tmp_path/"x", 3, format="nifti", progress=False)


def test_dicom_patients_group_slices_within_a_split(tmp_path):
    "Several slices share a Patient ID; no patient spans two splits or two classes."
    from brain_tumor_cls.dicom import dicom_header
    df = make_phantom_dataset(tmp_path, n_per_class=7, size=64, layout="split", test_frac=0.3, format="dicom", progress=False)
    df["patient"] = [dicom_header(p)["patient_id"] for p in df.path]
    per = df.groupby("patient").agg(n=("path", "size"), splits=("split", "nunique"), classes=("class", "nunique"))
    assert (per.splits == 1).all() and (per.classes == 1).all() and per.n.max() >= 2


def test_confound_mark_is_the_only_difference(tmp_path):
    "With a confound, the marked class differs from the clean dataset only inside the corner bar; other classes not at all."
    clean = make_phantom_dataset(tmp_path/"a", n_per_class=3, size=96, progress=False)
    conf = make_phantom_dataset(tmp_path/"b", n_per_class=3, size=96, confound="meningioma_tumor", progress=False)
    for a, b, c in zip(clean.path, conf.path, conf["class"]):
        d = np.asarray(Image.open(a)) != np.asarray(Image.open(b))
        if c != "meningioma_tumor": assert not d.any()
        else: assert d.any() and not d[:80].any() and not d[:, :70].any()
