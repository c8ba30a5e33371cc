"Tests of `report.html`: self-contained (every <img> a PNG data: URI, no external URL), all sections present, robust to missing files."
import json
from pathlib import Path

import pandas as pd
import pytest

from brain_tumor_cls.report import SECTIONS, build_report, parse_issues, metrics_table
from brain_tumor_cls.testing import tiny_run_dir


def test_tiny_run_report(tmp_path, report_check):
    run = tiny_run_dir(tmp_path/"run")
    p = build_report(run)
    assert p == run/"report.html"
    html = p.read_text("utf-8")
    c = report_check(html, SECTIONS)
    assert len(c.imgs) >= 7  # class counts, curves, confusion, ROC, calibration, 4 gallery images
    aud = pd.read_csv(run/"audit.csv", keep_default_na=False)
    for r in aud[aud["keep"].astype(str) == "False"].itertuples():  # every rejected file listed with its reason
        name = Path(r.path).name
        assert name in html and r.issues in html
    assert "Test accuracy" in html and "[" in html  # a CI is shown
    assert not list(run.glob("*.tmp-*"))


def test_missing_files_do_not_break_report(tmp_path):
    run = tiny_run_dir(tmp_path/"run")
    for f in ["metrics.json", "predictions.csv", "history.csv"]: (run/f).unlink()
    html = build_report(run).read_text("utf-8")
    assert html.count("Not available") >= 3
    for sid in SECTIONS: assert f'id="{sid}"' in html


def test_names_are_escaped(tmp_path):
    run = tiny_run_dir(tmp_path/"run")
    a = pd.read_csv(run/"audit.csv", keep_default_na=False)
    a.loc[1, "path"] = "/data/mri/glioma_tumor/<script>alert(1)</script> é.png"
    a.to_csv(run/"audit.csv", index=False)
    html = build_report(run).read_text("utf-8")
    assert "<script>alert" not in html and "&lt;script&gt;" in html and " é.png" in html


def test_parse_issues_and_metrics_table():
    assert parse_issues("a;b") == ["a", "b"] and parse_issues("['a']") == ["a"] and parse_issues(float("nan")) == []
    t = metrics_table({"accuracy": {"value": .5, "ci": [.4, .6]}, "x": {"y": 1}})
    assert t["metric"].tolist() == ["accuracy", "x / y"] and t.loc[0, "ci_high"] == .6
