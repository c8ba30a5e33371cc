"""Does Grad-CAM point at the tumour? Score the Grad-CAM maps of a trained phantom run against the tumour masks.

`btc demo` trains InceptionV3 from scratch on phantom slices, whose masks mark every tumour. This script takes that
run directory, explains each test image's *predicted* class with Grad-CAM and Grad-CAM++ (target chosen by
`find_target_layer`), and scores every map against the mask: pointing game (is the map's maximum inside the mask?)
and the share of map energy inside the mask, per class, beside uniform random maps on the same grid.

    btc demo --out runs/demo && python bench/bench_localisation_run.py runs/demo

Writes bench/results/bench_localisation_run.json (numbers, run settings, machine)."""
import argparse, json, os, platform, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path
import numpy as np, pandas as pd
from PIL import Image
from brain_tumor_cls.files import write_json
from brain_tumor_cls.model import load_model
from brain_tumor_cls.pipeline import load_images
from brain_tumor_cls.gradcam import find_target_layer, gradcam, localisation, random_baseline, localisation_summary

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="run directory of `btc demo` (or `btc run` on phantom data)")
    ap.add_argument("--layers", nargs="*", default=[], help="also score these target layers (e.g. mixed2 mixed5) with Grad-CAM")
    ap.add_argument("--out", default=str(Path(__file__).parent/"results"/"bench_localisation_run.json"))
    a = ap.parse_args(); run = Path(a.run); t0 = time.time()
    cfg = json.loads((run/"config.json").read_text())
    phantom_csv = Path(cfg["data"]).parent/"phantom.csv"
    if not phantom_csv.exists(): raise SystemExit(f"{phantom_csv} not found: the run's data is not a phantom dataset with masks")
    ph = pd.read_csv(phantom_csv, keep_default_na=False)
    masks_of = {Path(p).resolve().as_posix(): m for p, m in zip(ph["path"], ph["mask"])}
    pred = pd.read_csv(run/"predictions.csv", keep_default_na=False)
    model, meta = load_model(run/"model.keras"); classes = list(meta["class_names"]); S = int(cfg["image_size"])
    layer = find_target_layer(model)
    imgs = load_images(pred["path"].tolist(), S)
    def mask(p):
        m = masks_of.get(Path(p).resolve().as_posix(), "")
        return np.asarray(Image.open(m).convert("L").resize((S, S), Image.NEAREST)) > 127 if m else np.zeros((S, S), bool)
    masks = np.stack([mask(p) for p in pred["path"]])
    ci = [classes.index(c) for c in pred["predicted"]]
    out = dict(run=str(run), image_size=S, target_layer=layer, n_test=len(pred),
               test_accuracy=float((pred["true"] == pred["predicted"]).mean()), methods={})
    runs = [(method, layer) for method in ["gradcam", "gradcam++"]] + [("gradcam", l) for l in a.layers if l != layer]
    for method, lay in runs:
        cams = gradcam(model, imgs, class_index=ci, method=method, layer=lay, progress=False)
        g = cams.shape[1:]; base = random_baseline(masks, g)
        sc = localisation(cams, masks); sc["class"] = pred["true"].to_numpy(); sc["correct"] = (pred["true"] == pred["predicted"]).to_numpy()
        summ = localisation_summary(sc, base)
        right = sc[sc["correct"] & sc["area"].notna()]
        out["methods"][f"{method} {lay}"] = dict(grid=list(g), per_class=summ.reset_index().to_dict("records"),
                                      correct_only=dict(n=len(right), hit=float(right["hit"].mean()) if len(right) else None,
                                                        energy=float(right["energy"].mean()) if len(right) else None),
                                      all_zero_maps=int(sc["all_zero"].sum()))
        print(f"{method} on {lay} {g}:\n{summ.round(3).to_string()}\n correct predictions only: {out['methods'][f'{method} {lay}']['correct_only']}")
    out["machine"] = dict(platform=platform.platform(), python=platform.python_version(), cpu_count=os.cpu_count(),
                          load_avg=os.getloadavg())
    out["seconds"] = round(time.time() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(a.out, out)
    print("wrote", a.out)

if __name__ == "__main__":
    main()
