"""Benchmark of DICOM reading (issue 14, item 1): time per file of `dicom_header` and `read_dicom`.

The same 512x512 phantom slice is written as N files of each kind:
- a 16-bit MONOCHROME2 DICOM with the window 0-4095 (12-bit values), explicit VR little endian;
- the same, RLE Lossless compressed (decoded by pydicom itself);
- the 8-bit picture as PNG (the baseline: what the pipeline reads today).
Timed in one process, rounds interleaved: `dicom_header` vs Pillow's header-only `Image.open` of the PNG;
`read_dicom` vs Pillow decoding the PNG to grey, and vs bare `pydicom.dcmread(...).pixel_array` (our checks and
rendering on top of pydicom's decode). Reported: median over rounds of the mean time per file, in milliseconds.

Run: `python bench/bench_dicom.py [--files 200] [--rounds 7]`; writes `bench/results/bench_dicom.json`.
"""
import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from brain_tumor_cls.dicom import dicom_header, read_dicom, write_dicom
from brain_tumor_cls.phantom import draw_slice

HERE = Path(__file__).resolve().parent


def machine():
    return dict(platform=platform.platform(), python=platform.python_version(), cpu_count=os.cpu_count(),
                numpy=np.__version__, pydicom=version("pydicom"), pillow=version("pillow"),
                loadavg_at_start=list(os.getloadavg()))


def write_files(folder:Path, n:int):
    "n copies of one 512x512 slice as 16-bit DICOM, RLE DICOM and 8-bit PNG."
    x = draw_slice(np.random.default_rng(0), "glioma_tumor", 512)[0].astype(np.float64)
    g = np.round((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)
    m = np.round(g * (4095 / 255)).astype(np.uint16)
    first = write_dicom(folder / "d16_0.dcm", m, bits=16, window=(2048, 4096), patient_id="P1")
    ds = pydicom.dcmread(first); ds.compress(pydicom.uid.RLELossless)
    ds.save_as(folder / "rle_0.dcm", enforce_file_format=True)
    Image.fromarray(g).save(folder / "png_0.png")
    paths = {}
    for kind, src in [("d16", first), ("rle", folder / "rle_0.dcm"), ("png", folder / "png_0.png")]:
        data = src.read_bytes()
        paths[kind] = [src] + [folder / f"{kind}_{i}{src.suffix}" for i in range(1, n)]
        for p in paths[kind][1:]: p.write_bytes(data)
    assert np.array_equal(read_dicom(paths["d16"][0]), g) and np.array_equal(read_dicom(paths["rle"][0]), g)
    return paths, {k: v[0].stat().st_size for k, v in paths.items()}


def per_file_ms(f, paths):
    t = time.perf_counter()
    for p in paths: f(p)
    return (time.perf_counter() - t) / len(paths) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(HERE / "results" / "bench_dicom.json"))
    a = ap.parse_args(argv)
    res = dict(what=__doc__.split("\n\n")[0], machine=machine(), files=a.files, rounds=a.rounds, size="512x512")
    def pil_header(p):
        with Image.open(p) as im: return im.size
    def pil_grey(p):
        with Image.open(p) as im: return np.asarray(im.convert("L"))
    cases = {"dicom_header_16bit": (dicom_header, "d16"), "pillow_header_png": (pil_header, "png"),
             "read_dicom_16bit": (read_dicom, "d16"), "read_dicom_rle": (read_dicom, "rle"),
             "pydicom_pixel_array_16bit": (lambda p: pydicom.dcmread(p).pixel_array, "d16"),
             "pillow_decode_png": (pil_grey, "png")}
    with tempfile.TemporaryDirectory(prefix="bench_dicom_") as tmp:
        paths, sizes = write_files(Path(tmp), a.files)
        res["file_bytes"] = sizes
        times = {k: [] for k in cases}
        for _ in range(a.rounds):
            for k, (f, kind) in cases.items(): times[k].append(per_file_ms(f, paths[kind]))
    med = {k: round(statistics.median(v), 4) for k, v in times.items()}
    res.update(ms_per_file_median=med, ms_per_file_all=times,
               ratios=dict(dicom_header_over_pillow_header=round(med["dicom_header_16bit"] / med["pillow_header_png"], 2),
                           read_dicom_over_pillow_png=round(med["read_dicom_16bit"] / med["pillow_decode_png"], 2),
                           read_dicom_over_bare_pydicom=round(med["read_dicom_16bit"] / med["pydicom_pixel_array_16bit"], 2)),
               loadavg_at_end=list(os.getloadavg()))
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp"); tmp.write_text(json.dumps(res, indent=1)); os.replace(tmp, out)
    print(json.dumps(dict(ms_per_file_median=med, ratios=res["ratios"], load=[res["machine"]["loadavg_at_start"], res["loadavg_at_end"]]), indent=1))


if __name__ == "__main__":
    main()
