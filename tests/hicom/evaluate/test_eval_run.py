"""The evaluate stage end to end on a tiny random model: outputs, resume, feature reuse, missing videos, torchrun."""
import dataclasses
import json
import os
import random
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from transformers import SiglipConfig, SiglipModel

from hicom.cli import main
from hicom.data.settings import ReadLimits
from hicom.data.synthetic import WorldConfig, make_scene, mcq_prompt, write_video
from hicom.data.tokenizer import load_tokenizer, train_tokenizer
from hicom.data.video import FramePreprocessor, read_video
from hicom.evaluate.answers import extract_choice
from hicom.evaluate.benchmarks import BENCHMARKS, read_benchmark
from hicom.evaluate.mcq import (
    Job,
    merge_and_score,
    option_scores,
    preflight,
    run_shard,
    variants_for,
    whole_sequence_option_scores,
)
from hicom.evaluate.readers import read_srt, subtitles_at
from hicom.evaluate.settings import EvalConfig
from hicom.model.build import build_model
from hicom.model.checkpoint import save_model
from hicom.model.modeling_hicom import HIComForCausalLM
from hicom.model.settings import compressor_from_preset
from hicom.params import PARAMS_FILE, Params
from tests.tree_bytes import files_that_differ

IMAGE = Params.load().profile("tiny").vision.config["image_size"]  # the tiny towers' input side

