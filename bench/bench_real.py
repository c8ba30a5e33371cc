#!/usr/bin/env python3
"""The leakage effect on real data: the same recipe trained twice on SARTAJ brain MRI.

(a) `raw`: the split the collection provides (Training/ -> train + val, Testing/ -> test) with every file kept,
    duplicates and cross-split copies included: what most published results on this collection do.
(b) `audited`: `btc run DATA --out RUN` with its defaults: audit, clean, group-aware split (no duplicate group spans
    two splits), the no-weights recipe.

Both use the run module end to end (same recipe, same training code, same evaluation); only the rows differ.
Writes accuracy, macro F1, macro AUC with 95% bootstrap CIs and wall times to bench/results/bench_real.json.

    python bench/bench_real.py [--data ../shared/data/sartaj-brain-mri] [--only raw|audited] [--out bench/out/real]
"""
import argparse, json, os, platform, shutil, sys, time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from brain_tumor_cls import run as R
from brain_tumor_cls.files import write_json

RESULTS = Path(__file__).parent/"results"/"bench_real.json"


def metrics_row(run_dir: Path, wall: float, load0, what: str) -> dict:
    m = json.loads((run_dir/"metrics.json").read_text())
    cfg = json.loads((run_dir/"config.json").read_text())
    sp = R.read_csv(run_dir/"splits.csv")
    pick = lambda k: {"value": m[k]["value"], "ci": m[k]["ci"]}
    return dict(what=what, wall_s=round(wall, 1), n_test=m["n"], split_sizes=sp["split"].value_counts().to_dict(),
                accuracy=pick("accuracy"), macro_f1=pick("macro_f1"), macro_auc=pick("macro_auc"), ece=pick("ece"),
                recipe={k: cfg.get(k) for k in ("image_size", "epochs", "batch_size", "learning_rate", "online_augment", "lr_schedule",
                                       "warmup_epochs", "label_smoothing", "recipe")},
                load_start=load0, load_end=os.getloadavg(), **training_row(run_dir))


def training_row(run_dir: Path) -> dict:
    "Validation accuracy per epoch (from the run's log.csv) and the calibration record of metrics.json."
    val = [round(float(v), 4) for v in R.read_csv(run_dir/"log.csv")["val_accuracy"]]
    cal = json.loads((run_dir/"metrics.json").read_text()).get("calibration")
    return dict(validation_accuracy_by_epoch=val, validation_accuracy_last_epoch=val[-1] if val else None, calibration=cal)


def audited(data: Path, out: Path, opts: dict) -> dict:
    "`btc run DATA --out RUN` with its defaults."
    load0, t = os.getloadavg(), time.perf_counter()
    R.run_pipeline(R.make_config({"data": str(data), **opts}, out=out), progress=False, log=lambda *a: print(*a, flush=True))
    return metrics_row(out, time.perf_counter() - t, load0, "audited: btc run defaults (audit, clean, group-aware split)")


def raw(data: Path, out: Path, opts: dict) -> dict:
    "The provided split, every file kept: the audit table marks nothing, so the split keeps duplicates where they lie."
    load0, t = os.getloadavg(), time.perf_counter()
    cfg, notes, man, digest = R._start(R.make_config({"data": str(data), **opts}, out=out), print)
    folder = R.RunFolder(out).open()
    try:
        run = R.Run(cfg, folder, R.stage_keys(cfg, digest), lambda *a: print(*a, flush=True), False, tables={"listing": man})
        R.save_config(cfg, out)
        R.execute(run, ["scan"])
        aud = run.table("manifest").assign(issues=[[] for _ in range(len(man))], keep=True, dup_group=-1)
        run.save("audit", aud)                       # nothing rejected, no duplicate groups: what the folder gives
        R.execute(run, ["split", "balance", "train", "evaluate"])
    finally: folder.release()
    return metrics_row(out, time.perf_counter() - t, load0, "raw: provided Training/Testing split, every file kept")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("BTC_DATA", "../shared/data/sartaj-brain-mri"))
    ap.add_argument("--out", default="bench/out/real"); ap.add_argument("--only", choices=["raw", "audited"])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override settings (e.g. image_size=75 epochs=1 for a smoke test)")
    ap.add_argument("--results", default=str(RESULTS), help="JSON to write")
    a = ap.parse_args()
    opts = dict(kv.split("=", 1) for kv in a.set)
    data, out = Path(a.data).resolve(), Path(a.out).resolve()
    if not data.is_dir(): sys.exit(f"no data folder {data}")
    results = Path(a.results)
    res = json.loads(results.read_text()) if results.exists() else {}
    res["machine"] = dict(platform=platform.platform(), cpus=os.cpu_count(), python=platform.python_version())
    for name, fn in (("raw", raw), ("audited", audited)):
        if a.only and a.only != name: continue
        if (out/name).exists(): shutil.rmtree(out/name)
        res[name] = fn(data, out/name, opts)
        write_json(results, res)
        print(json.dumps(res[name], indent=1))
    if "raw" in res and "audited" in res:
        res["leakage_effect_accuracy"] = round(res["raw"]["accuracy"]["value"] - res["audited"]["accuracy"]["value"], 4)
        write_json(results, res)


if __name__ == "__main__":
    main()
