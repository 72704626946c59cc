"""A procedurally generated video world: the default data for every stage when nothing can be downloaded.

Each clip shows a few uniquely nameable shapes (distinct shape and colour) that move in one direction,
and some appear late or leave early. Most questions are about ONE object or ONE moment, so a compressor
that is told the question can keep the tokens that matter and beat one that compresses blindly; an
"existence" kind (which colour can be seen) asks about the whole clip, the easiest grounded question.
Everything is a pure function of the seed: each scene draws from its own string-seeded RNG streams,
so the output does not depend on the order in which scenes are produced.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

from hicom.core.files import atomic_write, atomic_write_bytes

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
    "purple": (150, 60, 200),
}
MOTIONS = ("static", "left", "right", "up", "down")
SIZES = ("small", "large")
BACKGROUNDS = {"black": (10, 10, 10), "dark grey": (60, 60, 60), "dark brown": (70, 45, 25)}

_SIZE_FRACTION = {"small": 0.08, "large": 0.14}  # half-extent as a share of the frame side
_STEP = {"static": (0, 0), "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_MOTION_PHRASE = {"static": "it stays still", "left": "it moves left", "right": "it moves right",
                  "up": "it moves up", "down": "it moves down"}
_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "centre", "right")
CELLS = tuple("centre" if (r, c) == ("middle", "centre") else f"{r} {c}" for r in _ROWS for c in _COLS)
_NUMBERS = ("none", "one", "two", "three", "four", "five", "six")
_MAX_OBJECTS = len(_NUMBERS) - 1
_LATE_OR_EARLY_P = 0.6  # chance that a scene has an object that appears late (and, separately, one that leaves early)
IMAGE_PROMPTS = ("Describe the image.", "What is shown in this picture?", "Give a short description of the image.",
                 "What do you see in this frame?", "Briefly describe what is in the picture.")
VIDEO_PROMPTS = ("Describe the video.", "What happens in this clip?", "Give a short description of the video.",
                 "Summarise what happens in the video.", "Describe the objects and how they move.")
LETTERS = "ABCD"
TRAIN_FILES = ("align_images.jsonl", "align_videos.jsonl", "cond_pretrain.jsonl", "sft.jsonl", "sft_mcq.jsonl")
TEST_FILE = "mcq_test.jsonl"


@dataclass(frozen=True)
class WorldConfig:
    """How many clips, how they look, and how much text each one yields; validated on construction."""

    seed: int = 0
    num_videos: int = 200
    num_frames: int = 24  # frames per clip
    fps: int = 8
    size: int = 64  # square frame side in pixels
    min_objects: int = 2
    max_objects: int = 4
    qa_per_video: int = 3  # QA turns per video for instruction tuning
    mcq_per_video: int = 2  # multiple-choice turns (answered with a letter) per train video, in sft_mcq.jsonl
    pairs_per_video: int = 3  # instruction-description pairs per video (conditional pre-training)
    test_fraction: float = 0.2  # share of videos held out for the MCQ test split (never in train files)

    def __post_init__(self):
        where = "data.synthetic"
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "test_fraction":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                    raise ValueError(f"{where}.test_fraction: must be a number in [0, 1), got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}.{f.name}: must be an integer, got {value!r}")
        minimum = {"num_videos": 1, "num_frames": 8, "fps": 1, "size": 32, "min_objects": 1,
                   "qa_per_video": 1, "pairs_per_video": 1, "mcq_per_video": 0}
        for name, low in minimum.items():
            if getattr(self, name) < low:
                raise ValueError(f"{where}.{name}: must be >= {low}, got {getattr(self, name)!r}")
        if self.size % 2:
            raise ValueError(f"{where}.size: must be even (yuv420p video), got {self.size!r}")
        if not self.min_objects <= self.max_objects <= _MAX_OBJECTS:
            raise ValueError(f"{where}.max_objects: must be in [min_objects={self.min_objects}, {_MAX_OBJECTS}], "
                             f"got {self.max_objects!r}")

    @classmethod
    def from_dict(cls, d: dict, where: str = "data.synthetic") -> "WorldConfig":
        """Strict keys: a misspelt setting must fail loudly, not fall back to its default."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} (known: {', '.join(known)})")
        try:
            return cls(**d)
        except ValueError as err:
            raise ValueError(str(err).replace("data.synthetic", where, 1)) from None

    @property
    def num_test(self) -> int:
        """Held-out clips; at least one clip always stays in train."""
        return min(round(self.num_videos * self.test_fraction), self.num_videos - 1)