QUESTIONS = [  # (video, question, task type); two videos of three questions, one whose video is missing
    ("vidA", "What colour is the circle?", "Attribute Perception"),
    ("vidA", "What is this video mainly about?", "Action Reasoning"),
    ("vidA", "Which object moves left?", "Object Recognition"),
    ("vidB", "How many objects appear?", "Counting Problem"),
    ("vidB", "Which object appears last?", "Temporal Reasoning"),
    ("vidB", "Describe this video.", "Action Reasoning"),
    ("gone", "Where is the square?", "Spatial Perception"),
]
OPTIONS = ["red", "green", "blue", "white"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_profile):
    """Tokenizer, random tiny towers and model, two clips, a Video-MME parquet, an .srt and a params file."""
    root = tmp_path_factory.mktemp("eval")
    texts = [q for _, q, _ in QUESTIONS] + OPTIONS + [mcq_prompt("q", OPTIONS)]
    tok = train_tokenizer(texts * 10, 300, root / "tokenizer")
    torch.manual_seed(0)
    siglip = SiglipModel(SiglipConfig(vision_config=tiny_profile.vision.config, text_config=tiny_profile.text.config))
    save_model(siglip, root / "towers", tokenizer=tok)
    FramePreprocessor(IMAGE).save_pretrained(root / "towers")
    save_model(build_model(tiny_profile), root / "model", tokenizer=tok)
    world = WorldConfig(num_frames=8, fps=8)
    for name in ("vidA", "vidB"):
        write_video(make_scene(random.Random(name), world, name), root / "videos" / f"{name}.mp4")
    rows = [{"video_id": f"{i // 3 + 1:03d}", "duration": "short" if video == "vidA" else "medium",
             "domain": "Knowledge" if video == "vidA" else "Sports Competition", "sub_category": "Humanity & History",
             "url": f"https://www.youtube.com/watch?v={video}", "videoID": video, "question_id": f"q{i}",
             "task_type": task, "question": question, "options": [f"{l}. {o}" for l, o in zip("ABCD", OPTIONS)],
             "answer": "ABCD"[i % 4]} for i, (video, question, task) in enumerate(QUESTIONS)]
    (root / "videomme").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "videomme" / "test.parquet")
    (root / "subs").mkdir()
    (root / "subs" / "vidA.srt").write_text("1\n00:00:00,000 --> 00:00:00,500\nA red circle.\n\n"
                                            "2\n00:00:00,500 --> 00:00:01,000\nIt moves left.\n")
    params = yaml.safe_load(PARAMS_FILE.read_text())
    params["evaluate"]["max_new_tokens"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def evaluate_args(setup, out, *extra, benchmark="videomme"):
    data = {"videomme": setup / "videomme" / "test.parquet"}.get(benchmark, setup / "data")
    return ["--params", str(setup / "params.yaml"), "evaluate", "--benchmark", benchmark, "--profile", "tiny",
            "--model", str(setup / "model"), "--data", str(data), "--videos", str(setup / "videos"),
            "--towers", str(setup / "towers"), "--out", str(out), *extra]


def replies(out):
    return {r["key"]: r["reply"] for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


def test_synthetic_invocation_writes_predictions_and_results_that_dvc_reads(setup, tmp_path):
    data = setup / "data"
    rows = [{"id": f"s{i}", "video": f"vid{v}.mp4", "question": q, "options": OPTIONS, "answer": "B", "kind": k,
             "prompt": mcq_prompt(q, OPTIONS)}
            for i, (v, q, k) in enumerate([("A", "What colour is the circle?", "object"),
                                           ("B", "How many objects appear?", "count")])]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "synthetic"
    assert main(evaluate_args(setup, out, "--no-track", benchmark="synthetic")) == 0
    results = json.loads((out / "results.json").read_text())
    assert {"accuracy", "total", "unanswered"} <= set(results) and results["total"] == 2
    assert set(results["breakdown"]["kind"]) == {"object", "count"}
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == ["s0", "s1"]
    assert {"reply", "choice", "answer", "correct"} <= set(predictions[0])


def test_a_missing_video_stops_the_run_before_any_model_work_and_lists_its_questions(setup, tmp_path, capsys):
    args = evaluate_args(setup, tmp_path / "run", "--no-track")
    args[args.index("--model") + 1] = str(tmp_path / "no-model-here")  # never reached
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 question(s) have a missing or unreadable video" in err and "q6: " in err and "gone.mp4" in err
    assert "--allow-missing" in err and "no-model-here" not in err
    assert [m["id"] for m in json.loads((tmp_path / "run" / "missing_videos.json").read_text())] == ["q6"]
    assert not (tmp_path / "run" / "results.json").exists()


def test_videomme_scores_every_breakdown_both_injection_settings_and_counts_the_missing_video_wrong(setup, tmp_path):
    out = tmp_path / "run"
    assert main(evaluate_args(setup, out, "--guidance", "both", "--no-track", "--allow-missing")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["total"] == 7 and results["missing"] == 1
    assert [(m["id"], "gone.mp4" in m["reason"]) for m in results["missing_samples"]] == [("q6", True)]
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()
               if json.loads(line)["variant"] == "default"]
    correct = sum(r["correct"] for r in records)
    assert results["accuracy"] == correct / 7  # the missing video's question is wrong
    assert results["accuracy_readable"] == sum(r["correct"] for r in records if r["id"] != "q6") / 6
    assert set(results["breakdown"]) == {"duration", "domain", "sub_category", "task_type"}
    assert results["breakdown"]["duration"]["short"]["total"] == 3
    assert results["validity"]["invalid"]["total"] == 2  # "mainly about", "Describe this video."
    assert set(results["variants"]) == {"default", "guidance_off"}
    assert results["variants"]["guidance_off"]["validity"]["valid"]["total"] == 5
    assert results["answered"] + results["unanswered"] == results["total"]
    assert results["data_issues"] == []
    # samples.jsonl: one line per question and variant, enough to audit every score
    audit = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(audit) == 7 * 2
    row = next(a for a in audit if a["id"] == "q0" and a["variant"] == "default")
    sample = read_benchmark("videomme", setup / "videomme" / "test.parquet", setup / "videos")[0]
    assert row["prompt"] == BENCHMARKS["videomme"].template.render(sample)
    assert row["extracted"] == extract_choice(row["reply"], OPTIONS) and row["correct_letter"] == "A"
    assert row["video"] == str(setup / "videos" / "vidA.mp4") and row["correct"] == (row["extracted"] == "A")
    gone = next(a for a in audit if a["id"] == "q6" and a["variant"] == "default")
    assert gone["video_missing"] and gone["reply"] is None and gone["correct"] is False


def test_rerun_after_a_kill_mid_video_gives_the_same_predictions_and_scores(setup, tmp_path):
    straight = tmp_path / "straight"
    args = ("--subtitles", str(setup / "subs"), "--no-track", "--allow-missing")
    assert main(evaluate_args(setup, straight, *args)) == 0
    killed = tmp_path / "killed"
    (killed / "parts").mkdir(parents=True)
    lines = (straight / "parts" / "rank0.jsonl").read_text().splitlines(keepends=True)
    # Killed after the first question of the second batch, while writing the next line.
    (killed / "parts" / "rank0.jsonl").write_text("".join(lines[:4]) + lines[4][:25])
    assert main(evaluate_args(setup, killed, *args)) == 0
    a, b = (json.loads((d / "results.json").read_text()) for d in (straight, killed))
    assert a == b
    assert replies(straight) == replies(killed)
    assert len((killed / "parts" / "rank0.jsonl").read_text().splitlines()) == len(lines)  # only the rest was asked
    with_subs = [json.loads(line) for line in (straight / "predictions.jsonl").read_text().splitlines()
                 if json.loads(line)["variant"] == "subtitles"]
    assert {p["id"]: p["subtitle_lines"] for p in with_subs}["q0"] == 2  # both cues fall on sampled frames
    assert {p["id"]: p["subtitle_lines"] for p in with_subs}["q3"] == 0  # vidB has no .srt


def test_a_rerun_on_the_same_model_writes_byte_identical_outputs(setup, tmp_path):
    """The flow and dvc.lock key the efficiency and register stages on these bytes: outputs that held each
    question's wall time made an identical rerun register a new version of the same model."""
    args = ("--guidance", "both", "--no-track", "--allow-missing")
    first, second = tmp_path / "first" / "videomme", tmp_path / "second" / "videomme"
    for out in (first, second):
        assert main(evaluate_args(setup, out, *args)) == 0
    assert (first / "parts" / "rank0.jsonl").is_file()
    assert files_that_differ(first, second) == []


def test_each_video_is_decoded_and_encoded_once_for_all_its_questions_and_variants(setup, tmp_path):
    model = HIComForCausalLM.from_pretrained(setup / "model").eval()
    calls = []
    # encode_frames runs the tower's parts (embeddings, then each layer), not its forward
    model.vision_tower.embeddings.register_forward_hook(lambda module, inputs, output: calls.append(inputs))
    samples = read_benchmark("videomme", setup / "videomme" / "test.parquet", setup / "videos", setup / "subs")
    job = Job(benchmark="videomme", samples=samples, out=tmp_path, frames=8, decoder="decord",
              config=EvalConfig(max_new_tokens=2), model_version="test", variants=variants_for("both", True))
    tokenizer = load_tokenizer(setup / "model")
    counts = run_shard(model, job, tokenizer, tokenizer, FramePreprocessor(IMAGE))
    seconds = counts.pop("seconds")
    assert counts == {"answered": 6 * 4, "skipped": 0, "missing": 1, "videos": 3}
    assert len(seconds) == 6 * 4 and min(seconds.values()) > 0  # each answer's wall time, returned, not stored
    assert len(calls) == 2  # vidA and vidB, each once for 3 questions x 4 variants
    assert merge_and_score(job)["variants"]["subtitles+guidance_off"]["total"] == 7  # the unreadable one is wrong


@pytest.mark.slow
def test_two_processes_share_the_work_and_rank_zero_merges_scores_and_logs_one_run(setup, tmp_path):
    single = tmp_path / "single"
    assert main(evaluate_args(setup, single, "--no-track", "--allow-missing")) == 0
    store = f"sqlite:///{tmp_path}/mlflow.db"
    double = tmp_path / "double"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hicom",
           *evaluate_args(setup, double, "--experiment", "eval-test", "--allow-missing")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MLFLOW_TRACKING_URI": store, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in (double / "parts").glob("rank*.jsonl")) == ["rank0.jsonl", "rank1.jsonl"]
    assert all((double / "parts" / f"rank{r}.jsonl").read_text() for r in (0, 1))  # both ranks answered
    a, b = (json.loads((d / "results.json").read_text()) for d in (single, double))
    assert a == b and replies(single) == replies(double)

    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("eval-test").experiment_id])
    assert len(runs) == 1  # two processes, one run
    run = runs[0]
    params = run.data.params
    assert params["frames"] == "8" and params["generation.max_new_tokens"] == "3" and params["seed"] == "0"
    assert params["prompt.template_hash"] == b["settings"]["prompt_template_hash"]
    assert params["world_size"] == "2" and len(params["data.digest"]) == 64
    metrics = run.data.metrics
    assert metrics["videomme/total"] == 7 and metrics["videomme/missing"] == 1
    assert metrics["videomme/sub_category/Humanity_History"] == a["breakdown"]["sub_category"]["Humanity & History"][
        "accuracy"]
    assert "videomme/validity/invalid/accuracy" in metrics
    # the seconds a question took, over both ranks' answers (each rank prints its own count and mean)
    ranks = [(int(n), float(t)) for n, t in re.findall(r"rank \d: answered (\d+) \(([\d.]+) s a question\)",
                                                       done.stdout)]
    assert len(ranks) == 2 and all(n > 0 for n, _ in ranks)
    assert metrics["videomme/seconds_per_question"] == pytest.approx(
        sum(n * t for n, t in ranks) / sum(n for n, _ in ranks), abs=1e-3)
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"predictions.jsonl", "results.json", "samples.jsonl", "samples_table.json"} <= artifacts
    table = json.loads(client.download_artifacts(run.info.run_id, "samples_table.json", str(tmp_path)) and
                       (tmp_path / "samples_table.json").read_text())
    assert len(table["data"]) == 7 and "prompt" in table["columns"]  # MLflow's table format: columns + data
    assert run.inputs.dataset_inputs[0].dataset.name == "videomme"


