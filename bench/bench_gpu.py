"""Training throughput of InceptionV3 (whole network, BatchNorm learning) in images/s: float32 vs mixed precision, with and
without XLA, fed synthetic tensors vs the real tf.data pipeline (phantom PNGs decoded, resized, augmented online).

Each variant: one epoch of `--warmup` steps (tracing, XLA compilation), then one timed epoch of `--steps` steps.
The input pipeline is not the bottleneck when the model fed by the real pipeline reaches >= 80% of the same model
fed synthetic tensors. Uses `auto_strategy` (MirroredStrategy when several GPUs are visible; batch = per replica).
Run: `bench/bench_gpu.sh` (GPU, 299 px, under 10 minutes) or `bench/bench_gpu.sh --smoke` (CPU, 75 px, a small CNN,
a few steps; checks that the script works, the numbers mean nothing).
"""
import argparse, contextlib, json, os, platform, shutil, subprocess, tempfile, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path

import numpy as np
import keras
import tensorflow as tf

from brain_tumor_cls.files import write_json
from brain_tumor_cls.model import build_model, set_trainable
from brain_tumor_cls.phantom import make_phantom_dataset, PHANTOM_CLASSES
from brain_tumor_cls.pipeline import make_dataset
from brain_tumor_cls.train import auto_strategy, global_batch_size, make_loss, make_optimizer


class EpochTimer(keras.callbacks.Callback):
    def __init__(self): super().__init__(); self.times = []
    def on_epoch_begin(self, epoch, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None): self.times.append(time.perf_counter() - self.t)


@contextlib.contextmanager
def dtype_policy(name):
    "Build under `name` even on a CPU (build_model itself refuses float16 without a GPU; the smoke run wants the code path)."
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try: yield
    finally: keras.config.set_dtype_policy(old)


def synthetic(size, batch):
    "One fixed batch of random uint8 images, repeated: the model's speed without any input work."
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    y = (np.arange(batch) % len(PHANTOM_CLASSES)).astype("int32")
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def pipeline(manifest, size, batch, cache):
    "The training pipeline `btc` uses (shuffle, decode, resize, online augmentation), repeated."
    return make_dataset(manifest, PHANTOM_CLASSES, size, batch, training=True, augment=True,
                        cache="memory" if cache else None).repeat()


def small_model(size):
    "A few conv layers with BatchNorm, for --smoke: InceptionV3's backward pass takes minutes to compile on a loaded CPU."
    L = keras.layers
    inp = keras.Input((size, size, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inp)
    for width in (8, 16):
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(width, 3, strides=2, use_bias=False)(x)))
    x = L.Dense(len(PHANTOM_CLASSES), dtype="float32")(L.GlobalAveragePooling2D()(x))
    return keras.Model(inp, L.Activation("softmax", dtype="float32")(x))


