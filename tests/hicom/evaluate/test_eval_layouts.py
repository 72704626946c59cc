"""Readers on files laid out as each benchmark publishes them, with the quirks of the real releases:
MLVU's duplicated/absent answers and open-ended files, MVBench's two video layouts, subtitles in any
encoding, and the bad input that must fail before any model work."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hicom.core.errors import DataError
from hicom.evaluate.benchmarks import read_benchmark
from hicom.evaluate.readers import ABSENT_ANSWER, MVBENCH_TASKS, read_srt

# MLVU dev json/ as published: 7 multiple-choice files and 2 open-ended ones (no candidates). Items copied in
# shape from the release, including its real quirks: an answer listed twice (1_plotQA item 335 in the release),
# an answer that is no candidate (2_needle item 34), empty candidates (3_ego 119; all four in 7_topic_reasoning
# 26, whose answer "" then equals each), and an item without candidates (made up: it costs that item only).
MLVU_MC = {
    "1_plotQA": [(["Six", "Three", "Three", "Eight"], "Three"), (["Yellow", "Red", "Green", "Blue"], "Red")],
    "2_needle": [(["Fishing", "Catching the drone", "Launching the drone", "Sunbathing"],
                  "Catching a flying drone quadcopter"), (["Swim", "Run", "Walk", "Fly"], "Walk")],
    "3_ego": [(["Kitchen", "Bedroom", "Garden", "Garage"], "Garden"), (["In the garage", "", "Shelf", "Box"], "Box")],
    "4_count": [(["1", "2", "3", "4"], "4")],
    "5_order": [(["1->2->3", "3->2->1", "2->1->3", "1->3->2"], "3->2->1")],
    "6_anomaly_reco": [(["Shooting", "Normal", "Arson", "Shooting"], "Shooting")],
    "7_topic_reasoning": [(["", "", "", ""], ""), (["News", "Sports", "Cooking", "Travel"], "Cooking")],
}
MLVU_OPEN = {"8_sub_scene": {"scoring_points": ["a man runs"]}, "9_summary": {}}


def write_mlvu(root):
    json_dir = root / "MLVU" / "json"
    json_dir.mkdir(parents=True)
    for stem, items in MLVU_MC.items():
        (json_dir / f"{stem}.json").write_text(json.dumps([
            {"video": f"{stem}_{i}.mp4", "duration": 300, "question": f"Question {i} of {stem}?", "candidates": c,
             "answer": a, "question_type": stem.split("_", 1)[1]} for i, (c, a) in enumerate(items)]
            + ([{"video": "broken.mp4", "question": "No candidates?", "answer": "x"}] if stem == "4_count" else [])))
    for stem, extra in MLVU_OPEN.items():
        (json_dir / f"{stem}.json").write_text(json.dumps([
            {"video": "x.mp4", "duration": 300, "question": "Describe it.", "answer": "A man runs.",
             "question_type": stem.split("_", 1)[1], **extra}]))
    return json_dir


def test_mlvu_dev_folder_with_every_published_file_reads_with_ambiguous_items_resolved_as_the_official_scorer(
        tmp_path):
    json_dir = write_mlvu(tmp_path)
    issues = []
    with pytest.warns(UserWarning, match="open-ended"):
        samples = {s.id: s for s in read_benchmark("mlvu", json_dir, issues=issues)}
    # expected from the data: every item with candidates; the answer is the last equal candidate
    expected = {}
    for stem, items in MLVU_MC.items():
        for i, (candidates, answer) in enumerate(items):
            last = max((k for k, c in enumerate(candidates) if c == answer), default=None)
            expected[f"{stem}/{i}"] = ABSENT_ANSWER if last is None else "ABCD"[last]
    assert {k: s.answer for k, s in samples.items()} == expected
    assert samples["1_plotQA/0"].answer == "C" and samples["2_needle/0"].answer == ABSENT_ANSWER
    by_kind = {}
    for i in issues:
        by_kind.setdefault(i["resolution"].split(" ")[0], []).append((i["file"].rsplit("/", 1)[1], i["item"]))
    assert sorted(by_kind["the"]) == [("1_plotQA.json", 0), ("6_anomaly_reco.json", 0),
                                      ("7_topic_reasoning.json", 0)]  # duplicated answers
    assert by_kind["scored"] == [("2_needle.json", 0)]  # absent answer
    assert sorted(by_kind["asked"]) == [("3_ego.json", 1), ("7_topic_reasoning.json", 0)]  # empty candidates
    assert by_kind["skipped"] == [("4_count.json", 1)]  # no candidates: that item only
    assert samples["7_topic_reasoning/0"].answer == "D" and samples["3_ego/1"].options[1] == ""
    assert sorted(by_kind["file"]) == [("8_sub_scene.json", None), ("9_summary.json", None)]
    assert samples["3_ego/0"].video == tmp_path / "MLVU" / "video" / "3_ego" / "3_ego_0.mp4"


def write_mvbench_lmms(root, data0613=False):
    """lmms-eval's layout: json/ beside the unpacked task folders; star clips pre-cut into Charades_segment."""
    json_dir = root / "mvbench_video" / "json"
    json_dir.mkdir(parents=True)
    (json_dir / "action_sequence.json").write_text(json.dumps([
        {"video": "A1B2C.mp4", "question": "What happened?", "candidates": ["Ate.", "Slept."], "answer": "Slept.",
         "start": 11.2, "end": 20.5}]))
    (json_dir / "episodic_reasoning.json").write_text(json.dumps([
        {"video": "castle_s07e04_seg02_clip_14", "question": "Why?", "candidates": ["To joke.", "To leave."],
         "answer": "To joke.", "start": 3.0, "end": 9.0}]))
    (json_dir / "fine_grained_pose.json").write_text(json.dumps([
        {"video": "S001.avi", "question": "Which pose?", "candidates": ["Sit", "Stand"], "answer": "Sit"}]))
    base = root / "mvbench_video" / ("data0613" if data0613 else "")
    for folder, name in (("star/Charades_segment", "A1B2C.mp4"),
                         ("tvqa/video_fps3_hq_segment", "castle_s07e04_seg02_clip_14.mp4"),
                         ("nturgbd_convert", "S001.avi")):
        (base / folder).mkdir(parents=True, exist_ok=True)
        (base / folder / name).write_bytes(b"")
    return json_dir


