"""Grad-CAM speed: compiled (the tape and the map in one `tf.function`, traced once per model/layer/method) against
the same code run eagerly, batched (one tape per batch of 16) and per image (a one-image request), and against the
original notebook's style (new gradient model + new tape + model call per image), for the same images in one process.

    python bench/bench_gradcam.py [--n 32] [--size 128] [--batch 16] [--repeats 2]

Writes bench/results/bench_gradcam.json (numbers, ratios and machine info)."""
import argparse, json, os, platform, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path
import numpy as np, keras, tensorflow as tf
from brain_tumor_cls.files import write_json
from brain_tumor_cls.model import build_model
import brain_tumor_cls.gradcam as G
from brain_tumor_cls.gradcam import gradcam

_COMPILED = G._gradient_maps

def eager(flag:bool):
    "Switch `gradcam`'s gradient methods to the eager tape (True) or back to the compiled one (False)."
    G._gradient_maps = (lambda *a, **k: _COMPILED(*a, **k, compiled=False)) if flag else _COMPILED

def original_style(model, img, layer="mixed10", cls=None):
    "The original notebook's function, with its two correctness defects fixed (mixed10, logit) so that only speed differs."
    gm = keras.Model(model.inputs, [model.get_layer(layer).output, model.get_layer("logits").output])  # rebuilt per call
    with tf.GradientTape() as t:
        conv, pred = gm(img[None])
        cls = tf.argmax(pred[0]) if cls is None else cls
        loss = pred[:, cls]
    g = t.gradient(loss, conv)
    w = tf.reduce_mean(g, axis=(0, 1, 2))
    cam = tf.nn.relu(tf.reduce_sum(w * conv[0], -1))
    mx = tf.reduce_max(cam)
    return (cam / mx).numpy() if mx > 0 else cam.numpy()

def timed(f, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter(); out = f(); ts.append(time.perf_counter() - t0)
    return out, ts

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32); ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16); ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_gradcam.json"))
    a = ap.parse_args()
    load0 = os.getloadavg()
    keras.utils.set_random_seed(0)
    model = build_model(4, a.size, weights=None)
    x = np.random.default_rng(0).integers(0, 256, (a.n, a.size, a.size, 3)).astype(np.float32)
    # warm-up every path (the compiled one traces here; first eager calls allocate and pick kernels)
    gc = lambda xs: gradcam(model, xs, batch_size=a.batch, method="gradcam")
    one_by_one = lambda: np.stack([gc(x[i:i + 1])[0] for i in range(a.n)])
    gc(x[:a.batch]); original_style(model, x[0]); eager(True); gc(x[:a.batch]); eager(False)
    batched, tb = timed(lambda: gc(x), a.repeats)
    per_image, tp = timed(one_by_one, a.repeats)
    eager(True)
    eager_b, teb = timed(lambda: gc(x), a.repeats)
    eager_p, tep = timed(one_by_one, a.repeats)
    eager(False)
    orig, to = timed(lambda: np.stack([original_style(model, x[i]) for i in range(a.n)]), a.repeats)
    t = {"compiled_batched": tb, "compiled_per_image": tp, "eager_batched": teb, "eager_per_image": tep, "original_style": to}
    res = {
        "what": f"Grad-CAM of {a.n} images, InceptionV3 (weights=None) at {a.size} px, target mixed10 "
                f"({batched.shape[1]}x{batched.shape[2]}), class logit",
        "n_images": a.n, "image_size": a.size, "batch_size": a.batch, "repeats": a.repeats,
        "seconds": {k: min(v) for k, v in t.items()}, "all_seconds": t,
        "seconds_per_image": {k: min(v) / a.n for k, v in t.items()},
        "speedup_compiled_vs_eager_batched": min(teb) / min(tb),
        "speedup_compiled_vs_eager_per_image": min(tep) / min(tp),
        "speedup_vs_original_style": min(to) / min(tb),
        "max_abs_diff_compiled_vs_eager": float(max(np.abs(batched - eager_b).max(), np.abs(per_image - eager_p).max())),
        "max_abs_diff_vs_original_style": float(np.abs(batched - orig).max()),
        "load_avg_start": load0,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "load_avg_end": os.getloadavg(),
                    "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                    "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]},
        "note": "min over repeats; cores were shared with other jobs (see load_avg), so absolute times are noisy, the ratio less so",
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(a.out, res)
    print(json.dumps(res, indent=2))

if __name__ == "__main__":
    main()
