"""On-disk cache of frozen vision-tower outputs, so each video is decoded and encoded only once.

The SigLIP tower is frozen in every training stage, so a video's penultimate-layer features F
(T, g, g, C) and joint-space embeddings E (same shape, absent when the compressor needs none) are
the same in every epoch, turn and stage. The instruction (text) tower is frozen too, so the
encoded questions of a sample (pooled embeddings, + per-token states where `fine` injection needs
them) are cached beside them. The cache is a plain directory (DVC can version it):

    root/<tower fingerprint[:16]>-<frame policy digest[:16]>/info.json
    root/<tower fingerprint[:16]>-<frame policy digest[:16]>/<key[:2]>/<key>.safetensors
    root/guides-<text tower fingerprint[:16]>/info.json
    root/guides-<text tower fingerprint[:16]>/<key[:2]>/<key>.safetensors

A video entry's key hashes the video's bytes and its start/end, and its directory names the tower
weights and the frame policy, so changing any of the three makes a miss rather than a stale hit.
A guide entry's key hashes the (k, L) instruction token ids; its directory names the text tower.
Every file is written to a unique temporary sibling and renamed into place, so a crash or two
ranks writing the same entry never leave a half-written file under the final name.

Caching is a step of the pipeline, before the model's forward: the dataset fills a batch's items
from the hits, and `FeatureCache.complete` computes the misses with the model's towers and stores
them. The model itself never sees the cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hicom.core.files import atomic_write, atomic_write_bytes, file_digest
from hicom.core.types import VisualItem
from hicom.data.video import DECODERS, DEFAULT_IMAGE_FPS, READ_VERSION, FramePreprocessor

logger = logging.getLogger("hicom.cache")

# Hashed into every tower fingerprint: bump it when encode_frames or encode_guides changes what it
# computes (another layer, another head), since the weights alone would then still match the old entries.
FEATURE_VERSION = 1
INFO_FILE = "info.json"
ENTRY_SUFFIX = ".safetensors"
_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FramePolicy:
    """Everything that changes which pixels reach the tower; its digest names the cache directory.

    frame_dir_fps is the rate read_video assigns to frame directories, which decides the frames a
    start/end range selects there. read_version is hicom.data.video.READ_VERSION: the reader's own
    behaviour (scaling in the decoder, rotation), which the other fields do not show.
    """

    num_frames: int
    decoder: str
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    pad_to_square: bool
    frame_dir_fps: float = DEFAULT_IMAGE_FPS
    read_version: int = READ_VERSION

    def __post_init__(self) -> None:
        if not (isinstance(self.num_frames, int) and self.num_frames >= 1):
            raise ValueError(f"num_frames must be a positive int, got {self.num_frames!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; expected one of {DECODERS}")
        if not self.frame_dir_fps > 0:
            raise ValueError(f"frame_dir_fps must be > 0, got {self.frame_dir_fps!r}")
        if not (isinstance(self.read_version, int) and self.read_version >= 1):
            raise ValueError(f"read_version must be a positive int, got {self.read_version!r}")
        # The preprocessor validates the pixel settings and turns mean/std into float tuples, so
        # (0.5, 0.5, 0.5), [0.5, 0.5, 0.5] and (.5, .5, .5) all give the same digest.
        pre = FramePreprocessor(self.image_size, self.image_mean, self.image_std, self.pad_to_square)
        object.__setattr__(self, "image_mean", pre.image_mean)
        object.__setattr__(self, "image_std", pre.image_std)
        object.__setattr__(self, "frame_dir_fps", float(self.frame_dir_fps))

    @classmethod
    def from_preprocessor(
        cls, preprocessor: FramePreprocessor, num_frames: int, decoder: str, frame_dir_fps: float = DEFAULT_IMAGE_FPS
    ) -> FramePolicy:
        return cls(
            num_frames=num_frames,
            decoder=decoder,
            image_size=preprocessor.image_size,
            image_mean=preprocessor.image_mean,
            image_std=preprocessor.image_std,
            pad_to_square=preprocessor.pad_to_square,
            frame_dir_fps=frame_dir_fps,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        """sha256 hex of the fields as canonical JSON: the same in every process and Python version."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def module_fingerprint(module: nn.Module, with_embeds: bool) -> str:
    """sha256 hex over the module's state_dict (sorted names, dtypes, shapes, raw bytes), class name and with_embeds.

    Not memoised: weights can change without bumping any version counter (writes through
    `.data`, numpy views), so a cached answer could not be trusted. It costs one pass over the
    weights - about a second for a 400M-parameter bf16 tower (800 MB copied to the CPU and
    hashed) - and is computed once per training stage.
    """
    hasher = hashlib.sha256(f"hicom-feature-cache/{FEATURE_VERSION}\0{type(module).__name__}\0{bool(with_embeds)}\0".encode())
    state = module.state_dict()
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"module_fingerprint: state_dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
        header = json.dumps([name, str(tensor.dtype), list(tensor.shape)])
        hasher.update(len(header).to_bytes(8, "little") + header.encode())
        raw = tensor.detach().to("cpu", memory_format=torch.contiguous_format).reshape(-1).view(torch.uint8)
        hasher.update(raw.numpy().data)
    return hasher.hexdigest()


