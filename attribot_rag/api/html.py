"""One self-contained HTML page that shows attributions: the answer with ``[n]`` markers that
highlight the sentences they cite, every document tinted by score, and the settings.

The page is safe to open on untrusted documents: every text is escaped, nothing is rendered
as a link, and a strict Content-Security-Policy allows only this module's own inline style
and script (by hash), with no network access at all. It works without its script too (the
scores are printed as numbers; the script adds highlighting and the detail line).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from .._version import __version__
from .citations import DEFAULT_MIN_SCORE, DEFAULT_MIN_SHARE, UNSUPPORTED, Citations
from .scores import SpanScore

if TYPE_CHECKING:  # results imports this module on first use (to_html): no cycle at run time
    from .results import AttributionResult

LEVELS = 5  # tint steps on each side of the diverging scale

_CSS = """
:root { color-scheme: light; --ink: #16181d; --muted: #5c6370; --line: #d5d9e0; --focus: #6a1b9a; }
* { box-sizing: border-box; }
body { margin: 0; padding: 0 0 6rem; font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink); background: #fff; }
.page-head, main { max-width: 76rem; margin: 0 auto; padding: 0 1.25rem; }
.page-head h1 { font-size: 1.35rem; margin: 1rem 0 .25rem; }
.legend { display: flex; flex-wrap: wrap; gap: .35rem .9rem; align-items: center; font-size: .85rem; color: var(--muted); margin: .25rem 0 .75rem; }
.legend .scale { display: inline-flex; gap: 2px; align-items: center; }
.legend .sample { margin-right: .3em; }
.legend .sw { display: inline-block; min-width: 1.6rem; padding: 0 .25rem; text-align: center; border-radius: 3px; color: var(--ink); }
.result { border-top: 2px solid var(--line); padding: .5rem 0 1rem; }
.result > h2 { font-size: 1.2rem; margin: .6rem 0; overflow-wrap: anywhere; }
.answer-box { position: sticky; top: 0; z-index: 2; max-height: 40vh; overflow-y: auto; background: #f6f8fb; border: 1px solid var(--line); border-radius: 6px; padding: .6rem .9rem; margin-bottom: .75rem; box-shadow: 0 2px 6px rgba(0,0,0,.06); }
.label { font-size: .75rem; font-weight: 600; letter-spacing: .04em; text-transform: uppercase; color: var(--muted); }
.answer { font-size: 1.1rem; margin: .1rem 0 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.claim { border-radius: 3px; cursor: default; }
.claim.active { background: #fff3b0; }
.marker { font: inherit; font-size: .85em; font-weight: 600; color: #0b4f9c; background: #e3edf9; border: 1px solid #9dbbe3; border-radius: 4px; padding: 0 .3em; margin-left: .15em; cursor: pointer; line-height: 1.3; vertical-align: .1em; }
.marker.active { background: #0b4f9c; color: #fff; }
.sources { margin: .5rem 0 .75rem; padding-left: 0; list-style: none; font-size: .92rem; }
.sources li { margin: .15rem 0; padding: .1rem .4rem; border-radius: 4px; overflow-wrap: anywhere; }
.sources li.active { background: #fff3b0; }
.sources .num { font-weight: 600; color: #0b4f9c; }
.docs h3, .prompt summary { font-size: 1rem; margin: .75rem 0 .4rem; }
.note { margin: 0 0 .5rem; color: var(--muted); }
.doc { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .9rem .6rem; margin: 0 0 .6rem; }
.doc-head { display: flex; flex-wrap: wrap; gap: .25rem .75rem; align-items: baseline; margin-bottom: .25rem; }
.doc-head .num { font-weight: 700; color: var(--muted); }
.doc-head .doc-id { font-weight: 600; overflow-wrap: anywhere; }
.doc-head .rank { font-size: .85rem; color: var(--muted); }
.doc-score { border-radius: 3px; padding: 0 .35rem; font-size: .9rem; }
.doc-text { margin: 0; line-height: 1.85; white-space: pre-wrap; overflow-wrap: anywhere; }
.sent, .sample { border-radius: 3px; padding: .05em .1em; scroll-margin: 12rem 0 6rem; -webkit-box-decoration-break: clone; box-decoration-break: clone; }
.unsupported, .mismatch { font-size: .8em; font-weight: 600; color: #8a4b00; background: #fff1dc; border: 1px dashed #d49a4a; border-radius: 4px; padding: 0 .35em; margin-left: .3em; vertical-align: .1em; }
.unscored { color: var(--muted); text-decoration: underline dotted #9aa1ad; text-underline-offset: .25em; }
.neg { text-decoration: underline dashed #b35806; text-underline-offset: .25em; }
.v { font: 600 .72em/1 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; color: #3b4250; margin-left: .25em; white-space: nowrap; }
.unscored .v { font-weight: 400; color: #7a818c; }
.p1 { background: #e9f1fb; } .p2 { background: #cfe0f5; } .p3 { background: #a9c8ec; } .p4 { background: #82aee1; } .p5 { background: #5d95d5; }
.n1 { background: #fdf0e3; } .n2 { background: #fbdab9; } .n3 { background: #f7bf8b; } .n4 { background: #f2a05e; } .n5 { background: #ea8535; }
.hl, .hl-sample { outline: 3px solid var(--ink); outline-offset: 1px; }
.doc.has-hl { border-color: var(--ink); }
[tabindex]:focus-visible, .marker:focus-visible, summary:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.sent.hl:focus-visible { outline: 3px solid var(--focus); box-shadow: 0 0 0 6px var(--ink); }
.prompt pre { max-height: 24rem; overflow: auto; background: #f6f8fb; border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; font-size: .85rem; white-space: pre-wrap; overflow-wrap: anywhere; }
.settings { font-size: .88rem; color: #333a45; border-top: 1px dashed var(--line); margin-top: .75rem; padding-top: .4rem; }
.settings dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; margin: .25rem 0 0; }
.settings dt { font-weight: 600; }
.settings dd { margin: 0; overflow-wrap: anywhere; font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .95em; }
.detail { position: fixed; left: 0; right: 0; bottom: 0; z-index: 3; min-height: 2.6rem; max-height: 30vh; overflow-y: auto; margin: 0; padding: .55rem 1.25rem; background: #16181d; color: #fff; font-size: .95rem; overflow-wrap: anywhere; }
.detail:empty::before { content: "Hover over or focus (Tab) a [n] marker, an answer sentence or a context sentence for its details."; color: #c3c8d0; }
.page-foot { max-width: 76rem; margin: 1rem auto 0; padding: 0 1.25rem; font-size: .85rem; color: var(--muted); }
"""

# Hover or focus on an element with data-cites highlights its targets; clicking a marker
# scrolls to the first one; hover or focus on anything with data-tip shows it in the detail
# line (as text, never as markup).
_JS = """
(function () {
  "use strict";
  var hovered = null, focused = null, detail = document.getElementById("detail");
  function cites(el) { return (el.getAttribute("data-cites") || "").split(" ").filter(Boolean); }
  function refresh() {
    document.querySelectorAll(".hl, .active, .has-hl").forEach(function (el) { el.classList.remove("hl", "active", "has-hl"); });
    [hovered, focused].forEach(function (el) {
      if (!el) { return; }
      el.classList.add("active");
      cites(el).forEach(function (id) {
        var target = document.getElementById(id);
        if (target) { target.classList.add("hl"); target.closest(".doc").classList.add("has-hl"); }
      });
    });
    var shown = focused || hovered;
    detail.textContent = shown ? shown.getAttribute("data-tip") || "" : "";
  }
  function owner(event) { return event.target.closest ? event.target.closest("[data-tip]") : null; }
  document.addEventListener("mouseover", function (e) { hovered = owner(e); refresh(); });
  document.documentElement.addEventListener("mouseleave", function () { hovered = null; refresh(); });
  document.addEventListener("focusin", function (e) { focused = owner(e); refresh(); });
  document.addEventListener("focusout", function () { focused = null; refresh(); });
  document.addEventListener("click", function (e) {
    var marker = e.target.closest ? e.target.closest("[data-cites]") : null;
    var first = marker && document.getElementById(cites(marker)[0]);
    if (first) { first.scrollIntoView({ block: "nearest" }); }
  });
})();
"""


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


# No network at all (default-src 'none'): only this style and this script run.
CSP = f"default-src 'none'; style-src {_hash(_CSS)}; script-src {_hash(_JS)}; base-uri 'none'; form-action 'none'"


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _number(score: float | None) -> str:
    """A score as the page shows it, with a real minus sign so the sign is easy to read."""
    return "n/a" if score is None else f"{score:+.3f}".replace("-", "\u2212")


def _tint(score: float, scale: float) -> str:
    """The tint class of a score on the diverging scale: p1..p5 positive, n1..n5 negative."""
    level = min(LEVELS, max(1, math.ceil(LEVELS * abs(score) / scale))) if scale > 0 else 1
    return f"{'n' if score < 0 else 'p'}{level}"


def _scale(spans: Sequence[SpanScore]) -> float:
    return max((abs(s.score) for s in spans if s.score is not None), default=0.0)


def _ranks(spans: Sequence[SpanScore]) -> dict[int, int]:
    scored = [(s.score, i) for i, s in enumerate(spans) if s.score is not None]
    return {i: rank for rank, (_, i) in enumerate(sorted(scored, key=lambda pair: -pair[0]), start=1)}


def _where(result: AttributionResult, j: int) -> str:
    """Where sentence ``j`` of the result lies, as the page numbers documents and sentences."""
    sentence = result.sentences[j]
    if sentence.part == "title":
        return f"document [{sentence.doc_index + 1}] {sentence.doc_id}, title"
    k = sum(s.doc_index == sentence.doc_index and s.part == "text" for s in result.sentences[:j])
    return f"document [{sentence.doc_index + 1}] {sentence.doc_id}, sentence {k + 1}"


def _answer(result: AttributionResult, citations: Citations, prefix: str) -> str:
    """The answer, each claim followed by the markers of the sentences it cites, or by a mark
    saying that no sentence supports it."""
    sources = {source.number: source for source in citations.sources}
    parts, cursor = [], 0
    for claim in citations.claims:
        ids = " ".join(f"{prefix}-s{sources[m.number].sentence}" for m in claim.markers)
        score = f"; its best sentence scores {_number(claim.score)} nats" if claim.score is not None else ""
        if claim.supported:
            cited = "; ".join(
                f"[{m.number}] {sources[m.number].span.doc_id} ({_number(m.score)})" for m in claim.markers
            )
            tip = f"Answer sentence {claim.index + 1} leans on {cited}"
        else:
            tip = f"Answer sentence {claim.index + 1}: {UNSUPPORTED} (no sentence clears the citation bar{score})"
        parts.append(_e(result.answer[cursor : claim.start]))
        parts.append(
            f'<span class="claim" tabindex="0" data-cites="{ids}" data-tip="{_e(tip)}">{_e(claim.text)}</span>'
        )
        for m in claim.markers:
            source = sources[m.number]
            marker_tip = f"[{m.number}] {_where(result, source.sentence)}: {_number(m.score)} nats on this answer sentence ({_number(source.span.score)} on the whole answer)"
            warning = ""
            if m.mismatch:
                marker_tip += f"; cited, but {m.mismatch}"
                warning = f'<span class="mismatch" title="{_e(m.mismatch)}">cited, but {_e(m.mismatch)}</span>'
            parts.append(
                f'<button type="button" class="marker" data-cites="{prefix}-s{source.sentence}" data-tip="{_e(marker_tip)}"'
                f' aria-label="source {m.number}">[{m.number}]</button>{warning}'
            )
        if not claim.supported:
            parts.append(f'<span class="unsupported" title="{_e(tip)}">{UNSUPPORTED}</span>')
        cursor = claim.end
    parts.append(_e(result.answer[cursor:]))
    return "".join(parts)


def _sources(result: AttributionResult, citations: Citations, prefix: str) -> str:
    if not citations.sources:
        return '<p class="sources">No context sentence clears the citation bar: the answer is not supported by the documents.</p>'
    items = []
    for source in citations.sources:
        per_claim = [
            (claim.index, m.score) for claim in citations.claims for m in claim.markers if m.number == source.number
        ]
        scores = ", ".join(f"{_number(score)} on answer sentence {claim + 1}" for claim, score in per_claim)
        tip = f"[{source.number}] {_where(result, source.sentence)}: {scores} (nats)"
        items.append(
            f'<li tabindex="0" data-cites="{prefix}-s{source.sentence}" data-tip="{_e(tip)}"><span class="num">[{source.number}]</span> '
            f'{_e(source.span.doc_id)}: {_e(source.span.text)} <span class="v">{scores}</span></li>'
        )
    return f'<ol class="sources" aria-label="sources">{"".join(items)}</ol>'


def _document(
    result: AttributionResult,
    p: int,
    prefix: str,
    scales: tuple[float, float],
    ranks: tuple[dict[int, int], dict[int, int]],
) -> str:
    """Document ``result.documents[p]``: its number (in the input), id, score and rank, and its
    text with every sentence tinted and numbered."""
    document, (doc_scale, sentence_scale), (doc_ranks, sentence_ranks) = result.documents[p], scales, ranks
    d = document.doc_index
    own = [(j, s) for j, s in enumerate(result.sentences) if s.doc_index == d]
    claims = len(result.answer_sentences)
    if document.score is None:
        head_score = '<span class="v">not scored</span>'
    else:
        head_score = f'<span class="doc-score {_tint(document.score, doc_scale)}">score <span class="v">{_number(document.score)}</span></span>'
        head_score += f'<span class="rank">rank {doc_ranks[p]} of {len(doc_ranks)} documents</span>'

    def span(k: int, j: int, sentence: SpanScore, text: str) -> str:
        where = f"document [{d + 1}] {sentence.doc_id}, " + (
            "title" if sentence.part == "title" else f"sentence {k + 1} of {len(own)}"
        )
        if sentence.score is None:
            classes, tip = "sent unscored", f"{where}: not scored by {result.method}"
        else:
            classes = f"sent {_tint(sentence.score, sentence_scale)}{' neg' if sentence.score < 0 else ''}"
            tip = f"{where}: score {_number(sentence.score)} nats, rank {sentence_ranks[j]} of {len(sentence_ranks)} sentences"
            if claims > 1:
                per_claim = [a.sentences[j].score for a in result.answer_sentences]
                tip += "; per answer sentence: " + ", ".join(f"{c + 1}: {_number(s)}" for c, s in enumerate(per_claim))
        return (
            f'<span class="{classes}" id="{prefix}-s{j}" tabindex="0" data-tip="{_e(tip)}">{_e(text)}'
            f'<span class="v">{_number(sentence.score)}</span></span>'
        )

    titles = [span(0, j, s, s.text) for j, s in own if s.part == "title"]
    own = [(j, s) for j, s in own if s.part == "text"]
    body, cursor = [], 0
    for k, (j, sentence) in enumerate(own):
        start = max(sentence.start, cursor)
        body.append(_e(document.text[cursor:start]))
        body.append(span(k, j, sentence, document.text[start : sentence.end]))
        cursor = max(cursor, sentence.end)
    body.append(_e(document.text[cursor:]))
    return (
        f'<article class="doc" id="{prefix}-d{d}"><div class="doc-head"><span class="num">Document [{d + 1}]</span>'
        f'<span class="doc-id">{_e(document.doc_id)}</span>{"".join(titles)}{head_score}</div>'
        f'<p class="doc-text">{"".join(body)}</p></article>'
    )


def _settings(result: AttributionResult) -> str:
    """The footer of one result: what produced it and how long it took."""
    s = result.settings
    rows: list[tuple[str, str]] = [("method", s.method), ("model", s.model)]
    if s.target:
        rows.append(("target", s.target))
    options = {**s.options, **({"budget": s.budget} if s.budget else {})}
    rows += [
        ("settings", json.dumps(options, sort_keys=True, default=str)),
        ("device, dtype", f"{s.device}, {s.dtype}"),
        ("version", s.version),
    ]
    timings = ", ".join(f"{k} {v.wall_seconds:.2f} s ({v.cpu_seconds:.2f} s CPU)" for k, v in result.timings.items())
    total = sum(v.wall_seconds for v in result.timings.values())
    rows.append(("timings", f"{timings} (total {total:.2f} s wall clock)"))
    rows.append(("log p(answer | prompt)", f"{result.full_logprob:.3f} nats"))
    if result.context_gain is not None:
        rows.append(
            (
                "context gain",
                f"{_number(result.context_gain)} nats: log p(answer | prompt) \u2212 log p(answer | prompt without any document)",
            )
        )
    cells = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f'<footer class="settings"><span class="label">Settings</span><dl>{cells}</dl></footer>'


def _result(result: AttributionResult, index: int, heading: str | None, citations: Citations) -> str:
    prefix = f"r{index}"
    scales = (_scale(result.documents), _scale(result.sentences))
    ranks = (_ranks(result.documents), _ranks(result.sentences))
    scored = sum(s.score is not None for s in result.sentences)
    documents = "".join(_document(result, p, prefix, scales, ranks) for p in range(len(result.documents)))
    gain = "" if result.context_gain is None else f" \u00b7 context gain {_number(result.context_gain)} nats"
    left_out = [
        (result.dropped_documents, "dropped to fit the model's context window"),
        (result.unseen_documents, "not in the prompt the LLM read"),
    ]
    notes = "".join(
        f'<p class="note">Not scored, {why}: {", ".join(f"document [{i + 1}]" for i in indices)}.</p>'
        for indices, why in left_out
        if indices
    )
    return (
        f'<section class="result" id="{prefix}" aria-label="attribution {index + 1}">'
        f"<h2>{_e(heading or f'Answer {index + 1}')}</h2>"
        f'<div class="answer-box"><span class="label">Answer{gain}</span><p class="answer">{_answer(result, citations, prefix)}</p></div>'
        f"{_sources(result, citations, prefix)}"
        f'<div class="docs"><h3>Context: {len(result.documents)} documents, {len(result.sentences)} sentences, {scored} scored</h3>{notes}{documents}</div>'
        f'<details class="prompt"><summary>The prompt the model read ({len(result.prompt)} characters)</summary><pre>{_e(result.prompt)}</pre></details>'
        f"{_settings(result)}</section>"
    )


def _legend() -> str:
    negative = "".join(f'<span class="sw n{level}">\u2212</span>' for level in range(LEVELS, 0, -1))
    positive = "".join(f'<span class="sw p{level}">+</span>' for level in range(1, LEVELS + 1))
    return (
        '<div class="legend"><span class="scale" aria-hidden="true">' + negative + positive + "</span>"
        "<span>Score = drop in the answer's log-likelihood (nats) when the sentence is left out: "
        "blue supports the answer, orange (dashed underline) works against it; the tint is relative to the "
        "largest score of that answer.</span><span>A citation [n] means the answer leans on that sentence (the model "
        "finds the claim less likely without it), not that the sentence states the claim; "
        f'a claim no sentence supports is marked \u201c{UNSUPPORTED}\u201d.</span><span><span class="sample unscored">grey, dotted<span class="v">n/a</span></span> = not scored</span>'
        '<span><span class="sample p3 hl-sample">outlined</span> = cited by the hovered or focused marker</span></div>'
    )


def render_html(
    results: AttributionResult | Sequence[AttributionResult],
    headings: Sequence[str | None] | None = None,
    *,
    title: str = "attribot-rag: citations",
    per_claim: int = 1,
    min_score: float = DEFAULT_MIN_SCORE,
    min_share: float = DEFAULT_MIN_SHARE,
) -> str:
    """One self-contained HTML page for one or several results (``headings``: one per result,
    e.g. the question; the result itself does not store it). ``per_claim``, ``min_score`` and
    ``min_share`` choose the citations as in ``AttributionResult.citations``."""
    results = list(results) if isinstance(results, Sequence) else [results]
    headings = list(headings) if headings is not None else [None] * len(results)
    if len(headings) != len(results):
        raise ValueError(f"{len(headings)} headings for {len(results)} results")
    sections = "".join(
        _result(r, i, h, r.citations(per_claim, min_score, min_share))
        for i, (r, h) in enumerate(zip(results, headings, strict=True))
    )
    return _page(title, sections)


def render_failed(
    answer: str, error: str, heading: str | None = None, *, title: str = "attribot-rag: citations"
) -> str:
    """The page of an answer whose attribution failed (``Citations.failed``): the answer as it
    is, uncited, and the error, in the same self-contained page."""
    section = (
        f'<section class="result" id="r0" aria-label="attribution 1"><h2>{_e(heading or "Answer 1")}</h2>'
        f'<div class="answer-box"><span class="label">Answer</span><p class="answer">{_e(answer)}</p></div>'
        f'<p class="note">No citations: {_e(error)}</p></section>'
    )
    return _page(title, section)


def _page(title: str, sections: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<header class="page-head"><h1>{_e(title)}</h1>{_legend()}</header>'
        f"<main>{sections}</main>"
        f'<p class="page-foot">Made by attribot-rag {_e(__version__)}: leave-one-out context attribution. Self-contained: no network, no external files.</p>'
        '<p class="detail" id="detail" role="status" aria-live="polite"></p>'
        f"<script>{_JS}</script></body></html>\n"
    )


def notebook_frame(page: str, height: int = 640) -> str:
    """``page`` in a sandboxed iframe (scripts only, no same-origin access), so that its style
    and script stay out of the notebook's own page; used by ``_repr_html_``."""
    return (
        f'<iframe sandbox="allow-scripts" srcdoc="{_e(page)}" title="attribot-rag citations" '
        f'style="width: 100%; height: {int(height)}px; border: 1px solid #d5d9e0; resize: vertical;"></iframe>'
    )
