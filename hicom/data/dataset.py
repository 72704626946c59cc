"""A torch Dataset of LLaVA samples: decode the visual input once, encode every turn, collate.

An unreadable video or a malformed conversation is skipped and recorded in a rejects file
beside the stage's outputs; another sample is never substituted for it.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from hicom.core.sequences import SequenceTooLongError, find_cut
from hicom.core.types import IGNORE_INDEX, VisualItem
from hicom.data.conversation import (
    ConversationError,
    Encoded,
    check_visual_tag,
    encode_sample,
    tokenise_guides,
)
from hicom.data.feature_cache import FeatureCache
from hicom.data.settings import ReadLimits
from hicom.data.video import FramePreprocessor, VideoReadError, read_video

logger = logging.getLogger("hicom.data")


class RejectLog:
    """Append-only JSONL of skipped samples, one line per sample and stage: a sample rejected again (the next
    epoch, another rank, a resumed run) is not counted twice. Writers (ranks, workers) take turns with flock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seen: set[tuple[str, str | None]] = set()

    def add(self, sample_id: str, reason: str, path: str | None = None, stage: str | None = None) -> None:
        if (sample_id, stage) in self._seen:
            return
        line = json.dumps({"id": sample_id, "path": path, "reason": reason, "stage": stage}) + "\n"
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._seen |= {(r["id"], r.get("stage")) for r in self.read()}  # what other processes logged
            if (sample_id, stage) not in self._seen:
                os.write(fd, line.encode())
                self._seen.add((sample_id, stage))
        finally:
            os.close(fd)  # releases the lock

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class SampleSettings:
    num_frames: int
    guided: bool  # guided: one sequence per question, each with its own guide
    guide_max_length: int = 64
    decoder: str = "decord"
    read_timeout_s: float = 60.0
    stage: str | None = None
    limits: ReadLimits = ReadLimits()
    # The model's length limit and its visual tokens per item: a turn that cannot fit once they are spliced in
    # is dropped here, and a sample with no turn that fits is rejected, instead of failing the step.
    max_length: int | None = None
    video_tokens: int = 0
    image_tokens: int = 0


