"""What the prompt without a span is: text a person could have written.

Deleting only a span's characters leaves the whitespace on both sides of it (``"group.  Their"``,
a line that starts with a space, ``"Document [1] \\n"``): a gap no writer leaves, which the model
reads as an extra token. The rule (``docs/design.md``, "The prompt without a span"): spans
separated by whitespace only are removed as one group, and each group takes one adjacent
whitespace run with it, so that the text left joins as the original joined there:

- a group that begins or ends with whitespace (a document block owns its separator) takes nothing;
- inside a line, the run after it (``"A. B. C."`` without ``B.`` is ``"A. C."``);
- at the end of a line or of the text, the run before it (a paragraph's last sentence, a
  title in its header line: ``"Document [1] Title\\n"`` becomes ``"Document [1]\\n"``);
- a whole line: the shorter of the two line breaks around it (the run before on a tie), so a
  paragraph break stays a paragraph break;
- no whitespace around it (text without spaces, as in Chinese or Japanese): the span alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from .prompt import TokenizedText

Span = tuple[int, int]


def _breaks_line(run: str) -> bool:
    return "\n" in run or "\r" in run


def _groups(text: str, spans: Iterable[Span]) -> list[Span]:
    """``spans`` merged where they touch, overlap or are separated by whitespace only."""
    groups: list[Span] = []
    for start, end in sorted(spans):
        if groups and (start <= groups[-1][1] or text[groups[-1][1] : start].isspace()):
            groups[-1] = (groups[-1][0], max(end, groups[-1][1]))
        else:
            groups.append((start, end))
    return groups


def _with_run(text: str, start: int, end: int) -> Span:
    """The group ``[start, end)`` with the one whitespace run the rule gives it."""
    if text[start].isspace() or text[end - 1].isspace():
        return start, end
    before = start
    while before > 0 and text[before - 1].isspace():
        before -= 1
    after = end
    while after < len(text) and text[after].isspace():
        after += 1
    run_before, run_after = text[before:start], text[end:after]
    if run_after and not _breaks_line(run_after):
        return start, after
    if run_before and not _breaks_line(run_before):
        return before, end
    if run_before and run_after:
        return (before, end) if len(run_before) <= len(run_after) else (start, after)
    return (before, end) if run_before else (start, after)


def removal(text: str, spans: Iterable[Span]) -> list[Span]:
    """The character ranges (sorted, disjoint) to delete from ``text`` to remove ``spans``:
    every ablation of every method goes through here."""
    return [_with_run(text, start, end) for start, end in _groups(text, spans) if start < end]


def cut(text: str, ranges: list[Span]) -> str:
    """``text`` without the character ranges ``ranges`` (sorted, disjoint)."""
    kept, cursor = [], 0
    for start, end in ranges:
        kept.append(text[cursor:start])
        cursor = end
    return "".join(kept) + text[cursor:]


def ablate(text: str, spans: Iterable[Span]) -> tuple[str, list[Span]]:
    """``text`` without ``spans`` by the rule, and the ranges deleted."""
    ranges = removal(text, spans)
    return cut(text, ranges), ranges


def shift(spans: list[Span], removed: list[Span]) -> list[Span]:
    """Character spans moved to their place in the text without ``removed``."""

    def at(position: int) -> int:
        return position - sum(min(end, position) - start for start, end in removed if start < position)

    return [(at(start), at(end)) for start, end in spans]


def masked_tokens(tokens: TokenizedText, text: str, start: int, end: int) -> Span:
    """The tokens a frozen-context ablation of the removal ``[start, end)`` masks: those it
    overlaps, except a token at either edge that it reaches only through whitespace while the
    rest of the token is kept text (``" Next"`` after a removed ``"Their album. "``). Tokens
    cannot be split, so this is the rule up to token boundaries."""
    first, last = tokens.token_range(start, end)

    def reached_by_whitespace_only(k: int) -> bool:
        a, b = tokens.offsets[k]
        inside, outside = text[max(a, start) : min(b, end)], text[a:start] + text[end:b]
        return inside.isspace() and bool(outside.strip())

    while last - first > 1 and reached_by_whitespace_only(last - 1):
        last -= 1
    while last - first > 1 and reached_by_whitespace_only(first):
        first += 1
    return first, last