def test_egoschema_writes_a_submission_for_every_question_and_scores_the_public_subset(setup, tmp_path):
    root = tmp_path / "egoschema"
    root.mkdir()
    questions = [{"q_uid": uid, "question": "What is c doing?", **{f"option {k}": f"choice {k}" for k in range(5)}}
                 for uid in ("vidA", "vidB", "gone")]
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "subset_answers.json").write_text(json.dumps({"vidA": 1}))
    out = tmp_path / "ego"
    args = evaluate_args(setup, out, "--no-track", "--allow-missing", benchmark="egoschema")
    args[args.index("--data") + 1] = str(root / "questions.json")
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["total"] == 1 and results["submission"]["questions"] == 3
    csv = (out / "submission.csv").read_text().splitlines()
    assert csv[0] == "q_uid,answer" and [line.split(",")[0] for line in csv[1:]] == ["vidA", "vidB", "gone"]
    assert csv[3] == "gone,-1"  # no video, no answer
    posted = json.loads((out / "submission.json").read_text())  # what EgoSchema's validate.py posts
    assert list(posted) == ["vidA", "vidB", "gone"] and posted["gone"] == -1
    assert all(posted[line.split(",")[0]] == int(line.split(",")[1]) for line in csv[1:])
    assert results["submission"]["files"] == ["submission.csv", "submission.json"]


