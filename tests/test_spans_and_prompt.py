"""Sentence spans, prompt rendering and the span-to-token mapping."""

import pytest

from attribot_rag import Attributor, Document
from attribot_rag.core.prompt import TokenizedText, render
from attribot_rag.core.spans import split_sentences


def _texts(text):
    return [text[a:b] for a, b in split_sentences(text)]


def test_segmenter_keeps_abbreviations_decimals_and_offsets() -> None:
    text = "Dr. Smith paid $3.50 in Washington D.C. yesterday. He left!  Was it late?\nHeading without stop\n日本語の文です。次の文。"
    assert _texts(text) == [
        "Dr. Smith paid $3.50 in Washington D.C. yesterday.",
        "He left!",
        "Was it late?",
        "Heading without stop",
        "日本語の文です。",
        "次の文。",
    ]


def test_user_sentences_are_located_in_order() -> None:
    doc = Document(sentences=["A cat sat. ", "A cat sat. ", "It purred."])
    result = render("q", [doc], None)
    spans = [(s.start, s.end) for s in result.sentences]
    assert spans == [(0, 10), (11, 21), (22, 32)]
    with pytest.raises(ValueError, match="does not occur"):
        render("q", [Document(text="abc", sentences=["xyz"])], None)


def test_prompt_spans_point_at_their_text(attributor: Attributor) -> None:
    docs = [Document(text="Alpha one. Beta two.", title=" T1 ", id="a"), Document(text="Gamma three. Delta four.")]
    rendered = render("Which?", docs, attributor.tokenizer)
    # A title the prompt shows is a citable span of its document, before its sentences.
    assert [s.part for s in rendered.sentences] == ["title", "text", "text", "text", "text"]
    for sentence, (start, end) in zip(rendered.sentences, rendered.sentence_spans, strict=True):
        source = docs[sentence.doc_index].title if sentence.part == "title" else docs[sentence.doc_index].text
        assert rendered.text[start:end] == source[sentence.start : sentence.end]
    assert rendered.text[slice(*rendered.sentence_spans[0])] == "T1"
    first_block = rendered.text[slice(*rendered.document_spans[0])]
    assert first_block == "Document [1]  T1 \nAlpha one. Beta two.\n\n"
    assert rendered.text.startswith("<|im_start|>") and rendered.text.endswith("<|im_start|>assistant\n")


def test_every_sentence_token_range_decodes_back_to_its_text(attributor: Attributor) -> None:
    docs = [
        Document(text="The first sentence. A second one, with a comma! Third: numbers 3.14 and 42."),
        Document(text="Émile visited Zürich. 東京は日本の首都です。Emoji 🎉 end."),
    ]
    rendered = render("Q?", docs, attributor.tokenizer)
    tokens = TokenizedText.of(attributor.tokenizer, rendered.text)
    for start, end in rendered.sentence_spans:
        a, b = tokens.token_range(start, end)
        decoded = attributor.tokenizer.decode(tokens.ids[a:b])
        assert decoded.strip() == rendered.text[start:end]


def test_template_must_have_both_fields() -> None:
    with pytest.raises(ValueError, match="context"):
        render("q", [Document(text="d")], None, template="Question: {question}")


def test_an_answer_copied_from_a_title_cites_the_title(attributor: Attributor) -> None:
    """The name in the answer occurs only in a document's title: the title span is cited, and
    ranking the text sentences alone (titles not citable) would have cited something else."""
    documents = [
        Document(text="It spans the river Osk. It was completed in 1742.", title="Veltrana Bridge", id="bridge"),
        Document(text="It is the tallest peak in Dorland. Its summit is covered in snow.", title="Mount Harrow"),
    ]
    result = attributor.attribute(
        "Which structure was completed in 1742?", documents, "The Veltrana Bridge.", method="exact"
    )
    title = result.top(1)[0]
    assert (title.part, title.text, title.doc_id) == ("title", "Veltrana Bridge", "bridge")
    assert (title.start, title.end) == (0, 15)
    assert result.prompt[title.prompt_start : title.prompt_end] == "Veltrana Bridge"
    assert [s.part for s in result.sentences].count("title") == 2
    assert result.citations().sources[0].span == title
    html = result.to_html()
    assert 'class="doc-head"' in html and "Veltrana Bridge<span" in html.split('class="doc-text"')[0]
