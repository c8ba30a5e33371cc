"""Does Grad-CAM point at the tumour? Train a phantom InceptionV3 on CPU and score its maps against the masks.

No pretrained weights offline, so the backbone starts random. Recipe (what learned fastest on a shared 2-core CPU):
1. build_model(weights=None) at 176 px (mixed10 is 4x4 there);
2. recalibrate every BatchNorm on one batch of training phantoms (momentum 0, one forward pass in training mode),
   so the random network's activations are well scaled (data-dependent initialisation);
3. cache the mixed8 output once, then train mixed9 + mixed10 + head on the cache (BatchNorm frozen);
4. Grad-CAM (logit, mixed10) on the held-out phantoms: pointing game and energy share per class vs random maps.

    python bench/bench_localisation.py [--size 176] [--n-per-class 100] [--epochs 12]

Writes bench/results/bench_localisation.json."""
import argparse, json, os, platform, tempfile, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path
import numpy as np, pandas as pd, keras, tensorflow as tf
from PIL import Image
from brain_tumor_cls.files import write_json
from brain_tumor_cls.model import build_model
from brain_tumor_cls.phantom import make_phantom_dataset, PHANTOM_CLASSES
from brain_tumor_cls.gradcam import gradcam, localisation, random_baseline, localisation_summary
from brain_tumor_cls.evaluate import predictions_from_probs, evaluate

def load(paths): return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths]).astype(np.float32)
def load_masks(paths, S): return np.stack([np.asarray(Image.open(p)) > 127 if p else np.zeros((S, S), bool) for p in paths])

def recalibrate_bn(model, x):
    "Set every BatchNorm's moving statistics to those of batch `x` (one forward pass in training mode)."
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    old = [(l.trainable, l.momentum) for l in bns]
    for l in bns: l.trainable = True; l.momentum = 0.0
    model(x, training=True)
    for l, (t, mo) in zip(bns, old): l.trainable = t; l.momentum = mo

def train_top(model, xtr, ytr, xva, yva, cut="mixed8", epochs=12, lr=1e-3, batch=32, log=print):
    "Train the layers after `cut` on cached `cut` features (BatchNorm frozen); returns history dict."
    f = keras.Model(model.inputs, model.get_layer(cut).output)
    ftr, fva = f.predict(xtr, batch_size=16, verbose=0), f.predict(xva, batch_size=16, verbose=0)
    top = keras.Model(model.get_layer(cut).output, model.outputs)
    names = [l.name for l in model.layers]; i = names.index(cut)
    for j, l in enumerate(model.layers): l.trainable = j > i and not isinstance(l, keras.layers.BatchNormalization)
    top.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, l: log(f"epoch {e} " + " ".join(f"{k}={v:.3f}" for k, v in l.items())))
    h = top.fit(ftr, ytr, batch_size=batch, epochs=epochs, validation_data=(fva, yva), verbose=0, callbacks=[cb], shuffle=True)
    return h.history

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=176); ap.add_argument("--n-per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=12); ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0); ap.add_argument("--cut", default="mixed8")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_localisation.json"))
    ap.add_argument("--log-every", type=int, default=1)
    a = ap.parse_args(); S = a.size; t0 = time.time()
    log = lambda s: print(f"[{time.time() - t0:6.0f}s] {s}", flush=True)
    tmp = tempfile.mkdtemp(prefix="btc_loc_")
    ph = make_phantom_dataset(tmp, n_per_class=a.n_per_class, size=S, seed=a.seed, layout="split", test_frac=0.25, progress=False)
    tr, te = ph[ph.split == "train"], ph[ph.split == "test"]
    xtr, ytr = load(tr.path), np.array([PHANTOM_CLASSES.index(c) for c in tr["class"]])
    xte, yte = load(te.path), np.array([PHANTOM_CLASSES.index(c) for c in te["class"]])
    mte = load_masks(te["mask"], S)
    log(f"{len(tr)} train / {len(te)} test phantoms at {S} px")
    keras.utils.set_random_seed(a.seed)
    model = build_model(4, S, weights=None)
    recalibrate_bn(model, xtr[np.random.default_rng(a.seed).permutation(len(xtr))[:64]])
    if a.epochs > 30: log = (lambda f: lambda s: f(s) if s.startswith("epoch") is False or int(s.split()[1]) % 10 == 9 else None)(log)
    hist = train_top(model, xtr, ytr, xte, yte, cut=a.cut, epochs=a.epochs, lr=a.lr, log=log)
    t_train = time.time() - t0
    probs = model.predict(xte, batch_size=16, verbose=0)
    metrics = evaluate(predictions_from_probs(probs, PHANTOM_CLASSES, true=yte), PHANTOM_CLASSES, n_boot=1000)
    res = {"recipe": f"random InceptionV3, BN recalibrated on 64 train phantoms, layers after {a.cut} trained on cached {a.cut} features, Adam lr={a.lr}", "image_size": S, "mixed10_grid": None, "n_train": len(tr), "n_test": len(te), "epochs": a.epochs,
           "train_seconds": t_train, "history": {k: [float(v) for v in vs] for k, vs in hist.items()},
           "test_metrics": {k: metrics[k] for k in ["accuracy", "macro_f1", "macro_auc", "ece"]},
           "test_per_class": {c: {m: metrics["per_class"][c][m]["value"] for m in ["precision", "recall", "f1", "auc"]} for c in PHANTOM_CLASSES},
           "confusion_matrix": metrics["confusion_matrix"], "localisation": {}}
    for method in ("gradcam", "gradcam++"):
        for which, ci in (("predicted", None), ("true", yte)):
            cams, det = gradcam(model, xte, class_index=ci, method=method, return_details=True)
            res["mixed10_grid"] = list(cams.shape[1:])
            sc = localisation(cams, mte).assign(**{"class": te["class"].to_numpy()})
            base = random_baseline(mte, cams.shape[1:], n_draws=50, seed=a.seed)
            summ = localisation_summary(sc, base)
            res["localisation"][f"{method}/{which}_class"] = {
                "all_zero_maps": int(det["all_zero"].sum()),
                "per_class": {k: {c: (None if pd.isna(v) else float(v)) for c, v in row.items()} for k, row in summ.iterrows()}}
    res["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_avg_1m_at_end": os.getloadavg()[0],
                      "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__}
    res["total_seconds"] = time.time() - t0
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(a.out, res)
    print(json.dumps(res["localisation"]["gradcam/predicted_class"], indent=1), json.dumps(res["test_metrics"]))

if __name__ == "__main__":
    main()
