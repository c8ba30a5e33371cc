"""Batch prediction at the speed of the model: `predict.predict_files` end to end (files -> CSV, and -> CSV + Grad-CAM
overlay PNGs) against the bare model on the same images already decoded, same batch size, same process.

    nice -n 10 python bench/bench_predict.py [--n 1000] [--size 299] [--batch-size 32] [--modes plain,gradcam]

Model: InceptionV3 with random weights (4 classes) saved with `model.save_model`. Images: the first N JPEGs of
SARTAJ's Training folder (read only) when it is there, else phantoms generated at 512 px.
Baselines, timed after one warm-up batch (their best case):
  plain:   `model.predict(x, batch_size)` and the compiled calibrated-probability function predict uses, on decoded uint8;
  gradcam: `gradcam.gradcam` (its default method and layer; one compiled forward and backward pass that also
           returns the logits), on decoded uint8: what predict runs, without decoding files or drawing the overlays.
End to end, timed cold (model loading, tracing, decoding, CSV and PNG writing included): `predict_files(...)`.
Order per mode: baseline, end to end, baseline again (the two baselines are averaged: the load on this shared
machine drifts). The baselines run on the first --baseline-n (256) of the same decoded images: at a fixed input size
the model's cost per image does not depend on the content, and the machine's time goes to the end-to-end run. ratio = end-to-end images/s / the faster baseline's images/s. Target: >= 0.8.

Writes bench/results/bench_predict.json."""
import argparse, glob, json, os, platform, shutil, sys, tempfile, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path
import numpy as np

SARTAJ = "/work/shared/data/sartaj-brain-mri/Training"

def images(n, tmp):
    "The first `n` SARTAJ training JPEGs (sorted), or `n` phantoms at 512 px written to `tmp`; returns (files, source)."
    fs = sorted(glob.glob(f"{SARTAJ}/*/*.jpg"))
    if len(fs) >= n: return fs[:n], f"SARTAJ Training, first {n} JPEGs (sorted paths)"
    from brain_tumor_cls.phantom import make_phantom_dataset
    man = make_phantom_dataset(tmp/"phantoms", n_per_class=-(-n // 4), size=512, progress=False)
    return sorted(man["path"])[:n], f"{n} phantoms at 512 px"

def timed(f):
    t0 = time.perf_counter(); f(); return time.perf_counter() - t0

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000); ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--batch-size", type=int, default=32); ap.add_argument("--modes", default="plain,gradcam")
    ap.add_argument("--baseline-n", type=int, default=256, help="images of the baselines (the first of the same decoded images)")
    ap.add_argument("--out", default=str(Path(__file__).parent/"results"/"bench_predict.json"))
    a = ap.parse_args()
    load0 = os.getloadavg()
    import keras, tensorflow as tf
    from brain_tumor_cls import model as M, pipeline, predict as P
    from brain_tumor_cls import gradcam as G
    from brain_tumor_cls.files import write_json
    tmp = Path(tempfile.mkdtemp())
    try:
        keras.utils.set_random_seed(0)
        M.save_model(M.build_model(4, a.size, weights=None), tmp/"model.keras", ["glioma", "meningioma", "none", "pituitary"], a.size)
        files, source = images(a.n, tmp)
        x = np.stack([pipeline.preprocess_image(f, a.size).numpy() for f in files])      # decoded once, uint8
        m, meta = P.load_model_safely(tmp/"model.keras")
        res = {"what": __doc__.split("\n\n")[0], "images": source, "n_images": len(files), "image_size": a.size,
               "batch_size": a.batch_size, "baseline_n_images": min(a.baseline_n, len(files)), "model": "InceptionV3, random weights, 4 classes, saved with model.save_model",
               "load_avg_at_start": load0}
        fn = P._probability_fn(m, 1.0)
        for mode in a.modes.split(","):
            if mode == "gradcam":   # the model's work with maps: gradcam's compiled pass (default method), logits included
                base = {"compiled": lambda b: G.gradcam(m, np.asarray(b), return_details=True)[0]}
            else: base = {"compiled": lambda b: fn(b)}
            if mode == "plain": base["model_predict"] = lambda b: m.predict(b, batch_size=a.batch_size, verbose=0)
            def baselines():
                out, xb = {}, x[:a.baseline_n]
                for k, f in base.items():
                    f(xb[:a.batch_size]); t0 = time.perf_counter()
                    for s in range(0, len(xb), a.batch_size): [np.asarray(t) for t in tf.nest.flatten(f(xb[s:s + a.batch_size]))]
                    out[k] = len(xb) / (time.perf_counter() - t0)
                return out
            l0 = os.getloadavg(); b1 = baselines()
            l1 = os.getloadavg()
            gdir = tmp/f"cams-{mode}" if mode == "gradcam" else None
            dt = timed(lambda: P.predict_files(tmp/"model.keras", files, tmp/f"p-{mode}.csv", gdir, a.batch_size, progress=False))
            l2 = os.getloadavg(); b2 = baselines(); l3 = os.getloadavg()
            b = {k: (b1[k] + b2[k]) / 2 for k in b1}
            e2e = len(files) / dt
            res[mode] = {"baseline_img_s": b, "baseline_img_s_before": b1, "baseline_img_s_after": b2,
                         "end_to_end_img_s": e2e, "end_to_end_s": dt, "ratio": e2e / max(b.values()),
                         "ratio_vs": max(b, key=b.get), "target": 0.8,
                         "load_avg": {"before_baseline": l0, "before_end_to_end": l1, "after_end_to_end": l2, "end": l3}}
            print(mode, json.dumps(res[mode]), flush=True)
            write_json(a.out, dict(res, complete=False, machine=machine()))   # a partial result survives an interrupted run
        res.update(complete=True, machine=machine())
        write_json(a.out, res)
        print("wrote", a.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

def machine():
    import keras, tensorflow as tf
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            "note": "2 CPU cores shared by several agents: see load_avg", "load_avg_at_end": os.getloadavg()}

if __name__ == "__main__":
    main()
