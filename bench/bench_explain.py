"""Which explanation finds the tumour? Every CAM method x target layer(s) on a phantom model's test images.

Two steps:

    python bench/bench_explain.py train runs/explain-demo [--n-per-class 100 --image-size 96 --epochs 20 ...]
    python bench/bench_explain.py score runs/explain-demo          # or a `btc demo` run directory

`train` trains the `btc demo` recipe with the library, step by step (dirty phantoms -> audit -> clean -> grouped
split -> `pipeline.make_dataset` with online augmentation -> `model.build_model(weights=None)` -> `train.train` of
the whole network, BatchNorm included), so other demo settings can be measured without the CLI. It writes
`config.json`, `splits.csv`, `model.keras` (and train's logs) into the run directory.

`score` explains every test image of the run with each configuration below and measures

- localisation on tumour images (masks known), maps of the *true* class as in the pointing game of Zhang et al.
  (2018): pointing-game hit rate and energy share inside the mask, beside uniform random maps on the same grid;
  also the hit rate of the *predicted* class's maps;
- faithfulness on all test images, maps of the *predicted* class: deletion and insertion AUC, beside random maps;
- time per image (wall clock on this machine, under its load).

Writes bench/results/bench_explain.json (or --out) with the machine and its load average at start and end."""
import argparse, os, platform, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path
import numpy as np, pandas as pd
from PIL import Image

# (method, layers, options): the grid measured. Fusions are LayerCAM's; smoothing is tried on the strongest methods.
CONFIGS = [("gradcam", ["mixed7"], {}),                                       # today's default first
           ("layercam", ["stem1"], {}), ("layercam", ["stem2"], {}), ("layercam", ["stem1", "stem2"], {"fuse": "product"}),
           ("layercam", ["stem1", "mixed2"], {"fuse": "product"}), ("layercam", ["mixed2"], {}),
           ("hirescam", ["stem1"], {}), ("gradcam", ["stem1"], {}), ("hirescam", ["mixed2"], {}), ("gradcam", ["mixed2"], {}),
           ("gradcam++", ["mixed7"], {}), ("layercam", ["mixed2", "mixed5", "mixed7"], {"fuse": "product"}),
           ("layercam", ["stem1"], {"aug_smooth": True}),
           ("scorecam", ["mixed2"], {"max_channels": 16}), ("scorecam", ["mixed7"], {"max_channels": 16})]
# InceptionV3's stem has two blocks, each ending in a max-pooling: "stem1" is the 4-D layer feeding the first
# (45x45, 64 channels at 96 px), "stem2" the one feeding the second (20x20, 192 channels). Resolved by structure,
# since Keras numbers layer names per session.


def resolve(model, layers):
    "Layer names for `layers`, with 'stem1'/'stem2' replaced by the layers feeding the stem's max-poolings."
    import keras
    names = [l.name for l in model.layers]
    pools = [i for i, l in enumerate(model.layers[:names.index("mixed0")]) if isinstance(l, keras.layers.MaxPooling2D)]
    stem = {"stem1": model.layers[pools[0] - 1].name, "stem2": model.layers[pools[1] - 1].name}
    return [stem.get(l, l) for l in layers]


DEMO_RECIPE = dict(n_per_class=100, phantom_size=128, image_size=96, epochs=20, batch_size=16, learning_rate=1e-3,
                   val_frac=0.15, test_frac=0.15, bn_momentum=0.6, patience=10, dense_units=512, dropout=0.5, seed=0)


def train(run:Path, s:dict):
    "The `btc demo` recipe, step by step with the library; settings `s` (see DEMO_RECIPE)."
    import keras
    from brain_tumor_cls import phantom, data, cleaning, pipeline, model as M, train as T
    from brain_tumor_cls.files import write_csv, write_json
    ph = run/"phantom"
    if not (ph/"phantom.csv").exists():
        phantom.make_phantom_dataset(ph, n_per_class=s["n_per_class"], size=s["phantom_size"], seed=s["seed"], dirty=True)
    man = data.image_info(data.scan_images(ph/"images"))
    use = cleaning.clean(cleaning.audit(man))
    sp = pipeline.split(use, val_frac=s["val_frac"], test_frac=s["test_frac"], seed=s["seed"])
    classes = pipeline.class_names(sp)
    write_csv(run/"splits.csv", sp)
    write_json(run/"config.json", dict(s, data=str(ph/"images"), class_names=classes))
    mk = lambda split, training: pipeline.make_dataset(sp[sp["split"] == split], classes, image_size=s["image_size"],
        batch_size=s["batch_size"], training=training, augment=True, cache="memory", seed=s["seed"])
    keras.utils.set_random_seed(s["seed"])
    m = M.build_model(len(classes), image_size=s["image_size"], weights=None, dense_units=s["dense_units"], dropout=s["dropout"])
    for layer in m.layers:
        if isinstance(layer, keras.layers.BatchNormalization): layer.momentum = s["bn_momentum"]
    t0 = time.time()
    T.train(m, mk("train", True), mk("val", False), run, class_names=classes, epochs=0, fine_tune_epochs=s["epochs"],
            fine_tune_from=0, fine_tune_lr=s["learning_rate"], train_batchnorm=True, patience=s["patience"],
            seed=s["seed"], verbose=2)
    print(f"trained in {time.time() - t0:.0f} s")


