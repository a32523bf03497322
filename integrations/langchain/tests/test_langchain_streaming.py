"""``AttributorChatModel.stream``: the reply arrives in pieces while the embedded model is still
generating (it used to be one chunk after the whole generation), and the pieces are exactly
the reply ``invoke`` gives, stop markers included."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from langchain_attribot.local_models import AttributorChatModel, _until_stop

from attribot_rag.testing import generating, generation_ends

MESSAGES = [("human", "Name the colours of the rainbow, in order, separated by commas.")]


def test_stream_yields_pieces_while_the_model_generates(attributor: Any) -> None:
    model = AttributorChatModel(attributor=attributor, max_new_tokens=32)
    pieces, generating_at_first = [], False
    for chunk in model.stream(MESSAGES):
        if not pieces:
            generating_at_first = generating()
        pieces.append(chunk.content)
    assert generating_at_first, "the first piece came only after the whole generation"
    assert len([piece for piece in pieces if piece]) > 1  # LangChain may add an empty last chunk
    assert "".join(pieces) == model.invoke(MESSAGES).content
    assert generation_ends()


def test_stream_cuts_at_a_stop_marker_as_invoke_does_and_a_reader_that_leaves_ends_generation(
    attributor: Any,
) -> None:
    model = AttributorChatModel(attributor=attributor, max_new_tokens=32)
    whole = model.invoke(MESSAGES).content
    marker = whole.split()[len(whole.split()) // 2]  # a word in the middle of the reply
    streamed = "".join(chunk.content for chunk in model.stream(MESSAGES, stop=[marker]))
    assert streamed == model.invoke(MESSAGES, stop=[marker]).content == whole.split(marker, 1)[0]
    assert generation_ends()
    stream = model.stream(MESSAGES)
    next(stream)
    stream.close()  # the reader is gone: the model is not held for nobody
    assert generation_ends()


@given(
    pieces=st.lists(st.text(alphabet="ab c\n", max_size=6), max_size=6),
    stop=st.lists(st.text(alphabet="abc", min_size=1, max_size=3), max_size=3),
)
def test_stop_markers_cut_a_stream_where_the_first_marker_begins(pieces: list[str], stop: list[str]) -> None:
    """However the reply is split into pieces, even where markers overlap or one begins inside
    a piece and ends in a later one: the text before the earliest marker, never more."""
    whole = "".join(pieces)
    first = min((at for at in map(whole.find, stop) if at >= 0), default=len(whole))
    streamed = list(_until_stop(pieces, stop))
    assert "".join(streamed) == "".join(_until_stop([whole], stop)) == whole[:first]
    assert all(streamed)
