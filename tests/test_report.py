"Tests of `report.html`: self-contained, every section from a full run folder, hostile text escaped everywhere, sections without data left out."
import json
from pathlib import Path

import pandas as pd

from brain_tumor_cls.files import read_csv, write_csv, write_json
from brain_tumor_cls.report import SECTIONS, build_report
from brain_tumor_cls.testing import tiny_run_dir

XSS = "<img src=x onerror=alert(1)>"


def test_tiny_run_report(tmp_path, report_check):
    run = tiny_run_dir(tmp_path/"run")
    p = build_report(run)
    assert p == run/"report.html"
    html = p.read_text("utf-8")
    c = report_check(html, SECTIONS)
    assert len(c.imgs) >= 9  # class counts, curves, confusion, ROC, calibration, 4 gallery images
    aud = read_csv(run/"audit.csv", lists=("issues",))
    for r in aud[~aud["keep"].astype(bool)].itertuples():  # every rejected file listed with its reasons
        assert Path(r.path).name in html and all(i in html for i in r.issues)
    assert "Test accuracy" in html and "glioma_tumor" in html


def test_every_value_from_disk_is_escaped(tmp_path):
    "Class names, paths, notes and config values are user data: none of them may become markup."
    run = tiny_run_dir(tmp_path/"run")
    for name in ("manifest", "audit", "splits", "predictions"):
        t = read_csv(run/f"{name}.csv", lists=("issues",))
        col = "true" if name == "predictions" else "class"
        t[col] = t[col].replace("glioma_tumor", XSS)
        if "path" in t: t.loc[0, "path"] = f"/data/mri/{XSS}/x.png"
        write_csv(run/f"{name}.csv", t)
    g = read_csv(run/"gradcam"/"gallery.csv"); g["true"] = XSS; g["predicted"] = XSS; g["note"] = XSS
    write_csv(run/"gradcam"/"gallery.csv", g)
    cfg = json.loads((run/"config.json").read_text()); cfg["data"] = XSS; cfg["class_names"][0] = XSS
    write_json(run/"config.json", cfg)
    m = json.loads((run/"metrics.json").read_text()); m["per_class"] = {XSS if k == "glioma_tumor" else k: v for k, v in m["per_class"].items()}
    write_json(run/"metrics.json", m)
    html = build_report(run).read_text("utf-8")
    assert "<img src=x" not in html and "onerror=alert(1)>" not in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") >= 5


def test_sections_without_data_are_left_out(tmp_path):
    run = tiny_run_dir(tmp_path/"run")
    for f in ["metrics.json", "predictions.csv", "history.csv"]: (run/f).unlink()
    html = build_report(run).read_text("utf-8")
    for sid in ["training", "metrics", "confusion", "roc", "calibration"]: assert f'id="{sid}"' not in html
    for sid in ["dataset", "audit", "splits", "gradcam", "config"]: assert f'id="{sid}"' in html
    assert "Not available" not in html


def test_a_damaged_file_costs_one_section_not_the_report(tmp_path):
    run = tiny_run_dir(tmp_path/"run")
    a = read_csv(run/"audit.csv"); write_csv(run/"audit.csv", a.drop(columns=["keep"]))
    html = build_report(run).read_text("utf-8")
    assert "could not be built" in html and 'id="metrics"' in html