@dataclass(frozen=True)
class SceneObject:
    """One shape. (x0, y0) is its centre at frame `appear`; it moves `speed` pixels a frame in `motion`."""

    shape: str
    colour: str
    size: str  # "small" | "large"
    x0: int
    y0: int
    motion: str
    speed: float
    appear: int  # first visible frame
    disappear: int  # last visible frame, inclusive

    def __post_init__(self):
        for name, choices in (("shape", SHAPES), ("colour", tuple(COLOURS)), ("size", SIZES), ("motion", MOTIONS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"scene object {name} {getattr(self, name)!r} is not one of {', '.join(choices)}")
        if not 0 <= self.appear <= self.disappear:
            raise ValueError(f"scene object {self.name}: needs 0 <= appear <= disappear, "
                             f"got appear={self.appear!r}, disappear={self.disappear!r}")

    def visible(self, t: int) -> bool:
        return self.appear <= t <= self.disappear

    def position(self, t: int) -> tuple[int, int]:
        """Integer centre at frame t (extrapolated outside the visible span)."""
        dx, dy = _STEP[self.motion]
        k = self.speed * (t - self.appear)
        return round(self.x0 + dx * k), round(self.y0 + dy * k)

    @property
    def name(self) -> str:
        return f"the {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Ground truth of one clip; saved as JSON so every question can be checked against it."""

    id: str
    objects: tuple[SceneObject, ...]
    num_frames: int
    fps: int
    size: int
    background: tuple[int, int, int]

    def to_dict(self) -> dict:
        return {"id": self.id, "num_frames": self.num_frames, "fps": self.fps, "size": self.size,
                "background": list(self.background), "objects": [asdict(o) for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        expected = {"id", "num_frames", "fps", "size", "background", "objects"}
        if set(d) != expected:
            raise ValueError(f"scene {d.get('id')!r}: keys must be {sorted(expected)}, "
                             f"missing {sorted(expected - set(d))}, unknown {sorted(set(d) - expected)}")
        objects = tuple(SceneObject(**o) for o in d["objects"])
        return cls(d["id"], objects, d["num_frames"], d["fps"], d["size"], tuple(d["background"]))


def object_radius(size_name: str, frame_size: int) -> int:
    """Half-extent in pixels of a small or large object in a frame of the given side."""
    return max(2, round(frame_size * _SIZE_FRACTION[size_name]))


def _apart(a: SceneObject, b: SceneObject, frame_size: int) -> bool:
    """True when the two objects' boxes never touch while both are on screen (so none hides another)."""
    gap = object_radius(a.size, frame_size) + object_radius(b.size, frame_size) + 1
    for t in range(max(a.appear, b.appear), min(a.disappear, b.disappear) + 1):
        (ax, ay), (bx, by) = a.position(t), b.position(t)
        if max(abs(ax - bx), abs(ay - by)) <= gap:
            return False
    return True


def _draw_object(rng: random.Random, combo: tuple[str, str], appear: int, disappear: int, s: int) -> SceneObject:
    """Size, motion, speed and start so the whole shape stays inside the frame while visible."""
    size = rng.choice(SIZES)
    motion = rng.choice(MOTIONS)
    h = object_radius(size, s)
    lo, hi = h + 1, s - 2 - h  # centre range that keeps a 1-pixel margin
    span = disappear - appear
    x0, y0, speed = rng.randint(lo, hi), rng.randint(lo, hi), 0.0
    if motion != "static":
        max_travel = min(hi - lo, s / 16 * span)  # at most s/16 pixels a frame, so motion stays smooth
        travel = rng.uniform(min(max_travel, s // 4), max_travel)
        speed = int(travel / span * 100) / 100  # two decimals, rounded down so the path fits
        reach = math.ceil(speed * span)
        dx, dy = _STEP[motion]
        start = rng.randint(lo, hi - reach) if dx + dy > 0 else rng.randint(lo + reach, hi)
        x0, y0 = (start, y0) if dx else (x0, start)
    return SceneObject(combo[0], combo[1], size, x0, y0, motion, speed, appear, disappear)


def make_scene(rng: random.Random, cfg: WorldConfig, scene_id: str) -> Scene:
    """A scene of non-overlapping objects with distinct (shape, colour); maybe one late and one early object."""
    t_last = cfg.num_frames - 1
    combos = [(shape, colour) for shape in SHAPES for colour in COLOURS]
    background = BACKGROUNDS[rng.choice(sorted(BACKGROUNDS))]
    for _ in range(100):
        n = rng.randint(cfg.min_objects, cfg.max_objects)
        order = rng.sample(range(n), n)
        late = order[0] if rng.random() < _LATE_OR_EARLY_P else None
        early = order[-1] if n > 1 and rng.random() < _LATE_OR_EARLY_P else None
        chosen = rng.sample(combos, n)
        objects: list[SceneObject] = []
        for i, combo in enumerate(chosen):
            appear, disappear = 0, t_last
            if i == late:  # appears strictly after the middle frame
                appear = rng.randint(cfg.num_frames // 2 + 1, (3 * cfg.num_frames) // 4)
            if i == early:  # gone before the middle frame
                disappear = rng.randint(cfg.num_frames // 4, cfg.num_frames // 2 - 1)
            for _ in range(100):
                obj = _draw_object(rng, combo, appear, disappear, cfg.size)
                if all(_apart(obj, other, cfg.size) for other in objects):
                    objects.append(obj)
                    break
            else:
                break  # no room for this object: redraw the whole scene
        if len(objects) == n:
            return Scene(scene_id, tuple(objects), cfg.num_frames, cfg.fps, cfg.size, background)
    raise RuntimeError(f"scene {scene_id}: cannot place {cfg.max_objects} non-overlapping objects "
                       f"in a {cfg.size}x{cfg.size} frame; raise data.synthetic.size or lower max_objects")


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size]
    return xs, ys


def _mask(shape: str, cx: int, cy: int, h: int, size: int) -> np.ndarray:
    xs, ys = _grid(size)
    dx, dy = np.abs(xs - cx), np.abs(ys - cy)
    if shape == "circle":
        return dx * dx + dy * dy <= h * h + h  # radius h + 1/2: no single-pixel nubs
    if shape == "square":
        return (dx <= h) & (dy <= h)
    if shape == "triangle":  # apex up, base at the bottom of the box
        return (dy <= h) & (2 * dx <= ys - (cy - h))
    if shape == "cross":
        arm = max(1, h // 3)
        return ((dx <= h) & (dy <= arm)) | ((dy <= h) & (dx <= arm))
    raise ValueError(f"unknown shape {shape!r} (choose one of: {', '.join(SHAPES)})")


def render_frame(scene: Scene, t: int) -> np.ndarray:
    """Frame t as a (size, size, 3) uint8 RGB array."""
    if not 0 <= t < scene.num_frames:
        raise ValueError(f"scene {scene.id}: frame {t} outside [0, {scene.num_frames})")
    frame = np.empty((scene.size, scene.size, 3), np.uint8)
    frame[:] = scene.background
    for obj in scene.objects:
        if obj.visible(t):
            cx, cy = obj.position(t)
            frame[_mask(obj.shape, cx, cy, object_radius(obj.size, scene.size), scene.size)] = COLOURS[obj.colour]
    return frame


def write_video(scene: Scene, path) -> None:
    """Lossless H.264 mp4 (yuv420p, scene.fps).

    Lossless because x264's lossy rate control is not reproducible on frames this small (the same clip
    encoded twice in one process can decode differently); a lossless stream always decodes to the same
    pixels, whatever the encoder decides. On flat synthetic frames it is also smaller than crf 18.
    """
    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=scene.fps)
            stream.width = stream.height = scene.size
            stream.pix_fmt = "yuv420p"
            stream.options = {"qp": "0", "preset": "veryfast", "threads": "1"}
            for t in range(scene.num_frames):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(render_frame(scene, t), format="rgb24")))
            container.mux(stream.encode(None))
    atomic_write(path, write)


def write_image(scene: Scene, t: int, path) -> None:
    """Lossless PNG of frame t."""
    atomic_write(path, lambda tmp: Image.fromarray(render_frame(scene, t)).save(tmp, format="PNG"))


# ---------------------------------------------------------------- language

def cell(size: int, x: int, y: int) -> str:
    """Which ninth of the frame a point lies in ("top left", ..., "centre")."""
    return CELLS[3 * min(2, 3 * y // size) + min(2, 3 * x // size)]


def _seconds(scene: Scene, frame: int) -> str:
    return f"{frame / scene.fps:.1f} s"


def _cell_at(scene: Scene, obj: SceneObject, t: int) -> str:
    return cell(scene.size, *obj.position(t))


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _story(scene: Scene, obj: SceneObject, article: str) -> str:
    """One sentence: when the object is on screen, where, and how it moves."""
    subject = f"{article} {obj.size} {obj.colour} {obj.shape}"
    first, last = _cell_at(scene, obj, obj.appear), _cell_at(scene, obj, obj.disappear)
    if obj.motion == "static":
        path = "stays still" if obj.appear else f"stays still in the {first}"
    elif first == last:
        path = f"moves {obj.motion} within the {first}"
    else:
        path = f"moves {obj.motion} to the {last}" if obj.appear \
            else f"moves {obj.motion} from the {first} to the {last}"
    text = f"{subject} appears at {_seconds(scene, obj.appear)} in the {first} and {path}" if obj.appear \
        else f"{subject} {path}"
    if obj.disappear < scene.num_frames - 1:
        text += f" and disappears at {_seconds(scene, obj.disappear + 1)}"
    return text + "."


def _background_name(scene: Scene) -> str:
    names = [name for name, rgb in BACKGROUNDS.items() if tuple(rgb) == tuple(scene.background)]
    return names[0] if names else "plain"


def caption(scene: Scene, t: int | None = None) -> str:
    """Frame t: what is on screen then and where. None: the whole clip, with motion and timing."""
    background = _background_name(scene)
    if t is None:
        stories = " ".join(_story(scene, o, "A") for o in scene.objects)
        return f"A {scene.num_frames / scene.fps:.1f}-second clip on a {background} background. {stories}"
    if not 0 <= t < scene.num_frames:
        raise ValueError(f"scene {scene.id}: frame {t} outside [0, {scene.num_frames})")
    shown = [o for o in scene.objects if o.visible(t)]
    if not shown:
        return f"An empty {background} background."
    count = _NUMBERS[len(shown)].capitalize()
    parts = [f"a {o.size} {o.colour} {o.shape} in the {_cell_at(scene, o, t)}" for o in shown]
    return f"{count} object{'s' if len(shown) > 1 else ''} on a {background} background: {_join(parts)}."


def _moments(scene: Scene) -> list[tuple[str, str, int]]:
    """(phrase, target, frame) for the three moments questions refer to."""
    return [("at the start of the video", "the start of the video", 0),
            ("in the middle of the video", "the middle of the video", scene.num_frames // 2),
            ("at the end of the video", "the end of the video", scene.num_frames - 1)]


def _late(scene: Scene) -> SceneObject | None:
    return next((o for o in scene.objects if o.appear > 0), None)


def _early(scene: Scene) -> SceneObject | None:
    return next((o for o in scene.objects if o.disappear < scene.num_frames - 1), None)


def instruction_pairs(scene: Scene, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n distinct (instruction, description) pairs about one object or one moment (fewer if the scene has fewer)."""
    pairs = []
    last = scene.num_frames - 1
    for o in scene.objects:
        full = f"{o.size} {o.colour} {o.shape}"
        first = _cell_at(scene, o, o.appear)
        pairs.append((f"What does {o.name} do?", _story(scene, o, "The")))
        if o.appear:
            pairs.append((f"Where is the {full} when it appears?",
                          f"The {full} appears in the {first} at {_seconds(scene, o.appear)}."))
        else:
            pairs.append((f"Where is the {full} at the start?", f"At the start the {full} is in the {first}."))
        span = ("for the whole clip" if o.appear == 0 and o.disappear == last
                else f"from {_seconds(scene, o.appear)} until the end" if o.appear
                else f"from the start until {_seconds(scene, o.disappear + 1)}")
        pairs.append((f"When is {o.name} visible?", f"{o.name.capitalize()} is visible {span}."))
    pairs += [("Describe the start of the video.", caption(scene, 0)),
              ("What is visible in the middle of the video?", caption(scene, scene.num_frames // 2)),
              ("Describe the end of the video.", caption(scene, last))]
    late, early = _late(scene), _early(scene)
    pairs.append(("What appears in the second half of the video?",
                  _story(scene, late, "A") if late else "Nothing new appears in the second half of the video."))
    pairs.append(("What disappears before the middle of the video?",
                  _story(scene, early, "The") if early else "Nothing disappears before the middle of the video."))
    return rng.sample(pairs, min(n, len(pairs)))


@dataclass(frozen=True)
class _Question:
    """A short-answer question; `near` are wrong answers present in the scene, `far` other wrong answers."""

    kind: str  # "object" | "moment" | "existence"
    target: str
    text: str
    answer: str
    near: tuple[str, ...] = ()
    far: tuple[str, ...] = ()

    @property
    def multiple_choice(self) -> bool:
        return len(set(self.near) | set(self.far)) >= len(LETTERS) - 1


def _others(values, answer: str) -> tuple[str, ...]:
    """Distinct values except the answer, in first-seen order."""
    return tuple(v for v in dict.fromkeys(values) if v != answer)


def _questions(scene: Scene) -> list[_Question]:
    """Every question whose answer is fixed by one object or one moment of the scene."""
    objs, last = scene.objects, scene.num_frames - 1
    names = [o.name for o in objs]
    absent = [f"the {c} {s}" for s in SHAPES for c in COLOURS if f"the {c} {s}" not in names]
    qs: list[_Question] = []

    def which(kind: str, target: str, text: str, obj: SceneObject) -> _Question:
        return _Question(kind, target, text, obj.name, _others(names, obj.name), tuple(absent))

    def attribute(kind: str, target: str, text: str, value: str, present, universe) -> _Question:
        return _Question(kind, target, text, value, _others(present, value), _others(universe, value))

    for o in objs:
        motion = _MOTION_PHRASE[o.motion]
        qs.append(attribute("object", o.name, f"How does {o.name} move?", motion,
                            [_MOTION_PHRASE[p.motion] for p in objs], _MOTION_PHRASE.values()))
        start_text = f"Where is {o.name} when it first appears?" if o.appear \
            else f"Where is {o.name} at the start of the video?"
        seen = [_cell_at(scene, p, o.appear) for p in objs if p.visible(o.appear)]
        qs.append(attribute("object", o.name, start_text, _cell_at(scene, o, o.appear), seen, CELLS))
        if o.motion != "static":
            end_text = f"Where is {o.name} at the end of the video?" if o.disappear == last \
                else f"Where is {o.name} just before it disappears?"
            seen = [_cell_at(scene, p, o.disappear) for p in objs if p.visible(o.disappear)]
            qs.append(attribute("object", o.name, end_text, _cell_at(scene, o, o.disappear), seen, CELLS))
        qs.append(_Question("object", o.name, f"Is {o.name} small or large?", o.size))
        when = "at the start" if o.appear == 0 else f"after about {o.appear / scene.fps:.1f} seconds"
        qs.append(_Question("object", o.name, f"When does {o.name} appear?", when))
        if sum(p.shape == o.shape for p in objs) == 1:
            qs.append(attribute("object", o.name, f"What colour is the {o.shape}?", o.colour,
                                [p.colour for p in objs], COLOURS))
        if sum(p.colour == o.colour for p in objs) == 1:
            qs.append(attribute("object", o.name, f"What shape is the {o.colour} object?", o.shape,
                                [p.shape for p in objs], SHAPES))
        if sum(p.motion == o.motion for p in objs) == 1:
            verb = "stays still" if o.motion == "static" else f"moves {o.motion}"
            qs.append(which("object", o.name, f"Which object {verb}?", o))

    present = list(dict.fromkeys(o.colour for o in objs))
    absent_colours = [c for c in COLOURS if c not in present]
    for colour in present:  # one text, several right answers: a choice offers only one of them
        qs.append(_Question("existence", "the whole video", "Which colour can be seen in the video?", colour,
                            (), tuple(absent_colours)))

    counts = [_NUMBERS[sum(p.visible(t) for p in objs)] for _, _, t in _moments(scene)]
    for phrase, target, t in _moments(scene):
        qs.append(attribute("moment", target, f"How many objects are visible {phrase}?",
                            _NUMBERS[sum(p.visible(t) for p in objs)], counts, _NUMBERS[:_MAX_OBJECTS + 1]))
        shown = [p for p in objs if p.visible(t)]
        cells = [_cell_at(scene, p, t) for p in shown]
        for p, where in zip(shown, cells):
            if cells.count(where) == 1:
                qs.append(which("moment", f"the {where} {phrase}", f"Which object is in the {where} {phrase}?", p))

    events = ((_late(scene), "appears in the second half of the video", "the second half of the video"),
              (_early(scene), "disappears before the middle of the video", "the first half of the video"))
    for obj, event, target in events:
        if obj is None:
            continue
        qs.append(which("moment", target, f"Which object {event}?", obj))
        qs.append(attribute("moment", target, f"What colour is the object that {event}?", obj.colour,
                            [p.colour for p in objs], COLOURS))
        qs.append(attribute("moment", target, f"What shape is the object that {event}?", obj.shape,
                            [p.shape for p in objs], SHAPES))
    return qs


def qa_turns(scene: Scene, rng: random.Random, k: int) -> list[tuple[str, str]]:
    """k distinct short-answer questions about one object or one moment, answered from ground truth."""
    questions = _questions(scene)
    picked = rng.sample(questions, min(k, len(questions)))
    return [(q.text, q.answer[0].upper() + q.answer[1:] + ".") for q in picked]


MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def mcq_prompt(question: str, options: list[str]) -> str:
    """The one multiple-choice prompt format, shared by instruction tuning and evaluation.

    conversation.extract_guide reduces it to the bare question (option lines and this instruction drop out).
    """
    if not 1 <= len(options) <= len(LETTERS):
        raise ValueError(f"mcq_prompt: needs 1 to {len(LETTERS)} options, got {len(options)}")
    return f"{question}\n" + "".join(f"{letter}. {opt}\n" for letter, opt in zip(LETTERS, options)) + MCQ_INSTRUCTION


def mcq(scene: Scene, rng: random.Random, exclude=()) -> dict:
    """One 4-option question; kind chosen evenly, in-scene distractors first, answer letter uniform.

    `exclude`: question texts not to ask again (with none excluded, the draws are exactly as before).
    """
    eligible = [q for q in _questions(scene) if q.multiple_choice and q.text not in exclude]
    if not eligible:
        raise ValueError(f"scene {scene.id}: no multiple-choice question left to ask")
    kind = rng.choice(sorted({q.kind for q in eligible}))
    q = rng.choice([q for q in eligible if q.kind == kind])
    near = rng.sample(q.near, len(q.near))
    far = [v for v in rng.sample(q.far, len(q.far)) if v not in near]
    options = (near + far)[:len(LETTERS) - 1]
    slot = rng.randrange(len(LETTERS))
    options.insert(slot, q.answer)
    return {"question": q.text, "options": options, "answer": LETTERS[slot], "kind": q.kind, "target": q.target}


# ---------------------------------------------------------------- the world on disk

def _rng(cfg: WorldConfig, scene_id: str, purpose: str) -> random.Random:
    """An independent stream per scene and purpose, so adding one kind of sample never shifts another."""
    return random.Random(f"{cfg.seed}/{scene_id}/{purpose}")


def _scene_id(i: int) -> str:
    return f"syn{i:05d}"


def _image_frames(cfg: WorldConfig, scene: Scene) -> list[int]:
    """One frame from each half of the clip."""
    rng = _rng(cfg, scene.id, "images")
    half = scene.num_frames // 2
    return [rng.randrange(0, half), rng.randrange(half, scene.num_frames)]


def mcq_turns(scene: Scene, rng: random.Random, k: int) -> list[dict]:
    """Up to k multiple-choice questions with distinct texts (fewer if the scene has fewer)."""
    available = len({q.text for q in _questions(scene) if q.multiple_choice})
    out: list[dict] = []
    for _ in range(min(k, available)):
        out.append(mcq(scene, rng, exclude={q["question"] for q in out}))
    return out


def _conversation(tag: str, pairs: list[tuple[str, str]]) -> list[dict]:
    turns = []
    for i, (human, gpt) in enumerate(pairs):
        turns += [{"from": "human", "value": (tag + "\n" if i == 0 else "") + human}, {"from": "gpt", "value": gpt}]
    return turns


def _records(cfg: WorldConfig, scenes: list[Scene], test_ids: set[str]) -> dict[str, list[dict]]:
    """Every JSONL file's records, built from ground truth only."""
    out: dict[str, list[dict]] = {name: [] for name in ("scenes.jsonl", *TRAIN_FILES, TEST_FILE)}
    for scene in scenes:
        out["scenes.jsonl"].append(scene.to_dict())
        video = f"videos/{scene.id}.mp4"
        if scene.id in test_ids:
            q = mcq(scene, _rng(cfg, scene.id, "mcq"))
            out[TEST_FILE].append({"id": scene.id, "video": video, **q,
                                   "prompt": mcq_prompt(q["question"], q["options"])})
            continue
        prompts = _rng(cfg, scene.id, "prompts")
        for t in _image_frames(cfg, scene):
            out["align_images.jsonl"].append({
                "id": f"{scene.id}_f{t}", "image": f"images/{scene.id}_f{t}.png",
                "conversations": _conversation("<image>", [(prompts.choice(IMAGE_PROMPTS), caption(scene, t))])})
        out["align_videos.jsonl"].append({
            "id": scene.id, "video": video,
            "conversations": _conversation("<video>", [(prompts.choice(VIDEO_PROMPTS), caption(scene))])})
        pairs = instruction_pairs(scene, _rng(cfg, scene.id, "pairs"), cfg.pairs_per_video)
        out["cond_pretrain.jsonl"].append(
            {"id": scene.id, "video": video, "conversations": _conversation("<video>", pairs)})
        turns = qa_turns(scene, _rng(cfg, scene.id, "qa"), cfg.qa_per_video)
        out["sft.jsonl"].append({"id": scene.id, "video": video, "conversations": _conversation("<video>", turns)})
        choices = mcq_turns(scene, _rng(cfg, scene.id, "sft_mcq"), cfg.mcq_per_video)
        if choices:
            out["sft_mcq.jsonl"].append({"id": f"{scene.id}_mcq", "video": video, "conversations": _conversation(
                "<video>", [(mcq_prompt(q["question"], q["options"]), q["answer"]) for q in choices])})
    return out


def _jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def _write_bytes(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def generate_world(cfg: WorldConfig, out_dir, progress: bool = True) -> dict:
    """Write clips, frames, ground truth and every training/test JSONL under out_dir; returns the manifest.

    The manifest is written last, so its presence means the world is complete. Files from an earlier,
    larger world in the same directory are not removed; the manifest lists what belongs to this one.
    """
    out_dir = Path(out_dir)
    ids = [_scene_id(i) for i in range(cfg.num_videos)]
    scenes = [make_scene(_rng(cfg, sid, "scene"), cfg, sid) for sid in ids]
    test_ids = set(random.Random(f"{cfg.seed}/split").sample(ids, cfg.num_test))
    for scene in tqdm(scenes, desc="synthetic clips", unit="clip", disable=not progress):
        write_video(scene, out_dir / "videos" / f"{scene.id}.mp4")
        if scene.id not in test_ids:  # alignment frames are training data
            for t in _image_frames(cfg, scene):
                write_image(scene, t, out_dir / "images" / f"{scene.id}_f{t}.png")
    files, counts = {}, {}
    for name, records in _records(cfg, scenes, test_ids).items():
        data = _jsonl_bytes(records)
        _write_bytes(out_dir / name, data)
        files[name], counts[name] = hashlib.sha256(data).hexdigest(), len(records)
    manifest = {"config": asdict(cfg), "num_videos": cfg.num_videos,
                "splits": {"train": cfg.num_videos - len(test_ids), "test": len(test_ids)},
                "test_ids": sorted(test_ids), "counts": counts, "files": files}
    _write_bytes(out_dir / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def read_world(world_dir) -> tuple[list[Scene], set[str]]:
    """A generated world's scenes (ground truth) and the ids of its held-out test scenes."""
    world_dir = Path(world_dir)
    manifest = world_dir / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: not a generated synthetic world (no manifest)")
    scenes = [Scene.from_dict(json.loads(line))
              for line in (world_dir / "scenes.jsonl").read_text().splitlines() if line.strip()]
    return scenes, set(json.loads(manifest.read_text())["test_ids"])
