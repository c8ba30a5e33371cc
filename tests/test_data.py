"Tests for `brain_tumor_cls.data`: folder scanning, header metadata, class counts."
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brain_tumor_cls.files import IMAGE_SUFFIXES
from brain_tumor_cls.testing import bomb_png
from brain_tumor_cls.data import (INFO_COLUMNS, SPLIT_NAMES, class_counts, image_info,
                                  plot_class_counts, plot_resolution_spread, scan_images)

CLASSES = ["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"]


def _bomb(path, w, h):
    "Write a PNG whose header claims w×h pixels; returns its path."
    Path(path).write_bytes(bomb_png(w, h)); return Path(path)


def img(path, size=(8, 8), mode="L", fmt=None, **save):
    "Write a small solid image (parents created) and return its path."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = 100 if mode in ("L", "P", "1", "I;16") else (100,) * len(mode)
    Image.new(mode, size, colour).save(path, format=fmt, **save)
    return path


def flat_dataset(root, n=3):
    for c in CLASSES[:3]:
        for i in range(n): img(root / c / f"{c}_{i}.png")
    return root


def manifest_of(*paths):
    return pd.DataFrame({"path": [str(p) for p in paths]})


# ---------------------------------------------------------------- scan_images: layouts

def test_flat_layout(tmp_path):
    flat_dataset(tmp_path)
    m = scan_images(tmp_path)
    assert list(m.columns) == ["path", "class", "split", "image"]
    assert len(m) == 9 and (m["split"] == "").all()
    assert sorted(m["class"].unique()) == CLASSES[:3]
    assert m.index.equals(pd.RangeIndex(9))
    for p, c, im in zip(m["path"], m["class"], m["image"]):
        assert Path(p).is_absolute() and "\\" not in p and Path(p).is_file()
        assert Path(p).parent.name == c and Path(p).name == im


def test_split_layout_case_insensitive_names(tmp_path):
    for split in ["TRAINING", "Valid", "test"]:
        for c in CLASSES[:2]: img(tmp_path / split / c / "a.png")
    m = scan_images(tmp_path)
    assert sorted(m["split"].unique()) == ["test", "train", "val"]
    assert len(m) == 6
    assert set(m.loc[m["split"] == "val", "path"].map(lambda p: Path(p).parts[-3])) == {"Valid"}


@pytest.mark.parametrize("folder,split", sorted(SPLIT_NAMES.items()))
def test_every_split_alias(tmp_path, folder, split):
    for c in CLASSES[:2]: img(tmp_path / folder.capitalize() / c / "a.png")
    assert set(scan_images(tmp_path)["split"]) == {split}


def test_class_split_in_nested_subfolders(tmp_path):
    flat_dataset(tmp_path, n=1)
    img(tmp_path / "no_tumor" / "patient 7" / "slice 1.png")
    m = scan_images(tmp_path)
    assert m.loc[m["image"] == "slice 1.png", "class"].tolist() == ["no_tumor"]


def test_extensions_case_insensitive_and_non_images_ignored(tmp_path):
    flat_dataset(tmp_path, n=1)
    d = tmp_path / "glioma_tumor"
    img(d / "UPPER.JPG", mode="RGB", fmt="JPEG")
    img(d / "mixed.JpEg", mode="RGB", fmt="JPEG")
    img(d / "shout.PNG")
    img(d / "bitmap.Bmp", fmt="BMP")
    img(d / "anim.gif", fmt="GIF")             # not a supported extension
    img(d / "scan.tiff", fmt="TIFF")           # not a supported extension
    (d / "notes.txt").write_text("x")
    (d / "labels.csv").write_text("a,b")
    (d / "jpg").write_text("no extension")
    m = scan_images(tmp_path)
    names = set(m.loc[m["class"] == "glioma_tumor", "image"])
    assert names == {"glioma_tumor_0.png", "UPPER.JPG", "mixed.JpEg", "shout.PNG", "bitmap.Bmp"}
    assert set(IMAGE_SUFFIXES) == {".jpg", ".jpeg", ".png", ".bmp", ".dcm", ".dicom"}


