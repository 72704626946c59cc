"""Readers for each benchmark's published files, as released, into one `Sample` shape
(hicom.evaluate.benchmarks registers them).

Video-MME: the official parquet (one row per question, options "A. ...", answer a letter), videos
`<videoID>.mp4|mkv|...` (lmms-eval unpacks them into `data/` beside `videomme/`), subtitles
`subtitle/<videoID>.srt`. MVBench: 20 task JSONs under `json/` (candidates, answer as candidate text,
optional start/end), each task's videos in its own folder, in the Ask-Anything layout
(`video/star/Charades_v1_480`, start/end applied) or the lmms-eval one (pre-cut `star/Charades_segment`,
start/end already applied by the cut). EgoSchema: `questions.json` (q_uid, question, option 0..4) and
`subset_answers.json` (the 500 public answers). MLVU dev: `json/1_plotQA.json` ... `9_summary.json`; the
two open-ended files (no candidates) are skipped. Synthetic: our mcq_test.jsonl.

A file that cannot be read as its benchmark's format (not a list, a missing column) is a DataError
naming it. A malformed item costs that item only: it is skipped and recorded in `issues` (file, item,
problem, resolution), as is an answer the official scorer has to resolve (see `_answer_of`).
"""
from __future__ import annotations

import codecs
import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hicom.core.errors import DataError
from hicom.evaluate.answers import letters_for

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")

# Task JSON stem -> its video folder in the Ask-Anything layout (under MVBench's video/; "video" files or
# "frame" folders at 3 fps), then in lmms-eval's (under its cache dir; `_segment` folders hold clips already
# cut to the item's start/end). Folder names from video_chat2/mvbench.ipynb and lmms-eval tasks/mvbench/utils.py.
MVBENCH_TASKS = {
    "action_sequence": ("star/Charades_v1_480", "video", "star/Charades_segment"),
    "action_prediction": ("star/Charades_v1_480", "video", "star/Charades_segment"),
    "action_antonym": ("ssv2_video", "video", "ssv2_video_mp4"),
    "fine_grained_action": ("Moments_in_Time_Raw/videos", "video", "Moments_in_Time_Raw/videos"),
    "unexpected_action": ("FunQA_test/test", "video", "FunQA_test/test"),
    "object_existence": ("clevrer/video_validation", "video", "clevrer/video_validation"),
    "object_interaction": ("star/Charades_v1_480", "video", "star/Charades_segment"),
    "object_shuffle": ("perception/videos", "video", "perception/videos"),
    "moving_direction": ("clevrer/video_validation", "video", "clevrer/video_validation"),
    "action_localization": ("sta/sta_video", "video", "sta/sta_video_segment"),
    "scene_transition": ("scene_qa/video", "video", "scene_qa/video"),
    "action_count": ("perception/videos", "video", "perception/videos"),
    "moving_count": ("clevrer/video_validation", "video", "clevrer/video_validation"),
    "moving_attribute": ("clevrer/video_validation", "video", "clevrer/video_validation"),
    "state_change": ("perception/videos", "video", "perception/videos"),
    "fine_grained_pose": ("nturgbd", "video", "nturgbd_convert"),
    "character_order": ("perception/videos", "video", "perception/videos"),
    "egocentric_navigation": ("vlnqa", "video", "vlnqa"),
    "episodic_reasoning": ("tvqa/frames_fps3_hq", "frame", "tvqa/video_fps3_hq_segment"),
    "counterfactual_inference": ("clevrer/video_validation", "video", "clevrer/video_validation"),
}
MVBENCH_FRAME_FPS = 3.0
# The answer letter of an item whose answer is none of its candidates: what MLVU's choice_bench.py and
# MVBench's mvbench.ipynb make of it (answer_idx stays -1, so chr(ord("A") - 1)); no reply ever matches it.
ABSENT_ANSWER = "@"
VIDEOMME_COLUMNS = ("video_id", "duration", "domain", "sub_category", "videoID", "question_id", "task_type",
                    "question", "options", "answer")
EGOSCHEMA_OPTIONS = 5


