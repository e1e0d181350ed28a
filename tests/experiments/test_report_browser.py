"""report.html opened in a real browser (issue 40): headless Chromium, driven by Playwright, loads the page of a
sweep whose set names are hostile (an image of a local file, a link, raw HTML). The page makes no request outside
itself, every plot decodes, and no name renders as an element.

Needs Debian's `chromium` and the `playwright` package (`TELL_BROWSER=1 bash scripts/setup.sh` installs both);
skipped, saying which is missing, where either is."""

from __future__ import annotations

import shutil

import pytest

from experiments.test_report import ones_zeros, report, write_sweep
from experiments.test_report_escaping import rename_set

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(TELL_BROWSER=1 bash scripts/setup.sh installs it)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (TELL_BROWSER=1 bash scripts/setup.sh "
                                "installs Debian's chromium)")

# Chromium's own background traffic off, as this machine's closed network refuses it (env notes)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def test_the_shared_page_requests_nothing_outside_itself_and_shows_every_name_as_text(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG the user's own picture")
    name = (f"![x](..%2F..%2F..%2F..%2F..%2F..{str(secret).replace('/', '%2F')})"
            "<img src=https://example.invalid/y onerror=alert(1)><script>alert(2)</script>")
    claim = "[open](https://example.invalid/x) | <iframe src=https://example.invalid/z></iframe>"
    spec = {"model": "m", "seeds": [0, 1, 2],
            "controls": [{"id": "C1", "claim": claim, "method": "tell", "set": name, "at_least": 2.0}]}
    folder = write_sweep(tmp_path / "sw", ones_zeros(range(3)), spec=spec)
    rename_set(folder, "tsk", name)
    md, _ = report(folder)
    page_url = (folder / "report.html").resolve().as_uri()

    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(page_url)
        page.wait_for_load_state("load")
        found = page.evaluate("""() => ({
            images: [...document.images].map(i => ({src: i.src.slice(0, 22), ok: i.complete && i.naturalWidth > 0})),
            links: document.querySelectorAll('a, script, iframe, object, embed, link, form').length,
            text: document.body.innerText})""")
        browser.close()

    assert [u for u in requests if u != page_url and not u.startswith("data:")] == [], requests
    assert not dialogs
    assert found["links"] == 0
    assert len(found["images"]) == md.count("](report_files/") > 0
    assert all(i["src"] == "data:image/png;base64," and i["ok"] for i in found["images"]), found["images"]
    shown = " ".join(found["text"].split())
    for text in (name, claim):
        assert " ".join(text.split()) in shown, text