class _Memory:
    """The entries this process read from disk, most recently used last, up to `budget` bytes of tensors.

    Why: a training epoch reads every entry again, and reading a small entry's file (about 0.27 ms for a tiny clip)
    was most of a cached micro-batch's data time. Entries are never written through here, so a damaged file is
    still found (and moved aside) on its first read. Tensors handed out are shared: callers must not modify them.
    """

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.entries: OrderedDict[Path, dict[str, torch.Tensor]] = OrderedDict()

    def get(self, path: Path) -> dict[str, torch.Tensor] | None:
        tensors = self.entries.get(path)
        if tensors is not None:
            self.entries.move_to_end(path)
        return tensors

    def keep(self, path: Path, tensors: dict[str, torch.Tensor]) -> None:
        size = _nbytes(tensors)
        if size > self.budget:
            return
        self.entries[path] = tensors
        self.used += size
        while self.used > self.budget:
            self.used -= _nbytes(self.entries.popitem(last=False)[1])


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


MEMORY_BYTES = 1 << 30  # per process: every tiny-profile clip and guide fits; at paper scale, the latest few clips


class FeatureCache:
    """Features (and embeddings) of one tower + frame policy, keyed by video content and time range.

    hits and misses count get() calls in this process. Entries read from disk are also kept in memory, up to
    memory_bytes per process (0: none), so later epochs do not read their files again.
    """

    def __init__(self, root: str | os.PathLike, tower_fingerprint: str, policy: FramePolicy,
                 text_fingerprint: str | None = None, memory_bytes: int = MEMORY_BYTES) -> None:
        """text_fingerprint: module_fingerprint of the instruction tower, to cache encoded guides too."""
        for name, value in (("tower_fingerprint", tower_fingerprint), ("text_fingerprint", text_fingerprint)):
            if value is not None and not (isinstance(value, str) and _KEY.fullmatch(value)):
                raise ValueError(f"{name} must be a sha256 hex digest (module_fingerprint), got {value!r}")
        if isinstance(memory_bytes, bool) or not isinstance(memory_bytes, int) or memory_bytes < 0:
            raise ValueError(f"memory_bytes must be a whole number of bytes >= 0, got {memory_bytes!r}")
        self.memory = _Memory(memory_bytes)
        self.root = Path(root)
        self.tower_fingerprint = tower_fingerprint
        self.policy = policy
        self.directory = self.root / f"{tower_fingerprint[:16]}-{policy.digest()[:16]}"
        self.hits = self.misses = 0
        self.guide_hits = self.guide_misses = 0
        _describe(self.directory, {
            "feature_version": FEATURE_VERSION,
            "tower_fingerprint": tower_fingerprint,
            "policy": policy.to_dict(),
            "policy_digest": policy.digest(),
        })
        self.guide_directory = None
        if text_fingerprint is not None:
            self.guide_directory = self.root / f"guides-{text_fingerprint[:16]}"
            _describe(self.guide_directory, {"feature_version": FEATURE_VERSION, "text_fingerprint": text_fingerprint})

    def key(self, video_path: str | os.PathLike, start: float | None = None, end: float | None = None) -> str:
        """sha256 hex of the video's content digest and its start/end; the path itself is not part of it."""
        bounds = [None if t is None else float(t) for t in (start, end)]
        return hashlib.sha256(json.dumps([file_digest(video_path), *bounds]).encode()).hexdigest()

    @classmethod
    def for_model(cls, root: str | os.PathLike, model: nn.Module, policy: FramePolicy, guided: bool) -> FeatureCache:
        """The cache of a HICom model's frozen towers: the vision tower's outputs (E included when the
        model has an instruction tower) and, for a guided stage, the instruction tower's."""
        text = model.text_tower
        return cls(root, module_fingerprint(model.vision_tower, with_embeds=_stores_embeds(model)), policy,
                   module_fingerprint(text, with_embeds=False) if guided and text is not None else None)

    def complete(self, model: nn.Module, items: list[VisualItem]) -> list[VisualItem]:
        """The items with the frozen towers' outputs that the cache missed computed by `model` and stored,
        so the model's forward runs no tower for them (the hits were filled in by the dataset).

        One vision-tower call for each item without features (E included whenever the model has an
        instruction tower, so every stage can reuse the entry), and - in a guided stage - one
        instruction-tower call for each item without its encoded guides: an entry's bits then do not depend on
        which items shared its micro-batch. Items without a cache key are left to the model.
        """
        frames = [i for i, it in enumerate(items) if it.features is None and it.cache_key is not None]
        guides = []
        if self.guide_directory is not None and model.projector.uses_instruction:
            needs_tokens = model.projector.needs_guide_tokens
            guides = [i for i, it in enumerate(items)
                      if it.guide_cache_key is not None and it.guide_input_ids is not None
                      and (it.guide_pooled is None or (needs_tokens and it.guide_tokens is None))]
        items = list(items)
        # One tower call per item, never several items together: a tower's output for one input differs in its last
        # bits with the batch it is computed in, so an entry computed beside other items differs from the same entry
        # computed by the other rank (which used its own value) or read back by a later run, and training from a cold
        # cache then drifted from training from a warm one (README, "Where the answer is lost").
        for i in frames:
            (features, embeds), = model.encode_items([items[i]], _stores_embeds(model))
            self.put(items[i].cache_key, features, embeds)
            items[i] = replace(items[i], features=features, embeds=embeds)
        for i in guides:
            (pooled, tokens), = model.encode_item_guides([items[i].guide_input_ids])
            self.put_guides(items[i].guide_cache_key, pooled, tokens)
            items[i] = replace(items[i], guide_pooled=pooled, guide_tokens=tokens)
        return items

    def path(self, key: str) -> Path:
        return _entry_path(self.directory, key)

    def get(self, key: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(features, embeds or None), or None on a miss.

        An unreadable entry is a miss too: it is logged and moved aside to <file>.corrupt - kept
        for inspection, never deleted - so the next put can replace it.
        """
        tensors = self._read(self.path(key), _entry_problem)
        if tensors is None:
            self.misses += 1
            return None
        self.hits += 1
        return tensors["features"], tensors.get("embeds")

    def guide_key(self, guide_input_ids: torch.Tensor) -> str:
        """sha256 hex of a sample's (k, L) instruction token ids: their shape and values."""
        ids = guide_input_ids.detach().to("cpu", torch.int64).contiguous()
        header = json.dumps(["guide-ids", list(ids.shape)]).encode()
        return hashlib.sha256(header + b"\0" + ids.numpy().tobytes()).hexdigest()

    def get_guides(self, key: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(pooled (k, d), per-token states (k, L, d) or None) of a sample's instructions, or None on a
        miss (also without a text fingerprint; an unreadable entry is moved aside as in get)."""
        if self.guide_directory is None:
            return None
        tensors = self._read(_entry_path(self.guide_directory, key), _guide_entry_problem)
        if tensors is None:
            self.guide_misses += 1
            return None
        self.guide_hits += 1
        return tensors["pooled"], tensors.get("tokens")

    def _read(self, path: Path, problem_of) -> dict[str, torch.Tensor] | None:
        """An entry from memory, else from its file (then kept in memory)."""
        tensors = self.memory.get(path)
        if tensors is None:
            tensors = _read_entry(path, problem_of)
            if tensors is not None:
                self.memory.keep(path, tensors)
        return tensors

    def put_guides(self, key: str, pooled: torch.Tensor, tokens: torch.Tensor | None) -> None:
        """Store a sample's encoded instructions (needs the text fingerprint given at construction)."""
        if self.guide_directory is None:
            raise ValueError("this FeatureCache caches no guides: it was built without a text_fingerprint")
        if tokens is not None and tokens.shape[0] != pooled.shape[0]:
            raise ValueError(f"tokens {tuple(tokens.shape)} and pooled {tuple(pooled.shape)} differ in their guide count")
        _write_entry(_entry_path(self.guide_directory, key),
                     {"pooled": pooled} if tokens is None else {"pooled": pooled, "tokens": tokens})

    def put(self, key: str, features: torch.Tensor, embeds: torch.Tensor | None) -> None:
        """Store contiguous CPU copies (dtype kept); concurrent writers of one key each rename a whole file."""
        path = self.path(key)
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features must be a tensor, got {type(features).__name__}")
        if embeds is not None and (not isinstance(embeds, torch.Tensor) or embeds.shape != features.shape):
            got = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(f"embeds must be None or a tensor shaped like features {tuple(features.shape)}, got {got}")
        _write_entry(path, {"features": features} if embeds is None else {"features": features, "embeds": embeds})

    def stats(self) -> dict[str, int]:
        """hits/misses of this process, and the entries and bytes on disk for this tower + policy
        (guide_* the same for the encoded instructions)."""
        entries, total = _count_entries(self.directory)
        guide_entries, guide_total = _count_entries(self.guide_directory)
        return {"hits": self.hits, "misses": self.misses, "entries": entries, "bytes": total,
                "guide_hits": self.guide_hits, "guide_misses": self.guide_misses,
                "guide_entries": guide_entries, "guide_bytes": guide_total}


def _stores_embeds(model: nn.Module) -> bool:
    """Entries keep E whenever the model has an instruction tower: then some stage of it injects the
    instruction at the local level, or could, and reuses the entry."""
    return model.text_tower is not None


def _describe(directory: Path, description: dict) -> None:
    info = directory / INFO_FILE
    if not info.exists():
        atomic_write_bytes(info, (json.dumps(description, indent=2) + "\n").encode())


def _entry_path(directory: Path, key: str) -> Path:
    if not (isinstance(key, str) and _KEY.fullmatch(key)):
        raise ValueError(f"cache key must be a sha256 hex digest (FeatureCache.key / guide_key), got {key!r}")
    return directory / key[:2] / f"{key}{ENTRY_SUFFIX}"


def _read_entry(path: Path, problem_of) -> dict[str, torch.Tensor] | None:
    """The entry's tensors, or None when it is missing or unreadable (then moved aside to <file>.corrupt)."""
    try:
        tensors = load_file(path)
    except FileNotFoundError:
        return None
    except (SafetensorError, OSError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    else:
        problem = problem_of(tensors)
    if problem is None:
        return tensors
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another rank or worker moved it first
        pass
    logger.warning("feature cache entry %s is unreadable (%s); moved aside to %s", path, problem, aside)
    return None


def _write_entry(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write to a unique temporary sibling, then rename: readers never see a partial file."""
    # Copies, so no two entries share storage (safetensors refuses that) and no GPU tensor is kept.
    tensors = {name: t.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
               for name, t in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def _count_entries(directory: Path | None) -> tuple[int, int]:
    entries = total = 0
    if directory is not None and directory.is_dir():
        for shard in os.scandir(directory):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                if entry.name.endswith(ENTRY_SUFFIX) and not entry.name.startswith("."):
                    entries += 1
                    total += entry.stat().st_size
    return entries, total


def _entry_problem(tensors: dict[str, torch.Tensor]) -> str | None:
    """Why a loaded entry is not one put() wrote, or None when it is."""
    if "features" not in tensors or set(tensors) - {"features", "embeds"}:
        return f"expected tensors 'features' (+ 'embeds'), found {sorted(tensors)}"
    embeds = tensors.get("embeds")
    if embeds is not None and embeds.shape != tensors["features"].shape:
        return f"embeds shape {tuple(embeds.shape)} differs from features shape {tuple(tensors['features'].shape)}"
    return None


def _guide_entry_problem(tensors: dict[str, torch.Tensor]) -> str | None:
    """Why a loaded guide entry is not one put_guides() wrote, or None when it is."""
    if "pooled" not in tensors or set(tensors) - {"pooled", "tokens"} or tensors["pooled"].dim() != 2:
        return f"expected tensors 'pooled' (k, d) (+ 'tokens'), found {sorted(tensors)}"
    tokens = tensors.get("tokens")
    if tokens is not None and (tokens.dim() != 3 or tokens.shape[0] != tensors["pooled"].shape[0]):
        return f"tokens shape {tuple(tokens.shape)} does not match pooled shape {tuple(tensors['pooled'].shape)}"
    return None
