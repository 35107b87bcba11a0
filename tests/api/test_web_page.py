"""The web page in real headless Chromium (Playwright): drop a file, ask, watch the answer stream in."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import KEYS, REPO, Server, notes_text

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed "
                                "(scripts/setup.sh installs Debian's chromium)")

DROP = """([name, text]) => {
  const dt = new DataTransfer();
  dt.items.add(new File([text], name, {type: "text/plain"}));
  document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
}"""

COUNT_UPDATES = """() => {
  window.answerUpdates = 0;
  new MutationObserver(() => { window.answerUpdates += 1; })
    .observe(document.getElementById("answer"), {childList: true, characterData: true, subtree: true});
}"""


def test_drop_ask_stream_usage_and_citation(server: Server, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/")
            page.fill("#api-key", KEYS["alice"])
            page.dispatch_event("#api-key", "change")
            page.evaluate(DROP, ["guide.txt", notes_text("guide")])
            page.wait_for_selector("#documents li.selected", timeout=30_000)
            assert "guide.txt" in page.inner_text("#documents li.selected")
            assert "ready" in page.inner_text("#documents li.selected")

            page.evaluate(COUNT_UPDATES)
            page.fill("#question", "Which bucket holds record 42?")
            page.fill("#max-tokens", "24")
            page.click("#ask-button")
            page.wait_for_function("document.getElementById('usage').textContent.includes('prompt tokens')",
                                   timeout=30_000)
            answer = page.inner_text("#answer")
            assert answer.strip()
            assert page.evaluate("window.answerUpdates") >= 2  # arrived in pieces, not at once
            assert "cache hit" in page.inner_text("#usage")

            page.click("#ask-button")  # same question again: the document's pages come from the cache
            page.wait_for_function("Number(document.getElementById('usage').dataset.cachedTokens) > 0",
                                   timeout=30_000)
            assert page.inner_text("#answer") == answer

            page.click("#citations li a")
            page.wait_for_selector("#snippet pre", timeout=10_000)
            assert "guide note" in page.inner_text("#snippet pre")

            # A PDF through the file chooser: its citation opens the rendered page as an image.
            page.set_input_files("#file-input", str(REPO / "samples/docs/report.pdf"))
            page.wait_for_function("document.querySelector('#documents li.selected')?.textContent"
                                   ".includes('report.pdf')", timeout=30_000)
            page.fill("#question", "What does the report say?")
            page.click("#ask-button")
            page.wait_for_selector("#citations li a", timeout=30_000)
            assert "report.pdf" in page.inner_text("#citations")
            page.click("#citations li a")
            page.wait_for_function("document.querySelector('#snippet img')?.naturalWidth > 100",
                                   timeout=15_000)
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
