"""Load test of `btc serve` on 127.0.0.1: a real server process (`serve.serve`: uvicorn, the model's worker thread)
answering httpx/asyncio clients with phantom slices. In the same run, the baseline: the same server, requests sent one
at a time (no concurrency, so batches of one). Then `--requests` requests, `--concurrency` in flight at once.

    python bench/bench_serve.py [--requests 200] [--concurrency 16] [--image-size 96] [--model PATH]

Without --model: InceptionV3 with random weights at --image-size (the demo's 96 px by default; the weights do not
change the cost). Writes bench/results/bench_serve.json: requests/s, p50/p95 latency, errors (must be 0), the server
process's peak memory (VmHWM), mean batch size, the machine and its load average at start and end."""
import argparse, asyncio, io, os, platform, re, signal, subprocess, sys, tempfile, threading, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pathlib import Path

import numpy as np
import httpx
from PIL import Image

from brain_tumor_cls.files import write_json
from brain_tumor_cls.phantom import PHANTOM_CLASSES, draw_slice


def phantom_pngs(n:int=8, size:int=128) -> list[bytes]:
    "n different phantom slices (all four classes) as PNG bytes, the size `btc demo` generates."
    out = []
    for i in range(n):
        b = io.BytesIO(); Image.fromarray(draw_slice(np.random.default_rng(i), PHANTOM_CLASSES[i % 4], size)[0]).save(b, "PNG")
        out.append(b.getvalue())
    return out


def start_server(model:Path, max_batch:int) -> tuple[subprocess.Popen, str, list]:
    "`serve()` in a subprocess on a free port; returns (process, url, its output lines, still being collected)."
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    code = "import sys; from brain_tumor_cls.serve import serve; serve(sys.argv[1], port=0, max_batch=int(sys.argv[2]))"
    p = subprocess.Popen([sys.executable, "-c", code, str(model), str(max_batch)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in p.stdout:
        lines.append(line)
        if (m := re.search(r"serving (http://\S+)", line)):
            threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True).start()   # keep the pipe drained
            return p, m.group(1), lines
    raise RuntimeError("the server did not start:\n" + "".join(lines))


def memory_kb(pid:int) -> dict:
    "Resident memory of a process now and at its peak (VmRSS, VmHWM from /proc), in kB."
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", status).group(1)) for k in ("VmRSS", "VmHWM")}


async def load(url:str, images:list[bytes], n:int, concurrency:int) -> dict:
    "Send n uploads with `concurrency` in flight; returns latencies (s), wall time and the errors."
    lat, errors, nxt = [], [], iter(range(n))
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=concurrency)) as c:
        async def worker():
            for i in nxt:
                t0 = time.perf_counter()
                try:
                    r = await c.post("api/predict", files={"file": ("x.png", images[i % len(images)], "image/png")})
                    if r.status_code != 200: errors.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as e: errors.append(f"{type(e).__name__}: {e}")
                lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
    return {"latency": lat, "wall": time.perf_counter() - t0, "errors": errors}


def summary(r:dict, n:int, concurrency:int) -> dict:
    lat = np.asarray(r["latency"])
    return {"requests": n, "concurrency": concurrency, "seconds": r["wall"], "requests_per_s": n / r["wall"],
            "latency_p50_s": float(np.percentile(lat, 50)), "latency_p95_s": float(np.percentile(lat, 95)),
            "latency_max_s": float(lat.max()), "errors": len(r["errors"]), "error_examples": r["errors"][:3]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200); ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--baseline", type=int, default=20, help="requests sent one at a time first (the baseline)")
    ap.add_argument("--image-size", type=int, default=96); ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--model", help="a btc model.keras (default: InceptionV3, random weights, --image-size)")
    ap.add_argument("--out", default=str(Path(__file__).parent/"results"/"bench_serve.json"))
    a = ap.parse_args()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as d:
        model = Path(a.model) if a.model else build(Path(d)/"model.keras", a.image_size)
        p, url, lines = start_server(model, a.max_batch)
        try: res = measure(a, p, url)
        finally:
            p.send_signal(signal.SIGINT)
            try: res_exit = p.wait(120)
            except subprocess.TimeoutExpired: p.kill(); res_exit = "killed after 120 s"
    res |= {"server_exit_code_after_ctrl_c": res_exit, "server_log": [l.rstrip() for l in lines][-4:],
            "machine": machine(load_start)}
    write_json(a.out, res)
    print({k: v for k, v in res.items() if k not in ("server_log",)})


def build(path:Path, size:int) -> Path:
    import keras
    from brain_tumor_cls.model import build_model, save_model
    keras.utils.set_random_seed(0)
    return save_model(build_model(4, size, weights=None), path, PHANTOM_CLASSES, size)


def measure(a, p, url:str) -> dict:
    images = phantom_pngs()
    info = httpx.get(url + "api/model").json()
    mem_idle = memory_kb(p.pid)
    asyncio.run(load(url, images, 3, 1))                                    # warm-up, not counted
    base = summary(asyncio.run(load(url, images, a.baseline, 1)), a.baseline, 1)
    h0 = httpx.get(url + "api/health").json()
    conc = summary(asyncio.run(load(url, images, a.requests, a.concurrency)), a.requests, a.concurrency)
    h1 = httpx.get(url + "api/health").json()
    batches = h1["batches"] - h0["batches"]
    return {"what": f"btc serve on 127.0.0.1: POST /api/predict of 128 px phantom PNGs (probabilities + Grad-CAM overlay), "
                    f"model {info['file']} at {info['image_size']} px, Grad-CAM layer {info['explanation']['layer']}",
            "baseline_one_at_a_time": base, "concurrent": conc,
            "speedup_requests_per_s_vs_baseline": conc["requests_per_s"] / base["requests_per_s"],
            "mean_batch_size_concurrent": (h1["predictions"] - h0["predictions"]) / max(batches, 1),
            "max_batch": a.max_batch, "server_memory_mb": {"after_start": mem_idle["VmRSS"] / 1024,
                                                           "peak": memory_kb(p.pid)["VmHWM"] / 1024}}


def machine(load_start) -> dict:
    from importlib.metadata import version
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "load_avg_at_start": load_start, "load_avg_at_end": os.getloadavg(),
            "python": platform.python_version(), **{k: version(k) for k in ("tensorflow", "keras", "starlette", "uvicorn")},
            "note": "cores shared with other jobs (see the load averages): absolute numbers are noisy, the ratio less so"}


if __name__ == "__main__":
    main()