def test_hidden_files_and_folders_ignored(tmp_path):
    flat_dataset(tmp_path, n=1)
    img(tmp_path / "no_tumor" / ".hidden.png")
    img(tmp_path / "no_tumor" / "._resource_fork.jpg", fmt="PNG")
    img(tmp_path / "no_tumor" / ".ipynb_checkpoints" / "x.png")
    img(tmp_path / ".cache" / "x.png")                 # hidden "class"
    img(tmp_path / "__MACOSX" / "no_tumor" / "x.png")  # zip debris
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")
    m = scan_images(tmp_path)
    assert len(m) == 3 and not m["image"].str.startswith(".").any()
    assert set(m["class"]) == set(CLASSES[:3])


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks on this platform")
def test_symlink_loop_survived_and_linked_files_kept(tmp_path):
    data = flat_dataset(tmp_path / "data", n=2)
    try:
        os.symlink(data / "no_tumor", data / "no_tumor" / "loop", target_is_directory=True)  # loop to itself
        os.symlink(data, data / "glioma_tumor" / "up", target_is_directory=True)            # loop to the root
        os.symlink(data / "no_tumor" / "no_tumor_0.png", data / "meningioma_tumor" / "linked.png")
        os.symlink(tmp_path / "missing.png", data / "meningioma_tumor" / "broken.png")
    except OSError as e:
        pytest.skip(f"cannot create symlinks here: {e}")
    with pytest.warns(UserWarning, match="broken link"):
        m = scan_images(data)
    assert "linked.png" in set(m["image"]) and "broken.png" not in set(m["image"])
    assert m["path"].is_unique
    # links back to the class folder or the root are not followed: nothing is counted twice
    assert len(m) == 7
    assert m.groupby("class").size().to_dict() == {"glioma_tumor": 2, "meningioma_tumor": 3, "no_tumor": 2}


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks on this platform")
def test_folder_links_outside_only_when_asked_across_classes_never(tmp_path):
    data = flat_dataset(tmp_path / "data", n=2)
    img(tmp_path / "elsewhere" / "patient 1" / "s1.png")
    try:
        os.symlink(tmp_path / "elsewhere", data / "no_tumor" / "more", target_is_directory=True)
        os.symlink(data / "no_tumor", data / "glioma_tumor" / "other_class", target_is_directory=True)
    except OSError as e:
        pytest.skip(f"cannot create symlinks here: {e}")
    with pytest.warns(UserWarning, match="lead outside the data folder"):
        m = scan_images(data)
    assert m.groupby("class").size().to_dict() == {"glioma_tumor": 2, "meningioma_tumor": 2, "no_tumor": 3}
    assert m.loc[m["outside_data"], "image"].tolist() == ["more"] and "s1.png" not in set(m["image"])
    m = scan_images(data, follow_symlinks=True)
    assert m.groupby("class").size().to_dict() == {"glioma_tumor": 2, "meningioma_tumor": 2, "no_tumor": 3}
    assert m.loc[m["image"] == "s1.png", "path"].item().endswith("no_tumor/more/patient 1/s1.png")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_unreadable_subfolder_warned(tmp_path):
    flat_dataset(tmp_path, n=1)
    locked = tmp_path / "no_tumor" / "locked"
    img(locked / "x.png")
    locked.chmod(0)
    try:
        with pytest.warns(UserWarning, match="Could not read"):
            m = scan_images(tmp_path)
    finally:
        locked.chmod(0o755)
    assert "x.png" not in set(m["image"])


