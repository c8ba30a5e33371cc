"""Reliability of the data layer against hostile inputs (issue 17): links leading out of the data folder, huge sparse
files, decompression bombs, files whose content is not what their name says, non-UTF-8 file names and libjpeg's noise.

Each test reproduces one finding of the adversarial probe and failed on the code before the fix. Library-level where
the data layer decides; through `btc audit DATA --out OUT` where the user meets it.
"""
import json, os, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brain_tumor_cls.cleaning import audit, clean
from brain_tumor_cls.data import image_info, image_problem, scan_images
from brain_tumor_cls.files import read_csv, write_csv
from brain_tumor_cls.testing import bomb_png, write_bad_inputs
from conftest import BTC_ENV

CLASSES = ["glioma_tumor", "no_tumor"]
needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks on this platform")


def slices(root, n=3, size=64, seed=0):
    "A small flat data folder: `n` different noisy slices per class."
    rng = np.random.default_rng(seed)
    for c in CLASSES:
        (root/c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = np.kron(rng.uniform(20, 235, (8, 8)), np.ones((size // 8, size // 8))) + rng.normal(0, 8, (size, size))
            Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(root/c/f"{c}_{i}.png")
    return root


def run_python(code, timeout=300):
    "Run `code` in a fresh interpreter (same environment as the tests); returns the CompletedProcess."
    env = dict(BTC_ENV, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=timeout)


# ------------------------------------------------------------------ symbolic links leading out of the data folder

@needs_symlinks
def test_link_to_the_root_of_the_file_system_is_listed_not_walked(tmp_path):
    data = slices(tmp_path/"data")
    os.symlink("/", data/"glioma_tumor"/"rootfs", target_is_directory=True)
    with pytest.warns(UserWarning, match="lead outside the data folder"):
        m = scan_images(data)
    assert len(m) == 2 * 3 + 1                                      # the link is one row; `/` is never walked
    row = m[m["image"] == "rootfs"].iloc[0]
    assert row["outside_data"] and row["class"] == "glioma_tumor"
    aud = audit(m, progress=False, workers=1).set_index("image")
    assert aud.loc["rootfs", "issues"] == ["outside_data"] and not aud.loc["rootfs", "keep"]
    assert "outside the data folder" in aud.loc["rootfs", "note"] and "'/'" in aud.loc["rootfs", "note"]
    assert aud["keep"].sum() == 6 and "rootfs" not in set(clean(aud.reset_index())["image"])


@needs_symlinks
def test_outside_image_never_read_unless_follow_symlinks(tmp_path, monkeypatch):
    data = slices(tmp_path/"data")
    slices(tmp_path/"elsewhere", n=1, seed=1)                          # two other slices outside the data folder
    outside = tmp_path/"elsewhere"/"no_tumor"/"no_tumor_0.png"
    os.symlink(outside, data/"no_tumor"/"linked.png")
    os.symlink(tmp_path/"elsewhere"/"glioma_tumor", data/"glioma_tumor"/"more", target_is_directory=True)
    with pytest.warns(UserWarning, match="outside"):
        m = scan_images(data)
    assert sorted(m.loc[m["outside_data"], "image"]) == ["linked.png", "more"]
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(os.fspath(f)) or real_open(f, *a, **k))
    info, aud = image_info(m, workers=1, progress=False), audit(m, progress=False, workers=1)
    monkeypatch.undo()
    assert not [p for p in opened if "linked.png" in p or "elsewhere" in p or "/more" in p]   # never opened
    assert (info.loc[m["outside_data"], "bytes"] == 0).all()
    assert aud.loc[aud["outside_data"], "issues"].tolist() == [["outside_data"]] * 2
    followed = audit(scan_images(data, follow_symlinks=True), progress=False, workers=1)
    assert {"linked.png", "glioma_tumor_0.png"} <= set(followed.loc[followed["keep"], "image"])
    assert followed["keep"].sum() == 8 and followed["path"].str.contains("/more/").sum() == 1
    assert "outside_data" not in followed


@needs_symlinks
def test_btc_audit_lists_outside_link_as_rejected(tmp_path, btc):
    data = slices(tmp_path/"data")
    os.symlink("/", data/"glioma_tumor"/"rootfs", target_is_directory=True)
    r = btc("audit", data, "--out", tmp_path/"run")
    assert r.returncode == 0, r.stderr[-2000:]
    aud = read_csv(tmp_path/"run"/"audit.csv")
    assert len(aud) == 7
    row = aud[aud["image"] == "rootfs"].iloc[0]
    assert "outside_data" in str(row["issues"]) and str(row["keep"]) in ("False", "false", "0")


# ------------------------------------------------------------------ memory: hash by streaming, never decode what the header refused

def test_audit_of_huge_sparse_files_stays_small(tmp_path):
    "A 1.5 GB sparse `.jpg` of zeros, and a real JPEG followed by 1.5 GB of zeros: the audit's peak memory stays small."
    data = slices(tmp_path/"data", n=4)
    big = data/"glioma_tumor"/"sparse.jpg"
    big.write_bytes(b""); os.truncate(big, 1_500_000_000)
    tail = data/"no_tumor"/"tail.jpg"
    Image.open(data/"no_tumor"/"no_tumor_0.png").convert("RGB").save(tail, quality=90)
    os.truncate(tail, 1_500_000_000)
    r = run_python(f"""
        import resource, json
        from brain_tumor_cls.data import scan_images
        from brain_tumor_cls.cleaning import audit
        m = scan_images({str(data)!r})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        a = audit(m, progress=False, workers=1).set_index("image")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(dict(before_kb=before, after_kb=after, sparse=a.loc["sparse.jpg", "issues"], sparse_note=a.loc["sparse.jpg", "note"],
                              tail=a.loc["tail.jpg", "issues"], tail_md5=a.loc["tail.jpg", "md5"])))
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    grew_mb = (out["after_kb"] - out["before_kb"]) / 1024
    assert grew_mb < 200, out                                        # was 3.8 GB: the whole file read twice
    assert out["sparse"] == ["not_an_image"] and "zero bytes" in out["sparse_note"]
    assert "exact_duplicate" not in out["tail"] and "corrupt" not in out["tail"] and len(out["tail_md5"]) == 32


# ------------------------------------------------------------------ decompression bombs: every reader refuses them from the header

def test_bomb_refused_by_load_images_and_make_dataset_before_decoding(tmp_path, monkeypatch):
    import tensorflow as tf
    from brain_tumor_cls import pipeline
    data = slices(tmp_path/"data")
    bomb = data/"no_tumor"/"bomb.png"; bomb.write_bytes(bomb_png(20_000, 20_000))   # 400 million pixels claimed
    decoded = []
    real = tf.io.decode_image
    monkeypatch.setattr(tf.io, "decode_image", lambda contents, *a, **k: decoded.append(1) or real(contents, *a, **k))
    with pytest.raises(ValueError, match=r"bomb.png: header claims 20000x20000 = 400,000,000 pixels, more than the limit"):
        pipeline.load_images([bomb], 75)
    assert decoded == []                                             # refused from the header: TensorFlow never saw it
    monkeypatch.undo()
    with pytest.warns(UserWarning, match=r"bomb.png \(header claims 20000x20000"):
        ds = pipeline.make_dataset(scan_images(data), CLASSES, 75, batch_size=8)
    assert sum(len(y) for _, y in ds) == 6


def test_bomb_never_reaches_tensorflow(tmp_path):
    "Peak memory of `load_images` on a 20000x20000 PNG bomb, in a fresh process: it took 2.3 GB."
    p = tmp_path/"bomb.png"; p.write_bytes(bomb_png(20_000, 20_000))
    r = run_python(f"""
        import resource
        from brain_tumor_cls.pipeline import load_images
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try: load_images([{str(p)!r}], 75); print("decoded")
        except ValueError as e: print("refused:", e)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    said, grew_mb = r.stdout.strip().splitlines()[-2:]
    assert said.startswith("refused:") and "more than the limit" in said and int(grew_mb) < 200


# ------------------------------------------------------------------ one signature check: the audit and the pipeline agree

def awkward_files(folder):
    "The awkward inputs of `testing.write_bad_inputs` plus contents that lie about their names."
    bad = write_bad_inputs(folder)
    a = np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)
    Image.fromarray(a).save(folder/"tiff.jpg", format="TIFF")
    Image.fromarray(a).convert("1").save(folder/"one_bit.bmp")
    Image.fromarray(a).save(folder/"png_named.jpg", format="PNG")      # a PNG named .jpg: decodable, fine
    (folder/"header_cut.jpg").write_bytes(Path(bad["rgb_jpeg"]).read_bytes()[:200])
    return bad | {k: str(folder/f) for k, f in [("tiff", "tiff.jpg"), ("one_bit", "one_bit.bmp"),
                                                  ("png_named", "png_named.jpg"), ("header_cut", "header_cut.jpg")]}


def test_tiff_named_jpg_is_refused_in_the_same_words_everywhere(tmp_path):
    from brain_tumor_cls.pipeline import load_images, make_dataset
    files = awkward_files(tmp_path/"bad")
    words = "a TIFF image named .jpg: TIFF is not supported"
    aud = audit(pd.DataFrame({"path": [files["tiff"]], "class": ["glioma_tumor"]}), progress=False, workers=1)
    assert aud["issues"][0] == ["unsupported_format"] and not aud["keep"][0] and aud["note"][0].startswith(words)
    assert image_problem(files["tiff"]).startswith(words)
    with pytest.raises(ValueError, match=words): load_images([files["tiff"]], 75)
    m = pd.DataFrame({"path": [files["tiff"], files["grey"]], "class": CLASSES})
    with pytest.warns(UserWarning, match=words):
        assert sum(len(y) for _, y in make_dataset(m, CLASSES, 75)) == 1


def test_every_file_the_audit_keeps_is_decoded_by_the_pipeline(tmp_path):
    "Evaluation must never crash on a file the audit kept: keep => load_images works; decodable-but-refused files are explained."
    from brain_tumor_cls.pipeline import load_images
    files = awkward_files(tmp_path/"bad")
    aud = audit(pd.DataFrame({"path": list(files.values()), "class": "glioma_tumor"}), progress=False, workers=1,
                min_side=1).set_index(pd.Index(list(files)))
    for name, row in aud.iterrows():
        if row["keep"]: assert load_images([row["path"]], 75).shape == (1, 75, 75, 3), name
        else:
            assert row["note"], name
            if set(row["issues"]) & {"unsupported_format", "not_an_image", "corrupt", "empty_file", "decompression_bomb"}:
                with pytest.raises(ValueError): load_images([row["path"]], 75)
    assert aud.loc["one_bit", "issues"] == ["unsupported_format"] and aud.loc["png_named", "keep"]
    assert aud.loc["header_cut", "issues"] == ["corrupt"]


# ------------------------------------------------------------------ non-UTF-8 file names

def test_non_utf8_file_name_is_used_everywhere(tmp_path):
    from brain_tumor_cls.pipeline import load_images, make_dataset, split
    data = slices(tmp_path/"data")
    raw = os.fsencode(data/"glioma_tumor") + b"/scan_\xff\xfe latin-1 \xe9.png"      # not valid UTF-8
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (64, 64), np.uint8)).save(raw, format="PNG")
    m = scan_images(data)
    name = os.fsdecode(raw)
    assert name in set(m["path"])                                     # a str with surrogates, the file's exact bytes
    info = image_info(m, progress=False)
    assert info.loc[info["path"] == name, "error"].item() == ""
    aud = audit(info, progress=False, workers=1)
    assert aud.loc[aud["path"] == name, "keep"].item()
    sp = split(clean(aud), 0.2, 0.2, seed=0)
    assert name in set(sp["path"])
    n = sum(len(y) for _, y in make_dataset(sp, CLASSES, 75, batch_size=4))
    assert n == len(sp) == 7
    assert load_images([name], 75).shape == (1, 75, 75, 3) and load_images([raw], 75).shape == (1, 75, 75, 3)
    write_csv(tmp_path/"splits.csv", sp.assign(issues=sp["issues"].map(";".join)))
    assert name in set(read_csv(tmp_path/"splits.csv")["path"])


def test_btc_audit_with_a_non_utf8_file_name(tmp_path, btc):
    data = slices(tmp_path/"data")
    raw = os.fsencode(data/"no_tumor") + b"/\xff\xfe.png"
    Image.fromarray(np.random.default_rng(6).integers(0, 255, (64, 64), np.uint8)).save(raw, format="PNG")
    r = btc("audit", data, "--out", tmp_path/"run")
    assert r.returncode == 0 and "UnicodeEncodeError" not in r.stderr, r.stderr[-2000:]
    aud = read_csv(tmp_path/"run"/"audit.csv")
    assert os.fsdecode(raw) in set(aud["path"]) and len(aud) == 7


# ------------------------------------------------------------------ libjpeg's noise stays off the terminal

def test_libjpeg_messages_do_not_reach_the_terminal(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path/"good.jpg", quality=90)
    jpg = (tmp_path/"good.jpg").read_bytes()
    (tmp_path/"header_cut.jpg").write_bytes(jpg[:200])             # libjpeg: "Improper call to JPEG library in state 201"
    (tmp_path/"soi_only.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path/"data_cut.jpg").write_bytes(jpg[:len(jpg) // 2])     # "Premature end of JPEG data"
    r = run_python(f"""
        from brain_tumor_cls.pipeline import load_images
        for name in ["header_cut.jpg", "soi_only.jpg", "data_cut.jpg"]:
            try: load_images([{str(tmp_path)!r} + "/" + name], 75); print(name, "decoded")
            except ValueError as e: print(e)
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Improper call" not in r.stderr and "Premature end" not in r.stderr and "Corrupt JPEG" not in r.stderr, r.stderr
    lines = r.stdout.strip().splitlines()[-3:]
    assert "a damaged or truncated JPEG header" in lines[0] and "a damaged JPEG" in lines[1]
    assert "Premature end of JPEG data" in lines[2]                # the words moved into the error message
