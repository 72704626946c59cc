"""Reading the chosen option out of a model's free-form reply.

The reference implementation takes the first capital letter anywhere (so the B of "Based on the
video, A" wins) and falls back to "C" when nothing parses. Here an answer is one option letter
standing on its own, or named after "answer"/"option", or one option's text quoted whole. No
letter, two different letters ("A and B", "A or B") or a hedge is unanswered: None, never a default.
"""
from __future__ import annotations

import re

LETTERS = "ABCDEFGH"

# "answer is C", "Answer: (d)", "the correct option is B", "best answer is: A". A lowercase letter counts
# only when nothing word-like follows it ("the answer is a red circle" names no option).
_EXPLICIT = re.compile(
    r"(?i:\b(?:answer|option|choice)s?\b(?:\s+(?:is|would\s+be|should\s+be|must\s+be|will\s+be))?)\s*[:=-]?\s*"
    r"(?:\(([A-Ha-h])\)|([A-H])(?![A-Za-z0-9'])|([a-h])(?=\s*(?:$|[.,;:!?)\]])))")
# A capital standing alone: not inside a word ("Based"), not a contraction ("I'd"), not a decimal.
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-H])(?![A-Za-z0-9'])")
# "(b)" in lowercase is unambiguous too.
_PAREN_LOWER = re.compile(r"\(([a-h])\)")
# "A red circle": the article, not option A. These words after "A" still make it the letter.
_AFTER_LETTER = {"and", "or", "nor", "but", "vs", "versus", "then", "is", "was", "seems", "looks", "appears",
                 "might", "may", "could", "would", "should", "must", "will", "because", "since", "as", "if"}
# Two options offered together: "A and B", "A or B", "A/B", "B, C".
_PAIR = re.compile(r"(?<![A-Za-z0-9'])\(?([A-Ha-h])\)?\s*(?:/|,|&|(?i:\band\b|\bor\b|\bnor\b))\s*\(?([A-Ha-h])\)?"
                   r"(?![A-Za-z0-9'])")


def letters_for(num_options: int) -> str:
    if not 1 <= num_options <= len(LETTERS):
        raise ValueError(f"multiple choice needs 1 to {len(LETTERS)} options, got {num_options}")
    return LETTERS[:num_options]


def _is_article(text: str, end: int) -> bool:
    """Whether the capital A ending at `end` starts a noun phrase ("A red circle")."""
    follow = re.match(r"\s+([a-z]+)", text[end:])
    return follow is not None and follow.group(1) not in _AFTER_LETTER


def extract_choice(reply: str, options: list[str]) -> str | None:
    """The option letter a reply chooses, or None when it chooses none or several."""
    letters = letters_for(len(options))
    text = reply.strip()
    pairs = [m.span() for m in _PAIR.finditer(text)
             if m.group(1).upper() in letters and m.group(2).upper() in letters
             and m.group(1).upper() != m.group(2).upper() and (m.group(1).isupper() or m.group(2).isupper())]
    explicit = [(next(g for g in m.groups() if g).upper(), m.end()) for m in _EXPLICIT.finditer(text)]
    explicit = [(letter, end) for letter, end in explicit if letter in letters]
    if explicit:
        if len({letter for letter, _ in explicit}) > 1:
            return None
        if any(start < end <= stop + 1 for _, end in explicit for start, stop in pairs):
            return None  # "Answer: A or B"
        return explicit[0][0]
    if pairs:
        return None  # "A and B", "A/B"
    standalone = {m.group(1) for m in _STANDALONE.finditer(text)
                  if m.group(1) in letters and not (m.group(1) == "A" and _is_article(text, m.end()))}
    standalone |= {m.group(1).upper() for m in _PAREN_LOWER.finditer(text) if m.group(1).upper() in letters}
    if len(standalone) == 1:
        return standalone.pop()
    if standalone:
        return None
    return _quoted_option(text, options, letters)


def _quoted_option(text: str, options: list[str], letters: str) -> str | None:
    """The one option whose whole text the reply contains; an option inside a longer quoted one does not count."""
    found = [i for i, opt in enumerate(options)
             if opt.strip() and re.search(rf"(?<!\w){re.escape(opt.strip())}(?!\w)", text, re.IGNORECASE)]
    found = [i for i in found if not any(j != i and options[i].strip().lower() in options[j].strip().lower()
                                         for j in found)]
    return letters[found[0]] if len(found) == 1 else None