@dataclass
class Sample:
    """One multiple-choice question about one video."""

    id: str  # unique within the benchmark
    video: Path  # a file, or a folder of frames
    question: str  # the bare question: the prompt's question line and the instruction guide
    options: list[str]  # option texts, without their letters
    answer: str | None  # the correct letter; None where the benchmark keeps it private
    groups: dict[str, str] = field(default_factory=dict)  # breakdown fields (duration, task, ...)
    start: float | None = None  # seconds: only this part of the video is sampled
    end: float | None = None
    frame_fps: float | None = None  # the rate of a frame folder
    subtitles: Path | None = None  # .srt whose lines at the sampled frames go into the prompt

    @property
    def video_key(self) -> tuple:
        """Questions with the same key share one decoded clip and one pass of the vision tower."""
        return str(self.video), self.start, self.end, self.frame_fps


# -- readers ------------------------------------------------------------------------------------------
def _items(rows: list, label: Callable[[int, object], str], issues: list[dict], path: Path,
           read: Callable[[str, object], Sample | None]) -> list[Sample]:
    """read(where, row) for each row; a row that is malformed is skipped and recorded, the rest go on."""
    out = []
    for i, row in enumerate(rows):
        where = label(i, row)
        try:
            sample = read(where, row)
        except DataError as exc:
            issues.append(issue(path, i, str(exc).removeprefix(where + ": "), "skipped"))
            warnings.warn(f"{exc}: item skipped", stacklevel=2)
            continue
        if sample is not None:
            out.append(sample)
    return out


def issue(path: Path, item, problem: str, resolution: str) -> dict:
    """One entry of results.json's data_issues."""
    return {"file": str(path), "item": item, "problem": problem, "resolution": resolution}


