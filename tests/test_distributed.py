"""Data-parallel training with TensorFlow's own MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1.

Each worker runs `worker()` below (what `btc train` will do under `TF_CONFIG`): `auto_strategy()` first, the model built
in the strategy's scope, then `train(..., strategy=strategy)`. Checked: both exit 0, the chief's run folder holds the
finished run, both workers end with identical weights, and the non-chief wrote nothing into the run folder (an audit
hook records every file it opens for writing, creates, renames or removes) and removed its temporary folder.
A second test kills the non-chief mid-run, restarts both, and checks the job resumes from the chief's backup.
"""
import json, os, socket, subprocess, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

TESTS = Path(__file__).parent
WRITE_EVENTS = ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.symlink", "os.link", "shutil.rmtree",
                "os.truncate", "os.chmod")


def _watch_writes(folder):
    "Start recording every write-like file operation this process makes inside `folder`; returns the (growing) list."
    folder, seen = os.path.realpath(folder), []
    def inside(p):
        try: return isinstance(p, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(p)).startswith(folder)
        except (TypeError, ValueError): return False
    def hook(event, args):
        if event == "open" and args and inside(args[0]):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            if (mode and any(c in mode for c in "wax+")) or (flags and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                seen.append(f"{event} {args[0]}")
        elif event in WRITE_EVENTS and any(inside(a) for a in args[:2]):
            seen.append(f"{event} {args[0]}")
    sys.addaudithook(hook)
    return seen


def small_model(n_classes):
    """A small CNN laid out like `build_model`'s (input scaling, a `mixed10` block with BatchNorm, `avg_pool`, the head).

    Under MultiWorkerMirroredStrategy every variable's initial value is broadcast from the chief as it is created, one
    eager collective each: InceptionV3's ~470 variables take minutes on a shared 2-core machine (set
    BTC_DIST_MODEL=inception to run the test with it); the distribution code paths are the same."""
    import keras
    L = keras.layers
    inp = keras.Input((75, 75, 3), name="image")
    x = L.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inp)
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, strides=2, use_bias=False)(x)))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, strides=2, use_bias=False)(x)))
    x = L.Activation("linear", name="mixed10")(x)
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    x = L.Dropout(0.5, name="head_dropout")(L.Dense(16, activation="relu", name="head_dense")(x))
    return keras.Model(inp, L.Activation("softmax", name="probs", dtype="float32")(L.Dense(n_classes, name="logits", dtype="float32")(x)))


def worker(manifest_csv, run_dir, weights_out, epochs="1", fine_tune_epochs="1", slow="0"):
    "One worker of the job (TF_CONFIG from the environment): strategy first, the model in its scope, then `train`."
    t0 = time.time()
    from brain_tumor_cls.train import auto_strategy, global_batch_size, is_chief, train
    strategy, announcement = auto_strategy(batch_size=4)
    print(announcement, flush=True)
    writes = None if is_chief() else _watch_writes(run_dir)
    import keras
    from brain_tumor_cls.files import read_csv
    from brain_tumor_cls.model import build_model
    from brain_tumor_cls.phantom import PHANTOM_CLASSES
    from brain_tumor_cls.pipeline import make_dataset, split
    man = split(read_csv(manifest_csv), val_frac=0.25, test_frac=0.0, seed=0)
    bs = global_batch_size(4, strategy)
    data = {part: make_dataset(man[man.split == part], PHANTOM_CLASSES, 75, bs, training=part == "train", augment=False,
                               cache="memory") for part in ("train", "val")}
    keras.utils.set_random_seed(int(os.environ.get("WORKER_SEED", "0")))  # different seeds: the chief's weights must win
    with strategy.scope():
        model = (build_model(len(PHANTOM_CLASSES), 75, weights=None, dense_units=16) if os.environ.get("BTC_DIST_MODEL") == "inception"
                 else small_model(len(PHANTOM_CLASSES)))
    print(f"model built in the strategy's scope ({time.time() - t0:.0f} s)", flush=True)
    class Slow(keras.callbacks.Callback):  # widens the window in which the test kills a worker
        def on_epoch_end(self, epoch, logs=None): time.sleep(float(slow))
    fine_tune_from = "mixed10" if os.environ.get("BTC_DIST_MODEL") == "inception" else 0  # the small model: every layer
    h = train(model, data["train"], data["val"], run_dir, epochs=int(epochs), fine_tune_epochs=int(fine_tune_epochs),
              fine_tune_from=fine_tune_from, train_batchnorm=True, cache_features=False, class_names=PHANTOM_CLASSES,
              patience=100, strategy=strategy, callbacks=[Slow()], progress=False, plot=False)
    np.savez(weights_out, *model.get_weights())
    if writes is not None: Path(str(weights_out) + ".writes").write_text("\n".join(writes))
    print(f"{'chief' if is_chief() else 'worker'}: trained {len(h)} epochs ({time.time() - t0:.0f} s), "
          f"val_loss {h['val_loss'].round(4).tolist()}", flush=True)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks: s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks: s.close()
    return ports