def measure(strategy, ds, size, mixed, xla, steps, warmup, model_name="inception"):
    "Images per second of one timed epoch, after a warm-up epoch that traces (and XLA-compiles) the step."
    keras.utils.set_random_seed(0)
    with strategy.scope(), dtype_policy("mixed_float16" if mixed else "float32"):
        if model_name == "small": model = small_model(size)
        else: model = set_trainable(build_model(len(PHANTOM_CLASSES), size, weights=None, dense_units=512), 0, train_batchnorm=True)
        model.compile(optimizer=make_optimizer("adam", 1e-4, loss_scale=mixed), loss=make_loss(0.1), jit_compile=xla,
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    timer = EpochTimer()
    t0 = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=warmup, verbose=0, callbacks=[timer])
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
    return {"warmup_s": round(timer.times[0], 2), "timed_s": round(timer.times[1], 3), "steps": steps,
            "total_s": round(time.perf_counter() - t0, 1), "_time": timer.times[1]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--batch-size", type=int, default=64, help="images per replica (default 64)")
    ap.add_argument("--steps", type=int, default=40, help="timed steps per variant (default 40)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (tracing, XLA compilation)")
    ap.add_argument("--images", type=int, default=512, help="phantom images for the real pipeline (default 512)")
    ap.add_argument("--model", choices=["inception", "small"], default=None,
                    help="InceptionV3 (default) or a small CNN (the default with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="tiny run on any machine: 75 px, batch 2, 2 steps, 16 images, small CNN")
    ap.add_argument("--out", default=None, help="result JSON (default bench/results/bench_gpu[_smoke].json)")
    a = ap.parse_args()
    if a.smoke: a.size, a.batch_size, a.steps, a.warmup, a.images = 75, 2, 2, 1, 16
    a.model = a.model or ("small" if a.smoke else "inception")
    out = Path(a.out or Path(__file__).parent/"results"/f"bench_gpu{'_smoke' if a.smoke else ''}.json")
    load0, t_start = os.getloadavg(), time.time()
    tf.get_logger().setLevel("ERROR")  # each variant is a new model: Keras' "retracing" warnings say nothing here
    strategy, announcement = auto_strategy(a.batch_size)
    print(announcement, flush=True)
    gpus = tf.config.list_physical_devices("GPU")
    bs = global_batch_size(a.batch_size, strategy)
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu-"))
    try:
        man = make_phantom_dataset(tmp/"phantom", n_per_class=max(1, a.images // len(PHANTOM_CLASSES)), size=a.size, seed=0,
                                   progress=False)
        variants = [("synthetic", False, False), ("synthetic", True, False), ("synthetic", False, True), ("synthetic", True, True)]
        res = {}
        for feed, mixed, xla in variants:
            name = f"{feed}_{'mixed16' if mixed else 'float32'}_{'xla' if xla else 'noxla'}"
            res[name] = measure(strategy, synthetic(a.size, bs), a.size, mixed, xla, a.steps, a.warmup, a.model)
            print(name, res[name]["timed_s"], "s", flush=True)
        best = min(res, key=lambda k: res[k]["_time"])
        _, mixed, xla = best.split("_")
        for cache in (True, False):
            name = f"pipeline{'_cached' if cache else '_decode'}_{mixed}_{xla}"
            res[name] = measure(strategy, pipeline(man, a.size, bs, cache), a.size, mixed == "mixed16", xla == "xla", a.steps,
                                a.warmup, a.model)
            print(name, res[name]["timed_s"], "s", flush=True)
        for r in res.values(): r["images_per_s"] = round(r["steps"] * bs / r.pop("_time"), 1)
        base = res["synthetic_float32_noxla"]["images_per_s"]
        for r in res.values(): r["speedup_vs_float32_noxla"] = round(r["images_per_s"] / base, 2)
        ratios = {k: round(res[k]["images_per_s"] / res[best]["images_per_s"], 3) for k in res if k.startswith("pipeline")}
        result = {
            "benchmark": "training throughput (whole network): precision x XLA, synthetic vs real input pipeline",
            "model": "InceptionV3" if a.model == "inception" else "small CNN (smoke)",
            "smoke": a.smoke, "image_size": a.size, "batch_per_replica": a.batch_size, "global_batch": bs,
            "strategy": announcement, "variants": res, "fastest_synthetic": best,
            "pipeline_over_synthetic": ratios,
            "input_pipeline_is_bottleneck": {k: v < 0.8 for k, v in ratios.items()},
            "note": "--smoke: a small CNN, float16 and XLA forced on whatever the device; the numbers only show that the script runs"
                    if a.smoke else "",
            "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
                        "tensorflow": tf.__version__, "keras": keras.__version__, "gpus": [d.name for d in gpus],
                        "gpu_names": _gpu_names(), "load_avg_start": load0, "load_avg_end": os.getloadavg()},
            "wall_s": round(time.time() - t_start, 1), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(out, result, indent=1)
        print(json.dumps({k: result[k] for k in ("fastest_synthetic", "pipeline_over_synthetic", "wall_s")}, indent=1))
        print("images/s:", {k: v["images_per_s"] for k, v in res.items()})
        print("wrote", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _gpu_names():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return []


if __name__ == "__main__":
    main()
