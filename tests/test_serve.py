"""`btc serve`: the JSON API through Starlette's test client (answers, refusals, limits, guards, nothing on disk),
a live uvicorn server (16 concurrent uploads, Ctrl-C), and the page driven in real headless Chromium."""
import asyncio, base64, copy, io, os, re, signal, subprocess, sys, threading, time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from brain_tumor_cls import serve as S
from brain_tumor_cls.dicom import _edit_dicom, dicom_bytes
from brain_tumor_cls.phantom import PHANTOM_CLASSES, draw_slice
from brain_tumor_cls.testing import bomb_png

LOCAL = "http://127.0.0.1:8000"   # the TestClient's base URL: a Host the loopback guard accepts


def encode(a, fmt="PNG", **kw) -> bytes:
    "An array encoded by Pillow; returns the bytes."
    b = io.BytesIO(); Image.fromarray(a).save(b, format=fmt, **kw); return b.getvalue()


def tall_slice(seed=0, cls="glioma_tumor") -> np.ndarray:
    "A phantom slice 128 high and 96 wide (not square, so the aspect ratio is tested)."
    return draw_slice(np.random.default_rng(seed), cls, 128)[0][:, 16:112]


def png_of(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1], validate=True)))


def upload(name="slice.png", data=b"", ctype="application/octet-stream"):
    return {"file": (name, data, ctype)}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    "A small untrained btc-saved classifier (4 phantom classes, 75 px) with the layer names predict and gradcam use."
    import keras
    from brain_tumor_cls.model import save_model
    keras.utils.set_random_seed(0)
    i = keras.Input((75, 75, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(i)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv")(x)
    x = keras.layers.Dense(4, name="logits")(keras.layers.GlobalAveragePooling2D(name="avg_pool")(x))
    m = keras.Model(i, keras.layers.Activation("softmax", name="probs")(x))
    return save_model(m, tmp_path_factory.mktemp("model")/"tiny.keras", PHANTOM_CLASSES, 75)


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return S.load_predictor(tiny_model)


@pytest.fixture
def client(predictor):
    with TestClient(S.make_app(predictor, max_upload_mb=1), base_url=LOCAL) as c: yield c


# ---------------------------------------------------------------- answers

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "DICOM"])
def test_predict_answers(client, fmt):
    a = tall_slice()
    data = dicom_bytes(a.astype(np.uint16) * 16, bits=12) if fmt == "DICOM" else encode(a, fmt)
    r = client.post("/api/predict", files=upload("x", data))
    assert r.status_code == 200, r.text
    d = r.json()
    assert list(d["probabilities"]) == PHANTOM_CLASSES and abs(sum(d["probabilities"].values()) - 1) < 1e-5
    assert d["predicted"] == max(d["probabilities"], key=d["probabilities"].get)
    assert d["image"] == {"format": fmt, "width": 96, "height": 128, "shown_width": 96, "shown_height": 128}
    assert png_of(d["original"]).size == png_of(d["gradcam"]).size == (96, 128)
    assert d["explanation"]["method"] == "Grad-CAM" and d["explanation"]["layer"] == "conv"
    assert d["model"]["class_names"] == PHANTOM_CLASSES and d["model"]["file"] == "tiny.keras"


def test_large_image_shown_smaller_at_its_aspect(client):
    a = np.asarray(Image.fromarray(tall_slice()).resize((600, 800)))
    d = client.post("/api/predict", files=upload("x", encode(a))).json()
    assert (d["image"]["width"], d["image"]["height"]) == (600, 800)
    assert png_of(d["gradcam"]).size == png_of(d["original"]).size == (384, 512)


def test_same_probabilities_as_btc_predict(client, tiny_model, tmp_path):
    "The page and `btc predict` decode and resize the same way: same file, same probabilities."
    from brain_tumor_cls.predict import predict_files
    f = tmp_path/"s.jpg"; f.write_bytes(encode(tall_slice(3, "pituitary_tumor"), "JPEG", quality=90))
    row = predict_files(tiny_model, [f], tmp_path/"p.csv", progress=False).iloc[0]
    served = client.post("/api/predict", files=upload("s.jpg", f.read_bytes())).json()["probabilities"]
    np.testing.assert_allclose([served[c] for c in PHANTOM_CLASSES], [row[f"p_{c}"] for c in PHANTOM_CLASSES], atol=1e-5)


