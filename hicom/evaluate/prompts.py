"""A multiple-choice prompt template (each benchmark's, as its public release words it, is in its
hicom.evaluate.benchmarks entry) and its hash.

The user turn is `<video>\\n` + this prompt (the chat template adds the rest), for both protocols:
generation replies to it, likelihood scores each option after it. The instruction that guides
compression is the bare question, without options or answer-format lines.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from hicom.evaluate.answers import letters_for
from hicom.evaluate.readers import Sample

SUBTITLE_HEADER = "This video's subtitles are listed below:\n{subtitles}\n"


@dataclass(frozen=True)
class PromptTemplate:
    """header + question line + option lines + footer; `{letter}`/`{text}` fill an option line."""

    header: str
    question: str
    options_header: str
    option: str
    footer: str

    def render(self, sample: Sample, subtitles: list[str] | None = None, with_options: bool = True) -> str:
        """The prompt; with_options=False: header and question only (a cloze prompt, for option likelihood)."""
        prompt = self.header + self.question.format(question=sample.question)
        if with_options:
            letters = letters_for(len(sample.options))
            options = "".join(self.option.format(letter=letter, text=text) + "\n"
                              for letter, text in zip(letters, sample.options))
            prompt += "\n" + self.options_header + options + self.footer
        if subtitles is not None:
            prompt = SUBTITLE_HEADER.format(subtitles="\n".join(subtitles)) + prompt
        return prompt

    def text(self) -> str:
        """The template with its placeholders, as logged beside its hash."""
        return json.dumps(asdict(self), indent=1)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def guide_text(sample: Sample) -> str:
    """The instruction injected into compression: the bare question (the release does the same)."""
    return " ".join(sample.question.split())