def load_test(run:Path):
    "Test images, masks, true labels, class names and the model of a run directory."
    from brain_tumor_cls.files import read_csv, read_json
    from brain_tumor_cls.model import load_model
    from brain_tumor_cls.pipeline import load_images
    cfg = read_json(run/"config.json")
    ph = read_csv(Path(cfg["data"]).parent/"phantom.csv", dtype=str)
    mask_of = {Path(p).resolve().as_posix(): m for p, m in zip(ph["path"], ph["mask"])}
    sp = read_csv(run/"splits.csv", dtype=str)
    te = sp[sp["split"] == "test"].reset_index(drop=True)
    model, meta = load_model(run/"model.keras")
    S, classes = int(meta["image_size"]), list(meta["class_names"])
    def mask(p):
        m = mask_of.get(Path(p).resolve().as_posix(), "")
        return np.asarray(Image.open(m).convert("L").resize((S, S), Image.NEAREST)) > 127 if m else np.zeros((S, S), bool)
    return model, classes, load_images(te["path"].tolist(), S), np.stack([mask(p) for p in te["path"]]), te["class"].to_numpy()


def localise(cams, masks, true, baseline_grid=None):
    "Pointing game and energy share per class, and the same for random maps on the maps' grid."
    from brain_tumor_cls.gradcam import localisation, random_baseline, localisation_summary
    sc = localisation(cams, masks).assign(**{"class": true})
    base = random_baseline(masks, baseline_grid or cams.shape[1:], n_draws=100)
    return localisation_summary(sc, base)


def explain(model, x, masks, true_idx, pred_idx, tumour, method, layers, opts):
    "Maps of the predicted class (all images) and of the true class (tumour images), and seconds per image."
    from brain_tumor_cls.gradcam import gradcam
    gradcam(model, x[:1], method=method, layer=layers, **opts)          # warm-up: builds (and traces) the gradient model
    t0 = time.perf_counter()
    cams_pred = gradcam(model, x, class_index=pred_idx, method=method, layer=layers, **opts)
    per_image = (time.perf_counter() - t0) / len(x)
    cams_true = cams_pred.copy()
    wrong = tumour & (true_idx != pred_idx)
    if wrong.any(): cams_true[wrong] = gradcam(model, x[wrong], class_index=true_idx[wrong], method=method, layer=layers, **opts)
    return cams_true, cams_pred, per_image


def localisation_row(name, method, layers, opts, cams_true, cams_pred, masks, true, tumour, per_image):
    "One result row: pointing game and energy (true class) beside random maps, predicted-class hits, time."
    from brain_tumor_cls.gradcam import localisation
    loc = localise(cams_true[tumour], masks[tumour], true[tumour])
    a = loc.loc["all"]
    return dict(config=name, method=method, layers=layers, options=opts, grid=list(cams_true.shape[1:]),
                pointing_game=float(a["hit"]), random_pointing_game=float(a["random_hit"]),
                energy=float(a["energy"]), random_energy=float(a["random_energy"]), mask_area=float(a["area"]),
                pointing_game_predicted_class=float(localisation(cams_pred[tumour], masks[tumour])["hit"].mean()),
                per_class_pointing_game={c: float(loc.loc[c, "hit"]) for c in loc.index if c != "all"},
                seconds_per_image=per_image)


def random_faithfulness(model, x, pred_idx, grids, n_steps, seed=0):
    "Deletion/insertion AUC of uniform random maps on each grid."
    from brain_tumor_cls.gradcam import deletion_insertion
    rng = np.random.default_rng(seed)
    return {f"{g[0]}x{g[1]}": deletion_insertion(model, x, rng.random((len(x), *g), np.float32), pred_idx, n_steps=n_steps).mean().to_dict()
            for g in grids}


def random_model(model, classes):
    "The same architecture with fresh random weights (the model-randomisation test of Adebayo et al., 2018)."
    import keras
    from brain_tumor_cls.model import build_model
    keras.utils.set_random_seed(0)
    m = build_model(len(classes), image_size=int(model.input_shape[1]), weights=None,
                    dense_units=int(model.get_layer("logits").input.shape[-1]))
    return m