@pytest.mark.parametrize("data0613", [False, True])
def test_mvbench_lmms_eval_layout_uses_its_folders_and_does_not_cut_its_pre_cut_clips_again(tmp_path, data0613):
    json_dir = write_mvbench_lmms(tmp_path, data0613)
    samples = {s.id: s for s in read_benchmark("mvbench", json_dir)}
    root = tmp_path / "mvbench_video" / ("data0613" if data0613 else "")
    seq = samples["action_sequence/0"]
    assert seq.video == root / "star/Charades_segment/A1B2C.mp4" and (seq.start, seq.end) == (None, None)
    episodic = samples["episodic_reasoning/0"]  # an mp4 clip here, not Ask-Anything's frame folder
    assert episodic.video == root / "tvqa/video_fps3_hq_segment/castle_s07e04_seg02_clip_14.mp4"
    assert episodic.frame_fps is None and episodic.start is None and episodic.answer == "A"
    assert samples["fine_grained_pose/0"].video == root / "nturgbd_convert/S001.avi"


def test_mvbench_ask_anything_layout_keeps_start_end_and_frame_folders(tmp_path):
    json_dir = write_mvbench_lmms(tmp_path)
    video = tmp_path / "mvbench_video" / "video"
    (video / "star/Charades_v1_480").mkdir(parents=True)
    samples = {s.id: s for s in read_benchmark("mvbench", json_dir)}
    assert samples["action_sequence/0"].video == video / "star/Charades_v1_480/A1B2C.mp4"
    assert (samples["action_sequence/0"].start, samples["action_sequence/0"].end) == (11.2, 20.5)
    assert samples["episodic_reasoning/0"].video == video / "tvqa/frames_fps3_hq/castle_s07e04_seg02_clip_14"
    assert samples["episodic_reasoning/0"].frame_fps == 3.0
    assert len(MVBENCH_TASKS) == 20