def test_names_with_spaces_parentheses_non_ascii(tmp_path):
    names = ["p (12).jpg", "image(55).jpg", "ñandú é.png", "脑 MRI.jpeg", "a b  c.png"]
    for c in CLASSES[:2]:
        for n in names: img(tmp_path / f"{c} (copy)" / n, mode="RGB",
                            fmt="JPEG" if n.endswith(("jpg", "jpeg")) else "PNG")
    m = scan_images(tmp_path)
    assert len(m) == 10 and set(m["image"]) == set(names)
    assert set(m["class"]) == {f"{c} (copy)" for c in CLASSES[:2]}
    assert all(Path(p).is_file() for p in m["path"])
    info = image_info(m, progress=False)
    assert (info["error"] == "").all()


def test_deterministic_order(tmp_path):
    for split in ["Testing", "Training"]:
        for c in reversed(CLASSES):
            for i in [3, 1, 2, 10]: img(tmp_path / split / c / f"{i}.png")
    a, b = scan_images(tmp_path), scan_images(str(tmp_path) + os.sep)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, a.sort_values(["split", "class", "path"], ignore_index=True))
    assert a["split"].iloc[0] == "test" and a["class"].iloc[0] == CLASSES[0]


def test_relative_root_gives_absolute_paths(tmp_path, monkeypatch):
    flat_dataset(tmp_path / "ds", n=1)
    monkeypatch.chdir(tmp_path)
    m = scan_images("ds")
    assert all(Path(p).is_absolute() for p in m["path"])


def test_empty_class_folder_warned_and_dropped(tmp_path):
    flat_dataset(tmp_path, n=1)
    (tmp_path / "pituitary_tumor").mkdir()
    (tmp_path / "pituitary_tumor" / "readme.txt").write_text("x")
    with pytest.warns(UserWarning, match="without images"):
        m = scan_images(tmp_path)
    assert "pituitary_tumor" not in set(m["class"])


def test_loose_images_in_root_warned(tmp_path):
    flat_dataset(tmp_path, n=1)
    img(tmp_path / "stray.png")
    with pytest.warns(UserWarning, match="outside any class folder"):
        m = scan_images(tmp_path)
    assert "stray.png" not in set(m["image"])


# ---------------------------------------------------------------- scan_images: bad input

def check_error(exc, root, contains):
    with pytest.raises(exc) as e:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scan_images(root)
    msg = str(e.value)
    assert os.path.abspath(root) in msg, msg
    assert contains in msg and "Expected layout" in msg, msg


def test_missing_folder(tmp_path):
    check_error(FileNotFoundError, tmp_path / "does not exist", "not found")


def test_file_instead_of_folder(tmp_path):
    check_error(NotADirectoryError, img(tmp_path / "one.png"), "is a file")


def test_empty_folder(tmp_path):
    check_error(ValueError, tmp_path, "No class folders")


def test_folders_without_images(tmp_path):
    for c in CLASSES: (tmp_path / c).mkdir()
    (tmp_path / "no_tumor" / "a.txt").write_text("x")
    check_error(ValueError, tmp_path, "No images found")


def test_only_one_class(tmp_path):
    img(tmp_path / "glioma_tumor" / "a.png")
    (tmp_path / "no_tumor").mkdir()
    check_error(ValueError, tmp_path, "Only one class")


def test_one_class_per_split_is_still_one_class(tmp_path):
    img(tmp_path / "Training" / "glioma_tumor" / "a.png")
    img(tmp_path / "Testing" / "glioma_tumor" / "a.png")
    check_error(ValueError, tmp_path, "Only one class")


def test_mixed_split_and_class_folders(tmp_path):
    flat_dataset(tmp_path / "Training", n=1)
    img(tmp_path / "glioma_tumor" / "a.png")
    check_error(ValueError, tmp_path, "mixes split folders")


# ---------------------------------------------------------------- image_info