def test_guidance_off_on_a_model_without_injection_is_a_clear_error(setup, tmp_path, tiny_profile, capsys):
    unconditional = dataclasses.replace(tiny_profile, compressor=compressor_from_preset(
        "unconditional", {"global": {"head_dim": 32}}))
    model_dir = tmp_path / "model"
    save_model(build_model(unconditional), model_dir, tokenizer=load_tokenizer(setup / "tokenizer"))
    args = evaluate_args(setup, tmp_path / "out", "--guidance", "off", "--no-track", "--allow-missing")
    args[args.index("--model") + 1] = str(model_dir)
    assert main(args) == 2
    assert "injects no instruction" in capsys.readouterr().err


def test_a_video_s_questions_answered_in_one_batch_get_the_replies_they_get_one_at_a_time(setup, tmp_path):
    model = HIComForCausalLM.from_pretrained(setup / "model").eval()
    tokenizer = load_tokenizer(setup / "model")
    samples = read_benchmark("videomme", setup / "videomme" / "test.parquet", setup / "videos")
    found = []
    for size in (1, 8):
        job = Job(benchmark="videomme", samples=samples, out=tmp_path / f"batch{size}", frames=8, decoder="decord",
                  config=EvalConfig(max_new_tokens=3, questions_per_batch=size), model_version="test")
        run_shard(model, job, tokenizer, tokenizer, FramePreprocessor(IMAGE))
        found.append({r["id"]: r["reply"] for r in map(json.loads, (job.out / "parts" / "rank0.jsonl").open())})
    assert found[0] == found[1] and len(found[0]) == 6