def read_videomme(path: Path, videos: Path, issues: list[dict], subtitles: Path | None = None) -> list[Sample]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's errors subclass these
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    missing = [c for c in VIDEOMME_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {table.column_names}")

    def read(where: str, row: dict) -> Sample:
        options = _strip_letters(_require_list(row["options"], where, "options"), where)
        answer = _letter(row["answer"], len(options), where)
        video_id = _text(row["videoID"], where, "videoID")
        return Sample(
            id=_text(row["question_id"], where, "question_id"), video=_find_video(videos, video_id),
            question=_text(row["question"], where, "question"), options=options, answer=answer,
            groups={k: _text(row[k], where, k) for k in ("duration", "domain", "sub_category", "task_type")},
            subtitles=None if subtitles is None else subtitles / f"{video_id}.srt")

    rows = table.select(list(VIDEOMME_COLUMNS)).to_pylist()
    return _unique(_items(rows, lambda i, row: f"{path} row {i} (question_id {row['question_id']!r})", issues, path,
                          read), path)


def read_mvbench(json_dir: Path, videos: Path, issues: list[dict]) -> list[Sample]:
    """Each task's videos from whichever layout holds its folder: Ask-Anything's first, then lmms-eval's (also
    under `data0613/`, where lmms-eval looks for star and clevrer); the Ask-Anything path when neither exists
    (the pre-flight then lists its videos as missing)."""
    if not json_dir.is_dir():
        raise DataError(f"{json_dir}: not a folder; MVBench's --data is its json/ folder of task files")
    found = sorted(p.stem for p in json_dir.glob("*.json"))
    unknown = [s for s in found if s not in MVBENCH_TASKS]
    if unknown or not found:
        raise DataError(f"{json_dir}: expected MVBench task JSONs named after its 20 tasks "
                        f"({', '.join(MVBENCH_TASKS)}); found {found or 'none'}")
    samples = []
    for task in (t for t in MVBENCH_TASKS if t in found):
        path = json_dir / f"{task}.json"
        folder, kind, cut = _mvbench_folder(videos, task)

        def read(where: str, item, task=task, folder=folder, kind=kind, cut=cut) -> Sample:
            item = _object(item, where)
            candidates = _candidates(item, where, path, issues)
            start, end = (None, None) if cut else _bounds(item, where)
            name = _text(_field(item, "video", where), where, "video")
            video = folder / name if kind == "frame" else _video_in(folder, name)
            return Sample(
                id=f"{task}/{where.rsplit(' ', 1)[1]}", video=video,
                question=_text(_field(item, "question", where), where, "question"), options=candidates,
                answer=_answer_of(_field(item, "answer", where), candidates, where, path, issues),
                groups={"task": task}, start=start, end=end, frame_fps=MVBENCH_FRAME_FPS if kind == "frame" else None)

        samples += _items(_json_list(path), lambda i, _: f"{path} item {i}", issues, path, read)
    return _unique(samples, json_dir)


def mvbench_videos(json_dir: Path) -> Path:
    """The default video root: Ask-Anything's video/ beside json/, else the folder holding json/ when it holds
    lmms-eval's task folders (star/, clevrer/, ... unpacked beside json/), else video/ (listed missing later)."""
    lmms_folders = [root / lmms for _, _, lmms in MVBENCH_TASKS.values() for root in (Path(), Path("data0613"))]
    if not (json_dir.parent / "video").is_dir() and any((json_dir.parent / f).is_dir() for f in lmms_folders):
        return json_dir.parent
    return json_dir.parent / "video"


def _mvbench_folder(videos: Path, task: str) -> tuple[Path, str, bool]:
    """(folder, "video" or "frame", whether its clips are pre-cut to start/end) of a task's videos."""
    ask_anything, kind, lmms = MVBENCH_TASKS[task]
    if (videos / ask_anything).is_dir():
        return videos / ask_anything, kind, False
    for root in (videos, videos / "data0613"):
        if (root / lmms).is_dir():
            return root / lmms, "video", lmms.endswith("_segment")
    return videos / ask_anything, kind, False


def read_egoschema(path: Path, videos: Path, issues: list[dict]) -> list[Sample]:
    """questions.json (or its folder); answers from subset_answers.json beside it where present."""
    questions = path / "questions.json" if path.is_dir() else path
    answers_file = questions.parent / "subset_answers.json"
    answers = _json_object(answers_file) if answers_file.is_file() else {}
    letters = letters_for(EGOSCHEMA_OPTIONS)

    def read(where: str, item) -> Sample:
        item = _object(item, where)
        uid = _text(_field(item, "q_uid", where), where, "q_uid")
        options = [_text(_field(item, f"option {k}", where), where, f"option {k}") for k in range(EGOSCHEMA_OPTIONS)]
        answer = None
        if uid in answers:
            index = answers[uid]
            if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < EGOSCHEMA_OPTIONS:
                answer = letters[index]
            else:
                issues.append(issue(answers_file, uid, f"answer must be an option index 0..4, got {index!r}",
                                    "not scored (its question is still asked and submitted)"))
        return Sample(id=uid, video=_find_video(videos, uid), options=options, answer=answer,
                      question=_text(_field(item, "question", where), where, "question"))

    samples = _items(_json_list(questions), lambda i, _: f"{questions} item {i}", issues, questions, read)
    unknown = sorted(set(answers) - {s.id for s in samples})
    if unknown:
        issues.append(issue(answers_file, unknown[0], f"{len(unknown)} answer(s) for questions not in {questions}",
                            "ignored"))
    return _unique(samples, questions)


def read_mlvu(json_dir: Path, videos: Path, issues: list[dict]) -> list[Sample]:
    """Every task file of the dev json/ folder; the open-ended ones (sub_scene, summary: no candidates) are
    skipped with a warning; an item without candidates inside a multiple-choice file is skipped alone."""
    if not json_dir.is_dir():
        raise DataError(f"{json_dir}: not a folder; MLVU's --data is its dev json/ folder")
    files = sorted(json_dir.glob("*.json"))
    if not files:
        raise DataError(f"{json_dir}: no MLVU task JSONs (1_plotQA.json ... 9_summary.json)")
    samples = []
    for path in files:
        rows = _json_list(path)
        if rows and not any(isinstance(r, dict) and "candidates" in r for r in rows):
            warnings.warn(f"{path}: open-ended task (no item has candidates): skipped", stacklevel=2)
            issues.append(issue(path, None, "open-ended task: no item has candidates", "file skipped"))
            continue

        def read(where: str, item, path=path) -> Sample:
            item = _object(item, where)
            candidates = _candidates(item, where, path, issues)
            task = str(item.get("question_type") or re.sub(r"^\d+_", "", path.stem))
            return Sample(
                id=f"{path.stem}/{where.rsplit(' ', 1)[1]}",
                video=videos / path.stem / _text(_field(item, "video", where), where, "video"),
                question=_text(_field(item, "question", where), where, "question"), options=candidates,
                answer=_answer_of(_field(item, "answer", where), candidates, where, path, issues),
                groups={"task": task})

        samples += _items(rows, lambda i, _: f"{path} item {i}", issues, path, read)
    return _unique(samples, json_dir)


def read_synthetic(path: Path, videos: Path | None, issues: list[dict]) -> list[Sample]:
    """A synthetic world's mcq_test.jsonl (our own file: any bad line is an error); videos are relative to its
    folder (or to `videos`)."""
    root = videos or path.parent
    samples = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {i}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON ({exc})") from None
        options = [str(o) for o in _require_list(_field(row, "options", where), where, "options")]
        samples.append(Sample(id=_text(_field(row, "id", where), where, "id"),
                              video=root / _text(_field(row, "video", where), where, "video"),
                              question=_text(_field(row, "question", where), where, "question"), options=options,
                              answer=_letter(_field(row, "answer", where), len(options), where),
                              groups={"kind": str(row.get("kind") or "unknown"),
                                      "family": str(row.get("family") or "unknown")}))
    return _unique(samples, path)


# -- subtitles ----------------------------------------------------------------------------------------
_SRT_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")
_MARKUP = re.compile(r"<[^>]+>|\{\\[^}]*\}")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_subtitles(data: bytes, path: Path) -> str:
    """The text of a subtitle file: by its BOM (UTF-8, UTF-16/32 LE/BE), else strict UTF-8, else the encoding
    charset-normalizer finds most likely (cp1252, latin-1, GB18030, ...); a DataError when none fits."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: starts with a {encoding} byte-order mark but is not {encoding} ({exc})") \
                    from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise DataError(f"{path}: not text in any encoding charset-normalizer knows")
    return str(best)


def read_srt(path: Path) -> list[tuple[float, float, str]]:
    """(start s, end s, text) per cue, ordered by start; markup (<i>, <font ...>, {\\an8}) removed, lines of a
    cue joined by a space. Sequence numbers may be missing, cues may overlap or come out of order."""
    text = decode_subtitles(path.read_bytes(), path).replace("\r\n", "\n").replace("\r", "\n")
    cues = []
    for n, block in enumerate(re.split(r"\n\s*\n", text.strip()), 1):
        lines = [line for line in block.split("\n") if line.strip()]
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            if lines:
                raise DataError(f"{path}: cue {n} has no 'start --> end' line: {block[:80]!r}")
            continue
        times = _SRT_TIME.findall(lines[timing])
        if len(times) != 2:
            raise DataError(f"{path}: cue {n}: cannot read the times in {lines[timing]!r}")
        start, end = (int(h) * 3600 + int(m) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000 for h, m, s, ms in times)
        words = " ".join(_MARKUP.sub("", line).strip() for line in lines[timing + 1:]).strip()
        cues.append((start, end, " ".join(words.split())))
    return sorted(cues, key=lambda cue: (cue[0], cue[1]))


def subtitles_at(cues: list[tuple[float, float, str]], times: list[float]) -> list[str]:
    """The cue text showing at each time, empty ones skipped, each distinct line once, in order."""
    lines: list[str] = []
    for t in times:
        for start, end, words in cues:
            if start <= t < end and words and words not in lines:
                lines.append(words)
    return lines


# -- field checks -------------------------------------------------------------------------------------
def _json_list(path: Path) -> list:
    data = _load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of items, got a JSON {type(data).__name__}")
    return data


def _json_object(path: Path) -> dict:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _load_json(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _field(item: dict, name: str, where: str):
    if name not in item:
        raise DataError(f"{where}: missing field {name!r}")
    return item[name]


def _text(value, where: str, name: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: field {name!r} is empty")
    return str(value)


def _require_list(value, where: str, name: str) -> list:
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if not isinstance(value, list) or not 2 <= len(value) <= 8:
        raise DataError(f"{where}: field {name!r} must be a list of 2 to 8 options, got {value!r}")
    return value


def _strip_letters(options: list, where: str) -> list[str]:
    """["A. Apples.", "B. Pears."] -> ["Apples.", "Pears."]; the letters must run A, B, C, ..."""
    out = []
    for letter, option in zip(letters_for(len(options)), options):
        m = re.match(rf"\s*\(?{letter}[.)]\s*(.*)$", str(option), re.DOTALL)
        if m is None:
            raise DataError(f"{where}: option {letter} should start with '{letter}.', got {option!r}")
        out.append(m.group(1).strip())
    return out


def _letter(value, num_options: int, where: str) -> str:
    letters = letters_for(num_options)
    if not (isinstance(value, str) and value.strip().upper() in letters and len(value.strip()) == 1):
        raise DataError(f"{where}: field 'answer' must be one of the letters {', '.join(letters)}, got {value!r}")
    return value.strip().upper()


def _answer_of(answer, candidates: list[str], where: str, path: Path, issues: list[dict]) -> str:
    """The letter of the candidate equal to `answer` (MVBench and MLVU give the answer as text), resolved as
    their official scorers do (MLVU evaluation/multiple_choice_evaluation/choice_bench.py and MVBench
    video_chat2/mvbench.ipynb, `qa_template`: `if c == answer: answer_idx = idx` over the candidates, from -1):
    an answer equal to several candidates is the last of them; one equal to none gets ABSENT_ANSWER, asked
    but never correct. Both are recorded in `issues`."""
    item = int(where.rsplit(" ", 1)[1])
    matches = [i for i, c in enumerate(candidates) if c == str(answer)]
    letters = letters_for(len(candidates))
    if not matches:
        issues.append(issue(path, item, f"answer {answer!r} is not one of its candidates {candidates}",
                            "scored as wrong whatever the reply (official scorer: answer index -1)"))
        return ABSENT_ANSWER
    if len(matches) > 1:
        issues.append(issue(path, item, f"answer {answer!r} appears {len(matches)} times among its candidates "
                                        f"{candidates}",
                            f"the last one, {letters[matches[-1]]}, is correct (official scorer)"))
    return letters[matches[-1]]


def _candidates(item: dict, where: str, path: Path, issues: list[dict]) -> list[str]:
    """The candidates as published; empty ones (a few MLVU dev items have them) are kept and shown empty, as the
    official scorers ask them, and recorded."""
    candidates = [str(c) for c in _require_list(_field(item, "candidates", where), where, "candidates")]
    if any(not c.strip() for c in candidates):
        issues.append(issue(path, int(where.rsplit(" ", 1)[1]), f"empty option(s) among its candidates {candidates}",
                            "asked as published (official scorer)"))
    return candidates


def _object(item, where: str) -> dict:
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(item).__name__}")
    return item


def _bounds(item: dict, where: str) -> tuple[float | None, float | None]:
    start, end = item.get("start"), item.get("end")
    if start is None and end is None:
        return None, None
    try:
        start, end = float(start), float(end)
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'start' and 'end' must be numbers of seconds, got {start!r}, {end!r}") from None
    if not 0 <= start < end:
        raise DataError(f"{where}: need 0 <= start < end, got start={start}, end={end}")
    return start, end


def _find_video(folder: Path, stem: str) -> Path:
    """folder/stem.<suffix> for the first suffix present, else the .mp4 name (reported as missing later)."""
    for suffix in VIDEO_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return folder / f"{stem}{VIDEO_SUFFIXES[0]}"


def _video_in(folder: Path, name: str) -> Path:
    """folder/name as given when it exists, else with a video suffix added (lmms-eval's clips), else as given."""
    if (folder / name).exists():
        return folder / name
    found = _find_video(folder, name)
    return found if found.exists() else folder / name


def _unique(samples: list[Sample], source: Path) -> list[Sample]:
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise DataError(f"{source}: sample id {s.id!r} appears more than once")
        seen.add(s.id)
    if not samples:
        raise DataError(f"{source}: no samples")
    return samples
