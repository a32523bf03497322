"""The prompt without a span reads as written text: no whitespace pattern appears where a span
was removed that the original prompt did not have there (docs/design.md, "The prompt without
a span")."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from attribot_rag import Document
from attribot_rag.core.ablation import ablate, masked_tokens, removal
from attribot_rag.core.prompt import TokenizedText, render

WORDS = st.sampled_from(["alpha", "Beta", "gamma", "1742", "Zürich", "東京は日本の首都です", "Mira Quell"])
SENTENCE = st.lists(WORDS, min_size=1, max_size=4).map(lambda words: " ".join(words) + ".")
CJK_SENTENCE = st.sampled_from(["東京は日本の首都です。", "人口は約1400万人です。", "次の文。"])
SEPARATOR = st.sampled_from([" ", "\n", "  ", "\n\n", "   "])


@st.composite
def documents(draw: st.DrawFn) -> list[Document]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):  # text without spaces
            text = "".join(draw(st.lists(CJK_SENTENCE, min_size=1, max_size=4)))
        else:
            sentences = draw(st.lists(SENTENCE, min_size=1, max_size=5))
            text = sentences[0]
            for sentence in sentences[1:]:
                text += draw(SEPARATOR) + sentence
        title = draw(st.one_of(st.none(), st.sampled_from(["Veltrana Bridge", "Aurora", "東京"])))
        out.append(Document(text=text, title=title))
    return out


PATTERNS = {
    "double space": re.compile(r"  "),
    "space before a line break": re.compile(r" \n"),
    "line starting with a space": re.compile(r"\n "),
}


def check_reads_as_written(original: str, spans: list[tuple[int, int]]) -> None:
    ablated, cuts = ablate(original, spans)
    for name, pattern in PATTERNS.items():
        if not pattern.search(original):
            assert not pattern.search(ablated), (name, original, spans, ablated)
    # at every join the whitespace is the run the original had before or after the removal
    shift = 0
    for start, end in cuts:
        at = start - shift
        join = (
            ablated[:at][len(ablated[:at].rstrip()) :] + ablated[at:][: len(ablated[at:]) - len(ablated[at:].lstrip())]
        )
        before = original[:start][len(original[:start].rstrip()) :]
        after = original[end:][: len(original[end:]) - len(original[end:].lstrip())]
        assert join in (before, after), (original, spans, ablated, join)
        shift += end - start


@settings(max_examples=200, deadline=None)
@given(documents(), st.data())
def test_no_ablated_prompt_has_a_gap_the_original_lacked(docs: list[Document], data: st.DataObject) -> None:
    rendered = render("Which one?", docs, None)
    spans = rendered.sentence_spans + rendered.document_spans
    for span in spans:  # one span at a time: naive, exact, fast's rescoring
        check_reads_as_written(rendered.text, [span])
    # several at once: hierarchical's and pruned's pruned prompts, the context gain's prompt
    chosen = data.draw(st.lists(st.sampled_from(rendered.sentence_spans), unique=True))
    check_reads_as_written(rendered.text, chosen)
    check_reads_as_written(rendered.text, rendered.document_spans)


def test_the_rule_on_the_cases_it_names() -> None:
    def without(text: str, needle: str) -> str:
        start = text.index(needle)
        return ablate(text, [(start, start + len(needle))])[0]

    paragraph = "Document [1] The Band\nThey formed a group. Their first album sold. It won.\n\nDocument [2]"
    assert without(paragraph, "Their first album sold.") == paragraph.replace("Their first album sold. ", "")
    assert without(paragraph, "They formed a group.") == paragraph.replace("They formed a group. ", "")
    assert without(paragraph, "It won.") == paragraph.replace(" It won.", "")  # a paragraph's last sentence
    assert without(paragraph, "The Band") == paragraph.replace(" The Band", "")  # the header stays well formed
    lines = "Title\nLine one\n\nLine two\nLine three"
    assert without(lines, "Line two") == "Title\nLine one\n\nLine three"  # the paragraph break stays
    assert without(lines, "Line one") == "Title\n\nLine two\nLine three"
    assert without("東京は日本の首都です。人口は約1400万人です。", "東京は日本の首都です。") == "人口は約1400万人です。"
    # spans with only whitespace between them go as one
    text = "A one. B two. C three.\n"
    assert ablate(text, removal(text, [(7, 13), (14, 22)]))[0] == "A one.\n"


def test_frozen_ablation_masks_the_span_tokens_not_the_next_word(attributor) -> None:
    text = "group. Their first album sold well. Next came fame."
    tokens = TokenizedText.of(attributor.tokenizer, text)
    start = text.index("Their")
    (removed,) = removal(text, [(start, text.index(" Next"))])
    first, last = masked_tokens(tokens, text, *removed)
    kept = "".join(text[a:b] for k, (a, b) in enumerate(tokens.offsets) if not first <= k < last)
    assert kept == "group. Next came fame."
