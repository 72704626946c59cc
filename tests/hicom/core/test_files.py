"""The base layer's file I/O: atomic writes never leave a partial file, readers name file and line."""
from __future__ import annotations

import json
import os
import stat

import pytest

from hicom.core.errors import ConfigError, DataError
from hicom.core.files import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_dir,
    atomic_write_json,
    iter_jsonl,
    read_json_object,
    sha256_file,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("size", [0, 1, 1 << 20])
def test_atomic_write_bytes_replaces_the_file_whole_and_leaves_no_temporary(tmp_path, size):
    target = tmp_path / "sub" / "out.bin"
    atomic_write_bytes(target, b"old")
    data = os.urandom(size)
    atomic_write_bytes(target, data)
    assert target.read_bytes() == data
    assert _leftovers(target.parent) == []


def test_a_writer_that_fails_keeps_the_previous_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "clip.mp4"
    target.write_bytes(b"complete")

    def crash(tmp):
        assert tmp.suffix == ".mp4" and tmp.parent == tmp_path  # same folder (rename stays atomic), same suffix
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"complete"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_atomic_write_gives_the_requested_mode_not_the_temporary_files(tmp_path, mode):
    target = atomic_write_json(tmp_path / "a.json", {"x": 1}) if mode == 0o644 else \
        atomic_write_bytes(tmp_path / "secret", b"k", mode=mode)
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_report_and_artifact_files_and_folders_are_readable_by_the_group(tmp_path):
    """A teammate's web server serves the reports: files 0644, folders (checkpoints, report dirs) 0755."""
    page = atomic_write_bytes(tmp_path / "report" / "report.html", b"<html></html>")
    folder = atomic_write_dir(tmp_path / "checkpoint", lambda d: atomic_write_bytes(d / "model.safetensors", b"w"))
    assert stat.S_IMODE(page.stat().st_mode) == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "model.safetensors").stat().st_mode) == 0o644


def test_atomic_write_dir_swaps_the_folder_only_once_the_new_one_is_complete(tmp_path):
    out = tmp_path / "model"
    atomic_write_dir(out, lambda d: (d / "weights").write_text("v1"))

    def crash(d):
        (d / "weights").write_text("v2-partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write_dir(out, crash)
    assert (out / "weights").read_text() == "v1"
    atomic_write_dir(out, lambda d: (d / "weights").write_text("v2"))
    assert sorted(p.name for p in out.iterdir()) == ["weights"] and (out / "weights").read_text() == "v2"
    assert _leftovers(tmp_path) == []


def test_read_json_object_names_the_file_for_each_kind_of_bad_content(tmp_path):
    bad = tmp_path / "bad.json"
    with pytest.raises(FileNotFoundError, match="bad.json"):
        read_json_object(bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON"):
        read_json_object(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"bad\.json: expected a JSON object, got list"):
        read_json_object(bad, error=DataError)


def test_iter_jsonl_skips_blank_lines_and_names_the_malformed_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\n\n" + json.dumps([2]) + "\n{oops\n")
    rows = iter_jsonl(path, error=DataError)
    assert next(rows) == (1, {"a": 1}) and next(rows) == (3, [2])
    with pytest.raises(DataError, match=r"rows\.jsonl:4: malformed JSON line"):
        next(rows)


def test_sha256_file_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    assert sha256_file(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
