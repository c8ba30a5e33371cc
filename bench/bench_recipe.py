"""A from-scratch training recipe for a CPU: InceptionV3 without pretrained weights, measured on a real collection.

Each named configuration (see `CONFIGS`) changes a few settings of `BASE` (today's `btc run --scratch` path with
the issue's hand-picked flags: 96 px, Adam 1e-3 + ReduceLROnPlateau, BN momentum 0.6, online flips and
brightness/contrast). The script audits, cleans and splits the folder with the library (`data.scan_images`,
`cleaning.audit`/`clean`, `pipeline.split`), caches the split and the decoded images, builds the model with
`model.build_model(weights=None)` and drives Keras itself (its own optimizer, schedule, loss and augmentation),
so that it can try schedules the library does not have yet.

Every epoch it scores the validation AND the test split (accuracy, macro F1, loss) with the same model; the
validation loss drives ReduceLROnPlateau/EarlyStopping, the test curve is only recorded (never used to choose).
It reports the final weights and, when early stopping restores them, the weights of the best validation loss.

Run: `python bench/bench_recipe.py --data /work/shared/data/sartaj-brain-mri --config NAME` (`--list` shows the
names; `--config speed` measures training images/s per input size,
`--config shortcut` how far a classifier on framing and brightness alone gets). Appends or updates the row NAME in
`bench/results/bench_recipe.json` (machine, load average at start/end, CPU share, settings, metrics, wall time).
"""
import argparse, hashlib, json, math, os, platform, statistics, sys, tempfile, time, warnings
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore", message=".*shuffle=True. was passed.*")
RESULTS = Path(__file__).parent / "results" / "bench_recipe.json"

# -- the settings -----------------------------------------------------------------------------------------------
BASE = dict(size=96, epochs=12, batch=32, optimizer="adam", lr=1e-3, weight_decay=0.0,
            schedule="plateau",      # plateau: constant + ReduceLROnPlateau | cosine: warm-up + cosine | onecycle
            warmup_epochs=0.0, final_lr_frac=0.0, lr_patience=3, min_lr=1e-6,
            label_smoothing=0.0, augment="hv_bc", bn_momentum=0.6,
            patience=10, restore_best=True,   # EarlyStopping on val_loss (None: off, the final weights are kept)
            dense_units=512, dropout=0.5, class_weight=None, seed=0, jit=False,
            eval_every=1,             # score val and test every N epochs (and after the last)
            crop=False)               # crop each image to the square around its content before resizing

COS = dict(schedule="cosine", warmup_epochs=1.0, final_lr_frac=0.0, patience=None, restore_best=False, eval_every=3)
REC = dict(COS, augment="h_bc", label_smoothing=0.1, bn_momentum=0.9)   # the recommended bundle
CONFIGS = {
    # proxies, 6 epochs. The hand-picked flags (today's scratch path at 96 px with --online-augment):
    "base96": dict(epochs=6),
    # warm-up + cosine instead of constant + ReduceLROnPlateau (final weights, no early stopping); nothing else changed
    "cos96": dict(epochs=6, **COS),
    # + label-preserving augmentation (no vertical flip), label smoothing 0.1, BatchNorm momentum 0.9
    "rec96": dict(epochs=6, **REC),
    # the bundle on images cropped to the brain (framing differs by class and by folder in SARTAJ)
    "rec96_crop": dict(epochs=6, **REC, crop=True),
    # the bundle at full length
    "rec96_e14": dict(REC, epochs=14, eval_every=2),
    # one factor at a time from cos96 (defined for later runs; see the results file for which ones ran)
    "cos96_h": dict(epochs=6, **COS, augment="h_bc"),
    "cos96_ls": dict(epochs=6, **COS, label_smoothing=0.1),
    "cos96_bn9": dict(epochs=6, **COS, bn_momentum=0.9),
    "cos96_aff": dict(epochs=6, **COS, augment="aff_s"),
    "cos96_adamw": dict(epochs=6, **COS, optimizer="adamw", weight_decay=0.05),
    "cos96_lr3": dict(epochs=6, **COS, lr=3e-3),
    "cos96_b16": dict(epochs=6, **COS, batch=16),
    "onecycle96": dict(epochs=6, schedule="onecycle", patience=None, restore_best=False, eval_every=3),
    "rec128": dict(epochs=6, **REC, size=128),
}

