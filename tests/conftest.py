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
    return c


@pytest.fixture(scope="session")
def report_check():
    "`report_check(html, sections=None)`: the assertions every report must pass; returns the parsed tags."
    return check_report_html
