"""Multiple-choice video QA over a benchmark: greedy decoding, resumable, sharded, scored.

Work is grouped by video: each video is decoded and passed through the vision tower once, then every
question on it (and every variant: with subtitles, with instruction injection off) reuses those
features, so only the instruction tower, the compressor and the LLM run per question. Under torchrun
each rank takes every world-th video, appends its answers to its own part file and rank 0 merges and
scores once all ranks are done. Answers are re-extracted from the stored replies at scoring time, so
a better extractor rescoring old replies needs no model. Unparseable replies count as unanswered
(wrong). Before any model work, `preflight` lists every question whose video is missing or unreadable
(the stage stops there unless --allow-missing); such questions, and any whose video fails to decode
later, are scored as wrong, with the accuracy over the readable ones beside it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch

from hicom.core.errors import ConfigError, DataError
from hicom.core.files import atomic_write_bytes
from hicom.core.types import IGNORE_INDEX, VisualItem
from hicom.data.conversation import Encoded, encode_answers, encode_prompt, encode_sample, tokenise_guides
from hicom.data.dataset import pad_sequences
from hicom.data.settings import ReadLimits
from hicom.data.video import (
    DEFAULT_IMAGE_FPS,
    FramePreprocessor,
    VideoReadError,
    read_video,
)
from hicom.evaluate.answers import extract_choice
from hicom.evaluate.benchmarks import BENCHMARKS, Benchmark
from hicom.evaluate.prompts import PromptTemplate, guide_text
from hicom.evaluate.readers import Sample, issue, read_srt, subtitles_at
from hicom.evaluate.scoring import InstructionFilter, summarise
from hicom.evaluate.settings import EvalConfig
from hicom.evaluate.store import (
    PredictionLog,
    part_path,
    prediction_key,
    read_parts,
    shard,
    text_hash,
)

GUIDANCE = ("on", "off", "both")
PROTOCOLS = ("generate", "likelihood")
MISSING_FILE = "missing.rank{rank}.json"
SAMPLES_FILE = "samples.jsonl"

@dataclass(frozen=True)
class Variant:
    """One way of asking every question: with or without subtitles, with or without instruction injection,
    and how the answer is read: `generate` (greedy reply, letter extracted: the benchmarks' protocol) or
    `likelihood` (the option whose text is the likeliest short answer after the same prompt)."""

    subtitles: bool = False
    guided: bool = True
    protocol: str = "generate"

    @property
    def name(self) -> str:
        parts = (["subtitles"] if self.subtitles else []) + ([] if self.guided else ["guidance_off"]) + \
            ([] if self.protocol == "generate" else [self.protocol])
        return "+".join(parts) or "default"


def variants_for(guidance: str, subtitles: bool, protocols: str = "generate") -> list[Variant]:
    """Every combination; the first variant (the first protocol listed) is the headline result."""
    if guidance not in GUIDANCE:
        raise ConfigError(f"--guidance: {guidance!r} is not one of {GUIDANCE}")
    chosen = [p.strip() for p in protocols.split(",")]
    if not chosen or any(p not in PROTOCOLS for p in chosen) or len(set(chosen)) != len(chosen):
        raise ConfigError(f"--protocol: {protocols!r} is not a comma-separated list of {PROTOCOLS}")
    guided = {"on": [True], "off": [False], "both": [True, False]}[guidance]
    return [Variant(sub, g, p) for p in chosen for sub in ([False, True] if subtitles else [False]) for g in guided]


@dataclass
class Job:
    """Everything one evaluation needs besides the model; `model_version` is the model directory's content hash."""

    benchmark: str
    samples: list[Sample]
    out: Path
    frames: int
    decoder: str
    config: EvalConfig
    model_version: str
    variants: list[Variant] = field(default_factory=lambda: [Variant()])
    data_issues: list[dict] = field(default_factory=list)  # from the reader and the pre-flight
    preflight_missing: list[dict] = field(default_factory=list)  # questions whose video the pre-flight could not read
    limits: ReadLimits = ReadLimits()  # params.yaml data.limits

    @property
    def entry(self) -> Benchmark:
        return BENCHMARKS[self.benchmark]

    @property
    def template(self) -> PromptTemplate:
        return self.entry.template

    @property
    def generation(self) -> str:
        return f"greedy/max_new_tokens={self.config.max_new_tokens}"

    def prompt(self, sample: Sample, variant: Variant, subtitles: list[str] | None = None) -> str:
        """What the model is asked for this variant (the likelihood protocol may leave the options out)."""
        with_options = variant.protocol != "likelihood" or self.entry.likelihood_lists_options
        return self.template.render(sample, subtitles, with_options=with_options)


def prompt_hash(job: Job, sample: Sample, variant: Variant) -> str:
    """Hash of what the model is asked. With subtitles, the lines depend on the sampled frames, so the
    subtitle file's content stands in for them (frames are a key field of their own)."""
    base = [job.prompt(sample, variant), guide_text(sample) if variant.guided else ""]
    if variant.subtitles:
        srt = sample.subtitles
        base.append(hashlib.sha256(srt.read_bytes()).hexdigest() if srt is not None and srt.is_file() else "none")
    return text_hash(*base)


def key_of(job: Job, sample: Sample, variant: Variant) -> str:
    return prediction_key(job.model_version, f"{job.benchmark}/{variant.name}", sample.id,
                          prompt_hash(job, sample, variant), job.frames, job.generation)


def video_groups(samples: list[Sample]) -> list[list[Sample]]:
    """Samples grouped by video, in order of first appearance."""
    groups: dict[tuple, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.video_key, []).append(s)
    return list(groups.values())


def preflight(samples: list[Sample], frames_decoder: str, limits: ReadLimits, timeout_s: float,
              subtitles: bool) -> tuple[list[Sample], list[dict], list[dict]]:
    """Before any model work: every question whose video is missing or cannot be opened (one frame of its clip
    decoded), and every subtitle file that cannot be read (its questions are asked without subtitles).

    Returns (samples, without the unreadable subtitle files), (missing questions), (data issues).
    """
    missing, issues = [], []
    for group in video_groups(samples):
        first = group[0]
        reason = None
        if not first.video.exists():
            reason = f"{first.video}: not found"
        else:
            try:
                read_video(first.video, 1, frames_decoder, first.start, first.end, timeout_s=timeout_s,
                           fps=first.frame_fps or DEFAULT_IMAGE_FPS, limits=limits)
            except (VideoReadError, OSError, ValueError) as exc:
                reason = str(exc)
        if reason is not None:
            missing += [{"id": s.id, "video": str(s.video), "reason": reason} for s in group]
    unreadable: set = set()
    if subtitles:
        for path in sorted({s.subtitles for s in samples if s.subtitles is not None and s.subtitles.is_file()}):
            try:
                read_srt(path)
            except DataError as exc:
                warnings.warn(f"{exc}: its questions are asked without subtitles", stacklevel=2)
                issues.append(issue(path, None, str(exc), "questions asked without subtitles"))
                unreadable.add(path)
    samples = [dataclasses.replace(s, subtitles=None) if s.subtitles in unreadable else s for s in samples]
    return samples, missing, issues


# -- one rank's share -----------------------------------------------------------------------------------
@torch.no_grad()
def run_shard(model, job: Job, tokenizer, guide_tokenizer, preprocessor: FramePreprocessor, rank: int = 0,
              world: int = 1, device: torch.device | str = "cpu", progress: bool = False) -> dict:
    """Answer this rank's undone questions, appending each to parts/rank<r>.jsonl.

    Returns counts, and `seconds`: each question answered here, by key, with the wall time it took (see
    _answer_video). Times are returned, not stored: the outputs hold what was answered, so an evaluation rerun
    on the same model writes the same bytes and what depends on it need not rerun. Writes this rank's
    unreadable videos to parts/missing.rank<r>.json.
    """
    model.eval()
    device = torch.device(device)
    done = set(read_parts(job.out))
    groups = shard(video_groups(job.samples), rank, world)
    needs_embeds, guides_needed = False, False
    for v in job.variants:
        model.set_guidance(v.guided)
        needs_embeds |= model.projector.needs_embeds
        guides_needed |= model.projector.uses_instruction
    if guides_needed and guide_tokenizer is None:
        raise ConfigError("the compressor injects the instruction but no instruction tokenizer was given (--towers)")
    missing, answered, skipped, seconds = [], 0, 0, {}
    known_missing = {m["id"] for m in job.preflight_missing}
    groups = [g for g in groups if g[0].id not in known_missing]  # nothing to ask: scored from the pre-flight list
    step = max(1, len(groups) // 10)
    with PredictionLog(part_path(job.out, rank)) as log:
        for g, group in enumerate(groups):
            keys = {(v, s.id): key_of(job, s, v) for v in job.variants for s in group}
            skipped += sum(key in done for key in keys.values())
            if any(key not in done for key in keys.values()):
                answered += _answer_video(model, job, group, keys, done, tokenizer, guide_tokenizer, preprocessor,
                                          needs_embeds, device, log, missing, seconds)
            if progress and (g + 1) % step == 0:
                print(f"evaluate[{job.benchmark}]: rank {rank}: {g + 1}/{len(groups)} videos", flush=True)
    atomic_write_bytes(job.out / "parts" / MISSING_FILE.format(rank=rank), json.dumps(missing, indent=1).encode())
    return {"answered": answered, "skipped": skipped, "missing": len(missing), "videos": len(groups),
            "seconds": seconds}


def batches(group: list[Sample], size: int) -> list[list[Sample]]:
    """A video's questions in fixed chunks (annotation order), so every run batches them alike."""
    return [group[i:i + size] for i in range(0, len(group), size)]


def _answer_video(model, job: Job, group: list[Sample], keys: dict, done: set, tokenizer, guide_tokenizer,
                  preprocessor, needs_embeds: bool, device: torch.device, log: PredictionLog, missing: list,
                  seconds: dict[str, float]) -> int:
    """Decode and encode one video once, then answer its questions batch by batch for every variant.

    A batch with any answer missing is recomputed whole and only the missing answers are appended: a
    resumed run computes each answer in the same batch as an uninterrupted run, so both give the same
    replies. `seconds[key]`: the answer's share of its batch, plus the decode and vision tower on the first
    answer written for the video.
    """
    first = group[0]
    started = time.perf_counter()
    try:
        clip = read_video(first.video, job.frames, job.decoder, first.start, first.end,
                          timeout_s=job.config.read_timeout_s, fps=first.frame_fps or DEFAULT_IMAGE_FPS,
                          limits=job.limits, scale_for=preprocessor)
    except VideoReadError as exc:
        missing += [{"id": s.id, "video": str(s.video), "reason": str(exc)} for s in group]
        return 0
    pixels = preprocessor(clip.frames).to(device=device, dtype=model.dtype)
    features, embeds = model.encode_frames(pixels, with_embeds=needs_embeds)
    times = [i / clip.fps for i in clip.indices]
    cues: dict[Path, list] = {}
    shared_seconds = time.perf_counter() - started
    written = 0
    for variant in job.variants:
        model.set_guidance(variant.guided)
        for batch in batches(group, job.config.questions_per_batch):
            todo = {s.id for s in batch if keys[variant, s.id] not in done}
            if not todo:
                continue
            started = time.perf_counter()
            prompts, subtitle_counts = [], []
            for sample in batch:
                lines = _subtitle_lines(sample, times, cues) if variant.subtitles else None
                prompts.append(job.prompt(sample, variant, lines or None))
                subtitle_counts.append(None if lines is None else len(lines))
            scores: list = [None] * len(batch)
            if variant.protocol == "likelihood":
                scores = option_scores(model, batch, prompts, tokenizer, guide_tokenizer, features,
                                       embeds if needs_embeds else None, device)
                replies = [likeliest_letter(x) for x in scores]
            else:
                replies = _generate(model, prompts, [guide_text(s) for s in batch], tokenizer, guide_tokenizer,
                                    features, embeds if needs_embeds else None, job.config.max_new_tokens, device)
            share = (time.perf_counter() - started) / len(todo)
            for sample, reply, lines, prompt, score in zip(batch, replies, subtitle_counts, prompts, scores):
                if sample.id not in todo:
                    continue
                log.append({"key": keys[variant, sample.id], "id": sample.id, "benchmark": job.benchmark,
                            "variant": variant.name, "model_version": job.model_version, "frames": job.frames,
                            "generation": job.generation, "reply": reply, "subtitle_lines": lines,
                            "prompt": prompt, "option_scores": score})
                seconds[keys[variant, sample.id]] = share + shared_seconds
                shared_seconds = 0.0
                written += 1
    return written


def _subtitle_lines(sample: Sample, times: list[float], cues: dict[Path, list]) -> list[str]:
    """The subtitle lines at the sampled frame times; none when the video has no .srt (the prompt then has no
    subtitle block)."""
    if sample.subtitles is None or not sample.subtitles.is_file():
        return []
    if sample.subtitles not in cues:
        cues[sample.subtitles] = read_srt(sample.subtitles)
    return subtitles_at(cues[sample.subtitles], times)


def _generate(model, prompts: list[str], guides: list[str], tokenizer, guide_tokenizer, features, embeds,
              max_new_tokens: int, device: torch.device) -> list[str]:
    """Greedy replies to several prompts about one video (left-padded batch, one visual item per prompt)."""
    ids = [encode_prompt(tokenizer, p, "video") for p in prompts]
    length = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(ids), length), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, length - len(x):] = x
        mask[row, length - len(x):] = 1
    guide_ids = [None] * len(prompts)
    if model.projector.uses_instruction:
        guide_ids = list(tokenise_guides(guide_tokenizer, guides, model.config.guide_max_length).to(device))
    items = [VisualItem(None, "video", g, features=features, embeds=embeds) for g in guide_ids]
    out = model.generate(input_ids.to(device), attention_mask=mask.to(device), visual_items=items,
                         max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.batch_decode(out, skip_special_tokens=True)


def short_answer(option: str) -> str:
    """An option as a short answer, in the form instruction tuning's short-answer turns use ("Red.")."""
    text = option.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def option_scores(model, samples: list[Sample], prompts: list[str], tokenizer, guide_tokenizer, features, embeds,
                  device: torch.device) -> list[list[float]]:
    """Per sample, each option's summed log-probability as the answer turn (its text as a short answer, and the
    end of turn) after exactly the prompt generation is given: the same user turn (template, subtitles) in the
    same chat template, system prompt included (lm-eval-harness / lmms-eval mc_ppl style).

    Unlike `generate`, this needs no ability to point from a letter to an option's text, which a tiny
    LLM does not learn; what it measures is whether the model knows the answer from the video.

    A question's options differ only in the answer turn, so its prompt (visual tokens, question, the answer
    turn's header) runs through the LLM once and every option is scored from that prompt's key/value cache;
    the samples (questions about one video) share one compression call and one forward of each part. The scores
    are those of running every option's whole sequence (tests pin it).
    """
    if not samples:
        return []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompt_ids, owner, answers = [], [], []
    for q, (sample, prompt) in enumerate(zip(samples, prompts)):
        ids, turns = encode_answers(tokenizer, prompt, [short_answer(o) for o in sample.options], "video", sample.id)
        prompt_ids.append(ids)
        owner += [q] * len(turns)
        answers += turns
    guides = [None] * len(samples)
    if model.projector.uses_instruction:
        guides = list(tokenise_guides(guide_tokenizer, [guide_text(s) for s in samples],
                                      model.config.guide_max_length).to(device))
    visual = model.encode_visual([VisualItem(None, "video", g, features=features, embeds=embeds) for g in guides])
    ids, _, mask = pad_sequences([Encoded(x, torch.full_like(x, IGNORE_INDEX), None) for x in prompt_ids], pad)
    prompt_embeds, prompt_mask, _, positions = model.splice(ids.to(device), mask.to(device), None, visual)
    llm = model.language_model  # hidden states, then the LM head on the rows scored only (not every position)
    prompt_out = llm.model(inputs_embeds=prompt_embeds, attention_mask=prompt_mask, position_ids=positions,
                           use_cache=True)
    lengths = prompt_mask.sum(1)
    last = prompt_out.last_hidden_state[torch.arange(len(samples), device=device), lengths - 1]
    first = llm.lm_head(last).float().log_softmax(-1)  # predicts each answer's first token
    index = torch.tensor(owner, device=device)
    cache = prompt_out.past_key_values
    cache.reorder_cache(index)  # each option continues its own question's prompt
    ids, labels, mask = pad_sequences(answers, pad)
    ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
    steps = torch.arange(ids.shape[1], device=device)
    answer_out = llm.model(inputs_embeds=model.get_input_embeddings()(ids), past_key_values=cache,
                           attention_mask=torch.cat([prompt_mask[index], mask], dim=1),
                           position_ids=lengths[index, None] + steps)
    # answer token j is predicted at answer position j - 1, the first one at the prompt's last position
    rest = llm.lm_head(answer_out.last_hidden_state[:, :-1]).float().log_softmax(-1)
    logprobs = torch.cat([first[index, None], rest], dim=1)
    token = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    totals = (token * (labels != IGNORE_INDEX)).sum(-1).tolist()
    out: list[list[float]] = [[] for _ in samples]
    for q, total in zip(owner, totals):
        out[q].append(float(total))
    return out


def whole_sequence_option_scores(model, samples: list[Sample], prompts: list[str], tokenizer, guide_tokenizer,
                                 features, embeds, device: torch.device) -> list[list[float]]:
    """option_scores by the plain route, the reference it is checked and benchmarked against (tests,
    bench/eval_cache_bench.py): one question at a time, every option's whole sequence (prompt and answer)
    through the LLM."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for sample, prompt in zip(samples, prompts):
        seqs = [encode_sample(tokenizer, [{"from": "human", "value": prompt},
                                          {"from": "gpt", "value": short_answer(option)}], "video", False, sample.id)[0]
                for option in sample.options]
        input_ids, labels, mask = pad_sequences(seqs, pad)
        guide = None
        if model.projector.uses_instruction:
            guide = tokenise_guides(guide_tokenizer, [guide_text(sample)], model.config.guide_max_length)[0].to(device)
        visual = model.encode_visual([VisualItem(None, "video", guide, features=features, embeds=embeds)]) * len(seqs)
        embeds_in, attention, spliced_labels, positions = model.splice(input_ids.to(device), mask.to(device),
                                                                       labels.to(device), visual)
        logits = model.language_model(inputs_embeds=embeds_in, attention_mask=attention,
                                      position_ids=positions).logits.float()
        target = spliced_labels[:, 1:]
        logprobs = logits[:, :-1].log_softmax(-1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        out.append([float(x) for x in (logprobs * (target != IGNORE_INDEX)).sum(-1)])
    return out


def likeliest_letter(scores: list[float]) -> str:
    """The letter of the option with the highest score (the first on a tie)."""
    return chr(ord("A") + max(range(len(scores)), key=scores.__getitem__))


# -- merging and scoring (rank 0) -------------------------------------------------------------------
def merge_and_score(job: Job, world: int = 1) -> dict:
    """Join every part into predictions.jsonl and samples.jsonl, score each variant, write results.json (and the
    benchmark's submission files, where it has them).

    A question whose video is missing or unreadable has no reply and counts as wrong in `accuracy`;
    `accuracy_readable` beside it is over the questions whose video was read.
    """
    stored = read_parts(job.out)
    missing = {m["id"]: m for m in job.preflight_missing}
    for rank in range(world):
        path = job.out / "parts" / MISSING_FILE.format(rank=rank)
        if path.is_file():
            missing.update({m["id"]: m for m in json.loads(path.read_text())})
    valid = InstructionFilter(job.config.invalid_instructions)
    predictions, audit, summaries = [], [], {}
    for variant in job.variants:
        records = []
        for sample in job.samples:
            stored_record = stored.get(key_of(job, sample, variant))
            if stored_record is None and sample.id not in missing:
                raise RuntimeError(f"{job.benchmark}: sample {sample.id!r} ({variant.name}) has neither an answer "
                                   f"nor a read error under {job.out / 'parts'}")
            stored_record = stored_record or {"key": key_of(job, sample, variant), "id": sample.id,
                                              "benchmark": job.benchmark, "variant": variant.name,
                                              "reply": None, "prompt": None, "option_scores": None,
                                              "subtitle_lines": None}
            choice = None if stored_record["reply"] is None else extract_choice(stored_record["reply"], sample.options)
            records.append({**stored_record, "video": str(sample.video), "answer": sample.answer, "choice": choice,
                            "correct": None if sample.answer is None else choice == sample.answer,
                            "video_missing": sample.id in missing,
                            "num_options": len(sample.options), "groups": sample.groups,
                            "instruction_valid": valid.is_valid(sample.question), "question": sample.question})
            audit.append({"id": sample.id, "video": str(sample.video), "variant": variant.name,
                          "prompt": stored_record.get("prompt"), "reply": stored_record["reply"],
                          "option_scores": stored_record.get("option_scores"), "extracted": choice,
                          "correct_letter": sample.answer, "correct": records[-1]["correct"],
                          "video_missing": sample.id in missing})
        entry = job.entry
        summary = summarise(records, entry.breakdowns, task_field=entry.task_field)
        readable = [r for r in records if r["answer"] is not None and not r["video_missing"]]
        summary["missing"] = sum(r["video_missing"] for r in records)
        summary["accuracy_readable"] = sum(bool(r["correct"]) for r in readable) / len(readable) if readable else None
        if entry.submissions:
            primary = variant == job.variants[0]
            files = [s.file_for(variant.name, primary) for s in entry.submissions]
            no_answer = [s.write(records, job.out / name) for s, name in zip(entry.submissions, files)]
            summary["submission"] = {"files": files, "questions": len(records), "no_answer": no_answer[0]}
        summaries[variant.name] = summary
        predictions += records
    atomic_write_bytes(job.out / "predictions.jsonl",
                       "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in predictions).encode())
    atomic_write_bytes(job.out / SAMPLES_FILE,
                       "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in audit).encode())
    primary = summaries[job.variants[0].name]
    results = {"benchmark": job.benchmark, "variant": job.variants[0].name, "protocol": job.variants[0].protocol,
               **primary,
               "missing_samples": sorted(missing.values(), key=lambda m: m["id"]),
               "data_issues": job.data_issues,
               "variants": summaries,
               "settings": {"model_version": job.model_version, "frames": job.frames, "decoder": job.decoder,
                            "generation": job.generation, "prompt_template_hash": job.template.digest(),
                            "samples": len(job.samples)}}
    atomic_write_bytes(job.out / "results.json", json.dumps(results, indent=2).encode())
    return results


# -- the whole evaluation, in every rank ------------------------------------------------------------
def distributed_context(barrier_timeout_s: float) -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group) under torchrun; (0, 1, False) alone.

    gloo carries only small objects (a broadcast, a gather) and the barrier, so the same group serves CPU and GPU
    runs.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, False
    started = not torch.distributed.is_initialized()
    if started:
        torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=barrier_timeout_s))
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), started


def broadcast_from_rank0(value, world: int):
    if world == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gathered(value, world: int) -> list:
    """Every rank's `value`, in rank order; a collective, so each rank waits here for all the others."""
    if world == 1:
        return [value]
    box = [None] * world
    torch.distributed.all_gather_object(box, value)
    return box
