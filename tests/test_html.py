"""The citation page (attribot_rag.api.html) of real attributions, checked as text and in a real
browser: headless Chromium (Debian's package) driven by Playwright, launched the same way as
scripts/screenshot.py. Without Chromium these tests skip, saying how to install it; under
CI=true they fail instead."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import itertools
import json
import os
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from attribot_rag import AttributionResult, Attributor, Document
from attribot_rag.api.html import CSP, notebook_frame, render_html
from attribot_rag.cli import main

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("screenshot", ROOT / "scripts" / "screenshot.py")
shot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shot)

# Each payload would set window.__xss (or create an element) if the page let it through.
XSS_TEXT = (
    '<script>window.__xss = "script"</script> A note on towers. <img src=x onerror="window.__xss = \'img\'"> '
    '</style><b id="xss-b">bold</b> <a href="javascript:window.__xss = \'link\'">click</a> <svg onload="window.__xss = \'svg\'"></svg>'
)
XSS_ID = '"><img src=x onerror="window.__xss = \'id\'">'
QUESTION = "When was the Eiffel Tower completed? <script>window.__xss = 'question'</script>"
# Every element the page is made of: nothing from the payloads above may add to them.
PAGE_ELEMENTS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "script",
    "body",
    "header",
    "main",
    "section",
    "footer",
    "article",
    "div",
    "p",
    "span",
}
PAGE_ELEMENTS |= {"h1", "h2", "h3", "button", "ol", "li", "details", "summary", "pre", "dl", "dt", "dd"}
ANSWER = "The Eiffel Tower was completed in 1889. It is in Paris."
DOCUMENTS = [
    Document(
        id="eiffel",
        text="The Eiffel Tower is a wrought-iron tower in Paris. It was completed in 1889 for the World's Fair. It is 330 metres tall.",
    ),
    Document(id="banana", text="Bananas are yellow when ripe. They grow in tropical regions."),
    Document(id=XSS_ID, text=XSS_TEXT),
]


@pytest.fixture(scope="module")
def results(attributor: Attributor) -> list[AttributionResult]:
    """The same answer attributed exactly (every sentence scored) and hierarchically keeping
    one document (the others' sentences unscored): one page shows both."""
    return [
        attributor.attribute(QUESTION, DOCUMENTS, ANSWER, method="exact"),
        attributor.attribute(QUESTION, DOCUMENTS, ANSWER, method="hierarchical", keep_documents=1),
    ]


@pytest.fixture(scope="module")
def page_html(results: list[AttributionResult]) -> str:
    return render_html(results, [QUESTION, None])


@pytest.fixture(scope="module")
def browser():
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed: .venv/bin/pip install -e '.[test]'"
    if reason is None and not os.access(shot.CHROMIUM, os.X_OK):
        reason = f"no Chromium at {shot.CHROMIUM}: {shot.INSTALL_HINT}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true, so the browser tests must run, but {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = shot.launch(playwright)
        yield browser
        browser.close()


class Opened:
    """A page opened from a file, as a reader opens it, with every request and error it made."""

    def __init__(self, browser, html: str, path: Path, viewport: tuple[int, int] = (1200, 900)):
        path.write_text(html, encoding="utf-8")
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.goto(path.as_uri())
        self.url = path.as_uri()

    def check_clean(self) -> None:
        """No request beyond the page itself, no script error, no CSP violation."""
        assert [u for u in self.requests if u != self.url] == []
        assert self.errors == []
        self.context.close()

    def highlighted(self) -> set[str]:
        return set(self.page.eval_on_selector_all(".hl", "els => els.map(e => e.id)"))


class Tags(HTMLParser):
    """The element and attribute names of a page, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.add(tag)
        self.attributes.update(name for name, _ in attrs)


def marker_targets(result: AttributionResult) -> list[str]:
    """The id of the sentence each ``[n]`` marker of the answer cites, in the answer's order."""
    citations = result.citations()
    sentence_of = {source.number: source.sentence for source in citations.sources}
    return [f"r0-s{sentence_of[m.number]}" for claim in citations.claims for m in claim.markers]


def test_every_text_is_escaped(page_html: str) -> None:
    for raw in ("<script>window.__xss", "<img src=x", '</style><b id="xss-b">', "<svg", '<a href="javascript:'):
        assert raw not in page_html
    assert "&lt;script&gt;window.__xss = &quot;script&quot;&lt;/script&gt;" in page_html
    assert "&quot;&gt;&lt;img src=x onerror=" in page_html  # the id, also inside attributes
    tags = Tags()
    tags.feed(page_html)
    assert tags.names <= PAGE_ELEMENTS
    assert not {
        a for a in tags.attributes if a.startswith("on") or a in ("src", "href", "action", "formaction", "style")
    }  # no handlers, links or resources


def test_only_the_page_s_own_style_and_script_may_run(page_html: str) -> None:
    styles = re.findall(r"<style>(.*?)</style>", page_html, re.DOTALL)
    scripts = re.findall(r"<script>(.*?)</script>", page_html, re.DOTALL)
    assert len(styles) == 1 and len(scripts) == 1

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert f'content="{CSP}"' in page_html
    assert CSP.startswith("default-src 'none';")
    assert f"style-src {digest(styles[0])};" in CSP and f"script-src {digest(scripts[0])};" in CSP


def test_to_html_and_the_notebook_view(results: list[AttributionResult]) -> None:
    result = results[0]
    assert result.to_html(QUESTION) == render_html([result], [QUESTION])
    frame = result._repr_html_()
    assert frame.startswith('<iframe sandbox="allow-scripts" srcdoc="') and "<script>window.__xss" not in frame
    with pytest.raises(ValueError, match="2 headings for 1 results"):
        render_html(result, ["a", "b"])


def test_hovering_a_marker_or_an_answer_sentence_highlights_what_it_cites(
    browser, page_html, results, tmp_path
) -> None:
    opened = Opened(browser, page_html, tmp_path / "page.html")
    page, citations = opened.page, results[0].citations()
    cited = marker_targets(results[0])
    assert cited, "the example must cite something"
    markers = page.locator("#r0 .marker")
    assert markers.count() == len(cited)
    for i, target in enumerate(cited):
        markers.nth(i).hover()
        assert opened.highlighted() == {target}
        assert "nats on this answer sentence" in page.inner_text("#detail")
    first_claim = page.locator("#r0 .claim").first
    first_claim.hover()
    assert opened.highlighted() == {f"r0-s{s.sentence}" for s in citations.sources if 0 in s.claims}
    page.mouse.move(1, 1)
    assert opened.highlighted() == set()
    opened.check_clean()


def test_keyboard_reaches_markers_and_sentences(browser, page_html, results, tmp_path) -> None:
    opened = Opened(browser, page_html, tmp_path / "page.html")
    page = opened.page
    for _ in range(10):  # Tab through the first answer sentence to its marker
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('marker')"):
            break
    cited = marker_targets(results[0])[0]
    assert opened.highlighted() == {cited}
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")  # scrolls the cited sentence into view
    box = page.locator(f"#{cited}").bounding_box()
    assert 0 <= box["y"] < 900
    span = results[0].sentences[1]
    page.focus("#r0-s1")
    detail = page.inner_text("#detail")
    assert f"score {span.score:+.3f}".replace("-", "\u2212") in detail and span.doc_id in detail
    opened.check_clean()


def test_tinted_sentences_are_the_scored_ones(browser, page_html, results, tmp_path) -> None:
    opened = Opened(browser, page_html, tmp_path / "page.html")
    for r, result in enumerate(results):
        shown = opened.page.eval_on_selector_all(
            f"#r{r} .sent",
            "els => els.map(e => [e.id, getComputedStyle(e).backgroundColor, e.classList.contains('unscored'), e.querySelector('.v').textContent])",
        )
        assert len(shown) == len(result.sentences)
        tinted = [s for s in shown if s[1] != "rgba(0, 0, 0, 0)"]
        assert len(tinted) == sum(s.score is not None for s in result.sentences)
        for (_, _, unscored, number), span in zip(shown, result.sentences, strict=True):
            assert unscored == (span.score is None)
            assert number == ("n/a" if span.score is None else f"{span.score:+.3f}".replace("-", "\u2212"))
    assert any(s.score is None for s in results[1].sentences), (
        "hierarchical with one document kept leaves sentences unscored"
    )
    # negative scores get their own hue: a minus and a plus tint of the same strength differ
    colours = opened.page.eval_on_selector_all(
        ".legend .sw", "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )
    assert len(set(colours)) == len(colours) == 10
    opened.check_clean()


def test_untrusted_text_runs_nothing_and_creates_no_element(browser, page_html, tmp_path) -> None:
    opened = Opened(browser, page_html, tmp_path / "page.html")
    page = opened.page
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.evaluate("document.querySelectorAll('#xss-b, b, img, svg, a, iframe, object, embed').length") == 0
    assert page.evaluate("document.scripts.length") == 1
    assert XSS_TEXT in page.inner_text("#r0-d2") and QUESTION in page.inner_text("#r0 h2")
    opened.check_clean()

    # The notebook view: the same page inside a sandboxed iframe still works and stays inert.
    framed = Opened(browser, notebook_frame(page_html), tmp_path / "frame.html")
    frame = framed.page.frame_locator("iframe")
    frame.locator("#r0 .marker").first.hover()
    assert frame.locator(".hl").count() >= 1
    assert framed.page.frames[1].evaluate("typeof window.__xss") == "undefined"
    framed.check_clean()


def test_a_100_sentence_context_scrolls_and_stays_legible(browser, attributor: Attributor, tmp_path) -> None:
    documents = [
        Document(id=f"doc-{d}", text=" ".join(f"Bridge {10 * d + k} opened in {1800 + 10 * d + k}." for k in range(10)))
        for d in range(10)
    ]
    result = attributor.attribute(
        "When did bridge 42 open?",
        documents,
        "Bridge 42 opened in 1842.",
        method="hierarchical",
        keep_documents=1,
        doc_method="fast",
    )
    assert len(result.sentences) == 100
    opened = Opened(browser, result.to_html(), tmp_path / "long.html", viewport=(1000, 800))
    page = opened.page
    size = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth, document.documentElement.scrollHeight]"
    )
    assert size[0] <= size[1] and size[2] > 2 * 800  # no sideways overflow; long pages scroll
    assert page.evaluate("parseFloat(getComputedStyle(document.querySelector('.sent')).fontSize)") >= 15
    boxes = page.eval_on_selector_all(
        ".doc", "els => els.map(e => e.getBoundingClientRect()).map(r => [r.top, r.bottom])"
    )
    assert all(
        bottom <= next_top for (_, bottom), (next_top, _) in itertools.pairwise(boxes)
    )  # documents do not overlap
    page.evaluate("window.scrollTo(0, 3000)")
    assert page.locator(".answer-box").bounding_box()["y"] == 0  # the answer stays in view
    opened.check_clean()