def test_image_info_columns_and_index(tmp_path):
    flat_dataset(tmp_path)
    m = scan_images(tmp_path)
    m.index = range(100, 100 + len(m))  # non-default index survives
    info = image_info(m, progress=False)
    assert list(info.columns) == list(m.columns) + INFO_COLUMNS
    assert info.index.equals(m.index)
    assert "width" not in m.columns  # input untouched
    assert info[["width", "height", "bytes"]].dtypes.tolist() == [np.dtype("int64")] * 3
    assert (info["width"] == 8).all() and (info["mode"] == "L").all() and (info["format"] == "PNG").all()
    assert (info["bytes"] == [os.path.getsize(p) for p in m["path"]]).all()
    assert (info["error"] == "").all()


def test_image_info_serial_threads_processes_agree(tmp_path):
    flat_dataset(tmp_path, n=5)
    m = scan_images(tmp_path)
    a = image_info(m, workers=1, progress=False)
    pd.testing.assert_frame_equal(a, image_info(m, workers=2, progress=False))
    pd.testing.assert_frame_equal(a, image_info(m, workers=2, executor="process", progress=False))


def test_image_info_empty_manifest():
    info = image_info(pd.DataFrame({"path": pd.Series([], dtype="str")}), progress=False)
    assert list(info.columns) == ["path"] + INFO_COLUMNS and len(info) == 0


def odd_files(d):
    "name -> (path, expected width, height, mode, error) for awkward files."
    d.mkdir(exist_ok=True)
    good = d / "good.jpg"  # noisy, so the pixel data is much longer than the header
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(good, quality=95)
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not a JPEG\n" * 10)
    data = good.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    (d / "header_cut.jpg").write_bytes(data[:10])                # cut inside the header
    Image.fromarray(np.full((6, 5), 40000, np.uint16)).save(d / "sixteen.png")
    return {
        "good": (good, 40, 30, "RGB", ""),
        "zero": (d / "zero.jpg", 0, 0, "", "empty file (0 bytes)"),
        "text": (d / "text.jpg", 0, 0, "", "a text file, not an image"),
        "truncated": (d / "truncated.jpg", 40, 30, "RGB", ""),
        "header_cut": (d / "header_cut.jpg", 0, 0, "", "a damaged or truncated JPEG header ("),  # prefix; Pillow's reason follows
        "16bit": (d / "sixteen.png", 5, 6, "I;16", ""),
        "rgba": (img(d / "rgba.png", size=(3, 4), mode="RGBA"), 3, 4, "RGBA", ""),
        "palette": (img(d / "palette.png", size=(7, 2), mode="P"), 7, 2, "P", ""),
        "cmyk": (img(d / "cmyk.jpg", size=(9, 9), mode="CMYK", fmt="JPEG"), 9, 9, "CMYK", ""),
        "grey": (img(d / "grey.jpg", size=(12, 10), mode="L", fmt="JPEG"), 12, 10, "L", ""),
        "one_pixel": (img(d / "one.png", size=(1, 1)), 1, 1, "L", ""),
        "bitmap": (img(d / "b.bmp", size=(5, 3), mode="RGB", fmt="BMP"), 5, 3, "RGB", ""),
        "bomb": (_bomb(d / "bomb.png", 50_000, 50_000), 50_000, 50_000, "RGB", "header claims 50000x50000 = 2,500,000,000 pixels"),
        "gone": (d / "gone.png", 0, 0, "", "file not found"),
    }


def test_image_info_awkward_files(tmp_path):
    cases = odd_files(tmp_path)
    info = image_info(manifest_of(*(c[0] for c in cases.values())), progress=False)
    for (name, (path, w, h, mode, err)), row in zip(cases.items(), info.itertuples()):
        assert (row.width, row.height, row.mode) == (w, h, mode), name
        assert row.error.startswith(err) and (err or not row.error), (name, row.error)
        assert row.bytes == (path.stat().st_size if path.exists() else 0), name
    assert info.loc[info["error"] == "", "format"].isin(["JPEG", "PNG", "BMP"]).all()