def test_model_health_and_page(client):
    m = client.get("/api/model").json()
    assert (m["class_names"], m["image_size"], m["temperature"], m["calibrated"]) == (PHANTOM_CLASSES, 75, 1.0, False)
    assert m["limits"]["max_upload_bytes"] == 2**20 and m["explanation"] == {"method": "Grad-CAM", "layer": "conv"}
    assert m["versions"]["tensorflow"] and m["versions"]["keras"]
    assert client.get("/api/health").json()["status"] == "ok"
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "Research tool, not a medical device" in r.text and '<label for="file">' in r.text
    csp, (script,), (style,) = (r.headers["content-security-policy"], re.findall(r"<script>(.*?)</script>", r.text, re.S),
                                re.findall(r"<style>(.*?)</style>", r.text, re.S))
    assert S._sha256(script) in csp and S._sha256(style) in csp and "default-src 'none'" in csp and "img-src data:" in csp
    assert r.headers["x-content-type-options"] == "nosniff" and "innerHTML" not in script
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", r.text), "the page refers to another site"


# ---------------------------------------------------------------- refusals

def _dcm():
    return dicom_bytes(tall_slice().astype(np.uint16) * 16, bits=12)


REFUSED = {
    "text file": (upload("notes.txt", b"Patient notes, not an image.\n" * 20, "text/plain"), 415, "not an image"),
    "empty file": (upload("e.png", b""), 422, "empty"),
    "truncated PNG": (upload("t.png", encode(tall_slice())[:400]), 422, "cannot be decoded"),
    "TIFF": (upload("t.tif", encode(tall_slice(), "TIFF")), 415, "TIFF images are not accepted"),
    "PNG bomb": (upload("b.png", bomb_png()), 422, "not decoded"),
    "PNG bomb under Pillow's limit": (upload("b.png", bomb_png(8000, 7000)), 422, "8000x7000"),
    "DICOM bomb": (upload("b.dcm", _edit_dicom(_dcm(), Rows=50_000, Columns=50_000)), 422, "decompression_bomb"),
    "DICOM volume": (upload("v.dcm", _edit_dicom(_dcm(), NumberOfFrames=3)), 422, "multiframe"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_are_json(client, case):
    files, status, says = REFUSED[case]
    r = client.post("/api/predict", files=files)
    assert (r.status_code, r.headers["content-type"]) == (status, "application/json"), r.text
    assert says in r.json()["error"]


def test_bad_requests_are_json(client):
    cases = {"no file field": (client.post("/api/predict", data={"x": "1"}, files={"other": ("a", b"a")}), 422),
             "JSON body": (client.post("/api/predict", json={"file": "x"}), 415),
             "two files": (client.post("/api/predict", files=[("file", ("a", b"a")), ("file", ("b", b"b"))]), 400),
             "GET predict": (client.get("/api/predict"), 405), "unknown route": (client.get("/nope"), 404)}
    for name, (r, status) in cases.items():
        assert (r.status_code, bool(r.json()["error"])) == (status, True), name


def test_too_large_refused(client):
    "Over 1 MB: by Content-Length (before reading), by the bytes counted while streaming (no length), and the file itself."
    big = b"\0" * (2 << 20)
    r = client.post("/api/predict", files=upload("big.png", big))
    assert r.status_code == 413 and "1 MB" in r.json()["error"]
    boundary = "btcboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n".encode() + big +
            f"\r\n--{boundary}--\r\n".encode())
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))    # a generator: sent chunked, no Content-Length
    r = client.post("/api/predict", content=chunks, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413, r.text
    r = client.post("/api/predict", files=upload("x", b"\0" * (2**20 + 1)))      # within the body slack, one byte over
    assert r.status_code == 413
    r = client.post("/api/predict", files=upload("x", b"\0" * 2**20))            # exactly the limit: read, then refused as no image
    assert r.status_code == 415


def test_nothing_left_on_disk(predictor, tmp_path, monkeypatch):
    "A 1.7 MB upload (spooled to a temporary file) and a DICOM upload (read from a temporary folder) leave nothing behind."
    import tempfile
    tmp, cwd = tmp_path/"tmp", tmp_path/"cwd"; tmp.mkdir(); cwd.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp)); monkeypatch.chdir(cwd)
    noise = np.random.default_rng(0).integers(0, 256, (800, 700, 3), dtype=np.uint8)
    with TestClient(S.make_app(predictor, max_upload_mb=4), base_url=LOCAL) as c:
        assert len(encode(noise)) > 2**20
        for name, data in [("big.png", encode(noise)), ("s.dcm", _dcm()), ("b.dcm", _edit_dicom(_dcm(), Rows=50_000, Columns=50_000))]:
            assert c.post("/api/predict", files=upload(name, data)).status_code in (200, 422)
    assert list(tmp.iterdir()) == [] and list(cwd.iterdir()) == []