# augmentation policies: (horizontal flip, vertical flip, rotation deg, shift frac, zoom frac, brightness, contrast)
AUGMENT = {
    "none":  (False, False, 0, 0.0, 0.0, 0.0, 0.0),
    "h":     (True, False, 0, 0.0, 0.0, 0.0, 0.0),
    "h_bc":  (True, False, 0, 0.0, 0.0, 0.1, 0.1),
    "hv_bc": (True, True, 0, 0.0, 0.0, 0.1, 0.1),       # today's light policy (`augment.light_augment`)
    "aff_s": (True, False, 10, 0.05, 0.05, 0.1, 0.1),
    "aff_m": (True, False, 15, 0.1, 0.1, 0.1, 0.1),
    "aff_l": (True, False, 20, 0.1, 0.15, 0.2, 0.2),
}


def settings_of(name):
    "The full settings of configuration `name`."
    if name not in CONFIGS: raise SystemExit(f"unknown --config {name!r}; known: speed, shortcut, {', '.join(CONFIGS)}")
    return {**BASE, **CONFIGS[name]}


# -- data: audit, clean, split once; decoded arrays per size, cached -----------------------------------------------
def prepare_split(data, cache):
    "The audited, cleaned, group-aware split of `data` (seed 0, the folder's Testing kept as test), cached as CSV."
    key = hashlib.sha1(os.path.abspath(data).encode()).hexdigest()[:10]
    path = Path(cache) / f"splits-{key}.csv"
    if path.exists(): return pd.read_csv(path), path
    from brain_tumor_cls import data as D, cleaning, pipeline
    t = time.perf_counter()
    aud = cleaning.audit(D.scan_images(data), progress=False)
    sp = pipeline.split(cleaning.clean(aud), seed=0)
    sp = sp[["path", "class", "split", "folder_split", "dup_group"]]
    print(f"audit + split: {len(aud)} files -> {len(sp)} kept ({time.perf_counter() - t:.1f}s)", flush=True)
    _atomic_write(path, sp.to_csv(index=False))
    return sp, path


def content_box(grey, thresh=20, min_frac=0.01, margin=0.02):
    "Square box (l, t, r, b) around the rows/columns where more than `min_frac` of the pixels exceed `thresh`."
    m = grey > thresh
    rows, cols = np.flatnonzero(m.mean(1) > min_frac), np.flatnonzero(m.mean(0) > min_frac)
    h, w = grey.shape
    if len(rows) == 0 or len(cols) == 0: return 0, 0, w, h
    t, b, l, r = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(b - t, r - l) * (1 + 2 * margin)
    cy, cx = (t + b) / 2, (l + r) / 2
    return tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))


