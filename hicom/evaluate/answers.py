"""Reading the chosen option out of a model's free-form reply.

The reference implementation takes the first capital letter anywhere (so the B of "Based on the
video, A" wins) and falls back to "C" when nothing parses. Here an answer is a letter standing on
its own (or an option's text quoted whole); no letter, or two different ones, is unanswered.
"""
from __future__ import annotations

import re

EXPLICIT = re.compile(r"(?:answer|option)\s*(?:is|:)?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE)


def extract_choice(reply: str, options: list[str]) -> str | None:
    """The option letter a reply chooses, or None when it chooses none or several."""
    letters = "".join(chr(ord("A") + i) for i in range(len(options)))
    text = reply.strip()
    explicit = {m.group(1).upper() for m in EXPLICIT.finditer(text) if m.group(1).upper() in letters}
    if len(explicit) == 1:
        return explicit.pop()
    standalone = re.findall(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z'])", text)
    if len(set(standalone)) == 1:
        return standalone[0]
    if standalone:
        return None
    quoted = [letters[i] for i, opt in enumerate(options) if opt and re.search(rf"\b{re.escape(opt)}\b", text, re.I)]
    return quoted[0] if len(quoted) == 1 else None
