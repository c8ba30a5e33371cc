"Tests of the `btc` command's grammar: help, one-line errors and exit codes, settings checked before any work, every subcommand."
import json, os, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from brain_tumor_cls import cli
from brain_tumor_cls.files import read_csv
from conftest import TINY, run_btc

COMMANDS = ["demo", "run", "audit", "train", "evaluate", "predict", "serve", "report"]


def in_fresh_python(code):
    "Run `code` in a new interpreter (so imports are fresh); returns (stdout, seconds)."
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return r.stdout.strip(), time.perf_counter() - t


def test_help_version_and_no_tensorflow_for_bad_input(tmp_path):
    r = run_btc("--help")
    assert r.returncode == 0 and all(c in r.stdout for c in COMMANDS + ["exit codes"])
    r = run_btc("--version")
    assert r.returncode == 0 and "tensorflow" in r.stdout and "keras" in r.stdout
    code = ("import sys; from brain_tumor_cls import cli; rc = [cli.main(a) for a in (%r, %r, %r)]; "
            "print(rc, 'tensorflow' in sys.modules)")
    out, _ = in_fresh_python(code % (["run", str(tmp_path), "--out", str(tmp_path/"r"), "--val-frac", "0"],
                                     ["predict", str(tmp_path/"missing.keras"), str(tmp_path)],
                                     ["run", str(tmp_path/"nope"), "--out", str(tmp_path/"r")]))
    assert out == "[2, 2, 2] False", out        # refused without importing TensorFlow


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_subcommand_help_shows_defaults_and_ends_with_an_example(cmd, capsys):
    with pytest.raises(SystemExit) as e: cli.main([cmd, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and f"usage: btc {cmd}" in out
    assert out.rstrip().splitlines()[-2].strip() == "example:" and out.rstrip().splitlines()[-1].strip().startswith("btc " + cmd)
    opts = [l for l in out.split("options:")[1].split("example:")[0].split("\n  -")[1:] if not l.startswith(("h, --help", "-quiet", "-debug", "q,", "-overwrite", "-config"))]
    for o in opts:
        assert "default" in o or "required" in o, o


def test_usage_errors_are_one_line_and_exit_2(tmp_path):
    cases = [(["run", tmp_path, "--out", tmp_path/"o", "--imagesize", "96"], "did you mean --image-size"),
             (["run", tmp_path, "--out", tmp_path/"o", "--epochs", "0"], "--epochs '0': expected an integer from 1"),
             (["run", tmp_path, "--out", tmp_path/"o", "--image-size", "100000"], "from 75 to 1024"),
             (["run", tmp_path, "--out", tmp_path/"o", "--dropout", "2"], "--dropout '2': expected a number from 0 to 0.95"),
             (["run", tmp_path, "--out", tmp_path/"o", "--batch-size", "-3"], "--batch-size '-3'"),
             (["run", tmp_path, "--out", tmp_path/"o", "--image-size", "75.5"], "expected an integer"),
             (["run", tmp_path, "--out", tmp_path/"o", "--learning-rate", "-1"], "--learning-rate '-1'"),
             (["run", tmp_path, "--out", tmp_path/"o", "--gallery", "-1"], "--gallery '-1'"),
             (["run", tmp_path, "--out", tmp_path/"o", "--batch-size", "1024", "--image-size", "1024"], "GB of memory"),
             (["run", tmp_path], "the following arguments are required: --out")]
    for args, say in cases:
        r = run_btc(*args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and say in lines[0], (args, r.stderr)
        assert len(lines) <= 2, r.stderr


def test_config_file_is_checked_like_options(tmp_path):
    for content, say in [({"epohcs": 50}, "unknown setting 'epohcs' (did you mean 'epochs'?)"),
                         ({"epochs": "10"}, "epochs = '10': expected an integer"), ({"epochs": 0}, "epochs = 0"),
                         ([1, 2], "JSON object"), ({"dense_units": 0}, "dense_units = 0"), ({"scratch": None, "patience": -5}, "patience = -5")]:
        (tmp_path/"c.json").write_text(json.dumps(content))
        r = run_btc("run", tmp_path, "--out", tmp_path/"o", "--config", tmp_path/"c.json")
        assert r.returncode == 2 and say in r.stderr, (content, r.stderr)
    (tmp_path/"c.json").write_bytes(b"\xff\xfe{}")
    assert "not UTF-8" in run_btc("run", tmp_path, "--out", tmp_path/"o", "--config", tmp_path/"c.json").stderr


def test_bad_out_is_bad_input(tmp_path, phantom):
    data, _ = phantom(n_per_class=6, size=96, seed=1, dirty=True)
    (tmp_path/"file").write_text("x")
    ro = tmp_path/"ro"; ro.mkdir(); ro.chmod(0o555)
    long = tmp_path/("x" * 250)/("y" * 250)/("z" * 300)
    for out, say in [(tmp_path/"file", "is a file"), (long, "too long")] + ([] if os.geteuid() == 0 else [(ro/"run", "permission")]):
        r = run_btc("run", data, "--out", out, *TINY)
        assert r.returncode == 2 and say in r.stderr, (out, r.stderr)


def test_run_writes_the_run_folder_and_the_report(trained_run, report_check):
    data, out = trained_run
    for f in [".btc-run", "config.json", "manifest.csv", "audit.csv", "splits.csv", "augmented.csv", "model.keras",
              "history.csv", "metrics.json", "predictions.csv", "report.html", "gradcam/gallery.csv"]:
        assert (out/f).exists(), f
    cfg = json.loads((out/"config.json").read_text())
    assert cfg["class_names"] == sorted(cfg["class_names"]) and len(cfg["class_names"]) == 4
    assert cfg["image_size"] == 75 and cfg["weights"] == "none" and cfg["versions"]["tensorflow"]
    assert set(read_csv(out/"splits.csv")["split"]) == {"train", "val", "test"}
    html = (out/"report.html").read_text("utf-8")
    report_check(html, ["dataset", "audit", "splits", "training", "metrics", "confusion", "roc", "calibration", "gradcam", "config"])
    gal = read_csv(out/"gradcam"/"gallery.csv")
    # the gallery explains with gradcam's default (LayerCAM at the first stem block), and the report says which block
    assert set(gal["method"]) == {"layercam"} and gal["layer"].nunique() == 1 and f"<code>{gal['layer'][0]}</code>" in html
    checks = read_csv(out/"gradcam"/"shortcuts.csv")     # every test prediction checked for evidence outside the brain
    assert len(checks) == len(read_csv(out/"predictions.csv")) and {"outside", "flagged"} <= set(checks)


def test_repeat_with_config(trained_run, tmp_path):
    data, out = trained_run
    r = run_btc("train", "--config", out/"config.json", "--out", tmp_path/"again", "--quiet")
    assert r.returncode == 0, r.stderr
    a, b = (json.loads((d/"config.json").read_text()) for d in (out, tmp_path/"again"))
    assert {k: a[k] for k in ("data", "image_size", "epochs", "seed")} == {k: b[k] for k in ("data", "image_size", "epochs", "seed")}


def test_predict_with_gradcam(trained_run, tmp_path):
    data, out = trained_run
    imgs = sorted((data/"glioma_tumor").glob("*.png"))[:3]
    (tmp_path/"bad.png").write_text("not an image")
    r = run_btc("predict", out/"model.keras", *imgs, tmp_path/"bad.png", "--out", tmp_path/"p.csv", "--gradcam", tmp_path/"cams")
    assert r.returncode == 0, r.stderr
    assert "4 images: 3 predicted, 1 unreadable" in r.stdout
    p = read_csv(tmp_path/"p.csv")
    assert p["path"].tolist() == [i.as_posix() for i in imgs] + [(tmp_path/"bad.png").as_posix()]
    assert (p["error"] != "").tolist() == [False, False, False, True] and "gradcam_empty" in p
    probs = p.loc[:2, [c for c in p if c.startswith("p_")]].astype(float)
    assert probs.shape[1] == 4 and ((probs.sum(axis=1) - 1).abs() < 1e-4).all()
    assert len(list((tmp_path/"cams").glob("*.png"))) == 3
    bar = [l for l in r.stderr.replace("\r", "\n").splitlines() if l.startswith("predict:")]
    assert bar and "3/3" in bar[-1], r.stderr                         # the progress bar is seen, TensorFlow's start-up is not
    assert not any(l.startswith(("I0000", "W0000", "E0000", "WARNING: All log")) for l in r.stderr.splitlines()), r.stderr


def test_predict_refuses_outputs_that_are_inputs(trained_run, tmp_path, fingerprint):
    data, out = trained_run
    img = sorted((data/"no_tumor").glob("*.png"))[0]
    before = fingerprint(data)
    for args, say in [((img, "--out", img), "is one of the inputs"), ((img, "--out", out/"model.keras"), "is one of the inputs"),
                      ((data, "--out", data/"p.csv"), "inside the input folder"),
                      ((data, "--out", tmp_path/"p.csv", "--gradcam", data/"cams"), "inside the input folder")]:
        r = run_btc("predict", out/"model.keras", *args)
        assert r.returncode == 2 and say in r.stderr, r.stderr
    assert fingerprint(data) == before


def test_evaluate_and_report_commands(run_copy):
    data, out = run_copy
    m0 = json.loads((out/"metrics.json").read_text())
    (out/"report.html").unlink()
    r = run_btc("report", out, "--quiet")
    assert r.returncode == 0 and (out/"report.html").exists() and r.stdout == r.stderr == "", (r.stdout, r.stderr)
    r = run_btc("evaluate", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "", (r.stdout, r.stderr)   # -q: no progress bar, no TensorFlow log lines
    assert json.loads((out/"metrics.json").read_text())["accuracy"] == m0["accuracy"]  # same model, same test split


def test_audit_command(tmp_path, phantom):
    data, _ = phantom(n_per_class=5, size=64, seed=2, dirty=True)
    r = run_btc("audit", data, "--out", tmp_path/"a")
    assert r.returncode == 0, r.stderr
    assert "rejected because:" in r.stdout and "exact_duplicate" in r.stdout and "next: btc report" in r.stdout
    assert r.stdout.splitlines()[0].startswith("[1/2] scan")
    assert sorted(p.name for p in (tmp_path/"a").iterdir()) == [".btc-lock", ".btc-run", "audit.csv", "config.json", "manifest.csv"]


def test_predict_dicom_like_png(trained_run, tmp_path):
    "One slice as PNG, as 16-bit MONOCHROME2 DICOM (window 0-4095) and as MONOCHROME1: same picture, probabilities within 0.05."
    from PIL import Image
    from brain_tumor_cls.dicom import write_dicom
    data, out = trained_run
    png = sorted((data/"pituitary_tumor").glob("*.png"))[0]
    g = np.asarray(Image.open(png).convert("L")).astype(np.uint16) * 16          # 0..4080 of 12 bits
    write_dicom(tmp_path/"a.dcm", g, bits=12, window=(2048, 4096))
    write_dicom(tmp_path/"b_mono1.dcm", 4095 - g, bits=12, window=(2048, 4096), photometric="MONOCHROME1")
    from brain_tumor_cls.gradcam import original_image     # the pictures the model sees: equal to one grey level
    for dcm in ("a.dcm", "b_mono1.dcm"):
        assert np.abs(original_image(tmp_path/dcm).astype(int) - original_image(png)).max() <= 1, dcm
    r = run_btc("predict", out/"model.keras", tmp_path/"a.dcm", tmp_path/"b_mono1.dcm", png, "--out", tmp_path/"p.csv")
    assert r.returncode == 0, r.stderr
    p = read_csv(tmp_path/"p.csv")
    assert (p["error"].fillna("") == "").all(), p
    probs = p[[c for c in p if c.startswith("p_")]].astype(float).to_numpy()
    assert np.abs(probs - probs[2]).max() <= 0.05, probs