def load_cropped(paths, size):
    "Like `pipeline.load_images`, but each image first cropped to the square around its content (black outside)."
    import tensorflow as tf
    from PIL import Image
    out = np.zeros((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            box = content_box(np.asarray(im.convert("L")))
            a = np.asarray(im.crop(box))   # PIL fills outside the image with black
        out[i] = tf.cast(tf.image.resize(a, (size, size), method="bilinear") + 0.5, tf.uint8).numpy()
    return out


def load_arrays(sp, size, cache, key, crop=False):
    "{split: (uint8 [N,S,S,3], int labels)} decoded with `pipeline.load_images` (or `load_cropped`), cached as .npz."
    from brain_tumor_cls import pipeline
    classes = pipeline.class_names(sp)
    out = {}
    for s in ("train", "val", "test"):
        rows = sp[sp["split"] == s]
        f = Path(cache) / f"{key}-{s}-{size}px{'-crop' if crop else ''}.npz"
        if f.exists():
            z = np.load(f); x, y = z["x"], z["y"]
        else:
            x = (load_cropped if crop else pipeline.load_images)(rows["path"].tolist(), size)
            y = np.array([classes.index(c) for c in rows["class"]], np.int32)
            tmp = f.with_suffix(".tmp.npz"); np.savez(tmp, x=x, y=y); os.replace(tmp, f)
        out[s] = (x, y)
    return out, classes


def _atomic_write(path, text):
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    with os.fdopen(fd, "w") as f: f.write(text); f.flush(); os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# -- augmentation on batches (stateless, seeded per batch) -----------------------------------------------------------
def augmenter(name, seed):
    "A function (float images [B,S,S,3] in 0..255, int64 seed [2]) -> augmented images, for policy `name`."
    import tensorflow as tf
    from brain_tumor_cls.augment import RandomAffine, apply_policy
    import keras
    hflip, vflip, rot, shift, zoom, bright, contrast = AUGMENT[name]
    affine = None
    if rot or shift or zoom:
        affine = keras.Sequential([RandomAffine(rotation=rot / 360, shift=shift, shear=0.0, zoom=zoom, flip=hflip,
                                                fill_mode="constant", seed=seed)])
    def flip(x, s, axis):
        m = tf.random.stateless_uniform([tf.shape(x)[0], 1, 1, 1], s) < 0.5
        return tf.where(m, tf.reverse(x, [axis]), x)
    def run(x, s):
        s = tf.random.experimental.stateless_split(s, 5)
        if affine is not None: x = tf.cast(apply_policy(affine, x, seed=s[0]), tf.float32)
        elif hflip: x = flip(x, s[0], 2)
        if vflip: x = flip(x, s[1], 1)
        b = tf.shape(x)[0]
        if bright:
            x = tf.clip_by_value(x + tf.random.stateless_uniform([b, 1, 1, 1], s[2], -bright * 255, bright * 255), 0, 255)
        if contrast:
            m = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
            c = tf.random.stateless_uniform([b, 1, 1, 1], s[3], 1 - contrast, 1 + contrast)
            x = tf.clip_by_value((x - m) * c + m, 0, 255)
        return x
    return run


def train_dataset(x, y, n_classes, st):
    "Shuffled, augmented, one-hot batches from in-memory arrays."
    import tensorflow as tf
    aug = augmenter(st["augment"], st["seed"])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=st["seed"], reshuffle_each_iteration=True)
    ds = ds.batch(st["batch"], drop_remainder=False)
    seeds = tf.data.Dataset.random(seed=st["seed"], rerandomize_each_iteration=True).batch(2)
    def step(xy, s): return aug(tf.cast(xy[0], tf.float32), s), tf.one_hot(xy[1], n_classes)
    ds = tf.data.Dataset.zip(ds, seeds).map(step, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(2)


# -- model, optimizer, learning-rate schedules -------------------------------------------------------------------
def one_cycle(max_lr, total_steps, pct_start=0.3, div=25.0, final_div=1e4):
    "One-cycle (fastai): cosine rise from max_lr/div to max_lr over pct_start of the steps, cosine fall to max_lr/final_div."
    import keras
    from keras import ops
    class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            t = ops.cast(step, "float32"); up = pct_start * total_steps
            cos = lambda a, b, f: b + (a - b) * (1 + ops.cos(math.pi * ops.clip(f, 0.0, 1.0))) / 2
            return ops.where(t < up, cos(max_lr / div, max_lr, t / up),
                             cos(max_lr, max_lr / final_div, (t - up) / max(total_steps - up, 1)))
        def get_config(self): return dict(max_lr=max_lr, total_steps=total_steps, pct_start=pct_start)
    return OneCycle()


def learning_rate(st, steps_per_epoch):
    "A float (plateau schedule) or a Keras LearningRateSchedule over the whole run."
    import keras
    total = st["epochs"] * steps_per_epoch
    if st["schedule"] == "plateau": return st["lr"]
    if st["schedule"] == "cosine":   # linear warm-up 0 -> lr over W steps, then lr * (a + (1-a)(1+cos(pi t/T))/2)
        warm = int(round(st["warmup_epochs"] * steps_per_epoch))
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warm else st["lr"], decay_steps=total - warm, alpha=st["final_lr_frac"],
            warmup_target=st["lr"] if warm else None, warmup_steps=warm)
    if st["schedule"] == "onecycle": return one_cycle(st["lr"], total)
    raise ValueError(f"unknown schedule {st['schedule']!r}")


def build(st, n_classes, steps_per_epoch):
    "InceptionV3 from random init, every layer (BatchNorm included) trainable, compiled with the settings `st`."
    import keras
    from brain_tumor_cls import model as M
    keras.utils.set_random_seed(st["seed"])
    m = M.build_model(n_classes, st["size"], weights=None, dense_units=st["dense_units"], dropout=st["dropout"])
    M.set_trainable(m, 0, train_batchnorm=True)
    for layer in m.layers:
        if isinstance(layer, keras.layers.BatchNormalization): layer.momentum = st["bn_momentum"]
    lr = learning_rate(st, steps_per_epoch)
    if st["optimizer"] == "adamw":
        opt = keras.optimizers.AdamW(lr, weight_decay=st["weight_decay"])
        opt.exclude_from_weight_decay(var_names=["bias", "beta", "gamma"])
    else: opt = keras.optimizers.Adam(lr)
    m.compile(optimizer=opt, loss=keras.losses.CategoricalCrossentropy(label_smoothing=st["label_smoothing"]),
              metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")], jit_compile=bool(st["jit"]))
    return m


# -- every epoch: scores on val and test, timing, load; early stopping on val_loss ---------------------------------
def scores(m, x, y, n_classes):
    "Accuracy, macro F1, mean cross-entropy (no smoothing) and confusion matrix (rows: true) of `m` on arrays (x, y)."
    from sklearn.metrics import f1_score, confusion_matrix
    p = m.predict(x, batch_size=64, verbose=0)
    pred = p.argmax(1)
    nll = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1))))
    return dict(acc=float((pred == y).mean()), f1=float(f1_score(y, pred, average="macro", labels=range(n_classes))),
                loss=nll, cm=confusion_matrix(y, pred, labels=range(n_classes)).tolist())


