"""The run folder's promises (issue: runs that never lose work), through the real `btc` command.

A trained tiny run is shared by the tests (`trained_run`, `run_copy` in conftest.py); each test that changes a run
works on its own copy.
"""
import hashlib, json, os, stat, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY, run_btc
from brain_tumor_cls.files import read_csv
from brain_tumor_cls.run import RunFolder


def sha(p): return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def run_args(data, out, *extra): return ["run", data, "--out", out, "--quiet", *TINY, *extra]


def test_audit_then_cosmetic_reruns_keep_the_model_byte_identical(run_copy, fingerprint):
    data, out = run_copy
    h0, before = sha(out/"model.keras"), fingerprint(out)
    r = run_btc("audit", data, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "up to date: scan, audit" in r.stdout and sha(out/"model.keras") == h0
    changed = {k for k in set(before) | set(fingerprint(out)) if before.get(k) != fingerprint(out).get(k)}
    assert changed <= {str(out/".btc-lock")}, changed          # btc audit wrote nothing
    r = run_btc(*run_args(data, out, "--gallery", "3"))
    assert r.returncode == 0, r.stderr
    assert sha(out/"model.keras") == h0 and len(read_csv(out/"gradcam"/"gallery.csv")) == 3
    r = run_btc("run", data, "--out", out, *TINY[:-2], "--gallery", "3", "--workers", "1")
    assert r.returncode == 0 and "up to date: scan, audit, split, balance, train, evaluate, gradcam, report" in r.stdout
    assert sha(out/"model.keras") == h0


def test_other_epochs_refused_unless_overwrite(run_copy, fingerprint):
    data, out = run_copy
    before = fingerprint(out)
    r = run_btc(*run_args(data, out, "--epochs", "2"))
    assert r.returncode == 2
    err = r.stderr.strip()
    assert err.count("\n") == 0 and "epochs 1 -> 2" in err and "--overwrite" in err and "new --out" in err
    assert {k: v for k, v in fingerprint(out).items() if not k.endswith(".btc-lock")} == \
           {k: v for k, v in before.items() if not k.endswith(".btc-lock")}
    r = run_btc(*run_args(data, out, "--epochs", "2", "--overwrite"))
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(out/"history.csv")) == 2


def test_folder_not_made_by_btc_is_refused(tmp_path, phantom, fingerprint):
    data, _ = phantom(n_per_class=6, size=96, seed=1, dirty=True)
    proj = tmp_path/"proj"; (proj/"backup").mkdir(parents=True); (proj/"figures").mkdir()
    (proj/"backup"/"thesis.tex").write_text("years of work"); (proj/"figures"/"f.png").write_bytes(b"png")
    (proj/"config.json").write_text("{}")
    before = fingerprint(proj)
    r = run_btc(*run_args(data, proj))
    assert r.returncode == 2 and "btc did not make" in r.stderr
    assert fingerprint(proj) == before


def test_failed_start_leaves_no_folder(tmp_path):
    out = tmp_path/"new"
    r = run_btc(*run_args(tmp_path/"no-such-data", out))
    assert r.returncode == 2 and not out.exists()


def test_second_btc_in_the_same_folder_is_refused(run_copy):
    data, out = run_copy
    f = RunFolder(out).open()   # this test process holds the lock, as a running btc would
    try:
        r = run_btc(*run_args(data, out))
        assert r.returncode == 2 and f"PID {os.getpid()}" in r.stderr
    finally: f.release()


def test_files_are_readable_by_colleagues_and_json_is_json(trained_run):
    _, out = trained_run
    bad = [str(p) for p in out.rglob("*") if p.is_file() and stat.S_IMODE(p.stat().st_mode) != 0o644]
    assert not bad, bad
    def no_nan(x): raise ValueError(f"not JSON: {x}")
    for p in list(out.rglob("*.json")) + [out/".btc-run"]:
        json.loads(p.read_text("utf-8"), parse_constant=no_nan)


def test_btc_writes_no_file_outside_its_writer():
    "Only files.py renames files into place: every other module writes through it."
    pkg = Path(__file__).parents[1]/"brain_tumor_cls"
    users = sorted(p.name for p in pkg.glob("*.py") if "os.replace(" in p.read_text("utf-8"))
    assert users == ["files.py"], users


def test_predict_deduplicates_and_fails_when_nothing_could_be_predicted(trained_run, tmp_path):
    data, out = trained_run
    img = sorted((data/"glioma_tumor").glob("*.png"))[0]
    r = run_btc("predict", out/"model.keras", img, img, data/"glioma_tumor", "--out", tmp_path/"p.csv", "--quiet")
    assert r.returncode == 0, r.stderr
    p = read_csv(tmp_path/"p.csv")
    assert p["path"].is_unique and p["path"].iloc[0] == img.as_posix()
    (tmp_path/"bad.png").write_text("no image")
    r = run_btc("predict", out/"model.keras", tmp_path/"bad.png", "--out", tmp_path/"q.csv", "--quiet")
    assert r.returncode == 2 and "none of the 1 input" in r.stderr