def test_videomme_lmms_eval_layout_finds_videos_in_data_beside_the_parquet_folder(tmp_path):
    parquet = tmp_path / "videomme" / "test-00000-of-00001.parquet"
    parquet.parent.mkdir()
    pq.write_table(pa.Table.from_pylist([
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "History", "videoID": "abc",
         "question_id": "001-1", "task_type": "Counting Problem", "question": "How many?",
         "options": ["A. 1.", "B. 2.", "C. 3.", "D. 4."], "answer": "B"}]), parquet)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "abc.mp4").write_bytes(b"")
    assert read_benchmark("videomme", parquet)[0].video == tmp_path / "data" / "abc.mp4"


# -- bad input fails before any model work, naming the file and what is wrong ------------------------------
def test_missing_benchmark_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=f"mlvu: --data {tmp_path / 'nowhere'} not found"):
        read_benchmark("mlvu", tmp_path / "nowhere")


@pytest.mark.parametrize("benchmark,name", [("mlvu", "1_plotQA.json"), ("mvbench", "action_sequence.json"),
                                            ("egoschema", "questions.json")])
def test_json_that_is_not_a_list_is_named(tmp_path, benchmark, name):
    (tmp_path / name).write_text(json.dumps({"video": "v.mp4"}))
    data = tmp_path / name if benchmark == "egoschema" else tmp_path
    with pytest.raises(DataError, match=f"{tmp_path / name}: expected a JSON list of items, got a JSON dict"):
        read_benchmark(benchmark, data)


def test_parquet_with_a_missing_column_is_named(tmp_path):
    path = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist([{"videoID": "abc", "question": "Q?"}]), path)
    with pytest.raises(DataError, match=rf"{path}: missing column\(s\) \['video_id', 'duration'"):
        read_benchmark("videomme", path)


# -- subtitles in any encoding ------------------------------------------------------------------------------
SRT = ("1\r\n00:00:02,000 --> 00:00:03,500\r\n<font color=\"#fff\">Caf\u00e9 au lait</font>\r\n\r\n"
       "00:00:00.500 --> 00:00:02.500\r\n<i>First</i>   line\r\nsecond part\r\n\r\n"  # no number, dot ms, overlap
       "3\r\n00:00:01,000 --> 00:00:01,200\r\n\u00a1Ol\u00e9!\r\n")
CUES = [(0.5, 2.5, "First line second part"), (1.0, 1.2, "\u00a1Ol\u00e9!"), (2.0, 3.5, "Caf\u00e9 au lait")]


@pytest.mark.parametrize("encoding,bom", [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("utf-16-le", b"\xff\xfe"),
                                          ("utf-16-be", b"\xfe\xff"), ("cp1252", b"")])
def test_srt_in_any_encoding_reads_to_the_same_ordered_cues(tmp_path, encoding, bom):
    path = tmp_path / "v.srt"
    path.write_bytes(bom + SRT.encode(encoding))
    assert read_srt(path) == CUES  # sorted by start, markup removed, text kept (no U+FFFD)


def test_srt_that_is_not_text_is_a_data_error_naming_it(tmp_path):
    path = tmp_path / "v.srt"
    path.write_bytes(b"\xff\xfe" + b"\x00\xd8" * 3)  # a UTF-16 BOM, then unpaired surrogates
    with pytest.raises(DataError, match="v.srt: starts with a utf-16 byte-order mark"):
        read_srt(path)
