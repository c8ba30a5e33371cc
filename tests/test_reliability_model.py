"""Hostile and broken model files at the model layer (issue 17): a zip bomb, folders and foreign files, models btc
cannot use, and a disk that fills up while a model is saved. Each failure has its own exception class
(all `model.ModelFileError`, a `ValueError`) so the command line can map it to exit code 2 without guessing."""
import errno, json, os, struct, subprocess, sys, textwrap, zipfile, zlib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import pytest
import keras

from brain_tumor_cls import files
from brain_tumor_cls.model import (META_ENTRY, ModelBombError, ModelFileError, ModelFormatError, UnsafeModelError,
                                   UnsupportedModelError, load_model, save_model)

GiB = 2**30


def write_zip_bomb(path, member="config.json", size=1_500_000_000, block=2**24):
    """A .keras-looking zip whose `member` inflates to `size` bytes of spaces, written without ever holding or deflating
    `size` bytes: one full-flushed deflate block of `block` spaces, repeated, then a final empty block."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = c.compress(b" " * block) + c.flush(zlib.Z_FULL_FLUSH)   # self-contained: no reference to earlier bytes
    n = size // block
    crc = 0
    for _ in range(n): crc = zlib.crc32(b" " * block, crc)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    name, csize, usize = member.encode(), len(piece) * n + len(end), n * block
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, csize, usize, len(name), 0) + name
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, csize, usize, len(name),
                          0, 0, 0, 0, 0, 0) + name
    with open(path, "wb") as f:
        f.write(local)
        for _ in range(n): f.write(piece)
        f.write(end)
        cd_offset = f.tell()
        f.write(central)
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), cd_offset, 0))
    return usize


def peak_rss_loading(path):
    """Load `path` in a fresh interpreter; returns its peak RSS after the imports and at the end (bytes), and the outcome.
    (VmHWM of /proc, not getrusage: Linux carries ru_maxrss over from the parent through fork and exec.)"""
    code = textwrap.dedent("""
        import json, re, sys
        from brain_tumor_cls.model import load_model
        hwm = lambda: int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
        base = hwm()
        try: load_model(sys.argv[1]); out = "loaded"
        except Exception as e: out = f"{type(e).__name__}: {e}"
        print(json.dumps({"base": base, "peak": hwm(), "out": out}))
    """)
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to measure peak memory")
def test_zip_bomb_is_refused_from_the_directory(tmp_path):
    "A 1.5 MB .keras with a 1.5 GB config.json: refused before anything is inflated; peak memory stays under 1 GiB."
    bomb = tmp_path / "bomb.keras"
    size = write_zip_bomb(bomb)
    with zipfile.ZipFile(bomb) as z:   # a valid zip: the first megabyte inflates to spaces
        assert z.getinfo("config.json").file_size == size and z.open("config.json").read(2**20) == b" " * 2**20
    assert bomb.stat().st_size < 2e6 and size > 1.4e9
    r = peak_rss_loading(bomb)
    assert r["out"].startswith("ModelBombError") and "decompression bomb" in r["out"], r["out"]
    assert r["peak"] < GiB and r["peak"] - r["base"] < 200 * 2**20, r


def test_json_entry_larger_than_any_config_is_refused(tmp_path):
    "Stored (not compressed), 20 MB of config: no expansion, but no model's architecture is that large."
    p = tmp_path / "big.keras"
    with zipfile.ZipFile(p, "w") as z: z.writestr("config.json", b" " * (20 * 2**20))
    with pytest.raises(ModelBombError, match="far more than any model's configuration"):
        load_model(p)


def test_too_many_entries_are_refused(tmp_path):
    p = tmp_path / "many.keras"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", "{}")
        for i in range(100): z.writestr(f"x/{i}", "")
    with pytest.raises(ModelBombError, match="101 entries"):
        load_model(p)


def small_model(name="logits"):
    inp = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    return keras.Model(inp, keras.layers.Activation("softmax")(keras.layers.Dense(2, name=name)(x)))


def test_compressed_hdf5_weights_bomb_is_refused(tmp_path):
    "The weights entry itself can hide a bomb: an HDF5 dataset compressed 1000:1. Declared sizes give it away."
    import h5py
    good = tmp_path / "good.keras"
    small_model().save(good)
    bomb = tmp_path / "h5bomb.keras"
    h5 = tmp_path / "w.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("layers/dense/vars/0", shape=(256, 2**20), dtype=np.float32, chunks=(1, 2**20),
                         compression="gzip", fillvalue=0)   # 1 GiB declared, nothing stored
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w") as out:
        for i in src.infolist():
            out.writestr(i, h5.read_bytes() if i.filename == "model.weights.h5" else src.read(i))
    assert bomb.stat().st_size < 5e6
    with pytest.raises(ModelBombError, match="weights declare 1,024.0 MB"):
        load_model(bomb)


def test_savedmodel_folder_says_what_it_is(tmp_path):
    import tensorflow as tf
    mod = tf.Module()
    mod.f = tf.function(lambda x: x * 2.0, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(mod, str(tmp_path / "exported"))
    assert (tmp_path / "exported" / "saved_model.pb").exists()
    with pytest.raises(ModelFormatError, match=r"is a folder \(a TensorFlow SavedModel\?\): btc needs the \.keras file"):
        load_model(tmp_path / "exported")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ModelFormatError, match="is a folder: btc needs"):
        load_model(tmp_path / "plain")


def test_model_of_any_input_size_is_refused_with_its_shape(tmp_path):
    inp = keras.Input((None, None, 3))
    p = tmp_path / "anysize.keras"
    keras.Model(inp, keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(inp))).save(p)
    with pytest.raises(UnsupportedModelError) as e:
        load_model(p)
    assert "(None, None, None, 3)" in str(e.value) and "NoneType" not in str(e.value)


def test_model_without_logits_or_with_other_input_is_refused(tmp_path):
    small_model(name="scores").save(tmp_path / "nologits.keras")
    with pytest.raises(UnsupportedModelError, match="no layer named `logits`"):
        load_model(tmp_path / "nologits.keras")
    inp = keras.Input((8, 8, 1))
    keras.Model(inp, keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(inp))).save(tmp_path / "grey.keras")
    with pytest.raises(UnsupportedModelError, match=r"\(None, 8, 8, 1\)"):
        load_model(tmp_path / "grey.keras")


def test_lambda_refused_and_a_lambda_named_path_is_not_called_unsafe(tmp_path):
    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Dense(2)(keras.layers.Lambda(lambda t: t * 2.0, name="twice")(inp))).save(tmp_path / "m.keras")
    with pytest.raises(UnsafeModelError, match=r"Lambda layer \(twice\)"):
        load_model(tmp_path / "m.keras")
    junk = tmp_path / "lambda_experiments" / "lambda.keras"
    junk.parent.mkdir(); junk.write_bytes(b"\0" * 64)
    with pytest.raises(ModelFormatError) as e:
        load_model(junk)
    assert "not a zip file" in str(e.value) and "unsafe" not in str(e.value) and "contains" not in str(e.value)


def test_foreign_and_damaged_files(tmp_path):
    (tmp_path / "old.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 512)
    with pytest.raises(ModelFormatError, match="legacy HDF5"):
        load_model(tmp_path / "old.h5")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z: z.writestr("readme.txt", "hello")
    with pytest.raises(ModelFormatError, match="no config.json"):
        load_model(tmp_path / "other.zip")
    with zipfile.ZipFile(tmp_path / "badjson.keras", "w") as z: z.writestr("config.json", "{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        load_model(tmp_path / "badjson.keras")
    good = tmp_path / "good.keras"
    small_model().save(good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "badmeta.keras", "w") as out:
        for i in src.infolist(): out.writestr(i, src.read(i))
        out.writestr(META_ENTRY, json.dumps({"class_names": "ab", "image_size": 8}))
    with pytest.raises(ModelFormatError, match="damaged metadata"):
        load_model(tmp_path / "badmeta.keras")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.keras")
    for cls in (ModelFormatError, ModelBombError, UnsafeModelError, UnsupportedModelError):
        assert issubclass(cls, ModelFileError) and issubclass(cls, ValueError)


@pytest.fixture(scope="module")
def wide_model():
    "A model with ~4.6 MB of weights: more than a 2 MB disk holds."
    keras.utils.set_random_seed(0)
    inp = keras.Input((75, 75, 3))
    x = keras.layers.Dense(1200, name="wide")(keras.layers.Flatten()(keras.layers.AveragePooling2D(5)(inp)))
    return keras.Model(inp, keras.layers.Activation("softmax", name="probs")(keras.layers.Dense(2, name="logits")(x)))


@pytest.fixture
def tiny_disk(tmp_path):
    "A 2 MB tmpfs (needs root: skipped where mounting is not allowed)."
    d = tmp_path / "disk"; d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0: pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()[:100]}")
    yield d
    subprocess.run(["umount", str(d)], check=True)


def test_full_disk_is_refused_before_writing(wide_model, tiny_disk):
    with pytest.raises(files.DiskFullError, match="needs about"):
        save_model(wide_model, tiny_disk / "model.keras", ["a", "b"], 75)
    assert list(tiny_disk.iterdir()) == []


def test_disk_filling_up_during_the_write_ends_cleanly(wide_model, tiny_disk, monkeypatch):
    monkeypatch.setattr(files, "check_free_space", lambda *a, **k: 0)    # as if another process took the space meanwhile
    with pytest.raises(files.DiskFullError, match="no space left"):
        save_model(wide_model, tiny_disk / "model.keras", ["a", "b"], 75)
    assert list(tiny_disk.iterdir()) == []                                   # no partial model, no temporary file


def test_disk_full_simulated(wide_model, tmp_path, monkeypatch):
    "The same without root: the Keras writer fails with ENOSPC after writing half a file."
    import brain_tumor_cls.model as M
    class HalfWriter:
        def save(self, path, **kw):
            Path(path).write_bytes(b"PK\x03\x04 half a model")
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(M, "_without_optimizer", lambda m: HalfWriter())
    with pytest.raises(files.DiskFullError):
        save_model(wide_model, tmp_path / "model.keras", ["a", "b"], 75)
    assert list(tmp_path.iterdir()) == []
