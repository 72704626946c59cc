"""Data mixtures (LLaVA lineage YAML) and LLaVA-format annotation files.

A mixture YAML lists `{json_path, data_root, sampling_strategy, split_turns}` entries. Strategies: `all`,
`first:N`, `end:N`, `random:N`, `random:P%`. Random selection uses a generator seeded from the
mixture seed and the entry's position, so every rank selects the same rows.

`split_turns: true` makes each question/answer pair of a selected multi-turn sample a sample of its own
(the visual tag at the head of each question; ids `<id>#<j>`), after the selection, so every count that
follows (steps, epochs, batches) is per question. In a multi-turn sample a question's sequence holds the
earlier turns, whose answers identify the clip: a small model then learns to answer from that text
instead of from the video (measured on the synthetic world; README, "Where the answer is lost").
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path

from hicom.core.errors import DataError
from hicom.core.files import read_yaml
from hicom.core.types import TAGS

STRATEGY = re.compile(r"^(all|first:(\d+)|end:(\d+)|random:(\d+)|random:(\d+(?:\.\d+)?)%)$")


@dataclass(frozen=True)
class MixtureEntry:
    json_path: Path
    data_root: Path
    sampling_strategy: str = "all"
    split_turns: bool = False


def read_annotations(path: str | Path) -> list[dict]:
    """Samples from a JSON array or a JSONL file; each must be an object with `conversations`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        samples = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                samples.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON line: {exc.msg}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of samples, got {type(data).__name__}")
        samples = [(f"[{i}]", s) for i, s in enumerate(data)]
    out = []
    for where, sample in samples:
        loc = f"{path}:{where}" if isinstance(where, int) else f"{path}{where}"
        if not isinstance(sample, dict):
            raise DataError(f"{loc}: a sample must be a JSON object")
        convs = sample.get("conversations")
        if not isinstance(convs, list) or not convs:
            raise DataError(f"{loc}: sample {sample.get('id', '?')!r} has no conversations")
        out.append(sample)
    return out


def select(samples: list, strategy: str, rng: random.Random, where: str = "sampling_strategy") -> list:
    match = STRATEGY.match(strategy.strip())
    if not match:
        raise DataError(f"{where}: unknown sampling strategy {strategy!r} "
                        "(use all, first:N, end:N, random:N or random:P%)")
    _, first, end, rand_n, rand_p = match.groups()
    if first is not None:
        return samples[:int(first)]
    if end is not None:
        return samples[-int(end):] if int(end) else []
    if rand_n is not None or rand_p is not None:
        n = int(rand_n) if rand_n is not None else math.ceil(float(rand_p) * len(samples) / 100)
        indices = sorted(rng.sample(range(len(samples)), min(n, len(samples))))
        return [samples[i] for i in indices]
    return list(samples)


def read_mixture(path: str | Path) -> list[MixtureEntry]:
    path = Path(path)
    data = read_yaml(path, DataError, "mixture file")
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), list):
        raise DataError(f"{path}: expected a top-level `datasets:` list")
    entries = []
    for i, item in enumerate(data["datasets"]):
        where = f"{path}: datasets[{i}]"
        if not isinstance(item, dict) or "json_path" not in item:
            raise DataError(f"{where}: needs a json_path")
        unknown = sorted(set(item) - {"json_path", "data_root", "sampling_strategy", "split_turns"})
        if unknown:
            raise DataError(f"{where}: unknown field(s) {unknown}")
        split_turns = item.get("split_turns", False)
        if not isinstance(split_turns, bool):
            raise DataError(f"{where}: split_turns must be true or false, got {split_turns!r}")
        json_path = path.parent / item["json_path"]
        data_root = path.parent / item.get("data_root", Path(item["json_path"]).parent)
        entries.append(MixtureEntry(json_path, data_root, str(item.get("sampling_strategy", "all")), split_turns))
    return entries


def read_entry_files(json_path: Path) -> list[dict]:
    """One annotation file, or a shard set given as a glob (`cond_pretrain-*.jsonl`), read in name order."""
    if not any(ch in json_path.name for ch in "*?["):
        return read_annotations(json_path)
    files = sorted(json_path.parent.glob(json_path.name))
    if not files:
        raise DataError(f"{json_path}: no annotation file matches this pattern")
    return [sample for f in files for sample in read_annotations(f)]


def split_turns(sample: dict, where: str) -> list[dict]:
    """One sample per question/answer pair of `sample`, each carrying the sample's visual tag at the head of its
    question; other fields are kept. A leading answer (no question) is dropped, as training does."""
    turns = list(sample["conversations"])
    if turns and isinstance(turns[0], dict) and turns[0].get("from") in ("gpt", "assistant"):
        turns = turns[1:]
    sample_id = sample.get("id", "?")
    if len(turns) < 2 or len(turns) % 2:
        raise DataError(f"{where}: sample {sample_id!r}: split_turns needs question/answer pairs, "
                        f"got {len(turns)} turns")
    modality = "video" if "video" in sample else "image" if "image" in sample else None
    tag = TAGS.get(modality)
    out = []
    for j in range(0, len(turns), 2):
        question, answer = dict(turns[j]), turns[j + 1]
        if not isinstance(question.get("value"), str):
            raise DataError(f"{where}: sample {sample_id!r}: turn {j} has no text value")
        if tag is not None:
            question["value"] = f"{tag}\n" + question["value"].replace(tag, "").strip()
        out.append({**sample, "id": f"{sample_id}#{j // 2}", "conversations": [question, answer]})
    return out


def load_mixture(path: str | Path, seed: int = 0) -> list[dict]:
    """All selected samples of a mixture; media paths made absolute under each entry's data_root."""
    samples = []
    for i, entry in enumerate(read_mixture(path)):
        rng = random.Random(f"{seed}:{i}")
        chosen = select(read_entry_files(entry.json_path), entry.sampling_strategy, rng,
                        f"{path}: datasets[{i}].sampling_strategy")
        if entry.split_turns:
            chosen = [part for sample in chosen for part in split_turns(sample, f"{entry.json_path}")]
        for sample in chosen:
            sample = dict(sample)
            for key in ("video", "image"):
                if isinstance(sample.get(key), str):
                    sample[key] = str(entry.data_root / sample[key])
                elif isinstance(sample.get(key), list):
                    sample[key] = [str(entry.data_root / p) for p in sample[key]]
            samples.append(sample)
    return samples


def samples_digest(samples: list[dict]) -> str:
    """A content hash of a selection, for tracking which data a run saw."""
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps(s, sort_keys=True).encode())
    return h.hexdigest()