def test_likelihood_protocol_picks_the_option_whose_short_answer_the_model_finds_likeliest(setup, tmp_path):
    """Each reply is the letter of the option with the highest summed log-probability as the answer turn,
    checked against the model's own loss computed separately; it is the headline when listed first."""
    from hicom.core.types import VisualItem
    from hicom.data.conversation import encode_prompt, encode_sample, tokenise_guides
    from hicom.evaluate.mcq import short_answer

    out = tmp_path / "lk"
    assert main(evaluate_args(setup, out, "--protocol", "likelihood,generate", "--no-track", "--allow-missing")) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["variant"] == "likelihood" and set(results["variants"]) == {"likelihood", "default"}
    assert results["protocol"] == "likelihood"  # what register serves the model by
    model = HIComForCausalLM.from_pretrained(setup / "model").eval()
    tok = load_tokenizer(setup / "model")
    pixels = FramePreprocessor(IMAGE)(read_video(setup / "videos" / "vidA.mp4", 8).frames)
    guide = tokenise_guides(load_tokenizer(setup / "towers"), [QUESTIONS[0][1]], 64)[0]
    sample = read_benchmark("videomme", setup / "videomme" / "test.parquet", setup / "videos")[0]
    prompt = BENCHMARKS["videomme"].template.render(sample)  # the prompt generation is given, whole
    context = encode_prompt(tok, prompt, "video")
    losses = []
    with torch.no_grad():
        for option in OPTIONS:
            seq = encode_sample(tok, [{"from": "human", "value": prompt},
                                      {"from": "gpt", "value": short_answer(option)}], "video", False)[0]
            out_ = model(seq.input_ids[None], labels=seq.labels[None],
                         visual_items=[VisualItem(pixels, "video", guide)])
            losses.append(out_.loss.item() * int((seq.labels != -100).sum()))  # mean -> sum over answer tokens
            assert torch.equal(seq.input_ids[:len(context)], context)  # exactly generation's context, then the answer
    expected = "ABCD"[min(range(4), key=losses.__getitem__)]
    record = next(r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())
                  if r["variant"] == "likelihood" and r["question"] == QUESTIONS[0][1])
    assert record["reply"] == expected and record["choice"] == expected
    assert short_answer("it moves left") == "It moves left." and short_answer("Red.") == "Red."


@pytest.mark.parametrize("limits,over", [(ReadLimits(max_frame_pixels=63 * 63), "max_frame_pixels"),
                                         (ReadLimits(max_file_bytes=100), "max_file_bytes")])
def test_the_preflight_applies_the_read_limits_and_names_the_key(setup, limits, over):
    """Evaluation honours params.yaml data.limits: a video over a bound is unreadable, named with the bound."""
    samples = read_benchmark("videomme", setup / "videomme" / "test.parquet", setup / "videos")
    _, missing_default, _ = preflight(samples, "decord", ReadLimits(), 30.0, subtitles=False)
    _, missing, _ = preflight(samples, "decord", limits, 30.0, subtitles=False)
    over_limit = [m for m in missing if m["id"] not in {d["id"] for d in missing_default}]
    assert {m["id"] for m in missing} == {s.id for s in samples} and over_limit
    assert all(f"data.limits.{over}" in m["reason"] for m in over_limit)


