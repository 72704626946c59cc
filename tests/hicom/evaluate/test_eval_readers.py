"""Benchmark readers on small annotation files written in each benchmark's own format."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hicom.core.errors import DataError
from hicom.data.synthetic import mcq_prompt
from hicom.evaluate.benchmarks import BENCHMARKS, read_benchmark
from hicom.evaluate.prompts import guide_text
from hicom.evaluate.readers import ABSENT_ANSWER, Sample, read_srt, subtitles_at

VIDEOMME_ROWS = [
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
     "task_type": "Counting Problem", "question": "How many people are shown?",
     "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."], "answer": "C"},
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-2",
     "task_type": "Action Reasoning", "question": "What is this video mainly about?",
     "options": ["A. Cooking.", "B. History.", "C. Sport.", "D. Music."], "answer": "B"},
]


def write_videomme(tmp_path, rows=VIDEOMME_ROWS):
    path = tmp_path / "videomme" / "test-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "fFjv93ACGo8.mkv").write_bytes(b"")
    return path


def test_videomme_parquet_gives_letterless_options_breakdown_fields_and_the_video_by_its_youtube_id(tmp_path):
    path = write_videomme(tmp_path)
    (tmp_path / "subs").mkdir()
    samples = read_benchmark("videomme", path, tmp_path / "videos", tmp_path / "subs")
    first = samples[0]
    assert [s.id for s in samples] == ["001-1", "001-2"]
    assert first.options == ["One.", "Two.", "Three.", "Four."] and first.answer == "C"
    assert first.video == tmp_path / "videos" / "fFjv93ACGo8.mkv"  # whichever container is present
    assert first.subtitles == tmp_path / "subs" / "fFjv93ACGo8.srt"
    assert first.groups == {"duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
                            "task_type": "Counting Problem"}
    assert first.video_key == samples[1].video_key  # both questions share one decoded clip


def test_videomme_prompt_is_the_release_wording_with_subtitles_in_front(tmp_path):
    sample = read_benchmark("videomme", write_videomme(tmp_path), tmp_path / "videos")[0]
    assert BENCHMARKS["videomme"].template.render(sample) == (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only "
        "the letter (A, B, C, or D) of the correct option.\nHow many people are shown?\nA. One.\nB. Two.\n"
        "C. Three.\nD. Four.\nAnswer with the option's letter from the given choices directly and only give the "
        "best option. The best answer is: ")
    with_subs = BENCHMARKS["videomme"].template.render(sample, ["Hello there.", "Two of us."])
    assert with_subs.startswith("This video's subtitles are listed below:\nHello there.\nTwo of us.\nSelect the best")
    assert guide_text(sample) == "How many people are shown?"  # the bare question guides compression


@pytest.mark.parametrize("column,value,message", [
    ("options", ["One.", "B. Two.", "C. Three.", "D. Four."], "option A should start with 'A.', got 'One.'"),
    ("answer", "E", "field 'answer' must be one of the letters A, B, C, D, got 'E'"),
])
def test_videomme_bad_row_costs_that_row_only_and_is_listed_with_file_and_field(tmp_path, column, value, message):
    path = write_videomme(tmp_path, [{**VIDEOMME_ROWS[0], column: value}, VIDEOMME_ROWS[1]])
    issues = []
    with pytest.warns(UserWarning, match="item skipped"):
        samples = read_benchmark("videomme", path, tmp_path / "videos", issues=issues)
    assert [s.id for s in samples] == ["001-2"]
    assert issues == [{"file": str(path), "item": 0, "problem": message, "resolution": "skipped"}]


def test_videomme_missing_column_is_named(tmp_path):
    rows = [{k: v for k, v in VIDEOMME_ROWS[0].items() if k != "task_type"}]
    with pytest.raises(DataError, match=r"missing column\(s\) \['task_type'\]"):
        read_benchmark("videomme", write_videomme(tmp_path, rows), tmp_path / "videos")


def test_srt_cues_are_read_with_markup_removed_and_picked_at_frame_times(tmp_path):
    srt = tmp_path / "v.srt"
    srt.write_text("\ufeff1\r\n00:00:00,500 --> 00:00:02,000\r\n<i>Hello</i>\r\nthere.\r\n\r\n"
                   "2\r\n00:00:02,000 --> 00:00:03,000\r\n{\\an8}Second line\r\n\r\n"
                   "3\r\n00:00:05,000 --> 00:00:06,000\r\n\r\n", encoding="utf-8")
    cues = read_srt(srt)
    assert cues == [(0.5, 2.0, "Hello there."), (2.0, 3.0, "Second line"), (5.0, 6.0, "")]
    # frames at 0.0 (no cue), 1.0 and 1.5 (cue 1 once), 2.0 (cue 2, end is exclusive), 5.5 (empty cue skipped)
    assert subtitles_at(cues, [0.0, 1.0, 1.5, 2.0, 5.5]) == ["Hello there.", "Second line"]


def test_srt_with_unreadable_times_names_the_file_and_cue(tmp_path):
    srt = tmp_path / "bad.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:xx --> 00:00:04,000\nbad\n")
    with pytest.raises(DataError, match="bad.srt: cue 2: cannot read the times"):
        read_srt(srt)


def write_mvbench(tmp_path):
    json_dir = tmp_path / "MVBench" / "json"
    json_dir.mkdir(parents=True)
    (json_dir / "action_sequence.json").write_text(json.dumps([
        {"video": "A1B2C.mp4", "question": "What happened after the person held the food?",
         "candidates": ["Ate the medicine.", "Tidied up the blanket.", "Put down the cup/glass/bottle."],
         "answer": "Tidied up the blanket.", "start": 11.2, "end": 20.5}]))
    (json_dir / "episodic_reasoning.json").write_text(json.dumps([
        {"video": "castle_s07e04_seg02_clip_14", "question": "Why did Castle say that?",
         "candidates": ["To joke.", "To leave.", "To sleep.", "To eat.", "To read."], "answer": "To eat.",
         "start": 3.0, "end": 9.0}]))
    (json_dir / "object_shuffle.json").write_text(json.dumps([
        {"video": "video_10000.mp4", "question": "Where is the ball?", "candidates": ["Left", "Right"],
         "answer": "Right"}]))
    return json_dir


def test_mvbench_task_files_give_per_task_samples_with_their_video_folders_bounds_and_answer_letters(tmp_path):
    json_dir = write_mvbench(tmp_path)
    samples = {s.id: s for s in read_benchmark("mvbench", json_dir)}
    video_root = tmp_path / "MVBench" / "video"  # the release's layout: json/ beside video/
    seq = samples["action_sequence/0"]
    assert seq.video == video_root / "star/Charades_v1_480/A1B2C.mp4"
    assert (seq.start, seq.end, seq.answer, seq.groups) == (11.2, 20.5, "B", {"task": "action_sequence"})
    episodic = samples["episodic_reasoning/0"]
    assert episodic.video == video_root / "tvqa/frames_fps3_hq/castle_s07e04_seg02_clip_14"
    assert episodic.frame_fps == 3.0 and episodic.answer == "D"
    shuffle = samples["object_shuffle/0"]
    assert (shuffle.start, shuffle.end, shuffle.frame_fps, shuffle.answer) == (None, None, None, "B")
    assert BENCHMARKS["mvbench"].template.render(shuffle) == (
        "Question: Where is the ball?\nOptions:\n(A) Left\n(B) Right\nAnswer with the option's letter from the "
        "given choices directly and only give the best option.")


def test_mvbench_answer_not_among_candidates_is_asked_but_never_correct_and_listed(tmp_path):
    json_dir = write_mvbench(tmp_path)
    (json_dir / "object_shuffle.json").write_text(json.dumps([
        {"video": "v.mp4", "question": "Where?", "candidates": ["Left", "Right"], "answer": "Up"}]))
    issues = []
    samples = {s.id: s for s in read_benchmark("mvbench", json_dir, issues=issues)}
    assert samples["object_shuffle/0"].answer == ABSENT_ANSWER and ABSENT_ANSWER not in "AB"
    assert [(i["item"], i["file"].endswith("object_shuffle.json")) for i in issues] == [(0, True)]
    assert "'Up' is not one of its candidates" in issues[0]["problem"]


def test_mvbench_folder_with_an_unknown_task_file_is_an_error(tmp_path):
    json_dir = write_mvbench(tmp_path)
    (json_dir / "my_task.json").write_text("[]")
    with pytest.raises(DataError, match="my_task"):
        read_benchmark("mvbench", json_dir)


def test_egoschema_scores_only_the_public_subset_and_reads_five_options(tmp_path):
    root = tmp_path / "egoschema"
    root.mkdir()
    questions = [{"q_uid": f"uid-{i}", "google_drive_id": "x", "question": f"What is c doing {i}?",
                  **{f"option {k}": f"option text {k}" for k in range(5)}} for i in range(3)]
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "subset_answers.json").write_text(json.dumps({"uid-0": 3, "uid-2": 0}))
    samples = read_benchmark("egoschema", root / "questions.json")
    assert [s.answer for s in samples] == ["D", None, "A"]
    assert samples[0].video == root / "good_clips_git" / "uid-0.mp4"
    assert samples[0].options == [f"option text {k}" for k in range(5)]
    assert BENCHMARKS["egoschema"].template.render(samples[0]).splitlines()[-2:] == [
        "(E) option text 4",
        "Answer with the option's letter from the given choices directly and only give the best option. "
        "The best answer is: "]
    (root / "subset_answers.json").write_text(json.dumps({"uid-0": 7}))
    issues = []
    assert [s.answer for s in read_benchmark("egoschema", root, issues=issues)] == [None, None, None]
    assert issues[0]["item"] == "uid-0" and "option index 0..4, got 7" in issues[0]["problem"]


def test_mlvu_dev_files_give_one_task_per_question_type_and_videos_in_their_task_folder(tmp_path):
    json_dir = tmp_path / "MLVU" / "json"
    json_dir.mkdir(parents=True)
    (json_dir / "1_plotQA.json").write_text(json.dumps([
        {"video": "movie101_66.mp4", "duration": 246, "question": "What color is the main male character?",
         "candidates": ["Yellow", "Red", "Green", "Blue"], "answer": "Red", "question_type": "plotQA"}]))
    (json_dir / "4_count.json").write_text(json.dumps([
        {"video": "count1.mp4", "duration": 500, "question": "How many times does the dog bark?",
         "candidates": ["1", "2", "3", "4"], "answer": "4", "question_type": "count"}]))
    samples = read_benchmark("mlvu", json_dir)
    assert [(s.id, s.groups["task"], s.answer) for s in samples] == [("1_plotQA/0", "plotQA", "B"),
                                                                      ("4_count/0", "count", "D")]
    assert samples[0].video == tmp_path / "MLVU" / "video" / "1_plotQA" / "movie101_66.mp4"
    assert BENCHMARKS["mlvu"].template.render(samples[1]) == (
        "Question: How many times does the dog bark?\nOptions: \n(A) 1\n(B) 2\n(C) 3\n(D) 4\n\nAnswer with the "
        "option's letter from the given choices directly and only give the best option.")


def test_synthetic_prompt_is_the_one_instruction_tuning_saw(tmp_path):
    row = {"id": "s0", "video": "videos/s0.mp4", "question": "What colour is the circle?",
           "options": ["red", "green", "blue", "white"], "answer": "C", "kind": "object",
           "family": "colour_of_shape"}
    path = tmp_path / "mcq_test.jsonl"
    path.write_text(json.dumps(row) + "\n")
    sample = read_benchmark("synthetic", path)[0]
    assert BENCHMARKS["synthetic"].template.render(sample) == mcq_prompt(row["question"], row["options"])
    assert sample.video == tmp_path / "videos" / "s0.mp4" and sample.groups == {"kind": "object", "family": "colour_of_shape"}


def test_duplicate_sample_ids_are_an_error(tmp_path):
    row = {"id": "s0", "video": "v.mp4", "question": "Q?", "options": ["a", "b"], "answer": "A"}
    path = tmp_path / "mcq_test.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match="sample id 's0' appears more than once"):
        read_benchmark("synthetic", path)


def test_subtitles_are_refused_outside_videomme(tmp_path):
    path = tmp_path / "mcq_test.jsonl"
    path.write_text(json.dumps({"id": "s0", "video": "v.mp4", "question": "Q?", "options": ["a", "b"],
                                "answer": "A"}) + "\n")
    with pytest.raises(DataError, match="subtitles are a Video-MME variant only"):
        read_benchmark("synthetic", path, subtitles=tmp_path)


def test_sample_video_key_separates_clips_of_one_file_with_different_bounds(tmp_path):
    a = Sample("a", tmp_path / "v.mp4", "Q?", ["x", "y"], "A", start=0.0, end=5.0)
    b = Sample("b", tmp_path / "v.mp4", "Q?", ["x", "y"], "A", start=5.0, end=9.0)
    assert a.video_key != b.video_key


@pytest.mark.parametrize("benchmark,cloze", [("synthetic", True), ("mvbench", False), ("videomme", False)])
def test_likelihood_prompt_leaves_the_options_out_only_where_the_benchmark_says(tmp_path, benchmark, cloze):
    from hicom.evaluate.mcq import Job, Variant, prompt_hash
    from hicom.evaluate.settings import EvalConfig

    sample = Sample(id="q0", video=tmp_path / "v.mp4", question="What colour is the circle?",
                    options=["red", "green", "blue", "white"], answer="C")
    job = Job(benchmark=benchmark, samples=[sample], out=tmp_path, frames=8, decoder="decord", config=EvalConfig(),
              model_version="m")
    listed = BENCHMARKS[benchmark].template.render(sample)
    generate, likelihood = Variant(protocol="generate"), Variant(protocol="likelihood")
    assert job.prompt(sample, generate) == listed
    if cloze:  # the question alone: what the tiny model was instruction-tuned on
        assert job.prompt(sample, likelihood) == sample.question
        assert prompt_hash(job, sample, likelihood) != prompt_hash(job, sample, generate)
    else:
        assert job.prompt(sample, likelihood) == listed
