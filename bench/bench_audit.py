"""Benchmark of the cleaning audit (issues 3 and 11).

1. The whole audit (`scan_images` + `audit`) of the real Sartaj set, 3,264 JPEGs (target < 30 s on 2 cores),
   against two baselines run in the same process: the original notebook's MD5-only pass over the same files,
   and the audit in one process (`workers=1`); with the peak memory of this process and of the audit's workers.
2. The near-duplicate calibration on the same set: every pair of images compared by brute force, with the
   64-px confirmation thumbnail made two ways (the former integer `reduce` then resize, and the current single
   box resize of the full image): how many pairs of different files pass `min_corr`, their pHash distances, and
   how well each way confirms the same picture stored at two sizes (pairs of different widths whose independent
   32-px bilinear thumbnails, as in `shared/tools/leak_check.py`, correlate above 0.995).
3. The near-duplicate candidate search (multi-index hashing) on 10k / 30k / 100k synthetic 64-bit hashes with
   planted near pairs (target: 100k in < 60 s), against the brute-force all-pairs comparison (vectorised numpy,
   at 10k; larger sizes extrapolated as n^2); once with the band count chosen by the cost model, once with 3 bands
   (the setting the model picks from ~100k hashes on, where the work is look-ups, linear in n).

Run: `nice python bench/bench_audit.py [--data DIR] [--no-serial] [--no-hashes]`; writes `bench/results/bench_audit.json`.
"""
import argparse
import hashlib
import os
import platform
import resource
import sys
import time
from collections import Counter
from importlib.metadata import version, PackageNotFoundError
from pathlib import Path

import numpy as np
from PIL import Image

from brain_tumor_cls.cleaning import audit, duplicate_summary, audit_summary, hamming_pairs, choose_bands, _unit_rows
from brain_tumor_cls.files import write_json
from brain_tumor_cls.testing import brute_hamming_pairs, synthetic_hashes
from brain_tumor_cls.data import scan_images

HERE = Path(__file__).resolve().parent


def _v(p):
    try: return version(p)
    except PackageNotFoundError: return None


def machine():
    return dict(platform=platform.platform(), python=platform.python_version(), cpu_count=os.cpu_count(),
                tensorflow=_v("tensorflow"), numpy=np.__version__, pillow=_v("pillow"), imagehash=_v("imagehash"),
                pandas=_v("pandas"), loadavg_at_start=list(os.getloadavg()))


def timed(f, *a, **k):
    t = time.perf_counter(); r = f(*a, **k); return r, time.perf_counter() - t


def peak_rss_mb():
    "Peak resident memory of this process and of its (finished) worker processes, MB."
    kb = lambda who: resource.getrusage(who).ru_maxrss / 1024
    return dict(self=round(kb(resource.RUSAGE_SELF)), workers=round(kb(resource.RUSAGE_CHILDREN)))


def bench_real(root, serial=True):
    out = dict(data=str(root))
    if not Path(root).is_dir():
        out["skipped"] = f"{root} not found"; return out, None
    man, t_scan = timed(scan_images, root)
    def md5_all(paths):
        return [hashlib.md5(Path(p).read_bytes()).hexdigest() for p in paths]
    _, t_md5 = timed(md5_all, man["path"])
    la = os.getloadavg()[0]
    aud, t_audit = timed(audit, man, workers=2, progress=False)
    out.update(files=len(man), scan_s=round(t_scan, 2), md5_only_baseline_s=round(t_md5, 2),
               audit_workers2_s=round(t_audit, 2), scan_plus_audit_s=round(t_scan + t_audit, 2),
               loadavg_1min_before_audit=round(la, 2), loadavg_1min_after_audit=round(os.getloadavg()[0], 2),
               audit_over_md5_ratio=round(t_audit / t_md5, 2), target_s=30,
               meets_target=bool(t_scan + t_audit < 30), peak_rss_mb_after_audit=peak_rss_mb())
    if serial:
        _, t1 = timed(audit, man, workers=1, progress=False)
        out.update(audit_workers1_s=round(t1, 2), parallel_speedup=round(t1 / t_audit, 2))
    out["duplicates"] = duplicate_summary(aud)
    s = audit_summary(aud)
    out["files_per_reason"] = {k: int(v) for k, v in s["total"].items()}
    return out, aud


