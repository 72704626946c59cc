import json

import pytest
import torch

from hicom.core.errors import DataError
from hicom.core.types import IGNORE_INDEX, IMAGE_TOKEN_ID, VIDEO_TOKEN_ID
from hicom.data.conversation import (
    ConversationError,
    encode_answers,
    encode_messages,
    encode_prompt,
    encode_sample,
    extract_guide,
    normalise_turns,
    tokenise_guides,
)
from hicom.data.mixture import load_mixture, read_annotations
from hicom.data.tokenizer import IM_END, load_tokenizer, train_tokenizer

CORPUS = ["What does the red circle do? It moves to the left.", "A small blue square appears late.",
          "Where is the green cross at the start? Top left.", "Describe the video. Two shapes move."] * 40


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(CORPUS, 320, out)
    return load_tokenizer(out)  # the saved tokenizer, as later stages load it


CONV = [{"from": "human", "value": "<video>\nWhat does the red circle do?"}, {"from": "gpt", "value": "It moves left."},
        {"from": "human", "value": "Where is the green cross?\nA. top\nB. bottom\n"
                                   "Answer with the option's letter from the given choices directly."},
        {"from": "gpt", "value": "A"}]


def supervised_text(tok, enc):
    return tok.decode([i for i, l in zip(enc.input_ids.tolist(), enc.labels.tolist()) if l != IGNORE_INDEX])


def test_saved_tokenizer_keeps_special_tokens_and_chat_format(tok):
    assert tok.pad_token == "<|endoftext|>" and tok.eos_token == IM_END
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" \
                   "<|im_start|>assistant\n"


def test_unguided_sample_supervises_exactly_every_answer(tok):
    [enc] = encode_sample(tok, CONV, "video", guided=False)
    assert supervised_text(tok, enc) == f"It moves left.{IM_END}A{IM_END}"
    assert (enc.input_ids == VIDEO_TOKEN_ID).sum() == 1 and enc.guide is None
    assert enc.labels[enc.input_ids == VIDEO_TOKEN_ID].item() == IGNORE_INDEX


def test_guided_sample_with_k_questions_expands_to_k_sequences_each_supervising_its_answer(tok):
    encs = encode_sample(tok, CONV, "video", guided=True)
    assert len(encs) == 2
    assert supervised_text(tok, encs[0]) == f"It moves left.{IM_END}"
    assert supervised_text(tok, encs[1]) == f"A{IM_END}"  # the earlier answer is context only
    assert [e.guide for e in encs] == ["What does the red circle do?", "Where is the green cross?"]
    assert torch.equal(encs[1].input_ids[:len(encs[0].input_ids)], encs[0].input_ids)


def test_each_guided_sequence_equals_its_cut_conversation_templated_on_its_own(tok):
    conv = CONV + [{"from": "human", "value": "Which colour appears late?"}, {"from": "gpt", "value": "Blue."}]
    messages = normalise_turns(conv, "video")
    encs = encode_sample(tok, conv, "video", guided=True)  # templated and tokenised once, then cut
    assert len(encs) == 3
    for j, enc in enumerate(encs):
        ids, labels = encode_messages(tok, messages[:2 * j + 2], supervise="last")
        assert enc.input_ids.tolist() == ids and enc.labels.tolist() == labels


def test_prompt_at_inference_is_tokenised_as_in_training(tok):
    [enc] = encode_sample(tok, CONV[:2], "video", guided=False)
    prompt = encode_prompt(tok, "What does the red circle do?", "video")
    assert torch.equal(enc.input_ids[:len(prompt)], prompt)
    assert enc.labels[len(prompt)] != IGNORE_INDEX and (enc.labels[:len(prompt)] == IGNORE_INDEX).all()


@pytest.mark.parametrize("answers", [["Red."], ["Red.", "It moves to the left of the frame.", "Blue circle."]])
def test_answers_encoded_apart_from_their_shared_prompt_are_encode_samples_sequences(tok, answers):
    """Likelihood scoring runs a question's prompt once and each option's answer turn after it: prompt + answer turn
    must be, id for id and label for label, the sequence encode_sample gives that one-turn conversation."""
    question = "What does the red circle do?"
    prompt, turns = encode_answers(tok, question, answers, "video")
    assert len(turns) == len(answers)
    for answer, turn in zip(answers, turns):
        [whole] = encode_sample(tok, [{"from": "human", "value": question}, {"from": "gpt", "value": answer}], "video",
                                guided=False)
        assert torch.equal(torch.cat([prompt, turn.input_ids]), whole.input_ids)
        assert torch.equal(torch.cat([torch.full_like(prompt, IGNORE_INDEX), turn.labels]), whole.labels)