def _start_workers(tmp, manifest_csv, run_dir, *args, ports):
    "Start the two workers; returns their Popen objects (stdout+stderr in tmp/worker{i}.log)."
    procs = []
    for i in range(2):
        (tmp/f"tmp{i}").mkdir(exist_ok=True)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp/f"tmp{i}"),
                   WORKER_SEED=str(i), KERAS_HOME="/nonexistent-keras-home",
                   TF_CONFIG=json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": i}}))
        # os._exit once the work is done and flushed: TensorFlow's teardown of the distributed tf.data iterators at
        # interpreter exit waits on their threads and took from 20 s to several minutes on this loaded 2-core machine
        code = (f"import os, sys; sys.path.insert(0, {str(TESTS)!r}); from test_distributed import worker; "
                "worker(*sys.argv[1:]); sys.stdout.flush(); sys.stderr.flush(); os._exit(0)")
        log = open(tmp/f"worker{i}.log", "a")
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(manifest_csv), str(run_dir), str(tmp/f"weights{i}.npz"), *args],
                                      env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp))
    return procs


def _wait(procs, timeout):
    t0 = time.time()
    try:
        while any(p.poll() is None for p in procs) and time.time() - t0 < timeout: time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None: p.kill(); p.wait()
    return [p.returncode for p in procs]


def _lines(path):
    "The log's own lines (TensorFlow's native log lines and absl's preamble left out)."
    noise = ("WARNING: All log messages", "I0000", "W0000", "E0000")
    return [l for l in Path(path).read_text().splitlines() if l.strip() and not l.startswith(noise)]


@pytest.fixture
def job(tmp_path, phantom):
    from brain_tumor_cls.files import write_csv
    _, manifest = phantom(n_per_class=4, size=75)
    write_csv(tmp_path/"manifest.csv", manifest)
    return tmp_path, tmp_path/"manifest.csv", tmp_path/"run"


def test_two_workers(job):
    tmp, manifest_csv, run = job
    t0 = time.time()
    codes = _wait(_start_workers(tmp, manifest_csv, run, ports=_free_ports(2)), timeout=300)
    took = time.time() - t0
    chief_log = _lines(tmp/"worker0.log")
    print(f"\ntwo workers on 127.0.0.1: {took:.1f} s; the chief's log:\n  " + "\n  ".join(chief_log))
    assert codes == [0, 0], "\n".join(f"--- worker {i}\n" + "\n".join(_lines(tmp/f"worker{i}.log")[-40:]) for i in range(2))
    assert chief_log[0] == "MultiWorkerMirroredStrategy: 2 workers, 2 replicas in sync; global batch 8"
    assert sorted(p.name for p in run.iterdir()) == ["history.csv", "log.csv", "model.keras", "state.json"]
    assert json.loads((run/"state.json").read_text())["phase"] == "done"
    hist = pd.read_csv(run/"history.csv")
    assert hist["epoch"].tolist() == [0, 1] and hist["phase"].tolist() == ["head", "finetune"]
    w0, w1 = np.load(tmp/"weights0.npz"), np.load(tmp/"weights1.npz")
    assert len(w0.files) == len(w1.files) > 10
    differ = [k for k in w0.files if not np.array_equal(w0[k], w1[k])]
    assert not differ, f"{len(differ)} of {len(w0.files)} weight arrays differ between the workers"
    assert (tmp/"weights1.npz.writes").read_text() == "", "the non-chief wrote into the run folder:\n" + (tmp/"weights1.npz.writes").read_text()
    assert list((tmp/"tmp1").glob("btc-worker-*")) == []   # the non-chief's temporary folder is gone