def test_subtitles_change_likelihood_scores_and_an_unreadable_subtitle_file_costs_only_its_subtitles(setup, tmp_path):
    """Likelihood sees what generation sees: the subtitle block in the prompt moves every option's score. A
    subtitle file no decoder can read is a data issue, and its video's questions are asked without subtitles."""
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "vidA.srt").write_bytes((setup / "subs" / "vidA.srt").read_text().encode("utf-16"))  # BOM'd UTF-16
    (subs / "vidB.srt").write_bytes(b"\xff\xfe" + b"\x00\xd8" * 3)  # a UTF-16 BOM, then no valid text
    samples = read_benchmark("videomme", setup / "videomme" / "test.parquet", setup / "videos", subs)
    with pytest.warns(UserWarning, match="vidB.srt"):
        samples, missing, issues = preflight(samples, "decord", ReadLimits(), 30.0, subtitles=True)
    assert [m["id"] for m in missing] == ["q6"]
    assert [(i["file"], i["resolution"]) for i in issues] == [(str(subs / "vidB.srt"),
                                                               "questions asked without subtitles")]
    assert samples[0].subtitles == subs / "vidA.srt" and samples[3].subtitles is None

    model = HIComForCausalLM.from_pretrained(setup / "model").eval()
    tok = load_tokenizer(setup / "model")
    clip = read_video(setup / "videos" / "vidA.mp4", 8)
    with torch.no_grad():
        features, embeds = model.encode_frames(FramePreprocessor(IMAGE)(clip.frames), with_embeds=True)
        template = BENCHMARKS["videomme"].template
        lines = subtitles_at(read_srt(subs / "vidA.srt"), [i / clip.fps for i in clip.indices])
        assert lines == ["A red circle.", "It moves left."]
        plain, with_subs = (option_scores(model, samples[:1], [template.render(samples[0], x)], tok, tok, features,
                                          embeds, torch.device("cpu"))[0] for x in (None, lines))
    assert len(plain) == len(with_subs) == 4 and all(a != b for a, b in zip(plain, with_subs))


@pytest.mark.parametrize("batch", [1, 3])
def test_option_scores_from_the_prompts_cache_equal_scoring_each_options_whole_sequence(setup, batch):
    """Scoring every option from its question's prompt cache (one prompt forward per question, the questions of a
    video together) gives the scores of a forward of every option's whole sequence: prompts of different lengths
    (with and without subtitles) and answers of one to several tokens, in one batch."""
    model = HIComForCausalLM.from_pretrained(setup / "model").eval()
    tok = load_tokenizer(setup / "model")
    samples = read_benchmark("videomme", setup / "videomme" / "test.parquet", setup / "videos")[:3]
    answers = [["red", "a large green square that moves left", "blue", "white circle"], ["green", "red"],
               ["blue circle", "the white one", "red", "green", "a red square"]]
    samples = [dataclasses.replace(s, options=o) for s, o in zip(samples, answers)][:batch]
    template = BENCHMARKS["videomme"].template
    clip = read_video(setup / "videos" / "vidA.mp4", 8)
    with torch.no_grad():
        features, embeds = model.encode_frames(FramePreprocessor(IMAGE)(clip.frames), with_embeds=True)
        prompts = [template.render(s, ["A red circle.", "It moves left."] if i % 2 else None)
                   for i, s in enumerate(samples)]
        cached = option_scores(model, samples, prompts, tok, tok, features, embeds, torch.device("cpu"))
        whole = whole_sequence_option_scores(model, samples, prompts, tok, tok, features, embeds, torch.device("cpu"))
    assert [len(x) for x in cached] == [len(s.options) for s in samples]
    # 1e-5, and float32 rounding of a long answer's sum (-180 for 9 tokens of a random model): 1e-6 of the score
    assert torch.allclose(torch.tensor(sum(cached, [])), torch.tensor(sum(whole, [])), atol=1e-5, rtol=1e-6)
