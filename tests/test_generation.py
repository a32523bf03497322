"""``generate`` answers greedily from the very prompt that ``attribute`` scores, and
``generate_answer`` keeps its complete sentences; checked against a greedy loop over the
model's plain forward."""

from __future__ import annotations

import torch

from attribot_rag import Attributor

QUESTION = "When was the Veltrana Bridge completed?"
DOCUMENTS = [
    "The Veltrana Bridge spans the river Osk. It was completed in 1742. The engineer Mira Quell designed it.",
    "Bananas are yellow fruits. They grow in tropical climates.",
]


@torch.inference_mode()
def greedy(attributor: Attributor, prompt: str, tokens: int) -> str:
    """``tokens`` greedy steps from ``prompt``, one full forward each, stopping at end of turn."""
    tokenizer, model = attributor.tokenizer, attributor.model
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    new: list[int] = []
    for _ in range(tokens):
        logits = model(input_ids=torch.tensor([ids + new], device=model.device), use_cache=False).logits[0, -1]
        token = int(logits.argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def test_generate_continues_the_attribution_prompt(attributor: Attributor) -> None:
    prompt = attributor.attribute(QUESTION, DOCUMENTS, "It was completed in 1742.", method="exact").prompt
    answer = attributor.generate(QUESTION, DOCUMENTS, max_new_tokens=16)
    assert answer == greedy(attributor, prompt, 16)
    assert "1742" in answer


def test_generate_answer_keeps_complete_sentences(attributor: Attributor) -> None:
    full = attributor.generate(QUESTION, DOCUMENTS, max_new_tokens=40)
    for tokens in (3, 40):
        text = attributor.generate(QUESTION, DOCUMENTS, max_new_tokens=tokens)
        cut = attributor.generate_answer(QUESTION, DOCUMENTS, max_new_tokens=tokens)
        assert full.startswith(text) and text.startswith(cut) and cut.strip()
        last_stop = max(text.rfind(mark) for mark in ".!?")
        # cut after the last sentence that ends in a stop; a text without one stays whole
        assert cut == (text[: last_stop + 1] if last_stop >= 0 else text), (text, cut)