class ConversationDataset(torch.utils.data.Dataset):
    def __init__(self, samples: list[dict], tokenizer, preprocessor: FramePreprocessor, settings: SampleSettings,
                 rejects: RejectLog, guide_tokenizer=None, feature_cache: FeatureCache | None = None):
        if settings.guided and guide_tokenizer is None:
            raise ValueError("guided samples need the instruction tower's tokenizer (guide_tokenizer)")
        self.samples = samples
        self.tokenizer = tokenizer
        self.guide_tokenizer = guide_tokenizer
        self.preprocessor = preprocessor
        self.settings = settings
        self.rejects = rejects
        self.feature_cache = feature_cache  # frozen-tower outputs: a hit skips decoding and the towers
        # Token ids per sample index: the text never changes between epochs, and tokenising it was
        # most of a cached step's data time. Per process (each DataLoader worker keeps its own).
        self._encoded: dict[int, tuple[list[Encoded], torch.Tensor | None]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict | None:
        sample = self.samples[index]
        sample_id = str(sample.get("id", index))
        modality = "video" if "video" in sample else "image" if "image" in sample else None
        media = sample.get(modality) if modality else None
        s = self.settings
        try:
            if isinstance(media, list):
                raise ConversationError(f"sample {sample_id}: several images per sample are not supported")
            sequences, guide_ids = self._encode(index, sample, sample_id, modality)
            pixel_values, cached, key = None, None, None
            if modality is not None and self.feature_cache is not None:
                if not Path(media).exists():
                    raise VideoReadError(media, "file not found")
                key = self.feature_cache.key(media, sample.get("start"), sample.get("end"))
                cached = self.feature_cache.get(key)
            if modality is not None and cached is None:
                clip = read_video(media, s.num_frames, decoder=s.decoder, start=sample.get("start"),
                                  end=sample.get("end"), timeout_s=s.read_timeout_s, limits=s.limits,
                                  scale_for=self.preprocessor)
                pixel_values = self.preprocessor(clip.frames)
        except (ConversationError, VideoReadError) as exc:
            self.rejects.add(sample_id, str(exc), media, s.stage)
            return None
        guides, guide_key = None, None
        if guide_ids is not None and self.feature_cache is not None and self.feature_cache.guide_directory is not None:
            guide_key = self.feature_cache.guide_key(guide_ids)
            guides = self.feature_cache.get_guides(guide_key)
        return {"id": sample_id, "sequences": sequences, "modality": modality, "pixel_values": pixel_values,
                "guide_input_ids": guide_ids, "features": cached[0] if cached else None,
                "embeds": cached[1] if cached else None, "cache_key": key,
                "guide_pooled": guides[0] if guides else None, "guide_tokens": guides[1] if guides else None,
                "guide_cache_key": guide_key}


    def _encode(self, index: int, sample: dict, sample_id: str, modality: str | None):
        """The sample's training sequences and guide ids, tokenised on first use only."""
        if index not in self._encoded:
            s = self.settings
            guided = s.guided and modality is not None
            sequences = encode_sample(self.tokenizer, sample["conversations"], modality, guided, sample_id)
            check_visual_tag(sample["conversations"], modality, sample_id)  # after the shape checks of encoding
            sequences = self._fitting(sequences, modality, sample_id)
            guide_ids = tokenise_guides(self.guide_tokenizer, [e.guide for e in sequences], s.guide_max_length) \
                if guided else None
            self._encoded[index] = (sequences, guide_ids)
        return self._encoded[index]

    def _fitting(self, sequences: list[Encoded], modality: str | None, sample_id: str) -> list[Encoded]:
        """The sequences the model can cut to max_length once the visual tokens are spliced in (find_cut, as the
        model cuts); ConversationError when none can."""
        s = self.settings
        if s.max_length is None:
            return sequences
        visual = {"video": s.video_tokens, "image": s.image_tokens}.get(modality, 0)
        kept, reasons = [], []
        for seq in sequences:
            labels, visual_end = _spliced_labels(seq, visual)
            try:
                find_cut(labels, visual_end, s.max_length)
                kept.append(seq)
            except SequenceTooLongError as exc:
                reasons.append(str(exc))
        if not kept:
            raise ConversationError(f"sample {sample_id}: no turn fits in max_length={s.max_length} with its "
                                    f"{visual} visual tokens ({reasons[0]})")
        if reasons:
            logger.warning("sample %s: %d of %d turns dropped, longer than max_length=%d with %d visual tokens",
                           sample_id, len(reasons), len(sequences), s.max_length, visual)
        return kept


def _spliced_labels(seq: Encoded, visual_tokens: int) -> tuple[torch.Tensor, int]:
    """The sequence's labels with each placeholder widened to its visual tokens, and where those tokens end."""
    pieces, start, visual_end = [], 0, 0
    for pos in torch.nonzero(seq.input_ids < 0).flatten().tolist():
        pieces += [seq.labels[start:pos], torch.full((visual_tokens,), IGNORE_INDEX, dtype=seq.labels.dtype)]
        start = pos + 1
        visual_end = sum(len(p) for p in pieces)
    pieces.append(seq.labels[start:])
    return torch.cat(pieces), visual_end


def pad_sequences(sequences: list[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, labels, attention_mask), each (len(sequences), longest)."""
    length = max(len(seq.input_ids) for seq in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, seq in enumerate(sequences):
        n = len(seq.input_ids)
        input_ids[i, :n] = seq.input_ids
        labels[i, :n] = seq.labels
        attention_mask[i, :n] = 1
    return input_ids, labels, attention_mask


def collate(batch: list[dict | None], pad_id: int) -> dict | None:
    """Right-padded ids/labels for every sequence; one VisualItem per sample (shared by its turns)."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    input_ids, labels, attention_mask = pad_sequences([seq for b in batch for seq in b["sequences"]], pad_id)
    items = [VisualItem(b["pixel_values"], b["modality"], b["guide_input_ids"], features=b.get("features"),
                        embeds=b.get("embeds"), cache_key=b.get("cache_key"), guide_pooled=b.get("guide_pooled"),
                        guide_tokens=b.get("guide_tokens"), guide_cache_key=b.get("guide_cache_key"))
             for b in batch if b["modality"] is not None]
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "visual_items": items,
            "ids": [b["id"] for b in batch]}


def batch_to(batch: dict, device: torch.device | str) -> dict:
    """A collated batch with every tensor, the visual items' included, on `device` (the engine's GPU)."""
    def move(value):
        return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value

    items = [replace(item, **{f.name: move(getattr(item, f.name)) for f in fields(item)})
             for item in batch["visual_items"]]
    return {**{k: move(v) for k, v in batch.items() if k != "visual_items"}, "visual_items": items}