def test_tag_is_moved_to_the_head_of_the_first_turn(tok):
    conv = [{"from": "human", "value": "Look at this <image> please"}, {"from": "gpt", "value": "ok"}]
    [enc] = encode_sample(tok, conv, "image", guided=False)
    ids = enc.input_ids.tolist()
    assert ids.count(IMAGE_TOKEN_ID) == 1
    assert "<image>" not in tok.decode([i for i in ids if i >= 0])


@pytest.mark.parametrize("question,guide", [
    ("<video>\nWhat colour is the ball?", "What colour is the ball?"),
    ("Question: Quick, what moved?\nOptions:\n(A) a\n(B) b\nAnswer with the option's letter from the given "
     "choices directly and only give the best option.", "Quick, what moved?"),
    ("Select the best answer to the following multiple-choice question based on the video. Respond with only "
     "the letter (A, B, C, or D) of the correct option.\nWhich object appears last?\nA. x\nB. y\nC. z\nD. w\n"
     "The best answer is:", "Which object appears last?"),
    ("How many squares are there?\nAnswer the question using a single word or phrase.", "How many squares are there?"),
])
def test_guide_is_the_bare_question(question, guide):
    assert extract_guide(question) == guide


@pytest.mark.parametrize("conv,message", [
    ([], "no conversations"),
    ([{"from": "human", "value": "q"}], "expected question/answer pairs"),
    ([{"from": "human", "value": "q"}, {"from": "human", "value": "q"}], "must alternate"),
    ([{"from": "robot", "value": "q"}, {"from": "gpt", "value": "a"}], "unknown role 'robot'"),
])
def test_malformed_conversations_name_the_sample(tok, conv, message):
    with pytest.raises(ConversationError, match=f"sample s1: .*{message}"):
        encode_sample(tok, conv, "video", guided=True, sample_id="s1")


def test_guides_are_padded_to_max_length(tok):
    ids = tokenise_guides(tok, ["red circle", "a small blue square appears late"], 16)
    assert ids.shape == (2, 16) and (ids[0, -1] == tok.pad_token_id)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def sample(i, **kw):
    return {"id": f"s{i}", "video": f"v{i}.mp4", "conversations": CONV[:2], **kw}


@pytest.fixture
def mixture(tmp_path):
    (tmp_path / "a").mkdir()
    write_jsonl(tmp_path / "a" / "one.jsonl", [sample(i) for i in range(10)])
    (tmp_path / "two.json").write_text(json.dumps([sample(i) for i in range(100, 120)]))
    return tmp_path


def write_mixture(root, entries):
    import yaml
    (root / "mix.yaml").write_text(yaml.safe_dump({"datasets": entries}))
    return root / "mix.yaml"


@pytest.mark.parametrize("strategy,ids", [
    ("all", [f"s{i}" for i in range(10)]),
    ("first:3", ["s0", "s1", "s2"]),
    ("end:2", ["s8", "s9"]),
])
def test_deterministic_strategies_select_the_documented_rows(mixture, strategy, ids):
    path = write_mixture(mixture, [{"json_path": "a/one.jsonl", "sampling_strategy": strategy}])
    assert [s["id"] for s in load_mixture(path)] == ids


def test_random_strategies_are_seeded_identical_across_calls_and_sized_right(mixture):
    path = write_mixture(mixture, [{"json_path": "a/one.jsonl", "sampling_strategy": "random:4"},
                                   {"json_path": "two.json", "sampling_strategy": "random:15%"}])
    first = [s["id"] for s in load_mixture(path, seed=7)]
    assert first == [s["id"] for s in load_mixture(path, seed=7)]  # what every rank computes
    assert len(first) == 4 + 3  # ceil(15% of 20)
    assert first != [s["id"] for s in load_mixture(path, seed=8)]
    assert len(set(first)) == len(first)


def test_data_root_is_joined_to_media_paths(mixture):
    path = write_mixture(mixture, [{"json_path": "a/one.jsonl", "data_root": "media", "sampling_strategy": "first:1"},
                                   {"json_path": "two.json", "sampling_strategy": "first:1"}])
    a, b = load_mixture(path)
    assert a["video"] == str(mixture / "media" / "v0.mp4")
    assert b["video"] == str(mixture / "v100.mp4")  # default root: the annotation file's folder


