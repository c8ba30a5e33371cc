"Tests of `brain_tumor_cls.train`: resume after SIGKILL (and what a finished run keeps), fast path == slow path, epochs across a resumed phase 1, class-list checks."
import json, os, signal, subprocess, sys, textwrap, time, zipfile
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import keras
import tensorflow as tf

from brain_tumor_cls.model import build_model, load_model, HEAD_LAYERS
from brain_tumor_cls.train import train, class_weights_for, has_random_ops, head_model

S = 75


def tiny_data(n=16, n_classes=2, seed=0):
    "Images whose class is their brightness, so the head can learn it."
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = (rng.uniform(0, 80, (n, S, S, 3)) + 150 * y[:, None, None, None] / max(1, n_classes - 1)).astype("uint8")
    return x, y.astype("int32")


def ds_of(x, y, bs=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(bs)


JOB = textwrap.dedent("""
    import os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, keras, tensorflow as tf
    from brain_tumor_cls.model import build_model
    from brain_tumor_cls.train import train
    rng = np.random.default_rng(0)
    y = (np.arange(16) % 2).astype("int32")
    x = (rng.uniform(0, 80, (16, 75, 75, 3)) + 150 * y[:, None, None, None]).astype("uint8")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    keras.utils.set_random_seed(0)
    model = build_model(2, 75, weights=None, dense_units=8)
    class Slow(keras.callbacks.Callback):   # widen the window in which the parent kills us
        def on_epoch_end(self, epoch, logs=None): time.sleep(1.5)
    train(model, ds, ds, sys.argv[1], epochs=6, class_names=["a", "b"], cache_features=True,
          patience=100, callbacks=[Slow()], progress=False, plot=False)
    print("DONE", flush=True)
""")


def _epochs(log):
    return pd.read_csv(log)["epoch"].tolist() if log.exists() and log.stat().st_size else []


def _check_final_name(run):
    "model.keras, whenever it exists, is a complete archive (never half-written)."
    p = run / "model.keras"
    if p.exists():
        with zipfile.ZipFile(p) as z:
            assert z.testzip() is None and "brain_tumor_cls.json" in z.namelist()


def test_sigkill_then_resume(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", JOB, str(run)]
    log, meta = run / "log.csv", run / "backup" / "head" / "training_metadata.json"
    def backed_up():   # epochs whose end-of-epoch backup is complete (written atomically)
        try: return json.loads(meta.read_text())["epoch"]
        except (OSError, ValueError): return 0
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    t0 = time.time()
    while p.poll() is None and backed_up() < 1 and time.time() - t0 < 150:
        _check_final_name(run); time.sleep(0.05)
    assert p.poll() is None, "training finished (or crashed) before it could be killed:\n" + p.stdout.read().decode()[-2000:]
    p.send_signal(signal.SIGKILL); p.wait()
    resume_at, done_before = backed_up(), _epochs(log)
    assert 1 <= resume_at < 6 and done_before[:resume_at] == list(range(resume_at)), (resume_at, done_before)
    assert not (run / "model.keras").exists()

    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while p.poll() is None:
        _check_final_name(run); time.sleep(0.05)
    out = p.stdout.read().decode()
    assert p.returncode == 0 and "DONE" in out, out[-3000:]
    epochs = _epochs(log)
    # resumed: the second run's first epoch is the first one not backed up, not epoch 0
    assert epochs[len(done_before)] == resume_at, (resume_at, done_before, epochs)
    assert epochs.count(0) == 1 and sorted(set(epochs)) == list(range(6)), epochs
    assert len(epochs) - 6 <= 1   # at most the epoch in flight at the kill is logged twice
    hist = pd.read_csv(run / "history.csv")
    assert hist["epoch"].tolist() == list(range(6)) and set(hist["phase"]) == {"head"}
    _check_final_name(run)
    model, meta = load_model(run / "model.keras")
    assert meta == {"class_names": ["a", "b"], "image_size": 75, "temperature": 1.0}
    assert model.predict(np.zeros((1, 75, 75, 3), "float32"), verbose=0).shape == (1, 2)
    assert not list(run.glob("*.tmp-*"))
    # the resumable state (backups with optimizer variables, best checkpoints, after_head) is gone with the run done
    assert sorted(p.name for p in run.iterdir()) == ["history.csv", "log.csv", "model.keras", "state.json"]


def test_fast_path_trains_the_same_model(tmp_path):
    x, y = tiny_data(24, 3)
    weights = {}
    for fast in (False, True):
        keras.utils.set_random_seed(1)
        m = build_model(3, S, weights=None, dense_units=16, dropout=0.5)
        hist = train(m, ds_of(x, y), ds_of(x, y), tmp_path / f"run_{fast}", epochs=3, class_names=list("abc"),
                     cache_features=fast, shuffle=False, class_weight="balanced", progress=False, plot=False)
        assert json.loads((tmp_path / f"run_{fast}" / "state.json").read_text())["fast_path"] is fast
        weights[fast] = ([w.copy() for w in head_model(m).get_weights()], hist)
    for a, b in zip(weights[False][0], weights[True][0]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(weights[False][1]["val_loss"], weights[True][1]["val_loss"], rtol=1e-3)


def test_resumed_head_phase_then_finetune(tmp_path):
    "Phase 1 on the full model interrupted and resumed, then phase 2: its epochs follow phase 1's, none repeated."
    x, y = tiny_data(16, 2)
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1: raise RuntimeError("interrupted")
    keras.utils.set_random_seed(0)
    m = build_model(2, S, weights=None, dense_units=8)
    kw = dict(epochs=3, class_names=["a", "b"], cache_features=False, patience=100, progress=False, plot=False)
    with pytest.raises(RuntimeError, match="interrupted"):
        train(m, ds_of(x, y), ds_of(x, y), tmp_path / "run", callbacks=[Interrupt()], **kw)
    h = train(m, ds_of(x, y), ds_of(x, y), tmp_path / "run", fine_tune_epochs=1, fine_tune_from="head_dense", **kw)
    # Keras keeps the epoch BackupAndRestore set on the model; phase 2 would restart at epoch 2 and log it twice
    assert _epochs(tmp_path / "run" / "log.csv") == [0, 1, 2, 3]
    assert h["phase"].tolist() == ["head"] * 3 + ["finetune"]


def test_mismatched_classes(tmp_path):
    x, y = tiny_data(8, 2)
    keras.utils.set_random_seed(0)
    m = build_model(2, S, weights=None, dense_units=8)
    with pytest.raises(ValueError, match="mismatched class lists: the model predicts 2 classes but the data has 3"):
        train(m, ds_of(x, y), ds_of(x, y), tmp_path / "a", epochs=1, class_names=["a", "b", "c"], progress=False)
    y3 = y.copy(); y3[0] = 2   # data labelled with a third class
    with pytest.raises(ValueError, match="mismatched class lists"):
        train(m, ds_of(x, y3), ds_of(x, y), tmp_path / "b", epochs=1, class_names=["a", "b"], cache_features=True, progress=False)
    train(m, ds_of(x, y), ds_of(x, y), tmp_path / "c", epochs=1, class_names=["a", "b"], progress=False, plot=False)
    with pytest.raises(ValueError, match="holds a run on"):
        train(m, ds_of(x, y), ds_of(x, y), tmp_path / "c", epochs=1, class_names=["b", "a"], progress=False)
    loaded, meta = load_model(tmp_path / "c" / "model.keras")
    with pytest.raises(ValueError, match="the model was trained on"):
        train(loaded, ds_of(x, y), ds_of(x, y), tmp_path / "d", epochs=1, class_names=["x", "y"], progress=False)


def test_class_weights_balanced():
    w = class_weights_for(np.array([0, 0, 0, 1]), 3)
    assert w[0] == pytest.approx(4 / 6) and w[1] == pytest.approx(2.0) and w[2] == 1.0


def test_augmentation_detected():
    x, y = tiny_data(4, 2)
    plain = ds_of(x, y)
    aug = plain.map(lambda a, b: (tf.image.random_flip_left_right(a), b))
    assert has_random_ops(plain) is False and has_random_ops(aug) is True