def _thumbs(path, t=64):
    "64-px grey thumbnails made the former way (integer reduce, then resize) and the current way (one box resize), and an independent 32-px bilinear one."
    with Image.open(path) as im: g = im.convert("L")
    f = max(1, min(g.size) // 64)
    two = (g.reduce(f) if f > 1 else g).resize((t, t), Image.Resampling.BOX)
    return (np.asarray(two), np.asarray(g.resize((t, t), Image.Resampling.BOX)),
            np.asarray(g.resize((32, 32), Image.Resampling.BILINEAR)))


def calibration(aud, min_corr=0.985, same=0.995):
    "Brute force over all pairs of decoded, different files: correlations both ways, pHash distances (see the docstring)."
    a = aud[aud["phash"] != ""].reset_index(drop=True)
    two, one, ref = map(np.stack, zip(*[_thumbs(p) for p in a["path"]]))
    h = np.array([int(x, 16) for x in a["phash"]], np.uint64)
    iu = np.triu_indices(len(a), 1)
    diff = a["md5"].to_numpy()[iu[0]] != a["md5"].to_numpy()[iu[1]]
    i, j = iu[0][diff], iu[1][diff]
    dist = np.bitwise_count(h[i] ^ h[j])
    sized = (a["width"].to_numpy()[i] != a["width"].to_numpy()[j])
    out = dict(images=len(a), pairs_of_different_files=int(len(i)), min_corr=min_corr)
    for name, t in (("reduce_then_resize", two), ("one_box_resize", one)):
        z = _unit_rows(t); c = (z @ z.T)[i, j]
        hit = c >= min_corr
        out[name] = dict(pairs_at_min_corr=int(hit.sum()), pairs_099=int((c >= 0.99).sum()),
                         pairs_0975_to_min_corr=int(((c >= 0.975) & (c < min_corr)).sum()),
                         phash_distance_of_pairs_at_min_corr={int(k): int(v) for k, v in sorted(Counter(dist[hit]).items())},
                         max_phash_distance_at_098=int(dist[c >= 0.98].max()) if (c >= 0.98).any() else None,
                         pairs_at_min_corr_beyond_8_bits=int((hit & (dist > 8)).sum()))
        out[name + "_c"] = c
    # the same picture at two sizes: pairs of different widths whose independent 32-px bilinear thumbnails correlate > `same`
    zr = _unit_rows(ref); both = sized & ((zr @ zr.T)[i, j] > same)
    for name in ("reduce_then_resize", "one_box_resize"):
        c = out.pop(name + "_c")[both]
        out[name]["same_picture_two_sizes"] = dict(pairs=int(both.sum()), min=round(float(c.min()), 4) if len(c) else None,
                                                   median=round(float(np.median(c)), 4) if len(c) else None,
                                                   below_min_corr=int((c < min_corr).sum()))
    return out


def bench_hashes(sizes=(10_000, 30_000, 100_000), max_dist=8, n_pairs=500, brute_up_to=10_000, bands=None):
    rows = []
    for n in sizes:
        h, planted = synthetic_hashes(n, n_pairs=n_pairs, max_flip=max_dist, seed=n)
        got, t = timed(hamming_pairs, h, max_dist, bands=bands)
        found = {tuple(p) for p in got[:, :2]}
        r = dict(n=len(h), max_dist=max_dist, bands=bands or choose_bands(len(h), max_dist), mih_s=round(t, 3),
                 pairs_found=len(got), planted=n_pairs, planted_found=sum(tuple(p) in found for p in planted),
                 loadavg_1min=round(os.getloadavg()[0], 2))
        if n <= brute_up_to:
            ref, tb = timed(brute_hamming_pairs, h, max_dist)
            r.update(brute_s=round(tb, 3), speedup_vs_brute=round(tb / t, 1),
                     identical_to_brute=bool(np.array_equal(got[np.lexsort((got[:, 1], got[:, 0]))], ref)))
        rows.append(r)
        print(r, flush=True)
    big = [r for r in rows if "brute_s" in r]
    for r in rows:
        if "brute_s" not in r and big:
            r["brute_s_extrapolated_n2"] = round(big[-1]["brute_s"] * (r["n"] / big[-1]["n"])**2, 1)
            r["speedup_vs_brute_extrapolated"] = round(r["brute_s_extrapolated_n2"] / r["mih_s"], 1)
    a, b = rows[0], rows[-1]
    exponent = float(np.log(b["mih_s"] / a["mih_s"]) / np.log(b["n"] / a["n"]))
    return dict(rows=rows, scaling_exponent=round(exponent, 2),
                note="time ~ n^exponent between the first and last size; 2.0 would be quadratic",
                target_100k_s=60, meets_target=bool(rows[-1]["mih_s"] < 60))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("BTC_DATA", str(HERE.parents[1]/"shared/data/sartaj-brain-mri")))
    p.add_argument("--no-serial", action="store_true", help="skip the workers=1 baseline audit")
    p.add_argument("--no-hashes", action="store_true", help="skip the synthetic hash-search benchmark")
    p.add_argument("--out", default=str(HERE/"results"/"bench_audit.json"))
    a = p.parse_args(argv)
    res = dict(benchmark="bench_audit", machine=machine(), when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    res["real_audit"], aud = bench_real(a.data, serial=not a.no_serial)
    print(res["real_audit"], flush=True)
    if aud is not None:
        res["near_duplicate_calibration"] = calibration(aud)
        print(res["near_duplicate_calibration"], flush=True)
    if not a.no_hashes:
        res["hash_search"] = bench_hashes()                      # default: bands chosen by the cost model
        res["hash_search_3_bands"] = bench_hashes(bands=3, brute_up_to=0)   # the large-n setting: look-ups, ~linear in n
    res["machine"]["loadavg_at_end"] = list(os.getloadavg())
    write_json(a.out, res, indent=1)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