def test_missing_file_malformed_line_and_sample_without_conversations_are_named(mixture):
    with pytest.raises(DataError, match="nope.jsonl: annotation file not found"):
        load_mixture(write_mixture(mixture, [{"json_path": "nope.jsonl"}]))
    bad = mixture / "bad.jsonl"
    bad.write_text(json.dumps(sample(1)) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON line"):
        read_annotations(bad)
    bad.write_text(json.dumps(sample(1)) + "\n" + json.dumps({"id": "x9", "video": "v.mp4"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: sample 'x9' has no conversations"):
        read_annotations(bad)
    with pytest.raises(DataError, match="unknown sampling strategy 'some:3'"):
        load_mixture(write_mixture(mixture, [{"json_path": "two.json", "sampling_strategy": "some:3"}]))


def test_a_shard_glob_reads_every_shard_in_name_order(mixture):
    write_jsonl(mixture / "part-00001.jsonl", [sample(3)])
    write_jsonl(mixture / "part-00000.jsonl", [sample(1), sample(2)])
    path = write_mixture(mixture, [{"json_path": "part-*.jsonl", "sampling_strategy": "all"}])
    assert [s["id"] for s in load_mixture(path)] == ["s1", "s2", "s3"]
    with pytest.raises(DataError, match="no annotation file matches"):
        load_mixture(write_mixture(mixture, [{"json_path": "nothing-*.jsonl"}]))


THREE_TURNS = [{"from": "human", "value": "What does the red circle do?\n<video>"}, {"from": "gpt", "value": "It moves left."},
               {"from": "human", "value": "Where is the green cross?"}, {"from": "gpt", "value": "Top left."},
               {"from": "human", "value": "What appears late?"}, {"from": "gpt", "value": "A small blue square."}]


@pytest.mark.parametrize("modality", ["video", "image"])
def test_split_turns_trains_each_question_alone_with_its_visual_input(tok, mixture, modality):
    """A multi-turn sample becomes one sample per question, selected first and split after; each encodes to
    exactly the sequence of that question asked on its own, so no earlier answer is in it."""
    tag = f"<{modality}>"
    turns = [dict(t, value=t["value"].replace("<video>", tag)) for t in THREE_TURNS]
    write_jsonl(mixture / "multi.jsonl", [{"id": f"m{i}", modality: f"m{i}.x", "conversations": turns} for i in range(3)])
    path = write_mixture(mixture, [{"json_path": "multi.jsonl", "sampling_strategy": "first:2", "split_turns": True}])
    samples = load_mixture(path)
    assert [s["id"] for s in samples] == ["m0#0", "m0#1", "m0#2", "m1#0", "m1#1", "m1#2"]
    assert samples[4][modality] == str(mixture / "m1.x")
    for j, split in enumerate(samples[:3]):
        question, answer = turns[2 * j]["value"].replace(tag, "").strip(), turns[2 * j + 1]["value"]
        (alone,) = encode_sample(tok, split["conversations"], modality, True, split["id"])
        (expected,) = encode_sample(tok, [{"from": "human", "value": f"{tag}\n{question}"},
                                          {"from": "gpt", "value": answer}], modality, True)
        assert torch.equal(alone.input_ids, expected.input_ids) and torch.equal(alone.labels, expected.labels)
        assert alone.guide == question
        placeholder = VIDEO_TOKEN_ID if modality == "video" else IMAGE_TOKEN_ID
        assert (alone.input_ids == placeholder).sum() == 1
        others = [t["value"] for k, t in enumerate(turns) if t["from"] == "gpt" and k != 2 * j + 1]
        assert not any(o.rstrip(".") in tok.decode(alone.input_ids[alone.input_ids >= 0]) for o in others)


def test_split_turns_names_a_bad_setting_and_a_sample_without_question_answer_pairs(mixture):
    with pytest.raises(DataError, match=r"datasets\[0\]: split_turns must be true or false, got 'yes'"):
        load_mixture(write_mixture(mixture, [{"json_path": "two.json", "split_turns": "yes"}]))
    write_jsonl(mixture / "odd.jsonl", [{"id": "odd7", "video": "v.mp4", "conversations": THREE_TURNS[:3]}])
    with pytest.raises(DataError, match=r"odd.jsonl: sample 'odd7': split_turns needs question/answer pairs, got 3"):
        load_mixture(write_mixture(mixture, [{"json_path": "odd.jsonl", "split_turns": True}]))
