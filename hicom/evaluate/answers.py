"""Reading the chosen option out of a model's free-form reply, knowing the options.

The reference implementation takes the first capital letter anywhere (so the B of "Based on the
video, A" wins) and falls back to "C" when nothing parses. Here, in order of preference:
  1. an explicit marker: "Answer: B", "the answer is (b)", "option B", then "(B)", "B.", "B)";
  2. an option's text, exactly or normalised (case, punctuation, spacing), or quoted whole in a longer
     reply (an option inside a longer matching option does not count);
  3. a lone capital letter, only where it does not start a phrase: not the article in "A red circle",
     and not EgoSchema's "C" (the camera wearer) in "C cooks a meal" when an option starts with "C ".
Two different letters at the same level ("A and B", "Answer: A or B", two options' texts) or none is
unanswered: None, never a default letter.
"""
from __future__ import annotations

import re

LETTERS = "ABCDEFGH"

# "answer is C", "Answer: (d)", "the correct option is B", "best answer is: A". A lowercase letter counts
# only when nothing word-like follows it ("the answer is a red circle" names no option).
_EXPLICIT = re.compile(
    r"(?i:\b(?:answer|option|choice)s?\b(?:\s+(?:is|would\s+be|should\s+be|must\s+be|will\s+be))?)\s*[:=-]?\s*"
    r"(?:\(([A-Ha-h])\)|([A-H])(?![A-Za-z0-9'])|([a-h])(?=\s*(?:$|[.,;:!?)\]])))")
# "(B)", "(b)", and "B." / "B)" followed by a space or the end ("B. Two people", "C) blue"); not "D.C.".
_MARKER = re.compile(r"\(([A-Ha-h])\)|(?<![A-Za-z0-9'.])([A-H])[.)](?=\s|$)")
# A capital standing alone: not inside a word ("Based"), not a contraction ("I'd"), not a decimal.
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'])([A-H])(?![A-Za-z0-9'])")
# Words after a capital that keep it a letter ("A is correct", "B or C"); any other word makes it the start
# of a phrase ("A red circle", "C cooks").
_AFTER_LETTER = {"and", "or", "nor", "but", "vs", "versus", "then", "is", "was", "seems", "looks", "appears",
                 "might", "may", "could", "would", "should", "must", "will", "because", "since", "as", "if"}
# What joins two letters offered together: "A and B", "A or B", "A/B", "(A), (C)".
_JOINER = re.compile(r"\)?\s*(?:/|,|&|(?i:\band\b|\bor\b|\bnor\b))\s*\(?$")


def letters_for(num_options: int) -> str:
    if not 1 <= num_options <= len(LETTERS):
        raise ValueError(f"multiple choice needs 1 to {len(LETTERS)} options, got {num_options}")
    return LETTERS[:num_options]


def normalise(text: str) -> str:
    """Lowercase words without punctuation: "C cooks a meal." and "c cooks a meal" compare equal."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def extract_choice(reply: str, options: list[str]) -> str | None:
    """The option letter a reply chooses, or None when it chooses none or several."""
    letters = letters_for(len(options))
    text = reply.strip()
    tokens = _letter_tokens(text, options, letters)
    if _hedged(text, tokens):
        return None
    explicit = {next(g for g in m.groups() if g).upper() for m in _EXPLICIT.finditer(text)} & set(letters)
    if explicit:
        return explicit.pop() if len(explicit) == 1 else None
    markers = {next(g for g in m.groups() if g).upper() for m in _MARKER.finditer(text)} & set(letters)
    if markers:
        return markers.pop() if len(markers) == 1 else None
    by_text = _option_by_text(text, options, letters)
    if by_text is not None:
        return by_text or None
    lone = {letter for letter, _, _ in tokens}
    return lone.pop() if len(lone) == 1 else None


def _letter_tokens(text: str, options: list[str], letters: str) -> list[tuple[str, int, int]]:
    """(letter, start, end) of each capital that reads as an option letter rather than a phrase's first word."""
    subjects = {o.strip()[0] for o in options if re.match(r"[A-H]\s", o.strip())}  # EgoSchema: "C cooks ..."
    out = []
    for m in _STANDALONE.finditer(text):
        letter = m.group(1)
        follow = re.match(r"\s+([a-z]+)", text[m.end():])
        article = letter == "A" and follow is not None and follow.group(1) not in _AFTER_LETTER
        subject = letter in subjects and follow is not None  # "C is cooking" is C the person, too
        if letter in letters and not article and not subject:
            out.append((letter, m.start(), m.end()))
    return out


def _hedged(text: str, tokens: list[tuple[str, int, int]]) -> bool:
    """Whether two different letters are offered together ("A or B", "Answer: A/B", "(A), (C)")."""
    return any(a != b and _JOINER.match(text[end:start]) for (a, _, end), (b, start, _) in zip(tokens, tokens[1:]))


def _option_by_text(text: str, options: list[str], letters: str) -> str | None:
    """The letter of the one option the reply states: the whole reply equal to it (normalised), else its
    whole text inside the reply. "" when two options are stated (a hedge), None when none is."""
    said = normalise(text)
    if not said:
        return None
    equal = [i for i, o in enumerate(options) if normalise(o) == said]
    if len(set(equal)) == 1:
        return letters[equal[0]]
    found = [i for i, o in enumerate(options)
             if normalise(o) and re.search(rf"(?<!\w){re.escape(normalise(o))}(?!\w)", said)]
    found = [i for i in found if not any(j != i and normalise(options[i]) in normalise(options[j]) for j in found)]
    if len(found) == 1:
        return letters[found[0]]
    return "" if found else None
