"""Input-pipeline speed on the real data (`sartaj-brain-mri`, 3,264 JPEGs) at 299 px, in one process:

  (a) the original notebook's pipeline: shuffle paths, map(decode + resize + /255 + random
      flip/flip/brightness/contrast), batch, prefetch — all work repeated every epoch;
  (b) `make_dataset(training=True, cache=...)`, first epoch (decode + resize + fill the cache);
  (c) the same dataset, later epochs (cached uint8 images, only the light augmentation per batch).

Targets (issue 4): (c) >= 3x (a), (b) >= 0.8x (a). Measurements are paired per round, the order
alternating (the cores may be shared); the JSON keeps every epoch's wall and CPU rate and reports
medians of the per-round ratios.

    python bench/bench_pipeline.py [--data DIR] [--size 299] [--rounds 3] [--limit N] [--cache memory|file]

Writes bench/results/bench_pipeline.json (numbers, ratios, machine info)."""
import argparse, gc, json, os, platform, statistics, tempfile, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
import keras

from brain_tumor_cls.pipeline import class_names, make_dataset

AUTOTUNE = tf.data.AUTOTUNE


def original_dataset(paths, labels, size, batch_size):
    "The original notebook's train_ds (section 4-5), with the one fix it needs to run in a map: expand_animations=False."
    def preprocess_image(path, target_size=(size, size), augment=True):
        img = tf.io.read_file(path)
        img = tf.image.decode_image(img, channels=3, expand_animations=False)
        img = tf.image.resize(img, target_size)
        img = tf.cast(img, tf.float32) / 255.0
        if augment:
            img = tf.image.random_flip_left_right(img)
            img = tf.image.random_flip_up_down(img)
            img = tf.image.random_brightness(img, max_delta=0.1)
            img = tf.image.random_contrast(img, 0.9, 1.1)
        return tf.clip_by_value(img, 0.0, 1.0)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths))
    ds = ds.map(lambda x, y: (preprocess_image(x, augment=True), y), num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def epoch_rate(ds):
    "Images per wall second and per CPU second (this process) for one full pass over `ds`."
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    for x, _ in ds: n += int(x.shape[0])
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0), n


def main():
    here = Path(__file__).resolve()
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("BTC_DATA") or str(here.parents[2] / "shared/data/sartaj-brain-mri"))
    ap.add_argument("--size", type=int, default=299); ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4); ap.add_argument("--later-epochs", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (0 = all)")
    ap.add_argument("--cache", default="memory", choices=["memory", "file"])
    ap.add_argument("--out", default=str(here.parent / "results" / "bench_pipeline.json"))
    a = ap.parse_args()
    root = Path(a.data)
    if not root.is_dir(): raise SystemExit(f"dataset not found at {root} (use --data or BTC_DATA)")
    rows = [{"path": p.as_posix(), "class": p.parent.name} for p in sorted(root.glob("*/*/*"))
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    m = pd.DataFrame(rows)
    if a.limit: m = m.sample(n=min(a.limit, len(m)), random_state=0).reset_index(drop=True)
    names = class_names(m)
    paths = m["path"].tolist(); labels = np.array([names.index(c) for c in m["class"]], np.int32)
    for p in paths: Path(p).read_bytes()            # warm the OS page cache for every variant alike
    load0 = os.getloadavg()
    rates = {"a_original": [], "b_first_epoch": [], "c_later_epochs": []}
    cpu_rates = {k: [] for k in rates}
    ratio_b, ratio_c = [], []
    tmp = tempfile.TemporaryDirectory(prefix="bench_pipeline_")
    def run_a():
        w, c, n = epoch_rate(original_dataset(paths, labels, a.size, a.batch))
        rates["a_original"].append(w); cpu_rates["a_original"].append(c); return w, n
    def run_bc(r):
        cache = "memory" if a.cache == "memory" else str(Path(tmp.name) / f"cache_r{r}")
        ds = make_dataset(m, names, a.size, a.batch, training=True, cache=cache, seed=r)
        w, c, n = epoch_rate(ds); rates["b_first_epoch"].append(w); cpu_rates["b_first_epoch"].append(c)
        later = []
        for _ in range(a.later_epochs):
            wc, cc, nc = epoch_rate(ds); later.append(wc)
            rates["c_later_epochs"].append(wc); cpu_rates["c_later_epochs"].append(cc)
            assert nc == n
        del ds; gc.collect()
        return w, statistics.median(later), n
    for r in range(a.rounds):   # paired rounds; the order alternates so that load drift cancels
        if r % 2 == 0: wa, n = run_a(); wb, wc, nb = run_bc(r)
        else: wb, wc, nb = run_bc(r); wa, n = run_a()
        assert n == nb == len(paths), (n, nb, len(paths))
        ratio_b.append(wb / wa); ratio_c.append(wc / wa)
        print(f"round {r}: a {wa:.0f} img/s, b {wb:.0f} img/s, c {wc:.0f} img/s; b/a {ratio_b[-1]:.2f}, "
              f"c/a {ratio_c[-1]:.2f}; load {os.getloadavg()[0]:.1f}", flush=True)
    tmp.cleanup()
    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu_rates.items()}
    res = {
        "what": f"images/s over full epochs of {len(paths)} images from {root.name} at {a.size} px, batch {a.batch}, "
                f"one process; make_dataset(training=True, cache={a.cache!r}) incl. light augmentation",
        "n_images": len(paths), "image_size": a.size, "batch_size": a.batch, "rounds": a.rounds,
        "later_epochs_per_round": a.later_epochs, "cache": a.cache,
        "images_per_s_median": med, "images_per_s_all": rates,
        "images_per_cpu_s_median": cpu_med, "images_per_cpu_s_all": cpu_rates,
        "ratios": {"c_later_over_a_original": statistics.median(ratio_c),
                   "b_first_over_a_original": statistics.median(ratio_b)},
        "ratios_per_round": {"c_later_over_a_original": ratio_c, "b_first_over_a_original": ratio_b},
        "ratios_cpu": {"c_later_over_a_original": cpu_med["c_later_epochs"] / cpu_med["a_original"],
                       "b_first_over_a_original": cpu_med["b_first_epoch"] / cpu_med["a_original"]},
        "targets": {"c_later_over_a_original": ">= 3", "b_first_over_a_original": ">= 0.8"},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "load_avg_1m_start_end": [load0[0], os.getloadavg()[0]],
                    "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                    "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]},
        "note": "cores shared with other work while measuring: ratios are medians of per-round ratios (a and b/c "
                "back to back, order alternating); images_per_cpu_s counts this process's CPU time, which is less "
                "sensitive to the other load than wall time",
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: res[k] for k in ("images_per_s_median", "ratios", "ratios_cpu")}, indent=2))


if __name__ == "__main__":
    main()
