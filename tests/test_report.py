"Tests of `report.html`: self-contained (every <img> a PNG data: URI, no external URL), all sections present, robust to missing files."
import base64, json, re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from brain_tumor_cls.report import SECTIONS, build_report, tiny_run_dir, atomic_write, parse_issues, metrics_table


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__(); self.imgs, self.ids, self.urls = [], [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img": self.imgs.append(a.get("src", ""))
        if "id" in a: self.ids.append(a["id"])
        for k in ("href", "src"):
            if k in a and not a[k].startswith(("#", "data:")): self.urls.append(a[k])


def check_report_html(html: str):
    "Assertions shared with the reliability suite: self-contained, decodable PNGs, every section."
    c = _Collect(); c.feed(html)
    assert c.imgs, "no images in the report"
    for src in c.imgs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 100
    assert not c.urls, f"external references: {c.urls[:5]}"
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", re.sub(r'data:[^"]+', "", html)), "an external URL"
    assert "<script" not in html.lower() and "<link" not in html.lower()
    for sid in SECTIONS: assert sid in c.ids, f"section {sid} missing"
    return c


def test_tiny_run_report(tmp_path):
    run = tiny_run_dir(tmp_path/"run")
    p = build_report(run)
    assert p == run/"report.html"
    html = p.read_text("utf-8")
    c = check_report_html(html)
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


def test_atomic_write_leaves_no_temp(tmp_path):
    atomic_write(tmp_path/"f.json", json.dumps({"a": 1}))
    atomic_write(tmp_path/"f.json", json.dumps({"a": 2}))
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"] and json.loads((tmp_path/"f.json").read_text())["a"] == 2