def test_documents_the_llm_did_not_read_are_listed_and_numbered_as_given(attributor: Attributor) -> None:
    documents = [DOCUMENTS[0], DOCUMENTS[1], Document(id="paris", text="Paris is the capital of France.")]
    messages = [
        {"role": "system", "content": "Answer from the context."},
        {
            "role": "user",
            "content": f"Context:\n{documents[0].text}\n\n{documents[2].text}\n\nQuestion: When was the Eiffel Tower completed?",
        },
    ]
    result = attributor.attribute_messages(messages, "It was completed in 1889.", documents, method="exact")
    page = result.to_html()
    assert result.unseen_documents == [1]
    assert "Not scored, not in the prompt the LLM read: document [2]." in page
    assert 'id="r0-d0"' in page and 'id="r0-d2"' in page and 'id="r0-d1"' not in page
    paris = page[page.index('id="r0-d2"') :]
    assert "Paris is the capital of France." in paris[: paris.index("</article>")]


@pytest.mark.model
def test_cli_writes_the_page(tmp_path) -> None:
    request = {"question": QUESTION, "documents": [{"text": d.text, "id": d.id} for d in DOCUMENTS], "answer": ANSWER}
    (tmp_path / "q.json").write_text(json.dumps(request), encoding="utf-8")
    out = tmp_path / "out.html"
    assert (
        main(["attribute", "--input", str(tmp_path / "q.json"), "--method", "exact", "--json", "--html", str(out)]) == 0
    )
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "When was the Eiffel Tower completed? &lt;script&gt;" in page


def test_screenshot_script(browser, page_html, tmp_path) -> None:
    shot.screenshot(browser, page_html, tmp_path / "shot.png", width=800, height=600)
    header = (tmp_path / "shot.png").read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (800, 600)
