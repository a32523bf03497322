"""Screenshot of the citation page for the README (docs/demo.png), made by the system Chromium.

    .venv/bin/python scripts/screenshot.py                    # runs `attribot-rag demo --html`, then shoots it
    .venv/bin/python scripts/screenshot.py --page page.html   # shoots a page you already have

The first [n] marker is focused and activated with the keyboard (Enter), as a reader would:
the page scrolls to the cited sentence, which is outlined, and the detail line shows its score.
tests/test_html.py launches Chromium through ``launch`` below, so the tests and the screenshot
use the same browser set-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

# Debian's package (scripts/install_chromium.sh); ATTRIBOT_CHROMIUM points elsewhere.
CHROMIUM = os.environ.get("ATTRIBOT_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = (
    "install it with `sudo bash scripts/install_chromium.sh` (Debian's chromium package), or set ATTRIBOT_CHROMIUM"
)


def launch(playwright):
    """A headless Chromium from the system binary (Playwright's own browsers are not used)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


def screenshot(browser, page_html: str, out: Path, width: int = 1280, height: int = 1000) -> None:
    """Open ``page_html`` in ``browser``, activate its first marker by keyboard, save ``out``."""
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        page.set_content(page_html)
        if page.locator(".marker").count():
            page.focus(".marker")
            page.keyboard.press("Enter")
        page.screenshot(path=str(out))
    finally:
        page.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", type=Path, help="an HTML page to shoot (default: run the demo and shoot its page)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "demo.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--questions", type=int, default=3, help="demo questions on the page")
    args = parser.parse_args(argv)
    if not os.access(CHROMIUM, os.X_OK):
        print(f"screenshot.py: no Chromium at {CHROMIUM}: {INSTALL_HINT}", file=sys.stderr)
        return 1
    if args.page is not None:
        page_html = args.page.read_text(encoding="utf-8")
    else:
        from attribot_rag.cli import main as attribot_rag

        with tempfile.TemporaryDirectory() as folder:
            page = Path(folder) / "demo.html"
            if attribot_rag(["demo", "--html", str(page), "--questions", str(args.questions)]) != 0:
                return 1
            page_html = page.read_text(encoding="utf-8")
    from playwright.sync_api import sync_playwright

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        screenshot(browser, page_html, args.out, args.width, args.height)
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
