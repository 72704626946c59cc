"""Resumable predictions: one JSON line per answered question, appended as soon as it is known.

Each process (torchrun rank) appends to its own part file, `parts/rank<r>.jsonl`, so no two writers
share a file. A record's `key` names everything its answer depends on (model version, benchmark
variant, sample id, prompt hash, frames, generation settings); a rerun reads every part, whatever
world size wrote it, and skips the keys it finds. A process killed mid-write leaves at most one torn
last line: reading ignores it and the next append cuts it off first. A torn line anywhere else means
the file was damaged some other way, and is an error naming the file and line.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hicom.core.errors import DataError

PARTS_DIR = "parts"


def prediction_key(model_version: str, benchmark: str, sample_id: str, prompt_hash: str, frames: int,
                   generation: str) -> str:
    return json.dumps([model_version, benchmark, sample_id, prompt_hash, frames, generation])


def text_hash(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def part_path(out: Path, rank: int) -> Path:
    return out / PARTS_DIR / f"rank{rank}.jsonl"


def read_records(path: Path) -> list[dict]:
    """The complete records of a part file; a torn (unterminated) last line is left out."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    records = []
    for n, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {n}: not a JSON record ({exc}); only a torn last line is tolerated") \
                from None
        if not isinstance(record, dict) or "key" not in record:
            raise DataError(f"{path} line {n}: a prediction record needs a 'key'")
        records.append(record)
    return records


def read_parts(out: Path) -> dict[str, dict]:
    """Every record of every part under out/parts, by key (a later duplicate wins: same inputs, same answer)."""
    merged: dict[str, dict] = {}
    for path in sorted((out / PARTS_DIR).glob("rank*.jsonl")):
        for record in read_records(path):
            merged[record["key"]] = record
    return merged


class PredictionLog:
    """Appends records to one part file, each flushed before the next question starts.

    No fsync: a killed process keeps what it flushed; a machine crash may lose the last lines, which a
    rerun answers again (their keys are simply absent).
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            data = path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):  # a torn line from a kill: cut it off before appending after it
                with open(path, "r+b") as fh:
                    fh.truncate(keep)
        self._fh = open(path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()  # in the OS once written: a killed process loses nothing it wrote

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def shard(items: list, rank: int, world: int) -> list:
    """This rank's share: every world-th item from position rank."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world}")
    return items[rank::world]
