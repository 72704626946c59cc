"""Readers for each benchmark's own annotation format, into one `Sample` shape (hicom.evaluate.benchmarks
registers them).

Video-MME: the official parquet (one row per question, options "A. ...", answer a letter), videos
`<videoID>.mp4|mkv|avi|mov`, subtitles `<videoID>.srt`. MVBench: 20 task JSONs (candidates, answer
as candidate text, optional start/end), each task's videos in its own folder. EgoSchema:
`questions.json` (q_uid, question, option 0..4) and `subset_answers.json` (the 500 public answers).
MLVU dev: 7 task JSONs (candidates, answer text, question_type). Synthetic: our mcq_test.jsonl.
Every malformed record is a DataError naming the file, the record and the field.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from hicom.core.errors import DataError
from hicom.evaluate.answers import letters_for

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")

# Task JSON stem -> (video folder under MVBench's video/, stored as "video" files or "frame" folders at 3 fps).
MVBENCH_TASKS = {
    "action_sequence": ("star/Charades_v1_480", "video"),
    "action_prediction": ("star/Charades_v1_480", "video"),
    "action_antonym": ("ssv2_video", "video"),
    "fine_grained_action": ("Moments_in_Time_Raw/videos", "video"),
    "unexpected_action": ("FunQA_test/test", "video"),
    "object_existence": ("clevrer/video_validation", "video"),
    "object_interaction": ("star/Charades_v1_480", "video"),
    "object_shuffle": ("perception/videos", "video"),
    "moving_direction": ("clevrer/video_validation", "video"),
    "action_localization": ("sta/sta_video", "video"),
    "scene_transition": ("scene_qa/video", "video"),
    "action_count": ("perception/videos", "video"),
    "moving_count": ("clevrer/video_validation", "video"),
    "moving_attribute": ("clevrer/video_validation", "video"),
    "state_change": ("perception/videos", "video"),
    "fine_grained_pose": ("nturgbd", "video"),
    "character_order": ("perception/videos", "video"),
    "egocentric_navigation": ("vlnqa", "video"),
    "episodic_reasoning": ("tvqa/frames_fps3_hq", "frame"),
    "counterfactual_inference": ("clevrer/video_validation", "video"),
}
MVBENCH_FRAME_FPS = 3.0
MLVU_TASKS = ("plotQA", "needle", "ego", "count", "order", "anomaly_reco", "topic_reasoning")
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
def read_videomme(path: Path, videos: Path, subtitles: Path | None = None) -> list[Sample]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's errors subclass these
        raise DataError(f"{path}: not a readable parquet file ({exc})") from exc
    missing = [c for c in VIDEOMME_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {table.column_names}")
    samples = []
    for i, row in enumerate(table.select(list(VIDEOMME_COLUMNS)).to_pylist()):
        where = f"{path} row {i} (question_id {row['question_id']!r})"
        options = _strip_letters(_require_list(row["options"], where, "options"), where)
        answer = _letter(row["answer"], len(options), where)
        video_id = _text(row["videoID"], where, "videoID")
        samples.append(Sample(
            id=_text(row["question_id"], where, "question_id"), video=_find_video(videos, video_id),
            question=_text(row["question"], where, "question"), options=options, answer=answer,
            groups={k: _text(row[k], where, k) for k in ("duration", "domain", "sub_category", "task_type")},
            subtitles=None if subtitles is None else subtitles / f"{video_id}.srt"))
    return _unique(samples, path)


def read_mvbench(json_dir: Path, videos: Path) -> list[Sample]:
    found = sorted(p.stem for p in json_dir.glob("*.json"))
    unknown = [s for s in found if s not in MVBENCH_TASKS]
    if unknown or not found:
        raise DataError(f"{json_dir}: expected MVBench task JSONs named after its 20 tasks "
                        f"({', '.join(MVBENCH_TASKS)}); found {found or 'none'}")
    samples = []
    for task in (t for t in MVBENCH_TASKS if t in found):
        path = json_dir / f"{task}.json"
        folder, kind = MVBENCH_TASKS[task]
        for i, item in enumerate(_json_list(path)):
            where = f"{path} item {i}"
            candidates = [str(c) for c in _require_list(_field(item, "candidates", where), where, "candidates")]
            start, end = _bounds(item, where)
            samples.append(Sample(
                id=f"{task}/{i}", video=videos / folder / _text(_field(item, "video", where), where, "video"),
                question=_text(_field(item, "question", where), where, "question"), options=candidates,
                answer=_answer_of(_field(item, "answer", where), candidates, where), groups={"task": task},
                start=start, end=end, frame_fps=MVBENCH_FRAME_FPS if kind == "frame" else None))
    return _unique(samples, json_dir)


def read_egoschema(path: Path, videos: Path) -> list[Sample]:
    """questions.json (or its folder); answers from subset_answers.json beside it where present."""
    questions = path / "questions.json" if path.is_dir() else path
    answers_file = questions.parent / "subset_answers.json"
    answers = _json_object(answers_file) if answers_file.is_file() else {}
    samples = []
    for i, item in enumerate(_json_list(questions)):
        where = f"{questions} item {i}"
        uid = _text(_field(item, "q_uid", where), where, "q_uid")
        options = [_text(_field(item, f"option {k}", where), where, f"option {k}") for k in range(EGOSCHEMA_OPTIONS)]
        answer = None
        if uid in answers:
            index = answers[uid]
            if not (isinstance(index, int) and 0 <= index < EGOSCHEMA_OPTIONS):
                raise DataError(f"{answers_file}: answer of {uid!r} must be an option index 0..4, got {index!r}")
            answer = letters_for(EGOSCHEMA_OPTIONS)[index]
        samples.append(Sample(id=uid, video=_find_video(videos, uid),
                              question=_text(_field(item, "question", where), where, "question"),
                              options=options, answer=answer))
    unknown = sorted(set(answers) - {s.id for s in samples})
    if unknown:
        raise DataError(f"{answers_file}: {len(unknown)} answer(s) for questions not in {questions}, "
                        f"e.g. {unknown[0]!r}")
    return _unique(samples, questions)


def read_mlvu(json_dir: Path, videos: Path) -> list[Sample]:
    files = sorted(json_dir.glob("*.json"))
    if not files:
        raise DataError(f"{json_dir}: no MLVU task JSONs (1_plotQA.json ... 7_topic_reasoning.json)")
    samples = []
    for path in files:
        for i, item in enumerate(_json_list(path)):
            where = f"{path} item {i}"
            candidates = [str(c) for c in _require_list(_field(item, "candidates", where), where, "candidates")]
            task = str(item.get("question_type") or re.sub(r"^\d+_", "", path.stem))
            samples.append(Sample(
                id=f"{path.stem}/{i}", video=videos / path.stem / _text(_field(item, "video", where), where, "video"),
                question=_text(_field(item, "question", where), where, "question"), options=candidates,
                answer=_answer_of(_field(item, "answer", where), candidates, where), groups={"task": task}))
    return _unique(samples, json_dir)


def read_synthetic(path: Path, videos: Path | None = None) -> list[Sample]:
    """A synthetic world's mcq_test.jsonl; videos are relative to its folder (or to `videos`)."""
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
                              groups={"kind": str(row.get("kind") or "unknown")}))
    return _unique(samples, path)


