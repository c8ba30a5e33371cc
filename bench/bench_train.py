"""Head training with a frozen backbone: full forward pass every epoch vs cached backbone features.

Same phantom images, same initial model, same `train` call in one process; only `cache_features`
differs. Reports seconds per epoch (median over epochs 2..E, the first one includes tracing),
the one-time feature pass of the cached path, and validation accuracy of both.
Run: `python bench/bench_train.py [--size 75] [--n-per-class 100] [--epochs 4]`.
"""
import argparse, json, os, platform, shutil, statistics, tempfile, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path

import numpy as np
import keras
import tensorflow as tf

from brain_tumor_cls.phantom import make_phantom_dataset, PHANTOM_CLASSES
from brain_tumor_cls.pipeline import split, make_dataset
from brain_tumor_cls.model import build_model
from brain_tumor_cls.train import train, extract_features


class EpochTimer(keras.callbacks.Callback):
    def __init__(self): super().__init__(); self.times = []
    def on_epoch_begin(self, epoch, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None): self.times.append(time.perf_counter() - self.t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=75)
    ap.add_argument("--n-per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_train.json"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_train-"))
    try:
        man = split(make_phantom_dataset(tmp / "phantom", n_per_class=a.n_per_class, size=a.size, seed=0, progress=False),
                    val_frac=0.25, test_frac=0.0, seed=0)
        tr = make_dataset(man[man.split == "train"], PHANTOM_CLASSES, a.size, a.batch_size, training=True,
                          augment=False, cache="memory")
        va = make_dataset(man[man.split == "val"], PHANTOM_CLASSES, a.size, a.batch_size, cache="memory")
        for _ in tr: pass   # fill the decode caches so neither path pays for JPEG/PNG decoding
        for _ in va: pass
        res = {}
        for name, fast in (("full_forward", False), ("cached_features", True)):
            keras.utils.set_random_seed(0)
            m = build_model(len(PHANTOM_CLASSES), a.size, weights=None, dense_units=512)
            timer = EpochTimer()
            t0 = time.perf_counter()
            h = train(m, tr, va, tmp / name, epochs=a.epochs, class_names=PHANTOM_CLASSES, cache_features=fast,
                      patience=100, lr_patience=100, callbacks=[timer], progress=False, plot=False)
            total = time.perf_counter() - t0
            res[name] = {"epoch_s": [round(t, 4) for t in timer.times],
                         "epoch_s_median": statistics.median(timer.times[1:] or timer.times),
                         "train_call_s": round(total, 2),
                         "val_accuracy_last": float(h["val_accuracy"].iloc[-1]),
                         "val_accuracy_best_val_loss": float(h.loc[h["val_loss"].idxmin(), "val_accuracy"])}
            if fast:   # the one-time feature pass, timed on its own with the same model
                t0 = time.perf_counter(); extract_features(m, tr, False); extract_features(m, va, False)
                res[name]["feature_pass_s"] = round(time.perf_counter() - t0, 3)
        ratio = res["full_forward"]["epoch_s_median"] / res["cached_features"]["epoch_s_median"]
        out = {"benchmark": "head epoch, frozen backbone: full forward vs cached features",
               "images": {"train": int((man.split == "train").sum()), "val": int((man.split == "val").sum()),
                          "size": a.size, "batch_size": a.batch_size}, "epochs": a.epochs,
               **res, "speedup_per_epoch": round(ratio, 1),
               "break_even_epochs": round(res["cached_features"]["feature_pass_s"] /
                                          max(1e-9, res["full_forward"]["epoch_s_median"] - res["cached_features"]["epoch_s_median"]), 2),
               "machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
                           "tensorflow": tf.__version__, "keras": keras.__version__,
                           "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]},
               "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1))
        print(json.dumps(out, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
