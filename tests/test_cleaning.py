"Tests for brain_tumor_cls.cleaning: planted phantom defects, awkward inputs, read-only audit, near-duplicate search."
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brain_tumor_cls.cleaning import (REASONS, FATAL, audit, audit_summary, duplicate_summary, clean, inspect_file,
                                      hamming_pairs, pair_correlation, robust_z, choose_bands, plot_issue_gallery,
                                      plot_duplicate_pairs)
from brain_tumor_cls.testing import bomb_png, brute_hamming_pairs, check_planted, synthetic_hashes, write_bad_inputs
from brain_tumor_cls.data import scan_images
from brain_tumor_cls.phantom import make_phantom_dataset

SPEC_REASONS = {"exact_duplicate", "near_duplicate", "label_conflict", "split_leakage", "empty_file", "not_an_image",
                "corrupt", "decompression_bomb", "resolution_outlier", "too_small", "near_blank",
                "brightness_outlier", "contrast_outlier"}


def _fingerprint(root):
    return {p.as_posix(): (hashlib.md5(p.read_bytes()).hexdigest(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    "A dirty phantom set in the split layout, its scan and its audit."
    out = tmp_path_factory.mktemp("phantom")
    ph = make_phantom_dataset(out, n_per_class=12, dirty=True, layout="split", progress=False)
    man = scan_images(out/"images")
    before = _fingerprint(out)
    aud = audit(man, progress=False, workers=2)
    return ph, man, aud, before, out


def test_vocabulary():
    assert SPEC_REASONS <= set(REASONS) and set(FATAL) <= set(REASONS)


def test_every_planted_defect_found_nothing_else(dirty):
    ph, man, aud, _, _ = dirty
    assert len(aud) == len(man) == len(ph)
    assert check_planted(aud, ph) == []
    # the reasons expected by construction, file by file
    a = aud.set_index("image")
    for p, d in zip(ph["path"], ph["defect"]):
        if d: assert d in a.loc[Path(p).name, "issues"], (p, d)
    clean_rows = aud[aud["path"].isin(ph.loc[ph["defect"] == "", "path"])]
    conflict_orig = set(ph.loc[ph["defect"] == "label_conflict", "defect_of"])
    flagged = clean_rows[clean_rows["issues"].map(len) > 0]
    assert set(flagged["path"]) <= conflict_orig, flagged[["image", "issues"]]


def test_columns_types_and_groups(dirty):
    _, man, aud, _, _ = dirty
    for c in ["md5", "phash", "dup_group", "issues", "keep", "dup_of", "dup_score"]: assert c in aud
    assert list(aud["path"]) == list(man["path"])                      # same rows, same order
    assert aud["dup_group"].dtype.kind == "i" and aud["keep"].dtype == bool
    assert all(isinstance(i, list) for i in aud["issues"])
    assert all(r in REASONS for i in aud["issues"] for r in i)
    assert aud["dup_group"].notna().all()
    # a singleton has a group of its own; every group of >= 2 keeps at most one file
    g = aud.groupby("dup_group")
    assert (g["keep"].sum() <= 1).all()
    d = duplicate_summary(aud)
    assert d["exact_duplicate_groups"] == 3 and d["near_duplicate_groups"] == 2 and d["label_conflict_groups"] == 1


def test_representative_is_largest_then_sorted_path(dirty):
    ph, _, aud, _, _ = dirty
    small = ph.loc[ph["path"].str.endswith("_small.png"), "path"].item()
    orig = ph.loc[ph["path"].str.endswith("_small.png"), "defect_of"].item()
    a = aud.set_index("path")
    assert a.loc[small, "dup_of"] == orig and a.loc[orig, "keep"] and not a.loc[small, "keep"]
    assert a.loc[small, "dup_group"] == a.loc[orig, "dup_group"]
    copy = ph.loc[ph["path"].str.endswith("glioma_tumor_0001_copy.png"), "path"].item()
    assert a.loc[copy, "dup_of"].endswith("glioma_tumor_0001.png")   # same size: the sorted-first path is kept


def test_source_files_untouched(dirty):
    _, _, _, before, out = dirty
    assert _fingerprint(out) == before


def test_summary_and_clean(dirty):
    ph, _, aud, _, _ = dirty
    s = audit_summary(aud)
    assert s.loc["(files)", "total"] == len(aud) and s.loc["(kept)", "total"] == aud["keep"].sum()
    assert set(s.columns) == set(aud["class"]) | {"total"}
    c = clean(aud)
    assert c["dup_group"].is_unique and len(c) == aud["keep"].sum()
    bad = ph.loc[~ph["defect"].isin(["", "resolution_outlier"]), "path"]
    assert not c["path"].isin(bad).any()
    assert len(clean(aud, drop=["resolution_outlier"])) == len(c) - 1


def test_split_leakage(tmp_path):
    "A picture in both Training and Testing (re-encoded as JPEG) is one group marked split_leakage."
    make_phantom_dataset(tmp_path, n_per_class=6, layout="split", progress=False)
    src = sorted((tmp_path/"images"/"Training"/"glioma_tumor").glob("*.png"))[0]
    Image.open(src).save(tmp_path/"images"/"Testing"/"glioma_tumor"/"leaked.jpg", quality=90)
    aud = audit(scan_images(tmp_path/"images"), progress=False, workers=1)
    leak = aud[aud["issues"].map(lambda i: "split_leakage" in i)]
    assert len(leak) == 2 and leak["dup_group"].nunique() == 1 and set(leak["split"]) == {"train", "test"}
    assert duplicate_summary(aud)["split_leakage_groups"] == 1
    assert aud["issues"].map(len).sum() == 3      # 2 x split_leakage + 1 near_duplicate, nothing else


def test_manifest_from_csv_with_missing_split(dirty, tmp_path):
    "A manifest read back from CSV (empty split -> NaN) audits the same."
    _, man, aud, _, _ = dirty
    f = tmp_path/"m.csv"; man.assign(split="").to_csv(f, index=False)
    a2 = audit(pd.read_csv(f), progress=False)
    assert a2["issues"].map(lambda i: "split_leakage" in i).sum() == 0      # NaN is not a split
    assert (a2["dup_group"].to_numpy() == aud["dup_group"].to_numpy()).all()


def test_bad_inputs_each_get_a_clear_reason(tmp_path):
    bad = write_bad_inputs(tmp_path/"folder"/"c")
    man = pd.DataFrame({"path": list(bad.values()), "class": "c", "split": ""})
    before = _fingerprint(tmp_path/"folder")
    aud = audit(man, progress=False, workers=2).set_index(pd.Index(list(bad)))
    expect = dict(truncated_jpeg="corrupt", truncated_png="corrupt", empty="empty_file", text="not_an_image",
                  bomb="decompression_bomb", one_pixel="too_small", **{k: "unusual_mode" for k in ("16bit", "palette", "rgba", "cmyk_jpeg")})
    for k, r in expect.items():
        assert r in aud.loc[k, "issues"], (k, aud.loc[k, "issues"])
        assert aud.loc[k, "note"], k                                   # a human-readable explanation
    for k in ("truncated_jpeg", "truncated_png", "empty", "text", "bomb", "one_pixel"): assert not aud.loc[k, "keep"]
    for k in ("grey", "rgb_jpeg", "16bit", "palette", "rgba", "cmyk_jpeg"): assert aud.loc[k, "keep"], k
    assert aud.loc["grey", "issues"] == [] and aud.loc["rgb_jpeg", "issues"] == []
    assert aud["dup_group"].is_unique                                  # different pictures: no duplicates
    assert "2,500,000,000 pixels" in aud.loc["bomb", "note"] and aud.loc["bomb", "md5"] == ""   # refused by its header: not even hashed
    assert _fingerprint(tmp_path/"folder") == before


def test_16bit_scaled_not_clipped(tmp_path):
    a = (np.linspace(0, 65535, 64*64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(a).save(tmp_path/"x.png")
    r = inspect_file(tmp_path/"x.png")
    assert r["error"] == "" and 100 < r["gray_mean"] < 155 and "16-bit" in r["note"]


def test_bomb_never_decoded(tmp_path, monkeypatch):
    p = tmp_path/"bomb.png"; p.write_bytes(bomb_png(50_000, 50_000))
    calls = []
    from PIL import ImageFile
    orig = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(1) or orig(self))
    r = inspect_file(p)
    assert r["error"] == "decompression_bomb" and calls == [] and r["thumb"] is None
    # below Pillow's own limit but above ours: our header check refuses it too
    q = tmp_path/"big.png"; q.write_bytes(bomb_png(8000, 8000))
    r = inspect_file(q, max_pixels=10_000_000)
    assert r["error"] == "decompression_bomb" and "limit of 10,000,000" in r["note"] and calls == []


def test_truncated_tolerance_cannot_hide_corruption(tmp_path, monkeypatch):
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)      # some other library set it
    bad = write_bad_inputs(tmp_path)
    assert inspect_file(bad["truncated_jpeg"])["error"] == "corrupt"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True                     # restored


def test_empty_manifest_and_folder_argument(tmp_path):
    aud = audit(pd.DataFrame({"path": pd.Series([], dtype=str), "class": pd.Series([], dtype=str)}), progress=False)
    assert len(aud) == 0 and {"md5", "dup_group", "issues", "keep"} <= set(aud.columns)
    make_phantom_dataset(tmp_path, n_per_class=4, progress=False)
    aud = audit(tmp_path/"images", progress=False, workers=1)               # a folder is scanned first
    assert len(aud) == 16 and aud["keep"].all()


def test_near_duplicate_search_matches_brute_force():
    h, planted = synthetic_hashes(5000, n_pairs=200, max_flip=10, seed=3)
    for t in (0, 4, 8, 10):
        got = hamming_pairs(h, t); ref = brute_hamming_pairs(h, t)
        got = got[np.lexsort((got[:, 1], got[:, 0]))]
        assert np.array_equal(got, ref), t
    found = {tuple(p) for p in hamming_pairs(h, 10)[:, :2]}
    flips = np.bitwise_count(h[planted[:, 0]] ^ h[planted[:, 1]])
    assert (flips <= 10).all() and all(tuple(p) in found for p in planted)


def test_near_duplicate_search_scales():
    "30k hashes (the benchmark does 100k): every planted pair found, and few spurious ones (not n^2 candidates)."
    h, planted = synthetic_hashes(30_000, n_pairs=300, max_flip=8, seed=4)
    got = hamming_pairs(h, 8)
    found = {tuple(p) for p in got[:, :2]}
    assert all(tuple(p) in found for p in planted)
    assert choose_bands(100_000, 8) >= 3
    assert len(got) < 1_000


def test_hex_and_int_hashes_accepted():
    assert len(hamming_pairs(["ffffffffffffffff", "fffffffffffffffe", "0000000000000000"], 2)) == 1
    assert len(hamming_pairs([1, 3, 2**63], 1)) == 1


def test_pair_correlation_and_robust_z():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 256, (3, 16, 16)).astype(np.uint8)
    t[1] = np.clip(t[0].astype(int)//2 + 30, 0, 255)
    t[2] = 7                                                                  # constant: correlates with nothing
    c = pair_correlation(t, np.array([[0, 1], [0, 2]]))
    assert c[0] > 0.99 and c[1] == 0
    z = robust_z([1, 1, 1, 1, 9], floor=0.5)
    assert z[-1] > 3.5 and (z[:4] == 0).all()


def test_plots(dirty):
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    _, _, aud, _, _ = dirty
    f1 = plot_issue_gallery(aud, n=2); f2 = plot_duplicate_pairs(aud, n=2)
    assert len(f1.axes) >= 2 and len(f2.axes) == 4
    plt.close("all")


def _real_root():
    env = os.environ.get("BTC_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2]/"shared/data/sartaj-brain-mri"


def test_real_data_duplicates_leakage_conflicts():
    root = _real_root()
    if not root.is_dir(): pytest.skip(f"real dataset not found at {root} (set BTC_DATA to run this test)")
    before = {p: os.stat(p).st_mtime_ns for p in scan_images(root)["path"][:200]}
    aud = audit(scan_images(root), progress=False)
    d = duplicate_summary(aud)
    assert d["exact_duplicate_groups"] > 0 and d["near_duplicate_groups"] > 0
    assert d["split_leakage_groups"] > 0 and d["label_conflict_groups"] > 0
    # a group is a chain of confirmed pairs, so a member may correlate a little less with the representative itself
    assert aud["dup_score"][aud["dup_of"] != ""].min() >= 0.97
    assert {p: os.stat(p).st_mtime_ns for p in before} == before


def test_same_jpeg_at_two_awkward_sizes_is_one_group(tmp_path):
    "The same slice stored as JPEG at 512 and 399 px: the former reduce-then-resize thumbnail scored it 0.97-0.98, under min_corr."
    from brain_tumor_cls.phantom import draw_slice
    for k, cls in enumerate(["glioma_tumor", "glioma_tumor", "no_tumor", "no_tumor"]):
        (tmp_path/cls).mkdir(exist_ok=True)
        Image.fromarray(draw_slice(np.random.default_rng(k), cls, 512)[0]).save(tmp_path/cls/f"s{k}.jpg", quality=90)
    Image.open(tmp_path/"glioma_tumor"/"s0.jpg").resize((399, 399), Image.Resampling.LANCZOS).save(
        tmp_path/"glioma_tumor"/"s0 small.jpg", quality=90)
    aud = audit(scan_images(tmp_path), progress=False, workers=1).set_index("image")
    assert aud.loc["s0 small.jpg", "issues"] == ["near_duplicate"] and aud.loc["s0 small.jpg", "dup_of"].endswith("/s0.jpg")
    assert aud.loc["s0 small.jpg", "dup_score"] >= 0.985
    assert aud.drop(index="s0 small.jpg")["dup_group"].is_unique        # different slices stay apart


def test_dicom_files_in_the_audit(tmp_path):
    "DICOM slices are decoded by read_dicom; its refusals keep their reasons; the identifiers become columns."
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG2MPML
    from brain_tumor_cls.dicom import write_dicom, _edit_dicom
    from brain_tumor_cls.phantom import draw_slice
    d = tmp_path/"glioma_tumor"; d.mkdir()
    for k in range(3):
        write_dicom(d/f"IM{k}.dcm", draw_slice(np.random.default_rng(k), "glioma_tumor", 96)[0].astype(np.uint16) * 16,
                    patient_id=f"P{k // 2}", bits=12)
    good = (d/"IM0.dcm").read_bytes()
    (d/"frames.dcm").write_bytes(_edit_dicom(good, NumberOfFrames=3))
    (d/"mpeg.dcm").write_bytes(_edit_dicom(good, transfer_syntax=MPEG2MPML, PixelData=encapsulate([b"\xff\xd8\xff\xe0" + bytes(60)])))
    (d/"notes.dcm").write_text("not DICOM at all\n")
    aud = audit(pd.DataFrame({"path": sorted(map(str, d.iterdir())), "class": "glioma_tumor"}), progress=False, workers=1)
    aud = aud.set_index(aud["path"].map(lambda p: Path(p).name))
    assert aud.loc["frames.dcm", "issues"] == ["multiframe_dicom"] and aud.loc["mpeg.dcm", "issues"] == ["unsupported_dicom_compression"]
    assert aud.loc["notes.dcm", "issues"] == ["not_an_image"] and "multi-frame" in aud.loc["frames.dcm", "note"]
    assert {"multiframe_dicom", "unsupported_dicom_compression"} <= set(FATAL)
    ok = aud.loc[["IM0.dcm", "IM1.dcm", "IM2.dcm"]]
    assert ok["keep"].all() and (ok["format"] == "DICOM").all() and (ok["width"] == 96).all()
    assert ok["patient_id"].tolist() == ["P0", "P0", "P1"] and (ok["study_uid"] != "").all()
    assert ok["dup_group"].is_unique                                   # three different slices
