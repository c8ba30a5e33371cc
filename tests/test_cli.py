"Tests of the `btc` command: parser, exit codes, config round trip, and every subcommand on a tiny phantom run (in-process)."
import json, os, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from brain_tumor_cls import cli
from brain_tumor_cls.phantom import make_phantom_dataset
from conftest import check_report_html

TINY = ["--image-size", "75", "--epochs", "2", "--batch-size", "16", "--weights", "none", "--scratch", "off", "--gallery", "4", "--quiet"]


def test_help_is_fast_and_complete():
    r = subprocess.run([sys.executable, "-m", "brain_tumor_cls.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for c in ["demo", "run", "audit", "train", "evaluate", "predict", "report", "exit codes"]: assert c in r.stdout
    r = subprocess.run([sys.executable, "-c", "import sys; from brain_tumor_cls import cli; cli.make_parser(); "
                        "print('tensorflow' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", "btc --help must not import TensorFlow"


@pytest.mark.parametrize("cmd", ["demo", "run", "audit", "train", "evaluate", "predict", "report"])
def test_subcommand_help(cmd, capsys):
    with pytest.raises(SystemExit) as e: cli.main([cmd, "--help"])
    assert e.value.code == 0 and "usage: btc " + cmd in capsys.readouterr().out


def test_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e: cli.main(["run", "--epochs", "many"])
    assert e.value.code == 2
    assert cli.main(["run"]) == 2 and "no data folder" in capsys.readouterr().err
    assert cli.main(["run", str(tmp_path/"nope"), "--out", str(tmp_path/"o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not found" in err and "nope" in err
    assert cli.main(["run", str(tmp_path), "--image-size", "32"]) == 2 and "75" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path/"nope")]) == 2
    assert cli.main(["evaluate", str(tmp_path)]) == 2 and "config.json" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path/"m.keras"), str(tmp_path)]) == 2
    (tmp_path/"junk").mkdir(); (tmp_path/"junk"/"mine.txt").write_text("x")
    assert cli.main(["run", str(tmp_path/"nope2"), "--out", str(tmp_path/"junk")]) == 2  # bad data reported first
    assert (tmp_path/"junk"/"mine.txt").exists()


def test_config_round_trip(tmp_path):
    c = cli.make_config(dict(data=tmp_path/"d", out=tmp_path/"r", epochs=4, seed=3))
    cli.save_config(c, tmp_path/"r", ["a", "b"])
    saved = json.loads((tmp_path/"r"/"config.json").read_text())
    assert saved["class_names"] == ["a", "b"] and saved["versions"]["tensorflow"] and saved["epochs"] == 4
    again = cli.make_config(config_file=tmp_path/"r"/"config.json")
    assert {k: again[k] for k in cli.DEFAULTS} == {k: c[k] for k in cli.DEFAULTS}
    assert cli.make_config(dict(seed=9), config_file=tmp_path/"r"/"config.json")["seed"] == 9


def test_scratch_auto_trains_the_whole_network_without_pretrained_weights():
    "A frozen random backbone teaches nothing: with no pretrained weights, auto trains every layer; with them, the head."
    for weights, scratch, expected in [(None, "auto", True), ("imagenet", "auto", False), ("/w.h5", "auto", False),
                                       (None, "off", False), ("imagenet", "on", True)]:
        assert cli.from_scratch(dict(weights_resolved=weights, scratch=scratch)) is expected
    assert "whole network" in cli._train_what(dict(weights_resolved=None, scratch="auto", epochs=3, fine_tune=0))


def test_weights_auto_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    notes = []
    assert cli.resolve_weights("auto", log=notes.append) is None and "no cached ImageNet weights" in notes[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    make_phantom_dataset(tmp/"ph", n_per_class=6, size=96, seed=1, dirty=True, progress=False)
    out = tmp/"run"
    rc = cli.main(["run", str(tmp/"ph"/"images"), "--out", str(out), *TINY])
    return tmp, out, rc


def test_run_writes_the_run_directory(tiny_run):
    tmp, out, rc = tiny_run
    assert rc == 0
    for f in ["config.json", "manifest.csv", "audit.csv", "splits.csv", "model.keras", "history.csv", "metrics.json",
              "predictions.csv", "report.html", "gradcam/gallery.csv"]:
        assert (out/f).exists(), f
    cfg = json.loads((out/"config.json").read_text())
    assert cfg["class_names"] == sorted(cfg["class_names"]) and len(cfg["class_names"]) == 4
    assert cfg["image_size"] == 75 and cfg["weights"] == "none"
    sp = pd.read_csv(out/"splits.csv")
    assert set(sp["split"]) == {"train", "val", "test"}
    aud = pd.read_csv(out/"audit.csv", keep_default_na=False)
    assert (aud["keep"].astype(str) == "False").sum() >= 5  # the planted dirt
    html = (out/"report.html").read_text("utf-8")
    check_report_html(html)
    gal = pd.read_csv(out/"gradcam"/"gallery.csv", keep_default_na=False)
    # at 75 px mixed10 is 1x1, so the gallery explains mixed7 (3x3), and the report says which block it shows
    assert set(gal["layer"]) == {"mixed7"} and set(gal["grid"]) == {"3x3"} and "<code>mixed7</code>" in html


def test_predict_with_gradcam(tiny_run, capsys):
    tmp, out, _ = tiny_run
    imgs = sorted((tmp/"ph"/"images"/"glioma_tumor").glob("*.png"))[:3]
    (tmp/"bad.png").write_text("not an image")
    rc = cli.main(["predict", str(out/"model.keras"), *map(str, imgs), str(tmp/"bad.png"), "--out", str(tmp/"p.csv"),
                   "--gradcam", str(tmp/"cams"), "--quiet"])
    assert rc == 0
    p = pd.read_csv(tmp/"p.csv", keep_default_na=False)
    assert p["path"].tolist() == [i.as_posix() for i in imgs] + [(tmp/"bad.png").as_posix()]
    assert (p["error"] != "").tolist() == [False, False, False, True]
    probs = p.loc[:2, [c for c in p if c.startswith("p_")]].astype(float)
    assert probs.shape[1] == 4 and ((probs.sum(axis=1) - 1).abs() < 1e-4).all()
    assert len(list((tmp/"cams").glob("*.png"))) == 3
    rc = cli.main(["predict", str(out/"model.keras"), str(tmp/"ph"/"images"/"no_tumor"), "--out", str(tmp/"p2.csv"), "--quiet"])
    assert rc == 0 and len(pd.read_csv(tmp/"p2.csv")) >= 6   # a folder


def test_evaluate_and_report_commands(tiny_run):
    tmp, out, _ = tiny_run
    (out/"report.html").unlink()
    assert cli.main(["report", str(out), "--quiet"]) == 0 and (out/"report.html").exists()
    m0 = json.loads((out/"metrics.json").read_text())
    assert cli.main(["evaluate", str(out), "--quiet"]) == 0
    assert json.loads((out/"metrics.json").read_text())["accuracy"] == m0["accuracy"]  # same model, same test split


def test_audit_command(tmp_path, capsys):
    make_phantom_dataset(tmp_path/"ph", n_per_class=5, size=64, seed=2, dirty=True, progress=False)
    assert cli.main(["audit", str(tmp_path/"ph"/"images"), "--out", str(tmp_path/"a")]) == 0
    o = capsys.readouterr().out
    assert "rejected" in o and "exact_duplicate" in o and (tmp_path/"a"/"audit.csv").exists()
    assert not (tmp_path/"a"/"model.keras").exists()