def scores_both(m, arrays, n_classes):
    "`scores` of val and test from one predict call (one trace, one pass)."
    (xv, yv), (xt, yt) = arrays["val"], arrays["test"]
    class Fixed:   # hands `scores` the slice of the joint predictions
        def __init__(self, p): self.p = p
        def predict(self, x, **kw): return self.p
    p = m.predict(np.concatenate([xv, xt]), batch_size=64, verbose=0)
    return scores(Fixed(p[:len(yv)]), None, yv, n_classes), scores(Fixed(p[len(yv):]), None, yt, n_classes)


def epoch_callback(arrays, n_classes, st):
    import keras
    class Epochs(keras.callbacks.Callback):
        "Scores val and test after each epoch (val_loss feeds the callbacks after it), times the training batches."
        def __init__(self):
            super().__init__(); self.rows, self.best, self.wait = [], np.inf, 0
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = self.t1 = time.perf_counter(); self.c0 = self.c1 = cpu_seconds()
        def on_train_batch_end(self, batch, logs=None): self.t1, self.c1 = time.perf_counter(), cpu_seconds()
        def on_epoch_end(self, epoch, logs=None):
            t = time.perf_counter()
            row = dict(epoch=epoch + 1, lr=float(np.array(self.model.optimizer.learning_rate)), loss=float(logs["loss"]),
                       accuracy=float(logs["accuracy"]), train_s=round(self.t1 - self.t0, 2),
                       train_cpu_s=round(self.c1 - self.c0, 2))
            if (epoch + 1) % st["eval_every"] == 0 or epoch + 1 == st["epochs"]:
                va, te = scores_both(self.model, arrays, n_classes)
                row |= {f"val_{k}": v for k, v in va.items()} | {f"test_{k}": v for k, v in te.items()}
                logs["val_loss"], logs["val_accuracy"] = va["loss"], va["acc"]
                self.early_stop(va["loss"])
            row |= dict(eval_s=round(time.perf_counter() - t, 2), load1=os.getloadavg()[0])
            self.rows.append(row)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if "cm" not in k), flush=True)
        def early_stop(self, val_loss):
            if val_loss < self.best:
                self.best, self.wait = val_loss, 0
            else:
                self.wait += 1
                if st["patience"] is not None and self.wait >= st["patience"]: self.model.stop_training = True
    return Epochs()


# -- one configuration, end to end ---------------------------------------------------------------------------------
def machine():
    import tensorflow as tf, keras
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]}


