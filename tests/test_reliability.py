"""Reliability suite for `btc`: hostile inputs, bad folders, source immutability, SIGKILL + resume, unsafe models.

Every test runs the real command (`python -m brain_tumor_cls.cli`) in a subprocess with tiny settings
(75 px, 1-2 epochs, random weights, a few phantom images), so the whole file stays within a few minutes on 2 CPU cores.
"""
import hashlib, json, os, shutil, signal, struct, subprocess, sys, time, zipfile, zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brain_tumor_cls.files import read_csv
from brain_tumor_cls.phantom import make_phantom_dataset
from brain_tumor_cls.testing import bomb_png
from conftest import BTC_ENV, TINY, checksums, check_report_html, run_btc as btc

XSS = "<img src=x onerror=document.body.prepend('XSS-EXECUTED')>"   # a class folder name that is a script
FORMULA = '=HYPERLINK("evil.example", "open me")'                          # a spreadsheet formula as a class name


def phantom_images(tmp, n, seed):
    ph = make_phantom_dataset(tmp/f"ph{seed}", n_per_class=n, size=96, seed=seed, progress=False)
    return tmp/f"ph{seed}"/"images", ph


# files that must be rejected, with the reasons the audit may give them
MUST_REJECT = {
    "glioma_tumor/empty.jpg": {"empty_file"},
    "glioma_tumor/truncated.jpg": {"corrupt"},
    "meningioma_tumor/notes.jpg": {"not_an_image"},
    "no_tumor/tiny 1x1.png": {"too_small", "resolution_outlier"},
    "pituitary_tumor/bomb.png": {"decompression_bomb"},
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    "A small phantom set with hostile files mixed in; returns the folder."
    tmp = tmp_path_factory.mktemp("hostile")
    src, _ = phantom_images(tmp, 8, seed=0)
    extra, _ = phantom_images(tmp, 2, seed=7)  # other slices, converted to odd formats (not duplicates of `src`)
    root = tmp/"data"; shutil.copytree(src, root)
    ex = sorted(extra.rglob("*.png"))
    g = lambda i: Image.open(ex[i]).convert("L")
    (root/"glioma_tumor"/"empty.jpg").write_bytes(b"")
    b = __import__("io").BytesIO(); g(0).convert("RGB").save(b, "JPEG"); jpg = b.getvalue()
    (root/"glioma_tumor"/"truncated.jpg").write_bytes(jpg[:len(jpg) // 2])
    (root/"meningioma_tumor"/"notes.jpg").write_text("these are my notes, not an image\n")
    Image.fromarray((np.asarray(g(1), np.uint16) * 257)).save(root/"glioma_tumor"/"sixteen_bit.png")
    g(2).convert("RGBA").save(root/"meningioma_tumor"/"rgba.png")
    g(3).convert("P").save(root/"no_tumor"/"palette.png")
    g(4).convert("CMYK").save(root/"pituitary_tumor"/"cmyk.jpg", "JPEG")
    g(5).save(root/"glioma_tumor"/"grey.jpg", "JPEG")
    Image.new("L", (1, 1), 80).save(root/"no_tumor"/"tiny 1x1.png")
    (root/"pituitary_tumor"/"bomb.png").write_bytes(bomb_png(50_000, 50_000))
    g(6).save(root/"meningioma_tumor"/"tümor scan (1).png")
    g(7).save(root/"no_tumor"/"脑 扫描.png")
    g(0).save(root/"pituitary_tumor"/"UPPER CASE.PNG")
    g(1).convert("RGB").save(root/"no_tumor"/"SCAN.JPEG", "JPEG")
    (root/"empty_class").mkdir()
    os.symlink("..", root/"glioma_tumor"/"loop")  # a symlink loop
    more = sorted(phantom_images(tmp, 3, seed=11)[0].rglob("*.png"))   # fresh slices, duplicates of nothing above
    for name, k in ((XSS, 0), (FORMULA, 1)):          # hostile class names, with real images of their own
        (root/name).mkdir()
        for i in range(4): shutil.copy(more[4 * k + i], root/name/f"@SUM(1+{i}).png")
    return root


@pytest.fixture(scope="module")
def hostile_run(hostile, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")/"hostile_run"
    before = checksums(hostile)
    r = btc("run", hostile, "--out", out, "--quiet", *TINY)
    return r, out, before


def test_hostile_inputs_complete_with_exit_0(hostile_run):
    r, out, _ = hostile_run
    assert r.returncode == 0, r.stderr[-2000:]
    for f in ["config.json", "manifest.csv", "audit.csv", "splits.csv", "model.keras", "history.csv",
              "metrics.json", "predictions.csv", "report.html"]:
        assert (out/f).is_file(), f
    assert r.stdout.strip() == "", "--quiet prints nothing"


def test_report_lists_every_rejected_file(hostile_run, hostile):
    r, out, _ = hostile_run
    aud = read_csv(out/"audit.csv", lists=("issues",))
    aud["rel"] = [Path(p).relative_to(hostile).as_posix() for p in aud["path"]]
    html = (out/"report.html").read_text("utf-8")
    check_report_html(html)
    import html as H
    rej = aud[aud["keep"].astype(str) == "False"]
    for rel, reasons in MUST_REJECT.items():
        row = rej[rej["rel"] == rel]
        assert len(row) == 1, f"{rel} not rejected"
        assert set(row["issues"].iloc[0]) & reasons, (rel, row["issues"].iloc[0])
    for rel, iss in zip(rej["rel"], rej["issues"]):   # every rejected file is in the report with its reasons
        assert H.escape(rel) in html, rel
        for reason in iss: assert reason in html
    # valid images in odd formats and odd names are scanned
    for rel in ["glioma_tumor/sixteen_bit.png", "meningioma_tumor/rgba.png", "no_tumor/palette.png",
                "pituitary_tumor/cmyk.jpg", "glioma_tumor/grey.jpg", "meningioma_tumor/tümor scan (1).png",
                "no_tumor/脑 扫描.png", "pituitary_tumor/UPPER CASE.PNG", "no_tumor/SCAN.JPEG"]:
        assert rel in set(aud["rel"]), rel


def test_source_is_immutable(hostile_run, hostile):
    _, out, before = hostile_run
    assert checksums(hostile) == before
    assert not any(hostile in p.parents for p in [out])


def test_no_temporary_files_left(hostile_run):
    _, out, _ = hostile_run
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def _tiny_flat(root, classes, n=2, size=32):
    for c in classes:
        for i in range(n):
            p = root/c/f"{c}_{i}.png"; p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (size, size), dtype=np.uint8)).save(p)


@pytest.mark.parametrize("case", ["missing", "file", "empty", "one_class", "no_usable"])
def test_bad_input_exit_2(tmp_path, case):
    data = tmp_path/"data"
    if case == "file": data.write_text("not a folder")
    elif case == "empty": data.mkdir()
    elif case == "one_class": _tiny_flat(data, ["glioma_tumor"])
    elif case == "no_usable":
        for c in ["glioma_tumor", "no_tumor"]:
            (data/c).mkdir(parents=True); (data/c/"a.jpg").write_text("text"); (data/c/"b.png").write_bytes(b"")
    before = checksums(tmp_path)
    r = btc("run", data, "--out", tmp_path/"out", "--quiet", *TINY)
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("btc: error:"), r.stderr
    assert str(data) in lines[0] or "data" in lines[0]
    key = {"missing": "not found", "file": "not a folder", "empty": "", "one_class": "one class",
           "no_usable": "no usable"}[case]
    assert key.lower() in lines[0].lower(), lines[0]
    assert {k: v for k, v in checksums(tmp_path).items() if "/out" not in k} == before


def _files_are_whole(run):
    "Every output under its final name parses: no half-written file."
    for p in run.rglob("*"):
        if not p.is_file() or ".tmp-" in p.name: continue
        if p.parent.name not in (run.name, "figures", "gradcam"): continue  # Keras' own backup folders
        if p.suffix == ".csv": pd.read_csv(p)
        elif p.suffix == ".json": json.loads(p.read_text("utf-8"))
        elif p.suffix == ".keras":
            with zipfile.ZipFile(p) as z: assert z.testzip() is None
        elif p.suffix == ".png": Image.open(p).verify()
        elif p.suffix == ".html": assert p.read_text("utf-8").rstrip().endswith("</html>")


def test_sigkill_during_training_then_resume(tmp_path):
    data, _ = phantom_images(tmp_path, 6, seed=3)
    out = tmp_path/"run"
    # online augmentation keeps training on the full model (no cached-feature fast path), so epochs take seconds
    args = ["run", data, "--out", out, *TINY, "--epochs", "2", "--online-augment"]
    p = subprocess.Popen([sys.executable, "-m", "brain_tumor_cls.cli", *map(str, args)], env=BTC_ENV, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        t0 = time.time()
        # wait until training has completed its first epoch (a line in history.csv or the training log), then kill
        while time.time() - t0 < 240 and p.poll() is None:
            logs = [f for f in out.rglob("*.csv") if f.name in ("history.csv", "training_log.csv", "log.csv")] if out.exists() else []
            if any(len(f.read_text().strip().splitlines()) >= 2 for f in logs): break
            time.sleep(0.2)
        assert p.poll() is None, "finished before it could be killed: " + p.stdout.read()[-2000:]
        p.send_signal(signal.SIGKILL); p.wait(30)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == -signal.SIGKILL
    assert not (out/"report.html").exists()
    _files_are_whole(out)
    r = btc(*args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "resuming after epoch" in r.stdout, r.stdout  # BackupAndRestore picked up the interrupted run
    h = pd.read_csv(out/"history.csv")
    assert len(h) == 2 and h["epoch"].tolist() == [0, 1], h
    _files_are_whole(out)
    check_report_html((out/"report.html").read_text("utf-8"))


def test_predict_refuses_lambda_model(tmp_path):
    import keras
    inp = keras.Input((8, 8, 3)); x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x); m = keras.Model(inp, keras.layers.Dense(2)(x))
    m.save(tmp_path/"evil.keras")
    (tmp_path/"a.png").write_bytes(b"")
    Image.new("L", (8, 8)).save(tmp_path/"a.png")
    r = btc("predict", tmp_path/"evil.keras", tmp_path/"a.png", "--out", tmp_path/"p.csv")
    assert r.returncode == 2, r.stderr
    assert "refusing" in r.stderr and "Lambda" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path/"p.csv").exists()


def test_hostile_names_cannot_script_the_report(hostile_run, browser):
    "A class folder named like an <img onerror=...> element: the report shows the name and runs nothing."
    _, out, _ = hostile_run
    from selenium.webdriver.common.by import By
    browser.get((out/"report.html").as_uri())
    body = browser.find_element(By.TAG_NAME, "body")
    assert browser.execute_script("return document.body.firstChild.nodeName") == "H1"   # nothing was prepended
    assert not body.text.startswith("XSS-EXECUTED")
    assert browser.find_elements(By.CSS_SELECTOR, "img[src='x']") == []
    assert XSS in body.text                      # shown as text, where the class names are listed
    assert browser.execute_script("return document.scripts.length") == 0


def test_csv_cells_cannot_become_spreadsheet_formulas(hostile_run, hostile):
    "Cells starting with = + - @ are written with a leading quote (a spreadsheet shows text) and read back exactly."
    _, out, _ = hostile_run
    import csv
    with open(out/"manifest.csv", newline="", encoding="utf-8", errors="surrogateescape") as f: rows = list(csv.DictReader(f))
    raw = [r for r in rows if "HYPERLINK" in r["class"]]
    assert raw and all(r["class"] == "'" + FORMULA and r["image"].startswith("'@SUM(") for r in raw)
    for name in ("manifest", "audit", "splits", "predictions"):
        t = read_csv(out/f"{name}.csv")
        col = "class" if "class" in t else "true"
        assert FORMULA in set(t[col]) or name == "predictions", name
    m = read_csv(out/"manifest.csv")
    assert set(m.loc[m["class"] == FORMULA, "image"]) == {f"@SUM(1+{i}).png" for i in range(4)}


def test_class_only_in_testing_is_refused(tmp_path, phantom):
    "A class folder that exists only under Testing/ would be 'learned' from zero images: refused with exit 2."
    src, _ = phantom(n_per_class=6, size=96, seed=4)
    for split, classes in (("Training", ["glioma_tumor", "no_tumor"]), ("Testing", ["glioma_tumor", "no_tumor", "pituitary_tumor"])):
        for c in classes:
            shutil.copytree(src/c, tmp_path/"data"/split/c, ignore=shutil.ignore_patterns("*_000[3-9].png") if split == "Testing" else None)
    r = btc("run", tmp_path/"data", "--out", tmp_path/"out", "--quiet", *TINY)
    assert r.returncode == 2 and "'pituitary_tumor'" in r.stderr and "no training images" in r.stderr, r.stderr


def test_warnings_read_as_messages(tmp_path, phantom):
    "What the scan warns about is said in words, never with the source line that warned."
    src, _ = phantom(n_per_class=5, size=64, seed=5)
    shutil.copytree(src, tmp_path/"data"); (tmp_path/"data"/"empty_class").mkdir()
    r = btc("audit", tmp_path/"data", "--out", tmp_path/"a")
    assert r.returncode == 0, r.stderr
    assert "Ignored 1 class folder(s) without images" in r.stdout + r.stderr
    assert "warnings.warn" not in r.stderr and "scan_images(" not in r.stderr and "UserWarning" not in r.stderr


def test_full_disk_ends_with_one_clear_line(tmp_path, phantom):
    "A 2 MB disk as --out: exit 1 and one line saying the disk is full, never a crash (it once segfaulted in h5py)."
    mnt = tmp_path/"small"; mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        data, _ = phantom(n_per_class=6, size=96, seed=1)
        r = btc("run", data, "--out", mnt/"run", "--quiet", *TINY)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 1 and len(lines) == 1 and "disk space" in lines[0].lower(), r.stderr[-2000:]
    finally: subprocess.run(["umount", str(mnt)])