def score(run:Path, out:Path, n_steps:int, only:list|None, faith_top:int, sanity_top:int):
    "Localisation of every configuration first (cheap), then faithfulness (many forward passes); JSON rewritten as it goes."
    from brain_tumor_cls.files import write_json
    from brain_tumor_cls.gradcam import deletion_insertion
    load0, t_start = os.getloadavg(), time.time()
    model, classes, x, masks, true = load_test(run)
    pred_idx = model.predict(x.astype(np.float32), batch_size=32, verbose=0).argmax(1)
    true_idx = np.array([classes.index(c) for c in true])
    tumour = masks.reshape(len(masks), -1).any(1)
    res = dict(run=run.name, image_size=int(x.shape[1]), classes=classes, n_test=len(x), n_tumour=int(tumour.sum()),
               test_accuracy=float((pred_idx == true_idx).mean()), n_steps=n_steps, configs=[])
    def save():
        res.update(seconds=round(time.time() - t_start, 1), machine=dict(platform=platform.platform(),
                   python=platform.python_version(), cpu_count=os.cpu_count(), load_avg_start=load0, load_avg_end=os.getloadavg()))
        write_json(out, res)
    maps = {}
    for method, layers, opts in [c for c in CONFIGS if not only or c[0] in only]:
        name = f"{method} {'+'.join(layers)}" + "".join(f" {k}={v}" for k, v in opts.items())
        cams_true, maps[name], per_image = explain(model, x, masks, true_idx, pred_idx, tumour, method, resolve(model, layers), opts)
        r = localisation_row(name, method, layers, opts, cams_true, maps[name], masks, true, tumour, per_image)
        res["configs"].append(r); save()
        print(f"{name:55s} grid {r['grid']}  PG {r['pointing_game']:.2f} (random {r['random_pointing_game']:.3f}, predicted "
              f"{r['pointing_game_predicted_class']:.2f})  energy {r['energy']:.3f} (random {r['random_energy']:.3f})"
              f"  {per_image * 1000:.0f} ms/img", flush=True)
    res["random_maps_faithfulness"] = random_faithfulness(model, x, pred_idx, [(4, 4), (9, 9), tuple(x.shape[1:3])], n_steps)
    print(f"random maps: {res['random_maps_faithfulness']}", flush=True); save()
    best = sorted(res["configs"][1:], key=lambda r: -r["pointing_game"])[:faith_top]
    for r in [res["configs"][0], *best]:                              # faithfulness: the default and the best localisers
        f = deletion_insertion(model, x, maps[r["config"]], pred_idx, n_steps=n_steps).mean()
        r.update(deletion_auc=float(f["deletion_auc"]), insertion_auc=float(f["insertion_auc"])); save()
        print(f"{r['config']:55s} deletion {r['deletion_auc']:.3f} insertion {r['insertion_auc']:.3f}", flush=True)
    top = sorted(res["configs"][1:], key=lambda r: -r["pointing_game"])[:sanity_top]
    rand_model = random_model(model, classes)
    for r in [res["configs"][0], *top]:                               # the same explanation of an untrained network
        ct, _, _ = explain(rand_model, x, masks, true_idx, true_idx, tumour, r["method"], resolve(rand_model, r["layers"]), r["options"])
        r["pointing_game_random_weights"] = float(localise(ct[tumour], masks[tumour], true[tumour]).loc["all", "hit"]); save()
        print(f"{r['config']:55s} pointing game with random weights {r['pointing_game_random_weights']:.2f}", flush=True)
    print(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the demo recipe into RUN")
    t.add_argument("run")
    for k, v in DEMO_RECIPE.items(): t.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    s = sub.add_parser("score", help="score every configuration on RUN's test split")
    s.add_argument("run"); s.add_argument("--n-steps", type=int, default=10)
    s.add_argument("--only", nargs="*", help="only these methods")
    s.add_argument("--faith-top", type=int, default=5, help="faithfulness for the default and this many best localisers")
    s.add_argument("--sanity-top", type=int, default=3, help="model-randomisation check for the default and this many best")
    s.add_argument("--out", default=str(Path(__file__).parent/"results"/"bench_explain.json"))
    a = ap.parse_args()
    if a.cmd == "train": train(Path(a.run).absolute(), {k: getattr(a, k) for k in DEMO_RECIPE})
    else: score(Path(a.run).absolute(), Path(a.out), a.n_steps, a.only, a.faith_top, a.sanity_top)

if __name__ == "__main__":
    main()