def test_file_names_never_echoed(client):
    for name in ["<img src=x onerror=alert(1)>.png", "../../../etc/passwd.png"]:
        for data in (encode(tall_slice()), b"no image"):
            r = client.post("/api/predict", files=upload(name, data))
            assert r.status_code in (200, 415)
            assert "onerror" not in r.text and "passwd" not in r.text


def test_host_and_origin_guard(predictor):
    png = encode(tall_slice())
    with TestClient(S.make_app(predictor), base_url="http://rebound.example:8000") as c:
        r = c.get("/api/health")
        assert r.status_code == 403 and "answers only to" in r.json()["error"]
    with TestClient(S.make_app(predictor), base_url=LOCAL) as c:
        r = c.post("/api/predict", files=upload("x", png), headers={"origin": "http://evil.example"})
        assert r.status_code == 403 and "cross-site" in r.json()["error"]
        assert c.post("/api/predict", files=upload("x", png), headers={"origin": LOCAL}).status_code == 200
        assert c.post("/api/predict", files=upload("x", png)).status_code == 200      # scripts send no Origin


def _held(predictor):
    "A copy of `predictor` whose model call waits for `release` after setting `entered`; returns (copy, entered, release)."
    entered, release = threading.Event(), threading.Event()
    slow = copy.copy(predictor)
    def held(x):
        entered.set(); release.wait(60); return predictor.predict_batch(x)
    slow.predict_batch = held
    return slow, entered, release


def test_answers_while_the_model_is_busy(predictor):
    "A prediction holds the model; /api/health and a refusal are answered meanwhile, then the prediction completes."
    slow, entered, release = _held(predictor)
    with TestClient(S.make_app(slow), base_url=LOCAL) as c:
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", c.post("/api/predict", files=upload("x", encode(tall_slice())))))
        t.start()
        assert entered.wait(60), "the prediction never reached the model"
        h = c.get("/api/health").json()
        assert (h["status"], h["predictions"]) == ("ok", 0)
        assert c.post("/api/predict", files=upload("x", b"text")).status_code == 415
        assert "r" not in out                       # still waiting for the model
        release.set(); t.join(60)
        assert out["r"].status_code == 200


def test_busy_queue_answers_503(predictor):
    "One image in the model, one waiting (max_queue=1): the next two are told at once to try again."
    slow, entered, release = _held(predictor)
    with TestClient(S.make_app(slow, max_batch=1, max_queue=1), base_url=LOCAL) as c:
        rs, png = [], encode(tall_slice())
        post = lambda: rs.append(c.post("/api/predict", files=upload("x", png)))
        ts = [threading.Thread(target=post)]; ts[0].start()
        assert entered.wait(60), "the prediction never reached the model"
        ts += [threading.Thread(target=post) for _ in range(3)]
        for t in ts[1:]: t.start()
        deadline = time.time() + 60
        while sum(r.status_code == 503 for r in rs) < 2 and time.time() < deadline: time.sleep(0.05)
        release.set()
        for t in ts: t.join(60)
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 200, 503, 503], codes
    assert "busy" in next(r for r in rs if r.status_code == 503).json()["error"]


# ---------------------------------------------------------------- serve(): arguments, warning

def test_serve_checks_arguments_first(tiny_model, tmp_path):
    from brain_tumor_cls.run import UsageError
    for kw, says in [(dict(model_path=tmp_path/"none.keras"), "model file not found"), (dict(port="x"), "--port x"),
                     (dict(port=70000), "--port 70000"), (dict(max_upload_mb="0"), "--max-upload-mb 0"),
                     (dict(host="no-such-host.invalid", port=0), "no such host")]:
        with pytest.raises(UsageError, match=re.escape(says)): S.serve(**(dict(model_path=tiny_model) | kw))
    with socket_in_use() as port:
        with pytest.raises(UsageError, match="another program uses it"): S.serve(tiny_model, port=port)


class socket_in_use:
    def __enter__(self):
        import socket
        self.s = socket.create_server(("127.0.0.1", 0)); return self.s.getsockname()[1]
    def __exit__(self, *a): self.s.close()


def test_serve_warns_off_loopback(tiny_model, monkeypatch):
    "Bound to all interfaces: a warning before the model loads; the socket is closed on the way out."
    class Stop(Exception): pass
    def stop(*a, **k): raise Stop
    monkeypatch.setattr(S, "load_predictor", stop)
    with pytest.warns(UserWarning, match="anyone who can reach this computer"), pytest.raises(Stop):
        S.serve(tiny_model, host="0.0.0.0", port=0, log=lambda *a: None)