def cpu_seconds():
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def summarize(rows, st, n_train):
    "Final, best-validation-loss and (oracle, never used to choose) best-test epochs; images/s of the training batches."
    all_ = pd.DataFrame(rows)
    h = all_[all_["val_loss"].notna()]   # the epochs that were scored
    item = lambda v: v.item() if hasattr(v, "item") else v
    pick = lambda i: {k: item(h.loc[i, k]) for k in ("epoch", "val_acc", "val_f1", "test_acc", "test_f1", "test_cm")}
    last, best = h.index[-1], h["val_loss"].idxmin()
    used = best if st["restore_best"] else last
    later = all_.iloc[1:] if len(all_) > 1 else all_   # the first epoch includes tracing
    ips, ipc = n_train / later["train_s"], n_train / later["train_cpu_s"]
    return {"reported": "best_val_loss" if st["restore_best"] else "final", **pick(used),
            "final": pick(last), "best_val_loss": pick(best), "oracle_best_test": pick(h["test_acc"].idxmax()),
            "epochs_run": len(all_), "train_img_per_s": round(float(ips.median()), 2),
            "train_img_per_cpu_s": round(float(ipc.median()), 2), "epoch_train_s_median": round(float(later["train_s"].median()), 1),
            "train_cpu_share": round(float(later["train_cpu_s"].sum() / later["train_s"].sum() / os.cpu_count()), 3)}