def test_bomb_is_not_decoded(tmp_path):
    "A 2.5-gigapixel claim must not allocate anything like 2.5 GB: it is never decoded."
    import tracemalloc
    p = _bomb(tmp_path / "bomb.png", 50_000, 50_000)
    tracemalloc.start()
    info = image_info(manifest_of(p), workers=1, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert info["error"][0].startswith("header claims 50000x50000") and peak < 50_000_000


def test_moderate_bomb_warning_level(tmp_path):
    "Between Image.MAX_IMAGE_PIXELS and twice that Pillow only warns; the project's limit (files.MAX_PIXELS) flags the row."
    p = _bomb(tmp_path / "big.png", 10_000, 10_000)  # 1e8 > 89,478,485 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        info = image_info(manifest_of(p), workers=1, progress=False)
    assert info[["width", "height"]].iloc[0].tolist() == [10_000, 10_000] and "more than the limit" in info["error"][0]


def test_bad_files_do_not_stop_parallel_scan(tmp_path):
    cases = odd_files(tmp_path)
    paths = [c[0] for c in cases.values()] * 20
    info = image_info(manifest_of(*paths), workers=2, progress=False)
    assert len(info) == len(paths)
    assert all(e.startswith(c[4]) for e, c in zip(info["error"], list(cases.values()) * 20))


# ---------------------------------------------------------------- counts and plots

def test_class_counts_split_and_flat(tmp_path):
    for split, n in [("Training", 3), ("Testing", 1)]:
        for c in CLASSES[:3]:
            for i in range(n if c != "no_tumor" else n + 1): img(tmp_path / "s" / split / c / f"{i}.png")
    cc = class_counts(scan_images(tmp_path / "s"))
    assert list(cc.columns) == ["train", "test", "total", "share"]
    assert list(cc.index) == CLASSES[:3] + ["total"]
    assert cc.loc["no_tumor", ["train", "test", "total"]].tolist() == [4, 2, 6]
    assert cc.loc["total", "total"] == 14 and cc.loc["total", "share"] == 1.0
    flat = class_counts(scan_images(flat_dataset(tmp_path / "f")))
    assert list(flat.columns) == ["total", "share"] and flat.loc["total", "total"] == 9


def test_plots_return_axes(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for split in ["Training", "Testing"]:
        for c in CLASSES[:2]: img(tmp_path / split / c / "a.png", size=(8, 6 if c == CLASSES[0] else 8))
    info = image_info(scan_images(tmp_path), progress=False)
    ax = plot_class_counts(info)
    assert isinstance(ax, matplotlib.axes.Axes)
    assert sum(np.nansum(c.datavalues) for c in ax.containers) == len(info)
    fig = plot_resolution_spread(info)
    assert isinstance(fig, matplotlib.figure.Figure) and fig.axes[0].get_title() == "2 distinct sizes"
    with pytest.raises(ValueError, match="image_info"):
        plot_resolution_spread(info[["path", "class"]])
    plt.close("all")


# ---------------------------------------------------------------- the real dataset

def real_data_root():
    env = os.environ.get("BTC_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/data/sartaj-brain-mri"


def test_real_dataset_every_file_once():
    root = real_data_root()
    if not root.is_dir():
        pytest.skip(f"real dataset not found at {root} (set BTC_DATA to the sartaj-brain-mri folder)")
    expected = set()  # independent walk: (path, class, split) of every image file
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith((".jpg", ".jpeg", ".png")) and not f.startswith("."):
                rel = Path(dirpath).relative_to(root).parts
                expected.add((Path(dirpath, f).absolute().as_posix(), rel[1], SPLIT_NAMES[rel[0].lower()]))
    m = image_info(scan_images(root), progress=False)
    assert len(m) == len(expected) and m["path"].is_unique
    assert set(zip(m["path"], m["class"], m["split"])) == expected
    assert set(m["split"]) == {"train", "test"} and m["class"].nunique() == 4
    assert m["image"].str.contains(" ").any() and m["image"].str.contains(r"\(").any()
    assert (m["error"] == "").all() and (m["width"] > 0).all() and (m["height"] > 0).all()