# ---------------------------------------------------------------- a live server: uvicorn, concurrency, Chromium, Ctrl-C

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """`btc serve` (or `serve()` before the CLI has it) in a subprocess on a free port, with the real architecture
    (InceptionV3, 75 px, random weights): (url, process, its output so far)."""
    from brain_tumor_cls.model import build_model, save_model
    d = tmp_path_factory.mktemp("live")
    save_model(build_model(4, 75, weights=None), d/"model.keras", PHANTOM_CLASSES, 75)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    from brain_tumor_cls.cli import COMMANDS
    cmd = (["-m", "brain_tumor_cls.cli", "serve", str(d/"model.keras"), "--port", "0"] if "serve" in COMMANDS else  # btc serve
           ["-c", "import sys; from brain_tumor_cls.serve import serve; serve(sys.argv[1], port=0)", str(d/"model.keras")])
    p = subprocess.Popen([sys.executable, *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines, url = [], None
    for line in p.stdout:                          # "serving http://127.0.0.1:PORT/  (Ctrl-C to stop)"
        lines.append(line)
        if (m := re.search(r"serving (http://\S+)", line)): url = m.group(1); break
    assert url, "".join(lines)
    yield url, p, lines
    if p.poll() is None: p.kill(); p.wait()


def test_live_16_concurrent_uploads(live):
    import httpx
    url, _, _ = live
    images = [encode(tall_slice(i, PHANTOM_CLASSES[i % 4])) for i in range(16)]
    before = httpx.get(url + "api/health").json()
    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=300) as c:
            return await asyncio.gather(*[c.post("api/predict", files=upload(f"{i}.png", b)) for i, b in enumerate(images)])
    rs = asyncio.run(main())
    assert [r.status_code for r in rs] == [200] * 16, [r.text[:200] for r in rs if r.status_code != 200]
    assert all(r.json()["explanation"]["layer"].startswith("mixed") for r in rs)
    after = httpx.get(url + "api/health").json()
    assert after["predictions"] - before["predictions"] == 16
    assert after["batches"] - before["batches"] < 16, after       # requests that waited were run together


def test_page_in_chromium(live, browser, tmp_path):
    "Upload a phantom through the file input; the class, four bars and the overlay at the original's aspect appear."
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait
    url, _, _ = live
    f = tmp_path/"phantom slice.png"; f.write_bytes(encode(tall_slice(5, "meningioma_tumor")))
    browser.set_window_size(1280, 1300)
    browser.get(url)
    wait = WebDriverWait(browser, 180)
    wait.until(lambda d: "Model model.keras" in d.find_element(By.ID, "model-info").text)   # the script ran under the CSP
    ActionChains(browser).send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "file"                  # first Tab stop: the file input
    browser.find_element(By.ID, "file").send_keys(str(f))
    wait.until(lambda d: d.find_element(By.ID, "result").is_displayed()
               and d.execute_script("return document.getElementById('overlay').naturalWidth") > 0)
    predicted = browser.find_element(By.ID, "predicted").text
    assert predicted in PHANTOM_CLASSES
    assert len(browser.find_elements(By.CSS_SELECTOR, "#probs li")) == 4
    size = lambda i: browser.execute_script(f"const e = document.getElementById('{i}'); return [e.naturalWidth, e.naturalHeight]")
    assert size("overlay") == size("original") == [96, 128]
    assert "Grad-CAM" in browser.find_element(By.ID, "method").text and "mixed" in browser.find_element(By.ID, "method").text
    assert "not a medical device" in browser.find_element(By.CLASS_NAME, "warning").text
    bg = browser.execute_script("return getComputedStyle(document.querySelector('.warning')).backgroundColor")
    assert bg == "rgb(255, 244, 214)", bg                                                  # the style sheet applied too
    browser.set_window_size(1280, browser.execute_script("return document.documentElement.scrollHeight") + 140)  # the whole page
    out = Path(os.environ.get("BTC_SCREENSHOT_DIR") or tmp_path); out.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(out/"serve_page.png"))
    (tmp_path/"notes.png").write_bytes(b"Patient notes, not an image.\n" * 9)
    browser.find_element(By.ID, "file").send_keys(str(tmp_path/"notes.png"))
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "not an image" in browser.find_element(By.ID, "error").text
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_ctrl_c_stops_cleanly(live):
    _, p, lines = live
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=120)
    assert p.returncode == 0, "".join(lines) + rest
    assert "stopped" in rest.splitlines() and "Traceback" not in rest, rest
