"""The benchmark registry: one entry per benchmark holds everything specific to it.

Evaluation, scoring and the commands ask `BENCHMARKS[name]` for the reader, the prompt template,
the breakdowns, the per-task field, the submission file and the default video folder, so adding a
benchmark is one entry here (and its reader in hicom.evaluate.readers).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hicom.core.errors import DataError
from hicom.data.synthetic import MCQ_INSTRUCTION
from hicom.evaluate.prompts import PromptTemplate
from hicom.evaluate.readers import (
    Sample,
    mvbench_videos,
    read_egoschema,
    read_mlvu,
    read_mvbench,
    read_synthetic,
    read_videomme,
)
from hicom.evaluate.scoring import egoschema_submission, egoschema_submission_json

_BEST = "Answer with the option's letter from the given choices directly and only give the best option."


@dataclass(frozen=True)
class Submission:
    """A file the benchmark's own server scores (its answers are private): written from every question's
    record, missing ones included; `write(records, path)` returns how many rows carry no answer."""

    file: str
    write: Callable[[list[dict], Path], int]

    def file_for(self, variant: str, primary: bool) -> str:
        """The headline variant's file keeps the plain name; other variants' carry their name."""
        if primary:
            return self.file
        path = Path(self.file)
        return f"{path.stem}_{variant}{path.suffix}"


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: how to read it, ask it, score it and submit it."""

    name: str
    data: str  # what --data points at
    read: Callable[..., list[Sample]]  # (annotation path, video folder, issues[, subtitles folder])
    default_videos: Callable[[Path], Path]  # the release's video folder, from the annotation folder
    template: PromptTemplate
    breakdowns: tuple[str, ...] = ()  # Sample.groups fields that accuracy is reported by
    task_field: str | None = None  # a breakdown whose unweighted mean over its values is reported (task_mean)
    subtitles: bool = False  # whether the release ships subtitles (reader takes a third argument)
    # The likelihood protocol scores each option's text after the prompt: with the options listed (lmms-eval's
    # mc_ppl), or after the question alone (a cloze prompt, lm-eval-harness style) for a model tuned on bare
    # questions, which has never seen a list of options and reads the list instead of the video.
    likelihood_lists_options: bool = True
    submissions: tuple[Submission, ...] = ()


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark(
        "videomme", "the test parquet (videomme/test-00000-of-00001.parquet)", read_videomme,
        lambda base: _first_dir(base.parent / "data", base / "videos"),
        PromptTemplate(
            header="Select the best answer to the following multiple-choice question based on the video. "
                   "Respond with only the letter (A, B, C, or D) of the correct option.\n",
            question="{question}", options_header="", option="{letter}. {text}",
            footer=_BEST + " The best answer is: "),
        breakdowns=("duration", "domain", "sub_category", "task_type"), subtitles=True),
    Benchmark(
        "mvbench", "its json/ folder of 20 task files", read_mvbench,
        mvbench_videos,
        PromptTemplate(header="", question="Question: {question}", options_header="Options:\n",
                       option="({letter}) {text}", footer=_BEST),
        breakdowns=("task",), task_field="task"),
    Benchmark(
        "egoschema", "questions.json (subset_answers.json beside it is scored)", read_egoschema,
        lambda base: base / "good_clips_git",
        PromptTemplate(
            header="Select the best answer to the following multiple-choice question based on the video.\n",
            question="{question}", options_header="Options:\n", option="({letter}) {text}",
            footer=_BEST + " The best answer is: "),
        # the Kaggle CSV and the JSON that EgoSchema's validate.py posts, both for every question
        submissions=(Submission("submission.csv", egoschema_submission),
                     Submission("submission.json", egoschema_submission_json))),
    Benchmark(
        "mlvu", "its dev json/ folder", read_mlvu, lambda base: base.parent / "video",
        PromptTemplate(header="", question="Question: {question}", options_header="Options: \n",
                       option="({letter}) {text}", footer="\n" + _BEST),
        breakdowns=("task",), task_field="task"),
    Benchmark(
        "synthetic", "a synthetic world's mcq_test.jsonl", read_synthetic, lambda base: base,
        # hicom.data.synthetic.mcq_prompt, which instruction tuning saw
        PromptTemplate(header="", question="{question}", options_header="", option="{letter}. {text}",
                       footer=MCQ_INSTRUCTION),
        # the headline of the synthetic world is the family mean (each question family weighted equally)
        breakdowns=("family", "kind"), task_field="family",
        # the tiny profile is instruction-tuned on bare questions with short answers (no lettered lists):
        # measured on one model, colour_seen 0.53 with the bare question, 0.25 with the options listed
        likelihood_lists_options=False),
)}


def _first_dir(*folders: Path) -> Path:
    """The first folder that exists (a release's layouts differ by loader), else the first named."""
    return next((f for f in folders if f.is_dir()), folders[0])


def read_benchmark(benchmark: str, data: Path, videos: Path | None = None, subtitles: Path | None = None,
                   issues: list[dict] | None = None) -> list[Sample]:
    """The benchmark's samples; videos default to where its release puts them beside the annotations. Skipped
    items and resolved answers are appended to `issues` (results.json's data_issues)."""
    if benchmark not in BENCHMARKS:
        raise DataError(f"unknown benchmark {benchmark!r}; expected one of {tuple(BENCHMARKS)}")
    entry = BENCHMARKS[benchmark]
    if not data.exists():
        raise DataError(f"{benchmark}: --data {data} not found (expected {entry.data})")
    issues = [] if issues is None else issues
    videos = videos or entry.default_videos(data if data.is_dir() else data.parent)
    if subtitles is None:
        return entry.read(data, videos, issues)
    if not entry.subtitles:
        raise DataError(f"{benchmark}: subtitles are a Video-MME variant only")
    if not subtitles.is_dir():
        raise DataError(f"{benchmark}: --subtitles {subtitles} is not a folder (Video-MME's subtitle/)")
    return entry.read(data, videos, issues, subtitles)
