"""Shared fixtures of the pytest suite: phantom image sets, folder fingerprints, the report checks and a `btc` runner.

Fixtures, not imports: a test asks for `phantom`, `fingerprint`, `report_check` or `btc` by naming it as an argument.
"""
import base64, hashlib, os, re, subprocess, sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the environment of every `btc` subprocess: quiet TensorFlow, no warnings, and no ImageNet weights to be found
BTC_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore", KERAS_HOME="/nonexistent-keras-home")


def run_btc(*args, timeout=300, env=None, **kw):
    "Run `btc ARGS` as a subprocess (`python -m brain_tumor_cls.cli`); returns the CompletedProcess (text)."
    return subprocess.run([sys.executable, "-m", "brain_tumor_cls.cli", *map(str, args)], env=env or BTC_ENV,
                          text=True, capture_output=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def btc():
    "The `btc` runner: `btc('audit', data, '--out', out)` -> CompletedProcess."
    return run_btc


def checksums(root):
    "sha256 of every regular file and the target of every symlink under `root` (symlinks not followed)."
    out = {}
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            p = os.path.join(dp, n)
            if os.path.islink(p): out[p] = "link->" + os.readlink(p)
            elif os.path.isfile(p): out[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            else: out[p] = "dir"
    return out


@pytest.fixture(scope="session")
def fingerprint():
    "`fingerprint(folder)` -> {path: sha256 | 'dir' | 'link->target'}: compare before/after to prove nothing changed."
    return checksums


@pytest.fixture(scope="session")
def phantom(tmp_path_factory):
    """`phantom(n_per_class=8, size=96, seed=0, dirty=False, layout="flat")` -> (images folder, manifest).

    Sets are generated once per session and shared: treat them as read-only (copy before changing anything)."""
    from brain_tumor_cls.phantom import make_phantom_dataset
    root, cache = tmp_path_factory.mktemp("phantoms"), {}
    def make(n_per_class=8, size=96, seed=0, dirty=False, layout="flat"):
        key = (n_per_class, size, seed, dirty, layout)
        if key not in cache:
            d = root/"-".join(map(str, key))
            cache[key] = (d/"images", make_phantom_dataset(d, n_per_class=n_per_class, size=size, seed=seed, dirty=dirty,
                                                           layout=layout, progress=False))
        return cache[key]
    return make


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__(); self.imgs, self.ids, self.urls = [], [], []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img": self.imgs.append(a.get("src", ""))
        if "id" in a: self.ids.append(a["id"])
        for k in ("href", "src"):
            if k in a and not a[k].startswith(("#", "data:")): self.urls.append(a[k])


def check_report_html(html: str, sections=None):
    "Self-contained (PNG data: URIs only, no script, no external URL), decodable images, the given sections present."
    c = _Collect(); c.feed(html)
    assert c.imgs, "no images in the report"
    for src in c.imgs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 100
    assert not c.urls, f"external references: {c.urls[:5]}"
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", re.sub(r'data:[^"]+', "", html)), "an external URL"
    assert "<script" not in html.lower() and "<link" not in html.lower()
    for sid in sections or []: assert sid in c.ids, f"section {sid} missing"
    assert "could not be built" not in html, re.findall(r"could not be built: [^<]*", html)   # every section renders
    return c


@pytest.fixture(scope="session")
def report_check():
    "`report_check(html, sections=None)`: the assertions every report must pass; returns the parsed tags."
    return check_report_html


# the smallest settings that still run every stage: 75 px, one epoch of the head on a frozen random backbone
TINY = ["--image-size", "75", "--epochs", "1", "--batch-size", "16", "--weights", "none", "--scratch", "off", "--gallery", "4"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, phantom):
    "A finished tiny `btc run` (dirty phantom set, umask 022): (data folder, run folder). Read-only: copy it to change it."
    data, _ = phantom(n_per_class=6, size=96, seed=1, dirty=True)
    out = tmp_path_factory.mktemp("trained")/"run"
    r = run_btc("run", data, "--out", out, "--quiet", *TINY, preexec_fn=lambda: os.umask(0o022))
    assert r.returncode == 0, r.stderr[-3000:]
    return data, out


@pytest.fixture
def run_copy(trained_run, tmp_path):
    "A private copy of `trained_run`'s folder: (data folder, run folder)."
    import shutil
    data, out = trained_run
    return data, Path(shutil.copytree(out, tmp_path/"run", symlinks=True))


@pytest.fixture(scope="session")
def browser():
    "Headless Chromium driven by Selenium (Debian's chromium + chromium-driver, or Google Chrome); skips when absent."
    import shutil
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    drv = shutil.which("chromedriver")
    if not (exe and drv): pytest.skip("no headless Chromium here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    o = webdriver.ChromeOptions(); o.binary_location = exe
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"]: o.add_argument(a)
    d = webdriver.Chrome(service=Service(drv), options=o)
    yield d
    d.quit()