# -- subtitles ----------------------------------------------------------------------------------------
_SRT_TIME = re.compile(r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})")
_MARKUP = re.compile(r"<[^>]+>|\{\\[^}]*\}")


def read_srt(path: Path) -> list[tuple[float, float, str]]:
    """(start s, end s, text) per cue; markup (<i>, {\\an8}) removed, lines of a cue joined by a space."""
    text = path.read_text(encoding="utf-8-sig", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
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
        cues.append((start, end, words))
    return cues


def subtitles_at(cues: list[tuple[float, float, str]], times: list[float]) -> list[str]:
    """The cue text showing at each time, empty ones skipped, each distinct line once, in order."""
    lines: list[str] = []
    for t in times:
        for start, end, words in cues:
            if start <= t < end and words and words not in lines:
                lines.append(words)
    return lines


# -- field checks -------------------------------------------------------------------------------------
def _json_list(path: Path) -> list[dict]:
    data = _load_json(path)
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    return data


def _json_object(path: Path) -> dict:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
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


def _answer_of(answer, candidates: list[str], where: str) -> str:
    """The letter of the candidate equal to `answer` (these benchmarks give the answer as text)."""
    matches = [i for i, c in enumerate(candidates) if c == str(answer)]
    if len(matches) != 1:
        problem = "is not one of" if not matches else "appears more than once among"
        raise DataError(f"{where}: answer {answer!r} {problem} its candidates {candidates}")
    return letters_for(len(candidates))[matches[0]]


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


def _unique(samples: list[Sample], source: Path) -> list[Sample]:
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise DataError(f"{source}: sample id {s.id!r} appears more than once")
        seen.add(s.id)
    if not samples:
        raise DataError(f"{source}: no samples")
    return samples
