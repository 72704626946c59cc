"""LLaVA conversations -> token ids and labels, and the instruction (guide) text of each turn.

Only assistant answers are supervised. The `<video>`/`<image>` tag becomes a negative
placeholder id that the model replaces with visual tokens, so the vocabulary never changes.
Each text segment is tokenised on its own (prompt pieces, answers), so a prompt at inference is
tokenised exactly as it was in training.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from hicom.core.types import IGNORE_INDEX, PLACEHOLDER_IDS, TAGS
ROLES = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}


class ConversationError(ValueError):
    """A sample's conversation cannot be used; the message names the sample and the problem."""


@dataclass
class Encoded:
    input_ids: torch.Tensor  # (L,) long, with one placeholder id per visual item
    labels: torch.Tensor  # (L,) long, IGNORE_INDEX except on supervised answer tokens
    guide: str | None  # the instruction that guides compression (None: unguided)


# Lines that tell the model how to format its answer; they carry nothing about the video.
FORMAT_LINES = (
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly and only give the best option.",
    "Answer with the option's letter from the given choices directly.",
    "The best answer is:",
    "Select the best answer to the following multiple-choice question based on the video.",
    "Respond with only the letter (A, B, C, or D) of the correct option.",
    "Respond with only the letter (A, B, C, D, or E) of the correct option.",
)
OPTION_LINE = re.compile(r"^\s*\(?[A-H][.)]\s+\S")
OPTIONS_HEADER = re.compile(r"^\s*(Options|Choices)\s*:?\s*$", re.IGNORECASE)


def extract_guide(question: str) -> str:
    """The bare question of a turn: tags, answer-format lines and the option list removed."""
    text = question
    for tag in TAGS.values():
        text = text.replace(tag, "")
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or OPTION_LINE.match(line) or OPTIONS_HEADER.match(line):
            continue
        for fmt in FORMAT_LINES:
            stripped = stripped.replace(fmt, "").strip()
        if stripped.startswith("Question:"):
            stripped = stripped[len("Question:"):].strip()
        if stripped:
            kept.append(stripped)
    return " ".join(kept)


def normalise_turns(conversations: list[dict], modality: str | None, sample_id: str = "?") -> list[dict]:
    """Validate and convert LLaVA turns to chat messages; the visual tag once, at the head of turn one."""
    if not isinstance(conversations, list) or not conversations:
        raise ConversationError(f"sample {sample_id}: no conversations")
    messages = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ConversationError(f"sample {sample_id}: turn {i} needs 'from' and 'value'")
        role = ROLES.get(turn["from"])
        if role is None:
            raise ConversationError(f"sample {sample_id}: turn {i} has unknown role {turn['from']!r}")
        messages.append({"role": role, "content": str(turn["value"])})
    if messages[0]["role"] == "assistant":  # a leading answer has no question; drop it
        messages = messages[1:]
    for i, msg in enumerate(messages):
        if msg["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise ConversationError(f"sample {sample_id}: turns must alternate human/gpt (turn {i} is {msg['role']})")
    if len(messages) < 2 or len(messages) % 2:
        raise ConversationError(f"sample {sample_id}: expected question/answer pairs, got {len(messages)} turns")
    for msg in messages:
        if any(tag in msg["content"] for tag in TAGS.values()):
            for tag in TAGS.values():
                msg["content"] = msg["content"].replace(tag, "")
            msg["content"] = msg["content"].strip()
    if modality is not None:
        messages[0]["content"] = f"{TAGS[modality]}\n{messages[0]['content']}"
    return messages


_TAG_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in TAGS.values()) + ")")


def _tokenise(tokenizer, text: str) -> list[int]:
    """Token ids of text, with each visual tag replaced by its placeholder id."""
    return _tokenise_many(tokenizer, [text])[0]


def _tokenise_many(tokenizer, texts: list[str]) -> list[list[int]]:
    """_tokenise of each text, with one tokenizer call for all their pieces (a call's overhead
    outweighs the work on the few words of a prompt or an answer)."""
    split = [[piece for piece in _TAG_SPLIT.split(text) if piece] for text in texts]
    plain = [piece for pieces in split for piece in pieces if piece not in TAGS.values()]
    encoded = iter(tokenizer(plain, add_special_tokens=False)["input_ids"] if plain else [])
    out = []
    for pieces in split:
        ids: list[int] = []
        for piece in pieces:
            ids.extend([PLACEHOLDER_IDS[piece.strip("<>")]] if piece in TAGS.values() else next(encoded))
        out.append(ids)
    return out


def _encode_turns(tokenizer, messages: list[dict]) -> list[tuple[list[int], list[int], list[int]]]:
    """(prompt ids, answer ids, tail ids) of each question/answer pair of a chat-templated conversation.

    The template must be prefix-stable (checked): the rendering of the first j pairs is then a
    prefix of the whole one, so these pieces, concatenated up to pair j, are exactly the ids of
    the conversation cut after answer j.
    """
    ids = _tokenise_many(tokenizer, _turn_texts(tokenizer, messages))
    return [tuple(ids[i:i + 3]) for i in range(0, len(ids), 3)]