def test_killed_worker_resumes(job):
    tmp, manifest_csv, run = job
    ports = _free_ports(2)
    procs = _start_workers(tmp, manifest_csv, run, "4", "0", "2", ports=ports)
    meta = run/"backup"/"head"/"training_metadata.json"
    t0 = time.time()
    while time.time() - t0 < 240 and all(p.poll() is None for p in procs):
        try:
            if json.loads(meta.read_text())["epoch"] >= 1: break
        except (OSError, ValueError): pass
        time.sleep(0.1)
    assert all(p.poll() is None for p in procs), "finished or failed before the kill:\n" + "\n".join(_lines(tmp/"worker0.log")[-30:])
    procs[1].kill(); procs[1].wait()
    _wait(procs, timeout=15)   # the chief fails at its next all-reduce, or is stopped here as a cluster manager would
    backed_up = json.loads(meta.read_text())["epoch"]
    assert not (run/"model.keras").exists() and 1 <= backed_up < 4
    t0 = time.time()
    codes = _wait(_start_workers(tmp, manifest_csv, run, "4", "0", "0", ports=_free_ports(2)), timeout=300)
    print(f"\nrestart after killing the non-chief at epoch {backed_up}: {time.time() - t0:.1f} s")
    assert codes == [0, 0], "\n".join(_lines(tmp/"worker0.log")[-40:] + ["---"] + _lines(tmp/"worker1.log")[-40:])
    epochs = pd.read_csv(run/"log.csv")["epoch"].tolist()
    assert epochs.count(0) == 1 and sorted(set(epochs)) == [0, 1, 2, 3], epochs   # resumed, not restarted from epoch 0
    w0, w1 = np.load(tmp/"weights0.npz"), np.load(tmp/"weights1.npz")
    assert all(np.array_equal(w0[k], w1[k]) for k in w0.files)


def btc_worker(*argv):
    "One worker running `btc` itself (TF_CONFIG from the environment), with `small_model` in place of InceptionV3."
    import brain_tumor_cls.run as R
    from brain_tumor_cls.cli import main
    R._build = lambda run, classes: small_model(len(classes))
    sys.exit(main(list(argv)))


def _start_btc(tmp, argv, ports, tag):
    "Start two `btc` workers with `argv`; returns their Popen objects (output in tmp/{tag}{i}.log)."
    procs = []
    for i in range(2):
        (tmp/f"tmp{i}").mkdir(exist_ok=True)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp/f"tmp{i}"),
                   KERAS_HOME="/nonexistent-keras-home",
                   TF_CONFIG=json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": i}}))
        code = f"import sys; sys.path.insert(0, {str(TESTS)!r}); from test_distributed import btc_worker; btc_worker(*sys.argv[1:])"
        procs.append(subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stdout=open(tmp/f"{tag}{i}.log", "w"),
                                      stderr=subprocess.STDOUT, cwd=tmp))
    return procs


def test_btc_train_on_two_workers_agrees_whether_to_train(tmp_path, phantom):
    """`btc train` under TF_CONFIG, offline balancing included (TensorFlow work before the train stage); then the same
    command again: the chief has nothing to train, and the other worker must learn it instead of waiting for a cluster."""
    images, _ = phantom(n_per_class=4, size=75)
    run = tmp_path/"run"
    argv = ["train", str(images), "--out", str(run), "--image-size", "75", "--epochs", "1", "--fine-tune", "0",
            "--batch-size", "4", "--target-per-class", "6", "--patience", "5"]
    t0 = time.time()
    codes = _wait(_start_btc(tmp_path, argv, _free_ports(2), "first"), timeout=300)
    took, chief = time.time() - t0, _lines(tmp_path/"first0.log")
    print(f"\nbtc train, two workers: {took:.1f} s; the chief's log:\n  " + "\n  ".join(chief))
    assert codes == [0, 0], "\n".join(chief[-30:] + ["---"] + _lines(tmp_path/"first1.log")[-30:])
    assert any("MultiWorkerMirroredStrategy: 2 workers, 2 replicas in sync; global batch 8" in l for l in chief)
    assert (run/"model.keras").is_file() and (run/"augmented.csv").is_file()
    assert list((tmp_path/"tmp1").glob("btc-worker-*")) == []          # the other worker's folder is gone
    t0 = time.time()
    codes = _wait(_start_btc(tmp_path, argv, _free_ports(2), "again"), timeout=120)
    again = [_lines(tmp_path/f"again{i}.log") for i in range(2)]
    assert codes == [0, 0], "\n".join(again[0][-20:] + ["---"] + again[1][-20:])
    assert any(l.startswith("up to date:") and "train" in l for l in again[0])
    assert any("the chief has nothing to train" in l for l in again[1])
    print(f"the same command again: {time.time() - t0:.1f} s")


def test_demo_under_tf_config_is_refused(btc, tmp_path):
    "Every worker would write the demo's phantoms into the chief's folder: refused before anything is written."
    tfc = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}})
    r = btc("demo", "--out", tmp_path/"demo", env={"TF_CONFIG": tfc})
    assert r.returncode == 2 and "unset TF_CONFIG" in r.stderr and not (tmp_path/"demo").exists()
