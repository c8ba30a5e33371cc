"""Grad-CAM speed: batched (one GradientTape per batch of 16, gradient model built once) against the original
notebook's style (new gradient model + new tape + model call per image), for the same 64 images in one process.

    python bench/bench_gradcam.py [--n 64] [--size 128] [--batch 16] [--repeats 2]

Writes bench/results/bench_gradcam.json (numbers, ratios and machine info)."""
import argparse, json, os, platform, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path
import numpy as np, keras, tensorflow as tf
from brain_tumor_cls.model import build_model
from brain_tumor_cls.gradcam import gradcam

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
    ap.add_argument("--n", type=int, default=64); ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16); ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_gradcam.json"))
    a = ap.parse_args()
    keras.utils.set_random_seed(0)
    model = build_model(4, a.size, weights=None)
    x = np.random.default_rng(0).integers(0, 256, (a.n, a.size, a.size, 3)).astype(np.float32)
    # warm-up both paths (first eager calls allocate and pick kernels)
    gradcam(model, x[:a.batch], batch_size=a.batch); original_style(model, x[0])
    batched, tb = timed(lambda: gradcam(model, x, batch_size=a.batch), a.repeats)
    per_cached, tc = timed(lambda: np.stack([gradcam(model, x[i:i + 1]) [0] for i in range(a.n)]), a.repeats)
    orig, to = timed(lambda: np.stack([original_style(model, x[i]) for i in range(a.n)]), a.repeats)
    res = {
        "what": f"Grad-CAM of {a.n} images, InceptionV3 (weights=None) at {a.size} px, target mixed10 "
                f"({batched.shape[1]}x{batched.shape[2]}), class logit",
        "n_images": a.n, "image_size": a.size, "batch_size": a.batch, "repeats": a.repeats,
        "seconds": {"batched": min(tb), "per_image_cached_model": min(tc), "original_style": min(to)},
        "all_seconds": {"batched": tb, "per_image_cached_model": tc, "original_style": to},
        "images_per_s": {"batched": a.n / min(tb), "original_style": a.n / min(to)},
        "speedup_vs_original_style": min(to) / min(tb),
        "speedup_vs_per_image_cached_model": min(tc) / min(tb),
        "max_abs_diff_vs_original_style": float(np.abs(batched - orig).max()),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "load_avg_1m_at_end": os.getloadavg()[0],
                    "python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                    "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]},
        "note": "min over repeats; cores were shared with other jobs (see load_avg), so absolute times are noisy, the ratio less so",
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(a.out).with_name(Path(a.out).name + ".tmp-bench")
    tmp.write_text(json.dumps(res, indent=2)); os.replace(tmp, a.out)
    print(json.dumps(res, indent=2))

if __name__ == "__main__":
    main()