def _turn_texts(tokenizer, messages: list[dict]) -> list[str]:
    """The chat-templated conversation cut into prompt, answer and tail (what follows the answer's end of turn)
    of each question/answer pair, in order."""
    texts = []
    rendered = ""
    for k in range(len(messages) // 2):
        prompt = tokenizer.apply_chat_template(messages[:2 * k + 1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages[:2 * k + 2], tokenize=False)
        if not prompt.startswith(rendered) or not full.startswith(prompt):
            raise ConversationError("the tokenizer's chat template is not prefix-stable across turns")
        answer_text = full[len(prompt):]
        end = answer_text.rfind(tokenizer.eos_token) + len(tokenizer.eos_token) if tokenizer.eos_token in answer_text \
            else len(answer_text)
        texts += [prompt[len(rendered):], answer_text[:end], answer_text[end:]]
        rendered = full
    return texts


def _join(pieces: list[tuple[list[int], list[int], list[int]]], supervised: set[int]) -> tuple[list[int], list[int]]:
    """Ids and labels of the pieces in order; only the answers of the pairs in `supervised` are labelled."""
    ids: list[int] = []
    labels: list[int] = []
    for k, (prompt_ids, answer_ids, tail_ids) in enumerate(pieces):
        ids += prompt_ids + answer_ids + tail_ids
        labels += [IGNORE_INDEX] * len(prompt_ids) + (answer_ids if k in supervised else [IGNORE_INDEX] * len(answer_ids))
        labels += [IGNORE_INDEX] * len(tail_ids)
    return ids, labels


def encode_messages(tokenizer, messages: list[dict], supervise: str = "all") -> tuple[list[int], list[int]]:
    """Chat-template ids and labels. supervise='all': every answer; 'last': only the final one."""
    pieces = _encode_turns(tokenizer, messages)
    return _join(pieces, set(range(len(pieces))) if supervise == "all" else {len(pieces) - 1})


def check_visual_tag(conversations: list[dict], modality: str | None, sample_id: str = "?") -> None:
    """The conversation's visual tags match the sample: a video (image) and a <video> (<image>) tag, or neither.

    Without this a tag with no video trains as text only, silently, and a video without a tag is placed
    where no question refers to it."""
    text = "".join(str(turn.get("value", "")) for turn in conversations if isinstance(turn, dict))
    found = [kind for kind, tag in TAGS.items() if tag in text]
    if modality is None and found:
        raise ConversationError(f"sample {sample_id}: its conversation has a {TAGS[found[0]]} tag but the sample "
                                f"names no {found[0]}")
    if modality is not None and found != [modality]:
        raise ConversationError(f"sample {sample_id}: the sample has a {modality} but its conversation has "
                                + (f"{' and '.join(TAGS[k] for k in found)} instead of {TAGS[modality]}" if found
                                   else f"no {TAGS[modality]} tag"))


def encode_sample(tokenizer, conversations: list[dict], modality: str | None, guided: bool,
                  sample_id: str = "?") -> list[Encoded]:
    """One LLaVA sample -> training sequences.

    Unguided (alignment): one sequence, every answer supervised. Guided: a sample with k
    questions becomes k sequences; sequence j holds turns 1..j, supervises answer j only, and is
    guided by question j. The video is shared: the caller decodes and encodes it once. The
    conversation is templated and tokenised once; each sequence is a cut of it. Tags are not checked here:
    an inference prompt gets its tag from normalise_turns; annotation samples go through check_visual_tag.
    """
    messages = normalise_turns(conversations, modality, sample_id)
    pieces = _encode_turns(tokenizer, messages)
    if not guided:
        ids, labels = _join(pieces, set(range(len(pieces))))
        return [Encoded(torch.tensor(ids), torch.tensor(labels), None)]
    out = []
    for j in range(len(pieces)):
        ids, labels = _join(pieces[:j + 1], {j})
        out.append(Encoded(torch.tensor(ids), torch.tensor(labels), extract_guide(messages[2 * j]["content"])))
    return out


def encode_answers(tokenizer, question: str, answers: list[str], modality: str | None,
                   sample_id: str = "?") -> tuple[torch.Tensor, list[Encoded]]:
    """The one-turn conversations (question, answer) for several answers, as encode_sample gives each of them
    (unguided), but in two parts: the question's prompt ids, shared, and per answer its answer turn's ids and labels
    (the answer supervised, what follows its end of turn not). One tokenizer call for all of them.

    ConversationError when an answer changes the rendering of the prompt before it (the template is then not
    prefix-stable, and the answers cannot share one prompt)."""
    texts = [_turn_texts(tokenizer, normalise_turns([{"from": "human", "value": question},
                                                     {"from": "gpt", "value": answer}], modality, sample_id))
             for answer in answers]
    if len({prompt for prompt, _, _ in texts}) > 1:
        raise ConversationError(f"sample {sample_id}: the answers change the chat template's rendering of the prompt "
                                "before them; they cannot share one prompt")
    ids = _tokenise_many(tokenizer, [texts[0][0]] + [piece for _, answer, tail in texts for piece in (answer, tail)])
    turns = [Encoded(torch.tensor(answer + tail), torch.tensor(answer + [IGNORE_INDEX] * len(tail)), None)
             for answer, tail in zip(ids[1::2], ids[2::2])]
    return torch.tensor(ids[0]), turns


def encode_prompt(tokenizer, question: str, modality: str | None) -> torch.Tensor:
    """Inference prompt ids: the question as the user turn, then the assistant header."""
    messages = normalise_turns([{"from": "human", "value": question}, {"from": "gpt", "value": ""}], modality)
    text = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    return torch.tensor(_tokenise(tokenizer, text))


def tokenise_guides(guide_tokenizer, guides: list[str], max_length: int) -> torch.Tensor:
    """SigLIP-style: pad every guide to max_length (the text tower pools the last position)."""
    return guide_tokenizer(guides, padding="max_length", truncation=True, max_length=max_length,
                           return_tensors="pt")["input_ids"]