def run_config(name, data, cache, smoke=False):
    import keras
    st = settings_of(name) | (dict(epochs=2, eval_every=1) if smoke else {})
    load0, t0, c0 = os.getloadavg(), time.perf_counter(), cpu_seconds()
    sp, split_path = prepare_split(data, cache)
    arrays, classes = load_arrays(sp, st["size"], cache, split_path.stem, st["crop"])
    if smoke: arrays = {k: (x[::40], y[::40]) for k, (x, y) in arrays.items()}   # a check of the script, not a measurement
    (xtr, ytr), n = arrays["train"], len(classes)
    steps = math.ceil(len(ytr) / st["batch"])
    m = build(st, n, steps)
    cb = epoch_callback(arrays, n, st)
    cbs = [cb]
    if st["schedule"] == "plateau":
        cbs.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=st["lr_patience"],
                                                     min_lr=st["min_lr"]))
    cw = None
    if st["class_weight"] == "balanced":
        cnt = np.bincount(ytr, minlength=n); cw = {i: len(ytr) / (n * c) for i, c in enumerate(cnt)}
    t_fit = time.perf_counter()
    m.fit(train_dataset(xtr, ytr, n, st), epochs=st["epochs"], callbacks=cbs, class_weight=cw, verbose=0)
    fit_s = time.perf_counter() - t_fit
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    row = {"config": name, "changes": CONFIGS[name], "settings": st,
           "images": {s: int(len(arrays[s][1])) for s in arrays}, "classes": classes,
           **summarize(cb.rows, st, len(ytr)), "fit_s": round(fit_s, 1), "wall_s": round(wall, 1),
           "load_avg_start": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in os.getloadavg()],
           "cpu_share": round(cpu / wall / os.cpu_count(), 3), "history": cb.rows,
           "machine": machine(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return row


def save_row(row, out=RESULTS):
    "Append or replace the row of this configuration in the results JSON."
    res = json.loads(Path(out).read_text()) if Path(out).exists() else {}
    res.setdefault("benchmark", "InceptionV3 from random init on a CPU: recipe search (bench/bench_recipe.py)")
    res.setdefault("runs", {})[row["config"]] = row
    _atomic_write(out, json.dumps(res, indent=1, default=float))


# -- images/s of a training step per input size -----------------------------------------------------------------------
def speed(data, cache, sizes=(96, 128, 160), batches=(32,), steps=6, warm=2):
    "Median images/s of training and of inference batches per (size, batch, jit) on the real images."
    import keras
    sp, split_path = prepare_split(data, cache)
    load0, t0, out = os.getloadavg(), time.perf_counter(), []
    points = [(s, b, False) for s in sizes for b in batches] + [(sizes[0], 16, False), (sizes[0], 32, True)]
    for size, batch, jit in points:
        arrays, classes = load_arrays(sp, size, cache, split_path.stem)
        st = {**BASE, "size": size, "batch": batch, "jit": jit}
        x, y = arrays["train"]
        m = build(st, len(classes), steps)
        ts = []
        mark = lambda b, logs=None: ts.append((time.perf_counter(), cpu_seconds()))
        cb = keras.callbacks.LambdaCallback(on_train_batch_begin=mark, on_train_batch_end=mark)
        m.fit(train_dataset(x[:batch * (steps + warm)], y[:batch * (steps + warm)], len(classes), st), epochs=1, callbacks=[cb], verbose=0)
        per = [ts[i + 1][0] - ts[i][0] for i in range(2 * warm, len(ts) - 1, 2)]
        cpu = sum(ts[i + 1][1] - ts[i][1] for i in range(2 * warm, len(ts) - 1, 2))
        tp = time.perf_counter(); m.predict(arrays["test"][0][:256], batch_size=64, verbose=0)
        tp = time.perf_counter(); m.predict(arrays["test"][0][:256], batch_size=64, verbose=0); tp = time.perf_counter() - tp
        out.append(dict(size=size, batch=batch, jit=jit, train_img_per_s=round(batch / statistics.median(per), 2),
                        train_img_per_cpu_s=round(batch * len(per) / cpu, 2), cpu_share=round(cpu / sum(per) / os.cpu_count(), 3),
                        infer_img_per_s=round(256 / tp, 1), load1=os.getloadavg()[0]))
        print(out[-1], flush=True)
    return {"config": "speed", "points": out, "wall_s": round(time.perf_counter() - t0, 1),
            "load_avg_start": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "machine": machine(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# -- how far shortcuts go: a classifier that sees only framing, brightness and aspect ratio --------------------------
def global_features(x, paths):
    "Per image: content rows/cols fraction, foreground fraction and mean, grey mean and std, log aspect ratio of the file."
    from PIL import Image
    g = x.mean(-1); m = g > 20
    fg_mean = np.array([gi[mi].mean() if mi.any() else 0.0 for gi, mi in zip(g, m)])
    wh = np.array([Image.open(p).size for p in paths], float)
    return np.c_[(m.mean(2) > 0.01).mean(1), (m.mean(1) > 0.01).mean(1), m.mean((1, 2)), fg_mean,
                 g.mean((1, 2)), g.std((1, 2)), np.log(wh[:, 0] / wh[:, 1])]


def shortcut_probe(data, cache):
    "A random forest on `global_features` (nothing about the tumour): accuracy and macro F1 on val and test."
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score
    load0, t0 = os.getloadavg(), time.perf_counter()
    sp, split_path = prepare_split(data, cache)
    arrays, classes = load_arrays(sp, 96, cache, split_path.stem)
    F = {s: global_features(arrays[s][0], sp[sp["split"] == s]["path"]) for s in arrays}
    clf = RandomForestClassifier(300, min_samples_leaf=3, random_state=0, n_jobs=1).fit(F["train"], arrays["train"][1])
    res = {}
    for s in ("val", "test"):
        y, p = arrays[s][1], clf.predict(F[s])
        res[s] = dict(acc=float((p == y).mean()), f1=float(f1_score(y, p, average="macro")))
    stats = {s: dict(zip(classes, [dict(content_rows=round(float(F[s][arrays[s][1] == c, 0].mean()), 3),
                                        fg_mean=round(float(F[s][arrays[s][1] == c, 3].mean()), 1))
                                   for c in range(len(classes))])) for s in ("train", "test")}
    return {"config": "shortcut", "features": "content rows/cols fraction, foreground fraction and mean grey, grey mean/std, "
            "log aspect ratio of the file", "val": res["val"], "test": res["test"], "per_class": stats,
            "wall_s": round(time.perf_counter() - t0, 1), "load_avg_start": [round(x, 2) for x in load0],
            "load_avg_end": [round(x, 2) for x in os.getloadavg()], "machine": machine(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="image folder (Training/Testing layout)")
    ap.add_argument("--config", help="configuration name (see --list), or 'speed'")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bench_recipe"), help="cache folder for split and arrays")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="2 epochs on 1/40 of the images: checks the script, measures nothing")
    a = ap.parse_args()
    if a.list or not a.config:
        for k, v in CONFIGS.items(): print(f"{k:16s} {v}")
        return
    if not a.data: ap.error("--data is required to run a configuration")
    special = {"speed": speed, "shortcut": shortcut_probe}
    row = special[a.config](a.data, a.cache) if a.config in special else run_config(a.config, a.data, a.cache, a.smoke)
    save_row(row, a.out)
    print(json.dumps({k: v for k, v in row.items() if k not in ("history", "machine", "settings")}, indent=1, default=float))


if __name__ == "__main__":
    main()
